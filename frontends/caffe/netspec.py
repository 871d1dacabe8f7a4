"""A Caffe NetParameter normalised: inputs, TEST-phase layers, geometry helpers.

:func:`load_netspec` / :class:`NetSpec` turn a parsed prototxt
(:mod:`tidlc.frontends.caffe.prototxt`) into what a lowering needs: the net
inputs in all their historical spellings (``input:`` + ``input_shape`` /
``input_dim``, ``Input`` layers), the layers of one phase (``include`` /
``exclude`` rules as ``caffe::Net::StateMeetsRule``) with V2 type names
(legacy V1 ``layers { type: CONVOLUTION }`` mapped), and helpers that
resolve convolution/pooling geometry (:func:`conv_params`,
:func:`pool_params`).

Example::

    net = load_netspec("deploy.prototxt")
    for layer in net.layers:
        if layer.type == "Convolution":
            conv = conv_params(layer.param("convolution_param"))
            print(layer.name, conv.kernel, conv.stride, conv.pads, conv.group)
"""
from __future__ import annotations

from pathlib import Path

import attrs

from tidlc import limits
from tidlc.diagnostics import Loc, TidlcError

from .prototxt import Enum, Field, Message, check_field, field_str, load_prototxt, parse_prototxt

__all__ = [
    "ELTWISE_OP",
    "LRN_NORM_REGION",
    "PHASE",
    "POOL_METHOD",
    "POOL_ROUND_MODE",
    "V1_LAYER_TYPES",
    "ConvParams",
    "InputSpec",
    "LayerSpec",
    "NetSpec",
    "PoolParams",
    "conv_params",
    "load_netspec",
    "parse_netspec",
    "pool_params",
    "v1_layer_type",
]


# ----------------------------------------------------------------------------- enums

# Verified against BVLC caffe.proto (V1LayerParameter.LayerType) and the V2 names
# from upgrade_proto.cpp (UpgradeV1LayerType): V1 identifier -> (number, V2 type).
V1_LAYER_TYPES: dict[str, tuple[int, str]] = {
    "NONE": (0, ""), "ACCURACY": (1, "Accuracy"), "BNLL": (2, "BNLL"), "CONCAT": (3, "Concat"),
    "CONVOLUTION": (4, "Convolution"), "DATA": (5, "Data"), "DROPOUT": (6, "Dropout"),
    "EUCLIDEAN_LOSS": (7, "EuclideanLoss"), "FLATTEN": (8, "Flatten"),
    "HDF5_DATA": (9, "HDF5Data"), "HDF5_OUTPUT": (10, "HDF5Output"), "IM2COL": (11, "Im2col"),
    "IMAGE_DATA": (12, "ImageData"), "INFOGAIN_LOSS": (13, "InfogainLoss"),
    "INNER_PRODUCT": (14, "InnerProduct"), "LRN": (15, "LRN"),
    "MULTINOMIAL_LOGISTIC_LOSS": (16, "MultinomialLogisticLoss"), "POOLING": (17, "Pooling"),
    "RELU": (18, "ReLU"), "SIGMOID": (19, "Sigmoid"), "SOFTMAX": (20, "Softmax"),
    "SOFTMAX_LOSS": (21, "SoftmaxWithLoss"), "SPLIT": (22, "Split"), "TANH": (23, "TanH"),
    "WINDOW_DATA": (24, "WindowData"), "ELTWISE": (25, "Eltwise"), "POWER": (26, "Power"),
    "SIGMOID_CROSS_ENTROPY_LOSS": (27, "SigmoidCrossEntropyLoss"),
    "HINGE_LOSS": (28, "HingeLoss"), "MEMORY_DATA": (29, "MemoryData"),
    "ARGMAX": (30, "ArgMax"), "THRESHOLD": (31, "Threshold"), "DUMMY_DATA": (32, "DummyData"),
    "SLICE": (33, "Slice"), "MVN": (34, "MVN"), "ABSVAL": (35, "AbsVal"),
    "SILENCE": (36, "Silence"), "CONTRASTIVE_LOSS": (37, "ContrastiveLoss"), "EXP": (38, "Exp"),
    "DECONVOLUTION": (39, "Deconvolution"),
}
_V1_BY_NUMBER = {number: v2 for number, v2 in V1_LAYER_TYPES.values()}

# caffe.proto enums the lowering needs most (identifier -> number).
PHASE = {"TRAIN": 0, "TEST": 1}
POOL_METHOD = {"MAX": 0, "AVE": 1, "STOCHASTIC": 2}
POOL_ROUND_MODE = {"CEIL": 0, "FLOOR": 1}
ELTWISE_OP = {"PROD": 0, "SUM": 1, "MAX": 2}
LRN_NORM_REGION = {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1}


def v1_layer_type(value: str | int) -> str | None:
    """V2 type string for a V1 LayerType given by identifier or number; None if unknown."""
    if isinstance(value, str):
        entry = V1_LAYER_TYPES.get(value)
        return entry[1] if entry else None
    return _V1_BY_NUMBER.get(value)


# ----------------------------------------------------------------------------- net spec

@attrs.define(eq=False)
class InputSpec:
    """A net input: its blob name and shape (None when the file gives none)."""

    name: str
    shape: tuple[int, ...] | None
    loc: Loc


@attrs.define(eq=False)
class LayerSpec:
    """One layer in V2 terms. ``message`` is the raw layer message for anything else."""

    name: str
    type: str
    bottom: list[str]
    top: list[str]
    message: Message
    loc: Loc
    legacy: bool = False  # written as a V1 `layers { ... }` entry

    def param(self, name: str) -> Message:
        """A parameter sub-message (``"convolution_param"``); empty Message if absent."""
        return self.message.message(name)

    def has_param(self, name: str) -> bool:
        return self.message.has(name)


@attrs.define(eq=False)
class NetSpec:
    """A Caffe net for one phase: inputs, then layers in file order.

    ``Input`` layers become :class:`InputSpec` entries and are not repeated in
    ``layers``; layers that do not run in ``phase`` are dropped.
    """

    name: str
    inputs: list[InputSpec]
    layers: list[LayerSpec]
    message: Message
    phase: str = "TEST"

    def layer(self, name: str) -> LayerSpec:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise TidlcError(f"no layer named '{name}'", loc=self.message.loc)

    @classmethod
    def from_message(cls, message: Message, phase: str = "TEST", level: int = 0,
                     stages: tuple[str, ...] = ()) -> NetSpec:
        """Normalise a parsed NetParameter (see the class docstring)."""
        v2, v1 = message.fields_named("layer"), message.fields_named("layers")
        if v2 and v1:
            raise TidlcError("the net mixes 'layer' (V2) and 'layers' (V1) entries",
                             loc=v1[0].loc, hint="Caffe rejects this too; use one form")
        entries = v2 or v1
        limits.check("ops", len(entries) + len(message.fields_named("input")), "layers and inputs",
                     message.loc)
        inputs = _net_inputs(message)
        layers = []
        for index, f in enumerate(entries):
            msg = check_field(f, isinstance(f.value, Message), "a message")
            if not _included(msg, phase, level, stages):
                continue
            layer = _layer_spec(msg, f, index, legacy=bool(v1))
            if layer.type == "Input":
                inputs += _input_layer(layer)
            else:
                layers.append(layer)
        return cls(message.get_str("name", ""), inputs, layers, message, phase)


def parse_netspec(text: str, filename: str = "<string>", phase: str = "TEST") -> NetSpec:
    """Parse prototxt text straight to a :class:`NetSpec`."""
    return NetSpec.from_message(parse_prototxt(text, filename), phase)


def load_netspec(path: str | Path, phase: str = "TEST") -> NetSpec:
    """Read a .prototxt file straight to a :class:`NetSpec`."""
    return NetSpec.from_message(load_prototxt(path), phase)


def _layer_spec(msg: Message, f: Field, index: int, legacy: bool) -> LayerSpec:
    type_field = msg.field("type")
    if type_field is None:
        raise TidlcError("layer has no 'type'", loc=f.loc)
    raw = type_field.value
    if isinstance(raw, str):
        layer_type: str | None = raw.strip()
    elif isinstance(raw, Enum) or (isinstance(raw, int) and not isinstance(raw, bool)):
        layer_type = v1_layer_type(raw.name if isinstance(raw, Enum) else raw)
        if layer_type is None:
            raise TidlcError(f"unknown V1 layer type {raw}", loc=type_field.loc,
                             hint="V1 types are caffe.proto's V1LayerParameter.LayerType")
    else:
        layer_type = check_field(type_field, False, "a string or a V1 layer type")
    if not layer_type:
        raise TidlcError("layer type is empty", loc=type_field.loc)
    name = msg.get_str("name", "") or f"{layer_type}_{index}"
    loc = attrs.evolve(f.loc, name=name)
    return LayerSpec(name, layer_type, msg.get_strs("bottom"), msg.get_strs("top"), msg, loc,
                     legacy)


def _rule_met(rule: Message, phase: str, level: int, stages: tuple[str, ...]) -> bool:
    """caffe::Net::StateMeetsRule for one NetStateRule."""
    if rule.has("phase") and rule.get_enum("phase", PHASE) != phase:
        return False
    if level < rule.get_int("min_level", level) or level > rule.get_int("max_level", level):
        return False
    if any(s not in stages for s in rule.get_strs("stage")):
        return False
    return not any(s in stages for s in rule.get_strs("not_stage"))


def _included(msg: Message, phase: str, level: int, stages: tuple[str, ...]) -> bool:
    includes, excludes = msg.messages("include"), msg.messages("exclude")
    if includes and excludes:
        raise TidlcError("a layer may have 'include' or 'exclude' rules, not both",
                         loc=msg.fields_named("exclude")[0].loc)
    # `phase:` on a layer is normally set by Caffe itself; written by hand it
    # means "only in this phase", so honour it like an include rule.
    if msg.has("phase") and msg.get_enum("phase", PHASE) != phase:
        return False
    if includes:
        return any(_rule_met(r, phase, level, stages) for r in includes)
    return not any(_rule_met(r, phase, level, stages) for r in excludes)


def _shape(msg: Message) -> tuple[int, ...]:
    """A BlobShape message: ``dim`` values (negative is an error)."""
    dims = msg.get_ints("dim")
    for f, d in zip(msg.fields_named("dim"), dims, strict=True):
        if d < 0:
            raise TidlcError(f"negative input dimension {d}", loc=f.loc)
    return tuple(dims)


def _net_inputs(net: Message) -> list[InputSpec]:
    """Top-level ``input:`` with ``input_shape {}`` or 4 x ``input_dim:`` each."""
    names = net.fields_named("input")
    shapes = [_shape(m) for m in net.messages("input_shape")]
    dim_fields = net.fields_named("input_dim")
    if dim_fields:
        if shapes:
            raise TidlcError("give 'input_shape' or 'input_dim', not both", loc=dim_fields[0].loc)
        dims = net.get_ints("input_dim")
        if len(dims) != 4 * len(names):
            raise TidlcError(f"{len(dims)} 'input_dim' values for {len(names)} input(s); "
                             "expected 4 per input", loc=dim_fields[0].loc)
        shapes = [tuple(dims[i:i + 4]) for i in range(0, len(dims), 4)]
    if shapes and len(shapes) != len(names):
        where = net.fields_named("input_shape") or dim_fields
        raise TidlcError(f"{len(shapes)} input shape(s) for {len(names)} input(s)",
                         loc=where[0].loc)
    return [InputSpec(field_str(f), shapes[i] if shapes else None,
                      attrs.evolve(f.loc, name=field_str(f))) for i, f in enumerate(names)]


def _input_layer(layer: LayerSpec) -> list[InputSpec]:
    """An ``Input`` layer: one shape per top, or one shape shared by all tops."""
    p = layer.param("input_param")
    shapes = [_shape(m) for m in p.messages("shape")]
    if len(shapes) not in (0, 1, len(layer.top)):
        raise TidlcError(f"Input layer has {len(layer.top)} tops but {len(shapes)} shapes",
                         loc=layer.loc)
    return [InputSpec(top, (shapes[i] if len(shapes) > 1 else shapes[0]) if shapes else None,
                      layer.loc) for i, top in enumerate(layer.top)]


# ----------------------------------------------------------------------------- geometry

def _pads(pad: tuple[int, int]) -> tuple[int, int, int, int]:
    return (pad[0], pad[1], pad[0], pad[1])


@attrs.frozen
class ConvParams:
    """convolution_param resolved to 2-D: every pair is (h, w)."""

    num_output: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int]
    group: int
    bias_term: bool
    axis: int

    @property
    def pads(self) -> tuple[int, int, int, int]:
        """(top, left, bottom, right); Caffe pads symmetrically."""
        return _pads(self.pad)


def conv_params(p: Message) -> ConvParams:
    """Resolve a Convolution/Deconvolution ``convolution_param`` (Caffe's defaults)."""
    params = ConvParams(
        num_output=p.get_int("num_output"), kernel=p.pair("kernel_size"),
        stride=p.pair("stride", 1), pad=p.pair("pad", 0), dilation=p.pair("dilation", 1),
        group=p.get_int("group", 1), bias_term=p.get_bool("bias_term", True),
        axis=p.get_int("axis", 1))
    for what in ("kernel", "stride", "dilation"):
        if min(getattr(params, what)) < 1:
            raise TidlcError(f"convolution {what} must be positive, got {getattr(params, what)}",
                             loc=p.loc)
    if min(params.pad) < 0:
        raise TidlcError(f"convolution pad must not be negative, got {params.pad}", loc=p.loc)
    if params.num_output < 1:
        raise TidlcError(f"num_output must be positive, got {params.num_output}",
                         loc=p.field("num_output").loc)
    if params.group < 1 or params.num_output % params.group:
        raise TidlcError(f"num_output {params.num_output} is not a multiple of group "
                         f"{params.group}", loc=p.loc)
    return params


@attrs.frozen
class PoolParams:
    """pooling_param resolved to 2-D. ``kernel`` is None for global pooling."""

    method: str  # "MAX", "AVE" or "STOCHASTIC"
    kernel: tuple[int, int] | None
    stride: tuple[int, int]
    pad: tuple[int, int]
    global_pooling: bool
    ceil_mode: bool  # Caffe rounds the output size up unless round_mode: FLOOR

    @property
    def pads(self) -> tuple[int, int, int, int]:
        return _pads(self.pad)


def pool_params(p: Message) -> PoolParams:
    """Resolve a Pooling ``pooling_param`` (with Caffe's checks on global pooling)."""
    global_pooling = p.get_bool("global_pooling", False)
    has_kernel = p.has("kernel_size") or p.has("kernel_h") or p.has("kernel_w")
    if global_pooling and has_kernel:
        raise TidlcError("global_pooling pools over the whole input; drop the kernel size",
                         loc=p.loc)
    kernel = None if global_pooling else p.pair("kernel_size")
    stride, pad = p.pair("stride", 1), p.pair("pad", 0)
    if global_pooling and (stride != (1, 1) or pad != (0, 0)):
        raise TidlcError("global_pooling requires stride 1 and pad 0", loc=p.loc)
    if kernel is not None and (min(kernel) < 1 or min(stride) < 1 or min(pad) < 0
                               or pad[0] >= kernel[0] or pad[1] >= kernel[1]):
        raise TidlcError(f"bad pooling window: kernel {kernel}, stride {stride}, pad {pad}",
                         loc=p.loc, hint="Caffe needs kernel >= 1, stride >= 1, pad < kernel")
    return PoolParams(p.get_enum("pool", POOL_METHOD, "MAX"), kernel, stride, pad,
                      global_pooling, p.get_enum("round_mode", POOL_ROUND_MODE, "CEIL") == "CEIL")
