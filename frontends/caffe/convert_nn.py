"""Converters for Caffe layers with weights or windows: conv, fc, pooling, norms, activations.

Caffe semantics worth knowing (checked against BVLC Caffe's layer sources):

* Pooling rounds the output size up by default (``round_mode: CEIL``) and,
  when there is padding, drops a last window that would start in the
  padding. AVE pooling divides by the window clipped to the *padded*
  extent, i.e. ``pool2d{count_include_pad = true}``.
* BatchNorm keeps running sums: mean and variance are divided by blob 2 (the
  moving-average factor), and a factor of 0 zeroes both, as Caffe does.
  NVIDIA/TI Caffe (caffe-jacinto) adds a scale and a bias as blobs 3 and 4.
* The ENet/SegNet fork's ``BN`` layer in ``bn_mode: INFERENCE`` is a plain
  per-channel affine (blobs: scale, shift); with four blobs (scale, shift,
  mean, variance) it is a batch norm with stored statistics. Its training
  mode (batch statistics) has no inference meaning and is refused.
* Dropout is the identity at inference unless ``scale_train: false``, in
  which case Caffe multiplies by ``1 - ratio`` at test time. A ``Python``
  layer named like dropout (ENet's ``spatial_dropout.SpatialDropoutLayer``,
  ``phase: TEST``) is dropout too, with a warning; other Python layers are
  code tidlc cannot run, reported with the fix.
* LRN ``WITHIN_CHANNEL`` is lowered as Caffe computes it: x * (1 + alpha *
  avgpool(x^2))^-beta with a local_size window (padding counted).
"""
from __future__ import annotations

import re
from math import prod

import numpy as np

from tidlc.diagnostics import TidlcError, warn
from tidlc.ir.ops._common import spatial_out

from .netspec import ELTWISE_OP, LRN_NORM_REGION, conv_params, pool_params
from .registry import Layer, converter
from .weights import zero_splat


def problem_of(fn, *args) -> str | None:
    """Run a parameter check; a located TidlcError becomes a problem line."""
    try:
        fn(*args)
    except TidlcError as exc:
        return exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
    return None


def is_splat(a: np.ndarray) -> bool:
    return a.size > 1 and all(s == 0 for s in a.strides)


def scaled(a: np.ndarray, factor: np.float32) -> np.ndarray:
    """``a * factor`` in float32; a zero-stride splat stays a splat."""
    if is_splat(a):
        return np.broadcast_to(np.float32(a.reshape(-1)[0] * factor), a.shape)
    return (a.astype(np.float32) * np.float32(factor)).astype(np.float32)


def channels_of(layer: Layer) -> int:
    shape = layer.shape()
    return 1 if len(shape) == 1 else shape[1]


def one_bottom(spec, weights=None) -> str | None:
    return None if len(spec.bottom) == 1 else f"{len(spec.bottom)} bottoms; {spec.type} takes one"


def _single_bottom(spec, weights=None) -> str | None:
    if len(spec.bottom) != 1 or len(spec.top) != 1:
        return (f"{len(spec.bottom)} bottoms / {len(spec.top)} tops: only one of each "
                "(several bottoms sharing weights are not supported)")
    return None


# ----------------------------------------------------------------------------- convolution

def _conv_check(spec, weights=None) -> str | None:
    problem = _single_bottom(spec)
    if problem:
        return problem
    p = spec.param("convolution_param")
    if p.get_int("axis", 1) != 1:
        return "convolution_param axis != 1 is not supported"
    return problem_of(conv_params, p)


@converter("Convolution", "Deconvolution", check=_conv_check)
def convolution(layer: Layer) -> None:
    """conv2d / deconv2d: group, dilation, pad/kernel/stride (also _h/_w), bias_term. A
    Convolution's weight is (num_output, C_in / group, kh, kw), a Deconvolution's
    (C_in, num_output / group, kh, kw)."""
    p = conv_params(layer.param("convolution_param"))
    _, c, _, _ = layer.shape4()
    if c % p.group:
        raise layer.error(f"{c} input channels are not divisible by group {p.group}")
    deconv = layer.type == "Deconvolution"
    w = layer.blob(0, (c, p.num_output // p.group, *p.kernel) if deconv else (p.num_output, c // p.group, *p.kernel))
    operands = [layer.input(), layer.const(w, "w")]
    if p.bias_term:
        operands.append(layer.const(layer.blob(1, (p.num_output,), "bias"), "b"))
    layer.bind(layer.op("deconv2d" if deconv else "conv2d", operands, strides=p.stride, pads=p.pads,
                        dilations=p.dilation, groups=p.group))


@converter("InnerProduct", check=_single_bottom)
def inner_product(layer: Layer) -> None:
    """dense over the axes from ``axis`` on (flattened first); ``transpose`` weights."""
    p = layer.param("inner_product_param")
    num_output = p.get_int("num_output")
    if num_output < 1:
        raise layer.error(f"num_output must be positive, got {num_output}",
                          at=p.field("num_output").loc)
    shape = layer.shape()
    axis = _axis(layer, p.get_int("axis", 1), len(shape))
    k = prod(shape[axis:])
    if p.get_bool("transpose", False):
        w = layer.blob(0, (k, num_output)).T
        w = w if is_splat(w) else np.ascontiguousarray(w)
    else:
        w = layer.blob(0, (num_output, k))
    x = layer.input()
    if len(shape) != axis + 1:
        if axis == 1:
            x = layer.op("flatten", [x], "flatten", axis=1)
        else:
            x = layer.op("reshape", [x], "flatten", shape=(*shape[:axis], k))
    operands = [x, layer.const(w, "w")]
    if p.get_bool("bias_term", True):
        operands.append(layer.const(layer.blob(1, (num_output,), "bias"), "b"))
    layer.bind(layer.op("dense", operands))


def _axis(layer: Layer, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise layer.error(f"axis {axis} out of range for a {rank}-D bottom")
    return axis % rank


# ----------------------------------------------------------------------------- pooling

def _pool_check(spec, weights=None) -> str | None:
    if len(spec.bottom) != 1 or len(spec.top) not in (1, 2):
        return f"{len(spec.bottom)} bottoms / {len(spec.top)} tops; Pooling takes one bottom"
    p = spec.param("pooling_param")
    problem = problem_of(pool_params, p)
    if problem:
        return problem
    pp = pool_params(p)
    if pp.method == "STOCHASTIC":
        return "STOCHASTIC pooling is not supported"
    if len(spec.top) == 2 and (pp.method != "MAX" or pp.global_pooling):
        return "a second top (the argmax mask) needs MAX pooling with a kernel"
    return None


def caffe_pooled_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """caffe::PoolingLayer::Reshape's output size for one axis."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1  # the last window would start in the padding
    return out


@converter("Pooling", check=_pool_check)
def pooling(layer: Layer) -> None:
    """pool2d (MAX/AVE, ceil or floor rounding), global_pool, or max_pool_index (2 tops)."""
    pp = pool_params(layer.param("pooling_param"))
    mode = "max" if pp.method == "MAX" else "avg"
    shape = layer.shape4()
    if pp.global_pooling:
        layer.bind(layer.op("global_pool", [layer.input()], mode=mode))
        return
    for axis, (size, k, s, pad) in enumerate(zip(shape[2:], pp.kernel, pp.stride, pp.pad)):
        want = caffe_pooled_size(size, k, s, pad, pp.ceil_mode)
        if size + 2 * pad < k:
            raise layer.error(f"kernel {k} is larger than the padded input {size + 2 * pad} on "
                              f"axis {axis + 2}", hint="is the input shape too small for this net?")
        ours = spatial_out(size, k, s, pad, pad, 1, pp.ceil_mode)
        if want != ours or want < 1:
            raise layer.error(f"Caffe's pooled size {want} on axis {axis + 2} (input {size}, "
                              f"kernel {k}, stride {s}, pad {pad}) has a last window outside "
                              "the input; not supported")
    if len(layer.spec.top) == 2:  # SegNet/ENet: the argmax mask feeds a max-unpooling Upsample
        layer.bind(*layer.op("max_pool_index", [layer.input()], kernel=pp.kernel, strides=pp.stride,
                             pads=pp.pads, ceil_mode=pp.ceil_mode))
        return
    attrs_ = {"mode": mode, "kernel": pp.kernel, "strides": pp.stride, "pads": pp.pads,
              "ceil_mode": pp.ceil_mode}
    if mode == "avg":
        attrs_["count_include_pad"] = True
    layer.bind(layer.op("pool2d", [layer.input()], **attrs_))


# ----------------------------------------------------------------------------- activations

@converter("ReLU", check=_single_bottom)
def relu(layer: Layer) -> None:
    """relu, or leaky_relu for a negative_slope."""
    slope = layer.param("relu_param").get_float("negative_slope", 0.0)
    x = layer.input()
    layer.bind(layer.op("leaky_relu", [x], alpha=slope) if slope else layer.op("relu", [x]))


@converter("ReLU6", check=_single_bottom)
def relu6(layer: Layer) -> None:
    """relu6 (a common fork layer)."""
    layer.bind(layer.op("relu6", [layer.input()]))


@converter("Clip", check=_single_bottom)
def clip(layer: Layer) -> None:
    """clip(min, max)."""
    p = layer.param("clip_param")
    layer.bind(layer.op("clip", [layer.input()], min=p.get_float("min"), max=p.get_float("max")))


def _simple(kind: str):
    def convert(layer: Layer) -> None:
        layer.bind(layer.op(kind, [layer.input()]))
    convert.__doc__ = f"{kind}."
    return convert


converter("Sigmoid", check=_single_bottom)(_simple("sigmoid"))
converter("TanH", check=_single_bottom)(_simple("tanh"))
converter("AbsVal", check=_single_bottom)(_simple("abs"))
converter("BNLL", check=_single_bottom)(_simple("softplus"))


@converter("ELU", check=_single_bottom)
def elu(layer: Layer) -> None:
    """elu(alpha)."""
    alpha = layer.param("elu_param").get_float("alpha", 1.0)
    layer.bind(layer.op("elu", [layer.input()], alpha=alpha))


@converter("PReLU", check=_single_bottom)
def prelu(layer: Layer) -> None:
    """prelu with a per-channel slope, or one shared slope (channel_shared)."""
    shared = layer.param("prelu_param").get_bool("channel_shared", False)
    slope = layer.blob(0, (1,) if shared else (channels_of(layer),), "slope")
    layer.bind(layer.op("prelu", [layer.input(), layer.const(slope, "slope")]))


@converter("Softmax", check=_single_bottom)
def softmax(layer: Layer) -> None:
    """softmax along ``axis`` (default 1, the channels)."""
    axis = _axis(layer, layer.param("softmax_param").get_int("axis", 1), len(layer.shape()))
    layer.bind(layer.op("softmax", [layer.input()], axis=axis))


@converter("Dropout", check=_single_bottom)
def dropout(layer: Layer) -> None:
    """dropout (identity at inference, removed at -O1); scale_train: false scales by 1 - ratio."""
    p = layer.param("dropout_param")
    ratio = p.get_float("dropout_ratio", 0.5)
    x = layer.input()
    if p.get_bool("scale_train", True):
        layer.bind(layer.op("dropout", [x], ratio=ratio))
    else:
        layer.bind(layer.op("mul", [x, layer.const(np.float32(1.0 - ratio), "keep")]))


def _python_names(spec) -> tuple[str, str, str]:
    p = spec.param("python_param")
    return p.get("module", "?"), p.get("layer", "?"), p.get("param_str", "")


def _python_dropout(spec) -> bool:
    """A ``Python`` layer that is dropout by its module or class name (ENet's
    ``spatial_dropout.SpatialDropoutLayer``), not asked to train: the identity at inference."""
    module, name, param_str = _python_names(spec)
    training = re.search(r"phase['\"]?\s*:\s*['\"]?TRAIN", param_str)
    return "dropout" in f"{module}.{name}".lower() and not training


def _python_check(spec, weights=None) -> str | None:
    if _python_dropout(spec):
        return _single_bottom(spec)
    module, name, _ = _python_names(spec)
    return (f"python_param {module}.{name}: arbitrary Python code, which no TIDL layer or host runtime runs "
            "(replace it in the deploy prototxt with the Caffe layers it computes; a dropout-like layer "
            "named *dropout* is taken as the identity)")


@converter("Python", check=_python_check)
def python_dropout(layer: Layer) -> None:
    """A Python dropout layer (:func:`_python_dropout`): dropout, the identity at inference."""
    module, name, param_str = _python_names(layer.spec)
    ratio = re.search(r"['\"]p['\"]\s*:\s*['\"]?([0-9.eE+-]+)", param_str)
    warn(f"Python layer {module}.{name} taken as dropout, the identity at inference (its name says so; "
         "tidlc runs no Python layer code)", code="unsupported")
    layer.bind(layer.op("dropout", [layer.input()], ratio=_ratio(ratio.group(1) if ratio else "0.5")))


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return 0.5
    return value if 0.0 <= value < 1.0 else 0.5


@converter("Power", check=_single_bottom)
def power(layer: Layer) -> None:
    """(shift + scale * x) ^ power as mul/add/pow with scalar constants."""
    p = layer.param("power_param")
    pw, scale, shift = (p.get_float(k, d)
                        for k, d in (("power", 1.0), ("scale", 1.0), ("shift", 0.0)))
    steps = [(kind, value, what) for kind, value, what, noop in
             (("mul", scale, "scale", 1.0), ("add", shift, "shift", 0.0), ("pow", pw, "power", 1.0))
             if value != noop]
    x = layer.input()
    if not steps:
        layer.bind(layer.op("identity", [x]))
        return
    for i, (kind, value, what) in enumerate(steps):
        last = i == len(steps) - 1
        x = layer.op(kind, [x, layer.const(np.float32(value), what)], "" if last else what)
    layer.bind(x)


# ----------------------------------------------------------------------------- normalisation

def _bn_check(spec, weights=None) -> str | None:
    problem = _single_bottom(spec)
    if problem:
        return problem
    p = spec.param("batch_norm_param")
    if p.has("use_global_stats") and not p.get_bool("use_global_stats"):
        return ("use_global_stats: false normalises with batch statistics, which has no "
                "inference meaning (hint: drop the field or set it true)")
    return None


def _bn_blob_count(layer: Layer) -> int:
    have = layer.importer.weights.available(layer.name)
    if have is not None:
        return 5 if have >= 5 else 3
    p = layer.param("batch_norm_param")
    has_affine = p.get_bool("scale_bias", False) or p.has("scale_filler") or p.has("bias_filler")
    return 5 if has_affine else 3


@converter("BatchNorm", check=_bn_check)
def batch_norm(layer: Layer) -> None:
    """batchnorm: mean/var (divided by the moving-average factor), eps; 5-blob NVCaffe form."""
    p = layer.param("batch_norm_param")
    eps = p.get_float("eps", 1e-5)
    c = channels_of(layer)
    mean = layer.blob(0, (c,), "mean")
    var = layer.blob(1, (c,), "var")
    factor = np.float32(layer.blob(2, (1,), "factor").reshape(-1)[0])
    inv = np.float32(0.0) if factor == 0 else np.float32(1.0) / factor
    if _bn_blob_count(layer) == 5:
        gamma, beta = layer.blob(3, (c,), "gamma"), layer.blob(4, (c,), "beta")
    else:
        gamma, beta = np.broadcast_to(np.float32(1), (c,)), zero_splat((c,))
    operands = [layer.input(), layer.const(gamma, "gamma"), layer.const(beta, "beta"),
                layer.const(scaled(mean, inv), "mean"), layer.const(scaled(var, inv), "var")]
    layer.bind(layer.op("batchnorm", operands, epsilon=eps))


_BN_MODE = {"LEARN": 0, "INFERENCE": 1}


def _enet_bn_check(spec, weights=None) -> str | None:
    problem = _single_bottom(spec)
    if problem:
        return problem
    if spec.param("bn_param").get_enum("bn_mode", _BN_MODE, "LEARN") == "INFERENCE":
        return None
    if weights is not None and weights.available(spec.name) == 4:
        return None  # scale, shift and stored statistics (mean, variance)
    return ("bn_mode LEARN normalises with batch statistics, which has no inference meaning "
            "(hint: use ENet's BN-merged deploy net, or set bn_mode: INFERENCE after computing "
            "the statistics)")


@converter("BN", check=_enet_bn_check)
def enet_bn(layer: Layer) -> None:
    """ENet/SegNet fork BN: ``scale`` (x * scale + shift) in INFERENCE mode; with stored
    statistics (4 blobs), ``batchnorm``."""
    p = layer.param("bn_param")
    c = channels_of(layer)
    shape = (1, c, 1, 1)
    gamma = layer.blob(0, shape, "gamma").reshape(c)
    beta = layer.blob(1, shape, "beta").reshape(c)
    x = layer.input()
    if p.get_enum("bn_mode", _BN_MODE, "LEARN") == "INFERENCE":
        layer.bind(layer.op("scale", [x, layer.const(gamma, "scale"), layer.const(beta, "shift")]))
        return
    mean = layer.blob(2, shape, "mean").reshape(c)
    var = layer.blob(3, shape, "var").reshape(c)
    operands = [x, layer.const(gamma, "gamma"), layer.const(beta, "beta"),
                layer.const(mean, "mean"), layer.const(var, "var")]
    layer.bind(layer.op("batchnorm", operands, epsilon=p.get_float("eps", 1e-5)))


def _param_shape(layer: Layer, param_name: str, x_shape: tuple) -> tuple[int, tuple]:
    """(axis, blob shape) of a Scale/Bias parameter: ``x_shape[axis : axis + num_axes]``."""
    p = layer.param(param_name)
    axis = _axis(layer, p.get_int("axis", 1), len(x_shape))
    num_axes = p.get_int("num_axes", 1)
    if num_axes < -1:
        raise layer.error(f"num_axes {num_axes} must be -1 or more")
    end = len(x_shape) if num_axes == -1 else axis + num_axes
    if end > len(x_shape):
        raise layer.error(f"axis {axis} + num_axes {num_axes} exceeds the bottom's "
                          f"{len(x_shape)} axes")
    return axis, tuple(x_shape[axis:end])


def _broadcastable(layer: Layer, value, axis: int, rank: int, suffix: str):
    """Reshape a parameter (const array or value) of shape x[axis:axis+k] to broadcast on x."""
    if isinstance(value, np.ndarray):
        trailing = rank - axis - value.ndim
        return layer.const(value.reshape(value.shape + (1,) * trailing), suffix)
    shape = tuple(value.type.shape)
    trailing = rank - axis - len(shape)
    if trailing == 0:
        return value
    return layer.op("reshape", [value], suffix, shape=shape + (1,) * trailing)


def _affine(layer: Layer, x, axis: int, scale, bias) -> None:
    """x * scale + bias with Caffe's (axis, num_axes) broadcasting; per-channel -> ``scale`` op."""
    rank = len(layer.shape())
    arrays = [a for a in (scale, bias) if a is not None]
    per_channel = all(isinstance(a, np.ndarray) for a in arrays) and all(
        (a.ndim == 1 and axis == 1) or a.size == 1 for a in arrays)
    if per_channel and rank in (2, 4) and scale is not None:
        operands = [x, layer.const(scale.reshape(-1), "scale")]
        if bias is not None:
            operands.append(layer.const(bias.reshape(-1), "bias"))
        layer.bind(layer.op("scale", operands))
        return
    steps = [(kind, v, what) for kind, v, what in (("mul", scale, "scale"), ("add", bias, "bias"))
             if v is not None]
    for i, (kind, v, what) in enumerate(steps):
        last = i == len(steps) - 1
        x = layer.op(kind, [x, _broadcastable(layer, v, axis, rank, what)], "" if last else what)
    layer.bind(x)


def _two_bottom_param(layer: Layer, axis: int, expect: tuple):
    other = layer.input(1)
    shape = layer.shape(1)
    if len(shape) == 0 or tuple(shape) != tuple(expect[:len(shape)]):
        raise layer.error(f"second bottom of shape {list(shape)} does not match the first "
                          f"bottom's axes from {axis} on ({list(expect)})")
    return other


@converter("Scale")
def scale(layer: Layer) -> None:
    """x * scale (+ bias): a blob, or the second bottom; (axis, num_axes) broadcasting."""
    layer.expect_bottoms(1, 2)
    p = layer.param("scale_param")
    x_shape = layer.shape()
    axis, pshape = _param_shape(layer, "scale_param", x_shape)
    if len(layer.inputs) == 2:
        s = _two_bottom_param(layer, axis, x_shape[axis:])
        pshape = tuple(layer.shape(1))
    else:
        s = layer.blob(0, pshape, "gamma")
    bias = None
    if p.get_bool("bias_term", False):
        # the bias follows the scale blob, or is blob 0 when the scale is a bottom
        bias = layer.blob(1 if len(layer.inputs) == 1 else 0, pshape, "beta")
    _affine(layer, layer.input(), axis, s, bias)


@converter("Bias")
def bias(layer: Layer) -> None:
    """x + bias: a blob, or the second bottom; (axis, num_axes) broadcasting."""
    layer.expect_bottoms(1, 2)
    x_shape = layer.shape()
    axis, pshape = _param_shape(layer, "bias_param", x_shape)
    if len(layer.inputs) == 2:
        b = _two_bottom_param(layer, axis, x_shape[axis:])
    else:
        b = layer.blob(0, pshape, "beta")
    rank = len(x_shape)
    layer.bind(layer.op("add", [layer.input(), _broadcastable(layer, b, axis, rank, "bias")]))


def _lrn_check(spec, weights=None) -> str | None:
    problem = _single_bottom(spec)
    if problem:
        return problem
    p = spec.param("lrn_param")
    size = p.get_int("local_size", 5)
    if size < 1 or size % 2 == 0:
        return f"local_size {size} must be odd"
    return problem_of(p.get_enum, "norm_region", LRN_NORM_REGION, "ACROSS_CHANNELS")


@converter("LRN", check=_lrn_check)
def lrn(layer: Layer) -> None:
    """lrn across channels; WITHIN_CHANNEL as x * (1 + alpha * avgpool(x^2)) ^ -beta."""
    p = layer.param("lrn_param")
    size = p.get_int("local_size", 5)
    alpha, beta = p.get_float("alpha", 1.0), p.get_float("beta", 0.75)
    x = layer.input()
    if p.get_enum("norm_region", LRN_NORM_REGION, "ACROSS_CHANNELS") == "ACROSS_CHANNELS":
        k = p.get_float("k", 1.0)
        layer.bind(layer.op("lrn", [x], size=size, alpha=alpha, beta=beta, bias=k))
        return
    layer.shape4()
    pad = (size - 1) // 2
    sq = layer.op("mul", [x, x], "square")
    avg = layer.op("pool2d", [sq], "pool", mode="avg", kernel=(size, size), strides=(1, 1),
                   pads=(pad, pad, pad, pad), count_include_pad=True)
    norm = layer.op("scale", [avg, layer.const(np.float32([alpha]), "alpha"),
                              layer.const(np.float32([1.0]), "one")], "affine")
    norm = layer.op("pow", [norm, layer.const(np.float32(-beta), "beta")], "pow")
    layer.bind(layer.op("mul", [x, norm]))


# ----------------------------------------------------------------------------- eltwise

def _eltwise_check(spec, weights=None) -> str | None:
    if len(spec.bottom) < 2:
        return f"{len(spec.bottom)} bottom(s); Eltwise needs at least 2"
    p = spec.param("eltwise_param")
    problem = problem_of(p.get_enum, "operation", ELTWISE_OP, "SUM")
    if problem:
        return problem
    coeffs = p.get_floats("coeff")
    if coeffs and len(coeffs) != len(spec.bottom):
        return f"{len(coeffs)} coeff(s) for {len(spec.bottom)} bottoms"
    if coeffs and p.get_enum("operation", ELTWISE_OP, "SUM") != "SUM":
        return "coeff is only meaningful for operation SUM"
    return None


@converter("Eltwise", check=_eltwise_check)
def eltwise(layer: Layer) -> None:
    """SUM (with coeff: scalar mul, or sub for 1/-1) / PROD / MAX, chained left to right."""
    p = layer.param("eltwise_param")
    operation = p.get_enum("operation", ELTWISE_OP, "SUM")
    coeffs = p.get_floats("coeff") or [1.0] * len(layer.inputs)
    terms = list(layer.inputs)
    kind = {"SUM": "add", "PROD": "mul", "MAX": "max"}[operation]
    if operation == "SUM" and len(terms) == 2 and coeffs == [1.0, -1.0]:
        layer.bind(layer.op("sub", terms))
        return
    if operation == "SUM":
        terms = [t if c == 1.0 else
                 layer.op("mul", [t, layer.const(np.float32(c), f"coeff{i}")], f"coeff{i}")
                 for i, (t, c) in enumerate(zip(terms, coeffs))]
    acc = terms[0]
    for i, t in enumerate(terms[1:], 1):
        acc = layer.op(kind, [acc, t], "" if i == len(terms) - 1 else str(i))
    layer.bind(acc)
