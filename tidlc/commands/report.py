"""Write one self-contained HTML page about a model: its graph coloured by predicted cycles,
MAC utilisation, DDR traffic, precision, host vs accelerated or SNR; a sortable, filterable
per-layer table; and the summary (ms, FPS against a budget, DDR bandwidth, memory placement,
ranked tuning hints, SNR along the network). No server, no network: open it from disk.

MODEL is what `tidlc perf` takes: a `tidlc compile` output directory (partitioned ones with a
model.tdp included), a net file, or a model file. The page is described in docs/report.md.

Examples:
  tidlc report out/ultraface                      # writes out/ultraface/report.html
  tidlc report model.onnx -o model.html --fps 30
  tidlc report model.onnx --calib frames/ --input img.png -o model.html   # adds SNR per layer
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile

from tidlc.cli_options import add_model_options, add_pass_options
from tidlc.diagnostics import TidlcError

NAME = "report"
HELP = "one self-contained HTML page: graph, per-layer table, cycles, DDR, hints (and SNR)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("model", metavar="OUTDIR|MODEL", help="a `tidlc compile` output or a model file")
    p.add_argument("-o", "--output", metavar="FILE.html",
                   help="the page (default: OUTDIR/report.html, or MODEL's name with .html)")
    p.add_argument("--device", metavar="NAME|FILE.toml", help="device to estimate for (as `tidlc perf`)")
    p.add_argument("--fps", type=float, metavar="F", help="frame budget: check against F frames/s")
    p.add_argument("--calib", metavar="DATA", help="with --input: add float vs fixed SNR per layer "
                                                  "(as `tidlc compare`)")
    p.add_argument("--input", action="append", default=[], metavar="[NAME=]FILE",
                   help="the input `tidlc compare` measures the SNR on")
    p.add_argument("--title", help="page title (default: the model's name)")
    add_model_options(p)
    add_pass_options(p)


def _default_output(model: str) -> str:
    if os.path.isdir(model):
        return os.path.join(model, "report.html")
    return os.path.splitext(model)[0] + ".html"


def _perf_args(args, json_out=True) -> argparse.Namespace:
    ns = argparse.Namespace(**vars(args))
    defaults = {"msmc_kb": None, "batches": None, "persist_weights": "off", "bits": None, "layers_16bit": (),
                "partitioned": False, "json": json_out, "plot": None, "top": None, "show_hints": True}
    for k, v in defaults.items():
        if not hasattr(ns, k) or k in ("json", "plot", "top", "show_hints"):
            setattr(ns, k, v)
    return ns


def _compare_rows(args, options) -> dict | None:
    """`tidlc compare --json` of the model, or None without --calib/--input."""
    if not (args.calib or args.input):
        return None
    from tidlc.cli import _parser
    from tidlc.cli_options import options_from_args
    from tidlc.commands import compare
    argv = ["compare", args.model]
    if args.calib:
        argv += ["--calib", args.calib]
    for x in args.input:
        argv += ["--input", x]
    for flag, value in (("--format", args.format), ("--weights", args.weights), ("--target", args.target)):
        if value:
            argv += [flag, value]
    if args.random_weights is not None:
        argv += ["--random-weights", str(args.random_weights)]
    for s in args.input_shape:
        argv += ["--input-shape", s]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "compare.json")
        cargs = _parser().parse_args(argv + ["--json", out])
        with contextlib.redirect_stdout(io.StringIO()):
            compare.run(cargs, options_from_args(cargs))
        with open(out, encoding="utf-8") as fh:
            return json.load(fh)


def gather(args, options) -> dict:
    """The page's data document (tidlc.report/1)."""
    from tidlc import report
    from tidlc.commands import perf
    from tidlc.compiler import backend_for, plugins_for
    plugins = plugins_for(options)
    backend = backend_for(options, plugins)
    pargs = _perf_args(args)
    is_part = getattr(backend, "is_partitioned", None)
    if is_part is not None and is_part(args.model):  # model.tdp: subgraphs + host ops
        graph, partition, subgraphs, compiled_for = backend.read_partitioned(args.model)
        device = backend.load_device(perf._device_name(pargs, compiled_for, plugins, backend), plugins)
        bits = max([perf._graph_bits(g) or 8 for g in subgraphs] or [8])
        popts = backend.perf_options(bits=16 if bits > 8 else 8, layers_16bit=(), batches=1, msmc_kb=None,
                                     persist_weights=False, fps=args.fps, hints=True)
        rep = backend.estimate_partitioned(graph, partition, subgraphs, device, popts, plugins)
        subs = [json.loads(backend.estimate(g, device, popts).to_json()) for g in subgraphs]
        return report.build_document(json.loads(rep.to_json()), graph, layer_reports=subs,
                                     host_ops=partition.host_ops, regions=partition.regions,
                                     compare=_compare_rows(args, options), fps=args.fps)
    needed = ("estimate", "load_device", "perf_options")
    if not all(callable(getattr(backend, m, None)) for m in needed):
        raise TidlcError(f"target '{backend.name}' has no performance model", code="option",
                         hint="tidlc report needs a backend with estimate(); --target tidl has one")
    graph, plugins, stored = perf.load_graph(pargs, options)
    device = backend.load_device(perf._device_name(pargs, stored.get("device"), plugins, backend), plugins)
    bits = perf._graph_bits(graph) or options.quant.bits
    popts = backend.perf_options(bits=16 if bits > 8 else 8, layers_16bit=(),
                                 batches=stored.get("batches") or 1, msmc_kb=stored.get("msmc_kb"),
                                 persist_weights=False, fps=args.fps, hints=True)
    if perf._wants_partition(pargs, options) and callable(getattr(backend, "estimate_partitioned", None)) \
            and not os.path.isdir(args.model) and not stored and not perf._graph_bits(graph):  # a float model file
        from tidlc.compiler import plan_for
        from tidlc.partition import extract_region
        partition = plan_for(graph, backend, options)
        if not partition.is_whole:  # as `tidlc compile` would split it
            subgraphs = [extract_region(graph, r) for r in partition.regions]
            rep = backend.estimate_partitioned(graph, partition, subgraphs, device, popts, plugins)
            subs = [json.loads(backend.estimate(g, device, popts).to_json()) for g in subgraphs]
            return report.build_document(json.loads(rep.to_json()), graph, layer_reports=subs,
                                         host_ops=partition.host_ops, regions=partition.regions,
                                         compare=_compare_rows(args, options), fps=args.fps)
    rep = backend.estimate(graph, device, popts)
    return report.build_document(json.loads(rep.to_json()), graph, compare=_compare_rows(args, options),
                                 fps=args.fps)


def run(args, options) -> int:
    from tidlc import report
    from tidlc.fileio import atomic_write
    if (args.calib or args.input) and os.path.isdir(args.model):
        raise TidlcError("--calib/--input need the model file (SNR is measured by `tidlc compare`, which "
                         "quantizes the float model)", args.model, code="option",
                         hint="run `tidlc report MODEL.onnx --calib DATA --input X` with the compile options")
    doc = gather(args, options)
    title = args.title or f"tidlc report: {doc['perf'].get('model') or os.path.basename(os.path.normpath(args.model))}"
    page = report.render_html(doc, title)
    out = args.output or _default_output(args.model)
    with atomic_write(out, "w") as fh:
        fh.write(page)
    print(f"  wrote {out} ({len(page.encode()) / 1024:.0f} KB, {len(doc['graph']['nodes'])} layers)")
    return 0
