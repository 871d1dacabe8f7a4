"""``prune-channels`` (-O3): remove output channels that are zero everywhere, and the matching
input channels of every reader, where the TIDL cycle model says it saves work.

An output channel ``c`` of a ``conv2d`` (``groups == 1``) or of a 2-D ``dense`` is zero
for every input when its weights ``w[c]`` and its bias ``b[c]`` are all zero and its
fused activation maps 0 to 0 (``none``, ``relu``, ``relu6``, ``leaky_relu``, a ``clip``
whose range holds 0, ``tanh``, ``elu``, ``gelu``, ``hardswish``: checked numerically with
``apply_act``; not ``sigmoid``, ``hardsigmoid``). Such channels come from pruned or
sparsified training and from BN folding of dead channels. The channel goes when
*every* reader of the value can do without it:

* a regular ``conv2d`` / ``deconv2d`` (``groups == 1``) or a ``dense`` reading it drops
  the input-channel slice of its weight (the dropped inputs were multiplied by 0);
* a depthwise ``conv2d`` whose bias is 0 on that channel (and fused activation maps
  0 to 0) drops the whole channel (weight, bias, one group less): its output channel
  is zero as well, so pruning continues through it to its readers;
* a ``scale`` (TIDL's BatchNorm layer) or ``batchnorm`` whose shift is 0 on that
  channel, a ``prelu`` (per-channel or scalar slope), an activation op mapping 0 to 0,
  a pooling (``pool2d``, ``global_pool``): drop the channel of their per-channel
  constants, if any, and continue through them;
* a ``flatten`` (or a ``reshape`` to ``(N, -1)``) read only by ``dense`` layers: the
  dense weights drop the channel's block of ``H * W`` columns.

Anything else (a graph output, a ``concat``, an ``add`` of two branches, a grouped
convolution, a ``reshape`` the rules above do not cover, ...) keeps the channel: the
candidate set is the intersection of what every reader (recursively) can absorb, so a
graph output never changes shape. A layer whose channels are *all* zero is left alone
(it is a constant; and a structure-only model, ``missing_weights``, has all-zero
placeholder weights, so such graphs are skipped entirely).

Perf-guided (``guided=true``, the default): the MMA works in panels of ``p`` channels
(64 at 8 bits, 32 at 16; ``reference.py``: ``np * kp * per_panel`` with
``np = ceil(Cout / p)``, ``kp = ceil(K / p)``, ``K = Cin * kH * kW + 1`` for the bias
row). Removing channels never adds cycles, but saves next to none while the panel counts
stay (64 -> 63 channels costs the same MMA cycles; only a few DMA bytes go). A pruning is applied when it lowers the panel
product ``ceil(K / p) * ceil(Cout / p)`` of the producer or of a reader, or when it
reaches a vector layer (depthwise, scale, pooling, activation: their cycles scale with
the channel count). The pass mirrors that arithmetic instead of calling the perf model:
core passes cannot import ``tidlc.backends``, and the MMA term is exact for the panel
counts; the tests check the decision against ``tidlc.backends.tidl.perf.estimate``.
``guided=false`` prunes every removable zero channel.

Float outputs are unchanged up to the summation order of the remaining terms.
"""
from __future__ import annotations

import math
from typing import ClassVar

import attrs
import numpy as np

from tidlc.hookspecs import hookimpl
from tidlc.ir.ops._common import ACTIVATIONS, apply_act
from tidlc.ir.ops.elementwise import act_params_of
from tidlc.passes.base import Pass
from tidlc.passes.rewrite import Rewriter

POOLS = ("pool2d", "global_pool")


def maps_zero_to_zero(act: str, params: tuple = ()) -> bool:
    """Whether the fused activation ``act`` gives exactly 0 for an input of 0."""
    try:
        out = apply_act(np.zeros(1, np.float32), act, tuple(params))
    except (ValueError, TypeError, IndexError):
        return False
    return bool(np.all(out == 0))


def _act_ok(op) -> bool:
    return maps_zero_to_zero(op.attrs.get("act", "none"), op.attrs.get("act_params", ()))


def _f32(v) -> np.ndarray | None:
    c = v.const_value()
    return c if c is not None and c.dtype == np.float32 else None


def _bias(op) -> tuple[bool, np.ndarray | None]:
    """(usable, bias or None): unusable when the bias operand is not a constant."""
    if len(op.operands) < 3:
        return True, None
    b = op.operands[2].const_value()
    return b is not None, b


def _is_depthwise(op, channels: int) -> bool:
    w = op.operands[1].type.shape
    return (op.kind == "conv2d" and w is not None and w[1] == 1 and w[0] == channels
            and op.attrs["groups"] == channels)


def _zero_channels(op) -> tuple[np.ndarray, int] | None:
    """(indices of the output channels that are always 0, channel count) of a root layer."""
    if op.kind == "conv2d":
        if op.attrs["groups"] != 1:
            return None
    elif op.kind == "dense":
        if op.results[0].type.rank != 2:
            return None
    else:
        return None
    w = _f32(op.operands[1])
    ok, b = _bias(op)
    if w is None or not ok or not _act_ok(op):
        return None
    zero = ~np.any(w.reshape(w.shape[0], -1) != 0, axis=1)
    if b is not None:
        zero &= b.reshape(-1) == 0
    return np.flatnonzero(zero), w.shape[0]


@attrs.define
class _Walk:
    """What the readers of the pruned channels need: the channels they can absorb, and the
    layers whose work shrinks (for the perf decision)."""

    mma: list = attrs.Factory(list)  # (K, K per channel, Cout per group, groups)
    vector: int = 0  # vector layers on the pruned channels


def _shift_zero(op, channels: int) -> np.ndarray | None:
    """Per channel: does a zero input give a zero output? (scale / batchnorm / activations)."""
    if not _act_ok(op):
        return np.zeros(channels, bool)
    if op.kind == "scale":
        ok, b = _bias(op)
        if not ok or _f32(op.operands[1]) is None:
            return None
        if b is None:
            return np.ones(channels, bool)
        return np.broadcast_to(b.reshape(-1) == 0, (channels,))
    if op.kind == "batchnorm":
        params = [v.const_value() for v in op.operands[1:]]
        if any(p is None for p in params):
            return None
        gamma, beta, mean, var = (p.reshape(-1) for p in params)
        s = (gamma / np.sqrt(var.astype(np.float64) + op.attrs["epsilon"])).astype(np.float32)
        shift = (beta - mean * s).astype(np.float32)
        return np.broadcast_to(shift == 0, (channels,))
    return np.ones(channels, bool)


def _prelu_axis(slope: np.ndarray, channels: int) -> int | None:
    """The channel axis of a prelu slope (per channel), -1 for a scalar, None otherwise."""
    if slope.size == 1:
        return -1
    if slope.ndim == 1 and slope.size == channels:
        return 0
    if slope.ndim >= 3 and slope.shape[-3] == channels and slope.size == channels:
        return slope.ndim - 3
    return None


def _is_activation(op) -> bool:
    return op.kind in ACTIVATIONS and op.kind != "none" and len(op.operands) == 1


def _flat_readers(rw: Rewriter, op, rank: int) -> bool:
    """A flatten / reshape of NCHW into (N, C*H*W) whose readers are all dense layers."""
    x, out = op.operands[0].type, op.results[0].type
    if rank != 4 or not (x.is_static and out.is_static) or len(out.shape) != 2:
        return False
    if out.shape != (x.shape[0], math.prod(x.shape[1:])):
        return False
    if op.kind == "flatten":
        if op.attrs["axis"] not in (1, -3):
            return False
    elif (op.kind != "reshape" or len(op.operands) != 1 or len(op.attrs["shape"]) != 2
          or op.attrs["shape"][0] not in (0, x.shape[0])):
        return False
    if rw.is_output(op.results[0]):
        return False
    users = rw.users(op.results[0])
    return bool(users) and all(u.kind == "dense" and i == 0 and _f32(u.operands[1]) is not None
                               for u, i in users)


def absorbable(rw: Rewriter, v, cand: np.ndarray, block: int, walk: _Walk) -> np.ndarray:
    """The channels of ``cand`` (a bool mask over ``v``'s channels, axis 1) that every reader of
    ``v`` can do without; ``block`` > 1: ``v`` is a flattened NCHW map, channel ``c`` is the
    columns ``[c * block, (c + 1) * block)``."""
    if rw.is_output(v):
        return np.zeros_like(cand)
    channels = cand.size
    rank = v.type.rank
    for op, i in rw.users(v):
        if not cand.any():
            break
        if i != 0:
            return np.zeros_like(cand)
        kind = op.kind
        if kind == "dense":
            w = _f32(op.operands[1])
            if w is None or rank != 2 or w.shape[1] != channels * block or not _bias(op)[0]:
                return np.zeros_like(cand)
            walk.mma.append((w.shape[1] + (len(op.operands) > 2), block, w.shape[0], 1))
            continue
        if block != 1 or rank not in (2, 4):
            return np.zeros_like(cand)
        if kind in ("conv2d", "deconv2d") and rank == 4:
            w = _f32(op.operands[1])
            if w is None or not _bias(op)[0]:
                return np.zeros_like(cand)
            bias = int(len(op.operands) > 2)
            if kind == "conv2d" and op.attrs["groups"] == 1:
                per = w.shape[2] * w.shape[3]
                walk.mma.append((w.shape[1] * per + bias, per, w.shape[0], 1))
                continue
            if kind == "deconv2d" and op.attrs["groups"] == 1:
                sh, sw = op.attrs["strides"]
                per = math.ceil(w.shape[2] / sh) * math.ceil(w.shape[3] / sw)
                walk.mma.append((w.shape[0] * per + bias, per, w.shape[1], 1))
                continue
            if kind == "conv2d" and _is_depthwise(op, channels):
                _, b = _bias(op)
                ok = np.full(channels, _act_ok(op)) if b is None else (b.reshape(-1) == 0) & _act_ok(op)
                cand = cand & ok
                walk.vector += 1
                cand = cand & absorbable(rw, op.results[0], cand, 1, walk)
                continue
            return np.zeros_like(cand)
        if kind in ("scale", "batchnorm"):
            if op.attrs.get("axis", 1) % rank != 1 or any(
                    p.type.shape is None or math.prod(p.type.shape) not in (1, channels) for p in op.operands[1:]):
                return np.zeros_like(cand)
            ok = _shift_zero(op, channels)
            if ok is None:
                return np.zeros_like(cand)
        elif kind == "prelu":
            slope = _f32(op.operands[1])
            axis = None if slope is None else _prelu_axis(slope, channels)
            if axis is None or (slope.ndim > 1 and slope.size > 1 and rank != 4):
                return np.zeros_like(cand)
            ok = np.ones(channels, bool)
        elif _is_activation(op):
            ok = np.full(channels, maps_zero_to_zero(kind, act_params_of(op)))
        elif kind in POOLS and rank == 4:
            ok = np.ones(channels, bool)
        elif kind in ("flatten", "reshape") and _flat_readers(rw, op, rank):
            shape = v.type.shape
            cand = cand & absorbable(rw, op.results[0], cand, shape[2] * shape[3], walk)
            continue
        else:
            return np.zeros_like(cand)
        cand = cand & ok
        walk.vector += 1
        cand = cand & absorbable(rw, op.results[0], cand, 1, walk)
    return cand


def _drop(a: np.ndarray, axis: int, keep: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.take(a, np.flatnonzero(keep), axis=axis))


def _columns(keep: np.ndarray, block: int) -> np.ndarray:
    return np.repeat(keep, block)


def _remake(rw: Rewriter, op, operands, **attrs_) -> object:
    new = rw.make(op.kind, operands, {**op.attrs, **attrs_}, op.name, op.loc)
    rw.replace_op(op, new)
    return new


def _act_kept(op, keep: np.ndarray) -> dict:
    """A fused prelu's per-channel slopes (``act_params``) of the channels ``keep``, as attributes."""
    params = op.attrs.get("act_params", ())
    if op.attrs.get("act") != "prelu" or len(params) != keep.size:
        return {}
    return {"act_params": tuple(p for p, k in zip(params, keep) if k)}


def _param(rw: Rewriter, op, index: int, keep: np.ndarray, axis: int = 0, suffix: str = "pruned"):
    v = op.operands[index]
    a = v.const_value()
    name = (v.producer.name if v.producer is not None and v.producer.name else f"{op.name}.{index}") + f".{suffix}"
    return rw.const(_drop(a, axis, keep).astype(a.dtype, copy=False), name, anchor=op)


def prune_readers(rw: Rewriter, v, keep: np.ndarray, block: int = 1) -> None:
    """Drop the channels ``~keep`` from every reader of ``v`` (already checked by ``absorbable``)."""
    for op, _ in list(rw.users(v)):
        ops = list(op.operands)
        kind = op.kind
        if kind == "dense":
            ops[1] = _param(rw, op, 1, _columns(keep, block), axis=1)
            _remake(rw, op, ops)
            continue
        if kind in ("conv2d", "deconv2d") and op.attrs["groups"] == 1:
            ops[1] = _param(rw, op, 1, keep, axis=1 if kind == "conv2d" else 0)
            _remake(rw, op, ops)
            continue
        if kind in ("flatten", "reshape"):
            shape = v.type.shape
            extra = {"shape": (op.attrs["shape"][0], -1)} if kind == "reshape" else {}
            new = _remake(rw, op, ops, **extra)
            prune_readers(rw, new.results[0], keep, shape[2] * shape[3])
            continue
        extra = {}
        if kind == "conv2d":  # depthwise
            ops[1] = _param(rw, op, 1, keep)
            if len(ops) > 2:
                ops[2] = _param(rw, op, 2, keep)
            extra["groups"] = int(keep.sum())
            extra.update(_act_kept(op, keep))
        elif kind in ("scale", "batchnorm"):
            for j in range(1, len(ops)):
                if math.prod(ops[j].type.shape) > 1:
                    ops[j] = _param(rw, op, j, keep, axis=_channel_axis(ops[j].type.shape))
        elif kind == "prelu":
            slope = ops[1].const_value()
            axis = _prelu_axis(slope, keep.size)
            if axis >= 0:
                ops[1] = _param(rw, op, 1, keep, axis=axis)
        new = _remake(rw, op, ops, **extra)
        prune_readers(rw, new.results[0], keep, 1)


def _channel_axis(shape) -> int:
    """The axis of a per-channel parameter that holds the channels (the one not of size 1)."""
    return next((i for i, d in enumerate(shape) if d != 1), 0)


def _panels(n: int, p: int) -> int:
    return -(-n // p)


def panel_gain(root_k: int, cout: int, removed: int, walk: _Walk, panel: int) -> int:
    """MMA weight panels saved: producer ``ceil(K/p) * ceil(Cout/p)``, readers' K panels."""
    before = _panels(root_k, panel) * _panels(cout, panel)
    after = _panels(root_k, panel) * _panels(cout - removed, panel)
    for k, per, cout_g, groups in walk.mma:
        before += _panels(k, panel) * groups * _panels(cout_g, panel)
        after += _panels(k - removed * per, panel) * groups * _panels(cout_g, panel)
    return before - after


def _panel_width(ctx) -> int:
    """The MMA panel (channels): 64 at 8 bits, 32 at 16 (the compile's --bits; 8 without options)."""
    bits = getattr(getattr(getattr(ctx, "options", None), "quant", None), "bits", 8)
    return 32 if bits == 16 else 64


@attrs.frozen
class PruneChannels(Pass):
    name: ClassVar[str] = "prune-channels"
    opt_level: ClassVar[int] = 3
    order: ClassVar[int] = 65  # after the fusions (BN folded, activations fused), before equalize
    summary: ClassVar[str] = "remove always-zero conv/dense output channels and their readers' input channels"

    guided: bool = True  # only where the MMA panel counts (or a vector layer's channels) go down
    max_iters: int = 8

    def run(self, ctx, graph) -> bool:
        if graph.attrs.get("missing_weights"):
            return False  # structure-only: every weight is a zero placeholder
        panel = _panel_width(ctx)
        changed = False
        for _ in range(self.max_iters):
            rw = Rewriter(graph)
            moved = False
            for op in list(graph.ops):
                if id(op) in rw.dead:
                    continue
                moved |= self._prune(rw, op, ctx, panel)
            rw.commit()
            if not moved:
                break
            graph.prune({"const"})  # the replaced weights
            changed = True
        return changed

    def _prune(self, rw: Rewriter, op, ctx, panel: int) -> bool:
        found = _zero_channels(op)
        if found is None:
            return False
        zero, cout = found
        if zero.size == 0 or zero.size == cout:
            return False
        v = op.results[0]
        cand = np.zeros(cout, bool)
        cand[zero] = True
        walk = _Walk()
        cand = absorbable(rw, v, cand, 1, walk)
        removed = int(cand.sum())
        if removed == 0:
            return False
        w = op.operands[1].const_value()
        root_k = int(math.prod(w.shape[1:])) + (len(op.operands) > 2)
        gain = panel_gain(root_k, cout, removed, walk, panel)
        if self.guided and gain <= 0 and walk.vector == 0:
            return False
        keep = ~cand
        ops = list(op.operands)
        ops[1] = _param(rw, op, 1, keep)
        if len(ops) > 2:
            ops[2] = _param(rw, op, 2, keep)
        new = _remake(rw, op, ops, **_act_kept(op, keep))
        prune_readers(rw, new.results[0], keep, 1)
        if ctx is not None and hasattr(ctx, "note"):
            ctx.note(f"{op.kind} '{op.name}': {cout} -> {cout - removed} channels "
                     f"({gain} MMA weight panel(s) less, {walk.vector} vector layer(s) on fewer channels)")
        return True


@hookimpl
def tidlc_passes():
    return [PruneChannels]
