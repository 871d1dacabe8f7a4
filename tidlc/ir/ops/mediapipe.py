"""MediaPipe's attention crop: a face mesh that looks again at its eyes and lips.

``face_landmark_with_attention.tflite`` (MediaPipe's face mesh with ``refine_landmarks``, 478
points: iris included) predicts the 468 mesh points, then for each region (lips, left eye, right
eye) crops a 16x16 patch of an intermediate feature map around the region's points, rotated to
the line between two of them, and runs a small head on the patch; the head's points are mapped
back into the image. Three custom TFLite ops do the geometry; here they are three IR ops that
run in float (TIDL has no such layers: they are a few hundred multiply-adds, on the host or
as float layers):

* ``landmarks_to_matrix`` (``Landmarks2TransformMatrix`` v2): from points ``(B, N, D)`` (x, y
  first), the 4x4 affine map from the crop's pixel grid to the points' frame. The crop's angle
  is ``target_rotation - atan2(y_right - y_left, x_right - x_left)``; its center and size are
  those of the box around the ``subset`` points in that rotated frame, scaled by ``scale``;
  ``T = shift(center) rotate(-angle) scale(sx w / out_w, sy h / out_h) shift(-out_w/2, -out_h/2)``.
* ``warp_bilinear`` (``TransformTensorBilinear``): samples ``x`` (NCHW) at the matrix's image
  of every output pixel (``half_pixel``: of its center, version 2), bilinearly; an output pixel
  whose source lies outside ``[0, W-1] x [0, H-1]`` is 0 in every channel.
* ``transform_landmarks`` (``TransformLandmarks``): applies the matrix's first two rows to each
  point's (x, y); a third coordinate (z) is kept. Version 1 scales the translation by ``scale``.

The matrix is read from its first two rows only, one per batch element or one for all
(MediaPipe's kernels take batch 1). The arithmetic follows MediaPipe's: float32 coordinates, the interpolation weights
applied in double precision and rounded to float32 per row and at the end.
"""
from __future__ import annotations

import numpy as np

from tidlc.ir.opdef import a_bool, a_float, a_floats, a_int, a_ints, defop, non_negative, positive
from tidlc.ir.ops._common import require_rank
from tidlc.ir.types import TensorType


def _rows(matrix: np.ndarray, batch: int) -> np.ndarray:
    """(batch, 8): the first two rows of each batch element's 4x4 matrix, float32 (one matrix
    serves every batch element)."""
    m = np.asarray(matrix, np.float32)
    rows = m.reshape(m.shape[0], -1)[:, :8]
    return np.repeat(rows, batch, axis=0) if rows.shape[0] == 1 and batch > 1 else rows


def _batches(data: TensorType, m: TensorType, what: str) -> None:
    if data.shape is not None and m.shape is not None and None not in (data.shape[0], m.shape[0]) and \
            m.shape[0] not in (1, data.shape[0]):
        raise ValueError(f"{what} has {m.shape[0]} matrices for a batch of {data.shape[0]}")


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def landmarks_to_matrix_ref(points, subset, left: int, right: int, target_rotation: float,
                            output_size, scale) -> np.ndarray:
    """The (B, 4, 4) float32 crop matrices of ``points`` (B, N, D): see the module doc."""
    pts = np.asarray(points, np.float32).astype(np.float64)
    out_h, out_w = output_size
    sx, sy = scale
    mats = np.zeros((pts.shape[0], 4, 4))
    for b, p in enumerate(pts):
        angle = target_rotation - np.arctan2(p[right, 1] - p[left, 1], p[right, 0] - p[left, 0])
        rotated = p[list(subset), :2] @ _rotation(angle).T
        low, high = rotated.min(axis=0), rotated.max(axis=0)
        width, height = high - low
        center = _rotation(-angle) @ ((low + high) / 2)
        t = np.eye(4)
        t[:2, :2] = _rotation(-angle) @ np.diag([sx * width / out_w, sy * height / out_h])
        t[:2, 3] = center + t[:2, :2] @ np.array([-out_w / 2.0, -out_h / 2.0])
        mats[b] = t
    return mats.astype(np.float32)


def _points(t: TensorType, what: str) -> None:
    require_rank(t, 3, what)
    if t.dtype != "f32":
        raise ValueError(f"{what} must be f32, got {t.dtype}")


def _landmarks_to_matrix_infer(op, types):
    (p,) = types
    _points(p, "landmarks_to_matrix points")
    a = op.attrs
    if p.shape is not None and p.shape[1] is not None:
        n = p.shape[1]
        used = [*a["subset"], a["left"], a["right"]]
        if min(used) < 0 or max(used) >= n:
            raise ValueError(f"landmarks_to_matrix point index {max(used) if max(used) >= n else min(used)} is "
                             f"outside the {n} points")
        if p.shape[2] is not None and p.shape[2] < 2:
            raise ValueError(f"landmarks_to_matrix points need x and y, got {p.shape[2]} coordinate(s)")
    if not a["subset"]:
        raise ValueError("landmarks_to_matrix needs at least one subset point")
    return [TensorType((None if p.shape is None else p.shape[0], 4, 4), "f32")]


def _landmarks_to_matrix_compute(op, points):
    a = op.attrs
    return landmarks_to_matrix_ref(points, a["subset"], a["left"], a["right"], a["target_rotation"],
                                   a["output_size"], a["scale"])


defop("landmarks_to_matrix", ("points",),
      {"subset": a_ints(doc="the points whose box the crop covers"),
       "left": a_int(check=non_negative, doc="the point at the crop's left end"),
       "right": a_int(check=non_negative, doc="the point at the crop's right end"),
       "target_rotation": a_float(0.0, doc="radians"),
       "output_size": a_ints(length=2, check=positive, doc="the crop's (H, W)"),
       "scale": a_floats((1.0, 1.0), length=2, check=positive, doc="the box's growth (x, y)")},
      infer=_landmarks_to_matrix_infer, compute=_landmarks_to_matrix_compute, category="misc",
      doc="MediaPipe Landmarks2TransformMatrix v2: the 4x4 map from a rotated crop's grid to the points' frame.")


def _matrix(t: TensorType, what: str) -> None:
    require_rank(t, 3, what)
    if t.shape is not None and tuple(t.shape[1:]) != (4, 4):
        raise ValueError(f"{what} must be (B, 4, 4), got {t.shape}")


def warp_bilinear_ref(x, matrix, output_size, half_pixel: bool = True) -> np.ndarray:
    """``x`` (B, C, H, W) sampled on the (B, C, out_h, out_w) grid that ``matrix`` maps into it."""
    x = np.asarray(x, np.float32)
    b_n, c_n, h, w = x.shape
    out_h, out_w = output_size
    out = np.zeros((b_n, c_n, out_h, out_w), np.float32)
    oy, ox = np.meshgrid(np.arange(out_h, dtype=np.float32), np.arange(out_w, dtype=np.float32), indexing="ij")
    for b, m in enumerate(_rows(matrix, b_n) if b_n else ()):
        m = m.copy()
        if half_pixel:  # sample at pixel centers: T -> S T A (A: +0.5, S: -0.5 on x and y)
            m[3] = np.float32(np.float64(m[3]) + (np.float64(m[0]) * 0.5 + np.float64(m[1]) * 0.5 - 0.5))
            m[7] = np.float32(np.float64(m[7]) + (np.float64(m[4]) * 0.5 + np.float64(m[5]) * 0.5 - 0.5))
        # float32 dot products with (x, y, 0, 1), summed in MediaPipe's order
        tx = ((m[0] * ox + m[1] * oy) + m[2] * np.float32(0)) + m[3]
        ty = ((m[4] * ox + m[5] * oy) + m[6] * np.float32(0)) + m[7]
        inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
        fx0, fy0 = np.floor(tx), np.floor(ty)
        x0 = np.where(inside, fx0, 0).astype(np.int64)
        y0 = np.where(inside, fy0, 0).astype(np.int64)
        right = (tx - fx0).astype(np.float64)
        lower = (ty - fy0).astype(np.float64)
        plane = np.pad(x[b], ((0, 0), (0, 1), (0, 1)))  # a read past the last row/column is 0
        taps = [[plane[:, y0 + dy, x0 + dx].astype(np.float64) for dx in (0, 1)] for dy in (0, 1)]
        up = ((1.0 - right) * taps[0][0] + right * taps[0][1]).astype(np.float32).astype(np.float64)
        down = ((1.0 - right) * taps[1][0] + right * taps[1][1]).astype(np.float32).astype(np.float64)
        out[b] = np.where(inside, (lower * down + (1.0 - lower) * up).astype(np.float32), np.float32(0))
    return out


def _warp_bilinear_infer(op, types):
    x, m = types
    require_rank(x, 4, "warp_bilinear input")
    _matrix(m, "warp_bilinear matrix")
    _batches(x, m, "warp_bilinear")
    if x.dtype != "f32" or m.dtype != "f32":
        raise ValueError(f"warp_bilinear takes f32 data and matrix, got {x.dtype} and {m.dtype}")
    h, w = op.attrs["output_size"]
    n, c = (None, None) if x.shape is None else x.shape[:2]
    return [TensorType((n, c, h, w), "f32", x.layout)]


def _warp_bilinear_compute(op, x, matrix):
    return warp_bilinear_ref(x, matrix, op.attrs["output_size"], op.attrs["half_pixel"])


defop("warp_bilinear", ("x", "matrix"),
      {"output_size": a_ints(length=2, check=positive, doc="(H, W)"),
       "half_pixel": a_bool(True, doc="map pixel centers (TransformTensorBilinear v2), else corners (v1)")},
      infer=_warp_bilinear_infer, compute=_warp_bilinear_compute, category="data",
      doc="MediaPipe TransformTensorBilinear: bilinear samples of x (NCHW) at a 4x4 matrix's image of a grid.")


def transform_landmarks_ref(points, matrix, scale: float = 1.0) -> np.ndarray:
    """``points`` (B, N, D), D = 2 or 3: (x, y) mapped by ``matrix``'s first two rows, z kept."""
    p = np.asarray(points, np.float32)
    out = p.copy()
    for b, m in enumerate(_rows(matrix, p.shape[0]) if p.shape[0] else ()):
        tx, ty = np.float32(m[3] * np.float32(scale)), np.float32(m[7] * np.float32(scale))
        x, y = p[b, :, 0], p[b, :, 1]
        out[b, :, 0] = ((m[0] * x + m[1] * y) + m[2] * np.float32(0)) + tx
        out[b, :, 1] = ((m[4] * x + m[5] * y) + m[6] * np.float32(0)) + ty
    return out


def _transform_landmarks_infer(op, types):
    p, m = types
    _points(p, "transform_landmarks points")
    _matrix(m, "transform_landmarks matrix")
    _batches(p, m, "transform_landmarks")
    if p.shape is not None and p.shape[2] not in (None, 2, 3):
        raise ValueError(f"transform_landmarks points have 2 or 3 coordinates, got {p.shape[2]}")
    return [p.with_layout(None)]


def _transform_landmarks_compute(op, points, matrix):
    return transform_landmarks_ref(points, matrix, op.attrs["scale"])


defop("transform_landmarks", ("points", "matrix"),
      {"scale": a_float(1.0, doc="the translation's factor (TransformLandmarks v1)")},
      infer=_transform_landmarks_infer, compute=_transform_landmarks_compute, category="misc",
      doc="MediaPipe TransformLandmarks: (x, y) of each point through a 4x4 matrix's first two rows.")
