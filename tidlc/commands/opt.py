"""Run passes over a model or .tir file and print (or write) the resulting IR."""
from __future__ import annotations

import argparse
import os
import sys

from tidlc.cli_options import add_model_options, add_pass_options, load_and_optimize

NAME = "opt"
HELP = "run passes over a .tir file and print (or write) the result"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model")
    p.add_argument("-o", "--output", default=None, metavar="OUT.tir")
    add_model_options(p, default_level=0)
    add_pass_options(p)


def run(args, options) -> int:
    from tidlc.compiler import plugins_for, write_ir
    from tidlc.ir.printer import print_graph
    graph = load_and_optimize(args, options, plugins_for(options))
    if args.output:
        stem = os.path.splitext(os.path.basename(args.output))[0]
        for path in write_ir(graph, os.path.dirname(os.path.abspath(args.output)), stem):
            print(f"  wrote {path}", file=sys.stderr)
    else:
        sys.stdout.write(print_graph(graph)[0])
    return 0
