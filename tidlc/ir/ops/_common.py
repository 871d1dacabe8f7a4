"""Helpers shared by the op tables: typing rules and activation numerics."""
from __future__ import annotations

import numpy as np

from tidlc.ir.types import TensorType

# Activations that can be fused into a producer's ``act`` attribute, with the
# number of float parameters each takes (``act_params``). ``prelu`` (TIDL actType 2)
# takes one slope per channel of the result (axis 1), or one for all: PER_CHANNEL.
PER_CHANNEL = -1
ACTIVATIONS = {
    "none": 0, "relu": 0, "relu6": 0, "clip": 2, "leaky_relu": 1, "sigmoid": 0, "tanh": 0,
    "hardsigmoid": 2, "hardswish": 0, "elu": 1, "gelu": 0, "prelu": PER_CHANNEL,
}


def check_act_params(act: str, params: tuple) -> str | None:
    want = ACTIVATIONS.get(act)
    if want is None:
        return f"unknown activation {act!r}"
    if want == PER_CHANNEL:
        return None if len(params) >= 1 else f"activation {act} takes one slope per channel (or one), got none"
    if len(params) != want:
        return f"activation {act} takes {want} parameter(s), got {len(params)}"
    return None


def _sigmoid(x):
    # exp of a non-positive number never overflows
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def _erf(x):
    try:
        from scipy.special import erf
        return erf(x)
    except ImportError:  # pragma: no cover - scipy is usually there via other deps
        import math
        return np.vectorize(math.erf, otypes=[x.dtype])(x)


def apply_act(x: np.ndarray, act: str, params: tuple = (), inplace: bool = False) -> np.ndarray:
    """The float reference of every fusable activation.

    ``inplace=True`` lets the clamping activations overwrite ``x`` (callers
    pass it for arrays they just allocated, e.g. a conv's output).
    """
    if act == "none":
        return x
    if inplace and x.flags.writeable and x.dtype.kind == "f":
        if act == "relu":
            return np.maximum(x, 0, out=x)
        if act in ("relu6", "clip"):
            lo, hi = (0.0, 6.0) if act == "relu6" else params
            return np.clip(x, lo, hi, out=x)
    if act == "relu":
        return np.maximum(x, 0, dtype=x.dtype)
    if act == "relu6":
        return np.clip(x, 0, 6).astype(x.dtype, copy=False)
    if act == "clip":
        lo, hi = params
        return np.clip(x, lo, hi).astype(x.dtype, copy=False)
    if act == "leaky_relu":
        return np.where(x >= 0, x, x * np.asarray(params[0], x.dtype))
    if act == "prelu":  # a slope per channel (axis 1; of a 1-D x, per element: a channel vector), or one
        slope = np.asarray(params, x.dtype)
        if slope.size > 1 and x.ndim >= 2:
            slope = slope.reshape((1, -1) + (1,) * (x.ndim - 2))
        return np.where(x >= 0, x, x * slope).astype(x.dtype, copy=False)
    if act == "sigmoid":
        return _sigmoid(x)
    if act == "tanh":
        return np.tanh(x)
    if act == "hardsigmoid":
        alpha, beta = params
        return np.clip(x * np.asarray(alpha, x.dtype) + np.asarray(beta, x.dtype), 0, 1).astype(x.dtype, copy=False)
    if act == "hardswish":
        return (x * np.clip(x / np.asarray(6, x.dtype) + np.asarray(0.5, x.dtype), 0, 1)).astype(x.dtype, copy=False)
    if act == "elu":
        alpha = np.asarray(params[0], x.dtype)
        return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))
    if act == "gelu":
        half = np.asarray(0.5, x.dtype)
        return (half * x * (1 + _erf(x / np.asarray(np.sqrt(2.0), x.dtype)))).astype(x.dtype, copy=False)
    raise ValueError(f"unknown activation {act!r}")


def same_as_first(op, types: list[TensorType]) -> list[TensorType]:
    return [types[0]]


def broadcast_shapes(*shapes):
    """numpy broadcasting over possibly unknown dims; None where unknown."""
    if any(s is None for s in shapes):
        return None
    rank = max(len(s) for s in shapes)
    out = []
    for dims in zip(*[(1,) * (rank - len(s)) + tuple(s) for s in shapes]):
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise ValueError(f"shapes {' and '.join(map(str, shapes))} do not broadcast")
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def broadcast_infer(op, types):
    shape = broadcast_shapes(*[t.shape for t in types])
    # the layout follows the operand of the output's rank
    layout = next((t.layout for t in types if t.shape is not None and shape is not None
                   and len(t.shape) == len(shape) and t.layout), None)
    return [TensorType(shape, types[0].dtype, layout)]


# ----------------------------------------------------------------------------- permute_attrs helpers
# For a LAYOUT_AGNOSTIC op whose operand is ``transpose(x, perm)``: the attributes it needs on ``x``.

def permuted_axis(axis: int, perm) -> int:
    """Axis ``axis`` of ``transpose(x, perm)`` is axis ``perm[axis]`` of ``x``."""
    return perm[axis % len(perm)]


def per_axis(values, perm) -> tuple:
    """A per-axis list of ``transpose(x, perm)``, re-ordered for ``x``."""
    inv = np.argsort(perm)
    return tuple(values[int(inv[j])] for j in range(len(perm)))


def kept_axes_perm(perm, dropped) -> tuple[int, ...]:
    """When an op drops the axes ``dropped`` of ``transpose(x, perm)``, computing it on ``x`` keeps
    ``x``'s remaining axes in ``x``'s order: the transpose that puts them in ``perm``'s order."""
    kept_src = sorted(perm[a] for a in range(len(perm)) if a not in dropped)
    wanted = [perm[a] for a in range(len(perm)) if a not in dropped]
    return tuple(kept_src.index(a) for a in wanted)


def permute_axis_attr(name: str = "axis"):
    """A ``permute_attrs`` hook for ops with one axis attribute (concat, split, softmax, scale)."""
    def permute(attrs_, perm):
        return {**attrs_, name: permuted_axis(attrs_[name], perm)}
    return permute


def norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return axis % rank


def spatial_out(size, k, stride, pad_begin, pad_end, dilation=1, ceil_mode=False):
    """Output length of a conv/pool window sweep (ONNX/Caffe rule, incl. ceil mode)."""
    if size is None:
        return None
    eff = (k - 1) * dilation + 1
    span = size + pad_begin + pad_end - eff
    if span < 0:
        raise ValueError(f"window {eff} larger than padded input {size + pad_begin + pad_end}")
    if ceil_mode:
        out = -(-span // stride) + 1
        # the last window must start inside the input or its leading pad
        if (out - 1) * stride >= size + pad_begin:
            out -= 1
    else:
        out = span // stride + 1
    return out


def require_nchw(t: TensorType, what: str) -> None:
    """Ops with a channel axis 1 (conv, pool, batchnorm, ...) refuse tensors typed NHWC."""
    if t.layout == "NHWC":
        raise ValueError(f"{what} computes on NCHW data, got an NHWC tensor {t} (transpose it first)")


def require_rank(t: TensorType, rank: int, what: str) -> None:
    if t.shape is not None and len(t.shape) != rank:
        raise ValueError(f"{what} must have rank {rank}, got shape {t.shape}")
