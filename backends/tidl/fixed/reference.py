"""The fixed-point specification, kernel by kernel (numpy; docs/quantization.md).

Every function takes integer arrays (and integer parameters) and returns
integer arrays; none reads a graph. A Cython twin must return the same
values bit for bit. Conventions:

* a tensor ``q`` with scale ``S`` and zero point 0 means ``q / S``;
* accumulators are int64 arrays; the stated accumulator width (32 bits for
  8-bit layers, 64 for 16-bit) is applied by :func:`saturate`;
* :func:`round_shift` is the only rounding of integers: add half, then an
  arithmetic right shift (halves round toward +inf: -2.5 -> -2);
* :func:`round_half_away` is the only rounding of reals (TIDL
  ``quantRoundAdd = 50``: add 0.5 away from zero, truncate): 2.5 -> 3, -2.5 -> -3;
* results are saturated to the output type's range after rounding.

Integer dot products run as float GEMMs when that is exact: every partial
sum of integer products is an integer below 2**24 (float32) or 2**53
(float64), so any summation order gives the exact integer.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tidlc.ir.fixed_arith import (  # noqa: F401  (data_convert's arithmetic lives in the IR; re-exported)
    MULTIPLIER_BITS,
    _channel_view,
    convert,
    dequantize,
    multiplier,
    quantize,
    requantize,
    round_half_away,
    round_half_away_int,
    round_shift,
)

AVG_POOL_SHIFT = 16  # average pooling multiplies the window sum by round(2**16 / count)
# 16-bit average pools: the reciprocal in Q30 (their result type's ``shift``): round(2**16 / 49) is
# 0.035 % off 1/49, which capped a 7x7 global pool (MobileNetV2) at 69 dB; Q30 is 2e-8 off
AVG_POOL_SHIFT_16 = 30
RESIZE_WEIGHT_BITS = 10  # linear resize: per-axis weights in Q10
SOFTMAX_EXP_BITS = {8: 16, 16: 30}  # softmax: exp(-d) in Q16 (8-bit outputs) or Q30 (16-bit outputs)


# ----------------------------------------------------------------------------- scalars
def qrange(bits: int, signed: bool) -> tuple[int, int]:
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def common_multipliers(ratios: Sequence[float], bits: int = MULTIPLIER_BITS) -> tuple[list[int], int]:
    """Multipliers of several inputs that share one shift (eltwise scale alignment):
    the largest ratio gets a ``bits``-bit multiplier, the others proportionally smaller ones."""
    _, n = multiplier(max(ratios), bits)
    return [round_half_away_int(r * 2.0 ** n) for r in ratios], n


# ----------------------------------------------------------------------------- integers
def saturate(q: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return np.clip(q, lo, hi)


def acc_bits(bits: int) -> int:
    """Accumulator width of a MAC layer computing with ``bits``-bit operands."""
    return 32 if bits <= 8 else 64


# ----------------------------------------------------------------------------- MAC layers
def _gemm_dtype(k: int, x_abs: int, w_abs: int):
    """float32 if every partial sum stays below 2**24, float64 below 2**53, else exact int64."""
    bound = k * x_abs * w_abs
    if bound < 1 << 24:
        return np.float32
    if bound < 1 << 53:
        return np.float64
    return np.int64


def _abs_max(q: np.ndarray) -> int:
    return int(max(abs(int(q.min())), abs(int(q.max())))) if q.size else 0


def conv2d_acc(x: np.ndarray, w: np.ndarray, strides, pads, dilations, groups: int) -> np.ndarray:
    """Exact integer convolution sums (int64), no bias: x (N, C, H, W), w (O, C/g, kh, kw)."""
    from tidlc.ir.ops.nn import conv2d_ref
    k = w.shape[1] * w.shape[2] * w.shape[3]
    dtype = _gemm_dtype(k, _abs_max(x), _abs_max(w))
    if dtype is np.int64:
        return _conv2d_int64(x, w, strides, pads, dilations, groups)
    out = conv2d_ref(x.astype(dtype), w.astype(dtype), None, strides, pads, dilations, groups)
    return out.astype(np.int64)


def _conv2d_int64(x, w, strides, pads, dilations, groups):
    from tidlc.kernels.reference import im2col_f32
    n = x.shape[0]
    cout, cin_g, kh, kw = w.shape
    cols, ho, wo = im2col_f32(x.astype(np.int64), kh, kw, strides, pads, dilations)
    cols = cols.reshape(n, groups, cin_g * kh * kw, ho * wo)
    wg = w.astype(np.int64).reshape(groups, cout // groups, cin_g * kh * kw)
    return np.matmul(wg, cols).reshape(n, cout, ho, wo)


def deconv2d_acc(x: np.ndarray, w: np.ndarray, strides, pads, dilations, groups: int,
                 output_padding) -> np.ndarray:
    from tidlc.ir.ops.nn import deconv2d_ref
    k = x.shape[1] // groups * w.shape[2] * w.shape[3]  # taps that can land on one output
    dtype = _gemm_dtype(k, _abs_max(x), _abs_max(w))
    dtype = np.float64 if dtype is np.float32 else dtype
    if dtype is np.int64:
        raise OverflowError("deconv2d accumulator exceeds 2**53")
    out = deconv2d_ref(x.astype(dtype), w.astype(dtype), None, strides, pads, dilations, groups, output_padding)
    return out.astype(np.int64)


def dense_acc(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x (..., K) @ w.T (M, K) -> (..., M) exact int64."""
    dtype = _gemm_dtype(w.shape[1], _abs_max(x), _abs_max(w))
    if dtype is np.int64:
        return np.matmul(x.astype(np.int64), w.astype(np.int64).T)
    return np.matmul(x.astype(dtype), w.astype(dtype).T).astype(np.int64)


def matmul_acc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    dtype = _gemm_dtype(a.shape[-1], _abs_max(a), _abs_max(b))
    if dtype is np.int64:
        return np.matmul(a.astype(np.int64), b.astype(np.int64))
    return np.matmul(a.astype(dtype), b.astype(dtype)).astype(np.int64)


def channel_view(v: np.ndarray, ndim: int, axis: int = 1) -> np.ndarray:
    """A per-channel vector shaped to broadcast along ``axis`` of an ``ndim`` array."""
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return np.asarray(v).reshape(shape)


def add_bias(acc: np.ndarray, bias: np.ndarray | None, axis: int = 1) -> np.ndarray:
    if bias is None:
        return acc
    return acc + channel_view(bias.astype(np.int64), acc.ndim, axis)


def mac_output(acc: np.ndarray, acc_width: int, mult, shift, lo: int, hi: int, axis: int = 1) -> np.ndarray:
    """The output stage of a MAC layer, in this order:

    1. saturate the exact sum to the accumulator width (32 or 64 bits);
    2. multiply by the per-channel multiplier ``mult`` (1 for per-tensor weights);
    3. :func:`round_shift` by ``shift``;
    4. saturate to ``[lo, hi]``: the output type's range intersected with the fused
       activation's range (ReLU: lo = 0; ReLU6/clip: their bounds times the output scale).
    """
    acc = saturate_acc(acc, acc_width)
    if not (np.ndim(mult) == 0 and int(mult) == 1):
        acc = acc * _per_channel(mult, acc.ndim, axis)
    return np.clip(round_shift(acc, shift), lo, hi)


def saturate_acc(acc: np.ndarray, acc_width: int) -> np.ndarray:
    """The exact sums saturated to an ``acc_width``-bit accumulator (64 bits: as they are)."""
    if acc_width >= 64:
        return acc
    return np.clip(acc, -(1 << (acc_width - 1)), (1 << (acc_width - 1)) - 1)


def _per_channel(m, ndim: int, axis: int):
    """A multiplier per channel (shaped along ``axis``) or one (a Python int)."""
    return channel_view(np.asarray(m, np.int64).reshape(-1), ndim, axis) if np.ndim(m) else int(m)


def mac_output_prelu(acc: np.ndarray, acc_width: int, m_pos, m_neg, shift, lo: int, hi: int,
                     axis: int = 1) -> np.ndarray:
    """:func:`mac_output` of a layer with a fused prelu (TIDL actType 2), one rounding shift and one
    clamp: where the saturated accumulator is ``>= 0`` it is multiplied by ``m_pos`` (per channel
    or one); where it is negative, by the magnitude of the channel's ``m_neg`` (``slope x m_pos``,
    rounded half away from zero), and after the rounding shift the slope's sign is applied (a
    negative slope's rounding mirrors a positive one's)."""
    acc = saturate_acc(np.asarray(acc, dtype=np.int64), acc_width)
    neg = _per_channel(m_neg, acc.ndim, axis)
    out = round_shift(acc * np.where(acc >= 0, _per_channel(m_pos, acc.ndim, axis), np.abs(neg)), shift)
    return np.clip(np.where((acc < 0) & (neg < 0), -out, out), lo, hi)


# ----------------------------------------------------------------------------- pooling
def max_pool(q: np.ndarray, kernel, strides, pads, dilations, ho: int, wo: int) -> np.ndarray:
    """Max over each window; padding never wins (it reads the type's minimum)."""
    from tidlc.kernels.reference import max_pool2d
    out = max_pool2d(q.astype(np.float32), kernel, strides, pads, dilations, ho, wo)  # exact below 2**24
    return out.astype(np.int64)


def avg_pool(q: np.ndarray, kernel, strides, pads, dilations, ho: int, wo: int,
             counts: np.ndarray, shift: int = AVG_POOL_SHIFT) -> np.ndarray:
    """``round_shift(window_sum * round(2**shift / count), shift)``; ``counts`` is (ho, wo)
    (the taps each window averages over, padding in or out as the op says); ``shift`` 16, or
    the result type's shift (:data:`AVG_POOL_SHIFT_16` for 16-bit results)."""
    from tidlc.kernels.reference import pool2d_window
    sums = pool2d_window(q.astype(np.float64), False, kernel, strides, pads, dilations, ho, wo,
                         np.ones((ho, wo)))  # exact: sums of integers below 2**53
    mult = avg_multipliers(counts, shift)
    return round_shift(sums.astype(np.int64) * mult, shift)


def avg_multipliers(counts: np.ndarray, shift: int = AVG_POOL_SHIFT) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    return round_half_away((1 << shift) / counts).astype(np.int64)


def global_avg_pool(q: np.ndarray, shift: int = AVG_POOL_SHIFT) -> np.ndarray:
    n, c = q.shape[:2]
    count = int(np.prod(q.shape[2:]))
    sums = q.reshape(n, c, -1).astype(np.int64).sum(axis=2)
    mult = int(avg_multipliers(np.array(count), shift))
    return round_shift(sums * mult, shift).reshape((n, c) + (1,) * (q.ndim - 2))


# ----------------------------------------------------------------------------- eltwise
def eltwise_align(qs: Sequence[np.ndarray], mults: Sequence[int]) -> list[np.ndarray]:
    return [np.asarray(q, dtype=np.int64) * m for q, m in zip(qs, mults)]


def eltwise_add(qa, qb, ma: int, mb: int, shift: int, lo: int, hi: int, subtract: bool = False):
    """``sat(round_shift(qa * ma +/- qb * mb, shift))`` (both inputs aligned to the output scale)."""
    a, b = eltwise_align([qa, qb], [ma, mb])
    acc = a - b if subtract else a + b
    return np.clip(round_shift(acc, shift), lo, hi)


def eltwise_mul(qa, qb, mult: int, shift: int, lo: int, hi: int):
    """``sat(round_shift(qa * qb * m, n))``: the product's scale is ``Sa * Sb``."""
    acc = np.asarray(qa, dtype=np.int64) * np.asarray(qb, dtype=np.int64)
    return np.clip(round_shift(acc * mult, shift), lo, hi)


def eltwise_max(qa, qb, ma: int, mb: int, shift: int, lo: int, hi: int, minimum: bool = False):
    """Both inputs requantized to the output scale (each rounded), then max/min."""
    a = round_shift(np.asarray(qa, dtype=np.int64) * ma, shift)
    b = round_shift(np.asarray(qb, dtype=np.int64) * mb, shift)
    return np.clip(np.minimum(a, b) if minimum else np.maximum(a, b), lo, hi)


# ----------------------------------------------------------------------------- tables
def lut(q: np.ndarray, table: np.ndarray, qmin_in: int) -> np.ndarray:
    """``table[q - qmin_in]``: any unary function of an 8/16-bit input (sigmoid, tanh, ...)."""
    return table[np.asarray(q, dtype=np.int64) - qmin_in]


def make_table(fn, s_in: float, s_out: float, in_range: tuple[int, int], out_range: tuple[int, int]):
    """``table[i] = sat(round_half_away(fn((qmin_in + i) / s_in) * s_out))``, fn on float64."""
    codes = np.arange(in_range[0], in_range[1] + 1, dtype=np.float64)
    with np.errstate(all="ignore"):
        real = np.asarray(fn(codes / s_in), dtype=np.float64)
    real = np.nan_to_num(real, nan=0.0, posinf=out_range[1] / s_out, neginf=out_range[0] / s_out)
    return np.clip(round_half_away(real * s_out), *out_range).astype(np.int64)


def softmax(q: np.ndarray, axis: int, exp_table: np.ndarray, qmax_out: int) -> np.ndarray:
    """Integer softmax: ``d = max - q`` along the axis, ``e = exp_table[min(d, len-1)]`` (Q16/Q30
    values of ``exp(-d / s_in)``), ``y = (e * qmax + sum / 2) // sum`` (the output scale is ``qmax``)."""
    q = np.asarray(q, dtype=np.int64)
    d = q.max(axis=axis, keepdims=True) - q
    e = exp_table[np.minimum(d, len(exp_table) - 1)]
    total = e.sum(axis=axis, keepdims=True)
    return (e * qmax_out + total // 2) // total


def exp_table(s_in: float, bits: int, out_bits: int = 8) -> np.ndarray:
    """``round_half_away(2**Q * exp(-d / s_in))`` for d = 0 .. 2**bits - 1 (zeros in the tail);
    Q = 16 for 8-bit outputs, 30 for 16-bit ones."""
    d = np.arange(1 << bits, dtype=np.float64)
    q = SOFTMAX_EXP_BITS[8 if out_bits <= 8 else 16]
    return round_half_away(np.exp(-d / s_in) * float(1 << q)).astype(np.int64)


# ----------------------------------------------------------------------------- layernorm
LAYERNORM_Z_BITS = 24  # the normalized value (x - mean) / std in Q24
_POW2 = np.left_shift(np.int64(1), np.arange(63, dtype=np.int64))


def bit_length(v: np.ndarray) -> np.ndarray:
    """Exact bit length of non-negative int64 values (0 for 0)."""
    return np.searchsorted(_POW2, np.asarray(v, dtype=np.int64), side="right").astype(np.int64)


def isqrt(v: np.ndarray) -> np.ndarray:
    """Exact floor square root of int64 values in [0, 2**62]: a float64 estimate (at most one off),
    corrected in integers."""
    v = np.asarray(v, dtype=np.int64)
    r = np.sqrt(v.astype(np.float64)).astype(np.int64)
    r = np.where(r * r > v, r - 1, r)
    return np.where((r + 1) * (r + 1) <= v, r + 1, r)


def layernorm(q: np.ndarray, n: int, eps_codes: int, gain: np.ndarray, shift: int, offset: np.ndarray,
              lo: int, hi: int) -> np.ndarray:
    """Integer layer normalization of the rows of the trailing ``n`` elements of ``q`` (all
    integer arithmetic):

    * ``s1 = sum q``, ``s2 = sum q*q``, ``d = n q - s1``, ``V = n s2 - s1**2 + E`` (``n**2`` times the
      variance in codes; ``E = n**2 eps S_in**2``, at least 1);
    * ``m = max(0, (62 - bitlen V) // 2)``, ``r = isqrt(V << 2m)`` in ``[2**30, 2**31)``,
      ``M = (2**61 + r // 2) // r``: ``M / 2**(61-m) ~= 1 / sqrt(V)``;
    * ``z = round_shift(d M, 37 - m)``: ``(q - mean) / std`` in Q24;
    * ``y = sat(round_shift(z gain_i, 24 + shift) + offset_i)``: ``gain_i / 2**shift`` is
      ``gamma_i S_out``, ``offset_i = round(beta_i S_out)``."""
    q = np.asarray(q, dtype=np.int64)
    rows = q.reshape(-1, n)
    s1 = rows.sum(axis=1, keepdims=True)
    v = n * (rows * rows).sum(axis=1, keepdims=True) - s1 * s1 + eps_codes
    m = np.maximum(0, (62 - bit_length(v)) // 2)
    r = isqrt(v << (2 * m))
    mult = ((1 << 61) + r // 2) // r
    z = round_shift((n * rows - s1) * mult, 37 - m)
    y = round_shift(z * np.asarray(gain, dtype=np.int64), LAYERNORM_Z_BITS + shift) + np.asarray(offset, np.int64)
    return np.clip(y, lo, hi).reshape(q.shape)


# ----------------------------------------------------------------------------- resize
def linear_weights(src: np.ndarray, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source coordinates -> (lo index, hi index, Q10 weight of hi)."""
    src = np.clip(np.asarray(src, dtype=np.float64), 0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    w_hi = round_half_away((src - lo) * (1 << RESIZE_WEIGHT_BITS)).astype(np.int64)
    return lo, hi, w_hi


def resize_linear(q: np.ndarray, axes_weights: Sequence[tuple[int, np.ndarray, np.ndarray, np.ndarray]]):
    """Separable linear resize with Q10 weights per axis; the products of the weights are kept
    exact and rounded once: ``round_shift(sum, 10 * number of axes)``."""
    acc = np.asarray(q, dtype=np.int64)
    for axis, lo, hi, w_hi in axes_weights:
        shape = [1] * acc.ndim
        shape[axis] = -1
        w = w_hi.reshape(shape)
        acc = np.take(acc, lo, axis=axis) * ((1 << RESIZE_WEIGHT_BITS) - w) + np.take(acc, hi, axis=axis) * w
    return round_shift(acc, RESIZE_WEIGHT_BITS * len(axes_weights))


# ----------------------------------------------------------------------------- prelu
def prelu(q: np.ndarray, m_pos: int, m_neg, shift: int, lo: int, hi: int, axis: int = 1):
    """``sat(round_shift(q * (m_pos if q >= 0 else m_neg[c]), n))``."""
    q = np.asarray(q, dtype=np.int64)
    neg = channel_view(m_neg, q.ndim, axis) if np.ndim(m_neg) else int(m_neg)
    return np.clip(round_shift(np.where(q >= 0, q * m_pos, q * neg), shift), lo, hi)
