"""numpy twins of the Cython kernels: the readable specification."""
from __future__ import annotations

import numpy as np


def im2col_f32(x: np.ndarray, kh: int, kw: int, strides, pads, dilations):
    """(N, C, H, W) -> (N, C*kh*kw, Ho*Wo) columns, rows ordered (c, i, j) like OIHW weights.

    Zero padding ``pads = (top, left, bottom, right)``. Returns ``(cols, Ho, Wo)``.
    """
    n, c, h, w = x.shape
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, pads, dilations
    ho = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    wo = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr))) if any(pads) else x
    cols = np.empty((n, c, kh, kw, ho, wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh: i * dh + (ho - 1) * sh + 1: sh,
                                  j * dw: j * dw + (wo - 1) * sw + 1: sw]
    return cols.reshape(n, c * kh * kw, ho * wo), ho, wo


def depthwise_conv2d(x: np.ndarray, w: np.ndarray, strides, pads, dilations) -> np.ndarray:
    """Depthwise conv without bias: x (N, C, H, W), w (C, 1, kh, kw), zero padding.

    Accumulates tap by tap in (i, j) order, in the input's precision.
    """
    n, c, h, wi = x.shape
    _, _, kh, kw = w.shape
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, pads, dilations
    ho = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    wo = (wi + pl + pr - (kw - 1) * dw - 1) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr))) if any(pads) else x
    out = np.zeros((n, c, ho, wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, :, i * dh: i * dh + (ho - 1) * sh + 1: sh, j * dw: j * dw + (wo - 1) * sw + 1: sw]
            out += tap * w[None, :, 0, i, j, None, None].astype(x.dtype, copy=False)
    return out


def max_pool2d(x: np.ndarray, kernel, strides, pads, dilations, ho: int, wo: int) -> np.ndarray:
    """Max pooling, separably: the max over columns of each row, then over rows.

    Max is exact in any order, so this equals the window-by-window definition
    (``pool2d_window(..., is_max=True)``) while doing kh + kw passes, not kh * kw.
    Padding reads ``-inf``; NaN propagates as in ``numpy.maximum``.
    """
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (pt, pl), (dh, dw) = kernel, strides, pads[:2], dilations
    bottom = max(0, (ho - 1) * sh + (kh - 1) * dh + 1 - (h + pt))
    right = max(0, (wo - 1) * sw + (kw - 1) * dw + 1 - (w + pl))
    if pt or pl or bottom or right:
        x = np.pad(x, ((0, 0), (0, 0), (pt, bottom), (pl, right)), constant_values=-np.inf)
    rows = x[:, :, :, 0: (wo - 1) * sw + 1: sw].copy()
    for j in range(1, kw):
        np.maximum(rows, x[:, :, :, j * dw: j * dw + (wo - 1) * sw + 1: sw], out=rows)
    out = rows[:, :, 0: (ho - 1) * sh + 1: sh].copy()
    for i in range(1, kh):
        np.maximum(out, rows[:, :, i * dh: i * dh + (ho - 1) * sh + 1: sh], out=out)
    return out


def pool2d_window(x: np.ndarray, is_max: bool, kernel, strides, pads, dilations, ho: int, wo: int,
                  divisor: np.ndarray | None = None) -> np.ndarray:
    """Max (``-inf`` padding) or sum-then-divide (zero padding) over each window.

    ``pads = (top, left)`` of the first window; windows may overhang the
    bottom/right edge (ceil mode): those taps read the padding value.
    ``divisor`` is (ho, wo) for average pooling.
    """
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (pt, pl), (dh, dw) = kernel, strides, pads[:2], dilations
    bottom = max(0, (ho - 1) * sh + (kh - 1) * dh + 1 - (h + pt))
    right = max(0, (wo - 1) * sw + (kw - 1) * dw + 1 - (w + pl))
    fill = -np.inf if is_max else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (pt, bottom), (pl, right)), constant_values=fill)
    out = np.full((n, c, ho, wo), fill, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, :, i * dh: i * dh + (ho - 1) * sh + 1: sh, j * dw: j * dw + (wo - 1) * sw + 1: sw]
            if is_max:
                np.maximum(out, tap, out=out)
            else:
                out += tap
    return out if is_max else out / divisor.astype(x.dtype, copy=False)
