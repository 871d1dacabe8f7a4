"""Frozen TensorFlow GraphDef (``.pb``) -> tidlc IR.

``load_pb(path, options)`` parses the file with tidlc's own minimal GraphDef
schema (``graphdef.py``; TensorFlow itself is never imported), then:

* **outputs** are the nodes nothing reads (``NoOp``, ``Const`` and
  ``Placeholder`` sinks aside), in file order, or the names given to
  :func:`import_graphdef`; only nodes they depend on (data edges; control
  edges ``^name`` are ignored) are imported;
* **every node is checked before any is converted**: one error lists all
  unsupported ops and unsupported attribute values, with node names;
* calls of the graph's function library (``StatefulPartitionedCall``: Keras 3's
  grouped convolutions) are inlined first (``functions.py``);
* ``Placeholder`` nodes become ``input`` ops; rank-4 ones are typed NHWC (or
  NCHW when the graph's ops say ``data_format = "NCHW"``). Unknown dims must
  be fixed with ``--input-shape NAME=...`` (a clear error otherwise);
* names may be given as TensorFlow spells tensors: ``--input-shape input:0=...``
  and an output ``y:0`` mean Placeholder ``input`` and node ``y`` (inputs and
  first outputs are named after their node; ``tidlc.names.resolve_tensor_name``
  matches ``x:0`` to ``x`` wherever a name is looked up);
* nodes are converted in topological order by the converter table
  (``convert.py``); an op whose operands are all constants is folded at once
  (``Shape``/``StridedSlice``/``Pack`` on static shapes, batch-norm factors);
* IR ops are named after their node and located at ``loc(node, file)``;
  values keep TF tensor names (``node`` or ``node:1``).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from tidlc import limits
from tidlc.diagnostics import Loc, TidlcError
from tidlc.frontend import FoldingImporter, NodeContext
from tidlc.ir.core import Graph, Value
from tidlc.ir.types import TensorType, dtype_of
from tidlc.names import nearest_names, resolve_mapping
from tidlc.shapes import batch_one, shape_hint, warn_batch_one

from . import convert  # noqa: F401  (registers the converters)
from .functions import has_calls, inline_calls
from .graphdef import decode_attr, numpy_type, parse_graphdef
from .registry import CONVERTERS

DOCS = "docs/frontends/tensorflow.md"
_REQUIRED = object()
IGNORED_SINKS = {"NoOp", "Const", "Placeholder", "PlaceholderWithDefault", "Assert", "VarHandleOp",
                 "SaveV2", "RestoreV2"}


def split_ref(ref: str) -> tuple[str, int]:
    """``"conv/BiasAdd:1"`` -> ``("conv/BiasAdd", 1)``; a bare name is output 0."""
    name, sep, index = ref.rpartition(":")
    if sep and index.isdigit():
        return name, int(index)
    return ref, 0


def tensor_name(node: str, index: int) -> str:
    return node if index == 0 else f"{node}:{index}"


class TFNode(NodeContext):
    """One NodeDef during conversion: decoded attributes, resolved inputs, output binding."""

    def __init__(self, importer: TFImporter, proto):
        self.importer = importer
        self.proto = proto
        self.name: str = proto.name
        self.op_type: str = proto.op
        self.input_refs = [ref for ref in proto.input if not ref.startswith("^")]
        self.loc = Loc(self.name, importer.path)
        self._attrs: dict[str, Any] = {}

    # --- attributes ---------------------------------------------------------------
    def has_attr(self, key: str) -> bool:
        return key in self.proto.attr

    def attr(self, key: str, default: Any = _REQUIRED) -> Any:
        if key not in self._attrs:
            if key not in self.proto.attr:
                if default is _REQUIRED:
                    raise self.error(f"missing required attribute '{key}'")
                return default
            self._attrs[key] = decode_attr(self.proto.attr[key], f"attribute '{key}'", self.loc)
        return self._attrs[key]

    def _typed(self, key: str, default: Any, ok, expected: str) -> Any:
        """The attribute if ``ok(value)`` (or it is the default), else an error naming ``expected``."""
        value = self.attr(key, default)
        if value is not default and not ok(value):
            raise self.error(f"attribute '{key}' must be {expected}, got {_brief(value)}")
        return value

    def attr_int(self, key: str, default: Any = _REQUIRED) -> int:
        """An integer (``i``) or DataType (``type``) attribute."""
        return self._typed(key, default, lambda v: type(v) is int, "an integer")

    def attr_float(self, key: str, default: Any = _REQUIRED) -> float:
        return float(self._typed(key, default, lambda v: type(v) in (int, float), "a number"))

    def attr_bool(self, key: str, default: Any = _REQUIRED) -> bool:
        return bool(self._typed(key, default, lambda v: type(v) in (bool, int), "a boolean"))

    def attr_str(self, key: str, default: Any = _REQUIRED) -> str:
        return self._typed(key, default, lambda v: type(v) is str, "a string")

    def attr_ints(self, key: str, default: Any = _REQUIRED) -> tuple[int, ...]:
        value = self._typed(key, default, lambda v: isinstance(v, list) and all(type(i) is int for i in v),
                            "a list of integers")
        return tuple(value) if value is not None else value

    def attr_shape(self, key: str, default: Any = _REQUIRED) -> tuple[int, ...] | None:
        """A ``shape`` attribute: a tuple (-1 for unknown dims) or None for an unknown rank."""
        return self._typed(key, default, lambda v: v is None or isinstance(v, tuple), "a shape")

    def data_format(self) -> str:
        fmt = self.attr_str("data_format", "NHWC")
        return "NHWC" if fmt in ("NHWC", "NWC", "NDHWC") else "NCHW"

    # --- inputs ---------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        return len(self.input_refs)

    def input(self, i: int) -> Value:
        if i >= len(self.input_refs):
            raise self.error(f"input {i} is required but the node has {len(self.input_refs)}")
        return self.importer.value(self.input_refs[i], self)

    data_input = input  # (the shared NHWC converters' name for the input they move)

    def inputs(self) -> list[Value]:
        return [self.importer.value(ref, self) for ref in self.input_refs]

    def const_input(self, i: int, what: str = "") -> np.ndarray:
        data = self.input(i).const_value()
        if data is None:
            raise self.error(f"{what or f'input {i}'} ('{self.input_refs[i]}') must be a constant",
                             hint="tidlc imports static graphs: freeze the model and fix the input "
                                  "shapes with --input-shape so that shape computations fold")
        return data

    def const_ints(self, i: int, what: str = "") -> tuple[int, ...]:
        """The values of an integer constant input (shapes, axes, paddings, sizes), flattened."""
        data = np.asarray(self.const_input(i, what))
        if data.dtype.kind not in "iub":
            raise self.error(f"{what or f'input {i}'} ('{self.input_refs[i]}') must be an integer constant, "
                             f"got {data.dtype}")
        return tuple(int(v) for v in data.reshape(-1).tolist())

    def const_int(self, i: int, what: str = "") -> int:
        """The one value of a scalar integer constant input (an axis)."""
        values = self.const_ints(i, what)
        if len(values) != 1:
            raise self.error(f"{what or f'input {i}'} ('{self.input_refs[i]}') must hold one value, "
                             f"got {len(values)}")
        return values[0]

    # --- outputs ---------------------------------------------------------------------
    def bind(self, *values: Value | None) -> None:
        for i, value in enumerate(values):
            if value is not None:
                self.importer.bind(tensor_name(self.name, i), value, self)


class TFImporter(FoldingImporter):
    """Builds one IR graph from one GraphDef (see the module docstring)."""

    table = CONVERTERS
    what = "TensorFlow op"
    docs = DOCS

    def unsupported(self, problems: list[str]) -> TidlcError:
        """The one error listing every unsupported node, with the way around it: a frozen GraphDef keeps
        no host ops (there is no TensorFlow runtime on the target), but the same model as TFLite or ONNX
        runs the ops tidlc does not lower on the host (docs/host-ops.md)."""
        error = super().unsupported(problems)
        error.hint += ("; or convert the model (tf.lite.TFLiteConverter, or tf2onnx), whose ops tidlc does not "
                       "lower run on the host (docs/host-ops.md)")
        return error

    def __init__(self, graphdef, options: Any = None, path: str = "", outputs: Sequence[str] | None = None):
        super().__init__(path, options)
        self.graphdef = graphdef
        self.values: dict[str, Value] = {}
        self.protos: dict[str, Any] = {}
        limits.check("ops", len(graphdef.node), "GraphDef nodes", path)
        # function calls (Keras 3's grouped convolutions) become their functions' bodies
        self.node_protos = inline_calls(graphdef, path) if has_calls(graphdef) else list(graphdef.node)
        limits.check("ops", len(self.node_protos), "GraphDef nodes (function calls inlined)", path)
        for proto in self.node_protos:
            if proto.name in self.protos:
                raise TidlcError(f"two nodes are named '{proto.name}'", Loc(proto.name, path), code="model")
            self.protos[proto.name] = proto
        # TensorFlow's tensor names work as well as node names: '--input-shape input:0=...' sets the
        # shape of Placeholder 'input'; outputs 'y:0' and 'y' are both node y's first output
        placeholders = [p.name for p in self.node_protos if p.op == "Placeholder"]
        self.input_shapes = resolve_mapping(self.input_shapes, placeholders, "input", "--input-shape")
        self.output_refs = [self._output_ref(ref) for ref in outputs] if outputs else self._sinks()
        if not self.output_refs:
            raise TidlcError("the graph has no outputs (every node's result is read by another node)", path,
                             code="model")

    # --- structure --------------------------------------------------------------------
    def _output_ref(self, ref: str) -> str:
        """An output given by name: ``node``, ``node:0`` or ``node:K``, as ``node`` / ``node:K``."""
        name, index = split_ref(ref)
        if name not in self.protos:
            near = nearest_names(name, list(self.protos))
            raise TidlcError(f"output '{ref}' names no node of the graph", self.path, code="option",
                             hint=f"did you mean '{near[0]}'?" if near else "outputs are node names, "
                                  "optionally with TensorFlow's :0")
        return tensor_name(name, index)

    def _sinks(self) -> list[str]:
        read = {split_ref(ref)[0] for proto in self.node_protos for ref in proto.input if not ref.startswith("^")}
        return [p.name for p in self.node_protos if p.name not in read and p.op not in IGNORED_SINKS]

    def nodes(self) -> list[TFNode]:
        """The nodes the outputs depend on, in a topological order (a cycle is an error)."""
        order, state = [], {}  # state: 1 on the stack, 2 done
        for ref in self.output_refs:
            name = split_ref(ref)[0]
            if name not in self.protos:
                raise TidlcError(f"output '{ref}' names no node of the graph", self.path)
            stack = [(name, False)]
            while stack:
                current, expanded = stack.pop()
                if expanded:
                    state[current] = 2
                    order.append(self.protos[current])
                    continue
                if state.get(current) == 2:
                    continue
                if state.get(current) == 1:
                    raise TidlcError("the graph has a cycle", Loc(current, self.path), code="model")
                state[current] = 1
                stack.append((current, True))
                for ref in self.protos[current].input:
                    if ref.startswith("^"):
                        continue
                    dep = split_ref(ref)[0]
                    if dep not in self.protos:
                        raise TidlcError(f"node '{current}' reads '{ref}', which no node produces",
                                         Loc(current, self.path), code="model")
                    if state.get(dep) != 2:
                        if state.get(dep) == 1:
                            raise TidlcError("the graph has a cycle", Loc(dep, self.path), code="model")
                        stack.append((dep, False))
        self.node_count = len(order)
        return [TFNode(self, proto) for proto in order]

    def run(self) -> Graph:
        graph = super().run()
        graph.attrs["tf_nodes"] = self.node_count
        return graph

    def add_inputs(self, nodes: list[TFNode]) -> None:
        formats = {node.attr_str("data_format") for node in nodes if node.has_attr("data_format")}
        layout4 = "NCHW" if formats == {"NCHW"} else "NHWC"
        for node in nodes:
            if node.op_type != "Placeholder":
                continue
            name = node.name
            itemtype = numpy_type(node.attr_int("dtype"), f"input '{name}'", node.loc)
            declared = node.attr_shape("shape", None)
            shape = self.input_shape(name, declared, _shape_text(declared))
            if (one := batch_one(shape)) is not None:  # a Keras None batch: TIDL runs one frame per inference
                shape = one
                warn_batch_one({name: shape})
            if shape is None or any(d < 0 for d in shape):
                hint = f"--input-shape {name}=1,224,224,3" if declared is None else shape_hint(
                    name, declared, "NHWC" if len(declared) == 4 and layout4 == "NHWC" else None)
                raise TidlcError(f"input '{name}' has shape {_shape_text(declared)}: its unknown dims must be "
                                 "given", node.loc, hint=hint)
            shape = tuple(shape)
            limits.check_shape(shape, np.dtype(itemtype).itemsize, f"input '{name}'", node.loc)
            layout = layout4 if len(shape) == 4 else None
            value = self.builder.input(name, TensorType(shape, dtype_of(np.dtype(itemtype)), layout), loc=node.loc)
            self.values[name] = value

    def add_outputs(self) -> None:
        for ref in self.output_refs:
            name, index = split_ref(ref)
            self.builder.output(self.value(ref, None), tensor_name(name, index))

    # --- values -----------------------------------------------------------------------
    def value(self, ref: str, node: TFNode | None) -> Value:
        name, index = split_ref(ref)
        key = tensor_name(name, index)
        value = self.values.get(key)
        if value is None:
            producer = self.protos.get(name)
            what = f"output {index} of '{name}' ({producer.op})" if producer is not None else f"'{ref}'"
            raise TidlcError(f"{what} is not supported (tidlc converts only its first output)"
                             if producer is not None and index > 0 else f"{what} has no value",
                             node.loc if node is not None else self.path)
        return value

    def bind(self, name: str, value: Value, node: TFNode) -> None:
        self.values[name] = self.named(value, name, node)


def _brief(value: Any) -> str:
    """A short one-line picture of an attribute value for messages."""
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} tensor of shape {value.shape}"
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _shape_text(shape) -> str:
    if shape is None:
        return "of unknown rank"
    return "(" + ", ".join("?" if d is None or d < 0 else str(d) for d in shape) + ")"


def read_pb(path: str):
    if os.path.isdir(path):
        raise TidlcError("is a directory; tidlc reads frozen GraphDef files", path,
                         hint="freeze a SavedModel first (docs/frontends/tensorflow.md shows how)", code="file")
    from tidlc.fileio import read_bytes
    data = read_bytes(path, "file")
    graph = parse_graphdef(data, path)
    if not len(graph.node):
        raise TidlcError("not a TensorFlow GraphDef (no nodes)", path, code="format")
    return graph


def import_graphdef(graphdef, options: Any = None, path: str = "",
                    outputs: Sequence[str] | None = None) -> Graph:
    """Convert a GraphDef message (tidlc's or TensorFlow's own class: only fields are read)."""
    return TFImporter(graphdef, options, path, outputs).run()


def load_pb(path: str, options: Any = None) -> Graph:
    """The frontend entry point: read ``path`` and convert it to IR."""
    return import_graphdef(read_pb(path), options, path)


def supported_ops() -> list[str]:
    return CONVERTERS.names()


__all__ = ["TFImporter", "import_graphdef", "load_pb", "read_pb", "supported_ops"]
