"""Fixed-point boundary op: ``data_convert`` (TIDL's DataConvert layer).

``data_convert`` changes how a tensor is stored; what it does follows from
the quantization of its operand and result types (docs/quantization.md):

* float -> integer: ``q = sat(round_half_away(x * scale) + zero_point)``;
* integer -> float: ``x = (q - zero_point) / scale`` (in f32);
* integer -> integer: a requantization by a 15-bit multiplier and a
  rounding shift derived from the two scales;
* float -> float: an element type cast.

Its float reference is that arithmetic itself, so the float interpreter runs
graphs that contain it (pre-quantized ONNX QDQ models import as pairs of it).
"""
from __future__ import annotations

from tidlc.ir.opdef import a_str, defop
from tidlc.ir.types import DTYPES, TensorType


def _data_convert_infer(op, types):
    x = types[0]
    # the result's quantization cannot be inferred: it is declared (and kept by re-inference)
    return [TensorType(x.shape, op.attrs["dtype"], x.layout)]


def _data_convert_compute(op, x):
    from tidlc.ir.fixed_arith import convert
    return convert(x, op.operands[0].type.quant, op.results[0].type.quant, op.attrs["dtype"])


defop("data_convert", ("x",), {"dtype": a_str(choices=tuple(DTYPES), doc="element type of the result")},
      infer=_data_convert_infer, compute=_data_convert_compute, foldable=False, category="data",
      doc="Quantize, dequantize or requantize (scales from the operand and result types).")
