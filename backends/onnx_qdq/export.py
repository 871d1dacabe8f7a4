"""tidlc's fixed-point IR -> an ONNX QDQ model (QuantizeLinear/DequantizeLinear around float ops).

Every fixed-point value of the quantized graph becomes a float tensor that
has just been through a ``QuantizeLinear -> DequantizeLinear`` pair carrying
tidlc's own scale, so a QDQ-aware importer (TIDL's ``prequantized_model=1``)
sees exactly tidlc's fixed-point decisions:

* ONNX's scale is *real per code*, tidlc's is *codes per real*
  (``real = q / scale``): the ONNX scale is ``1 / scale``; zero point 0
  (TDA4VM is symmetric); int8/uint8 or int16/uint16 from the value's bits and
  signedness, so 16-bit layers and mixed precision survive as they are;
* weights are float initializers dequantized from tidlc's integer codes (so
  re-quantizing them gives the same codes) followed by a weight QDQ pair,
  per output channel where tidlc's quant is per channel;
* biases (stored at the accumulator scale, 32/64 bits) are float
  initializers: QuantizeLinear has no 32-bit output type;
* ``data_convert`` needs no node: dequantizing is the DQ that is already
  there, quantizing and requantizing are the QDQ pair of its result;
* a fused activation (``act``) is its own ONNX node between the layer and
  its QDQ pair, as an ONNX exporter writes it.

The opset is the lowest that holds the model: 13 (per-axis QuantizeLinear,
which per-channel depthwise weights need) when every quantized tensor has 8
bits, 21 (the first opset whose QuantizeLinear has int16/uint16 outputs) as
soon as one has 16.
"""
from __future__ import annotations

import attrs
import numpy as np

from tidlc.diagnostics import TidlcError
from tidlc.ir.core import Graph, Op, Value
from tidlc.ir.types import QuantInfo, numpy_dtype

from .converters import CONVERTERS

OPSET_8BIT = 13  # per-axis QuantizeLinear (per-channel weights) arrived in opset 13
OPSET_16BIT = 21  # int16/uint16 QuantizeLinear outputs arrived in opset 21
QDQ_BITS = (8, 16)


@attrs.define
class Activation:
    """One activation QDQ pair: which tensor, and the IR value (op position, result) it carries."""

    tensor: str
    op: int
    layer: str
    kind: str
    result: int
    bits: int
    signed: bool
    scale: float  # tidlc's (codes per real)


@attrs.define
class Exported:
    model: object  # onnx.ModelProto
    opset: int
    activations: list[Activation]
    tensor_names: dict[int, str]  # id(IR value) -> ONNX tensor name
    weights: dict  # (id(IR const value), transpose, shape) -> the tensor a layer reads


def _onnx():
    import onnx
    return onnx


def _zero_point(q: QuantInfo, count: int = 1) -> np.ndarray:
    dtype = {(8, True): np.int8, (8, False): np.uint8, (16, True): np.int16, (16, False): np.uint16}[(q.bits, q.signed)]
    zp = np.full(count, q.zero_point, dtype=dtype)
    return zp if count > 1 else zp.reshape(())


def _is_qdq(q: QuantInfo | None) -> bool:
    return q is not None and q.bits in QDQ_BITS


def dequantized(data: np.ndarray, q: QuantInfo) -> np.ndarray:
    """The reals a constant's integer codes stand for (per channel along ``q.axis``)."""
    scale = np.asarray(q.scale, dtype=np.float64)
    if len(q.scale) > 1:
        shape = [1] * data.ndim
        shape[(q.axis or 0) % max(data.ndim, 1)] = -1
        scale = scale.reshape(shape)
    return ((np.asarray(data, dtype=np.float64) - q.zero_point) / scale).astype(np.float32)


def needed_opset(graph: Graph) -> int:
    """13, or 21 when a quantized tensor (activation or weight) has 16 bits."""
    for op in graph.ops:
        for v in op.results:
            q = v.type.quant
            if q is not None and q.bits > 8 and (op.kind != "const" or q.bits <= 16):
                return OPSET_16BIT
    return OPSET_8BIT


class Exporter:
    """Builds the ONNX graph op by op (the IR is in topological order)."""

    def __init__(self, graph: Graph, opset: int):
        self.g = graph
        self.opset = opset
        self.nodes: list = []
        self.inits: list = []
        self.names: dict[int, str] = {}  # id(value) -> ONNX tensor name (after its QDQ pair)
        self.weights: dict[int, str] = {}
        self.used: set[str] = set()
        self.node_names: set[str] = set()
        self.activations: list[Activation] = []
        self.reserved = {op.attrs["name"] for op in graph.input_ops} | set(graph.output_names)
        self.preferred = self._output_aliases()

    # --- names --------------------------------------------------------------------------
    def _output_aliases(self) -> dict[int, str]:
        """Graph outputs are dequantizing data_converts (aliases in ONNX): the tensor they alias
        takes the output's name, so the model's outputs keep their names without Identity nodes."""
        preferred: dict[int, str] = {}
        for v, name in zip(self.g.outputs, self.g.output_names):
            src = v
            while src.producer is not None and src.producer.kind == "data_convert" and src.type.quant is None \
                    and src.producer.operands[0].type.quant is not None:
                src = src.producer.operands[0]
            if src.producer is not None and src.producer.kind != "input" and id(src) not in preferred:
                preferred[id(src)] = name
        return preferred

    def fresh(self, base: str) -> str:
        base = base or "t"
        name, n = base, 1
        while name in self.used or (name in self.reserved and name != base) or name == "":
            name = f"{base}_{n}"
            n += 1
        self.used.add(name)
        return name

    def _reserve_free(self, base: str) -> str:
        """A tensor name for an intermediate: never an input/output name."""
        name, n = base, 1
        while name in self.used or name in self.reserved:
            name = f"{base}_{n}"
            n += 1
        self.used.add(name)
        return name

    def result_name(self, op: Op, index: int) -> str:
        v = op.results[index]
        want = self.preferred.get(id(v))
        if want is not None and want not in self.used:
            self.used.add(want)
            return want
        base = v.name or op.name or op.kind
        if len(op.results) > 1 and not v.name:
            base = f"{base}:{index}"
        return self._reserve_free(base)

    # --- building blocks ----------------------------------------------------------------
    def node(self, op_type: str, inputs: list[str], outputs: list[str], name: str = "", **attributes) -> None:
        helper = _onnx().helper
        node_name = name or (outputs[0] if outputs else op_type)
        base, n = node_name, 1
        while node_name in self.node_names:
            node_name = f"{base}_{n}"
            n += 1
        self.node_names.add(node_name)
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=node_name, **attributes))

    def tmp(self, base: str) -> str:
        return self._reserve_free(base)

    def init(self, array: np.ndarray, base: str) -> str:
        name = self._reserve_free(base)
        self.inits.append(_onnx().numpy_helper.from_array(np.asarray(array), name))
        return name

    def ints(self, values, base: str) -> str:
        return self.init(np.asarray(list(values), dtype=np.int64), base)

    def floats(self, values, base: str) -> str:
        return self.init(np.asarray(values, dtype=np.float32), base)

    def qdq(self, src: str, q: QuantInfo, out: str, axis: int | None = None, count: int = 1) -> None:
        """``src -> QuantizeLinear -> DequantizeLinear -> out`` with tidlc's scale(s) (ONNX: 1/scale)."""
        if q.bits not in QDQ_BITS:
            raise TidlcError(f"'{out}': a {q.bits}-bit tensor has no ONNX QuantizeLinear type",
                             hint="onnx-qdq writes 8- and 16-bit tensors; compile with --bits 8 or 16")
        per_axis = len(q.scale) > 1
        scale = 1.0 / np.asarray(q.scale, dtype=np.float64)
        scale_name = self.init(scale.astype(np.float32) if per_axis else np.float32(scale[0]), f"{out}_scale")
        zp_name = self.init(_zero_point(q, len(q.scale) if per_axis else 1), f"{out}_zero_point")
        quantized = self.tmp(f"{out}_quantized")
        kw = {"axis": int(axis)} if per_axis else {}
        self.node("QuantizeLinear", [src, scale_name, zp_name], [quantized], f"{out}_QuantizeLinear", **kw)
        self.node("DequantizeLinear", [quantized, scale_name, zp_name], [out], f"{out}_DequantizeLinear", **kw)

    # --- values -------------------------------------------------------------------------
    def value(self, v: Value) -> str:
        """The ONNX tensor of an operand (a constant becomes an initializer on first use)."""
        got = self.names.get(id(v))
        if got is not None:
            return got
        if v.producer is None or v.producer.kind != "const":
            raise TidlcError(f"'{v.name or '?'}' is used before it is defined", code="internal")
        return self.constant(v)

    def constant(self, v: Value, transpose: tuple[int, ...] | None = None,
                 shape: tuple[int, ...] | None = None) -> str:
        """A constant as a float initializer (dequantized codes) + weight QDQ pair when it is
        quantized to 8/16 bits; biases and unquantized constants stay as they are."""
        key = (id(v), transpose, shape)
        cached = self.weights.get(key)
        if cached is not None:
            return cached
        op = v.producer
        q = v.type.quant
        data = np.asarray(op.data)
        axis = None
        if q is not None:
            data = dequantized(data, q)
            axis = (q.axis or 0) % max(data.ndim, 1) if len(q.scale) > 1 else None
        if transpose is not None:
            data = np.transpose(data, transpose)
            axis = None if axis is None else transpose.index(axis)
        if shape is not None:
            if axis is not None:  # a channel vector reshaped to broadcast: its one long axis
                axis = next((i for i, d in enumerate(shape) if d != 1), 0)
            data = data.reshape(shape)
        base = op.name or v.name or "const"
        if _is_qdq(q):
            raw = self.init(data, base)
            out = self.tmp(f"{base}_dequantized")
            self.qdq(raw, q, out, axis=axis)
        else:
            out = self.init(data, base)
        self.weights[key] = out
        return out

    def record(self, op_index: int, op: Op, index: int, tensor: str) -> None:
        q = op.results[index].type.quant
        self.activations.append(Activation(tensor, op_index, op.name, op.kind, index, q.bits, q.signed, q.scale[0]))

    # --- the walk -----------------------------------------------------------------------
    def run(self) -> Exported:
        onnx = _onnx()
        helper = onnx.helper
        inputs = []
        for position, op in enumerate(self.g.ops):
            if op.kind == "const":
                continue
            if op.kind == "input":
                name = op.attrs["name"]
                self.used.add(name)
                self.names[id(op.results[0])] = name
                inputs.append(_value_info(name, op.results[0]))
                continue
            self.convert(position, op)
        outputs = []
        for v, name in zip(self.g.outputs, self.g.output_names):
            tensor = self.value(v)
            if tensor != name:
                if name in self.used:  # (a name taken twice: a model output that is also an input)
                    raise TidlcError(f"output name '{name}' is also an input or another output's tensor",
                                     hint="give the model's outputs names of their own")
                self.used.add(name)
                self.node("Identity", [tensor], [name])
            outputs.append(_value_info(name, v))
        graph = helper.make_graph(self.nodes, self.g.name or "main", inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="tidlc", producer_version=_version())
        model.ir_version = _ir_version(self.opset)
        return Exported(model, self.opset, self.activations, dict(self.names), dict(self.weights))

    def convert(self, position: int, op: Op) -> None:
        converter = CONVERTERS.get(op.kind)
        if converter is None:
            if op.operands and all(v.producer is not None and v.producer.kind == "const" for v in op.operands) \
                    or not op.operands:
                return self.folded(op)
            raise TidlcError(f"op '{op.kind}' has no ONNX mapping", op.where(), code="unsupported",
                             hint="onnx-qdq exports the ops `tidlc plugins` lists under it; "
                                  "--target tidl compiles this model")
        finals = [self.result_name(op, i) for i in range(len(op.results))]
        quantized = [r.type.quant is not None for r in op.results]
        outs = [self.tmp(f"{name}_float") if q else name for name, q in zip(finals, quantized)]
        ins = [self.value(v) for v in op.operands] if converter.takes_operands else []
        got = converter.fn(self, op, ins, outs)
        for i, (r, final, produced) in enumerate(zip(op.results, finals, got)):
            if quantized[i]:
                self.qdq(produced, r.type.quant, final)
                self.names[id(r)] = final
                self.record(position, op, i, final)
            else:
                self.names[id(r)] = produced  # the named result, or an alias (a dequantizing data_convert)
                if produced != final:
                    self.used.discard(final)

    def folded(self, op: Op) -> None:
        """An op whose operands are all constants (prior boxes, ...): its value as an initializer."""
        from tidlc.interp import evaluate_op
        args = [np.asarray(v.producer.data) for v in op.operands]
        for r, data in zip(op.results, evaluate_op(op, args)):
            self.names[id(r)] = self.init(np.asarray(data, dtype=numpy_dtype(r.type.dtype)),
                                          self.preferred.get(id(r)) or r.name or op.name or op.kind)


def _value_info(name: str, v: Value):
    onnx = _onnx()
    elem = onnx.helper.np_dtype_to_tensor_dtype(numpy_dtype(v.type.dtype))
    shape = None if v.type.shape is None else [d if d is not None else None for d in v.type.shape]
    return onnx.helper.make_tensor_value_info(name, elem, shape)


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("tidlc")
    except Exception:  # noqa: BLE001 - an uninstalled source tree
        return "0"


def _ir_version(opset: int) -> int:
    """The oldest ONNX IR version that holds the opset (what older runtimes accept best)."""
    return 7 if opset <= 13 else 10 if opset <= 21 else _onnx().IR_VERSION


def export(graph: Graph, opset: int | None = None) -> Exported:
    """The ONNX QDQ model of a quantized graph (``opset`` None: the lowest that holds it)."""
    onnx = _onnx()
    opset = opset or needed_opset(graph)
    if onnx.defs.onnx_opset_version() < opset:
        raise TidlcError(f"16-bit tensors need ONNX opset {opset}; the installed onnx {onnx.__version__} "
                         f"knows opset {onnx.defs.onnx_opset_version()}", hint='pip install "onnx>=1.16"')
    unsupported = sorted({op.kind for op in graph.ops if op.kind not in CONVERTERS
                          and op.kind not in ("input", "const") and not _foldable(op)})
    if unsupported:
        first = next(op for op in graph.ops if op.kind == unsupported[0])
        raise TidlcError(f"no ONNX mapping for op(s) {', '.join(unsupported)}", first.where(), code="unsupported",
                         hint="--target tidl compiles this model; onnx-qdq writes ops that have an ONNX equivalent")
    return Exporter(graph, opset).run()


def _foldable(op: Op) -> bool:
    return all(v.producer is not None and v.producer.kind == "const" for v in op.operands) and \
        op.opdef.compute is not None


def exportable(op: Op) -> bool:
    """Whether :func:`export` can write ``op`` (for ``supports``)."""
    return op.kind in CONVERTERS or op.kind in ("input", "const") or _foldable(op)
