"""Print the IR of a model (or of a compiled net.bin) after the -O pipeline."""
from __future__ import annotations

import argparse
import sys

from tidlc.cli_options import add_model_options, add_pass_options, print_pipeline, report_passes

NAME = "ir"
HELP = "print the IR of a model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model")
    add_model_options(p, default_level=0)
    add_pass_options(p)


def run(args, options) -> int:
    from tidlc.compiler import load, optimize, plugins_for
    from tidlc.ir.printer import print_graph
    from tidlc.run_compiled import compiled_ir
    text = compiled_ir(args.model)  # a net.bin / compiled folder: the graph it holds
    if text is not None:
        sys.stdout.write(text)
        return 0
    plugins = plugins_for(options)
    graph = load(args.model, options, plugins)
    if args.print_pipeline:
        print_pipeline(options, plugins)
    pm = optimize(graph, options, plugins)
    report_passes(pm, args)
    sys.stdout.write(print_graph(graph)[0])
    return 0
