"""Search deployment configurations (-O level x precision, automatic mixed precision at time
budgets 1.1 and 1.2 and at the one --fps allows) on the calibration data: print the
Pareto table (predicted ms / FPS from the perf model, SNR of the fixed-point outputs vs float,
weight size), write the chosen configuration as a TIDL import config and a tidlc command line,
and compile it. See docs/tune.md.

Examples:
  tidlc tune examples/ultraface/ultraface-rfb320.onnx --mean 127 --scale 0.0078125 --min-snr 25 -o out/tuned
  tidlc tune model.onnx --calib calib.txt --fps 30 --min-snr 30 --json
"""
from __future__ import annotations

import argparse
import sys

from tidlc.cli_options import add_model_options, add_parallel_options, add_quant_options

NAME = "tune"
HELP = "search -O level and precision for speed vs accuracy; write and compile the best"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("model", help="a model file")
    p.add_argument("--fps", type=float, metavar="F", help="the frame rate the deployment must reach")
    p.add_argument("--min-snr", type=float, default=30.0, metavar="DB",
                   help="the smallest acceptable output SNR vs float (default: 30; 0: any, the fastest wins)")
    p.add_argument("-o", "--output-dir", default=None, metavar="OUTDIR",
                   help="where the chosen configuration is written and compiled (default: out/tune)")
    p.add_argument("--device", metavar="NAME", help="the device to tune for (default: tda4vm)")
    p.add_argument("--json", action="store_true", help="print the tidlc.tune/1 document (docs/tune.md)")
    add_model_options(p)
    add_quant_options(p)
    add_parallel_options(p)


def run(args, options) -> int:
    from tidlc.tune import render_text, tune, write_choice
    outdir = args.output_dir or "out/tune"
    live = sys.stderr.isatty() and not args.json

    def progress(label: str) -> None:
        if live:
            print(f"tune: {label} ...", file=sys.stderr, flush=True)

    result = tune(args.model, options, min_snr=args.min_snr, fps=args.fps, progress=progress)
    result = write_choice(result, options, outdir)
    if args.json:
        import json
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(render_text(result))
    return 0
