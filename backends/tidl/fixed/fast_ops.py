"""Fast exact kernels of the non-GEMM ops for ``--kernels auto``; :mod:`.reference` stays the specification.

Each function takes the arguments of its twin in :mod:`.reference` plus ``out_dtype``,
the result's element type, and returns the twin's values cast to it as the executor
casts (``numpy.astype``): the Cython kernels (``_ops.pyx``) write that type directly.
A scale-preserving op whose result the quantize pass gave another scale takes
``requant=(s_in, s_out, qmin, qmax)``: the twin's result then goes through
``reference.requantize``, fused into the same pass.

Each wrapper bounds every intermediate from the operands' element types and the
parameters: the kernel computes in int32 where all of them fit (vectorized), in
int64 where they fit that, so C's arithmetic is numpy's. Otherwise, and for what
the kernels do not take (int32/int64 data, more than 4 dimensions after merging
axes, per-channel or asymmetric conversions, shifts outside [0, 62], ...), the
wrapper runs the specification.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from . import _ops
from . import reference as ref

_SMALL = frozenset(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16))
_LIMIT = 1 << 63  # every intermediate stays strictly below this in absolute value
_LIMIT32 = 1 << 31  # ... and below this one, the kernels compute in int32 (vectorized)
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
DIRECT_CONV_TAPS = 48  # grouped conv: direct loops up to this many taps per output (C/g * kh * kw), else a GEMM


def _small(a: np.ndarray) -> bool:
    return a.dtype in _SMALL


def _int_kind(dtype) -> int | None:
    """The kernels' code of an integer result type (None: not one they write)."""
    return _ops.KINDS.get(np.dtype(dtype))


@functools.cache
def _abs(dtype) -> int:
    """The largest |value| of an integer element type."""
    info = np.iinfo(dtype)
    return max(-int(info.min), int(info.max))


def _result(shape, dtype) -> tuple[np.ndarray, np.ndarray]:
    out = np.empty(shape, dtype=dtype)
    return out, out.reshape(-1).view(np.uint8)


def _stage(requant, v_abs: int) -> tuple[int, int, int, int, bool] | None:
    """(mult, shift, lo, hi, narrow) of ``reference.requantize`` (identity without ``requant``) on
    values with ``|v| <= v_abs`` (narrow: it fits int32), or None when it could leave int64."""
    if requant is None:
        return 1, 0, INT64_MIN, INT64_MAX, v_abs < _LIMIT32
    s_in, s_out, qmin, qmax = requant
    m, n = (1, 0) if s_in == s_out else ref.multiplier(s_out / s_in)
    bound = v_abs * abs(m) + (1 << n)
    if not 0 <= n <= 62 or bound >= _LIMIT:
        return None
    return m, n, int(qmin), int(qmax), bound < _LIMIT32


def _finish(values: np.ndarray, requant, out_dtype) -> np.ndarray:
    """The specification's path: requantize (if asked), then the executor's cast."""
    if requant is not None:
        values = ref.requantize(values, *requant)
    return np.asarray(values).astype(out_dtype, copy=False)


# ----------------------------------------------------------------------------- grouped conv
def grouped_conv(x, w, bias, strides, pads, dilations, groups: int, acc_width: int, mult, shift,
                 lo: int, hi: int, out_dtype=np.int64) -> np.ndarray:
    """Equals ``mac_output(add_bias(conv2d_acc(x, w, ...), bias), acc_width, mult, shift, lo, hi)``
    cast to ``out_dtype``. Depthwise or few taps per output: direct loops in Cython over zero-padded
    int16 planes (uint16 data: int32), output stage fused; many taps per output: the specification's
    exact sums (its GEMM), then the output stage in Cython."""
    x, w = np.asarray(x), np.asarray(w)
    plan = _conv_plan(x, w, bias, strides, pads, dilations, groups, acc_width, mult, shift, out_dtype)
    if plan is None:
        acc = ref.add_bias(ref.conv2d_acc(x, w, strides, pads, dilations, groups), bias)
        return ref.mac_output(acc, acc_width, mult, shift, lo, hi).astype(out_dtype, copy=False)
    b, m, amin, amax, ho, wo, acc32, narrow, kind = plan
    n, o = x.shape[0], w.shape[0]
    out, raw = _result((n, o, ho, wo), out_dtype)
    if w.shape[1] == 1 or w.shape[1] * w.shape[2] * w.shape[3] <= DIRECT_CONV_TAPS:
        _ops.grouped_conv(np.ascontiguousarray(x), np.ascontiguousarray(w, dtype=np.int32), b, m, int(shift),
                          amin, amax, int(lo), int(hi), tuple(strides), tuple(pads), tuple(dilations), int(groups),
                          ho, wo, acc32, narrow, raw, kind)
    else:
        acc = ref.conv2d_acc(x, w, strides, pads, dilations, groups)
        _ops.mac_stage(np.ascontiguousarray(acc.reshape(n, o, -1)), b, m, int(shift), amin, amax,
                       int(lo), int(hi), raw, kind)
    return out


def _conv_plan(x, w, bias, strides, pads, dilations, groups, acc_width, mult, shift, out_dtype):
    """The kernel's arguments, or None when the specification must run."""
    kind = _int_kind(out_dtype)
    if (kind is None or x.ndim != 4 or w.ndim != 4 or not _small(x) or w.dtype.kind not in "iu"
            or np.ndim(shift) != 0 or not 0 <= int(shift) <= 62 or int(groups) < 1 or acc_width < 2):
        return None
    _, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (dh, dw), pads = strides, dilations, tuple(pads)
    if (c != cg * groups or o % groups or min(sh, sw, dh, dw) < 1 or len(pads) != 4 or min(pads) < 0
            or min(x.shape) == 0 or min(w.shape) == 0):
        return None
    ho = (h + pads[0] + pads[2] - (kh - 1) * dh - 1) // sh + 1
    wo = (wd + pads[1] + pads[3] - (kw - 1) * dw - 1) // sw + 1
    if ho < 1 or wo < 1:
        return None
    if w.dtype in (np.int8, np.int16):
        w_abs = _abs(w.dtype)
    else:  # weights must fit int16
        w_min, w_max = int(w.min()), int(w.max())
        if w_min < -(1 << 15) or w_max >= 1 << 15:
            return None
        w_abs = max(-w_min, w_max)
    b = np.zeros(o, np.int64) if bias is None else np.asarray(bias, dtype=np.int64).reshape(-1)
    m = np.asarray(mult)
    if b.size not in (1, o) or m.dtype.kind not in "iu" or m.size not in (1, o):
        return None
    if b.size != o:
        b = np.full(o, b[0], np.int64)
    m = np.full(o, int(m.reshape(-1)[0]), np.int64) if m.size != o else np.asarray(m, dtype=np.int64).reshape(-1)
    sums = cg * kh * kw * _abs(x.dtype) * w_abs
    b_abs = ref._abs_max(b)
    v_abs = sums + b_abs
    if acc_width < 64:
        amin, amax = -(1 << (acc_width - 1)), (1 << (acc_width - 1)) - 1
        v_abs = min(v_abs, 1 << (acc_width - 1))
    else:
        amin, amax = INT64_MIN, INT64_MAX
    m_abs = ref._abs_max(m)
    stage = (sums + b_abs) * m_abs + (1 << int(shift))  # no accumulator saturation: the int32 stage
    if sums + b_abs >= _LIMIT or v_abs * m_abs + (1 << int(shift)) >= _LIMIT:
        return None
    narrow = stage < _LIMIT32 and sums + b_abs <= amax
    return b, m, amin, amax, ho, wo, sums < _LIMIT32, narrow, kind


# ----------------------------------------------------------------------------- pooling
@functools.lru_cache(maxsize=1024)
def _windows_hold_a_tap(n_out: int, k: int, s: int, p: int, d: int, n_in: int) -> bool:
    """Every one of the n_out windows (k taps, stride s, dilation d, from -p) reads an input."""
    taps = (np.arange(n_out) * s - p)[:, None] + np.arange(k)[None, :] * d
    return bool(((taps >= 0) & (taps < n_in)).any(axis=1).all())


def _pool_ok(q, kernel, strides, pads, dilations, ho, wo) -> bool:
    return (q.ndim == 4 and _small(q) and min(q.shape) > 0 and ho > 0 and wo > 0 and min(kernel) > 0
            and min(strides) > 0 and min(dilations) > 0 and min(pads[:2]) >= 0)


def max_pool(q, kernel, strides, pads, dilations, ho: int, wo: int, requant=None, out_dtype=np.int64):
    """Equals ``reference.max_pool`` (then ``requantize``), cast to ``out_dtype``."""
    q = np.asarray(q)
    kind = _int_kind(out_dtype)
    stage = _stage(requant, _abs(q.dtype)) if _small(q) else None
    if (kind is None or stage is None or not _pool_ok(q, kernel, strides, pads, dilations, ho, wo)
            or not _windows_hold_a_tap(ho, kernel[0], strides[0], pads[0], dilations[0], q.shape[2])
            or not _windows_hold_a_tap(wo, kernel[1], strides[1], pads[1], dilations[1], q.shape[3])):
        return _finish(ref.max_pool(q, kernel, strides, pads, dilations, ho, wo), requant, out_dtype)
    out, raw = _result(q.shape[:2] + (ho, wo), out_dtype)
    _ops.pool2d(np.ascontiguousarray(q), True, tuple(kernel), tuple(strides), tuple(pads[:2]), tuple(dilations),
                ho, wo, np.zeros((1, 1), np.int64), *stage, raw, kind, _simd())
    return out


def avg_pool(q, kernel, strides, pads, dilations, ho: int, wo: int, counts, requant=None, out_dtype=np.int64):
    """Equals ``reference.avg_pool`` (then ``requantize``), cast to ``out_dtype``."""
    q = np.asarray(q)
    kind = _int_kind(out_dtype)
    ok = kind is not None and _pool_ok(q, kernel, strides, pads, dilations, ho, wo)
    if ok:
        c = np.asarray(counts, dtype=np.float64)
        ok = c.ndim <= 2 and c.size > 0 and bool((c >= 1).all()) and all(
            d in (1, n) for d, n in zip(c.shape[::-1], (wo, ho)))
    if ok:
        mult = np.ascontiguousarray(np.broadcast_to(ref.avg_multipliers(c), (ho, wo)))
        v_abs = kernel[0] * kernel[1] * _abs(q.dtype) * int(mult.max())
        stage = _stage(requant, (v_abs >> ref.AVG_POOL_SHIFT) + 1) if v_abs < 1 << 62 else None
        ok = stage is not None
        if ok:  # sums times multipliers must fit int32 too
            stage = stage[:4] + (stage[4] and v_abs + (1 << 15) < _LIMIT32,)
    if not ok:
        return _finish(ref.avg_pool(q, kernel, strides, pads, dilations, ho, wo, counts), requant, out_dtype)
    out, raw = _result(q.shape[:2] + (ho, wo), out_dtype)
    _ops.pool2d(np.ascontiguousarray(q), False, tuple(kernel), tuple(strides), tuple(pads[:2]), tuple(dilations),
                ho, wo, mult, *stage, raw, kind, _simd())
    return out


@functools.lru_cache(maxsize=256)
def _avg_multiplier(count: int) -> int:
    return int(ref.avg_multipliers(np.array(count)))


def global_pool(q, mode: str, requant=None, out_dtype=np.int64):
    """Global ``"avg"`` (``reference.global_avg_pool``) or ``"max"`` pooling over the axes after
    the second (then ``requantize``), cast to ``out_dtype``; keeps those axes as 1s."""
    q = np.asarray(q)
    kind = _int_kind(out_dtype)
    shape = q.shape[:2] + (1,) * (q.ndim - 2)
    count = math.prod(q.shape[2:]) if q.ndim > 2 else 0
    stage = None
    if kind is not None and _small(q) and q.ndim > 2 and count > 0 and q.shape[0] * q.shape[1] > 0:
        avg_mult = _avg_multiplier(count)
        v_abs = _abs(q.dtype) * (1 if mode == "max" else count * avg_mult)
        rounded = v_abs if mode == "max" else v_abs >> ref.AVG_POOL_SHIFT
        stage = _stage(requant, rounded + 1) if v_abs < 1 << 62 else None
    if stage is None:
        if mode == "max":
            values = q.max(axis=tuple(range(2, q.ndim)), keepdims=True).astype(np.int64)
        else:
            values = ref.global_avg_pool(q)
        return _finish(values, requant, out_dtype)
    out, raw = _result(shape, out_dtype)
    _ops.global_pool(np.ascontiguousarray(q).reshape(-1, count), mode == "max", avg_mult, *stage[:4], raw, kind,
                     _simd())
    return out


# ----------------------------------------------------------------------------- requantization, concat
def requantize(q, s_in: float, s_out: float, qmin: int, qmax: int, out_dtype=np.int64) -> np.ndarray:
    """Equals ``reference.requantize`` cast to ``out_dtype``."""
    q = np.asarray(q)
    kind = _int_kind(out_dtype)
    stage = _stage((s_in, s_out, qmin, qmax), _abs(q.dtype)) if _small(q) else None
    if kind is None or stage is None or q.size == 0:
        return ref.requantize(q, s_in, s_out, qmin, qmax).astype(out_dtype, copy=False)
    out, raw = _result(q.shape, out_dtype)
    _ops.requant_rows(np.ascontiguousarray(q).reshape(1, -1), *stage, raw, kind, q.size, 0, _simd())
    return out


def concat(parts, scales, s_out: float, qmin: int, qmax: int, axis: int, out_dtype=np.int64) -> np.ndarray:
    """Equals ``concatenate([reference.requantize(q, s, s_out, qmin, qmax) ...], axis)`` cast to ``out_dtype``."""
    parts = [np.asarray(p) for p in parts]
    kind = _int_kind(out_dtype)
    stages = [_stage((s, s_out, qmin, qmax), _abs(p.dtype)) if _small(p) else None for p, s in zip(parts, scales)]
    ndim = parts[0].ndim if parts else 0
    ok = kind is not None and parts and ndim > 0 and all(s is not None for s in stages) and -ndim <= axis < ndim
    if ok:
        axis %= ndim
        rest = [p.shape[:axis] + p.shape[axis + 1:] for p in parts]
        ok = all(p.ndim == ndim for p in parts) and all(r == rest[0] for r in rest)
    if ok:
        shape = list(parts[0].shape)
        shape[axis] = sum(p.shape[axis] for p in parts)
        ok = math.prod(shape) > 0
    if not ok:
        values = [ref.requantize(q, s, s_out, qmin, qmax) for q, s in zip(parts, scales)]
        return np.concatenate(values, axis=axis).astype(out_dtype, copy=False)
    out, raw = _result(tuple(shape), out_dtype)
    outer = math.prod(shape[:axis])
    row = math.prod(shape[axis:])
    col, simd = 0, _simd()
    for p, stage in zip(parts, stages):
        width = p.size // outer if outer else 0
        if width:
            _ops.requant_rows(np.ascontiguousarray(p).reshape(outer, width), *stage, raw, kind, row, col, simd)
        col += width
    return out


# ----------------------------------------------------------------------------- element-wise
def _broadcast4(qa, qb):
    """The broadcast shape and both operands as 4-d views of it in C order, the axes that both step
    through evenly merged (long rows), or None (shapes that do not broadcast, more than 4 axes left)."""
    if qa.shape == qb.shape and qa.flags.c_contiguous and qb.flags.c_contiguous:  # the common case
        return (qa.shape, qa.reshape(1, 1, 1, -1), qb.reshape(1, 1, 1, -1)) if qa.size else None
    try:
        shape = np.broadcast_shapes(qa.shape, qb.shape)
    except ValueError:
        return None
    if math.prod(shape) == 0:
        return None
    views = [np.broadcast_to(q if all(s % q.itemsize == 0 for s in q.strides) else np.ascontiguousarray(q), shape)
             for q in (qa, qb)]
    axes: list[tuple[int, tuple[int, int]]] = []  # (length, (stride in a, stride in b)), outer first
    for i, n in enumerate(shape):
        st = (views[0].strides[i], views[1].strides[i])
        if n == 1:
            continue
        if axes and axes[-1][1] == (st[0] * n, st[1] * n):
            axes[-1] = (axes[-1][0] * n, st)
        else:
            axes.append((n, st))
    if len(axes) > 4:
        return None
    axes = [(1, (0, 0))] * (4 - len(axes)) + axes
    shape4 = tuple(n for n, _ in axes)
    a, b = (np.lib.stride_tricks.as_strided(v, shape4, tuple(st[k] for _, st in axes), writeable=False)
            for k, v in enumerate(views))
    return shape, a, b


def _eltwise(op: str, qa, qb, ma: int, mb: int, shift: int, lo: int, hi: int, out_dtype, spec):
    qa, qb = np.asarray(qa), np.asarray(qb)
    kind = _int_kind(out_dtype)
    ok = kind is not None and _small(qa) and _small(qb) and 0 <= shift <= 62
    if ok:
        shift, lo, hi = int(shift), int(lo), int(hi)
        xa, xb = _abs(qa.dtype), _abs(qb.dtype)
        ma, mb = int(ma), int(mb)
        bound = {"add": xa * abs(ma) + xb * abs(mb), "sub": xa * abs(ma) + xb * abs(mb),
                 "mul": xa * xb * abs(ma)}.get(op, max(xa * abs(ma), xb * abs(mb)))
        ok = bound + (1 << shift) < _LIMIT
        narrow = bound + (1 << shift) < _LIMIT32
    if ok and narrow and op in ("add", "sub") and _add8(qa, qb, ma, -mb if op == "sub" else mb, shift, lo, hi, kind):
        out, raw = _result(qa.shape, out_dtype)
        _ops.add8(qa.reshape(-1).view(np.uint8), qa.dtype == np.int8, qb.reshape(-1).view(np.uint8),
                  qb.dtype == np.int8, ma, -mb if op == "sub" else mb, shift, lo, hi, raw, kind, _simd())
        return out
    views = _broadcast4(qa, qb) if ok else None
    if views is None:
        return spec().astype(out_dtype, copy=False)
    shape, a, b = views
    if a.strides[3] == 0 and b.strides[3] != 0 and op != "sub":  # keep the broadcast operand second
        a, b, ma, mb = b, a, (ma if op == "mul" else mb), (mb if op == "mul" else ma)
    out, raw = _result(shape, out_dtype)
    _ops.eltwise(a, b, _ops.ELTWISE[op], ma, mb, shift, lo, hi, narrow, raw, kind)
    return out


_ADD8_IN = frozenset(np.dtype(t) for t in (np.int8, np.uint8))
_ADD8_OUT = frozenset(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16))


def _add8(qa, qb, ma: int, mb: int, shift: int, lo: int, hi: int, kind) -> bool:
    """Whether ``_ops.add8`` (ops_simd.h) takes this add: 8-bit operands of one shape, contiguous,
    int16 multipliers, an 8/16-bit result whose range holds [lo, hi], shift <= 30 (the int32 bound
    is the caller's ``narrow``)."""
    if not (qa.dtype in _ADD8_IN and qb.dtype in _ADD8_IN and qa.shape == qb.shape and qa.size
            and qa.flags.c_contiguous and qb.flags.c_contiguous and shift <= 30
            and -(1 << 15) < ma < (1 << 15) and -(1 << 15) < mb < (1 << 15)):
        return False
    out = next((t for t in _ADD8_OUT if _ops.KINDS.get(t) == kind), None)
    return out is not None and np.iinfo(out).min <= lo <= hi <= np.iinfo(out).max


def _simd() -> bool:
    """The SIMD forms of the kernels (ops_simd.h: AVX2 where the CPU has it) run; not under
    TIDLC_ISA=c, which tests the C forms."""
    from . import fast
    return fast.isa() != "c"


def eltwise_add(qa, qb, ma: int, mb: int, shift: int, lo: int, hi: int, subtract: bool = False,
                out_dtype=np.int64) -> np.ndarray:
    """Equals ``reference.eltwise_add`` (numpy broadcasting) cast to ``out_dtype``."""
    return _eltwise("sub" if subtract else "add", qa, qb, ma, mb, shift, lo, hi, out_dtype,
                    lambda: ref.eltwise_add(qa, qb, ma, mb, shift, lo, hi, subtract))


def eltwise_mul(qa, qb, mult: int, shift: int, lo: int, hi: int, out_dtype=np.int64) -> np.ndarray:
    """Equals ``reference.eltwise_mul`` cast to ``out_dtype``."""
    return _eltwise("mul", qa, qb, mult, 1, shift, lo, hi, out_dtype,
                    lambda: ref.eltwise_mul(qa, qb, mult, shift, lo, hi))


def eltwise_max(qa, qb, ma: int, mb: int, shift: int, lo: int, hi: int, minimum: bool = False,
                out_dtype=np.int64) -> np.ndarray:
    """Equals ``reference.eltwise_max`` cast to ``out_dtype``."""
    return _eltwise("min" if minimum else "max", qa, qb, ma, mb, shift, lo, hi, out_dtype,
                    lambda: ref.eltwise_max(qa, qb, ma, mb, shift, lo, hi, minimum))


def prelu(q, m_pos: int, m_neg, shift: int, lo: int, hi: int, out_dtype=np.int64) -> np.ndarray:
    """Equals ``reference.prelu`` (channels on axis 1) cast to ``out_dtype``."""
    q = np.asarray(q)
    kind = _int_kind(out_dtype)
    neg = np.asarray(m_neg).reshape(-1)
    ok = (kind is not None and _small(q) and q.ndim >= 2 and q.size > 0 and 0 <= shift <= 62
          and neg.dtype.kind in "iu" and neg.size in (1, q.shape[1]))
    if ok:
        bound = _abs(q.dtype) * max(abs(int(m_pos)), ref._abs_max(neg)) + (1 << shift)
        ok = bound < _LIMIT
    if not ok:
        return ref.prelu(q, m_pos, m_neg, shift, lo, hi).astype(out_dtype, copy=False)
    neg = np.ascontiguousarray(np.broadcast_to(neg.astype(np.int64), (q.shape[1],)))
    out, raw = _result(q.shape, out_dtype)
    _ops.prelu(np.ascontiguousarray(q).reshape(q.shape[0], q.shape[1], -1), int(m_pos), neg, shift, lo, hi,
               bound < _LIMIT32, raw, kind)
    return out


# ----------------------------------------------------------------------------- tables
def lut(q, table, qmin_in: int, out_dtype=np.int64) -> np.ndarray:
    """Equals ``reference.lut`` cast to ``out_dtype`` (when every code of q's type is in the table)."""
    q = np.asarray(q)
    table = np.asarray(table)
    kind = _int_kind(out_dtype)
    ok = kind is not None and _small(q) and q.size > 0 and table.ndim == 1 and table.dtype.kind in "iu"
    if ok:
        info = np.iinfo(q.dtype)
        ok = int(info.min) >= qmin_in and int(info.max) - qmin_in < table.size
    if not ok:
        return ref.lut(q, table, qmin_in).astype(out_dtype, copy=False)
    out, raw = _result(q.shape, out_dtype)
    entries = np.ascontiguousarray(table.astype(out_dtype))  # what the executor's cast makes of each entry
    _ops.lut(np.ascontiguousarray(q).reshape(-1), entries.view(np.uint8), int(qmin_in), raw, kind)
    return out


def softmax(q, axis: int, exp_table, qmax_out: int, out_dtype=np.int64) -> np.ndarray:
    """Equals ``reference.softmax`` cast to ``out_dtype``."""
    q = np.asarray(q)
    table = np.asarray(exp_table)
    kind = _int_kind(out_dtype)
    ok = (kind is not None and _small(q) and q.ndim > 0 and q.size > 0 and -q.ndim <= axis < q.ndim
          and table.ndim == 1 and table.size > 0 and table.dtype.kind in "iu")
    if ok:
        axis %= q.ndim
        t_max = int(table.max())
        ok = int(table.min()) >= 0 and int(table[0]) > 0 and 0 <= qmax_out and \
            q.shape[axis] * t_max * max(qmax_out, 1) < 1 << 62
    if not ok:
        return ref.softmax(q, axis, table, qmax_out).astype(out_dtype, copy=False)
    outer = math.prod(q.shape[:axis])
    x3 = np.ascontiguousarray(q).reshape(outer, q.shape[axis], -1)
    out, raw = _result(q.shape, out_dtype)
    _ops.softmax(x3, np.ascontiguousarray(table, dtype=np.int64), int(qmax_out), raw, kind)
    return out


# ----------------------------------------------------------------------------- resize
def resize_linear(q, axes_weights, requant=None, out_dtype=np.int64) -> np.ndarray:
    """Equals ``reference.resize_linear`` (then ``requantize``) cast to ``out_dtype``, for
    resizes of axes 2 and 3 of a 4-d tensor; ``round_shift(v * 2**10, s + 10)`` equals
    ``round_shift(v, s)``, so an axis left alone is a Q10 identity."""
    q = np.asarray(q)
    kind = _int_kind(out_dtype)
    ok = kind is not None and _small(q) and q.ndim == 4 and q.size > 0
    per_axis = {}
    if ok:
        for axis, lo, hi, w_hi in axes_weights:
            lo, hi, w_hi = (np.asarray(v).reshape(-1) for v in (lo, hi, w_hi))
            if axis not in (2, 3, -1, -2) or axis % 4 in per_axis or not lo.size == hi.size == w_hi.size:
                ok = False
                break
            n_in = q.shape[axis % 4]
            if lo.size == 0 or min(lo.min(), hi.min(), w_hi.min()) < 0 or max(lo.max(), hi.max()) >= n_in \
                    or w_hi.max() > 1 << ref.RESIZE_WEIGHT_BITS:
                ok = False
                break
            per_axis[axis % 4] = tuple(np.ascontiguousarray(v, dtype=np.int64) for v in (lo, hi, w_hi))
    stage = _stage(requant, _abs(q.dtype)) if ok else None
    if stage is None:
        return _finish(ref.resize_linear(q, axes_weights), requant, out_dtype)
    for axis in (2, 3):
        if axis not in per_axis:
            index = np.arange(q.shape[axis], dtype=np.int64)
            per_axis[axis] = (index, index, np.zeros_like(index))
    (y0, y1, wy), (x0, x1, wx) = per_axis[2], per_axis[3]
    out, raw = _result(q.shape[:2] + (y0.size, x0.size), out_dtype)
    _ops.resize_linear(np.ascontiguousarray(q), y0, y1, wy, x0, x1, wx, *stage[:4], raw, kind, stage[4], _simd())
    return out


# ----------------------------------------------------------------------------- data_convert
def _per_tensor(info) -> bool:
    return info is not None and len(info.scale) == 1


def convert(x, src, dst, dtype: str) -> np.ndarray:
    """Equals ``reference.convert`` (the data_convert op) for per-tensor scales: quantize f32/f64,
    dequantize to f32, requantize small integers; anything else runs the specification."""
    from tidlc.ir.types import numpy_dtype
    x = np.asarray(x)
    out_dtype = numpy_dtype(dtype)
    if x.size == 0:
        return ref.convert(x, src, dst, dtype)
    kind = _int_kind(out_dtype)
    if src is None and dst is not None and kind is not None and _per_tensor(dst) \
            and x.dtype in (np.float32, np.float64):
        out, raw = _result(x.shape, out_dtype)
        _ops.quantize(np.ascontiguousarray(x).reshape(-1), float(dst.scale[0]), int(dst.zero_point),
                      int(dst.qmin), int(dst.qmax), raw, kind, _simd())
        return out
    if src is not None and (dst is None or kind is None) and out_dtype == np.float32 and _per_tensor(src) \
            and _small(x):
        out = np.empty(x.shape, np.float32)
        _ops.dequantize(np.ascontiguousarray(x).reshape(-1), float(src.scale[0]), float(src.zero_point),
                        out.reshape(-1), _simd())
        return out
    if src is not None and dst is not None and kind is not None and _per_tensor(src) and _per_tensor(dst) \
            and not src.zero_point and not dst.zero_point:
        return requantize(x, src.scale[0], dst.scale[0], dst.qmin, dst.qmax, out_dtype)
    return ref.convert(x, src, dst, dtype)
