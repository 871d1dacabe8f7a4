"""The cycle model in plain numpy/Python: the readable specification.

``_cycles.pyx`` is the compiled twin; a test asserts both return the same
integers for random and real networks. All arithmetic is on int64 (see
:mod:`columns` for the units), so "the same" means bit for bit.

Equations (per batch of ``B = P_BATCHES`` frames; docs/perf.md explains them):

MMA layer (8-bit panel ``p = 64``, 16-bit ``p = 32``)::

    P      = B * rows * align(W, A)               output pixels (A = 8, 16 at stride 2)
    kp     = ceil(K / p)                          K panels (K includes the bias row)
    np     = groups * ceil(Cout_g / p)            output-channel panels
    blocks = ceil(P / block)
    mma    = np * kp * ((blocks - 1) * max(block, p) + max(last_block, p) + blocks * loop_oh)

(a weight panel takes ``p`` cycles to load; a block of fewer than ``p`` pixels
cannot hide that load.)

Vector layer::

    lanes  = vector_bytes / element_bytes
    vec    = ceil(planes * ceil(B * rows * align(W, A) / lanes) * ops_milli / rate_milli)

Memory: a capacity-independent plan gives every feature map an offset (first
fit, smallest tensors first, over tensor lifetimes); a tensor lives in L2 if it
fits below the L2 pool, else in MSMC if it fits below ``msmcSize``, else in
DDR. Network inputs and outputs are in DDR. With persistence on, weights fill
the MSMC left above the feature maps, smallest first. A layer moves its
inputs, outputs and weights from where they live (L2: free); when neither its
features nor its weights fit the L2 working area, one of them is fetched again
per chunk of the other (the cheaper in DDR bytes, then MSMC bytes)::

    dma    = ceil(ddr_bytes * 1000 / ddr_rate) + ceil(msmc_bytes * 1000 / msmc_rate)
    tiles  = max(1, ceil((input_bytes + output_bytes) / (l2_work / 2)))
    cycles = max(compute, dma) + ceil(min(compute, dma) / tiles) + layer_setup

(DMA and compute overlap tile by tile: the first tile's transfer and the last
tile's compute are exposed; a layer that fits in one tile overlaps nothing.)
"""
from __future__ import annotations

import numpy as np
from tidlc.backends.tidl.perf.columns import (
    KIND_MMA,
    KIND_NONE,
    KIND_VEC,
    L_ALIGN,
    L_COUT_G,
    L_ELEM,
    L_GROUPS,
    L_K,
    L_KIND,
    L_OPS,
    L_PLANES,
    L_ROWS,
    L_W,
    L_WBYTES,
    LOC_DDR,
    LOC_L2,
    LOC_MSMC,
    P_BATCHES,
    P_DDR_RATE,
    P_L2_POOL,
    P_L2_WORK,
    P_LAYER_SETUP,
    P_MMA_BLOCK,
    P_MMA_LOOP_OH,
    P_MMA_PANEL_BYTES,
    P_MSMC_POOL,
    P_MSMC_RATE,
    P_PERSIST,
    P_VEC_BYTES,
    P_VEC_RATE,
    R_COLS,
    R_COMPUTE,
    R_CYCLES,
    R_DDR_READ,
    R_DDR_WRITE,
    R_DMA,
    R_MSMC_BYTES,
    R_OUT_LOC,
    R_SETUP,
    R_W_LOC,
    T_BYTES,
    T_FIRST,
    T_LAST,
    T_PINNED,
)


def _cdiv(a, b):
    """Ceiling division of non-negative integers (scalars or int64 arrays)."""
    return (a + b - 1) // b


def compute_cycles(layers: np.ndarray, params: np.ndarray) -> np.ndarray:
    """MMA / vector cycles of every layer (int64, per batch)."""
    layers = np.asarray(layers, dtype=np.int64)
    batches = int(params[P_BATCHES])
    kind = layers[:, L_KIND]
    align = np.maximum(layers[:, L_ALIGN], 1)  # every divisor is at least 1 (no layer divides by 0)
    width = _cdiv(layers[:, L_W], align) * align
    pixels = batches * layers[:, L_ROWS] * width
    elem = np.maximum(layers[:, L_ELEM], 1)

    panel = np.maximum(int(params[P_MMA_PANEL_BYTES]) // elem, 1)
    block = max(int(params[P_MMA_BLOCK]), 1)
    k_panels = _cdiv(layers[:, L_K], panel)
    n_panels = layers[:, L_GROUPS] * _cdiv(layers[:, L_COUT_G], panel)
    blocks = np.maximum(_cdiv(pixels, block), 1)
    last = pixels - (blocks - 1) * block
    per_panel = ((blocks - 1) * np.maximum(block, panel) + np.maximum(last, panel)
                 + blocks * int(params[P_MMA_LOOP_OH]))
    mma = n_panels * k_panels * per_panel

    lanes = np.maximum(int(params[P_VEC_BYTES]) // elem, 1)
    vectors = layers[:, L_PLANES] * _cdiv(pixels, lanes)
    vec = _cdiv(vectors * layers[:, L_OPS], max(int(params[P_VEC_RATE]), 1))

    return np.where(kind == KIND_MMA, mma, np.where(kind == KIND_VEC, vec, 0)).astype(np.int64)


def plan_offsets(sizes: np.ndarray, first: np.ndarray, last: np.ndarray,
                 candidates: np.ndarray) -> np.ndarray:
    """Offsets of a memory plan that does not depend on the memory's capacity.

    Candidate tensors are placed smallest first (ties: lower index), each at
    the lowest offset that overlaps no already placed tensor alive at the same
    time (lifetimes ``[first, last]`` inclusive). Non-candidates get -1.
    """
    n = len(sizes)
    offsets = np.full(n, -1, dtype=np.int64)
    order = sorted((int(sizes[t]), t) for t in range(n) if candidates[t])
    placed: list[int] = []
    for size, t in order:
        busy = sorted((int(offsets[u]), int(sizes[u])) for u in placed
                      if first[u] <= last[t] and first[t] <= last[u])
        offset = 0
        for start, length in busy:
            if start >= offset + size:
                break
            offset = max(offset, start + length)
        offsets[t] = offset
        placed.append(t)
    return offsets


def place_tensors(tensors: np.ndarray, params: np.ndarray, plan=None) -> tuple[np.ndarray, int]:
    """Location (LOC_*) of every tensor, and the top of the feature maps in MSMC. ``plan``: the
    :func:`plan_offsets` to use (the compiled twin passes its own; the rule is this one)."""
    planner = plan or plan_offsets
    tensors = np.asarray(tensors, dtype=np.int64)
    batches = int(params[P_BATCHES])
    sizes = tensors[:, T_BYTES] * batches
    first, last = tensors[:, T_FIRST], tensors[:, T_LAST]
    free = tensors[:, T_PINNED] == 0
    loc = np.full(len(sizes), LOC_DDR, dtype=np.int64)

    l2_pool = int(params[P_L2_POOL])
    l2_off = planner(sizes, first, last, free & (sizes <= l2_pool))
    in_l2 = (l2_off >= 0) & (l2_off + sizes <= l2_pool)
    loc[in_l2] = LOC_L2

    msmc_pool = int(params[P_MSMC_POOL])
    msmc_off = planner(sizes, first, last, free & ~in_l2)
    in_msmc = (msmc_off >= 0) & (msmc_off + sizes <= msmc_pool)
    loc[in_msmc] = LOC_MSMC
    top = int((msmc_off + sizes)[in_msmc].max()) if in_msmc.any() else 0
    return loc, top


def persist_weights(layers: np.ndarray, params: np.ndarray, msmc_top: int) -> np.ndarray:
    """Where each layer's weights live: MSMC (persistent) or DDR; -1 without weights."""
    wbytes = np.asarray(layers, dtype=np.int64)[:, L_WBYTES]
    wloc = np.where(wbytes > 0, LOC_DDR, -1).astype(np.int64)
    if int(params[P_PERSIST]):
        room = int(params[P_MSMC_POOL]) - msmc_top
        for size, i in sorted((int(wbytes[i]), i) for i in range(len(wbytes)) if wbytes[i] > 0):
            if size > room:
                break  # the rest are no smaller
            room -= size
            wloc[i] = LOC_MSMC
    return wloc


def _bytes_at(amount: int, where: int, ddr_msmc: list) -> None:
    if where == LOC_DDR:
        ddr_msmc[0] += amount
    elif where == LOC_MSMC:
        ddr_msmc[1] += amount


def simulate(layers, in_ptr, in_idx, out_ptr, out_idx, tensors, params):
    """The whole model: ``(results[n_layers, R_COLS], tensor_locations)``, per batch."""
    layers = np.ascontiguousarray(layers, dtype=np.int64)
    tensors = np.ascontiguousarray(tensors, dtype=np.int64)
    params = np.asarray(params, dtype=np.int64)
    n = len(layers)
    batches = int(params[P_BATCHES])
    loc, top = place_tensors(tensors, params)
    wloc = persist_weights(layers, params, top)
    compute = compute_cycles(layers, params)
    half_work = max(int(params[P_L2_WORK]) // 2, 1)
    ddr_rate, msmc_rate = max(int(params[P_DDR_RATE]), 1), max(int(params[P_MSMC_RATE]), 1)

    res = np.zeros((n, R_COLS), dtype=np.int64)
    for i in range(n):
        ins = [int(t) for t in in_idx[in_ptr[i]:in_ptr[i + 1]]]
        outs = [int(t) for t in out_idx[out_ptr[i]:out_ptr[i + 1]]]
        read, write = [0, 0], [0, 0]  # [ddr, msmc]
        in_bytes = out_bytes = 0
        for t in ins:
            size = int(tensors[t, T_BYTES]) * batches
            in_bytes += size
            _bytes_at(size, int(loc[t]), read)
        for t in outs:
            size = int(tensors[t, T_BYTES]) * batches
            out_bytes += size
            _bytes_at(size, int(loc[t]), write)
        wbytes = int(layers[i, L_WBYTES])
        if wbytes:
            _bytes_at(wbytes, int(wloc[i]), read)
        kind = int(layers[i, L_KIND])
        if kind == KIND_MMA and wbytes > half_work and in_bytes + out_bytes > half_work:
            tiles = _cdiv(in_bytes + out_bytes, half_work)
            chunks = _cdiv(wbytes, half_work)
            refetch_weights = [0, 0]
            _bytes_at((tiles - 1) * wbytes, int(wloc[i]), refetch_weights)
            refetch_features = [0, 0]
            for t in ins:
                _bytes_at((chunks - 1) * int(tensors[t, T_BYTES]) * batches, int(loc[t]), refetch_features)
            extra = min(refetch_weights, refetch_features)  # fewer DDR bytes, then fewer MSMC bytes
            read[0] += extra[0]
            read[1] += extra[1]
        ddr_read, ddr_write = read[0], write[0]
        msmc_bytes = read[1] + write[1]
        dma = _cdiv((ddr_read + ddr_write) * 1000, ddr_rate) + _cdiv(msmc_bytes * 1000, msmc_rate)
        setup = int(params[P_LAYER_SETUP]) if kind != KIND_NONE else 0
        tiles = max(1, _cdiv(in_bytes + out_bytes, half_work))
        busy = max(int(compute[i]), dma) + _cdiv(min(int(compute[i]), dma), tiles)
        res[i, R_COMPUTE] = compute[i]
        res[i, R_DMA] = dma
        res[i, R_SETUP] = setup
        res[i, R_CYCLES] = busy + setup
        res[i, R_DDR_READ] = ddr_read
        res[i, R_DDR_WRITE] = ddr_write
        res[i, R_MSMC_BYTES] = msmc_bytes
        res[i, R_OUT_LOC] = loc[outs[0]] if outs else -1
        res[i, R_W_LOC] = wloc[i]
    return res, loc


__all__ = [
    "KIND_NONE",
    "KIND_VEC",
    "compute_cycles",
    "persist_weights",
    "place_tensors",
    "plan_offsets",
    "simulate",
]
