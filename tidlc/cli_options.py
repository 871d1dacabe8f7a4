"""The command-line flags that make CompileOptions, how the CLI builds them, and the
small output helpers every command shares.

Commands add the flag groups they take (``add_model_options``,
``add_pass_options``, ``add_quant_options``); ``options_from_args`` then
builds each option group from the parsed flags, naming every field it sets,
so renaming a field is a ``TypeError`` here and not a silently ignored flag.
TIDL import-config names are given in the help.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from tidlc.config import BIAS_CALIBRATION_ITERATIONS, CompileOptions, parse_shape_spec


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _pair(text: str) -> tuple[int, int]:
    try:
        pair = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        pair = ()
    if len(pair) != 2 or min(pair) <= 0:
        raise argparse.ArgumentTypeError(f"expected W,H (two positive integers), got {text!r}")
    return pair  # type: ignore[return-value]


def names_list(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def add_quant_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("quantization (docs/quantization.md)")
    g.add_argument("--bits", type=int, choices=(8, 16), help="activation and weight bits (numParamBits/numFeatureBits; default 8)")
    g.add_argument("--quant-style", choices=("np2", "p2"),
                   help="weight scales: np2 = any (quantizationStyle 2, default), p2 = powers of two (3)")
    g.add_argument("--calib", metavar="DATA",
                   help="calibration data: a list file ('path [label]' lines), a folder of images/.npy, "
                        "a .npy of stacked pre-processed frames or an .npz per input")
    g.add_argument("--calib-frames", type=int, metavar="N", help="use the first N frames (numFrames; default all)")
    g.add_argument("--calib-method", choices=("minmax", "histogram", "entropy", "mse"),
                   help="activation ranges: minmax, histogram percentile (default; percentileActRangeShrink), "
                        "entropy (KL) or mse")
    g.add_argument("--percentile", type=float, metavar="P",
                   help="histogram: drop P %% of the elements on each side (default 0.01)")
    g.add_argument("--bias-calibration", type=int, nargs="?", const=BIAS_CALIBRATION_ITERATIONS, metavar="ITERS",
                   help="TIDL's advanced bias calibration (default 50 iterations when given; on at -O3: with --bits 16 "
                        "always, at 8 bits where frames it was not fitted on agree; 0: off)")
    g.add_argument("--bias-calibration-factor", type=float, metavar="F",
                   help="bias update weight per iteration (biasCalibrationFactor; default 0.05)")
    g.add_argument("--per-channel-depthwise", action="store_true", default=None,
                   help="per-channel weight scales for depthwise layers (calibrationOption 8)")
    g.add_argument("--weight-rounding", choices=("nearest", "gptq"),
                   help="weight codes: nearest, or gptq (each rounding error spread over the weights not yet "
                        "rounded, for the calibration inputs; default at -O3)")
    g.add_argument("--16bit-layers", dest="layers_16bit", type=names_list, metavar="NAME,...",
                   help="layers computed in 16 bits (outputFeature16bitNamesList)")
    g.add_argument("--mixed-precision", choices=("auto", "off"),
                   help="auto: promote the layers whose 16 bits gain the most output SNR per predicted cycle "
                        "to 16 bits, within --time-budget (default 1.2)")
    g.add_argument("--time-budget", type=float, metavar="F",
                   help="auto mixed precision: predicted time at most F x all 8-bit (implies --mixed-precision auto)")
    g.add_argument("--mixed-precision-factor", type=float, metavar="F",
                   help="TIDL's name (mixedPrecisionFactor) for --mixed-precision auto --time-budget F")
    g.add_argument("--mean", type=_floats, metavar="M[,M,M]", help="image pre-processing: subtract (inMean)")
    g.add_argument("--scale", type=_floats, metavar="S[,S,S]", help="image pre-processing: then multiply (inScale)")
    g.add_argument("--resize", type=_pair, metavar="W,H", help="resize images first (resizeWidth/resizeHeight)")
    g.add_argument("--crop", type=_pair, metavar="W,H", help="then centre-crop (inWidth/inHeight)")
    g.add_argument("--channel-order", choices=("rgb", "bgr"),
                   help="channel order the network expects (inDataFormat 1 = rgb, default; 0 = bgr)")


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return n


def add_parallel_options(p: argparse.ArgumentParser, what: str = "calibration statistics") -> None:
    g = p.add_argument_group("parallel and distributed execution (docs/scale.md)")
    g.add_argument("--workers", type=_workers, metavar="N",
                   help=f"{what} in N local worker processes, one kernel thread each (identical results)")
    g.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help=f"{what} as Ray tasks on the cluster at ADDRESS (e.g. auto, HOST:6379), or on a "
                        "local Ray without one (identical results; pip install \"tidlc[ray]\")")


def add_model_options(p: argparse.ArgumentParser, with_opt: bool = True, default_level: int = 2) -> None:
    if with_opt:
        for level in range(4):
            p.add_argument(f"-O{level}", dest="opt_level", action="store_const", const=level,
                           help=f"optimisation level {level}" + (" (default)" if level == default_level else ""))
        p.set_defaults(opt_level=default_level)
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=d0,d1,...",
                   help="fix a dynamic input shape or override a declared one (repeatable)")
    p.add_argument("--format", help="force the input format (frontend name, see `tidlc plugins`)")
    p.add_argument("--weights", help="weights file for formats that keep them apart (Caffe .caffemodel)")
    p.add_argument("--random-weights", type=int, metavar="SEED",
                   help="fill missing weights with seeded random values (exploration only)")
    p.add_argument("--input-layout", choices=["NCHW", "NHWC"],
                   help="layout of the network's 4-D inputs (TIDL inLayout; default: the model's own)")
    p.add_argument("--no-host", dest="allow_host", action="store_false", default=None,
                   help="fail on ops the frontend cannot lower instead of keeping them as host ops")
    g = p.add_argument_group("partitioning (docs/partition.md)")
    g.add_argument("--max-subgraphs", type=int, metavar="N",
                   help="at most N accelerated subgraphs (default 16); the smallest fall back to the host")
    g.add_argument("--min-subgraph-ops", type=int, metavar="K",
                   help="a region of fewer than K ops runs on the host (default 1)")
    g.add_argument("--deny-op-type", dest="deny_op_types", type=names_list, metavar="KIND,...",
                   help="run these op kinds on the host (TIDL deny_list:layer_type), e.g. conv2d,resize")
    g.add_argument("--deny-op-name", dest="deny_op_names", type=names_list, metavar="NAME,...",
                   help="run these ops (by name) on the host (TIDL deny_list:layer_name)")
    p.add_argument("--target", metavar="NAME",
                   help="the backend to compile for / run on (default: tidl; `tidlc plugins` lists them)")


def add_pass_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--print-pipeline", action="store_true", help="print the exact pass pipeline")
    p.add_argument("--verify-each", action="store_true", help="verify the IR after every pass")
    p.add_argument("--time-passes", action="store_true", help="print the time each pass took")


# ----------------------------------------------------------------------------- argparse -> CompileOptions
def split_p(values: Sequence[str]) -> tuple[tuple[str, ...], str | None]:
    """``-p`` values: (blocked plugin names from ``no:NAME``, the pipeline string or None)."""
    blocked = tuple(v[3:] for v in values if v.startswith("no:"))
    pipes = [v for v in values if not v.startswith("no:")]
    return blocked, (",".join(pipes) if pipes else None)


def _flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """Option name -> value of every option flag given (a command lacks the flags it does not take)."""
    def flag(dest: str):
        return getattr(args, dest, None)

    values = {
        # load
        "format": flag("format"), "weights": flag("weights"), "random_weights": flag("random_weights"),
        "input_layout": flag("input_layout"), "allow_host": flag("allow_host"),
        # pipeline
        "opt_level": flag("opt_level"), "verify_each": flag("verify_each") or None,
        "time_passes": flag("time_passes") or None,
        # quant
        "bits": flag("bits"), "quant_style": flag("quant_style"), "calib": flag("calib"),
        "calib_frames": flag("calib_frames"), "calib_method": flag("calib_method"), "percentile": flag("percentile"),
        "bias_calibration": flag("bias_calibration"), "bias_calibration_factor": flag("bias_calibration_factor"),
        "per_channel_depthwise": flag("per_channel_depthwise"), "weight_rounding": flag("weight_rounding"),
        "layers_16bit": flag("layers_16bit"),
        "mixed_precision_factor": flag("mixed_precision_factor"), "mixed_precision": flag("mixed_precision"),
        "time_budget": flag("time_budget"), "workers": flag("workers"), "ray": flag("ray"),
        # preprocess
        "mean": flag("mean"), "scale": flag("scale"), "resize": flag("resize"), "crop": flag("crop"),
        "channel_order": flag("channel_order"),
        # target
        "backend": flag("target"), "device": flag("device"), "emit": flag("emit"), "outdir": flag("output_dir"),
        "batches": flag("batches"), "msmc_kb": flag("msmc_kb"), "quant_params": flag("quant_params"),
        "persist_weights": {"on": True, "off": False}.get(flag("persist_weights")),
        "max_subgraphs": flag("max_subgraphs"), "min_subgraph_ops": flag("min_subgraph_ops"),
        "deny_op_types": flag("deny_op_types"), "deny_op_names": flag("deny_op_names"),
    }
    return {name: value for name, value in values.items() if value is not None}


# flags that are not "the user chose this over an import config's key"
_NOT_OVERRIDES = {"opt_level", "emit", "verify_each", "time_passes", "workers", "ray"}


def explicit_names(args: argparse.Namespace) -> set[str]:
    """The options the user set with tidlc's own flags (they win over an import config)."""
    return set(_flag_values(args)) - _NOT_OVERRIDES


def options_from_args(args: argparse.Namespace) -> CompileOptions:
    """The CompileOptions of a parsed command line."""
    blocked, passes = split_p(getattr(args, "plugin_args", None) or ())
    shapes = dict(parse_shape_spec(s) for s in getattr(args, "input_shape", None) or ())
    return CompileOptions.of(**_flag_values(args), input_shapes=shapes, passes=passes, blocked_plugins=blocked)


# ----------------------------------------------------------------------------- shared by the commands
def report_passes(pm, args) -> None:
    if getattr(args, "time_passes", False):
        print(pm.timing_report(), file=sys.stderr)
    if getattr(args, "time_passes", False) or getattr(args, "verbose", False):
        for note in pm.notes:  # what the passes had to say (ctx.note)
            print(f"note: {note}", file=sys.stderr)


def print_pipeline(options, plugins) -> None:
    from tidlc.compiler import build_pass_manager
    print(build_pass_manager(options, plugins).pipeline_string())


def print_json(doc: dict) -> None:
    import json
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def outputs_summary(outputs) -> dict:
    """``{name: {dtype, shape, min, max, mean}}`` of a run's outputs (the ``tidlc run --json`` schema)."""
    import numpy as np
    out = {}
    for name, arr in outputs.items():
        arr = np.asarray(arr)
        entry = {"dtype": str(arr.dtype), "shape": list(arr.shape)}
        if arr.size and arr.dtype.kind in "fiub":
            flat = arr.astype(np.float64).reshape(-1)
            entry.update(min=float(flat.min()), max=float(flat.max()), mean=float(flat.mean()))
        out[name] = entry
    return out


def load_and_optimize(args: argparse.Namespace, options: CompileOptions, plugins):
    """``args.model`` imported and run through the -O / -p pipeline, with ``--print-pipeline`` and
    the pass report (``--time-passes``, ``-v``) as asked (tidlc run / ir / opt of a model file)."""
    from tidlc.compiler import load, optimize
    if args.print_pipeline:
        print_pipeline(options, plugins)
    graph = load(args.model, options, plugins)
    report_passes(optimize(graph, options, plugins), args)
    return graph
