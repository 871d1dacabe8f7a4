"""Float vs fixed point, layer by layer: where does the accuracy go?

Quantizes MODEL as ``tidlc compile`` would (same options), runs the float
reference and the fixed-point executor on the same input, and prints for
every fixed-point layer: name, op, output shape, scale, SNR (dB), cosine
similarity, max absolute error and the share of saturated outputs. The first
layer below ``--threshold`` dB is marked with the likely cause.
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
DEFAULT_THRESHOLD = 30.0


def add_arguments(p) -> None:
    from tidlc.cli_options import add_model_options, add_pass_options, add_quant_options
    p.add_argument("model")
    p.add_argument("--input", action="append", default=[], metavar="[NAME=]FILE",
                   help="the input to compare on: .npy (pre-processed) or an image (pre-processed with "
                        "--mean/--scale/...); default: the first calibration frame")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, metavar="DB",
                   help=f"mark the first layer whose SNR is below DB (default {DEFAULT_THRESHOLD:g})")
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

    def as_json(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        for key in ("snr_db", "cosine", "max_abs_error", "saturated_pct", "float_max", "representable_max", "scale"):
            v = out[key]
            out[key] = None if v is None or not math.isfinite(v) else v
        return out


def layer_rows(quantized, feeds, backend=None) -> list[Row]:
    """Run both graphs on ``feeds`` and measure every fixed-point result against its float value."""
    from tidlc.compiler import backend_for
    from tidlc.interp import Interpreter
    from tidlc.metrics import cosine, snr_db
    backend = backend or backend_for("tidl")
    is_fixed = backend.fixed_value_check()
    wanted = {id(v) for v in quantized.origin.values()}
    float_values: dict[int, np.ndarray] = {}

    def keep_float(op, results):
        for v, r in zip(op.results, results):
            if id(v) in wanted:
                float_values[id(v)] = np.asarray(r)

    ref_graph = quantized.reference
    float_feeds = dict(feeds)
    for op in ref_graph.input_ops:  # inputs are compared too (the input data_convert)
        name = op.attrs["name"]
        if name in float_feeds:
            float_values[id(op.results[0])] = np.asarray(float_feeds[name])
    Interpreter(ref_graph).run(float_feeds, keep_float)
    rows: list[Row] = []

    def measure(op, results):
        for v, r in zip(op.results, results):
            if not is_fixed(v.type):
                continue
            origin = quantized.origin.get(id(v))
            ref = float_values.get(id(origin)) if origin is not None else None
            if ref is None:
                continue
            q = v.type.quant
            scale = q.scale[0]
            deq = r.astype(np.float64) / scale
            err = np.abs(deq - ref.astype(np.float64))
            at_top = r >= q.qmax
            saturated = at_top | (r <= q.qmin) if q.signed else at_top
            rows.append(Row(
                name=op.name or op.kind, op=op.kind, shape=list(r.shape), dtype=v.type.dtype, scale=scale,
                shift=q.shift, snr_db=snr_db(ref, deq), cosine=cosine(ref, deq),
                max_abs_error=float(err.max(initial=0.0)), saturated_pct=100.0 * float(saturated.mean()) if r.size else 0.0,
                float_max=float(np.abs(ref).max(initial=0.0)), representable_max=max(abs(q.qmin), q.qmax) / scale,
                codes_used=int(np.unique(r).size)))

    backend.load(quantized.graph).run(feeds, observer=measure)
    return rows


def diagnose(row: Row) -> str:
    """The likely cause of a layer's loss, from its own numbers."""
    if row.float_max > row.representable_max * 1.001 and row.saturated_pct > 0.05:
        return (f"range clipped: float values reach {row.float_max:.4g}, the fixed-point range ends at "
                f"{row.representable_max:.4g} ({row.saturated_pct:.2f}% saturated); calibrate with more "
                "representative --calib data or --calib-method minmax")
    if row.saturated_pct > 0.5:
        return (f"saturation: {row.saturated_pct:.2f}% of the outputs sit at the limits of "
                f"{row.dtype}; the calibrated range is too small")
    if row.codes_used < 32:
        return (f"rounding: only {row.codes_used} distinct codes carry the values (range much wider than "
                f"the data, or too few bits); try --16bit-layers {row.name}")
    return f"rounding: the step 1/{row.scale:.4g} is coarse for this layer; try --16bit-layers {row.name}"


def mark(rows: list[Row], threshold: float) -> Row | None:
    for row in rows:
        if row.snr_db < threshold:
            row.below = True
            row.cause = diagnose(row)
            return row
    return None


def format_table(rows: list[Row], threshold: float) -> str:
    width = max([len("layer")] + [len(row.name) for row in rows])  # full names: MobileNet's differ at the end
    head = f"{'':2}{'layer':<{width}} {'op':<12} {'shape':<18} {'type':<5} {'scale':>10} {'SNR dB':>8} " \
           f"{'cosine':>8} {'max err':>10} {'sat %':>6}"
    lines = [head, "-" * len(head)]
    for row in rows:
        snr = "inf" if math.isinf(row.snr_db) and row.snr_db > 0 else f"{row.snr_db:.1f}"
        flag = "> " if row.below else "  "
        shape = "x".join(map(str, row.shape))
        lines.append(f"{flag}{row.name:<{width}} {row.op:<12} {shape[:18]:<18} {row.dtype:<5} {row.scale:>10.4g} "
                     f"{snr:>8} {row.cosine:>8.5f} {row.max_abs_error:>10.4g} {row.saturated_pct:>6.2f}")
    first = next((r for r in rows if r.below), None)
    if first is not None:
        lines += ["", f"first layer below {threshold:g} dB: {first.name} ({first.op}, {first.snr_db:.1f} dB)",
                  f"  likely cause: {first.cause}"]
    else:
        lines += ["", f"every layer is at or above {threshold:g} dB"]
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


def run(args, options) -> int:
    from tidlc.compiler import backend_for, load, optimize, plugins_for
    plugins = plugins_for(options)
    backend = backend_for(options, plugins)  # an unknown --target fails first
    float_options = options.replace(quantize=False)
    graph = load(args.model, float_options, plugins)
    optimize(graph, float_options, plugins)
    quantized = backend.quantize(graph, options)  # the backend's scheme (TIDL: its PTQ)
    settings = quantized.settings
    feeds = _feeds(args, quantized.reference, settings, quantized)
    rows = layer_rows(quantized, feeds, backend)
    mark(rows, args.threshold)
    if args.json != "-":
        print(format_table(rows, args.threshold))
    if args.json:
        doc = {"model": args.model, "threshold_db": args.threshold,
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
        plot(rows, args.threshold, args.plot)
        print(f"  wrote {args.plot}")
    return 0
