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
  imported as ops, not evaluated: the fold-constants pass folds them.

No ``onnx.checker`` or shape inference runs: both are slow on large models
and tidlc infers its own types.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from tidlc.diagnostics import TidlcError, warn
from tidlc.frontend import run_check, unsupported_error
from tidlc.ir.builder import Builder
from tidlc.ir.core import Graph, Value
from tidlc.ir.types import TensorType, dtype_of

# importing the tables registers the converters
from . import (  # noqa: F401
    convert_elementwise,
    convert_nn,
    convert_quant,
    convert_resize,
    convert_tensor,
)
from .context import Node, ir_dtype, tensor_to_array
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
    """``onnx.load`` with every failure turned into a one-line TidlcError."""
    if not os.path.exists(path):
        raise TidlcError("no such file", path)
    if os.path.isdir(path):
        raise TidlcError("is a directory, expected an .onnx file", path)
    import onnx
    from google.protobuf.message import DecodeError
    try:
        model = onnx.load(path, load_external_data=True)
    except DecodeError:
        raise TidlcError("not a valid ONNX model (truncated or corrupt protobuf)", path,
                         hint="re-export or re-download the model") from None
    except (FileNotFoundError, onnx.checker.ValidationError) as exc:
        raise TidlcError(f"cannot load external data: {_one_line(exc)}", path,
                         hint="keep the external data files next to the .onnx file") from None
    except OSError as exc:
        raise TidlcError(f"cannot read: {exc.strerror or _one_line(exc)}", path) from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001  (protobuf and onnx raise assorted types on garbage)
        raise TidlcError(f"not a valid ONNX model ({type(exc).__name__}: {_one_line(exc)})", path) from None
    return model


def model_opset(model, path: str) -> int:
    versions = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    if not model.HasField("graph") or not model.opset_import:
        raise TidlcError("not an ONNX model (no graph or no opset_import; truncated or corrupt file?)", path)
    if not versions:
        raise TidlcError("the model imports no opset of the default ONNX domain", path)
    return max(versions)


def check_structure(graph_proto, path: str) -> list:
    """Cheap structural checks; returns the nodes in a topological order.

    Every node input must be a graph input, an initializer or the output of
    some node; outputs must be unique. Nodes out of order are sorted (stable).
    """
    defined = {i.name for i in graph_proto.input} | {i.name for i in graph_proto.initializer}
    defined |= {i.name for i in graph_proto.sparse_initializer}
    producers: dict[str, int] = {}
    problems = []
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
                label = node.name or next((o for o in node.output if o), f"#{k}")
                problems.append(f"node '{label}' ({node.op_type}) reads '{name}', which nothing produces")
    for out in graph_proto.output:
        if out.name not in defined and out.name not in producers:
            problems.append(f"graph output '{out.name}' is not produced by any node")
    if not graph_proto.output:
        problems.append("the graph has no outputs")
    if problems:
        raise TidlcError(f"malformed ONNX graph ({len(problems)} problem{'s' * (len(problems) > 1)})", path,
                         problems=problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else []))
    return _toposort(nodes, producers, defined, path)


def _toposort(nodes: list, producers: dict[str, int], defined: set, path: str) -> list:
    if all(producers.get(name, -1) < k for k, node in enumerate(nodes) for name in node.input if name
           and name not in defined):
        return nodes
    done = [False] * len(nodes)
    order = []
    for start in range(len(nodes)):
        stack = [(start, False)]
        while stack:
            k, expanded = stack.pop()
            if done[k]:
                continue
            if expanded:
                done[k] = True
                order.append(nodes[k])
                continue
            stack.append((k, True))
            for name in nodes[k].input:
                dep = producers.get(name) if name and name not in defined else None
                if dep is not None and not done[dep]:
                    if any(s == dep and e for s, e in stack):
                        raise TidlcError("the ONNX graph has a cycle", path,
                                         hint=f"through node '{nodes[dep].name}'")
                    stack.append((dep, False))
    return order


# ----------------------------------------------------------------------------- importing
class OnnxImporter:
    """Builds one IR graph from one ONNX ModelProto (see the module docstring)."""

    def __init__(self, model, options: Any = None, path: str = ""):
        self.model = model
        self.path = path
        self.options = options
        self.opset = model_opset(model, path)
        graph_proto = model.graph
        self.graph_proto = graph_proto
        self.nodes_proto = check_structure(graph_proto, path)
        self.builder = Builder(Graph(name=graph_proto.name or _stem(path)), file=path)
        self.values: dict[str, Value] = {}
        self.initializers = {t.name: t for t in graph_proto.initializer}
        self.sparse_initializers = {t.values.name or "": t for t in graph_proto.sparse_initializer}
        self.used_names = {name for node in self.nodes_proto for name in node.input if name}
        self.used_names.update(o.name for o in graph_proto.output)
        self._constant: dict[int, bool] = {}  # id(Value) -> independent of graph inputs

    # --- the driver ---------------------------------------------------------------
    def run(self) -> Graph:
        if self.opset < MIN_OPSET:
            raise TidlcError(f"ONNX opset {self.opset} is not supported (opsets {MIN_OPSET}-{MAX_OPSET})",
                             self.path, hint="upgrade the model: onnx.version_converter.convert_version(model, 13)")
        if self.opset > MAX_OPSET:
            warn(f"{self.path}: ONNX opset {self.opset} is newer than the tested range "
                 f"{MIN_OPSET}-{MAX_OPSET}; converting with opset-{MAX_OPSET} semantics", code="version")
        nodes = [Node(self, proto, self.opset) for proto in self.nodes_proto]
        self.check_supported(nodes)
        self.add_inputs()
        for node in nodes:
            converter = CONVERTERS.lookup(node.op_type, self.opset)
            try:
                converter.convert(node)
            except TidlcError:
                raise
            except (ValueError, IndexError) as exc:  # malformed attribute or tensor data
                raise node.error(f"cannot convert: {exc}") from None
        for out in self.graph_proto.output:
            self.builder.output(self.value(out.name, None), out.name)
        graph = self.builder.graph
        self._drop_unread_constants(graph)
        graph.attrs["onnx_opset"] = self.opset
        return graph

    @staticmethod
    def _drop_unread_constants(graph: Graph) -> None:
        """Constants only a converter looked at (Resize scales, a weight it transposed) are not kept."""
        read = {id(v) for op in graph.ops for v in op.operands} | {id(v) for v in graph.outputs}
        graph.remove_ops([op for op in graph.ops if op.kind == "const" and id(op.results[0]) not in read])

    def check_supported(self, nodes: list[Node]) -> None:
        """One TidlcError listing every node tidlc cannot convert, before converting any."""
        problems = []
        for node in nodes:
            if node.domain not in DEFAULT_DOMAINS:
                problems.append(f"{node.label}: ops of domain '{node.domain}' are not supported")
                continue
            row = CONVERTERS.lookup(node.op_type, self.opset)
            if row is None:
                first = CONVERTERS.first_opset(node.op_type)
                problems.append(f"{node.label}: not supported" if first is None else
                                f"{node.label}: supported from opset {first}, the model has opset {self.opset}")
                continue
            problem = run_check(row.check, node)
            if problem:
                problems.append(f"{node.label}: {problem}")
        if problems:
            raise unsupported_error("ONNX op", problems, self.path,
                                    hint=f"{DOCS} lists the {len(supported_ops())} supported op types "
                                         f"and their opsets ({MIN_OPSET}-{MAX_OPSET})")

    def add_inputs(self) -> None:
        shapes = dict(getattr(self.options, "input_shapes", None) or {})
        for info in self.graph_proto.input:
            if info.name in self.initializers or info.name in self.sparse_initializers:
                continue  # an overridable default: tidlc treats it as a constant
            where = f"input '{info.name}'"
            ttype = info.type.tensor_type if info.type.HasField("tensor_type") else None
            if ttype is None:
                raise TidlcError(f"{where} is not a tensor", self.path)
            dtype = ir_dtype(ttype.elem_type, where, self.path)
            shape = None
            if ttype.HasField("shape"):
                shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                              for d in ttype.shape.dim)
            if info.name in shapes:
                given = tuple(shapes[info.name])
                if shape is not None and len(shape) != len(given):
                    raise TidlcError(f"--input-shape {info.name}: rank {len(given)} but the model declares "
                                     f"{tuple('?' if d is None else d for d in shape)}", self.path,
                                     hint="give one value per dimension")
                shape = given
            layout = "NCHW" if shape is not None and len(shape) == 4 else None
            value = self.builder.input(info.name, TensorType(shape, dtype, layout))
            value.producer.loc = _loc(info.name, self.path)
            self.values[info.name] = value
            self._constant[id(value)] = False

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
            raise TidlcError(f"sparse initializer '{name}' is not supported", self.path,
                             hint="densify it (onnx.numpy_helper) before importing")
        tensor = self.initializers[name]
        ir_dtype(tensor.data_type, f"initializer '{name}'", self.path)
        try:
            data = tensor_to_array(tensor, os.path.dirname(self.path))
        except Exception as exc:  # noqa: BLE001  (size mismatch, missing external file, ...)
            raise TidlcError(f"initializer '{name}' is corrupt: {_one_line(exc)}", self.path) from None
        return self.new_const(data, name)

    def new_const(self, data: np.ndarray, name: str, tensor_name: bool = True) -> Value:
        """A ``const`` op named ``name``; its value carries ``name`` as tensor name if ``tensor_name``."""
        try:
            dtype_of(data)
        except ValueError as exc:
            raise TidlcError(f"constant '{name}': {exc}", self.path) from None
        value = self.builder.const(data, name, loc=_loc(name, self.path))
        value.name = name if tensor_name else ""
        self._constant[id(value)] = True
        return value

    def emit(self, kind: str, operands, attrs: dict, node: Node):
        op = self.builder.make(kind, operands, attrs, node.name, node.loc)
        self.builder.graph.ops.append(op)
        constant = op.opdef.foldable and all(self._constant.get(id(v), False) for v in operands)
        if kind == "shape" and operands[0].type.is_static:
            constant = True
        for r in op.results:
            self._constant[id(r)] = constant
        return op.results[0] if len(op.results) == 1 else list(op.results)

    def is_constant(self, value: Value) -> bool:
        return self._constant.get(id(value), False)

    def bind(self, name: str, value: Value, node: Node) -> None:
        if value.name and value.name != name:
            # the converter forwarded a value that has a tensor name already: keep both names
            value = self.emit("identity", [value], {}, node)
        value.name = name
        self.values[name] = value


def _loc(name: str, path: str):
    from tidlc.diagnostics import Loc
    return Loc(name, path)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0] or "main"


def import_model(model, options: Any = None, path: str = "") -> Graph:
    """Convert an in-memory ``onnx.ModelProto`` (``path`` locates messages and external data)."""
    return OnnxImporter(model, options, path).run()


def load_onnx(path: str, options: Any = None) -> Graph:
    """The frontend entry point: read ``path`` and convert it to IR."""
    return import_model(read_model(path), options, path)


__all__ = ["OnnxImporter", "import_model", "load_onnx", "read_model", "supported_ops"]
