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
the weights; ``scope=all`` equalizes every pair. A pair
through ReLU6 or a clip is left alone: the clip is not homogeneous, and
replacing it by ReLU (the paper's choice for MobileNetV2) would change the
float outputs; ``relu6=relu`` allows it where calibration ranges show the
clip is never reached is future work.

Float outputs are unchanged up to rounding (tests: 1e-5 relative).
"""
from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np

from tidlc.hookspecs import hookimpl
from tidlc.passes.base import Pass
from tidlc.passes.rewrite import Rewriter

HOMOGENEOUS = ("none", "relu", "leaky_relu", "prelu")


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


def _pair(rw: Rewriter, first, scope: str = "depthwise"):
    """(first, second) if ``first`` feeds one layer that can absorb its channel scales, else None;
    with ``scope="depthwise"`` only pairs with a depthwise layer."""
    if _weights(first) is None or first.attrs.get("act", "none") not in HOMOGENEOUS:
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


def equalize_pair(rw: Rewriter, first, second, max_step: float = 1e-3) -> bool:
    """Equalize one pair in place (new constants); whether any scale moved by more than ``max_step``."""
    w1, w2 = _weights(first), _weights(second)
    r1, r2 = _out_ranges(w1).astype(np.float64), _in_ranges(second, w2).astype(np.float64)
    if r1.shape != r2.shape:
        return False
    ok = (r1 > 0) & (r2 > 0)
    s = np.ones_like(r1)
    s[ok] = np.sqrt(r1[ok] / r2[ok])
    if np.all(np.abs(s - 1.0) <= max_step):
        return False
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
    return True


@attrs.frozen
class Equalize(Pass):
    name: ClassVar[str] = "equalize"
    opt_level: ClassVar[int] = 3
    order: ClassVar[int] = 70  # after the fusions: BN is in the weights, activations are fused
    summary: ClassVar[str] = "cross-layer equalization of consecutive layers' per-channel weight ranges"

    iterations: int = 20
    scope: str = "depthwise"  # depthwise: pairs with a depthwise layer; all: every pair

    def run(self, ctx, graph) -> bool:
        if self.scope not in ("depthwise", "all"):
            from tidlc.diagnostics import TidlcError
            raise TidlcError(f"equalize: scope={self.scope!r}", hint="scope=depthwise (default) or scope=all",
                             code="option")
        changed_any = False
        for _ in range(self.iterations):
            rw = Rewriter(graph)
            moved = False
            for op in list(graph.ops):
                pair = _pair(rw, op, self.scope)
                if pair is not None:
                    moved |= equalize_pair(rw, *pair)
            rw.commit()
            graph.prune()  # the replaced weight constants
            changed_any |= moved
            if not moved:
                break
        return changed_any


@hookimpl
def tidlc_passes():
    return [Equalize]
