"""The ``swish`` op: ``y = x * sigmoid(beta * x)`` (SiLU when beta is 1).

Darknet's ``activation=swish`` (EfficientNet, YOLOv4-csp) has no builtin
tidlc op. Declaring it as one op keeps the imported graph readable and lets
the interpreter run it directly; ``decompose-swish`` lowers it to builtin
ops for backends that do not know it.

Its traits say what it is, so tidlc's passes handle it with no edit to them:
it is element-wise and layout agnostic (the layout pass moves transposes
through it, as through a builtin activation) and a lookup-table function in
fixed point (the quantize pass gives it a scale of its own and the
fixed-point executor computes it by a table of ``swish_reference``). It is
not a ``FUSABLE_ACTIVATION``: the fused ``act`` attribute of conv2d and
friends knows only the builtin activations.
"""
from __future__ import annotations

import math

import numpy as np

from tidlc.ir.opdef import OpDef, Trait, a_float
from tidlc.ir.types import TensorType

FLOAT_DTYPES = ("f16", "f32", "f64")


def _finite(value: float) -> str | None:
    return None if math.isfinite(value) else "must be finite"


def swish_reference(x: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """Float reference. ``sigmoid(z) = (1 + tanh(z / 2)) / 2`` cannot overflow."""
    half = np.asarray(0.5, x.dtype)
    z = x * np.asarray(beta, x.dtype)
    return (x * (half + half * np.tanh(half * z))).astype(x.dtype, copy=False)


def _infer(op, types: list[TensorType]) -> list[TensorType]:
    x = types[0]
    if x.dtype not in FLOAT_DTYPES and x.quant is None:  # (a quantized tensor in a fixed-point graph)
        raise ValueError(f"swish needs a float tensor, got {x.dtype}")
    return [x]


def _compute(op, x: np.ndarray) -> np.ndarray:
    return swish_reference(x, op.attrs["beta"])


def _macs(op) -> int:
    # MACs count multiply-accumulate work for the MMA; an activation runs on
    # the C7x vector unit and has none (like the builtin activations).
    return 0


SWISH = OpDef(
    name="swish",
    operands=("x",),
    attrs={"beta": a_float(1.0, check=_finite, doc="slope inside the sigmoid")},
    infer=_infer,
    compute=_compute,
    macs=_macs,
    category="vector",
    traits={Trait.ELEMENTWISE, Trait.LAYOUT_AGNOSTIC, Trait.LUT},
    doc="Swish activation x * sigmoid(beta * x) (SiLU for beta = 1); from tidlc-example-plugin.",
)
