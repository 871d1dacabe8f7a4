"""Before calibration: a float copy of the graph in the shape the fixed-point graph will have.

On a clone (the input graph is left untouched):

* ``batchnorm`` with constant statistics becomes ``scale`` (TIDL's BatchNorm layer);
* fused activations without a fixed-point form on the accumulator (anything but
  relu, relu6 and clip) are split into their own op, so calibration sees the
  tensor between the layer and the activation;
* pre-quantized models: a ``data_convert`` pair (quantize then dequantize, as
  ONNX QDQ imports) is removed and its range kept as a *range hint* of the
  float tensor; a constant that is dequantized becomes a float constant whose
  type keeps the quantization (its scale is reused for weights); a float
  tensor whose type already carries a quantization gives a range hint too.
"""
from __future__ import annotations

import attrs
import numpy as np
from tidlc.backends.tidl.fixed.executor import CLAMP_ACTS
from tidlc.plugins.fuse import batchnorm_affine

from tidlc.ir.builder import Builder
from tidlc.ir.core import Graph, Op, Value
from tidlc.ir.ops.elementwise import ACT_PARAM_NAMES
from tidlc.ir.rewrite import update_attrs
from tidlc.ir.types import QuantInfo

DEQUANTIZE_KINDS = ("data_convert", "dequantize")
QUANTIZE_KINDS = ("data_convert", "quantize")


@attrs.define
class Prepared:
    graph: Graph
    hints: dict[int, tuple[float, float]]  # float value id -> (lo, hi) from a pre-quantized model
    asymmetric: list[str]  # tensors whose zero point was folded into a symmetric range


def clone_graph(graph: Graph) -> tuple[Graph, dict[int, Value]]:
    """A structural copy: new ops and values, shared constant arrays."""
    mapping: dict[int, Value] = {}
    new = Graph(graph.name, [], [], list(graph.output_names), dict(graph.attrs))
    for op in graph.ops:
        copy = Op(op.kind, [mapping[id(v)] for v in op.operands], [], dict(op.attrs), op.name, op.loc, op.data)
        copy.results = [Value(v.type, copy, v.index, v.name) for v in op.results]
        for old, fresh in zip(op.results, copy.results):
            mapping[id(old)] = fresh
        new.ops.append(copy)
    new.outputs = [mapping[id(v)] for v in graph.outputs]
    return new, mapping


def quant_range(q: QuantInfo) -> tuple[float, float]:
    """The real range a quantization can represent (per-channel: the widest)."""
    scale = min(q.scale)
    return (q.qmin - q.zero_point) / scale, (q.qmax - q.zero_point) / scale


def prepare(graph: Graph) -> tuple[Prepared, dict[int, Value]]:
    """The prepared clone and the map from the original graph's values to the clone's."""
    clone, mapping = clone_graph(graph)
    hints: dict[int, tuple[float, float]] = {}
    asymmetric: list[str] = []
    builder = Builder(Graph())
    ops: list[Op] = []
    replace: dict[int, Value] = {}
    readers: dict[int, int] = {}
    for op in clone.ops:
        for v in op.operands:
            readers[id(v)] = readers.get(id(v), 0) + 1
    for v in clone.outputs:
        readers[id(v)] = readers.get(id(v), 0) + 1

    def operand(v: Value) -> Value:
        while id(v) in replace:
            v = replace[id(v)]
        return v

    for op in clone.ops:
        op.operands = [operand(v) for v in op.operands]
        if op.kind == "input":
            _hint_from_type(op.results[0], hints, asymmetric)
            ops.append(op)
            continue
        if op.kind in DEQUANTIZE_KINDS and _is_dequantize(op):
            src = op.operands[0]
            producer = src.producer
            src_quant = _operand_quant(op)
            if producer is not None and producer.kind == "const":  # a dequantized weight
                data = op.opdef.compute(op, producer.data)
                const = builder.const(np.asarray(data, dtype=np.float32), producer.name or op.name)
                const.type = const.type.with_quant(src_quant)
                const.producer.loc = producer.loc
                ops.append(const.producer)
                replace[id(op.results[0])] = const
                continue
            if producer is not None and producer.kind in QUANTIZE_KINDS and _is_quantize(producer):
                real = producer.operands[0]  # fake quantization: keep the float tensor, remember the range
                q = src_quant
                lo, hi = quant_range(q)
                hints[id(real)] = _merge(hints.get(id(real)), (lo, hi))
                if q.zero_point:
                    asymmetric.append(real.name or producer.name)
                replace[id(op.results[0])] = real
                if readers.get(id(real)) == 1:  # a QDQ pair saturates: keep that as a fused clip
                    _clip_producer(real, *hints[id(real)])
                continue
        if op.kind in DEQUANTIZE_KINDS and _is_dequantize(op):  # e.g. an int8 graph input: keep its range
            hints[id(op.results[0])] = _merge(hints.get(id(op.results[0])), quant_range(_operand_quant(op)))
        if op.kind == "batchnorm" and all(v.const_value() is not None for v in op.operands[1:]):
            op = _bn_to_scale(builder, op, ops)
        act = op.attrs.get("act")
        if act is not None and act not in CLAMP_ACTS:  # no fixed-point form on the accumulator
            ops.append(op)
            ops.append(_split_activation(builder, op, replace, ops))
            continue
        for r in op.results:
            _hint_from_type(r, hints, asymmetric)
        ops.append(op)
    clone.ops = ops
    clone.outputs = [operand(v) for v in clone.outputs]
    clone.prune()
    for key, value in list(mapping.items()):
        mapping[key] = operand(value)
    return Prepared(clone, hints, asymmetric), mapping


# ops whose TIDL kernel applies a fused clip as its output clamp (a backend list: which kernels do)
CLIPPABLE = ("conv2d", "deconv2d", "dense", "scale", "add", "sub", "mul")


def _clip_producer(v: Value, lo: float, hi: float) -> None:
    op = v.producer
    if op is None or op.kind not in CLIPPABLE or op.attrs.get("act") not in ("none", "relu"):
        return
    if op.attrs["act"] == "relu":
        lo = max(lo, 0.0)
    if lo >= hi:
        return
    update_attrs(op, act="clip", act_params=(lo, hi))


def _is_dequantize(op: Op) -> bool:
    if op.kind == "dequantize":
        return True
    return op.operands[0].type.quant is not None and op.results[0].type.dtype[0] == "f"


def _operand_quant(op: Op) -> QuantInfo:
    """The quantization of a dequantize's operand: its type's, or the op's own attributes."""
    src = op.operands[0]
    if src.type.quant is not None:
        return src.type.quant
    from tidlc.ir.types import numpy_dtype
    dt = np.dtype(numpy_dtype(src.type.dtype))
    scale = op.attrs["scale"]
    axis = None
    if len(scale) > 1:
        axis = op.attrs["axis"] % src.type.rank if src.type.rank else op.attrs["axis"]
    return QuantInfo(dt.itemsize * 8, dt.kind == "i", scale, op.attrs.get("zero_point", 0), None, axis)


def _is_quantize(op: Op) -> bool:
    return op.operands[0].type.dtype[0] == "f" and op.results[0].type.quant is not None


def _hint_from_type(v: Value, hints: dict, asymmetric: list) -> None:
    q = v.type.quant
    if q is not None and v.type.dtype[0] == "f":  # a float tensor annotated with its range
        hints[id(v)] = _merge(hints.get(id(v)), quant_range(q))
        if q.zero_point:
            asymmetric.append(v.name)


def _merge(old: tuple | None, new: tuple) -> tuple:
    return new if old is None else (min(old[0], new[0]), max(old[1], new[1]))


def _bn_to_scale(builder: Builder, op: Op, ops: list[Op]) -> Op:
    scale, bias = batchnorm_affine(op)
    sv = builder.const(scale, f"{op.name}.scale")
    bv = builder.const(bias, f"{op.name}.bias")
    ops += [sv.producer, bv.producer]
    new = builder.make("scale", [op.operands[0], sv, bv], {}, op.name, op.loc)
    new.results[0].name = op.results[0].name
    new.results[0].type = op.results[0].type
    _rebind(op, new)
    return new


def _rebind(old: Op, new: Op) -> None:
    """``new`` takes over ``old``'s result values (so readers and the value map follow; the
    walk above keeps values, not ops, in its maps)."""
    for r_old, r_new in zip(old.results, new.results):
        r_old.producer = new
        r_old.index = r_new.index
    new.results = old.results


def _split_activation(builder: Builder, op: Op, replace: dict, ops: list[Op]) -> Op:
    """``op{act=a}`` -> ``op{act=none}`` then a standalone ``a`` op that owns the old result (a
    prelu's slopes become its constant operand; the quantizer fuses it back where TIDL can)."""
    act, params = op.attrs["act"], op.attrs["act_params"]
    result = op.results[0]
    inner = Value(result.type, op, 0, f"{result.name or op.name}.preact")
    update_attrs(op, act="none", act_params=())
    if act == "prelu":
        slope = builder.const(np.asarray(params, dtype=np.float32), f"{op.name}.prelu.slope")
        ops.append(slope.producer)
        act_op = builder.make("prelu", [inner, slope], {}, f"{op.name}.prelu", op.loc)
    else:
        act_op = builder.make(act, [inner], dict(zip(ACT_PARAM_NAMES[act], params)), f"{op.name}.{act}", op.loc)
    _rebind(op, act_op)
    op.results = [inner]
    return act_op


