"""Fast exact MAC kernels for ``tidlc run --kernels auto``; :mod:`.reference` stays the specification.

The specification computes exact integer sums, so any *exact* way of computing
them gives the same bits. These kernels use float32 BLAS: float32 holds every
integer below 2**24 exactly, so a dot product whose partial sums stay below
2**24 (``K * max|x| * max|w| < 2**24``) is exact in a float32 GEMM. Longer
products are split along K into chunks that each satisfy the bound; the chunk
sums are added in float64 (exact below 2**53). Weights are converted once per
layer, not once per frame, and the output stage (bias, accumulator saturation,
multiplier, rounding shift, clamp) runs fused in Cython (``_requant.pyx``)
straight on the float sums.
"""
from __future__ import annotations

import numpy as np

from . import reference as ref

F32_EXACT = 1 << 24


def chunk_length(k_total: int, x_abs: int, w_abs: int) -> int:
    """Largest K-chunk whose float32 partial sums are exact (0: not even one term is)."""
    per_term = max(1, x_abs * w_abs)
    return min(k_total, (F32_EXACT - 1) // per_term)


class DenseWeights:
    """A conv2d (groups == 1) or dense weight tensor prepared for chunked float32 GEMMs."""

    def __init__(self, w: np.ndarray):
        self.shape = w.shape
        self.w2 = np.ascontiguousarray(w.reshape(w.shape[0], -1), dtype=np.float32)
        self.w_abs = ref._abs_max(w)
        self._w2_f64 = None

    def w2_f64(self) -> np.ndarray:
        if self._w2_f64 is None:
            self._w2_f64 = self.w2.astype(np.float64)
        return self._w2_f64


def conv2d_sums(x: np.ndarray, prepared: DenseWeights, strides, pads, dilations,
                max_chunks: int | None = 1) -> np.ndarray | None:
    """The exact sums of ``reference.conv2d_acc(x, w, ..., groups=1)`` held in a float array
    (float32 when K-chunks of exact float32 GEMMs suffice, else float64 like the specification),
    or None when even float64 is not exact (16-bit data).

    ``max_chunks``: use float32 chunks only up to this many (measured: one float64 GEMM beats
    several float32 GEMMs plus their float64 accumulation); None: always chunk (tests).
    """
    from tidlc.kernels import im2col_f32
    cout, cin, kh, kw = prepared.shape
    n = x.shape[0]
    taps, k = kh * kw, cin * kh * kw
    x_abs = ref._abs_max(x)
    step = chunk_length(k, x_abs, prepared.w_abs) // taps * taps
    chunks = -(-k // step) if step else 0
    if step and (max_chunks is None or chunks <= max_chunks):
        dtype, weights = np.float32, prepared.w2
    elif k * x_abs * max(prepared.w_abs, 1) < (1 << 53):
        dtype, weights, step = np.float64, prepared.w2_f64(), k
    else:
        return None
    xf = x.astype(dtype)
    if kh == kw == 1 and not any(pads):
        xs = xf[:, :, ::strides[0], ::strides[1]]
        ho, wo = xs.shape[2:]
        cols = np.ascontiguousarray(xs).reshape(n, cin, ho * wo)
    else:
        cols, ho, wo = im2col_f32(xf, kh, kw, strides, pads, dilations)
    out = np.empty((n, cout, ho * wo), dtype=dtype if step >= k else np.float64)
    for i in range(n):
        if step >= k:
            np.dot(weights, cols[i], out=out[i])
            continue
        acc = out[i]
        acc[...] = 0
        for k0 in range(0, k, step):
            acc += np.dot(weights[:, k0:k0 + step], cols[i][k0:k0 + step])
    return out.reshape(n, cout, ho, wo)


def conv2d_acc(x: np.ndarray, prepared: DenseWeights, strides, pads, dilations,
               max_chunks: int | None = 1) -> np.ndarray | None:
    """Equals ``reference.conv2d_acc(x, w, ..., groups=1)`` exactly (int64), or None (see conv2d_sums)."""
    sums = conv2d_sums(x, prepared, strides, pads, dilations, max_chunks)
    return None if sums is None else sums.astype(np.int64)


def mac_output(sums: np.ndarray, bias: np.ndarray | None, acc_width: int, mult, shift: int, lo: int, hi: int):
    """Equals ``reference.mac_output(add_bias(sums), ...)`` on NCHW sums, fused in Cython
    (32-bit accumulators; anything else runs the specification)."""
    from . import _requant
    n, c = sums.shape[:2]
    if acc_width != 32 or np.ndim(shift) != 0:
        acc = sums.astype(np.int64)
        if bias is not None:
            acc = acc + ref.channel_view(bias.astype(np.int64).reshape(-1), acc.ndim, 1)
        return ref.mac_output(acc, acc_width, mult, shift, lo, hi, 1)
    b = np.zeros(c, np.int64) if bias is None else np.ascontiguousarray(
        np.broadcast_to(bias.astype(np.int64).reshape(-1), (c,)))
    m = np.ascontiguousarray(np.broadcast_to(np.asarray(mult, np.int64).reshape(-1), (c,)))
    amin, amax = -(1 << 31), (1 << 31) - 1
    flat = np.ascontiguousarray(sums.reshape(n, c, -1))
    out = _requant.mac_output_channels(flat, b, m, int(shift), amin, amax, lo, hi)
    return out.reshape(sums.shape)


def dense_acc(x: np.ndarray, prepared: DenseWeights) -> np.ndarray:
    """Equals ``reference.dense_acc(x, w)`` exactly (int64 sums)."""
    k = prepared.w2.shape[1]
    step = chunk_length(k, ref._abs_max(x), prepared.w_abs)
    if step == 0:
        return None
    xf = x.astype(np.float32)
    if step >= k:
        return np.matmul(xf, prepared.w2.T).astype(np.int64)
    acc = np.zeros(x.shape[:-1] + (prepared.w2.shape[0],), dtype=np.float64)
    for k0 in range(0, k, step):
        acc += np.matmul(xf[..., k0:k0 + step], prepared.w2[:, k0:k0 + step].T)
    return acc.astype(np.int64)


_SMALL_INTS = (np.int8, np.uint8, np.int16, np.uint16)


def eltwise_add(qa, qb, ma: int, mb: int, shift: int, lo: int, hi: int, subtract: bool = False):
    """Equals ``reference.eltwise_add`` (Cython when both operands have one shape and small-integer types)."""
    qa, qb = np.asarray(qa), np.asarray(qb)
    if (qa.shape != qb.shape or qa.dtype.type not in _SMALL_INTS or qb.dtype.type not in _SMALL_INTS
            or not 0 <= shift <= 62 or max(abs(ma), abs(mb)) >= 1 << 31):
        return ref.eltwise_add(qa, qb, ma, mb, shift, lo, hi, subtract)
    from . import _requant
    out = _requant.eltwise_add_flat(np.ascontiguousarray(qa).reshape(-1), np.ascontiguousarray(qb).reshape(-1),
                                    ma, mb, shift, lo, hi, subtract)
    return out.reshape(qa.shape)
