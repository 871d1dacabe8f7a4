"""Frontend descriptors, model loading (format detection by suffix and by sniffing), and the
skeleton every frontend is built from: :class:`ConverterTable`, :class:`NodeContext` and the
:class:`Importer` template (check all -> inputs -> convert -> outputs -> prune)."""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import attrs
import numpy as np

from tidlc.diagnostics import Loc, TidlcError
from tidlc.interp import evaluate_op
from tidlc.ir.builder import Builder, check_result_sizes, to_dtype
from tidlc.ir.core import Graph, Value
from tidlc.ir.types import dtype_of, numpy_dtype


@attrs.frozen
class Frontend:
    """How to recognise and load one model format.

    ``loader`` is ``"package.module:function"``; it is imported only when a
    model of this format is loaded. The function is called as
    ``function(path, options) -> Graph`` where ``options`` is a
    :class:`tidlc.config.CompileOptions`.
    """

    name: str
    suffixes: tuple[str, ...]
    loader: str
    sniff: Callable[[bytes, str], bool] | None = None
    description: str = ""
    plugin: str = "builtin"

    def load_function(self) -> Callable:
        module, _, func = self.loader.partition(":")
        return getattr(importlib.import_module(module), func)


def pick_frontend(frontends: dict[str, Frontend], path: str, forced: str | None = None) -> Frontend:
    """The frontend for ``path``: forced by name, else by suffix, else by sniffing the first bytes."""
    if forced:
        if forced not in frontends:
            raise TidlcError(f"unknown input format '{forced}'", hint=f"known: {', '.join(sorted(frontends))}",
                             code="option")
        return frontends[forced]
    from tidlc.fileio import open_regular
    if os.path.isdir(path) and any(os.path.isfile(os.path.join(path, n)) for n in ("net.bin", "model.tdp")):
        raise TidlcError("a compiled model's folder, where a source model is needed", path, code="file",
                         hint="compile, check, compare, eval, tune and sweep take the model file (they "
                              "quantize it themselves); run, perf, report and ir take a compiled folder")
    with open_regular(path, "model file") as fh:  # refuses FIFOs, devices and folders by name, never blocks
        try:
            head = fh.read(4096)
        except OSError as exc:
            raise TidlcError(f"cannot read: {exc.strerror}", path, code="file") from None
    lower = path.lower()
    by_suffix = [f for f in frontends.values() if any(lower.endswith(s) for s in f.suffixes)]
    if len(by_suffix) == 1:
        return by_suffix[0]
    candidates = by_suffix or list(frontends.values())
    sniffed = [f for f in candidates if f.sniff is not None and f.sniff(head, path)]
    if len(sniffed) >= 1:
        return sniffed[0]
    known = ", ".join(sorted(s for f in frontends.values() for s in f.suffixes))
    raise TidlcError("unrecognised model format" + (" (the file is empty)" if not head else ""), path,
                     hint=f"known suffixes: {known}; or pass --format NAME", code="format")


def load_model(frontends: dict[str, Frontend], path: str, options, forced: str | None = None,
               blame: Callable[[str], str | None] | None = None) -> Graph:
    """Import ``path`` with its frontend. ``blame(frontend name)`` names the third-party plugin that
    provides it: an exception from a plugin's loader is that plugin's error, not tidlc's."""
    frontend = pick_frontend(frontends, path, forced)
    who = blame(frontend.name) if blame else None
    try:
        graph = frontend.load_function()(path, options)
    except Exception as exc:
        if who is None or isinstance(exc, TidlcError):
            raise
        from tidlc.plugin_manager import plugin_failure
        raise plugin_failure(who, f"frontend '{frontend.name}'", exc) from exc
    graph.attrs.setdefault("source", os.path.basename(path))
    return graph


class NotLowered(str):
    """A converter check's problem that is a form tidlc does not lower (a 3-D convolution, cubic
    resizing), not a fault of the model: the framework's runtime can still run the node, so with
    host ops allowed it becomes a ``host`` op that keeps this text as its ``reason``. A plain
    ``str`` problem (a training-mode export, a malformed node) stays an error."""


class HostInstead(TidlcError):
    """A converter finds, from its inputs' values, that it cannot lower the node (a ScatterND
    whose indices are no slice). With host ops allowed the node becomes a ``host`` op, for
    ``reason``; otherwise this is the error."""

    needs_static_inputs = False

    def __init__(self, message: str, loc=None, hint: str = "", code: str = "model", reason: str = ""):
        super().__init__(message, loc, hint=hint, code=code)
        self.reason = reason or message


class RuntimeValue(HostInstead):
    """A converter needs an input's value at import (a Pad's pads, a Slice's ends) and the model
    computes it from the data (the detections an NMS keeps). With host ops allowed and every
    graph input static, the node becomes a ``host`` op instead; otherwise this is the error.
    ``subject`` names the input ("pads ('/Cast_6_output_0')")."""

    needs_static_inputs = True

    def __init__(self, message: str, loc=None, hint: str = "", code: str = "model", subject: str = ""):
        super().__init__(message, loc, hint=hint, code=code,
                         reason=f"{subject or 'an input'} is computed from the data: the host runs it")
        self.subject = subject


def not_lowered(text: str) -> NotLowered:
    return NotLowered(text)


def run_check(check: Callable | None, *args) -> str | None:
    """A converter row's pre-conversion check, ``check(*args)``: its problem text, or None (a
    raised TidlcError counts as one)."""
    if check is None:
        return None
    try:
        return check(*args) or None
    except TidlcError as exc:
        return exc.message


def unsupported_error(what: str, problems: list[str], path: str, hint: str) -> TidlcError:
    """The one error listing every unsupported node of a model (``"3 unsupported ONNX ops"``)."""
    n = len(problems)
    return TidlcError(f"{n} unsupported {what}{'s' if n > 1 else ''}", path, hint=hint, problems=problems,
                      code="unsupported")


# ----------------------------------------------------------------------------- the frontend skeleton
# The builtin frontends (ONNX, TensorFlow, TFLite, Caffe) are built from the pieces below, and a
# third-party frontend can be too (docs/plugins.md, "(b) A frontend"): a ConverterTable of one
# function per source op, a NodeContext subclass that is what those functions see of a node, and
# an Importer subclass whose run() is the template check all -> inputs -> convert -> outputs -> prune.

ConvertFn = Callable[..., None]
CheckFn = Callable[..., str | None]


@attrs.frozen
class Converter:
    """One row of a :class:`ConverterTable`: ``convert(node)`` for ``op_type`` from version ``since`` on."""

    op_type: str
    convert: ConvertFn
    check: CheckFn | None = None
    since: int = 1
    doc: str = ""


class ConverterTable:
    """Source op type -> converter rows, sorted by ``since``.

    ``@table.converter("Relu", "Relu6", check=fn)`` registers one function for several op types;
    ``since=N`` makes a row apply from version N of the format on (ONNX opsets: a model of
    opset M uses, per op, the newest row with ``since <= M``). Formats without versions leave
    ``since`` alone and look rows up without a version. ``check(node) -> problem or None`` runs
    on every node before anything is converted, so every problem of a model is reported at once.
    """

    def __init__(self, framework: str = "") -> None:
        self.framework = framework
        self._rows: dict[str, list[Converter]] = {}

    def register(self, op_type: str, since: int = 1, check: CheckFn | None = None):
        """Decorator: ``fn`` converts ``op_type`` from version ``since`` on; a second row for the
        same (op type, since) is an error."""
        def decorate(fn: ConvertFn) -> ConvertFn:
            rows = self._rows.setdefault(op_type, [])
            if any(row.since == since for row in rows):
                version = f" since version {since}" if since != 1 else ""
                raise ValueError(f"{self.framework} converter for {op_type}{version} is registered twice".lstrip())
            rows.append(Converter(op_type, fn, check, since, (fn.__doc__ or "").strip()))
            rows.sort(key=lambda row: row.since)
            return fn
        return decorate

    def converter(self, *op_types: str, since: int = 1, check: CheckFn | None = None):
        """Decorator: ``fn`` converts each of ``op_types`` (see :meth:`register`)."""
        def decorate(fn: ConvertFn) -> ConvertFn:
            for op_type in op_types:
                self.register(op_type, since, check)(fn)
            return fn
        return decorate

    def lookup(self, op_type: str, version: int | None = None) -> Converter | None:
        """The newest row of ``op_type`` usable at ``version`` (any version if None); None if there is none."""
        best = None
        for row in self._rows.get(op_type, ()):
            if version is None or row.since <= version:
                best = row
        return best

    def first_version(self, op_type: str) -> int | None:
        rows = self._rows.get(op_type)
        return rows[0].since if rows else None

    def versions(self) -> dict[str, tuple[int, ...]]:
        """op type -> the versions where its converter rows start (for docs and ``--help``)."""
        return {op: tuple(row.since for row in rows) for op, rows in sorted(self._rows.items())}

    def names(self) -> list[str]:
        return sorted(self._rows)

    def __contains__(self, op_type: str) -> bool:
        return op_type in self._rows

    def __len__(self) -> int:
        return len(self._rows)


class NodeContext:
    """What a converter sees of one source node: its name and location, errors at that location,
    and op emission. Subclasses add the format's attributes, inputs and :meth:`bind`, which maps
    the node's outputs to IR values. Every op a converter makes is named after the node and
    located at it, so later errors (a shape that does not fit, a failing pass) point at the node."""

    importer: Importer
    name: str
    op_type: str
    loc: Loc

    @property
    def label(self) -> str:
        """``'name' (OpType)``, how the error listing unsupported nodes names this one."""
        return f"'{self.name}' ({self.op_type})"

    @property
    def error_prefix(self) -> str:
        return self.op_type

    def error(self, message: str, hint: str = "", code: str = "model", at: Loc | None = None) -> TidlcError:
        """A TidlcError at this node (or at ``at``, e.g. one field of its parameters)."""
        where = attrs.evolve(at, name=self.name) if at is not None else self.loc
        return TidlcError(f"{self.error_prefix}: {message}", where, hint=hint, code=code)

    def host_instead(self, why: str) -> HostInstead:
        """What a converter raises when ``why`` (a form it does not lower) leaves this node to the
        host: a host op for that reason, or with host ops refused, the error."""
        err = self.error(f"not lowered: {why}", hint="the host runs it")
        return HostInstead(err.message, err.loc, hint=err.hint, reason=f"{why}: the host runs it")

    def op(self, kind: str, operands: Sequence[Value], suffix: str = "", **attrs_: Any):
        """Append an IR op named after this node (``node/suffix`` for helper ops); returns its
        result, a list if it has several."""
        name = f"{self.name}/{suffix}" if suffix else self.name
        return self.importer.emit(kind, operands, attrs_, name, self.loc)

    def const(self, data: Any, suffix: str = "") -> Value:
        """A new constant named ``<node>.<suffix>`` (the node's name without a suffix)."""
        return self.importer.new_const(np.asarray(data), f"{self.name}.{suffix}" if suffix else self.name, self.loc)

    def chain(self, kind: str, values: Sequence[Value]) -> Value:
        """``kind(kind(v0, v1), v2) ...``: a variadic op (Sum, AddN) as binary ops."""
        if not values:
            raise self.error("needs at least one input")
        total = values[0]
        for value in values[1:]:
            total = self.op(kind, [total, value])
        return total

    def static_shape(self, value: Value, what: str = "input") -> tuple[int, ...]:
        """The fully known shape of ``value``, else a TidlcError asking for --input-shape."""
        if not value.type.is_static:
            raise self.error(f"needs the static shape of its {what}, which is "
                             f"{'unknown' if value.shape is None else value.type}", hint=_SHAPE_HINT)
        return tuple(value.shape)

    def need_rank(self, value: Value, what: str = "input") -> int:
        if value.type.rank is None:
            raise self.error(f"needs the rank of its {what}, which is unknown", hint=_SHAPE_HINT)
        return value.type.rank

    def bind(self, *values: Value | None) -> None:
        """Bind the node's outputs, in order, to IR values."""
        raise NotImplementedError


_SHAPE_PLACEHOLDER = "--input-shape NAME=d0,d1,..."
_SHAPE_HINT = f"give the input shapes with {_SHAPE_PLACEHOLDER}"


def tile_by_concat(node: NodeContext, x: Value, repeats: Sequence[int]) -> Value:
    """Tile by constant ``repeats`` (ONNX Tile, TensorFlow Tile): r copies along an axis are one
    concat of r inputs."""
    repeats = [int(r) for r in repeats]
    if x.type.rank is not None and len(repeats) != x.type.rank:
        raise node.error(f"repeats has {len(repeats)} values for an input of rank {x.type.rank}")
    if any(r < 1 for r in repeats):
        raise node.error(f"repeats {repeats} must be positive (0 would make an empty tensor)")
    y = x
    for axis, r in enumerate(repeats):
        if r != 1:
            y = node.op("concat", [y] * r, axis=axis)
    return y if y is not x else node.op("identity", [x])


class Importer:
    """One model's conversion. :meth:`run` is the template every builtin frontend follows::

        check all -> inputs -> convert -> outputs -> prune

    ``graph_name`` defaults to the file's stem. A subclass sets ``table`` (its :class:`ConverterTable`) and ``what`` (``"ONNX op"``: the
    error listing unsupported nodes says ``3 unsupported ONNX ops``) and implements
    :meth:`nodes`, :meth:`add_inputs` and :meth:`add_outputs`; it overrides the other steps
    where its format needs more (ONNX also rejects foreign op domains in :meth:`check_node`,
    Caffe declares data layers in :meth:`add_inputs`). ``version`` selects the converter rows
    of versioned tables (ONNX: the model's opset).
    """

    table: ClassVar[ConverterTable]
    what: ClassVar[str] = "op"
    docs: ClassVar[str] = ""  # the page that lists the supported ops, named in the error's hint ...
    listed: ClassVar[str] = "supported ops"  # ... as "{docs} lists the {N} {listed}"
    source_noun: ClassVar[str] = "model"  # "--input-shape x: rank 3 but the model declares ..."
    # the framework whose runtime runs an op without a converter as a ``host`` op ("onnx",
    # "tflite"); None: this frontend keeps no op as a host op (every unsupported op is an error)
    host_framework: ClassVar[str | None] = None

    def __init__(self, path: str, options: Any = None, graph_name: str = "", version: int | None = None):
        self.path = path
        self.options = options
        self.version = version
        self.input_shapes: dict[str, tuple] = dict(options.load.input_shapes if options is not None else {})
        self.builder = Builder(Graph(name=graph_name or os.path.splitext(os.path.basename(path))[0] or "main"),
                               file=path)
        # id() of the nodes check_all kept as host ops -> why ('' : no converter; else a NotLowered problem)
        self.host_nodes: dict[int, str] = {}

    @property
    def graph(self) -> Graph:
        return self.builder.graph

    def run(self) -> Graph:
        nodes = self.nodes()
        self.check_all(nodes)
        self.add_inputs(nodes)
        if self.input_shapes:  # (before a converter fails for want of the size it gives)
            from tidlc.names import unknown_name_error
            raise unknown_name_error(next(iter(self.input_shapes)), self.graph.input_names(), "input", "--input-shape")
        for node in nodes:
            self.convert(node)
        self.add_outputs()
        self.prune()
        return self.graph

    # --- the steps --------------------------------------------------------------------------
    def nodes(self) -> list:
        """The nodes to convert, in an order where every node comes after what it reads."""
        raise NotImplementedError

    def check_all(self, nodes: list) -> None:
        """One TidlcError listing every node that cannot be converted, before converting any."""
        problems = self.problems(nodes)
        if problems:
            raise self.unsupported(problems)

    @property
    def allow_host(self) -> bool:
        """Whether an op without a converter may become a ``host`` op (``--no-host``: no; no
        options, as from the Python API: yes)."""
        if self.host_framework is None:
            return False
        load = getattr(self.options, "load", None)
        return bool(getattr(load, "allow_host", True)) if self.options is not None else True

    def problems(self, nodes: list) -> list[str]:
        """``label: problem`` for every node that cannot be converted. With :attr:`allow_host`, a
        node that has no converter (:meth:`can_host`) or whose converter does not lower its form
        (a :class:`NotLowered` problem) is no problem: it is noted in ``host_nodes`` and
        :meth:`convert` keeps it as a ``host`` op, unless :meth:`host_problem` says its runtime
        cannot run it either."""
        found = []
        allow_host = self.allow_host
        for node in nodes:
            problem = self.check_node(node)
            if problem and allow_host and (self.can_host(node) or isinstance(problem, NotLowered)):
                reason = str(problem) if isinstance(problem, NotLowered) else ""
                problem = self.host_problem(node)
                if problem is None:
                    self.host_nodes[id(node)] = reason
            if problem:
                found.append(f"{self.label(node)}: {problem}")
        return found

    def can_host(self, node) -> bool:
        """Whether ``node`` may be kept as a host op: it has no converter at all. (A node whose
        converter check rejects it is a host op only when the problem is :class:`NotLowered`.)"""
        return self.table.lookup(node.op_type, self.version) is None

    def host_problem(self, node) -> str | None:
        """Why ``node`` cannot be a host op either (no runtime can run it), else None."""
        return None

    def convert_host(self, node) -> None:
        """Emit ``node`` as a ``host`` op and bind its outputs (frontends with a ``host_framework``)."""
        raise NotImplementedError

    def host_reason(self, node) -> dict:
        """The ``reason`` attribute of ``node``'s host op: ``{}`` when it has no converter."""
        reason = self.host_nodes.get(id(node))
        return {"reason": reason} if reason else {}

    def check_node(self, node) -> str | None:
        """What keeps ``node`` from being converted (None: nothing): no converter row, or its check."""
        row = self.table.lookup(node.op_type, self.version)
        if row is None:
            return "not supported"
        return run_check(row.check, node)

    def label(self, node) -> str:
        return node.label

    def unsupported(self, problems: list[str]) -> TidlcError:
        return unsupported_error(self.what, problems, self.path,
                                 hint=f"{self.docs} lists the {len(self.table)} {self.listed}")

    def add_inputs(self, nodes: list) -> None:
        raise NotImplementedError

    def convert(self, node) -> None:
        if id(node) in self.host_nodes:
            self.convert_host(node)
            return
        mark = len(self.graph.ops)
        try:
            self.table.lookup(node.op_type, self.version).convert(node)
        except HostInstead as exc:
            if not (self.allow_host and (self.static_inputs() or not exc.needs_static_inputs)
                    and self.host_problem(node) is None):
                self._name_dynamic_inputs(exc)
                raise
            self._drop_from(mark)
            self.host_nodes[id(node)] = exc.reason
            self.convert_host(node)
        except TidlcError as exc:
            self._name_dynamic_inputs(exc)
            raise

    def _name_dynamic_inputs(self, exc: TidlcError) -> None:
        """A hint that asks for ``--input-shape NAME=d0,d1,...`` names the inputs whose shapes are
        dynamic, with the dimensions the model knows (``--input-shape x:0=1,H,W,3``)."""
        from tidlc.shapes import shape_hint
        if _SHAPE_PLACEHOLDER not in (exc.hint or ""):
            return
        dynamic = [(op.attrs["name"], op.results[0].type) for op in self.graph.input_ops
                   if not op.results[0].type.is_static]
        if dynamic:
            exc.hint = exc.hint.replace(_SHAPE_PLACEHOLDER, " ".join(
                shape_hint(name, t.shape, t.layout) for name, t in dynamic))

    def _drop_from(self, mark: int) -> None:
        """Remove the ops a converter emitted before it stopped, and forget the values they made
        that the importer keeps by name (an initializer made a constant on first use)."""
        gone = {id(r) for op in self.graph.ops[mark:] for r in op.results}
        del self.graph.ops[mark:]
        values = getattr(self, "values", None)
        if isinstance(values, dict):
            for key in [k for k, v in values.items() if id(v) in gone]:
                del values[key]

    def static_inputs(self) -> bool:
        """Whether every graph input has a static shape (then a value the import cannot fold
        comes from the data, not from a dimension left open)."""
        return all(v.type.shape is not None and None not in v.type.shape for v in self.graph.inputs)

    def add_outputs(self) -> None:
        raise NotImplementedError

    def prune(self) -> None:
        """Drop the constants only a converter looked at (a weight it permuted, Resize scales)."""
        graph = self.graph
        read = {id(v) for op in graph.ops for v in op.operands} | {id(v) for v in graph.outputs}
        graph.remove_ops([op for op in graph.ops if op.kind == "const" and id(op.results[0]) not in read])

    # --- building ---------------------------------------------------------------------------
    def emit(self, kind: str, operands: Sequence[Value], attrs_: dict, name: str, loc: Loc | None):
        """Append a typed op; its result (a list if several)."""
        op = self.builder.make(kind, list(operands), attrs_, name, loc)
        self.graph.ops.append(op)
        return op.results[0] if len(op.results) == 1 else list(op.results)

    def named(self, value: Value, name: str, node: NodeContext) -> Value:
        """``value`` under the tensor name ``name``: a converter that forwards a value which has
        a tensor name already gets an identity op, so both names stay."""
        if value.name and value.name != name:
            value = self.emit("identity", [value], {}, node.name, node.loc)
        value.name = name
        return value

    def new_const(self, data: np.ndarray, name: str, loc: Loc | None = None, layout: str | None = None,
                  quant=None) -> Value:
        """A ``const`` op; an element type the IR cannot hold is a TidlcError naming the constant."""
        try:
            dtype_of(data)
        except ValueError as exc:
            raise TidlcError(f"constant '{name}': {exc}", loc or self.path) from None
        value = self.builder.const(data, name, loc=loc, layout=layout)
        if quant is not None:
            value.type = value.type.with_quant(quant)
        return value

    def input_shape(self, name: str, declared: Sequence | None, shown: str, where: Loc | str | None = None):
        """The shape of input ``name``: its ``--input-shape`` if one is given, else ``declared``
        (None: unknown rank). A given shape must have the declared rank; messages show the
        declared shape as ``shown``."""
        from tidlc.names import resolve_tensor_name
        key = name if name in self.input_shapes else next(
            (k for k in self.input_shapes if resolve_tensor_name(k, [name]) == name), None)  # ('x' for 'x:0')
        if key is None:
            return self._batch_one(name, declared)
        given = tuple(self.input_shapes.pop(key))
        if declared is not None and len(declared) != len(given):
            raise TidlcError(f"--input-shape {name}: rank {len(given)} but the {self.source_noun} declares {shown}",
                             where or self.path, hint="give one value per dimension")
        return given

    def _batch_one(self, name: str, declared: Sequence | None):
        """``declared`` with batch 1 when its batch is its only dynamic dimension and the graph is for
        the accelerator (``LoadOptions.batch_one``; a warning says so): shape arithmetic on the input
        must be static at import (``x.chunk(2, 1)`` under ``dynamic_axes`` is ``Shape -> Gather ->
        Div -> Slice``)."""
        from tidlc.shapes import batch_one, warn_batch_one
        shape = batch_one(declared) if self.options is not None and self.options.load.batch_one else None
        if shape is None:
            return declared
        warn_batch_one({name: shape})
        return shape


class FoldingImporter(Importer):
    """An importer that folds constants as it goes: an op whose operands are all constants (and
    ``shape`` of a statically shaped value) becomes a ``const`` at once. Frozen TensorFlow graphs
    compute reshape targets (``Shape -> StridedSlice -> Pack``) and batch-norm factors from
    constants; folding them at import gives converters the plain values they need."""

    def emit(self, kind: str, operands: Sequence[Value], attrs_: dict, name: str, loc: Loc | None):
        op = self.builder.make(kind, list(operands), attrs_, name, loc)
        folded = None
        if kind == "shape" and operands[0].type.is_static:
            folded = [np.array(operands[0].type.shape, dtype=np.int64)]
        elif op.opdef.foldable and op.opdef.compute is not None and operands and all(
                v.const_value() is not None for v in operands):
            check_result_sizes(op, [r.type for r in op.results])  # before numpy allocates them
            try:
                folded = evaluate_op(op, [v.const_value() for v in operands])
            except TidlcError:
                raise
            except (ValueError, IndexError, TypeError, ArithmeticError) as exc:
                raise TidlcError(f"cannot evaluate {kind} of constants: {exc}", loc) from None
        if folded is None:
            self.graph.ops.append(op)
            return op.results[0] if len(op.results) == 1 else list(op.results)
        values = []
        for res, data in zip(op.results, folded):
            data = to_dtype(np.asarray(data), numpy_dtype(res.type.dtype))
            values.append(self.new_const(data, name, loc, layout=res.type.layout if data.ndim == 4 else None,
                                         quant=res.type.quant))
        return values[0] if len(values) == 1 else values
