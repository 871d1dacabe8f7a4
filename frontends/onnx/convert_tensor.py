"""Converters for data movement, shape and constant ops, resizing and reductions.

Inputs that replaced attributes in later opsets (Split sizes, Slice
starts/ends/axes/steps, Pad pads, Squeeze/Unsqueeze axes, Resize scales and
sizes, Reduce axes) are read as constants at import time; the converter of
the older opset reads the attribute. Both produce the same IR op.
"""
from __future__ import annotations

import numpy as np

from tidlc.frontend import not_lowered, tile_by_concat
from tidlc.ir.types import dtype_of

from .context import Node, static_value
from .registry import converter

INT64_MAX = np.iinfo(np.int64).max


# ----------------------------------------------------------------------------- concat / split
@converter("Concat", since=1)
def concat(node: Node) -> None:
    xs = node.inputs()
    if not xs:
        raise node.error("needs at least one input")
    axis = node.attr_int("axis", 1)
    node.bind(node.op("concat", xs, axis=node.axis(axis, xs[0].type.rank)))


def _split(node: Node, sizes: tuple[int, ...] | None, num_outputs: int | None = None) -> None:
    x = node.input(0)
    rank = x.type.rank
    axis = node.axis(node.attr_int("axis", 0), rank)
    count = num_outputs or node.num_outputs
    if sizes is None:
        if x.shape is None or x.shape[axis] is None:
            raise node.error("an even split needs the static size of the split axis",
                             hint="give the input shapes with --input-shape NAME=d0,d1,...")
        dim = x.shape[axis]
        if num_outputs is not None:  # opset 18: ceil-sized chunks, the last one smaller
            chunk = -(-dim // count)
            sizes = tuple(min(chunk, dim - k * chunk) for k in range(count))
        elif dim % count:
            raise node.error(f"cannot split {dim} evenly into {count} outputs")
        else:
            sizes = (dim // count,) * count
    if len(sizes) != node.num_outputs:
        raise node.error(f"{len(sizes)} split sizes for {node.num_outputs} outputs")
    if any(s <= 0 for s in sizes):
        raise node.error(f"empty split parts {sizes} are not supported")
    outs = node.op("split", [x], axis=axis, sizes=sizes)
    node.bind(*(outs if isinstance(outs, list) else [outs]))


@converter("Split", since=1)
def split_v1(node: Node) -> None:
    sizes = node.attr_ints("split", None)
    if sizes is None and node.has_input(1):  # Split-1 also took the sizes as an input
        sizes = node.const_ints(1, "split")
    _split(node, sizes)


@converter("Split", since=13)
def split_v13(node: Node) -> None:
    _split(node, node.const_ints(1, "split"))


@converter("Split", since=18)
def split_v18(node: Node) -> None:
    sizes = node.const_ints(1, "split")
    num = node.attr_int("num_outputs", 0) if node.has_attr("num_outputs") else None
    if sizes is not None and num is not None:
        raise node.error("give either the split input or num_outputs, not both")
    _split(node, sizes, num)


# ----------------------------------------------------------------------------- slice / pad
def _slice(node: Node, starts, ends, axes, steps) -> None:
    x = node.input(0)
    if starts is None or ends is None:
        raise node.error("starts and ends are required")
    n = len(starts)
    axes = tuple(range(n)) if axes is None else axes
    steps = (1,) * n if steps is None else steps
    if not len(ends) == len(axes) == len(steps) == n:
        raise node.error(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    rank = x.type.rank
    axes = tuple(node.axis(a, rank) for a in axes)
    if any(s == 0 for s in steps):
        raise node.error("slice step 0")
    # with a known dim, show the effective bounds instead of INT64_MAX sentinels
    starts, ends = list(starts), list(ends)
    for k, (a, st) in enumerate(zip(axes, steps)):
        dim = x.shape[a] if x.shape is not None else None
        if dim is None:
            continue
        lo, hi, _ = slice(starts[k], ends[k], st).indices(dim)
        starts[k], ends[k] = lo, (hi if hi >= 0 else -dim - 1)
    node.bind(node.op("slice", [x], starts=tuple(starts), ends=tuple(ends), axes=axes,
                      steps=() if all(s == 1 for s in steps) else tuple(steps)))


@converter("Slice", since=1)
def slice_v1(node: Node) -> None:
    _slice(node, node.attr_ints("starts"), node.attr_ints("ends"), node.attr_ints("axes", None), None)


@converter("Slice", since=10)
def slice_v10(node: Node) -> None:
    _slice(node, node.const_ints(1, "starts"), node.const_ints(2, "ends"), node.const_ints(3, "axes"),
           node.const_ints(4, "steps"))


PAD_MODES = ("constant", "reflect", "edge", "wrap")  # (numpy's meanings: the IR's pad)


def _check_pad(node: Node) -> str | None:
    mode = node.attr_str("mode", "constant")
    return None if mode in PAD_MODES else f"mode '{mode}' is not supported ({', '.join(PAD_MODES)})"


def _pad(node: Node, pads, value: float, axes=None) -> None:
    x = node.input(0)
    if pads is None:
        raise node.error("pads are required")
    if axes is not None:
        rank = node.need_rank(x)
        axes = [node.axis(a, rank) for a in axes]
        if len(pads) != 2 * len(axes):
            raise node.error(f"pads {pads} need {2 * len(axes)} values for axes {tuple(axes)}")
        full = [0] * (2 * rank)
        for k, a in enumerate(axes):
            full[a], full[rank + a] = pads[k], pads[len(axes) + k]
        pads = tuple(full)
    node.bind(node.op("pad", [x], pads=tuple(pads), mode=node.attr_str("mode", "constant"), value=value))


@converter("Pad", since=1, check=_check_pad)
def pad_v1(node: Node) -> None:
    pads = node.attr_ints("pads", None) if node.has_attr("pads") else node.attr_ints("paddings", None)
    _pad(node, pads, node.attr_float("value", 0.0))


@converter("Pad", since=11, check=_check_pad)
def pad_v11(node: Node) -> None:
    value = node.const_input(2, "constant_value")
    _pad(node, node.const_ints(1, "pads"), 0.0 if value is None or value.size == 0 else float(value.reshape(-1)[0]),
         node.const_ints(3, "axes"))


# ----------------------------------------------------------------------------- reshape family
@converter("Reshape", since=1)
def reshape_v1(node: Node) -> None:
    node.bind(node.op("reshape", [node.input(0)], shape=node.attr_ints("shape")))


@converter("Reshape", since=5)
def reshape_v5(node: Node) -> None:
    x, target = node.input(0), node.input(1)
    allowzero = bool(node.attr_int("allowzero", 0))
    data = static_value(target)  # shape arithmetic of static shapes is evaluated now, so the types
    if data is not None:          # after it stay static (Swin's window partition: a Pad reads them)
        node.bind(node.op("reshape", [x], shape=node.int_values(data, "shape"), allowzero=allowzero))
    else:  # computed from the input data: fold-constants resolves what it can
        node.bind(node.op("reshape", [x, target], allowzero=allowzero))


@converter("Flatten", since=1)
def flatten(node: Node) -> None:
    x = node.input(0)
    node.bind(node.op("flatten", [x], axis=node.axis(node.attr_int("axis", 1), x.type.rank, extra=1)
                      if x.type.rank is not None else node.attr_int("axis", 1)))


@converter("Transpose", since=1)
def transpose(node: Node) -> None:
    x = node.input(0)
    perm = node.attr_ints("perm", None)
    if perm is None:
        perm = tuple(reversed(range(node.need_rank(x))))
    node.bind(node.op("transpose", [x], perm=perm))


def _squeeze(node: Node, axes) -> None:
    x = node.input(0)
    axes = tuple(node.axis(a, x.type.rank) for a in axes or ())
    node.bind(node.op("squeeze", [x], axes=axes))


def _unsqueeze(node: Node, axes) -> None:
    x = node.input(0)
    if not axes:
        raise node.error("axes are required")
    rank = x.type.rank
    axes = tuple(sorted(node.axis(a, None if rank is None else rank + len(axes)) for a in axes))
    node.bind(node.op("unsqueeze", [x], axes=axes))


@converter("Squeeze", since=1)
def squeeze_v1(node: Node) -> None:
    _squeeze(node, node.attr_ints("axes", None))


@converter("Squeeze", since=13)
def squeeze_v13(node: Node) -> None:
    _squeeze(node, node.const_ints(1, "axes"))


@converter("Unsqueeze", since=1)
def unsqueeze_v1(node: Node) -> None:
    _unsqueeze(node, node.attr_ints("axes"))


@converter("Unsqueeze", since=13)
def unsqueeze_v13(node: Node) -> None:
    _unsqueeze(node, node.const_ints(1, "axes"))


@converter("Expand", since=8)
def expand(node: Node) -> None:
    node.bind(node.op("expand", [node.input(0), node.static_input(1, "shape")]))


@converter("Tile", since=6)
def tile(node: Node) -> None:
    node.bind(tile_by_concat(node, node.input(0), node.const_ints(1, "repeats")))


# ----------------------------------------------------------------------------- pass-through
@converter("Identity", since=1)
def identity(node: Node) -> None:
    node.bind(node.op("identity", [node.input(0)]))


def _check_dropout(node: Node) -> str | None:
    if node.output_used(1):
        return "the mask output is not supported (export the model in eval mode)"
    if node.opset < 7 and not node.attr_int("is_test", 0):
        return "is_test=0 (training mode) is not supported"
    return None


@converter("Dropout", since=1, check=_check_dropout)
def dropout_v1(node: Node) -> None:
    node.bind(node.op("dropout", [node.input(0)], ratio=node.attr_float("ratio", 0.5)))


@converter("Dropout", since=12, check=_check_dropout)
def dropout_v12(node: Node) -> None:
    ratio = node.const_input(1, "ratio")
    training = node.const_input(2, "training_mode")
    if training is not None and node.one_value(training, "training_mode"):
        raise node.error("training_mode=true is not supported (export the model in eval mode)")
    node.bind(node.op("dropout", [node.input(0)],
                      ratio=0.5 if ratio is None else node.one_value(ratio, "ratio")))


# ----------------------------------------------------------------------------- constants / shapes
_CONSTANT_FORMS = ("value", "value_float", "value_floats", "value_int", "value_ints")


def _check_constant(node: Node) -> str | None:
    for form in ("sparse_value", "value_string", "value_strings"):
        if node.has_attr(form):
            return f"a Constant given as {form} is not supported"
    if not any(node.has_attr(f) for f in _CONSTANT_FORMS):
        return "Constant without a value"
    return None


@converter("Constant", since=1, check=_check_constant)
def constant(node: Node) -> None:
    if node.has_attr("value"):
        data = node.attr("value")
    elif node.has_attr("value_float"):
        data = np.asarray(node.attr_float("value_float"), np.float32)
    elif node.has_attr("value_floats"):
        data = np.asarray(node.attr_floats("value_floats"), np.float32)
    elif node.has_attr("value_int"):
        data = np.asarray(node.attr_int("value_int"), np.int64)
    else:
        data = np.asarray(node.attr_ints("value_ints"), np.int64)
    node.bind(node.const(data))


@converter("ConstantOfShape", since=9)
def constant_of_shape(node: Node) -> None:
    fill = node.attr("value", None)
    fill = np.zeros(1, np.float32) if fill is None else np.asarray(fill)
    if fill.size != 1:
        raise node.error(f"value must hold one element, got shape {fill.shape}")
    try:
        dtype = dtype_of(fill)
    except ValueError as exc:
        raise node.error(str(exc)) from None
    value = fill.reshape(-1)[0].item()
    node.bind(node.op("constant_of_shape", [node.static_input(0, "shape")], value=float(value), dtype=dtype))


def _shape(node: Node, start: int, end: int | None) -> None:
    s = node.op("shape", [node.input(0)])
    if start != 0 or end is not None:
        s = node.op("slice", [s], starts=(start,), ends=(INT64_MAX if end is None else end,), axes=(0,))
    node.bind(s)


@converter("Shape", since=1)
def shape_v1(node: Node) -> None:
    _shape(node, 0, None)


@converter("Shape", since=15)
def shape_v15(node: Node) -> None:
    _shape(node, node.attr_int("start", 0), node.attr_int("end", None))


@converter("Size", since=1)
def size(node: Node) -> None:
    s = node.op("shape", [node.input(0)])
    node.bind(node.op("reduce", [s], op="prod", axes=(0,), keepdims=False))


@converter("Gather", since=1)
def gather(node: Node) -> None:
    x = node.input(0)
    node.bind(node.op("gather", [x, node.input(1)], axis=node.axis(node.attr_int("axis", 0), x.type.rank)))


# ----------------------------------------------------------------------------- reductions
_REDUCE = {"ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min", "ReduceSum": "sum",
           "ReduceProd": "prod", "ReduceL2": "l2", "ReduceSumSquare": "sumsquare",
           "ReduceL1": "l1", "ReduceLogSum": "logsum", "ReduceLogSumExp": "logsumexp"}
# the opset where 'axes' moved from an attribute to an input
_AXES_INPUT_SINCE = {op: (13 if op == "ReduceSum" else 18) for op in _REDUCE}


def _reduce(node: Node, axes) -> None:
    x = node.input(0)
    keepdims = bool(node.attr_int("keepdims", 1))
    if not axes and node.attr_int("noop_with_empty_axes", 0):
        node.bind(node.op("identity", [x]))
        return
    axes = tuple(sorted({node.axis(a, x.type.rank) for a in axes or ()}))
    kind = _REDUCE[node.op_type]
    if kind == "l1":
        node.bind(node.op("reduce", [node.op("abs", [x])], op="sum", axes=axes, keepdims=keepdims))
    elif kind == "logsum":
        node.bind(node.op("log", [node.op("reduce", [x], op="sum", axes=axes, keepdims=keepdims)]))
    elif kind == "logsumexp":
        total = node.op("reduce", [node.op("exp", [x])], op="sum", axes=axes, keepdims=keepdims)
        node.bind(node.op("log", [total]))
    else:
        node.bind(node.op("reduce", [x], op=kind, axes=axes, keepdims=keepdims))


def _reduce_attr(node: Node) -> None:
    _reduce(node, node.attr_ints("axes", None))


def _reduce_input(node: Node) -> None:
    _reduce(node, node.const_ints(1, "axes"))


for _op, _since in _AXES_INPUT_SINCE.items():
    converter(_op, since=1)(_reduce_attr)
    converter(_op, since=_since)(_reduce_input)


def _check_arg(node: Node) -> str | None:
    if node.attr_int("select_last_index", 0):
        return not_lowered("select_last_index=1 is not supported")
    return None


@converter("ArgMax", since=1, check=_check_arg)
def argmax(node: Node) -> None:
    x = node.input(0)
    node.bind(node.op("argmax", [x], axis=node.axis(node.attr_int("axis", 0), x.type.rank),
                      keepdims=bool(node.attr_int("keepdims", 1))))


@converter("ArgMin", since=1, check=_check_arg)
def argmin(node: Node) -> None:
    # the first index of the minimum is the first index of the maximum of -x
    x = node.input(0)
    node.bind(node.op("argmax", [node.op("neg", [x])], axis=node.axis(node.attr_int("axis", 0), x.type.rank),
                      keepdims=bool(node.attr_int("keepdims", 1))))


# ----------------------------------------------------------------------------- depth / space
@converter("DepthToSpace", since=1)
def depth_to_space(node: Node) -> None:
    mode = node.attr_str("mode", "DCR") if node.opset >= 11 else "DCR"
    if mode not in ("DCR", "CRD"):
        raise node.error(f"mode '{mode}' is not one of DCR, CRD")
    node.bind(node.op("depth_to_space", [node.input(0)], block=node.attr_int("blocksize"), mode=mode))


@converter("SpaceToDepth", since=1)
def space_to_depth(node: Node) -> None:
    x = node.input(0)
    b = node.attr_int("blocksize")
    shape = node.static_shape(x)
    if len(shape) != 4 or b <= 0:
        raise node.error(f"needs a 4-D input and a positive blocksize, got {x.type} and {b}")
    n, c, h, w = shape
    if h % b or w % b:
        raise node.error(f"spatial size {h}x{w} is not divisible by blocksize {b}")
    t = node.op("reshape", [x], shape=(n, c, h // b, b, w // b, b))
    t = node.op("transpose", [t], perm=(0, 3, 5, 1, 2, 4))
    node.bind(node.op("reshape", [t], shape=(n, c * b * b, h // b, w // b)))


# ----------------------------------------------------------------------------- ScatterND
def _scatter_box(node: Node) -> tuple[list[int], list[int]] | str:
    """The box ``[lo, hi)`` over the first k axes of the data that a ScatterND's indices (static,
    evaluated now) write, in C order, each position once; else why not."""
    data, indices = node.input(0), node.input(1)
    shape = data.type.shape
    if shape is None or None in shape:
        return "the data's shape is not static"
    idx = static_value(indices)
    if idx is None:
        return "its indices are computed from the data"
    idx = np.asarray(idx, np.int64)
    if idx.ndim < 1 or not 0 < idx.shape[-1] <= len(shape) or idx.size == 0:
        return f"indices of shape {tuple(idx.shape)} do not index the data's {len(shape)} axes"
    k = idx.shape[-1]
    flat = idx.reshape(-1, k) % np.array(shape[:k], np.int64)
    lo, hi = flat.min(axis=0), flat.max(axis=0) + 1
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, k)
    if grid.shape != flat.shape or not np.array_equal(grid, flat):
        return "its indices are no box of positions in order (only a slice assignment, x[..., a:b] = y, converts)"
    return [int(v) for v in lo], [int(v) for v in hi]


def _check_scatter_nd(node: Node) -> str | None:
    if node.attr_str("reduction", "none") != "none":
        return not_lowered(f"reduction '{node.attr_str('reduction', 'none')}' is not supported")
    return None


@converter("ScatterND", since=11, check=_check_scatter_nd)
def scatter_nd(node: Node) -> None:
    """PyTorch's slice assignment ``x[..., a:b] = y`` (Hugging Face's Conditional DETR adds its
    reference points to the first two box coordinates in place) exports as a ScatterND whose
    indices are a box of positions: the data with that box replaced, as slices of it around the
    updates, concatenated along each axis the box does not span."""
    data = node.input(0)
    box = _scatter_box(node)
    if isinstance(box, str):
        raise node.host_instead(box)
    shape = tuple(data.type.shape)
    lo, hi = box
    k = len(lo)
    updates = node.op("reshape", [node.input(2)], shape=tuple(b - a for a, b in zip(lo, hi)) + shape[k:])
    partial = [(axis, lo[axis], hi[axis]) for axis in range(k) if (lo[axis], hi[axis]) != (0, shape[axis])]

    def place(x, axes):
        if not axes:
            return updates
        (axis, a, b), rest = axes[0], axes[1:]
        n = x.type.shape[axis]
        inner = x if not rest else node.op("slice", [x], starts=(a,), ends=(b,), axes=(axis,))
        parts = ([node.op("slice", [x], starts=(0,), ends=(a,), axes=(axis,))] if a > 0 else []) \
            + [place(inner, rest)] \
            + ([node.op("slice", [x], starts=(b,), ends=(n,), axes=(axis,))] if b < n else [])
        return parts[0] if len(parts) == 1 else node.op("concat", parts, axis=axis)

    node.bind(place(data, partial))
