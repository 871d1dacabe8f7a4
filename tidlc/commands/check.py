"""Check a model against the target before compiling: what runs on the accelerator, what with
a penalty, what on the host, why, and how to fix it; then the partition the compiler would make.

Exit status: 0 when the whole model is accelerated, 1 when something runs on the host (or an
input shape is still dynamic), 2 on bad input. The JSON document (--json) is `tidlc.check/1`,
described in docs/check.md.

Examples:
  tidlc check examples/ultraface/ultraface-rfb320.onnx
  tidlc check model.onnx --deny-op-type resize --json
"""
from __future__ import annotations

import argparse
import sys

from tidlc.cli_options import add_model_options

NAME = "check"
HELP = "what runs on the accelerator, what on the host, why and how to fix it (before compiling)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("model", help="a model file (any format `tidlc plugins` lists)")
    p.add_argument("--device", metavar="NAME", help="the device to check for (default: tda4vm)")
    p.add_argument("--json", action="store_true", help="print the tidlc.check/1 JSON document (docs/check.md)")
    add_model_options(p)


def run(args, options) -> int:
    from tidlc.check import check_model, render_rich, render_text
    report = check_model(args.model, options)
    if args.json:
        sys.stdout.write(report.to_json())
    elif sys.stdout.isatty():
        sys.stdout.write(render_rich(report))
    else:
        sys.stdout.write(render_text(report))
    return report.exit_code
