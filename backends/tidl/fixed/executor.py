"""The fixed-point reference executor: runs a quantized graph op by op, in integers.

Each op whose result is a fixed-point tensor runs the integer kernel of its
kind (:mod:`.reference`, the specification); the kernel's parameters
(multipliers, shifts, tables, clamps) are derived once per op from the
operand and result types, exactly as docs/quantization.md states. Ops with
float results (a float island such as detection post-processing, or the
final ``data_convert``) run their float reference. Graph outputs are what the
graph says: the quantize pass ends every output with a ``data_convert`` to
f32, so ``run`` returns dequantized values; ``raw=True`` returns the integer
tensors before that last conversion.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from tidlc.diagnostics import TidlcError
from tidlc.interp import check_feeds, evaluate_op, free_after, output_names
from tidlc.ir.core import Graph, Op
from tidlc.ir.opdef import Trait
from tidlc.ir.types import QuantInfo, numpy_dtype

from . import reference as ref

Kernel = Callable[[list], list]

# What an op is comes from its traits (tidlc.ir.opdef.Trait); which ops have a fixed-point kernel is
# this executor's (the TIDL backend's) own table, KERNELS below: TIDL's layers, by op kind, plus two
# generic kernels chosen by trait (see kernel_factory).
# The op kinds the accumulator kernel (_mac_kernel) implements: the builtin Trait.MAC ops.
MAC_OPS = frozenset({"conv2d", "deconv2d", "dense", "scale", "matmul"})
# fused activations the MAC and eltwise kernels apply as their output clamp (act_bounds)
CLAMP_ACTS = ("none", "relu", "relu6", "clip")


def is_fixed(t) -> bool:
    return t.quant is not None and t.dtype[0] in "iu"


def graph_is_quantized(graph: Graph) -> bool:
    """True for a graph the quantize pass produced (graph attribute ``quantized``).

    A pre-quantized model as imported (TFLite int8, ONNX QDQ: ``quantize``/``dequantize``
    ops) is not: the float interpreter runs it, and the quantize pass maps it onto TIDL's scheme.
    """
    return bool(graph.attrs.get("quantized"))


def _quant(value) -> QuantInfo:
    q = value.type.quant
    if q is None:
        raise TidlcError(f"operand of type {value.type} is not quantized", value.producer.where() if value.producer else None)
    return q


def _scale(value) -> float:
    q = _quant(value)
    if len(q.scale) != 1 or q.zero_point:
        raise TidlcError("per-channel or asymmetric activations are not part of the TIDL scheme",
                         value.producer.where() if value.producer else None,
                         hint="re-run the quantize pass on the float model")
    return q.scale[0]


def act_bounds(op: Op, out: QuantInfo) -> tuple[int, int]:
    """The output clamp: the type's range intersected with the fused activation's."""
    lo, hi = out.qmin, out.qmax
    act = op.attrs.get("act", "none")
    s = out.scale[0]
    if act == "relu":
        lo = max(lo, 0)
    elif act == "relu6":
        lo, hi = max(lo, 0), min(hi, ref.round_half_away_int(6.0 * s))
    elif act == "clip":
        a, b = op.attrs["act_params"]
        if np.isfinite(a):
            lo = max(lo, ref.round_half_away_int(a * s))
        if np.isfinite(b):
            hi = min(hi, ref.round_half_away_int(b * s))
    elif act != "none":
        raise TidlcError(f"fused activation {act} has no fixed-point form", op.where(),
                         hint="the quantize pass splits it into its own op")
    return lo, hi


# ----------------------------------------------------------------------------- MAC
def mac_params(op: Op) -> dict:
    """Accumulator scale(s), multipliers, shift, clamp of a MAC op (conv2d, deconv2d, dense, scale, matmul)."""
    x, w = op.operands[0], op.operands[1]
    xq, wq, out = _quant(x), _quant(w), _quant(op.results[0])
    s_acc = _scale(x) * np.asarray(wq.scale, dtype=np.float64)
    shift = out.shift if out.shift is not None else 0
    mult = ref.round_half_away(out.scale[0] * 2.0 ** shift / s_acc).astype(np.int64)
    if mult.size == 1:
        mult = int(mult.reshape(-1)[0])
    bits = max(xq.bits, wq.bits)
    lo, hi = act_bounds(op, out)
    return {"s_acc": s_acc, "mult": mult, "shift": shift, "acc_width": ref.acc_bits(bits), "lo": lo, "hi": hi}


def _mac_kernel(op: Op, fast: bool = False) -> Kernel:
    p = mac_params(op)
    a = op.attrs
    kind = op.kind
    prepared = None  # fast path: exact chunked float32 GEMMs (fast.py), same bits as the specification
    int_prepared = None  # faster: exact integer VNNI GEMM with the output stage fused (8-bit conv2d, dense)
    w_const = op.operands[1].const_value()
    depthwise = None  # 8-bit depthwise on the AVX-512 kernel
    if fast and w_const is not None and kind == "conv2d" and a["groups"] > 1 and p["acc_width"] == 32:
        from . import fast as fast_kernels
        depthwise = fast_kernels.VnniDepthwise.plan_for(
            np.asarray(w_const), a["groups"], numpy_dtype(op.operands[0].type.dtype), a["strides"], a["pads"],
            a["dilations"], op.results[0].type.shape, p["mult"], p["shift"], p["lo"], p["hi"],
            numpy_dtype(op.results[0].type.dtype))
    if fast and w_const is not None and (kind == "dense" or (kind == "conv2d" and a["groups"] == 1)):
        from . import fast as fast_kernels
        w_const = np.asarray(w_const)
        prepared = fast_kernels.DenseWeights(w_const)
    out_type = op.results[0].type
    if prepared is not None and p["acc_width"] == 32:
        x_dtype, out_dtype = numpy_dtype(op.operands[0].type.dtype), numpy_dtype(out_type.dtype)
        if kind == "conv2d" and fast_kernels.IntConvWeights.supports(w_const):
            int_prepared = fast_kernels.VnniConv.plan(
                fast_kernels.IntConvWeights(w_const), x_dtype, a["strides"], a["pads"], a["dilations"],
                out_type.shape, p["mult"], p["shift"], p["lo"], p["hi"], out_dtype)
        elif kind == "dense":
            int_prepared = fast_kernels.VnniDense.plan(w_const, x_dtype, out_type.shape, p["mult"], p["shift"],
                                                       p["lo"], p["hi"], out_dtype)
    axis = {"conv2d": 1, "deconv2d": 1, "dense": -1, "matmul": -1, "scale": a.get("axis", 1)}[kind]

    def run(args):
        x, w = args[0], args[1]
        b = args[2] if len(args) > 2 else None
        acc = None
        if depthwise is not None:
            out = depthwise.run(x, b)
            if out is not None:
                return [out]
        if fast and kind == "conv2d" and a["groups"] > 1:  # depthwise / grouped: direct Cython loops
            from . import fast_ops
            return [fast_ops.grouped_conv(x, w, b, a["strides"], a["pads"], a["dilations"], a["groups"],
                                          p["acc_width"], p["mult"], p["shift"], p["lo"], p["hi"],
                                          numpy_dtype(out_type.dtype))]
        if int_prepared is not None:
            from . import fast as fast_kernels
            out = int_prepared.run(x, b)
            if out is not None:
                return [out]
        if prepared is not None:
            from . import fast as fast_kernels
            if kind == "conv2d":
                sums = fast_kernels.conv2d_sums(x, prepared, a["strides"], a["pads"], a["dilations"])
                if sums is not None:
                    return [fast_kernels.mac_output(sums, b, p["acc_width"], p["mult"], p["shift"], p["lo"], p["hi"])]
            else:
                acc = fast_kernels.dense_acc(x, prepared)
        if acc is not None:
            pass
        elif kind == "conv2d":
            acc = ref.conv2d_acc(x, w, a["strides"], a["pads"], a["dilations"], a["groups"])
        elif kind == "deconv2d":
            acc = ref.deconv2d_acc(x, w, a["strides"], a["pads"], a["dilations"], a["groups"], a["output_padding"])
        elif kind == "dense":
            acc = ref.dense_acc(x, w)
        elif kind == "matmul":
            acc = ref.matmul_acc(x, w)
        else:  # scale: a per-channel (or scalar) multiply
            xs = np.asarray(x, dtype=np.int64)
            acc = xs * (ref.channel_view(w.astype(np.int64), xs.ndim, axis) if w.size > 1 else int(w.reshape(-1)[0]))
        if b is not None:
            bias = b.astype(np.int64).reshape(-1)
            acc = acc + (ref.channel_view(bias, acc.ndim, axis) if bias.size > 1 else int(bias[0]))
        return [ref.mac_output(acc, p["acc_width"], p["mult"], p["shift"], p["lo"], p["hi"], axis)]
    return run


# ----------------------------------------------------------------------------- eltwise
def _eltwise_kernel(op: Op, fast: bool = False) -> Kernel:
    out = _quant(op.results[0])
    s_out = out.scale[0]
    sa, sb = _scale(op.operands[0]), _scale(op.operands[1])
    lo, hi = act_bounds(op, out)
    kind = op.kind
    dtype = numpy_dtype(op.results[0].type.dtype)
    if fast:
        from . import fast_ops
    if kind == "mul":
        m, n = ref.multiplier(s_out / (sa * sb))
        if fast:
            return lambda args: [fast_ops.eltwise_mul(args[0], args[1], m, n, lo, hi, dtype)]
        return lambda args: [ref.eltwise_mul(args[0], args[1], m, n, lo, hi)]
    (ma, mb), n = ref.common_multipliers([s_out / sa, s_out / sb])
    if kind in ("add", "sub"):
        if fast:
            return lambda args: [fast_ops.eltwise_add(args[0], args[1], ma, mb, n, lo, hi, kind == "sub", dtype)]
        return lambda args: [ref.eltwise_add(args[0], args[1], ma, mb, n, lo, hi, subtract=kind == "sub")]
    if fast:
        return lambda args: [fast_ops.eltwise_max(args[0], args[1], ma, mb, n, lo, hi, kind == "min", dtype)]
    return lambda args: [ref.eltwise_max(args[0], args[1], ma, mb, n, lo, hi, minimum=kind == "min")]


def eltwise_params(op: Op) -> dict:
    """Multipliers and shift of add/sub/max/min/mul (for reports and the backend)."""
    s_out = _quant(op.results[0]).scale[0]
    sa, sb = _scale(op.operands[0]), _scale(op.operands[1])
    if op.kind == "mul":
        m, n = ref.multiplier(s_out / (sa * sb))
        return {"mult": [m], "shift": n}
    mults, n = ref.common_multipliers([s_out / sa, s_out / sb])
    return {"mult": mults, "shift": n}


# ----------------------------------------------------------------------------- others
def _concat_kernel(op: Op, fast: bool = False) -> Kernel:
    out = _quant(op.results[0])
    scales = [_scale(v) for v in op.operands]
    axis = op.attrs["axis"]
    if fast:
        from . import fast_ops
        dtype = numpy_dtype(op.results[0].type.dtype)
        return lambda args: [fast_ops.concat(args, scales, out.scale[0], out.qmin, out.qmax, axis, dtype)]

    def run(args):
        parts = [ref.requantize(q, s, out.scale[0], out.qmin, out.qmax) for q, s in zip(args, scales)]
        return [np.concatenate(parts, axis=axis)]
    return run


def _requant_result(op: Op, fn: Kernel, fast: bool = False) -> Kernel:
    """Run a scale-preserving kernel; requantize if the pass gave the result another scale."""
    s_in, out = _scale(op.operands[0]), _quant(op.results[0])
    if s_in == out.scale[0]:
        return fn  # moving, selecting, pooling and resizing never leave the input's range
    if fast:
        from . import fast_ops
        dtype = numpy_dtype(op.results[0].type.dtype)
        return lambda args: [fast_ops.requantize(fn(args)[0], s_in, out.scale[0], out.qmin, out.qmax, dtype)]
    return lambda args: [ref.requantize(fn(args)[0], s_in, out.scale[0], out.qmin, out.qmax)]


def avg_pool_counts(op: Op, h: int, w: int, ho: int, wo: int) -> np.ndarray:
    """Taps each average-pool window divides by (padding included or not, as the op says)."""
    from tidlc.ir.ops.nn import _taps_inside
    a = op.attrs
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = a["kernel"], a["strides"], a["pads"], a["dilations"]
    lo_h, hi_h = (-pt, h + pb) if a["count_include_pad"] else (0, h)
    lo_w, hi_w = (-pl, w + pr) if a["count_include_pad"] else (0, w)
    ch = _taps_inside(np.arange(ho) * sh - pt, kh, dh, lo_h, hi_h)
    cw = _taps_inside(np.arange(wo) * sw - pl, kw, dw, lo_w, hi_w)
    return np.maximum(ch[:, None] * cw[None, :], 1)


def _pool_kernel(op: Op, fast: bool = False) -> Kernel:
    a = op.attrs
    ho, wo = op.results[0].type.shape[2:]
    if fast:  # the requantization (if any) fused into the Cython kernel
        from . import fast_ops
        s_in, out = _scale(op.operands[0]), _quant(op.results[0])
        # an average can exceed the type by one step (Q16 reciprocals round up): always saturate
        requant = None if s_in == out.scale[0] and a["mode"] == "max" else (s_in, out.scale[0], out.qmin, out.qmax)
        dtype = numpy_dtype(op.results[0].type.dtype)
        window = (a["kernel"], a["strides"], a["pads"], a["dilations"], ho, wo)
        counts = {}

        def run_fast(args):
            x = args[0]
            if a["mode"] == "max":
                return [fast_ops.max_pool(x, *window, requant, dtype)]
            if x.shape[2:] not in counts:
                counts[x.shape[2:]] = avg_pool_counts(op, x.shape[2], x.shape[3], ho, wo)
            return [fast_ops.avg_pool(x, *window, counts[x.shape[2:]], requant, dtype)]
        return run_fast

    def run(args):
        x = args[0]
        if a["mode"] == "max":
            return [ref.max_pool(x, a["kernel"], a["strides"], a["pads"], a["dilations"], ho, wo)]
        counts = avg_pool_counts(op, x.shape[2], x.shape[3], ho, wo)
        return [ref.avg_pool(x, a["kernel"], a["strides"], a["pads"], a["dilations"], ho, wo, counts)]
    return _requant_result(op, run) if a["mode"] == "max" else _saturated(op, run)


def _saturated(op: Op, fn: Kernel) -> Kernel:
    """Average pools: requantize to the result's scale and always saturate to its type (a Q16
    reciprocal that rounds up can take an average one step past the input's range)."""
    s_in, out = _scale(op.operands[0]), _quant(op.results[0])
    return lambda args: [ref.requantize(fn(args)[0], s_in, out.scale[0], out.qmin, out.qmax)]


def _global_pool_kernel(op: Op, fast: bool = False) -> Kernel:
    if fast:
        from . import fast_ops
        s_in, out = _scale(op.operands[0]), _quant(op.results[0])
        mode = op.attrs["mode"]
        requant = None if s_in == out.scale[0] and mode == "max" else (s_in, out.scale[0], out.qmin, out.qmax)
        dtype = numpy_dtype(op.results[0].type.dtype)
        return lambda args: [fast_ops.global_pool(args[0], mode, requant, dtype)]

    def run(args):
        x = args[0]
        if op.attrs["mode"] == "max":
            return [x.max(axis=tuple(range(2, x.ndim)), keepdims=True).astype(np.int64)]
        return [ref.global_avg_pool(x)]
    return _requant_result(op, run) if op.attrs["mode"] == "max" else _saturated(op, run)


def _resize_kernel(op: Op, fast: bool = False) -> Kernel:
    from tidlc.ir.ops.tensor import _scaled_len, _source_coords
    a = op.attrs
    if a["mode"] == "nearest":
        return _requant_result(op, lambda args: evaluate_op(op, args), fast)
    in_shape = op.operands[0].type.shape
    out_shape = tuple(a["sizes"]) if a["sizes"] else tuple(_scaled_len(d, s) for d, s in zip(in_shape, a["scales"]))
    axes = []
    for axis, (n_in, n_out) in enumerate(zip(in_shape, out_shape)):
        scale = n_out / n_in if a["sizes"] else a["scales"][axis]
        if n_in == n_out and scale == 1.0:
            continue
        src = _source_coords(n_out, n_in, scale, a["coord_mode"])
        lo, hi, w_hi = ref.linear_weights(src, n_in)
        axes.append((axis, lo, hi, w_hi))
    if fast:  # the requantization (if any) fused into the Cython kernel
        from . import fast_ops
        s_in, out = _scale(op.operands[0]), _quant(op.results[0])
        requant = None if s_in == out.scale[0] else (s_in, out.scale[0], out.qmin, out.qmax)
        dtype = numpy_dtype(op.results[0].type.dtype)
        return lambda args: [fast_ops.resize_linear(args[0], axes, requant, dtype)]
    return _requant_result(op, lambda args: [ref.resize_linear(args[0], axes)])


def _table_input(op: Op):
    """The quantization of a table op's input: a table has 2**bits entries, so 8 or 16 bits
    (a 32-bit input, as a hand-written IR text can declare, would need gigabytes)."""
    xq = _quant(op.operands[0])
    if xq.bits > 16:
        raise TidlcError(f"{op.kind}: a {xq.bits}-bit input has no fixed-point lookup table (8 or 16 bits)",
                         op.where(), code="unsupported")
    return xq


def _table_kernel(op: Op, fast: bool = False) -> Kernel:
    xq, out = _table_input(op), _quant(op.results[0])
    table = ref.make_table(lambda r: op.opdef.compute(op, r), _scale(op.operands[0]), out.scale[0],
                           (xq.qmin, xq.qmax), (out.qmin, out.qmax))
    if fast:
        from . import fast_ops
        dtype = numpy_dtype(op.results[0].type.dtype)
        return lambda args: [fast_ops.lut(args[0], table, xq.qmin, dtype)]
    return lambda args: [ref.lut(args[0], table, xq.qmin)]


def table_of(op: Op) -> np.ndarray:
    """The lookup table of a table op (for the backend and tests)."""
    xq, out = _table_input(op), _quant(op.results[0])
    return ref.make_table(lambda r: op.opdef.compute(op, r), _scale(op.operands[0]), out.scale[0],
                          (xq.qmin, xq.qmax), (out.qmin, out.qmax))


def _softmax_kernel(op: Op, fast: bool = False) -> Kernel:
    if op.attrs["log"]:
        raise TidlcError("log-softmax has no fixed-point form", op.where())
    xq, out = _table_input(op), _quant(op.results[0])
    table = ref.exp_table(_scale(op.operands[0]), xq.bits, out.bits)
    axis = op.attrs["axis"]
    if fast:
        from . import fast_ops
        dtype = numpy_dtype(op.results[0].type.dtype)
        return lambda args: [fast_ops.softmax(args[0], axis, table, out.qmax, dtype)]
    return lambda args: [ref.softmax(args[0], axis, table, out.qmax)]


def _prelu_kernel(op: Op, fast: bool = False) -> Kernel:
    s_in, out = _scale(op.operands[0]), _quant(op.results[0])
    slope = op.operands[1].const_value()
    if slope is None:
        raise TidlcError("prelu needs constant slopes in fixed point", op.where())
    ratio = out.scale[0] / s_in
    m_pos, n = ref.multiplier(ratio)
    m_neg = ref.round_half_away(np.asarray(slope, np.float64).reshape(-1) * ratio * 2.0 ** n).astype(np.int64)
    m_neg = int(m_neg[0]) if m_neg.size == 1 else m_neg
    if fast:
        from . import fast_ops
        dtype = numpy_dtype(op.results[0].type.dtype)
        return lambda args: [fast_ops.prelu(args[0], m_pos, m_neg, n, out.qmin, out.qmax, dtype)]
    return lambda args: [ref.prelu(args[0], m_pos, m_neg, n, out.qmin, out.qmax)]


def _pad_kernel(op: Op, fast: bool = False) -> Kernel:
    a = op.attrs
    out = _quant(op.results[0])
    code = ref.round_half_away_int(a["value"] * out.scale[0]) if np.isfinite(a["value"]) else (
        out.qmax if a["value"] > 0 else out.qmin)
    code = min(max(code, out.qmin), out.qmax)

    def run(args):
        from tidlc.ir.ops.tensor import _pad_compute
        fake = Op("pad", op.operands, op.results, {**a, "value": float(code)})
        return [_pad_compute(fake, args[0])]
    return _requant_result(op, run, fast)


def _argmax_kernel(op: Op, fast: bool = False) -> Kernel:
    return lambda args: evaluate_op(op, args)


def _data_movement_kernel(op: Op, fast: bool = False) -> Kernel:
    return _requant_result(op, lambda args: evaluate_op(op, args), fast)


def _data_convert_kernel(op: Op, fast: bool = False) -> Kernel:
    if fast:
        from . import fast_ops
        src, dst, dtype = op.operands[0].type.quant, op.results[0].type.quant, op.attrs["dtype"]
        return lambda args: [fast_ops.convert(args[0], src, dst, dtype)]
    return lambda args: evaluate_op(op, args)


# TIDL's own kernels, by op kind
KERNELS: dict[str, Callable[[Op], Kernel]] = {
    **{k: _mac_kernel for k in MAC_OPS},
    **{k: _eltwise_kernel for k in ("add", "sub", "mul", "max", "min")},
    "concat": _concat_kernel, "pool2d": _pool_kernel, "global_pool": _global_pool_kernel,
    "resize": _resize_kernel, "softmax": _softmax_kernel, "prelu": _prelu_kernel, "pad": _pad_kernel,
    "argmax": _argmax_kernel, "data_convert": _data_convert_kernel,
}


def kernel_factory(op: Op) -> Callable[[Op], Kernel] | None:
    """The kernel factory of ``op``'s kind, or None if it has no fixed-point form: TIDL's own
    kernel (KERNELS), else by trait a lookup table of its float compute (``Trait.LUT``) or its
    float compute run on the integer codes (``Trait.SCALE_PRESERVING``: reshape, transpose,
    slice, ...: values are only moved or selected), requantized if the result's scale differs."""
    factory = KERNELS.get(op.kind)
    if factory is not None:
        return factory
    opdef = op.opdef
    if opdef.has(Trait.LUT):
        return _table_kernel
    if opdef.has(Trait.SCALE_PRESERVING):
        return _data_movement_kernel
    return None


def has_integer_kernel(op: Op) -> bool:
    """Whether the fixed-point executor can run ``op`` in integers (the quantizer keeps the other
    ops in float between data_convert ops)."""
    return kernel_factory(op) is not None


def make_kernel(op: Op, fast: bool = False) -> Kernel:
    """The callable that runs ``op``: its integer kernel, or its float reference for float ops.

    ``fast``: use the exact fast MAC kernels (:mod:`.fast`) where they apply; same bits."""
    if op.kind == "data_convert":
        return _data_convert_kernel(op, fast)
    fixed_operands = any(is_fixed(v.type) for v in op.operands)
    fixed_results = any(is_fixed(r.type) for r in op.results)
    if not (fixed_operands or fixed_results):
        return lambda args: evaluate_op(op, args)
    factory = kernel_factory(op)
    if factory is None:
        raise TidlcError(f"op '{op.kind}' has no fixed-point kernel", op.where(),
                         hint="the quantize pass keeps such ops in float between data_convert ops")
    if op.kind == "argmax" or fixed_results:
        return factory(op, fast)
    raise TidlcError(f"{op.kind} reads fixed-point operands but has a float result", op.where(),
                     hint="insert a data_convert to f32 before it")


class FixedExecutor:
    """A quantized graph prepared for repeated execution (kernels and their parameters built once).

    ``kernels``: ``"numpy"`` runs the specification (:mod:`.reference`) only; ``"auto"`` uses the
    exact fast kernels where they apply (bit-identical results, tested). ``threads``: worker
    threads of the fast kernels (default: ``TIDLC_NUM_THREADS``, else every CPU available)."""

    def __init__(self, graph: Graph, kernels: str = "numpy", threads: int | None = None):
        if kernels not in ("numpy", "auto"):
            raise TidlcError(f"unknown kernels {kernels!r}", hint="auto or numpy")
        if threads is not None:
            if threads < 1:
                raise TidlcError(f"--threads must be at least 1, got {threads}")
            from . import fast
            fast.set_threads(threads)
        self.graph = graph
        self.consts: dict[int, np.ndarray] = {}
        self.kernels: list[Kernel | None] = []
        for op in graph.ops:
            if op.kind == "const":
                self.consts[id(op.results[0])] = np.asarray(op.data)
                self.kernels.append(None)
            elif op.kind == "input":
                self.kernels.append(None)
            else:
                self.kernels.append(make_kernel(op, fast=kernels == "auto"))
        keep = {id(v) for v in graph.outputs} | set(self.consts)
        for v in graph.outputs:  # --raw reads the operand of a final data_convert
            if v.producer is not None and v.producer.kind == "data_convert":
                keep.add(id(v.producer.operands[0]))
        self.free_after = free_after(graph, keep)
        self.names = output_names(graph)

    def run(self, feeds: Mapping[str, np.ndarray],
            observer: Callable[[Op, list[np.ndarray]], None] | None = None,
            raw: bool = False) -> dict[str, np.ndarray]:
        """Outputs by name. ``raw=True``: the integer tensors before each output's final data_convert."""
        graph = self.graph
        feeds = check_feeds(graph, feeds)
        env: dict[int, np.ndarray] = dict(self.consts)
        for i, (op, kernel) in enumerate(zip(graph.ops, self.kernels)):
            if op.kind == "input":
                env[id(op.results[0])] = feeds[op.attrs["name"]]
                continue
            if kernel is None:
                continue
            args = [env[id(v)] for v in op.operands]
            try:
                results = kernel(args)
            except TidlcError:
                raise
            except (ValueError, IndexError, TypeError, ArithmeticError) as exc:
                raise TidlcError(f"{op.kind} failed in fixed point: {exc}", op.where()) from None
            stored = []
            for v, r in zip(op.results, results):
                r = np.asarray(r)
                if is_fixed(v.type) and r.dtype != numpy_dtype(v.type.dtype):
                    r = r.astype(numpy_dtype(v.type.dtype))
                env[id(v)] = r
                stored.append(r)
            if observer is not None:
                observer(op, stored)
            for vid in self.free_after[i]:
                env.pop(vid, None)
        outputs = {}
        for name, v in zip(self.names, graph.outputs):
            if raw and v.producer is not None and v.producer.kind == "data_convert" and is_fixed(v.producer.operands[0].type):
                outputs[name] = env[id(v.producer.operands[0])]
            else:
                outputs[name] = env[id(v)]
        return outputs


def run_fixed(graph: Graph, feeds: Mapping[str, np.ndarray], raw: bool = False) -> dict[str, np.ndarray]:
    return FixedExecutor(graph).run(feeds, raw=raw)
