# cython: language_level=3
"""im2col for the float reference interpreter (twin: tidlc.kernels.reference.im2col_f32).

Reads the unpadded input and writes zeros where a tap falls into the padding,
so no padded copy of the input is ever made.
"""
import numpy as np

from cython cimport floating


cdef void _im2col_plane(const floating[:, :, ::1] x, floating[:, ::1] cols,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t dh, Py_ssize_t dw,
                        Py_ssize_t ho, Py_ssize_t wo) noexcept nogil:
    cdef Py_ssize_t c, i, j, oy, ox, iy, row, base, off, ox_lo, ox_hi
    cdef Py_ssize_t C = x.shape[0], H = x.shape[1], W = x.shape[2]
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                off = j * dw - pl
                # output columns whose tap lands inside the row: 0 <= ox*sw + off < W
                ox_lo = 0 if off >= 0 else (-off + sw - 1) // sw
                ox_hi = 0 if W - off <= 0 else (W - off + sw - 1) // sw
                if ox_hi > wo:
                    ox_hi = wo
                if ox_lo > ox_hi:
                    ox_lo = ox_hi
                for oy in range(ho):
                    iy = oy * sh - pt + i * dh
                    base = oy * wo
                    if iy < 0 or iy >= H:
                        for ox in range(wo):
                            cols[row, base + ox] = 0
                        continue
                    for ox in range(ox_lo):
                        cols[row, base + ox] = 0
                    if sw == 1:
                        for ox in range(ox_lo, ox_hi):
                            cols[row, base + ox] = x[c, iy, ox + off]
                    else:
                        for ox in range(ox_lo, ox_hi):
                            cols[row, base + ox] = x[c, iy, ox * sw + off]
                    for ox in range(ox_hi, wo):
                        cols[row, base + ox] = 0


def im2col_f32(x, int kh, int kw, strides, pads, dilations):
    """(N, C, H, W) -> ((N, C*kh*kw, Ho*Wo) columns, Ho, Wo); see the numpy twin."""
    x = np.ascontiguousarray(x)
    if x.dtype != np.float32 and x.dtype != np.float64:
        from tidlc.kernels.reference import im2col_f32 as twin
        return twin(x, kh, kw, strides, pads, dilations)
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef Py_ssize_t sh = strides[0], sw = strides[1]
    cdef Py_ssize_t pt = pads[0], pl = pads[1], pb = pads[2], pr = pads[3]
    cdef Py_ssize_t dh = dilations[0], dw = dilations[1]
    cdef Py_ssize_t ho = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    cdef Py_ssize_t wo = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    cols = np.empty((n, c * kh * kw, ho * wo), dtype=x.dtype)
    if x.dtype == np.float32:
        _run[float](x, cols, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo)
    else:
        _run[double](x, cols, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo)
    return cols, ho, wo


cdef void _run(const floating[:, :, :, ::1] x, floating[:, :, ::1] cols, Py_ssize_t kh, Py_ssize_t kw,
               Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t dh,
               Py_ssize_t dw, Py_ssize_t ho, Py_ssize_t wo) noexcept:
    """Every image of the batch, without the GIL (one body for f32 and f64: fused ``floating``)."""
    cdef Py_ssize_t b
    with nogil:
        for b in range(x.shape[0]):
            _im2col_plane(x[b], cols[b], kh, kw, sh, sw, pt, pl, dh, dw, ho, wo)
