"""``decompose-swish``: lower the plugin's ``swish`` op to builtin ops.

Backends know only builtin ops, so from -O2 (the pass declares ``opt_level = 2``
and ``order = 45``: after the layout pass, before the fusions) every
``swish(x; beta)`` becomes::

    mul(x, sigmoid(x))                      beta == 1
    mul(x, sigmoid(mul(x, beta)))           otherwise

which computes the same function. ``approximate=true`` instead maps SiLU
(beta == 1) to the builtin ``hardswish`` (MobileNetV3's piecewise-linear
stand-in, one op that TIDL runs natively; absolute error up to about 0.14,
so only for networks trained or fine-tuned with it):
``tidlc -p 'decompose-swish{approximate=true},quantize' compile net.cfg``.
"""
from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np

from tidlc.ir.types import numpy_dtype
from tidlc.passes.base import Pass
from tidlc.passes.rewrite import Rewriter, apply_rules


def _emit(rw: Rewriter, anchor, kind: str, operands, name: str):
    op = rw.make(kind, operands, {}, name, anchor.loc)
    rw.insert_before(anchor, op)
    return op.results[0]


def lower_swish(rw: Rewriter, op, approximate: bool) -> bool:
    x = op.operands[0]
    beta = op.attrs["beta"]
    if approximate and beta == 1.0:
        out = _emit(rw, op, "hardswish", [x], op.name)
    else:
        z = x
        if beta != 1.0:
            b = rw.const(np.asarray(beta, numpy_dtype(x.type.dtype)), f"{op.name}.beta", anchor=op)
            z = _emit(rw, op, "mul", [x, b], f"{op.name}.scaled")
        gate = _emit(rw, op, "sigmoid", [z], f"{op.name}.gate")
        out = _emit(rw, op, "mul", [x, gate], op.name)
    rw.replace_op(op, out)
    return True


@attrs.frozen
class DecomposeSwish(Pass):
    name: ClassVar[str] = "decompose-swish"
    opt_level: ClassVar[int] = 2
    order: ClassVar[int] = 45  # between layout (40) and fuse-batchnorm (50)
    summary: ClassVar[str] = "lower the example plugin's swish op to sigmoid and mul"

    approximate: bool = False  # SiLU -> hardswish (one TIDL-native op, not exact)

    def run(self, ctx, graph) -> bool:
        count = sum(1 for op in graph.ops if op.kind == "swish")
        if not count:
            return False
        apply_rules(graph, [("swish", lambda rw, op: lower_swish(rw, op, self.approximate))])
        ctx.note(f"lowered {count} swish op(s)" + (" (approximately)" if self.approximate else ""))
        return True
