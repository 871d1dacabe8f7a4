"""The fast kernel tables (``--kernels auto``): same builder signature as the specification's table
(:mod:`.spec_kernels`, :mod:`.dispatch`), same bits.

* :data:`VNNI`: the exact integer kernels of ``igemm.h`` / ``igemm_port.h`` (8-bit conv2d with groups
  1, dense, depthwise, one-pixel), in the variant :func:`.fast.isa` names (avx512vnni,
  avxvnni, avx2, portable c; ``TIDLC_ISA`` forces one). Its builders decline for non-constant weights,
  16-bit layers and parameters the kernels do not take; its kernels decline a frame whose input is
  not of the planned element type.
* :data:`FAST`: portable exact kernels: for conv2d and dense with 16-bit activations or weights, the
  integer kernels of ``igemm16.h`` (``_igemm16``: AVX2, or portable C under ``TIDLC_ISA=c``); else
  chunked float GEMMs (:mod:`.fast`) for conv2d and dense
  with the output stage in Cython, and the Cython kernels of every other op (:mod:`.fast_ops`),
  which run the specification themselves for arguments they cannot bound.

Op kinds in neither table (deconv2d, matmul, scale, argmax) run on the specification.
"""
from __future__ import annotations

import functools

import numpy as np

from tidlc.ir.core import Op
from tidlc.ir.opdef import Trait
from tidlc.ir.types import numpy_dtype

from . import fast, fast_ops
from . import reference as ref
from .dispatch import Kernel, KernelContext, KernelTable
from .spec_kernels import (
    ELTWISE_OPS,
    _quant,
    _scale,
    act_bounds,
    avg_pool_counts,
    avg_shift,
    eltwise_params,
    mac_axis,
    mac_params,
    mac_stage,
    moved,
    padded,
    prelu_params,
    prelu_sides,
    requant_stage,
    rescaled,
    resize_axes,
    softmax_params,
    table_of,
)


def _result_dtype(op: Op) -> np.dtype:
    return numpy_dtype(op.results[0].type.dtype)


def _const_weights(op: Op) -> np.ndarray | None:
    w = op.operands[1].const_value()
    return None if w is None else np.asarray(w)


def _bias(args):
    return args[2] if len(args) > 2 else None


def _prelu_sides(builder):
    """A MAC kernel builder ``builder(op, ctx, p)`` as a table's ``(op, ctx)`` one: with
    :func:`.spec_kernels.mac_params`, or, for a layer with a fused prelu, twice, with each side of
    its output stage (:func:`.spec_kernels.prelu_sides`), the results added (the negative side
    negated on the channels whose slope is negative): the kernels take one multiplier per
    channel, not one per sign."""
    @functools.wraps(builder)
    def build(op: Op, ctx: KernelContext) -> Kernel | None:
        p = mac_params(op)
        if "m_neg" not in p:
            return builder(op, ctx, p)
        pos_p, neg_p, flip = prelu_sides(p)
        pos, neg = builder(op, ctx, pos_p), builder(op, ctx, neg_p)
        if pos is None or neg is None:
            return None
        hi, axis = p["hi"], mac_axis(op)
        sign = None if flip is None else np.where(flip, -1, 1).astype(np.int32)

        def run(args):
            a = pos(args)
            b = a if a is NotImplemented else neg(args)
            if b is NotImplemented:
                return NotImplemented
            a, b = a[0], b[0]
            if sign is None:
                return [np.add(a, b, dtype=a.dtype)]
            out = b.astype(np.int32) * ref.channel_view(sign, b.ndim, axis)
            out += a
            return [np.minimum(out, hi, out=out).astype(a.dtype)]
        return run
    return build


# ----------------------------------------------------------------------------- VNNI
def _vnni_plan(op: Op, p: dict):
    """The VNNI kernel object of an 8-bit conv2d or dense layer, or None."""
    a, w = op.attrs, _const_weights(op)
    if w is None or p["acc_width"] != 32:
        return None
    x_dtype, out_dtype, out_shape = numpy_dtype(op.operands[0].type.dtype), _result_dtype(op), op.results[0].type.shape
    stage = (p["mult"], p["shift"], p["lo"], p["hi"], out_dtype)
    if op.kind == "dense":
        return fast.VnniDense.plan(w, x_dtype, out_shape, *stage)
    if a["groups"] > 1:
        return fast.VnniDepthwise.plan_for(w, a["groups"], x_dtype, a["strides"], a["pads"], a["dilations"],
                                           out_shape, *stage)
    if not fast.IntConvWeights.supports(w):
        return None
    return fast.VnniConv.plan(fast.IntConvWeights(w), x_dtype, a["strides"], a["pads"], a["dilations"], out_shape,
                              *stage)


@_prelu_sides
def _vnni_mac(op: Op, ctx: KernelContext, p: dict) -> Kernel | None:
    plan = _vnni_plan(op, p)
    if plan is None:
        return None
    threads = ctx.threads

    def run(args):
        out = plan.run(args[0], _bias(args), threads)
        return NotImplemented if out is None else [out]
    return run


VNNI = KernelTable("avx512-vnni", {"conv2d": _vnni_mac, "dense": _vnni_mac})


# ----------------------------------------------------------------------------- exact GEMMs, Cython
def _grouped_conv(op: Op, p: dict) -> Kernel:
    """Grouped and depthwise convolutions: direct Cython loops."""
    a, dtype = op.attrs, _result_dtype(op)
    conv = (a["strides"], a["pads"], a["dilations"], a["groups"])
    stage = (p["acc_width"], p["mult"], p["shift"], p["lo"], p["hi"], dtype)
    return lambda args: [fast_ops.grouped_conv(args[0], args[1], _bias(args), *conv, *stage)]


def _gemm_conv(op: Op, prepared: fast.DenseWeights, p: dict) -> Kernel:
    """conv2d (groups 1): exact float GEMM sums (declines a frame they cannot hold exactly), output stage in Cython."""
    a = op.attrs

    def run(args):
        sums = fast.conv2d_sums(args[0], prepared, a["strides"], a["pads"], a["dilations"])
        if sums is None:
            return NotImplemented
        return [fast.mac_output(sums, _bias(args), p["acc_width"], p["mult"], p["shift"], p["lo"], p["hi"])]
    return run


def _int16_mac(op: Op, ctx: KernelContext, p: dict) -> Kernel | None:
    """conv2d (groups 1 or depthwise) and dense with 16-bit activations or weights and constant
    weights: the exact integer kernels of ``igemm16.h`` (AVX2 under every x86 ISA, portable C under
    ``TIDLC_ISA=c``), or None."""
    try:
        from . import _igemm16
    except ImportError:  # an unbuilt source tree
        return None
    w, a = _const_weights(op), op.attrs
    x_dtype, out_dtype, out_shape = numpy_dtype(op.operands[0].type.dtype), _result_dtype(op), op.results[0].type.shape
    stage = (p["mult"], p["shift"], p["acc_width"], p["lo"], p["hi"], out_dtype)
    if op.kind == "dense":
        plan = _igemm16.plan_dense(w, x_dtype, out_shape, *stage)
    else:
        plan = _igemm16.plan_conv(w, a["groups"], x_dtype, a["strides"], a["pads"], a["dilations"], out_shape, *stage)
    if plan is None:
        return None
    threads = ctx.threads

    def run(args):
        out = plan.run(args[0], _bias(args), threads or fast.threads(), fast.isa() != "c")
        return NotImplemented if out is None else [out]
    return run


@_prelu_sides
def _mac(op: Op, ctx: KernelContext, p: dict) -> Kernel | None:
    int16 = _int16_mac(op, ctx, p)  # 16-bit layers: integer kernels instead of float64 GEMMs
    if int16 is not None:
        return int16
    if op.kind == "conv2d" and op.attrs["groups"] > 1:
        return _grouped_conv(op, p)
    w = _const_weights(op)
    if w is None:
        return None
    prepared = fast.DenseWeights(w)
    if op.kind == "conv2d":
        return _gemm_conv(op, prepared, p)
    return mac_stage(op, lambda x, w: fast.dense_acc(x, prepared), p)


def _eltwise(op: Op, ctx: KernelContext) -> Kernel:
    p, kind, dtype = eltwise_params(op), op.kind, _result_dtype(op)
    n = p["shift"]
    lo, hi = act_bounds(op, _quant(op.results[0]))
    if kind == "mul":
        m = p["mult"][0]
        return lambda args: [fast_ops.eltwise_mul(args[0], args[1], m, n, lo, hi, dtype)]
    ma, mb = p["mult"]
    if kind in ("add", "sub"):
        return lambda args: [fast_ops.eltwise_add(args[0], args[1], ma, mb, n, lo, hi, kind == "sub", dtype)]
    return lambda args: [fast_ops.eltwise_max(args[0], args[1], ma, mb, n, lo, hi, kind == "min", dtype)]


def _concat(op: Op, ctx: KernelContext) -> Kernel:
    out, dtype, axis = _quant(op.results[0]), _result_dtype(op), op.attrs["axis"]
    scales = [_scale(v) for v in op.operands]
    return lambda args: [fast_ops.concat(args, scales, out.scale[0], out.qmin, out.qmax, axis, dtype)]


def _rescaled(op: Op, fn: Kernel) -> Kernel:
    return rescaled(op, fn, functools.partial(fast_ops.requantize, out_dtype=_result_dtype(op)))


def _pool(op: Op, ctx: KernelContext) -> Kernel:
    a, dtype = op.attrs, _result_dtype(op)
    if a["mode"] != "max" and avg_shift(op) != ref.AVG_POOL_SHIFT:
        return None  # a Q30 reciprocal (16-bit averages): the Cython kernel divides in Q16 only
    ho, wo = op.results[0].type.shape[2:]
    # the requantization (if any) fused into the kernel; an average can exceed the type by one step
    # (Q16 reciprocals round up): always saturate
    requant = requant_stage(op, always=a["mode"] != "max")
    window = (a["kernel"], a["strides"], a["pads"], a["dilations"], ho, wo)
    if a["mode"] == "max":
        return lambda args: [fast_ops.max_pool(args[0], *window, requant, dtype)]
    counts = {}

    def run(args):
        x = args[0]
        if x.shape[2:] not in counts:
            counts[x.shape[2:]] = avg_pool_counts(op, x.shape[2], x.shape[3], ho, wo)
        return [fast_ops.avg_pool(x, *window, counts[x.shape[2:]], requant, dtype)]
    return run


def _global_pool(op: Op, ctx: KernelContext) -> Kernel:
    mode, dtype = op.attrs["mode"], _result_dtype(op)
    if mode != "max" and avg_shift(op) != ref.AVG_POOL_SHIFT:
        return None  # a Q30 reciprocal (16-bit averages): the Cython kernel divides in Q16 only
    requant = requant_stage(op, always=mode != "max")
    return lambda args: [fast_ops.global_pool(args[0], mode, requant, dtype)]


def _resize(op: Op, ctx: KernelContext) -> Kernel:
    if op.attrs["mode"] == "nearest":
        return _rescaled(op, moved(op))
    axes, requant, dtype = resize_axes(op), requant_stage(op), _result_dtype(op)
    return lambda args: [fast_ops.resize_linear(args[0], axes, requant, dtype)]


def _table(op: Op, ctx: KernelContext) -> Kernel:
    table, qmin, dtype = table_of(op), _quant(op.operands[0]).qmin, _result_dtype(op)
    return lambda args: [fast_ops.lut(args[0], table, qmin, dtype)]


def _softmax(op: Op, ctx: KernelContext) -> Kernel:
    (table, axis, qmax), dtype = softmax_params(op), _result_dtype(op)
    return lambda args: [fast_ops.softmax(args[0], axis, table, qmax, dtype)]


def _prelu(op: Op, ctx: KernelContext) -> Kernel:
    params, dtype = prelu_params(op), _result_dtype(op)
    return lambda args: [fast_ops.prelu(args[0], *params, dtype)]


def _data_convert(op: Op, ctx: KernelContext) -> Kernel:
    src, dst, dtype = op.operands[0].type.quant, op.results[0].type.quant, op.attrs["dtype"]
    return lambda args: [fast_ops.convert(args[0], src, dst, dtype)]


FAST = KernelTable(
    "exact",
    {"conv2d": _mac, "dense": _mac, **{k: _eltwise for k in ELTWISE_OPS},
     "concat": _concat, "pool2d": _pool, "global_pool": _global_pool, "resize": _resize, "softmax": _softmax,
     "prelu": _prelu, "pad": lambda op, ctx: _rescaled(op, padded(op)), "data_convert": _data_convert},
    ((Trait.LUT, _table), (Trait.SCALE_PRESERVING, lambda op, ctx: _rescaled(op, moved(op)))),
)

__all__ = ["FAST", "VNNI"]
