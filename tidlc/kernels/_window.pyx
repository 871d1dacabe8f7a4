# cython: language_level=3
"""Sliding-window float kernels (twins: tidlc.kernels.reference.depthwise_conv2d, pool2d_window).

Same tap order and padding semantics as the numpy twins, so results are equal
bit for bit: padding taps read 0 (conv, average) or -inf (max).
"""
import numpy as np

from cython cimport floating
from libc.math cimport INFINITY


cdef inline void _valid_range(Py_ssize_t off, Py_ssize_t stride, Py_ssize_t width, Py_ssize_t n_out,
                              Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Outputs o with 0 <= o*stride + off < width are exactly lo <= o < hi."""
    lo[0] = 0 if off >= 0 else (-off + stride - 1) // stride
    hi[0] = 0 if width - off <= 0 else (width - off + stride - 1) // stride
    if hi[0] > n_out:
        hi[0] = n_out
    if lo[0] > hi[0]:
        lo[0] = hi[0]


cdef void _depthwise(const floating[:, :, :, ::1] x, const floating[:, :, ::1] w,
                     floating[:, :, :, ::1] out, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt,
                     Py_ssize_t pl, Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    # tap-major like the twin: every output element sums its taps in (i, j) order,
    # padding taps adding 0 * w (which keeps NaN/inf weights bit-compatible)
    cdef Py_ssize_t n, c, oy, ox, i, j, iy, off, lo, hi
    cdef Py_ssize_t H = x.shape[2], W = x.shape[3], kh = w.shape[1], kw = w.shape[2]
    cdef Py_ssize_t HO = out.shape[2], WO = out.shape[3], C = x.shape[1]
    cdef floating wv, zero
    for n in range(x.shape[0]):
        for c in range(C):
            for oy in range(HO):
                for ox in range(WO):
                    out[n, c, oy, ox] = 0
            for i in range(kh):
                for j in range(kw):
                    wv = w[c, i, j]
                    zero = 0 * wv
                    off = j * dw - pl
                    _valid_range(off, sw, W, WO, &lo, &hi)
                    for oy in range(HO):
                        iy = oy * sh - pt + i * dh
                        if iy < 0 or iy >= H:
                            for ox in range(WO):
                                out[n, c, oy, ox] = out[n, c, oy, ox] + zero
                            continue
                        for ox in range(lo):
                            out[n, c, oy, ox] = out[n, c, oy, ox] + zero
                        if sw == 1:
                            for ox in range(lo, hi):
                                out[n, c, oy, ox] = out[n, c, oy, ox] + x[n, c, iy, ox + off] * wv
                        else:
                            for ox in range(lo, hi):
                                out[n, c, oy, ox] = out[n, c, oy, ox] + x[n, c, iy, ox * sw + off] * wv
                        for ox in range(hi, WO):
                            out[n, c, oy, ox] = out[n, c, oy, ox] + zero


def depthwise_conv2d(x, w, strides, pads, dilations):
    """Depthwise conv without bias; see the numpy twin."""
    if x.dtype != w.dtype or x.dtype not in (np.float32, np.float64):
        from tidlc.kernels.reference import depthwise_conv2d as twin
        return twin(x, w, strides, pads, dilations)
    x = np.ascontiguousarray(x)
    w3 = np.ascontiguousarray(w.reshape(w.shape[0], w.shape[2], w.shape[3]))
    kh, kw = w.shape[2], w.shape[3]
    ho = (x.shape[2] + pads[0] + pads[2] - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    wo = (x.shape[3] + pads[1] + pads[3] - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    out = np.empty((x.shape[0], x.shape[1], ho, wo), dtype=x.dtype)
    if x.dtype == np.float32:
        _depthwise_f32(x, w3, out, strides[0], strides[1], pads[0], pads[1], dilations[0], dilations[1])
    else:
        _depthwise_f64(x, w3, out, strides[0], strides[1], pads[0], pads[1], dilations[0], dilations[1])
    return out


cdef void _depthwise_f32(const float[:, :, :, ::1] x, const float[:, :, ::1] w, float[:, :, :, ::1] out,
                         Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t dh,
                         Py_ssize_t dw) noexcept:
    with nogil:
        _depthwise(x, w, out, sh, sw, pt, pl, dh, dw)


cdef void _depthwise_f64(const double[:, :, :, ::1] x, const double[:, :, ::1] w, double[:, :, :, ::1] out,
                         Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t dh,
                         Py_ssize_t dw) noexcept:
    with nogil:
        _depthwise(x, w, out, sh, sw, pt, pl, dh, dw)


cdef inline floating _np_max(floating acc, floating v) noexcept nogil:
    # numpy.maximum: a NaN on either side wins
    if acc == acc and not (v <= acc):
        return v
    return acc


cdef void _pool(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out, bint is_max,
                Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt,
                Py_ssize_t pl, Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    # tap-major like the twin; padding taps read -inf (max) or 0 (sum)
    cdef Py_ssize_t n, c, oy, ox, i, j, iy, off, lo, hi
    cdef Py_ssize_t H = x.shape[2], W = x.shape[3], HO = out.shape[2], WO = out.shape[3], C = x.shape[1]
    cdef floating fill = -INFINITY if is_max else 0
    for n in range(x.shape[0]):
        for c in range(C):
            for oy in range(HO):
                for ox in range(WO):
                    out[n, c, oy, ox] = fill
            for i in range(kh):
                for j in range(kw):
                    off = j * dw - pl
                    _valid_range(off, sw, W, WO, &lo, &hi)
                    for oy in range(HO):
                        iy = oy * sh - pt + i * dh
                        if iy < 0 or iy >= H:
                            if not is_max:
                                for ox in range(WO):
                                    out[n, c, oy, ox] = out[n, c, oy, ox] + fill
                            continue
                        if is_max:
                            for ox in range(lo, hi):
                                out[n, c, oy, ox] = _np_max(out[n, c, oy, ox], x[n, c, iy, ox * sw + off])
                        else:
                            for ox in range(lo):
                                out[n, c, oy, ox] = out[n, c, oy, ox] + fill
                            for ox in range(lo, hi):
                                out[n, c, oy, ox] = out[n, c, oy, ox] + x[n, c, iy, ox * sw + off]
                            for ox in range(hi, WO):
                                out[n, c, oy, ox] = out[n, c, oy, ox] + fill


def pool2d_window(x, bint is_max, kernel, strides, pads, dilations, Py_ssize_t ho, Py_ssize_t wo,
                  divisor=None):
    """Max or sum-then-divide pooling; see the numpy twin."""
    if x.dtype not in (np.float32, np.float64):
        from tidlc.kernels.reference import pool2d_window as twin
        return twin(x, is_max, kernel, strides, pads, dilations, ho, wo, divisor)
    x = np.ascontiguousarray(x)
    out = np.empty((x.shape[0], x.shape[1], ho, wo), dtype=x.dtype)
    cdef Py_ssize_t kh = kernel[0], kw = kernel[1], sh = strides[0], sw = strides[1]
    cdef Py_ssize_t pt = pads[0], pl = pads[1], dh = dilations[0], dw = dilations[1]
    if x.dtype == np.float32:
        _pool_f32(x, out, is_max, kh, kw, sh, sw, pt, pl, dh, dw)
    else:
        _pool_f64(x, out, is_max, kh, kw, sh, sw, pt, pl, dh, dw)
    return out if is_max else out / divisor.astype(x.dtype, copy=False)


cdef void _pool_f32(const float[:, :, :, ::1] x, float[:, :, :, ::1] out, bint is_max, Py_ssize_t kh,
                    Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
                    Py_ssize_t dh, Py_ssize_t dw) noexcept:
    with nogil:
        _pool(x, out, is_max, kh, kw, sh, sw, pt, pl, dh, dw)


cdef void _pool_f64(const double[:, :, :, ::1] x, double[:, :, :, ::1] out, bint is_max, Py_ssize_t kh,
                    Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
                    Py_ssize_t dh, Py_ssize_t dw) noexcept:
    with nogil:
        _pool(x, out, is_max, kh, kw, sh, sw, pt, pl, dh, dw)
