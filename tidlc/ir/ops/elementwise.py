"""Element-wise ops: activations, binary arithmetic with broadcasting, unary math, casts."""
from __future__ import annotations

import numpy as np

from tidlc.ir.opdef import Trait, a_float, a_str, defop
from tidlc.ir.ops._common import _erf, apply_act, broadcast_infer, check_act_params, same_as_first
from tidlc.ir.ops.nn import ACT_ATTRS, _act_check
from tidlc.ir.types import DTYPES, TensorType

# Standalone activation ops. Their attribute names, in the order they appear
# in a fused ``act_params`` tuple (so fuse-activation can move them).
ACT_PARAM_NAMES = {
    "relu": (), "relu6": (), "sigmoid": (), "tanh": (), "hardswish": (), "gelu": (),
    "clip": ("min", "max"), "leaky_relu": ("alpha",), "hardsigmoid": ("alpha", "beta"),
    "elu": ("alpha",),
}
_ACT_DEFAULTS = {"min": -np.inf, "max": np.inf, "alpha": 0.01, "beta": 0.5}
_ACT_DEFAULT_BY_OP = {("hardsigmoid", "alpha"): 0.2, ("elu", "alpha"): 1.0}
# the real range some activations always produce (quantization uses it instead of a calibrated one)
_ACT_RANGES = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "hardsigmoid": (0.0, 1.0), "relu6": (0.0, 6.0)}
# traits every element-wise op has: the layout pass moves transposes through it
_ELEMENTWISE = (Trait.ELEMENTWISE, Trait.LAYOUT_AGNOSTIC)


def act_params_of(op) -> tuple:
    """The fused-activation parameters of a standalone activation op."""
    return tuple(op.attrs[k] for k in ACT_PARAM_NAMES[op.kind])


def _make_act(kind: str, names: tuple):
    spec = {k: a_float(_ACT_DEFAULT_BY_OP.get((kind, k), _ACT_DEFAULTS[k])) for k in names}

    def compute(op, x):
        return apply_act(x, kind, tuple(op.attrs[k] for k in names))

    def infer(op, types):
        problem = check_act_params(kind, tuple(op.attrs[k] for k in names))
        if problem:
            raise ValueError(problem)
        return [types[0]]

    # every activation is a lookup table in fixed point; all but hardswish (which TIDL has no
    # fused form of) can be fused into a producer's ``act``
    traits = _ELEMENTWISE + (Trait.LUT,) + ((Trait.FUSABLE_ACTIVATION,) if kind != "hardswish" else ())
    defop(kind, ("x",), spec, infer=infer, compute=compute, category="vector",
          doc=f"Activation {kind}.", traits=traits, value_range=_ACT_RANGES.get(kind))


for _kind, _names in ACT_PARAM_NAMES.items():
    _make_act(_kind, _names)


# --------------------------------------------------------------------------- binary
def _binary_infer(op, types):
    _act_check(op)
    out = broadcast_infer(op, types)[0]
    return [out]


def _make_binary(kind: str, fn, doc: str):
    def compute(op, a, b):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out = fn(a, b)
        if out.dtype != a.dtype:  # the result has a's element type (as type inference says)
            out = out.astype(a.dtype, copy=False)
        return apply_act(out, op.attrs["act"], op.attrs["act_params"])

    defop(kind, ("a", "b"), dict(ACT_ATTRS), infer=_binary_infer, compute=compute,
          category="vector", doc=doc, traits=_ELEMENTWISE)


def _div(a, b):
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return np.trunc(a / b).astype(np.result_type(a, b))
    return a / b


_make_binary("add", np.add, "a + b with numpy broadcasting.")
_make_binary("sub", np.subtract, "a - b with numpy broadcasting.")
_make_binary("mul", np.multiply, "a * b with numpy broadcasting.")
_make_binary("div", _div, "a / b (integer division truncates, as ONNX).")
_make_binary("max", np.maximum, "element-wise maximum.")
_make_binary("min", np.minimum, "element-wise minimum.")
_make_binary("pow", np.power, "a ** b.")


# --------------------------------------------------------------------------- unary
_UNARY = {
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "abs": np.abs, "neg": np.negative,
    "reciprocal": np.reciprocal, "floor": np.floor, "ceil": np.ceil, "erf": _erf,
    "softplus": lambda x: np.logaddexp(x, np.zeros((), x.dtype)),
}


# unary math without a lookup-table form in fixed point (the quantizer keeps them in float)
_NO_TABLE = ("floor", "ceil")


def _make_unary(kind, fn):
    def compute(op, x):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return np.asarray(fn(x)).astype(x.dtype, copy=False)

    defop(kind, ("x",), {}, infer=same_as_first, compute=compute, category="vector",
          doc=f"element-wise {kind}.", traits=_ELEMENTWISE + (() if kind in _NO_TABLE else (Trait.LUT,)))


for _kind, _fn in _UNARY.items():
    _make_unary(_kind, _fn)

defop("identity", ("x",), {}, infer=same_as_first, compute=lambda op, x: x, category="data",
      doc="y = x (removed at -O1).", traits=_ELEMENTWISE + (Trait.SCALE_PRESERVING,))
defop("dropout", ("x",), {"ratio": a_float(0.5)}, infer=same_as_first, compute=lambda op, x: x,
      category="data", doc="Inference-time dropout: y = x (removed at -O1).",
      traits=_ELEMENTWISE + (Trait.SCALE_PRESERVING,))


def _cast_infer(op, types):
    return [types[0].with_dtype(op.attrs["dtype"]).with_quant(None)]


defop("cast", ("x",), {"dtype": a_str(choices=tuple(DTYPES))}, infer=_cast_infer,
      compute=lambda op, x: x.astype(DTYPES[op.attrs["dtype"]]), category="data",
      doc="Element type conversion.", traits=_ELEMENTWISE)


def _where_infer(op, types):
    out = broadcast_infer(op, types)[0]
    return [TensorType(out.shape, types[1].dtype, out.layout)]


# (not declared LAYOUT_AGNOSTIC yet: the layout pass has never moved transposes through it)
defop("where", ("cond", "a", "b"), {}, infer=_where_infer,
      compute=lambda op, c, a, b: np.where(c, a, b), category="vector", doc="select.",
      traits=(Trait.ELEMENTWISE,))
