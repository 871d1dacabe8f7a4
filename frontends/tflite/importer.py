"""TFLite (``.tflite``) -> tidlc IR, including pre-quantized int8 models.

``load_tflite(path, options)`` reads the flatbuffer with tidlc's own reader
(``flatbuf.py``, ``schema.py``), converts the main subgraph, and:

* **checks every operator before converting any**: custom ops (with their
  custom code and operator index), builtin ops without a converter, unsupported
  options, element types and per-channel zero points are reported in one error;
* an operator without a converter (a builtin tidlc does not lower, a custom op)
  becomes one opaque ``host`` op run by the TFLite interpreter
  (docs/host-ops.md): its payload is a one-operator .tflite (constant and state
  tensors inside, control-flow subgraphs copied), probed at import, so an op no
  installed interpreter can run (a custom op without a kernel) is an import
  error. ``--no-host``: every such operator is listed in the error instead;
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

from typing import Any

import attrs
import numpy as np

from tidlc import limits
from tidlc.diagnostics import Loc, TidlcError
from tidlc.fileio import read_bytes
from tidlc.frontend import FoldingImporter, NodeContext
from tidlc.frontend_nhwc import permute_weight
from tidlc.ir.builder import Builder
from tidlc.ir.core import Graph, Value
from tidlc.ir.ops.host import encode_payload, type_text
from tidlc.ir.ops.quant import QUANT_DTYPES
from tidlc.ir.types import QuantInfo, TensorType, numpy_dtype

from . import convert  # noqa: F401  (registers the converters)
from .flatbuf import FlatBufferError
from .registry import CONVERTERS
from .schema import ACTIVATIONS, Model, Operator, Tensor, converted_custom, is_tflite, read_model
from .sparsity import densify_tensor, tensor_sparsity

DOCS = "docs/frontends/tflite.md"
_FUSED = {"NONE": ("none", ()), "RELU": ("relu", ()), "RELU6": ("relu6", ()),
          "RELU_N1_TO_1": ("clip", (-1.0, 1.0)), "TANH": ("tanh", ())}


def quant_info(t: Tensor, path: str = "") -> QuantInfo | None:
    """A quantized integer tensor's QuantInfo (scale = 1 / TFLite's scale), else None."""
    if t.quant is None or t.dtype is None or t.dtype[0] not in "iu":
        return None
    problem = _quant_problem(t)
    if problem:
        raise TidlcError(f"tensor #{t.index} '{t.name}': {problem}", Loc(t.name, path), code="model",
                         hint="the model's quantization parameters are damaged; convert it again")
    scale = tuple(1.0 / float(s) for s in t.quant.scale)
    zero = int(t.quant.zero_point[0])
    bits = np.dtype(numpy_dtype(t.dtype)).itemsize * 8
    axis = t.quant.axis if len(scale) > 1 else None
    return QuantInfo(bits, t.dtype.startswith("i"), scale, zero, None, axis)


def _quant_problem(t: Tensor) -> str | None:
    """What is wrong with an integer tensor's scales, zero point or channel axis (None: nothing)."""
    q = t.quant
    bad = [float(s) for s in q.scale if not (np.isfinite(s) and s > 0)]
    if bad:
        return f"quantization scale {bad[0]} is not positive and finite"
    info = np.iinfo(numpy_dtype(t.dtype))
    zero = int(q.zero_point[0])
    if not info.min <= zero <= info.max:
        return f"zero point {zero} is outside the range of {t.type_name}"
    if q.scale.size > 1:
        if not 0 <= q.axis < len(t.shape):
            return f"quantized dimension {q.axis} is not an axis of shape {t.shape}"
        if t.shape[q.axis] != q.scale.size:
            return f"{q.scale.size} scales for {t.shape[q.axis]} channels along axis {q.axis}"
    return None


def quant_attrs(q: QuantInfo) -> dict:
    """The attributes of ``quantize``/``dequantize`` for a QuantInfo."""
    return {"scale": q.scale, "zero_point": q.zero_point, "axis": q.axis if q.axis is not None else 1}


class TFLiteNode(NodeContext):
    """One TFLite operator during conversion."""

    def __init__(self, importer: TFLiteImporter, op: Operator):
        self.importer = importer
        self.model_op = op
        self.index = op.index
        # a custom op tidlc converts (schema.converted_custom) goes by its custom code
        self.op_type = op.custom_code if op.op_type == "CUSTOM" and converted_custom(op.custom_code) else op.op_type
        self.options = op.options
        self.inputs_idx = op.inputs
        self.outputs_idx = op.outputs
        first = next((importer.model.tensors[i].name for i in op.outputs if i >= 0), "")
        self.name = first or f"op{op.index}"
        self.loc = Loc(self.name, importer.path)
        self.extra: dict[str, Any] = {}  # set by importer-level patterns (dilated convolutions)

    @property
    def label(self) -> str:
        kind = f"CUSTOM '{self.model_op.custom_code}'" if self.model_op.op_type == "CUSTOM" else self.op_type
        return f"operator #{self.index} '{self.name}' ({kind})"

    # --- inputs -------------------------------------------------------------------
    def has_input(self, i: int) -> bool:
        return i < len(self.inputs_idx) and self.inputs_idx[i] >= 0

    def tensor(self, i: int) -> Tensor:
        if not self.has_input(i):
            raise self.error(f"input {i} is required but missing")
        return self.importer.model.tensors[self.inputs_idx[i]]

    def has_output(self, i: int = 0) -> bool:
        return i < len(self.outputs_idx) and self.outputs_idx[i] >= 0

    def out_tensor(self, i: int = 0) -> Tensor:
        if not self.has_output(i):
            raise self.error(f"output {i} is required but missing")
        return self.importer.model.tensors[self.outputs_idx[i]]

    def weight_shape(self, i: int, rank: int, what: str = "filter") -> tuple[int, ...]:
        """The stored shape of constant input ``i``, which must have ``rank`` positive dims."""
        shape = self.tensor(i).shape
        if len(shape) != rank or any(d <= 0 for d in shape):
            raise self.error(f"the {what} ('{self.tensor(i).name}') has shape {shape}, expected {rank} "
                             "positive dimensions")
        return shape

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
        data = np.asarray(self.const_input(i, what))
        if data.dtype.kind not in "biu":
            raise self.error(f"{what or f'input {i}'} ('{self.tensor(i).name}') must be integers, not {data.dtype}")
        return tuple(int(v) for v in data.reshape(-1))

    def const_int(self, i: int, what: str) -> int:
        """A constant holding exactly one integer (an axis)."""
        values = self.const_ints(i, what)
        if len(values) != 1:
            raise self.error(f"{what} ('{self.tensor(i).name}') must be one integer, got {len(values)} values")
        return values[0]

    def weight(self, i: int, perm=None, shape=None) -> Value:
        """A constant weight in the IR's order; integer weights stay integer (+ ``dequantize``)."""
        t = self.tensor(i)
        q = self.importer.quant(t)
        raw = self.importer.buffer_array(t)
        if q is not None and raw is not None:
            data = raw if perm is None else np.transpose(raw, perm)
            data = np.asarray(data if shape is None else data.reshape(shape), order="C")
            if q.axis is not None and perm is not None:
                q = QuantInfo(q.bits, q.signed, q.scale, q.zero_point, None, list(perm).index(q.axis))
            c = self.importer.new_const(data, t.name, self.loc, quant=q)
            return self.op("dequantize", [c], **quant_attrs(q))
        value = self.input(i)
        if perm is None and shape is None:
            return value
        rank = self.need_rank(value, f"weight '{t.name}'")
        if perm is not None and rank != len(perm):
            raise self.error(f"weight '{t.name}' is {value.type}, expected rank {len(perm)}")
        return permute_weight(self, value, perm if perm is not None else range(rank), shape)

    def same_quant(self) -> bool:
        """Every (non-constant) input and the output share one integer quantization."""
        infos = [self.importer.quant(self.tensor(i)) for i in range(len(self.inputs_idx))
                 if self.has_input(i) and self.importer.buffer_array(self.tensor(i)) is None]
        out = self.importer.quant(self.out_tensor())
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


class _FoldingBuilder(Builder):
    """A Builder that checks the result size of every op on constants against the limits: the
    importer computes those results at once (a PAD of a constant by huge paddings, a broadcast of
    two long vectors), so their size must be known to fit before numpy allocates it."""

    def make(self, kind: str, operands, attrs=None, name: str = "", loc: Loc | None = None):
        op = super().make(kind, operands, attrs, name, loc)
        if operands and all(v.const_value() is not None for v in operands):
            for v in op.results:
                if v.type.shape is not None:
                    limits.check_shape(v.type.shape, numpy_dtype(v.type.dtype).itemsize,
                                       f"{kind} of constants", loc or Loc(name, self.file))
        return op


class TFLiteImporter(FoldingImporter):
    """Builds one IR graph from one decoded TFLite model."""

    table = CONVERTERS
    what = "TFLite operator"
    host_framework = "tflite"
    docs = DOCS
    listed = "supported ops"

    def __init__(self, model: Model, options: Any = None, path: str = ""):
        super().__init__(path, options, model.subgraph_name)
        self.builder = _FoldingBuilder(self.graph, file=path)
        self.model = model
        self.values: dict[int, Value] = {}
        self.views: dict[int, Value] = {}
        self._arrays: dict[int, np.ndarray | None] = {}
        self._const_bytes = 0  # of the constants read so far (a buffer may back many tensors)
        self._host_payloads: dict[int, bytes] = {}  # operator index -> its one-op model (host ops)
        self._variable_set: set[int] | None = None

    # --- the steps ----------------------------------------------------------------
    def run(self) -> Graph:
        if not self.model.outputs:
            raise TidlcError("the model's subgraph has no outputs", self.path, code="model")
        graph = super().run()
        graph.attrs["tflite_version"] = self.model.version
        return graph

    def nodes(self) -> list[TFLiteNode]:
        return [TFLiteNode(self, op) for op in self.model.operators]

    def check_all(self, nodes: list[TFLiteNode]) -> None:
        super().check_all(nodes)
        self.fuse_dilated_convolutions(nodes)

    def check_node(self, node: TFLiteNode) -> str | None:
        if node.op_type == "CUSTOM":
            return f"custom op '{node.model_op.custom_code}' is not supported"
        if CONVERTERS.lookup(node.op_type) is None:
            return "not supported"
        problem = None
        for idx in node.inputs_idx + node.outputs_idx:
            if idx >= 0:
                problem = problem or _tensor_problem(self.model.tensors[idx])
        if problem is None and "fused_activation_function" in node.options:
            code = node.options["fused_activation_function"]
            if ACTIVATIONS.get(code, "?") not in _FUSED:
                problem = f"fused activation {ACTIVATIONS.get(code, code)} is not supported"
        return problem or super().check_node(node)

    # --- host ops -------------------------------------------------------------------
    def can_host(self, node: TFLiteNode) -> bool:
        return node.op_type == "CUSTOM" or CONVERTERS.lookup(node.op_type) is None

    def host_problem(self, node: TFLiteNode) -> str | None:
        """Why ``node`` cannot be a host op: a tensor tidlc cannot hold, no TFLite runtime, or a
        runtime that cannot run it (a custom op without a registered kernel): probed once here,
        so the model fails at import, not when it runs."""
        from tidlc.hostrt import INSTALL_HINT, probe_tflite
        operands, _embedded = self._host_split(node)
        for idx in operands + [i for i in node.model_op.outputs if i >= 0]:
            problem = _tensor_problem(self.model.tensors[idx])
            if problem:
                return problem
        try:
            payload = self._host_payloads[node.index] = host_model(self.model, node.model_op, operands)
        except TidlcError as exc:
            return f"{exc.message} ({INSTALL_HINT})"
        why = probe_tflite(payload)
        if why is None:
            return None
        if node.op_type == "CUSTOM":
            return (f"custom op '{node.model_op.custom_code}' cannot run on the host: {why}; it needs a "
                    f"TFLite interpreter with a kernel for '{node.model_op.custom_code}' registered")
        if "no TFLite runtime" in why:
            return f"not supported, and no TFLite runtime is installed to run it on the host ({INSTALL_HINT})"
        return f"not supported, and the TFLite interpreter cannot run it on the host: {why}"

    def _host_split(self, node: TFLiteNode) -> tuple[list[int], list[int]]:
        """(tensors fed as operands, tensors embedded in the payload: constants and variables)."""
        operands, embedded = [], []
        for idx in node.model_op.inputs:
            if idx < 0:
                continue
            t = self.model.tensors[idx]
            if self.model.buffer_data(t) is not None or idx in self._variables():
                embedded.append(idx)
            elif idx not in operands:
                operands.append(idx)
        return operands, embedded

    def _variables(self) -> set[int]:
        """The indices of the variable tensors (LSTM/RNN states) of the main subgraph."""
        if self._variable_set is None:
            self._variable_set = variable_tensors(self.model)
        return self._variable_set

    def convert_host(self, node: TFLiteNode) -> None:
        """The operator as one ``host`` op run by the TFLite interpreter (see :func:`host_model`)."""
        operands_idx, _ = self._host_split(node)
        payload = self._host_payloads.pop(node.index, None)
        if payload is None:
            payload = host_model(self.model, node.model_op, operands_idx)
        outputs = [i for i in node.model_op.outputs if i >= 0]
        types = []
        for idx in outputs:
            t = self.model.tensors[idx]
            types.append(TensorType(_declared_shape(t), t.dtype))
        op_type = node.model_op.custom_code if node.op_type == "CUSTOM" else node.op_type
        attrs_ = {"framework": "tflite", "op_type": op_type, "payload": encode_payload(payload),
                  "results": [type_text(t) for t in types], **self.host_reason(node)}
        results = self.emit("host", [self.value(i, node) for i in operands_idx], attrs_, node.name, node.loc)
        results = results if isinstance(results, list) else [results]
        for idx, value in zip(outputs, results):
            self.bind(idx, value, node)

    def convert(self, node: TFLiteNode) -> None:
        if not node.extra.get("skip"):  # the SPACE_TO_BATCH_ND and BATCH_TO_SPACE_ND of a dilated conv
            super().convert(node)

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
            found = _dilated_pattern(stb, readers)
            if found is None:
                problems.append(f"{stb.label}: only supported as part of a dilated convolution "
                                "(SPACE_TO_BATCH_ND -> CONV_2D -> BATCH_TO_SPACE_ND)")
                continue
            conv, bts, block, net = found
            if (net < 0).any():  # cropping the output = padding the input less
                problems.append(f"{stb.label}: crops larger than the paddings are not supported")
                continue
            stb.extra["skip"] = bts.extra["skip"] = True
            conv.extra.update(dilation=(block[0], block[1]), pads=(int(net[0, 0]), int(net[1, 0]),
                                                                   int(net[0, 1]), int(net[1, 1])))
            conv.inputs_idx = [stb.inputs_idx[0]] + conv.inputs_idx[1:]  # reads what STB read,
            conv.outputs_idx = list(bts.outputs_idx)  # writes what BTS wrote
        if problems:
            raise TidlcError(f"{len(problems)} unsupported TFLite operator{'s' if len(problems) > 1 else ''}",
                             self.path, problems=problems, code="unsupported")

    def add_inputs(self, nodes: list[TFLiteNode]) -> None:
        for idx in self.model.inputs:
            t = self.model.tensors[idx]
            name = t.name or f"input{idx}"
            # (a dimension the converter left open, -1 in shape_signature, holds a placeholder 1 in
            # shape: Keras' MobileNetV3 with input_shape=(None, None, 3) is 1x1x1x3 there; the
            # batch keeps it, as TFLite's interpreter does by default)
            shape = _declared_shape(t, keep_batch=True)
            problem = _tensor_problem(t)
            if problem:
                raise TidlcError(f"graph input: {problem}", Loc(name, self.path), code="unsupported")
            shape = self.input_shape(name, shape, str(tuple("?" if d is None else d for d in shape)))
            layout = "NHWC" if len(shape) == 4 else None
            value = self.builder.input(name, TensorType(shape, t.dtype, layout, self.quant(t)),
                                       loc=Loc(name, self.path))
            self.values[idx] = value

    def add_outputs(self) -> None:
        for idx in self.model.outputs:
            t = self.model.tensors[idx]
            self.builder.output(self.value(idx, None), t.name or f"output{idx}")

    # --- tensors ----------------------------------------------------------------------
    def quant(self, t: Tensor) -> QuantInfo | None:
        return quant_info(t, self.path)

    def buffer_array(self, t: Tensor) -> np.ndarray | None:
        """A constant tensor's data in its stored type (a view of the file), else None."""
        if t.index not in self._arrays:
            data = self.model.buffer_data(t)
            sparse = None if data is None else tensor_sparsity(self.model, t.index, self.path)
            if sparse is not None:
                self._arrays[t.index] = densify_tensor(self.model, t, sparse, data, self.path)
                self._const_bytes += self._arrays[t.index].nbytes
                limits.check("total_bytes", self._const_bytes, "the model's constant tensors", Loc(t.name, self.path))
            else:
                self._arrays[t.index] = None if data is None else self._array(t, data)
        return self._arrays[t.index]

    def _array(self, t: Tensor, data: memoryview) -> np.ndarray:
        loc = Loc(t.name, self.path)
        problem = _tensor_problem(t)
        if problem:
            raise TidlcError(f"constant {problem}", loc, code="unsupported")
        if any(d < 0 for d in t.shape):
            raise TidlcError(f"constant tensor #{t.index} has unknown dimensions {t.shape}", loc, code="corrupt")
        dtype = np.dtype(numpy_dtype(t.dtype)).newbyteorder("<")
        count = int(np.prod(t.shape, dtype=np.int64))  # (shapes were checked against the limits)
        if len(data) != count * dtype.itemsize:
            raise TidlcError(f"tensor #{t.index}: {len(data)} bytes for shape {t.shape} of {t.type_name} "
                             f"({count * dtype.itemsize} bytes)", loc, code="corrupt")
        self._const_bytes += len(data)
        limits.check("total_bytes", self._const_bytes, "the model's constant tensors", loc)
        return np.frombuffer(data, dtype=dtype).reshape(t.shape)

    def value(self, idx: int, node: TFLiteNode | None) -> Value:
        value = self.values.get(idx)
        if value is not None:
            return value
        t = self.model.tensors[idx]
        data = self.buffer_array(t)
        if data is None:
            raise TidlcError(f"tensor '{t.name}' (#{idx}) is read before anything produces it",
                             node.loc if node is not None else Loc(t.name, self.path), code="model")
        value = self.values[idx] = self.new_const(data, t.name, Loc(t.name, self.path), quant=self.quant(t))
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
        q = self.quant(t)
        if q is not None and value.dtype in ("f32", "f16", "f64"):
            value = self.emit("quantize", [value], {**quant_attrs(q), "dtype": t.dtype, "round": "half_away"},
                              node.name, node.loc)
        elif t.dtype and value.dtype != t.dtype and t.dtype not in ("f16",):
            value = self.emit("cast", [value], {"dtype": t.dtype}, node.name, node.loc)
        elif q is not None and value.type.quant is None:
            value.type = value.type.with_quant(q)  # integers moved unchanged keep their scales
        named = self.named(value, t.name, node)
        if named is not value and q is not None:
            named.type = named.type.with_quant(q)
        self.values[idx] = named
        self.views.pop(idx, None)


def _only_reader(readers: dict, idx: int) -> TFLiteNode | None:
    found = readers.get(idx, [])
    return found[0] if len(found) == 1 else None


def _dilated_pattern(stb: TFLiteNode, readers: dict):
    """(conv, bts, block, pads - crops) when ``stb`` starts a dilated convolution, else None."""
    conv = _only_reader(readers, stb.outputs_idx[0]) if stb.has_output() and stb.has_input(0) else None
    if conv is None or conv.op_type not in ("CONV_2D", "DEPTHWISE_CONV_2D") or not conv.has_output():
        return None
    bts = _only_reader(readers, conv.outputs_idx[0])
    o = conv.options
    if (bts is None or bts.op_type != "BATCH_TO_SPACE_ND" or conv.inputs_idx[:1] != stb.outputs_idx[:1]
            or (o["padding"], o["stride_h"], o["stride_w"], o["dilation_h_factor"], o["dilation_w_factor"])
            != (1, 1, 1, 1, 1)):
        return None
    try:
        block = stb.const_ints(1, "block_shape")
        pads = np.array(stb.const_ints(2, "paddings"), np.int64)
        crops = np.array(bts.const_ints(2, "crops"), np.int64)
        if bts.const_ints(1, "block_shape") != block:
            return None
    except TidlcError:
        return None
    if len(block) != 2 or min(block) < 1 or pads.size != 4 or crops.size != 4:
        return None
    return conv, bts, block, (pads - crops).reshape(2, 2)


def _tensor_problem(t: Tensor) -> str | None:
    if t.dtype is None:
        return f"tensor '{t.name}' has element type {t.type_name}, which tidlc does not support"
    if t.quant is not None and t.quant.zero_point.size > 1 and np.any(t.quant.zero_point != t.quant.zero_point[0]):
        return f"tensor '{t.name}' has per-channel zero points (tidlc keeps one zero point per tensor)"
    return None


# ----------------------------------------------------------------------------- host ops
def _schema():
    from tidlc.hostrt import missing_runtime, tflite_schema
    schema = tflite_schema()
    if schema is None:
        raise missing_runtime("a TFLite op kept as a host op", "tflite")
    return schema


def variable_tensors(model: Model) -> set[int]:
    """The indices of the main subgraph's variable tensors (``is_variable``: LSTM/RNN states)."""
    try:
        schema = _schema()
    except TidlcError:
        return set()
    sg = schema.Model.GetRootAs(bytes(model.buf), 0).Subgraphs(0)
    return {i for i in range(sg.TensorsLength()) if sg.Tensors(i).IsVariable()}


def host_model(model: Model, op, operands: list[int]) -> bytes:
    """A .tflite holding just operator ``op`` of ``model``: its op code, options and custom
    options, its constant tensors (with their data) and variable tensors; the subgraph's inputs
    are the ``operands`` tensors in order, its outputs the operator's outputs. Written with the
    flatbuffer object API of the installed TFLite runtime (a TidlcError if there is none)."""
    schema = _schema()  # a TidlcError naming tidlc[host] without a TFLite runtime (which brings flatbuffers)
    try:
        import flatbuffers
    except ImportError:  # a runtime without it: not seen in practice, but name the fix
        raise TidlcError("writing a TFLite host op needs the flatbuffers package",
                         hint="pip install tidlc[host]", code="unsupported") from None
    root = schema.Model.GetRootAs(bytes(model.buf), 0)
    sg = root.Subgraphs(0)
    fb_op = sg.Operators(op.index)
    op_t = schema.OperatorT.InitFromObj(fb_op)
    code_t = schema.OperatorCodeT.InitFromObj(root.OperatorCodes(fb_op.OpcodeIndex()))
    tensors, buffers, remap = [], [schema.BufferT()], {}

    def add(idx: int) -> int:
        if idx < 0:
            return idx
        if idx not in remap:
            t = schema.TensorT.InitFromObj(sg.Tensors(idx))
            data = model.buffer_data(model.tensors[idx])
            t.buffer = 0
            if data is not None:
                buf = schema.BufferT()
                buf.data = np.frombuffer(bytes(data), np.uint8)
                t.buffer = len(buffers)
                buffers.append(buf)
            remap[idx] = len(tensors)
            tensors.append(t)
        return remap[idx]

    inputs = [add(i) for i in operands]
    op_t.opcodeIndex = 0
    op_t.inputs = [add(int(i)) for i in (op_t.inputs if op_t.inputs is not None else [])]
    op_t.outputs = [add(int(i)) for i in (op_t.outputs if op_t.outputs is not None else [])]
    if op_t.intermediates is not None:
        op_t.intermediates = [add(int(i)) for i in op_t.intermediates]
    sg_t = schema.SubGraphT()
    sg_t.tensors, sg_t.operators, sg_t.name = tensors, [op_t], "host"
    sg_t.inputs = inputs
    sg_t.outputs = [i for i in op_t.outputs if i >= 0]
    codes = [code_t]
    # control flow (WHILE, IF, CALL_ONCE) names the other subgraphs by index: they are copied
    # unchanged after the one-op main subgraph, keeping their indices, with the op codes and
    # buffers they use
    extra = [schema.SubGraphT.InitFromObj(root.Subgraphs(k)) for k in range(1, root.SubgraphsLength())]
    code_map: dict[int, int] = {}
    buffer_map: dict[int, int] = {0: 0}
    for sub in extra:
        for t in sub.tensors or []:
            if t.buffer not in buffer_map:
                start, size = model.buffers[t.buffer] if t.buffer < len(model.buffers) else (0, 0)
                buf = schema.BufferT()
                if size:
                    buf.data = np.frombuffer(bytes(memoryview(model.buf)[start:start + size]), np.uint8)
                buffer_map[t.buffer] = len(buffers)
                buffers.append(buf)
            t.buffer = buffer_map[t.buffer]
        for sub_op in sub.operators or []:
            if sub_op.opcodeIndex not in code_map:
                code_map[sub_op.opcodeIndex] = len(codes)
                codes.append(schema.OperatorCodeT.InitFromObj(root.OperatorCodes(sub_op.opcodeIndex)))
            sub_op.opcodeIndex = code_map[sub_op.opcodeIndex]
    model_t = schema.ModelT()
    model_t.version = 3
    model_t.operatorCodes = codes
    model_t.subgraphs = [sg_t] + extra
    model_t.buffers = buffers
    model_t.description = "tidlc host op"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_tflite(path: str) -> Model:
    return parse_tflite(read_bytes(path, "TFLite model"), path)


def parse_tflite(buf, path: str = "") -> Model:
    if not is_tflite(buf[:8]):
        raise TidlcError("not a TFLite model (no 'TFL3' file identifier)", path, code="format",
                         hint="convert with tf.lite.TFLiteConverter; tidlc reads flatbuffer .tflite files")
    try:
        return read_model(buf)
    except FlatBufferError as exc:
        raise TidlcError(f"corrupt TFLite model: {exc}", Loc(file=path, offset=exc.offset), code="corrupt",
                         hint="the file is truncated or damaged; convert the model again") from None
    except TidlcError as exc:  # the reader's limit errors know the byte, not the file
        if isinstance(exc.loc, Loc) and not exc.loc.file:
            exc.loc = attrs.evolve(exc.loc, file=path)
        raise


def import_model(model: Model, options: Any = None, path: str = "") -> Graph:
    return TFLiteImporter(model, options, path).run()


def load_tflite(path: str, options: Any = None) -> Graph:
    """The frontend entry point: read ``path`` and convert it to IR."""
    return import_model(read_tflite(path), options, path)


def supported_ops() -> list[str]:
    return CONVERTERS.names()


__all__ = ["TFLiteImporter", "import_model", "load_tflite", "parse_tflite", "quant_info", "read_tflite",
           "supported_ops"]


def _declared_shape(t: Tensor, keep_batch: bool = False) -> tuple:
    """A tensor's shape with the dimensions its ``shape_signature`` leaves open (-1) as None
    (``keep_batch``: but the first, which keeps the converter's placeholder)."""
    signature = t.signature or (None,) * len(t.shape)
    return tuple(None if s is not None and s < 0 and not (keep_batch and i == 0) else d
                 for i, (d, s) in enumerate(zip(t.shape, signature)))
