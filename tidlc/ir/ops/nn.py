"""Neural-network ops with weights or windows: conv, deconv, dense, pooling, norms."""
from __future__ import annotations

import math

import numpy as np

from tidlc.ir.opdef import (
    Trait,
    a_bool,
    a_float,
    a_floats,
    a_int,
    a_ints,
    a_str,
    defop,
    non_negative,
    positive,
)
from tidlc.ir.ops._common import (
    ACTIVATIONS,
    apply_act,
    check_act_params,
    norm_axis,
    permute_axis_attr,
    require_nchw,
    require_rank,
    same_as_first,
    spatial_out,
)
from tidlc.ir.types import TensorType

ACT_ATTRS = {
    "act": a_str("none", choices=tuple(ACTIVATIONS), doc="fused activation"),
    "act_params": a_floats((), doc="parameters of the fused activation"),
}


def _act_check(op):
    problem = check_act_params(op.attrs["act"], op.attrs["act_params"])
    if problem:
        raise ValueError(problem)


def _window_attrs(default_kernel=None):
    spec = {
        "strides": a_ints((1, 1), length=2, check=positive),
        "pads": a_ints((0, 0, 0, 0), length=4, check=non_negative, doc="top, left, bottom, right"),
        "dilations": a_ints((1, 1), length=2, check=positive),
    }
    if default_kernel is not None:
        spec["kernel"] = a_ints(default_kernel, length=2, check=positive)
    return spec


# --------------------------------------------------------------------------- conv2d
def _conv_out_hw(x_shape, kh, kw, a):
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = a["strides"], a["pads"], a["dilations"]
    h = spatial_out(x_shape[2], kh, sh, pt, pb, dh)
    w = spatial_out(x_shape[3], kw, sw, pl, pr, dw)
    return h, w


def _conv_infer(op, types):
    x, w = types[0], types[1]
    require_rank(x, 4, "conv2d input")
    require_nchw(x, "conv2d")
    require_rank(w, 4, "conv2d weight")
    _act_check(op)
    g = op.attrs["groups"]
    if w.shape is None:
        raise ValueError("conv2d weight shape unknown")
    cout, cin_g, kh, kw = w.shape
    if x.shape is None:
        return [TensorType(None, x.dtype, x.layout)]
    if x.shape[1] is not None and x.shape[1] != cin_g * g:
        raise ValueError(f"conv2d input has {x.shape[1]} channels, weight expects {cin_g} x {g} groups")
    if cout % g:
        raise ValueError(f"conv2d: {cout} output channels not divisible by {g} groups")
    if len(types) > 2 and types[2].shape is not None and tuple(types[2].shape) != (cout,):
        raise ValueError(f"conv2d bias shape {types[2].shape} != ({cout},)")
    h, wo = _conv_out_hw(x.shape, kh, kw, op.attrs)
    return [TensorType((x.shape[0], cout, h, wo), x.dtype, x.layout)]


def _pad_nchw(x, pads, value=0.0):
    pt, pl, pb, pr = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=value)


def im2col(x: np.ndarray, kh: int, kw: int, strides, pads, dilations) -> tuple[np.ndarray, int, int]:
    """(N, C, H, W) -> columns (N, C*kh*kw, Ho*Wo), rows ordered c, i, j like OIHW weights."""
    from tidlc.kernels import im2col_f32
    return im2col_f32(x, kh, kw, strides, pads, dilations)


def conv2d_ref(x, w, b=None, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), groups=1):
    """Float conv via im2col + BLAS (depthwise as a sum of shifted products)."""
    n, c, _, _ = x.shape
    cout, cin_g, kh, kw = w.shape
    sh, sw = strides
    dh, dw = dilations
    if groups == c and cin_g == 1 and cout == c and kh * kw > 1:
        from tidlc.kernels import depthwise_conv2d
        dtype = np.result_type(x, w)
        out = depthwise_conv2d(x.astype(dtype, copy=False), w.astype(dtype, copy=False), strides, pads, dilations)
    elif groups == 1:
        out = _dense_conv(x, w, strides, pads, dilations)
    else:
        cols, ho, wo = im2col(x, kh, kw, strides, pads, dilations)
        cols = cols.reshape(n, groups, cin_g * kh * kw, ho * wo)
        out = np.matmul(w.reshape(groups, cout // groups, cin_g * kh * kw), cols).reshape(n, cout, ho, wo)
    if b is not None:
        out += b.reshape(1, -1, 1, 1).astype(out.dtype, copy=False)
    return out


def _dense_conv(x, w, strides, pads, dilations):
    """groups == 1: one GEMM per image; 1x1 unpadded convs need no im2col at all."""
    n, c = x.shape[:2]
    cout, _, kh, kw = w.shape
    dtype = np.result_type(x, w)
    w2 = np.ascontiguousarray(w.reshape(cout, -1), dtype=dtype)
    if kh == kw == 1 and not any(pads):
        xs = x[:, :, ::strides[0], ::strides[1]]
        ho, wo = xs.shape[2:]
        cols = np.ascontiguousarray(xs, dtype=dtype).reshape(n, c, ho * wo)
    else:
        cols, ho, wo = im2col(x, kh, kw, strides, pads, dilations)
        cols = cols.astype(dtype, copy=False)
    out = np.empty((n, cout, ho * wo), dtype=dtype)
    for i in range(n):
        np.dot(w2, cols[i], out=out[i])
    return out.reshape(n, cout, ho, wo)


def _conv_compute(op, x, w, b=None):
    a = op.attrs
    out = conv2d_ref(x, w, b, a["strides"], a["pads"], a["dilations"], a["groups"])
    return apply_act(out, a["act"], a["act_params"], inplace=True)


def _conv_macs(op):
    out = op.results[0].type
    w = op.operands[1].type
    if not out.is_static or w.shape is None:
        return 0
    _, cin_g, kh, kw = w.shape
    return int(out.size) * cin_g * kh * kw


defop("conv2d", ("x", "w", "b?"), {**_window_attrs(), "groups": a_int(1, check=positive), **ACT_ATTRS},
      infer=_conv_infer, compute=_conv_compute, macs=_conv_macs, category="mac", traits=(Trait.MAC,),
      doc="2-D convolution, weights OIHW (O, I/groups, kH, kW); NCHW data.")


# --------------------------------------------------------------------------- deconv2d
def _deconv_infer(op, types):
    x, w = types[0], types[1]
    require_rank(x, 4, "deconv2d input")
    require_nchw(x, "deconv2d")
    _act_check(op)
    g = op.attrs["groups"]
    cin, cout_g, kh, kw = w.shape
    if x.shape is None:
        return [TensorType(None, x.dtype, x.layout)]
    if x.shape[1] is not None and x.shape[1] != cin:
        raise ValueError(f"deconv2d input has {x.shape[1]} channels, weight expects {cin}")
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = op.attrs["strides"], op.attrs["pads"], op.attrs["dilations"]
    oph, opw = op.attrs["output_padding"]

    def size(i, s, k, d, p0, p1, opad):
        return None if i is None else s * (i - 1) + opad + (k - 1) * d + 1 - p0 - p1

    h = size(x.shape[2], sh, kh, dh, pt, pb, oph)
    wo = size(x.shape[3], sw, kw, dw, pl, pr, opw)
    return [TensorType((x.shape[0], cout_g * g, h, wo), x.dtype, x.layout)]


def deconv2d_ref(x, w, b=None, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), groups=1,
                 output_padding=(0, 0)):
    """Transposed conv: GEMM to columns then scatter-add (col2im)."""
    n, cin, h, wi = x.shape
    _, cout_g, kh, kw = w.shape
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, pads, dilations
    full_h = sh * (h - 1) + (kh - 1) * dh + 1 + output_padding[0]
    full_w = sw * (wi - 1) + (kw - 1) * dw + 1 + output_padding[1]
    cin_g = cin // groups
    xg = x.reshape(n, groups, cin_g, h * wi)
    wg = w.reshape(groups, cin_g, cout_g * kh * kw).transpose(0, 2, 1)
    cols = np.matmul(wg, xg).reshape(n, groups * cout_g, kh, kw, h, wi)
    full = np.zeros((n, groups * cout_g, full_h, full_w), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            full[:, :, i * dh: i * dh + (h - 1) * sh + 1: sh, j * dw: j * dw + (wi - 1) * sw + 1: sw] += cols[:, :, i, j]
    out = full[:, :, pt: full_h - pb, pl: full_w - pr]
    if b is not None:
        out = out + b.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(out)


def _deconv_compute(op, x, w, b=None):
    a = op.attrs
    out = deconv2d_ref(x, w, b, a["strides"], a["pads"], a["dilations"], a["groups"], a["output_padding"])
    return apply_act(out, a["act"], a["act_params"], inplace=True)


def _deconv_macs(op):
    x = op.operands[0].type
    w = op.operands[1].type
    if not x.is_static:
        return 0
    _, cout_g, kh, kw = w.shape
    return int(x.size) * cout_g * kh * kw


defop("deconv2d", ("x", "w", "b?"),
      {**_window_attrs(), "groups": a_int(1, check=positive),
       "output_padding": a_ints((0, 0), length=2, check=non_negative), **ACT_ATTRS},
      infer=_deconv_infer, compute=_deconv_compute, macs=_deconv_macs, category="mac", traits=(Trait.MAC,),
      doc="2-D transposed convolution, weights (I, O/groups, kH, kW).")


# --------------------------------------------------------------------------- dense
def _dense_infer(op, types):
    x, w = types[0], types[1]
    _act_check(op)
    require_rank(w, 2, "dense weight")
    m, k = w.shape
    if x.shape is not None and x.shape[-1] is not None and x.shape[-1] != k:
        raise ValueError(f"dense input has {x.shape[-1]} features, weight expects {k}")
    if len(types) > 2 and types[2].shape is not None and math.prod(types[2].shape) != m:
        raise ValueError(f"dense bias shape {types[2].shape} does not match {m} outputs")
    shape = None if x.shape is None else tuple(x.shape[:-1]) + (m,)
    return [TensorType(shape, x.dtype, None)]


def _dense_compute(op, x, w, b=None):
    out = np.matmul(x, w.T)
    if b is not None:
        out = out + b.reshape(-1)
    return apply_act(out.astype(x.dtype, copy=False), op.attrs["act"], op.attrs["act_params"])


def _dense_macs(op):
    out = op.results[0].type
    return int(out.size) * op.operands[1].type.shape[1] if out.is_static else 0


defop("dense", ("x", "w", "b?"), dict(ACT_ATTRS), infer=_dense_infer, compute=_dense_compute,
      macs=_dense_macs, category="mac", traits=(Trait.MAC,),
      doc="Fully connected: y = x @ w.T + b over the last axis; w is (outputs, inputs).")


def _matmul_infer(op, types):
    a, b = types
    if a.shape is None or b.shape is None:
        return [TensorType(None, a.dtype)]
    sa, sb = list(a.shape), list(b.shape)
    if len(sa) < 2 or len(sb) < 2:
        shape = np.matmul(np.zeros([d or 1 for d in sa]), np.zeros([d or 1 for d in sb])).shape
        return [TensorType(shape, a.dtype)]
    from tidlc.ir.ops._common import broadcast_shapes
    batch = broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2]))
    if sa[-1] is not None and sb[-2] is not None and sa[-1] != sb[-2]:
        raise ValueError(f"matmul inner dims differ: {a.shape} x {b.shape}")
    return [TensorType(tuple(batch) + (sa[-2], sb[-1]), a.dtype)]


def _matmul_macs(op):
    out = op.results[0].type
    return int(out.size) * op.operands[0].type.shape[-1] if out.is_static and op.operands[0].type.shape else 0


defop("matmul", ("a", "b"), {}, infer=_matmul_infer, compute=lambda op, a, b: np.matmul(a, b),
      macs=_matmul_macs, category="mac", traits=(Trait.MAC,), doc="numpy matmul semantics.")


# --------------------------------------------------------------------------- channel-wise
def _channel_param_check(x: TensorType, params: list[TensorType], axis: int, what: str):
    if x.shape is None:
        return
    c = x.shape[norm_axis(axis, len(x.shape))]
    for p in params:
        if p.shape is not None and c is not None and math.prod(p.shape) not in (c, 1):
            raise ValueError(f"{what} parameter of shape {p.shape} does not match {c} channels")


def _bcast(p, x, axis):
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    return p.reshape(shape).astype(x.dtype, copy=False) if p.size > 1 else p.reshape(()).astype(x.dtype)


def _bn_infer(op, types):
    require_nchw(types[0], "batchnorm")
    _channel_param_check(types[0], types[1:], 1, "batchnorm")
    return [types[0]]


def _bn_compute(op, x, gamma, beta, mean, var):
    eps = op.attrs["epsilon"]
    scale = (gamma / np.sqrt(var.astype(np.float64) + eps)).astype(x.dtype)
    shift = (beta - mean * scale).astype(x.dtype)
    return x * _bcast(scale, x, 1) + _bcast(shift, x, 1)


defop("batchnorm", ("x", "gamma", "beta", "mean", "var"), {"epsilon": a_float(1e-5, check=non_negative)},
      infer=_bn_infer, compute=_bn_compute, category="vector",
      doc="Inference batch normalisation over axis 1.")


def _scale_infer(op, types):
    _act_check(op)
    _channel_param_check(types[0], types[1:], op.attrs["axis"], "scale")
    return [types[0]]


def _scale_compute(op, x, s, b=None):
    axis = op.attrs["axis"]
    out = x * _bcast(s, x, axis)
    if b is not None:
        out = out + _bcast(b, x, axis)
    return apply_act(out, op.attrs["act"], op.attrs["act_params"])


defop("scale", ("x", "scale", "bias?"), {"axis": a_int(1), **ACT_ATTRS},
      infer=_scale_infer, compute=_scale_compute, category="vector",
      traits=(Trait.MAC, Trait.LAYOUT_AGNOSTIC), permute_attrs=permute_axis_attr("axis"),
      doc="Channel-wise affine y = x * scale[c] + bias[c] (TIDL's BatchNorm layer).")


def _prelu_compute(op, x, slope):
    # a 1-D slope with one value per channel is per channel (axis 1, Caffe); any other
    # shape broadcasts numpy-style (a (W,) slope of an NCHW tensor is per column)
    if slope.ndim == 1 and x.ndim > 1 and slope.size == x.shape[1]:
        s = _bcast(slope, x, 1)
    else:
        s = slope.astype(x.dtype, copy=False)
    return np.where(x >= 0, x, x * s)


def channel_slopes(slope: np.ndarray, x_shape) -> np.ndarray | None:
    """A prelu's ``slope`` (numpy-broadcast against an ``x`` of ``x_shape``) as the canonical 1-D
    form: one value, or one per channel (axis 1); None when it varies along another axis. A
    (1, C, 1, 1) slope (TFLite's per-channel alpha after the NHWC -> NCHW layout pass) or a (C, 1, 1)
    one (PyTorch's ``nn.PReLU(C)`` exported to ONNX) is per channel."""
    if x_shape is None or len(x_shape) < 2 or slope.ndim > len(x_shape):
        return None
    if slope.size == 1:
        return slope.reshape(1)
    if slope.ndim == 1:
        return slope if slope.size == x_shape[1] else None  # (W,) of an NCHW x is per column
    lead = len(x_shape) - slope.ndim  # numpy aligns the slope's dims with x's last ones
    axis = 1 - lead
    if axis < 0 or slope.shape[axis] != x_shape[1] or any(n != 1 for i, n in enumerate(slope.shape) if i != axis):
        return None
    return slope.reshape(-1)


defop("prelu", ("x", "slope"), {}, infer=same_as_first, compute=_prelu_compute, category="vector",
      traits=(Trait.ELEMENTWISE, Trait.LAYOUT_AGNOSTIC),
      doc="y = x if x >= 0 else slope * x; a 1-D slope of C values is per channel (axis 1), "
          "other shapes broadcast numpy-style.")


# --------------------------------------------------------------------------- pooling
def _pool_infer(op, types):
    x = types[0]
    require_rank(x, 4, "pool2d input")
    require_nchw(x, "pool2d")
    if x.shape is None:
        return [x]
    a = op.attrs
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = a["kernel"], a["strides"], a["pads"], a["dilations"]
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if max(pt, pb) >= eh + (eh == 1) or max(pl, pr) >= ew + (ew == 1):
        raise ValueError(f"pool2d pads {a['pads']} not smaller than kernel {a['kernel']}")
    h = spatial_out(x.shape[2], kh, sh, pt, pb, dh, a["ceil_mode"])
    w = spatial_out(x.shape[3], kw, sw, pl, pr, dw, a["ceil_mode"])
    return [TensorType((x.shape[0], x.shape[1], h, w), x.dtype, x.layout)]


def _taps_inside(starts, k, d, lo, hi):
    """How many of the window taps ``start + i*d`` (i < k) fall in [lo, hi), per window."""
    taps = starts[:, None] + np.arange(k)[None, :] * d
    return ((taps >= lo) & (taps < hi)).sum(axis=1)


def pool2d_ref(x, mode, kernel, strides, pads, ceil_mode=False, count_include_pad=False, dilations=(1, 1)):
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = kernel, strides, pads, dilations
    ho = spatial_out(h, kh, sh, pt, pb, dh, ceil_mode)
    wo = spatial_out(w, kw, sw, pl, pr, dw, ceil_mode)
    from tidlc.kernels import max_pool2d, pool2d_window
    if mode == "max":
        return max_pool2d(x, kernel, strides, pads, dilations, ho, wo)
    # divisor: the taps inside the padded extent, or inside the real input
    lo_h, hi_h = (-pt, h + pb) if count_include_pad else (0, h)
    lo_w, hi_w = (-pl, w + pr) if count_include_pad else (0, w)
    cnt_h = _taps_inside(np.arange(ho) * sh - pt, kh, dh, lo_h, hi_h)
    cnt_w = _taps_inside(np.arange(wo) * sw - pl, kw, dw, lo_w, hi_w)
    div = np.maximum(cnt_h[:, None] * cnt_w[None, :], 1).astype(x.dtype)
    return pool2d_window(x, False, kernel, strides, pads, dilations, ho, wo, div)


def _pool_compute(op, x):
    a = op.attrs
    return pool2d_ref(x, a["mode"], a["kernel"], a["strides"], a["pads"], a["ceil_mode"],
                      a["count_include_pad"], a["dilations"])


defop("pool2d", ("x",), {"mode": a_str(choices=("max", "avg")), **_window_attrs((1, 1)),
                         "ceil_mode": a_bool(False), "count_include_pad": a_bool(False)},
      infer=_pool_infer, compute=_pool_compute, category="vector", traits=(Trait.SCALE_PRESERVING,),
      doc="Max/average pooling; pads (t, l, b, r); ceil mode as Caffe/ONNX compute it.")


def _global_pool_infer(op, types):
    x = types[0]
    require_nchw(x, "global_pool")
    if x.shape is None:
        return [x]
    return [TensorType(tuple(x.shape[:2]) + (1,) * (len(x.shape) - 2), x.dtype, x.layout)]


def _global_pool_compute(op, x):
    axes = tuple(range(2, x.ndim))
    if op.attrs["mode"] == "max":
        return x.max(axis=axes, keepdims=True)
    return x.mean(axis=axes, keepdims=True, dtype=np.float64).astype(x.dtype)


defop("global_pool", ("x",), {"mode": a_str(choices=("max", "avg"))}, infer=_global_pool_infer,
      compute=_global_pool_compute, category="vector", traits=(Trait.SCALE_PRESERVING,),
      doc="Pool over all spatial positions.")


# --------------------------------------------------------------------------- lrn / softmax
def _lrn_compute(op, x):
    size, alpha, beta, bias = (op.attrs[k] for k in ("size", "alpha", "beta", "bias"))
    sq = (x.astype(np.float64)) ** 2
    c = x.shape[1]
    lo, hi = (size - 1) // 2, size // 2
    padded = np.pad(sq, [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
    csum = np.cumsum(padded, axis=1)
    csum = np.concatenate([np.zeros_like(csum[:, :1]), csum], axis=1)
    window = csum[:, size: size + c] - csum[:, :c]
    return (x / (bias + alpha / size * window) ** beta).astype(x.dtype)


defop("lrn", ("x",), {"size": a_int(check=positive), "alpha": a_float(1e-4), "beta": a_float(0.75),
                      "bias": a_float(1.0)},
      infer=same_as_first, compute=_lrn_compute, category="vector",
      doc="Local response normalisation across channels (float only on TIDL).")


def _softmax_compute(op, x):
    axis = op.attrs["axis"]
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=axis, keepdims=True)
    # log(e / total) would be log(0) = -inf where exp underflows; this form stays finite
    return shifted - np.log(total) if op.attrs["log"] else e / total


def _layernorm_infer(op, types):
    x = types[0]
    if x.shape is not None:
        rank = len(x.shape)
        axis = norm_axis(op.attrs["axis"], rank)
        normalized = x.shape[axis:]
        for what, t in zip(("scale", "bias"), types[1:]):
            if t.shape is not None and None not in normalized and t.size not in (1, math.prod(normalized)):
                raise ValueError(f"layernorm {what} has {t.size} elements; the normalized axes hold "
                                 f"{math.prod(normalized)}")
    return [x]


def _layernorm_compute(op, x, scale=None, bias=None):
    axes = tuple(range(norm_axis(op.attrs["axis"], x.ndim), x.ndim))
    xd = x.astype(np.float64)
    mean = xd.mean(axis=axes, keepdims=True)
    centred = xd - mean
    var = (centred * centred).mean(axis=axes, keepdims=True)
    y = centred / np.sqrt(var + op.attrs["epsilon"])
    shape = x.shape[axes[0]:] if axes else ()
    if scale is not None:
        y = y * np.asarray(scale, np.float64).reshape(shape if np.size(scale) > 1 else ())
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(shape if np.size(bias) > 1 else ())
    return y.astype(x.dtype, copy=False)


defop("layernorm", ("x", "scale?", "bias?"), {"axis": a_int(-1), "epsilon": a_float(1e-5, check=positive)},
      infer=_layernorm_infer, compute=_layernorm_compute, category="vector",
      doc="Layer normalization over the axes from `axis` to the last (ONNX LayerNormalization): "
          "(x - mean) / sqrt(var + epsilon) * scale + bias; scale and bias have the normalized axes' shape.")


defop("softmax", ("x",), {"axis": a_int(-1), "log": a_bool(False)}, infer=same_as_first,
      compute=_softmax_compute, category="vector", traits=(Trait.LAYOUT_AGNOSTIC,),
      permute_attrs=permute_axis_attr("axis"), doc="Softmax (or log-softmax) along one axis.")
