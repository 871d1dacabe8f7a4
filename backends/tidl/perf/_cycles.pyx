# cython: language_level=3
"""Compiled cycle model (twin: tidlc.backends.tidl.perf.reference, the specification).

Integer arithmetic only, in the same order as the twin, so both return the
same int64 tables bit for bit. Table columns: tidlc.backends.tidl.perf.columns
(``column_layout()`` lets a test check that this file agrees with it).
"""
import numpy as np

from libc.stdint cimport int64_t

from tidlc.backends.tidl.perf import reference as _spec


cdef enum:
    KIND_NONE = 0
    KIND_MMA = 1
    KIND_VEC = 2
    L_KIND = 0
    L_ROWS = 1
    L_W = 2
    L_ALIGN = 3
    L_K = 4
    L_COUT_G = 5
    L_GROUPS = 6
    L_PLANES = 7
    L_OPS = 8
    L_ELEM = 9
    L_WBYTES = 10
    T_BYTES = 0
    T_FIRST = 1
    T_LAST = 2
    T_PINNED = 3
    P_BATCHES = 0
    P_MMA_PANEL_BYTES = 1
    P_MMA_BLOCK = 2
    P_MMA_LOOP_OH = 3
    P_VEC_BYTES = 4
    P_VEC_RATE = 5
    P_L2_POOL = 6
    P_L2_WORK = 7
    P_MSMC_POOL = 8
    P_PERSIST = 9
    P_DDR_RATE = 10
    P_MSMC_RATE = 11
    P_LAYER_SETUP = 12
    R_COMPUTE = 0
    R_DMA = 1
    R_SETUP = 2
    R_CYCLES = 3
    R_DDR_READ = 4
    R_DDR_WRITE = 5
    R_MSMC_BYTES = 6
    R_OUT_LOC = 7
    R_W_LOC = 8
    R_COLS = 9
    LOC_L2 = 0
    LOC_MSMC = 1
    LOC_DDR = 2


def column_layout():
    """The constants this module was compiled with (must equal ``columns.layout()``)."""
    return {
        "KIND_NONE": KIND_NONE, "KIND_MMA": KIND_MMA, "KIND_VEC": KIND_VEC,
        "L_KIND": L_KIND, "L_ROWS": L_ROWS, "L_W": L_W, "L_ALIGN": L_ALIGN, "L_K": L_K,
        "L_COUT_G": L_COUT_G, "L_GROUPS": L_GROUPS, "L_PLANES": L_PLANES, "L_OPS": L_OPS,
        "L_ELEM": L_ELEM, "L_WBYTES": L_WBYTES, "L_COLS": 11,
        "T_BYTES": T_BYTES, "T_FIRST": T_FIRST, "T_LAST": T_LAST, "T_PINNED": T_PINNED, "T_COLS": 4,
        "P_BATCHES": P_BATCHES, "P_MMA_PANEL_BYTES": P_MMA_PANEL_BYTES, "P_MMA_BLOCK": P_MMA_BLOCK,
        "P_MMA_LOOP_OH": P_MMA_LOOP_OH, "P_VEC_BYTES": P_VEC_BYTES, "P_VEC_RATE": P_VEC_RATE,
        "P_L2_POOL": P_L2_POOL, "P_L2_WORK": P_L2_WORK, "P_MSMC_POOL": P_MSMC_POOL,
        "P_PERSIST": P_PERSIST, "P_DDR_RATE": P_DDR_RATE, "P_MSMC_RATE": P_MSMC_RATE,
        "P_LAYER_SETUP": P_LAYER_SETUP, "P_COUNT": 13,
        "R_COMPUTE": R_COMPUTE, "R_DMA": R_DMA, "R_SETUP": R_SETUP, "R_CYCLES": R_CYCLES,
        "R_DDR_READ": R_DDR_READ, "R_DDR_WRITE": R_DDR_WRITE, "R_MSMC_BYTES": R_MSMC_BYTES,
        "R_OUT_LOC": R_OUT_LOC, "R_W_LOC": R_W_LOC, "R_COLS": R_COLS,
        "LOC_L2": LOC_L2, "LOC_MSMC": LOC_MSMC, "LOC_DDR": LOC_DDR,
    }


cdef inline int64_t _cdiv(int64_t a, int64_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline int64_t _max(int64_t a, int64_t b) noexcept nogil:
    return a if a > b else b


cdef int64_t _compute(const int64_t[:, ::1] layers, Py_ssize_t i, const int64_t[::1] params) noexcept nogil:
    cdef int64_t kind = layers[i, L_KIND]
    cdef int64_t align = _max(layers[i, L_ALIGN], 1)  # every divisor is at least 1, as in the twin
    cdef int64_t pixels = params[P_BATCHES] * layers[i, L_ROWS] * (_cdiv(layers[i, L_W], align) * align)
    cdef int64_t elem = _max(layers[i, L_ELEM], 1)
    cdef int64_t panel, block, blocks, last, per_panel, lanes
    if kind == KIND_MMA:
        panel = _max(params[P_MMA_PANEL_BYTES] // elem, 1)
        block = _max(params[P_MMA_BLOCK], 1)
        blocks = _max(_cdiv(pixels, block), 1)
        last = pixels - (blocks - 1) * block
        per_panel = ((blocks - 1) * _max(block, panel) + _max(last, panel)
                     + blocks * params[P_MMA_LOOP_OH])
        return (layers[i, L_GROUPS] * _cdiv(layers[i, L_COUT_G], panel)) * _cdiv(layers[i, L_K], panel) * per_panel
    if kind == KIND_VEC:
        lanes = _max(params[P_VEC_BYTES] // elem, 1)
        return _cdiv(layers[i, L_PLANES] * _cdiv(pixels, lanes) * layers[i, L_OPS], _max(params[P_VEC_RATE], 1))
    return 0


def compute_cycles(const int64_t[:, ::1] layers, const int64_t[::1] params):
    """MMA / vector cycles of every layer (int64, per batch)."""
    cdef Py_ssize_t i, n = layers.shape[0]
    out = np.zeros(n, dtype=np.int64)
    cdef int64_t[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = _compute(layers, i, params)
    return out


cdef void _plan(const int64_t[::1] sizes, const int64_t[:, ::1] tensors, const int64_t[::1] order,
                int64_t[::1] offsets, int64_t[::1] placed) noexcept nogil:
    """First fit in ``order``; ``placed`` keeps placed tensors sorted by offset (see the twin)."""
    cdef Py_ssize_t k, j, m, n_placed = 0
    cdef int64_t t, u, size, offset, lo, hi
    for k in range(order.shape[0]):
        t = order[k]
        size = sizes[t]
        lo = tensors[t, T_FIRST]
        hi = tensors[t, T_LAST]
        offset = 0
        for j in range(n_placed):
            u = placed[j]
            if tensors[u, T_FIRST] > hi or lo > tensors[u, T_LAST]:
                continue  # not alive at the same time
            if offsets[u] >= offset + size:
                break
            offset = _max(offset, offsets[u] + sizes[u])
        offsets[t] = offset
        # insert t keeping (offset, size, index) order, as the twin's sorted() does
        m = n_placed
        while m > 0 and (offsets[placed[m - 1]] > offset or
                         (offsets[placed[m - 1]] == offset and
                          (sizes[placed[m - 1]] > size or (sizes[placed[m - 1]] == size and placed[m - 1] > t)))):
            placed[m] = placed[m - 1]
            m -= 1
        placed[m] = t
        n_placed += 1


def plan_offsets(sizes, first, last, candidates):
    """Capacity-independent memory plan; see the twin for the rule."""
    sizes = np.ascontiguousarray(sizes, dtype=np.int64)
    n = sizes.shape[0]
    table = np.zeros((n, 4), dtype=np.int64)
    table[:, T_FIRST] = first
    table[:, T_LAST] = last
    cand = np.flatnonzero(np.asarray(candidates, dtype=bool))
    order = cand[np.argsort(sizes[cand], kind="stable")].astype(np.int64)
    offsets = np.full(n, -1, dtype=np.int64)
    placed = np.zeros(max(n, 1), dtype=np.int64)
    _plan(sizes, table, order, offsets, placed)
    return offsets


def place_tensors(tensors, params):
    """Location (LOC_*) of every tensor, and the top of the feature maps in MSMC: the twin's rule
    (vectorised numpy already) with this file's :func:`plan_offsets`."""
    return _spec.place_tensors(tensors, params, plan_offsets)


def persist_weights(layers, params, int64_t msmc_top):
    """Where each layer's weights live: MSMC (persistent) or DDR; -1 without weights."""
    cdef const int64_t[:, ::1] lay = np.ascontiguousarray(layers, dtype=np.int64)
    cdef const int64_t[::1] par = np.ascontiguousarray(params, dtype=np.int64)
    cdef Py_ssize_t n = lay.shape[0], k, i
    wbytes = np.ascontiguousarray(np.asarray(lay)[:, L_WBYTES])
    wloc_arr = np.where(wbytes > 0, LOC_DDR, -1).astype(np.int64)
    cdef int64_t[::1] wloc = wloc_arr
    cdef int64_t room, size
    cdef const int64_t[::1] order
    if par[P_PERSIST]:
        idx = np.flatnonzero(wbytes > 0)
        order = idx[np.argsort(wbytes[idx], kind="stable")].astype(np.int64)
        room = par[P_MSMC_POOL] - msmc_top
        for k in range(order.shape[0]):
            i = order[k]
            size = lay[i, L_WBYTES]
            if size > room:
                break
            room -= size
            wloc[i] = LOC_MSMC
    return wloc_arr


cdef inline void _add_at(int64_t amount, int64_t where, int64_t* ddr, int64_t* msmc) noexcept nogil:
    if where == LOC_DDR:
        ddr[0] += amount
    elif where == LOC_MSMC:
        msmc[0] += amount


cdef void _traffic(const int64_t[:, ::1] layers, const int64_t[::1] in_ptr, const int64_t[::1] in_idx,
                   const int64_t[::1] out_ptr, const int64_t[::1] out_idx, const int64_t[:, ::1] tensors,
                   const int64_t[::1] params, const int64_t[::1] loc, const int64_t[::1] wloc,
                   int64_t[:, ::1] res) noexcept nogil:
    cdef Py_ssize_t i, j, n = layers.shape[0]
    cdef int64_t batches = params[P_BATCHES], half_work = _max(params[P_L2_WORK] // 2, 1)
    cdef int64_t ddr_rate = _max(params[P_DDR_RATE], 1), msmc_rate = _max(params[P_MSMC_RATE], 1)
    cdef int64_t rd_ddr, rd_msmc, wr_ddr, wr_msmc, in_bytes, out_bytes, size, wbytes, kind
    cdef int64_t tiles, chunks, wt_ddr, wt_msmc, ft_ddr, ft_msmc, compute, dma, setup, t
    for i in range(n):
        rd_ddr = rd_msmc = wr_ddr = wr_msmc = in_bytes = out_bytes = 0
        for j in range(in_ptr[i], in_ptr[i + 1]):
            t = in_idx[j]
            size = tensors[t, T_BYTES] * batches
            in_bytes += size
            _add_at(size, loc[t], &rd_ddr, &rd_msmc)
        for j in range(out_ptr[i], out_ptr[i + 1]):
            t = out_idx[j]
            size = tensors[t, T_BYTES] * batches
            out_bytes += size
            _add_at(size, loc[t], &wr_ddr, &wr_msmc)
        wbytes = layers[i, L_WBYTES]
        if wbytes:
            _add_at(wbytes, wloc[i], &rd_ddr, &rd_msmc)
        kind = layers[i, L_KIND]
        if kind == KIND_MMA and wbytes > half_work and in_bytes + out_bytes > half_work:
            tiles = _cdiv(in_bytes + out_bytes, half_work)
            chunks = _cdiv(wbytes, half_work)
            wt_ddr = wt_msmc = ft_ddr = ft_msmc = 0
            _add_at((tiles - 1) * wbytes, wloc[i], &wt_ddr, &wt_msmc)
            for j in range(in_ptr[i], in_ptr[i + 1]):
                t = in_idx[j]
                _add_at((chunks - 1) * tensors[t, T_BYTES] * batches, loc[t], &ft_ddr, &ft_msmc)
            if wt_ddr < ft_ddr or (wt_ddr == ft_ddr and wt_msmc <= ft_msmc):
                rd_ddr += wt_ddr
                rd_msmc += wt_msmc
            else:
                rd_ddr += ft_ddr
                rd_msmc += ft_msmc
        dma = _cdiv((rd_ddr + wr_ddr) * 1000, ddr_rate) + _cdiv((rd_msmc + wr_msmc) * 1000, msmc_rate)
        setup = params[P_LAYER_SETUP] if kind != KIND_NONE else 0
        compute = _compute(layers, i, params)
        tiles = _max(1, _cdiv(in_bytes + out_bytes, half_work))
        res[i, R_COMPUTE] = compute
        res[i, R_DMA] = dma
        res[i, R_SETUP] = setup
        res[i, R_CYCLES] = _max(compute, dma) + _cdiv(compute if compute < dma else dma, tiles) + setup
        res[i, R_DDR_READ] = rd_ddr
        res[i, R_DDR_WRITE] = wr_ddr
        res[i, R_MSMC_BYTES] = rd_msmc + wr_msmc
        res[i, R_OUT_LOC] = loc[out_idx[out_ptr[i]]] if out_ptr[i + 1] > out_ptr[i] else -1
        res[i, R_W_LOC] = wloc[i]


def simulate(layers, in_ptr, in_idx, out_ptr, out_idx, tensors, params):
    """The whole model: ``(results[n_layers, R_COLS], tensor_locations)``, per batch."""
    layers = np.ascontiguousarray(layers, dtype=np.int64)
    tensors = np.ascontiguousarray(tensors, dtype=np.int64)
    params = np.ascontiguousarray(params, dtype=np.int64)
    loc, top = place_tensors(tensors, params)
    wloc = persist_weights(layers, params, top)
    res = np.zeros((layers.shape[0], R_COLS), dtype=np.int64)
    _traffic(layers, np.ascontiguousarray(in_ptr, dtype=np.int64), np.ascontiguousarray(in_idx, dtype=np.int64),
             np.ascontiguousarray(out_ptr, dtype=np.int64), np.ascontiguousarray(out_idx, dtype=np.int64),
             tensors, params, loc, wloc, res)
    return res, loc
