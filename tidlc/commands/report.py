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

from tidlc.cli_options import add_model_options, add_pass_options, add_quant_options
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
    p.add_argument("--input", action="append", default=[], metavar="[NAME=]FILE",
                   help="with --calib: add float vs fixed SNR per layer (as `tidlc compare`), measured on this "
                        "input (default: the first calibration frame)")
    p.add_argument("--title", help="page title (default: the model's name)")
    add_model_options(p)
    add_pass_options(p)
    add_quant_options(p)


def _default_output(model: str) -> str:
    if os.path.isdir(model):
        return os.path.join(model, "report.html")
    return os.path.splitext(model)[0] + ".html"


def _perf_args(args) -> argparse.Namespace:
    """`tidlc perf`'s arguments for this report: the stored deployment settings, hints on."""
    ns = argparse.Namespace(**vars(args))
    for k, v in {"msmc_kb": None, "batches": None, "persist_weights": None, "bits": None,
                 "layers_16bit": (), "partitioned": False, "show_hints": True}.items():
        if not hasattr(ns, k):
            setattr(ns, k, v)
    return ns


def _compare_rows(args, options) -> dict | None:
    """`tidlc compare --json` of the model (same options), or None without --calib/--input."""
    if not (args.calib or args.input):
        return None
    from tidlc.commands import compare
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "compare.json")
        cargs = argparse.Namespace(**{**vars(args), "json": out, "plot": None,
                                      "threshold": None})  # compare's default for the bits
        with contextlib.redirect_stdout(io.StringIO()):
            compare.run(cargs, options)
        with open(out, encoding="utf-8") as fh:
            return json.load(fh)


def gather(args, options) -> dict:
    """The page's data document (tidlc.report/1): `tidlc perf --json`'s estimate of the model, its
    graph, and `tidlc compare --json`'s rows when --calib/--input are given."""
    from tidlc import report
    from tidlc.commands import perf
    est = perf.estimate(_perf_args(args), options)
    compare = _compare_rows(args, options)
    if est.partitioned:
        subs = [json.loads(est.backend.estimate(g, est.device, est.perf_options).to_json()) for g in est.subgraphs]
        return report.build_document(json.loads(est.report.to_json()), est.graph, layer_reports=subs,
                                     host_ops=est.partition.host_ops, regions=est.partition.regions,
                                     compare=compare, fps=args.fps)
    return report.build_document(json.loads(est.report.to_json()), est.graph, compare=compare, fps=args.fps)


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
