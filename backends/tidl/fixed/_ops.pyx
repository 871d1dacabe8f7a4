# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
# distutils: extra_compile_args = -ffp-contract=off
"""Integer kernels of the non-GEMM ops, fused with their output stage (twins: ``reference``).

A kernel computes exact integer values a row (or a chunk) at a time into a
small buffer, then runs one *stage* on each value and stores it straight in
the result's element type::

    v = clamp(v + bias, amin, amax) * mult       # identity unless set
    v = clamp(round_shift(v, shift), lo, hi)
    out = (T) v                                   # T: i8 u8 i16 u16 i32 i64, as numpy's astype

That stage is a MAC layer's output stage (``reference.mac_output``), a
requantization (``reference.requantize``: mult = m, shift = n) or a clamp.
The callers (``fast_ops``) bound every intermediate from the element types and
the parameters: values run in int64, or in int32 (``narrow``, ``acc32``) where
the bound allows, and never overflow, so C's arithmetic is numpy's. The float
kernels (quantize, dequantize) do the specification's IEEE double operations,
compiled without FMA contraction.

The loops are written for GCC to vectorize them on baseline x86-64 (SSE2):
int32 lanes, int16 x int16 -> int32 products (grouped convs run on zero-padded
int16 copies of the input planes, one pass per tap over a whole plane at
stride 1), separable pooling in the input's type, table lookups in the
result's type. Those loops are the C forms; on 8-bit codes, pooling, global
pooling, requantization/concat, linear resize, quantize and dequantize (and the
add of two 8-bit tensors) also have AVX2 forms (ops_simd.h), run when the
caller passes ``use_avx2`` (``fast.isa() != "c"``) and the CPU has AVX2.
"""
from libc.math cimport copysign
from libc.stdint cimport (INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, int8_t, int16_t, int32_t, int64_t,
                          uint8_t, uint16_t)
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from cython cimport floating

import numpy as np

ctypedef fused in_t:  # integer tensors
    int8_t
    uint8_t
    int16_t
    uint16_t

ctypedef fused in2_t:  # the second operand of an element-wise op
    int8_t
    uint8_t
    int16_t
    uint16_t

ctypedef fused acc_t:  # exact values before the stage
    int32_t
    int64_t

ctypedef fused out_t:  # a result element type (the kernels pick it from KINDS)
    int8_t
    uint8_t
    int16_t
    uint16_t
    int32_t
    int64_t

ctypedef fused plane_t:  # a zero-padded copy of a conv input plane
    int16_t
    int32_t

# result element types, in the order of KINDS
cdef enum:
    K_I8, K_U8, K_I16, K_U16, K_I32, K_I64

KINDS = {np.dtype(t): k for k, t in enumerate((np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64))}
cdef Py_ssize_t[6] SIZES
SIZES[:] = [1, 1, 2, 2, 4, 8]

cdef enum:
    E_ADD, E_SUB, E_MUL, E_MAX, E_MIN
ELTWISE = {"add": E_ADD, "sub": E_SUB, "mul": E_MUL, "max": E_MAX, "min": E_MIN}

cdef enum:
    CHUNK = 2048  # elements per buffer pass of the flat kernels


# ----------------------------------------------------------------------------- the stage
cdef struct Stage:
    int64_t bias, amin, amax, mult, lo, hi
    int shift
    bint narrow  # every intermediate fits int32


cdef Stage _make_stage(int64_t mult, int shift, int64_t lo, int64_t hi, bint narrow) except *:
    if shift < 0 or shift > 62:
        raise ValueError(f"shift {shift} out of range")
    cdef Stage s
    s.bias, s.amin, s.amax, s.mult, s.shift, s.lo, s.hi, s.narrow = 0, INT64_MIN, INT64_MAX, mult, shift, lo, hi, narrow
    return s


cdef void _store(const acc_t* v, Py_ssize_t k, const Stage* s, char* dst, int kind) noexcept nogil:
    """dst[i] = (T) stage(v[i]) for i < k; dst points at the run's first element, T is ``kind``."""
    if kind == K_I8:
        _store_as(<int8_t*>dst, v, k, s)
    elif kind == K_U8:
        _store_as(<uint8_t*>dst, v, k, s)
    elif kind == K_I16:
        _store_as(<int16_t*>dst, v, k, s)
    elif kind == K_U16:
        _store_as(<uint16_t*>dst, v, k, s)
    elif kind == K_I32:
        _store_as(<int32_t*>dst, v, k, s)
    else:
        _store_as(<int64_t*>dst, v, k, s)


cdef inline int32_t _stage32(int32_t t, int32_t bias, int32_t half, int shift, int32_t lo, int32_t hi) noexcept nogil:
    t = (t + bias + half) >> shift
    t = lo if t < lo else t
    return hi if t > hi else t


cdef inline int32_t _stage32m(int32_t t, int32_t bias, int32_t mult, int32_t half, int shift, int32_t lo,
                              int32_t hi) noexcept nogil:
    t = ((t + bias) * mult + half) >> shift
    t = lo if t < lo else t
    return hi if t > hi else t


cdef void _store_as(out_t* d, const acc_t* v, Py_ssize_t k, const Stage* s) noexcept nogil:
    """One tight loop per form of the stage (each vectorizes): int32 when every intermediate fits
    (without the multiply when it is 1: SSE2 has no int32 multiply, it is emulated), int64, and
    int64 with the accumulator saturation."""
    cdef Py_ssize_t i
    cdef int shift = s.shift
    cdef int64_t t, bias = s.bias, mult = s.mult, lo = s.lo, hi = s.hi, amin = s.amin, amax = s.amax
    cdef int64_t half = (<int64_t>1 << (shift - 1)) if shift > 0 else 0
    cdef int32_t b32 = <int32_t>bias, m32 = <int32_t>mult, h32 = <int32_t>half
    cdef int32_t lo32 = <int32_t>max(lo, <int64_t>INT32_MIN), hi32 = <int32_t>min(hi, <int64_t>INT32_MAX)
    if s.narrow and m32 == 1:
        for i in range(k):
            d[i] = <out_t>_stage32(<int32_t>v[i], b32, h32, shift, lo32, hi32)
    elif s.narrow:
        for i in range(k):
            d[i] = <out_t>_stage32m(<int32_t>v[i], b32, m32, h32, shift, lo32, hi32)
    elif amin == INT64_MIN and amax == INT64_MAX:
        for i in range(k):
            t = ((v[i] + bias) * mult + half) >> shift
            t = lo if t < lo else t
            d[i] = <out_t>(hi if t > hi else t)
    else:
        for i in range(k):
            t = v[i] + bias
            t = amin if t < amin else t
            t = amax if t > amax else t
            t = (t * mult + half) >> shift
            t = lo if t < lo else t
            d[i] = <out_t>(hi if t > hi else t)


cdef char* _out_ptr(unsigned char[::1] out, int kind, Py_ssize_t count) except NULL:
    if kind < 0 or kind > K_I64:
        raise ValueError(f"unknown result kind {kind}")
    if count <= 0 or out.shape[0] != count * SIZES[kind]:
        raise ValueError(f"result buffer holds {out.shape[0]} bytes, need {count * SIZES[kind]}")
    return <char*>&out[0]


cdef extern from "ops_simd.h" nogil:
    int ops_requant8_avx2(const uint8_t *x, int is_signed, size_t n, int32_t mult, int shift, int32_t lo, int32_t hi,
                          void *out, int kind)
    int ops_max_pool8_avx2(const uint8_t *x, int is_signed, size_t planes, Py_ssize_t H, Py_ssize_t W,
                           const Py_ssize_t *geo, int32_t mult, int shift, int32_t lo, int32_t hi, void *out, int kind)
    int ops_avg_pool8_avx2(const uint8_t *x, int is_signed, size_t planes, Py_ssize_t H, Py_ssize_t W,
                           const Py_ssize_t *geo, const int32_t *avg_mult, int32_t mult, int shift, int32_t lo,
                           int32_t hi, void *out, int kind)
    int ops_global8_avx2(const uint8_t *x, int is_signed, size_t rows, size_t P, int is_max, int64_t avg_mult,
                         int64_t *res)
    int ops_resize8_avx2(const uint8_t *x, int is_signed, size_t planes, Py_ssize_t H, Py_ssize_t W, Py_ssize_t HO,
                         Py_ssize_t WO, const int32_t *y0, const int32_t *y1, const int32_t *wy, const int32_t *x0,
                         const int32_t *x1, const int32_t *wx, int32_t mult, int shift, int32_t lo, int32_t hi,
                         void *out, int kind)
    int ops_quantize_avx2(const void *x, int is_f64, size_t n, double scale, double lo, double hi, int32_t zp,
                          void *out, int kind)
    int ops_dequantize_avx2(const void *x, int size, int is_signed, size_t n, double scale, double zp, float *out)


cdef int64_t[6] KIND_MIN
cdef int64_t[6] KIND_MAX
KIND_MIN[:] = [-128, 0, -32768, 0, INT32_MIN, INT64_MIN]
KIND_MAX[:] = [127, 255, 32767, 65535, INT32_MAX, INT64_MAX]


cdef bint _simd_stage(int64_t mult, int shift, int64_t lo, int64_t hi, bint narrow, int kind, int64_t vmin,
                      int64_t vmax, int32_t* lo32, int32_t* hi32) noexcept nogil:
    """Whether the AVX2 kernels' stage (int32 lanes, saturating packs to an 8/16-bit result) equals the
    C form's stage and cast: every intermediate fits int32 (``narrow``) and both clamp bounds lie in the
    result type. The identity stage on values in [vmin, vmax] takes those bounds tightened to them."""
    if not narrow or kind > K_U16 or shift > 30 or mult < INT32_MIN or mult > INT32_MAX:
        return False
    if mult == 1 and shift == 0:
        lo = max(lo, vmin)
        hi = min(hi, vmax)
    if not (KIND_MIN[kind] <= lo <= KIND_MAX[kind] and KIND_MIN[kind] <= hi <= KIND_MAX[kind]):
        return False
    lo32[0] = <int32_t>lo
    hi32[0] = <int32_t>hi
    return True


cdef Py_ssize_t _simd_runs = 0


def simd_runs():
    """How many calls so far ran an AVX2 form of ops_simd.h (the tests check that theirs do)."""
    return _simd_runs


cdef int _simd_done(int status) except -1:
    """status of an AVX2 kernel: 1 done (counted), 0 not run (the C form runs), -1 out of memory."""
    global _simd_runs
    if status < 0:
        raise MemoryError()
    _simd_runs += status > 0
    return status


# ----------------------------------------------------------------------------- grouped conv
cdef void _pad_plane(const in_t* x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t pt, Py_ssize_t pl,
                     plane_t* p, Py_ssize_t HP, Py_ssize_t WP) noexcept nogil:
    """p (HP, WP) = x shifted by (pt, pl), zeros outside."""
    cdef Py_ssize_t r, q, iy, x0, x1
    x0 = max(0, pl)
    x1 = min(WP, W + pl)
    for r in range(HP):
        iy = r - pt
        if iy < 0 or iy >= H or x0 >= x1:
            memset(p + r * WP, 0, WP * sizeof(plane_t))
            continue
        memset(p + r * WP, 0, x0 * sizeof(plane_t))
        for q in range(x0, x1):
            p[r * WP + q] = x[iy * W + q - pl]
        memset(p + r * WP + x1, 0, (WP - x1) * sizeof(plane_t))


cdef inline void _add_taps(const plane_t* planes, Py_ssize_t HP, Py_ssize_t WP, const int32_t[:, :, :, ::1] w,
                           Py_ssize_t o, Py_ssize_t row, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t sw, Py_ssize_t n,
                           acc_t* acc) noexcept nogil:
    """acc[0:n] = the sums of output channel o over its group's padded planes (HP, WP): output q reads
    the input at plane offset (row + i * dh) * WP + j * dw + q * sw for tap (i, j)."""
    cdef Py_ssize_t cg = w.shape[1], kh = w.shape[2], kw = w.shape[3], ci, i, j, q
    cdef const plane_t* xr
    cdef plane_t wv
    memset(acc, 0, n * sizeof(acc_t))
    for ci in range(cg):
        for i in range(kh):
            for j in range(kw):
                wv = <plane_t>w[o, ci, i, j]
                if wv == 0:
                    continue
                xr = planes + (ci * HP + row + i * dh) * WP + j * dw
                if sw == 1:
                    for q in range(n):
                        acc[q] += <acc_t>(<int32_t>xr[q] * <int32_t>wv)
                elif sw == 2:
                    for q in range(n):
                        acc[q] += <acc_t>(<int32_t>xr[2 * q] * <int32_t>wv)
                else:
                    for q in range(n):
                        acc[q] += <acc_t>(<int32_t>xr[q * sw] * <int32_t>wv)


cdef void _conv_group(const plane_t* planes, Py_ssize_t HP, Py_ssize_t WP, const int32_t[:, :, :, ::1] w,
                      Py_ssize_t o, const Py_ssize_t* geo, acc_t* acc, const Stage* s0,
                      const int64_t[::1] bias, const int64_t[::1] mult, char* dst, int kind) noexcept nogil:
    """Output channel o (all rows) from its group's padded input planes (HP, WP); acc holds HO * WP."""
    cdef Py_ssize_t sh = geo[0], sw = geo[1], dh = geo[2], dw = geo[3], WO = geo[4], HO = geo[5], oy
    cdef Stage s = s0[0]
    s.bias = bias[o]
    s.mult = mult[o]
    if sh == 1 and sw == 1:
        # one pass per tap over the whole plane: output (oy, ox) accumulates at oy * WP + ox
        # (the columns between WO and WP are computed and dropped), so every loop is long
        _add_taps(planes, HP, WP, w, o, 0, dh, dw, 1, (HO - 1) * WP + WO, acc)
        for oy in range(HO):
            _store(acc + oy * WP, WO, &s, dst + oy * WO * SIZES[kind], kind)
        return
    for oy in range(HO):
        _add_taps(planes, HP, WP, w, o, oy * sh, dh, dw, sw, WO, acc)
        _store(acc, WO, &s, dst + oy * WO * SIZES[kind], kind)


cdef void _conv(const in_t[:, :, :, ::1] x, const int32_t[:, :, :, ::1] w, const int64_t[::1] bias,
               const int64_t[::1] mult, const Stage* s, const Py_ssize_t* geo, Py_ssize_t pt, Py_ssize_t pl,
               Py_ssize_t groups, plane_t* planes, acc_t* acc, char* dst, int kind) noexcept nogil:
    cdef Py_ssize_t N = x.shape[0], H = x.shape[2], W = x.shape[3], O = w.shape[0], cg = w.shape[1]
    cdef Py_ssize_t WO = geo[4], HO = geo[5], per_group = O // groups, n, g, ci, o
    cdef Py_ssize_t HP = (HO - 1) * geo[0] + (w.shape[2] - 1) * geo[2] + 1
    cdef Py_ssize_t WP = (WO - 1) * geo[1] + (w.shape[3] - 1) * geo[3] + 1
    for n in range(N):
        for g in range(groups):
            for ci in range(cg):
                _pad_plane(&x[n, g * cg + ci, 0, 0], H, W, pt, pl, planes + ci * HP * WP, HP, WP)
            for o in range(g * per_group, (g + 1) * per_group):
                _conv_group(planes, HP, WP, w, o, geo, acc, s, bias, mult, dst + (n * O + o) * HO * WO * SIZES[kind],
                            kind)


def grouped_conv(const in_t[:, :, :, ::1] x, const int32_t[:, :, :, ::1] w, const int64_t[::1] bias,
                 const int64_t[::1] mult, int shift, int64_t amin, int64_t amax, int64_t lo, int64_t hi,
                 strides, pads, dilations, Py_ssize_t groups, Py_ssize_t ho, Py_ssize_t wo, bint acc32,
                 bint narrow, unsigned char[::1] out, int kind):
    """out (N, O, ho, wo) = stage(conv(x, w, groups) + bias[o]) with the channel's ``mult``, as ``kind``.
    ``acc32``: every sum fits int32; ``narrow``: the whole stage does (no accumulator saturation)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], O = w.shape[0], cg = w.shape[1]
    if groups <= 0 or C != cg * groups or O % groups or bias.shape[0] != O or mult.shape[0] != O:
        raise ValueError("grouped_conv: inconsistent shapes")
    if ho <= 0 or wo <= 0 or min(strides) <= 0 or min(dilations) <= 0 or min(pads[:2]) < 0:
        raise ValueError("grouped_conv: empty output, bad strides or negative padding")
    if narrow and not acc32:
        raise ValueError("grouped_conv: a narrow stage needs 32-bit sums")
    cdef char* dst = _out_ptr(out, kind, N * O * ho * wo)
    cdef bint wide_plane = in_t is uint16_t
    cdef const int32_t* wflat = &w[0, 0, 0, 0]
    cdef Py_ssize_t t
    if not wide_plane:
        for t in range(O * cg * w.shape[2] * w.shape[3]):
            if wflat[t] < -32768 or wflat[t] > 32767:
                raise ValueError("grouped_conv: weights must fit int16")
    cdef Stage s = _make_stage(1, shift, lo, hi, narrow)
    s.amin, s.amax = amin, amax
    cdef Py_ssize_t[6] geo
    geo[:] = [strides[0], strides[1], dilations[0], dilations[1], wo, ho]
    cdef Py_ssize_t hp = (ho - 1) * geo[0] + (w.shape[2] - 1) * geo[2] + 1
    cdef Py_ssize_t wp = (wo - 1) * geo[1] + (w.shape[3] - 1) * geo[3] + 1
    cdef void* planes = malloc(cg * hp * wp * (4 if wide_plane else 2))
    cdef void* acc = malloc(ho * wp * 8)
    cdef Py_ssize_t pt = pads[0], pl = pads[1]
    if planes == NULL or acc == NULL:
        free(planes)
        free(acc)
        raise MemoryError()
    with nogil:
        if wide_plane:
            if acc32:
                _conv(x, w, bias, mult, &s, geo, pt, pl, groups, <int32_t*>planes, <int32_t*>acc, dst, kind)
            else:
                _conv(x, w, bias, mult, &s, geo, pt, pl, groups, <int32_t*>planes, <int64_t*>acc, dst, kind)
        elif acc32:
            _conv(x, w, bias, mult, &s, geo, pt, pl, groups, <int16_t*>planes, <int32_t*>acc, dst, kind)
        else:
            _conv(x, w, bias, mult, &s, geo, pt, pl, groups, <int16_t*>planes, <int64_t*>acc, dst, kind)
    free(planes)
    free(acc)


def mac_stage(const int64_t[:, :, ::1] acc, const int64_t[::1] bias, const int64_t[::1] mult, int shift,
              int64_t amin, int64_t amax, int64_t lo, int64_t hi, unsigned char[::1] out, int kind):
    """The output stage alone on exact sums acc (N, C, P): out = stage(acc + bias[c]) with mult[c]."""
    cdef Py_ssize_t N = acc.shape[0], C = acc.shape[1], P = acc.shape[2], n, c
    if bias.shape[0] != C or mult.shape[0] != C:
        raise ValueError("mac_stage: bias/mult need one value per channel")
    cdef char* dst = _out_ptr(out, kind, N * C * P)
    cdef Stage s = _make_stage(1, shift, lo, hi, False)
    s.amin, s.amax = amin, amax
    with nogil:
        for n in range(N):
            for c in range(C):
                s.bias = bias[c]
                s.mult = mult[c]
                _store(&acc[n, c, 0], P, &s, dst + (n * C + c) * P * SIZES[kind], kind)


# ----------------------------------------------------------------------------- pooling
cdef void _max_pool(const in_t[:, :, :, ::1] x, const Py_ssize_t* geo, const Stage* s, in_t* col, in_t* row_max,
                    acc_t* buf, char* dst, int kind) noexcept nogil:
    """Separable, in the input's type: the max over the window's rows per column, then over its
    columns. col holds pl + W + the right overhang, padded with the type's minimum (padding never
    wins: every window holds a tap in each axis, the caller checks)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t kh = geo[0], kw = geo[1], sh = geo[2], sw = geo[3], pt = geo[4], pl = geo[5]
    cdef Py_ssize_t dh = geo[6], dw = geo[7], ho = geo[8], wo = geo[9]
    cdef Py_ssize_t n, c, oy, ox, i, j, iy, q, r = 0
    cdef bint started
    cdef const in_t* xr
    cdef const in_t* cj
    cdef in_t* cx = col + pl
    cdef in_t a
    for n in range(N):
        for c in range(C):
            for oy in range(ho):
                started = False
                for i in range(kh):
                    iy = oy * sh - pt + i * dh
                    if iy < 0 or iy >= H:
                        continue
                    xr = &x[n, c, iy, 0]
                    if not started:
                        memcpy(cx, xr, W * sizeof(in_t))
                        started = True
                    else:
                        for q in range(W):
                            a = xr[q]
                            cx[q] = a if a > cx[q] else cx[q]
                for j in range(kw):
                    cj = col + j * dw
                    if j == 0:
                        for ox in range(wo):
                            row_max[ox] = cj[ox * sw]
                    elif sw == 1:
                        for ox in range(wo):
                            a = cj[ox]
                            row_max[ox] = a if a > row_max[ox] else row_max[ox]
                    elif sw == 2:
                        for ox in range(wo):
                            a = cj[2 * ox]
                            row_max[ox] = a if a > row_max[ox] else row_max[ox]
                    else:
                        for ox in range(wo):
                            a = cj[ox * sw]
                            row_max[ox] = a if a > row_max[ox] else row_max[ox]
                for ox in range(wo):
                    buf[ox] = row_max[ox]
                _store(buf, wo, s, dst + r * wo * SIZES[kind], kind)
                r += 1


cdef void _avg_pool(const in_t[:, :, :, ::1] x, const Py_ssize_t* geo, const int64_t[:, ::1] avg_mult,
                    const Stage* s, acc_t* col, acc_t* buf, char* dst, int kind) noexcept nogil:
    """Separable: the sums over the window's rows per column, then over its columns; col holds
    pl + W + the right overhang, zeros around; then round_shift(sum * avg_mult, 16)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t kh = geo[0], kw = geo[1], sh = geo[2], sw = geo[3], pt = geo[4], pl = geo[5]
    cdef Py_ssize_t dh = geo[6], dw = geo[7], ho = geo[8], wo = geo[9]
    cdef Py_ssize_t n, c, oy, ox, i, j, iy, q, r = 0
    cdef const in_t* xr
    cdef const acc_t* cj
    cdef acc_t* cx = col + pl
    cdef const int64_t* am
    for n in range(N):
        for c in range(C):
            for oy in range(ho):
                memset(cx, 0, W * sizeof(acc_t))
                for i in range(kh):
                    iy = oy * sh - pt + i * dh
                    if iy < 0 or iy >= H:
                        continue
                    xr = &x[n, c, iy, 0]
                    for q in range(W):
                        cx[q] += xr[q]
                memset(buf, 0, wo * sizeof(acc_t))
                for j in range(kw):
                    cj = col + j * dw
                    if sw == 1:
                        for ox in range(wo):
                            buf[ox] += cj[ox]
                    else:
                        for ox in range(wo):
                            buf[ox] += cj[ox * sw]
                am = &avg_mult[oy, 0]
                for ox in range(wo):
                    buf[ox] = (buf[ox] * <acc_t>am[ox] + 32768) >> 16
                _store(buf, wo, s, dst + r * wo * SIZES[kind], kind)
                r += 1


cdef inline in_t _lowest(const in_t* of_type) noexcept nogil:
    """The smallest value of in_t (max pooling's padding: it never wins)."""
    if in_t is int8_t:
        return -128
    elif in_t is int16_t:
        return -32768
    else:
        return 0


cdef inline in_t _highest(const in_t* of_type) noexcept nogil:
    if in_t is int8_t:
        return 127
    elif in_t is uint8_t:
        return 255
    elif in_t is int16_t:
        return 32767
    else:
        return 65535


def pool2d(const in_t[:, :, :, ::1] x, bint is_max, kernel, strides, pads, dilations,
           Py_ssize_t ho, Py_ssize_t wo, const int64_t[:, ::1] avg_mult,
           int64_t mult, int shift, int64_t lo, int64_t hi, bint narrow, unsigned char[::1] out, int kind,
           bint use_avx2=False):
    """Max pooling (every window must hold a tap in each axis: the caller checks) or average pooling,
    ``round_shift(sum * avg_mult[oy, ox], 16)``; then the stage (a requantization or nothing).
    ``narrow``: sums, products and the stage fit int32. ``use_avx2``: 8-bit codes run the AVX2 form
    (ops_simd.h) where the CPU has it and the stage allows."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], W = x.shape[3]
    cdef Py_ssize_t[10] geo
    geo[:] = [kernel[0], kernel[1], strides[0], strides[1], pads[0], pads[1], dilations[0], dilations[1], ho, wo]
    if min(geo[0], geo[1], geo[2], geo[3], geo[6], geo[7]) <= 0 or min(geo[4], geo[5]) < 0:
        raise ValueError("pool2d: bad window")
    if not is_max and (avg_mult.shape[0] != ho or avg_mult.shape[1] != wo):
        raise ValueError("pool2d: avg_mult must be (ho, wo)")
    cdef char* dst = _out_ptr(out, kind, N * C * ho * wo)
    cdef Stage s = _make_stage(mult, shift, lo, hi, narrow)
    cdef Py_ssize_t i, span = max(geo[5] + W, (wo - 1) * geo[3] + (geo[1] - 1) * geo[7] + 1)  # padded columns
    cdef int32_t lo32 = 0, hi32 = 0
    cdef int32_t* am32
    cdef int status
    if (use_avx2 and (in_t is int8_t or in_t is uint8_t) and N * C > 0 and (is_max or geo[0] <= 128)
            and _simd_stage(mult, shift, lo, hi, narrow, kind, _lowest(&x[0, 0, 0, 0]) if is_max else INT64_MIN,
                            _highest(&x[0, 0, 0, 0]) if is_max else INT64_MAX, &lo32, &hi32)):
        if is_max:
            with nogil:
                status = ops_max_pool8_avx2(<const uint8_t*>&x[0, 0, 0, 0], in_t is int8_t, N * C, x.shape[2], W,
                                            geo, <int32_t>mult, shift, lo32, hi32, dst, kind)
        else:
            am32 = <int32_t*>malloc(ho * wo * sizeof(int32_t))
            if am32 == NULL:
                raise MemoryError()
            for i in range(ho * wo):
                am32[i] = <int32_t>avg_mult[i // wo, i % wo]
            with nogil:
                status = ops_avg_pool8_avx2(<const uint8_t*>&x[0, 0, 0, 0], in_t is int8_t, N * C, x.shape[2], W,
                                            geo, am32, <int32_t>mult, shift, lo32, hi32, dst, kind)
            free(am32)
        if _simd_done(status):
            return
    cdef char* mem = <char*>malloc((span + 2 * wo) * 8)
    if mem == NULL:
        raise MemoryError()
    cdef in_t* cols = <in_t*>mem
    cdef in_t low = _lowest(cols)
    with nogil:
        if is_max:
            for i in range(span):
                cols[i] = low
            if narrow:
                _max_pool(x, geo, &s, cols, cols + span, <int32_t*>(mem + span * 8), dst, kind)
            else:
                _max_pool(x, geo, &s, cols, cols + span, <int64_t*>(mem + span * 8), dst, kind)
        else:
            memset(mem, 0, span * 8)
            if narrow:
                _avg_pool(x, geo, avg_mult, &s, <int32_t*>mem, <int32_t*>(mem + span * 8), dst, kind)
            else:
                _avg_pool(x, geo, avg_mult, &s, <int64_t*>mem, <int64_t*>(mem + span * 8), dst, kind)
    free(mem)


def global_pool(const in_t[:, ::1] x, bint is_max, int64_t avg_mult,
                int64_t mult, int shift, int64_t lo, int64_t hi, unsigned char[::1] out, int kind,
                bint use_avx2=False):
    """x (rows, P): the max, or ``round_shift(sum * avg_mult, 16)``, of each row; then the stage.
    ``use_avx2``: the rows of 8-bit codes reduce in AVX2 (ops_simd.h) where the CPU has it."""
    cdef Py_ssize_t R = x.shape[0], P = x.shape[1], r, k
    if P == 0:
        raise ValueError("global_pool: empty rows")
    cdef char* dst = _out_ptr(out, kind, R)
    cdef Stage s = _make_stage(mult, shift, lo, hi, False)
    cdef int64_t* res = <int64_t*>malloc(R * sizeof(int64_t))
    if res == NULL:
        raise MemoryError()
    cdef int64_t acc
    cdef in_t m, v
    cdef const in_t* xr
    cdef bint simd = False
    with nogil:
        if use_avx2 and (in_t is int8_t or in_t is uint8_t) and R > 0:
            simd = ops_global8_avx2(<const uint8_t*>&x[0, 0], in_t is int8_t, R, P, is_max, avg_mult, res)
        for r in range(0 if simd else R):
            xr = &x[r, 0]
            if is_max:
                m = xr[0]
                for k in range(1, P):
                    v = xr[k]
                    m = v if v > m else m
                res[r] = m
            else:
                acc = 0
                for k in range(P):
                    acc += xr[k]
                res[r] = (acc * avg_mult + 32768) >> 16
        _store(res, R, &s, dst, kind)
    free(res)
    _simd_done(simd)


# ----------------------------------------------------------------------------- requantization, concat
cdef void _requant(const in_t[:, ::1] x, const Stage* s0, acc_t* buf, char* dst, int kind, Py_ssize_t out_row,
                   Py_ssize_t col0) noexcept nogil:
    cdef Py_ssize_t R = x.shape[0], L = x.shape[1], r, k, i, c, blk
    cdef const in_t* xr
    cdef Stage s = s0[0]
    cdef int16_t m16 = <int16_t>s.mult
    cdef bint pre = acc_t is int32_t and (in_t is int8_t or in_t is uint8_t) and m16 == s.mult
    if pre:  # the multiply as int16 x int16 -> int32 products, before the stage
        s.mult = 1
    for r in range(R):
        xr = &x[r, 0]
        for blk in range((L + CHUNK - 1) // CHUNK):
            k = blk * CHUNK
            c = min(<Py_ssize_t>CHUNK, L - k)
            if pre:
                for i in range(c):
                    buf[i] = <int32_t><int16_t>xr[k + i] * <int32_t>m16
            else:
                for i in range(c):
                    buf[i] = xr[k + i]
            _store(buf, c, &s, dst + (r * out_row + col0 + k) * SIZES[kind], kind)


def requant_rows(const in_t[:, ::1] x, int64_t mult, int shift, int64_t lo, int64_t hi, bint narrow,
                 unsigned char[::1] out, int kind, Py_ssize_t out_row, Py_ssize_t col0, bint use_avx2=False):
    """out (R, out_row)[:, col0:col0 + L] = clamp(round_shift(x * mult, shift), lo, hi):
    a requantization (R = 1), or one input of a concat (a band of columns). ``use_avx2``: 8-bit
    codes run the AVX2 form (ops_simd.h) where the CPU has it and the stage allows."""
    cdef Py_ssize_t R = x.shape[0], L = x.shape[1], r
    if L == 0 or col0 < 0 or col0 + L > out_row:
        raise ValueError("requant_rows: columns out of range")
    cdef char* dst = _out_ptr(out, kind, R * out_row)
    cdef Stage s = _make_stage(mult, shift, lo, hi, narrow)
    cdef int64_t buf[CHUNK]
    cdef int32_t lo32 = 0, hi32 = 0
    cdef int is_signed = in_t is int8_t
    if (use_avx2 and (in_t is int8_t or in_t is uint8_t) and R > 0
            and _simd_stage(mult, shift, lo, hi, narrow, kind, _lowest(&x[0, 0]), _highest(&x[0, 0]), &lo32, &hi32)):
        with nogil:
            for r in range(R):
                if not ops_requant8_avx2(<const uint8_t*>&x[r, 0], is_signed, L, <int32_t>mult, shift, lo32, hi32,
                                         dst + (r * out_row + col0) * SIZES[kind], kind):
                    break  # no AVX2 (then not on the first row): the C form
            else:
                R = 0
        if _simd_done(R == 0):
            return
    with nogil:
        if narrow:
            _requant(x, &s, <int32_t*>buf, dst, kind, out_row, col0)
        else:
            _requant(x, &s, buf, dst, kind, out_row, col0)


# ----------------------------------------------------------------------------- element-wise
cdef void _elt_run(const in_t* pa, Py_ssize_t sa, const in2_t* pb, Py_ssize_t sb, Py_ssize_t k, int op,
                   acc_t ma, acc_t mb, acc_t half, int shift, acc_t* buf) noexcept nogil:
    """buf[l] for l < k: add/sub/mul sums (rounded by the stage) or max/min of the rounded terms."""
    cdef Py_ssize_t l
    cdef acc_t a, b
    cdef int16_t ma16 = <int16_t>ma, mb16 = <int16_t>mb
    if (acc_t is int32_t and sa == 1 and sb == 1 and ma16 == ma and mb16 == mb
            and (op == E_ADD or (op == E_SUB and mb16 != -32768))
            and (in_t is int8_t or in_t is uint8_t) and (in2_t is int8_t or in2_t is uint8_t)):
        # 8-bit codes and 16-bit multipliers: int16 x int16 -> int32 products (SSE2 has them)
        if op == E_SUB:
            mb16 = -mb16
        for l in range(k):
            buf[l] = <int32_t><int16_t>pa[l] * <int32_t>ma16 + <int32_t><int16_t>pb[l] * <int32_t>mb16
        return
    if sa == 1 and sb == 1:
        if op == E_ADD:
            for l in range(k):
                buf[l] = pa[l] * ma + pb[l] * mb
        elif op == E_SUB:
            for l in range(k):
                buf[l] = pa[l] * ma - pb[l] * mb
        elif op == E_MUL:
            for l in range(k):
                buf[l] = <acc_t>pa[l] * pb[l] * ma
        else:
            for l in range(k):
                a = (pa[l] * ma + half) >> shift
                b = (pb[l] * mb + half) >> shift
                buf[l] = (a if a > b else b) if op == E_MAX else (a if a < b else b)
    elif sa == 1 and sb == 0:
        b = pb[0]
        if op == E_ADD:
            b = b * mb
            for l in range(k):
                buf[l] = pa[l] * ma + b
        elif op == E_SUB:
            b = b * mb
            for l in range(k):
                buf[l] = pa[l] * ma - b
        elif op == E_MUL:
            b = b * ma
            for l in range(k):
                buf[l] = pa[l] * b
        else:
            b = (b * mb + half) >> shift
            for l in range(k):
                a = (pa[l] * ma + half) >> shift
                buf[l] = (a if a > b else b) if op == E_MAX else (a if a < b else b)
    else:
        for l in range(k):
            a = pa[l * sa]
            b = pb[l * sb]
            if op == E_ADD:
                buf[l] = a * ma + b * mb
            elif op == E_SUB:
                buf[l] = a * ma - b * mb
            elif op == E_MUL:
                buf[l] = a * b * ma
            else:
                a = (a * ma + half) >> shift
                b = (b * mb + half) >> shift
                buf[l] = (a if a > b else b) if op == E_MAX else (a if a < b else b)


cdef void _eltwise(const in_t[:, :, :, :] a, const in2_t[:, :, :, :] b, int op, acc_t ma, acc_t mb, int shift,
                   const Stage* s, acc_t* buf, char* dst, int kind) noexcept nogil:
    cdef Py_ssize_t D0 = a.shape[0], D1 = a.shape[1], D2 = a.shape[2], D3 = a.shape[3]
    cdef Py_ssize_t sa = a.strides[3] // <Py_ssize_t>sizeof(in_t), sb = b.strides[3] // <Py_ssize_t>sizeof(in2_t)
    cdef acc_t half = (<acc_t>1 << (shift - 1)) if shift > 0 else 0
    cdef Py_ssize_t i, j, k, l, c, blk, row = 0
    for i in range(D0):
        for j in range(D1):
            for k in range(D2):
                for blk in range((D3 + CHUNK - 1) // CHUNK):
                    l = blk * CHUNK
                    c = min(<Py_ssize_t>CHUNK, D3 - l)
                    _elt_run(&a[i, j, k, l], sa, &b[i, j, k, l], sb, c, op, ma, mb, half, shift, buf)
                    _store(buf, c, s, dst + (row + l) * SIZES[kind], kind)
                row += D3


cdef extern from "ops_simd.h" nogil:
    void ops_add8(const uint8_t *a, int a_signed, const uint8_t *b, int b_signed, size_t n, int32_t ma, int32_t mb,
                  int shift, int32_t lo, int32_t hi, void *out, int kind, int use_avx2)


def add8(const uint8_t[::1] a, bint a_signed, const uint8_t[::1] b, bint b_signed, int32_t ma, int32_t mb,
         int shift, int32_t lo, int32_t hi, unsigned char[::1] out, int kind, bint use_avx2):
    """Two contiguous 8-bit tensors of one shape (their bytes; ``*_signed``: int8, else uint8):
    clamp(round_shift(a * ma + b * mb, shift), lo, hi) as ``kind`` (i8, u8, i16, u16), in AVX2
    (``use_avx2`` and the CPU has it) or portable C (ops_simd.h). The caller proves
    |ma|, |mb| < 2**15, |a| |ma| + |b| |mb| + 2**shift < 2**31 and [lo, hi] inside the type."""
    cdef Py_ssize_t n = a.shape[0]
    if b.shape[0] != n or kind < K_I8 or kind > K_U16 or not 0 <= shift <= 30 or n < 1:
        raise ValueError("add8: bad operands")
    cdef char* dst = _out_ptr(out, kind, n)
    with nogil:
        ops_add8(&a[0], a_signed, &b[0], b_signed, n, ma, mb, shift, lo, hi, dst, kind, use_avx2)


def eltwise(const in_t[:, :, :, :] a, const in2_t[:, :, :, :] b, int op, int64_t ma, int64_t mb, int shift,
            int64_t lo, int64_t hi, bint narrow, unsigned char[::1] out, int kind):
    """a, b: one 4-d shape (broadcast views: zero strides allowed). add/sub: round_shift(a*ma +/- b*mb);
    mul: round_shift(a*b*ma); max/min of round_shift(a*ma), round_shift(b*mb); then the clamp.
    ``narrow``: every intermediate fits int32."""
    cdef Py_ssize_t i
    for i in range(4):
        if a.shape[i] != b.shape[i]:
            raise ValueError("eltwise: operands differ in shape")
    if op < E_ADD or op > E_MIN:
        raise ValueError(f"eltwise: unknown op {op}")
    if a.strides[3] % <Py_ssize_t>sizeof(in_t) or b.strides[3] % <Py_ssize_t>sizeof(in2_t):
        raise ValueError("eltwise: misaligned strides")
    cdef char* dst = _out_ptr(out, kind, a.shape[0] * a.shape[1] * a.shape[2] * a.shape[3])
    cdef bint rounds_first = op == E_MAX or op == E_MIN
    cdef Stage s = _make_stage(1, 0 if rounds_first else shift, lo, hi, narrow)
    cdef int64_t buf[CHUNK]
    with nogil:
        if narrow:
            _eltwise(a, b, op, <int32_t>ma, <int32_t>mb, shift, &s, <int32_t*>buf, dst, kind)
        else:
            _eltwise(a, b, op, ma, mb, shift, &s, buf, dst, kind)


cdef void _prelu(const in_t[:, :, ::1] x, acc_t m_pos, const int64_t[::1] m_neg, const Stage* s, acc_t* buf,
                 char* dst, int kind) noexcept nogil:
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], P = x.shape[2], n, ch, k, i, c, blk
    cdef acc_t v, mn
    cdef const in_t* xr
    for n in range(N):
        for ch in range(C):
            mn = <acc_t>m_neg[ch]
            xr = &x[n, ch, 0]
            for blk in range((P + CHUNK - 1) // CHUNK):
                k = blk * CHUNK
                c = min(<Py_ssize_t>CHUNK, P - k)
                for i in range(c):
                    v = xr[k + i]
                    buf[i] = v * (m_pos if v >= 0 else mn)
                _store(buf, c, s, dst + ((n * C + ch) * P + k) * SIZES[kind], kind)


def prelu(const in_t[:, :, ::1] x, int64_t m_pos, const int64_t[::1] m_neg, int shift, int64_t lo, int64_t hi,
          bint narrow, unsigned char[::1] out, int kind):
    """x (N, C, P): clamp(round_shift(x * (x >= 0 ? m_pos : m_neg[c]), shift), lo, hi)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], P = x.shape[2]
    if m_neg.shape[0] != C:
        raise ValueError("prelu: one negative multiplier per channel")
    cdef char* dst = _out_ptr(out, kind, N * C * P)
    cdef Stage s = _make_stage(1, shift, lo, hi, narrow)
    cdef int64_t buf[CHUNK]
    with nogil:
        if narrow:
            _prelu(x, <int32_t>m_pos, m_neg, &s, <int32_t*>buf, dst, kind)
        else:
            _prelu(x, m_pos, m_neg, &s, buf, dst, kind)


# ----------------------------------------------------------------------------- tables
def lut(const in_t[::1] x, const unsigned char[::1] table, int64_t qmin_in, unsigned char[::1] out, int kind):
    """out = table[x - qmin_in], the table's entries already of the result type (its raw bytes);
    the caller checks that every code of x's type indexes the table."""
    cdef Py_ssize_t n = x.shape[0], k, size
    cdef char* dst = _out_ptr(out, kind, n)
    size = SIZES[kind]
    if table.shape[0] % size or table.shape[0] == 0:
        raise ValueError("lut: the table is not a whole number of entries")
    cdef const unsigned char* t = &table[0]
    if qmin_in > _lowest(&x[0]) or _highest(&x[0]) - qmin_in >= table.shape[0] // size:
        raise ValueError("lut: some codes of the input type fall outside the table")
    with nogil:
        if size == 1:
            for k in range(n):
                (<uint8_t*>dst)[k] = (<const uint8_t*>t)[x[k] - qmin_in]
        elif size == 2:
            for k in range(n):
                (<uint16_t*>dst)[k] = (<const uint16_t*>t)[x[k] - qmin_in]
        elif size == 4:
            for k in range(n):
                (<int32_t*>dst)[k] = (<const int32_t*>t)[x[k] - qmin_in]
        else:
            for k in range(n):
                (<int64_t*>dst)[k] = (<const int64_t*>t)[x[k] - qmin_in]


def softmax(const in_t[:, :, ::1] x, const int64_t[::1] table, int64_t qmax, unsigned char[::1] out, int kind):
    """x (outer, L, inner), along L: d = max - x, e = table[min(d, len - 1)],
    y = (e * qmax + sum // 2) // sum."""
    cdef Py_ssize_t R = x.shape[0], L = x.shape[1], I = x.shape[2], T = table.shape[0], r, l, t
    if L == 0 or T == 0:
        raise ValueError("softmax: empty axis or table")
    cdef char* dst = _out_ptr(out, kind, R * L * I)
    cdef Stage s = _make_stage(1, 0, INT64_MIN, INT64_MAX, False)
    cdef int64_t* mx = <int64_t*>malloc(3 * I * sizeof(int64_t))
    if mx == NULL:
        raise MemoryError()
    cdef int64_t* tot = mx + I
    cdef int64_t* buf = tot + I
    cdef int64_t d, v
    with nogil:
        for r in range(R):
            for t in range(I):
                mx[t] = x[r, 0, t]
                tot[t] = 0
            for l in range(1, L):
                for t in range(I):
                    v = x[r, l, t]
                    mx[t] = v if v > mx[t] else mx[t]
            for l in range(L):
                for t in range(I):
                    d = mx[t] - x[r, l, t]
                    tot[t] += table[d if d < T else T - 1]
            for l in range(L):
                for t in range(I):
                    d = mx[t] - x[r, l, t]
                    buf[t] = (table[d if d < T else T - 1] * qmax + tot[t] // 2) // tot[t]
                _store(buf, I, &s, dst + (r * L + l) * I * SIZES[kind], kind)
    free(mx)


# ----------------------------------------------------------------------------- resize
def resize_linear(const in_t[:, :, :, ::1] x, const int64_t[::1] y0, const int64_t[::1] y1,
                  const int64_t[::1] wy, const int64_t[::1] x0, const int64_t[::1] x1, const int64_t[::1] wx,
                  int64_t mult, int shift, int64_t lo, int64_t hi, unsigned char[::1] out, int kind,
                  bint narrow=False, bint use_avx2=False):
    """Separable Q10 linear resize of H and W: round_shift(sum of the four weighted taps, 20)
    (an axis that is not resized has y0 = y1 = index, weight 0), then the stage. ``use_avx2``:
    8-bit codes run the AVX2 form (ops_simd.h) where the CPU has it and the stage fits int32
    (``narrow``)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t HO = y0.shape[0], WO = x0.shape[0], n, c, oy, ox, i
    if y1.shape[0] != HO or wy.shape[0] != HO or x1.shape[0] != WO or wx.shape[0] != WO:
        raise ValueError("resize_linear: index/weight lengths differ")
    for i in range(HO):
        if not (0 <= y0[i] < H and 0 <= y1[i] < H and 0 <= wy[i] <= 1024):
            raise ValueError("resize_linear: row index or weight out of range")
    for i in range(WO):
        if not (0 <= x0[i] < W and 0 <= x1[i] < W and 0 <= wx[i] <= 1024):
            raise ValueError("resize_linear: column index or weight out of range")
    cdef char* dst = _out_ptr(out, kind, N * C * HO * WO)
    cdef Stage s = _make_stage(mult, shift, lo, hi, False)
    cdef int32_t lo32 = 0, hi32 = 0
    cdef int32_t* idx
    cdef int status
    if (use_avx2 and (in_t is int8_t or in_t is uint8_t) and N * C > 0
            and _simd_stage(mult, shift, lo, hi, narrow, kind, _lowest(&x[0, 0, 0, 0]), _highest(&x[0, 0, 0, 0]),
                            &lo32, &hi32)):
        idx = <int32_t*>malloc(3 * (HO + WO) * sizeof(int32_t))  # y0 y1 wy x0 x1 wx as int32
        if idx == NULL:
            raise MemoryError()
        for i in range(HO):
            idx[i], idx[HO + i], idx[2 * HO + i] = <int32_t>y0[i], <int32_t>y1[i], <int32_t>wy[i]
        for i in range(WO):
            idx[3 * HO + i], idx[3 * HO + WO + i], idx[3 * HO + 2 * WO + i] = <int32_t>x0[i], <int32_t>x1[i], <int32_t>wx[i]
        with nogil:
            status = ops_resize8_avx2(<const uint8_t*>&x[0, 0, 0, 0], in_t is int8_t, N * C, H, W, HO, WO, idx,
                                      idx + HO, idx + 2 * HO, idx + 3 * HO, idx + 3 * HO + WO, idx + 3 * HO + 2 * WO,
                                      <int32_t>mult, shift, lo32, hi32, dst, kind)
        free(idx)
        if _simd_done(status):
            return
    cdef int64_t* tmp = <int64_t*>malloc((W + WO) * sizeof(int64_t))
    if tmp == NULL:
        raise MemoryError()
    cdef int64_t* buf = tmp + W
    cdef const in_t* r0
    cdef const in_t* r1
    cdef int64_t a, b
    with nogil:
        for n in range(N):
            for c in range(C):
                for oy in range(HO):
                    r0 = &x[n, c, y0[oy], 0]
                    r1 = &x[n, c, y1[oy], 0]
                    a, b = 1024 - wy[oy], wy[oy]
                    for i in range(W):
                        tmp[i] = r0[i] * a + r1[i] * b
                    for ox in range(WO):
                        buf[ox] = (tmp[x0[ox]] * (1024 - wx[ox]) + tmp[x1[ox]] * wx[ox] + (1 << 19)) >> 20
                    _store(buf, WO, &s, dst + ((n * C + c) * HO + oy) * WO * SIZES[kind], kind)
    free(tmp)


# ----------------------------------------------------------------------------- float boundary
cdef inline int64_t _quantize(double v, double scale, double lo, double hi, int64_t zp) noexcept nogil:
    """trunc(clip(r, lo, hi)) + zp equals clip(trunc(r) + zp, qmin, qmax) for integer bounds lo = qmin - zp,
    hi = qmax - zp (truncation is monotonic); r = v * scale rounded half away from zero."""
    v = v * scale
    v = v + copysign(0.5, v)
    if v != v:
        return INT64_MIN  # NaN: what numpy's float -> int64 cast gives on x86
    v = lo if v < lo else v
    v = hi if v > hi else v
    return <int64_t>v + zp


cdef inline int32_t _quantize32(double v, double scale, double lo, double hi, int32_t zp) noexcept nogil:
    """_quantize for 8/16-bit results: NaN gives 0 (the low bits of numpy's INT64_MIN); vectorizable."""
    v = v * scale
    v = v + copysign(0.5, v)
    cdef bint nan = v != v
    v = lo if v < lo else v
    v = hi if v > hi else v
    v = 0.0 if nan else v
    return 0 if nan else <int32_t>v + zp


def quantize(const floating[::1] x, double scale, int64_t zero_point, int64_t qmin, int64_t qmax,
             unsigned char[::1] out, int kind, bint use_avx2=False):
    """out = (T) clamp(round_half_away(x * scale) + zero_point, qmin, qmax), in double like the specification.
    ``use_avx2``: 8/16-bit results in AVX2 (ops_simd.h) where the CPU has it."""
    cdef Py_ssize_t n = x.shape[0], k
    cdef char* dst = _out_ptr(out, kind, n)
    cdef double lo = <double>(qmin - zero_point), hi = <double>(qmax - zero_point)
    cdef bint small = kind <= K_U16 and -(1 << 30) < qmin - zero_point and qmax - zero_point < (1 << 30) \
        and -(1 << 30) < zero_point < (1 << 30)
    cdef int32_t zp = <int32_t>zero_point if small else 0
    cdef bint simd = False
    with nogil:
        if use_avx2 and small and n > 0 and KIND_MIN[kind] <= qmin <= KIND_MAX[kind] \
                and KIND_MIN[kind] <= qmax <= KIND_MAX[kind]:  # the saturating packs store the values
            simd = ops_quantize_avx2(&x[0], floating is double, n, scale, lo, hi, zp, dst, kind)
        if simd:
            pass
        elif small and kind == K_I8:
            for k in range(n):
                (<int8_t*>dst)[k] = <int8_t>_quantize32(x[k], scale, lo, hi, zp)
        elif small and kind == K_U8:
            for k in range(n):
                (<uint8_t*>dst)[k] = <uint8_t>_quantize32(x[k], scale, lo, hi, zp)
        elif small and kind == K_I16:
            for k in range(n):
                (<int16_t*>dst)[k] = <int16_t>_quantize32(x[k], scale, lo, hi, zp)
        elif small:
            for k in range(n):
                (<uint16_t*>dst)[k] = <uint16_t>_quantize32(x[k], scale, lo, hi, zp)
        elif kind == K_I32:
            for k in range(n):
                (<int32_t*>dst)[k] = <int32_t>_quantize(x[k], scale, lo, hi, zero_point)
        else:
            for k in range(n):
                (<int64_t*>dst)[k] = _quantize(x[k], scale, lo, hi, zero_point)
    _simd_done(simd)


def dequantize(const in_t[::1] q, double scale, double zero_point, float[::1] out, bint use_avx2=False):
    """out = (float) (((double) q - zero_point) / scale). ``use_avx2``: in AVX2 (ops_simd.h) where
    the CPU has it."""
    cdef Py_ssize_t n = q.shape[0], k
    if out.shape[0] != n:
        raise ValueError("dequantize: result size differs")
    cdef bint simd = False
    with nogil:
        if use_avx2 and n > 0:
            simd = ops_dequantize_avx2(&q[0], sizeof(in_t), in_t is int8_t or in_t is int16_t, n, scale, zero_point,
                                       &out[0])
        for k in range(0 if simd else n):
            out[k] = <float>((<double>q[k] - zero_point) / scale)
    _simd_done(simd)
