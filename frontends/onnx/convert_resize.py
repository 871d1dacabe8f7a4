"""Resize (opsets 10, 11, 13, 18, 19) and Upsample (7, 9) -> the IR ``resize`` op.

Opsets before 11 had no coordinate or rounding attributes: coordinates are
``asymmetric`` (x_in = x_out / scale) and a nearest neighbour is rounded down
when enlarging and up when shrinking (onnxruntime's behaviour). Axes that
enlarge and axes that shrink then need different rounding, so such a resize
becomes two IR resizes (nearest-neighbour axes are independent).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tidlc.frontend import not_lowered
from tidlc.ir.core import Value

from .context import Node
from .registry import converter

COORD_MODES = ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel",
               "tf_half_pixel_for_nn", "half_pixel_symmetric")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _check_mode(node: Node) -> str | None:
    mode = node.attr_str("mode", "nearest")
    if mode == "cubic":
        return not_lowered("mode 'cubic' is not supported (nearest and linear are)")
    if mode not in ("nearest", "linear", "bilinear"):
        return f"mode '{mode}' is not supported (nearest and linear are)"
    return None


def _check_resize(node: Node) -> str | None:
    problem = _check_mode(node)
    if problem:
        return problem
    coord = node.attr_str("coordinate_transformation_mode", "half_pixel")
    if coord not in COORD_MODES:
        return not_lowered(f"coordinate_transformation_mode '{coord}' is not supported")
    nearest = node.attr_str("nearest_mode", "round_prefer_floor")
    if nearest not in NEAREST_MODES:
        return not_lowered(f"nearest_mode '{nearest}' is not supported")
    if node.attr_int("antialias", 0):
        return not_lowered("antialias=1 is not supported")
    policy = node.attr_str("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        return not_lowered(f"keep_aspect_ratio_policy '{policy}' is not supported")
    return None


def _full(node: Node, x: Value, values: Sequence, axes: Sequence[int] | None, fill) -> list:
    """Per-axis values for every axis of ``x`` (``axes``: the axes ``values`` refer to)."""
    rank = node.need_rank(x)
    if axes is None:
        if len(values) != rank:
            raise node.error(f"{len(values)} scales/sizes for an input of rank {rank}")
        return list(values)
    if len(axes) != len(values):
        raise node.error(f"{len(values)} scales/sizes for {len(axes)} axes")
    out = list(fill(rank))
    for a, v in zip(axes, values):
        out[node.axis(a, rank)] = v
    return out


def _emit(node: Node, x: Value, scales: list, sizes: list | None, mode: str, coord: str,
          nearest: str) -> Value:
    if sizes is not None:
        in_shape = node.static_shape(x)
        if any(s <= 0 for s in sizes) or any(d <= 0 for d in in_shape):
            raise node.error(f"resizing {in_shape} to sizes {tuple(sizes)}: sizes and input dims must be positive")
        scales = [s / d for s, d in zip(sizes, in_shape)]
    _check_scales(node, scales)
    mode = "linear" if mode == "bilinear" else mode
    return node.op("resize", [x], scales=tuple(float(s) for s in scales),
                   sizes=tuple(int(s) for s in sizes) if sizes is not None else (),
                   mode=mode, coord_mode=coord, nearest_mode=nearest)


def _check_scales(node: Node, scales: Sequence[float]) -> None:
    if not all(np.isfinite(s) and s > 0 for s in scales):
        raise node.error(f"scales {tuple(scales)} must be positive and finite")


def _legacy(node: Node, scales: Sequence[float]) -> None:
    """Upsample / Resize-10: asymmetric coordinates, floor when enlarging, ceil when shrinking."""
    x = node.input(0)
    scales = _full(node, x, [float(s) for s in scales], None, None)
    _check_scales(node, scales)
    mode = node.attr_str("mode", "nearest")
    if mode != "nearest" or all(s >= 1 for s in scales) or all(s < 1 for s in scales):
        rule = "floor" if all(s >= 1 for s in scales) else "ceil"
        node.bind(_emit(node, x, scales, None, mode, "asymmetric", rule))
        return
    up = [s if s >= 1 else 1.0 for s in scales]
    down = [s if s < 1 else 1.0 for s in scales]
    y = _emit(node, x, up, None, mode, "asymmetric", "floor")
    node.bind(_emit(node, y, down, None, mode, "asymmetric", "ceil"))


def _required(node: Node, i: int, what: str) -> np.ndarray:
    if not node.has_input(i):
        raise node.error(f"the {what} input is required")
    return node.const_input(i, what)


@converter("Upsample", since=7, check=_check_mode)
def upsample_v7(node: Node) -> None:
    _legacy(node, node.attr_floats("scales"))


@converter("Upsample", since=9, check=_check_mode)
def upsample_v9(node: Node) -> None:
    _legacy(node, _required(node, 1, "scales").reshape(-1).tolist())


@converter("Resize", since=10, check=_check_mode)
def resize_v10(node: Node) -> None:
    _legacy(node, _required(node, 1, "scales").reshape(-1).tolist())


@converter("Resize", since=11, check=_check_resize)
def resize_v11(node: Node) -> None:
    x = node.input(0)
    coord = node.attr_str("coordinate_transformation_mode", "half_pixel")
    if coord == "tf_crop_and_resize":
        raise node.error("coordinate_transformation_mode 'tf_crop_and_resize' is not supported")
    scales = node.const_input(2, "scales")
    sizes = node.const_input(3, "sizes")
    axes = node.attr_ints("axes", None) if node.opset >= 18 else None
    if scales is not None and scales.size and sizes is not None and sizes.size:
        raise node.error("give either scales or sizes, not both")
    mode = node.attr_str("mode", "nearest")
    nearest = node.attr_str("nearest_mode", "round_prefer_floor")
    if sizes is not None and sizes.size:
        sizes = _full(node, x, [int(v) for v in sizes.reshape(-1)], axes, lambda r: node.static_shape(x))
        node.bind(_emit(node, x, [], sizes, mode, coord, nearest))
    elif scales is not None and scales.size:
        scales = _full(node, x, [float(v) for v in np.asarray(scales, np.float32).reshape(-1)], axes,
                       lambda r: [1.0] * r)
        node.bind(_emit(node, x, scales, None, mode, coord, nearest))
    else:
        raise node.error("needs scales or sizes")


# opsets 13 (optional roi/scales), 18 (axes, antialias, keep_aspect_ratio_policy) and
# 19 (half_pixel_symmetric) only extend what version 11 reads
converter("Resize", since=13, check=_check_resize)(resize_v11)
converter("Resize", since=18, check=_check_resize)(resize_v11)
converter("Resize", since=19, check=_check_resize)(resize_v11)
