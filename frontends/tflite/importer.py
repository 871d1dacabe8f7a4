"""TFLite (``.tflite``) -> tidlc IR, including pre-quantized int8 models.

``load_tflite(path, options)`` reads the flatbuffer with tidlc's own reader
(``flatbuf.py``, ``schema.py``), converts the main subgraph, and:

* **checks every operator before converting any**: custom ops (with their
  custom code and operator index), builtin ops without a converter, unsupported
  options, element types and per-channel zero points are reported in one error;
* graph inputs become ``input`` ops (rank 4: NHWC); ``--input-shape`` overrides
  the stored shape;
* **quantized tensors stay quantized**: every TFLite tensor is one IR value of
  the tensor's own element type; an int8/uint8/int16/int32 tensor with scales
  carries them as a :class:`~tidlc.ir.types.QuantInfo` on its type (scale in
  QuantInfo's convention, 1/TFLite's; per-channel weights with their axis).
  Converters compute in float: :meth:`TFLiteNode.input` returns the tensor's
  float view, a ``dequantize`` op (made once per tensor), and
  :meth:`TFLiteNode.bind` stores a float result into a quantized tensor with
  ``quantize`` (TFLite's rounding: half away from zero). Weights are integer
  constants followed by ``dequantize`` (never folded). Ops that only move
  data (reshape, transpose, slices, concat and pad with equal quantization)
  work on the integers directly. So ``tidlc run`` executes an int8 model with
  its scales, zero points, saturation and rounding at every tensor;
* float16 weights (``DEQUANTIZE`` of an f16 constant) become float32 constants;
* ``SPACE_TO_BATCH_ND -> CONV_2D/DEPTHWISE_CONV_2D -> BATCH_TO_SPACE_ND`` (how
  TensorFlow writes a dilated convolution) becomes one dilated ``conv2d``.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
from tidlc.frontends.tensorflow.common import ImporterBase, NodeBase, permute_weight

from tidlc.diagnostics import Loc, TidlcError
from tidlc.frontend import run_check, unsupported_error
from tidlc.ir.core import Graph, Value
from tidlc.ir.ops.quant import QUANT_DTYPES
from tidlc.ir.types import QuantInfo, TensorType, numpy_dtype

from . import convert  # noqa: F401  (registers the converters)
from .registry import CONVERTERS
from .schema import ACTIVATIONS, Model, Operator, Tensor, is_tflite, read_model

DOCS = "docs/frontends/tflite.md"
_FUSED = {"NONE": ("none", ()), "RELU": ("relu", ()), "RELU6": ("relu6", ()),
          "RELU_N1_TO_1": ("clip", (-1.0, 1.0)), "TANH": ("tanh", ())}


def quant_info(t: Tensor) -> QuantInfo | None:
    """A quantized integer tensor's QuantInfo (scale = 1 / TFLite's scale), else None."""
    if t.quant is None or t.dtype is None or t.dtype[0] not in "iu":
        return None
    scale = tuple(1.0 / float(s) for s in t.quant.scale)
    zero = int(t.quant.zero_point.reshape(-1)[0]) if t.quant.zero_point.size else 0
    bits = np.dtype(numpy_dtype(t.dtype)).itemsize * 8
    axis = t.quant.axis if len(scale) > 1 else None
    return QuantInfo(bits, t.dtype.startswith("i"), scale, zero, None, axis)


def quant_attrs(q: QuantInfo) -> dict:
    """The attributes of ``quantize``/``dequantize`` for a QuantInfo."""
    return {"scale": q.scale, "zero_point": q.zero_point, "axis": q.axis if q.axis is not None else 1}


class TFLiteNode(NodeBase):
    """One TFLite operator during conversion."""

    def __init__(self, importer: TFLiteImporter, op: Operator):
        self.importer = importer
        self.model_op = op
        self.index = op.index
        self.op_type = op.op_type
        self.options = op.options
        self.inputs_idx = op.inputs
        self.outputs_idx = op.outputs
        first = importer.model.tensors[op.outputs[0]].name if op.outputs else ""
        self.name = first or f"op{op.index}"
        self.loc = Loc(self.name, importer.path)
        self.extra: dict[str, Any] = {}  # set by importer-level patterns (dilated convolutions)

    @property
    def label(self) -> str:
        kind = f"CUSTOM '{self.model_op.custom_code}'" if self.op_type == "CUSTOM" else self.op_type
        return f"operator #{self.index} '{self.name}' ({kind})"

    # --- inputs -------------------------------------------------------------------
    def has_input(self, i: int) -> bool:
        return i < len(self.inputs_idx) and self.inputs_idx[i] >= 0

    def tensor(self, i: int) -> Tensor:
        if not self.has_input(i):
            raise self.error(f"input {i} is required but missing")
        return self.importer.model.tensors[self.inputs_idx[i]]

    def out_tensor(self, i: int = 0) -> Tensor:
        return self.importer.model.tensors[self.outputs_idx[i]]

    def input(self, i: int) -> Value:
        """The float view of input ``i`` (dequantized if the tensor is quantized)."""
        self.tensor(i)
        return self.importer.float_view(self.inputs_idx[i], self)

    def raw_input(self, i: int) -> Value:
        """Input ``i`` in its stored element type (int8 stays int8)."""
        self.tensor(i)
        return self.importer.value(self.inputs_idx[i], self)

    def const_input(self, i: int, what: str = "") -> np.ndarray:
        value = self.raw_input(i)
        data = value.const_value()
        if data is None:
            raise self.error(f"{what or f'input {i}'} ('{self.tensor(i).name}') must be a constant",
                             hint="tidlc imports static graphs; fix the input shapes with --input-shape")
        return data

    def const_ints(self, i: int, what: str = "") -> tuple[int, ...]:
        return tuple(int(v) for v in np.asarray(self.const_input(i, what)).reshape(-1))

    def weight(self, i: int, perm=None, shape=None) -> Value:
        """A constant weight in the IR's order; integer weights stay integer (+ ``dequantize``)."""
        t = self.tensor(i)
        q = quant_info(t)
        raw = self.importer.buffer_array(t)
        if q is not None and raw is not None:
            data = raw if perm is None else np.transpose(raw, perm)
            data = np.ascontiguousarray(data if shape is None else data.reshape(shape))
            if q.axis is not None and perm is not None:
                q = QuantInfo(q.bits, q.signed, q.scale, q.zero_point, None, list(perm).index(q.axis))
            c = self.importer.new_const(data, t.name, self.loc, quant=q)
            return self.op("dequantize", [c], **quant_attrs(q))
        value = self.input(i)
        if perm is None and shape is None:
            return value
        return permute_weight(self, value, perm if perm is not None else range(value.type.rank), shape)

    def same_quant(self) -> bool:
        """Every (non-constant) input and the output share one integer quantization."""
        infos = [quant_info(self.tensor(i)) for i in range(len(self.inputs_idx))
                 if self.has_input(i) and self.importer.buffer_array(self.tensor(i)) is None]
        out = quant_info(self.out_tensor())
        return out is not None and all(q == out for q in infos) and bool(infos)

    def data_input(self, i: int) -> Value:
        """For data-movement ops: the integers when quantization is unchanged, else the float view."""
        return self.raw_input(i) if self.same_quant() else self.input(i)

    def act(self, key: str = "fused_activation_function") -> dict:
        code = self.options.get(key, 0)
        act, params = _FUSED[ACTIVATIONS.get(code, "?")]
        return {"act": act, "act_params": params}

    # --- outputs ----------------------------------------------------------------------
    def bind(self, *values: Value | None) -> None:
        for i, value in enumerate(values):
            if value is not None and i < len(self.outputs_idx) and self.outputs_idx[i] >= 0:
                self.importer.bind(self.outputs_idx[i], value, self)


class TFLiteImporter(ImporterBase):
    """Builds one IR graph from one decoded TFLite model."""

    def __init__(self, model: Model, options: Any = None, path: str = ""):
        super().__init__(path, options, model.subgraph_name or _stem(path))
        self.model = model
        self.values: dict[int, Value] = {}
        self.views: dict[int, Value] = {}
        self._arrays: dict[int, np.ndarray | None] = {}

    # --- driver -------------------------------------------------------------------
    def run(self) -> Graph:
        nodes = [TFLiteNode(self, op) for op in self.model.operators]
        self.check_supported(nodes)
        self.fuse_dilated_convolutions(nodes)
        self.add_inputs()
        for node in nodes:
            if node.extra.get("skip"):
                continue
            try:
                CONVERTERS.get(node.op_type).convert(node)
            except TidlcError:
                raise
            except (ValueError, IndexError, TypeError) as exc:
                raise node.error(f"cannot convert: {exc}") from None
        for idx in self.model.outputs:
            t = self.model.tensors[idx]
            self.builder.output(self.value(idx, None), t.name or f"output{idx}")
        graph = self.graph
        read = {id(v) for op in graph.ops for v in op.operands} | {id(v) for v in graph.outputs}
        graph.remove_ops([op for op in graph.ops if op.kind == "const" and id(op.results[0]) not in read])
        graph.attrs["tflite_version"] = self.model.version
        return graph

    def check_supported(self, nodes: list[TFLiteNode]) -> None:
        problems = []
        for node in nodes:
            if node.op_type == "CUSTOM":
                problems.append(f"{node.label}: custom op '{node.model_op.custom_code}' is not supported")
                continue
            row = CONVERTERS.get(node.op_type)
            if row is None:
                problems.append(f"{node.label}: not supported")
                continue
            problem = None
            for idx in node.inputs_idx + node.outputs_idx:
                if idx >= 0:
                    problem = problem or _tensor_problem(self.model.tensors[idx])
            if problem is None and "fused_activation_function" in node.options:
                code = node.options["fused_activation_function"]
                if ACTIVATIONS.get(code, "?") not in _FUSED:
                    problem = f"fused activation {ACTIVATIONS.get(code, code)} is not supported"
            if problem is None:
                problem = run_check(row.check, node)
            if problem:
                problems.append(f"{node.label}: {problem}")
        if problems:
            raise unsupported_error("TFLite operator", problems, self.path,
                                    hint=f"{DOCS} lists the {len(CONVERTERS.names())} supported builtin ops")

    def fuse_dilated_convolutions(self, nodes: list[TFLiteNode]) -> None:
        """SPACE_TO_BATCH_ND -> (DEPTHWISE_)CONV_2D (VALID) -> BATCH_TO_SPACE_ND: one dilated conv."""
        readers: dict[int, list[TFLiteNode]] = {}
        for node in nodes:
            for idx in node.inputs_idx:
                readers.setdefault(idx, []).append(node)
        problems = []
        for stb in nodes:
            if stb.op_type != "SPACE_TO_BATCH_ND":
                continue
            conv = _only_reader(readers, stb.outputs_idx[0])
            bts = _only_reader(readers, conv.outputs_idx[0]) if conv is not None else None
            ok = (conv is not None and conv.op_type in ("CONV_2D", "DEPTHWISE_CONV_2D") and bts is not None
                  and bts.op_type == "BATCH_TO_SPACE_ND" and conv.options["padding"] == 1
                  and conv.options["stride_h"] == 1 and conv.options["stride_w"] == 1
                  and conv.options["dilation_h_factor"] == 1 and conv.options["dilation_w_factor"] == 1)
            if ok:
                try:
                    block = stb.const_ints(1, "block_shape")
                    pads = np.asarray(stb.const_input(2, "paddings")).reshape(2, 2)
                    crops = np.asarray(bts.const_input(2, "crops")).reshape(2, 2)
                    ok = tuple(bts.const_ints(1, "block_shape")) == tuple(block) and len(block) == 2
                except TidlcError:
                    ok = False
            if not ok:
                problems.append(f"{stb.label}: only supported as part of a dilated convolution "
                                "(SPACE_TO_BATCH_ND -> CONV_2D -> BATCH_TO_SPACE_ND)")
                continue
            net = pads - crops  # cropping the output = padding the input less
            if (net < 0).any():
                problems.append(f"{stb.label}: crops larger than the paddings are not supported")
                continue
            stb.extra["skip"] = bts.extra["skip"] = True
            conv.extra.update(dilation=(block[0], block[1]), pads=(int(net[0, 0]), int(net[1, 0]),
                                                                   int(net[0, 1]), int(net[1, 1])))
            conv.inputs_idx = [stb.inputs_idx[0]] + conv.inputs_idx[1:]  # reads what STB read,
            conv.outputs_idx = list(bts.outputs_idx)  # writes what BTS wrote
        if problems:
            raise TidlcError(f"{len(problems)} unsupported TFLite operator{'s' if len(problems) > 1 else ''}",
                             self.path, problems=problems)

    def add_inputs(self) -> None:
        shapes = dict(getattr(self.options, "input_shapes", None) or {})
        for idx in self.model.inputs:
            t = self.model.tensors[idx]
            name = t.name or f"input{idx}"
            shape = t.shape
            if name in shapes:
                given = tuple(shapes[name])
                if len(given) != len(shape):
                    raise TidlcError(f"--input-shape {name}: rank {len(given)} but the model declares "
                                     f"{shape}", self.path, hint="give one value per dimension")
                shape = given
            layout = "NHWC" if len(shape) == 4 else None
            value = self.builder.input(name, TensorType(shape, t.dtype, layout, quant_info(t)),
                                       loc=Loc(name, self.path))
            self.values[idx] = value

    # --- tensors ----------------------------------------------------------------------
    def buffer_array(self, t: Tensor) -> np.ndarray | None:
        """A constant tensor's data in its stored type (a view of the file), else None."""
        if t.index not in self._arrays:
            data = self.model.buffer_data(t)
            arr = None
            if data is not None:
                dtype = np.dtype(numpy_dtype(t.dtype)).newbyteorder("<")
                if len(data) != int(np.prod(t.shape, dtype=np.int64)) * dtype.itemsize:
                    raise TidlcError(f"tensor '{t.name}': {len(data)} bytes for shape {t.shape} of "
                                     f"{t.type_name}", self.path)
                arr = np.frombuffer(data, dtype=dtype).reshape(t.shape)
            self._arrays[t.index] = arr
        return self._arrays[t.index]

    def value(self, idx: int, node: TFLiteNode | None) -> Value:
        value = self.values.get(idx)
        if value is not None:
            return value
        t = self.model.tensors[idx]
        data = self.buffer_array(t)
        if data is None:
            raise TidlcError(f"tensor '{t.name}' (#{idx}) is read before anything produces it",
                             node.loc if node is not None else self.path)
        value = self.values[idx] = self.new_const(data, t.name, Loc(t.name, self.path), quant=quant_info(t))
        return value

    def float_view(self, idx: int, node: TFLiteNode) -> Value:
        view = self.views.get(idx)
        if view is not None:
            return view
        value = self.value(idx, node)
        q = value.type.quant
        if q is not None and value.dtype in QUANT_DTYPES:
            view = self.emit("dequantize", [value], quant_attrs(q), node.name, node.loc)
        elif value.dtype == "f16":
            view = self.emit("cast", [value], {"dtype": "f32"}, node.name, node.loc)
        else:
            view = value
        self.views[idx] = view
        return view

    def bind(self, idx: int, value: Value, node: TFLiteNode) -> None:
        t = self.model.tensors[idx]
        q = quant_info(t)
        if q is not None and value.dtype in ("f32", "f16", "f64"):
            value = self.emit("quantize", [value], {**quant_attrs(q), "dtype": t.dtype, "round": "half_away"},
                              node.name, node.loc)
        elif t.dtype and value.dtype != t.dtype and t.dtype not in ("f16",):
            value = self.emit("cast", [value], {"dtype": t.dtype}, node.name, node.loc)
        elif q is not None and value.type.quant is None:
            value.type = value.type.with_quant(q)  # integers moved unchanged keep their scales
        if value.name and value.name != t.name:
            value = self.emit("identity", [value], {}, node.name, node.loc)
            if q is not None:
                value.type = value.type.with_quant(q)
        value.name = t.name
        self.values[idx] = value
        self.views.pop(idx, None)


def _only_reader(readers: dict, idx: int) -> TFLiteNode | None:
    found = readers.get(idx, [])
    return found[0] if len(found) == 1 else None


def _tensor_problem(t: Tensor) -> str | None:
    if t.dtype is None:
        return f"tensor '{t.name}' has element type {t.type_name}, which tidlc does not support"
    if t.quant is not None and t.quant.zero_point.size > 1 and np.any(t.quant.zero_point != t.quant.zero_point[0]):
        return f"tensor '{t.name}' has per-channel zero points (tidlc keeps one zero point per tensor)"
    return None


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0] or "main"


def read_tflite(path: str) -> Model:
    if not os.path.exists(path):
        raise TidlcError("no such file", path)
    if os.path.isdir(path):
        raise TidlcError("is a directory, expected a .tflite file", path)
    try:
        with open(path, "rb") as fh:
            buf = fh.read()
    except OSError as exc:
        raise TidlcError(f"cannot read: {exc.strerror}", path) from None
    return parse_tflite(buf, path)


def parse_tflite(buf, path: str = "") -> Model:
    if not is_tflite(buf[:8]):
        raise TidlcError("not a TFLite model (no 'TFL3' file identifier)", path,
                         hint="convert with tf.lite.TFLiteConverter; tidlc reads flatbuffer .tflite files")
    try:
        return read_model(buf)
    except (ValueError, IndexError) as exc:  # FlatBufferError is a ValueError
        raise TidlcError(f"corrupt TFLite model ({exc})", path) from None


def import_model(model: Model, options: Any = None, path: str = "") -> Graph:
    return TFLiteImporter(model, options, path).run()


def load_tflite(path: str, options: Any = None) -> Graph:
    """The frontend entry point: read ``path`` and convert it to IR."""
    return import_model(read_tflite(path), options, path)


def supported_ops() -> list[str]:
    return CONVERTERS.names()


__all__ = ["TFLiteImporter", "import_model", "load_tflite", "parse_tflite", "quant_info", "read_tflite",
           "supported_ops"]
