"""Converters for Caffe data-movement layers and net inputs.

Shapes are static in Caffe, so layers whose output shape Caffe computes
from parameters (Reshape's 0/-1 rules with axis/num_axes, Flatten's
axis/end_axis, Interp's zoom/shrink factors) are resolved here into static
IR attributes.
"""
from __future__ import annotations

import itertools
from math import prod

from .convert_nn import _axis, _single_bottom, one_bottom
from .registry import Layer, converter

# Layers that feed data in training/eval nets. In a TEST-phase net their first top is a
# graph input; its shape comes from the layer's parameters where they fix it, else from
# --input-shape. Extra tops (labels) are not inputs.
DATA_LAYERS = ("Data", "ImageData", "DummyData", "HDF5Data", "MemoryData", "WindowData",
               "AnnotatedData", "VideoData")


def _data_shape(layer: Layer) -> tuple[int, ...] | None:
    t = layer.type
    crop = layer.param("transform_param").get_int("crop_size", 0)
    if t == "DummyData":
        p = layer.param("dummy_data_param")
        shapes = p.messages("shape")
        if shapes:
            return tuple(shapes[0].get_ints("dim"))
        dims = [p.get_ints(k) for k in ("num", "channels", "height", "width")]
        return tuple(d[0] for d in dims) if all(dims) else None
    if t == "MemoryData":
        p = layer.param("memory_data_param")
        dims = tuple(p.get_int(k, 0) for k in ("batch_size", "channels", "height", "width"))
        return dims if all(dims) else None
    if t == "ImageData":
        p = layer.param("image_data_param")
        h, w = p.get_int("new_height", 0), p.get_int("new_width", 0)
        if crop:
            h = w = crop
        channels = 3 if p.get_bool("is_color", True) else 1
        return (p.get_int("batch_size", 1), channels, h, w) if h and w else None
    return None  # LMDB/HDF5/window data: the channels live in the database


def declare_data_layer(layer: Layer) -> None:
    """Make a data layer's first top a graph input (called before any layer converts)."""
    if not layer.spec.top:
        raise layer.error("has no top: the data it reads goes nowhere")
    layer.add_input(layer.spec.top[0], _data_shape(layer))


for _t in DATA_LAYERS:
    converter(_t)(declare_data_layer)


@converter("Silence")
def silence(layer: Layer) -> None:
    """consumes its bottoms, produces nothing."""
    layer.bound = True


@converter("Split")
def split(layer: Layer) -> None:
    """every top aliases the bottom (no op)."""
    layer.expect_bottoms(1)
    layer.bind(*[layer.input()] * len(layer.spec.top))


@converter("Concat")
def concat(layer: Layer) -> None:
    """concat along axis (or legacy concat_dim)."""
    p = layer.param("concat_param")
    rank = len(layer.shape())
    legacy = p.has("concat_dim") and not p.has("axis")
    axis = p.get_int("concat_dim") if legacy else p.get_int("axis", 1)
    axis = _axis(layer, axis, rank)
    if len(layer.inputs) == 1:
        layer.bind(layer.op("identity", [layer.input()]))
        return
    layer.bind(layer.op("concat", layer.inputs, axis=axis))


@converter("Slice", check=one_bottom)
def slice_(layer: Layer) -> None:
    """split at slice_point (or into equal parts) along axis (or legacy slice_dim)."""
    p = layer.param("slice_param")
    shape = layer.shape()
    legacy = p.has("slice_dim") and not p.has("axis")
    axis = p.get_int("slice_dim") if legacy else p.get_int("axis", 1)
    axis = _axis(layer, axis, len(shape))
    n_tops = len(layer.spec.top)
    if not n_tops:
        raise layer.error("has no top")
    points = p.get_ints("slice_point")
    size = shape[axis]
    if points:
        if len(points) != n_tops - 1:
            raise layer.error(f"{len(points)} slice_point(s) for {n_tops} tops; "
                              f"expected {n_tops - 1}")
        bounds = [0, *points, size]
        sizes = [b - a for a, b in itertools.pairwise(bounds)]
        if any(s <= 0 for s in sizes):
            raise layer.error(f"slice points {points} must increase within (0, {size})")
    else:
        if size % n_tops:
            raise layer.error(f"axis {axis} of size {size} does not split into {n_tops} "
                              "equal parts")
        sizes = [size // n_tops] * n_tops
    if n_tops == 1:
        layer.bind(layer.op("identity", [layer.input()]))
        return
    layer.bind(*layer.op("split", [layer.input()], axis=axis, sizes=sizes))


@converter("Flatten", check=_single_bottom)
def flatten(layer: Layer) -> None:
    """axes [axis, end_axis] collapse into one (flatten op for the 2-D case)."""
    p = layer.param("flatten_param")
    shape = layer.shape()
    rank = len(shape)
    axis = _axis(layer, p.get_int("axis", 1), rank)
    end = _axis(layer, p.get_int("end_axis", -1), rank)
    if end < axis:
        raise layer.error(f"end_axis {end} is before axis {axis}")
    if axis == 1 and end == rank - 1:
        layer.bind(layer.op("flatten", [layer.input()], axis=1))
        return
    target = (*shape[:axis], prod(shape[axis:end + 1]), *shape[end + 1:])
    layer.bind(layer.op("reshape", [layer.input()], shape=target))


def caffe_reshape(in_shape: tuple[int, ...], dims: list[int], axis: int,
                  num_axes: int) -> tuple[int, ...]:
    """caffe::ReshapeLayer's output shape (raises ValueError with a readable message)."""
    rank = len(in_shape)
    start = axis if axis >= 0 else rank + axis + 1
    if not 0 <= start <= rank:
        raise ValueError(f"axis {axis} out of range for a {rank}-D bottom")
    end = rank if num_axes == -1 else start + num_axes
    if num_axes < -1 or end > rank:
        raise ValueError(f"num_axes {num_axes} out of range (axis {axis}, {rank}-D bottom)")
    out = []
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= rank:
                raise ValueError(f"dim {i} is 0 but the bottom has no axis {start + i} to copy")
            out.append(in_shape[start + i])
        elif d == -1 or d > 0:
            out.append(d)
        else:
            raise ValueError(f"dim {d} is not allowed (use -1 to infer, 0 to copy)")
    if out.count(-1) > 1:
        raise ValueError("more than one dim is -1")
    new = [*in_shape[:start], *out, *in_shape[end:]]
    total = prod(in_shape)
    if -1 in new:
        known = prod(d for d in new if d != -1)
        if known == 0 or total % known:
            raise ValueError(f"cannot infer the -1 dim: {total} values into {new}")
        new[new.index(-1)] = total // known
    if prod(new) != total:
        raise ValueError(f"cannot reshape {list(in_shape)} ({total} values) to {new}")
    return tuple(new)


@converter("Reshape", check=_single_bottom)
def reshape(layer: Layer) -> None:
    """reshape to Caffe's shape (0 copies, -1 infers; axis/num_axes select the range)."""
    p = layer.param("reshape_param")
    dims = p.message("shape").get_ints("dim")
    try:
        target = caffe_reshape(layer.shape(), dims, p.get_int("axis", 0), p.get_int("num_axes", -1))
    except ValueError as exc:
        raise layer.error(str(exc)) from None
    layer.bind(layer.op("reshape", [layer.input()], shape=target))


@converter("Permute", check=_single_bottom)
def permute(layer: Layer) -> None:
    """transpose; axes missing from ``order`` follow in ascending order."""
    rank = len(layer.shape())
    order = [_axis(layer, a, rank) for a in layer.param("permute_param").get_ints("order")]
    if len(set(order)) != len(order):
        raise layer.error(f"order {order} repeats an axis")
    perm = order + [a for a in range(rank) if a not in order]
    if perm == list(range(rank)):
        layer.bind(layer.op("identity", [layer.input()]))
        return
    layer.bind(layer.op("transpose", [layer.input()], perm=perm))


@converter("Crop")
def crop(layer: Layer) -> None:
    """slice bottom 0 to bottom 1's shape from ``axis`` on, at ``offset``."""
    layer.expect_bottoms(2)
    p = layer.param("crop_param")
    shape, ref = layer.shape(), layer.shape(1)
    if len(ref) != len(shape):  # as caffe::CropLayer::Reshape checks
        raise layer.error(f"bottom 1 {list(ref)} does not have the {len(shape)} axes of "
                          f"bottom 0 {list(shape)}")
    axis = _axis(layer, p.get_int("axis", 2), len(shape))
    offsets = p.get_ints("offset")
    n = len(shape) - axis
    if len(offsets) not in (0, 1, n):
        raise layer.error(f"{len(offsets)} offsets for {n} cropped axes; give 0, 1 or {n}")
    offsets = offsets * n if len(offsets) == 1 else offsets or [0] * n
    starts, ends, axes = [], [], []
    for i, off in enumerate(offsets):
        a = axis + i
        if off < 0:
            raise layer.error(f"offset {off} is negative")
        if off + ref[a] > shape[a]:
            raise layer.error(f"crop of {ref[a]} at offset {off} exceeds axis {a} "
                              f"of size {shape[a]}")
        if off or ref[a] != shape[a]:
            starts.append(off)
            ends.append(off + ref[a])
            axes.append(a)
    if not axes:
        layer.bind(layer.op("identity", [layer.input()]))
        return
    layer.bind(layer.op("slice", [layer.input()], starts=starts, ends=ends, axes=axes))


def _argmax_check(spec, weights=None) -> str | None:
    p = spec.param("argmax_param")
    if p.get_bool("out_max_val", False) or p.get_int("top_k", 1) != 1:
        return "only top_k: 1 without out_max_val is supported (argmax indices)"
    return _single_bottom(spec)


@converter("ArgMax", check=_argmax_check)
def argmax(layer: Layer) -> None:
    """argmax along ``axis`` (kept, size 1); without axis over each sample -> (N, 1, 1)."""
    p = layer.param("argmax_param")
    shape = layer.shape()
    if p.has("axis"):
        axis = _axis(layer, p.get_int("axis"), len(shape))
        layer.bind(layer.op("argmax", [layer.input()], axis=axis, keepdims=True))
        return
    flat = layer.op("reshape", [layer.input()], "flatten", shape=(shape[0], prod(shape[1:])))
    index = layer.op("argmax", [flat], "argmax", axis=1, keepdims=True)
    layer.bind(layer.op("reshape", [index], shape=(shape[0], 1, 1)))


def _interp_check(spec, weights=None) -> str | None:
    p = spec.param("interp_param")
    if p.get_int("pad_beg", 0) or p.get_int("pad_end", 0):
        return "pad_beg/pad_end (cropping before interpolation) is not supported"
    sized = any(p.has(k) for k in ("zoom_factor", "shrink_factor", "height"))
    if len(spec.bottom) == 1 and not sized:
        return "needs zoom_factor, shrink_factor, height/width or a second bottom for the size"
    for key in ("zoom_factor", "shrink_factor"):
        if p.has(key) and p.get_int(key) < 1:
            return f"{key} must be 1 or more, got {p.get_int(key)}"
    return None


@converter("Interp", check=_interp_check)
def interp(layer: Layer) -> None:
    """resize, bilinear with align_corners (Caffe's Interp, e.g. PSPNet/DeepLab forks)."""
    layer.expect_bottoms(1, 2)
    p = layer.param("interp_param")
    n, c, h, w = layer.shape4()
    if len(layer.inputs) == 2:
        oh, ow = layer.shape4(1)[2:4]
    else:
        oh, ow = h, w
        if p.has("shrink_factor"):
            s = p.get_int("shrink_factor")
            oh, ow = (oh - 1) // s + 1, (ow - 1) // s + 1
        if p.has("zoom_factor"):
            z = p.get_int("zoom_factor")
            oh, ow = oh + (oh - 1) * (z - 1), ow + (ow - 1) * (z - 1)
        if p.has("height") and not (p.has("shrink_factor") or p.has("zoom_factor")):
            oh, ow = p.get_int("height"), p.get_int("width")
    if oh < 1 or ow < 1:
        raise layer.error(f"output size {oh}x{ow} is empty")
    layer.bind(layer.op("resize", [layer.input()], scales=(1.0, 1.0, oh / h, ow / w),
                        sizes=(n, c, oh, ow), mode="linear", coord_mode="align_corners"))


def _upsample_check(spec, weights=None) -> str | None:
    if len(spec.bottom) not in (1, 2):
        return f"{len(spec.bottom)} bottoms; Upsample takes the input (and a pooling mask)"
    return None


@converter("Upsample", check=_upsample_check)
def upsample(layer: Layer) -> None:
    """nearest resize by ``scale``; with a pooling mask as bottom 1, max_unpool (SegNet/ENet)."""
    p = layer.param("upsample_param")
    n, c, h, w = layer.shape4()
    if p.has("upsample_h") or p.has("upsample_w"):
        oh, ow = p.get_int("upsample_h"), p.get_int("upsample_w")
    else:
        sh, sw = p.pair("scale", 2)
        if min(sh, sw) < 1:
            raise layer.error(f"scale must be 1 or more, got {sh}x{sw}", at=p.loc)
        oh = h * sh - (1 if p.get_bool("pad_out_h", False) else 0)
        ow = w * sw - (1 if p.get_bool("pad_out_w", False) else 0)
    if oh < 1 or ow < 1:
        raise layer.error(f"output size {oh}x{ow} is empty", at=p.loc)
    if len(layer.inputs) == 2:
        mask = layer.input(1)
        if mask.type.dtype not in ("i64", "i32"):
            raise layer.error(f"bottom '{layer.spec.bottom[1]}' is not a pooling mask (the second "
                              "top of a MAX Pooling layer)")
        if oh < h or ow < w:  # Caffe's UpsampleLayer would write outside its top
            raise layer.error(f"output size {oh}x{ow} is smaller than the pooled input {h}x{w}",
                              at=p.loc)
        layer.bind(layer.op("max_unpool", [layer.input(), mask], output_size=(oh, ow)))
        return
    layer.bind(layer.op("resize", [layer.input()], scales=(1.0, 1.0, oh / h, ow / w),
                        sizes=(n, c, oh, ow), mode="nearest", coord_mode="asymmetric",
                        nearest_mode="floor"))


@converter("ShuffleChannel", check=_single_bottom)
def shuffle_channel(layer: Layer) -> None:
    """shuffle_channel (ShuffleNet fork layer)."""
    group = layer.param("shuffle_channel_param").get_int("group", 1)
    layer.bind(layer.op("shuffle_channel", [layer.input()], groups=group))
