# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
"""Exact 16-bit convolution, dense and depthwise layers (igemm16.h), output stage fused.

Twin: ``reference.mac_output(reference.add_bias(reference.conv2d_acc(x, w, ...), b), acc_width, ...)``
for layers with 16-bit activations and/or 16-bit weights (the 8-bit ones run ``_igemm``): uint8,
int8, uint16 or int16 activations times int8 or int16 constant weights, int64 sums, the output
stage in wrapping 64-bit arithmetic like the specification's int64 arrays. Two variants: AVX2
(``vpmaddwd`` pairs, exact int32 pair sums accumulated without loss, see igemm16.h) and portable
C; :func:`plan_conv` / :func:`plan_dense` take the variant at run time (``fast.isa()``: ``c`` runs
the C variant, every other ISA the AVX2 one, which AVX-512 VNNI and AVX-VNNI CPUs also have).
``run(..., threads)`` splits the work (output-pixel chunks x channel groups, or channels) into
``threads`` contiguous parts on OpenMP threads: the parts never share a buffer, so the result
does not depend on the thread count.
"""
from cython.parallel import prange
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t
from libc.stdlib cimport calloc, free, malloc

import numpy as np

cdef extern from "igemm16.h" nogil:
    int I16_MR
    int I16_LEN
    ctypedef struct i16_stage_t:
        const int64_t *bias
        const int64_t *mult
        int shift
        int acc32
        int64_t lo, hi
        void *out
        int out_kind
    ctypedef struct i16_conv_t:
        const void *x
        int x_kind
        int C, H, W, kh, kw, sh, sw, dh, dw, Ho, Wo
        const int16_t *wpack
        const int32_t *fix_ptr
        const int32_t *fix_k
        int M, K
        int mgroups
        int use_avx2
        i16_stage_t st
    ctypedef struct i16_dw_t:
        const void *x
        int x_kind
        int C, H, W, kh, kw, sh, sw, dh, dw, Ho, Wo
        const int16_t *w
        int use_avx2
        i16_stage_t st
    int i16_have_avx2()
    size_t i16_scratch_bytes(int K)
    size_t i16_dw_scratch_bytes(int Wo)
    ctypedef int (*i16_part_fn)(const void *p, int begin, int end, void *scratch) noexcept nogil
    int i16_conv_part(const void *p, int begin, int end, void *scratch)
    int i16_dw_part(const void *p, int begin, int end, void *scratch)

MR = I16_MR
LEN = I16_LEN
X_KINDS = {np.dtype(np.uint8): 0, np.dtype(np.int8): 1, np.dtype(np.uint16): 2, np.dtype(np.int16): 3}
OUT_KINDS = {np.dtype(np.int8): 0, np.dtype(np.uint8): 1, np.dtype(np.int16): 2, np.dtype(np.uint16): 3}
W_DTYPES = (np.dtype(np.int8), np.dtype(np.int16))
MAX_K = 1 << 28  # im2col offsets and the scratch stay small; the int64 sums are exact far beyond


def have_avx2() -> bool:
    """This CPU (and build) runs the AVX2 variant."""
    return bool(i16_have_avx2())


def is_16bit(x_dtype, w_dtype) -> bool:
    """A layer these kernels are for: 8/16-bit activations and weights, at least one of them 16-bit."""
    x_dtype, w_dtype = np.dtype(x_dtype), np.dtype(w_dtype)
    return x_dtype in X_KINDS and w_dtype in W_DTYPES and max(x_dtype.itemsize, w_dtype.itemsize) == 2


def pack_weights(w2):
    """(M, K) int8/int16 -> (packed, fix_ptr, fix_k): the weights as [ceil(M/MR)][ceil(K/2)][MR][2]
    int16, zero padded, -32768 clamped to -32767 (the layout of igemm16.h), and the taps whose weight
    was -32768, per output channel m: ``fix_k[fix_ptr[m]:fix_ptr[m + 1]]`` (int32)."""
    w2 = np.asarray(w2)
    m, k = w2.shape
    mp, kp = -(-m // I16_MR) * I16_MR, -(-k // 2) * 2
    padded = np.zeros((mp, kp), np.int16)
    padded[:m, :k] = np.maximum(w2.astype(np.int32), -32767)
    rows, taps = np.nonzero(w2 == -32768)  # row-major: sorted by channel
    fix_ptr = np.searchsorted(rows, np.arange(m + 1)).astype(np.int32)
    packed = np.ascontiguousarray(padded.reshape(mp // I16_MR, I16_MR, kp // 2, 2).transpose(0, 2, 1, 3))
    return packed, fix_ptr, np.ascontiguousarray(np.append(taps, 0), dtype=np.int32)


cdef int _run_parts(i16_part_fn fn, const void *p, int total, int threads, size_t scratch) except -9:
    """fn over [0, total) in ``threads`` contiguous parts on OpenMP threads, each with its own
    scratch of ``scratch`` bytes; the first non-zero return code, or 0."""
    cdef int parts = max(1, min(threads, total)), t, rc = 0
    cdef size_t size = scratch + 64
    cdef uint8_t *raw = <uint8_t *>malloc(size * parts)
    cdef int *rcs = <int *>calloc(parts, sizeof(int))
    if raw == NULL or rcs == NULL:
        free(raw)
        free(rcs)
        raise MemoryError()
    with nogil:
        for t in prange(parts, num_threads=parts, schedule="static", chunksize=1):
            rcs[t] = fn(p, total * t // parts, total * (t + 1) // parts, <void *>(raw + size * t))
    for t in range(parts):
        rc = rc or rcs[t]
    free(raw)
    free(rcs)
    return rc


def _pad(x, int top, int bottom, int left, int right):
    """x (N, C, H, W) zero padded in H and W (np.pad's result, without its generic machinery)."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, h + top + bottom, w + left + right), x.dtype)
    out[:, :, top:top + h, left:left + w] = x
    return out


def _stage_arrays(mult, int m):
    return np.ascontiguousarray(np.broadcast_to(np.asarray(mult, np.int64).reshape(-1), (m,)))


def _stage_ok(mult, shift, int acc_width, out_dtype, int m) -> bool:
    mult = np.asarray(mult)
    return (np.dtype(out_dtype) in OUT_KINDS and np.ndim(shift) == 0 and 0 <= int(shift) <= 62
            and acc_width in (32, 64) and mult.dtype.kind in "iu" and mult.size in (1, m))


cdef void _set_stage(i16_stage_t *st, const int64_t[::1] bias, const int64_t[::1] mult, int shift, int acc32,
                     int64_t lo, int64_t hi, int out_kind):
    st.bias = &bias[0]
    st.mult = &mult[0]
    st.shift = shift
    st.acc32 = acc32
    st.lo, st.hi = lo, hi
    st.out_kind = out_kind


cdef class Conv16:
    """One conv2d layer with groups == 1 (or a dense layer as a 1x1 convolution): constants
    prepared once (packed weights, row sums, multipliers), then :meth:`run` per frame. Build with
    :func:`plan_conv`."""
    cdef i16_conv_t p
    cdef object wpack, fix_ptr, fix_k, row_sums, mult, pads, x_dtype, out_dtype, bias_ref, bias_arr
    cdef int need_h, need_w

    def __init__(self, w, x_dtype, strides, pads, dilations, int ho, int wo, mult, int shift, int acc_width,
                 int64_t lo, int64_t hi, out_dtype):
        m, c, kh, kw = w.shape
        w2 = np.asarray(w).reshape(m, -1)
        self.wpack, self.fix_ptr, self.fix_k = pack_weights(w2)
        self.row_sums = w2.astype(np.int64).sum(axis=1)
        self.mult = _stage_arrays(mult, m)
        self.pads = tuple(int(v) for v in pads)
        self.x_dtype, self.out_dtype = np.dtype(x_dtype), np.dtype(out_dtype)
        self.bias_ref, self.bias_arr = self, None
        self.p.x_kind = X_KINDS[self.x_dtype]
        self.p.C, self.p.kh, self.p.kw = c, kh, kw
        self.p.sh, self.p.sw = strides
        self.p.dh, self.p.dw = dilations
        self.p.Ho, self.p.Wo = ho, wo
        self.p.M, self.p.K = m, c * kh * kw
        cdef const int16_t[:, :, :, ::1] wp = self.wpack
        self.p.wpack = &wp[0, 0, 0, 0]
        cdef const int32_t[::1] fp = self.fix_ptr, fk = self.fix_k
        self.p.fix_ptr, self.p.fix_k = &fp[0], &fk[0]
        _set_stage(&self.p.st, self.mult, self.mult, shift, acc_width == 32, lo, hi, OUT_KINDS[self.out_dtype])
        self.need_h = (ho - 1) * self.p.sh + (kh - 1) * self.p.dh + 1
        self.need_w = (wo - 1) * self.p.sw + (kw - 1) * self.p.dw + 1

    def _bias(self, bias):
        """The per-channel bias with the uint16 offset folded in (cached: a constant bias is the
        same array every frame). int64 arithmetic wraps like the specification's."""
        if bias is not self.bias_ref:
            m = self.p.M
            b = np.zeros(m, np.int64) if bias is None else np.broadcast_to(np.asarray(bias, np.int64).reshape(-1), (m,))
            if self.p.x_kind == 2:
                b = b + np.int64(32768) * self.row_sums
            self.bias_arr, self.bias_ref = np.ascontiguousarray(b, dtype=np.int64), bias
        return self.bias_arr

    def run(self, x, bias, int threads=1, bint avx2=True):
        """The layer on ``x`` (N, C, H, W) -> (N, M, ho, wo) of the output type, or None when ``x``
        is not of the planned element type. ``avx2``: the AVX2 variant where it is exact."""
        x = np.asarray(x)
        if x.ndim != 4 or x.dtype != self.x_dtype or x.shape[1] != self.p.C:
            return None
        cdef const int64_t[::1] b = self._bias(bias)
        pt, pl = self.pads[0], self.pads[1]
        extra_h, extra_w = max(0, self.need_h - x.shape[2] - pt), max(0, self.need_w - x.shape[3] - pl)
        xp = np.ascontiguousarray(x)
        if pt or pl or extra_h or extra_w:  # the code of 0 (uint16: read as -32768, folded into the bias)
            xp = _pad(xp, pt, extra_h, pl, extra_w)
        cdef i16_conv_t p = self.p
        p.st.bias = &b[0]
        p.H, p.W = xp.shape[2], xp.shape[3]
        p.use_avx2 = avx2 and i16_have_avx2()
        cdef int npix = p.Ho * p.Wo, chunks = (npix + I16_LEN - 1) // I16_LEN
        cdef int mblocks = (p.M + I16_MR - 1) // I16_MR
        threads = max(1, threads)
        p.mgroups = 1 if chunks >= 2 * threads else min(mblocks, -(-2 * threads // chunks))
        n = x.shape[0]
        out = np.empty((n, p.M, npix), self.out_dtype)
        cdef uint8_t[:, :, ::1] raw = out.view(np.uint8)
        cdef const uint8_t[:, :, :, ::1] xb
        xb = xp.view(np.uint8)
        cdef size_t scratch = i16_scratch_bytes(p.K)
        cdef Py_ssize_t i
        for i in range(n):
            p.x = <const void *>&xb[i, 0, 0, 0]
            p.st.out = <void *>&raw[i, 0, 0]
            if _run_parts(i16_conv_part, &p, chunks * p.mgroups, threads, scratch) != 0:
                raise RuntimeError("the 16-bit kernel failed")
        return out.reshape(n, p.M, p.Ho, p.Wo)


cdef class Dense16:
    """A dense layer x (..., K) @ w.T (M, K) as a 1x1 :class:`Conv16` of the K x rows matrix."""
    cdef object conv
    cdef int rows

    def __init__(self, conv, int rows):
        self.conv, self.rows = conv, rows

    def run(self, x, bias, int threads=1, bint avx2=True):
        x = np.asarray(x)
        k = x.shape[x.ndim - 1]
        if x.size != self.rows * k:
            return None
        cols = np.ascontiguousarray(x.reshape(self.rows, k).T).reshape(1, k, 1, self.rows)
        out = self.conv.run(cols, bias, threads, avx2)
        return None if out is None else out.reshape(-1, self.rows).T.reshape(tuple(x.shape)[:x.ndim - 1] + (-1,))


cdef class Depthwise16:
    """A depthwise conv2d (groups == C == M, weights (C, 1, kh, kw)); channels split over the threads.
    AVX2 for 16-bit activations with W stride 1 or 2, else the C loops."""
    cdef i16_dw_t p
    cdef object w, mult, pads, x_dtype, out_dtype, bias_ref, bias_arr

    def __init__(self, w, x_dtype, strides, pads, dilations, int ho, int wo, mult, int shift, int acc_width,
                 int64_t lo, int64_t hi, out_dtype):
        c, _, kh, kw = w.shape
        self.w = np.ascontiguousarray(np.asarray(w).reshape(c, kh, kw), dtype=np.int16)
        self.mult = _stage_arrays(mult, c)
        self.pads = tuple(int(v) for v in pads)
        self.x_dtype, self.out_dtype = np.dtype(x_dtype), np.dtype(out_dtype)
        self.bias_ref, self.bias_arr = self, None
        self.p.x_kind = X_KINDS[self.x_dtype]
        self.p.C, self.p.kh, self.p.kw = c, kh, kw
        self.p.sh, self.p.sw = strides
        self.p.dh, self.p.dw = dilations
        self.p.Ho, self.p.Wo = ho, wo
        cdef const int16_t[:, :, ::1] wv = self.w
        self.p.w = &wv[0, 0, 0]
        _set_stage(&self.p.st, self.mult, self.mult, shift, acc_width == 32, lo, hi, OUT_KINDS[self.out_dtype])

    def run(self, x, bias, int threads=1, bint avx2=True):
        x = np.asarray(x)
        if x.ndim != 4 or x.dtype != self.x_dtype or x.shape[1] != self.p.C:
            return None
        if bias is not self.bias_ref:
            c = self.p.C
            bc = np.zeros(c, np.int64) if bias is None else np.broadcast_to(np.asarray(bias, np.int64).reshape(-1), (c,))
            if self.p.x_kind == 2:  # the kernels read uint16 as x - 32768 (int64 wraps like the specification's)
                bc = bc + np.int64(32768) * self.w.astype(np.int64).reshape(c, -1).sum(axis=1)
            self.bias_arr, self.bias_ref = np.ascontiguousarray(bc, dtype=np.int64), bias
        cdef const int64_t[::1] b = self.bias_arr
        cdef i16_dw_t p = self.p
        p.use_avx2 = avx2 and i16_have_avx2() and p.x_kind >= 2 and p.sw in (1, 2) and p.kh * p.kw <= 255
        pt, pl = self.pads[0], self.pads[1]
        need_h = (p.Ho - 1) * p.sh + (p.kh - 1) * p.dh + 1
        need_w = (p.Wo - 1) * p.sw + (p.kw - 1) * p.dw + 1
        if p.use_avx2:  # the AVX2 rows read whole steps of 16 outputs (igemm16.h, i16_dw_row_avx2)
            need_w = p.sw * max(p.Wo, 16) + (p.kw - 1) * p.dw + 1
        extra_h, extra_w = max(0, need_h - x.shape[2] - pt), max(0, need_w - x.shape[3] - pl)
        xp = np.ascontiguousarray(x)
        if pt or pl or extra_h or extra_w:  # zero is the code of 0 (uint16 too: read as -32768, folded into the bias)
            xp = _pad(xp, pt, extra_h, pl, extra_w)
        p.st.bias = &b[0]
        p.H, p.W = xp.shape[2], xp.shape[3]
        n = x.shape[0]
        out = np.empty((n, p.C, p.Ho * p.Wo), self.out_dtype)
        cdef uint8_t[:, :, ::1] raw = out.view(np.uint8)
        cdef const uint8_t[:, :, :, ::1] xb = xp.view(np.uint8)
        cdef Py_ssize_t i
        for i in range(n):
            p.x = <const void *>&xb[i, 0, 0, 0]
            p.st.out = <void *>&raw[i, 0, 0]
            if _run_parts(i16_dw_part, &p, p.C, max(1, threads), i16_dw_scratch_bytes(p.Wo)) != 0:
                raise RuntimeError("the 16-bit depthwise kernel failed")
        return out.reshape(n, p.C, p.Ho, p.Wo)


def _geometry_ok(strides, pads, dilations, int ho, int wo) -> bool:
    return (len(strides) == 2 and len(dilations) == 2 and len(pads) == 4 and min(strides) >= 1
            and min(dilations) >= 1 and min(pads) >= 0 and ho >= 1 and wo >= 1)


def plan_conv(w, int groups, x_dtype, strides, pads, dilations, out_shape, mult, shift, int acc_width, lo, hi,
              out_dtype):
    """The kernel object of a conv2d layer these kernels cover (16-bit activations or weights,
    groups 1 or depthwise, constant weights), else None (the caller keeps its other path)."""
    w = None if w is None else np.asarray(w)
    if (w is None or w.ndim != 4 or len(out_shape) != 4 or not is_16bit(x_dtype, w.dtype)
            or not _stage_ok(mult, shift, acc_width, out_dtype, w.shape[0])
            or not _geometry_ok(strides, pads, dilations, out_shape[2], out_shape[3]) or w.size == 0):
        return None
    ho, wo = out_shape[2:]
    args = (x_dtype, tuple(strides), pads, tuple(dilations), ho, wo, mult, int(shift), acc_width, int(lo), int(hi),
            out_dtype)
    if groups == 1:
        if int(np.prod(w.shape[1:])) > MAX_K:
            return None
        return Conv16(w, *args)
    if w.shape[1] == 1 and w.shape[0] == groups:
        return Depthwise16(w, *args)
    return None


def plan_dense(w, x_dtype, out_shape, mult, shift, int acc_width, lo, hi, out_dtype):
    """The kernel object of a dense layer (x (..., K) @ w.T, w (M, K) constant), or None."""
    w = None if w is None else np.asarray(w)
    if w is None or w.ndim != 2 or len(out_shape) < 1:
        return None
    rows = int(np.prod(tuple(out_shape)[:len(out_shape) - 1]))
    conv = plan_conv(w.reshape(w.shape + (1, 1)), 1, x_dtype, (1, 1), (0, 0, 0, 0), (1, 1),
                     (1, w.shape[0], 1, rows), mult, shift, acc_width, lo, hi, out_dtype)
    return None if conv is None else Dense16(conv, rows)
