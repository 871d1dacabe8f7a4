"""The IR text form: print(parse(text)) == text on hand-written graphs, sidecar weights.

The graphs below together use every builtin op (checked by
``test_every_builtin_op_has_a_round_trip_graph``: adding an op without adding
it here fails), types with ``?`` dims, unranked ``*x``, scalars, layouts,
per-tensor and per-channel quantization, escaped strings, quoted symbols,
splat and inline dense constants, and locations.
"""
import os

import numpy as np
import pytest

import tidlc.ir.ops  # noqa: F401  (registers the builtin ops)
from tidlc.diagnostics import Loc, TidlcError
from tidlc.ir import Builder, TensorType, parse_graph, print_graph, verify
from tidlc.ir.opdef import OPS
from tidlc.ir.printer import is_splat
from tidlc.ir.weights import read_weights, write_weights

CNN = r"""tidlc.graph @cnn {source = "cnn.prototxt", weights = "cnn.weights"} {
  %data = input "data" : tensor<1x4x8x8xf32, NCHW> loc("" "cnn.prototxt":2:1)
  %0 = const @"gpu_0/conv1_w_0" : tensor<8x4x3x3xf32>
  %1 = const dense<0.5> : tensor<8xf32> loc("conv1.b")
  %2 = conv2d(%data, %0, %1) {strides = [2, 2], pads = [1, 0, 1, 0], act = "relu"} : tensor<1x8x4x3xf32, NCHW> loc("conv1" "cnn.prototxt":12:5)
  %3 = const @conv2.w : tensor<8x2x3x3xf32>
  %4 = conv2d(%2, %3) {pads = [2, 2, 2, 2], dilations = [2, 2], groups = 4, act = "leaky_relu", act_params = [0.1]} : tensor<1x8x4x3xf32, NCHW> loc("conv2")
  %5 = const dense<[1.0, 0.5, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0]> : tensor<8xf32>
  %6 = const dense<0.0> : tensor<8xf32>
  %7 = const dense<1.0> : tensor<8xf32>
  %8 = batchnorm(%4, %5, %6, %6, %7) {epsilon = 0.001} : tensor<1x8x4x3xf32, NCHW> loc("bn")
  %9 = scale(%8, %5, %6) {act = "relu6"} : tensor<1x8x4x3xf32, NCHW>
  %10 = const dense<[0.25]> : tensor<1xf32>
  %11 = prelu(%9, %10) : tensor<1x8x4x3xf32, NCHW>
  %12 = pool2d(%11) {mode = "max", strides = [2, 2], kernel = [2, 2], ceil_mode = true} : tensor<1x8x2x2xf32, NCHW>
  %13 = pool2d(%11) {mode = "avg", pads = [1, 1, 1, 1], kernel = [3, 3], count_include_pad = true} : tensor<1x8x4x3xf32, NCHW>
  %14 = const @deconv.w : tensor<8x2x4x4xf32>
  %15 = deconv2d(%13, %14) {strides = [2, 2], pads = [1, 1, 1, 1], groups = 2, output_padding = [1, 0]} : tensor<1x4x9x6xf32, NCHW>
  %16 = depth_to_space(%11) {block = 2, mode = "CRD"} : tensor<1x2x8x6xf32, NCHW>
  %17 = shuffle_channel(%11) {groups = 2} : tensor<1x8x4x3xf32, NCHW>
  %18 = lrn(%17) {size = 3, alpha = 0.0002} : tensor<1x8x4x3xf32, NCHW>
  %19 = resize(%12) {scales = [1.0, 1.0, 2.0, 1.5], mode = "linear", coord_mode = "half_pixel"} : tensor<1x8x4x3xf32, NCHW>
  %20 = concat(%18, %19) : tensor<1x16x4x3xf32, NCHW>
  %21 = global_pool(%20) {mode = "avg"} : tensor<1x16x1x1xf32, NCHW>
  %22 = flatten(%21) : tensor<1x16xf32>
  %23 = const @fc.w : tensor<10x16xf32>
  %24 = dense(%22, %23) : tensor<1x10xf32> loc("fc")
  %25 = const dense<[1.5]> : tensor<1xf32>
  %26 = layernorm(%24, %25) {epsilon = 0.001} : tensor<1x10xf32>
  %27 = softmax(%26) {log = true} : tensor<1x10xf32>
  %28 = argmax(%27) {keepdims = false} : tensor<1xi64>
  output(%27, %28, %15, %16) {names = ["prob", "label", "up", "d2s"]}
}
"""

ELTWISE = r"""tidlc.graph @eltwise {
  %x = input "x" : tensor<?x3xf32>
  %y = input "y" : tensor<?x3xf32>
  %0 = abs(%x) : tensor<?x3xf32>
  %1 = ceil(%0) : tensor<?x3xf32>
  %2 = floor(%1) : tensor<?x3xf32>
  %3 = erf(%2) : tensor<?x3xf32>
  %4 = exp(%3) : tensor<?x3xf32>
  %5 = log(%4) : tensor<?x3xf32>
  %6 = neg(%5) : tensor<?x3xf32>
  %7 = reciprocal(%6) : tensor<?x3xf32>
  %8 = sqrt(%7) : tensor<?x3xf32>
  %9 = softplus(%8) : tensor<?x3xf32>
  %10 = relu(%9) : tensor<?x3xf32>
  %11 = relu6(%10) : tensor<?x3xf32>
  %12 = sigmoid(%11) : tensor<?x3xf32>
  %13 = tanh(%12) : tensor<?x3xf32>
  %14 = hardswish(%13) : tensor<?x3xf32>
  %15 = gelu(%14) : tensor<?x3xf32>
  %16 = clip(%15) {min = -1.5, max = 2.5} : tensor<?x3xf32>
  %17 = leaky_relu(%16) {alpha = 0.2} : tensor<?x3xf32>
  %18 = elu(%17) {alpha = 0.5} : tensor<?x3xf32>
  %19 = hardsigmoid(%18) {alpha = 0.25, beta = 0.375} : tensor<?x3xf32>
  %20 = add(%19, %y) {act = "clip", act_params = [-inf, 1.0]} : tensor<?x3xf32>
  %21 = sub(%20, %y) : tensor<?x3xf32>
  %22 = const dense<[1.0, 2.0, -3.0]> : tensor<3xf32>
  %23 = mul(%21, %22) {act = "sigmoid"} : tensor<?x3xf32>
  %24 = div(%23, %22) : tensor<?x3xf32>
  %25 = max(%24, %x) : tensor<?x3xf32>
  %26 = min(%25, %y) {act = "hardsigmoid", act_params = [0.2, 0.5]} : tensor<?x3xf32>
  %27 = const dense<2.0> : tensor<1x3xf32>
  %28 = pow(%26, %27) : tensor<?x3xf32>
  %29 = const dense<[true, false, true]> : tensor<3xbool>
  %30 = where(%29, %28, %x) : tensor<?x3xf32>
  %31 = identity(%30) : tensor<?x3xf32>
  %32 = dropout(%31) {ratio = 0.25} : tensor<?x3xf32>
  %33 = cast(%32) {dtype = "f16"} : tensor<?x3xf16>
  output(%33) {names = ["z"]}
}
"""

SHAPES = r"""tidlc.graph @shapes {
  %x = input "x" : tensor<2x3x4xf32>
  %0 = shape(%x) : tensor<3xi64>
  %1 = const dense<[0, -1]> : tensor<2xi64>
  %2 = gather(%0, %1) : tensor<2xi64>
  %3 = const dense<4> : tensor<i64>
  %4 = unsqueeze(%3) {axes = [0]} : tensor<1xi64>
  %5 = concat(%2, %4) {axis = 0} : tensor<3xi64>
  %6 = const dense<[1, 3]> : tensor<2xi64>
  %7 = constant_of_shape(%6) {value = 1.0} : tensor<1x3xf32>
  %8 = reshape(%x, %5) : tensor<2x4x3xf32>
  %9 = reshape(%8) {shape = [0, -1]} : tensor<2x12xf32>
  %10 = const dense<[2, 1, 3]> : tensor<3xi64>
  %11 = expand(%7, %10) : tensor<2x1x3xf32>
  %12 = squeeze(%11) {axes = [1]} : tensor<2x3xf32>
  %13 = transpose(%8) {perm = [0, 2, 1]} : tensor<2x3x4xf32>
  %14 = slice(%13) {starts = [0, 3], ends = [2, -100], axes = [1, 2], steps = [1, -2]} : tensor<2x2x2xf32>
  %15, %16 = split(%x) {axis = 2, sizes = [1, 3]} : tensor<2x3x1xf32>, tensor<2x3x3xf32>
  %17 = pad(%16) {pads = [0, 1, 0, 0, -1, 2], mode = "reflect"} : tensor<2x3x5xf32>
  %18 = flatten(%17) {axis = -1} : tensor<6x5xf32>
  %19 = reduce(%14) {op = "l2", axes = [-1], keepdims = false} : tensor<2x2xf32>
  %20 = const dense<1.0> : tensor<4x5xf32>
  %21 = matmul(%13, %20) : tensor<2x3x5xf32>
  %22 = constant_of_shape(%0) {dtype = "i32"} : tensor<?x?x?xi32>
  output(%9, %12, %15, %18, %19, %21, %22) {names = ["a", "b", "c", "d", "e", "f", "g"]}
}
"""

TYPES = r"""tidlc.graph @"types \"and\" quant" {flags = [true, false], nested = [[1, 2], [3.5, "s"]], note = "tab\there\nnewline \\ \"quoted\"", "onnx.opset" = 13} {
  %any = input "any" : tensor<*xf32>
  %q = input "q" : tensor<1x4x2x2xu8, NCHW, !q<bits=8, signed=false, scale=0.25, zp=3, shift=5>> loc("" "model.onnx")
  %0 = input "image/in:0" : tensor<1x2x2x4xf32, NHWC> loc("image \"in\"" "path with spaces/m.tflite":7:0)
  %s = input "s" : tensor<f32>
  %1 = relu(%any) : tensor<*xf32>
  %2 = relu(%q) : tensor<1x4x2x2xu8, NCHW, !q<bits=8, signed=false, scale=0.25, zp=3, shift=5>>
  %3 = const dense<[1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12]> : tensor<4x3xi8, !q<bits=8, signed=true, scale=[0.5, 0.25, 0.125, 1.0], axis=0>>
  %4 = const dense<[1.5, -0.0, inf, -inf, 1e-08, 1.25e+20]> : tensor<2x3xf32>
  %5 = const dense<[3, 65535]> : tensor<2xu16>
  %6 = const dense<-7> : tensor<2x2xi16, !q<bits=16, signed=true, scale=0.001>>
  %7 = const dense<[0.1]> : tensor<1xf16>
  %8 = const dense<[]> : tensor<0x3xf32>
  %9 = tanh(%0) : tensor<1x2x2x4xf32, NHWC>
  %10 = exp(%s) : tensor<f32>
  %11 = const dense<nan> : tensor<2xf64>
  output(%1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11) {names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]}
}
"""

SSD = r"""tidlc.graph @ssd {
  %feat = input "feat" : tensor<1x4x2x2xf32, NCHW>
  %loc = input "loc" : tensor<1x64xf32>
  %conf = input "conf" : tensor<1x48xf32>
  %0 = const dense<20.0> : tensor<4xf32>
  %1 = normalize(%feat, %0) {across_spatial = false} : tensor<1x4x2x2xf32, NCHW>
  %2 = prior_box() {feature_size = [2, 2], image_size = [32, 32], steps = [16.0, 16.0], min_sizes = [8.0], max_sizes = [16.0], aspect_ratios = [1.0, 2.0, 0.5], clip = true} : tensor<1x2x64xf32>
  %3 = detection_output(%loc, %conf, %2) {num_classes = 3, nms_threshold = 0.45, keep_top_k = 5, confidence_threshold = 0.01} : tensor<1x1x5x7xf32>
  %4, %5 = max_pool_index(%feat) {kernel = [2, 2], strides = [2, 2]} : tensor<1x4x1x1xf32, NCHW>, tensor<1x4x1x1xi64, NCHW>
  %6 = max_unpool(%4, %5) {output_size = [2, 2]} : tensor<1x4x2x2xf32, NCHW>
  output(%1, %3, %6) {names = ["norm", "detections", "unpooled"]}
}
"""

MEDIAPIPE = r"""tidlc.graph @mediapipe {
  %points = input "points" : tensor<1x6x3xf32>
  %feat = input "feat" : tensor<1x2x8x8xf32, NCHW>
  %0 = landmarks_to_matrix(%points) {subset = [0, 1, 2, 5], left = 0, right = 3, output_size = [4, 4], scale = [1.5, 1.5]} : tensor<1x4x4xf32>
  %1 = warp_bilinear(%feat, %0) {output_size = [4, 4], half_pixel = false} : tensor<1x2x4x4xf32, NCHW>
  %2 = transform_landmarks(%points, %0) {scale = 2.0} : tensor<1x6x3xf32>
  output(%1, %2) {names = ["crop", "moved"]}
}
"""

QUANT = r"""tidlc.graph @quant {
  %x = input "x" : tensor<1x2x2x3xf32, NHWC>
  %0 = quantize(%x) {scale = [64.0], zero_point = -3} : tensor<1x2x2x3xi8, NHWC, !q<bits=8, signed=true, scale=64.0, zp=-3>>
  %1 = const dense<[1, -2, 3, 4, 5, -128]> : tensor<2x3xi8, !q<bits=8, signed=true, scale=[100.0, 50.0], axis=0>>
  %2 = dequantize(%1) {scale = [100.0, 50.0], axis = 0} : tensor<2x3xf32>
  %3 = dequantize(%0) {scale = [64.0], zero_point = -3} : tensor<1x2x2x3xf32, NHWC>
  %4 = quantize(%3) {scale = [2.0, 4.0, 8.0], axis = -1, dtype = "u16", bits = 12, round = "half_even"} : tensor<1x2x2x3xu16, NHWC, !q<bits=12, signed=false, scale=[2.0, 4.0, 8.0], axis=3>>
  output(%2, %4) {names = ["w", "u"]}
}
"""

FIXED = r"""tidlc.graph @fixed {quantized = true} {
  %x = input "x" : tensor<1x2x4x4xf32, NCHW>
  %0 = data_convert(%x) {dtype = "i8"} : tensor<1x2x4x4xi8, NCHW, !q<bits=8, signed=true, scale=31.75>> loc("x.quantize")
  %1 = const dense<[3, -7, 127, -128]> : tensor<2x2x1x1xi8, !q<bits=8, signed=true, scale=101.5>>
  %2 = const dense<[-40, 1000]> : tensor<2xi32, !q<bits=32, signed=true, scale=3222.625>>
  %3 = conv2d(%0, %1, %2) {act = "relu"} : tensor<1x2x4x4xu8, NCHW, !q<bits=8, signed=false, scale=100.70703125, shift=5>> loc("conv")
  %4 = data_convert(%3) {dtype = "f32"} : tensor<1x2x4x4xf32, NCHW> loc("conv.dequantize")
  output(%4) {names = ["conv"]}
}
"""

# symbol -> shape of the (f32) sidecar constants the graphs reference
CNN_WEIGHTS = {"gpu_0/conv1_w_0": (8, 4, 3, 3), "conv2.w": (8, 2, 3, 3), "deconv.w": (8, 2, 4, 4),
               "fc.w": (10, 16)}
# an opaque host op (an ONNX NonZero kept by the frontend, docs/host-ops.md)
HOST = """\
tidlc.graph @host {
  %x = input "x" : tensor<2x5xf32>
  %0 = relu(%x) : tensor<2x5xf32> loc("r")
  %1 = host(%0) {framework = "onnx", op_type = "NonZero", results = ["2x?xi64"], payload = "CA4SCnRpZGxjLWhvc3Q6OwoPCgFyEgF5IgdOb25aZXJvEgxob3N0X05vblplcm9aDwoBchIKCggIARIECgAKAGIJCgF5EgQKAggHQgQKABAN"} : tensor<2x?xi64> loc("y")
  output(%1) {names = ["y"]}
}
"""

GRAPHS = {"cnn": (CNN, CNN_WEIGHTS), "eltwise": (ELTWISE, {}), "shapes": (SHAPES, {}), "types": (TYPES, {}),
          "ssd": (SSD, {}), "mediapipe": (MEDIAPIPE, {}), "quant": (QUANT, {}), "fixed": (FIXED, {}),
          "host": (HOST, {})}


def make_weights(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {sym: rng.standard_normal(shape).astype(np.float32) for sym, shape in shapes.items()}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_round_trip(name):
    text, shapes = GRAPHS[name]
    weights = make_weights(shapes)
    graph = parse_graph(text, weights)
    verify(graph)
    printed, out_weights = print_graph(graph)
    assert printed == text
    assert sorted(out_weights) == sorted(weights)
    for sym, arr in weights.items():
        assert out_weights[sym] is arr  # sidecar arrays are passed through, not copied


def test_every_builtin_op_has_a_round_trip_graph():
    used = set()
    for text, shapes in GRAPHS.values():
        used |= {op.kind for op in parse_graph(text, make_weights(shapes)).ops}
    builtin = {name for name in OPS.names() if OPS.get(name).plugin == "builtin"}
    assert builtin - used == set(), "add these ops to a round-trip graph in this file"


def test_sidecar_weights_round_trip_through_files(tmp_path):
    weights = make_weights(CNN_WEIGHTS, seed=1)
    graph = parse_graph(CNN, weights)
    text, out = print_graph(graph)
    first, second = tmp_path / "a.weights", tmp_path / "b.weights"
    write_weights(str(first), out)
    write_weights(str(second), read_weights(str(first)))
    assert first.read_bytes() == second.read_bytes()
    again = parse_graph(text, read_weights(str(second)), str(tmp_path / "cnn.tir"))
    assert print_graph(again)[0] == CNN
    for a, b in zip(graph.ops, again.ops):
        if a.kind == "const":
            assert a.data.dtype == b.data.dtype
            np.testing.assert_array_equal(a.data, b.data)


def test_quoted_symbols_and_names():
    graph = parse_graph(CNN, make_weights(CNN_WEIGHTS))
    conv_w = graph.ops[1]
    assert conv_w.name == "gpu_0/conv1_w_0"  # the symbol names an otherwise unnamed constant
    q = parse_graph(TYPES)
    assert q.name == 'types "and" quant'
    assert q.attrs["note"] == 'tab\there\nnewline \\ "quoted"'
    assert q.attrs["onnx.opset"] == 13
    assert q.attrs["nested"] == [[1, 2], [3.5, "s"]]
    assert q.input_names() == ["any", "q", "image/in:0", "s"]
    nhwc = q.find_input("image/in:0")
    assert nhwc.name == 'image "in"'
    assert nhwc.loc == Loc("", "path with spaces/m.tflite", 7, 0)


def test_types_and_quantization_are_parsed():
    graph = parse_graph(TYPES)
    types = {op.attrs["name"]: op.results[0].type for op in graph.input_ops}
    assert types["any"].shape is None and types["any"].rank is None
    assert types["s"].shape == () and types["s"].size == 1
    assert types["image/in:0"].layout == "NHWC"
    q = types["q"].quant
    assert (q.bits, q.signed, q.scale, q.zero_point, q.shift, q.axis) == (8, False, (0.25,), 3, 5, None)
    per_channel = graph.ops[6].results[0].type.quant
    assert per_channel.scale == (0.5, 0.25, 0.125, 1.0) and per_channel.axis == 0
    eltwise = parse_graph(ELTWISE)
    assert eltwise.inputs[0].type.shape == (None, 3)


def test_dense_constants():
    graph = parse_graph(TYPES)
    data = {op.results[0].name or i: op.data for i, op in enumerate(graph.ops) if op.kind == "const"}
    by_out = dict(zip(graph.output_names, graph.outputs))
    specials = by_out["d"].const_value()
    assert specials.dtype == np.float32
    assert specials[0, 0] == 1.5 and specials[0, 1] == 0 and np.signbit(specials[0, 1])
    assert specials[0, 2] == np.inf and specials[1, 0] == -np.inf
    assert specials[1, 1] == np.float32(1e-8) and specials[1, 2] == np.float32(1.25e20)
    assert by_out["e"].const_value().tolist() == [3, 65535]
    splat = by_out["f"].const_value()
    assert splat.shape == (2, 2) and splat.strides == (0, 0) and (splat == -7).all()
    assert by_out["g"].const_value().dtype == np.float16
    assert by_out["h"].const_value().shape == (0, 3)
    assert np.isnan(by_out["k"].const_value()).all() and by_out["k"].const_value().dtype == np.float64
    assert data  # every const has data


def test_splats_are_zero_stride_and_print_as_one_value():
    b = Builder()
    x = b.input("x", TensorType((64, 64)))
    big = b.const(np.broadcast_to(np.float32(0.5), (64, 64)), "half")
    b.output(b.op("mul", [x, big]))
    text, weights = print_graph(b.graph)
    assert "%0 = const dense<0.5> : tensor<64x64xf32> loc(\"half\")" in text
    assert weights == {}
    again = parse_graph(text)
    data = again.ops[1].data
    assert data.strides == (0, 0) and is_splat(data)
    assert print_graph(again)[0] == text


def test_large_constants_go_to_the_sidecar_small_ones_inline():
    b = Builder()
    x = b.input("x", TensorType((1, 17)))
    small = b.const(np.arange(16, dtype=np.float32).reshape(1, 16), "small")
    big = b.const(np.arange(17, dtype=np.float32).reshape(1, 17), "big")
    y = b.op("concat", [x, small], axis=1)
    b.output(b.op("add", [x, big]))
    b.output(y)
    text, weights = print_graph(b.graph)
    assert list(weights) == ["big"]
    assert "const @big : tensor<1x17xf32>\n" in text
    assert "const dense<[0.0, 1.0, 2.0," in text
    assert print_graph(parse_graph(text, weights))[0] == text
    _, weights0 = print_graph(b.graph, inline_limit=0)
    assert sorted(weights0) == ["big", "small"]


def test_duplicate_and_missing_constant_names_get_unique_symbols():
    b = Builder()
    x = b.input("x", TensorType((20,)))
    for name in ("w", "w", ""):
        x = b.op("add", [x, b.const(np.ones(20, np.float32), name)])
    b.output(x)
    text, weights = print_graph(b.graph)
    assert sorted(weights) == ["w", "w2", "w_1"]
    assert print_graph(parse_graph(text, weights))[0] == text


def test_comments_and_whitespace_are_ignored():
    text = ('// a hand-edited graph\ntidlc.graph @g {   // trailing comment\n'
            '  %x   =   input "x":tensor<2xf32>\n\n  %0=relu(%x):tensor<2xf32>  // act\n  output(%0)\n}\n')
    assert print_graph(parse_graph(text))[0] == ('tidlc.graph @g {\n  %x = input "x" : tensor<2xf32>\n'
                                                 '  %0 = relu(%x) : tensor<2xf32>\n  output(%0)\n}\n')


def test_unnamed_outputs_print_their_value_names():
    b = Builder()
    x = b.input("x", TensorType((2,)))
    b.output(b.op("relu", [x]), "y")
    text, _ = print_graph(b.graph)
    assert text.endswith('  output(%0) {names = ["y"]}\n}\n')


def test_locations_with_file_line_col():
    b = Builder()
    x = b.input("x", TensorType((2,)), loc=Loc("", "m.onnx", 3, 9))
    y = b.op("relu", [x], name="r", loc=Loc("", "m.onnx", 10, 1))
    z = b.op("relu", [y], loc=Loc("", "m.onnx"))
    b.output(z, "z")
    text, _ = print_graph(b.graph)
    assert '%x = input "x" : tensor<2xf32> loc("" "m.onnx":3:9)' in text
    assert '%0 = relu(%x) : tensor<2xf32> loc("r" "m.onnx":10:1)' in text
    assert '%1 = relu(%0) : tensor<2xf32> loc("" "m.onnx")' in text
    graph = parse_graph(text)
    assert graph.ops[1].name == "r" and graph.ops[1].loc == Loc("", "m.onnx", 10, 1)
    assert str(graph.ops[1].where()) == "m.onnx:10:1: 'r'"


def test_weights_file_is_deterministic_and_aligned(tmp_path):
    weights = {"b": np.arange(5, dtype=np.int8), "a": np.ones((3, 3), np.float32),
               "scalar": np.array(2.5, np.float16), "empty": np.zeros((0, 4), np.float32),
               "flags": np.array([True, False]), "view": np.arange(12, dtype=np.int64).reshape(3, 4)[:, ::2]}
    path = tmp_path / "w.weights"
    write_weights(str(path), weights)
    first = path.read_bytes()
    write_weights(str(path), dict(reversed(list(weights.items()))))
    assert path.read_bytes() == first
    back = read_weights(str(path))
    assert sorted(back) == sorted(weights)
    for sym, arr in weights.items():
        assert back[sym].dtype == arr.dtype and back[sym].shape == arr.shape
        np.testing.assert_array_equal(back[sym], arr)
        if back[sym].size:
            assert back[sym].ctypes.data % 64 == 0  # arrays start on 64-byte boundaries
    assert not any(name.endswith(".tmp" + str(os.getpid())) for name in os.listdir(tmp_path))


def _corrupt(path, offset, data):
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(data)] = data
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(b""), "not a tidlc weights file (bad magic)"),
    (lambda p: _corrupt(p, 0, b"XXXX"), "not a tidlc weights file (bad magic)"),
    (lambda p: _corrupt(p, 8, (10 ** 9).to_bytes(8, "little")), "weights index runs past the end of the file"),
    (lambda p: _corrupt(p, 16, b"[[[["), "corrupt weights index"),
    (lambda p: p.write_bytes(p.read_bytes()[:-64]), "weights entry 'w' is truncated or inconsistent"),
    (lambda p: _corrupt(p, len(p.read_bytes()) - 64, b"\x01"), "weights entry 'w' is damaged (checksum mismatch)"),
])
def test_corrupt_weights_files_raise(tmp_path, damage, message):
    path = tmp_path / "m.weights"
    write_weights(str(path), {"w": np.arange(16, dtype=np.float32), "a": np.ones(3, np.float32)})
    damage(path)
    with pytest.raises(TidlcError) as info:
        read_weights(str(path))
    first = str(info.value).splitlines()[0]
    assert first.startswith(f"{path}") and f"error: {message}" in first


def test_bad_index_entries_raise(tmp_path):
    import json
    import struct

    from tidlc.ir.weights import MAGIC
    for entry in ([1, 2], ["f99", [2], 0, 8, 0], ["f32", [-1], 0, 4, 0], ["f32", [2], 3, 8, 0]):
        head = json.dumps({"w": entry}).encode()
        path = tmp_path / "bad.weights"
        path.write_bytes(MAGIC + struct.pack("<Q", len(head)) + head + bytes(64))
        with pytest.raises(TidlcError, match=r"corrupt weights index \(entry 'w'\)"):
            read_weights(str(path))
    with pytest.raises(TidlcError, match="no such"):
        read_weights(str(tmp_path / "missing.weights"))
