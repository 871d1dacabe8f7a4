import sys

"""TensorFlow op converters against TensorFlow itself: each test freezes a small ``tf.function``,
imports it through tidlc's GraphDef reader and compares at -O0 and -O2 (after the layout pass
has removed the NHWC transposes: ``interior`` transposes at most stay inside)."""
import numpy as np
import pytest

_tidlc_frontend_checks = sys.modules["tidlc_frontend_checks"]  # loaded from a file by tests/frontends/conftest.py
RESIZE_CASES = _tidlc_frontend_checks.RESIZE_CASES


def const(tfx, shape, seed=1):
    return tfx.tf.constant(tfx.randn(*shape, seed=seed))


# ----------------------------------------------------------------------------- convolutions
@pytest.mark.parametrize("size, kernel, stride, dilation, padding", [
    ((9, 7), (3, 3), (2, 2), (1, 1), "SAME"),  # odd sizes: SAME pads asymmetric (bottom/right get more)
    ((8, 8), (3, 3), (2, 2), (1, 1), "SAME"),  # even: the whole pad at the end
    ((10, 9), (5, 3), (1, 2), (1, 1), "VALID"),
    ((11, 11), (3, 3), (1, 1), (2, 3), "SAME"),  # dilated
    ((6, 6), (1, 1), (2, 2), (1, 1), "SAME"),
])
def test_conv2d(tfx, size, kernel, stride, dilation, padding):
    tf = tfx.tf
    w = const(tfx, kernel + (4, 6))
    x = tfx.randn(1, *size, 4)
    tfx.check(lambda x: tf.nn.conv2d(x, w, (1,) + stride + (1,), padding, dilations=(1,) + dilation + (1,)),
              {"x": x})


def test_conv2d_explicit_padding_and_groups(tfx):
    tf = tfx.tf
    w = const(tfx, (3, 3, 2, 6))  # 4 input channels / 2 per group: 2 groups
    x = tfx.randn(1, 7, 7, 4)
    tfx.check(lambda x: tf.nn.conv2d(x, w, 1, [[0, 0], [1, 2], [0, 1], [0, 0]]), {"x": x})
    tfx.check(lambda x: tf.nn.conv2d(x, w, 2, "SAME"), {"x": x})


@pytest.mark.parametrize("multiplier, stride, padding", [(1, 1, "SAME"), (2, 2, "SAME"), (3, 1, "VALID")])
def test_depthwise_conv2d(tfx, multiplier, stride, padding):
    tf = tfx.tf
    w = const(tfx, (3, 3, 5, multiplier))
    x = tfx.randn(1, 9, 8, 5)
    tfx.check(lambda x: tf.nn.depthwise_conv2d(x, w, (1, stride, stride, 1), padding), {"x": x})


@pytest.mark.parametrize("size, out, stride, padding", [
    ((4, 5), (8, 10), 2, "SAME"), ((4, 5), (7, 9), 2, "SAME"), ((3, 3), (8, 7), 2, "VALID"),
    ((5, 5), (5, 5), 1, "SAME")])
def test_conv2d_transpose(tfx, size, out, stride, padding):
    tf = tfx.tf
    w = const(tfx, (3, 3, 6, 4))  # (kh, kw, output channels, input channels)
    x = tfx.randn(1, *size, 4)
    tfx.check(lambda x: tf.nn.conv2d_transpose(x, w, (1,) + out + (6,), stride, padding), {"x": x})


def test_conv_bias_batchnorm_relu6_fuse_into_one_conv(tfx):
    tf = tfx.tf
    w, b = const(tfx, (3, 3, 3, 8)), const(tfx, (8,), 2)
    gamma, beta, mean = const(tfx, (8,), 3), const(tfx, (8,), 4), const(tfx, (8,), 5)
    var = tf.constant(np.random.default_rng(6).uniform(0.5, 2, 8).astype(np.float32))

    def net(x):
        y = tf.nn.bias_add(tf.nn.conv2d(x, w, 1, "SAME"), b)
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(y, gamma, beta, mean, var, epsilon=1e-3, is_training=False)
        return tf.nn.relu6(y)

    x = tfx.randn(1, 6, 6, 3)
    tfx.check(net, {"x": x})
    data, outputs, _ = tfx.freeze(net, {"x": x})
    graph = tfx.tidlc_graph(data, outputs, level=2)
    kinds = [op.kind for op in graph.compute_ops()]
    assert kinds == ["transpose", "conv2d", "transpose"], kinds  # NHWC in and out, one fused conv
    conv = next(op for op in graph.ops if op.kind == "conv2d")
    assert conv.attrs["act"] == "relu6" and len(conv.operands) == 3


# ----------------------------------------------------------------------------- pooling, reductions
@pytest.mark.parametrize("pool", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("size, ksize, stride, padding", [
    ((9, 7), 3, 2, "SAME"), ((8, 8), 2, 2, "VALID"), ((7, 7), 3, 1, "SAME"), ((5, 6), (2, 3), (1, 2), "SAME")])
def test_pooling(tfx, pool, size, ksize, stride, padding):
    tf = tfx.tf
    x = tfx.randn(1, *size, 3)
    # (an average pool TIDL does not take is dense layers over W and H: the H one between two transposes)
    dense = pool == "avg_pool2d" and ksize == (2, 3)
    tfx.check(lambda x: getattr(tf.nn, pool)(x, ksize, stride, padding), {"x": x}, interior=2 if dense else 0)


@pytest.mark.parametrize("axes, keepdims", [([1, 2], False), ([1, 2], True), ([3], False), ([2], True)])
def test_mean(tfx, axes, keepdims):
    tf = tfx.tf
    x = tfx.randn(2, 5, 4, 3)
    tfx.check(lambda x: tf.reduce_mean(x, axes, keepdims=keepdims), {"x": x})
    tfx.check(lambda x: tf.reduce_max(tf.nn.relu(x), axes, keepdims=keepdims), {"x": x})


def test_global_mean_is_a_global_pool(tfx):
    tf = tfx.tf
    w = const(tfx, (1, 1, 3, 4))
    data, outputs, _ = tfx.freeze(lambda x: tf.reduce_mean(tf.nn.conv2d(x, w, 1, "SAME"), [1, 2]),
                                  {"x": tfx.randn(1, 4, 4, 3)})
    graph = tfx.tidlc_graph(data, outputs, level=2)
    assert [op.kind for op in graph.compute_ops()] == ["transpose", "conv2d", "global_pool", "squeeze"]


def test_argmax(tfx):
    tf = tfx.tf
    x = tfx.randn(2, 4, 5, 3)
    tfx.check(lambda x: tf.argmax(x, axis=3), {"x": x})
    tfx.check(lambda x: tf.argmax(x, axis=1, output_type=tf.int32), {"x": x})


# ----------------------------------------------------------------------------- element-wise
@pytest.mark.parametrize("name", ["relu", "relu6", "sigmoid", "tanh", "leaky_relu", "elu", "softplus"])
def test_activations(tfx, name):
    tf = tfx.tf
    fn = getattr(tf.nn, name)
    tfx.check(lambda x: fn(x) if name != "leaky_relu" else tf.nn.leaky_relu(x, 0.15), {"x": tfx.randn(2, 3, 4, 5)})


@pytest.mark.parametrize("name", ["add", "subtract", "multiply", "maximum", "minimum", "divide"])
def test_binary_broadcasting(tfx, name):
    tf = tfx.tf
    fn = getattr(tf.math, name)
    c = tf.constant(np.random.default_rng(2).uniform(0.5, 2, (1, 1, 5)).astype(np.float32))
    tfx.check(lambda x, y: fn(fn(x, y), c), {"x": tfx.randn(2, 3, 4, 5), "y": tfx.randn(4, 1, seed=3)})


def test_matmul(tfx):
    tf = tfx.tf
    w = const(tfx, (6, 5))
    tfx.check(lambda x: tf.nn.bias_add(tf.matmul(x, w), const(tfx, (5,), 4)), {"x": tfx.randn(3, 6)})
    tfx.check(lambda x: tf.matmul(x, w, transpose_b=True), {"x": tfx.randn(3, 5)})
    tfx.check(lambda a, b: tf.matmul(a, b, transpose_a=True), {"a": tfx.randn(4, 3), "b": tfx.randn(4, 2)})


def test_softmax(tfx):
    tf = tfx.tf
    tfx.check(lambda x: tf.nn.softmax(x * 3.0), {"x": tfx.randn(2, 10)})
    tfx.check(lambda x: tf.nn.log_softmax(x), {"x": tfx.randn(2, 3, 7)})


# ----------------------------------------------------------------------------- tensor ops
def test_pads(tfx):
    tf = tfx.tf
    x = tfx.randn(1, 4, 5, 3)
    paddings = [[0, 0], [1, 2], [2, 0], [0, 0]]
    tfx.check(lambda x: tf.pad(x, paddings), {"x": x})
    tfx.check(lambda x: tf.pad(x, paddings, constant_values=-1.5), {"x": x})
    tfx.check(lambda x: tf.pad(x, paddings, mode="REFLECT"), {"x": x})
    tfx.check(lambda x: tf.pad(x, paddings, mode="SYMMETRIC"), {"x": x})


def test_concat_reshape_squeeze_transpose(tfx):
    tf = tfx.tf
    w = const(tfx, (3, 3, 3, 2))

    def net(x):
        y = tf.concat([tf.nn.conv2d(x, w, 1, "SAME"), tf.nn.relu(x)], axis=3)
        return tf.reshape(y, [1, -1]), tf.squeeze(tf.reduce_mean(y, [1, 2], keepdims=True), [1, 2]), \
            tf.transpose(y, [0, 3, 1, 2])

    # the flattening reshape reads NHWC memory order: a transpose stays before it (and the mean
    # shares it: sinking it into the mean would only duplicate it)
    tfx.check(net, {"x": tfx.randn(1, 4, 4, 3)}, interior=2)


def test_shape_arithmetic_folds(tfx):
    tf = tfx.tf

    def net(x):
        s = tf.shape(x)
        return tf.reshape(x, tf.stack([s[0], s[1] * s[2], -1]))

    data, outputs, _ = tfx.freeze(net, {"x": tfx.randn(2, 3, 4, 5)})
    graph = tfx.tidlc_graph(data, outputs, level=0)
    # Shape/StridedSlice/Pack folded at import (the identity is the frozen graph's output node)
    assert [op.kind for op in graph.compute_ops()] == ["reshape", "identity"]
    tfx.check(net, {"x": tfx.randn(2, 3, 4, 5)})


def test_strided_slices(tfx):
    tf = tfx.tf
    x = tfx.randn(2, 6, 7, 4)
    tfx.check(lambda x: x[:, 1:-1:2, ::-2, 1], {"x": x})
    tfx.check(lambda x: x[1, ..., tf.newaxis, :3], {"x": x})
    tfx.check(lambda x: x[..., -1], {"x": x})
    tfx.check(lambda x: tf.slice(x, [0, 1, 2, 0], [-1, 3, 4, 2]), {"x": x})


def test_split_pack_expand(tfx):
    tf = tfx.tf
    x = tfx.randn(2, 6, 4)
    tfx.check(lambda x: tf.split(x, 3, axis=1), {"x": x})
    tfx.check(lambda x: tf.split(x, [1, -1, 2], axis=2), {"x": x})
    tfx.check(lambda x: tf.expand_dims(tf.stack([x, x * 2], axis=1), -1), {"x": x})


@pytest.mark.parametrize("method, kwargs", RESIZE_CASES)
def test_resize(tfx, method, kwargs):
    tf = tfx.tf
    fn = tf.compat.v1.image.resize_bilinear if method == "bilinear" else tf.compat.v1.image.resize_nearest_neighbor
    x = tfx.randn(1, 5, 6, 3)
    tfx.check(lambda x: fn(x, (10, 12), **kwargs), {"x": x})
    tfx.check(lambda x: fn(x, (15, 6), **kwargs), {"x": x})


def test_depth_to_space_and_cast(tfx):
    tf = tfx.tf
    x = tfx.randn(1, 3, 4, 8)
    tfx.check(lambda x: tf.nn.depth_to_space(x, 2), {"x": x})
    tfx.check(lambda x: tf.cast(tf.cast(x * 4, tf.int32), tf.float32), {"x": x})


def test_nchw_data_format_needs_no_transposes(tfx):
    """Graphs written for NCHW (GPU exports) import without transposes; TensorFlow on CPU cannot run
    NCHW convolutions, so the reference is the same network in NHWC."""
    tf = tfx.tf
    w, b = const(tfx, (3, 3, 4, 6)), const(tfx, (6,), 2)
    gamma, beta, mean = const(tfx, (6,), 3), const(tfx, (6,), 4), const(tfx, (6,), 5)
    var = tf.constant(np.random.default_rng(6).uniform(0.5, 2, 6).astype(np.float32))

    def net(x, fmt):
        y = tf.nn.bias_add(tf.nn.conv2d(x, w, 2, "SAME", data_format=fmt), b, data_format=fmt)
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(y, gamma, beta, mean, var, is_training=False, data_format=fmt)
        return tf.nn.max_pool2d(tf.nn.relu(y), 2, 2, "VALID", data_format=fmt)

    x = tfx.randn(1, 9, 8, 4)
    _, _, (ref,) = tfx.freeze(lambda x: net(x, "NHWC"), {"x": x})
    specs = [tf.TensorSpec((1, 4, 9, 8), tf.float32, name="x")]
    concrete = tf.function(lambda x: net(x, "NCHW"), autograph=False).get_concrete_function(*specs)
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    frozen = convert_variables_to_constants_v2(concrete)
    outputs = [t.name.split(":")[0] for t in frozen.outputs]
    graph = tfx.tidlc_graph(frozen.graph.as_graph_def().SerializeToString(), outputs, level=2)
    assert graph.inputs[0].type.layout == "NCHW"
    assert "transpose" not in {op.kind for op in graph.compute_ops()}
    got = next(iter(tfx.run_graph(graph, {"x": np.ascontiguousarray(x.transpose(0, 3, 1, 2))}).values()))
    tfx.assert_close(got, ref.transpose(0, 3, 1, 2), 1e-5, "NCHW graph")
