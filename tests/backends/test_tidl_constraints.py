"""TIDL layer constraints behind ``TidlBackend.supports`` (backends/tidl/constraints.py)."""
from __future__ import annotations

import attrs
import numpy as np
import pytest
from tidlc.backends.tidl import constraints
from tidlc.backends.tidl.backend import TidlBackend

from tidlc.backend import Verdict
from tidlc.ir import Builder, TensorType
from tidlc.ir.core import Op, Value

BACKEND = TidlBackend()


def supports(op, device=None) -> Verdict:
    verdict = BACKEND.supports(op) if device is None else BACKEND.supports(op, device=device)
    assert isinstance(verdict, Verdict)
    return verdict


def last_op(b: Builder) -> Op:
    return b.graph.ops[-1]


def conv(x_shape=(1, 64, 32, 32), cout=64, kernel=(3, 3), strides=(1, 1), pads=None, groups=1,
         dilations=(1, 1), bias=False, weight_input=False):
    b = Builder()
    x = b.input("x", TensorType(x_shape, layout="NCHW"))
    kh, kw = kernel
    if pads is None:
        pads = ((kh - 1) // 2 * dilations[0], (kw - 1) // 2 * dilations[1]) * 2
    w_shape = (cout, x_shape[1] // groups, kh, kw)
    if weight_input:
        w = b.input("w", TensorType(w_shape))
    else:
        w = b.const(np.zeros(w_shape, np.float32), "w")
    operands = [x, w] + ([b.const(np.zeros(cout, np.float32), "b")] if bias else [])
    b.op("conv2d", operands, strides=strides, pads=pads, groups=groups, dilations=dilations, name="conv")
    return last_op(b)


def deconv(kernel=3, stride=2, pads=(1, 1, 1, 1), output_padding=(1, 1), groups=1, cin=64, cout=64):
    b = Builder()
    x = b.input("x", TensorType((1, cin, 16, 16), layout="NCHW"))
    w = b.const(np.zeros((cin, cout // groups, kernel, kernel), np.float32), "w")
    b.op("deconv2d", [x, w], strides=(stride, stride), pads=pads, output_padding=output_padding,
         groups=groups, name="up")
    return last_op(b)


def pool(kernel, strides, mode="max", dilations=(1, 1), pads=(0, 0, 0, 0)):
    b = Builder()
    x = b.input("x", TensorType((1, 64, 32, 32), layout="NCHW"))
    b.op("pool2d", [x], mode=mode, kernel=kernel, strides=strides, pads=pads, dilations=dilations)
    return last_op(b)


def resize(scales=(1, 1, 2, 2), sizes=(), mode="nearest", coord_mode="asymmetric", nearest_mode="floor",
           shape=(1, 16, 8, 8)):
    b = Builder()
    x = b.input("x", TensorType(shape, layout="NCHW"))
    b.op("resize", [x], scales=scales, sizes=sizes, mode=mode, coord_mode=coord_mode, nearest_mode=nearest_mode)
    return last_op(b)


# --------------------------------------------------------------------------- conv
def test_supported_3x3_s1_conv_is_accelerated_without_notes():
    v = supports(conv())
    assert v.level == "accelerated"
    assert v.reason == "TIDL layer Convolution"
    assert v.hint == ""


def test_width_30_conv_notes_the_alignment_waste():
    v = supports(conv(x_shape=(1, 64, 32, 30)))
    assert v.level == "accelerated"  # runs on the MMA; the note quantifies the padding
    assert "W=30 pads to 32: 6% of MMA work wasted" in v.reason
    assert "output width a multiple of 8" in v.hint
    pads = constraints.alignment(conv(x_shape=(1, 64, 32, 30)))
    assert [(p.what, p.size, p.padded) for p in pads] == [("W", 30, 32)]
    assert pads[0].waste == pytest.approx(2 / 32)


def test_stride2_conv_width_rounds_to_16():
    v = supports(conv(x_shape=(1, 64, 48, 48), strides=(2, 2)))  # Wout 24 -> 32 at stride 2
    assert "W=24 pads to 32: 25% of MMA work wasted" in v.reason


def test_small_channels_pad_k_and_cout_to_the_panel():
    v = supports(conv(x_shape=(1, 3, 32, 32), cout=8, bias=True))
    assert v.level == "accelerated"
    assert "K=28 (3x3x3 + bias) pads to 64: 56% of MMA work wasted" in v.reason
    assert "Cout=8 pads to 64: 88% of MMA work wasted" in v.reason
    assert "together 95% of the MMA work is padding" in v.reason
    assert "a multiple of 64" in v.hint


def test_conv_kernel_stride_pairs():
    assert supports(conv(kernel=(11, 11), strides=(4, 4), x_shape=(1, 3, 227, 227))).level == "accelerated"
    assert supports(conv(kernel=(3, 3), strides=(3, 3), pads=(0, 0, 0, 0))).level == "accelerated"
    assert supports(conv(kernel=(1, 7))).level == "accelerated"
    v = supports(conv(kernel=(9, 9)))
    assert v.level == "host" and "not among TIDL's validated kernel/stride pairs" in v.reason
    assert "1x1, 2x2, 3x3, 5x5, 7x7" in v.hint and "stacked 3x3" in v.hint
    v = supports(conv(kernel=(9, 9), strides=(2, 2)))
    assert v.level == "host" and "larger than 7 with stride 2" in v.reason
    v = supports(conv(kernel=(5, 5), strides=(4, 4)))
    assert v.level == "host" and "stride 4 only with an 11x11" in v.reason
    assert "two stride-2 convs" in v.hint
    v = supports(conv(kernel=(1, 3), strides=(2, 2)))
    assert v.level == "host"


def test_patchify_conv_becomes_transpose_and_inner_product():
    v = supports(conv(kernel=(4, 4), strides=(4, 4), pads=(0, 0, 0, 0)))
    assert v.level == "penalty"
    assert "Transpose plus an InnerProduct" in v.reason


def test_asymmetric_stride_is_a_penalty():
    v = supports(conv(strides=(2, 1)))
    assert v.level == "penalty"
    assert "strideH == strideW" in v.reason and "1x1 max pool" in v.reason
    assert "equal strides" in v.hint


def test_dilation_only_without_stride():
    assert supports(conv(dilations=(2, 2))).level == "accelerated"
    v = supports(conv(dilations=(2, 2), strides=(2, 2)))
    assert v.level == "host" and "dilation only on stride-1" in v.reason
    assert "1x1 stride-2 max pool" in v.hint


def test_conv_weight_must_be_constant():
    v = supports(conv(weight_input=True))
    assert v.level == "host" and "one variable input" in v.reason


def test_input_narrower_than_padding():
    v = supports(conv(x_shape=(1, 64, 8, 1), kernel=(5, 5), pads=(2, 2, 2, 2)))
    assert v.level == "host" and "max(padL, padR)" in v.reason


def test_depthwise_limits():
    dw = {"x_shape": (1, 32, 32, 32), "cout": 32, "groups": 32}
    assert supports(conv(kernel=(3, 3), strides=(2, 2), **dw)).level == "accelerated"
    assert supports(conv(kernel=(7, 7), **dw)).level == "accelerated"
    v = supports(conv(kernel=(3, 3), strides=(3, 3), pads=(0, 0, 0, 0), **dw))
    assert v.level == "host" and "depthwise" in v.reason
    assert "stride 3 is not supported for depthwise" in v.hint
    v = supports(conv(kernel=(1, 5), **dw))
    assert v.level == "host" and "1x3 s1" in v.reason
    # a depthwise conv runs on the vector unit: only the width note, no MMA panel
    v = supports(conv(x_shape=(1, 32, 30, 30), cout=32, groups=32))
    assert "W=30 pads to 32: 6% of vector work wasted" in v.reason
    assert "Cout" not in v.reason and "K=" not in v.reason


# --------------------------------------------------------------------------- deconv
def test_deconv_3x3_s2_is_not_accelerated_and_says_how_to_replace_it():
    v = supports(deconv(kernel=3))
    assert v.level == "host"
    assert "2x2 or 4x4" in v.reason and "11.x" in v.reason
    assert "replace ConvTranspose 3x3 s2 by Resize x2 (nearest) + Conv 3x3" in v.hint


def test_deconv_supported_and_other_limits():
    v = supports(deconv(kernel=4, pads=(1, 1, 1, 1), output_padding=(0, 0)))
    assert v.level == "accelerated"
    assert "perf cliff" in v.reason and "Resize x2 + Conv 4x4" in v.hint
    assert supports(deconv(kernel=2, pads=(0, 0, 0, 0), output_padding=(0, 0))).level == "accelerated"
    v = supports(deconv(kernel=4, pads=(0, 0, 0, 0), output_padding=(0, 0)))  # 16 -> 34, not 32
    assert v.level == "host" and "not 2x the input" in v.reason
    v = supports(deconv(kernel=2, pads=(0, 0, 0, 0), output_padding=(0, 0), groups=64))
    assert v.level == "host" and "group=1" in v.reason
    v = supports(deconv(kernel=3, stride=1, output_padding=(0, 0)))
    assert v.level == "host" and "flipped" in v.hint
    v = supports(deconv(kernel=4, stride=4, pads=(0, 0, 0, 0), output_padding=(0, 0)))
    assert v.level == "host" and "Resize x4" in v.hint


# --------------------------------------------------------------------------- pooling
def test_pooling_sizes_and_strides():
    assert supports(pool((3, 3), (2, 2))).level == "accelerated"
    assert supports(pool((2, 2), (2, 2), mode="avg")).level == "accelerated"
    v = supports(pool((4, 4), (2, 2)))
    assert v.level == "penalty" and "not optimally" in v.reason
    v = supports(pool((5, 5), (1, 1), pads=(2, 2, 2, 2)))
    assert v.level == "host" and "1x1, 2x2 and 3x3" in v.reason
    assert "2 chained 3x3 stride-1 max pools" in v.hint
    v = supports(pool((8, 8), (8, 8), mode="avg"))
    assert v.level == "host" and "3 chained 2x2 stride-2 avg pools" in v.hint
    v = supports(pool((3, 3), (1, 1), dilations=(2, 2), pads=(2, 2, 2, 2)))
    assert v.level == "host" and "no dilation" in v.reason


def test_global_average_pool_on_64x64():
    b = Builder()
    x = b.input("x", TensorType((1, 16, 64, 64), layout="NCHW"))
    b.op("global_pool", [x], mode="avg")
    v = supports(last_op(b))
    assert v.level == "host"
    assert "GlobalAveragePool on 64x64 (4096 elements per plane)" in v.reason and "1024" in v.reason
    assert "2x2 stride-2 average pool first, then GlobalAveragePool on 32x32" in v.hint
    assert "MatMul" in v.hint
    b.op("global_pool", [x], mode="max")  # the limit is stated for GlobalAveragePool only
    assert supports(last_op(b)).level == "accelerated"
    y = b.input("y", TensorType((1, 16, 32, 32), layout="NCHW"))
    b.op("global_pool", [y], mode="avg")
    assert supports(last_op(b)).level == "accelerated"
    b.op("reduce", [x], op="mean", axes=(2, 3))
    assert supports(last_op(b)).level == "host"


# --------------------------------------------------------------------------- resize
@pytest.mark.parametrize(("hw", "note"), [((520, 520), "512x512"), ((512, 512), None)])
def test_a_non_power_of_two_resize_names_an_input_size_that_halves_evenly(hw, note):
    """torchvision's LRASPP exported at its 520x520: the 33x33 plane upsampled to 65x65 (x1.97)."""
    b = Builder()
    x = b.input("x", TensorType((1, 3, *hw), layout="NCHW"))
    w = b.const(np.zeros((8, 3, 3, 3), np.float32), "w")
    c = b.op("conv2d", [x, w], strides=(2, 2), pads=(1, 1, 1, 1))
    out = -(-hw[0] // 2)
    b.op("resize", [c], scales=(1.0, 1.0, 1.97, 1.97), sizes=(1, 8, 2 * out - 1, 2 * out - 1), mode="linear",
         coord_mode="half_pixel")
    v = supports(last_op(b))
    assert v.level == "host" and "power-of-two" in v.reason
    assert (note is not None and f"at {note} (exported at that size)" in v.hint) or (note is None and "multiple" not in v.hint)


def test_x3_resize_hints_x2_or_x4():
    v = supports(resize(scales=(1, 1, 3, 3)))
    assert v.level == "host" and "power-of-two" in v.reason
    assert "x2 or x4" in v.hint
    v = supports(resize(scales=(1, 1, 3, 3), sizes=(1, 16, 24, 24)))  # x3 given as sizes
    assert v.level == "host" and "x2 or x4" in v.hint


def test_resize_rules():
    assert supports(resize()).level == "accelerated"
    v = supports(resize(scales=(1, 1, 8, 8)))
    assert v.level == "accelerated" and "x4 then x2" in v.reason
    v = supports(resize(scales=(1, 1, 0.5, 0.5)))
    assert v.level == "host" and "scale >= 1" in v.reason
    v = supports(resize(scales=(1, 1, 2, 1)))
    assert v.level == "host" and "same factor on H and W" in v.reason
    v = supports(resize(scales=(1, 2, 2, 2)))
    assert v.level == "host" and "H and W only" in v.reason
    v = supports(resize(mode="linear", coord_mode="align_corners"))
    assert v.level == "host" and "half_pixel" in v.hint
    assert supports(resize(mode="linear", coord_mode="half_pixel")).level == "accelerated"
    assert supports(resize(coord_mode="half_pixel", nearest_mode="round_prefer_ceil")).level == "accelerated"
    # another nearest convention that picks the same samples at x2 is fine (with a note)
    v = supports(resize(coord_mode="half_pixel", nearest_mode="round_prefer_floor"))
    assert v.level == "accelerated" and "same samples" in v.reason
    v = supports(resize(coord_mode="asymmetric", nearest_mode="ceil"))  # picks other samples
    assert v.level == "host" and "asymmetric" in v.hint


# --------------------------------------------------------------------------- tensors
def test_rank_7_tensor_is_host():
    b = Builder()
    x = b.input("x", TensorType((1, 2, 2, 2, 2, 2, 2)))
    b.op("relu", [x])
    v = supports(last_op(b))
    assert v.level == "host" and "rank-7" in v.reason and "at most 6" in v.reason
    assert "reshape" in v.hint
    y = b.input("y", TensorType((1, 2, 2, 2, 2, 2)))
    b.op("relu", [y])
    assert supports(last_op(b)).level == "accelerated"


def test_concat_axes_and_input_count():
    b = Builder()
    x = b.input("x", TensorType((1, 8, 4, 4), layout="NCHW"))
    for axis in (1, 2, 3):
        b.op("concat", [x, x], axis=axis)
        assert supports(last_op(b)).level == "accelerated"
    b.op("concat", [x, x], axis=0)
    v = supports(last_op(b))
    assert v.level == "host" and "batch" in v.reason
    b.op("concat", [x] * 25, axis=1)
    v = supports(last_op(b))
    assert v.level == "host" and "24 input buffers" in v.reason


def test_eltwise_does_not_broadcast_the_batch():
    b = Builder()
    x = b.input("x", TensorType((2, 8, 4, 4), layout="NCHW"))
    y = b.input("y", TensorType((1, 8, 4, 4), layout="NCHW"))
    z = b.input("z", TensorType((2, 8, 1, 1), layout="NCHW"))
    b.op("add", [x, y])
    v = supports(last_op(b))
    assert v.level == "host" and "batch" in v.reason
    b.op("mul", [x, z])
    assert supports(last_op(b)).level == "accelerated"


def test_argmax_channel_axis_and_keepdims():
    b = Builder()
    x = b.input("x", TensorType((1, 8, 4, 4), layout="NCHW"))
    b.op("argmax", [x], axis=1)
    assert supports(last_op(b)).level == "accelerated"
    b.op("argmax", [x], axis=2)
    assert supports(last_op(b)).level == "host"
    b.op("argmax", [x], axis=1, keepdims=False)
    v = supports(last_op(b))
    assert v.level == "host" and "keepdims" in v.hint


def test_layernorm_width_axis_only():
    b = Builder()
    x = b.input("x", TensorType((1, 8, 1, 64), layout="NCHW"))
    b.op("layernorm", [x], axis=-1)  # on the device (a float layer in tidlc's executor: a penalty)
    assert supports(last_op(b)).level != "host"
    b.op("layernorm", [x], axis=2)  # the singleton H axis does not count
    assert supports(last_op(b)).level != "host"
    y = b.input("y", TensorType((1, 8, 4, 16), layout="NCHW"))
    b.op("layernorm", [y], axis=2)  # an instance norm's H and W
    v = supports(last_op(b))
    assert v.level == "host" and "axes [2, 3]" in v.reason and "N,C,1,H*W" in v.hint
    b.op("layernorm", [y], axis=1)
    assert supports(last_op(b)).level == "host"


def test_unsigned_input_of_a_variable_matmul_on_tda4vm():
    """edgeai-tidl-tools' operator table, InnerProduct: "For TDA4VM variable input case, doesn't
    support unsigned input" (either operand, or both)."""
    b = Builder()
    a = b.input("a", TensorType((1, 4, 64, 64), dtype="u8"))
    s = b.input("s", TensorType((1, 4, 64, 64), dtype="i8"))
    b.op("matmul", [a, s])
    op = last_op(b)
    v = supports(op)
    assert v.level == "host" and "with unsigned 'a'" in v.reason and "no unsigned input" in v.reason
    assert supports(op, device="tda4vm").level == "host"
    from tidlc.backends.tidl.perf import load_device
    other = attrs.evolve(load_device("tda4vm"), name="am68a")
    assert supports(op, device=other).level == "accelerated"  # the rule is stated for TDA4VM only
    b.op("matmul", [s, s])
    assert supports(last_op(b)).level == "accelerated"
    b.op("matmul", [a, a])
    assert supports(last_op(b)).level == "host"


def test_dense_alignment():
    b = Builder()
    x = b.input("x", TensorType((1, 100)))
    b.op("dense", [x, b.const(np.zeros((10, 100), np.float32))])
    v = supports(last_op(b))
    assert v.level == "accelerated"
    assert "K=100" in v.reason and "Cout=10 pads to 64: 84% of MMA work wasted" in v.reason
    assert "W=" not in v.reason  # an InnerProduct has no width alignment


def test_opaque_host_op_names_its_op_type():
    b = Builder()
    x = b.input("x", TensorType((1, 8, 4, 4), layout="NCHW"))
    op = Op("host", [x], [], {"op_type": "NonMaxSuppression"}, "nms")
    op.results = [Value(TensorType((1, 8)), op, 0, "nms")]
    v = supports(op)
    assert v.level == "host"
    assert "'NonMaxSuppression'" in v.reason
    assert "NonMaxSuppression" in v.hint and v.hint


def test_op_without_tidl_layer_keeps_the_float_penalty():
    b = Builder()
    x = b.input("x", TensorType((1, 3, 4, 4), layout="NCHW"))
    b.op("max_pool_index", [x], kernel=(2, 2), strides=(2, 2))
    v = supports(last_op(b))
    assert v.level == "penalty" and "no TIDL layer" in v.reason


def test_supports_accepts_a_device():
    from tidlc.backends.tidl.perf import load_device
    device = load_device("tda4vm")
    op = conv(x_shape=(1, 64, 32, 30))
    assert supports(op, device=device) == supports(op) == supports(op, device="tda4vm")
    wide = attrs.evolve(device, width_align=16)
    assert "W=30 pads to 32: 6%" in supports(op, device=wide).reason
    narrow = attrs.evolve(device, width_align=2)
    assert "W=" not in supports(op, device=narrow).reason


def test_reshape_needs_a_static_shape():
    b = Builder()
    x = b.input("x", TensorType((1, 8, None, 4)))
    b.op("reshape", [x, b.op("shape", [x])])
    v = supports(last_op(b))
    assert v.level == "host" and "static shape" in v.reason and "--input-shape" in v.hint
    y = b.input("y", TensorType((1, 8, 2, 4)))
    b.op("reshape", [y, b.op("shape", [y])])  # the shape of a static tensor folds
    assert supports(last_op(b)).level == "accelerated"
    b.op("reshape", [y], shape=(1, 64))
    assert supports(last_op(b)).level == "accelerated"


def test_a_device_name_the_builtins_do_not_know_falls_back_to_tda4vm():
    op = conv(x_shape=(1, 64, 32, 30))
    assert supports(op, device="some-plugin-board").reason == supports(op).reason


def test_a_tensor_sized_at_run_time_is_a_host_layer():
    """After an exported YOLO's NMS (NonZero, NonMaxSuppression, a Pad by the kept count) sizes
    are data: TIDL's buffers have static shapes, so those ops are host layers, not one-op
    subgraphs between them."""
    b = Builder()
    x = b.input("x", TensorType((None, 4)))
    b.op("transpose", [x], perm=(1, 0))
    v = supports(last_op(b))
    assert v.level == "host" and "known only at run time" in v.reason and "NonMaxSuppression" in v.hint


@pytest.mark.parametrize(("dtype", "host"), [("i64", True), ("bool", False), ("i32", False), ("f32", False)])
def test_a_computed_tensor_tidl_has_no_type_for_is_a_host_layer(dtype, host):
    """Shape arithmetic of run-time sizes (int64) is no TIDL tensor; a bool is a byte."""
    b = Builder()
    x = b.input("x", TensorType((2, 3), dtype))
    b.op("concat", [x, x], axis=0)
    v = supports(last_op(b))
    assert (v.level == "host") == host and (not host or f"no {dtype} tensors" in v.reason)


@pytest.mark.parametrize("axis", [1, 2])
def test_argmax_indices_moved_on_stay_with_their_argmax(axis):
    """An ArgMax's indices are i64 in the IR (TIDL writes 8-32 bits): a reshape of them stays on the
    accelerator after an accelerated ArgMax, and goes to the host after a host one."""
    b = Builder()
    x = b.input("x", TensorType((1, 5, 8, 8), layout="NCHW"))
    idx = b.op("argmax", [x], axis=axis, keepdims=True)
    b.op("reshape", [idx], shape=(1, 64) if axis == 1 else (1, 5, 8))
    assert (supports(last_op(b)).level == "host") == (axis != 1)
