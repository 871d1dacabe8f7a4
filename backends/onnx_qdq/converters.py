"""The op table of the ONNX QDQ exporter: one converter per IR op kind.

A converter ``fn(exporter, op, inputs, outputs) -> tensors`` writes the ONNX
nodes of one IR op: ``inputs`` are the ONNX tensors of its operands (unless it
reads them itself, ``takes_operands=False``, to shape its weights), ``outputs``
the names its results should get; it returns the tensors that hold the
results (the exporter adds each quantized result's QDQ pair after them).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import numpy as np

from tidlc.diagnostics import TidlcError
from tidlc.ir.core import Op
from tidlc.ir.types import numpy_dtype

if TYPE_CHECKING:
    from .export import Exporter


def _onnx():
    import onnx
    return onnx


@attrs.frozen
class Converter:
    fn: Callable
    takes_operands: bool = True


CONVERTERS: dict[str, Converter] = {}


def converts(*kinds: str, takes_operands: bool = True):
    def register(fn):
        for kind in kinds:
            CONVERTERS[kind] = Converter(fn, takes_operands)
        return fn
    return register


def with_act(ex: Exporter, op: Op, build: Callable[[str], None], out: str) -> list[str]:
    """``build(target)`` writes the layer; a fused activation follows it as its own node."""
    act = op.attrs.get("act", "none")
    if act == "none":
        build(out)
        return [out]
    raw = ex.tmp(f"{out}_preact")
    build(raw)
    activation(ex, act, tuple(op.attrs.get("act_params", ())), raw, out, op.results[0].type.rank or 2)
    return [out]


def activation(ex: Exporter, act: str, params: tuple, x: str, out: str, rank: int = 2) -> None:
    """The ONNX nodes of a fused activation of ``x`` (of ``rank``: a prelu's slopes are per channel, axis 1)."""
    if act == "prelu":
        slope = np.asarray(params, np.float32)
        shape = (-1,) + (1,) * max(rank - 2, 0) if slope.size > 1 else (1,)
        ex.node("PRelu", [x, ex.floats(slope.reshape(shape), f"{out}_slope")], [out])
    elif act == "relu":
        ex.node("Relu", [x], [out])
    elif act in ("relu6", "clip"):
        lo, hi = (0.0, 6.0) if act == "relu6" else params
        clip(ex, x, lo, hi, out)
    elif act == "leaky_relu":
        ex.node("LeakyRelu", [x], [out], alpha=float(params[0]))
    elif act == "sigmoid":
        ex.node("Sigmoid", [x], [out])
    elif act == "tanh":
        ex.node("Tanh", [x], [out])
    elif act == "hardsigmoid":
        ex.node("HardSigmoid", [x], [out], alpha=float(params[0]), beta=float(params[1]))
    elif act == "hardswish":  # (HardSwish is opset 14: x * hardsigmoid(x, 1/6, 1/2) is the same)
        gate = ex.tmp(f"{out}_gate")
        ex.node("HardSigmoid", [x], [gate], alpha=1.0 / 6.0, beta=0.5)
        ex.node("Mul", [x, gate], [out])
    elif act == "elu":
        ex.node("Elu", [x], [out], alpha=float(params[0]))
    elif act == "gelu":  # (Gelu is opset 20) 0.5 * x * (1 + erf(x / sqrt(2)))
        scaled = ex.tmp(f"{out}_scaled")
        ex.node("Mul", [x, ex.floats(1.0 / math.sqrt(2.0), f"{out}_rsqrt2")], [scaled])
        erf = ex.tmp(f"{out}_erf")
        ex.node("Erf", [scaled], [erf])
        one_plus = ex.tmp(f"{out}_1p")
        ex.node("Add", [erf, ex.floats(1.0, f"{out}_one")], [one_plus])
        half = ex.tmp(f"{out}_half")
        ex.node("Mul", [x, ex.floats(0.5, f"{out}_half_c")], [half])
        ex.node("Mul", [half, one_plus], [out])
    else:
        raise TidlcError(f"activation '{act}' has no ONNX mapping", code="unsupported")


def clip(ex: Exporter, x: str, lo: float, hi: float, out: str) -> None:
    lo_name = ex.floats(lo, f"{out}_min") if math.isfinite(lo) else ""
    hi_name = ex.floats(hi, f"{out}_max") if math.isfinite(hi) else ""
    ex.node("Clip", [x, lo_name, hi_name] if hi_name else [x, lo_name], [out])


def _weight(ex: Exporter, op: Op, index: int, **kw) -> str:
    v = op.operands[index]
    if v.producer is not None and v.producer.kind == "const":
        return ex.constant(v, **kw)
    return ex.value(v)


@converts("conv2d", "deconv2d", takes_operands=False)
def _conv(ex, op, ins, outs):
    a = op.attrs
    x = ex.value(op.operands[0])
    args = [x, _weight(ex, op, 1)] + ([_weight(ex, op, 2)] if len(op.operands) > 2 else [])
    kernel = list(op.operands[1].type.shape[2:])
    kw = {"kernel_shape": kernel, "strides": list(a["strides"]), "pads": list(a["pads"]),
              "dilations": list(a["dilations"]), "group": a["groups"]}
    if op.kind == "deconv2d":
        kw["output_padding"] = list(a["output_padding"])
    onnx_op = "Conv" if op.kind == "conv2d" else "ConvTranspose"
    return with_act(ex, op, lambda out: ex.node(onnx_op, args, [out], op.name, **kw), outs[0])


@converts("dense", takes_operands=False)
def _dense(ex, op, ins, outs):
    x = ex.value(op.operands[0])
    rank = op.operands[0].type.rank
    has_bias = len(op.operands) > 2

    def build(out):
        if rank == 2:  # Gemm: TIDL's InnerProduct pattern
            args = [x, _weight(ex, op, 1)] + ([_weight(ex, op, 2)] if has_bias else [])
            ex.node("Gemm", args, [out], op.name, transB=1)
            return
        product = ex.tmp(f"{out}_matmul") if has_bias else out
        ex.node("MatMul", [x, _weight(ex, op, 1, transpose=(1, 0))], [product], op.name)
        if has_bias:
            ex.node("Add", [product, _weight(ex, op, 2)], [out])
    return with_act(ex, op, build, outs[0])


@converts("matmul")
def _matmul(ex, op, ins, outs):
    ex.node("MatMul", ins, [outs[0]], op.name)
    return outs


def _channel_shape(size: int, rank: int, axis: int) -> tuple[int, ...]:
    shape = [1] * rank
    shape[axis % rank] = size
    return tuple(shape)


@converts("scale", takes_operands=False)
def _scale(ex, op, ins, outs):
    x = ex.value(op.operands[0])
    rank = op.operands[0].type.rank

    def param(index):
        v = op.operands[index]
        size = math.prod(v.type.shape or (1,))
        if v.producer is not None and v.producer.kind == "const" and size > 1:
            return ex.constant(v, shape=_channel_shape(size, rank, op.attrs["axis"]))
        if v.producer is not None and v.producer.kind == "const":
            return ex.constant(v, shape=())
        return ex.value(v)

    def build(out):
        has_bias = len(op.operands) > 2
        product = ex.tmp(f"{out}_mul") if has_bias else out
        ex.node("Mul", [x, param(1)], [product], op.name)
        if has_bias:
            ex.node("Add", [product, param(2)], [out])
    return with_act(ex, op, build, outs[0])


@converts("batchnorm")
def _batchnorm(ex, op, ins, outs):
    ex.node("BatchNormalization", ins, [outs[0]], op.name, epsilon=op.attrs["epsilon"])
    return outs


@converts("prelu", takes_operands=False)
def _prelu(ex, op, ins, outs):
    x = ex.value(op.operands[0])
    slope = op.operands[1]
    rank = op.operands[0].type.rank or 1
    shape = slope.type.shape or ()
    channel = op.operands[0].type.shape[1] if rank > 1 else None
    if slope.producer is not None and slope.producer.kind == "const" and len(shape) == 1 and rank > 1 \
            and shape[0] == channel and channel != 1:
        s = ex.constant(slope, shape=(shape[0],) + (1,) * (rank - 2))  # per channel (axis 1)
    else:
        s = ex.value(slope)
    ex.node("PRelu", [x, s], [outs[0]], op.name)
    return outs


@converts("pool2d")
def _pool(ex, op, ins, outs):
    a = op.attrs
    kw = {"kernel_shape": list(a["kernel"]), "strides": list(a["strides"]), "pads": list(a["pads"]),
              "ceil_mode": int(a["ceil_mode"])}
    if a["mode"] == "max":
        ex.node("MaxPool", ins, [outs[0]], op.name, dilations=list(a["dilations"]), **kw)
    else:
        if tuple(a["dilations"]) != (1, 1):
            if ex.opset < 19:
                raise TidlcError("a dilated average pooling needs ONNX opset 19", op.where(), code="unsupported")
            kw["dilations"] = list(a["dilations"])
        ex.node("AveragePool", ins, [outs[0]], op.name, count_include_pad=int(a["count_include_pad"]), **kw)
    return outs


@converts("global_pool")
def _global_pool(ex, op, ins, outs):
    ex.node("GlobalMaxPool" if op.attrs["mode"] == "max" else "GlobalAveragePool", ins, [outs[0]], op.name)
    return outs


@converts("lrn")
def _lrn(ex, op, ins, outs):
    a = op.attrs
    ex.node("LRN", ins, [outs[0]], op.name, size=a["size"], alpha=a["alpha"], beta=a["beta"], bias=a["bias"])
    return outs


@converts("softmax")
def _softmax(ex, op, ins, outs):
    ex.node("LogSoftmax" if op.attrs["log"] else "Softmax", ins, [outs[0]], op.name, axis=op.attrs["axis"])
    return outs


_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "max": "Max", "min": "Min"}


@converts(*_BINARY)
def _binary(ex, op, ins, outs):
    return with_act(ex, op, lambda out: ex.node(_BINARY[op.kind], ins, [out], op.name), outs[0])


_UNARY = {"abs": "Abs", "ceil": "Ceil", "floor": "Floor", "exp": "Exp", "log": "Log", "neg": "Neg",
          "sqrt": "Sqrt", "reciprocal": "Reciprocal", "erf": "Erf", "softplus": "Softplus",
          "identity": "Identity", "dropout": "Identity"}


@converts(*_UNARY)
def _unary(ex, op, ins, outs):
    ex.node(_UNARY[op.kind], ins, [outs[0]], op.name)
    return outs


_ACTIVATION_PARAMS = {"relu": (), "relu6": (), "sigmoid": (), "tanh": (), "hardswish": (), "gelu": (),
                      "leaky_relu": ("alpha",), "elu": ("alpha",), "hardsigmoid": ("alpha", "beta")}


@converts(*_ACTIVATION_PARAMS)
def _activation(ex, op, ins, outs):
    params = tuple(op.attrs[k] for k in _ACTIVATION_PARAMS[op.kind])
    activation(ex, op.kind, params, ins[0], outs[0])
    return outs


@converts("clip")
def _clip(ex, op, ins, outs):
    clip(ex, ins[0], op.attrs["min"], op.attrs["max"], outs[0])
    return outs


@converts("concat")
def _concat(ex, op, ins, outs):
    ex.node("Concat", ins, [outs[0]], op.name, axis=op.attrs["axis"])
    return outs


@converts("split")
def _split(ex, op, ins, outs):
    ex.node("Split", [ins[0], ex.ints(op.attrs["sizes"], f"{op.name}_sizes")], outs, op.name, axis=op.attrs["axis"])
    return outs


@converts("slice")
def _slice(ex, op, ins, outs):
    a = op.attrs
    big = np.iinfo(np.int64)
    ends = [min(max(e, big.min), big.max) for e in a["ends"]]
    args = [ins[0], ex.ints(a["starts"], f"{op.name}_starts"), ex.ints(ends, f"{op.name}_ends"),
            ex.ints(a["axes"], f"{op.name}_axes")]
    if a["steps"]:
        args.append(ex.ints(a["steps"], f"{op.name}_steps"))
    ex.node("Slice", args, [outs[0]], op.name)
    return outs


@converts("pad")
def _pad(ex, op, ins, outs):
    a = op.attrs
    args = [ins[0], ex.ints(a["pads"], f"{op.name}_pads")]
    if a["mode"] == "constant":
        args.append(ex.floats(a["value"], f"{op.name}_value"))
    ex.node("Pad", args, [outs[0]], op.name, mode=a["mode"])
    return outs


def _static_shape(op: Op, index: int = 0) -> tuple[int, ...]:
    t = op.results[index].type
    if not t.is_static:
        raise TidlcError(f"'{op.name or op.kind}' has a dynamic shape {t.shape}", op.where(), code="shape",
                         hint="fix it with --input-shape NAME=d0,d1,...")
    return tuple(t.shape)


@converts("reshape", "flatten", "squeeze", "unsqueeze", "expand")
def _reshape(ex, op, ins, outs):
    shape = _static_shape(op)
    if op.kind == "expand":
        ex.node("Expand", [ins[0], ex.ints(shape, f"{op.name}_shape")], [outs[0]], op.name)
    else:  # the result's static shape says it all (and 0 / -1 entries never appear)
        ex.node("Reshape", [ins[0], ex.ints(shape, f"{op.name}_shape")], [outs[0]], op.name)
    return outs


@converts("transpose")
def _transpose(ex, op, ins, outs):
    ex.node("Transpose", ins, [outs[0]], op.name, perm=list(op.attrs["perm"]))
    return outs


@converts("depth_to_space")
def _depth_to_space(ex, op, ins, outs):
    ex.node("DepthToSpace", ins, [outs[0]], op.name, blocksize=op.attrs["block"], mode=op.attrs["mode"])
    return outs


@converts("shuffle_channel")
def _shuffle(ex, op, ins, outs):
    shape = _static_shape(op)
    g = op.attrs["groups"]
    split = (shape[0], g, shape[1] // g) + shape[2:]
    grouped, swapped = ex.tmp(f"{outs[0]}_grouped"), ex.tmp(f"{outs[0]}_swapped")
    ex.node("Reshape", [ins[0], ex.ints(split, f"{op.name}_groups")], [grouped])
    ex.node("Transpose", [grouped], [swapped], perm=[0, 2, 1] + list(range(3, len(split))))
    ex.node("Reshape", [swapped, ex.ints(shape, f"{op.name}_shape")], [outs[0]], op.name)
    return outs


@converts("resize")
def _resize(ex, op, ins, outs):
    a = op.attrs
    if a["coord_mode"] == "half_pixel_symmetric" and ex.opset < 19:
        raise TidlcError("resize with half_pixel_symmetric needs ONNX opset 19", op.where(), code="unsupported")
    if a["sizes"]:
        args = [ins[0], "", "", ex.ints(a["sizes"], f"{op.name}_sizes")]
    else:
        args = [ins[0], "", ex.floats(a["scales"], f"{op.name}_scales")]
    kw = {"mode": a["mode"], "coordinate_transformation_mode": a["coord_mode"]}
    if a["mode"] == "nearest":
        kw["nearest_mode"] = a["nearest_mode"]
    ex.node("Resize", args, [outs[0]], op.name, **kw)
    return outs


_REDUCE = {"mean": "ReduceMean", "sum": "ReduceSum", "max": "ReduceMax", "min": "ReduceMin",
           "prod": "ReduceProd", "l2": "ReduceL2", "sumsquare": "ReduceSumSquare"}


@converts("reduce")
def _reduce(ex, op, ins, outs):
    a = op.attrs
    onnx_op = _REDUCE[a["op"]]
    kw = {"keepdims": int(a["keepdims"])}
    args = [ins[0]]
    if a["axes"]:
        if onnx_op == "ReduceSum" or ex.opset >= 18:  # axes became an input (ReduceSum in 13, the rest in 18)
            args.append(ex.ints(a["axes"], f"{op.name}_axes"))
        else:
            kw["axes"] = list(a["axes"])
    ex.node(onnx_op, args, [outs[0]], op.name, **kw)
    return outs


@converts("argmax")
def _argmax(ex, op, ins, outs):
    ex.node("ArgMax", ins, [outs[0]], op.name, axis=op.attrs["axis"], keepdims=int(op.attrs["keepdims"]))
    return outs


@converts("gather")
def _gather(ex, op, ins, outs):
    ex.node("Gather", ins, [outs[0]], op.name, axis=op.attrs["axis"])
    return outs


@converts("where")
def _where(ex, op, ins, outs):
    ex.node("Where", ins, [outs[0]], op.name)
    return outs


@converts("cast")
def _cast(ex, op, ins, outs):
    to = _onnx().helper.np_dtype_to_tensor_dtype(numpy_dtype(op.attrs["dtype"]))
    ex.node("Cast", ins, [outs[0]], op.name, to=to)
    return outs


@converts("shape", takes_operands=False)
def _shape(ex, op, ins, outs):
    t = op.operands[0].type
    if not t.is_static:
        raise TidlcError(f"'{op.name or 'shape'}' reads a dynamic shape", op.where(), code="shape",
                         hint="fix it with --input-shape NAME=d0,d1,...")
    return [ex.ints(t.shape, outs[0] + "_value")]


@converts("data_convert")
def _data_convert(ex, op, ins, outs):
    """No node: the result's QDQ pair (quantize, requantize) or nothing at all (dequantize)."""
    src, dst = op.operands[0].type, op.results[0].type
    if src.quant is None and dst.quant is None and src.dtype != dst.dtype:  # a plain cast
        to = _onnx().helper.np_dtype_to_tensor_dtype(numpy_dtype(dst.dtype))
        ex.node("Cast", ins, [outs[0]], op.name, to=to)
        return outs
    return [ins[0]]
