"""Sweep models x a grid of options (bits, calibration, -O level, device): one table of predicted
ms/FPS, SNR vs float, weight size and compile time per cell, written as OUTDIR/sweep.csv,
sweep.json and sweep.png; a rerun only computes the cells it has not done (docs/sweep.md).

Examples:
  tidlc sweep sweep.toml -o out/sweep
  tidlc sweep sweep.toml -o out/sweep --workers 2     # two cells at a time (docs/scale.md)
"""
from __future__ import annotations

import argparse
import sys

from tidlc.cli_options import add_parallel_options

NAME = "sweep"
HELP = "models x option grid -> one table (ms, FPS, SNR, size, compile time); reruns skip done cells"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("config", metavar="CONFIG.toml", help="models, [options] and [grid] (docs/sweep.md)")
    p.add_argument("-o", "--output-dir", default="out/sweep", metavar="OUTDIR",
                   help="where sweep.json/csv/png go (and the results a rerun reuses; default out/sweep)")
    p.add_argument("--json", action="store_true", help="print the tidlc.sweep/1 document")
    add_parallel_options(p, what="the cells")


def run(args, options) -> int:
    from tidlc.sweep import render_text, sweep
    live = sys.stderr.isatty() and not args.json

    def progress(i: int, total: int, label: str) -> None:
        if live:
            print(f"sweep {i}/{total}: {label}", file=sys.stderr, flush=True)

    doc = sweep(args.config, args.output_dir, options, progress=progress)
    if args.json:
        import json
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(render_text(doc))
    return 1 if any(r.get("error") for r in doc["rows"]) else 0
