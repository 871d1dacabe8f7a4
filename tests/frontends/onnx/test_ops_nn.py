"""Per-op numerics against onnxruntime: Conv, ConvTranspose, Gemm, MatMul, BatchNormalization,
pooling, LRN, Softmax. Each case runs at -O0 and -O2 (relative tolerance 1e-5)."""
from __future__ import annotations

import numpy as np
import pytest

from tidlc.interp import run_graph

# ----------------------------------------------------------------------------- Conv
CONV_CASES = {
    "3x3_pad1": ((1, 3, 8, 8), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    "stride2_asym_pads": ((2, 3, 9, 7), (5, 3, 3, 3), {"strides": [2, 2], "pads": [0, 1, 2, 1]}),
    "dilation2": ((1, 2, 11, 10), (3, 2, 3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    "dilation_stride_rect": ((1, 2, 13, 9), (3, 2, 3, 2), {"dilations": [2, 1], "strides": [1, 2]}),
    "group2": ((1, 4, 7, 7), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    "depthwise": ((1, 6, 9, 9), (6, 1, 3, 3), {"group": 6, "pads": [1, 1, 1, 1]}),
    "depthwise_s2_asym": ((1, 4, 10, 9), (4, 1, 3, 3), {"group": 4, "strides": [2, 2], "pads": [0, 0, 1, 1]}),
    "depthwise_mult2": ((1, 3, 6, 6), (6, 1, 3, 3), {"group": 3}),
    "same_upper_s2": ((1, 3, 9, 8), (4, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "same_lower_s2": ((1, 3, 9, 8), (4, 3, 3, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    "same_upper_even_k": ((1, 2, 7, 6), (3, 2, 4, 2), {"auto_pad": "SAME_UPPER"}),
    "same_lower_even_k": ((1, 2, 7, 6), (3, 2, 2, 4), {"auto_pad": "SAME_LOWER", "strides": [1, 2]}),
    "valid": ((1, 3, 8, 8), (4, 3, 3, 3), {"auto_pad": "VALID", "strides": [2, 2]}),
    "1x1_s2": ((1, 8, 6, 6), (4, 8, 1, 1), {"strides": [2, 2]}),
    "kernel_shape_attr": ((1, 3, 6, 6), (2, 3, 3, 3), {"kernel_shape": [3, 3]}),
    "conv1d": ((2, 3, 12), (4, 3, 3), {"pads": [1, 2], "strides": [2], "dilations": [1]}),
    "conv1d_same": ((1, 3, 11), (2, 3, 4), {"auto_pad": "SAME_UPPER", "strides": [2]}),
}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv(ox, case, bias):
    xs, ws, attrs = CONV_CASES[case]
    inits = {"w": ox.randn(*ws, seed=1)}
    if bias:
        inits["b"] = ox.randn(ws[0], seed=2)
    ox.check_node("Conv", {"x": ox.randn(*xs)}, attrs, opset=11, initializers=inits)


@pytest.mark.parametrize("opset", [7, 13, 21])
def test_conv_opsets(ox, opset):
    ox.check_node("Conv", {"x": ox.randn(1, 4, 7, 7)}, {"group": 2, "strides": [2, 2], "pads": [1, 0, 1, 2]},
                  opset=opset, initializers={"w": ox.randn(6, 2, 3, 3, seed=1), "b": ox.randn(6, seed=2)})


def test_conv_weight_as_graph_input(ox):
    # a weight that is not an initializer still converts (runtime weights)
    ox.check_node("Conv", {"x": ox.randn(1, 2, 5, 5), "w": ox.randn(3, 2, 3, 3, seed=1)}, {"pads": [1, 1, 1, 1]})


# ----------------------------------------------------------------------------- ConvTranspose
DECONV_CASES = {
    "s2_k3_p1_op1": ((1, 3, 5, 5), (3, 4, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
    "s1": ((1, 2, 4, 5), (2, 3, 3, 3), {}),
    "s2_k2": ((2, 3, 4, 4), (3, 2, 2, 2), {"strides": [2, 2]}),
    "groups2": ((1, 4, 5, 5), (4, 3, 3, 3), {"group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "depthwise": ((1, 4, 5, 5), (4, 1, 4, 4), {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "dilation2": ((1, 2, 4, 4), (2, 3, 3, 3), {"dilations": [2, 2], "pads": [1, 0, 1, 2]}),
    "asym_pads": ((1, 2, 5, 4), (2, 2, 3, 3), {"strides": [2, 1], "pads": [0, 1, 2, 0]}),
    "output_padding_rect": ((1, 2, 3, 4), (2, 2, 3, 3), {"strides": [3, 2], "output_padding": [2, 1]}),
    "output_shape": ((1, 3, 5, 5), (3, 2, 3, 3), {"strides": [2, 2], "output_shape": [10, 10]}),
    "output_shape_odd": ((1, 3, 5, 5), (3, 2, 3, 3), {"strides": [2, 2], "output_shape": [9, 11]}),
    "output_shape_pads_ignored": ((1, 3, 4, 4), (3, 2, 3, 3), {"strides": [2, 2], "output_shape": [8, 8],
                                                                 "pads": [1, 1, 1, 1]}),
    "same_upper": ((1, 2, 5, 4), (2, 3, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "same_lower": ((1, 2, 5, 4), (2, 3, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    "same_upper_k4": ((1, 2, 4, 4), (2, 3, 4, 4), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "valid": ((1, 2, 4, 4), (2, 3, 3, 3), {"strides": [2, 2], "auto_pad": "VALID"}),
    "deconv1d": ((1, 3, 6), (3, 2, 3), {"strides": [2], "pads": [1, 0], "output_padding": [1]}),
}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", sorted(DECONV_CASES))
def test_conv_transpose(ox, case, bias):
    xs, ws, attrs = DECONV_CASES[case]
    group = attrs.get("group", 1)
    inits = {"w": ox.randn(*ws, seed=1)}
    if bias:
        inits["b"] = ox.randn(ws[1] * group, seed=2)
    ox.check_node("ConvTranspose", {"x": ox.randn(*xs)}, attrs, opset=11, initializers=inits)


@pytest.mark.parametrize("opset", [7, 13, 21])
def test_conv_transpose_opsets(ox, opset):
    ox.check_node("ConvTranspose", {"x": ox.randn(1, 4, 4, 4)}, {"strides": [2, 2], "group": 2, "pads": [1, 1, 0, 0],
                                                                    "output_padding": [1, 1]},
                  opset=opset, initializers={"w": ox.randn(4, 2, 3, 3, seed=1), "b": ox.randn(4, seed=2)})


# ----------------------------------------------------------------------------- Gemm / MatMul
@pytest.mark.parametrize("c_shape", [None, (5,), (1, 5), (3, 5), (3, 1), (1,), ()],
                         ids=["noC", "C_n", "C_1n", "C_mn", "C_m1", "C_1", "C_scalar"])
@pytest.mark.parametrize("trans", [(0, 0), (0, 1), (1, 0), (1, 1)], ids=lambda t: f"tA{t[0]}tB{t[1]}")
@pytest.mark.parametrize("const_b", [True, False], ids=["constB", "inputB"])
def test_gemm(ox, c_shape, trans, const_b):
    ta, tb = trans
    a = ox.randn(*((4, 3) if ta else (3, 4)))
    b = ox.randn(*((5, 4) if tb else (4, 5)), seed=1)
    inputs, inits = {"a": a}, {}
    (inits if const_b else inputs)["b"] = b
    names = ["a", "b"]
    if c_shape is not None:
        inits["c"] = ox.randn(*c_shape, seed=2)
        names.append("c")
    ox.check_node("Gemm", inputs, {"transA": ta, "transB": tb, "alpha": 0.5, "beta": 2.0}, opset=11,
                  initializers=inits, input_names=names)


@pytest.mark.parametrize("opset", [7, 9, 11, 13])
@pytest.mark.parametrize("alpha_beta", [(1.0, 1.0), (1.5, 0.0), (1.0, -0.5)])
def test_gemm_opsets(ox, opset, alpha_beta):
    alpha, beta = alpha_beta
    ox.check_node("Gemm", {"a": ox.randn(2, 6)}, {"transB": 1, "alpha": alpha, "beta": beta}, opset=opset,
                  initializers={"w": ox.randn(4, 6, seed=1), "c": ox.randn(4, seed=2)})


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (4, 5)),
                                    ((2, 1, 3, 4), (4, 6))], ids=str)
@pytest.mark.parametrize("const_b", [True, False], ids=["constB", "inputB"])
def test_matmul(ox, shapes, const_b):
    a = ox.randn(*shapes[0])
    b = ox.randn(*shapes[1], seed=1)
    inputs, inits = ({"a": a}, {"b": b}) if const_b else ({"a": a, "b": b}, {})
    ox.check_node("MatMul", inputs, initializers=inits, input_names=["a", "b"])


@pytest.mark.parametrize("shapes", [((2, 3, 4), (2, 4, 5)), ((3, 4), (2, 4, 5)), ((2, 3, 4), (4,))], ids=str)
def test_matmul_batched(ox, shapes):
    ox.check_node("MatMul", {"a": ox.randn(*shapes[0])}, initializers={"b": ox.randn(*shapes[1], seed=1)})


def test_matmul_becomes_dense(ox):
    model = ox.make_model([ox.helper.make_node("MatMul", ["a", "w"], ["y"], name="fc")], {"a": ox.randn(2, 4)},
                          ["y"], {"w": ox.randn(4, 3, seed=1)})
    graph = ox.tidlc_graph(model, None)
    assert [op.kind for op in graph.compute_ops()] == ["dense"]


# ----------------------------------------------------------------------------- BatchNormalization
def _bn_params(c, seed=3):
    rng = np.random.default_rng(seed)
    return {"scale": rng.standard_normal(c).astype(np.float32), "bias": rng.standard_normal(c).astype(np.float32),
            "mean": rng.standard_normal(c).astype(np.float32),
            "var": rng.uniform(0.5, 2.0, c).astype(np.float32)}


@pytest.mark.parametrize("opset", [7, 9, 14, 15])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3), (2, 3, 7)], ids=str)
def test_batchnorm(ox, opset, shape):
    ox.check_node("BatchNormalization", {"x": ox.randn(*shape)}, {"epsilon": 1e-3}, opset=opset,
                  initializers=_bn_params(shape[1]))


def test_batchnorm_spatial0(ox):
    params = _bn_params(3 * 4 * 5)
    params = {k: v.reshape(3, 4, 5) for k, v in params.items()}
    ox.check_node("BatchNormalization", {"x": ox.randn(2, 3, 4, 5)}, {"spatial": 0}, opset=7, initializers=params)


def _training_bn(ox, opset, x_shape, outputs=("y",), graph_outputs=("y",), x_const=False):
    declared = ["y", "m", "v"] + (["sm", "sv"] if opset < 14 else [])
    attrs = {"training_mode": 1} if opset >= 14 else {}
    node = ox.helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"],
                               declared[:len(outputs)] if len(outputs) > 1 else declared, name="bn", **attrs)
    x = ox.randn(*x_shape, seed=5)
    params = _bn_params(x_shape[1])
    if x_const:  # NF-Net's weight standardization: the normalized tensor is a constant, then a graph input scales it
        params["x"] = x
        mul = ox.helper.make_node("Mul", ["y", "g"], ["z"], name="gain")
        return ox.make_model([node, mul], {"g": ox.randn(*x_shape, seed=6)}, ["z"], params, opset=opset)
    return ox.make_model([node], {"x": x}, list(graph_outputs), params, opset=opset)


@pytest.mark.parametrize("opset", [9, 13, 14, 15])
@pytest.mark.parametrize("shape", [(1, 3, 4, 5), (2, 3, 4, 5), (1, 6, 27), (4, 3)], ids=str)
def test_batchnorm_training_mode_normalizes_with_its_own_statistics(ox, opset, shape):
    # timm's NF-Nets (ScaledStdConv2d) export F.batch_norm(weight, training=True) in eval mode:
    # each channel normalized by its own mean and population variance; before opset 14 declaring
    # the extra outputs *is* training mode (as onnxruntime reads it; onnx's ReferenceEvaluator
    # does not before 14)
    model = _training_bn(ox, opset, shape)
    x = ox.randn(*shape, seed=5)
    ref = ox.ort_run(model, {"x": x})["y"]
    axes = (0,) + tuple(range(2, len(shape)))
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    p = _bn_params(shape[1])
    bshape = (1, -1) + (1,) * (len(shape) - 2)
    direct = (x - mean) / np.sqrt(var + 1e-5) * p["scale"].reshape(bshape) + p["bias"].reshape(bshape)
    ox.assert_close(ref, direct.astype(np.float32), 1e-5, "onnxruntime vs numpy")
    for level in (0, 2):
        got = ox.run_graph(ox.tidlc_graph(model, level), {"x": x})["y"]
        ox.assert_close(got, ref, 1e-5, f"-O{level}")


def test_batchnorm_training_mode_on_a_constant_folds(ox):
    model = _training_bn(ox, 15, (1, 8, 27), x_const=True)
    graph = ox.tidlc_graph(model, 2)
    assert [op.kind for op in graph.compute_ops()] == ["mul"]
    g = ox.randn(1, 8, 27, seed=6)
    ox.assert_close(ox.run_graph(graph, {"g": g})["z"], ox.ort_run(model, {"g": g})["z"], 1e-5)


@pytest.mark.parametrize("opset", [7, 13, 14])
def test_batchnorm_training_outputs_rejected(ox, opset):
    from tidlc.diagnostics import TidlcError
    model = _training_bn(ox, opset, (1, 3, 2, 2), outputs=("y", "m", "v"), graph_outputs=("y", "m"))
    with pytest.raises(TidlcError, match="1 unsupported ONNX op") as info:
        ox.tidlc_graph(model)
    assert info.value.problems == [("'bn' (BatchNormalization): the running / saved mean and variance outputs "
                                    "(training) are not supported (export the model in eval mode, or use only Y)")]


# ----------------------------------------------------------------------------- pooling
MAXPOOL_CASES = {
    "k2s2": ((1, 2, 8, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "k3s2_pad1": ((1, 2, 9, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "asym_pads": ((1, 2, 7, 6), {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [0, 1, 2, 0]}),
    "same_upper": ((1, 2, 7, 6), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "same_lower": ((1, 2, 7, 6), {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    "valid": ((1, 2, 7, 6), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "VALID"}),
    "k1s2": ((1, 2, 7, 7), {"kernel_shape": [1, 1], "strides": [2, 2]}),
    "pool1d": ((1, 3, 10), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
}
CEIL_CASES = {
    "ceil_k3s2": ((1, 2, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "ceil_k3s2_pad1": ((1, 2, 8, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    "ceil_k2s2_pad1": ((1, 2, 6, 6), {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    "ceil_k3s3_asym": ((1, 2, 10, 11), {"kernel_shape": [3, 3], "strides": [3, 3], "pads": [0, 1, 1, 0], "ceil_mode": 1}),
    # Hugging Face's EfficientNet: AvgPool2d(2560, ceil_mode=True) on its 7x7 features, one window clipped to them
    "ceil_window_past_input": ((1, 2, 7, 7), {"kernel_shape": [2560, 2560], "strides": [2560, 2560], "ceil_mode": 1}),
    "ceil_window_past_padded": ((1, 2, 5, 6), {"kernel_shape": [9, 4], "strides": [9, 9], "pads": [1, 0, 1, 0],
                                               "ceil_mode": 1}),
}


@pytest.mark.parametrize("case", sorted(MAXPOOL_CASES))
@pytest.mark.parametrize("opset", [7, 12])
def test_maxpool(ox, case, opset):
    shape, attrs = MAXPOOL_CASES[case]
    ox.check_node("MaxPool", {"x": ox.randn(*shape)}, attrs, opset=opset)


@pytest.mark.parametrize("case", sorted(CEIL_CASES))
def test_maxpool_ceil(ox, case):
    shape, attrs = CEIL_CASES[case]
    ox.check_node("MaxPool", {"x": ox.randn(*shape)}, attrs, opset=12)


@pytest.mark.parametrize("case", [{"kernel_shape": [3, 3], "dilations": [2, 2]},
                                  {"kernel_shape": [2, 3], "dilations": [2, 1], "strides": [2, 2], "pads": [1, 1, 1, 1]},
                                  {"kernel_shape": [3, 3], "dilations": [2, 2], "strides": [2, 2], "ceil_mode": 1}],
                         ids=["d2", "d21_s2_p1", "d2_ceil"])
def test_maxpool_dilations(ox, case):
    ox.check_node("MaxPool", {"x": ox.randn(1, 2, 10, 9)}, case, opset=12)


def test_maxpool_declared_unused_indices(ox):
    node = ox.helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], strides=[2, 2],
                               storage_order=1)
    model = ox.make_model([node], {"x": ox.randn(1, 2, 4, 4)}, ["y"], opset=12)
    ox.check(model, {"x": ox.randn(1, 2, 4, 4)})


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("case", sorted(MAXPOOL_CASES))
@pytest.mark.parametrize("opset", [7, 11])
def test_avgpool(ox, case, count_include_pad, opset):
    shape, attrs = MAXPOOL_CASES[case]
    ox.check_node("AveragePool", {"x": ox.randn(*shape)}, dict(attrs, count_include_pad=count_include_pad),
                  opset=opset)


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("case", sorted(CEIL_CASES))
def test_avgpool_ceil(ox, case, count_include_pad):
    shape, attrs = CEIL_CASES[case]
    ox.check_node("AveragePool", {"x": ox.randn(*shape)}, dict(attrs, count_include_pad=count_include_pad),
                  opset=11)


@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_avgpool_dilations(ox, count_include_pad):
    ox.check_node("AveragePool", {"x": ox.randn(1, 2, 10, 9)},
                  {"kernel_shape": [3, 2], "dilations": [2, 2], "strides": [1, 2], "pads": [1, 1, 2, 0],
                       "count_include_pad": count_include_pad}, opset=19)


@pytest.mark.parametrize("op_type", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 3, 7)], ids=str)
def test_global_pool(ox, op_type, shape):
    ox.check_node(op_type, {"x": ox.randn(*shape)})


# ----------------------------------------------------------------------------- InstanceNormalization
@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (1, 4, 7)], ids=["nchw", "ncw"])
def test_instance_normalization(ox, shape):
    c = shape[1]
    ox.check_node("InstanceNormalization", {"x": ox.randn(*shape)}, {"epsilon": 1e-3},
                  initializers={"s": ox.randn(c, seed=1), "b": ox.randn(c, seed=2)}, rtol=1e-4)


# ----------------------------------------------------------------------------- ImageScaler
@pytest.mark.parametrize("attrs", [{"scale": 0.017, "bias": [-2.1, -2.0, -1.8]}, {"bias": [0.5, 0.0, -1.0]}],
                         ids=["scale_bias", "default_scale"])
def test_image_scaler(ox, attrs):
    # the experimental op of old Caffe2/CoreML exports (the model zoo's Tiny YOLOv2, opset 8)
    ox.check_node("ImageScaler", {"x": ox.randn(1, 3, 5, 6)}, attrs, opset=8)


# ----------------------------------------------------------------------------- LRN / Softmax
@pytest.mark.parametrize("size", [1, 3, 5])  # onnxruntime rejects even sizes
def test_lrn(ox, size):
    ox.check_node("LRN", {"x": ox.randn(1, 7, 3, 3)}, {"size": size, "alpha": 1e-3, "beta": 0.7, "bias": 1.5})


@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset", [7, 11, 13])
@pytest.mark.parametrize("axis", [None, 0, 1, 2, -1, -3])
def test_softmax(ox, op_type, opset, axis):
    attrs = {} if axis is None else {"axis": axis}
    ox.check_node(op_type, {"x": ox.randn(2, 3, 4)}, attrs, opset=opset)


@pytest.mark.parametrize("opset", [9, 13])
def test_softmax_rank4_default_axis(ox, opset):
    ox.check_node("Softmax", {"x": ox.randn(2, 3, 2, 5)}, opset=opset)


@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_dynamic_batch(ox, opset):
    # before opset 13 the 2-D coercion reshapes back to the runtime shape (a Shape op)
    node = ox.helper.make_node("Softmax", ["x"], ["y"], axis=1)
    model = ox.make_model([node], {"x": ox.randn(2, 3, 4)}, ["y"], opset=opset)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    x = ox.randn(5, 3, 4)
    ref = ox.ort_run(model, {"x": x})["y"]
    for level in (0, 2):
        graph = ox.tidlc_graph(model, level)
        assert graph.inputs[0].shape == (None, 3, 4)
        ox.assert_close(ox.run_graph(graph, {"x": x})["y"], ref)


@pytest.mark.parametrize("op_type", ["Gemm", "MatMul"])
def test_weights_from_constant_of_shape_become_dense(ox, op_type):
    # the light models' pattern: the weight is ConstantOfShape(shape initializer)
    h = ox.helper
    fill = ox.numpy_helper.from_array(np.array([0.25], np.float32))
    w_shape = [3, 4] if op_type == "Gemm" else [4, 3]
    nodes = [h.make_node("ConstantOfShape", ["w_shape"], ["w"], value=fill),
             h.make_node(op_type, ["x", "w"], ["y"], **({"transB": 1, "alpha": 2.0} if op_type == "Gemm" else {}))]
    model = ox.make_model(nodes, {"x": ox.randn(2, 4)}, ["y"], {"w_shape": np.array(w_shape, np.int64)})
    ox.check(model, {"x": ox.randn(2, 4)}, levels=(0, 1, 2))
    assert "dense" in [op.kind for op in ox.tidlc_graph(model, None).compute_ops()]
    graph = ox.tidlc_graph(model, 1)
    assert [op.kind for op in graph.compute_ops()] == ["dense"]


EINSUMS = [  # (equation, shapes, which operands are constants)
    ("abc,cde->abde", [(1, 5, 8), (8, 2, 4)], (1,)),  # Keras EinsumDense: the q/k/v projections
    ("abcd,cde->abe", [(1, 5, 2, 4), (2, 4, 8)], (1,)),  # the output projection
    ("aecd,abcd->acbe", [(1, 6, 2, 4), (1, 5, 2, 4)], ()),  # attention scores
    ("acbe,aecd->abcd", [(1, 2, 5, 6), (1, 6, 2, 4)], ()),  # attention-weighted values
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)], ()),
    ("bij,bjk->bik", [(3, 4, 5), (3, 5, 2)], ()),
    ("...ij,...jk->...ik", [(2, 3, 4, 5), (1, 3, 5, 2)], ()),  # batch broadcasting
    ("ij,jk", [(4, 5), (5, 3)], ()),  # implicit output
    ("ij,ij->i", [(4, 5), (4, 5)], ()),  # a row-wise dot product
    ("ijk->kj", [(2, 3, 4)], ()),  # a sum and a transpose
    ("ij,kj->ik", [(4, 5), (3, 5)], (1,)),  # x @ W.T with a constant W
    ("bi,i->b", [(3, 4), (4,)], (1,)),
]


@pytest.mark.parametrize("equation,shapes,consts", EINSUMS, ids=[e[0] for e in EINSUMS])
def test_einsum(ox, equation, shapes, consts):
    rng = np.random.default_rng(len(equation))
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    names = [f"x{i}" for i in range(len(shapes))]
    inputs = {n: a for i, (n, a) in enumerate(zip(names, arrays)) if i not in consts}
    inits = {n: a for i, (n, a) in enumerate(zip(names, arrays)) if i in consts}
    ox.check_node("Einsum", inputs, {"equation": equation}, opset=12, initializers=inits, input_names=names)
    if consts:  # a constant right operand without batch indices is one InnerProduct
        graph = ox.tidlc_graph(ox.make_model([ox.helper.make_node("Einsum", names, ["y"], equation=equation)],
                                             inputs, ["y"], inits, 12), 2)
        assert [op.kind for op in graph.compute_ops()].count("dense") == 1


def test_einsum_diagonal_runs_on_the_host(ox):
    """A repeated index (a diagonal) is not lowered: a host op that says why."""
    x = np.random.default_rng(0).standard_normal((3, 4, 4)).astype(np.float32)
    ox.check_node("Einsum", {"x": x}, {"equation": "bii->bi"}, opset=12)
    (host,) = [op for op in ox.tidlc_graph(ox.make_model([ox.helper.make_node("Einsum", ["x"], ["y"], equation="bii->bi")],
                                                           {"x": x}, ["y"], None, 12), 0).ops if op.kind == "host"]
    assert "a diagonal" in host.attrs["reason"]


@pytest.mark.parametrize("op_type", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize(("kernel", "strides"), [((1, 3, 3), (2, 1, 2)), ((1, 2, 2), (1, 2, 2))])
def test_a_one_deep_3d_pool_pools_each_depth_slice(ox, op_type, kernel, strides):
    """A 5-D pool whose window is one deep: onnxruntime's result. Its depth stride picks slices."""
    ox.check_node(op_type, {"x": ox.randn(1, 2, 5, 7, 9)}, {"kernel_shape": list(kernel), "strides": list(strides)},
                  opset=13)


def test_lprnets_3d_pool_of_a_4d_tensor_reads_as_pytorch_does(ox):
    """LPRNet's ``MaxPool3d((1, 3, 3), stride=(2, 1, 2))`` on its 4-D map: PyTorch pools one
    unbatched (C, D, H, W) volume, so the depth stride keeps every other channel. Its export, a
    3-D kernel on a 4-D tensor, is invalid ONNX (onnxruntime refuses it); tidlc computes what
    PyTorch does (here numpy: channels [::2], then a 3x3 stride (1, 2) max of each)."""
    x = ox.randn(1, 6, 7, 11)
    node = ox.helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[1, 3, 3], strides=[2, 1, 2])
    graph = ox.tidlc_graph(ox.make_model([node], {"x": x}, ["y"], opset=13), level=2)
    picked = x[:, ::2]
    want = np.stack([[picked[0, c, i:i + 3, j:j + 3].max() for j in range(0, 9, 2)] for c in range(3)
                     for i in range(5)]).reshape(1, 3, 5, 5)
    np.testing.assert_array_equal(run_graph(graph, {"x": x})["y"], want)
    padded = ox.helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3, 3], pads=[1] * 6)
    (host,) = [op for op in ox.tidlc_graph(ox.make_model([padded], {"x": ox.randn(1, 2, 4, 5, 6)}, ["y"], opset=13)).ops
               if op.kind == "host"]
    assert "3-D pool" in host.attrs["reason"] or "3-D pooling" in host.attrs["reason"]
