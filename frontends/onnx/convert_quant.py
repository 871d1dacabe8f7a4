"""Converters for pre-quantized (QDQ) ONNX models: QuantizeLinear and DequantizeLinear.

Both map onto the generic ``quantize``/``dequantize`` ops (``tidlc/ir/ops/quant.py``),
whose scale is QuantInfo's (integer steps per real unit), the reciprocal of
ONNX's. QuantizeLinear rounds half to even, as ONNX specifies. The quantize
pass later keeps the ranges these ops state (docs/quantization.md,
"Pre-quantized models").
"""
from __future__ import annotations

import numpy as np

from tidlc.frontend import not_lowered

from .context import Node
from .registry import converter

_ZERO_POINT_DTYPES = {np.dtype(np.uint8): "u8", np.dtype(np.int8): "i8", np.dtype(np.uint16): "u16",
                      np.dtype(np.int16): "i16", np.dtype(np.int32): "i32"}


def _check(node: Node) -> str | None:
    if node.attr_int("block_size", 0):
        return not_lowered("blocked quantization (block_size) is not supported")
    return None


def _params(node: Node) -> tuple[list[float], int, str, int]:
    """(scales in steps per unit, zero point, element type, axis)."""
    onnx_scale = np.asarray(node.const_input(1, "scale"), dtype=np.float64).reshape(-1)
    if np.any(onnx_scale <= 0) or not np.all(np.isfinite(onnx_scale)):
        raise node.error("scales must be positive and finite")
    zp = node.const_input(2, "zero point") if node.has_input(2) else None
    dtype = "u8"
    zero_point = 0
    if zp is not None:
        zp = np.asarray(zp)
        dtype = _ZERO_POINT_DTYPES.get(zp.dtype)
        if dtype is None:
            raise node.error(f"zero point of type {zp.dtype} is not supported",
                             hint="8/16-bit integer zero points (uint8, int8, uint16, int16)")
        values = np.unique(zp.reshape(-1))
        if values.size > 1:
            raise node.error("per-channel zero points are not supported", hint="TIDL quantizes symmetrically")
        zero_point = int(values[0]) if values.size else 0
    axis = node.attr_int("axis", 1)
    return [float(1.0 / s) for s in onnx_scale], zero_point, dtype, axis


@converter("QuantizeLinear", since=10, check=_check)
def quantize_linear(node: Node) -> None:
    scale, zero_point, dtype, axis = _params(node)
    node.bind(node.op("quantize", [node.input(0)], scale=scale, zero_point=zero_point, axis=axis,
                      dtype=dtype, round="half_even"))


@converter("DequantizeLinear", since=10, check=_check)
def dequantize_linear(node: Node) -> None:
    scale, zero_point, _, axis = _params(node)
    node.bind(node.op("dequantize", [node.input(0)], scale=scale, zero_point=zero_point, axis=axis))
