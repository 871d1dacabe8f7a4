"""Caffe NetSpec: inputs, phase rules, V1 layer types, conv/pool geometry (netspec.py)."""
from __future__ import annotations

import pytest
from tidlc.frontends.caffe.netspec import (
    V1_LAYER_TYPES,
    conv_params,
    parse_netspec,
    pool_params,
    v1_layer_type,
)
from tidlc.frontends.caffe.prototxt import Message, parse_prototxt

from tidlc.diagnostics import TidlcError

# ----------------------------------------------------------------------------- NetSpec

def test_inputs_from_input_shape_and_input_dim():
    net = parse_netspec("name: 'n'\ninput: 'a'\ninput: 'b'\ninput_shape { dim: 1 dim: 3 }\n"
                        "input_shape { dim: 2 }\nlayer { name: 'l' type: 'ReLU' bottom: 'a' "
                        "top: 'a' }")
    assert net.name == "n" and [(i.name, i.shape) for i in net.inputs] == [("a", (1, 3)),
                                                                           ("b", (2,))]
    net = parse_netspec("input: 'a' input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 9\n"
                        "input: 'b' input_dim: 1 input_dim: 1 input_dim: 2 input_dim: 2")
    assert [(i.name, i.shape) for i in net.inputs] == [("a", (1, 3, 8, 9)), ("b", (1, 1, 2, 2))]
    assert net.inputs[1].loc.line == 2 and net.inputs[1].loc.name == "b"
    assert [(i.name, i.shape) for i in parse_netspec("input: 'x'").inputs] == [("x", None)]


def test_input_layers():
    net = parse_netspec("""
    layer { name: "in" type: "Input" top: "img" top: "aux"
            input_param { shape { dim: 1 dim: 3 dim: 4 dim: 5 } shape: { dim: 1 dim: 7 } } }
    layer { name: "one" type: "Input" top: "x" top: "y" input_param { shape { dim: 2 } } }
    layer { name: "conv" type: "Convolution" bottom: "img" top: "c" }
    """)
    assert [(i.name, i.shape) for i in net.inputs] == [
        ("img", (1, 3, 4, 5)), ("aux", (1, 7)), ("x", (2,)), ("y", (2,))]
    assert [layer.name for layer in net.layers] == ["conv"]
    assert net.inputs[0].loc.name == "in"


@pytest.mark.parametrize("text, message", [
    ("input: 'a' input_dim: 1 input_dim: 3", "2 'input_dim' values for 1 input(s)"),
    ("input: 'a' input: 'b' input_shape { dim: 1 }", "1 input shape(s) for 2 input(s)"),
    ("input: 'a' input_shape { dim: 1 } input_dim: 1", "not both"),
    ("input: 'a' input_shape { dim: -1 }", "negative input dimension -1"),
    ("layer { type: 'Input' top: 'a' top: 'b' top: 'c' input_param { shape {} shape {} } }",
     "3 tops but 2 shapes"),
    ("layer { name: 'x' } ", "layer has no 'type'"),
    ("layers { type: NOT_A_TYPE }", "unknown V1 layer type NOT_A_TYPE"),
    ("layers { type: 99 }", "unknown V1 layer type 99"),
    ("layer { type: 'ReLU' } layers { type: RELU }", "mixes 'layer' (V2) and 'layers' (V1)"),
    ("layer { type: 'ReLU' include { phase: TEST } exclude { phase: TRAIN } }",
     "'include' or 'exclude' rules, not both"),
    ("layer { type: 'ReLU' include { phase: VALIDATION } }", "must be one of TRAIN, TEST"),
])
def test_netspec_errors(text, message):
    with pytest.raises(TidlcError, match=None) as info:
        parse_netspec(text, "n.prototxt")
    assert message in str(info.value) and str(info.value).startswith("n.prototxt:1:")


def test_v1_layers_map_to_v2_types():
    net = parse_netspec("""
    name: "old"
    layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
             convolution_param { num_output: 8 kernel_size: 3 } }
    layers { name: "relu1" type: 18 bottom: "conv1" top: "conv1" }
    layers { name: "ip" type: INNER_PRODUCT bottom: "conv1" top: "ip" }
    layers { name: "loss" type: SOFTMAX_LOSS bottom: "ip" top: "loss" }
    """)
    assert [(layer.name, layer.type, layer.legacy) for layer in net.layers] == [
        ("conv1", "Convolution", True), ("relu1", "ReLU", True), ("ip", "InnerProduct", True),
        ("loss", "SoftmaxWithLoss", True)]
    assert conv_params(net.layers[0].param("convolution_param")).kernel == (3, 3)
    assert net.layers[1].bottom == ["conv1"] and net.layers[1].top == ["conv1"]


@pytest.mark.parametrize("v1, number, v2", [
    ("CONVOLUTION", 4, "Convolution"), ("INNER_PRODUCT", 14, "InnerProduct"),
    ("POOLING", 17, "Pooling"), ("RELU", 18, "ReLU"), ("LRN", 15, "LRN"),
    ("SOFTMAX", 20, "Softmax"), ("CONCAT", 3, "Concat"), ("ELTWISE", 25, "Eltwise"),
    ("DROPOUT", 6, "Dropout"), ("DATA", 5, "Data"), ("SPLIT", 22, "Split"), ("SLICE", 33, "Slice"),
    ("FLATTEN", 8, "Flatten"), ("SIGMOID", 19, "Sigmoid"), ("TANH", 23, "TanH"),
    ("POWER", 26, "Power"), ("BNLL", 2, "BNLL"), ("ABSVAL", 35, "AbsVal"),
    ("ARGMAX", 30, "ArgMax"), ("DECONVOLUTION", 39, "Deconvolution"),
    ("THRESHOLD", 31, "Threshold"),
])
def test_v1_type_table(v1, number, v2):
    assert V1_LAYER_TYPES[v1] == (number, v2)
    assert v1_layer_type(v1) == v1_layer_type(number) == v2


def test_v1_table_numbers_are_unique():
    numbers = [number for number, _ in V1_LAYER_TYPES.values()]
    assert len(numbers) == len(set(numbers)) == 40 and v1_layer_type(1000) is None


def test_phase_rules():
    text = """
    layer { name: "always" type: "ReLU" }
    layer { name: "train_only" type: "Dropout" include { phase: TRAIN } }
    layer { name: "test_only" type: "Accuracy" include { phase: TEST } }
    layer { name: "test_by_number" type: "Accuracy" include { phase: 1 } }
    layer { name: "not_test" type: "Data" exclude { phase: TEST } }
    layer { name: "either" type: "ReLU" include { phase: TRAIN } include { phase: TEST } }
    layer { name: "phase_field" type: "ReLU" phase: TRAIN }
    layer { name: "staged" type: "ReLU" include { phase: TEST stage: "deploy" } }
    layer { name: "not_staged" type: "ReLU" include { not_stage: "deploy" } }
    layer { name: "level" type: "ReLU" include { min_level: 1 } }
    """
    test = parse_netspec(text)
    assert [layer.name for layer in test.layers] == [
        "always", "test_only", "test_by_number", "either", "not_staged"]
    train = parse_netspec(text, phase="TRAIN")
    assert [layer.name for layer in train.layers] == [
        "always", "train_only", "not_test", "either", "phase_field", "not_staged"]
    from tidlc.frontends.caffe.netspec import NetSpec
    staged = NetSpec.from_message(parse_prototxt(text), stages=("deploy",), level=1)
    assert [layer.name for layer in staged.layers] == [
        "always", "test_only", "test_by_number", "either", "staged", "level"]


def test_layer_spec_helpers():
    net = parse_netspec("layer { name: 'c' type: ' Convolution ' bottom: 'a' top: 'b'\n"
                        "  convolution_param { num_output: 4 kernel_size: 1 } }\n"
                        "layer { type: 'ReLU' }", "f.prototxt")
    conv = net.layer("c")
    assert conv.type == "Convolution" and conv.has_param("convolution_param")
    assert conv.param("pooling_param") == Message() and not conv.has_param("pooling_param")
    assert conv.param("convolution_param").get_int("num_output") == 4
    assert net.layers[1].name == "ReLU_1"  # unnamed layers get type + index
    with pytest.raises(TidlcError, match="no layer named 'zzz'"):
        net.layer("zzz")


# ----------------------------------------------------------------------------- geometry

def conv(text: str):
    return conv_params(parse_prototxt(text, "c.prototxt"))


def test_conv_params_forms():
    c = conv("num_output: 8 kernel_size: 3")
    assert (c.kernel, c.stride, c.pad, c.dilation, c.group, c.bias_term, c.axis) == (
        (3, 3), (1, 1), (0, 0), (1, 1), 1, True, 1)
    c = conv("num_output: 8 kernel_size: 3 kernel_size: 5 stride: 2 pad: 1 pad: 2 dilation: 2 "
             "group: 4 bias_term: false")
    assert (c.kernel, c.stride, c.pad, c.dilation, c.group, c.bias_term) == (
        (3, 5), (2, 2), (1, 2), (2, 2), 4, False)
    assert c.pads == (1, 2, 1, 2)
    c = conv("num_output: 8 kernel_h: 1 kernel_w: 7 stride_h: 2 stride_w: 1 pad_h: 0 pad_w: 3")
    assert (c.kernel, c.stride, c.pad) == ((1, 7), (2, 1), (0, 3))


@pytest.mark.parametrize("text, message", [
    ("num_output: 8", "missing field 'kernel_size'"),
    ("num_output: 8 kernel_size: 3 kernel_h: 3 kernel_w: 3",
     "give either 'kernel_size' or 'kernel_h'/'kernel_w', not both"),
    ("num_output: 8 kernel_h: 3", "'kernel_h' and 'kernel_w' must be given together"),
    ("num_output: 8 kernel_size: [1, 2, 3]", "3 values; only 2-D"),
    ("num_output: 8 kernel_size: 3 stride: 0", "convolution stride must be positive"),
    ("num_output: 6 kernel_size: 3 group: 4", "not a multiple of group"),
    ("num_output: 8 kernel_size: 2.5", "must be an integer"),
])
def test_conv_params_errors(text, message):
    with pytest.raises(TidlcError) as info:
        conv(text)
    assert message in str(info.value) and str(info.value).startswith("c.prototxt:1:")


def test_pool_params():
    p = pool_params(parse_prototxt("pool: AVE kernel_size: 3 stride: 2 pad: 1"))
    assert (p.method, p.kernel, p.stride, p.pad, p.global_pooling, p.ceil_mode) == (
        "AVE", (3, 3), (2, 2), (1, 1), False, True)
    p = pool_params(parse_prototxt("pool: 0 global_pooling: true round_mode: FLOOR"))
    assert (p.method, p.kernel, p.global_pooling, p.ceil_mode) == ("MAX", None, True, False)
    p = pool_params(parse_prototxt("kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2"))
    assert (p.kernel, p.stride, p.pads) == ((2, 3), (1, 2), (0, 0, 0, 0))
    for bad in ("global_pooling: true kernel_size: 2", "global_pooling: true stride: 2",
                "kernel_size: 2 pad: 2", "pool: MIN kernel_size: 2"):
        with pytest.raises(TidlcError):
            pool_params(parse_prototxt(bad))
