import sys

"""TFLite op converters against the TFLite interpreter: float models within 1e-5 x max|ref|,
full-integer int8 models within 1 LSB of both the default (XNNPACK) and the builtin kernels."""
import warnings

import numpy as np
import pytest

_tidlc_frontend_checks = sys.modules["tidlc_frontend_checks"]  # loaded from a file by tests/frontends/conftest.py
RESIZE_CASES = _tidlc_frontend_checks.RESIZE_CASES


def const(tfl, shape, seed=1, scale=1.0):
    return tfl.tf.constant(tfl.randn(*shape, seed=seed) * np.float32(scale))


def conv_net(tfl, stride=1, padding="SAME", dilation=1, act="relu", channels=(3, 8)):
    tf = tfl.tf
    w = const(tfl, (3, 3) + channels, scale=0.3)
    b = const(tfl, channels[1:], 2, 0.1)

    def net(x):
        y = tf.nn.bias_add(tf.nn.conv2d(x, w, stride, padding, dilations=dilation), b)
        return {"relu": tf.nn.relu, "relu6": tf.nn.relu6, "none": lambda v: v, "tanh": tf.tanh}[act](y)
    return net


# ----------------------------------------------------------------------------- convolutions
@pytest.mark.parametrize("size, stride, padding, dilation, act", [
    ((9, 7), 2, "SAME", 1, "relu"), ((8, 8), 2, "SAME", 1, "relu6"), ((7, 9), 1, "VALID", 1, "none"),
    ((11, 10), 1, "SAME", 2, "tanh")])
def test_conv_2d(tfl, size, stride, padding, dilation, act):
    x = tfl.randn(1, *size, 3)
    tfl.check(conv_net(tfl, stride, padding, dilation, act), {"x": x})


@pytest.mark.parametrize("multiplier, stride", [(1, 1), (2, 2)])
def test_depthwise_conv_2d(tfl, multiplier, stride):
    tf = tfl.tf
    w = const(tfl, (3, 3, 4, multiplier), scale=0.3)
    tfl.check(lambda x: tf.nn.relu6(tf.nn.depthwise_conv2d(x, w, (1, stride, stride, 1), "SAME")),
              {"x": tfl.randn(1, 9, 8, 4)})


@pytest.mark.parametrize("size, out, padding", [((4, 5), (8, 10), "SAME"), ((4, 4), (9, 9), "VALID")])
def test_transpose_conv(tfl, size, out, padding):
    tf = tfl.tf
    w = const(tfl, (3, 3, 5, 4), scale=0.3)
    tfl.check(lambda x: tf.nn.conv2d_transpose(x, w, (1,) + out + (5,), 2, padding), {"x": tfl.randn(1, *size, 4)})


def test_fully_connected(tfl):
    tf = tfl.tf
    w, b = const(tfl, (12, 5), scale=0.3), const(tfl, (5,), 2)
    tfl.check(lambda x: tf.nn.relu(tf.matmul(tf.reshape(x, (2, 12)), w) + b), {"x": tfl.randn(2, 3, 4)})


# ----------------------------------------------------------------------------- pooling, reductions
@pytest.mark.parametrize("pool", ["max_pool2d", "avg_pool2d"])
def test_pooling(tfl, pool):
    tf = tfl.tf
    fn = getattr(tf.nn, pool)
    tfl.check(lambda x: fn(x, 3, 2, "SAME"), {"x": tfl.randn(1, 9, 7, 3)})
    # (an average pool TIDL does not take is dense layers over W and H: the H one between two transposes)
    tfl.check(lambda x: fn(x, (2, 3), (2, 1), "VALID"), {"x": tfl.randn(1, 8, 7, 3)},
              interior=2 if pool == "avg_pool2d" else 0)


@pytest.mark.parametrize("axes, keepdims", [([1, 2], False), ([1, 2], True), ([3], False)])
def test_mean(tfl, axes, keepdims):
    tf = tfl.tf
    tfl.check(lambda x: tf.reduce_mean(x, axes, keepdims=keepdims), {"x": tfl.randn(1, 5, 4, 6)})


def test_argmax(tfl):
    tf = tfl.tf
    tfl.check(lambda x: tf.argmax(x, axis=-1), {"x": tfl.randn(1, 4, 5, 6)})


# ----------------------------------------------------------------------------- element-wise
def test_binary_with_fused_activations(tfl):
    tf = tfl.tf
    x, y = tfl.randn(1, 4, 5, 3), tfl.randn(1, 4, 5, 3, seed=2)
    tfl.check(lambda x, y: tf.nn.relu(x + y), {"x": x, "y": y})
    tfl.check(lambda x, y: tf.nn.relu6(x * y), {"x": x, "y": y})
    tfl.check(lambda x, y: tf.nn.relu(x - y) + tf.maximum(x, y) + tf.minimum(x, 0.5), {"x": x, "y": y})


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "relu6", "leaky_relu", "hard_swish", "elu"])
def test_activations(tfl, name):
    tf = tfl.tf
    fns = {"sigmoid": tf.sigmoid, "tanh": tf.tanh, "relu": tf.nn.relu, "relu6": tf.nn.relu6,
           "leaky_relu": lambda v: tf.nn.leaky_relu(v, 0.1), "hard_swish": lambda v: v * tf.nn.relu6(v + 3) / 6,
           "elu": tf.nn.elu}
    fn = fns[name]
    tfl.check(lambda x: fn(x * 3.0), {"x": tfl.randn(1, 4, 5, 3)})


def test_prelu(tfl):
    tf = tfl.tf
    alpha = tf.constant(np.float32([0.1, 0.2, 0.3]))
    tfl.check(lambda x: tf.maximum(x, 0.0) + alpha * tf.minimum(x, 0.0), {"x": tfl.randn(1, 4, 3, 3)})


def test_softmax(tfl):
    tf = tfl.tf
    tfl.check(lambda x: tf.nn.softmax(x * 2.0), {"x": tfl.randn(2, 10)})  # beta = 2


# ----------------------------------------------------------------------------- data movement
def test_pads(tfl):
    tf = tfl.tf
    x = tfl.randn(1, 4, 5, 3)
    paddings = [[0, 0], [1, 2], [2, 0], [0, 0]]
    tfl.check(lambda x: tf.pad(x, paddings), {"x": x})
    tfl.check(lambda x: tf.pad(x, paddings, constant_values=1.5), {"x": x})
    tfl.check(lambda x: tf.pad(x, paddings, mode="REFLECT"), {"x": x})
    tfl.check(lambda x: tf.pad(x, paddings, mode="SYMMETRIC"), {"x": x})


def test_concat_reshape_transpose_squeeze(tfl):
    tf = tfl.tf
    net = conv_net(tfl)
    tfl.check(lambda x: tf.concat([net(x), tf.nn.relu(x)], axis=-1), {"x": tfl.randn(1, 4, 4, 3)})
    # the flattening reshape reads NHWC memory: a transpose stays before it
    tfl.check(lambda x: tf.reshape(net(x), (1, -1)), {"x": tfl.randn(1, 4, 4, 3)}, interior=1)
    tfl.check(lambda x: tf.transpose(x, (0, 3, 1, 2)) * 2.0, {"x": tfl.randn(1, 4, 5, 3)})
    tfl.check(lambda x: tf.squeeze(x, [1]) + 1.0, {"x": tfl.randn(2, 1, 5, 3)})


def test_strided_slice_split_pack(tfl):
    tf = tfl.tf
    x = tfl.randn(2, 6, 7, 4)
    tfl.check(lambda x: x[:, 1:-1:2, ::-2, 1:3] * 2.0, {"x": x})
    tfl.check(lambda x: [p * 2.0 for p in tf.split(x, 2, axis=3)], {"x": x})
    tfl.check(lambda x: tf.stack([x[:, 0], x[:, 1]], axis=1) * 2.0, {"x": x})


def test_gather(tfl):
    """Keras' Dense on a 4-D tensor (ConvNeXt) builds its reshape target by gathering its
    input's SHAPE: GATHER had no converter (a host op), and the RESHAPE then no constant shape."""
    tf = tfl.tf
    w = const(tfl, (3, 5), scale=0.3)
    x = tfl.randn(1, 4, 6, 3)

    def dense_4d(x):
        shape = tf.shape(x)
        rows = tf.reduce_prod(tf.gather(shape, [0, 1, 2]))
        flat = tf.reshape(x, tf.stack([rows, tf.gather(shape, 3)]))
        return tf.reshape(tf.matmul(flat, w), tf.concat([tf.gather(shape, [0, 1, 2]), [5]], 0))
    tfl.check(dense_4d, {"x": x})
    tfl.check(lambda x: tf.gather(x, [2, 0, 1], axis=3) * 2.0, {"x": x})  # (of activations: a channel gather)
    graph = tfl.tidlc_graph(tfl.convert(dense_4d, {"x": x}), 2)
    assert "host" not in [op.kind for op in graph.compute_ops()]


@pytest.mark.parametrize("method, kwargs", RESIZE_CASES)
def test_resize(tfl, method, kwargs):
    tf = tfl.tf
    fn = tf.compat.v1.image.resize_bilinear if method == "bilinear" else tf.compat.v1.image.resize_nearest_neighbor
    tfl.check(lambda x: fn(x, (10, 12), **kwargs), {"x": tfl.randn(1, 5, 6, 3)})


def test_depth_to_space(tfl):
    tf = tfl.tf
    tfl.check(lambda x: tf.nn.depth_to_space(x, 2), {"x": tfl.randn(1, 3, 4, 8)})


# ----------------------------------------------------------------------------- int8
INT8_NETS = {
    "conv_relu": lambda tfl: conv_net(tfl, 2, "SAME", 1, "relu"),
    "conv_relu6_dilated": lambda tfl: conv_net(tfl, 1, "SAME", 2, "relu6"),
    "depthwise": lambda tfl: (lambda x: tfl.tf.nn.relu6(tfl.tf.nn.depthwise_conv2d(
        x, const(tfl, (3, 3, 3, 2), scale=0.3), (1, 1, 1, 1), "SAME"))),
    "transpose_conv": lambda tfl: (lambda x: tfl.tf.nn.conv2d_transpose(
        x, const(tfl, (3, 3, 4, 3), scale=0.3), (1, 12, 10, 4), 2, "SAME")),
    "add_mul": lambda tfl: (lambda x: tfl.tf.nn.relu(x + x * x)),
    "pools": lambda tfl: (lambda x: tfl.tf.nn.avg_pool2d(x, 3, 2, "SAME") + tfl.tf.nn.max_pool2d(x, 3, 2, "SAME")),
    "mean_fc_softmax": lambda tfl: (lambda x: tfl.tf.nn.softmax(tfl.tf.matmul(
        tfl.tf.reduce_mean(x, [1, 2]), const(tfl, (3, 10))))),
    "concat_pad": lambda tfl: (lambda x: tfl.tf.pad(tfl.tf.concat([x, tfl.tf.nn.relu(x) * 3.0], axis=-1),
                                                      [[0, 0], [1, 1], [0, 2], [0, 0]])),
    "sigmoid_tanh": lambda tfl: (lambda x: tfl.tf.sigmoid(x) * tfl.tf.tanh(x * 2.0)),
    "hard_swish": lambda tfl: (lambda x: x * tfl.tf.nn.relu6(x + 3) / 6),
    "leaky_resize": lambda tfl: (lambda x: tfl.tf.compat.v1.image.resize_bilinear(
        tfl.tf.nn.leaky_relu(x, 0.2), (12, 10), half_pixel_centers=True)),
    "reshape_transpose": lambda tfl: (lambda x: tfl.tf.transpose(tfl.tf.reshape(x, (1, 10, 3, 3)), (0, 2, 1, 3))),
}


@pytest.mark.parametrize("name", sorted(INT8_NETS))
def test_int8(tfl, name):
    tfl.check(INT8_NETS[name](tfl), {"x": tfl.randn(1, 6, 5, 3)}, int8=True, interior=None)


def test_int8_concat_pad_and_max_pool_compile_without_data_converts(tfl):
    """An int8 model concatenates, pads and max-pools its int8 codes directly (DenseNet's dense
    blocks): at -O2 they run on dequantized values, quantized again, so every dequantize meets a
    quantize and the compiled graph converts data only at its input and output (DenseNet121 int8:
    622 layers, 124 of them DataConverts, 13.5 ms predicted -> 254 layers, 8.1 ms)."""
    from tidlc.backends.tidl.quantize.api import quantize_graph

    from tidlc.config import CompileOptions
    tf = tfl.tf
    w1, w2 = const(tfl, (3, 3, 3, 4), scale=0.3), const(tfl, (1, 1, 7, 5), scale=0.3)

    def net(x):
        y = tf.nn.relu(tf.nn.conv2d(x, w1, 1, "SAME"))
        y = tf.pad(tf.concat([x, y], axis=-1), [[0, 0], [1, 1], [1, 1], [0, 0]])
        return tf.nn.conv2d(tf.nn.max_pool2d(y, 3, 2, "VALID"), w2, 1, "SAME")

    inputs = {"x": tfl.randn(1, 8, 8, 3)}
    tfl.check(net, inputs, int8=True, interior=None)
    graph = tfl.tidlc_graph(tfl.convert(net, inputs, int8=True), level=2)
    moves = [op for op in graph.ops if op.kind in ("concat", "pad", "pool2d")]
    assert len(moves) == 3 and all(op.results[0].type.dtype == "f32" for op in moves)
    quantized = quantize_graph(graph, CompileOptions()).graph
    kinds = [op.kind for op in quantized.compute_ops() if op.kind != "transpose"]
    # the int8 interface only: dequantize + data_convert in, data_convert + quantize out
    assert kinds == ["dequantize", "data_convert", "conv2d", "concat", "pad", "pool2d", "conv2d",
                     "data_convert", "quantize"], kinds


def test_int8_keeps_integers_and_scales(tfl):
    """Weights are int8 constants with per-channel QuantInfo; activations are i8 with QuantInfo."""
    model = tfl.convert(conv_net(tfl, 1, "SAME", 1, "relu"), {"x": tfl.randn(1, 6, 5, 3)}, int8=True)
    graph = tfl.tidlc_graph(model, level=2)
    x = graph.inputs[0]
    assert x.type.dtype == "i8" and x.type.quant is not None and x.type.layout == "NHWC"
    out = graph.outputs[0]
    assert out.type.dtype == "i8" and out.type.quant.bits == 8 and out.type.quant.signed
    weights = [op for op in graph.ops if op.kind == "const" and op.results[0].type.dtype == "i8"]
    assert len(weights) == 1
    q = weights[0].results[0].type.quant
    assert weights[0].data.shape == (8, 3, 3, 3) and q.axis == 0 and len(q.scale) == 8  # OIHW, per channel
    conv = next(op for op in graph.ops if op.kind == "conv2d")
    assert [v.producer.kind for v in conv.operands[1:]] == ["dequantize", "dequantize"]  # weight, i32 bias
    bias = conv.operands[2].producer.operands[0]
    assert bias.type.dtype == "i32" and bias.type.quant.bits == 32


def test_int8_with_float_interface(tfl):
    """The converter's default int8 model keeps float input/output: QUANTIZE and DEQUANTIZE ops."""
    tf = tfl.tf
    net = conv_net(tfl, 1, "SAME", 1, "relu6")
    x = tfl.randn(1, 6, 5, 3)
    specs = [tf.TensorSpec(x.shape, tf.float32, name="x")]
    concrete = tf.function(net, autograph=False).get_concrete_function(*specs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], net)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([tfl.randn(1, 6, 5, 3, seed=s)] for s in range(8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the converter's notes on the float interface)
        model = converter.convert()
    ref = tfl.tfl_run(model, {"x": x})[0]
    graph = tfl.tidlc_graph(model, level=2)
    got = tfl.run_graph(graph, {"x": x})
    out = graph.outputs[0].producer
    while out.kind == "transpose":  # the NHWC output boundary
        out = out.operands[0].producer
    assert out.kind == "dequantize"
    step = 1.0 / out.attrs["scale"][0]
    assert np.max(np.abs(next(iter(got.values())) - ref)) <= step * 1.001  # within 1 LSB


def test_int8_layernorm_and_gelu_are_one_layer_each(tfl):
    """An int8 model quantizes every piece of Keras' LayerNormalization (mean, squared difference,
    variance, rsqrt, the gamma and shift products) and puts the dense before its GELU between a
    quantize and a dequantize: at -O2 they are one layernorm and a dense with a fused GELU, each
    read and written through the model's own int8 tensors at its ends (Keras ConvNeXtTiny int8:
    416 -> 146 layers, 13.9 -> 8.2 ms predicted, as its float model). The pieces' own 8-bit
    roundings go, so the outputs are closer to the float function than the TFLite interpreter's."""
    tf = tfl.tf
    w = const(tfl, (3, 3, 3, 8), scale=0.3)
    gamma, beta = const(tfl, (8,), 2, 0.3) + 1.0, const(tfl, (8,), 3, 0.2)
    w2 = const(tfl, (8, 16), 4, 0.4)

    def net(x):
        y = tf.nn.conv2d(x, w, 1, "SAME")
        mean = tf.reduce_mean(y, -1, keepdims=True)  # Keras 3's LayerNormalization (TF backend)
        var = tf.reduce_mean(tf.math.squared_difference(y, mean), -1, keepdims=True)
        inv = tf.math.rsqrt(var + 1e-6) * gamma
        y = y * inv + (-mean * inv + beta)
        return tf.nn.gelu(tf.tensordot(y, w2, 1), approximate=False)

    inputs = {"x": tfl.randn(1, 6, 5, 3)}
    model = tfl.convert(net, inputs, int8=True)
    feeds = tfl.quantize_inputs(model, inputs)
    graph = tfl.tidlc_graph(model, level=2)
    kinds = [op.kind for op in graph.compute_ops() if op.kind not in ("quantize", "dequantize", "transpose")]
    assert kinds == ["conv2d", "layernorm", "dense"], kinds
    assert next(op for op in graph.ops if op.kind == "dense").attrs["act"] == "gelu"

    ours = next(iter(tfl.run_graph(graph, feeds).values())).astype(np.float64)
    theirs = tfl.tfl_run(model, feeds)[0].astype(np.float64)
    out = graph.outputs[0].producer
    scale, zero = out.attrs["scale"][0], out.attrs["zero_point"]
    ref = net(tf.constant(inputs["x"])).numpy()
    snr = lambda q: 10 * np.log10(np.sum(ref ** 2) / np.sum(((q - zero) / scale - ref) ** 2))
    assert snr(ours) >= snr(theirs) - 0.5, (snr(ours), snr(theirs))
    assert tfl.lsb_diff(ours.astype(np.int8), theirs.astype(np.int8)) <= 8
