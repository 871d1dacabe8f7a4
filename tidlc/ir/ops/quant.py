"""``quantize`` and ``dequantize`` with explicit parameters (pre-quantized models).

Pre-quantized networks (TFLite int8, ONNX QDQ) state their quantization per
tensor; these two ops carry it as attributes so the graph runs in the float
interpreter with the model's own integer rounding, and the result type carries
the same numbers as a :class:`~tidlc.ir.types.QuantInfo`.

Scales follow QuantInfo's convention: ``scale`` is integer steps per real unit
(TIDL's), the reciprocal of the TFLite/ONNX scale.

* ``quantize(x) {scale, zero_point, axis, dtype, bits, round}``:
  ``q = clamp(round(x * scale) + zero_point, qmin, qmax)``, computed in
  float64; ``round`` is ``half_away`` (C ``round``, TFLite), ``half_even``
  (ONNX QuantizeLinear) or ``half_up`` (``floor(v + 0.5)``).
* ``dequantize(q) {scale, zero_point, axis}``:
  ``x = (q - zero_point) / scale`` in float64, result f32.

One scale means per tensor; several mean one per index of ``axis`` (weights:
the output-channel axis). ``dequantize`` is not folded by fold-constants, so
int8 weights stay int8 constants with their QuantInfo.
"""
from __future__ import annotations

import numpy as np

from tidlc.ir.opdef import Trait, a_floats, a_int, a_str, defop
from tidlc.ir.ops._common import norm_axis, permuted_axis
from tidlc.ir.types import DTYPES, QUANT_BITS, QuantInfo, TensorType

QUANT_DTYPES = ("i8", "u8", "i16", "u16", "i32")
ROUNDING = ("half_away", "half_even", "half_up")


def _positive_scales(value) -> str | None:
    return None if value and all(np.isfinite(s) and s > 0 for s in value) else "scales must be positive and finite"


def _bits_ok(value) -> str | None:
    return None if value == 0 or value in QUANT_BITS else f"bits must be 0 (the storage width) or one of {QUANT_BITS}"


QUANT_ATTRS = {
    "scale": a_floats(check=_positive_scales, doc="integer steps per real unit (one, or one per channel)"),
    "zero_point": a_int(0),
    "axis": a_int(1, doc="channel axis of per-channel scales"),
}


def round_values(x: np.ndarray, mode: str) -> np.ndarray:
    """Round float64 values to integers (as floats) by one of :data:`ROUNDING`."""
    if mode == "half_even":
        return np.rint(x)
    low = np.floor(x)
    frac = x - low  # exact for float64 of moderate size
    if mode == "half_up":
        return low + (frac >= 0.5)
    # half away from zero: ties go up for positive values, down for negative ones
    return low + ((frac > 0.5) | ((frac == 0.5) & (x > 0)))


def _channel_axis(op, rank: int) -> int | None:
    if len(op.attrs["scale"]) == 1:
        return None
    return norm_axis(op.attrs["axis"], rank)


def _check_channels(op, t: TensorType) -> int | None:
    if t.shape is None:
        return None
    axis = _channel_axis(op, len(t.shape))
    n = len(op.attrs["scale"])
    if axis is not None and t.shape[axis] is not None and t.shape[axis] != n:
        raise ValueError(f"{op.kind}: {n} scales for {t.shape[axis]} channels on axis {axis}")
    return axis


def _broadcast(values, x: np.ndarray, axis: int | None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if axis is None:
        return arr.reshape(())
    shape = [1] * x.ndim
    shape[axis] = -1
    return arr.reshape(shape)


def quant_info(op, rank: int | None) -> QuantInfo:
    """The QuantInfo a ``quantize`` result (or ``dequantize`` operand) has."""
    dtype = op.attrs.get("dtype", "i8")
    bits = op.attrs.get("bits", 0) or np.dtype(DTYPES[dtype]).itemsize * 8
    axis = None
    if len(op.attrs["scale"]) > 1:
        axis = op.attrs["axis"] if rank is None else norm_axis(op.attrs["axis"], rank)
    return QuantInfo(bits, dtype.startswith("i"), op.attrs["scale"], op.attrs["zero_point"], None, axis)


# --------------------------------------------------------------------------- quantize
def _quantize_infer(op, types):
    x = types[0]
    if x.dtype not in ("f32", "f16", "f64"):
        raise ValueError(f"quantize: operand must be float, got {x.dtype}")
    _check_channels(op, x)
    q = quant_info(op, x.rank)
    if not q.qmin <= q.zero_point <= q.qmax:
        raise ValueError(f"quantize: zero point {q.zero_point} outside [{q.qmin}, {q.qmax}]")
    return [TensorType(x.shape, op.attrs["dtype"], x.layout, q)]


def _quantize_compute(op, x):
    axis = None if x.ndim == 0 else _channel_axis(op, x.ndim)
    q = quant_info(op, x.ndim)
    scaled = x.astype(np.float64) * _broadcast(op.attrs["scale"], x, axis)
    out = round_values(scaled, op.attrs["round"]) + op.attrs["zero_point"]
    return np.clip(out, q.qmin, q.qmax).astype(DTYPES[op.attrs["dtype"]])


def _permute_quant_attrs(attrs_, perm):
    """Per channel, the channel axis moves with a transpose; per tensor, the axis means nothing."""
    if len(attrs_["scale"]) == 1:
        return attrs_
    return {**attrs_, "axis": permuted_axis(attrs_["axis"], perm)}


defop("quantize", ("x",),
      {**QUANT_ATTRS, "dtype": a_str("i8", choices=QUANT_DTYPES),
       "bits": a_int(0, check=_bits_ok, doc="0: the width of dtype"),
       "round": a_str("half_away", choices=ROUNDING)},
      infer=_quantize_infer, compute=_quantize_compute, category="data",
      traits=(Trait.ELEMENTWISE, Trait.LAYOUT_AGNOSTIC), permute_attrs=_permute_quant_attrs,
      doc="q = clamp(round(x * scale) + zero_point); scale in QuantInfo's convention (steps per unit).")


# --------------------------------------------------------------------------- dequantize
def _dequantize_infer(op, types):
    x = types[0]
    if x.dtype[0] not in "iu":
        raise ValueError(f"dequantize: operand must be an integer tensor, got {x.dtype}")
    _check_channels(op, x)
    return [TensorType(x.shape, "f32", x.layout)]


def _dequantize_compute(op, x):
    axis = None if x.ndim == 0 else _channel_axis(op, x.ndim)
    real = (x.astype(np.float64) - op.attrs["zero_point"]) / _broadcast(op.attrs["scale"], x, axis)
    return real.astype(np.float32)


defop("dequantize", ("x",), dict(QUANT_ATTRS), infer=_dequantize_infer, compute=_dequantize_compute,
      foldable=False, category="data",
      traits=(Trait.ELEMENTWISE, Trait.LAYOUT_AGNOSTIC), permute_attrs=_permute_quant_attrs,
      doc="x = (q - zero_point) / scale as f32; not folded, so integer weights stay integer.")

# a pre-quantized model's quantize/dequantize ops (ONNX QDQ, int8 TFLite): ranges the quantize pass
# takes and removes, not layers (check, perf and report count them so)
QDQ_KINDS = ("quantize", "dequantize")


def const_or_dequantized(v, depth: int = 4) -> np.ndarray | None:
    """A constant's value, or the float value of a constant behind quantize/dequantize ops (an int8
    TFLite model's layer-norm gamma: ``dequantize(codes)``; a QDQ model's bias:
    ``dequantize(quantize(dequantize(codes)))`` in onnxruntime's exports)."""
    data = v.const_value()
    op = v.producer
    if data is not None or depth == 0 or op is None or op.kind not in QDQ_KINDS:
        return data
    inner = const_or_dequantized(op.operands[0], depth - 1)
    return None if inner is None else np.asarray(op.opdef.compute(op, inner))


def fake_quantized_source(v):
    """``x`` when ``v`` is ``dequantize(quantize(x))`` with one scale each (a pre-quantized model's
    fake quantization of an activation; repeated pairs too), else ``v`` itself: what a rewrite that
    fuses several ops into one sees through, the pairs inside the fused op being its own
    intermediate precision."""
    while True:
        deq = v.producer
        if deq is None or deq.kind != "dequantize" or len(deq.attrs["scale"]) != 1:
            return v
        q = deq.operands[0].producer
        if q is None or q.kind != "quantize" or len(q.attrs["scale"]) != 1:
            return v
        v = q.operands[0]


__all__ = ["QDQ_KINDS", "QUANT_DTYPES", "ROUNDING", "const_or_dequantized", "fake_quantized_source", "quant_info",
           "round_values"]
