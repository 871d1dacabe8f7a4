"""Float vs fixed point, layer by layer: where does the accuracy go?

Quantizes MODEL as ``tidlc compile`` would (same options), runs the float
reference and the fixed-point executor on the same input, and prints for
every fixed-point layer: name, op, output shape, scale, SNR (dB), cosine
similarity, max absolute error and the share of saturated outputs. The first
layer below ``--threshold`` dB is marked with the likely cause.

Errors accumulate and are amplified along the network (a sigmoid after a
wide-range logit turns a small input error into a large relative output
error), so the first layer below the threshold is not always the one that
loses the accuracy. Two more columns say which one does:

* ``own dB``: the layer's own error, its fixed-point result against its float
  op run on its (dequantized) fixed-point inputs: weight rounding, output
  rounding and clipping, without what its inputs bring;
* ``alone dB``: the network outputs' SNR (the worst output) when only this
  layer's own error is added to the float network (noise injection: the
  float graph downstream of the layer re-run once per layer).

The layer whose error alone costs the outputs the most is named as the one
to fix (``--no-attribution`` skips the re-runs).
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

import attrs
import numpy as np

from tidlc.diagnostics import TidlcError

NAME = "compare"
HELP = "float vs fixed point layer by layer (SNR, cosine, saturation)"
DEFAULT_THRESHOLD = 30.0  # dB, 8-bit
DEFAULT_THRESHOLD_16 = 60.0  # dB, --bits 16 (what 16 bits allow on the test models: docs/quantization.md)


def add_arguments(p) -> None:
    from tidlc.cli_options import add_model_options, add_pass_options, add_quant_options
    p.add_argument("model")
    p.add_argument("--input", action="append", default=[], metavar="[NAME=]FILE",
                   help="the input to compare on: .npy (pre-processed) or an image (pre-processed with "
                        "--mean/--scale/...); default: the first calibration frame")
    p.add_argument("--threshold", type=float, default=None, metavar="DB",
                   help=f"mark the first layer whose SNR is below DB (default {DEFAULT_THRESHOLD:g}, "
                        f"{DEFAULT_THRESHOLD_16:g} with --bits 16)")
    p.add_argument("--no-attribution", dest="attribution", action="store_false",
                   help="skip the per-layer noise injection that names the layer costing the outputs the "
                        "most (one float re-run of the graph downstream of each layer)")
    p.add_argument("--json", metavar="FILE", help="also write the table as JSON ('-' for stdout only)")
    p.add_argument("--plot", metavar="PNG", help="plot SNR per layer (needs matplotlib)")
    add_model_options(p)
    add_pass_options(p)
    add_quant_options(p)


@attrs.define
class Row:
    name: str
    op: str
    shape: list
    dtype: str
    scale: float
    shift: int | None
    snr_db: float
    cosine: float
    max_abs_error: float
    saturated_pct: float
    float_max: float
    representable_max: float
    codes_used: int
    below: bool = False
    cause: str = ""
    own_snr_db: float | None = None  # the layer's own error (its float op on its fixed-point inputs)
    alone_snr_db: float | None = None  # the outputs' SNR with only this layer's own error (noise injection)
    culprit: bool = False  # the layer whose own error costs the outputs the most
    channel_spread_db: float | None = None  # widest channel's max |x| over the median channel's (dB)
    wide_channel: int | None = None  # the channel with the widest range
    # a concat whose narrow input loses its precision at the joined scale (a detection head's scores
    # beside its box coordinates): that input's name, its part's SNR (dB) and max |x|
    weak_part: str | None = None
    weak_part_db: float | None = None
    weak_part_max: float | None = None
    weak_part_fix: list | None = None  # the layers that set the concat's precision (--16bit-layers)
    weak_part_const: bool = False  # that input is a constant (a ViT's class token)
    weak_part_at_output: bool = False  # the concat only feeds the outputs (a detector's decoded boxes and scores)
    fix_16bit: list | None = None  # what --16bit-layers names to make it 16-bit (a softmax: the layer before it)
    # every float value is under half a step of the fixed-point grid (an empty segmentation mask, a score
    # near 0 on this input): every code is 0, and its SNR on this input says nothing
    below_step: bool = False
    # the share of outputs whose float value lies beyond the representable range by more than half a
    # step: what calibration missed (an intended clip, a ReLU6 at 6, is at the limit, not beyond it)
    clipped_pct: float = 0.0
    # a MAC layer with one weight step for all its output channels: how far apart their weight ranges
    # are (dB, the widest over the median), the narrowest channel, and the own SNR output rounding alone
    # would leave (an own SNR well below it is the weights' rounding)
    weight_spread_db: float | None = None
    narrow_weight_channel: int | None = None
    rounding_db: float | None = None
    # the layer that costs the most: the outputs' SNR with only its error's mean per channel injected
    # (close to alone_snr_db: a bias, which bias calibration takes back)
    alone_mean_snr_db: float | None = None

    def weak_below(self, threshold: float) -> bool:
        """A concat whose narrow input's part is below ``threshold`` (whatever the tensor's SNR)."""
        return self.weak_part_db is not None and self.weak_part_db < threshold

    def as_json(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        for key in ("snr_db", "cosine", "max_abs_error", "saturated_pct", "float_max", "representable_max", "scale",
                    "own_snr_db", "alone_snr_db", "channel_spread_db", "weak_part_db", "weak_part_max",
                    "clipped_pct", "weight_spread_db", "rounding_db", "alone_mean_snr_db"):
            v = out[key]
            out[key] = None if v is None or not math.isfinite(v) else v
        return out


def layer_rows(quantized, feeds, backend=None, attribution: bool = False) -> list[Row]:
    """Run both graphs on ``feeds`` and measure every fixed-point result against its float value
    (and against its float op on its fixed-point inputs: ``own_snr_db``); with ``attribution``,
    also the outputs' SNR with only that layer's own error injected (``alone_snr_db``)."""
    from tidlc.compiler import backend_for
    from tidlc.interp import Interpreter
    from tidlc.metrics import cosine, snr_db
    backend = backend or backend_for("tidl")
    is_fixed = backend.fixed_value_check()
    ref_graph = quantized.reference
    float_feeds = dict(feeds)
    float_env = Interpreter(ref_graph).values(float_feeds, keep_all=True)
    for op in ref_graph.input_ops:  # inputs are compared too (the input data_convert)
        name = op.attrs["name"]
        if name in float_feeds:
            float_env[id(op.results[0])] = np.asarray(float_feeds[name])
    fixed_env: dict[int, np.ndarray] = {id(op.results[0]): np.asarray(op.data) for op in quantized.graph.ops
                                        if op.kind == "const"}
    fixed_env.update((id(op.results[0]), np.asarray(feeds[op.attrs["name"]])) for op in quantized.graph.input_ops
                     if op.attrs["name"] in feeds)
    readers: dict[int, list] = {}
    for op in quantized.graph.ops:
        for u in op.operands:
            readers.setdefault(id(u), []).append(op)
    rows: list[Row] = []
    injections: list[tuple[Row, Any, np.ndarray]] = []  # (row, reference value, own error)
    last_row: dict[int, Row] = {}  # reference value -> the last fixed-point row measured against it

    def real(v, arr) -> np.ndarray:
        """A fixed-point graph value as real numbers (float values as they are)."""
        q = v.type.quant
        if not is_fixed(v.type) or q is None:
            return np.asarray(arr)
        return np.asarray(arr, dtype=np.float64) / q.scale[0]

    def measure(op, results):
        for v, r in zip(op.results, results):
            fixed_env[id(v)] = r
        for v, r in zip(op.results, results):
            if not is_fixed(v.type):
                continue
            origin = quantized.origin.get(id(v))
            ref = float_env.get(id(origin)) if origin is not None else None
            if ref is None:
                continue
            q = v.type.quant
            scale = q.scale[0]
            deq = r.astype(np.float64) / scale
            window = _saturating_window(v, readers.get(id(v), ()), ref)
            if window is not None:  # a range ended on purpose where its readers' tables saturate
                ref = np.clip(ref, *window)
            err = np.abs(deq - ref.astype(np.float64))
            at_top = r >= q.qmax
            saturated = at_top | (r <= q.qmin) if q.signed else at_top
            row = Row(
                name=op.name or op.kind, op=op.kind, shape=list(r.shape), dtype=v.type.dtype, scale=scale,
                shift=q.shift, snr_db=snr_db(ref, deq), cosine=cosine(ref, deq),
                max_abs_error=float(err.max(initial=0.0)), saturated_pct=100.0 * float(saturated.mean()) if r.size else 0.0,
                float_max=float(np.abs(ref).max(initial=0.0)), representable_max=max(abs(q.qmin), q.qmax) / scale,
                codes_used=int(np.unique(r).size))
            row.below_step = bool(r.size) and row.float_max * scale < 0.5
            half = 0.5 / scale
            beyond = (ref > q.qmax / scale + half) | (ref < q.qmin / scale - half)
            row.clipped_pct = 100.0 * float(beyond.mean()) if r.size else 0.0
            rms = float(np.sqrt(np.mean(np.square(ref, dtype=np.float64)))) if r.size else 0.0
            row.rounding_db = 20.0 * math.log10(rms * math.sqrt(12.0) * scale) if rms > 0 else None
            if origin.producer is not None:
                row.weight_spread_db, row.narrow_weight_channel = _weight_spread(op, origin.producer)
            last_row[id(origin)] = row
            row.channel_spread_db, row.wide_channel = _channel_spread(ref, v.type.layout)
            if origin.producer is not None and hasattr(backend, "layers_for_16bit"):
                row.fix_16bit = backend.layers_for_16bit(origin.producer) or None
            if op.kind == "concat":
                _weak_part(row, op, ref, deq, origin.producer, getattr(backend, "precision_sources", None))
                row.weak_part_at_output = _only_to_outputs(v, readers, quantized.graph.outputs)
            local = _local_float(op, v, origin, fixed_env, real, is_fixed)
            if local is not None and window is not None:
                local = np.clip(local, *window)
            if local is not None:
                row.own_snr_db = snr_db(local, deq)
                injections.append((row, origin, deq - local))
            rows.append(row)

    backend.load(quantized.graph).run(feeds, observer=measure)
    if attribution:
        # outputs that no fixed-point code can show on this input cannot judge the layers before them
        blank = {id(o) for o in ref_graph.outputs if id(o) in last_row and last_row[id(o)].below_step}
        _attribute(ref_graph, float_env, injections, blank)
    return rows


WEAK_PART_DB = 10.0  # a concat input this far below the whole tensor's SNR is named


def _weak_part(row: Row, op, ref: np.ndarray, deq: np.ndarray, float_op, sources=None) -> None:
    """A concat's input whose part of the result has the lowest SNR, when it is WEAK_PART_DB below
    the whole: one per-tensor step serves every input, so a narrow one (a detector's scores in [0, 1]
    beside box coordinates in pixels) keeps few codes while the tensor's SNR looks fine."""
    from tidlc.metrics import snr_db
    axis = op.attrs["axis"] % ref.ndim
    sizes = [u.type.shape[axis] if u.type.shape is not None else None for u in op.operands]
    if None in sizes or sum(sizes) != ref.shape[axis] or len(sizes) < 2:
        return
    cuts = np.cumsum(sizes)[:-1]
    parts = [(snr_db(r, d), float(np.abs(r).max(initial=0.0)), u) for r, d, u in
             zip(np.split(ref, cuts, axis=axis), np.split(deq, cuts, axis=axis), op.operands)]
    worst = min(parts, key=lambda p: p[0])
    if worst[0] <= row.snr_db - WEAK_PART_DB:
        u = worst[2]
        row.weak_part = (u.producer.name if u.producer is not None and u.producer.name else u.name) or "?"
        row.weak_part_db, row.weak_part_max = worst[0], worst[1]
        row.weak_part_const = u.producer is not None and u.producer.kind == "const"
        # the layers that set its precision, from the backend (TIDL: the ones before it that can change it)
        row.weak_part_fix = sources(float_op) if sources is not None and float_op is not None else None


def _only_to_outputs(v, readers: dict, outputs) -> bool:
    """Whether ``v`` reaches nothing but graph outputs, through data movement and conversions."""
    from tidlc.ir.opdef import Trait
    ends = {id(o) for o in outputs}
    todo = [v]
    while todo:
        v = todo.pop()
        users = readers.get(id(v), [])
        if not users and id(v) not in ends:
            return False
        for op in users:
            if op.kind != "data_convert" and not (op.opdef.has(Trait.SCALE_PRESERVING) and len(op.operands) == 1):
                return False
            todo.extend(op.results)
    return True


def _weight_spread(op, float_op) -> tuple[float | None, int | None]:
    """(20 log10 of the widest output channel's max |w| over the median channel's, the narrowest
    channel) of a conv2d / dense / deconv2d whose weights have one scale per tensor; (None, None)
    otherwise or for fewer than 4 channels."""
    if op.kind not in ("conv2d", "dense", "deconv2d") or len(op.operands) < 2 or \
            float_op.kind != op.kind or len(float_op.operands) < 2:
        return None, None
    wq = op.operands[1].type.quant
    w = float_op.operands[1].const_value()
    if wq is None or len(wq.scale) != 1 or w is None or w.ndim < 2:
        return None, None
    axis = 1 if op.kind == "deconv2d" and op.attrs.get("groups", 1) == 1 else 0
    spread, peaks = _spread(w, axis)
    return (spread, int(np.argmin(peaks))) if spread is not None else (None, None)


def _channel_axis(ndim: int, layout: str | None) -> int:
    """The channel axis of an activation: 1, or the last for NHWC and for (N, C)."""
    return ndim - 1 if layout == "NHWC" or ndim == 2 else 1


def _spread(x: np.ndarray, axis: int) -> tuple[float | None, np.ndarray]:
    """(20 log10 of the widest channel's max |x| over the median channel's, or None for fewer than 4
    channels or a median of 0; each channel's max |x|) of ``x`` with channels along ``axis``."""
    x = np.asarray(x)
    peaks = np.abs(np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)).max(axis=1).astype(np.float64)
    median = float(np.median(peaks))
    if peaks.size < 4 or median <= 0.0:
        return None, peaks
    return 20.0 * math.log10(float(peaks.max()) / median), peaks


def _channel_spread(ref: np.ndarray, layout: str | None) -> tuple[float | None, int | None]:
    """(20 log10 of the widest channel's max |x| over the median channel's, the widest channel) of an
    activation with channels (axis 1, or the last for NHWC); None for fewer than 4 channels."""
    ref = np.asarray(ref)
    if ref.ndim < 2 or ref.shape[_channel_axis(ref.ndim, layout)] < 4:
        return None, None
    spread, peaks = _spread(ref, _channel_axis(ref.ndim, layout))
    return spread, int(np.argmax(peaks))


def _saturating_window(v, readers, ref: np.ndarray) -> tuple[float, float] | None:
    """``v``'s representable range when the quantizer ended it where its readers' tables saturate
    (docs/quantization.md: every reader is a table op whose output code is the same for every
    float value of ``ref`` beyond the range as at its end), else None."""
    from tidlc.ir.fixed_arith import round_half_away
    from tidlc.ir.opdef import Trait
    q = v.type.quant
    lo, hi = q.qmin / q.scale[0], q.qmax / q.scale[0]
    f_lo, f_hi = float(np.min(ref, initial=0.0)), float(np.max(ref, initial=0.0))
    if not readers or (f_lo >= lo and f_hi <= hi):
        return None
    for op in readers:
        out = op.results[0].type.quant if op.results else None
        if not op.opdef.has(Trait.LUT) or op.opdef.compute is None or out is None or op.operands[0] is not v:
            return None
        for a, b in ((f_lo, lo), (hi, f_hi)):
            if a >= b:
                continue
            x = np.linspace(a, b, 4097)
            with np.errstate(all="ignore"):
                y = np.nan_to_num(np.asarray(op.opdef.compute(op, x), dtype=np.float64))
            codes = np.clip(round_half_away(y * out.scale[0]), out.qmin, out.qmax)
            if codes.shape != x.shape or np.any(codes != codes[0]):
                return None
    return lo, hi


def _local_float(op, v, origin, fixed_env, real, is_fixed_type) -> np.ndarray | None:
    """The float result ``origin`` computed by its float op from ``op``'s fixed-point operands (the
    reference's constants as they are): what the layer would give without its own error."""
    from tidlc.interp import evaluate_op
    try:
        if op.kind == "data_convert":  # (re)quantizing: the input as it arrives
            src = op.operands[0]
            return np.asarray(real(src, fixed_env[id(src)]), dtype=np.float64)
        ref_op, then = origin.producer, None
        if ref_op is not None and ref_op.kind != op.kind and op.attrs.get("act") == ref_op.kind:
            # a layer that computes its reader too (ptq fuses a prelu or leaky_relu): the float layer, then it
            ref_op, then = ref_op.operands[0].producer, ref_op
        if ref_op is None or ref_op.kind in ("input", "const") or ref_op.kind != op.kind:
            return None
        args = []
        for i, rv in enumerate(ref_op.operands):
            if rv.producer is not None and rv.producer.kind == "const":
                args.append(np.asarray(rv.producer.data))
            else:
                fv = op.operands[i]
                value = real(fv, fixed_env[id(fv)])  # float64 (exact for 16-bit codes), or a float island's
                args.append(np.asarray(value, dtype=np.float64) if is_fixed_type(fv.type) else value)
        if then is not None:
            pre = evaluate_op(ref_op, args)[0]
            rest = [v.const_value() for v in then.operands[1:]]
            return np.asarray(evaluate_op(then, [pre] + rest)[0], dtype=np.float64)
        return np.asarray(evaluate_op(ref_op, args)[origin.index], dtype=np.float64)
    except (KeyError, IndexError, TypeError, ValueError, ArithmeticError, TidlcError):
        return None  # an op whose operands do not line up with its reference's: no own SNR


def _attribute(ref_graph, float_env: dict, injections: list, blank: set = frozenset()) -> None:
    """Noise injection: per layer, the float graph downstream of its reference value re-run with
    the layer's own error added; ``alone_snr_db`` is the worst output's SNR, over the outputs not in
    ``blank`` (ids of outputs whose float values are all under half a step of their fixed-point grid
    on this input: their SNR is that of nothing; None when every output is blank). For the layer
    that costs the most, once more with only its error's mean per channel (``alone_mean_snr_db``)."""
    ops = [op for op in ref_graph.ops if op.kind not in ("input", "const")]
    outputs = [o for o in ref_graph.outputs if id(o) not in blank]
    if not outputs:
        return
    for row, origin, error in injections:
        row.alone_snr_db = _inject(ops, outputs, float_env, origin, error) if np.any(error) else math.inf
    worst = culprit_of([row for row, _, _ in injections])
    if worst is not None:
        row, origin, error = next(t for t in injections if t[0] is worst)
        if error.ndim >= 2:
            axis = _channel_axis(error.ndim, origin.type.layout)
            others = tuple(a for a in range(error.ndim) if a != axis)
            mean = np.broadcast_to(error.mean(axis=others, keepdims=True), error.shape)
            row.alone_mean_snr_db = _inject(ops, outputs, float_env, origin, mean)


def _inject(ops, outputs, float_env: dict, origin, error: np.ndarray) -> float:
    """The worst of ``outputs``' SNR (dB) with ``error`` added to ``origin``'s float value, the
    float graph downstream of it re-run."""
    from tidlc.interp import evaluate_op
    from tidlc.metrics import snr_db
    base = float_env[id(origin)]
    overlay = {id(origin): (base.astype(np.float64) + error).astype(base.dtype)}
    for op in ops:
        if not any(id(u) in overlay for u in op.operands):
            continue
        args = [overlay.get(id(u), float_env.get(id(u))) for u in op.operands]
        for r, value in zip(op.results, evaluate_op(op, args)):
            overlay[id(r)] = np.asarray(value)
    return min((snr_db(float_env[id(o)], overlay[id(o)]) for o in outputs if id(o) in overlay), default=math.inf)


CHANNEL_SPREAD_DB = 20.0  # channel ranges this far apart make a per-tensor step coarse for most channels
BIAS_DB = 6.0  # an error whose mean per channel alone costs the outputs within this of the whole error's


def diagnose(row: Row) -> str:
    """The likely cause of a layer's loss, from its own numbers."""
    wide = row.dtype.endswith("16")
    more_bits = "" if wide else f"; try --16bit-layers {','.join(row.fix_16bit or [row.name])}" + (
        f" (the {row.op} takes its input's precision)" if row.fix_16bit and row.fix_16bit != [row.name] else "")
    if row.below_step:
        return (f"below the step: its float values (up to {row.float_max:.3g}) are under half the step "
                f"1/{row.scale:.4g} of its range, so every code is 0; on this input its SNR says nothing (an "
                "empty mask, a score near 0): compare on an input where it is active (--input)")
    if row.clipped_pct > 0.05:  # (outputs at the limit whose float value is there too are an intended clip)
        return (f"range clipped: float values reach {row.float_max:.4g}, the fixed-point range ends at "
                f"{row.representable_max:.4g} ({row.clipped_pct:.2f}% of the outputs beyond it); calibrate with "
                "more representative --calib data or --calib-method minmax")
    if row.weak_part is not None:
        return (f"rounding: its input '{row.weak_part}' (values up to {row.weak_part_max:.4g}) is joined at the one "
                f"step 1/{row.scale:.4g} its widest input needs, so that part keeps {row.weak_part_db:.1f} dB while "
                f"the tensor has {row.snr_db:.1f} dB; make its inputs 16-bit (TIDL's concat takes their precision: "
                f"--16bit-layers {','.join(row.weak_part_fix or [row.name])})"
                + (" or end the model before it (join boxes and scores on the host)"
                   if row.weak_part_at_output and not row.weak_part_const else ""))
    amplified = ""
    if row.own_snr_db is not None and row.alone_snr_db is not None and \
            row.own_snr_db - row.alone_snr_db >= 10.0 and math.isfinite(row.own_snr_db):
        amplified = (f"; the layers after it amplify its rounding by {row.own_snr_db - row.alone_snr_db:.0f} dB "
                     f"(own {row.own_snr_db:.1f} dB, the outputs {row.alone_snr_db:.1f} dB)")
        if row.alone_mean_snr_db is not None and row.alone_mean_snr_db <= row.alone_snr_db + BIAS_DB:
            amplified += (f", much of it through its error's mean per channel (that alone: "
                          f"{row.alone_mean_snr_db:.1f} dB), which bias calibration takes back: --bias-calibration "
                          "(TIDL's calibrationOption 4; on at -O3)")
    if row.weight_spread_db is not None and row.weight_spread_db >= CHANNEL_SPREAD_DB and \
            row.own_snr_db is not None and row.rounding_db is not None and row.own_snr_db <= row.rounding_db - 10.0:
        return (f"rounding of its weights: its output channels' weight ranges differ by {row.weight_spread_db:.0f} dB "
                f"and share one step, so the narrow ones (channel {row.narrow_weight_channel}) keep few bits: its own "
                f"error is {row.rounding_db - row.own_snr_db:.0f} dB above its output rounding's{amplified}; -O3 "
                "equalizes the channels across layers and, for a depthwise layer, tries one scale per channel "
                "(--per-channel-depthwise, TIDL's calibrationOption 8)" + more_bits)
    if row.channel_spread_db is not None and row.channel_spread_db >= CHANNEL_SPREAD_DB:
        return (f"rounding: its channels' ranges differ by {row.channel_spread_db:.0f} dB (channel "
                f"{row.wide_channel} reaches {row.float_max:.4g}), so the one per-tensor step 1/{row.scale:.4g} "
                f"is coarse for the narrow channels{amplified}; equalize the channels across layers (-O3, "
                + ("which at 16 bits also balances the observed activation ranges: "
                   "-p '...,equalize{activations=0.5,scope=all}'" if wide else "-p 'equalize{scope=all}'")
                + ") or bring the wide channel's range down in the model" + more_bits)
    if row.codes_used < 32:
        return (f"rounding: only {row.codes_used} distinct codes carry the values (range much wider than "
                f"the data, or too few bits){more_bits}")
    if wide:
        return (f"rounding: the 16-bit step 1/{row.scale:.4g} of the calibrated range{amplified}; a range "
                "wider than the data (an outlier frame in --calib) makes it coarser")
    return f"rounding: the step 1/{row.scale:.4g} is coarse for this layer{amplified}{more_bits}"


def mark(rows: list[Row], threshold: float) -> Row | None:
    """Mark the first layer below ``threshold`` (returned) and, when the rows carry ``alone_snr_db``,
    the layer whose own error costs the outputs the most (``culprit``)."""
    first = None
    for row in rows:
        if (row.snr_db < threshold or row.weak_below(threshold)) and not row.below_step:  # (blank: said apart)
            row.below = True
            row.cause = diagnose(row)
            first = row
            break
    worst = culprit_of(rows)
    if worst is not None:
        worst.culprit = True
        worst.cause = worst.cause or diagnose(worst)
        if first is not None and first is not worst and first.own_snr_db is not None and \
                first.own_snr_db >= threshold and first.clipped_pct <= 0.05 and \
                not (first.snr_db >= threshold and first.weak_below(threshold)):  # (its part's loss is its own)
            # what it inherits comes from before it: the culprit when it runs earlier, else the earlier
            # layer with the largest error of its own
            before = rows[:rows.index(first)]
            source = worst if worst in before else min(
                (r for r in before if r.own_snr_db is not None and not math.isnan(r.own_snr_db)),
                key=lambda r: r.own_snr_db, default=None)
            if source is not None:
                which = (f"most of it from {source.name} (marked *)" if source is worst else
                         f"accumulated over the layers before it (the largest own error among them: {source.name}, "
                         f"own {source.own_snr_db:.1f} dB)")
                first.cause = (f"inherited: its own error is small (own {first.own_snr_db:.1f} dB); what its "
                               f"inputs bring dominates, {which}")
    return first


def culprit_of(rows: list[Row]) -> Row | None:
    """The row whose own error alone brings the outputs lowest (None without attribution)."""
    scored = [r for r in rows if r.alone_snr_db is not None and not math.isnan(r.alone_snr_db)]
    if not scored or all(math.isinf(r.alone_snr_db) for r in scored):
        return None
    return min(scored, key=lambda r: r.alone_snr_db)


def _db(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.1f}"


def format_table(rows: list[Row], threshold: float) -> str:
    width = max([len("layer")] + [len(row.name) for row in rows])  # full names: MobileNet's differ at the end
    extra = any(r.own_snr_db is not None for r in rows)
    alone = any(r.alone_snr_db is not None for r in rows)
    head = f"{'':2}{'layer':<{width}} {'op':<12} {'shape':<18} {'type':<5} {'scale':>10} {'SNR dB':>8} " \
           f"{'cosine':>8} {'max err':>10} {'sat %':>6}" + (f" {'own dB':>7}" if extra else "") + \
           (f" {'alone dB':>8}" if alone else "")
    lines = [head, "-" * len(head)]
    for row in rows:
        flag = "> " if row.below else "* " if row.culprit else "  "
        shape = "x".join(map(str, row.shape))
        lines.append(f"{flag}{row.name:<{width}} {row.op:<12} {shape[:18]:<18} {row.dtype:<5} {row.scale:>10.4g} "
                     f"{_db(row.snr_db):>8} {row.cosine:>8.5f} {row.max_abs_error:>10.4g} {row.saturated_pct:>6.2f}"
                     + (f" {_db(row.own_snr_db):>7}" if extra else "") + (f" {_db(row.alone_snr_db):>8}" if alone else ""))
    first = next((r for r in rows if r.below), None)
    if first is not None:
        part = (f"; the part from '{first.weak_part}' at {first.weak_part_db:.1f} dB"
                if first.weak_below(threshold) else "")
        lines += ["", f"first layer below {threshold:g} dB: {first.name} ({first.op}, {first.snr_db:.1f} dB{part})",
                  f"  likely cause: {first.cause}"]
    else:
        lines += ["", f"every layer is at or above {threshold:g} dB"]
    worst = next((r for r in rows if r.culprit), None)
    if worst is not None and (first is not None or worst.alone_snr_db < threshold):
        lines.append(f"* costs the outputs the most: {worst.name} ({worst.op}): its own error alone brings them "
                     f"to {_db(worst.alone_snr_db)} dB (own {_db(worst.own_snr_db)} dB)")
        if worst is not first:
            lines.append(f"  likely cause: {worst.cause}")
    for row in rows:  # concats that hide a narrow input's loss behind the tensor's SNR, beyond the first
        if row is not first and row.weak_below(threshold):
            lines += [f"! {row.name} ({row.op}): the part from '{row.weak_part}' is at {row.weak_part_db:.1f} dB",
                      f"  likely cause: {diagnose(row)}"]
    blank = [r for r in rows if r.below_step and r is not first and r.snr_db < threshold]
    if blank:  # low SNRs that say nothing (an empty mask on this input): the first, and how many more
        more = f" (and {len(blank) - 1} layer(s) after it)" if len(blank) > 1 else ""
        lines += [f"~ {blank[0].name} ({blank[0].op}, {_db(blank[0].snr_db)} dB){more}: {diagnose(blank[0])}"]
    return "\n".join(lines)


def plot(rows: list[Row], threshold: float, path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TidlcError("--plot needs matplotlib", hint='pip install "tidlc[plot]"', code="unsupported") from None
    snrs = [min(r.snr_db, 120.0) if math.isfinite(r.snr_db) else (120.0 if r.snr_db > 0 else 0.0) for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(rows) + 2), 4.0))
    colors = ["tab:red" if r.below else "tab:blue" for r in rows]
    ax.bar(range(len(rows)), snrs, color=colors)
    ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"threshold {threshold:g} dB")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r.name for r in rows], rotation=90, fontsize=6)
    ax.set_ylabel("SNR vs float (dB)")
    ax.set_title("fixed point vs float, per layer")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    from tidlc.fileio import atomic_write
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)


def _feeds(args, graph, settings, quantized) -> dict[str, np.ndarray]:
    from tidlc.preprocess import IMAGE_SUFFIXES, FrameSource, input_specs
    specs = input_specs(graph)
    feeds: dict[str, np.ndarray] = {}
    for spec_text in args.input:
        name, sep, path = spec_text.partition("=")
        if not sep or os.path.exists(spec_text):
            name, path = "", spec_text
        spec = next((s for s in specs if s.name == name), None) if name else (specs[0] if len(specs) == 1 else None)
        if spec is None:
            raise TidlcError(f"--input {spec_text}: name one of the inputs", hint=", ".join(s.name for s in specs))
        if path.lower().endswith(IMAGE_SUFFIXES + (".npy",)):
            feeds[spec.name] = FrameSource(path, [spec], settings.preprocess).load_file(path)
        else:
            raise TidlcError("--input takes an image or a .npy file", path)
    if not feeds:  # the first calibration frame (--calib, or a synthetic one)
        feeds = quantized.first_frame()
    return feeds


PARTITION_FLAGS = (("--deny-op-name", "deny_op_names"), ("--deny-op-type", "deny_op_types"),
                   ("--max-subgraphs", "max_subgraphs"), ("--min-subgraph-ops", "min_subgraph_ops"))


def run(args, options) -> int:
    from tidlc.compiler import backend_for, load, optimize, plugins_for
    from tidlc.diagnostics import warn
    given = [flag for flag, dest in PARTITION_FLAGS if getattr(args, dest, None)]
    if given:  # (the shared model options offer them; compare has no host to run denied ops on)
        warn(f"compare: {', '.join(given)} not applied: compare quantizes the whole graph, every layer as the "
             "accelerator would run it", code="option",
             hint="to measure a partitioned deployment, compile it and run it: tidlc compile ... -o OUT; "
                  "tidlc run OUT --input FILE (docs/partition.md)")
    plugins = plugins_for(options)
    backend = backend_for(options, plugins)  # an unknown --target fails first
    float_options = options.replace(quantize=False)
    graph = load(args.model, float_options, plugins, for_device=True)
    optimize(graph, float_options, plugins)
    quantized = backend.quantize(graph, options)  # the backend's scheme (TIDL: its PTQ)
    settings = quantized.settings
    feeds = _feeds(args, quantized.reference, settings, quantized)
    threshold = args.threshold if args.threshold is not None else \
        DEFAULT_THRESHOLD_16 if settings.bits > 8 else DEFAULT_THRESHOLD
    rows = layer_rows(quantized, feeds, backend, attribution=getattr(args, "attribution", True))
    mark(rows, threshold)
    if args.json != "-":
        print(format_table(rows, threshold))
    if args.json:
        worst = culprit_of(rows)
        doc = {"model": args.model, "threshold_db": threshold, "culprit": worst.name if worst else None,
               "bits": settings.bits, "calib_method": settings.calib_method,
               "calib": settings.calib or "synthetic", "layers": [r.as_json() for r in rows]}
        text = json.dumps(doc, indent=2, sort_keys=False)
        if args.json == "-":
            sys.stdout.write(text + "\n")
        else:
            from tidlc.fileio import atomic_write
            with atomic_write(args.json, "w") as fh:
                fh.write(text + "\n")
            print(f"  wrote {args.json}")
    if args.plot:
        plot(rows, threshold, args.plot)
        print(f"  wrote {args.plot}")
    return 0
