"""Conventions shared by the frontends of NHWC formats (TensorFlow ``.pb``, TFLite), and by any
plugin frontend of an NHWC format (docs/frontends/tensorflow.md, docs/plugins.md).

* Layouts: TensorFlow data is NHWC; the IR's window ops (``conv2d``, ``pool2d``, ...) are NCHW.
  Each layout-sensitive op is emitted as ``transpose -> NCHW op -> transpose`` (:func:`nchw_op`)
  and the ``layout`` pass later cancels the pairs and moves the rest to the graph boundary.
  Weights are permuted at import (:func:`permute_weight`).
* TensorFlow's padding rule (``SAME`` puts the odd pixel at the end), strided slices with all
  five masks, resize modes.
* Converters whose semantics TensorFlow and TFLite share (Transpose, Slice, SquaredDifference,
  ...): a frontend registers them under its own op names. They read the node through
  ``node.data_input(i)`` (the data input: TFLite's integers when the quantization is unchanged),
  ``node.const_ints(i, what)`` and ``node.const_int(i, what)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tidlc.frontend import NodeContext
from tidlc.ir.core import Value

NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)
INT_MAX = 2**31 - 1


# ----------------------------------------------------------------------------- layouts
def is_nchw(value: Value) -> bool:
    return value.type.layout == "NCHW"


def nchw_op(node: NodeContext, kind: str, x: Value, extra: Sequence[Value] = (), nhwc: bool = True,
            **attrs: Any) -> Value:
    """Run an NCHW-only IR op on ``x``: wrapped in transposes when the data is NHWC."""
    if not nhwc:
        return node.op(kind, [x, *extra], **attrs)
    xt = node.op("transpose", [x], perm=NHWC_TO_NCHW)
    y = node.op(kind, [xt, *extra], **attrs)
    return node.op("transpose", [y], perm=NCHW_TO_NHWC)


def permute_weight(node: NodeContext, w: Value, perm: Sequence[int], shape: Sequence[int] | None = None) -> Value:
    """A weight in the IR's order: a constant is permuted (and reshaped) in numpy, anything else by ops."""
    data = w.const_value()
    if data is not None:
        out = np.ascontiguousarray(np.transpose(data, perm))
        return node.const(out if shape is None else out.reshape(shape), "weight")
    out = node.op("transpose", [w], perm=tuple(perm))
    return out if shape is None else node.op("reshape", [out], shape=tuple(shape))


# ----------------------------------------------------------------------------- windows
def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow SAME padding: output ceil(size / stride); the odd pixel goes at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def window_pads(node: NodeContext, padding: str, hw: Sequence[int | None], kernel: Sequence[int],
                strides: Sequence[int], dilations: Sequence[int] = (1, 1),
                explicit: Sequence[int] | None = None) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) pads for TF's ``padding`` attribute."""
    if padding == "VALID":
        return (0, 0, 0, 0)
    if padding == "EXPLICIT":
        if explicit is None or len(explicit) != 4:
            raise node.error(f"EXPLICIT padding needs 4 values (top, bottom, left, right), got {explicit}")
        top, bottom, left, right = explicit
        return (top, left, bottom, right)
    if padding != "SAME":
        raise node.error(f"padding '{padding}' is not SAME, VALID or EXPLICIT")
    if any(d is None for d in hw):
        raise node.error("SAME padding needs the static height and width of the input",
                         hint="give the input shapes with --input-shape NAME=d0,d1,...")
    (pt, pb), (pl, pr) = (same_pads(hw[i], kernel[i], strides[i], dilations[i]) for i in range(2))
    return (pt, pl, pb, pr)


def deconv_pads(node: NodeContext, padding: str, in_hw: Sequence[int], out_hw: Sequence[int],
                kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int] = (1, 1)):
    """Pads and output padding of a transposed conv that must produce ``out_hw`` (TF's
    Conv2DBackpropInput / TFLite TRANSPOSE_CONV: the forward conv's padding, read backwards)."""
    pads_begin, pads_end, extra = [], [], []
    for i in range(2):
        k_eff = (kernel[i] - 1) * dilations[i] + 1
        if padding == "SAME":
            total = max((in_hw[i] - 1) * strides[i] + k_eff - out_hw[i], 0)
            begin = total // 2
        elif padding == "VALID":
            begin = 0
        else:
            raise node.error(f"padding '{padding}' is not SAME or VALID")
        full = (in_hw[i] - 1) * strides[i] + k_eff
        end = full - out_hw[i] - begin
        pads_begin.append(begin)
        pads_end.append(max(end, 0))
        extra.append(max(-end, 0))  # a larger requested output than the sweep covers: zeros at the end
    return (pads_begin[0], pads_begin[1], pads_end[0], pads_end[1]), tuple(extra)


# ----------------------------------------------------------------------------- strided slice
def strided_slice(node: NodeContext, x: Value, begin: Sequence[int], end: Sequence[int], strides: Sequence[int],
                  begin_mask: int = 0, end_mask: int = 0, ellipsis_mask: int = 0, new_axis_mask: int = 0,
                  shrink_axis_mask: int = 0) -> Value:
    """TensorFlow's StridedSlice (all five masks) as slice + squeeze + unsqueeze."""
    rank = node.need_rank(x)
    n = len(begin)
    if len(end) != n or len(strides) != n:
        raise node.error(f"begin/end/strides have different lengths {len(begin)}/{len(end)}/{len(strides)}")
    if any(s == 0 for s in strides):
        raise node.error("a stride of 0")
    bit = lambda mask, i: bool(mask >> i & 1)
    spec_dims = sum(1 for i in range(n) if not bit(new_axis_mask, i) and not bit(ellipsis_mask, i))
    starts, ends, axes, steps, shrink, new_axes = [], [], [], [], [], []
    dim = 0  # input dim
    out_pos = 0  # position in the output (after shrinking, with new axes)
    for i in range(n):
        if bit(ellipsis_mask, i):
            span = rank - spec_dims
            dim += span
            out_pos += span
            continue
        if bit(new_axis_mask, i):
            new_axes.append(out_pos)
            out_pos += 1
            continue
        if dim >= rank:
            raise node.error(f"slice spec of {n} entries is longer than the input's rank {rank}")
        stride = strides[i]
        if bit(shrink_axis_mask, i):
            b = begin[i]
            starts.append(b)
            ends.append(b + 1 if b != -1 else INT_MAX)
            axes.append(dim)
            steps.append(1)
            shrink.append(dim)
        else:
            b = (0 if stride > 0 else INT_MAX) if bit(begin_mask, i) else begin[i]
            e = (INT_MAX if stride > 0 else -INT_MAX - 1) if bit(end_mask, i) else end[i]
            full = stride == 1 and bit(begin_mask, i) and bit(end_mask, i)
            if not full:
                starts.append(b)
                ends.append(e)
                axes.append(dim)
                steps.append(stride)
            out_pos += 1
        dim += 1
    y = x
    if axes:
        y = node.op("slice", [y], starts=starts, ends=ends, axes=axes, steps=steps)
    if shrink:
        y = node.op("squeeze", [y], axes=tuple(shrink))
    if new_axes:
        y = node.op("unsqueeze", [y], axes=tuple(new_axes))
    return y


# ----------------------------------------------------------------------------- resize
def resize_modes(bilinear: bool, align_corners: bool, half_pixel: bool) -> dict[str, str]:
    """IR resize attributes matching TF/TFLite ResizeBilinear / ResizeNearestNeighbor."""
    if bilinear:
        coord = "align_corners" if align_corners else "half_pixel" if half_pixel else "asymmetric"
        return {"mode": "linear", "coord_mode": coord}
    if align_corners:  # round(o * (in - 1) / (out - 1)), halves away from zero
        return {"mode": "nearest", "coord_mode": "align_corners", "nearest_mode": "round_prefer_ceil"}
    if half_pixel:  # floor((o + 0.5) * in / out)
        return {"mode": "nearest", "coord_mode": "tf_half_pixel_for_nn", "nearest_mode": "floor"}
    return {"mode": "nearest", "coord_mode": "asymmetric", "nearest_mode": "floor"}


def resize_nhwc(node: NodeContext, x: Value, size: Sequence[int], **modes: str) -> Value:
    """Resize the H and W of an NHWC (or, if typed so, NCHW) tensor to ``size``."""
    shape = node.static_shape(x)
    if len(shape) != 4:
        raise node.error(f"expects a 4-D input, got {x.type}")
    if len(size) != 2 or not all(int(v) > 0 for v in size) or not all(d > 0 for d in shape):
        raise node.error(f"cannot resize {x.type} to size {list(size)}: two positive values for a non-empty input")
    h_axis = 2 if is_nchw(x) else 1
    out = list(shape)
    out[h_axis], out[h_axis + 1] = int(size[0]), int(size[1])
    scales = [o / i for o, i in zip(out, shape)]
    return node.op("resize", [x], scales=scales, sizes=out, **modes)


# ----------------------------------------------------------------------------- shared converters
def transpose(node) -> None:
    """Transpose by a constant permutation."""
    node.bind(node.op("transpose", [node.data_input(0)], perm=node.const_ints(1, "perm")))


def slice_begin_size(node) -> None:
    """Slice(x, begin, size); a size of -1 runs to the end of the axis."""
    begin, size = node.const_ints(1, "begin"), node.const_ints(2, "size")
    ends = [b + s if s >= 0 else INT_MAX for b, s in zip(begin, size)]
    node.bind(node.op("slice", [node.data_input(0)], starts=begin, ends=ends, axes=tuple(range(len(begin)))))


def squared_difference(node) -> None:
    """(a - b) * (a - b)."""
    d = node.op("sub", [node.input(0), node.input(1)])
    node.bind(node.op("mul", [d, d]))


def expand_dims(axis_name: str):
    """ExpandDims(x, axis): the converter, whose axis input is called ``axis_name`` in messages."""
    def convert(node) -> None:
        node.bind(node.op("unsqueeze", [node.data_input(0)], axes=(node.const_int(1, axis_name),)))
    return convert


def reduce(node, x: Value, kind: str, axes: Sequence[int], keep: bool) -> Value:
    """``kind`` (mean, sum, max, min, prod) over ``axes`` (non-negative, sorted). A mean or max
    over the spatial axes of a 4-D tensor is a global pool (TIDL's layer): the NCHW
    ``global_pool``, then back to the model's shape."""
    spatial = [1, 2] if x.type.layout != "NCHW" else [2, 3]
    if x.type.rank == 4 and list(axes) == spatial and kind in ("mean", "max"):
        nhwc = spatial == [1, 2]
        xt = node.op("transpose", [x], perm=NHWC_TO_NCHW) if nhwc else x
        pooled = node.op("global_pool", [xt], mode="avg" if kind == "mean" else "max")
        if not keep:
            return node.op("squeeze", [pooled], axes=(2, 3))
        return node.op("transpose", [pooled], perm=NCHW_TO_NHWC) if nhwc else pooled
    return node.op("reduce", [x], op=kind, axes=axes, keepdims=keep)


def pack(node, values: Sequence[Value], axis: int) -> None:
    """Pack (stack) ``values`` along a new axis ``axis``."""
    node.bind(node.op("concat", [node.op("unsqueeze", [v], axes=(axis,)) for v in values], axis=axis))


__all__ = [
    "NCHW_TO_NHWC",
    "NHWC_TO_NCHW",
    "deconv_pads",
    "expand_dims",
    "is_nchw",
    "nchw_op",
    "pack",
    "permute_weight",
    "reduce",
    "resize_modes",
    "resize_nhwc",
    "same_pads",
    "slice_begin_size",
    "squared_difference",
    "strided_slice",
    "transpose",
    "window_pads",
]
