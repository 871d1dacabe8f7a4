"""The float interpreter: every op's reference against an independent computation.

The references here are written from the definitions (explicit loops over
output positions, scipy, or onnxruntime where ONNX defines the op), never by
calling the code under test. ``run_op`` also checks that each result has the
shape and element type that type inference declared.
"""
import itertools

import numpy as np
import pytest
from scipy import special

import tidlc.ir.ops  # noqa: F401  (registers the builtin ops)
from tidlc.diagnostics import TidlcError
from tidlc.interp import evaluate_op, run_graph
from tidlc.ir import Builder, TensorType
from tidlc.ir.opdef import OPS
from tidlc.ir.types import QuantInfo, dtype_of, numpy_dtype

RNG = np.random.default_rng(1234)
TESTED: set[str] = set()


def randn(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def run_op(kind, *arrays, consts=(), **attrs):
    """Run one op on ``arrays`` (graph inputs, or constants at the indices in ``consts``)."""
    TESTED.add(kind)
    b = Builder()
    operands, feeds = [], {}
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if i in consts:
            operands.append(b.const(a))
        else:
            feeds[f"in{i}"] = a
            operands.append(b.input(f"in{i}", TensorType(a.shape, dtype_of(a))))
    out = b.op(kind, operands, **attrs)
    outs = out if isinstance(out, list) else [out]
    for k, v in enumerate(outs):
        b.output(v, f"out{k}")
    results = list(run_graph(b.graph, feeds).values())
    for v, r in zip(outs, results):
        if v.type.is_static:
            assert r.shape == v.type.shape, f"{kind}: computed {r.shape}, inferred {v.type.shape}"
        assert r.dtype == numpy_dtype(v.type.dtype), f"{kind}: computed {r.dtype}, inferred {v.type.dtype}"
    return results if isinstance(out, list) else results[0]


def close(got, want, tol=1e-5):
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


# --------------------------------------------------------------------------- references
def pad_hw(x, pads, value=0.0):
    top, left, bottom, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def naive_conv(x, w, b, strides, pads, dilations, groups):
    n = x.shape[0]
    cout, cin_g, kh, kw = w.shape
    xp = pad_hw(x.astype(np.float64), pads)
    ho = (xp.shape[2] - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    wo = (xp.shape[3] - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    out = np.zeros((n, cout, ho, wo))
    per_group = cout // groups
    for o, y, x_ in itertools.product(range(cout), range(ho), range(wo)):
        g = o // per_group
        for ci, i, j in itertools.product(range(cin_g), range(kh), range(kw)):
            out[:, o, y, x_] += (xp[:, g * cin_g + ci, y * strides[0] + i * dilations[0],
                                    x_ * strides[1] + j * dilations[1]] * w[o, ci, i, j])
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def naive_deconv(x, w, b, strides, pads, dilations, groups, output_padding):
    n, cin, h, wi = x.shape
    _, cout_g, kh, kw = w.shape
    cin_g = cin // groups
    full_h = (h - 1) * strides[0] + (kh - 1) * dilations[0] + 1 + output_padding[0]
    full_w = (wi - 1) * strides[1] + (kw - 1) * dilations[1] + 1 + output_padding[1]
    full = np.zeros((n, cout_g * groups, full_h, full_w))
    for ci, y, x_ in itertools.product(range(cin), range(h), range(wi)):
        g = ci // cin_g
        for co, i, j in itertools.product(range(cout_g), range(kh), range(kw)):
            full[:, g * cout_g + co, y * strides[0] + i * dilations[0], x_ * strides[1] + j * dilations[1]] += \
                x[:, ci, y, x_] * w[ci, co, i, j]
    top, left, bottom, right = pads
    out = full[:, :, top: full_h - bottom, left: full_w - right]
    return out if b is None else out + b.reshape(1, -1, 1, 1)


def naive_pool(x, mode, kernel, strides, pads, ceil_mode, count_include_pad):
    """Caffe/PyTorch pooling: windows clipped to the padded extent (divisor with pads) or to the input."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (top, left, bottom, right) = kernel, strides, pads
    rnd = np.ceil if ceil_mode else np.floor
    ho = int(rnd((h + top + bottom - kh) / sh)) + 1
    wo = int(rnd((w + left + right - kw) / sw)) + 1
    if ceil_mode and (ho - 1) * sh >= h + top:  # the last window must start inside input or pad
        ho -= 1
    if ceil_mode and (wo - 1) * sw >= w + left:
        wo -= 1
    out = np.zeros((n, c, ho, wo))
    for y, x_ in itertools.product(range(ho), range(wo)):
        y0, x0 = y * sh - top, x_ * sw - left
        y1, x1 = min(y0 + kh, h + bottom), min(x0 + kw, w + right)
        padded_count = (y1 - y0) * (x1 - x0)
        y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
        window = x[:, :, y0:y1, x0:x1].astype(np.float64)
        if mode == "max":
            out[:, :, y, x_] = window.max(axis=(2, 3))
        else:
            count = padded_count if count_include_pad else (y1 - y0) * (x1 - x0)
            out[:, :, y, x_] = window.sum(axis=(2, 3)) / count
    return out


# --------------------------------------------------------------------------- windows
CONV_CASES = [  # (x shape, w shape, strides, pads (t, l, b, r), dilations, groups)
    ((1, 3, 7, 6), (4, 3, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    ((2, 3, 7, 6), (4, 3, 3, 2), (2, 1), (1, 0, 2, 1), (1, 1), 1),  # asymmetric pads, order t, l, b, r
    ((1, 4, 9, 8), (6, 2, 3, 3), (1, 2), (2, 1, 0, 3), (2, 1), 2),  # groups + dilation
    ((1, 4, 6, 6), (4, 1, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 4),  # depthwise
    ((1, 4, 6, 6), (8, 1, 3, 3), (1, 1), (1, 1, 1, 1), (2, 2), 4),  # depthwise, multiplier 2
    ((1, 5, 4, 4), (3, 5, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),  # pointwise
]


@pytest.mark.parametrize("x_shape, w_shape, strides, pads, dilations, groups", CONV_CASES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv2d(x_shape, w_shape, strides, pads, dilations, groups, with_bias):
    x, w = randn(*x_shape), randn(*w_shape)
    args = (x, w, randn(w_shape[0])) if with_bias else (x, w)
    got = run_op("conv2d", *args, consts=(1, 2), strides=strides, pads=pads, dilations=dilations, groups=groups)
    close(got, naive_conv(x, w, args[2] if with_bias else None, strides, pads, dilations, groups))


def test_conv2d_fused_activation_and_f64():
    x, w = randn(1, 2, 5, 5), randn(3, 2, 3, 3)
    got = run_op("conv2d", x, w, consts=(1,), act="leaky_relu", act_params=[0.1])
    ref = naive_conv(x, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    close(got, np.where(ref >= 0, ref, 0.1 * ref))
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    got64 = run_op("conv2d", x64, w64)  # both as inputs: f64 stays f64 end to end
    assert got64.dtype == np.float64
    close(got64, ref, tol=1e-12)


DECONV_CASES = [  # (x shape, w shape, strides, pads, dilations, groups, output_padding)
    ((1, 3, 4, 5), (3, 2, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1, (0, 0)),
    ((1, 3, 4, 5), (3, 2, 3, 3), (2, 2), (1, 0, 1, 2), (1, 1), 1, (1, 0)),
    ((2, 4, 3, 3), (4, 3, 4, 2), (2, 3), (1, 1, 0, 0), (1, 2), 2, (1, 2)),
    ((1, 4, 3, 4), (4, 1, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 4, (1, 1)),
]


@pytest.mark.parametrize("x_shape, w_shape, strides, pads, dilations, groups, output_padding", DECONV_CASES)
def test_deconv2d(x_shape, w_shape, strides, pads, dilations, groups, output_padding):
    x, w, b = randn(*x_shape), randn(*w_shape), randn(w_shape[1] * groups)
    got = run_op("deconv2d", x, w, b, consts=(1, 2), strides=strides, pads=pads, dilations=dilations,
                 groups=groups, output_padding=output_padding)
    close(got, naive_deconv(x, w, b, strides, pads, dilations, groups, output_padding))


POOL_CASES = [  # (kernel, strides, pads, ceil_mode)
    ((2, 2), (2, 2), (0, 0, 0, 0), False),
    ((3, 3), (2, 2), (1, 1, 1, 1), False),
    ((3, 3), (2, 2), (1, 0, 0, 1), True),  # ceil mode: the last window overhangs
    ((2, 2), (2, 2), (0, 0, 0, 0), True),
    ((3, 2), (2, 3), (1, 1, 2, 1), False),
    ((3, 3), (3, 3), (1, 1, 1, 1), True),
]


@pytest.mark.parametrize("kernel, strides, pads, ceil_mode", POOL_CASES)
@pytest.mark.parametrize("mode, count_include_pad", [("max", False), ("avg", False), ("avg", True)])
def test_pool2d(kernel, strides, pads, ceil_mode, mode, count_include_pad):
    x = randn(2, 3, 7, 6)
    got = run_op("pool2d", x, mode=mode, kernel=kernel, strides=strides, pads=pads, ceil_mode=ceil_mode,
                 count_include_pad=count_include_pad)
    close(got, naive_pool(x, mode, kernel, strides, pads, ceil_mode, count_include_pad))


def test_pool2d_matches_onnxruntime_in_ceil_mode_with_pads():
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    x = randn(1, 2, 7, 6)
    for count_include_pad in (0, 1):
        node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                pads=[1, 0, 0, 1], ceil_mode=1, count_include_pad=count_include_pad)
        model = helper.make_model(helper.make_graph(
            [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 19)])
        want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        got = run_op("pool2d", x, mode="avg", kernel=(3, 3), strides=(2, 2), pads=(1, 0, 0, 1), ceil_mode=True,
                     count_include_pad=bool(count_include_pad))
        close(got, want)


def test_pool2d_dilations():
    x = randn(1, 2, 9, 8)
    got = run_op("pool2d", x, mode="max", kernel=(2, 3), strides=(1, 2), dilations=(2, 1))
    want = np.stack([np.stack([x[:, :, y: y + 3: 2, 2 * j: 2 * j + 3].max(axis=(2, 3)) for j in range(3)], -1)
                     for y in range(7)], -2)
    close(got, want)


def test_global_pool():
    x = randn(2, 3, 4, 5)
    close(run_op("global_pool", x, mode="avg"), x.mean(axis=(2, 3), keepdims=True))
    close(run_op("global_pool", x, mode="max"), x.max(axis=(2, 3), keepdims=True))


def test_max_pool_index_and_unpool():
    x = randn(2, 3, 5, 4)
    x[0, 0, 0, :2] = 9.0  # a tie: the first maximum in row-major window order wins
    values, index = run_op("max_pool_index", x, kernel=(2, 2), strides=(2, 2), pads=(0, 0, 1, 0), ceil_mode=True)
    assert values.shape == index.shape == (2, 3, 3, 2) and index.dtype == np.int64
    for n, c, y, x_ in itertools.product(range(2), range(3), range(3), range(2)):
        window = [(r, q) for r in range(2 * y, 2 * y + 2) for q in range(2 * x_, 2 * x_ + 2) if r < 5]
        best = max(window, key=lambda rq: (x[n, c, rq[0], rq[1]], -window.index(rq)))
        assert values[n, c, y, x_] == x[n, c, best[0], best[1]]
        assert index[n, c, y, x_] == best[0] * 4 + best[1]  # h * W + w in the input plane
    assert index[0, 0, 0, 0] == 0
    restored = run_op("max_unpool", values, index, output_size=(5, 4))
    want = np.zeros_like(x)
    for n, c, y, x_ in itertools.product(range(2), range(3), range(3), range(2)):
        h, w = divmod(int(index[n, c, y, x_]), 4)
        want[n, c, h, w] = values[n, c, y, x_]
    np.testing.assert_array_equal(restored, want)


def test_mediapipe_attention_crop_ops():
    """tidlc/ir/ops/mediapipe.py on cases worked by hand (tests/frontends/tflite/test_mediapipe_ops.py
    checks them against scipy and by the matrix's properties)."""
    # a 4 x 2 box of points, left -> right horizontal: no rotation, centered at (3, 2), 1.5x grown
    pts = np.array([[[1, 1, 0], [5, 1, 0], [5, 3, 0], [1, 3, 0], [9, 9, 0]]], np.float32)
    m = run_op("landmarks_to_matrix", pts, subset=(0, 1, 2, 3), left=0, right=1, output_size=(6, 8),
               scale=(1.5, 1.5))
    want = np.eye(4, dtype=np.float32)
    want[0, 0], want[1, 1] = 1.5 * 4 / 8, 1.5 * 2 / 6  # crop pixel -> points frame
    want[0, 3], want[1, 3] = 3 - want[0, 0] * 4, 2 - want[1, 1] * 3  # the crop's center on the box's
    close(m, want[None])
    # right -> left: turned half a turn (the box is the same, the axes point the other way)
    m = run_op("landmarks_to_matrix", pts, subset=(0, 1, 2, 3), left=1, right=0, output_size=(6, 8),
               scale=(1.5, 1.5))
    close(m[0, :2, :2], -want[:2, :2])
    close(m[0, :2, :2] @ np.array([4.0, 3.0]) + m[0, :2, 3], [3.0, 2.0])
    # the identity grid samples every pixel center exactly; shifted by (1, 2) pixels, zeros beyond
    x = randn(1, 2, 5, 6)
    close(run_op("warp_bilinear", x, np.eye(4, dtype=np.float32)[None], output_size=(5, 6)), x)
    shift = np.eye(4, dtype=np.float32)[None]
    shift[0, 0, 3], shift[0, 1, 3] = 1.0, 2.0
    got = run_op("warp_bilinear", x, shift, output_size=(5, 6), half_pixel=False)
    close(got[:, :, :3, :5], x[:, :, 2:, 1:])
    assert (got[:, :, 3:] == 0).all() and (got[:, :, :, 5:] == 0).all()
    half = np.eye(4, dtype=np.float32)[None]
    half[0, 0, 3] = 0.5  # halfway between two columns
    got = run_op("warp_bilinear", x, half, output_size=(5, 5), half_pixel=False)
    close(got, (x[..., :5] + x[..., 1:]) / 2)
    # one matrix serves a batch; two matrices, one each
    two = randn(2, 2, 5, 6)
    close(run_op("warp_bilinear", two, shift, output_size=(5, 6), half_pixel=False)[1],
          run_op("warp_bilinear", two[1:], shift, output_size=(5, 6), half_pixel=False)[0])
    both = np.concatenate([np.eye(4, dtype=np.float32)[None], shift])
    got = run_op("warp_bilinear", two, both, output_size=(5, 6), half_pixel=False)
    close(got[0], two[0])
    close(got[1, :, :3, :5], two[1, :, 2:, 1:])
    # points: (x, y) through the first two rows, z kept; version 1's scale on the translation
    p = randn(1, 4, 3)
    mat = randn(1, 4, 4)
    got = run_op("transform_landmarks", p, mat, scale=2.0)
    close(got[0, :, :2], p[0, :, :2] @ mat[0, :2, :2].T + 2.0 * mat[0, :2, 3], tol=1e-4)
    close(got[..., 2], p[..., 2])


# --------------------------------------------------------------------------- dense / channel-wise
def test_dense_and_matmul():
    x, w, b = randn(3, 5), randn(4, 5), randn(4)
    want = np.array([[sum(float(x[i, k]) * float(w[o, k]) for k in range(5)) + b[o] for o in range(4)]
                     for i in range(3)])
    close(run_op("dense", x, w, b, consts=(1, 2)), want)
    close(run_op("dense", randn(2, 3, 5), w, consts=(1,)).shape, (2, 3, 4))
    a, m = randn(2, 3, 4), randn(4, 6)
    close(run_op("matmul", a, m), np.einsum("bik,kj->bij", a, m))
    close(run_op("matmul", randn(4), m).shape, (6,))


def test_batchnorm_scale_prelu():
    x = randn(2, 3, 4, 4)
    gamma, beta, mean = randn(3), randn(3), randn(3)
    var = RNG.random(3).astype(np.float32) + 0.5
    want = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-3) * gamma[:, None, None] + beta[:, None, None]
    close(run_op("batchnorm", x, gamma, beta, mean, var, consts=(1, 2, 3, 4), epsilon=1e-3), want)
    s, t = randn(3), randn(3)
    close(run_op("scale", x, s, t, consts=(1, 2)), x * s[:, None, None] + t[:, None, None])
    close(run_op("scale", x, s, consts=(1,), act="relu"), np.maximum(x * s[:, None, None], 0))
    y = randn(2, 4, 3)
    close(run_op("scale", y, s, consts=(1,), axis=-1), y * s)
    slope = randn(3)
    close(run_op("prelu", x, slope, consts=(1,)), np.where(x >= 0, x, x * slope[:, None, None]))
    close(run_op("prelu", x, np.float32([0.25]), consts=(1,)), np.where(x >= 0, x, 0.25 * x))


def test_lrn():
    x = randn(2, 7, 3, 3)
    for size in (1, 3, 4, 5):
        want = np.empty_like(x, dtype=np.float64)
        for c in range(7):
            lo, hi = max(0, c - (size - 1) // 2), min(6, c + size // 2)  # ONNX: floor / ceil of (size-1)/2
            square_sum = (x[:, lo: hi + 1].astype(np.float64) ** 2).sum(axis=1)
            want[:, c] = x[:, c] / (2.0 + 1e-2 / size * square_sum) ** 0.6
        close(run_op("lrn", x, size=size, alpha=1e-2, beta=0.6, bias=2.0), want)


def test_layernorm():
    x = randn(2, 3, 4) * 5 + 3
    gamma, beta = randn(3, 4), randn(3, 4)
    xd = x.astype(np.float64)
    for axis, scale, bias in ((-1, None, None), (1, gamma, beta), (-2, gamma, None)):
        axes = tuple(range(axis % 3, 3))
        want = (xd - xd.mean(axis=axes, keepdims=True)) / np.sqrt(xd.var(axis=axes, keepdims=True) + 1e-5)
        args = [x]
        if scale is not None:  # the normalized axes are (3, 4) for axis 1 / -2
            want, args = want * scale, [*args, scale]
        if bias is not None:
            want, args = want + bias, [*args, bias]
        close(run_op("layernorm", *args, consts=tuple(range(1, len(args))), axis=axis, epsilon=1e-5), want,
              tol=1e-5)


def test_softmax():
    x = randn(2, 3, 4) * 20
    for axis in (-1, 0, 1):
        close(run_op("softmax", x, axis=axis), special.softmax(x.astype(np.float64), axis=axis))
        close(run_op("softmax", x, axis=axis, log=True), special.log_softmax(x.astype(np.float64), axis=axis),
              tol=1e-4)
    far = np.float32([[0.0, 200.0, -200.0]])  # exp underflows: log-softmax must stay finite
    close(run_op("softmax", far, log=True), [[-200.0, 0.0, -400.0]])
    close(run_op("softmax", far), [[0.0, 1.0, 0.0]])


# --------------------------------------------------------------------------- element-wise
ACTIVATION_REFS = {
    "relu": ({}, lambda x: np.maximum(x, 0)),
    "relu6": ({}, lambda x: np.minimum(np.maximum(x, 0), 6)),
    "sigmoid": ({}, special.expit),
    "tanh": ({}, np.tanh),
    "hardswish": ({}, lambda x: x * np.minimum(np.maximum(x + 3, 0), 6) / 6),
    "gelu": ({}, lambda x: 0.5 * x * (1 + special.erf(x / np.sqrt(2)))),
    "clip": ({"min": -1.0, "max": 2.0}, lambda x: np.minimum(np.maximum(x, -1), 2)),
    "leaky_relu": ({"alpha": 0.1}, lambda x: np.where(x < 0, 0.1 * x, x)),
    "hardsigmoid": ({"alpha": 0.3, "beta": 0.4}, lambda x: np.minimum(np.maximum(0.3 * x + 0.4, 0), 1)),
    "elu": ({"alpha": 0.7}, lambda x: np.where(x > 0, x, 0.7 * (np.exp(x) - 1))),
}


@pytest.mark.parametrize("kind", sorted(ACTIVATION_REFS))
def test_activation(kind):
    attrs, ref = ACTIVATION_REFS[kind]
    x = randn(3, 50) * 5
    x[0, :4] = [0.0, -0.0, 6.0, -3.0]
    close(run_op(kind, x, **attrs), ref(x.astype(np.float64)))


def test_activation_defaults_follow_onnx():
    x = randn(40) * 4
    close(run_op("hardsigmoid", x), np.clip(0.2 * x + 0.5, 0, 1))
    close(run_op("elu", x), np.where(x > 0, x, np.expm1(x)))
    close(run_op("leaky_relu", x), np.where(x < 0, 0.01 * x, x))
    close(run_op("clip", x), x)


def test_sigmoid_does_not_overflow():
    x = np.float32([-1000, -100, 0, 100, 1000])
    with np.errstate(over="raise", invalid="raise"):  # underflow to 0 is fine
        close(run_op("sigmoid", x), [0, special.expit(-100.0), 0.5, 1, 1])


UNARY_REFS = {
    "abs": np.abs, "neg": np.negative, "exp": np.exp, "floor": np.floor, "ceil": np.ceil,
    "erf": special.erf, "softplus": lambda x: np.log1p(np.exp(x)),
    "log": lambda x: np.log(np.abs(x) + 0.1), "sqrt": lambda x: np.sqrt(np.abs(x)),
    "reciprocal": lambda x: 1 / (np.abs(x) + 0.1),
}


@pytest.mark.parametrize("kind", sorted(UNARY_REFS))
def test_unary(kind):
    x = randn(4, 6) * 3
    if kind in ("log", "sqrt", "reciprocal"):  # keep to the domain (the reference shifts likewise)
        arg = np.abs(x) + (0.1 if kind != "sqrt" else 0)
    else:
        arg = x
    got = run_op(kind, arg.astype(np.float32))
    close(got, UNARY_REFS[kind](x.astype(np.float64)), tol=1e-5)
    assert got.dtype == np.float32


BINARY_REFS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
               "max": np.maximum, "min": np.minimum, "pow": np.power}


@pytest.mark.parametrize("kind", sorted(BINARY_REFS))
def test_binary_broadcasting(kind):
    a = np.abs(randn(2, 3, 4)) + 0.5
    b = np.abs(randn(3, 1)) + 0.5
    close(run_op(kind, a, b), BINARY_REFS[kind](a.astype(np.float64), b))
    close(run_op(kind, b, a), BINARY_REFS[kind](b.astype(np.float64), a))
    fused = run_op(kind, a, b, act="clip", act_params=[0.75, 1.5])
    close(fused, np.clip(BINARY_REFS[kind](a.astype(np.float64), b), 0.75, 1.5))


def test_integer_arithmetic():
    a = np.array([-7, 7, -6, 5], np.int64)
    b = np.array([2, -2, 4, 5], np.int64)
    got = run_op("div", a, b)
    assert got.dtype == np.int64 and got.tolist() == [-3, -3, -1, 1]  # truncates toward zero, as ONNX
    assert run_op("add", a.astype(np.int32), b.astype(np.int32)).dtype == np.int32
    assert run_op("mul", a, b).tolist() == [-14, -14, -24, 25]


def test_cast_where_identity_dropout():
    x = randn(3, 4) * 3
    got = run_op("cast", x, dtype="i32")
    assert got.dtype == np.int32 and (got == x.astype(np.int32)).all()
    assert run_op("cast", x, dtype="f16").dtype == np.float16
    cond = x > 0
    close(run_op("where", cond, x, -x), np.abs(x))
    assert (run_op("identity", x) == x).all()
    assert (run_op("dropout", x, ratio=0.9) == x).all()  # inference: no scaling, no dropping


# --------------------------------------------------------------------------- data movement
def test_concat_and_split():
    a, b = randn(2, 3, 4), randn(2, 1, 4)
    got = run_op("concat", a, b, axis=1)
    assert (got[:, :3] == a).all() and (got[:, 3:] == b).all()
    got = run_op("concat", a, a, axis=-1)
    assert got.shape == (2, 3, 8) and (got[..., 4:] == a).all()
    parts = run_op("split", a, axis=2, sizes=[1, 3])
    assert (parts[0] == a[:, :, :1]).all() and (parts[1] == a[:, :, 1:]).all()
    parts = run_op("split", a, axis=-2, sizes=[2, 1])
    assert [p.shape for p in parts] == [(2, 2, 4), (2, 1, 4)]


@pytest.mark.parametrize("starts, ends, axes, steps, index", [
    ([1], [3], [0], [], np.s_[1:3]),
    ([-3], [-1], [1], [], np.s_[:, -3:-1]),
    ([0, 1], [100, 4], [1, 2], [2, 1], np.s_[:, 0::2, 1:4]),  # ends clamp to the dim
    ([4], [-100], [1], [-1], np.s_[:, 4::-1]),  # negative step down to index 0 (inclusive)
    ([-1], [0], [2], [-2], np.s_[:, :, -1:0:-2]),
    ([10], [20], [0], [], np.s_[10:20]),  # empty, starts clamp too
])
def test_slice(starts, ends, axes, steps, index):
    x = randn(3, 5, 6)
    got = run_op("slice", x, starts=starts, ends=ends, axes=axes, steps=steps)
    np.testing.assert_array_equal(got, x[index])


def test_pad():
    x = randn(2, 3, 4)
    got = run_op("pad", x, pads=[0, 1, 2, 1, 0, 3], value=1.5)
    want = np.full((3, 4, 9), 1.5, np.float32)
    want[0:2, 1:4, 2:6] = x
    np.testing.assert_array_equal(got, want)
    got = run_op("pad", x, pads=[0, -1, 1, 0, 0, -2])  # negative pads crop
    np.testing.assert_array_equal(got, np.pad(x[:, 1:, :2], ((0, 0), (0, 0), (1, 0))))
    row = np.float32([[1, 2, 3]])
    assert run_op("pad", row, pads=[0, 2, 0, 1], mode="reflect").tolist() == [[3, 2, 1, 2, 3, 2]]
    assert run_op("pad", row, pads=[0, 2, 0, 1], mode="edge").tolist() == [[1, 1, 1, 2, 3, 3]]


def test_reshape_rules():
    x = randn(2, 3, 4)
    assert run_op("reshape", x, shape=[0, -1]).shape == (2, 12)  # 0 copies the input dim
    assert run_op("reshape", x, shape=[-1, 0, 2]).shape == (4, 3, 2)
    assert run_op("reshape", x, np.array([4, 0, -1]), consts=(1,)).shape == (4, 3, 2)
    empty = np.zeros((0, 3), np.float32)
    assert run_op("reshape", empty, shape=[3, 0], allowzero=True).shape == (3, 0)
    np.testing.assert_array_equal(run_op("reshape", x, shape=[6, 4]), x.reshape(6, 4))
    with pytest.raises(TidlcError, match=r"cannot reshape \(2, 3, 4\) to \(5, -1\)"):
        run_op("reshape", x, shape=[5, -1])
    with pytest.raises(TidlcError, match="more than one -1"):
        run_op("reshape", x, shape=[-1, -1])


@pytest.mark.parametrize("axis, shape", [(0, (1, 120)), (1, (2, 60)), (3, (24, 5)), (4, (120, 1)),
                                         (-1, (24, 5)), (-4, (1, 120))])
def test_flatten(axis, shape):
    x = randn(2, 3, 4, 5)
    np.testing.assert_array_equal(run_op("flatten", x, axis=axis), x.reshape(shape))


def test_transpose_squeeze_unsqueeze_expand():
    x = randn(2, 1, 3, 1)
    np.testing.assert_array_equal(run_op("transpose", x, perm=[2, 0, 3, 1]), x.transpose(2, 0, 3, 1))
    assert run_op("squeeze", x).shape == (2, 3)
    assert run_op("squeeze", x, axes=[-1]).shape == (2, 1, 3)
    assert run_op("unsqueeze", x, axes=[0, -1]).shape == (1, 2, 1, 3, 1, 1)
    assert run_op("unsqueeze", randn(3), axes=[1, 0]).shape == (1, 1, 3)
    got = run_op("expand", randn(3, 1), np.array([2, 1, 4]), consts=(1,))
    assert got.shape == (2, 3, 4) and got.flags.writeable


def test_shape_gather_constant_of_shape():
    x = randn(2, 3, 4)
    shape = run_op("shape", x)
    assert shape.dtype == np.int64 and shape.tolist() == [2, 3, 4]
    assert run_op("gather", shape, np.array([-1, 0]), consts=(1,)).tolist() == [4, 2]
    table = randn(5, 3)
    np.testing.assert_array_equal(run_op("gather", table, np.array([[0, 4], [-1, 2]]), consts=(1,), axis=0),
                                  table[[[0, 4], [4, 2]]])
    np.testing.assert_array_equal(run_op("gather", table, np.array(1), consts=(1,), axis=1), table[:, 1])
    filled = run_op("constant_of_shape", np.array([2, 3]), consts=(0,), value=2.5)
    assert filled.shape == (2, 3) and (filled == 2.5).all() and filled.dtype == np.float32
    ints = run_op("constant_of_shape", np.array([4]), consts=(0,), value=7, dtype="i64")
    assert ints.dtype == np.int64 and ints.tolist() == [7] * 4


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space(mode):
    b, n, c, h, w = 2, 1, 8, 2, 3
    x = randn(n, c, h, w)
    got = run_op("depth_to_space", x, block=b, mode=mode)
    want = np.empty((n, c // 4, h * b, w * b), np.float32)
    for co, y, x_ in itertools.product(range(c // 4), range(h * b), range(w * b)):
        i, j = y % b, x_ % b  # position inside the block
        ci = (i * b + j) * (c // 4) + co if mode == "DCR" else co * b * b + i * b + j
        want[:, co, y, x_] = x[:, ci, y // b, x_ // b]
    np.testing.assert_array_equal(got, want)


def test_shuffle_channel():
    x = randn(1, 6, 2, 2)
    got = run_op("shuffle_channel", x, groups=2)
    order = [0, 3, 1, 4, 2, 5]  # channel k*groups + g of the output is channel g*(C/groups) + k
    np.testing.assert_array_equal(got, x[:, order])


def _onnx_resize(x, scales, mode, coord, nearest):
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode=mode, nearest_mode=nearest,
                            coordinate_transformation_mode=coord)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [helper.make_tensor("scales", TensorProto.FLOAT, [len(scales)], scales)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("mode, coord, nearest", [
    ("linear", "half_pixel", "floor"), ("linear", "align_corners", "floor"), ("linear", "asymmetric", "floor"),
    ("linear", "pytorch_half_pixel", "floor"), ("nearest", "asymmetric", "floor"),
    ("nearest", "half_pixel", "round_prefer_ceil"), ("nearest", "align_corners", "round_prefer_floor"),
    ("nearest", "asymmetric", "ceil"),
])
@pytest.mark.parametrize("scales", [(1.0, 1.0, 2.0, 1.5), (1.0, 1.0, 0.5, 0.6), (1.0, 1.0, 1.7, 2.3)])
def test_resize_against_onnx(mode, coord, nearest, scales):
    x = randn(1, 2, 3, 5)
    got = run_op("resize", x, scales=scales, mode=mode, coord_mode=coord, nearest_mode=nearest)
    close(got, _onnx_resize(x, list(scales), mode, coord, nearest))


def test_resize_to_sizes_and_by_hand():
    x = np.float32([[[[0, 10], [20, 30]]]])
    got = run_op("resize", x, scales=[1, 1, 2, 2], mode="nearest")
    assert got[0, 0].tolist() == [[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [20, 20, 30, 30]]
    got = run_op("resize", x, scales=[1, 1, 1, 1], sizes=[1, 1, 3, 3], mode="linear", coord_mode="align_corners")
    assert got[0, 0].tolist() == [[0, 5, 10], [10, 15, 20], [20, 25, 30]]


@pytest.mark.parametrize("op, ref", [("mean", np.mean), ("sum", np.sum), ("max", np.max), ("min", np.min),
                                     ("prod", np.prod), ("l2", lambda x, **k: np.sqrt(np.sum(x * x, **k))),
                                     ("sumsquare", lambda x, **k: np.sum(x * x, **k))])
def test_reduce(op, ref):
    x = randn(2, 3, 4)
    close(run_op("reduce", x, op=op, axes=[1, -1]), ref(x.astype(np.float64), axis=(1, 2), keepdims=True))
    close(run_op("reduce", x, op=op, keepdims=False), ref(x.astype(np.float64)))


def test_argmax():
    x = randn(2, 3, 4)
    got = run_op("argmax", x)
    assert got.dtype == np.int64 and got.shape == (2, 1, 4)
    np.testing.assert_array_equal(got[:, 0], x.argmax(axis=1))
    assert run_op("argmax", x, axis=-1, keepdims=False).tolist() == x.argmax(axis=-1).tolist()
    assert run_op("argmax", np.float32([1, 3, 3, 0]), axis=0).tolist() == [1]  # ties: the first


# --------------------------------------------------------------------------- detection
def test_normalize():
    x, scale = randn(2, 3, 2, 2), np.float32([1.0, 2.0, 3.0])
    per_position = x / np.sqrt((x.astype(np.float64) ** 2).sum(axis=1, keepdims=True) + 1e-10)
    close(run_op("normalize", x, scale, consts=(1,), across_spatial=False), per_position * scale[:, None, None])
    whole = x / np.sqrt((x.astype(np.float64) ** 2).sum(axis=(1, 2, 3), keepdims=True) + 1e-10)
    close(run_op("normalize", x, scale, consts=(1,)), whole * scale[:, None, None])


def test_prior_box_by_hand():
    got = run_op("prior_box", feature_size=[1, 2], image_size=[10, 20], steps=[10.0, 10.0], min_sizes=[4.0],
                 max_sizes=[16.0], aspect_ratios=[1.0, 4.0], variances=[0.1, 0.1, 0.2, 0.2])
    boxes = got[0, 0].reshape(2, 3, 4) * [20, 10, 20, 10]  # back to pixels: (position, prior, xyxy)
    # position 0 has its centre at (5, 5); the min box, sqrt(4*16)=8 box, then aspect 4: w=8, h=2
    close(boxes[0], [[3, 3, 7, 7], [1, 1, 9, 9], [1, 4, 9, 6]])
    close(boxes[1], [[13, 3, 17, 7], [11, 1, 19, 9], [11, 4, 19, 6]])
    close(got[0, 1].reshape(6, 4), np.tile([0.1, 0.1, 0.2, 0.2], (6, 1)))


def test_detection_output_by_hand():
    # two priors, two classes (0 = background); identical boxes, so NMS keeps only the best
    prior = np.float32([[[0, 0, 0.5, 0.5, 0, 0, 0.5, 0.5], [0.1] * 8]])
    loc = np.zeros((1, 8), np.float32)
    conf = np.float32([[0.1, 0.9, 0.2, 0.8]])
    got = run_op("detection_output", loc, conf, prior, num_classes=2, keep_top_k=3, nms_threshold=0.5)
    assert got.shape == (1, 1, 3, 7)
    close(got[0, 0], [[0, 1, 0.9, 0, 0, 0.5, 0.5], [0] * 7, [0] * 7])


def test_quantize_dequantize_by_hand():
    # scale is steps per unit (QuantInfo's convention); ties: away from zero, to even, or up
    x = np.float32([-1.25, -0.75, 0.25, 0.75, 1.25, 100.0, -100.0])
    np.testing.assert_array_equal(run_op("quantize", x, scale=[2.0], zero_point=1),
                                  np.int8([-2, -1, 2, 3, 4, 127, -128]))
    np.testing.assert_array_equal(run_op("quantize", x, scale=[2.0], round="half_even", dtype="u8", zero_point=10),
                                  np.uint8([8, 8, 10, 12, 12, 210, 0]))
    np.testing.assert_array_equal(run_op("quantize", x, scale=[2.0], round="half_up", dtype="i16", bits=4),
                                  np.int16([-2, -1, 1, 2, 3, 7, -8]))
    q = np.int8([[-128, 0, 127], [2, -2, 4]])  # per-channel along axis 0
    close(run_op("dequantize", q, scale=[4.0, 0.5], axis=0), [[-32, 0, 31.75], [4, -4, 8]])
    close(run_op("dequantize", q, scale=[2.0], zero_point=-2), (q.astype(np.float64) + 2) / 2.0)


def test_data_convert_by_hand():
    # the scales live in the types (docs/quantization.md): real = q / scale; ties round away from zero
    TESTED.add("data_convert")
    b = Builder()
    x = b.input("x", TensorType((6,)))
    q = b.op("data_convert", [x], dtype="u8")
    q.type = q.type.with_quant(QuantInfo(8, False, 2.0))
    s = b.op("data_convert", [q], dtype="i8")  # requantize: 2.0 -> 0.5 steps per unit
    s.type = s.type.with_quant(QuantInfo(8, True, 0.5))
    b.output(b.op("data_convert", [q], dtype="f32"), "real")
    b.output(s, "requantized")
    got = run_graph(b.graph, {"x": np.float32([-1.0, 0.25, 0.75, 1.25, 7.0, 200.0])})
    np.testing.assert_array_equal(got["real"], np.float32([0.0, 0.5, 1.0, 1.5, 7.0, 127.5]))
    np.testing.assert_array_equal(got["requantized"], np.int8([0, 0, 1, 1, 4, 64]))


def test_host_op_runs_its_onnx_node_on_onnxruntime():
    """A host op carries a one-node ONNX model; the interpreter runs it through tidlc.hostrt."""
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import TensorProto, helper

    from tidlc.ir.ops.host import encode_payload
    node = helper.make_node("Shrink", ["a"], ["b"], lambd=0.5, bias=0.25)
    model = helper.make_model(
        helper.make_graph([node], "host", [helper.make_tensor_value_info("a", TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)]),
        opset_imports=[helper.make_opsetid("", 13)])
    x = randn(2, 5)
    got = run_op("host", x, framework="onnx", op_type="Shrink", results=("2x5xf32",),
                 payload=encode_payload(model.SerializeToString()))
    want = np.where(x < -0.5, x + 0.25, np.where(x > 0.5, x - 0.25, 0)).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    _ = onnx  # the payload above is an onnx ModelProto


# --------------------------------------------------------------------------- interpreter
def test_every_builtin_op_has_a_reference_test():
    # runs last in this file (pytest keeps definition order): the tests above filled TESTED
    builtin = {n for n in OPS.names() if OPS.get(n).plugin == "builtin"} - {"input", "const"}
    assert builtin - TESTED == set()


def small_graph():
    b = Builder()
    x = b.input("x", TensorType((None, 3)))
    y = b.input("y", TensorType((1, 3)))
    s = b.op("add", [x, y], name="sum")
    b.output(b.op("relu", [s], name="r"), "out")
    b.output(s, "sum")
    return b.graph


def test_feeds_are_checked_by_name_and_shape():
    graph = small_graph()
    out = run_graph(graph, {"x": np.ones((4, 3)), "y": np.full((1, 3), -2.0)})
    assert list(out) == ["out", "sum"] and out["sum"].dtype == np.float32  # f64 feeds are converted
    assert (out["out"] == 0).all() and (out["sum"] == -1).all()
    with pytest.raises(TidlcError) as info:
        run_graph(graph, {"x": np.ones((4, 3)), "z": np.ones(3)})
    assert str(info.value) == "error: unknown input(s) z (hint: the model's inputs are: x, y)"
    with pytest.raises(TidlcError) as info:
        run_graph(graph, {"x": np.ones((4, 3))})
    assert str(info.value) == "error: missing input(s) y (hint: pass --input NAME=FILE.npy for each)"
    with pytest.raises(TidlcError) as info:
        run_graph(graph, {"x": np.ones((4, 2)), "y": np.ones((1, 3))})
    assert str(info.value) == ("error: input 'x' has shape (4, 2), the model expects ('?', 3) "
                               "(hint: use --input-shape NAME=d0,d1,... to change the model's input shape)")


def test_single_input_may_be_fed_under_any_name():
    b = Builder()
    b.output(b.op("neg", [b.input("data", TensorType((2,)))]), "y")
    assert run_graph(b.graph, {"whatever": np.float32([1, 2])})["y"].tolist() == [-1, -2]


def test_observer_sees_every_compute_op_and_intermediates_are_released():
    graph = small_graph()
    seen = []
    run_graph(graph, {"x": np.ones((2, 3)), "y": np.ones((1, 3))}, observer=lambda op, res: seen.append(op.name))
    assert seen == ["sum", "r"]


def test_op_failures_name_the_op():
    b = Builder()
    x = b.input("x", TensorType((None, 4)))
    b.output(b.op("reshape", [x], name="fold", shape=[3, -1]), "y")
    with pytest.raises(TidlcError) as info:
        run_graph(b.graph, {"x": np.ones((2, 4), np.float32)})
    assert str(info.value) == "'fold': error: reshape failed: cannot reshape (2, 4) to (3, -1)"


def test_evaluate_op_without_reference():
    from tidlc.ir.opdef import OpDef
    b = Builder()
    op = b.make("relu", [b.input("x", TensorType((1,)))])
    saved = OPS.get("relu")
    try:
        OPS.unregister("relu")
        OPS.register(OpDef("relu", ("x",), {}, infer=saved.infer, compute=None))
        with pytest.raises(TidlcError, match="op 'relu' has no reference implementation"):
            evaluate_op(op, [np.ones(1, np.float32)])
        OPS.unregister("relu")
        OPS.register(OpDef("relu", ("x",), {}, infer=saved.infer, compute=lambda op, x: [x, x]))
        with pytest.raises(RuntimeError, match="^relu reference returned 2 results for 1$"):
            evaluate_op(op, [np.ones(1, np.float32)])
    finally:
        OPS.unregister("relu")
        OPS.register(saved)
