"""Ops declared as data: attribute validation with exact messages, the registry, MAC counts."""
import numpy as np
import pytest

import tidlc.ir.ops  # noqa: F401  (registers the builtin ops)
from tidlc.diagnostics import Loc, TidlcError
from tidlc.ir import Builder, TensorType
from tidlc.ir.opdef import OPS, REQUIRED, AttrSpec, OpDef, OpRegistry, a_int, get_opdef
from tidlc.ir.ops._common import same_as_first

CONV_ATTRS = "strides, pads, dilations, groups, act, act_params"
ACTS = "none, relu, relu6, clip, leaky_relu, sigmoid, tanh, hardsigmoid, hardswish, elu, gelu, prelu"


@pytest.fixture
def conv_builder():
    b = Builder(file="m.onnx")
    x = b.input("x", TensorType((1, 4, 8, 8), layout="NCHW"))
    w = b.const(np.ones((4, 4, 3, 3), np.float32))
    return b, x, w


@pytest.mark.parametrize("attrs, message", [
    ({"foo": 1, "bar": 2}, f"conv2d: unknown attribute(s) bar, foo; known: {CONV_ATTRS}"),
    ({"strides": "a"}, "conv2d: attribute 'strides': expected an integer"),
    ({"strides": (1, 2, 3)}, "conv2d: attribute 'strides': expected 2 values, got 3"),
    ({"pads": (1, 1)}, "conv2d: attribute 'pads': expected 4 values, got 2"),
    ({"strides": (0, 1)}, "conv2d: attribute 'strides': must be positive"),
    ({"pads": (0, -1, 0, 0)}, "conv2d: attribute 'pads': must not be negative"),
    ({"groups": 1.5}, "conv2d: attribute 'groups': expected an integer"),
    ({"groups": True}, "conv2d: attribute 'groups': expected an integer"),
    ({"act": "swish"}, f"conv2d: attribute 'act': 'swish' is not one of {ACTS}"),
    ({"act_params": ["x"]}, "conv2d: attribute 'act_params': expected a number"),
])
def test_attribute_validation_messages(conv_builder, attrs, message):
    b, x, w = conv_builder
    with pytest.raises(TidlcError) as info:
        b.op("conv2d", [x, w], name="conv1", **attrs)
    assert str(info.value) == f"m.onnx: 'conv1': error: {message}"


@pytest.mark.parametrize("attrs, message", [
    ({"groups": 3}, "conv2d input has 4 channels, weight expects 4 x 3 groups"),
    ({"act": "leaky_relu"}, "conv2d: activation leaky_relu takes 1 parameter(s), got 0"),
    ({"act": "relu", "act_params": [1.0]}, "conv2d: activation relu takes 0 parameter(s), got 1"),
    ({"pads": (0, 0, 0, 0), "dilations": (5, 5)}, "conv2d: window 11 larger than padded input 8"),
])
def test_type_inference_messages(conv_builder, attrs, message):
    b, x, w = conv_builder
    with pytest.raises(TidlcError) as info:
        b.op("conv2d", [x, w], name="conv1", **attrs)
    assert str(info.value) == f"m.onnx: 'conv1': error: {message}"


@pytest.mark.parametrize("kind, attrs, message", [
    ("pool2d", {}, "pool2d: missing required attribute 'mode'"),
    ("pool2d", {"mode": "max", "ceil_mode": 2}, "pool2d: attribute 'ceil_mode': expected true/false"),
    ("resize", {"scales": "x"}, "resize: attribute 'scales': expected a number"),
    ("reduce", {"op": "avg"}, "reduce: attribute 'op': 'avg' is not one of mean, sum, max, min, prod, l2, sumsquare"),
    ("lrn", {"size": -1}, "lrn: attribute 'size': must be positive"),
    ("softmax", {"axis": True}, "softmax: attribute 'axis': expected an integer"),
    ("clip", {"min": "a"}, "clip: attribute 'min': expected a number"),
    ("cast", {"dtype": "f8"}, ("cast: attribute 'dtype': 'f8' is not one of "
                               "f32, f64, f16, i8, u8, i16, u16, i32, u32, i64, bool")),
    ("relu", {"alpha": 1.0}, "relu: unknown attribute(s) alpha; known: none"),
])
def test_more_attribute_messages(kind, attrs, message):
    b = Builder()
    x = b.input("x", TensorType((1, 4, 8, 8)))
    with pytest.raises(TidlcError) as info:
        b.op(kind, [x], loc=Loc("node7", "m.prototxt", 30, 3), **attrs)
    assert str(info.value) == f"m.prototxt:30:3: 'node7': error: {message}"


def test_operand_count_message():
    b = Builder()
    x = b.input("x", TensorType((2,)))
    with pytest.raises(TidlcError, match=r"^'a': error: add takes 2 operand\(s\), got 1$"):
        b.op("add", [x], name="a")
    with pytest.raises(TidlcError, match=r"conv2d takes 2 to 3 operand\(s\), got 4$"):
        b.op("conv2d", [x, x, x, x])
    with pytest.raises(TidlcError, match=r"concat takes at least 1 operand\(s\), got 0$"):
        b.op("concat", [])


def test_normalisation_gives_canonical_values():
    spec = get_opdef("conv2d")
    attrs = spec.normalize_attrs({"strides": [np.int64(2), 2.0], "act_params": 1, "groups": np.int32(1)})
    assert attrs["strides"] == (2, 2) and all(type(v) is int for v in attrs["strides"])
    assert attrs["act_params"] == (1.0,) and type(attrs["act_params"][0]) is float
    assert attrs["pads"] == (0, 0, 0, 0) and attrs["act"] == "none"  # defaults filled in
    assert get_opdef("pool2d").normalize_attrs({"mode": "avg", "ceil_mode": np.bool_(True)})["ceil_mode"] is True
    assert get_opdef("pool2d").normalize_attrs({"mode": "avg", "ceil_mode": 1})["ceil_mode"] is True
    assert get_opdef("clip").normalize_attrs({"min": None}) == {"min": -np.inf, "max": np.inf}  # None = default
    assert get_opdef("transpose").normalize_attrs({"perm": np.array([1, 0])}) == {"perm": (1, 0)}
    assert get_opdef("unsqueeze").normalize_attrs({"axes": np.array(2)}) == {"axes": (2,)}
    assert get_opdef("unsqueeze").normalize_attrs({"axes": 2}) == {"axes": (2,)}


def test_every_builtin_op_is_fully_declared():
    for name in OPS.names():
        opdef = OPS.get(name)
        if opdef.plugin != "builtin":
            continue
        assert opdef.name == name
        assert opdef.doc, f"{name} has no doc"
        assert opdef.category in ("mac", "vector", "data", "shape", "io", "detection", "misc"), name
        assert callable(opdef.infer) and callable(opdef.compute), name
        for key, spec in opdef.attrs.items():
            if spec.default is not REQUIRED:  # a default must pass its own validation unchanged
                assert spec.normalize(spec.default) == spec.default, f"{name}.{key}"


def test_registry_rejects_a_second_definition_and_names_both_owners():
    registry = OpRegistry()
    first = OpDef("myop", ("x",), {}, infer=same_as_first, plugin="plugin_a")
    registry.register(first)
    registry.register(first)  # the same object again is fine (re-import)
    with pytest.raises(ValueError, match="^op 'myop' is defined twice: by plugin_a and by plugin_b$"):
        registry.register(OpDef("myop", ("x",), {}, infer=same_as_first, plugin="plugin_b"))
    assert registry.names() == ["myop"] and "myop" in registry
    registry.unregister("myop")
    assert registry.get("myop") is None


def test_unknown_op():
    with pytest.raises(KeyError, match="unknown op 'nope'"):
        get_opdef("nope")


def test_operand_arity():
    assert (get_opdef("conv2d").min_operands, get_opdef("conv2d").max_operands) == (2, 3)
    assert get_opdef("concat").arity == "at least 1"
    assert get_opdef("input").arity == "0"


def test_attr_spec_kinds_are_checked():
    with pytest.raises(ValueError):
        AttrSpec("complex")
    assert a_int(3).normalize(4.0) == 4


def _macs(kind, x_shape, w_shape, **attrs):
    b = Builder()
    x = b.input("x", TensorType(x_shape))
    w = b.const(np.ones(w_shape, np.float32))
    y = b.op(kind, [x, w], **attrs)
    return get_opdef(kind).macs(y.producer)


def test_mac_counts():
    # conv: every output element costs Cin/groups * kh * kw multiply-accumulates
    assert _macs("conv2d", (1, 8, 10, 10), (16, 8, 3, 3), pads=(1, 1, 1, 1)) == 16 * 10 * 10 * 8 * 9
    assert _macs("conv2d", (2, 8, 10, 10), (8, 1, 3, 3), groups=8, strides=(2, 2)) == 2 * 8 * 4 * 4 * 9
    # deconv: every input element is scattered to Cout/groups * kh * kw outputs
    assert _macs("deconv2d", (1, 4, 5, 5), (4, 3, 2, 2), strides=(2, 2)) == 4 * 5 * 5 * 3 * 4
    assert _macs("dense", (3, 64), (10, 64)) == 3 * 10 * 64
    assert _macs("matmul", (2, 5, 7), (7, 3)) == 2 * 5 * 3 * 7
    b = Builder()
    y = b.op("relu", [b.input("x", TensorType((4,)))])
    assert get_opdef("relu").macs(y.producer) == 0
    z = b.op("conv2d", [b.input("d", TensorType((1, 2, None, 4))), b.const(np.ones((2, 2, 1, 1), np.float32))])
    assert get_opdef("conv2d").macs(z.producer) == 0  # unknown until the shape is known
