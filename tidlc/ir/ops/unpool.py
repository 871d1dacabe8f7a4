"""Max pooling that also returns where each maximum came from, and its inverse (max-unpooling).

SegNet/ENet-style decoders upsample by putting each value back at the
position its encoder's max pooling took it from, zeros elsewhere (the
Caffe forks' ``Pooling`` with a second "mask" top and ``Upsample`` with two
bottoms; ONNX MaxPool's Indices output and MaxUnpool).

Indices are i64 and, as Caffe's mask, count positions inside one channel
plane of the *input*: ``h * W + w``. A window's maximum is its first
largest element in row-major order.
"""
from __future__ import annotations

import numpy as np

from tidlc.ir.opdef import a_bool, a_ints, defop, non_negative, positive
from tidlc.ir.ops._common import require_rank, spatial_out
from tidlc.ir.types import TensorType


def _max_pool_index_infer(op, types):
    x = types[0]
    require_rank(x, 4, "max_pool_index input")
    if x.shape is None:
        return [x, TensorType(None, "i64", x.layout)]
    a = op.attrs
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = a["kernel"], a["strides"], a["pads"]
    if max(pt, pb) >= kh or max(pl, pr) >= kw:
        raise ValueError(f"max_pool_index pads {a['pads']} not smaller than kernel {a['kernel']}")
    h = spatial_out(x.shape[2], kh, sh, pt, pb, 1, a["ceil_mode"])
    w = spatial_out(x.shape[3], kw, sw, pl, pr, 1, a["ceil_mode"])
    shape = (x.shape[0], x.shape[1], h, w)
    return [TensorType(shape, x.dtype, x.layout), TensorType(shape, "i64", x.layout)]


def max_pool_index_ref(x, kernel, strides, pads, ceil_mode=False):
    _n, _c, h, w = x.shape
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = kernel, strides, pads
    ho = spatial_out(h, kh, sh, pt, pb, 1, ceil_mode)
    wo = spatial_out(w, kw, sw, pl, pr, 1, ceil_mode)
    extra_b = max(0, (ho - 1) * sh + kh - (h + pt + pb))
    extra_r = max(0, (wo - 1) * sw + kw - (w + pl + pr))
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb + extra_b), (pl, pr + extra_r)),
                constant_values=-np.inf)
    taps = np.stack([xp[:, :, i: i + (ho - 1) * sh + 1: sh, j: j + (wo - 1) * sw + 1: sw]
                     for i in range(kh) for j in range(kw)])
    best = np.argmax(taps, axis=0)  # first maximum in row-major window order
    values = np.take_along_axis(taps, best[None], axis=0)[0]
    rows = np.arange(ho)[:, None] * sh - pt + best // kw
    cols = np.arange(wo)[None, :] * sw - pl + best % kw
    return values.astype(x.dtype), (rows * w + cols).astype(np.int64)


def _max_pool_index_compute(op, x):
    a = op.attrs
    return list(max_pool_index_ref(x, a["kernel"], a["strides"], a["pads"], a["ceil_mode"]))


defop("max_pool_index", ("x",),
      {"kernel": a_ints(length=2, check=positive),
       "strides": a_ints((1, 1), length=2, check=positive),
       "pads": a_ints((0, 0, 0, 0), length=4, check=non_negative, doc="top, left, bottom, right"),
       "ceil_mode": a_bool(False)},
      infer=_max_pool_index_infer, compute=_max_pool_index_compute, num_results=2,
      category="vector",
      doc="Max pooling returning (values, i64 indices h * W + w within each input plane).")


def _max_unpool_infer(op, types):
    x, index = types
    require_rank(x, 4, "max_unpool input")
    if index.dtype not in ("i64", "i32"):
        raise ValueError(f"max_unpool indices must be integers, got {index.dtype}")
    if x.shape is not None and index.shape is not None and tuple(x.shape) != tuple(index.shape):
        raise ValueError(f"max_unpool values {x.shape} and indices {index.shape} differ in shape")
    h, w = op.attrs["output_size"]
    n, c = (None, None) if x.shape is None else x.shape[:2]
    return [TensorType((n, c, h, w), x.dtype, x.layout)]


def _max_unpool_compute(op, x, index):
    n, c = x.shape[:2]
    h, w = op.attrs["output_size"]
    flat_index = index.reshape(n, c, -1)
    if flat_index.size and (flat_index.min() < 0 or flat_index.max() >= h * w):
        raise ValueError(f"max_unpool index outside the {h}x{w} output")
    out = np.zeros((n, c, h * w), dtype=x.dtype)
    np.put_along_axis(out, flat_index, x.reshape(n, c, -1), axis=2)
    return out.reshape(n, c, h, w)


defop("max_unpool", ("x", "indices"),
      {"output_size": a_ints(length=2, check=positive, doc="(H, W)")},
      infer=_max_unpool_infer, compute=_max_unpool_compute, category="data",
      doc="Scatter each value to its index (h * W + w) in a zero (H, W) plane (max-unpooling).")
