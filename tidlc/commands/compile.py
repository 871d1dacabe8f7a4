"""Import, optimise, quantize and write net.bin + io.bin (or the IR).

MODEL is a model file or a TIDL-RT import config (docs/import-config.md); after a config file,
TIDL-style --key value arguments override its keys.
"""
from __future__ import annotations

import argparse
import time

from tidlc.cli_options import (
    add_model_options,
    add_parallel_options,
    add_pass_options,
    add_quant_options,
    explicit_names,
    print_json,
    print_pipeline,
    report_passes,
)
from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError

NAME = "compile"
HELP = "import, optimise, quantize and write net.bin + io.bin"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", metavar="MODEL|IMPORT.txt",
                   help="a model file, or a TIDL import config file (detected by its key = value lines)")
    p.add_argument("--import-config", metavar="FILE",
                   help="read FILE as a TIDL import config (when detection is not wanted)")
    p.add_argument("-o", "--output-dir", default=None,
                   help="output directory (default: out; with an import config, its outputNetFile's folder)")
    p.add_argument("--emit", default="bin", choices=["bin", "qir", "ir", "none"],
                   help="what to write: bin = OUTDIR/net.bin + io.bin (default; docs/format.md), "
                        "qir = quantized IR (OUTDIR/model.tir), ir = float IR, none = nothing")
    p.add_argument("--device", metavar="NAME",
                   help="the device net.bin and its perf estimate are for (default tda4vm; `tidlc perf --help` "
                        "lists devices: am62a, am67a, am68a, am69a, ...)")
    p.add_argument("--persist-weights", choices=("on", "off"),
                   help="weight persistence in net.bin's estimate: weights that fit in MSMC stay there between "
                        "frames (default: off; -O3 turns it on where the perf model predicts fewer cycles)")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of text (docs/cli.md)")
    p.add_argument("--quant-params", action="store_true", default=None,
                   help="--target onnx-qdq: also write TIDL's TIDLNetQuantParams prototxt (docs/ti-flow.md)")
    add_model_options(p)
    add_pass_options(p)
    add_quant_options(p)
    add_parallel_options(p)


def _compile_source(args, options) -> tuple[str, CompileOptions]:
    """The model to compile and its options: a model file, or an import config's model and keys."""
    from tidlc.import_config import load_import_config, looks_like_import_config
    overrides = getattr(args, "tidl_overrides", [])
    config = args.import_config
    if config and args.model:
        raise TidlcError(f"give the model ({args.model}) or --import-config {config}, not both",
                         hint="the config's inputNetFile names the model")
    if not config and not args.model:
        raise TidlcError("no model given", hint="tidlc compile MODEL or tidlc compile IMPORT.txt (a TIDL import config)")
    if not config and looks_like_import_config(args.model):
        config = args.model
    if not config:
        if overrides:
            raise TidlcError(f"unrecognized arguments: {' '.join(overrides)}",
                             hint="--key value overrides follow a TIDL import config file; see tidlc compile --help")
        return args.model, options
    imported = load_import_config(config, overrides)
    return imported.model, imported.compile_options(options, explicit_names(args))


def run(args, options) -> int:
    from tidlc.compiler import compile_model, plugins_for
    from tidlc.parallel import Executor
    model, options = _compile_source(args, options)
    Executor.from_options(options).connect()  # --ray: reach the cluster before the work
    plugins = plugins_for(options)
    if args.print_pipeline:
        print_pipeline(options, plugins)
    start = time.perf_counter()
    result = compile_model(model, options, plugins)
    report_passes(result.pass_manager, args)
    g = result.graph
    n_ops = sum(1 for _ in g.compute_ops())
    seconds = time.perf_counter() - start
    if args.json:
        print_json({"schema": "tidlc.compile/1", "model": args.model or args.import_config,
                    "opt_level": options.pipeline.opt_level, "pipeline": result.pass_manager.pipeline_string(),
                    "emit": options.target.emit, "ops": n_ops, "op_kinds": _op_kinds(g), "seconds": round(seconds, 3),
                    "outputs": list(result.outputs), "notes": list(result.notes) + list(result.pass_manager.notes)})
        return 0
    how = f"with -p '{options.pipeline.passes}'" if options.pipeline.passes else f"at -O{options.pipeline.opt_level}"
    print(f"compiled {args.model or args.import_config} {how}: {n_ops} ops, {seconds:.2f} s")
    for note in result.notes:
        if note.startswith("partition:"):  # some ops run on the host: subgraph folders and model.tdp
            print(f"  {note}")
    for note in result.pass_manager.notes:
        if "stay in float" in note or note.startswith("quantize: output SNR vs float"):
            # the float layers (as `tidlc check` lists them) and the fixed-point net's distance from float
            print(f"  {note}")
    for note in g.attrs.get("quant.subgraph_snr") or ():  # a partitioned model: one per subgraph
        print(f"  {note}")
    summary = g.attrs.get("quant.mixed_precision")
    if isinstance(summary, str) and summary:
        print(f"  {summary}")  # ("mixed precision: ...")
    for key, label in (("equalize", "equalize"), ("weights", "weights"), ("bias", "bias calibration")):
        verdict = g.attrs.get(f"quant.{key}")
        if isinstance(verdict, str) and verdict:
            print(f"  {label}: {verdict}")
    for path in result.outputs:
        print(f"  wrote {path}")
    return 0


def _op_kinds(graph) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for op in graph.compute_ops():
        kinds[op.kind] = kinds.get(op.kind, 0) + 1
    return dict(sorted(kinds.items()))
