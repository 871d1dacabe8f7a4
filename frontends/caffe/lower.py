"""Caffe prototxt (+ caffemodel) -> tidlc IR.

``load_caffe(path, options)`` is the frontend entry point. The steps:

1. parse the prototxt into a :class:`~tidlc.frontends.caffe.netspec.NetSpec`
   (TEST phase);
2. find the weights: ``options.load.weights``, else ``<stem>.caffemodel`` beside
   the prototxt; without one, ``options.load.random_weights`` fills every blob
   with seeded random values, or else the net is imported *structure-only*
   (zero-splat constants, ``graph.attrs["missing_weights"] = True``, one
   warning) so that shape-level commands still work;
3. check every layer against the converter table (``registry.CONVERTERS``)
   and report *all* unsupported layers at once, with their locations;
4. convert the layers in file order. Blob names are SSA-renamed: an in-place
   layer (``top == bottom``) defines a new value under the same blob name;
5. report every weight problem at once (missing layers or blobs, wrong
   shapes, extra blobs);
6. the graph outputs are the blobs nobody consumed (Caffe's rule), in the
   order they were produced.

Every op is named after its layer and located at the layer's
``file:line:col``; values carry their blob names.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tidlc import limits
from tidlc.diagnostics import Loc, TidlcError, warn
from tidlc.frontend import Importer, run_check
from tidlc.ir.core import Graph, Value
from tidlc.ir.types import TensorType

from . import convert_detection, convert_nn, convert_tensor  # noqa: F401  (fill the table)
from .caffemodel import read_caffemodel
from .netspec import LayerSpec, NetSpec, load_netspec
from .registry import CONVERTERS, Layer
from .weights import FileWeights, RandomWeights, WeightSource, ZeroWeights

__all__ = ["Lowering", "find_weights", "load_caffe", "lower_net", "unsupported_layers", "weights_hint"]


def find_weights(prototxt: str, weights: str | None = None) -> str | None:
    """The caffemodel to use: the given path, else ``<stem>.caffemodel`` beside the prototxt."""
    if weights:
        if not os.path.exists(weights):  # anything else that is not a file: fileio says what it is
            raise TidlcError("weights file not found", Loc(file=weights),
                             hint="--weights takes the path of a .caffemodel", code="file")
        return weights
    beside = Path(prototxt).with_suffix(".caffemodel")
    return str(beside) if beside.is_file() else None


def other_weights(prototxt: str) -> list[str]:
    """The .caffemodel files beside ``prototxt`` not named like it (``lenet_iter_10000.caffemodel``
    for ``lenet.prototxt``): what a hint can suggest for ``--weights`` (never used unasked)."""
    folder = Path(prototxt).parent
    try:
        return sorted(str(p) for p in folder.glob("*.caffemodel") if p.is_file())
    except OSError:
        return []


def weights_hint(prototxt: str) -> str:
    """``--weights FILE`` naming the one caffemodel beside ``prototxt`` (or the choice), else generic."""
    found = other_weights(prototxt)
    if len(found) == 1:
        return f"pass --weights {found[0]} (the caffemodel beside it), or --random-weights SEED"
    if found:
        return f"pass --weights with one of {', '.join(Path(f).name for f in found[:4])}" + \
            (" ..." if len(found) > 4 else "") + " (beside it), or --random-weights SEED"
    return "pass --weights FILE or --random-weights SEED"


def unsupported_layers(net: NetSpec, weights: WeightSource | None = None) -> list[str]:
    """One line per layer that cannot be converted: ``file:line:col: 'name': why``."""
    return Lowering(net, weights).problems(net.layers)


class Lowering(Importer):
    """The state of one conversion: the builder, the blob table, the inputs and the weights.

    The nodes of the importer template are the layer specs (a :class:`Layer` is made when its
    turn to convert comes, since it resolves its bottoms); data layers are graph inputs."""

    table = CONVERTERS
    source_noun = "prototxt"

    def __init__(self, net: NetSpec, weights: WeightSource | None, path: str = "",
                 input_shapes: dict[str, tuple[int, ...]] | None = None):
        super().__init__(path, None, net.name or Path(path).stem or "caffe")
        self.net = net
        self.weights = weights
        self.input_shapes = dict(input_shapes or {})
        self.blobs: dict[str, Value] = {}
        self.available: dict[str, None] = {}  # produced, not yet consumed (ordered)
        self.missing_shapes: list[str] = []

    # --- the blob table --------------------------------------------------------------------
    def lookup(self, spec: LayerSpec, blob: str) -> Value:
        value = self.blobs.get(blob)
        if value is None:
            raise TidlcError(f"bottom '{blob}' is not produced by any earlier layer or input",
                             spec.loc, hint="layers run in file order; check the blob name")
        self.available.pop(blob, None)
        return value

    def define(self, blob: str, value: Value) -> None:
        if not value.name:
            value.name = blob
        self.blobs[blob] = value
        self.available.pop(blob, None)
        self.available[blob] = None

    def add_input(self, name: str, shape: Sequence[int] | None, loc: Loc) -> Value:
        if name in self.blobs:
            raise TidlcError(f"input '{name}' is declared twice", loc,
                             hint="give every input its own name")
        shape = self.input_shape(name, shape, str(list(shape or ())), loc)
        if shape is not None and any(d < 0 for d in shape):
            raise TidlcError(f"input '{name}' has a negative dimension: {list(shape)}", loc,
                             hint="give every dimension as a positive size")
        if shape is not None:
            limits.check_shape(shape, 4, f"input '{name}'", loc)
        if shape is None or any(d <= 0 for d in shape):
            self.missing_shapes.append(
                f"{loc.where()}: input '{name}' has no shape in the prototxt")
            shape = (1,)  # placeholder; the error is raised after all inputs are seen
        layout = "NCHW" if len(shape) == 4 else None
        value = self.builder.input(name, TensorType(tuple(shape), "f32", layout),
                                   Loc(name, loc.file, loc.line, loc.col))
        self.define(name, value)
        return value

    # --- the steps ----------------------------------------------------------------------------
    def nodes(self) -> list[LayerSpec]:
        return list(self.net.layers)

    def label(self, spec: LayerSpec) -> str:
        return f"{spec.loc.where()}: '{spec.name}'"

    def check_node(self, spec: LayerSpec) -> str | None:
        row = CONVERTERS.lookup(spec.type)
        if row is None:
            return f"unsupported layer type '{spec.type}'"
        problem = run_check(row.check, spec, self.weights)
        return f"{spec.type}: {problem}" if problem else None

    def unsupported(self, problems: list[str]) -> TidlcError:
        return TidlcError(f"{len(problems)} layer(s) of the net cannot be imported", Loc(file=self.path),
                          hint="see docs/frontends/caffe.md for the supported layers", problems=problems)

    def add_inputs(self, specs: list[LayerSpec]) -> None:
        for spec in self.net.inputs:
            self.add_input(spec.name, spec.shape, spec.loc)
        for spec in specs:
            if spec.type in convert_tensor.DATA_LAYERS:
                convert_tensor.declare_data_layer(Layer(self, spec))
        self._raise_missing_shapes()

    def convert(self, spec: LayerSpec) -> None:
        if spec.type in convert_tensor.DATA_LAYERS:
            return  # declared as inputs
        layer = Layer(self, spec)
        CONVERTERS.lookup(spec.type).convert(layer)
        if not layer.bound and spec.top:
            raise layer.error("converter bound no result (internal error)")

    def add_outputs(self) -> None:
        """Report every weight problem at once; then the outputs are the blobs nobody consumed."""
        if isinstance(self.weights, FileWeights):
            self.weights.check_counts(self.net.layers)
        if self.weights.problems:
            raise TidlcError(f"{len(self.weights.problems)} problem(s) with the weights",
                             Loc(file=self.weights.path),
                             hint="is the caffemodel trained from this prototxt?",
                             problems=self.weights.problems)
        for blob in self.available:
            self.builder.output(self.blobs[blob], blob)
        if not self.graph.outputs:
            raise TidlcError("the net has no outputs (every blob is consumed)", Loc(file=self.path))

    def _raise_missing_shapes(self) -> None:
        if self.input_shapes:
            unknown = ", ".join(sorted(self.input_shapes))
            names = ", ".join(op.attrs["name"] for op in self.graph.input_ops)
            raise TidlcError(f"--input-shape names unknown input(s) {unknown}",
                             hint=f"the net's inputs are: {names}")
        if self.missing_shapes:
            raise TidlcError("input shape(s) unknown", Loc(file=self.path),
                             hint="pass --input-shape NAME=d0,d1,... e.g. data=1,3,224,224",
                             problems=self.missing_shapes)


def lower_net(net: NetSpec, weights: WeightSource, path: str = "",
              input_shapes: dict[str, tuple[int, ...]] | None = None) -> Graph:
    """Convert a parsed net with the given weight source (see :class:`Lowering`)."""
    return Lowering(net, weights, path, input_shapes).run()


def weight_source(path: str, options) -> WeightSource:
    """The weight source ``load_caffe`` uses for these options (see the module docstring)."""
    load = options.load if options is not None else None
    seed = load.random_weights if load else None
    weights_path = find_weights(path, load.weights if load else None)
    if weights_path is not None:
        fallback = RandomWeights(seed) if seed is not None else None
        return FileWeights(read_caffemodel(weights_path), fallback)
    if seed is not None:
        return RandomWeights(seed)
    return ZeroWeights()


def load_caffe(path: str, options=None) -> Graph:
    """The Caffe frontend: ``.prototxt`` (+ ``.caffemodel``) -> IR graph."""
    net = load_netspec(path)
    source = weight_source(path, options)
    shapes = dict(options.load.input_shapes if options is not None else {})
    graph = lower_net(net, source, path, shapes)
    graph.attrs["source"] = os.path.basename(path)
    if isinstance(source, ZeroWeights) and source.used:  # (a net of pools and concats has none to miss)
        graph.attrs["missing_weights"] = True
        beside = Path(path).with_suffix(".caffemodel").name
        warn(f"{path}: no weights (no --weights and no {beside} beside it): structure only, "
             "every weight is zero", code="weights", hint=weights_hint(path).replace(
                 "or --random-weights SEED", "or --random-weights SEED to explore"))
    elif isinstance(source, RandomWeights):
        graph.attrs["random_weights"] = source.seed
    elif isinstance(source, FileWeights) and source.filled:
        graph.attrs["random_weights"] = source.fallback.seed
        warn(f"{len(source.filled)} layer(s) have no weights in {Path(source.weights.path).name} "
             f"and were filled randomly: {', '.join(source.filled[:5])}"
             + (" ..." if len(source.filled) > 5 else ""), code="weights")
    return graph
