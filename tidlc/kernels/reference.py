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
