"""The specification's kernel table: every fixed-point op kind on the numpy kernels of :mod:`.reference`.

Each builder derives an op's parameters (multipliers, shifts, tables, clamps) from its operand and
result types, exactly as docs/quantization.md states, and returns the numpy kernel that applies
them (signature: :mod:`.dispatch`). The parameter functions here are shared with the fast tables
(:mod:`.fast_kernels`), so both compute with the same numbers. These builders never decline: this
table ends every kernel chain.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from tidlc.diagnostics import TidlcError
from tidlc.interp import evaluate_op
from tidlc.ir.core import Op
from tidlc.ir.opdef import Trait
from tidlc.ir.types import QuantInfo

from . import reference as ref
from .dispatch import Kernel, KernelContext, KernelTable

# The op kinds the accumulator kernel implements: the builtin Trait.MAC ops.
MAC_OPS = frozenset({"conv2d", "deconv2d", "dense", "scale", "matmul"})
ELTWISE_OPS = ("add", "sub", "mul", "max", "min")
# fused activations the MAC and eltwise kernels apply as their output clamp (act_bounds)
CLAMP_ACTS = ("none", "relu", "relu6", "clip")
# fused activations a conv2d / dense output stage computes with a multiplier per sign (mac_params' m_neg):
# TIDL's actType 2, a slope per channel (prelu) or one (leaky_relu)
FUSED_PRELU = ("prelu", "leaky_relu")


def _quant(value) -> QuantInfo:
    q = value.type.quant
    if q is None:
        raise TidlcError(f"operand of type {value.type} is not quantized", value.producer.where() if value.producer else None)
    return q


def _scale(value) -> float:
    q = _quant(value)
    if len(q.scale) != 1 or q.zero_point:
        raise TidlcError("per-channel or asymmetric activations are not part of the TIDL scheme",
                         value.producer.where() if value.producer else None,
                         hint="re-run the quantize pass on the float model")
    return q.scale[0]


def act_bounds(op: Op, out: QuantInfo) -> tuple[int, int]:
    """The output clamp: the type's range intersected with the fused activation's."""
    lo, hi = out.qmin, out.qmax
    act = op.attrs.get("act", "none")
    s = out.scale[0]
    if act == "relu":
        lo = max(lo, 0)
    elif act == "relu6":
        lo, hi = max(lo, 0), min(hi, ref.round_half_away_int(6.0 * s))
    elif act == "clip":
        a, b = op.attrs["act_params"]
        if np.isfinite(a):
            lo = max(lo, ref.round_half_away_int(a * s))
        if np.isfinite(b):
            hi = min(hi, ref.round_half_away_int(b * s))
    elif act != "none" and act not in FUSED_PRELU:  # (FUSED_PRELU: their multipliers, mac_params)
        raise TidlcError(f"fused activation {act} has no fixed-point form", op.where(),
                         hint="the quantize pass splits it into its own op")
    return lo, hi


def rescaled(op: Op, fn: Kernel, requantize: Callable = ref.requantize) -> Kernel:
    """Run a scale-preserving kernel; ``requantize`` its result if the pass gave it another scale."""
    s_in, out = _scale(op.operands[0]), _quant(op.results[0])
    if s_in == out.scale[0]:
        return fn  # moving, selecting, pooling and resizing never leave the input's range
    return lambda args: [requantize(fn(args)[0], s_in, out.scale[0], out.qmin, out.qmax)]


def requant_stage(op: Op, always: bool = False) -> tuple[float, float, int, int] | None:
    """``(s_in, s_out, qmin, qmax)`` of a scale-preserving op's requantization, None when the scales
    match (``always``: even then, for kernels that must saturate)."""
    s_in, out = _scale(op.operands[0]), _quant(op.results[0])
    return None if s_in == out.scale[0] and not always else (s_in, out.scale[0], out.qmin, out.qmax)


# ----------------------------------------------------------------------------- MAC
def mac_params(op: Op) -> dict:
    """Accumulator scale(s), multipliers, shift, clamp of a MAC op (conv2d, deconv2d, dense, scale, matmul)."""
    x, w = op.operands[0], op.operands[1]
    xq, wq, out = _quant(x), _quant(w), _quant(op.results[0])
    s_acc = _scale(x) * np.asarray(wq.scale, dtype=np.float64)
    shift = out.shift if out.shift is not None else 0
    mult = ref.round_half_away(out.scale[0] * 2.0 ** shift / s_acc).astype(np.int64)
    if mult.size == 1:
        mult = int(mult.reshape(-1)[0])
    bits = max(xq.bits, wq.bits)
    lo, hi = act_bounds(op, out)
    p = {"s_acc": s_acc, "mult": mult, "shift": shift, "acc_width": ref.acc_bits(bits), "lo": lo, "hi": hi}
    if op.attrs.get("act") in FUSED_PRELU:  # the negative side's multipliers: slope x the positive side's
        slope = np.asarray(op.attrs["act_params"], np.float64)
        m_neg = ref.round_half_away(slope * out.scale[0] * 2.0 ** shift / s_acc).astype(np.int64)
        p["m_neg"] = int(m_neg.reshape(-1)[0]) if m_neg.size == 1 else m_neg
    return p


def prelu_sides(p: dict) -> tuple[dict, dict, np.ndarray | None]:
    """A fused prelu's output stage as two plain ones (for kernels that take one multiplier per
    channel, not one per sign): the positive side (``mult``, clamped at >= 0), the negative side
    (``|m_neg|``, clamped at <= 0) and the channels whose slope is negative (a bool per channel,
    or None). Adding the positive side and the negative side, negated on those channels and
    clamped at ``hi``, is :func:`reference.mac_output_prelu` exactly: one side is 0 at every
    element, and the negated side was clamped at ``lo >= -hi - 1`` (the quantizer fuses a prelu
    with negative slopes only into a signed output)."""
    pos = dict(p, lo=max(p["lo"], 0))
    m_neg = p["m_neg"]
    neg = dict(p, mult=np.abs(m_neg) if np.ndim(m_neg) else abs(int(m_neg)), hi=min(p["hi"], 0))
    for side in (pos, neg):
        side.pop("m_neg")
    flip = np.asarray(m_neg).reshape(-1) < 0
    return pos, neg, (flip if flip.any() else None)


def mac_axis(op: Op) -> int:
    """The channel axis of a MAC op's result (where its bias and per-channel multipliers apply)."""
    return {"conv2d": 1, "deconv2d": 1, "dense": -1, "matmul": -1, "scale": op.attrs.get("axis", 1)}[op.kind]


def with_bias(acc: np.ndarray, b: np.ndarray | None, axis: int) -> np.ndarray:
    if b is None:
        return acc
    bias = b.astype(np.int64).reshape(-1)
    return acc + (ref.channel_view(bias, acc.ndim, axis) if bias.size > 1 else int(bias[0]))


def _mac_sums(op: Op) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The exact int64 sums of a MAC op, without bias: ``sums(x, w)``."""
    a = op.attrs
    if op.kind == "conv2d":
        return lambda x, w: ref.conv2d_acc(x, w, a["strides"], a["pads"], a["dilations"], a["groups"])
    if op.kind == "deconv2d":
        return lambda x, w: ref.deconv2d_acc(x, w, a["strides"], a["pads"], a["dilations"], a["groups"],
                                             a["output_padding"])
    if op.kind == "dense":
        return ref.dense_acc
    if op.kind == "matmul":
        return ref.matmul_acc
    axis = mac_axis(op)

    def scale(x, w):  # a per-channel (or scalar) multiply
        xs = np.asarray(x, dtype=np.int64)
        return xs * (ref.channel_view(w.astype(np.int64), xs.ndim, axis) if w.size > 1 else int(w.reshape(-1)[0]))
    return scale


def mac_stage(op: Op, sums: Callable, p: dict | None = None) -> Kernel:
    """A MAC kernel: ``sums(x, w)`` (exact int64 sums, or None to decline the frame), then the bias
    and the specification's output stage (``p``: :func:`mac_params`, or one side of a fused prelu)."""
    p, axis = p if p is not None else mac_params(op), mac_axis(op)

    def run(args):
        acc = sums(args[0], args[1])
        if acc is None:
            return NotImplemented
        acc = with_bias(acc, args[2] if len(args) > 2 else None, axis)
        if "m_neg" in p:
            return [ref.mac_output_prelu(acc, p["acc_width"], p["mult"], p["m_neg"], p["shift"], p["lo"], p["hi"],
                                         axis)]
        return [ref.mac_output(acc, p["acc_width"], p["mult"], p["shift"], p["lo"], p["hi"], axis)]
    return run


def _mac(op: Op, ctx: KernelContext) -> Kernel:
    return mac_stage(op, _mac_sums(op))


# ----------------------------------------------------------------------------- eltwise
def eltwise_params(op: Op) -> dict:
    """Multipliers and shift of add/sub/max/min/mul (for the kernels, reports and the backend)."""
    s_out = _quant(op.results[0]).scale[0]
    sa, sb = _scale(op.operands[0]), _scale(op.operands[1])
    if op.kind == "mul":
        m, n = ref.multiplier(s_out / (sa * sb))
        return {"mult": [m], "shift": n}
    mults, n = ref.common_multipliers([s_out / sa, s_out / sb])
    return {"mult": mults, "shift": n}


def _eltwise(op: Op, ctx: KernelContext) -> Kernel:
    p = eltwise_params(op)
    n, kind = p["shift"], op.kind
    lo, hi = act_bounds(op, _quant(op.results[0]))
    if kind == "mul":
        m = p["mult"][0]
        return lambda args: [ref.eltwise_mul(args[0], args[1], m, n, lo, hi)]
    ma, mb = p["mult"]
    if kind in ("add", "sub"):
        return lambda args: [ref.eltwise_add(args[0], args[1], ma, mb, n, lo, hi, subtract=kind == "sub")]
    return lambda args: [ref.eltwise_max(args[0], args[1], ma, mb, n, lo, hi, minimum=kind == "min")]


# ----------------------------------------------------------------------------- others
def _concat(op: Op, ctx: KernelContext) -> Kernel:
    out = _quant(op.results[0])
    scales = [_scale(v) for v in op.operands]
    axis = op.attrs["axis"]

    def run(args):
        parts = [ref.requantize(q, s, out.scale[0], out.qmin, out.qmax) for q, s in zip(args, scales)]
        return [np.concatenate(parts, axis=axis)]
    return run


def avg_pool_counts(op: Op, h: int, w: int, ho: int, wo: int) -> np.ndarray:
    """Taps each average-pool window divides by (padding included or not, as the op says)."""
    from tidlc.ir.ops.nn import _taps_inside
    a = op.attrs
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = a["kernel"], a["strides"], a["pads"], a["dilations"]
    lo_h, hi_h = (-pt, h + pb) if a["count_include_pad"] else (0, h)
    lo_w, hi_w = (-pl, w + pr) if a["count_include_pad"] else (0, w)
    ch = _taps_inside(np.arange(ho) * sh - pt, kh, dh, lo_h, hi_h)
    cw = _taps_inside(np.arange(wo) * sw - pl, kw, dw, lo_w, hi_w)
    return np.maximum(ch[:, None] * cw[None, :], 1)


def _saturated(op: Op, fn: Kernel) -> Kernel:
    """Average pools: requantize to the result's scale and always saturate to its type (a Q16
    reciprocal that rounds up can take an average one step past the input's range)."""
    requant = requant_stage(op, always=True)
    return lambda args: [ref.requantize(fn(args)[0], *requant)]


def avg_shift(op: Op) -> int:
    """The Q of an average pool's reciprocal: its result type's shift (the quantizer gives 16-bit
    averages :data:`.reference.AVG_POOL_SHIFT_16`), else 16."""
    shift = _quant(op.results[0]).shift
    return ref.AVG_POOL_SHIFT if shift is None else shift


def _pool(op: Op, ctx: KernelContext) -> Kernel:
    a = op.attrs
    ho, wo = op.results[0].type.shape[2:]
    shift = avg_shift(op)

    def run(args):
        x = args[0]
        if a["mode"] == "max":
            return [ref.max_pool(x, a["kernel"], a["strides"], a["pads"], a["dilations"], ho, wo)]
        counts = avg_pool_counts(op, x.shape[2], x.shape[3], ho, wo)
        return [ref.avg_pool(x, a["kernel"], a["strides"], a["pads"], a["dilations"], ho, wo, counts, shift)]
    return rescaled(op, run) if a["mode"] == "max" else _saturated(op, run)


def _global_pool(op: Op, ctx: KernelContext) -> Kernel:
    shift = avg_shift(op)

    def run(args):
        x = args[0]
        if op.attrs["mode"] == "max":
            return [x.max(axis=tuple(range(2, x.ndim)), keepdims=True).astype(np.int64)]
        return [ref.global_avg_pool(x, shift)]
    return rescaled(op, run) if op.attrs["mode"] == "max" else _saturated(op, run)


def moved(op: Op) -> Kernel:
    """The op's float compute run on the integer codes (values are only moved or selected)."""
    return lambda args: evaluate_op(op, args)


def resize_axes(op: Op) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """A linear resize's per-axis (axis, lo index, hi index, Q10 weight of hi), resized axes only."""
    from tidlc.ir.ops.tensor import _scaled_len, _source_coords
    a = op.attrs
    in_shape = op.operands[0].type.shape
    out_shape = tuple(a["sizes"]) if a["sizes"] else tuple(_scaled_len(d, s) for d, s in zip(in_shape, a["scales"]))
    axes = []
    for axis, (n_in, n_out) in enumerate(zip(in_shape, out_shape)):
        scale = n_out / n_in if a["sizes"] else a["scales"][axis]
        if n_in == n_out and scale == 1.0:
            continue
        src = _source_coords(n_out, n_in, scale, a["coord_mode"])
        lo, hi, w_hi = ref.linear_weights(src, n_in)
        axes.append((axis, lo, hi, w_hi))
    return axes


def _resize(op: Op, ctx: KernelContext) -> Kernel:
    if op.attrs["mode"] == "nearest":
        return rescaled(op, moved(op))
    axes = resize_axes(op)
    return rescaled(op, lambda args: [ref.resize_linear(args[0], axes)])


def _table_input(op: Op):
    """The quantization of a table op's input: a table has 2**bits entries, so 8 or 16 bits
    (a 32-bit input, as a hand-written IR text can declare, would need gigabytes)."""
    xq = _quant(op.operands[0])
    if xq.bits > 16:
        raise TidlcError(f"{op.kind}: a {xq.bits}-bit input has no fixed-point lookup table (8 or 16 bits)",
                         op.where(), code="unsupported")
    return xq


def table_of(op: Op) -> np.ndarray:
    """The lookup table of a table op (``Trait.LUT``: its float compute, tabulated)."""
    xq, out = _table_input(op), _quant(op.results[0])
    return ref.make_table(lambda r: op.opdef.compute(op, r), _scale(op.operands[0]), out.scale[0],
                          (xq.qmin, xq.qmax), (out.qmin, out.qmax))


def _table(op: Op, ctx: KernelContext) -> Kernel:
    table, qmin = table_of(op), _quant(op.operands[0]).qmin
    return lambda args: [ref.lut(args[0], table, qmin)]


def softmax_params(op: Op) -> tuple[np.ndarray, int, int]:
    """(exp table, axis, output qmax) of an integer softmax."""
    if op.attrs["log"]:
        raise TidlcError("log-softmax has no fixed-point form", op.where())
    xq, out = _table_input(op), _quant(op.results[0])
    return ref.exp_table(_scale(op.operands[0]), xq.bits, out.bits), op.attrs["axis"], out.qmax


def _softmax(op: Op, ctx: KernelContext) -> Kernel:
    table, axis, qmax = softmax_params(op)
    return lambda args: [ref.softmax(args[0], axis, table, qmax)]


def layernorm_params(op: Op) -> tuple:
    """(n, E, gain, shift, offset, lo, hi) of an integer layernorm (:func:`reference.layernorm`):
    ``n`` the elements of the normalized trailing axes; ``E = round(n**2 eps S_in**2)`` (at least 1);
    ``gain = round(gamma S_out 2**shift)`` with the shift that keeps ``|gain| < 2**31``;
    ``offset = round(beta S_out)``."""
    x, out = op.operands[0], _quant(op.results[0])
    s_in = _scale(x)
    shape = x.type.shape
    axis = op.attrs["axis"] % len(shape)
    n = int(np.prod(shape[axis:]))
    const = [v.const_value() for v in op.operands[1:]]
    if any(c is None for c in const):
        raise TidlcError("layernorm needs constant scale and bias in fixed point", op.where())
    gamma = np.ones(n) if not const else np.asarray(const[0], np.float64).reshape(-1) * np.ones(n)
    beta = np.zeros(n) if len(const) < 2 else np.asarray(const[1], np.float64).reshape(-1) * np.ones(n)
    g = gamma * out.scale[0]
    top = float(np.max(np.abs(g)))
    shift = max(0, 31 - math.frexp(top)[1]) if top > 0 else 0
    eps = min(round(n * n * op.attrs["epsilon"] * s_in * s_in), 1 << 61)
    return (n, max(1, eps), ref.round_half_away(g * 2.0 ** shift).astype(np.int64), shift,
            ref.round_half_away(beta * out.scale[0]).astype(np.int64), out.qmin, out.qmax)


def _layernorm(op: Op, ctx: KernelContext) -> Kernel:
    params = layernorm_params(op)
    return lambda args: [ref.layernorm(args[0], *params)]


def prelu_params(op: Op) -> tuple:
    """(positive multiplier, negative multiplier(s), shift, lo, hi) of prelu (constant slopes)."""
    s_in, out = _scale(op.operands[0]), _quant(op.results[0])
    slope = op.operands[1].const_value()
    if slope is None:
        raise TidlcError("prelu needs constant slopes in fixed point", op.where())
    ratio = out.scale[0] / s_in
    m_pos, n = ref.multiplier(ratio)
    m_neg = ref.round_half_away(np.asarray(slope, np.float64).reshape(-1) * ratio * 2.0 ** n).astype(np.int64)
    m_neg = int(m_neg[0]) if m_neg.size == 1 else m_neg
    return m_pos, m_neg, n, out.qmin, out.qmax


def _prelu(op: Op, ctx: KernelContext) -> Kernel:
    params = prelu_params(op)
    return lambda args: [ref.prelu(args[0], *params)]


def padded(op: Op) -> Kernel:
    """pad on the codes, the pad value as the code of the result type nearest to it."""
    from tidlc.ir.ops.tensor import _pad_compute
    a = op.attrs
    out = _quant(op.results[0])
    code = ref.round_half_away_int(a["value"] * out.scale[0]) if np.isfinite(a["value"]) else (
        out.qmax if a["value"] > 0 else out.qmin)
    fake = Op("pad", op.operands, op.results, {**a, "value": float(min(max(code, out.qmin), out.qmax))})
    return lambda args: [_pad_compute(fake, args[0])]


def _pad(op: Op, ctx: KernelContext) -> Kernel:
    return rescaled(op, padded(op))


def _argmax(op: Op, ctx: KernelContext) -> Kernel:
    return moved(op)


def selects_codes(op: Op) -> bool:
    """A reduce that selects one of its inputs (max, min): TIDL's Reduce layer, on the codes."""
    return op.kind == "reduce" and op.attrs["op"] in ("max", "min")


def _data_movement(op: Op, ctx: KernelContext) -> Kernel:
    return rescaled(op, moved(op))


SPEC = KernelTable(
    "spec",
    {**{k: _mac for k in MAC_OPS}, **{k: _eltwise for k in ELTWISE_OPS},
     "concat": _concat, "pool2d": _pool, "global_pool": _global_pool, "resize": _resize, "softmax": _softmax,
     "prelu": _prelu, "layernorm": _layernorm, "pad": _pad, "argmax": _argmax, "data_convert": lambda op, ctx: moved(op),
     "reduce": _data_movement},
    # by trait: a lookup table of the float compute; the float compute run on the codes (reshape,
    # transpose, slice, ...), requantized if the result's scale differs
    ((Trait.LUT, _table), (Trait.SCALE_PRESERVING, _data_movement)),
    when={"reduce": selects_codes},  # (a sum or mean has no integer kernel: it stays float)
)
