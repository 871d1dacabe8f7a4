"""Data-movement and shape ops: concat, split, slice, pad, reshape, transpose, resize, ..."""
from __future__ import annotations

import attrs
import numpy as np

from tidlc.ir.opdef import Trait, a_bool, a_float, a_floats, a_int, a_ints, a_str, defop, positive
from tidlc.ir.ops._common import (
    kept_axes_perm,
    norm_axis,
    per_axis,
    permute_axis_attr,
    permuted_axis,
    require_nchw,
)

# data movement: the result's values are the operand's, so quantization keeps its scale
_MOVES = (Trait.SCALE_PRESERVING,)
# ... and a transpose of the operand can move below it (with the axis attributes rewritten)
_MOVES_ANY_LAYOUT = (Trait.SCALE_PRESERVING, Trait.LAYOUT_AGNOSTIC)
from tidlc.ir.types import DTYPES, TensorType


def _shape_known(*types):
    return all(t.shape is not None for t in types)


# --------------------------------------------------------------------------- concat / split
def _concat_infer(op, types):
    if not _shape_known(*types):
        return [TensorType(None, types[0].dtype, types[0].layout)]
    rank = len(types[0].shape)
    axis = norm_axis(op.attrs["axis"], rank)
    total = 0
    for t in types:
        if len(t.shape) != rank:
            raise ValueError(f"concat inputs have different ranks: {[t.shape for t in types]}")
        for d, (a, b) in enumerate(zip(t.shape, types[0].shape)):
            if d != axis and a is not None and b is not None and a != b:
                raise ValueError(f"concat inputs differ outside axis {axis}: {[t.shape for t in types]}")
        total = None if total is None or t.shape[axis] is None else total + t.shape[axis]
    shape = list(types[0].shape)
    shape[axis] = total
    return [TensorType(shape, types[0].dtype, types[0].layout)]


defop("concat", ("xs+",), {"axis": a_int(1)}, infer=_concat_infer,
      compute=lambda op, *xs: np.concatenate(xs, axis=op.attrs["axis"]), category="data",
      traits=_MOVES_ANY_LAYOUT, permute_attrs=permute_axis_attr("axis"),
      doc="Concatenate along an axis.")


def _split_infer(op, types):
    x = types[0]
    sizes = op.attrs["sizes"]
    if x.shape is None:
        return [TensorType(None, x.dtype, x.layout)] * len(sizes)
    axis = norm_axis(op.attrs["axis"], len(x.shape))
    if x.shape[axis] is not None and sum(sizes) != x.shape[axis]:
        raise ValueError(f"split sizes {sizes} do not add up to {x.shape[axis]}")
    outs = []
    for s in sizes:
        shape = list(x.shape)
        shape[axis] = s
        outs.append(TensorType(shape, x.dtype, x.layout))
    return outs


def _split_compute(op, x):
    bounds = np.cumsum(op.attrs["sizes"])[:-1]
    return [np.ascontiguousarray(p) for p in np.split(x, bounds, axis=op.attrs["axis"])]


defop("split", ("x",), {"axis": a_int(1), "sizes": a_ints(check=positive)}, infer=_split_infer,
      compute=_split_compute, num_results=lambda a: len(a["sizes"]), category="data",
      traits=_MOVES_ANY_LAYOUT, permute_attrs=permute_axis_attr("axis"),
      doc="Split into consecutive parts of the given sizes.")


# --------------------------------------------------------------------------- slice
def _slice_bounds(shape, starts, ends, axes, steps):
    out = list(shape)
    slices = [slice(None)] * len(shape)
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = norm_axis(a, len(shape))
        if shape[a] is None:
            out[a] = None
            continue
        sl = slice(s, e, st)
        lo, hi, step = sl.indices(shape[a])
        # slice.indices gives stop -1 for "down to index 0"; as a slice stop -1 means the end
        slices[a] = slice(lo, hi if hi >= 0 else None, step)
        out[a] = len(range(lo, hi, step))
    return out, tuple(slices)


def _slice_check(op):
    a = op.attrs
    n = len(a["starts"])
    if len(a["ends"]) != n or len(a["axes"]) != n or (a["steps"] and len(a["steps"]) != n):
        raise ValueError("slice starts/ends/axes/steps must have equal lengths")
    if any(s == 0 for s in a["steps"]):
        raise ValueError("slice step 0")


def _steps(op):
    return op.attrs["steps"] or (1,) * len(op.attrs["starts"])


def _slice_infer(op, types):
    _slice_check(op)
    x = types[0]
    if x.shape is None:
        return [x]
    a = op.attrs
    shape, _ = _slice_bounds(x.shape, a["starts"], a["ends"], a["axes"], _steps(op))
    return [TensorType(shape, x.dtype, x.layout)]


def _slice_compute(op, x):
    a = op.attrs
    _, sl = _slice_bounds(x.shape, a["starts"], a["ends"], a["axes"], _steps(op))
    return np.ascontiguousarray(x[sl])


def _permute_slice(attrs_, perm):
    return {**attrs_, "axes": tuple(permuted_axis(a, perm) for a in attrs_["axes"])}


defop("slice", ("x",), {"starts": a_ints(), "ends": a_ints(), "axes": a_ints(), "steps": a_ints(())},
      infer=_slice_infer, compute=_slice_compute, category="data",
      traits=_MOVES_ANY_LAYOUT, permute_attrs=_permute_slice,
      doc="Python-style slicing per axis (ends are clamped, negative indices count from the end).")


# --------------------------------------------------------------------------- pad
def _pad_infer(op, types):
    x = types[0]
    pads = op.attrs["pads"]
    if x.shape is None:
        return [x]
    rank = len(x.shape)
    if len(pads) != 2 * rank:
        raise ValueError(f"pad needs {2 * rank} values (begins then ends), got {len(pads)}")
    shape = [None if d is None else d + pads[i] + pads[i + rank] for i, d in enumerate(x.shape)]
    if any(d is not None and d <= 0 for d in shape):
        raise ValueError(f"pad {pads} leaves an empty tensor")
    return [TensorType(shape, x.dtype, x.layout)]


def _pad_compute(op, x):
    pads, mode = op.attrs["pads"], op.attrs["mode"]
    rank = x.ndim
    begin, end = np.array(pads[:rank]), np.array(pads[rank:])
    # negative pads crop
    crop = tuple(slice(max(0, -b), x.shape[i] - max(0, -e)) for i, (b, e) in enumerate(zip(begin, end)))
    x = x[crop]
    width = [(max(0, b), max(0, e)) for b, e in zip(begin, end)]
    if mode == "constant":
        return np.pad(x, width, mode="constant", constant_values=op.attrs["value"])
    return np.pad(x, width, mode=mode)  # (PAD_MODES: numpy's names)


def _permute_pad(attrs_, perm):
    rank = len(perm)
    pads = attrs_["pads"]
    return {**attrs_, "pads": per_axis(pads[:rank], perm) + per_axis(pads[rank:], perm)}


# reflect: mirrored without the edge row (ONNX, TF REFLECT); symmetric: with it (TF SYMMETRIC);
# edge: the edge row repeated; wrap: the other side's rows (ONNX 19)
PAD_MODES = ("constant", "reflect", "edge", "symmetric", "wrap")


defop("pad", ("x",), {"pads": a_ints(), "mode": a_str("constant", choices=PAD_MODES),
                      "value": a_float(0.0)},
      infer=_pad_infer, compute=_pad_compute, category="data",
      traits=_MOVES_ANY_LAYOUT, permute_attrs=_permute_pad,
      doc="Pad every axis: pads = (begin_0..begin_n-1, end_0..end_n-1).")


# --------------------------------------------------------------------------- reshape family
def resolve_reshape(in_shape, target, allowzero=False):
    """ONNX reshape rule: 0 copies the input dim (unless allowzero), -1 is inferred."""
    out = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if in_shape is None or i >= len(in_shape):
                raise ValueError(f"reshape: 0 at position {i} has no input dim to copy")
            out.append(in_shape[i])
        else:
            out.append(int(d))
    if out.count(-1) > 1:
        raise ValueError(f"reshape target {tuple(target)} has more than one -1")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1 and d is not None]))
        if in_shape is None or any(d is None for d in in_shape) or any(d is None for d in out):
            out[out.index(-1)] = None
        else:
            total = int(np.prod(in_shape))
            if known == 0 or total % known:
                raise ValueError(f"cannot reshape {tuple(in_shape)} to {tuple(target)}")
            out[out.index(-1)] = total // known
    if in_shape is not None and all(d is not None for d in in_shape) and all(d is not None for d in out):
        if int(np.prod(in_shape)) != int(np.prod(out)):
            raise ValueError(f"cannot reshape {tuple(in_shape)} to {tuple(target)}")
    return out


def _reshape_target(op, shape_value=None):
    if len(op.operands) > 1:
        arr = shape_value if shape_value is not None else op.operands[1].const_value()
        return None if arr is None else [int(v) for v in np.asarray(arr).reshape(-1)]
    return list(op.attrs["shape"])


def _reshape_infer(op, types):
    x = types[0]
    target = _reshape_target(op)
    if target is None:
        n = types[1].shape[0] if types[1].shape else None
        return [TensorType(None if n is None else (None,) * n, x.dtype)]
    out = resolve_reshape(x.shape, target, op.attrs["allowzero"])
    layout = x.layout if x.shape is not None and len(out) == len(x.shape) and x.shape[:2] == tuple(out[:2]) else None
    return [TensorType(out, x.dtype, layout)]


def _reshape_compute(op, x, shape=None):
    target = _reshape_target(op, shape)
    return x.reshape(resolve_reshape(x.shape, target, op.attrs["allowzero"]))


defop("reshape", ("x", "shape?"), {"shape": a_ints(()), "allowzero": a_bool(False)},
      infer=_reshape_infer, compute=_reshape_compute, category="data", traits=_MOVES,
      doc="Reshape; target from the 'shape' attribute or a shape operand (0 copies, -1 infers).")


def _flatten_infer(op, types):
    x = types[0]
    if x.shape is None:
        return [TensorType((None, None), x.dtype)]
    axis = _flatten_axis(op.attrs["axis"], len(x.shape))

    def prod(ds):
        return None if any(d is None for d in ds) else int(np.prod(ds, dtype=np.int64))

    return [TensorType((prod(x.shape[:axis]), prod(x.shape[axis:])), x.dtype)]


def _flatten_axis(axis: int, rank: int) -> int:
    # ONNX: axis in [-rank, rank]; a negative axis counts from the end
    if not -rank <= axis <= rank:
        raise ValueError(f"flatten axis {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _flatten_compute(op, x):
    axis = _flatten_axis(op.attrs["axis"], x.ndim)
    return x.reshape(int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))


defop("flatten", ("x",), {"axis": a_int(1)}, infer=_flatten_infer, compute=_flatten_compute,
      category="data", traits=_MOVES, doc="Collapse into 2-D at 'axis'.")


def _transpose_infer(op, types):
    x = types[0]
    perm = op.attrs["perm"]
    if x.shape is None:
        return [x]
    if sorted(perm) != list(range(len(x.shape))):
        raise ValueError(f"transpose perm {perm} is not a permutation of rank {len(x.shape)}")
    quant = x.quant
    if quant is not None and quant.axis is not None:  # per-channel: the channel axis moves
        quant = attrs.evolve(quant, axis=perm.index(quant.axis % len(perm)))
    return [TensorType([x.shape[p] for p in perm], x.dtype, LAYOUT_PERMS.get((x.layout, tuple(perm))), quant)]


# transposes that change a tensor's layout: (layout, perm) -> the result's layout
LAYOUT_PERMS = {("NHWC", (0, 3, 1, 2)): "NCHW", ("NCHW", (0, 2, 3, 1)): "NHWC"}


defop("transpose", ("x",), {"perm": a_ints()}, infer=_transpose_infer,
      compute=lambda op, x: np.ascontiguousarray(np.transpose(x, op.attrs["perm"])), category="data",
      traits=_MOVES, doc="Permute axes.")


def _squeeze_infer(op, types):
    x = types[0]
    if x.shape is None:
        return [x]
    axes = op.attrs["axes"]
    rank = len(x.shape)
    drop = {norm_axis(a, rank) for a in axes} if axes else {i for i, d in enumerate(x.shape) if d == 1}
    for a in drop:
        if x.shape[a] not in (1, None):
            raise ValueError(f"squeeze axis {a} has size {x.shape[a]}")
    return [TensorType([d for i, d in enumerate(x.shape) if i not in drop], x.dtype)]


def _squeeze_compute(op, x):
    axes = op.attrs["axes"]
    return np.squeeze(x, axis=tuple(axes) if axes else None)


def _permute_squeeze(attrs_, perm):
    """The dropped axes move; without explicit axes (drop every size-1 axis) it cannot be moved."""
    if not attrs_["axes"]:
        return None
    dropped = {a % len(perm) for a in attrs_["axes"]}
    return {**attrs_, "axes": tuple(sorted(perm[a] for a in dropped))}, kept_axes_perm(perm, dropped)


defop("squeeze", ("x",), {"axes": a_ints(())}, infer=_squeeze_infer, compute=_squeeze_compute,
      category="data", traits=_MOVES_ANY_LAYOUT, permute_attrs=_permute_squeeze, doc="Remove size-1 axes (all of them if 'axes' is empty).")


def _unsqueeze_infer(op, types):
    x = types[0]
    if x.shape is None:
        return [x]
    rank = len(x.shape) + len(op.attrs["axes"])
    axes = sorted(norm_axis(a, rank) for a in op.attrs["axes"])
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return [TensorType(shape, x.dtype)]


def _unsqueeze_compute(op, x):
    rank = x.ndim + len(op.attrs["axes"])
    return np.expand_dims(x, tuple(sorted(a % rank for a in op.attrs["axes"])))


defop("unsqueeze", ("x",), {"axes": a_ints()}, infer=_unsqueeze_infer, compute=_unsqueeze_compute,
      category="data", traits=_MOVES, doc="Insert size-1 axes.")


def _expand_infer(op, types):
    from tidlc.ir.ops._common import broadcast_shapes
    target = op.operands[1].const_value()
    x = types[0]
    if target is None or x.shape is None:
        return [TensorType(None, x.dtype)]
    return [TensorType(broadcast_shapes(x.shape, tuple(int(v) for v in target)), x.dtype, x.layout)]


def _expand_compute(op, x, shape):
    from tidlc.ir.ops._common import broadcast_shapes
    return np.asarray(np.broadcast_to(x, broadcast_shapes(x.shape, tuple(int(v) for v in shape))), order="C")


defop("expand", ("x", "shape"), {}, infer=_expand_infer, compute=_expand_compute, category="data",
      traits=_MOVES, doc="Broadcast to a shape (ONNX Expand).")


# --------------------------------------------------------------------------- shape ops
def _shape_infer(op, types):
    x = types[0]
    return [TensorType((None if x.shape is None else len(x.shape),), "i64")]


defop("shape", ("x",), {}, infer=_shape_infer,
      compute=lambda op, x: np.array(x.shape, dtype=np.int64), category="shape",
      doc="The shape of a tensor as a 1-D i64 tensor (folded when the shape is static).")


def _cos_infer(op, types):
    shape = op.operands[0].const_value()
    n = types[0].shape[0] if types[0].shape else None
    dims = None if shape is None else tuple(int(v) for v in shape.reshape(-1))
    return [TensorType(dims if dims is not None else (None,) * n if n is not None else None,
                       op.attrs["dtype"])]


def _cos_compute(op, shape):
    # a zero-stride view: a splat constant costs no memory until someone writes it
    value = np.array(op.attrs["value"], dtype=DTYPES[op.attrs["dtype"]])
    return np.broadcast_to(value, tuple(int(v) for v in shape.reshape(-1)))


defop("constant_of_shape", ("shape",), {"value": a_float(0.0), "dtype": a_str("f32", choices=tuple(DTYPES))},
      infer=_cos_infer, compute=_cos_compute, category="shape",
      doc="A tensor of the given shape filled with one value.")


def _gather_infer(op, types):
    x, idx = types
    if x.shape is None or idx.shape is None:
        return [TensorType(None, x.dtype)]
    axis = norm_axis(op.attrs["axis"], len(x.shape))
    return [TensorType(tuple(x.shape[:axis]) + tuple(idx.shape) + tuple(x.shape[axis + 1:]), x.dtype)]


def _gather_compute(op, x, idx):
    axis = op.attrs["axis"] % x.ndim
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return np.take(x, idx, axis=axis)


defop("gather", ("x", "indices"), {"axis": a_int(0)}, infer=_gather_infer, compute=_gather_compute,
      category="data", traits=_MOVES, doc="Take entries along an axis (ONNX Gather).")


# --------------------------------------------------------------------------- rearrangements
def _d2s_infer(op, types):
    x = types[0]
    require_nchw(x, "depth_to_space")
    b = op.attrs["block"]
    if x.shape is None:
        return [x]
    n, c, h, w = x.shape
    if c is not None and c % (b * b):
        raise ValueError(f"depth_to_space: {c} channels not divisible by {b}x{b}")
    return [TensorType((n, None if c is None else c // (b * b), None if h is None else h * b,
                        None if w is None else w * b), x.dtype, x.layout)]


def _d2s_compute(op, x):
    b, mode = op.attrs["block"], op.attrs["mode"]
    n, c, h, w = x.shape
    if mode == "DCR":
        t = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        t = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return np.ascontiguousarray(t.reshape(n, c // (b * b), h * b, w * b))


defop("depth_to_space", ("x",), {"block": a_int(check=positive), "mode": a_str("DCR", choices=("DCR", "CRD"))},
      infer=_d2s_infer, compute=_d2s_compute, category="data", traits=_MOVES, doc="Depth to space (NCHW).")


def _shuffle_infer(op, types):
    x = types[0]
    require_nchw(x, "shuffle_channel")
    g = op.attrs["groups"]
    if x.shape is not None and x.shape[1] is not None and x.shape[1] % g:
        raise ValueError(f"shuffle_channel: {x.shape[1]} channels not divisible by {g} groups")
    return [x]


def _shuffle_compute(op, x):
    g = op.attrs["groups"]
    n, c = x.shape[:2]
    return np.ascontiguousarray(x.reshape((n, g, c // g) + x.shape[2:]).swapaxes(1, 2).reshape(x.shape))


defop("shuffle_channel", ("x",), {"groups": a_int(check=positive)}, infer=_shuffle_infer,
      compute=_shuffle_compute, category="data", traits=_MOVES, doc="ShuffleNet channel shuffle.")


# --------------------------------------------------------------------------- resize
def _resize_infer(op, types):
    x = types[0]
    scales = op.attrs["scales"]
    if x.shape is None:
        return [x]
    if len(scales) != len(x.shape):
        raise ValueError(f"resize needs one scale per axis ({len(x.shape)}), got {scales}")
    sizes = op.attrs["sizes"]
    if sizes:
        return [TensorType(sizes, x.dtype, x.layout)]
    return [TensorType([None if d is None else _scaled_len(d, s) for d, s in zip(x.shape, scales)],
                       x.dtype, x.layout)]


def _scaled_len(n: int, scale: float) -> int:
    """floor(n * scale) in float32, as onnxruntime computes it (10 x 0.7f gives 7, not 6)."""
    return int(np.floor(np.float32(n) * np.float32(scale)))


RESIZE_COORD_MODES = ("asymmetric", "half_pixel", "pytorch_half_pixel", "align_corners",
                      "tf_half_pixel_for_nn", "half_pixel_symmetric")


def _source_coords(out_len, in_len, scale, coord_mode):
    """Input coordinate of each output index, in float32 like onnxruntime (so ties round alike)."""
    f = np.float32
    o = np.arange(out_len, dtype=f)
    scale = f(scale)
    half = f(0.5)
    if coord_mode == "half_pixel":
        return (o + half) / scale - half
    if coord_mode == "pytorch_half_pixel":
        return (o + half) / scale - half if out_len > 1 else np.zeros_like(o)
    if coord_mode == "tf_half_pixel_for_nn":
        return (o + half) / scale
    if coord_mode == "half_pixel_symmetric":
        adjustment = f(out_len) / (scale * f(in_len))
        offset = f(in_len) / f(2) * (f(1) - adjustment)
        return offset + (o + half) / scale - half
    if coord_mode == "align_corners":
        return o * f(in_len - 1) / f(out_len - 1) if out_len > 1 else np.zeros_like(o)
    return o / scale  # asymmetric


def _resize_compute(op, x):
    a = op.attrs
    out_shape = tuple(a["sizes"]) if a["sizes"] else tuple(_scaled_len(d, s) for d, s in zip(x.shape, a["scales"]))
    out = x
    if out_shape == tuple(x.shape):  # onnxruntime copies then, whatever the scales say
        return x
    for axis, (n_in, n_out) in enumerate(zip(x.shape, out_shape)):
        scale = n_out / n_in if a["sizes"] else a["scales"][axis]
        if scale == 1.0:  # (a scale != 1 that keeps an axis' length still moves its samples)
            continue
        src = _source_coords(n_out, n_in, scale, a["coord_mode"])
        if a["mode"] == "nearest":
            rule = a["nearest_mode"]
            if rule == "floor":
                idx = np.floor(src)
            elif rule == "ceil":
                idx = np.ceil(src)
            elif rule == "round_prefer_ceil":
                idx = np.floor(src + 0.5)
            else:  # round_prefer_floor
                idx = np.ceil(src - 0.5)
            idx = np.clip(idx, 0, n_in - 1).astype(np.int64)
            out = np.take(out, idx, axis=axis)
        else:
            src = np.clip(src, 0, n_in - 1)
            lo = np.floor(src).astype(np.int64)
            hi = np.minimum(lo + 1, n_in - 1)
            frac = (src - lo.astype(src.dtype)).astype(x.dtype)
            shape = [1] * x.ndim
            shape[axis] = -1
            frac = frac.reshape(shape)
            out = np.take(out, lo, axis=axis) * (1 - frac) + np.take(out, hi, axis=axis) * frac
    return out.astype(x.dtype, copy=False)


def _permute_resize(attrs_, perm):
    out = {**attrs_, "scales": per_axis(attrs_["scales"], perm)}
    if attrs_["sizes"]:
        out["sizes"] = per_axis(attrs_["sizes"], perm)
    return out


defop("resize", ("x",),
      {"scales": a_floats(), "sizes": a_ints(()),
       "mode": a_str("nearest", choices=("nearest", "linear")),
       "coord_mode": a_str("asymmetric", choices=RESIZE_COORD_MODES),
       "nearest_mode": a_str("floor", choices=("floor", "ceil", "round_prefer_floor", "round_prefer_ceil"))},
      infer=_resize_infer, compute=_resize_compute, category="data",
      traits=_MOVES_ANY_LAYOUT, permute_attrs=_permute_resize,
      doc="Nearest/linear resize of every axis by 'scales' (or to 'sizes').")


# --------------------------------------------------------------------------- reductions
def _reduce_infer(op, types):
    x = types[0]
    if x.shape is None:
        return [x]
    rank = len(x.shape)
    axes = {norm_axis(a, rank) for a in op.attrs["axes"]} if op.attrs["axes"] else set(range(rank))
    keep = op.attrs["keepdims"]
    shape = [1 if i in axes else d for i, d in enumerate(x.shape) if keep or i not in axes]
    dtype = "i64" if op.kind == "argmax" else x.dtype
    return [TensorType(shape, dtype, x.layout if keep else None)]


_REDUCERS = {"mean": np.mean, "sum": np.sum, "max": np.max, "min": np.min, "prod": np.prod,
             "l2": lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)),
             "sumsquare": lambda x, axis, keepdims: np.sum(x * x, axis=axis, keepdims=keepdims)}


def _reduce_compute(op, x):
    axes = tuple(a % x.ndim for a in op.attrs["axes"]) if op.attrs["axes"] else None
    out = _REDUCERS[op.attrs["op"]](x, axis=axes, keepdims=op.attrs["keepdims"])
    return np.asarray(out).astype(x.dtype, copy=False)


def _permute_reduction(attrs_, perm, reduced, new_attrs):
    """Reductions: the reduced axes move; without keepdims the result's axes need their own order."""
    if attrs_["keepdims"]:
        return new_attrs
    return new_attrs, kept_axes_perm(perm, reduced)


def _permute_reduce(attrs_, perm):
    rank = len(perm)
    reduced = {a % rank for a in attrs_["axes"]} if attrs_["axes"] else set(range(rank))
    return _permute_reduction(attrs_, perm, reduced,
                              {**attrs_, "axes": tuple(sorted(perm[a] for a in reduced))})


defop("reduce", ("x",), {"op": a_str(choices=tuple(_REDUCERS)), "axes": a_ints(()), "keepdims": a_bool(True)},
      infer=_reduce_infer, compute=_reduce_compute, category="vector",
      traits=(Trait.LAYOUT_AGNOSTIC,), permute_attrs=_permute_reduce,
      doc="Reduction over axes (all axes if empty).")


def _argmax_infer(op, types):
    x = types[0]
    if x.shape is None:
        return [TensorType(None, "i64")]
    axis = norm_axis(op.attrs["axis"], len(x.shape))
    shape = [1 if i == axis else d for i, d in enumerate(x.shape) if op.attrs["keepdims"] or i != axis]
    return [TensorType(shape, "i64", x.layout if op.attrs["keepdims"] else None)]


def _argmax_compute(op, x):
    out = np.argmax(x, axis=op.attrs["axis"])
    return np.expand_dims(out, op.attrs["axis"]) if op.attrs["keepdims"] else out


def _permute_argmax(attrs_, perm):
    return _permute_reduction(attrs_, perm, {attrs_["axis"] % len(perm)},
                              {**attrs_, "axis": permuted_axis(attrs_["axis"], perm)})


defop("argmax", ("x",), {"axis": a_int(1), "keepdims": a_bool(True)}, infer=_argmax_infer,
      compute=_argmax_compute, category="vector", traits=(Trait.LAYOUT_AGNOSTIC,),
      permute_attrs=_permute_argmax, doc="Index of the maximum along an axis (i64).")
