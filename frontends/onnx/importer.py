"""ONNX -> tidlc IR.

``load_onnx(path, options)`` reads the model (external data from the model's
folder), checks its structure cheaply, checks *every* node against the
converter table (one error listing all unsupported ops), then converts node
by node:

* initializers become ``const`` ops named after the initializer, created on
  first use; graph inputs that are also initializers are constants;
* graph inputs become ``input`` ops (symbolic dims -> unknown, ``NCHW`` for
  rank 4; ``--input-shape`` values are applied here already);
* each node goes through the newest converter whose ``since`` is at most the
  model's opset; ops it creates are named after the node, located at
  ``loc(node name, model path)``, and the node's outputs keep the ONNX
  tensor names;
* constant subgraphs (``ConstantOfShape``, ``Shape -> Gather -> ...``) are
  imported as ops, not evaluated: the fold-constants pass folds them;
* a node without a converter (no row for its op type or opset, a foreign
  domain) becomes one opaque ``host`` op run by onnxruntime (docs/host-ops.md;
  ``--no-host``: it is listed in the error instead). Its payload is a one-node
  model; ``If``/``Loop``/``Scan`` bodies travel inside it and the outer-scope
  values they read become explicit inputs.

No ``onnx.checker`` or shape inference runs: both are slow on large models
and tidlc infers its own types.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from tidlc import limits
from tidlc.diagnostics import Loc, TidlcError, warn
from tidlc.frontend import Importer
from tidlc.ir.core import Graph, Value
from tidlc.ir.ops.host import encode_payload, type_text
from tidlc.ir.types import TensorType, numpy_dtype

# importing the tables registers the converters
from . import (  # noqa: F401
    convert_elementwise,
    convert_nn,
    convert_quant,
    convert_resize,
    convert_tensor,
)
from .context import ONNX_DTYPES, Node, ir_dtype, static_value, tensor_to_array
from .registry import CONVERTERS

MIN_OPSET, MAX_OPSET = 7, 21
DEFAULT_DOMAINS = ("", "ai.onnx")
DOCS = "docs/frontends/onnx.md"


def supported_ops() -> dict[str, tuple[int, ...]]:
    """ONNX op type -> opsets where its converter versions start."""
    return CONVERTERS.versions()


# ----------------------------------------------------------------------------- reading
def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def read_model(path: str):
    """The ModelProto of ``path``, every failure a one-line TidlcError. External data is not
    loaded here: :func:`~.context.read_external` reads it when an initializer is used."""
    import onnx

    from tidlc.fileio import read_bytes
    data = read_bytes(path, "file")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001  (protobuf raises assorted types on garbage)
        raise TidlcError(f"not a valid ONNX model ({type(exc).__name__}: {_one_line(exc)})", path,
                         hint="re-export or re-download the model; truncated or corrupt protobuf",
                         code="corrupt") from None
    check_text(model, path)
    return model


def check_text(model, path: str) -> None:
    """Every string field tidlc reads is text: protobuf hands a proto2 string that is not UTF-8
    over as bytes, which no name may be (a name is printed, compared and hashed as str).
    Metadata (producer, doc strings) is never read and not checked."""
    from google.protobuf.descriptor import FieldDescriptor
    stack = [(model.graph, "graph")] + [(o, f"opset_import[{k}]") for k, o in enumerate(model.opset_import)]
    while stack:
        message, where = stack.pop()
        for field, value in message.ListFields():
            if field.type == FieldDescriptor.TYPE_STRING and field.name != "doc_string":
                items = value if field.is_repeated else [value]
                if not all(isinstance(item, str) for item in items):
                    raise TidlcError(f"not a valid ONNX model: {where}.{field.name} is not UTF-8 text", path,
                                     code="corrupt")
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                if field.is_repeated:
                    stack.extend((item, f"{where}.{field.name}[{k}]") for k, item in enumerate(value))
                else:
                    stack.append((value, f"{where}.{field.name}"))


def model_opset(model, path: str) -> int:
    versions = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    if not model.HasField("graph") or not model.opset_import:
        raise TidlcError("not an ONNX model (no graph or no opset_import; truncated or corrupt file?)", path,
                         code="format")
    if not versions:
        raise TidlcError("the model imports no opset of the default ONNX domain", path, code="model")
    return max(versions)


UPGRADE_OPSET = 11  # what old models are converted to: an opset TIDL validates (tidl-facts: 9/11)


def upgrade_model(model, opset: int, path: str):
    """A model older than MIN_OPSET (PyTorch <= 0.3 and Caffe2 exports: opsets 1-6, with the
    ``broadcast``/``axis`` attributes of Add/Mul, BatchNormalization's ``spatial``/``is_test``)
    upgraded in memory to UPGRADE_OPSET by onnx's version converter, with a warning; the file is
    not touched. One the converter cannot upgrade is an error that says so."""
    from onnx import helper, version_converter
    listed = {i.name for i in model.graph.input}
    missing = [t for t in model.graph.initializer if t.name not in listed]
    if missing:  # the converter (IR 3 rules) wants every initializer declared as a graph input too
        model = model.__class__.FromString(model.SerializeToString())
        model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in missing)
    try:
        upgraded = version_converter.convert_version(model, UPGRADE_OPSET)
    except Exception as exc:  # noqa: BLE001  (the converter raises RuntimeError, ValueError, its own errors)
        raise TidlcError(f"ONNX opset {opset} is older than the opsets tidlc reads ({MIN_OPSET}-{MAX_OPSET}), "
                         f"and onnx's version converter cannot upgrade it: {_one_line(exc).split('failed: ')[-1]}", path,
                         hint=f"export the model again with opset {UPGRADE_OPSET} or newer", code="version") from None
    warn(f"{path}: ONNX opset {opset} is older than the opsets tidlc reads ({MIN_OPSET}-{MAX_OPSET}): upgraded to "
         f"opset {UPGRADE_OPSET} in memory with onnx.version_converter", code="version", loc=path,
         hint=f"export the model with opset {UPGRADE_OPSET} or newer to skip this; `tidlc compare` checks the result")
    return upgraded


def check_structure(graph_proto, path: str) -> list:
    """Cheap structural checks; returns the nodes in a topological order.

    Every node input must be a graph input, an initializer or the output of
    some node; outputs must be unique. Nodes out of order are sorted (stable).
    """
    limits.check("ops", len(graph_proto.node), "ONNX graph nodes", path)
    problems = _duplicates("graph input", [i.name for i in graph_proto.input])
    problems += _duplicates("initializer", [i.name for i in graph_proto.initializer])
    problems += _duplicates("graph output", [o.name for o in graph_proto.output])
    defined = {i.name for i in graph_proto.input} | {i.name for i in graph_proto.initializer}
    defined |= {i.values.name for i in graph_proto.sparse_initializer}
    producers: dict[str, int] = {}
    nodes = list(graph_proto.node)
    for k, node in enumerate(nodes):
        for out in node.output:
            if not out:
                continue
            if out in producers or out in defined:
                problems.append(f"tensor '{out}' is produced twice (node '{node.name or out}')")
            producers[out] = k
    for k, node in enumerate(nodes):
        for name in node.input:
            if name and name not in defined and name not in producers:
                label = _node_label(node, k)
                problems.append(f"node '{label}' ({node.op_type}) reads '{name}', which nothing produces")
    for out in graph_proto.output:
        if out.name not in defined and out.name not in producers:
            problems.append(f"graph output '{out.name}' is not produced by any node")
    if not graph_proto.output:
        problems.append("the graph has no outputs")
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise TidlcError(f"malformed ONNX graph ({len(problems)} problem{'s' * (len(problems) > 1)})", path,
                         problems=shown, code="model")
    return _toposort(nodes, producers, defined, path)


SOFTPLUS_THRESHOLD_MIN = 15.0  # softplus(x) - x = log1p(exp(-x)) < 3.1e-7 beyond it: below float32's step of x


def _export_guards(nodes: list, graph_proto) -> list:
    """``nodes`` with two ``Where`` guards PyTorch's exporters write read as the value they guard
    (the ``Where`` becomes an ``Identity`` of it; the test, read by nothing else, goes):

    - the thresholded softplus, ``Where(Greater(x, t), x, Softplus(x))`` (how the dynamo exporter
      writes ``F.softplus`` and so YOLOv4's Mish, with ``t = 20``): beyond ``t >= 15`` the two
      differ by less than float32 resolves. The ``Greater`` had no converter: a host op, and a
      subgraph boundary in the middle of a backbone;
    - the NaN-guarded attention softmax, ``Where(IsNaN(s), 0, s)`` for ``s = Softmax(x)`` (how
      ``scaled_dot_product_attention`` is exported: Hugging Face's DETR has one per attention
      layer): a softmax is NaN only along a row that is all -inf (a fully masked query) or holds
      a NaN; the accelerator's fixed-point tensors have neither, and ``IsNaN`` had no converter.
    """
    from onnx import helper
    producers = {out: node for node in nodes for out in node.output}
    uses: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    for out in graph_proto.output:
        uses[out.name] = uses.get(out.name, 0) + 1
    consts = {t.name: t for t in graph_proto.initializer}
    consts.update({n.output[0]: n.attribute[0].t for n in nodes if n.op_type == "Constant" and n.domain in ("", "ai.onnx")
                   and len(n.attribute) == 1 and n.attribute[0].name == "value"})

    def softplus_guard(cond: str, a: str, b: str) -> bool:
        greater, soft = producers.get(cond), producers.get(b)
        if not (greater is not None and greater.op_type == "Greater" and soft is not None
                and soft.op_type == "Softplus" and list(greater.input[:1]) == [a] and list(soft.input) == [a]
                and greater.input[1] in consts):
            return False
        t = tensor_to_array(consts[greater.input[1]], "softplus threshold", None)
        return t.size == 1 and t.dtype.kind == "f" and float(t.reshape(())) >= SOFTPLUS_THRESHOLD_MIN

    def nan_guard(cond: str, b: str) -> bool:
        isnan, soft = producers.get(cond), producers.get(b)
        return isnan is not None and isnan.op_type == "IsNaN" and list(isnan.input) == [b] \
            and soft is not None and soft.op_type == "Softmax" and soft.domain in ("", "ai.onnx")

    dropped: set[int] = set()
    out = []
    for node in nodes:
        if node.op_type == "Where" and node.domain in ("", "ai.onnx") and len(node.input) == 3:
            cond, a, b = node.input
            if uses.get(cond) == 1 and (softplus_guard(cond, a, b) or nan_guard(cond, b)):
                dropped.add(id(producers[cond]))
                node = helper.make_node("Identity", [b], list(node.output), name=node.name)
        out.append(node)
    return [n for n in out if id(n) not in dropped]


def _duplicates(what: str, names: list[str]) -> list[str]:
    seen: set[str] = set()
    twice = [n for n in names if n in seen or seen.add(n)]
    return [f"{what} '{n}' is declared twice" for n in dict.fromkeys(twice)]


def _toposort(nodes: list, producers: dict[str, int], defined: set, path: str) -> list:
    """The nodes in a topological order (file order when it is one); a cycle is an error.
    Iterative depth-first search: no recursion, each node and edge visited once."""
    def deps(k: int) -> list[int]:
        return [producers[name] for name in nodes[k].input if name and name not in defined and name in producers]

    if all(dep < k for k in range(len(nodes)) for dep in deps(k)):
        return nodes
    state = [0] * len(nodes)  # 0: not seen, 1: on the current path, 2: placed
    order = []
    for start in range(len(nodes)):
        if state[start]:
            continue
        state[start] = 1
        stack = [(start, iter(deps(start)))]
        while stack:
            k, pending = stack[-1]
            for dep in pending:
                if state[dep] == 1:
                    raise TidlcError("the ONNX graph has a cycle", Loc(_node_label(nodes[dep], dep), path),
                                     hint="every node must read tensors produced before it", code="model")
                if state[dep] == 0:
                    state[dep] = 1
                    stack.append((dep, iter(deps(dep))))
                    break
            else:
                stack.pop()
                state[k] = 2
                order.append(nodes[k])
    return order


def _node_label(node, k: int) -> str:
    return node.name or next((o for o in node.output if o), f"node #{k}")


# ----------------------------------------------------------------------------- importing
class OnnxImporter(Importer):
    """Builds one IR graph from one ONNX ModelProto (see the module docstring)."""

    table = CONVERTERS
    what = "ONNX op"
    host_framework = "onnx"
    docs = DOCS
    listed = f"supported op types and their opsets ({MIN_OPSET}-{MAX_OPSET})"

    def __init__(self, model, options: Any = None, path: str = ""):
        self.upgraded_from = None  # the file's opset when it was older than MIN_OPSET
        opset = model_opset(model, path)
        if opset < MIN_OPSET:
            model, self.upgraded_from = upgrade_model(model, opset, path), opset
        graph_proto = model.graph
        super().__init__(path, options, graph_proto.name, version=model_opset(model, path))
        self.model = model
        self.base_dir = os.path.dirname(path)  # external data files lie beside the model
        self.opset = self.version
        self.graph_proto = graph_proto
        self.nodes_proto = _export_guards(check_structure(graph_proto, path), graph_proto)
        self.values: dict[str, Value] = {}
        self.initializers = {t.name: t for t in graph_proto.initializer}
        self.sparse_initializers = {t.values.name or "": t for t in graph_proto.sparse_initializer}
        self.used_names = {name for node in self.nodes_proto for name in node.input if name}
        self.used_names.update(o.name for o in graph_proto.output)
        self._constant: dict[int, bool] = {}  # id(Value) -> independent of graph inputs

    # --- the steps ----------------------------------------------------------------------
    def run(self) -> Graph:
        if self.opset > MAX_OPSET:
            warn(f"{self.path}: ONNX opset {self.opset} is newer than the tested range "
                 f"{MIN_OPSET}-{MAX_OPSET}; converting with opset-{MAX_OPSET} semantics", code="version")
        graph = super().run()
        graph.attrs["onnx_opset"] = self.opset
        return graph

    def nodes(self) -> list[Node]:
        return [Node(self, proto, self.opset) for proto in self.nodes_proto]

    def can_host(self, node: Node) -> bool:
        return node.domain not in DEFAULT_DOMAINS or CONVERTERS.lookup(node.op_type, self.opset) is None

    def convert_host(self, node: Node) -> None:
        """The node as one ``host`` op run by onnxruntime (see :func:`host_payload`)."""
        names = host_inputs(node.proto)
        operands = [self.value(name, node) for name in names]
        payload, types = host_payload(self, node, names, operands)
        attrs = {"framework": "onnx", "op_type": node.op_type, "payload": encode_payload(payload),
                 "results": [type_text(t) for t in types], **self.host_reason(node)}
        results = self.emit("host", operands, attrs, node.name, node.loc)
        results = results if isinstance(results, list) else [results]
        results = self._folded_host(results) or results
        outputs = [name for name in node.output_names if name]
        for name, value in zip(outputs, results):
            self.bind(name, value, node)

    def _folded_host(self, results: list[Value]) -> list[Value] | None:
        """Constants for a host op of constants, evaluated now by onnx's reference evaluator (as
        fold-constants would later): what follows it then folds at import too and knows its shapes.
        RT-DETR builds its 2-D sine position embedding from the feature map's shape (``Range``,
        ``Cast``, ``Expand``, ``MatMul``, ``Sin``, ``Cos``): the ``Sin`` could not be typed (its
        input's shape unknown until the ``Range`` ran), and the import stopped there."""
        from tidlc.hostrt import foldable_host_op

        from .context import static_results
        op = results[0].producer
        data = static_results(op) if foldable_host_op(op) else None
        if data is None:
            return None
        self.graph.ops.remove(op)
        return [self.new_const(np.asarray(d), op.name, op.loc) for d in data]

    def check_node(self, node: Node) -> str | None:
        if node.domain not in DEFAULT_DOMAINS:
            return f"ops of domain '{node.domain}' are not supported"
        if CONVERTERS.lookup(node.op_type, self.opset) is None:
            first = CONVERTERS.first_version(node.op_type)
            if first is not None:
                return f"supported from opset {first}, the model has opset {self.opset}"
        return super().check_node(node)

    def add_inputs(self, nodes: list[Node]) -> None:
        for info in self.graph_proto.input:
            if info.name in self.initializers or info.name in self.sparse_initializers:
                continue  # an overridable default: tidlc treats it as a constant
            where = f"input '{info.name}'"
            ttype = info.type.tensor_type if info.type.HasField("tensor_type") else None
            if ttype is None:
                raise TidlcError(f"{where} is not a tensor", _loc(info.name, self.path), code="unsupported")
            dtype = ir_dtype(ttype.elem_type, where, self.path)
            shape = None
            if ttype.HasField("shape"):
                shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                              for d in ttype.shape.dim)
            shown = None if shape is None else tuple('?' if d is None else d for d in shape)
            shape = self.input_shape(info.name, shape, str(shown))
            if shape is not None:
                limits.check_shape(shape, np.dtype(numpy_dtype(dtype)).itemsize, where, _loc(info.name, self.path))
            layout = "NCHW" if shape is not None and len(shape) == 4 else None
            value = self.builder.input(info.name, TensorType(shape, dtype, layout))
            value.producer.loc = _loc(info.name, self.path)
            self.values[info.name] = value
            self._constant[id(value)] = False

    def add_outputs(self) -> None:
        for out in self.graph_proto.output:
            self.builder.output(self.value(out.name, None), out.name)

    # --- values ---------------------------------------------------------------------
    def value(self, name: str, node: Node | None) -> Value:
        value = self.values.get(name)
        if value is not None:
            return value
        if name in self.initializers or name in self.sparse_initializers:
            value = self.values[name] = self._initializer(name)
            return value
        where = node.loc if node is not None else self.path
        raise TidlcError(f"tensor '{name}' is not defined", where)

    def _initializer(self, name: str) -> Value:
        if name in self.sparse_initializers:
            raise TidlcError(f"sparse initializer '{name}' is not supported", _loc(name, self.path),
                             hint="densify it (onnx.numpy_helper) before importing")
        data = tensor_to_array(self.initializers[name], f"initializer '{name}'", Loc(name, self.path), self.base_dir)
        return self.new_const(data, name)

    def new_const(self, data: np.ndarray, name: str, loc=None, layout=None, quant=None,
                  tensor_name: bool = True) -> Value:
        """A ``const`` op named ``name``, located at ``name``; its value carries ``name`` as tensor
        name if ``tensor_name``."""
        value = super().new_const(data, name, _loc(name, self.path), layout, quant)
        value.name = name if tensor_name else ""
        self._constant[id(value)] = True
        return value

    def emit(self, kind: str, operands, attrs: dict, name: str, loc):
        """Append the op and note whether its results are constant (fold-constants folds them later)."""
        result = super().emit(kind, operands, attrs, name, loc)
        constant = self.graph.ops[-1].opdef.foldable and all(self._constant.get(id(v), False) for v in operands)
        if kind == "shape" and operands[0].type.is_static:
            constant = True
        for r in (result if isinstance(result, list) else [result]):
            self._constant[id(r)] = constant
        return result

    def is_constant(self, value: Value) -> bool:
        return self._constant.get(id(value), False)

    def bind(self, name: str, value: Value, node: Node) -> None:
        self.values[name] = self.named(value, name, node)


# ----------------------------------------------------------------------------- host ops
def _subgraphs(node) -> list:
    from onnx import AttributeProto
    out = []
    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            out.append(attr.g)
        elif attr.type == AttributeProto.GRAPHS:
            out.extend(attr.graphs)
    return out


def _outer_refs(graph) -> list[str]:
    """The names a subgraph (and the subgraphs inside it) reads from an enclosing scope."""
    local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    local |= {t.values.name for t in graph.sparse_initializer}
    local |= {o for n in graph.node for o in n.output if o}
    refs: list[str] = []
    for n in graph.node:
        refs += [name for name in n.input if name and name not in local]
        for sub in _subgraphs(n):
            refs += [name for name in _outer_refs(sub) if name not in local]
    refs += [o.name for o in graph.output if o.name not in local]  # a branch returning an outer value
    return refs


def host_inputs(proto) -> list[str]:
    """The inputs of a host op's one-node model: the node's inputs (each once, in order), then the
    outer-scope values its subgraphs read (If/Loop/Scan bodies), which become explicit inputs."""
    names = [name for name in proto.input if name]
    for sub in _subgraphs(proto):
        names += _outer_refs(sub)
    return list(dict.fromkeys(names))


_IR_TO_ONNX = {v: k for k, v in ONNX_DTYPES.items()}


def _tensor_info(name: str, elem_type: int, shape):
    """A ValueInfoProto; ``shape`` None: rank unknown; None dims: unknown."""
    from onnx import helper
    dims = None if shape is None else [d if d is not None else None for d in shape]
    return helper.make_tensor_value_info(name, elem_type, dims)


def host_payload(importer: OnnxImporter, node: Node, names: list[str], operands: list[Value]):
    """``(serialized ModelProto, result types)`` of a host op.

    The model holds the node (attributes, subgraphs) with the original opset imports and local
    functions; its graph inputs are ``names`` (typed: the ONNX element type, the operand's rank)
    and its outputs the node's outputs. The result types come from ONNX shape inference (with
    data propagation) of the node on the operands' IR types, constant operands given as
    initializers; when inference cannot tell an output's type or rank, onnxruntime runs the node
    once on seeded inputs and the types are read off the results.
    """
    import onnx
    from onnx import helper, numpy_helper

    elem = []
    for name, value in zip(names, operands):
        init = importer.initializers.get(name)
        elem.append(init.data_type if init is not None else _IR_TO_ONNX[value.dtype])
    proto = onnx.NodeProto()
    proto.CopyFrom(node.proto)
    outputs = [o for o in proto.output if o]

    def model(inputs, initializers, outs):
        graph = helper.make_graph([proto], f"host_{node.op_type}", inputs, outs, initializer=initializers)
        m = helper.make_model(graph, opset_imports=list(importer.model.opset_import),
                              producer_name="tidlc-host")
        m.ir_version = importer.model.ir_version or m.ir_version
        m.functions.extend(importer.model.functions)
        return m

    # the payload: rank-only inputs (the runtime takes any shape), element-typed outputs; a
    # static 1-D integer operand (sizes, axes: its length is a rank) keeps its length, which
    # onnxruntime's Resize needs at load ("Number of elements of input 'sizes' (0)")
    payload_inputs = [_tensor_info(n, e, None if v.shape is None else
                                   list(v.shape) if _shape_vector(v) else [None] * len(v.shape))
                      for n, e, v in zip(names, elem, operands)]
    # inference: the operands' shapes, constants (and shape arithmetic of static shapes: a Resize
    # to sizes computed from the input's Shape, CrossViT's cubic one) as initializers
    inits, infer_inputs, feeds_spec = [], [], []
    for n, e, v in zip(names, elem, operands):
        data = static_value(v)
        if data is not None:
            arr = np.asarray(data).astype(onnx.helper.tensor_dtype_to_np_dtype(e))
            inits.append(numpy_helper.from_array(arr, n))
        else:
            infer_inputs.append(_tensor_info(n, e, v.shape))
            feeds_spec.append((n, e, v))
    untyped = [onnx.ValueInfoProto(name=o) for o in outputs]
    typing = model(infer_inputs, inits, untyped)
    types = _inferred_types(typing, outputs)
    # an unknown rank: one run tells it on static inputs; on inputs sized at run time (after a
    # NonZero: SuperPoint's keypoints by boolean indexing) no run can, and the element types
    # suffice (the host runs any shape)
    if types is None or (any(t.shape is None for t in types) and all(v.type.is_static for _, _, v in feeds_spec)):
        types = _run_types(importer, node, typing, feeds_spec, outputs)
    out_infos = [_tensor_info(o, _IR_TO_ONNX[t.dtype], None) for o, t in zip(outputs, types)]
    payload = model(payload_inputs, [], out_infos)
    return payload.SerializeToString(), types


def _shape_vector(v: Value) -> bool:
    return v.type.is_static and len(v.shape) == 1 and v.dtype in ("i64", "i32")


def _inferred_types(m, outputs: list[str]) -> list[TensorType] | None:
    """Result types from ONNX shape inference (a shape None where the rank is unknown); None when
    an output's element type is unknown."""
    import onnx
    try:
        inferred = onnx.shape_inference.infer_shapes(m, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001  (inference errors: let the runtime tell)
        return None
    infos = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    types = []
    for name in outputs:
        info = infos.get(name)
        if info is None or not info.type.HasField("tensor_type"):
            return None
        tt = info.type.tensor_type
        if tt.elem_type not in ONNX_DTYPES:
            return None
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                      for d in tt.shape.dim) if tt.HasField("shape") else None
        types.append(TensorType(shape, ONNX_DTYPES[tt.elem_type]))
    return types


def _run_types(importer: OnnxImporter, node: Node, m, feeds_spec, outputs: list[str]) -> list[TensorType]:
    """Result types read off one onnxruntime run of the node on seeded inputs (static shapes only)."""
    import onnx

    from tidlc.hostrt import onnx_session, run_session
    rng = np.random.default_rng(0)
    feeds = []
    for name, e, value in feeds_spec:
        if not value.type.is_static:
            raise node.error(f"cannot tell the type of its results (kept as a host op): input '{name}' "
                             f"has the dynamic type {value.type}", hint=_HOST_SHAPE_HINT, code="shape")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(e)
        data = rng.standard_normal(value.shape) if np.dtype(dtype).kind == "f" else np.zeros(value.shape)
        feeds.append(data.astype(dtype))
    try:
        session = onnx_session(m.SerializeToString(), f"ONNX node {node.label}", node.loc)
        results = run_session(session, feeds)
    except TidlcError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise node.error(f"cannot tell the type of its results (kept as a host op): onnxruntime: "
                         f"{_one_line(exc)}", code="unsupported") from None
    types = []
    for name, arr in zip(outputs, results):
        try:
            dtype = ir_dtype(_np_to_onnx(arr.dtype), f"output '{name}'", node.loc)
        except KeyError:
            raise node.error(f"output '{name}' has element type {arr.dtype}, which tidlc does not support",
                             code="unsupported") from None
        types.append(TensorType(arr.shape, dtype))
    return types


def _np_to_onnx(dtype) -> int:
    from onnx import helper
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


_HOST_SHAPE_HINT = "give the input shapes with --input-shape NAME=d0,d1,..., or pass --no-host to list the ops"


def _loc(name: str, path: str):
    from tidlc.diagnostics import Loc
    return Loc(name, path)


def import_model(model, options: Any = None, path: str = "") -> Graph:
    """Convert an in-memory ``onnx.ModelProto`` (``path`` locates messages and external data)."""
    return OnnxImporter(model, options, path).run()


def load_onnx(path: str, options: Any = None) -> Graph:
    """The frontend entry point: read ``path`` and convert it to IR."""
    return import_model(read_model(path), options, path)


__all__ = ["OnnxImporter", "import_model", "load_onnx", "read_model", "supported_ops"]
