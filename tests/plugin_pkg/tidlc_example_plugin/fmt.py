"""Darknet ``.cfg`` networks with their ``.weights``: the classifier/backbone subset.

A cfg is a list of ``[section]`` headers with ``key=value`` lines (``#`` and
``;`` start comments). The first section is ``[net]``; every later one is a
layer, numbered from 0 as darknet prints them. Supported here, with the
numerics of pjreddie/darknet's CPU code:

================  ==========================================================
``[net]``         ``width``, ``height``, ``channels`` (or ``inputs`` for a
                  vector); training keys are ignored
``[convolutional]`` ``filters size stride stride_x stride_y pad padding
                  groups batch_normalize activation``
``[maxpool]``     ``size stride stride_x stride_y padding`` (default size-1,
                  split top/left = padding // 2, padded pixels never win)
``[avgpool]``     global average
``[connected]``   ``output batch_normalize activation`` (NCHW-flattened input)
``[softmax]``     over all values of a sample; ``temperature``
``[shortcut]``    ``from activation``: elementwise sum, same shapes
``[route]``       ``layers``: channel concatenation
``[dropout]``     identity at inference
================  ==========================================================

Activations: ``linear relu leaky logistic tanh relu6 elu mish swish``
(``logistic`` is darknet's default). ``swish`` becomes this plugin's
``swish`` op; ``mish`` becomes ``x * tanh(softplus(x))``.

Batch normalisation is darknet's ``(x - mean) / (sqrt(var) + 1e-6) * scale +
bias``, emitted as a ``scale`` op (which -O2 folds into the layer).

``.weights``: three int32 (major, minor, revision), the images seen (int64
from version 0.2 on, else int32), then float32 blobs layer by layer:
convolutional ``biases[, scales, mean, variance], weights (OIHW)``;
connected ``biases, weights (out x in)[, scales, mean, variance]`` (stored
in x out when major or minor > 1000). Weights come from ``--weights FILE``,
else from ``NAME.weights`` beside ``NAME.cfg``, else, with
``--random-weights SEED``, from a seeded generator.
"""
from __future__ import annotations

import os
from collections.abc import Callable

import attrs
import numpy as np

from tidlc.diagnostics import Loc, TidlcError
from tidlc.ir.builder import Builder
from tidlc.ir.core import Graph, Value
from tidlc.ir.types import TensorType

BN_EPSILON = 1e-6  # darknet's normalize_cpu: (x - mean) / (sqrt(var) + .000001f)
TIR_WEIGHTS_MAGIC = b"TIRWGT1\n"


# ----------------------------------------------------------------------------- cfg text

@attrs.define
class Section:
    """One ``[kind]`` block: its options with the line each was given on."""

    kind: str
    line: int
    options: dict[str, tuple[str, int]] = attrs.Factory(dict)
    path: str = ""
    index: int = -1  # layer number (-1 for [net])

    @property
    def name(self) -> str:
        return f"{self.kind}{self.index}"

    def loc(self, key: str | None = None) -> Loc:
        line = self.options[key][1] if key in self.options else self.line
        return Loc(self.name if self.index >= 0 else "", self.path, line, 1)

    def _get(self, key: str, default, convert: Callable, what: str):
        if key not in self.options:
            return default
        text = self.options[key][0]
        try:
            return convert(text)
        except ValueError:
            raise TidlcError(f"[{self.kind}] {key}={text} is not {what}", self.loc(key)) from None

    def integer(self, key: str, default: int) -> int:
        return self._get(key, default, int, "an integer")

    def number(self, key: str, default: float) -> float:
        return self._get(key, default, float, "a number")

    def text(self, key: str, default: str) -> str:
        return self.options[key][0] if key in self.options else default

    def integers(self, key: str) -> list[int]:
        return self._get(key, [], lambda t: [int(v) for v in t.split(",") if v], "a list of integers")


def parse_cfg(text: str, path: str = "") -> list[Section]:
    """The sections of a cfg, in order. Spaces are insignificant, as in darknet's reader."""
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]") or len(line) < 3:
                raise TidlcError(f"bad section header {raw.strip()!r}", Loc("", path, number),
                                 hint="write a section as [name]")
            sections.append(Section(line[1:-1].lower(), number, path=path))
            continue
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise TidlcError(f"expected key=value, got {raw.strip()!r}", Loc("", path, number))
        if not sections:
            raise TidlcError(f"option {key!r} before the first section", Loc("", path, number),
                             hint="a Darknet cfg starts with [net]")
        sections[-1].options[key] = (value, number)
    if not sections or sections[0].kind not in ("net", "network"):
        raise TidlcError("not a Darknet cfg: the first section must be [net]", path)
    for index, section in enumerate(sections[1:]):
        section.index = index
    return sections


# ----------------------------------------------------------------------------- weights

class WeightsFile:
    """Reads float32 blobs in layer order from a darknet ``.weights`` file."""

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, "rb") as fh:
                self.data = fh.read()
        except OSError as exc:
            raise TidlcError(f"cannot read weights: {exc.strerror}", path) from None
        if self.data.startswith(TIR_WEIGHTS_MAGIC):
            raise TidlcError("this is a tidlc IR weights file, not Darknet weights", path,
                             hint="give the .weights file darknet wrote")
        if len(self.data) < 16:
            raise TidlcError(f"too short for a Darknet weights file ({len(self.data)} bytes)", path)
        major, minor, _revision = np.frombuffer(self.data, "<i4", 3)
        self.pos = 20 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else 16
        self.transposed = bool(major > 1000 or minor > 1000)

    def take(self, count: int, what: str, layer: Section, kind: str, fan_in: int = 1) -> np.ndarray:
        nbytes = 4 * count
        if self.pos + nbytes > len(self.data):
            raise TidlcError(f"weights file ends early: {layer.name} needs {count} {what} at byte "
                             f"{self.pos}, {len(self.data) - self.pos} bytes are left", self.path,
                             hint="is this the .weights file of this cfg?")
        out = np.frombuffer(self.data, "<f4", count, self.pos).copy()
        self.pos += nbytes
        return out

    def finish(self) -> None:
        left = len(self.data) - self.pos
        if left:
            raise TidlcError(f"weights file has {left} bytes more than the cfg needs", self.path,
                             hint="is this the .weights file of this cfg?")


class RandomWeights:
    """Seeded stand-in weights (``--random-weights SEED``) with sane statistics."""

    transposed = False

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def take(self, count: int, what: str, layer: Section, kind: str, fan_in: int = 1) -> np.ndarray:
        if kind in ("scales", "variance"):
            values = self.rng.uniform(0.5, 1.5, count)
        elif kind == "weights":
            values = self.rng.standard_normal(count) * np.sqrt(2.0 / max(fan_in, 1))
        else:  # biases, mean
            values = self.rng.standard_normal(count) * 0.1
        return values.astype(np.float32)

    def finish(self) -> None:
        pass


def _weights_source(path: str, options):
    load = options.load if options is not None else None  # tidlc.config.LoadOptions
    given = load.weights if load else None
    sibling = os.path.splitext(path)[0] + ".weights"
    if given:
        if not os.path.exists(given):
            raise TidlcError("weights file not found", given)
        return WeightsFile(given)
    if os.path.exists(sibling):
        return WeightsFile(sibling)
    seed = load.random_weights if load else None
    if seed is not None:
        return RandomWeights(seed)
    raise TidlcError(f"no weights: {os.path.basename(sibling)} not found beside the cfg", path,
                     hint="pass --weights FILE, or --random-weights SEED to explore without weights")


# ----------------------------------------------------------------------------- conversion

ACTIVATIONS = ("linear", "relu", "leaky", "logistic", "tanh", "relu6", "elu", "mish", "swish")
# darknet's default activation is logistic for these layers, linear for [shortcut]
LOGISTIC_BY_DEFAULT = ("convolutional", "conv", "connected", "conn")


@attrs.define
class Net:
    """Conversion state: the builder, each layer's output, the weights source."""

    builder: Builder
    weights: object  # WeightsFile or RandomWeights
    outputs: list[Value] = attrs.Factory(list)

    @property
    def current(self) -> Value:
        return self.outputs[-1]

    def op(self, kind: str, operands, layer: Section, suffix: str = "", **attrs_):
        return self.builder.op(kind, operands, name=layer.name + suffix, loc=layer.loc(), **attrs_)

    def const(self, array: np.ndarray, layer: Section, suffix: str) -> Value:
        return self.builder.const(array, f"{layer.name}.{suffix}", loc=layer.loc())

    def layer_output(self, layer: Section, relative_or_absolute: int) -> Value:
        index = relative_or_absolute + layer.index if relative_or_absolute < 0 else relative_or_absolute
        if not 0 <= index < layer.index:
            raise TidlcError(f"[{layer.kind}] refers to layer {relative_or_absolute}, which is not an "
                             f"earlier layer", layer.loc())
        return self.outputs[index + 1]  # outputs[0] is the network input

    def activation(self, x: Value, layer: Section) -> Value:
        act = layer.text("activation", "logistic" if layer.kind in LOGISTIC_BY_DEFAULT else "linear")
        if act == "linear":
            return x
        if act == "leaky":
            return self.op("leaky_relu", [x], layer, ".act", alpha=0.1)
        if act == "logistic":
            return self.op("sigmoid", [x], layer, ".act")
        if act == "elu":
            return self.op("elu", [x], layer, ".act", alpha=1.0)
        if act == "mish":
            soft = self.op("softplus", [x], layer, ".softplus")
            return self.op("mul", [x, self.op("tanh", [soft], layer, ".tanh")], layer, ".act")
        return self.op(act, [x], layer, ".act")  # relu, tanh, relu6, swish (the plugin's op)

    def normalize(self, y: Value, layer: Section, biases: np.ndarray,
                  stats: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Value:
        scales, mean, variance = (s.astype(np.float64) for s in stats)
        factor = scales / (np.sqrt(np.maximum(variance, 0.0)) + BN_EPSILON)
        shift = biases - mean * factor
        return self.op("scale", [y, self.const(factor.astype(np.float32), layer, "bn_scale"),
                                 self.const(shift.astype(np.float32), layer, "bn_shift")], layer, ".bn")


def _spatial(net: Net, layer: Section) -> tuple[int, int, int]:
    shape = net.current.type.shape
    if shape is None or len(shape) != 4:
        raise TidlcError(f"[{layer.kind}] needs an image (N, C, H, W) input, got shape {shape}",
                         layer.loc())
    return shape[1], shape[2], shape[3]


def convert_convolutional(net: Net, layer: Section) -> Value:
    channels, _, _ = _spatial(net, layer)
    filters = layer.integer("filters", 1)
    size = layer.integer("size", 1)
    stride = layer.integer("stride", 1)
    strides = (layer.integer("stride_y", stride), layer.integer("stride_x", stride))
    padding = size // 2 if layer.integer("pad", 0) else layer.integer("padding", 0)
    groups = layer.integer("groups", 1)
    if min(filters, size, groups, *strides) < 1 or padding < 0:
        raise TidlcError(f"[{layer.kind}] filters, size, stride and groups must be positive",
                         layer.loc())
    if channels % groups or filters % groups:
        raise TidlcError(f"[{layer.kind}] groups={groups} does not divide {channels} input channels "
                         f"and {filters} filters", layer.loc("groups"))
    batch_normalize = layer.integer("batch_normalize", 0)
    fan_in = channels // groups * size * size
    biases = net.weights.take(filters, "biases", layer, "biases")
    stats = None
    if batch_normalize:
        stats = (net.weights.take(filters, "scales", layer, "scales"),
                 net.weights.take(filters, "rolling means", layer, "mean"),
                 net.weights.take(filters, "rolling variances", layer, "variance"))
    w = net.weights.take(filters * fan_in, "weights", layer, "weights", fan_in)
    w = w.reshape(filters, channels // groups, size, size)
    operands = [net.current, net.const(w, layer, "weights")]
    if not batch_normalize:
        operands.append(net.const(biases, layer, "biases"))
    y = net.op("conv2d", operands, layer, strides=strides, pads=(padding,) * 4, groups=groups)
    if stats is not None:
        y = net.normalize(y, layer, biases, stats)
    return net.activation(y, layer)


def convert_connected(net: Net, layer: Section) -> Value:
    x = net.current
    if x.type.shape is not None and len(x.type.shape) != 2:
        x = net.op("flatten", [x], layer, ".flatten", axis=1)
    inputs = x.type.shape[1]
    outputs = layer.integer("output", 1)
    biases = net.weights.take(outputs, "biases", layer, "biases")
    w = net.weights.take(outputs * inputs, "weights", layer, "weights", inputs)
    w = w.reshape(inputs, outputs).T.copy() if net.weights.transposed else w.reshape(outputs, inputs)
    batch_normalize = layer.integer("batch_normalize", 0)
    if batch_normalize:
        stats = (net.weights.take(outputs, "scales", layer, "scales"),
                 net.weights.take(outputs, "rolling means", layer, "mean"),
                 net.weights.take(outputs, "rolling variances", layer, "variance"))
        y = net.op("dense", [x, net.const(w, layer, "weights")], layer)
        y = net.normalize(y, layer, biases, stats)
    else:
        bias = net.const(biases, layer, "biases")
        y = net.op("dense", [x, net.const(w, layer, "weights"), bias], layer)
    return net.activation(y, layer)


def convert_maxpool(net: Net, layer: Section) -> Value:
    _spatial(net, layer)
    stride = layer.integer("stride", 1)
    strides = (layer.integer("stride_y", stride), layer.integer("stride_x", stride))
    size = layer.integer("size", stride)
    padding = layer.integer("padding", size - 1)
    before, after = padding // 2, padding - padding // 2
    return net.op("pool2d", [net.current], layer, mode="max", kernel=(size, size), strides=strides,
                  pads=(before, before, after, after))


def convert_avgpool(net: Net, layer: Section) -> Value:
    _spatial(net, layer)
    return net.op("global_pool", [net.current], layer, mode="avg")


def convert_softmax(net: Net, layer: Section) -> Value:
    x = net.current
    if x.type.shape is not None and len(x.type.shape) != 2:
        x = net.op("flatten", [x], layer, ".flatten", axis=1)
    temperature = layer.number("temperature", 1.0)
    if temperature <= 0:
        raise TidlcError(f"[{layer.kind}] temperature must be positive", layer.loc("temperature"))
    if temperature != 1.0:
        x = net.op("mul", [x, net.const(np.float32(1.0 / temperature), layer, "inv_temperature")],
                   layer, ".temperature")
    return net.op("softmax", [x], layer, axis=1)


def convert_shortcut(net: Net, layer: Section) -> Value:
    sources = layer.integers("from")
    if len(sources) != 1:
        raise TidlcError(f"[{layer.kind}] from= must name one layer", layer.loc("from"))
    other = net.layer_output(layer, sources[0])
    if other.type.shape != net.current.type.shape:
        raise TidlcError(f"[{layer.kind}] adds layers of shapes {other.type.shape} and "
                         f"{net.current.type.shape}; only equal shapes are supported",
                         layer.loc("from"))
    return net.activation(net.op("add", [net.current, other], layer), layer)


def convert_route(net: Net, layer: Section) -> Value:
    sources = [net.layer_output(layer, i) for i in layer.integers("layers")]
    if not sources:
        raise TidlcError(f"[{layer.kind}] needs layers=", layer.loc())
    if len(sources) == 1:
        return sources[0]
    return net.op("concat", sources, layer, axis=1)


def convert_dropout(net: Net, layer: Section) -> Value:
    return net.op("dropout", [net.current], layer, ratio=layer.number("probability", 0.2))


CONVERTERS: dict[str, Callable[[Net, Section], Value]] = {
    "convolutional": convert_convolutional, "conv": convert_convolutional,
    "connected": convert_connected, "conn": convert_connected,
    "maxpool": convert_maxpool, "max": convert_maxpool,
    "avgpool": convert_avgpool, "avg": convert_avgpool,
    "softmax": convert_softmax, "soft": convert_softmax,
    "shortcut": convert_shortcut,
    "route": convert_route,
    "dropout": convert_dropout,
}

# Options that change the numerics but are not supported: (layer kinds, key, allowed values).
_UNSUPPORTED_OPTIONS = [
    (("convolutional", "conv"), "dilation", ("1",)),
    (("convolutional", "conv"), "binary", ("0",)),
    (("convolutional", "conv"), "xnor", ("0",)),
    (("convolutional", "conv"), "share_index", ()),
    (("softmax", "soft"), "groups", ("1",)),
    (("softmax", "soft"), "tree", ()),
    (("route",), "groups", ("1",)),
    (("shortcut",), "weights_type", ("none",)),
]


def check_unsupported(sections: list[Section]) -> None:
    """Every unsupported layer, option and activation of the cfg, before converting anything."""
    problems = []
    for layer in sections[1:]:
        where = f"{layer.path}:{layer.line}"
        if layer.kind not in CONVERTERS:
            problems.append(f"{where}: layer {layer.index} [{layer.kind}] is not supported")
            continue
        for kinds, key, allowed in _UNSUPPORTED_OPTIONS:
            if layer.kind in kinds and key in layer.options and layer.options[key][0] not in allowed:
                value, line = layer.options[key]
                problems.append(f"{layer.path}:{line}: [{layer.kind}] {key}={value} is not supported")
        act = layer.options.get("activation")
        if act is not None and act[0] not in ACTIVATIONS:
            problems.append(f"{layer.path}:{act[1]}: activation={act[0]} is not supported")
    if problems:
        raise TidlcError(f"{len(problems)} unsupported Darknet feature(s)", sections[0].path,
                         hint=f"supported layers: {', '.join(sorted(set(CONVERTERS)))}; "
                              f"activations: {', '.join(ACTIVATIONS)}", problems=problems)


def _input_type(net_section: Section) -> TensorType:
    inputs = net_section.integer("inputs", 0)
    height, width, channels = (net_section.integer(k, 0) for k in ("height", "width", "channels"))
    if height > 0 and width > 0 and channels > 0:
        return TensorType((1, channels, height, width), "f32", "NCHW")
    if inputs > 0:
        return TensorType((1, inputs), "f32")
    raise TidlcError("[net] needs width, height and channels (or inputs)", net_section.loc(),
                     hint="e.g. width=224 height=224 channels=3")


def convert(sections: list[Section], weights) -> Graph:
    """Build the graph of checked sections (see :func:`check_unsupported`)."""
    path = sections[0].path
    if len(sections) == 1:
        raise TidlcError("the cfg has no layers", path)
    name = os.path.splitext(os.path.basename(path))[0] or "darknet"
    builder = Builder(Graph(name=name), file=path)
    net = Net(builder, weights)
    data_loc = Loc("data", path, sections[0].line, 1)
    net.outputs.append(builder.input("data", _input_type(sections[0]), data_loc))
    for layer in sections[1:]:
        net.outputs.append(CONVERTERS[layer.kind](net, layer))
    weights.finish()
    builder.output(net.current, sections[-1].name)
    return builder.graph


def load(path: str, options=None) -> Graph:
    """The tidlc frontend entry point: ``NAME.cfg`` (+ weights) -> IR graph."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise TidlcError("not a text file", path, hint="a Darknet .cfg is text") from None
    except OSError as exc:
        raise TidlcError(f"cannot read: {exc.strerror}", path) from None
    sections = parse_cfg(text, path)
    check_unsupported(sections)
    return convert(sections, _weights_source(path, options))
