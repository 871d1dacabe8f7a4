"""``fuse-patterns`` (-O2): the single ops TIDL runs, rebuilt from what exporters decompose them into.

Exporters spell activations out in elementwise arithmetic, and each piece becomes
a TIDL layer with its own requantization. The rules (a table a plugin can
extend: ``PATTERN_RULES``) put them back together, float outputs unchanged
within rounding (1e-5 relative):

* HardSwish ``x * clip(x + 3, 0, 6) / 6`` (any association: ``(x*c)/6``,
  ``x*(c/6)``, ``x*c*(1/6)``, ``x * hardsigmoid(x; 1/6, 0.5)``) -> ``hardswish``;
* HardSigmoid ``clip(x * a + b, 0, 1)`` (also ``x / d + b``) and
  ``clip(x + 3, 0, 6) / 6`` -> ``hardsigmoid(alpha, beta)``;
* GELU ``0.5 * x * (1 + erf(x / sqrt(2)))`` (any association, ``x * 0.7071...``
  for the division) -> ``gelu``;
* LayerNorm ``(x - mean) / sqrt(mean((x - mean)^2) + eps) * gamma + beta`` over
  trailing axes (``pow(d, 2)`` or ``d * d``; gamma/beta optional), and Keras'
  ``x * m + (beta - mean * m)`` with ``m = rsqrt(var + eps) * gamma`` -> ``layernorm``;
  GELU and LayerNorm also with each piece between a pre-quantized model's
  quantize/dequantize pair (int8 TFLite, onnxruntime's QDQ): the pairs inside go;
* an explicit zero ``Pad`` of H and W before a ``conv2d`` (or an average pool
  that counts the pad) -> the conv's (pool's) own padding;
* a pool whose single window covers the whole plane (``pool5`` 7x7 on a 7x7
  input; padding only where it changes nothing) -> ``global_pool``;
* a kxk stride-1 max pool padded (k-1)/2 (YOLO's SPP/SPPF: 5x5, 9x9, 13x13) ->
  (k-1)/2 chained 3x3 stride-1 max pools; a kxk stride-k pool (k a power of 2,
  unpadded) -> log2(k) chained 2x2 stride-2 pools;
* a mean (max) over H and W (PyTorch's dynamo exporter: ``ReduceMean``) -> a global pool;
* a sum or mean over the channels, also of a product with a constant per channel (a DFL
  head's ``(softmax(box, 1) * arange(16)).sum(1)``) -> a 1x1 conv to one channel;
* an op that only moves integer codes (an int8 TFLite model's concat, pad, max
  pool) -> the op on dequantized operands, quantized again, so each dequantize
  meets a quantize;
* a gather of one constant index (``qkv[0]``) -> a slice and a reshape;
* ``reshape (N, g, C/g, H, W) -> transpose (0, 2, 1, 3, 4) -> reshape (N, C, H, W)``
  (ShuffleNet) -> ``shuffle_channel``;
* a global average pool over more than 1024 elements per plane (EfficientNet's and
  MobileNetV3's squeeze-excite at 112x112) -> 2x2 stride-2 average pools, then the
  global pool on a plane that fits TIDL's limit;
* a conv whose kernel/stride pair TIDL does not validate (SegFormer's 7x7 stride-4
  patch embedding) -> space-to-depth by the stride (reshape, transpose, reshape)
  and a stride-1 conv whose kernel TIDL validates (7x7 s4 p3: 2x2);
* a conv whose outer kernel taps read only zero padding at every output (DeepLabV3's
  ASPP, dilation 24 and 36 on a 16x16 plane) -> the conv of the taps that read the input
  (there: 1x1);
* an element-wise op whose operand broadcasts over the batch axis (Swin's relative
  position bias on its windows, stacked in the batch) -> the same op behind a leading
  axis of 1 (reshapes: views), which TIDL's EltWise broadcasts;
* a grouped stride-s ``deconv2d`` whose output is s times its input (JSegNet's
  bilinear upsampling) -> s*s stride-1 ``conv2d`` with its groups (one per
  output phase) + ``concat`` + ``depth_to_space`` (DCR);
* an argmax along the channel axis without ``keepdims`` (``logits.argmax(1)``) -> the
  argmax that keeps it (TIDL's ArgMax) and a reshape.

Runs twice at -O2: before ``layout``, on the graph as imported (a LayerNorm a
ViT normalizes over its last axis right after the patch embedding's
``transpose``: ``layout`` would sink that transpose into the decomposition and
leave it normalizing a non-trailing axis, which no rule rebuilds), and after
``layout`` (NCHW, transposes gone: the padding and pool rules) and before ``fuse-batchnorm``,
which would otherwise turn the ``+ 3`` and ``/ 6`` into per-channel scales.
"""
from __future__ import annotations

import math

import numpy as np

from tidlc.hookspecs import hookimpl
from tidlc.ir.ops.quant import const_or_dequantized
from tidlc.ir.ops.quant import fake_quantized_source as _src
from tidlc.passes.rewrite import Rewriter, rule_pass

SQRT2 = math.sqrt(2.0)


def _scalar(v) -> float | None:
    """The value of a constant with one element (or of a dequantized one), else None."""
    shape = v.type.shape
    if shape is not None and None not in shape and math.prod(shape) != 1:
        return None  # (before dequantizing a weight to find out)
    c = const_or_dequantized(v)
    if c is None or c.size != 1 or c.dtype.kind != "f":
        return None
    return float(np.asarray(c).reshape(()))


def _near(value: float | None, target: float, rel: float = 1e-5) -> bool:
    return value is not None and abs(value - target) <= rel * max(abs(target), 1e-12)


def _plain(rw: Rewriter, v, kinds: tuple[str, ...], thru: bool = False):
    """The live producer of ``v`` if it is one of ``kinds`` with no fused activation, else None;
    ``thru``: of ``v``'s value before a pre-quantized model's quantize/dequantize pair."""
    op = (_src(v) if thru else v).producer
    if op is None or op.kind not in kinds or id(op) in rw.dead or op.attrs.get("act", "none") != "none":
        return None
    return op


def _split_const(op) -> tuple[object, float] | None:
    """(the non-constant operand, the scalar constant) of a binary op, either order."""
    a, b = op.operands
    cb, ca = _scalar(b), _scalar(a)
    if cb is not None and ca is None:
        return a, cb
    if ca is not None and cb is None and op.kind in ("add", "mul"):  # commutative only
        return b, ca
    return None


def _scaled_by(rw: Rewriter, v, factor: float):
    """``u`` if ``v`` is ``u * factor`` or ``u / (1/factor)`` (through a quantize/dequantize pair), else None."""
    op = _plain(rw, v, ("mul", "div"), thru=True)
    if op is None:
        return None
    split = _split_const(op)
    if split is None:
        return None
    u, c = split
    if op.kind == "mul" and _near(c, factor):
        return u
    if op.kind == "div" and op.operands[1] is not u and _near(c, 1.0 / factor):
        return u
    return None


def _relu6_of_plus3(rw: Rewriter, v):
    """``x`` if ``v`` is ``clip(x + 3, 0, 6)`` (or ``relu6(x + 3)``), else None."""
    op = v.producer
    if op is None or id(op) in rw.dead:
        return None
    if op.kind == "clip" and not (op.attrs["min"] == 0.0 and op.attrs["max"] == 6.0):
        return None
    if op.kind not in ("clip", "relu6"):
        return None
    add = _plain(rw, op.operands[0], ("add",))
    split = _split_const(add) if add is not None else None
    return split[0] if split is not None and _near(split[1], 3.0) else None


def _hardsigmoid_of(rw: Rewriter, v):
    """``x`` if ``v`` is ``relu6(x + 3) / 6`` (PyTorch's hardsigmoid), else None."""
    op = v.producer
    if op is not None and op.kind == "hardsigmoid" and id(op) not in rw.dead:
        if _near(op.attrs["alpha"], 1 / 6) and _near(op.attrs["beta"], 0.5):
            return op.operands[0]
        return None
    inner = _scaled_by(rw, v, 1 / 6)
    return _relu6_of_plus3(rw, inner) if inner is not None else None


def _same(a, b) -> bool:
    """Whether two values are one, seen through quantize/dequantize pairs."""
    return a is not None and b is not None and _src(a) is _src(b)


def _next(rw: Rewriter, op):
    """The single reader of ``op``'s result, past a quantize/dequantize pair (each of one reader)."""
    user = rw.single_user(op.results[0])
    if user is not None and user.kind == "quantize" and len(user.attrs["scale"]) == 1:
        deq = rw.single_user(user.results[0])
        if deq is not None and deq.kind == "dequantize" and _src(deq.results[0]) is op.results[0]:
            return rw.single_user(deq.results[0])
    return user


def _other_thru(op, v):
    """:func:`_other` with ``v`` seen through quantize/dequantize pairs."""
    a, b = op.operands
    return b if _same(a, v) else a if _same(b, v) else None


def _replace(rw: Rewriter, old, kind: str, x, attrs=None) -> bool:
    rw.replace_op(old, rw.make(kind, [x], attrs or {}, old.name, old.loc))
    return True


# ----------------------------------------------------------------------------- hardswish
def _hardswish(rw: Rewriter, op) -> bool:
    """At a mul/div: ``x * hs(x)`` (also with the hardsigmoid between a QDQ model's quantize/dequantize
    pair: torch's opset-13 export of hardswish, quantized by onnxruntime) or ``(x * relu6(x + 3)) / 6``."""
    if op.attrs.get("act", "none") != "none":
        return False
    if op.kind == "mul":
        a, b = op.operands
        for x, h in ((a, b), (b, a)):
            if _same(_hardsigmoid_of(rw, _src(h)), x):
                return _replace(rw, op, "hardswish", x)
    # (x * relu6(x + 3)) / 6, or * (1/6): ``op`` is the scaling, its input the product
    split = _split_const(op) if op.kind in ("mul", "div") else None
    if split is None:
        return False
    inner, c = split
    if not ((op.kind == "div" and _near(c, 6.0)) or (op.kind == "mul" and _near(c, 1 / 6))):
        return False
    mul = _plain(rw, inner, ("mul",))
    if mul is None or rw.single_user(inner) is not op:
        return False
    a, b = mul.operands
    for x, r in ((a, b), (b, a)):
        if _relu6_of_plus3(rw, r) is x:
            return _replace(rw, op, "hardswish", x)
    return False


# ----------------------------------------------------------------------------- hardsigmoid
def _hardsigmoid_clip(rw: Rewriter, op) -> bool:
    """``clip(x * a + b, 0, 1)`` (or ``x / d + b``) -> hardsigmoid(a, b)."""
    if not (op.attrs["min"] == 0.0 and op.attrs["max"] == 1.0):
        return False
    add = _plain(rw, op.operands[0], ("add",))
    split = _split_const(add) if add is not None else None
    if split is None:
        return False
    u, beta = split
    scale = _plain(rw, u, ("mul", "div"))
    inner = _split_const(scale) if scale is not None else None
    if inner is None or inner[1] == 0.0:
        return False
    x, c = inner
    alpha = c if scale.kind == "mul" else 1.0 / c
    return _replace(rw, op, "hardsigmoid", x, {"alpha": float(alpha), "beta": float(beta)})


def _hardsigmoid_div(rw: Rewriter, op) -> bool:
    """``relu6(x + 3) / 6`` (or ``* (1/6)``) -> hardsigmoid(1/6, 0.5); a ``x *`` around it is then
    a hardswish (``_hardswish`` matches ``x * hardsigmoid(x; 1/6, 0.5)``)."""
    if op.attrs.get("act", "none") != "none":
        return False
    x = _hardsigmoid_of(rw, op.results[0])
    if x is None:
        return False
    return _replace(rw, op, "hardsigmoid", x, {"alpha": 1 / 6, "beta": 0.5})


# ----------------------------------------------------------------------------- gelu
def _gelu(rw: Rewriter, erf) -> bool:
    """At an erf: ``0.5 * x * (1 + erf(x / sqrt(2)))`` in any association -> gelu(x); also Keras'
    ``0.5 * x * erfc(-x / sqrt(2))``, imported as ``1 - erf(-x / sqrt(2))`` (erf is odd). In a QDQ
    model each piece between a quantize/dequantize pair too (onnxruntime's ``quantize_static``)."""
    x = _scaled_by(rw, erf.operands[0], 1 / SQRT2)
    neg = _plain(rw, x, ("neg",), thru=True) if x is not None else None
    if x is None:
        return False
    if neg is not None:
        x = neg.operands[0]
    add = _next(rw, erf)
    if add is None or add.kind != ("add" if neg is None else "sub") or add.attrs["act"] != "none":
        return False
    if neg is None:
        split = _split_const(add)
        if split is None or not _same(split[0], erf.results[0]) or not _near(split[1], 1.0):
            return False
    elif not _same(add.operands[1], erf.results[0]) or not _near(_scalar(add.operands[0]), 1.0):
        return False
    m1 = _next(rw, add)
    if m1 is None or m1.kind != "mul" or m1.attrs["act"] != "none":
        return False
    other = _other_thru(m1, add.results[0])
    if other is None:
        return False
    if _same(_scaled_by(rw, other, 0.5), x):  # (x * 0.5) * (1 + erf)
        return _replace(rw, m1, "gelu", x)
    if _same(other, x) or _near(_scalar(other), 0.5):
        m2 = _next(rw, m1)
        if m2 is None or m2.attrs.get("act", "none") != "none" or m2.kind not in ("mul", "div"):
            return False
        split2 = _split_const(m2)
        if _same(other, x) and split2 is not None and _same(split2[0], m1.results[0]) and (
                (m2.kind == "mul" and _near(split2[1], 0.5)) or (m2.kind == "div" and _near(split2[1], 2.0))):
            return _replace(rw, m2, "gelu", x)
        if not _same(other, x) and m2.kind == "mul" and _other_thru(m2, m1.results[0]) is not None \
                and _same(_other_thru(m2, m1.results[0]), x):
            return _replace(rw, m2, "gelu", x)
    return False


# ----------------------------------------------------------------------------- layernorm
def _mean_over(rw: Rewriter, v):
    """(x, axes) if ``v`` is ``reduce_mean(x, axes, keepdims)`` over the trailing axes of x, else None."""
    op = _src(v).producer
    if op is None or op.kind != "reduce" or id(op) in rw.dead or op.attrs["op"] != "mean" \
            or not op.attrs["keepdims"]:
        return None
    x = op.operands[0]
    rank = x.type.rank
    if rank is None or not op.attrs["axes"]:
        return None
    axes = sorted(a % rank for a in op.attrs["axes"])
    if axes != list(range(axes[0], rank)):
        return None
    return x, axes[0]


def _square_of(rw: Rewriter, v):
    """``d`` if ``v`` is ``d ** 2`` or ``d * d``, else None."""
    op = _plain(rw, v, ("pow", "mul"), thru=True)
    if op is None:
        return None
    a, b = op.operands
    if op.kind == "mul":
        return a if _same(a, b) else None
    return a if _near(_scalar(b), 2.0) else None


def _layernorm(rw: Rewriter, div) -> bool:
    """At ``(x - mean(x)) / sqrt(mean((x - mean(x))**2) + eps)``, with an optional ``* gamma + beta``
    of constants over the normalized axes -> layernorm(x, gamma, beta; axis, eps)."""
    if div.attrs["act"] != "none":
        return False
    d, s = div.operands
    sub = _plain(rw, d, ("sub",), thru=True)
    sqrt = _plain(rw, s, ("sqrt",), thru=True)
    if sub is None or sqrt is None:
        return False
    x, mean = sub.operands
    found = _mean_over(rw, mean)
    if found is None or not _same(found[0], x):
        return False
    axis = found[1]
    add = _plain(rw, sqrt.operands[0], ("add",), thru=True)
    split = _split_const(add) if add is not None else None
    if split is None or split[1] <= 0:
        return False
    var = _mean_over(rw, split[0])
    if var is None or var[1] != axis or not _same(_square_of(rw, var[0]), d):
        return False
    return _make_layernorm(rw, div, x, axis, float(split[1]), None, None)


def _over(c: np.ndarray | None, normalized) -> np.ndarray | None:
    """Constant ``c`` as one value per element of the ``normalized`` trailing axes, else None."""
    if c is None or normalized is None or None in normalized or c.dtype.kind != "f":
        return None
    lead = c.ndim - len(normalized)  # (Keras' gamma is (1, 1, C) on tokens)
    if lead > 0 and any(d != 1 for d in c.shape[:lead]):
        return None
    c = c.reshape(c.shape[lead:]) if lead > 0 else c
    if c.size not in (1, int(np.prod(normalized))):
        return None
    try:
        return np.broadcast_to(c, normalized).astype(np.float32)
    except ValueError:  # (a constant over other axes: not an affine of the normalized ones)
        return None


def _make_layernorm(rw: Rewriter, out, x, axis: int, eps: float, gamma, beta) -> bool:
    """Replace ``out`` (the normalized value) by ``layernorm(x, gamma, beta)``, taking in a following
    ``* gamma`` and ``+ beta`` of constants over the normalized axes (each optional). In a
    pre-quantized model the pieces are matched through their quantize/dequantize pairs: the
    layernorm reads ``x`` as the pattern did (its input's pair stays) and ends where the pattern
    ended (the output's pair stays); the pairs inside go with the pieces."""
    normalized = tuple(x.type.shape[axis:]) if x.type.shape is not None else None
    for kind in ("mul", "add"):  # the affine part (each optional), constant over the normalized axes
        user = _next(rw, out)
        if user is None or user.kind != kind or user.attrs["act"] != "none":
            continue
        other = _other_thru(user, out.results[0])
        c = _over(None if other is None else const_or_dequantized(other), normalized)
        if c is None:
            continue
        if kind == "mul":
            gamma, beta = c if gamma is None else gamma * c, None if beta is None else beta * c
        else:
            beta = c if beta is None else beta + c
        out = user
    operands = [x]
    if gamma is not None or beta is not None:
        operands.append(rw.const(np.ones(normalized, np.float32) if gamma is None else gamma, f"{out.name}.scale",
                                 anchor=out))
    if beta is not None:
        operands.append(rw.const(beta, f"{out.name}.bias", anchor=out))
    rw.replace_op(out, rw.make("layernorm", operands, {"axis": axis, "epsilon": eps}, out.name, out.loc))
    return True


def _other(op, v):
    """The operand of binary ``op`` that is not ``v`` (None when ``v`` is not one)."""
    a, b = op.operands
    return b if a is v else a if b is v else None


def _rsqrt_var(rw: Rewriter, v):
    """(x, axis, eps, gamma) if ``v`` is ``1 / sqrt(mean((x - mean(x))**2) + eps)`` [``* gamma``]."""
    gamma = None
    op = _plain(rw, v, ("mul",), thru=True)
    if op is not None:  # * gamma
        for u, c in ((op.operands[0], op.operands[1]), (op.operands[1], op.operands[0])):
            g = const_or_dequantized(c)
            if g is not None and _plain(rw, u, ("reciprocal",), thru=True) is not None:
                v, gamma = u, g
                break
        else:
            return None
    rec = _plain(rw, v, ("reciprocal",), thru=True)
    sqrt = _plain(rw, rec.operands[0], ("sqrt",), thru=True) if rec is not None else None
    add = _plain(rw, sqrt.operands[0], ("add",), thru=True) if sqrt is not None else None
    split = _split_const(add) if add is not None else None
    if split is None or split[1] <= 0:
        return None
    var = _mean_over(rw, split[0])
    d = _square_of(rw, var[0]) if var is not None else None
    sub = _plain(rw, d, ("sub",), thru=True) if d is not None else None
    if sub is None:
        return None
    x, mean = sub.operands
    found = _mean_over(rw, mean)
    if found is None or not _same(found[0], x) or found[1] != var[1]:
        return None
    return x, mean, var[1], split[1], gamma


def _layernorm_moments(rw: Rewriter, add) -> bool:
    """TensorFlow's (Keras') LayerNormalization: ``m = rsqrt(var + eps) * gamma``, then
    ``x * m + (beta - mean * m)``; TFLite writes the shift as ``-mean * m`` (and drops a zero beta)
    -> layernorm(x, gamma, beta). An int8 TFLite model's (each piece between a dequantize and a
    quantize) too."""
    if add.attrs["act"] != "none":
        return False
    for p, q in (add.operands, add.operands[::-1]):
        scaled = _plain(rw, p, ("mul",), thru=True)
        if scaled is None:
            continue
        for x, m in (scaled.operands, scaled.operands[::-1]):
            found = _rsqrt_var(rw, m)
            if found is None or not _same(found[0], x):
                continue
            _, mean, axis, eps, gamma = found
            shift, beta, negated = _plain(rw, q, ("mul", "sub", "add"), thru=True), None, True
            if shift is not None and shift.kind in ("sub", "add"):  # beta - mean * m, beta + (-mean) * m
                c, t = shift.operands
                if shift.kind == "add" and const_or_dequantized(c) is None:
                    c, t = t, c
                beta, negated = const_or_dequantized(c), shift.kind == "add"
                shift = _plain(rw, t, ("mul",), thru=True)
                if beta is None:
                    continue
            centre = _other_thru(shift, m) if shift is not None and shift.kind == "mul" else None
            neg = _plain(rw, centre, ("neg",), thru=True) if centre is not None else None
            if not (negated and neg is not None and _same(neg.operands[0], mean)) and \
                    not (not negated and _same(centre, mean)):
                continue
            normalized = tuple(x.type.shape[axis:]) if x.type.shape is not None else None
            g = _over(gamma, normalized) if gamma is not None else None
            b = _over(beta, normalized) if beta is not None else None
            if (gamma is not None and g is None) or (beta is not None and b is None):
                continue
            return _make_layernorm(rw, add, x, axis, eps, g, b)
    return False


# ----------------------------------------------------------------------------- pad into conv / pool
def _spatial_zero_pad(rw: Rewriter, v, reader) -> tuple[object, tuple[int, int, int, int]] | None:
    """(input, (top, left, bottom, right)) if ``v`` is a constant-zero pad of only H and W of an
    NCHW tensor read by ``reader`` alone."""
    pad = v.producer
    if pad is None or pad.kind != "pad" or id(pad) in rw.dead or rw.single_user(v) is not reader:
        return None
    x = pad.operands[0]
    pads = pad.attrs["pads"]
    if pad.attrs["mode"] != "constant" or pad.attrs["value"] != 0.0 or len(pads) != 8:
        return None
    if x.type.layout not in (None, "NCHW") or any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0:
        return None
    return x, (pads[2], pads[3], pads[6], pads[7])


def _pad_into_window(rw: Rewriter, op) -> bool:
    if op.kind == "pool2d" and not (op.attrs["mode"] == "avg" and op.attrs["count_include_pad"]):
        return False  # max pooling pads with -inf, average pooling without count_include_pad ignores pads
    found = _spatial_zero_pad(rw, op.operands[0], op)
    if found is None:
        return False
    x, extra = found
    pads = tuple(int(a + b) for a, b in zip(op.attrs["pads"], extra))
    new = rw.make(op.kind, [x, *op.operands[1:]], {**op.attrs, "pads": pads}, op.name, op.loc)
    rw.replace_op(op, new)
    return True


# ----------------------------------------------------------------------------- whole-plane pool
def _whole_plane_pool(rw: Rewriter, op) -> bool:
    """A pool whose one window covers the whole plane (Caffe's ``pool5`` 7x7 on 7x7 in ResNet-50 and
    GoogLeNet; Caffe2's Inception v1 export, 7x7 padded at the bottom and right on 6x6) is a global
    pool: TIDL validates 7x7 windows for neither. Padding is allowed where it changes nothing: a max
    pool, or an average that does not count it."""
    shape, out = op.operands[0].type.shape, op.results[0].type.shape
    if shape is None or out is None or len(shape) != 4 or op.operands[0].type.layout not in (None, "NCHW"):
        return False
    (kh, kw), (pt, pl, _, _) = op.attrs["kernel"], op.attrs["pads"]
    if None in shape[2:] or tuple(out[2:]) != (1, 1) or tuple(op.attrs["dilations"]) != (1, 1):
        return False
    if kh - pt < shape[2] or kw - pl < shape[3]:  # the one window, from -pad, misses the last rows/columns
        return False
    if any(op.attrs["pads"]) and op.attrs["mode"] == "avg" and op.attrs.get("count_include_pad"):
        return False  # the padding's zeros are in the average
    return _replace(rw, op, "global_pool", op.operands[0], {"mode": op.attrs["mode"]})


# ----------------------------------------------------------------------------- large pool windows
def _chained_pool(rw: Rewriter, op) -> bool:
    """Pool windows TIDL does not validate (1x1-3x3 only), as a chain of ones it does, the same
    result: a kxk stride-1 max pool padded (k-1)/2 on every side (YOLO's SPP/SPPF: 5x5, 9x9, 13x13)
    is (k-1)/2 chained 3x3 stride-1 max pools padded 1 (a max of maxima over windows that grow by
    2); a kxk stride-k pool, k a power of 2, unpadded, is log2(k) chained 2x2 stride-2 pools (equal
    blocks: the max of maxima, the mean of means)."""
    a = op.attrs
    (kh, kw), (sh, sw) = a["kernel"], a["strides"]
    if kh != kw or sh != sw or tuple(a["dilations"]) != (1, 1) or (a.get("ceil_mode") and sh != 1) or kh <= 3:
        return False  # (at stride 1 ceil mode changes nothing: Caffe's pools, all in ceil mode, chain too)
    pads = tuple(a["pads"])
    if a["mode"] == "max" and sh == 1 and kh % 2 == 1 and pads == ((kh - 1) // 2,) * 4:
        steps, step = (kh - 1) // 2, {"kernel": (3, 3), "strides": (1, 1), "pads": (1, 1, 1, 1)}
    elif sh == kh and kh & (kh - 1) == 0 and not any(pads):
        steps, step = kh.bit_length() - 1, {"kernel": (2, 2), "strides": (2, 2), "pads": (0, 0, 0, 0)}
    else:
        return False
    chain, x = [], op.operands[0]
    for i in range(steps):
        last = i == steps - 1
        attrs_ = {**a, **step} if last else {"mode": a["mode"], **step}
        pool = rw.make("pool2d", [x], attrs_, op.name if last else f"{op.name}.step{i}", op.loc)
        chain.append(pool)
        x = pool.results[0]
    if x.type.shape != op.results[0].type.shape:
        return False  # (shapes TIDL would not see: a window the chain rounds differently)
    for pool in chain[:-1]:
        rw.insert_before(op, pool)
    rw.replace_op(op, chain[-1])
    return True


# ----------------------------------------------------------------------------- average pool as depthwise conv
def _row_pool(rw: Rewriter, op) -> bool:
    """An unpadded pool of 1 x k windows at stride k along W (NeXt-ViT's attention pools its token
    sequence with a 1-D AvgPool1d(4 or 16), a 1xk pool on a one-row plane; TIDL pools 1x1 to 3x3
    windows) is a global pool of the tensor seen as N x (C H W / k) x k x 1: a reshape, the
    pool and a reshape back; also a k x 1 one along H of a one-column plane."""
    from tidlc.backends.tidl.constraints import GLOBAL_POOL_MAX_PLANE
    a = op.attrs
    x = op.operands[0]
    shape, out = x.type.shape, op.results[0].type.shape
    if a["mode"] not in ("avg", "max") or shape is None or len(shape) != 4 or None in shape or out is None \
            or any(a["pads"]) or tuple(a["dilations"]) != (1, 1) or x.type.layout not in (None, "NCHW"):
        return False
    (kh, kw), (sh, sw) = a["kernel"], a["strides"]
    if kh == 1 and sh == 1 and kw == sw > 1 and shape[3] % kw == 0:
        k = kw
    elif kw == 1 and sw == 1 and kh == sh > 1 and shape[3] == 1 and shape[2] % kh == 0:
        k = kh
    else:
        return False
    if k > GLOBAL_POOL_MAX_PLANE or not _on_host(op):
        return False
    n = shape[0]
    flat = rw.make("reshape", [x], {"shape": (n, int(np.prod(shape[1:])) // k, k, 1)}, f"{op.name}.rows", op.loc)
    pool = rw.make("global_pool", [flat.results[0]], {"mode": a["mode"]}, f"{op.name}.pool", op.loc)
    rw.insert_before(op, flat)
    rw.insert_before(op, pool)
    return _replace(rw, op, "reshape", pool.results[0], {"shape": tuple(out)})


def _take_rows(rw: Rewriter, anchor, v, axis: int, rows: np.ndarray, name: str, index_name: str):
    """``v``'s rows ``rows`` along ``axis`` (constant indices ``index_name``), placed before
    ``anchor``: TIDL's Gather layer, which keeps the scale (exact in fixed point). The value."""
    index = rw.const(rows.astype(np.int32), index_name)
    take = rw.make("gather", [v, index], {"axis": axis}, name, anchor.loc)
    rw.insert_before(anchor, take)
    return take.results[0]


def _strided_rows(rw: Rewriter, op) -> bool:
    """A pool at a stride TIDL does not take with its window (LPRNet's 3x3 max pools at stride
    (1, 2); TIDL pools at equal strides 1 or 2) as the pool at stride 1, then a gather of every
    stride-th row and column (TIDL's Gather layer: it keeps the scale, so fixed point is exact
    too). Not in ceil mode; only where the stride-1 pool is one TIDL takes."""
    from tidlc.backends.tidl.constraints import check as verdict
    a = op.attrs
    x = op.operands[0]
    shape, out = x.type.shape, op.results[0].type.shape
    if shape is None or out is None or len(shape) != 4 or None in shape or None in out or a["ceil_mode"] \
            or tuple(a["strides"]) == (1, 1) or x.type.layout not in (None, "NCHW") or not _on_host(op):
        return False
    dense = rw.make("pool2d", [x], {**a, "strides": (1, 1)}, f"{op.name}.stride1", op.loc)
    kept = [np.arange(0, n, s) for n, s in zip(dense.results[0].type.shape[2:], a["strides"])]
    if verdict(dense) is not None or tuple(len(k) for k in kept) != tuple(out[2:]):
        return False
    rw.insert_before(op, dense)
    v = dense.results[0]
    for axis, rows, stride in zip((2, 3), kept, a["strides"]):
        if stride > 1:
            v = _take_rows(rw, op, v, axis, rows, f"{op.name}.pick{axis}", f"{op.name}.every{axis}")
    rw.replace_op(op, v)
    return True


def _window_taps(n_in: int, k: int, s: int, p: int, n_out: int, kk: int, stride: int) -> tuple[int, int, int] | None:
    """Along one axis: where an average pool's window (size ``k``, stride ``s``, padded ``p`` before)
    sits in a ``kk``-wide depthwise kernel of stride ``stride`` reading the same inputs at every
    output: (first tap, pad before, pad after), symmetric pads preferred; None when no placement
    gives the pool's ``n_out`` outputs."""
    if n_out > 1 and s != stride:
        return None
    best = None
    for tap in range(kk - k + 1):
        before = tap + p  # output o reads o*stride - before + tap = o*s - p
        # floor((n_in + before + after - kk) / stride) + 1 == n_out
        least = max(0, (n_out - 1) * stride + kk - n_in - before)
        for after in range(least, least + stride):
            if (n_in + before + after - kk) // stride + 1 != n_out or before > n_in or after > n_in:
                continue
            key = (abs(before - after), max(before, after))
            if best is None or key < best[0]:
                best = (key, (tap, before, after))
    return None if best is None else best[1]


def _avg_pool_as_depthwise(rw: Rewriter, op) -> bool:
    """An average pool TIDL does not validate (it takes 1x1-3x3 square windows, equal strides 1 or
    2), unpadded or counting its padding, as a depthwise conv TIDL does validate (3x3, 5x5, 7x7 at
    stride 1 or 2) with weights 1/(kh*kw) on the window's taps and 0 on the rest: the same sums.
    PP-OCRv4's text recognizer pools 3x2 stride 3x2 on a 3-row map (one output row, so the row
    stride does not matter): a 3x3 stride-2 depthwise padded 1 left and right. Its pool ran on the
    host between two subgraphs (1.7 MB per frame across the boundary)."""
    from tidlc.backends.tidl.constraints import DEPTHWISE_VALIDATED
    a = op.attrs
    x = op.operands[0]
    shape, out = x.type.shape, op.results[0].type.shape
    (kh, kw), (sh, sw) = a["kernel"], a["strides"]
    if a["mode"] != "avg" or tuple(a["dilations"]) != (1, 1) or x.type.layout not in (None, "NCHW") \
            or shape is None or out is None or len(shape) != 4 or None in shape or None in out:
        return False
    if not _on_host(op):
        return False  # TIDL runs it (4x4: not optimally, but as a pool)
    pt, pl, pb, pr = a["pads"]
    if any((pt, pl, pb, pr)) and not a.get("count_include_pad"):
        return False  # (windows at the border average fewer values)
    strides = {s for s, n in ((sh, out[2]), (sw, out[3])) if n > 1}  # (one output: any stride reads it)
    if len(strides) > 1:
        return False
    stride = strides.pop() if strides else 1
    for kk in (3, 5, 7):
        if kk < max(kh, kw) or stride not in DEPTHWISE_VALIDATED[(kk, kk)]:
            continue
        rows = _window_taps(shape[2], kh, sh, pt, out[2], kk, stride)
        cols = _window_taps(shape[3], kw, sw, pl, out[3], kk, stride)
        if rows is None or cols is None:
            continue
        channels = shape[1]
        w = np.zeros((channels, 1, kk, kk), np.float32)
        w[:, :, rows[0]:rows[0] + kh, cols[0]:cols[0] + kw] = np.float32(1.0 / (kh * kw))
        attrs_ = {"strides": (stride, stride), "pads": (rows[1], cols[1], rows[2], cols[2]), "dilations": (1, 1),
                  "groups": channels, "act": "none", "act_params": ()}
        conv = rw.make("conv2d", [x, rw.const(w, f"{op.name}.w", anchor=op)], attrs_, op.name, op.loc)
        if conv.results[0].type.shape != op.results[0].type.shape:
            return False
        rw.replace_op(op, conv)
        return True
    return False


# ----------------------------------------------------------------------------- strided conv as space-to-depth
def _strided_conv(rw: Rewriter, op) -> bool:
    """A conv whose kernel/stride pair TIDL does not validate (SegFormer's overlapping patch
    embedding: 7x7 stride 4 padded 3; a 9x9 stride 2) as a space-to-depth by its stride
    (``reshape -> transpose -> reshape``) and a stride-1 conv on the s*s times deeper input, whose
    kernel is the taps each output phase reads: ``y[o] = sum_u w[u + p] x[s*o + u]`` with
    ``u = s*q + r`` reads phase ``r`` at block ``o + q``, so the new kernel spans
    ``q = floor(-p/s) .. floor((k-1-p)/s)`` (7x7 s4 p3: 2x2, padded 1 at the top and left), the
    same sums in another order. Only where that kernel is one TIDL validates at stride 1, for an
    ungrouped, undilated conv on an NCHW plane that the stride divides; a non-overlapping
    ``k = s`` patch conv is left to TIDL's own transpose + InnerProduct."""
    from tidlc.backends.tidl.constraints import CONV_VALIDATED
    a = op.attrs
    x, w = op.operands[0], op.operands[1]
    wc = w.const_value()
    shape = x.type.shape
    (sh, sw), (dh, dw) = a["strides"], a["dilations"]
    if wc is None or wc.dtype != np.float32 or a["groups"] != 1 or (dh, dw) != (1, 1) or sh != sw or sh < 2 \
            or shape is None or len(shape) != 4 or None in shape or x.type.layout not in (None, "NCHW"):
        return False
    s = sh
    cout, cin, kh, kw = wc.shape
    pt, pl = a["pads"][:2]  # (bottom and right follow from the output size, checked below)
    if s in CONV_VALIDATED.get((kh, kw), ()) or (kh == kw == s and not any(a["pads"])) \
            or shape[2] % s or shape[3] % s:
        return False
    qy0, qy1 = (-pt) // s, (kh - 1 - pt) // s
    qx0, qx1 = (-pl) // s, (kw - 1 - pl) // s
    ky2, kx2 = qy1 - qy0 + 1, qx1 - qx0 + 1
    if 1 not in CONV_VALIDATED.get((ky2, kx2), ()):
        return False
    hb, wb = shape[2] // s, shape[3] // s
    ho, wo = op.results[0].type.shape[2:]
    top, left = -qy0, -qx0
    bottom, right = ho - 1 + qy1 - (hb - 1), wo - 1 + qx1 - (wb - 1)  # (the last output's last block)
    if min(top, left, bottom, right) < 0 or hb + top + bottom - ky2 + 1 != ho or wb + left + right - kx2 + 1 != wo:
        return False  # (an output size the blocks do not give: leave it to the backend's verdict)
    # w2[o, c*s*s + ry*s + rx, qy - qy0, qx - qx0] = w[o, c, s*qy + ry + pt, s*qx + rx + pl]
    w2 = np.zeros((cout, cin, s, s, ky2, kx2), np.float32)
    for qy in range(qy0, qy1 + 1):
        for ry in range(s):
            ky = s * qy + ry + pt
            if not 0 <= ky < kh:
                continue
            for qx in range(qx0, qx1 + 1):
                for rx in range(s):
                    kx = s * qx + rx + pl
                    if 0 <= kx < kw:
                        w2[:, :, ry, rx, qy - qy0, qx - qx0] = wc[:, :, ky, kx]
    n = shape[0]
    steps = [("reshape", {"shape": (n, cin, hb, s, wb, s)}, "s2d.split"),
             ("transpose", {"perm": (0, 1, 3, 5, 2, 4)}, "s2d.phases"),
             ("reshape", {"shape": (n, cin * s * s, hb, wb)}, "s2d")]
    v = x
    for kind, attrs_, suffix in steps:
        step = rw.make(kind, [v], attrs_, f"{op.name}.{suffix}", op.loc)
        rw.insert_before(op, step)
        v = step.results[0]
    operands = [v, rw.const(w2.reshape(cout, cin * s * s, ky2, kx2), f"{op.name}.w", anchor=op), *op.operands[2:]]
    conv_attrs = {**a, "strides": (1, 1), "pads": (top, left, bottom, right)}
    rw.replace_op(op, rw.make("conv2d", operands, conv_attrs, op.name, op.loc))
    return True


def _pick(stride: int) -> dict:
    """The attributes of a 1x1 max pool at ``stride``: it keeps every stride-th row and column."""
    return {"mode": "max", "kernel": (1, 1), "strides": (stride, stride), "pads": (0, 0, 0, 0), "dilations": (1, 1),
            "ceil_mode": False, "count_include_pad": False}


def _strided_dilation(rw: Rewriter, op) -> bool:
    """A dilated conv with a stride (SKNet's second path: 3x3 stride 2 dilation 2; TIDL dilates
    only stride-1 convs) as a 1x1 max pool with the stride and a stride-1 conv. When the stride
    divides the dilation and the leading padding, ``y[o] = sum_i w[i] x[s*o + d*i - p]`` reads
    only every s-th row and column: the pool picks them first and the conv runs on the s*s
    times smaller plane with dilation d/s and padding p/s (the same MACs as the original).
    Otherwise the conv runs at stride 1 and the pool picks every s-th output. Only where the
    output sizes agree and both ops are ones TIDL takes."""
    a = op.attrs
    x = op.operands[0]
    shape, out = x.type.shape, op.results[0].type.shape
    (sh, sw), (dh, dw) = a["strides"], a["dilations"]
    if sh != sw or sh < 2 or (dh, dw) == (1, 1) or shape is None or len(shape) != 4 or None in shape \
            or out is None or None in out or x.type.layout not in (None, "NCHW"):
        return False
    if not _on_host(op):
        return False
    s = sh
    pt, pl = a["pads"][:2]  # (the end padding follows from the output size)
    kh, kw = op.operands[1].type.shape[2:]
    pool_attrs = _pick(s)
    first = not (dh % s or dw % s or pt % s or pl % s)
    if first:  # pick the rows the taps read, then convolve the smaller plane
        pool = rw.make("pool2d", [x], pool_attrs, f"{op.name}.pick", op.loc)
        hs, ws = pool.results[0].type.shape[2:]
        d2 = (dh // s, dw // s)
        bottom = out[2] - hs - pt // s + d2[0] * (kh - 1)
        right = out[3] - ws - pl // s + d2[1] * (kw - 1)
        if min(bottom, right) < 0:
            return False
        conv = rw.make("conv2d", [pool.results[0], *op.operands[1:]],
                       {**a, "strides": (1, 1), "dilations": d2, "pads": (pt // s, pl // s, bottom, right)},
                       op.name, op.loc)
        steps, last = [pool, conv], conv
    else:  # convolve at stride 1, then pick every s-th output
        conv = rw.make("conv2d", list(op.operands), {**a, "strides": (1, 1)}, f"{op.name}.dense", op.loc)
        pool = rw.make("pool2d", [conv.results[0]], pool_attrs, op.name, op.loc)
        steps, last = [conv, pool], pool
    if last.results[0].type.shape != out or any(_on_host(step) for step in steps):
        return False
    rw.insert_before(op, steps[0])
    rw.replace_op(op, steps[1])
    return True


def _strided_pick(rw: Rewriter, op) -> bool:
    """A conv at an even stride TIDL does not take for its kernel (MViTv2's attention pooling:
    depthwise 3x3 stride 4; TIDL's depthwise strides are 1 and 2) as the conv at half the
    stride, then a 1x1 stride-2 max pool that keeps every other output: the same outputs. Only
    where the output sizes agree and TIDL takes both (after the space-to-depth rule, which
    serves an ungrouped conv better)."""
    a = op.attrs
    x = op.operands[0]
    shape, out = x.type.shape, op.results[0].type.shape
    (sh, sw) = a["strides"]
    if sh != sw or sh < 4 or sh % 2 or tuple(a["dilations"]) != (1, 1) or shape is None or len(shape) != 4 \
            or None in shape or out is None or None in out or x.type.layout not in (None, "NCHW"):
        return False
    if not _on_host(op):
        return False
    half = sh // 2
    conv = rw.make("conv2d", list(op.operands), {**a, "strides": (half, half)}, f"{op.name}.half", op.loc)
    pool = rw.make("pool2d", [conv.results[0]], _pick(2), op.name, op.loc)
    if pool.results[0].type.shape != out or _on_host(conv) or _on_host(pool):
        return False
    rw.insert_before(op, conv)
    rw.replace_op(op, pool)
    return True


def _used_taps(n_in: int, n_out: int, k: int, s: int, d: int, p: int) -> tuple[int, int] | None:
    """The first and last kernel taps along one axis that read the input (not only its zero
    padding) at some output position, or None when the used taps are not one run."""
    used = [i for i in range(k) if any(0 <= y * s + i * d - p < n_in for y in range(n_out))]
    if not used or used != list(range(used[0], used[-1] + 1)):
        return None
    return used[0], used[-1]


def _on_host(op) -> bool:
    """Whether the backend's verdict puts ``op`` on the host (the rules below lower only such
    ops, and only into ops it does not)."""
    from tidlc.backends.tidl.constraints import check as verdict
    v = verdict(op)
    return v is not None and v.level == "host"


def _loose_const(data: np.ndarray, name: str):
    """A constant not yet in the graph, for a rule that may still decline after building the op
    that reads it (``rw.const`` places its constant at once): ``rw.insert_before(op,
    value.producer)`` places it when the rule goes ahead."""
    from tidlc.ir.builder import Builder
    from tidlc.ir.core import Graph
    return Builder(Graph()).const(data, name)


def _dead_taps(rw: Rewriter, op) -> bool:
    """A conv whose outer kernel taps read only zero padding, at every output position, loses
    them: the kernel is cropped to the taps that read the input (the padding shrinks with it, a
    single tap needs no dilation). DeepLabV3's ASPP at output stride 16 on a 256x256 input: 3x3
    dilation 24 and 36 on a 16x16 plane, padded as much: each is a 1x1 conv of the centre taps
    (TIDL rejects the padding, wider than the plane: two host layers and a subgraph split). Not
    where the cropped kernel is one TIDL takes less well than the original."""
    a = op.attrs
    x, w = op.operands[0], op.operands[1]
    wc = w.const_value()
    shape, out = x.type.shape, op.results[0].type.shape
    if wc is None or wc.dtype != np.float32 or shape is None or len(shape) != 4 or None in shape \
            or out is None or None in out or x.type.layout not in (None, "NCHW"):
        return False
    pads, strides, dils = list(a["pads"]), list(a["strides"]), list(a["dilations"])
    kernel, new_pads, new_dils, crops = list(wc.shape[2:]), list(pads), list(dils), []
    for axis in range(2):
        n_in, n_out, k, st, d = shape[2 + axis], out[2 + axis], kernel[axis], strides[axis], dils[axis]
        taps = _used_taps(n_in, n_out, k, st, d, pads[axis])
        if taps is None:
            return False
        first, last = taps
        k2 = last - first + 1
        d2 = d if k2 > 1 else 1
        begin = pads[axis] - first * d
        end = max(0, (n_out - 1) * st + (k2 - 1) * d2 + 1 - n_in - begin)
        if begin < 0 or (n_in + begin + end - (k2 - 1) * d2 - 1) // st + 1 != n_out:
            return False
        new_pads[axis], new_pads[axis + 2], new_dils[axis] = begin, end, d2
        crops.append(slice(first, last + 1))
    if [c.stop - c.start for c in crops] == kernel:
        return False
    from tidlc.backends.tidl.constraints import check as verdict
    w2 = _loose_const(np.ascontiguousarray(wc[:, :, crops[0], crops[1]]), f"{op.name}.w")
    attrs_ = {**a, "pads": tuple(new_pads), "dilations": tuple(new_dils)}
    new = rw.make("conv2d", [x, w2, *op.operands[2:]], attrs_, op.name, op.loc)
    rank = {"host": 2, "penalty": 1}
    before, after = verdict(op), verdict(new)
    if rank.get(getattr(after, "level", None), 0) > rank.get(getattr(before, "level", None), 0):
        return False  # SSDLite's 3x3 stride-2 depthwise on a 2x2 plane would become a 2x2 one: kept
    rw.insert_before(op, w2.producer)
    rw.replace_op(op, new)
    return True


def _fitting_kernel(table: dict, stride: int, kh: int, kw: int, larger: bool = False) -> tuple[int, int] | None:
    """The smallest kernel of a validated table, at this stride, that holds a kh x kw one
    (``larger``: other than kh x kw itself)."""
    fits = sorted((k2h * k2w, k2h, k2w) for (k2h, k2w), strides in table.items()
                  if stride in strides and k2h >= kh and k2w >= kw and not (larger and (k2h, k2w) == (kh, kw)))
    return (fits[0][1], fits[0][2]) if fits else None


def _padded_kernel(rw: Rewriter, op) -> bool:
    """A conv whose kernel TIDL does not take at its stride, inside a larger one it does: the
    kernel is zero-padded to it and the input padding grows by as many taps (times the dilation),
    the same sums plus zeros. PP-OCRv6's recognizer mixes its tokens with a 1x7 depthwise conv,
    which TIDL's depthwise set lacks (1x1, 1x3, 3x3, 5x5, 7x7): as a 7x7 one it stays on the
    accelerator, where it was a host layer between two subgraphs. The smallest such kernel wins;
    only where the backend's verdict improves."""
    from tidlc.backends.tidl.constraints import CONV_VALIDATED, DEPTHWISE_VALIDATED
    a = op.attrs
    x, w = op.operands[0], op.operands[1]
    wc = w.const_value()
    shape = x.type.shape
    if wc is None or wc.dtype != np.float32 or shape is None or len(shape) != 4 or None in shape \
            or x.type.layout not in (None, "NCHW") or a["strides"][0] != a["strides"][1]:
        return False
    if not _on_host(op):
        return False
    cout, cin_g, kh, kw = wc.shape
    depthwise = a["groups"] > 1 and a["groups"] == shape[1] == cout
    table = DEPTHWISE_VALIDATED if depthwise else CONV_VALIDATED
    fit = _fitting_kernel(table, a["strides"][0], kh, kw, larger=True)
    if fit is None:
        return False
    k2h, k2w = fit
    pt, pl, pb, pr = a["pads"]
    dh, dw = a["dilations"]
    top, left = (k2h - kh) // 2, (k2w - kw) // 2  # (the extra taps split evenly, the odd one below/right)
    w2 = np.zeros((cout, cin_g, k2h, k2w), np.float32)
    w2[:, :, top:top + kh, left:left + kw] = wc
    pads = (pt + top * dh, pl + left * dw, pb + (k2h - kh - top) * dh, pr + (k2w - kw - left) * dw)
    w2v = _loose_const(w2, f"{op.name}.w")
    new = rw.make("conv2d", [x, w2v, *op.operands[2:]], {**a, "pads": pads}, op.name, op.loc)
    if new.results[0].type.shape != op.results[0].type.shape or _on_host(new):
        return False
    rw.insert_before(op, w2v.producer)
    rw.replace_op(op, new)
    return True


_BAND_MAX = 31  # taps: SegNeXt's MSCA strips are 1x21 and 21x1 (10 three-tap convs each)


def _band_split(rw: Rewriter, op) -> bool:
    """A stride-1 depthwise band conv longer than any TIDL kernel (InceptionNeXt's 1x11 and 11x1
    token mixers, 1x9 at timm's atto size; TIDL's depthwise set ends at 7x7) as a sum of 3-tap
    depthwise convs along the band: the centre taps ``c-1, c, c+1``, then each pair ``c-j, c+j``
    as ``[w, 0, w]`` dilated ``j`` times, each padded by what its first tap leaves of the
    original padding, added up (the bias in the first). The same products, summed in another
    order; each piece is a TIDL kernel (a 3x1 one after _padded_kernel). Only for an odd band
    whose padding reaches every piece's first tap (a "same" conv), at most :data:`_BAND_MAX` long."""
    a = op.attrs
    x, w = op.operands[0], op.operands[1]
    wc = w.const_value()
    shape = x.type.shape
    if wc is None or wc.dtype != np.float32 or shape is None or len(shape) != 4 or None in shape \
            or x.type.layout not in (None, "NCHW") or tuple(a["strides"]) != (1, 1) or a.get("act", "none") != "none":
        return False
    cout, cin_g, kh, kw = wc.shape
    if not (a["groups"] == shape[1] == cout and cin_g == 1) or min(kh, kw) != 1 or not 7 < max(kh, kw) <= _BAND_MAX \
            or max(kh, kw) % 2 == 0:
        return False
    if not _on_host(op):
        return False
    axis = 0 if kh > 1 else 1  # (0: a Kx1 band along H; 1: a 1xK band along W)
    k, d = max(kh, kw), a["dilations"][axis]
    c = (k - 1) // 2
    pads = list(a["pads"])
    lead, trail = pads[axis], pads[axis + 2]
    if min(lead, trail) < (c - 1) * d:
        return False
    taps = wc.reshape(cout, 1, k)
    pieces = []
    for j in range(1, c + 1):
        piece = np.zeros((cout, 1, 3), np.float32)
        piece[:, :, 0], piece[:, :, 2] = taps[:, :, c - j], taps[:, :, c + j]
        if j == 1:
            piece[:, :, 1] = taps[:, :, c]
        dil = [1, 1]
        dil[axis] = j * d
        p = list(pads)
        p[axis], p[axis + 2] = lead - (c - j) * d, trail - (c - j) * d
        kernel = piece.reshape(cout, 1, 3, 1) if axis == 0 else piece.reshape(cout, 1, 1, 3)
        operands = [x, rw.const(kernel, f"{op.name}.band{j}.w", anchor=op)]
        if j == 1 and len(op.operands) > 2 and op.operands[2] is not None:
            operands.append(op.operands[2])
        # (each piece spans 2 j d of the padded input and is padded 2 (c - j) d less: the output's size)
        pieces.append(rw.make("conv2d", operands, {**a, "pads": tuple(p), "dilations": tuple(dil)},
                              f"{op.name}.band{j}", op.loc))
    _replace_by_sum(rw, op, pieces)
    return True


def _replace_by_sum(rw: Rewriter, op, pieces: list, loose_weights: bool = False) -> None:
    """``op`` becomes the sum of the results of ``pieces`` (two or more ops, not yet placed): each
    placed before it, followed by the add that takes it in, the last add taking its name (one
    partial sum live at a time). ``loose_weights``: each piece's weight constant is placed too."""
    total = None
    for i, piece in enumerate(pieces):
        if loose_weights:
            rw.insert_before(op, piece.operands[1].producer)
        rw.insert_before(op, piece)
        if total is None:
            total = piece.results[0]
        elif i == len(pieces) - 1:
            rw.replace_op(op, rw.make("add", [total, piece.results[0]], {}, op.name, op.loc))
        else:
            add = rw.make("add", [total, piece.results[0]], {}, f"{op.name}.sum{i}", op.loc)
            rw.insert_before(op, add)
            total = add.results[0]


def _halves(k: int, lead: int, trail: int) -> list[tuple[int, int, int]] | None:
    """A kernel axis of ``k`` taps, padded ``lead`` and ``trail`` taps, cut in two pieces:
    (first tap, last tap + 1, first tap the piece owns). The first piece ends where the trailing
    padding still reaches its last tap, the second starts where the leading padding reaches its
    first; they overlap on the taps between, which the second does not own (zeros there). None
    when they would leave a gap. "Same" padding cuts at the centre tap: 9 taps are 5 + 5."""
    end, start = k - trail, lead
    if start > end:
        return None
    return [(0, end, 0), (start, k, end)]


def _kernel_split(rw: Rewriter, op) -> bool:
    """A conv whose kernel is larger than any TIDL takes at its stride (MixNet's and EdgeNeXt's
    9x9 and 11x11 depthwise mixers, stride 1 and 2; TIDL's kernels end at 7x7) as a sum of
    convs of its pieces: each long axis (up to 13) is cut in two pieces that overlap where
    both paddings reach (:func:`_halves`; at the centre tap for a "same" padding, and 0-4 and
    3-8 for TF's SAME padding 3 before and 4 after a 9x9 stride-2 kernel), every piece
    zero-padded to the smallest validated kernel that holds it and padded by what its first tap
    leaves of the original padding, added up (the bias in the first). The same products, summed
    in another order: a "same" 9x9 kernel is four 5x5 convs, 13x13 four 7x7 ones. Not for a
    fused activation; only where every piece is a kernel TIDL takes."""
    from tidlc.backends.tidl.constraints import CONV_VALIDATED, DEPTHWISE_VALIDATED
    a = op.attrs
    x, w = op.operands[0], op.operands[1]
    wc = w.const_value()
    shape = x.type.shape
    if wc is None or wc.dtype != np.float32 or shape is None or len(shape) != 4 or None in shape \
            or x.type.layout not in (None, "NCHW") or a["strides"][0] != a["strides"][1] \
            or a.get("act", "none") != "none":
        return False
    cout, cin_g, kh, kw = wc.shape
    depthwise = a["groups"] > 1 and a["groups"] == shape[1] == cout
    table = DEPTHWISE_VALIDATED if depthwise else CONV_VALIDATED
    stride = a["strides"][0]
    longest = max((max(k) for k, strides in table.items() if stride in strides), default=0)
    if max(kh, kw) <= longest or max(kh, kw) > 13:
        return False
    if not _on_host(op):
        return False
    pads, dils = a["pads"], a["dilations"]
    cuts = []  # per axis: the pieces, each (first, end, owned from)
    for axis, k in enumerate((kh, kw)):
        if k <= longest:
            cuts.append([(0, k, 0)])
            continue
        halves = _halves(k, pads[axis] // dils[axis], pads[axis + 2] // dils[axis])
        if halves is None or max(end - first for first, end, _ in halves) > longest:
            # (the padding reaches too few taps, e.g. none: LPRNet's unpadded 13x1 conv on 16 rows.
            # Cut after `longest` taps; each piece then reads the input cropped where its padding
            # would be negative)
            halves = [(0, longest, 0), (longest, k, longest)]
        cuts.append(halves)
    pieces, crops = [], []
    for rows in cuts[0]:
        for cols in cuts[1]:
            h, wd = rows[1] - rows[0], cols[1] - cols[0]
            fit = _fitting_kernel(table, stride, h, wd)
            if fit is None:
                return False
            top, left = (fit[0] - h) // 2, (fit[1] - wd) // 2
            kernel = np.zeros((cout, cin_g, *fit), np.float32)
            kernel[:, :, top + rows[2] - rows[0]:top + h, left + cols[2] - cols[0]:left + wd] = \
                wc[:, :, rows[2]:rows[1], cols[2]:cols[1]]
            (dh, dw) = dils
            new_pads = (pads[0] - rows[0] * dh + top * dh, pads[1] - cols[0] * dw + left * dw,
                        pads[2] - (kh - rows[1]) * dh + (fit[0] - h - top) * dh,
                        pads[3] - (kw - cols[1]) * dw + (fit[1] - wd - left) * dw)
            wv = _loose_const(kernel, f"{op.name}.piece{len(pieces)}.w")
            crop = [max(0, -p) for p in new_pads]  # (top, left, bottom, right)
            src = x
            if any(crop):
                cut = rw.make("slice", [x], {"starts": (crop[0], crop[1]),
                                             "ends": (shape[2] - crop[2], shape[3] - crop[3]), "axes": (2, 3)},
                              f"{op.name}.piece{len(pieces)}.crop", op.loc)
                if _on_host(cut) or min(cut.results[0].type.shape[2:]) < 1:
                    return False
                crops.append(cut)
                src, new_pads = cut.results[0], tuple(max(0, p) for p in new_pads)
            operands = [src, wv]
            if not pieces and len(op.operands) > 2 and op.operands[2] is not None:
                operands.append(op.operands[2])
            conv = rw.make("conv2d", operands, {**a, "pads": new_pads}, f"{op.name}.piece{len(pieces)}", op.loc)
            if conv.results[0].type.shape != op.results[0].type.shape or _on_host(conv):
                return False
            pieces.append(conv)
    for cut in crops:
        rw.insert_before(op, cut)
    _replace_by_sum(rw, op, pieces, loose_weights=True)
    return True


# ----------------------------------------------------------------------------- batch broadcasting
def _batch_broadcast(rw: Rewriter, op) -> bool:
    """An element-wise op whose operand broadcasts over the batch axis, which TIDL's EltWise does
    not (a host layer): Swin's window attention stacks its 64 windows in the batch axis and adds
    one relative-position bias ``(1, heads, 49, 49)`` to ``(64, heads, 49, 49)``. With a leading
    axis of 1 put in front of every operand (a view), the windows are an ordinary axis that
    broadcasting may cross; the result is reshaped back."""
    from tidlc.backends.tidl.constraints import MAX_RANK
    ys = op.results[0].type.shape
    shapes = [v.type.shape for v in op.operands]
    if ys is None or len(ys) < 4 or len(ys) + 1 > MAX_RANK or None in ys or ys[0] == 1 \
            or any(sh is None or None in sh for sh in shapes):
        return False
    padded = [(1,) * (len(ys) - len(sh)) + tuple(sh) for sh in shapes]
    if all(p[0] == ys[0] for p in padded) or any(
            v.const_value() is not None and all(d == 1 for i, d in enumerate(p) if i != 1)
            for v, p in zip(op.operands, padded)):
        return False  # (a constant per channel or scalar: fuse-batchnorm makes it a scale, which TIDL runs)
    operands = []
    for v, p in zip(op.operands, padded):
        lifted = rw.make("reshape", [v], {"shape": (1, *p)}, f"{op.name}.lift{len(operands)}", op.loc)
        rw.insert_before(op, lifted)
        operands.append(lifted.results[0])
    inner = rw.make(op.kind, operands, dict(op.attrs), f"{op.name}.unbatched", op.loc)
    rw.insert_before(op, inner)
    rw.replace_op(op, rw.make("reshape", [inner.results[0]], {"shape": tuple(ys)}, op.name, op.loc))
    return True


# ----------------------------------------------------------------------------- large global pool
def _spatial_reduce(rw: Rewriter, op) -> bool:
    """A mean (max) over H and W of an NCHW tensor is a global average (max) pool: PyTorch's
    dynamo exporter writes ``AdaptiveAvgPool2d(1)`` (EfficientNet's squeeze-excite) as
    ``ReduceMean`` over axes 2 and 3, which then splits like a pool when its plane is larger than
    TIDL's global pooling takes. Without ``keepdims``, a reshape to (N, C) follows."""
    found = _nchw_reduce(op, ("mean", "max"))
    if found is None or sorted(ax % 4 for ax in op.attrs["axes"]) != [2, 3]:
        return False
    return _as_global_pool(rw, op, found[0])


def _pool_mode(reduce: str) -> dict:
    """The global_pool/pool2d mode of a mean or max reduction."""
    return {"mode": "avg" if reduce == "mean" else "max"}


def _as_global_pool(rw: Rewriter, op, x) -> bool:
    """Replace reduce ``op``, a mean (max) over the whole plane of NCHW ``x``, by its global pool:
    a reshape to ``op``'s result follows without ``keepdims``."""
    mode = _pool_mode(op.attrs["op"])
    if op.attrs["keepdims"]:
        return _replace(rw, op, "global_pool", x, mode)
    pool = rw.make("global_pool", [x], mode, f"{op.name}.pool", op.loc)
    rw.insert_before(op, pool)
    return _replace(rw, op, "reshape", pool.results[0], {"shape": tuple(op.results[0].type.shape)})


_ELEMENTWISE_BINARY = ("add", "sub", "mul", "div", "max", "min")
_REDUCE_STEP = {"sum": "add", "mean": "add", "max": "max", "min": "min"}


def _combine(rw: Rewriter, op, parts: list, reduce: str):
    """``parts`` reduced element-wise as ``reduce`` (sum, mean, max, min) by a chain of binary
    ops placed before ``op``: the value."""
    kind = _REDUCE_STEP[reduce]
    total = parts[0]
    for i, part in enumerate(parts[1:], 1):
        step = rw.make(kind, [total, part], {}, f"{op.name}.{kind}{i}", op.loc)
        rw.insert_before(op, step)
        total = step.results[0]
    if reduce == "mean":
        step = rw.make("mul", [total, rw.const(np.float32(1.0 / len(parts)), f"{op.name}.scale", anchor=op)], {},
                       f"{op.name}.mean", op.loc)
        rw.insert_before(op, step)
        total = step.results[0]
    return total


def _nchw_reduce(op, reductions: tuple[str, ...]):
    """``(x, shape, out)`` of a reduce ``op`` that is one of ``reductions`` over a static 4-D
    NCHW tensor, else None."""
    x = op.operands[0]
    shape, out = x.type.shape, op.results[0].type.shape
    if op.attrs["op"] not in reductions or shape is None or len(shape) != 4 or None in shape or out is None \
            or x.type.layout not in (None, "NCHW"):
        return None
    return x, shape, out


def _trailing_reduce(rw: Rewriter, op) -> bool:
    """A sum (max) over the trailing axes of a 4-D tensor (MobileViTv2's linear attention sums
    its context over the tokens, the last axis of 1xDxPxN) is a global pool of the tensor seen
    as N x (leading axes) x (trailing axes) x 1, at most 1024 of them: a reshape, the pool (an
    average scaled back to a sum) and a reshape to the result. A sum over H and W pools the
    plane as it is (a max or mean over them is :func:`_spatial_reduce`'s)."""
    a = op.attrs
    found = _nchw_reduce(op, ("sum", "max"))
    if found is None:
        return False
    x, shape, out = found
    from tidlc.backends.tidl.constraints import GLOBAL_POOL_MAX_PLANE
    axes = sorted(ax % 4 for ax in a["axes"])
    if not axes or axes != list(range(4 - len(axes), 4)) or axes[0] == 0:  # (no axes: all of them)
        return False
    count = int(np.prod([shape[ax] for ax in axes]))
    plane = axes == [2, 3]  # (H and W already: no reshape, and a large plane splits into pools)
    if count == 1 or (not plane and count > GLOBAL_POOL_MAX_PLANE):
        return False
    v = x
    if not plane:
        flat = rw.make("reshape", [x], {"shape": (shape[0], int(np.prod(shape[1:axes[0]])), count, 1)},
                       f"{op.name}.flat", op.loc)
        rw.insert_before(op, flat)
        v = flat.results[0]
    pool = rw.make("global_pool", [v], {"mode": "avg" if a["op"] == "sum" else "max"}, f"{op.name}.pool", op.loc)
    rw.insert_before(op, pool)
    total = pool.results[0]
    if a["op"] == "sum":
        step = rw.make("mul", [total, rw.const(np.float32(count), f"{op.name}.count", anchor=op)], {},
                       f"{op.name}.sum", op.loc)
        rw.insert_before(op, step)
        total = step.results[0]
    return _replace(rw, op, "reshape", total, {"shape": tuple(out)})


def _hw_last_reduce(rw: Rewriter, op) -> bool:
    """A mean (max) over axes 1 and 2 of a 4-D tensor (an NHWC one: MambaOut's head pools its
    1x7x7xC features in float) is a transpose to NCHW and a global pool."""
    a = op.attrs
    x = op.operands[0]
    shape, out = x.type.shape, op.results[0].type.shape
    if a["op"] not in ("mean", "max") or shape is None or len(shape) != 4 or None in shape or out is None \
            or sorted(ax % 4 for ax in a["axes"]) != [1, 2]:
        return False
    moved = rw.make("transpose", [x], {"perm": (0, 3, 1, 2)}, f"{op.name}.nchw", op.loc)
    pool = rw.make("global_pool", [moved.results[0]], {"mode": "avg" if a["op"] == "mean" else "max"},
                   f"{op.name}.pool", op.loc)
    rw.insert_before(op, moved)
    rw.insert_before(op, pool)
    return _replace(rw, op, "reshape", pool.results[0], {"shape": tuple(out)})


def _channel_reduce(rw: Rewriter, op) -> bool:
    """A sum or mean over the channels of an NCHW tensor, or the sum of its product with a constant
    per channel (YOLOv8's DFL as its head is often written: ``(softmax(box, 1) * arange(16)).sum(1)``),
    -> a 1x1 conv to one channel with those weights (1, 1/C, the constant): TIDL has no integer
    Reduce sum, so it was a float layer between data converts. Without ``keepdims``, a reshape
    follows."""
    a = op.attrs
    found = _nchw_reduce(op, ("sum", "mean"))
    if found is None or sorted(ax % 4 for ax in a["axes"]) != [1]:
        return False
    x, shape, out = found
    c = shape[1]
    w = np.full(c, 1.0 if a["op"] == "sum" else 1.0 / c)
    mul = x.producer
    if mul is not None and mul.kind == "mul" and mul.attrs.get("act", "none") == "none" \
            and rw.single_user(x) is op:
        for i in (0, 1):
            k, other = mul.operands[i].const_value(), mul.operands[1 - i]
            if k is None or other.type.shape != shape or k.ndim > 4 or k.size != c:
                continue
            k4 = k.reshape((1,) * (4 - k.ndim) + k.shape)
            if k4.shape == (1, c, 1, 1):  # (one value per channel)
                w, x = w * k4.reshape(c), other
            break
    weights = rw.const(w.astype(np.float32).reshape(1, c, 1, 1), f"{op.name}.w", anchor=op)
    attrs_ = {"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "groups": 1, "act": "none",
              "act_params": ()}
    conv = rw.make("conv2d", [x, weights], attrs_, op.name if a["keepdims"] else f"{op.name}.conv", op.loc)
    if a["keepdims"]:
        rw.replace_op(op, conv)
        return True
    rw.insert_before(op, conv)
    return _replace(rw, op, "reshape", conv.results[0], {"shape": tuple(out)})


def _whole_reduce(rw: Rewriter, op) -> bool:
    """A mean or max over C, H and W of an NCHW tensor (LPRNet's ``f / torch.mean(f ** 2)`` on
    each of its four feature maps: a float layer each) is a global pool of H and W, then the
    same reduction over the channels, which :func:`_channel_reduce` makes a 1x1 conv (a max:
    TIDL's Reduce layer). With N = 1 the batch axis may be reduced too (``torch.mean(x)``)."""
    a = op.attrs
    found = _nchw_reduce(op, ("mean", "max"))
    if found is None:
        return False
    x, shape, out = found
    axes = {ax % 4 for ax in a["axes"]} or {0, 1, 2, 3}  # (none: every axis)
    if axes not in ({1, 2, 3}, {0, 1, 2, 3}) or (0 in axes and shape[0] != 1):
        return False
    pool = rw.make("global_pool", [x], _pool_mode(a["op"]), f"{op.name}.pool", op.loc)
    rw.insert_before(op, pool)
    across = rw.make("reduce", [pool.results[0]], {**a, "axes": (1,), "keepdims": True}, f"{op.name}.channels", op.loc)
    rw.insert_before(op, across)
    return _replace(rw, op, "reshape", across.results[0], {"shape": tuple(out)})


def _two_step_plane_reduce(rw: Rewriter, op) -> bool:
    """A mean (max) over H, then one over W (or W, then H) of an NCHW tensor (FocalNet's global
    context, ``x.mean(2, keepdim=True).mean(3, keepdim=True)``: two float layers) is a global
    pool, as :func:`_spatial_reduce` makes of one over both."""
    found = _nchw_reduce(op, ("mean", "max"))
    if found is None or not op.attrs["keepdims"] or len(op.attrs["axes"]) != 1:
        return False
    x = found[0]
    first = op.attrs["axes"][0] % 4
    second = rw.single_user(op.results[0])
    if first not in (2, 3) or second is None or second.kind != "reduce" or second.attrs["op"] != op.attrs["op"] \
            or [ax % 4 for ax in second.attrs["axes"]] != [5 - first]:
        return False
    return _as_global_pool(rw, second, x)


def _height_reduce(rw: Rewriter, op) -> bool:
    """A sum or mean over H alone of an NCHW tensor (LPRNet's ``torch.mean(logits, dim=2)``, its
    last layer: a float layer) is the linear map of its plane with one output row
    (:func:`_plane_dense`: a dense layer over H between transposes)."""
    a = op.attrs
    found = _nchw_reduce(op, ("sum", "mean"))
    if found is None:
        return False
    x, shape, out = found
    if [ax % 4 for ax in a["axes"]] != [2] or not _axes_fit(shape[2], shape[3], 1, shape[3]):
        return False
    h, w = shape[2:]
    rows = np.full((1, h), 1.0 if a["op"] == "sum" else 1.0 / h, np.float32)
    y = _plane_dense(rw, op, x, np.eye(w, dtype=np.float32), rows)
    return _replace(rw, op, "reshape", y, {"shape": tuple(out)})


def _channel_shuffle(rw: Rewriter, op) -> bool:
    """``reshape (N, g, C/g, H, W) -> transpose (0, 2, 1, 3, 4) -> reshape (N, C, H, W)`` of an NCHW
    tensor is ShuffleNet's channel shuffle: TIDL's ShuffleChannel layer (its import maps this ONNX
    pattern to it) instead of a 5-D transpose that TIDL runs as a data-movement layer."""
    if tuple(op.attrs["perm"]) != (0, 2, 1, 3, 4):
        return False
    split = op.operands[0].producer
    if split is None or split.kind != "reshape" or len(split.operands) != 1 \
            or rw.single_user(op.operands[0]) is not op:
        return False
    merge = rw.single_user(op.results[0])
    x = split.operands[0]
    shape = x.type.shape
    if merge is None or merge.kind != "reshape" or len(merge.operands) != 1 or shape is None \
            or len(shape) != 4 or None in shape or x.type.layout not in (None, "NCHW"):
        return False
    n, c, h, w = shape
    g = op.operands[0].type.shape[1] if op.operands[0].type.shape else None
    if not g or g in (1, c) or op.operands[0].type.shape != (n, g, c // g, h, w) \
            or merge.results[0].type.shape != tuple(shape):
        return False
    return _replace(rw, merge, "shuffle_channel", x, {"groups": int(g)})


# ops that only move values, on integer codes in an int8 TFLite model (transposes are left to
# `layout`, which moves those of the graph input into its layout)
_MOVES = ("concat", "pad", "reshape", "squeeze", "unsqueeze", "flatten", "slice", "depth_to_space",
          "shuffle_channel")


def _moves_in_float(rw: Rewriter, op) -> bool:
    """An op that only moves integer codes (concat, pad, reshape, ..., a max pool: the
    per-tensor map ``(q - zp) / s`` is increasing) -> the same op on dequantized operands, quantized
    again: an int8 TFLite model concatenates and pads its int8 tensors directly, so its quantize
    and dequantize ops met no partner, and each such op became a layer between DataConverts
    (DenseNet121 int8: 124). Then each dequantize meets a quantize: pairs the quantize pass takes
    as the tensors' ranges. The codes are the same (``(q - zp) / s`` quantizes back to ``q``)."""
    if op.kind == "pool2d" and op.attrs["mode"] != "max":
        return False
    out = op.results[0].type
    quants = [v.type.quant for v in op.operands]
    if len(op.results) != 1 or out.dtype[0] not in "iu" or out.quant is None or len(out.quant.scale) != 1 \
            or any(q is None or len(q.scale) != 1 or v.type.dtype[0] not in "iu"
                   for q, v in zip(quants, op.operands)):
        return False
    operands = []
    for i, (v, q) in enumerate(zip(op.operands, quants)):
        same = [user for user, _ in rw.users(v) if user.kind == "dequantize" and len(user.attrs["scale"]) == 1
                and user.attrs["scale"][0] == q.scale[0] and user.attrs["zero_point"] == q.zero_point]
        if same:  # the value's own dequantize (the graph input's, read by a conv too): one conversion
            operands.append(same[0].results[0])
            continue
        deq = rw.make("dequantize", [v], {"scale": q.scale, "zero_point": q.zero_point},
                      f"{op.name}.in{i}" if len(op.operands) > 1 else f"{op.name}.in", op.loc)
        rw.insert_before(op, deq)
        operands.append(deq.results[0])
    attrs_ = dict(op.attrs)
    if op.kind == "pad" and attrs_["mode"] == "constant":
        q = quants[0]
        attrs_["value"] = (attrs_["value"] - q.zero_point) / q.scale[0]
    moved = rw.make(op.kind, operands, attrs_, f"{op.name}.float", op.loc)
    rw.insert_before(op, moved)
    q = out.quant
    requant = {"scale": q.scale, "zero_point": q.zero_point, "dtype": out.dtype, "bits": q.bits,
               "round": "half_even"}
    rw.replace_op(op, rw.make("quantize", [moved.results[0]], requant, op.name, op.loc))
    return True


def _scalar_gather(rw: Rewriter, op) -> bool:
    """A gather of one constant index (``qkv[0]``, ``qkv[1]``, ``qkv[2]`` in every torchvision
    Swin and ViT block) -> a slice of that index and a reshape that drops the axis: a copy of one
    block instead of TIDL's Gather layer."""
    x, idx = op.operands
    data = idx.const_value()
    shape = x.type.shape
    if data is None or data.ndim != 0 or data.dtype.kind not in "iu" or shape is None or None in shape \
            or (_src(x).producer is not None and _src(x).producer.kind == "transpose"):
        return False  # (after a transpose, `layout` would sink it below the slices: one per slice; a QDQ
        # model's transpose has its pair between them)
    axis = op.attrs["axis"] % len(shape)
    i = int(data)
    i = i + shape[axis] if i < 0 else i
    if not 0 <= i < shape[axis]:
        return False
    part = rw.make("slice", [x], {"starts": (i,), "ends": (i + 1,), "axes": (axis,)}, f"{op.name}.slice", op.loc)
    rw.insert_before(op, part)
    return _replace(rw, op, "reshape", part.results[0], {"shape": tuple(shape[:axis]) + tuple(shape[axis + 1:])})


def _split_global_pool(rw: Rewriter, op) -> bool:
    """A global average pool over more than the 1024 elements per plane TIDL's global pooling takes
    (the squeeze-excite blocks of EfficientNet and MobileNetV3: 112x112, 56x56) is 2x2 stride-2
    average pools down to a plane that fits, then the global pool: means of equal blocks average
    to the same mean. An odd side (torchvision's LRASPP and DeepLabV3 on their 520x520 input: SE
    blocks on 65x65 and 33x33 planes) is padded with a zero row or column: those steps are 2x2
    stride-2 depthwise convs of weight 1/4 (zero padding counts, unlike an average pool's), and the
    first step's weight also undoes the zeros' share of the final mean. Otherwise the pool is a
    host layer and the whole plane crosses to the ARM and back."""
    from tidlc.backends.tidl.constraints import GLOBAL_POOL_MAX_PLANE
    x = op.operands[0]
    shape = x.type.shape
    if op.attrs["mode"] != "avg" or shape is None or len(shape) != 4 or None in shape[2:] \
            or x.type.layout not in (None, "NCHW") or x.type.dtype != "f32":
        return False
    h, w, pads = shape[2], shape[3], []
    while h * w > GLOBAL_POOL_MAX_PLANE and min(h, w) > 1:
        pads.append((h % 2, w % 2))
        h, w = (h + 1) // 2, (w + 1) // 2
    if not pads or h * w > GLOBAL_POOL_MAX_PLANE:
        return False  # fits already, or a 1-wide plane too long (constraints names it)
    # sum / 4**steps over the padded plane, averaged over h*w: the mean times (4**steps h w) / (H W)
    fix = 4 ** len(pads) * h * w / (shape[2] * shape[3])
    channels = shape[1]
    for i, (pb, pr) in enumerate(pads):
        if fix == 1.0 or (i and not (pb or pr)):
            step = rw.make("pool2d", [x], {"mode": "avg", "kernel": (2, 2), "strides": (2, 2), "pads": (0, 0, 0, 0)},
                           f"{op.name}.split{i}", op.loc)
        else:
            weight = np.full((channels, 1, 2, 2), (fix if i == 0 else 1.0) / 4, np.float32)
            attrs_ = {"strides": (2, 2), "pads": (0, 0, pb, pr), "dilations": (1, 1), "groups": channels,
                      "act": "none", "act_params": ()}
            step = rw.make("conv2d", [x, rw.const(weight, f"{op.name}.split{i}.w", anchor=op)], attrs_,
                           f"{op.name}.split{i}", op.loc)
        rw.insert_before(op, step)
        x = step.results[0]
    return _replace(rw, op, "global_pool", x, {"mode": "avg"})


def _resize_from_one(rw: Rewriter, op) -> bool:
    """A resize of a plane that is one pixel along every axis it enlarges (DeepLabV3's ASPP
    pooling branch: a global pool, a 1x1 conv, then bilinear to 33x33, "x33"; TIDL resizes by
    powers of two only) copies that pixel, whatever the mode and coordinates: a multiplication by
    a constant of ones in the output's size, broadcast by TIDL's EltWise."""
    x = op.operands[0]
    xs, ys = x.type.shape, op.results[0].type.shape
    if xs is None or ys is None or None in xs or None in ys or len(xs) != len(ys) or len(ys) < 3 \
            or x.type.dtype != "f32" or xs[0] != ys[0] or xs == ys \
            or any(a != b and a != 1 for a, b in zip(xs, ys)):
        return False
    ones = np.ones([1] + [b if a != b else 1 for a, b in zip(xs[1:], ys[1:])], np.float32)  # (x * ones: ys)
    rw.replace_op(op, rw.make("mul", [x, rw.const(ones, f"{op.name}.ones", anchor=op)], {}, op.name, op.loc))
    return True


def _resize_by_copies(rw: Rewriter, op) -> bool:
    """A nearest resize by a factor TIDL lacks (not a power of two), at most 24 rows and columns
    out, copies input rows and columns: along each axis it changes, a concat of one-row slices
    of the input, each as often as the resize repeats it. GhostNetV2's DFC attention pools its
    7x7 plane to 3x3 and resizes it back ("x2.33": four host layers and five subgraphs). Which
    row each output reads comes from the op's own reference on an index plane, so every
    coordinate mode gives its own answer; only where the result is one row index per output row
    and one column index per output column."""
    from tidlc.backends.tidl.constraints import MAX_IN_BUFS

    from tidlc.interp import evaluate_op
    x = op.operands[0]
    xs, ys = x.type.shape, op.results[0].type.shape
    if op.attrs["mode"] != "nearest" or xs is None or ys is None or None in xs or None in ys or len(xs) != 4 \
            or tuple(xs[:2]) != tuple(ys[:2]) or max(ys[2:]) > MAX_IN_BUFS or xs[2] * xs[3] > 1 << 20:
        return False
    if not _on_host(op):
        return False
    h, w = xs[2:]
    plane = np.arange(h * w, dtype=np.float32).reshape(1, 1, h, w)
    (picked,) = evaluate_op(op, [np.broadcast_to(plane, xs).astype(np.float32)])
    picked = picked[0, 0].astype(np.int64)
    rows, cols = picked[:, 0] // w, picked[0, :] % w
    if not np.array_equal(picked, rows[:, None] * w + cols[None, :]):
        return False
    v = x
    for axis, index in ((2, rows), (3, cols)):
        if np.array_equal(index, np.arange(xs[axis])):
            continue
        parts = {}
        for i in sorted(set(index.tolist())):
            cut = rw.make("slice", [v], {"starts": (i,), "ends": (i + 1,), "axes": (axis,)},
                          f"{op.name}.{'row' if axis == 2 else 'col'}{i}", op.loc)
            rw.insert_before(op, cut)
            parts[i] = cut.results[0]
        join = rw.make("concat", [parts[i] for i in index.tolist()], {"axis": axis},
                       f"{op.name}.{'rows' if axis == 2 else 'cols'}", op.loc)
        rw.insert_before(op, join)
        v = join.results[0]
    rw.replace_op(op, v)
    return True


def _pad_by_gathers(rw: Rewriter, op) -> bool:
    """Reflect, symmetric, edge or wrap padding (monodepth2's ``ReflectionPad2d(1)`` before every
    3x3 conv of its depth decoder, image-to-image nets' ``ReflectionPad2d(3)``, TF's SYMMETRIC
    MirrorPad) has no TIDL layer: a float layer between data_convert ops each time (10.6 ms
    predicted for monodepth2's ResNet-18 at 640x192, 9.9 ms as gathers). Along each padded axis it
    is a gather of the rows the mode names, by constant indices: TIDL's Gather layer, exact in
    fixed point too (it keeps the scale). Only non-negative pads (no crop) off the batch axis."""
    x = op.operands[0]
    xs, a = x.type.shape, op.attrs
    if a["mode"] == "constant" or xs is None:
        return False
    rank, pads = len(xs), a["pads"]
    if min(pads) < 0 or pads[0] or pads[rank]:
        return False
    axes = [axis for axis in range(1, rank) if pads[axis] or pads[axis + rank]]
    if any(xs[axis] is None for axis in axes):
        return False
    v = x
    for axis in axes:
        rows = np.pad(np.arange(xs[axis]), (pads[axis], pads[axis + rank]), mode=a["mode"])  # (the pad's own compute)
        v = _take_rows(rw, op, v, axis, rows, f"{op.name}.axis{axis}", f"{op.name}.axis{axis}.rows")
    rw.replace_op(op, v)
    return True


def _dynamic_pointwise(rw: Rewriter, op) -> bool:
    """A 1x1 conv whose weights the network computes (the dynamic mask heads of CondInst, SOLOv2
    and CondLaneNet: a controller predicts the kernels, applied to a feature map) is a host layer:
    a TIDL convolution has constant weights. It is a matrix product of the kernels (groups, Cout,
    Cin) by the map (groups, Cin, H*W), which TIDL's MatMul takes with two variable inputs; then
    the bias added, the result reshaped back."""
    x, w = op.operands[0], op.operands[1]
    xs, ws, ys, a = x.type.shape, w.type.shape, op.results[0].type.shape, op.attrs
    if w.const_value() is not None or xs is None or ws is None or ys is None or None in xs or None in ws:
        return False
    if len(xs) != 4 or xs[0] != 1 or tuple(ws[2:]) != (1, 1) or a.get("act", "none") != "none" or any(a["pads"]) \
            or tuple(a["strides"]) != (1, 1) or x.type.layout not in (None, "NCHW") or not _on_host(op):
        return False  # (a pre-quantized model's dequantized weights are constants to the backend)
    g, (cout, cin_g), (h, wd) = a["groups"], ws[:2], xs[2:]
    plane = rw.make("reshape", [x], {"shape": (g, cin_g, h * wd)}, f"{op.name}.plane", op.loc)
    kernels = rw.make("reshape", [w], {"shape": (g, cout // g, cin_g)}, f"{op.name}.kernels", op.loc)
    prod = rw.make("matmul", [kernels.results[0], plane.results[0]], {}, f"{op.name}.matmul", op.loc)
    steps = [plane, kernels, prod]
    if len(op.operands) > 2 and op.operands[2] is not None:
        bias = rw.make("reshape", [op.operands[2]], {"shape": (g, cout // g, 1)}, f"{op.name}.bias", op.loc)
        steps += [bias, rw.make("add", [prod.results[0], bias.results[0]], {}, f"{op.name}.add", op.loc)]
    for step in steps:
        rw.insert_before(op, step)
    return _replace(rw, op, "reshape", steps[-1].results[0], {"shape": tuple(ys)})


_PLANE_MATRIX_MAX = 1 << 20  # weights of one axis's matrix (rows in x rows out): a Cityscapes-size
# x8 upsampling, 256 -> 2048 columns, is 0.5M


def _axes_fit(h: int, w: int, ho: int, wo: int) -> bool:
    """Whether a separable map of an (h, w) plane to (ho, wo) has matrices of at most
    :data:`_PLANE_MATRIX_MAX` weights along each axis."""
    return h * ho <= _PLANE_MATRIX_MAX and w * wo <= _PLANE_MATRIX_MAX


def _axis_matrix(op, axis: int, attrs: dict) -> np.ndarray:
    """The (out, in) matrix by which a probe like ``op`` (its kind, with ``attrs``) maps axis
    ``axis`` (2 or 3) of C = n_in unit vectors along it, a 4-D input one long on the other
    spatial axis: the op's own reference computes it, so every mode, coordinate transform and
    border divisor keeps its meaning."""
    from tidlc.interp import evaluate_op
    from tidlc.ir.builder import Builder
    from tidlc.ir.core import Graph
    n_in = op.operands[0].type.shape[axis]
    shape = [1, n_in, 1, 1]
    shape[axis] = n_in
    eye = np.eye(n_in, dtype=np.float32).reshape(shape)
    probe = Builder(Graph()).make(op.kind, [_loose_const(eye, f"{op.name}.probe")], attrs, f"{op.name}.probe")
    (out,) = evaluate_op(probe, [eye])
    picked = out[0, :, :, 0] if axis == 2 else out[0, :, 0, :]  # [i, o] = M[o, i]
    return np.ascontiguousarray(picked.T)


def _interpolation(op, axis: int) -> np.ndarray:
    """The interpolation matrix of a 4-D resize along ``axis`` (:func:`_axis_matrix`): the probe
    resizes that axis by the op's scale (or to its size) and the one-long other axis to two (the
    copies of one sample, whatever the mode; and never an unchanged shape, which the reference
    copies whatever the scales say)."""
    a = op.attrs
    n_in, n_out = op.operands[0].type.shape[axis], op.results[0].type.shape[axis]
    scales, sizes = [1.0, 1.0, 2.0, 2.0], [1, n_in, 2, 2]
    scales[axis], sizes[axis] = a["scales"][axis], n_out
    return _axis_matrix(op, axis, {**a, "scales": tuple(scales), "sizes": tuple(sizes) if a["sizes"] else ()})


def _plane_map_candidate(op) -> bool:
    """Whether ``op`` (a resize or a pool of one 4-D NCHW float tensor) is one the dense rules
    may take: static, N and C kept, at most 1M weights in each axis's matrix (:func:`_axes_fit`),
    and TIDL does not take it as it is."""
    x = op.operands[0]
    xs, ys = x.type.shape, op.results[0].type.shape
    if xs is None or ys is None or None in xs or None in ys or len(xs) != 4 or len(ys) != 4 \
            or x.type.dtype != "f32" or tuple(xs[:2]) != tuple(ys[:2]) or x.type.layout not in (None, "NCHW") \
            or not _axes_fit(*xs[2:], *ys[2:]):
        return False
    return _on_host(op)


def _plane_dense(rw: Rewriter, anchor, x, cols: np.ndarray, rows: np.ndarray):
    """The separable linear map ``rows`` (H) x ``cols`` (W) of NCHW ``x``, placed before
    ``anchor`` (named after it): a dense layer (TIDL's InnerProduct, on the MMA) over W and,
    between two transposes, one over H; an axis whose matrix is the identity is left alone. The
    transposes cost more than the MACs: they move the plane while it is W columns wide, so the
    rows go first when the map widens it (an upsampling; Fast-SCNN's x8 to 768x1536 align_corners:
    16.7 -> 12.8 ms predicted), last when it narrows it (a pool)."""
    xs = x.type.shape
    name, loc = anchor.name, anchor.loc
    v = x

    def along_cols(v):
        if cols.shape == (xs[3], xs[3]) and np.array_equal(cols, np.eye(xs[3], dtype=np.float32)):
            return v
        step = rw.make("dense", [v, rw.const(cols, f"{name}.w_cols", anchor=anchor)], {}, f"{name}.cols", loc)
        rw.insert_before(anchor, step)
        return step.results[0]

    def along_rows(v):
        if rows.shape == (xs[2], xs[2]) and np.array_equal(rows, np.eye(xs[2], dtype=np.float32)):
            return v
        steps = [rw.make("transpose", [v], {"perm": (0, 1, 3, 2)}, f"{name}.t", loc)]
        steps.append(rw.make("dense", [steps[-1].results[0], rw.const(rows, f"{name}.w_rows", anchor=anchor)], {},
                             f"{name}.rows", loc))
        steps.append(rw.make("transpose", [steps[-1].results[0]], {"perm": (0, 1, 3, 2)}, f"{name}.back", loc))
        for step in steps:
            rw.insert_before(anchor, step)
        return steps[-1].results[0]

    if cols.shape[0] > xs[3]:
        return along_cols(along_rows(v))
    return along_rows(along_cols(v))


def _dense_along_axes(rw: Rewriter, op, cols: np.ndarray, rows: np.ndarray) -> bool:
    """Replace ``op`` by the separable linear map of its input (:func:`_plane_dense`)."""
    rw.replace_op(op, _plane_dense(rw, op, op.operands[0], cols, rows))
    return True


def _resize_as_dense(rw: Rewriter, op) -> bool:
    """A resize of H and W that TIDL does not take (bilinear with ``align_corners``: U-Nets and
    PSPNets; a factor that is no power of two: DPT's and Depth Anything's 19 -> 37 fusion at
    518x518, DeepLabV3's x1.97 at 520x520) as the linear map it is along each axis
    (:func:`_dense_along_axes`), the interpolation matrices the op's own reference applied to
    the identity (:func:`_interpolation`)."""
    if not _plane_map_candidate(op):
        return False
    if tuple(op.operands[0].type.shape) == tuple(op.results[0].type.shape):
        rw.replace_op(op, op.operands[0])  # (a copy, whatever the scales say: onnxruntime's and the reference's rule)
        return True
    return _dense_along_axes(rw, op, _interpolation(op, 3), _interpolation(op, 2))


def _pooling_matrix(op, axis: int) -> np.ndarray:
    """The matrix of an average pool along ``axis`` (:func:`_axis_matrix`): the probe pools with
    the op's window, stride, dilation and padding there and a 1x1 window on the other axis, so
    the divisor at the border (the padding counted or not, a ceil-mode window) keeps its
    meaning. The pool is that matrix along H times that along W: every window is a product of
    a row and a column range, and so is its count."""
    a = op.attrs
    i = axis - 2
    kernel, strides, dils, pads = [1, 1], [1, 1], [1, 1], [0, 0, 0, 0]
    kernel[i], strides[i], dils[i] = a["kernel"][i], a["strides"][i], a["dilations"][i]
    pads[i], pads[i + 2] = a["pads"][i], a["pads"][i + 2]
    return _axis_matrix(op, axis, {**a, "kernel": tuple(kernel), "strides": tuple(strides), "pads": tuple(pads),
                                   "dilations": tuple(dils)})


def _pool_as_dense(rw: Rewriter, op) -> bool:
    """An average pool TIDL does not take and no pool or depthwise rule lowers (DDRNet's and
    PIDNet's DAPPM: 9x9 stride 4 and 17x17 stride 8 windows, padded and counting the padding, on
    a 1/64 feature map) as the linear map it is along each axis (:func:`_dense_along_axes`):
    the pooling matrices of :func:`_pooling_matrix`."""
    if op.attrs["mode"] != "avg" or not _plane_map_candidate(op):
        return False
    out = op.results[0].type.shape
    cols, rows = _pooling_matrix(op, 3), _pooling_matrix(op, 2)
    if cols.shape[0] != out[3] or rows.shape[0] != out[2]:
        return False
    return _dense_along_axes(rw, op, cols, rows)


_GATHER_CHAIN = ("transpose", "reshape", "squeeze", "unsqueeze")
_LINEAR_MOVES = _GATHER_CHAIN + ("slice", "concat")


def _zero_const(v) -> bool:
    data = v.const_value()
    return data is not None and not np.any(data)


def _linear_step(op, inside: set) -> bool:
    """Whether ``op`` computes a linear function of the region values (ids in ``inside``) it
    reads, with constants only as factors or zero fill: moves, sums, a mean, products with a
    constant, a constant-mask select of zero."""
    ins = [id(v) in inside for v in op.operands]
    if not any(ins):
        return False
    if op.kind in _LINEAR_MOVES:
        return all(ins)
    if op.kind in ("add", "sub"):
        return all(ins) and op.attrs.get("act", "none") == "none"
    if op.kind in ("mul", "div"):  # (by a constant; a divisor, not a dividend)
        factor = op.operands[ins.index(False)] if ins.count(True) == 1 else None
        return factor is not None and factor.const_value() is not None and (op.kind == "mul" or ins[0]) \
            and op.attrs.get("act", "none") == "none"
    if op.kind == "reduce":
        return op.attrs["op"] in ("sum", "mean")
    if op.kind == "where":  # where(mask, v, 0) / where(mask, 0, v) with a constant mask
        cond, a, b = op.operands
        return cond.const_value() is not None and not ins[0] and (
            (ins[1] and (ins[2] or _zero_const(b))) or (ins[2] and _zero_const(a)))
    return False


_GATHERED_REGION_MAX = 1 << 16  # ops: PSPNet's 6-bin pool of a 128x256 plane sums its windows in ~8000 gathers
# and adds


def _gathered_pool(rw: Rewriter, op) -> bool:
    """PyTorch's dynamo exporter decomposes an adaptive average pool whose output size does not
    divide its input (UperNet's and PSPNet's pyramid pooling: 3x3 and 6x6 bins of a 16x16 map;
    BEiT's segmentation head) as a ``GatherND`` of the windows (constant indices) between
    transposes, then a mean, or, for windows of two sizes, masked slices and sums divided by the
    counts. The GatherND has no converter: a host op, and 70 MB per frame across the boundary
    in UperNet-ConvNeXt. From a 4-D tensor (NCHW or NHWC) through moves to the GatherND, and from
    it through linear steps (:func:`_linear_step`) to the one value the rest of the graph reads,
    4-D with the same channels, the region is a linear map of each channel's plane. Probed with
    one unit plane per channel (its ops' own references, the GatherND's by onnx's reference
    evaluator) and found separable, it is the dense layers of :func:`_plane_dense`, checked on a
    random input before it replaces the region's result."""
    from tidlc.hostrt import fold_host_op
    from tidlc.interp import evaluate_op
    if op.attrs.get("op_type") != "GatherND" or len(op.operands) != 2 or op.operands[1].const_value() is None:
        return False
    head, v = [], op.operands[0]
    while v.producer is not None and v.producer.kind in _GATHER_CHAIN:
        head.append(v.producer)
        v = v.producer.operands[0]
    x = v
    region, inside, frontier = [op], {id(op.results[0])}, [op.results[0]]
    while frontier:  # (an op joins once all the region values it reads are in: it may be seen before)
        for user, _ in rw.users(frontier.pop()):
            if id(user.results[0]) not in inside and len(user.results) == 1 and _linear_step(user, inside):
                region.append(user)
                inside.add(id(user.results[0]))
                frontier.append(user.results[0])
    outside = [p.results[0] for p in region if rw.is_output(p.results[0])
               or any(id(u.results[0]) not in inside for u, _ in rw.users(p.results[0]))]  # (read by the rest)
    if len(outside) != 1 or len(region) > _GATHERED_REGION_MAX:
        return False
    y = outside[0]
    xs, ys = x.type.shape, y.type.shape
    if xs is None or ys is None or None in xs or None in ys or len(xs) != 4 or len(ys) != 4 or xs[0] != 1 \
            or ys[0] != 1 or x.type.dtype != "f32":
        return False
    x_nhwc = x.type.layout == "NHWC"
    c, h, w = (xs[3], xs[1], xs[2]) if x_nhwc else xs[1:]
    y_nhwc = y.type.layout == "NHWC" or (ys[1] != c and ys[3] == c)
    ho, wo = (ys[1], ys[2]) if y_nhwc else (ys[2], ys[3])
    if (ys[3] if y_nhwc else ys[1]) != c or not _axes_fit(h, w, ho, wo):
        return False
    order = {id(o): i for i, o in enumerate(rw.graph.ops)}
    if any(id(o) not in order for o in region):
        return False
    steps = head[::-1] + sorted(region, key=lambda o: order[id(o)])

    def run(data: np.ndarray) -> np.ndarray | None:
        env = {id(x): data}
        for p in steps:
            args = [env[id(v)] if id(v) in env else v.const_value() for v in p.operands]
            if any(a is None for a in args):
                return None
            if p.kind == "host":
                got = fold_host_op(p, args)
                if got is None:
                    return None
                env[id(p.results[0])] = np.asarray(got[0], np.float32)
            else:
                env[id(p.results[0])] = evaluate_op(p, args)[0]
        out = env.get(id(y))
        return None if out is None else (np.moveaxis(out, 3, 1) if y_nhwc else out)  # (as N, C, Ho, Wo)

    def responses(points: list) -> list | None:
        """The (Ho, Wo) outputs for unit inputs at ``points`` (row, column), one per channel: c per run."""
        out = []
        for start in range(0, len(points), c):
            chunk = points[start:start + c]
            probe = np.zeros((1, c, h, w), np.float32)
            for k, (i, j) in enumerate(chunk):
                probe[0, k, i, j] = 1.0
            got = run(np.moveaxis(probe, 1, 3).copy() if x_nhwc else probe)
            if got is None:
                return None
            out.extend(got[0, :len(chunk)].astype(np.float64))
        return out

    # A separable map R (Ho x H) x C (Wo x W) is known from the cross through one input position
    # (h0, w0): the unit at (r, w0) gives R[:, r] C[:, w0], the one at (h0, q) R[:, h0] C[:, q];
    # scaled by the output (i0, j0) of (h0, w0), R[i0, h0] C[j0, w0] (its largest). (h + w) / c
    # runs instead of h w / c: a 3-bin pool of PSPNet's 128x256 map at 1024x2048 is 7, not 512.
    # Random inputs then check the map, so one that is not separable is left as it was.
    h0, w0 = h // 2, w // 2
    probed = responses([(h0, w0)] + [(r, w0) for r in range(h)] + [(h0, q) for q in range(w)])
    if probed is None:
        return False
    i0, j0 = np.unravel_index(int(np.argmax(np.abs(probed[0]))), probed[0].shape)
    if probed[0][i0, j0] == 0:
        return False
    rows = np.stack([p[:, j0] for p in probed[1:1 + h]], axis=1)  # R[:, r] C[j0, w0]
    cols = np.stack([p[i0, :] for p in probed[1 + h:]], axis=1) / probed[0][i0, j0]  # C[:, q] / C[j0, w0]
    row_sum, col_sum = float(rows[0].sum()), float(cols[0].sum())
    if abs(row_sum * col_sum - 1.0) < 1e-5:  # (an average: each matrix's rows sum to 1, scaled so)
        rows, cols = rows * col_sum, cols * row_sum
    rng = np.random.default_rng(0)
    for _ in range(2):
        sample = rng.standard_normal((1, c, h, w)).astype(np.float32)
        want = run(np.moveaxis(sample, 1, 3).copy() if x_nhwc else sample)
        have = np.einsum("ih,jw,nchw->ncij", rows, cols, sample.astype(np.float64))
        if want is None or not np.allclose(want, have, rtol=1e-4, atol=1e-5 * float(np.abs(want).max() or 1)):
            return False
    anchor = y.producer
    v = x
    if x_nhwc:
        step = rw.make("transpose", [x], {"perm": (0, 3, 1, 2)}, f"{op.name}.nchw", op.loc)
        rw.insert_before(anchor, step)
        v = step.results[0]
    v = _plane_dense(rw, anchor, v, cols.astype(np.float32), rows.astype(np.float32))
    if y_nhwc:
        step = rw.make("transpose", [v], {"perm": (0, 2, 3, 1)}, f"{op.name}.nhwc", op.loc)
        rw.insert_before(anchor, step)
        v = step.results[0]
    rw.replace(y, v)
    return True


def _concat_tree(rw: Rewriter, op) -> bool:
    """A concat of more tensors than a TIDL layer reads (24 input buffers; DenseNet-121's third
    dense block joins 25) is a concat of the first 24, then of that and the rest: the same tensor."""
    from tidlc.backends.tidl.constraints import MAX_IN_BUFS
    if len(op.operands) <= MAX_IN_BUFS or op.results[0].type.shape is None:
        return False
    head = rw.make("concat", list(op.operands[:MAX_IN_BUFS]), dict(op.attrs), f"{op.name}.head", op.loc)
    rw.insert_before(op, head)
    rw.replace_op(op, rw.make("concat", [head.results[0], *op.operands[MAX_IN_BUFS:]], dict(op.attrs),
                              op.name, op.loc))
    return True


def _unstack_plan(rw: Rewriter, stacked, axis: int, n: int) -> tuple[list, set] | None:
    """The ops reading the stack and what they compute from it, and the ids of those stacked
    values, when each op is a binary element-wise one with the stack (or a value from it) and an
    operand whose ``axis`` is n or 1 long, or a reduction over ``axis`` alone that drops it;
    None otherwise."""
    plan, planned, seen, frontier = [], set(), {id(stacked)}, [stacked]
    while frontier:
        v = frontier.pop()
        if rw.is_output(v):
            return None
        for user, _ in rw.users(v):
            if id(user) in planned:
                continue
            if user.kind == "reduce":
                if tuple(user.attrs["axes"]) != (axis,) or user.attrs["keepdims"] \
                        or user.attrs["op"] not in _REDUCE_STEP:
                    return None
            elif user.kind in _ELEMENTWISE_BINARY:
                for other in user.operands:
                    if id(other) not in seen and (other.type.shape is None or len(other.type.shape) != len(v.type.shape)
                                                  or other.type.shape[axis] not in (1, n)):
                        return None
                if user.results[0].type.shape != v.type.shape:
                    return None
                seen.add(id(user.results[0]))
                frontier.append(user.results[0])
            else:
                return None
            plan.append(user)
            planned.add(id(user))
    return plan, seen


def _unstack(rw: Rewriter, op) -> bool:
    """A stack (a concat of tensors each unsqueezed on the concat axis) into a tensor of more
    than 4 dimensions that only element-wise ops and reductions over the stacked axis read: see
    :func:`_unstacked`. SKNet's selective kernel stacks its two paths (1x2xCxHxW), weights them
    with a softmax over the paths and sums them: TIDL has no 5-D concat (8 host layers and 9
    subgraphs in SKResNet-18); unstacked, it is convs, muls and adds on 4-D planes."""
    axis = op.attrs["axis"]
    out = op.results[0].type.shape
    if out is None or len(out) <= 4 or any(
            x.producer is None or x.producer.kind != "unsqueeze" or tuple(x.producer.attrs["axes"]) != (axis,)
            for x in op.operands):
        return False
    return _unstacked(rw, op, axis, lambda: [x.producer.operands[0] for x in op.operands])


def _unsplit(rw: Rewriter, op) -> bool:
    """A reshape that splits one axis into (R, C), R at most 8, whose result only element-wise
    ops and reductions over the R axis read: the R slices of its input, see :func:`_unstacked`.
    ResNeSt's split attention reshapes 1x(2C)xHxW to 1x2xCxHxW, weights it with a softmax over
    the radix and sums it: a 5-D float reduction; unsplit, muls and adds of the channel halves."""
    x = op.operands[0]
    shape, out = x.type.shape, op.results[0].type.shape
    if shape is None or out is None or None in shape or None in out or len(out) != len(shape) + 1:
        return False
    axis = next((i for i in range(len(shape)) if tuple(out[:i]) == tuple(shape[:i])
                 and tuple(out[i + 2:]) == tuple(shape[i + 1:]) and out[i] * out[i + 1] == shape[i]), None)
    if axis is None or not 1 < out[axis] <= 8:
        return False
    width = out[axis + 1]

    def slices():
        parts = []
        for i in range(out[axis]):
            cut = rw.make("slice", [x], {"starts": (i * width,), "ends": ((i + 1) * width,), "axes": (axis,)},
                          f"{op.name}.part{i}", op.loc)
            rw.insert_before(op, cut)
            parts.append(cut.results[0])
        return parts
    return _unstacked(rw, op, axis, slices)


def _unstacked(rw: Rewriter, op, axis: int, pieces_of) -> bool:
    """``op``'s result, R tensors stacked along ``axis`` (``pieces_of()`` builds them), taken
    apart: each element-wise op reading it runs once per tensor (an operand with the stacked
    axis sliced per tensor) and each reduction over the axis is a chain of adds (max, min), when
    nothing else reads it or what those ops compute from it."""
    n = op.results[0].type.shape[axis]
    found = _unstack_plan(rw, op.results[0], axis, n)
    if found is None or not any(u.kind == "reduce" for u in found[0]):
        return False
    pending, stacked = found
    pieces = {id(op.results[0]): pieces_of()}

    def part(v, i: int, anchor):
        if id(v) in pieces:
            return pieces[id(v)][i]
        k = i if v.type.shape[axis] == n else 0
        cut = rw.make("slice", [v], {"starts": (k,), "ends": (k + 1,), "axes": (axis,)},
                      f"{anchor.name}.part{i}", anchor.loc)
        rw.insert_before(anchor, cut)
        shape = tuple(d for j, d in enumerate(v.type.shape) if j != axis)
        flat = rw.make("reshape", [cut.results[0]], {"shape": shape}, f"{anchor.name}.part{i}.flat", anchor.loc)
        rw.insert_before(anchor, flat)
        return flat.results[0]

    while pending:  # each op once its stacked operands have their pieces
        user = next(u for u in pending if all(id(v) in pieces for v in u.operands if id(v) in stacked))
        pending.remove(user)
        if user.kind == "reduce":
            rw.replace(user.results[0], _combine(rw, user, pieces[id(user.operands[0])], user.attrs["op"]))
            continue
        results = []
        for i in range(n):
            operands = [part(v, i, user) for v in user.operands]
            step = rw.make(user.kind, operands, dict(user.attrs), f"{user.name}.{i}", user.loc)
            rw.insert_before(user, step)
            results.append(step.results[0])
        pieces[id(user.results[0])] = results
    return True


# ----------------------------------------------------------------------------- grouped deconv
def _phase_taps(k: int, s: int, pad: int) -> tuple[int, list[list[tuple[int, int]]]]:
    """For a stride-``s`` transposed conv (kernel ``k``, leading pad ``pad``) along one axis: the
    first input offset of a stride-1 window and, per output phase ``p`` (output ``s*m + p``), its
    taps ``(window index, kernel index)``. Output ``s*m + p`` reads input ``m + o`` through kernel
    tap ``p + pad - s*o`` wherever that lies in ``[0, k)``."""
    taps = [[(o, p + pad - s * o) for o in range(-k, k + 1) if 0 <= p + pad - s * o < k] for p in range(s)]
    first = min(o for phase in taps for o, _ in phase)
    return first, [[(o - first, t) for o, t in phase] for phase in taps]


def _grouped_deconv(rw: Rewriter, op) -> bool:
    """A grouped stride-s transposed conv whose output is exactly s times its input (JSegNet's
    bilinear 4x4 s2 upsampling, group = channels) is s*s stride-1 convs with its groups, one per
    output phase, concatenated and interleaved by ``depth_to_space`` (DCR): the same products,
    summed in another order. TIDL's Deconv2D takes group 1 only; with group = channels the phase
    convs are depthwise 3x3 s1 (a multiplier-1 depthwise, as TIDL requires), then Concat and
    DepthToSpace, all TIDL layers. An ungrouped one TIDL does not take (a stride other than 2:
    DPT's 4x4 stride-4 reassemble upsampling) is one conv computing every phase, then
    DepthToSpace."""
    a = op.attrs
    x, w = op.operands[0], op.operands[1]
    weights = w.const_value()
    xs, ys = x.type.shape, op.results[0].type.shape
    if weights is None or xs is None or ys is None or None in xs or None in ys:
        return False
    if a["groups"] == 1 and not _on_host(op):  # (TIDL's own Deconv2D where it takes it: stride 2)
        return False
    (sh, sw), (dh, dw) = a["strides"], a["dilations"]
    if x.type.layout not in (None, "NCHW") or sh != sw or sh < 2 or (dh, dw) != (1, 1):
        return False
    s, groups = sh, a["groups"]
    if (ys[2], ys[3]) != (s * xs[2], s * xs[3]) or s > 4:  # s*s phases: at most 16 concatenated
        return False
    bias = None
    if len(op.operands) > 2 and op.operands[2] is not None:
        bias = op.operands[2].const_value()
        if bias is None:
            return False
    cin, cout_g, kh, kw = weights.shape
    cin_g = cin // groups
    top, rows = _phase_taps(kh, s, a["pads"][0])
    left, cols = _phase_taps(kw, s, a["pads"][1])
    wh = max(i for phase in rows for i, _ in phase) + 1
    ww = max(j for phase in cols for j, _ in phase) + 1
    if wh > 7 or ww > 7:
        return False  # a wider window than any conv TIDL validates
    attrs = {"strides": (1, 1), "pads": (-top, -left, wh - 1 + top, ww - 1 + left), "dilations": (1, 1),
             "groups": groups, "act": a["act"], "act_params": a["act_params"]}
    kernels = []
    for py in range(s):
        for px in range(s):
            conv_w = np.zeros((groups * cout_g, cin_g, wh, ww), np.float32)
            for g in range(groups):
                block = weights[g * cin_g:(g + 1) * cin_g]  # (cin_g, cout_g, kh, kw)
                for i, ky in rows[py]:
                    for j, kx in cols[px]:
                        conv_w[g * cout_g:(g + 1) * cout_g, :, i, j] = block[:, :, ky, kx].T
            kernels.append((f"{op.name}.phase{py}{px}", conv_w))
    if groups == 1:  # one conv computes every phase (DPT's 4x4 stride-4 reassemble upsampling: a 1x1 conv)
        kernels = [(f"{op.name}.phases", np.concatenate([k for _, k in kernels]))]
    phases = []
    for name, conv_w in kernels:
        operands = [x, rw.const(conv_w, f"{name}.w", anchor=op)]
        if bias is not None:
            b = np.asarray(bias, np.float32)
            operands.append(rw.const(np.tile(b, conv_w.shape[0] // b.size), f"{name}.b", anchor=op))
        conv = rw.make("conv2d", operands, attrs, name, op.loc)
        rw.insert_before(op, conv)
        phases.append(conv.results[0])
    joined = phases[0]
    if len(phases) > 1:
        concat = rw.make("concat", phases, {"axis": 1}, f"{op.name}.phases", op.loc)
        rw.insert_before(op, concat)
        joined = concat.results[0]
    rw.replace_op(op, rw.make("depth_to_space", [joined], {"block": s, "mode": "DCR"}, op.name, op.loc))
    return True


def _argmax_keepdims(rw: Rewriter, op) -> bool:
    """An argmax without ``keepdims`` (PyTorch's ``logits.argmax(1)``, how a segmentation net ends)
    -> the argmax that keeps the reduced axis, which TIDL's ArgMax is, and a reshape (a view) to
    the shape without it. Only where TIDL then runs it (along the channel axis)."""
    from tidlc.backends.tidl.constraints import check as verdict
    a = op.attrs
    out = op.results[0].type.shape
    if a["keepdims"] or out is None or None in out:
        return False
    kept = rw.make("argmax", [op.operands[0]], {**a, "keepdims": True}, f"{op.name}.keepdims", op.loc)
    if verdict(kept) is not None:
        return False  # (another axis: the host runs it either way)
    rw.insert_before(op, kept)
    return _replace(rw, op, "reshape", kept.results[0], {"shape": tuple(out)})


PATTERN_RULES = [
    ("mul", _hardswish), ("div", _hardswish),
    ("mul", _hardsigmoid_div), ("div", _hardsigmoid_div),
    ("clip", _hardsigmoid_clip),
    ("erf", _gelu),
    ("div", _layernorm), ("add", _layernorm_moments),
    ("conv2d", _pad_into_window), ("pool2d", _pad_into_window), ("conv2d", _strided_conv),
    ("conv2d", _dead_taps), ("conv2d", _padded_kernel), ("conv2d", _band_split), ("conv2d", _kernel_split), ("conv2d", _strided_dilation), ("conv2d", _strided_pick),
    ("pool2d", _whole_plane_pool), ("pool2d", _chained_pool), ("pool2d", _avg_pool_as_depthwise), ("pool2d", _row_pool), ("pool2d", _pool_as_dense),
    ("reduce", _spatial_reduce), ("reduce", _channel_reduce),
    ("reduce", _trailing_reduce), ("reduce", _hw_last_reduce), ("reduce", _whole_reduce), ("reduce", _two_step_plane_reduce), ("reduce", _height_reduce), ("global_pool", _split_global_pool), ("transpose", _channel_shuffle),
    *[(kind, _moves_in_float) for kind in (*_MOVES, "pool2d")], ("gather", _scalar_gather),
    *((kind, _batch_broadcast) for kind in _ELEMENTWISE_BINARY),
    ("deconv2d", _grouped_deconv), ("argmax", _argmax_keepdims), ("host", _gathered_pool), ("resize", _resize_from_one), ("resize", _resize_by_copies), ("resize", _resize_as_dense),
    ("pad", _pad_by_gathers), ("conv2d", _dynamic_pointwise), ("pool2d", _strided_rows),
    ("concat", _concat_tree), ("concat", _unstack), ("reshape", _unsplit),
]

FusePatterns = rule_pass("fuse-patterns", PATTERN_RULES, opt_level=2, order=42, also_at=((2, 35),), prune=True,
                         summary="rebuild hardswish, hardsigmoid, gelu, layernorm, conv padding and global pools "
                                 "from their decompositions; grouped deconvs as conv + depth_to_space, average "
                                 "pools TIDL does not take as depthwise convs; "
                                 "large global pools split to TIDL's plane limit")


@hookimpl
def tidlc_passes():
    return [FusePatterns]
