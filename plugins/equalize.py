"""``equalize`` (-O3): cross-layer equalization (Nagel et al., "Data-Free Quantization Through
Weight Equalization and Bias Correction", ICCV 2019).

Per-tensor weight quantization (TIDL's default, and always for depthwise
layers unless ``--per-channel-depthwise``) spends its 8 bits on the
channel with the widest range; the others round to a handful of levels.
For two consecutive layers ``y = W2 f(W1 x + b1) + b2`` with ``f``
positively homogeneous (``f(s x) = s f(x)`` for ``s > 0``: none, ReLU,
leaky ReLU, PReLU), scaling output channel ``i`` of the first layer by
``1/s_i`` and input channel ``i`` of the second by ``s_i`` leaves ``y``
unchanged. With ``s_i = sqrt(r1_i / r2_i)`` (``r1_i``, ``r2_i`` the
channel's weight ranges in the two layers) both ranges become
``sqrt(r1_i r2_i)``: equal across the pair, and the per-tensor scale of
each layer serves every channel better. Chains are equalized by iterating
over all pairs until the scales stop changing.

Pairs: conv2d (dense, depthwise) with a constant weight, a fused activation
in the homogeneous set and one reader, which is a conv2d (regular or
depthwise, not grouped otherwise) or a dense reading it directly. By default
(``scope=depthwise``) only pairs with a depthwise layer are equalized: that
is where per-tensor weights fail (measured on the corpus: UltraFace RFB-320
8-bit +4.6 dB), while equalizing every pair moved LeNet's 8-bit SNR from
37.9 to 32.5 dB, as the activation ranges it reshapes matter more there than
the weights; ``scope=all`` equalizes every pair. ReLU6 and ``clip(lo, hi)`` (``lo <= 0 < hi``) are not homogeneous: scaling
channel ``i`` by ``1/s_i`` moves its clip to ``hi / s_i``, and TIDL's clip
(``actParams.clipMin/clipMax``) is one value per layer, so the clip cannot be
rescaled per channel. The paper replaces ReLU6 by ReLU in MobileNetV2, which
changes the float function wherever a channel reaches 6. Here the pair is
equalized exactly instead (``relu6=bound``, the default): an interval
analysis (:func:`value_bounds`) bounds every channel's pre-activation
``[L_i, U_i]`` from the weights, the biases and the ranges of the layer's
input (ReLU6/clip outputs are in ``[0, 6]``; convolutions, dense layers,
adds, pools, concats, pads and monotone activations propagate the
intervals; a graph input is in ``input-range=lo:hi`` if given, else in the
range of 8-bit images after ``--mean``/``--scale`` when either is given
(TIDL's inMean/inScale: the input is an image), else unbounded). A channel
with ``U_i <= hi`` (and ``L_i >= lo``) never reaches the clip: for it the
clip is a ReLU, and any ``s_i >= max(U_i / hi, L_i / lo)``
keeps it so after the scaling (``y / s_i`` stays inside the clip): the
channel is equalized with its scale raised to that bound when needed. A
channel that may reach the clip keeps ``s_i = 1``. So the float outputs stay
the same for every input (in the input range), the per-layer clip stays, and
the channels that gain most (the narrow ones, ``s_i < 1``, widened up to the
clip) are those whose bound is far below it. While some channels of a pair
keep ``s_i = 1``, the moved ones may not widen either layer's per-tensor
range past what the fixed ones need (else the fixed channels lose levels).
``relu6=calib`` also takes the channels whose output over the calibration
frames stays below ``hi / headroom``: exact on those frames only, so opt-in
(``auto``: calib when ``--calib`` is given). ``relu6=skip`` leaves such pairs
alone.

``activations=b`` (0..1, default 0; with ``--calib``) puts each first
layer's observed output ranges ``a_i`` (calibration frames through the float
interpreter) into the balance: the ranges divided by ``s_i`` are
``r1_i^(1-b) * a_i^b`` instead of ``r1_i``. At 16 bits the per-tensor
activation grids lose more than the weights, and ``b > 0`` gives the narrow
channels more of them; -O3's 16-bit check tries 0.25 and 0.5
(backends/tidl/quantize/api.py, keep_better_equalized).

Float outputs are unchanged up to rounding (tests: 1e-5 relative).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import attrs
import numpy as np

from tidlc.hookspecs import hookimpl
from tidlc.ir.ops._common import apply_act
from tidlc.passes.base import Pass
from tidlc.passes.rewrite import Rewriter

HOMOGENEOUS = ("none", "relu", "leaky_relu", "prelu")
CLIPS = ("relu6", "clip")  # equalized within the interval bounds (relu6=bound)
MONOTONE = ("none", "relu", "relu6", "clip", "leaky_relu", "sigmoid", "tanh", "hardsigmoid", "elu")


def _is_depthwise(op) -> bool:
    w = op.operands[1].type.shape
    return op.kind == "conv2d" and w is not None and w[1] == 1 and op.attrs["groups"] == w[0] > 1


def _weights(op) -> np.ndarray | None:
    if op.kind not in ("conv2d", "dense") or len(op.operands) < 2:
        return None
    w = op.operands[1].const_value()
    if w is None or w.dtype != np.float32:
        return None
    if op.kind == "conv2d" and op.attrs["groups"] != 1 and not _is_depthwise(op):
        return None  # grouped: channel i of the input feeds a block of outputs
    return w


def _bias(op) -> np.ndarray | None:
    return op.operands[2].const_value() if len(op.operands) > 2 else None


def clip_range(op) -> tuple[float, float] | None:
    """(lo, hi) of a fused relu6 / clip with ``lo <= 0 < hi``, else None."""
    act = op.attrs.get("act", "none")
    if act == "relu6":
        return 0.0, 6.0
    if act == "clip":
        lo, hi = (float(v) for v in op.attrs["act_params"])
        if lo <= 0.0 < hi:
            return lo, hi
    return None


def _pair(rw: Rewriter, first, scope: str = "depthwise", clips: bool = False):
    """(first, second) if ``first`` feeds one layer that can absorb its channel scales, else None;
    with ``scope="depthwise"`` only pairs with a depthwise layer; ``clips``: also through a
    relu6 / clip (equalized within the bounds, :func:`clip_limits`)."""
    if _weights(first) is None:
        return None
    if first.attrs.get("act", "none") not in HOMOGENEOUS and not (clips and clip_range(first) is not None):
        return None
    if len(first.operands) > 2 and _bias(first) is None:
        return None
    second = rw.single_user(first.results[0])
    if second is None or second.operands[0] is not first.results[0] or _weights(second) is None:
        return None
    if first.kind == "dense" and second.kind != "dense":
        return None
    if first.kind == "conv2d" and second.kind != "conv2d":
        return None  # conv -> dense goes through a flatten in practice: channel order changes
    if scope == "depthwise" and not (_is_depthwise(first) or _is_depthwise(second)):
        return None
    return first, second


def _out_ranges(w: np.ndarray) -> np.ndarray:
    """Per output channel |w| max: conv OIHW and dense (outputs, inputs) both lead with outputs."""
    return np.abs(w.reshape(w.shape[0], -1)).max(axis=1)


def _in_ranges(op, w: np.ndarray) -> np.ndarray:
    """Per input channel |w| max (a depthwise conv's input channel i is its output channel i)."""
    if _is_depthwise(op):
        return _out_ranges(w)
    return np.abs(np.moveaxis(w, 1, 0).reshape(w.shape[1], -1)).max(axis=1)


def _along(s: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return s.reshape(shape)


# ----------------------------------------------------------------------------- interval bounds
# A value's bounds: (lo, hi) float64 arrays over its channels (axis 1), or of size 1 for the same
# bounds on every element; -inf / inf where nothing is known.
UNKNOWN = (np.array([-np.inf]), np.array([np.inf]))


def _mul_bounds(w: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise bounds of ``w * x`` for ``x`` in ``[lo, hi]`` (0 where ``w`` is 0, even for inf)."""
    with np.errstate(invalid="ignore", over="ignore"):
        a, b = w * lo, w * hi
    a = np.where(w == 0, 0.0, a)
    b = np.where(w == 0, 0.0, b)
    return np.minimum(a, b), np.maximum(a, b)


def _with_zero(bounds):
    lo, hi = bounds
    return np.minimum(lo, 0.0), np.maximum(hi, 0.0)


def _channels(bounds, n: int):
    lo, hi = bounds
    if lo.size == n:
        return lo, hi
    if lo.size == 1:
        return np.full(n, lo[0]), np.full(n, hi[0])
    return None


def preact_bounds(op, xb) -> tuple[np.ndarray, np.ndarray] | None:
    """Per output channel bounds of a conv2d / dense before its fused activation, from the bounds
    ``xb`` of its input (None when the weights or bias are not constants)."""
    w = op.operands[1].const_value()
    b = _bias(op) if len(op.operands) > 2 else np.zeros(1, np.float32)
    if w is None or b is None or w.ndim < 2:
        return None
    w = w.astype(np.float64)
    if op.operands[0].type.rank != (4 if op.kind == "conv2d" else 2):
        return None  # bounds are kept over axis 1: a dense layer's features must be that axis
    if op.kind == "conv2d":
        if any(op.attrs["pads"]):
            xb = _with_zero(xb)  # the padding reads zeros
        groups = op.attrs["groups"]
        per_in, per_out = w.shape[1], w.shape[0] // groups
        got = _channels(xb, per_in * groups)
        if got is None:
            return None
        index = (np.arange(w.shape[0]) // per_out)[:, None] * per_in + np.arange(per_in)[None, :]
        lo, hi = (a[index].reshape(w.shape[:2] + (1,) * (w.ndim - 2)) for a in got)
    elif op.kind == "dense" and w.ndim == 2:
        got = _channels(xb, w.shape[1])
        if got is None:
            return None
        lo, hi = got[0][None, :], got[1][None, :]
    else:
        return None
    mn, mx = _mul_bounds(w, lo, hi)
    axes = tuple(range(1, w.ndim))
    bias = np.broadcast_to(b.astype(np.float64).reshape(-1), (w.shape[0],))
    with np.errstate(over="ignore"):  # a bound past float64 is as good as inf
        return mn.sum(axis=axes) + bias, mx.sum(axis=axes) + bias


def _act_bounds(bounds, act: str, params: tuple):
    if act not in MONOTONE:
        return UNKNOWN
    lo, hi = bounds
    with np.errstate(invalid="ignore", over="ignore"):
        return (apply_act(lo.astype(np.float64), act, tuple(params)),
                apply_act(hi.astype(np.float64), act, tuple(params)))


def value_bounds(graph, input_range: tuple[float, float] | None = None, pre: dict | None = None) -> dict[int, tuple]:
    """id(value) -> (lo, hi) per channel (axis 1) or for every element (size 1); what the
    interval analysis cannot bound is absent (unknown). ``input_range`` bounds the graph inputs;
    ``pre`` (if given) receives id(op) -> pre-activation bounds of every conv2d / dense."""
    from tidlc.ir.ops._common import ACTIVATIONS
    from tidlc.ir.ops.elementwise import act_params_of
    out: dict[int, tuple] = {}

    def get(v):
        return out.get(id(v), UNKNOWN)

    for op in graph.ops:
        kind = op.kind
        if not op.results:
            continue
        res = op.results[0]
        if kind == "input":
            if input_range is not None:
                out[id(res)] = (np.array([input_range[0]], np.float64), np.array([input_range[1]], np.float64))
            continue
        if not op.operands:
            continue
        xb = get(op.operands[0])
        got = None
        if kind in ("conv2d", "dense"):
            before = preact_bounds(op, xb)
            if before is not None:
                if pre is not None:
                    pre[id(op)] = before
                got = _act_bounds(before, op.attrs.get("act", "none"), op.attrs.get("act_params", ()))
        elif kind in ACTIVATIONS and len(op.operands) == 1:
            got = _act_bounds(xb, kind, act_params_of(op))
        elif kind == "add" and len(op.operands) == 2 and all(
                u.type.shape == res.type.shape for u in op.operands):
            a, b = xb, get(op.operands[1])
            if a[0].size == b[0].size or 1 in (a[0].size, b[0].size):
                got = _act_bounds((a[0] + b[0], a[1] + b[1]), op.attrs.get("act", "none"),
                                  op.attrs.get("act_params", ()))
        elif kind in ("pool2d", "global_pool"):
            avg_pad = kind == "pool2d" and op.attrs["mode"] == "avg" and any(op.attrs["pads"])
            got = _with_zero(xb) if avg_pad else xb
        elif kind == "pad" and op.attrs["mode"] == "constant" and op.operands[0].type.rank == 4:
            v = op.attrs["value"]
            got = np.minimum(xb[0], v), np.maximum(xb[1], v)
        elif kind == "concat" and op.attrs["axis"] % max(res.type.rank, 1) == 1:
            parts = [get(u) for u in op.operands]
            if all(p[0].size == 1 for p in parts) and len({(p[0][0], p[1][0]) for p in parts}) == 1:
                got = parts[0]
            else:
                full = [_channels(p, u.type.shape[1]) for p, u in zip(parts, op.operands)]
                if all(f is not None for f in full):
                    got = (np.concatenate([f[0] for f in full]), np.concatenate([f[1] for f in full]))
        elif kind in ("flatten", "reshape", "transpose") and len(op.operands) == 1:
            x = op.operands[0].type
            if xb[0].size == 1:
                got = xb  # the same bounds on every element, whatever the order
            elif (kind != "transpose" and x.rank == 4 and x.is_static and res.type.rank == 2
                  and res.type.shape[1] == x.shape[1] * x.shape[2] * x.shape[3]):
                got = tuple(np.repeat(a, x.shape[2] * x.shape[3]) for a in xb)
        if got is not None:
            out[id(res)] = (np.nan_to_num(got[0], nan=-np.inf), np.nan_to_num(got[1], nan=np.inf))
    return out


def _need(lo: float, hi: float, low: np.ndarray, up: np.ndarray) -> np.ndarray:
    """The smallest scale keeping ``[low, up] / s`` inside ``[lo, hi]``; inf where ``[low, up]``
    itself is not inside (the clip may act). A lower clip at 0 is a ReLU: homogeneous, no limit."""
    safe = up <= hi
    need = np.maximum(up, 0.0) / hi
    if lo < 0:
        safe &= low >= lo
        need = np.maximum(need, np.minimum(low, 0.0) / lo)
    need = need * (1 + 1e-6)  # float32 rounding of y / s
    return np.where(safe, need, np.inf)


def clip_limits(op, pre: tuple[np.ndarray, np.ndarray] | None, seen: tuple | None = None,
                headroom: float = 1.25) -> np.ndarray:
    """Per output channel of ``op`` (fused relu6 / clip ``[lo, hi]``): the smallest scale ``s``
    with ``y / s`` inside the clip for every pre-activation ``y`` of the channel (then the clip
    acts as a ReLU on it, before and after equalization), or inf for a channel that may reach
    the clip (it must keep ``s = 1``). ``pre``: the channels' pre-activation bounds (interval
    analysis); ``seen``: (min, max) per channel of the output over calibration frames, widened
    by ``headroom`` (a channel whose output touched the clip may have been clipped: not safe)."""
    lo, hi = clip_range(op)
    n = op.results[0].type.shape[1]
    limits = np.full(n, np.inf)
    if pre is not None:
        limits = np.minimum(limits, _need(lo, hi, *pre))
    if seen is not None:
        low, up = seen
        touched = (up >= hi) | ((low <= lo) if lo < 0 else False)
        data = _need(lo, hi, np.minimum(low, 0.0) * headroom, np.maximum(up, 0.0) * headroom)
        limits = np.minimum(limits, np.where(touched, np.inf, data))
    return limits


def observed_ranges(graph, ops, frames) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """id(op) -> per output channel (min, max) over ``frames`` (float interpreter), for ``ops``."""
    from tidlc.interp import Interpreter
    wanted = {id(op) for op in ops}
    seen: dict[int, list] = {}

    def observe(op, results):
        if id(op) not in wanted:
            return
        y = results[0]
        axes = tuple(a for a in range(y.ndim) if a != 1)
        low, up = y.min(axis=axes).astype(np.float64), y.max(axis=axes).astype(np.float64)
        if id(op) in seen:
            seen[id(op)] = [np.minimum(seen[id(op)][0], low), np.maximum(seen[id(op)][1], up)]
        else:
            seen[id(op)] = [low, up]

    interp = Interpreter(graph)
    for feeds in frames:
        interp.run(feeds, observer=observe)
    return {k: (v[0], v[1]) for k, v in seen.items()}


def per_channel_scales(first, second, r1: np.ndarray, r2: np.ndarray, act: np.ndarray) -> np.ndarray:
    """The scales of a pair with a depthwise layer whose weights have one scale per channel (its
    weight ranges cost nothing, so they are left out of the balance), from ``first``'s weight
    ranges ``r1``, ``second``'s input-channel ranges ``r2`` and ``first``'s observed output ranges
    ``act``:

    * depthwise ``second``: ``first``'s channels grow until their weight row or their output
      reaches the widest one's, ``s = max(r1 / max r1, act / max act)``; neither per-tensor range
      widens, and the narrow channels get finer steps in both;
    * depthwise ``first`` (a regular ``second``): its outputs against ``second``'s input channels,
      ``s = sqrt(act / r2)``: the paper's balance with the activation ranges in place of the
      depthwise weights' (both grids are per tensor);
    * both depthwise: the outputs grow to the widest, ``s = act / max act``."""
    s = np.ones_like(r1)
    a = np.asarray(act, np.float64)
    if _is_depthwise(second):
        ok = (r1 > 0) & (a > 0)
        weights = r1 / r1[ok].max() if not _is_depthwise(first) and ok.any() else np.zeros_like(r1)
        if ok.any():
            s[ok] = np.maximum(weights[ok], a[ok] / a[ok].max())
    else:
        ok = (a > 0) & (r2 > 0)
        s[ok] = np.sqrt(a[ok] / r2[ok])
    return s


def _observes(mode: str, beta: float, per_channel: bool) -> bool:
    """Whether the pass balances with observed output ranges (and so reads calibration frames):
    relu6=calib, activations > 0 or per-channel depthwise scales."""
    return mode == "calib" or beta > 0 or per_channel


def equalize_pair(rw: Rewriter, first, second, max_step: float = 1e-3,
                  limits: np.ndarray | None = None, act: np.ndarray | None = None,
                  beta: float = 0.0, per_channel: bool = False) -> np.ndarray | None:
    """Equalize one pair in place (new constants); the scales applied (``first``'s output channel
    ``i`` divided by ``s[i]``), or None if none moved by more than ``max_step``. ``limits`` (per
    channel, for a clipped ``first``): the scale is raised to at least ``limits[i]``, and a channel
    with an infinite limit keeps 1. ``act`` (per channel, ``first``'s observed output range) with
    ``beta`` in (0, 1]: the ranges divided by ``s`` are ``r1^(1-beta) * a^beta`` (``a`` in units of
    ``r1``: scaled by ``max r1 / max a``) instead of ``first``'s weight ranges ``r1`` alone.
    ``per_channel`` (depthwise weights quantized per channel) with ``act``: a pair with a
    depthwise layer gets :func:`per_channel_scales` instead."""
    w1, w2 = _weights(first), _weights(second)
    r1, r2 = _out_ranges(w1).astype(np.float64), _in_ranges(second, w2).astype(np.float64)
    if r1.shape != r2.shape:
        return None
    ok = (r1 > 0) & (r2 > 0)
    seen = act is not None and act.shape == r1.shape and act.max() > 0
    if seen and per_channel and (_is_depthwise(first) or _is_depthwise(second)):
        s = per_channel_scales(first, second, r1, r2, act)
    else:
        if beta > 0.0 and seen:
            a = act * (r1.max() / act.max())
            ok &= a > 0
            r1 = np.where(ok, r1 ** (1.0 - beta) * np.maximum(a, 1e-300) ** beta, r1)
        s = np.ones_like(r1)
        s[ok] = np.sqrt(r1[ok] / r2[ok])
    if limits is not None:
        fixed = np.isinf(limits)
        if fixed.any():
            # channels that keep s = 1 are not rebalanced: the moved ones must not widen either
            # layer's per-tensor range beyond what the fixed ones already need
            top1, top2 = r1[fixed].max(), r2[fixed].max()
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.clip(s, np.where(ok, r1 / top1, 0.0), np.where(ok, top2 / r2, np.inf))
        s = np.where(fixed, 1.0, np.maximum(s, limits))
    if np.all(np.abs(s - 1.0) <= max_step):
        return None
    s32 = s.astype(np.float32)
    operands = list(first.operands)
    operands[1] = rw.const((w1 / _along(s32, 0, w1.ndim)).astype(np.float32), f"{first.name}.w.eq", anchor=first)
    b = _bias(first)
    if b is not None:
        operands[2] = rw.const((b / s32.reshape(b.shape)).astype(np.float32), f"{first.name}.b.eq", anchor=first)
    rw.set_operands(first, operands)
    operands = list(second.operands)
    in_axis = 0 if _is_depthwise(second) else 1
    operands[1] = rw.const((w2 * _along(s32, in_axis, w2.ndim)).astype(np.float32), f"{second.name}.w.eq",
                           anchor=second)
    rw.set_operands(second, operands)
    return s


@attrs.frozen
class Equalize(Pass):
    name: ClassVar[str] = "equalize"
    opt_level: ClassVar[int] = 3
    order: ClassVar[int] = 70  # after the fusions: BN is in the weights, activations are fused
    summary: ClassVar[str] = "cross-layer equalization of consecutive layers' per-channel weight ranges"

    iterations: int = 20
    scope: str = "depthwise"  # depthwise: pairs with a depthwise layer; all: every pair
    # relu6/clip pairs: bound (interval analysis: exact for every input), calib (also the channels
    # the calibration frames keep below clip / headroom: exact on those frames only), auto (calib
    # where --calib is given, else bound), skip
    relu6: str = "bound"
    # the graph inputs' range for the bounds: "lo:hi"; "" (auto): that of 8-bit images after
    # --mean/--scale when either is given, else unbounded; "none": unbounded
    input_range: str = ""
    headroom: float = 1.25  # relu6=calib: a channel is safe if its observed range x headroom is inside the clip
    frames: int = 16  # relu6=calib: at most this many calibration frames
    # on: the quantize pass also quantizes the graph as it was before this pass and keeps the
    # version with the better output SNR on calibration frames (docs/passes.md); off: keep this one
    check: str = "on"
    # the weight of the first layer's observed output ranges (calibration frames) against its weight
    # ranges in the balance, 0..1: 0 is the paper's weights-only equalization
    activations: float = 0.0
    # pairs with a depthwise layer: per-tensor (its weight ranges in the balance), per-channel (its
    # weights get a scale per channel, --per-channel-depthwise: their ranges left out, the observed
    # output ranges balanced instead; needs --calib), auto: per-channel with --per-channel-depthwise
    depthwise: str = "auto"

    def _input_range(self, ctx) -> tuple[float, float] | None:
        if self.input_range == "none":
            return None
        if not self.input_range:
            return image_range(getattr(getattr(ctx, "options", None), "preprocess", None))
        try:
            lo, hi = (float(v) for v in self.input_range.split(":"))
        except ValueError:
            lo, hi = 1.0, 0.0
        if not lo <= hi:
            from tidlc.diagnostics import TidlcError
            raise TidlcError(f"equalize: input-range={self.input_range!r}",
                             hint="write the inputs' range as lo:hi, e.g. equalize{input-range=-1:1}", code="option")
        return lo, hi

    def _check(self, ctx) -> str:
        """The relu6 mode to use: skip, bound or calib."""
        from tidlc.diagnostics import TidlcError
        if self.scope not in ("depthwise", "all"):
            raise TidlcError(f"equalize: scope={self.scope!r}", hint="scope=depthwise (default) or scope=all",
                             code="option")
        if self.relu6 not in ("auto", "bound", "calib", "skip"):
            raise TidlcError(f"equalize: relu6={self.relu6!r}", hint="relu6=bound (default), calib, auto or skip",
                             code="option")
        if self.check not in ("on", "off"):
            raise TidlcError(f"equalize: check={self.check!r}", hint="check=on (default) or check=off", code="option")
        if self.depthwise not in ("auto", "per-tensor", "per-channel"):
            raise TidlcError(f"equalize: depthwise={self.depthwise!r}",
                             hint="depthwise=auto (default), per-tensor or per-channel", code="option")
        if not 0.0 <= self.activations <= 1.0:
            raise TidlcError(f"equalize: activations={self.activations}",
                             hint="a weight between 0 (weight ranges only, the default) and 1", code="option")
        if self.headroom < 1.0 or self.frames < 1:
            raise TidlcError(f"equalize: headroom={self.headroom}, frames={self.frames}",
                             hint="headroom >= 1 (e.g. 1.25, the default), frames >= 1", code="option")
        calib = _calib_path(ctx)
        if self.relu6 == "calib" and calib is None:
            raise TidlcError("equalize{relu6=calib} needs calibration data",
                             hint="give --calib DATA, or use relu6=bound", code="option")
        if self.depthwise == "per-channel" and calib is None:
            raise TidlcError("equalize{depthwise=per-channel} needs calibration data",
                             hint="give --calib DATA (its output ranges are balanced), or use depthwise=auto",
                             code="option")
        if self.relu6 == "auto":
            return "calib" if calib is not None else "bound"
        return self.relu6

    def _frames(self, ctx, graph):
        """The calibration frames the observed ranges come from (at most ``frames`` of them)."""
        from tidlc.preprocess import FrameSource, Preprocess, input_specs
        options = ctx.options
        limit = min(self.frames, options.quant.calib_frames or self.frames)
        return FrameSource(options.quant.calib, input_specs(graph), Preprocess.from_options(options.preprocess), limit)

    def _per_channel(self, ctx) -> bool:
        """Whether the depthwise weights get a scale per channel (and calibration frames show the
        activation ranges the balance then uses)."""
        if _calib_path(ctx) is None or self.depthwise == "per-tensor":
            return False
        return self.depthwise == "per-channel" or bool(getattr(ctx.options.quant, "per_channel_depthwise", False))

    def run(self, ctx, graph) -> bool:
        mode = self._check(ctx)
        input_range = self._input_range(ctx)
        beta = self.activations if _calib_path(ctx) is not None else 0.0
        per_channel = self._per_channel(ctx)
        frames = self._frames(ctx, graph) if _observes(mode, beta, per_channel) else None
        undo = self.apply(graph, mode, input_range, frames, beta, per_channel)
        if undo is not None and self.check == "on" and ctx is not None and hasattr(ctx, "stash"):
            ctx.stash["equalize"] = undo
        return undo is not None

    def apply(self, graph, mode: str, input_range, frames=None, beta: float = 0.0,
              per_channel: bool = False) -> Undo | None:
        """Equalize ``graph`` in place; the record that undoes it (and redoes it with another
        ``beta``), or None if no scale moved. ``mode``: the relu6 mode (skip, bound or calib);
        ``frames``: calibration frames, for the observed ranges that relu6=calib, ``beta > 0``
        and ``per_channel`` use (``beta``: the weight of the activation ranges, the option
        ``activations``; ``per_channel``: the depthwise weights get a scale per channel, the
        option ``depthwise``)."""
        seen: dict = {}
        if frames is not None:
            rw = Rewriter(graph)
            ops = [op for op in graph.ops
                   if (beta > 0 or per_channel or clip_range(op) is not None) and _pair(rw, op, self.scope, True)]
            seen = observed_ranges(graph, ops, frames) if ops else {}
        before = {id(op): (op, list(op.operands)) for op in graph.ops if op.kind in ("conv2d", "dense")}
        changed_any = False
        for _ in range(self.iterations):
            rw = Rewriter(graph)
            moved = False
            pre = None
            for op in list(graph.ops):
                pair = _pair(rw, op, self.scope, mode != "skip")
                if pair is None:
                    continue
                limits = None
                if clip_range(op) is not None:
                    if pre is None:  # once per sweep: equalizing a pair keeps every pre-activation
                        pre = {}
                        value_bounds(graph, input_range, pre)
                    limits = clip_limits(op, pre.get(id(op)), seen.get(id(op)) if mode == "calib" else None,
                                         self.headroom)
                    if np.all(np.isinf(limits)):
                        continue
                act = None
                if id(op) in seen:
                    act = np.maximum(np.abs(seen[id(op)][0]), np.abs(seen[id(op)][1]))
                scales = equalize_pair(rw, *pair, limits=limits, act=act, beta=beta, per_channel=per_channel)
                if scales is None:
                    continue
                moved = True
                if id(op) in seen:  # the first layer's outputs are divided by the scales
                    low, up = seen[id(op)]
                    seen[id(op)] = (low / scales, up / scales)
            rw.commit()
            graph.prune()  # the replaced weight constants
            changed_any |= moved
            if not moved:
                break
        if not changed_any:
            return None

        def redo(graph, frames, beta: float, per_channel: bool = False) -> Undo | None:
            frames = list(frames)[:self.frames] if _observes(mode, beta, per_channel) else None
            return self.apply(graph, mode, input_range, frames, beta, per_channel)
        return Undo.of(graph, before, redo)


@attrs.define
class Undo:
    """What an equalize run changed, to put back: (layer, operand index, original constant, name),
    and the equalized constants, to put back in turn (:meth:`reapply`)."""

    items: list[tuple]
    # redo(graph, frames, beta, per_channel=False) -> Undo | None: the same pass again on the restored
    # graph, with the activation weight ``beta``, per-channel depthwise scales or not, and ranges
    # observed on ``frames`` (-O3's check)
    redo: Callable | None = None
    equalized: list[tuple] = attrs.Factory(list)  # (layer, operand index, equalized constant, name)

    @classmethod
    def of(cls, graph, before: dict, redo: Callable | None = None) -> Undo:
        items, equalized = [], []
        for op in graph.ops:
            old = before.get(id(op))
            if old is None:
                continue
            for i, (now, was) in enumerate(zip(op.operands, old[1])):
                if now is not was:
                    items.append((op, i, was.const_value(), was.producer.name if was.producer else ""))
                    equalized.append((op, i, now.const_value(), now.producer.name if now.producer else ""))
        return cls(items, redo, equalized)

    def restore(self, graph) -> int:
        """Put the original constants back into the layers still in ``graph``; how many layers."""
        return self._put(graph, self.items)

    def reapply(self, graph) -> int:
        """Put the equalized constants back (after :meth:`restore`); how many layers."""
        return self._put(graph, self.equalized)

    @staticmethod
    def _put(graph, items) -> int:
        live = {id(op) for op in graph.ops}
        changes: dict[int, tuple] = {}
        for op, i, data, name in items:
            if id(op) in live:
                changes.setdefault(id(op), (op, {}))[1][i] = (data, name)
        rw = Rewriter(graph)
        for op, by_index in changes.values():
            operands = list(op.operands)
            for i, (data, name) in by_index.items():
                operands[i] = rw.const(data, name, anchor=op)
            rw.set_operands(op, operands)
        rw.commit()
        graph.prune()
        return len(changes)


def image_range(preprocess) -> tuple[float, float] | None:
    """The range of ``(pixel - mean) * scale`` over 8-bit pixels (0..255) and every channel, when
    --mean or --scale is given (TIDL's inMean/inScale: the network's input is an image), else None."""
    mean, scale = getattr(preprocess, "mean", ()), getattr(preprocess, "scale", ())
    if not mean and not scale:
        return None
    try:
        m, k = np.broadcast_arrays(np.asarray(mean or (0.0,), np.float64), np.asarray(scale or (1.0,), np.float64))
    except ValueError:  # mismatched per-channel lists: pre-processing reports it
        return None
    ends = np.concatenate([(0.0 - m) * k, (255.0 - m) * k])
    return float(ends.min()), float(ends.max())


def _calib_path(ctx) -> str | None:
    quant = getattr(getattr(ctx, "options", None), "quant", None)
    return getattr(quant, "calib", None)


@hookimpl
def tidlc_passes():
    return [Equalize]
