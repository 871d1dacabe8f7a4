"""Print the IR of a model (or of a compiled net.bin) after the -O pipeline."""
from __future__ import annotations

import argparse
import sys

from tidlc.cli_options import add_model_options, add_pass_options, load_and_optimize

NAME = "ir"
HELP = "print the IR of a model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model")
    add_model_options(p, default_level=0)
    add_pass_options(p)


def run(args, options) -> int:
    from tidlc.compiler import plugins_for
    from tidlc.ir.printer import print_graph
    from tidlc.run_compiled import compiled_ir
    text = compiled_ir(args.model)  # a net.bin / compiled folder: the graph it holds
    if text is not None:
        sys.stdout.write(text)
        return 0
    graph = load_and_optimize(args, options, plugins_for(options))
    sys.stdout.write(print_graph(graph)[0])
    return 0
