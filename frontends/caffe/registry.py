"""The Caffe converter table (:class:`tidlc.frontend.ConverterTable`) and what a converter sees
of one layer (a :class:`tidlc.frontend.NodeContext`).

A converter is a function registered for one Caffe layer type::

    @converter("ReLU")
    def relu(layer: Layer) -> None:
        slope = layer.param("relu_param").get_float("negative_slope", 0.0)
        x = layer.input()
        layer.bind(layer.op("leaky_relu", [x], alpha=slope) if slope else layer.op("relu", [x]))

An optional ``check(spec, weights) -> problem or None`` looks at the
layer's parameters (and, where it matters, at how many blobs the caffemodel
holds for it) *before* anything is converted, so that every unsupported
layer of a net is reported at once (the lowering lists them all, with
locations).

:class:`Layer` gives converters the resolved bottoms, the parameters, the
weight blobs (real, random or zero-splat, see ``weights.py``) and a builder
that names every op after the layer and locates it at the layer's
``file:line:col``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from tidlc import limits
from tidlc.diagnostics import Loc
from tidlc.frontend import ConverterTable, NodeContext
from tidlc.ir.core import Value
from tidlc.ir.types import numpy_dtype

from .netspec import LayerSpec
from .prototxt import Message

if TYPE_CHECKING:  # pragma: no cover
    from .lower import Lowering

CONVERTERS = ConverterTable("Caffe")
converter = CONVERTERS.converter  # @converter("ReLU", "ReLU6", check=fn); check(spec, weights) -> problem


class Layer(NodeContext):
    """One Caffe layer during lowering (see the module docstring)."""

    def __init__(self, lowering: Lowering, spec: LayerSpec):
        self.importer = lowering
        self.spec = spec
        self.name = spec.name
        self.type = self.op_type = spec.type
        self.loc: Loc = spec.loc
        self.inputs: list[Value] = [lowering.lookup(spec, b) for b in spec.bottom]
        self.bound = False

    @property
    def error_prefix(self) -> str:
        return f"{self.type} layer"

    # --- reading the layer ------------------------------------------------------------
    def param(self, name: str) -> Message:
        """A parameter message (``"convolution_param"``); an empty one if absent."""
        return self.spec.param(name)

    def input(self, index: int = 0) -> Value:
        if index >= len(self.inputs):
            raise self.error(f"needs at least {index + 1} bottom(s), has {len(self.inputs)}")
        return self.inputs[index]

    def shape(self, index: int = 0) -> tuple[int, ...]:
        """The static shape of bottom ``index`` (every Caffe blob shape is static)."""
        t = self.input(index).type
        if not t.is_static:
            raise self.error(f"bottom '{self.spec.bottom[index]}' has no static shape ({t})")
        return tuple(t.shape)

    def shape4(self, index: int = 0) -> tuple[int, int, int, int]:
        """The shape of bottom ``index``, which must be 4-D (N, C, H, W)."""
        shape = self.shape(index)
        if len(shape) != 4:
            which = "" if index == 0 else f" {index}"
            raise self.error(f"expects a 4-D (N, C, H, W) bottom{which}, got {list(shape)}")
        return shape

    def expect_bottoms(self, *counts: int) -> None:
        if len(self.inputs) not in counts:
            want = " or ".join(map(str, counts))
            raise self.error(f"takes {want} bottom(s), has {len(self.inputs)}")

    # --- weights ------------------------------------------------------------------------
    def blob(self, index: int, shape: Sequence[int], role: str = "weight") -> np.ndarray:
        """Blob ``index`` of this layer in Caffe's layout, checked against ``shape``.

        ``role`` tells the random filler what the blob is (weight, bias, mean,
        var, factor, gamma, beta, slope).
        """
        shape = tuple(int(d) for d in shape)
        self.check_shape(shape, f"blob {index} ({role})")
        return self.importer.weights.blob(self.spec, index, shape, role)

    def check_shape(self, shape: Sequence[int], what: str, itemsize: int = 4) -> None:
        """Refuse a shape the layer's parameters made negative or too large (num_output,
        kernel sizes, upsampling factors come from the file) before anything is allocated."""
        if any(d < 0 for d in shape):
            raise self.error(f"{what} would have the negative shape {list(shape)}",
                             hint="check the layer's parameters and the input shape")
        limits.check_shape(shape, itemsize, f"{self.type} layer: {what}", self.loc)

    # --- building (op() and const() come from NodeContext: ops "<layer>/<suffix>", constants "<layer>.<suffix>")
    def bind(self, *values: Value) -> None:
        """Bind the layer's tops, in order, to ``values``."""
        tops = self.spec.top
        if len(values) != len(tops):
            raise self.error(f"produces {len(values)} result(s) but has {len(tops)} top(s)")
        for top, value in zip(tops, values):
            if value.type.is_static:  # an activation: later passes and the runtime allocate it
                itemsize = numpy_dtype(value.type.dtype).itemsize
                self.check_shape(value.type.shape, f"top '{top}'", itemsize)
            self.importer.define(top, value)
        self.bound = True

    def add_input(self, top: str, shape: Sequence[int] | None) -> Value:
        """Declare a graph input (data layers); ``--input-shape`` overrides ``shape``."""
        return self.importer.add_input(top, shape, self.loc)
