"""Fixed-point arithmetic the IR itself defines: the ``data_convert`` op (quantize, dequantize,
requantize) and the roundings it uses (docs/quantization.md).

Conventions (the backend's kernel specification, ``tidlc.backends.tidl.fixed.reference``,
builds on these): a tensor ``q`` with scale ``S`` and zero point 0 means ``q / S``;
:func:`round_shift` adds half then shifts right (halves toward +inf);
:func:`round_half_away` rounds reals half away from zero (TIDL ``quantRoundAdd = 50``).
"""
from __future__ import annotations

import math

import numpy as np

MULTIPLIER_BITS = 15  # requantization multipliers m satisfy 2**14 <= m < 2**15 (unless the ratio is huge)


def round_half_away(v):
    """Round to the nearest integer, halves away from zero (TIDL quantRoundAdd = 50)."""
    v = np.asarray(v, dtype=np.float64)
    return np.trunc(v + np.copysign(0.5, v))


def round_half_away_int(v: float) -> int:
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def multiplier(ratio: float, bits: int = MULTIPLIER_BITS) -> tuple[int, int]:
    """``(m, n)`` with ``m / 2**n ~= ratio``: m has ``bits`` bits (``2**(bits-1) <= m < 2**bits``),
    except that n never goes below 0 (huge ratios get a larger m)."""
    if not ratio > 0 or not math.isfinite(ratio):
        raise ValueError(f"requantization ratio must be positive and finite, got {ratio}")
    _, exp = math.frexp(ratio)  # ratio = mant * 2**exp, 0.5 <= mant < 1: floor(log2) = exp - 1
    n = max(0, bits - exp)
    m = round_half_away_int(ratio * 2.0 ** n)
    if m >= 1 << bits and n > 0:  # rounding carried into the next power of two
        n -= 1
        m = round_half_away_int(ratio * 2.0 ** n)
    return m, n


def round_shift(acc: np.ndarray, shift) -> np.ndarray:
    """``(acc + 2**(shift-1)) >> shift`` (arithmetic); shift 0 returns acc. ``shift`` may be an
    array broadcasting against acc (per channel)."""
    acc = np.asarray(acc, dtype=np.int64)
    if np.isscalar(shift) or np.ndim(shift) == 0:
        shift = int(shift)
        if shift <= 0:
            return acc << -shift if shift else acc
        return (acc + (1 << (shift - 1))) >> shift
    shift = np.asarray(shift, dtype=np.int64)
    half = np.where(shift > 0, np.left_shift(1, np.maximum(shift - 1, 0)), 0)
    return (acc + half) >> shift


def quantize(x: np.ndarray, scale, qmin: int, qmax: int, zero_point: int = 0) -> np.ndarray:
    """Real -> integer (int64): ``sat(round_half_away(x * scale) + zero_point)``.
    ``scale`` is a float or an array broadcasting against ``x`` (per channel)."""
    q = round_half_away(np.asarray(x, dtype=np.float64) * np.asarray(scale, dtype=np.float64))
    if zero_point:
        q += zero_point
    return np.clip(q, qmin, qmax).astype(np.int64)


def dequantize(q: np.ndarray, scale, zero_point: int = 0) -> np.ndarray:
    """Integer -> f32 real: ``(q - zero_point) / scale``."""
    q = np.asarray(q, dtype=np.float64)
    if zero_point:
        q = q - zero_point
    return (q / np.asarray(scale, dtype=np.float64)).astype(np.float32)


def requantize(q: np.ndarray, s_in: float, s_out: float, qmin: int, qmax: int) -> np.ndarray:
    """Integer at scale ``s_in`` -> integer at ``s_out``: ``sat(round_shift(q * m, n))``.
    Equal scales copy (no multiplier)."""
    q = np.asarray(q, dtype=np.int64)
    if s_in == s_out:
        return np.clip(q, qmin, qmax)
    m, n = multiplier(s_out / s_in)
    return np.clip(round_shift(q * m, n), qmin, qmax)


def _channel_view(values, axis: int | None, ndim: int):
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 1:
        return float(arr.reshape(-1)[0])
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return arr.reshape(shape)


def convert(x: np.ndarray, src, dst, dtype: str) -> np.ndarray:
    """The data_convert op: ``src``/``dst`` are QuantInfo or None (a float tensor)."""
    from tidlc.ir.types import numpy_dtype
    out_dtype = numpy_dtype(dtype)
    is_int = np.dtype(out_dtype).kind in "iu"
    if src is None and dst is None:
        return np.asarray(x).astype(out_dtype)
    if src is None:  # quantize
        if not is_int:  # a float result with a quant annotation: fake quantization
            q = quantize(x, _channel_view(dst.scale, dst.axis, np.ndim(x)), dst.qmin, dst.qmax, dst.zero_point)
            return dequantize(q, _channel_view(dst.scale, dst.axis, np.ndim(x)), dst.zero_point).astype(out_dtype)
        return quantize(x, _channel_view(dst.scale, dst.axis, np.ndim(x)), dst.qmin, dst.qmax,
                        dst.zero_point).astype(out_dtype)
    if dst is None or not is_int:  # dequantize
        return dequantize(x, _channel_view(src.scale, src.axis, np.ndim(x)), src.zero_point).astype(out_dtype)
    if len(src.scale) > 1 or len(dst.scale) > 1 or src.zero_point or dst.zero_point:
        # per-channel or asymmetric requantization goes through the reals (never on the TIDL path)
        real = dequantize(x, _channel_view(src.scale, src.axis, np.ndim(x)), src.zero_point)
        return quantize(real, _channel_view(dst.scale, dst.axis, np.ndim(x)), dst.qmin, dst.qmax,
                        dst.zero_point).astype(out_dtype)
    return requantize(x, src.scale[0], dst.scale[0], dst.qmin, dst.qmax).astype(out_dtype)
