"""The Caffe converter table and what a converter sees of one layer.

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

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional

import attrs
import numpy as np

from tidlc import limits
from tidlc.diagnostics import Loc, TidlcError
from tidlc.ir.core import Value
from tidlc.ir.types import numpy_dtype

from .netspec import LayerSpec
from .prototxt import Message

if TYPE_CHECKING:  # pragma: no cover
    from .lower import Lowering
    from .weights import WeightSource

ConvertFn = Callable[["Layer"], None]
CheckFn = Callable[[LayerSpec, Optional["WeightSource"]], str | None]


@attrs.frozen
class Converter:
    layer_type: str
    convert: ConvertFn
    check: CheckFn | None = None
    doc: str = ""


class ConverterTable:
    """Caffe layer type -> converter."""

    def __init__(self) -> None:
        self._rows: dict[str, Converter] = {}

    def register(self, layer_type: str, check: CheckFn | None = None):
        def decorate(fn: ConvertFn) -> ConvertFn:
            if layer_type in self._rows:
                raise ValueError(f"Caffe converter for {layer_type} is registered twice")
            self._rows[layer_type] = Converter(layer_type, fn, check, (fn.__doc__ or "").strip())
            return fn
        return decorate

    def get(self, layer_type: str) -> Converter | None:
        return self._rows.get(layer_type)

    def __contains__(self, layer_type: str) -> bool:
        return layer_type in self._rows

    def types(self) -> list[str]:
        return sorted(self._rows)


CONVERTERS = ConverterTable()


def converter(*layer_types: str, check: CheckFn | None = None):
    """Register ``fn(layer)`` as the converter of one or more Caffe layer types."""
    def decorate(fn: ConvertFn) -> ConvertFn:
        for layer_type in layer_types:
            CONVERTERS.register(layer_type, check)(fn)
        return fn
    return decorate


class Layer:
    """One Caffe layer during lowering (see the module docstring)."""

    def __init__(self, lowering: Lowering, spec: LayerSpec):
        self.lowering = lowering
        self.spec = spec
        self.name = spec.name
        self.type = spec.type
        self.loc: Loc = spec.loc
        self.inputs: list[Value] = [lowering.lookup(spec, b) for b in spec.bottom]
        self.bound = False

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

    def error(self, message: str, hint: str = "", at: Loc | None = None, code: str = "model") -> TidlcError:
        """A TidlcError at this layer (or at ``at``, e.g. a parameter field)."""
        where = attrs.evolve(at, name=self.name) if at is not None else self.loc
        return TidlcError(f"{self.type} layer: {message}", where, hint=hint, code=code)

    # --- weights ------------------------------------------------------------------------
    def blob(self, index: int, shape: Sequence[int], role: str = "weight") -> np.ndarray:
        """Blob ``index`` of this layer in Caffe's layout, checked against ``shape``.

        ``role`` tells the random filler what the blob is (weight, bias, mean,
        var, factor, gamma, beta, slope).
        """
        shape = tuple(int(d) for d in shape)
        self.check_shape(shape, f"blob {index} ({role})")
        return self.lowering.weights.blob(self.spec, index, shape, role)

    def check_shape(self, shape: Sequence[int], what: str, itemsize: int = 4) -> None:
        """Refuse a shape the layer's parameters made negative or too large (num_output,
        kernel sizes, upsampling factors come from the file) before anything is allocated."""
        if any(d < 0 for d in shape):
            raise self.error(f"{what} would have the negative shape {list(shape)}",
                             hint="check the layer's parameters and the input shape")
        limits.check_shape(shape, itemsize, f"{self.type} layer: {what}", self.loc)

    # --- building -----------------------------------------------------------------------
    def const(self, data: Any, suffix: str) -> Value:
        """A constant named ``<layer>.<suffix>`` located at the layer."""
        return self.lowering.builder.const(data, f"{self.name}.{suffix}", self.loc)

    def op(self, kind: str, operands: Sequence[Value], suffix: str = "", **attrs_: Any):
        """Append an op named after the layer (``<layer>/<suffix>`` for helper ops)."""
        name = f"{self.name}/{suffix}" if suffix else self.name
        return self.lowering.builder.op(kind, operands, name, self.loc, **attrs_)

    def bind(self, *values: Value) -> None:
        """Bind the layer's tops, in order, to ``values``."""
        tops = self.spec.top
        if len(values) != len(tops):
            raise self.error(f"produces {len(values)} result(s) but has {len(tops)} top(s)")
        for top, value in zip(tops, values):
            if value.type.is_static:  # an activation: later passes and the runtime allocate it
                itemsize = numpy_dtype(value.type.dtype).itemsize
                self.check_shape(value.type.shape, f"top '{top}'", itemsize)
            self.lowering.define(top, value)
        self.bound = True

    def add_input(self, top: str, shape: Sequence[int] | None) -> Value:
        """Declare a graph input (data layers); ``--input-shape`` overrides ``shape``."""
        return self.lowering.add_input(top, shape, self.loc)
