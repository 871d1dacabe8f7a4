"""Fusions TIDL performs at import.

``fuse-batchnorm`` (rules in order):

* ``matmul`` by a constant 2-D f32 matrix -> ``dense`` (its transpose as the weights);
* ``batchnorm`` with constant statistics -> ``scale`` (per-channel affine);
* ``mul``/``add`` (either operand order), ``sub``/``div`` (constant second) of a
  per-channel (or scalar) float constant on a 4-D or 2-D tensor -> ``scale``; on the
  last axis of a ``dense`` result of any rank (a Linear's bias on tokens) -> ``scale``
  on that axis, which then folds into the dense; through a reshape that only splits the
  dense's last axis (Keras' EinsumDense ``abc,cde->abde`` + a ``(d, e)`` bias) -> the
  dense's bias;
* ``scale`` of a single-reader ``scale`` -> one ``scale``;
* ``scale`` after a single-reader ``conv2d``/``deconv2d``/``dense`` without a fused
  activation and with f32 weights -> folded into the weights and bias;
* else a ``scale`` whose one reader is a ``conv2d`` (unpadded, or a zero shift) or ``dense``
  -> folded into that reader's weights and bias (an affine after an activation).

``fuse-activation``: an activation (an op declaring
``Trait.FUSABLE_ACTIVATION``) whose input comes from a single-reader op
that can carry a fused activation (conv2d, deconv2d, dense, scale, add, ...)
and has none yet, is not a graph output and has f32 results -> the
producer's ``act``. ``clip(0, 6)`` becomes ``relu6`` and ``clip(0, inf)``
``relu`` (also when it stays a separate op); hardswish is kept separate
(TIDL has no fused hardswish); also through a pre-quantized model's
quantize/dequantize pair between the producer and the activation (the pair
goes). A ``prelu`` with constant slopes after a
single-reader conv2d or dense becomes its ``act = prelu`` (the slopes as
``act_params``; TIDL's actType 2); slopes that broadcast along the channel
axis only ((1, C, 1, 1), (C, 1, 1)) are made 1-D first.
"""
from __future__ import annotations

import numpy as np
from tidlc.plugins.layout import permuted_dequantized

from tidlc.hookspecs import hookimpl
from tidlc.ir.opdef import Trait
from tidlc.ir.ops.elementwise import act_params_of
from tidlc.ir.ops.nn import channel_slopes
from tidlc.ir.ops.quant import const_or_dequantized, fake_quantized_source
from tidlc.passes.rewrite import Rewriter, rule_pass


def _const(v) -> np.ndarray | None:
    return v.const_value()


def batchnorm_affine(op) -> tuple[np.ndarray, np.ndarray] | None:
    """``batchnorm(x) = x * scale + bias`` per channel: (scale, bias) as f32 vectors, or None
    when a statistic is not constant (TIDL's foldBnInConv2D arithmetic, in float64)."""
    params = [_const(v) for v in op.operands[1:]]
    if any(p is None for p in params):
        return None
    gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
    s = gamma / np.sqrt(var + op.attrs["epsilon"])
    b = beta - mean * s
    return s.astype(np.float32), b.astype(np.float32)


def _bn_to_scale(rw: Rewriter, op) -> bool:
    affine = batchnorm_affine(op)
    if affine is None:
        return False
    sv = rw.const(affine[0], f"{op.name}.scale", anchor=op)
    bv = rw.const(affine[1], f"{op.name}.bias", anchor=op)
    rw.replace_op(op, rw.make("scale", [op.operands[0], sv, bv], {}, op.name, op.loc))
    return True


def _per_channel(x_type, c: np.ndarray) -> np.ndarray | None:
    """The per-channel vector if constant ``c`` broadcasts along axis 1 of ``x`` only."""
    shape = x_type.shape
    if shape is None or len(shape) not in (2, 4) or shape[1] is None:
        return None
    channels = shape[1]
    if c.size == 1 and c.ndim <= len(shape):
        return np.full(channels, c.reshape(()), dtype=np.float32)
    cs = (1,) * (len(shape) - c.ndim) + tuple(c.shape)
    if len(cs) != len(shape) or cs[1] != channels or any(d != 1 for i, d in enumerate(cs) if i != 1):
        return None
    return c.reshape(-1).astype(np.float32)


def _arith_to_scale(rw: Rewriter, op) -> bool:
    """``x op c`` with ``c`` constant per channel (or on a dense's last axis) -> ``scale``, which
    folds into the layer before; an activation already fused into the op (TFLite's MUL with RELU:
    a pre-activation batch norm, DenseNet's) stays on the scale."""
    a, b = op.operands
    if op.kind in ("mul", "add") and _const(b) is None:
        a, b = b, a  # commutative: the constant may come first
    x, c = a, _const(b)  # x - c and x / c only: c - x is not an affine map of x
    if c is None or _const(x) is not None or x.type.dtype != "f32" or c.dtype.kind != "f":
        return False
    vec, attrs_ = _per_channel(x.type, c), {}
    if vec is None and _foldable_dense(rw, x):  # a Linear on tokens (N, T, C): MatMul + Add, C last
        vec, attrs_ = _last_axis(x.type, c), {"axis": len(x.type.shape) - 1}
    if vec is None or op.results[0].type.shape != x.type.shape:
        return False
    if op.kind == "div" and not np.all(vec):
        return False
    neutral = 1.0 if op.kind in ("mul", "div") else 0.0
    if op.attrs["act"] == "none" and not attrs_ and np.all(vec == neutral) and not rw.is_output(op.results[0]):
        rw.replace_op(op, x)  # x * 1, x + 0: Keras 3's swish is x * sigmoid(1.0 * x)
        return True
    if op.kind in ("mul", "div"):
        # x / c as x * (1 / c): may differ from the division in the last bit
        vec = vec if op.kind == "mul" else (1.0 / vec.astype(np.float64)).astype(np.float32)
        operands = [x, rw.const(vec, f"{op.name}.scale", anchor=op)]
    else:
        vec = vec if op.kind == "add" else -vec
        operands = [x, rw.const(np.ones_like(vec), f"{op.name}.scale", anchor=op),
                    rw.const(vec, f"{op.name}.bias", anchor=op)]
    if op.attrs["act"] != "none":
        attrs_.update(act=op.attrs["act"], act_params=op.attrs["act_params"])
    rw.replace_op(op, rw.make("scale", operands, attrs_, op.name, op.loc))
    return True


def _div_to_mul(rw: Rewriter, op) -> bool:
    """``x / c``, ``c`` a constant that is no per-channel scale (YOLOv8's box decoding: a scalar on
    a (1, 2, 8400) tensor) -> ``x * (1 / c)``: TIDL's EltWise multiplies and does not divide, and a
    div has no fixed-point kernel (it was a float island between two DataConverts). May differ
    from the division in the last bit."""
    x, c = op.operands[0], _const(op.operands[1])
    if c is None or _const(x) is not None or x.type.dtype != "f32" or c.dtype.kind != "f" \
            or not np.all(np.isfinite(c)) or not np.all(c):
        return False
    inv = (1.0 / c.astype(np.float64)).astype(np.float32)
    rw.replace_op(op, rw.make("mul", [x, rw.const(inv, f"{op.name}.reciprocal", anchor=op)], dict(op.attrs),
                              op.name, op.loc))
    return True


def _foldable_dense(rw: Rewriter, x) -> bool:
    """Whether ``x`` is the result of a single-reader ``dense`` with f32 weights and no activation
    (a scale on its last axis then folds into it)."""
    prod = x.producer
    if prod is None or prod.kind != "dense" or prod.attrs["act"] != "none" or rw.single_user(x) is None:
        return False
    w = _const(prod.operands[1])
    return w is not None and w.dtype == np.float32


def _last_axis(x_type, c: np.ndarray) -> np.ndarray | None:
    """The vector if constant ``c`` broadcasts along the last axis of ``x`` only (rank >= 2)."""
    shape = x_type.shape
    if shape is None or len(shape) < 2 or shape[-1] is None or c.ndim > len(shape):
        return None
    if c.size == 1:
        return np.full(shape[-1], c.reshape(()), dtype=np.float32)
    if c.shape[-1] != shape[-1] or c.size != shape[-1]:
        return None
    return c.reshape(-1).astype(np.float32)


def _matmul_to_dense(rw: Rewriter, op) -> bool:
    """``matmul(x, W)`` with a constant 2-D f32 ``W`` and ``x`` of known rank >= 2 -> ``dense(x, W.T)``
    (TIDL's InnerProduct). The ONNX importer does this when it knows the rank; a ViT exported by
    PyTorch's TorchScript exporter learns it only when the class token's shape is folded. A QDQ
    model's int8 ``W`` (behind its dequantize, or transposed after it: a Gemm with ``transB``)
    keeps its codes."""
    x, w = op.operands
    if _const(x) is not None or x.type.rank is None or x.type.rank < 2:
        return False
    wc = _const(w)
    t = w.producer
    if wc is None and t is not None and t.kind == "transpose" and tuple(t.attrs["perm"]) == (1, 0) \
            and t.operands[0].producer is not None and t.operands[0].producer.kind == "dequantize" \
            and const_or_dequantized(t.operands[0]) is not None:
        wt = t.operands[0]  # a QDQ Gemm (transB = 1): the dequantized codes are already (out, in)
    elif wc is None:  # a QDQ model's int8 weight (onnxruntime's quantize_static): its codes transposed
        wt = permuted_dequantized(rw, op, w, 2, (1, 0)) if w.type.rank == 2 else None
        if wt is None:
            return False
    elif wc.ndim != 2 or wc.dtype != np.float32:
        return False
    else:
        wt = rw.const(np.ascontiguousarray(wc.T), w.producer.name or f"{op.name}.w", anchor=op)
    rw.replace_op(op, rw.make("dense", [x, wt], {}, op.name, op.loc))
    return True


def _dense_between_reshapes(rw: Rewriter, op) -> bool:
    """``reshape(dense(reshape(x)))`` where the first reshape only merges the leading axes of ``x``
    and the second restores them -> ``dense(x)`` (a dense works on the last axis of any rank): a
    frozen graph's Dense on a 4-D or token tensor (``Tensordot``: reshape to 2-D, MatMul, reshape
    back), which TFLite's converter already writes as one FULLY_CONNECTED."""
    x = op.operands[0]
    first = x.producer
    if first is None or first.kind != "reshape" or len(first.operands) != 1 or rw.single_user(x) is not op:
        return False
    after = rw.single_user(op.results[0])
    if after is None or after.kind != "reshape" or len(after.operands) != 1:
        return False
    src, mid, out = first.operands[0].type.shape, x.type.shape, after.results[0].type.shape
    if src is None or mid is None or out is None or None in src or None in out or len(src) < 2 \
            or src[-1] != mid[-1] or tuple(out) != (*src[:-1], op.results[0].type.shape[-1]):
        return False
    rw.replace_op(after, rw.make("dense", [first.operands[0], *op.operands[1:]], dict(op.attrs), op.name, op.loc))
    return True


def _pair_before(rw: Rewriter, v, reader):
    """``(y, its quantize)`` when ``v`` is ``dequantize(quantize(y))`` (a pre-quantized model's fake
    quantization of ``y``), the dequantize read by ``reader`` alone and the quantize by the
    dequantize alone, else None."""
    deq = v.producer
    if deq is None or deq.kind != "dequantize" or rw.single_user(v) is not reader:
        return None
    q = deq.operands[0].producer
    if q is None or q.kind != "quantize" or rw.single_user(deq.operands[0]) is not deq:
        return None
    return q.operands[0], q


def _bias_through_qdq(rw: Rewriter, op) -> bool:
    """``add(dequantize(quantize(dense(x))), b)``, ``b`` constant along the last axis -> the dense
    with ``b`` in its bias: a QDQ model (onnxruntime's ``quantize_static`` on a Linear exported as
    MatMul + Add) fake-quantizes the product before its bias; TIDL's InnerProduct adds the bias in
    its accumulator, and so does tidlc once the pair between them is gone. Also without the pair,
    the dense's weight dequantized (a QDQ Gemm, imported as MatMul + Add)."""
    if op.attrs["act"] != "none":
        return False
    for a, b in (op.operands, op.operands[::-1]):
        deq = a.producer
        if deq is not None and deq.kind == "dense" and _const(deq.operands[1]) is None:
            y, q = a, op  # no pair between them (a QDQ Gemm: its product is not fake-quantized)
        else:
            pair = _pair_before(rw, a, op)
            if pair is None:
                continue
            y, q = pair
        dense = y.producer
        if dense is None or dense.kind != "dense" or dense.attrs["act"] != "none" or rw.single_user(y) is not q:
            continue
        c = const_or_dequantized(b)
        vec = None if c is None or c.dtype.kind != "f" or y.type.shape is None else _last_axis(y.type, c)
        if vec is None or op.results[0].type.shape != y.type.shape:
            continue
        old_b = const_or_dequantized(dense.operands[2]) if len(dense.operands) > 2 else np.zeros(vec.size, np.float32)
        if old_b is None:
            continue
        bias = (old_b.reshape(-1).astype(np.float64) + vec.astype(np.float64)).astype(np.float32)
        bv = rw.const(bias, f"{dense.name}.b", anchor=dense)
        new = rw.make("dense", [dense.operands[0], dense.operands[1], bv], dict(dense.attrs), dense.name, dense.loc)
        rw.replace_op(dense, new)
        rw.replace_op(op, new.results[0])
        return True
    return False


def _bias_through_reshape(rw: Rewriter, op) -> bool:
    """``add(reshape(dense(x)), c)`` where the reshape keeps the dense result's last axis whole
    (regrouping the leading axes, splitting the last one) and ``c`` is constant over the axes it
    became -> the dense's bias takes ``c``: Keras' EinsumDense (``abc,cde->abde`` then a bias of
    shape ``(d, e)``: MultiHeadAttention's projections) and Dense on tokens in a frozen graph
    (``Tensordot``: reshape to 2-D, MatMul, reshape back, BiasAdd). ``mul`` likewise scales the
    dense's weight rows and bias: ConvNeXt's layer scale (``gamma * Dense(x)``) in a frozen graph."""
    if op.kind not in ("add", "mul") or op.attrs["act"] != "none":
        return False
    for r, other in (op.operands, op.operands[::-1]):
        c = _const(other)
        shaper = r.producer
        if c is None or c.dtype.kind != "f" or shaper is None or shaper.kind != "reshape" \
                or len(shaper.operands) != 1 or rw.single_user(r) is not op:
            continue
        dense = shaper.operands[0].producer
        if dense is None or dense.kind != "dense" or not _foldable_dense(rw, shaper.operands[0]) \
                or rw.single_user(shaper.operands[0]) is not shaper:
            continue
        src, dst = dense.results[0].type.shape, r.type.shape
        if src is None or dst is None or None in src or None in dst or op.results[0].type.shape != dst:
            continue
        n, lead = src[-1], len(dst)  # the dst axes the dense's last axis became: the shortest tail of n
        while lead > 0 and int(np.prod(dst[lead:])) < n:
            lead -= 1
        if int(np.prod(dst[lead:])) != n or int(np.prod(dst[:lead])) != int(np.prod(src[:-1])):
            continue
        tail = tuple(dst[lead:])
        extra = c.ndim - len(tail)
        if (extra > 0 and any(d != 1 for d in c.shape[:extra])) or c.size not in (1, n):
            continue
        try:
            add = np.broadcast_to(c.reshape(c.shape[max(extra, 0):]), tail).reshape(n).astype(np.float64)
        except ValueError:
            continue
        old_b = _const(dense.operands[2]) if len(dense.operands) > 2 else np.zeros(n, np.float32)
        old_w = _const(dense.operands[1])
        if old_b is None or old_w is None:
            continue
        old_b = old_b.reshape(-1).astype(np.float64)
        wv = dense.operands[1]
        if op.kind == "mul":
            wv = rw.const((old_w.astype(np.float64) * add[:, None]).astype(np.float32), f"{dense.name}.w",
                          anchor=dense)
        bv = rw.const((old_b * add if op.kind == "mul" else old_b + add).astype(np.float32), f"{dense.name}.b",
                      anchor=dense)
        new = rw.make("dense", [dense.operands[0], wv, bv], dict(dense.attrs), dense.name, dense.loc)
        rw.replace_op(dense, new)
        rw.replace_op(op, r)
        return True
    return False


def _scale_parts(op):
    s = _const(op.operands[1])
    b = _const(op.operands[2]) if len(op.operands) > 2 else None
    if s is None or (len(op.operands) > 2 and b is None):
        return None
    n = max(s.size, 1 if b is None else b.size)
    s = np.broadcast_to(s.reshape(-1), (n,)).astype(np.float64) if s.size in (1, n) else None
    if s is None:
        return None
    b = np.zeros(n) if b is None else np.broadcast_to(b.reshape(-1), (n,)).astype(np.float64)
    return s, b


def _merge_scales(rw: Rewriter, op) -> bool:
    inner = op.operands[0].producer
    if inner is None or inner.kind != "scale" or inner.attrs["act"] != "none" or op.attrs["axis"] != inner.attrs["axis"]:
        return False
    if rw.single_user(inner.results[0]) is not op:
        return False
    outer_p, inner_p = _scale_parts(op), _scale_parts(inner)
    if outer_p is None or inner_p is None:
        return False
    (s2, b2), (s1, b1) = outer_p, inner_p
    if s1.size != s2.size and 1 not in (s1.size, s2.size):
        return False
    s = s1 * s2
    b = b1 * s2 + b2
    sv = rw.const(s.astype(np.float32), f"{op.name}.scale", anchor=op)
    bv = rw.const(b.astype(np.float32), f"{op.name}.bias", anchor=op)
    new = rw.make("scale", [inner.operands[0], sv, bv], {"axis": op.attrs["axis"], "act": op.attrs["act"],
                                                         "act_params": op.attrs["act_params"]}, op.name, op.loc)
    rw.replace_op(op, new)
    rw.erase(inner)
    return True


def _reweighted(rw: Rewriter, layer, x, w: np.ndarray, b: np.ndarray, attrs_: dict):
    """``layer`` (conv2d, deconv2d, dense) on ``x`` with weights ``w`` and bias ``b`` (constants
    named as the layer's own were; a bias it had not gets ``<name>.b``)."""
    had_bias = len(layer.operands) > 2
    wv = rw.const(w.astype(np.float32, copy=False), layer.operands[1].producer.name or f"{layer.name}.w", anchor=layer)
    bv = rw.const(b.astype(np.float32), (layer.operands[2].producer.name if had_bias else "") or f"{layer.name}.b",
                  anchor=layer)
    return rw.make(layer.kind, [x, wv, bv], attrs_, layer.name, layer.loc)


def _fold_scale_into_producer(rw: Rewriter, op) -> bool:
    prod = op.operands[0].producer
    if prod is None or prod.kind not in ("conv2d", "deconv2d", "dense") or prod.attrs["act"] != "none":
        return False
    if rw.single_user(prod.results[0]) is not op:
        return False
    rank = len(prod.results[0].type.shape or ())
    axis = op.attrs["axis"] % rank if rank else None
    if axis != (1 if prod.kind != "dense" else rank - 1):
        return False
    parts = _scale_parts(op)
    w = _const(prod.operands[1])
    bias = _const(prod.operands[2]) if len(prod.operands) > 2 else None
    if parts is None or w is None or (len(prod.operands) > 2 and bias is None):
        return False
    if w.dtype != np.float32:  # integer (pre-quantized) weights keep their values
        return False
    s, t = parts
    # output channels: weights OIHW / (O, I) for conv2d and dense; (I, O/g, kh, kw) for deconv2d
    g = prod.attrs["groups"] if prod.kind == "deconv2d" else 1
    cout = w.shape[0] if prod.kind != "deconv2d" else w.shape[1] * g
    if s.size not in (1, cout):
        return False
    s = np.broadcast_to(s, (cout,))
    t = np.broadcast_to(t, (cout,))
    s32 = s.astype(np.float32)
    if prod.kind != "deconv2d":
        new_w = w * s32.reshape((-1,) + (1,) * (w.ndim - 1))
    else:  # output channel = group * O/g + o
        cin, cout_g = w.shape[:2]
        new_w = (w.reshape(g, cin // g, cout_g, *w.shape[2:]) * s32.reshape(g, 1, cout_g, 1, 1)).reshape(w.shape)
    old_b = np.zeros(cout) if bias is None else bias.reshape(-1).astype(np.float64)
    attrs_ = dict(prod.attrs)
    attrs_["act"], attrs_["act_params"] = op.attrs["act"], op.attrs["act_params"]
    new = _reweighted(rw, prod, prod.operands[0], new_w, old_b * s + t, attrs_)
    rw.replace_op(prod, new)  # the layer with the scale folded in takes the producer's place
    rw.replace_op(op, new.results[0])  # and the scale itself is gone
    return True


def _fold_scale_into_reader(rw: Rewriter, op) -> bool:
    """A ``scale`` (no activation) whose one reader is a conv2d or dense taking it as its input,
    folded into that reader: ``W'[o, c] = W[o, c] * s_c``, ``b'[o] = b[o] + sum_c t_c * sum_taps
    W[o, c]`` (grouped convs: the channels of the output's group). Exact only where every tap reads
    the input, so a padded conv takes it only with ``t = 0``. PP-OCRv4's recognizer (PP-LCNetV3)
    puts a learnable scalar affine after each hardswish: each was a TIDL layer of its own with its
    own 8-bit rounding (the 8-bit net read none of 20 text lines); Keras models that put
    BatchNormalization after the activation do the same per channel."""
    if op.attrs["act"] != "none":
        return False
    reader = rw.single_user(op.results[0])  # (as the weights, it is no constant: _const below)
    if reader is None or reader.kind not in ("conv2d", "dense") or reader.operands[0] is not op.results[0]:
        return False
    shape = op.results[0].type.shape
    rank = len(shape or ())
    if not rank or op.attrs["axis"] % rank != (1 if reader.kind == "conv2d" else rank - 1):
        return False
    parts = _scale_parts(op)
    w = _const(reader.operands[1])
    bias = _const(reader.operands[2]) if len(reader.operands) > 2 else None
    if parts is None or w is None or w.dtype != np.float32 or (len(reader.operands) > 2 and bias is None):
        return False
    s, t = parts
    if reader.kind == "conv2d":
        if any(reader.attrs["pads"]) and np.any(t):
            return False  # (the zero padding would stand for -t/s)
        groups = reader.attrs["groups"]
        cout, cin_g = w.shape[:2]
        cin = cin_g * groups
        if s.size not in (1, cin) or cout % groups:
            return False
        group_of = np.arange(cout) // (cout // groups)  # each output channel's group
        sg = np.broadcast_to(s, (cin,)).reshape(groups, cin_g)[group_of]  # (cout, cin_g)
        tg = np.broadcast_to(t, (cin,)).reshape(groups, cin_g)[group_of]
        new_w = w * sg.astype(np.float32)[:, :, None, None]
        shift = (w.astype(np.float64).sum(axis=(2, 3)) * tg).sum(axis=1)
    else:
        cin = w.shape[1]
        if s.size not in (1, cin):
            return False
        new_w = w * np.broadcast_to(s, (cin,)).astype(np.float32)[None, :]
        shift = w.astype(np.float64) @ np.broadcast_to(t, (cin,))
    new_b = (np.zeros(w.shape[0]) if bias is None else bias.reshape(-1).astype(np.float64)) + shift
    rw.replace_op(reader, _reweighted(rw, reader, op.operands[0], new_w, new_b, dict(reader.attrs)))
    rw.erase(op)
    return True


BN_RULES = [
    ("matmul", _matmul_to_dense), ("dense", _dense_between_reshapes),
    ("batchnorm", _bn_to_scale),
    ("mul", _arith_to_scale),
    ("add", _arith_to_scale), ("add", _bias_through_reshape), ("mul", _bias_through_reshape),
    ("add", _bias_through_qdq),
    ("sub", _arith_to_scale),
    ("div", _arith_to_scale), ("div", _div_to_mul),
    ("scale", _fold_scale_into_producer),
    ("scale", _merge_scales),
    ("scale", _fold_scale_into_reader),
]

FuseBatchNorm = rule_pass("fuse-batchnorm", BN_RULES, opt_level=2, order=50, prune=True,
                          summary="fold batchnorm/scale/bias into conv/deconv/dense (TIDL foldBnInConv2D)")


def _canonical_act(op):
    kind, params = op.kind, act_params_of(op)
    if kind == "clip":
        lo, hi = params
        if lo == 0 and hi == 6:
            return "relu6", ()
        if lo == 0 and hi == float("inf"):
            return "relu", ()
    return kind, params


def _fuse_act(rw: Rewriter, op) -> bool:
    prod, reader = op.operands[0].producer, op
    if prod is not None and prod.kind == "reshape" and len(prod.operands) == 1 and not op.attrs.get("act_params") \
            and rw.single_user(prod.results[0]) is op:
        # an element-wise activation commutes with a reshape: Keras' Dense on tokens in a frozen
        # graph is reshape -> MatMul -> reshape -> BiasAdd -> Gelu
        prod, reader = prod.operands[0].producer, prod
    elif (pair := _pair_before(rw, op.operands[0], op)) is not None \
            and fake_quantized_source(op.operands[0]) is pair[0]:  # (one scale each)
        # a pre-quantized model's activation between its producer's quantize/dequantize pair (an int8
        # TFLite dense -> GELU): TIDL runs the fused pair and quantizes once, after the activation
        prod, reader = pair[0].producer, pair[1]
    if prod is None or "act" not in prod.attrs or prod.attrs["act"] != "none":
        return False
    if rw.single_user(prod.results[0]) is not reader or len(prod.results) != 1:
        return False
    if prod.results[0].type.dtype != "f32":
        return False
    act, params = _canonical_act(op)
    if reader is not op and act == "prelu":
        return False
    rw.update_attrs(prod, act=act, act_params=params)
    # (through a pair: the pair, a range of the value before the activation, goes with it)
    rw.replace_op(op, prod.results[0] if reader.kind == "quantize" else op.operands[0])
    return True


def _canonical_clip(rw: Rewriter, op) -> bool:
    """A clip that could not be fused still becomes relu6/relu when it is one."""
    act, _ = _canonical_act(op)
    if act == "clip":
        return False
    rw.replace_op(op, rw.make(act, [op.operands[0]], {}, op.name, op.loc))
    return True


def _activation(rw: Rewriter, op) -> bool:
    """A FUSABLE_ACTIVATION op: fused into its producer, else (a clip) made relu6/relu if it is one."""
    if not op.opdef.has(Trait.FUSABLE_ACTIVATION):
        return False
    return _fuse_act(rw, op) or (op.kind == "clip" and _canonical_clip(rw, op))


def _fuse_prelu(rw: Rewriter, op) -> bool:
    """prelu with constant slopes (one, or one per channel) after a single-reader conv2d / dense
    -> its ``act = prelu`` (TIDL actType 2), the slopes as ``act_params``."""
    prod = op.operands[0].producer
    slope = _const(op.operands[1])
    if prod is None or prod.kind not in ("conv2d", "dense") or prod.attrs["act"] != "none" or slope is None:
        return False
    r = prod.results[0]
    if len(prod.results) != 1 or rw.single_user(r) is not op or r.type.dtype != "f32" or r.type.shape is None \
            or len(r.type.shape) < 2 or slope.ndim > 1 or slope.size not in (1, r.type.shape[1]) \
            or not np.all(np.isfinite(slope)) \
            or (slope.size > 1 and prod.kind == "dense" and len(r.type.shape) != 2):  # slopes on axis 1, not the
        return False  # dense layer's channels (the last axis): TIDL's fused form does not apply
    rw.update_attrs(prod, act="prelu", act_params=tuple(float(v) for v in slope.reshape(-1)))
    rw.replace_op(op, r)
    return True


def _prelu_channel_slopes(rw: Rewriter, op) -> bool:
    """A prelu whose constant slopes broadcast along the channel axis only ((1, C, 1, 1): TFLite's
    alpha after the layout pass; (C, 1, 1): PyTorch's ``nn.PReLU(C)`` in ONNX) -> its 1-D slopes,
    the form TIDL's PReLU takes: fused into the layer before it, or an integer BatchNorm layer
    instead of a float one between two DataConverts."""
    slope = _const(op.operands[1])
    if slope is None or slope.ndim <= 1:
        return False
    flat = channel_slopes(slope, op.operands[0].type.shape)
    if flat is None:
        return False
    new = rw.make("prelu", [op.operands[0], rw.const(flat.copy(), f"{op.name}.slope", anchor=op)], {}, op.name, op.loc)
    rw.replace_op(op, new)
    return True


ACT_RULES = [("*", _activation), ("prelu", _prelu_channel_slopes), ("prelu", _fuse_prelu)]

FuseActivation = rule_pass("fuse-activation", ACT_RULES, opt_level=2, order=60,
                           summary="fuse activations into their producer's act attribute")


@hookimpl
def tidlc_passes():
    return [FuseBatchNorm, FuseActivation]
