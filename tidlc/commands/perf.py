"""Estimate TDA4 (C7x + MMA) performance offline: cycles, ms, FPS, DDR traffic and tuning hints.

MODEL is a compile output: a directory (the graph in its net.bin, or its
model.tir; the newer if both), a net file, or the TIDL import config that
wrote it; or a model file (imported and optimised with the same options as
`tidlc compile`; structure-only models such as a Caffe prototxt without its
caffemodel are fine). The model and its constants are in docs/perf.md.

Examples:
  tidlc perf out/ultraface
  tidlc perf examples/ultraface/ultraface-rfb320.prototxt --fps 30
  tidlc perf model.onnx --batches 4 --persist-weights on --msmc-size 4096 --json
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import NamedTuple

from tidlc.cli_options import add_model_options, add_pass_options, names_list
from tidlc.diagnostics import TidlcError, warn

NAME = "perf"
HELP = "estimate cycles, ms, FPS, DDR traffic and tuning hints on TDA4 (C7x + MMA)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("model", metavar="OUTDIR|MODEL", help="a `tidlc compile` output (directory, net file or "
                                                         "import config) or a model file")
    g = p.add_argument_group("device and deployment settings")
    g.add_argument("--device", metavar="NAME|FILE.toml",
                   help="device name (builtin or from a plugin) or a device file (default: the one a net.bin "
                        "was compiled for, else tda4vm)")
    g.add_argument("--msmc-size", dest="msmc_kb", type=int, metavar="KB",
                   help="MSMC (L3) KB usable by the network (msmcSizeKB; default: a net.bin's, else the device's)")
    g.add_argument("--batches", type=int, metavar="N",
                   help="frames processed per call (numBatches; default: a net.bin's, else 1)")
    g.add_argument("--persist-weights", choices=("on", "off"),
                   help="keep weights that fit in MSMC between frames (default: a net.bin's, else off)")
    g.add_argument("--bits", type=int, choices=(8, 16),
                   help="8- or 16-bit inference (default: the compiled model's, else 8)")
    g.add_argument("--16bit-layers", dest="layers_16bit", type=names_list, metavar="NAME,...",
                   help="layers computed in 16 bits (mixed precision)")
    g.add_argument("--fps", type=float, metavar="F", help="check against an F frames/s video input")
    g.add_argument("--partitioned", action="store_true",
                   help="a model file: estimate it split as `tidlc compile` splits it (subgraphs on the C7x, "
                        "host ops on the A72; implied by the deny lists, --max-subgraphs, --min-subgraph-ops)")
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print the JSON report (schema in docs/perf.md)")
    g.add_argument("--plot", metavar="FILE.png", help="draw the heaviest layers' cycles (needs matplotlib)")
    g.add_argument("--top", type=int, metavar="N", help="table: only the N heaviest layers")
    g.add_argument("--no-hints", dest="show_hints", action="store_false", help="skip the tuning hints")
    add_model_options(p)
    add_pass_options(p)


def graph_bits(graph) -> int | None:
    """The precision a quantized graph was compiled at, or None for a float graph."""
    declared = graph.attrs.get("quant.bits")
    if isinstance(declared, int):
        return declared
    widths = [v.type.quant.bits for op in graph.compute_ops() for v in op.results
              if v.type.quant is not None and v.type.quant.bits <= 16]  # not 32-bit biases
    return max(widths) if widths else None


def load_graph(args, options):
    """(graph, plugins, stored settings): a compile output as compiled (a net.bin also gives the
    device and the numBatches/msmcSizeKB it was compiled with), or a model file optimised now."""
    from tidlc.compiler import backend_for, load, optimize, plugins_for
    from tidlc.run_compiled import compiled_paths, read_model
    plugins = plugins_for(options)
    backend_for(options, plugins)  # an unknown --target fails first
    compiled = compiled_paths(args.model, options.target.backend, plugins)
    tir = os.path.join(args.model, "model.tir") if os.path.isdir(args.model) else None
    if tir and os.path.isfile(tir) and (compiled is None or os.path.getmtime(tir) >= os.path.getmtime(compiled[0])):
        return load(tir, options, plugins), plugins, {}  # --emit qir/ir output (the newer one if both)
    if compiled is not None:  # net.bin: the graph it holds, and what it was compiled for
        model = read_model(args.model, options.target.backend, plugins)
        return model.graph, plugins, {**model.settings, "device": model.device or None}
    if os.path.isdir(args.model):
        raise TidlcError("no model.tir or net.bin in this directory", args.model,
                         hint="run `tidlc compile MODEL -o DIR` first, or give the model file")
    graph = load(args.model, options, plugins, for_device=True)
    if args.print_pipeline:
        from tidlc.compiler import build_pass_manager
        print(build_pass_manager(options, plugins).pipeline_string(), file=sys.stderr)
    pm = optimize(graph, options, plugins)
    if args.time_passes:
        print(pm.timing_report(), file=sys.stderr)
    return graph, plugins, {}


def device_name(args, compiled_for: str | None, plugins, backend) -> str:
    """--device, else the device a net.bin was compiled for when it is a known name (a net.bin
    names a device file only by a truncated path: never opened), else tda4vm."""
    if args.device:
        return args.device
    if compiled_for and compiled_for in backend.available_devices(plugins):
        return compiled_for
    if compiled_for and compiled_for != "tda4vm":
        warn(f"the net was compiled for device '{compiled_for}', which is not a known device name; "
             "estimating for tda4vm", code="ignored", hint="pass --device NAME or --device FILE.toml")
    return "tda4vm"


class Estimate(NamedTuple):
    """What `tidlc perf` estimated: the backend's report (whole-model, or partitioned with
    ``subgraphs`` and ``partition`` set), the graph it is about, and the perf options used."""
    report: object
    graph: object
    backend: object
    perf_options: object
    device: object
    subgraphs: list | None = None
    partition: object = None

    @property
    def partitioned(self) -> bool:
        return self.subgraphs is not None


def estimate(args, options) -> Estimate:
    """The estimate `tidlc perf` prints (and `tidlc report` draws): a model.tdp as compiled, a
    net.bin / model.tir with its stored settings, or a model file optimised now (split as
    `tidlc compile` would split it when a partitioning option is given)."""
    from tidlc.compiler import backend_for, plugins_for
    plugins = plugins_for(options)
    backend = backend_for(options, plugins)
    partitioned = getattr(backend, "is_partitioned", None)
    if partitioned is not None and partitioned(args.model):  # model.tdp: subgraphs + host ops
        graph, partition, subgraphs, compiled_for = backend.read_partitioned(args.model)
        device = backend.load_device(device_name(args, compiled_for, plugins, backend), plugins)
        bits = args.bits or max([graph_bits(g) or 8 for g in subgraphs] or [8])
        popts = _perf_options(args, backend, bits, {})
        rep = backend.estimate_partitioned(graph, partition, subgraphs, device, popts, plugins)
        return Estimate(rep, graph, backend, popts, device, subgraphs, partition)
    graph, plugins, stored = load_graph(args, options)
    needed = ("estimate", "load_device", "perf_options", "report_renderers", "available_devices")
    if not all(callable(getattr(backend, m, None)) for m in needed):
        raise TidlcError(f"target '{backend.name}' has no performance model", code="option",
                         hint=f"tidlc {args.command} needs a backend with estimate(); --target tidl has one")
    device = backend.load_device(device_name(args, stored.get("device"), plugins, backend), plugins)
    popts = _perf_options(args, backend, args.bits or graph_bits(graph) or options.quant.bits, stored)
    if callable(getattr(backend, "estimate_partitioned", None)) \
            and not os.path.isdir(args.model) and not stored and not graph_bits(graph):  # a float model file
        from tidlc.compiler import plan_for
        from tidlc.partition import extract_region
        partition = plan_for(graph, backend, options)
        if not partition.is_whole:
            subgraphs = [extract_region(graph, r) for r in partition.regions]
            rep = backend.estimate_partitioned(graph, partition, subgraphs, device, popts, plugins)
            if _wants_partition(args, options):
                return Estimate(rep, graph, backend, popts, device, subgraphs, partition)
            # the whole-model table stays (per-layer figures, hints); what compile makes of it is said once
            warn(f"compiled, this model splits into {len(subgraphs)} subgraph(s) and {len(partition.host_ops)} "
                 f"host op(s) ({', '.join(partition.host_ops[:3])}{', ...' if len(partition.host_ops) > 3 else ''}): "
                 f"{rep.ms:.3f} ms/frame with the Arm's share and the transfers; the table below runs every layer "
                 "on the C7x", code="partition",
                 hint="tidlc perf --partitioned MODEL estimates the split; tidlc check MODEL says why each op "
                      "is on the host")
    return Estimate(backend.estimate(graph, device, popts), graph, backend, popts, device)


def _perf_options(args, backend, bits: int, stored: dict):
    """The command line wins over what a net.bin stores."""
    return backend.perf_options(
        bits=16 if bits > 8 else 8, layers_16bit=getattr(args, "layers_16bit", None) or (),
        batches=args.batches or stored.get("batches") or 1,
        msmc_kb=args.msmc_kb if args.msmc_kb is not None else stored.get("msmc_kb"),
        persist_weights=(args.persist_weights == "on" if args.persist_weights is not None
                         else bool(stored.get("persist_weights", False))),
        fps=args.fps, hints=args.show_hints)


def run(args, options) -> int:
    est = estimate(args, options)
    if est.partitioned:
        return _print_partitioned(args, est.report)
    plot, render_rich, render_text = est.backend.report_renderers()
    rep = est.report
    if args.json:
        sys.stdout.write(rep.to_json())
    elif sys.stdout.isatty():
        sys.stdout.write(render_rich(rep, args.top))
    else:
        sys.stdout.write(render_text(rep, args.top))
    if args.plot:
        print(f"  wrote {plot(rep, args.plot)}", file=sys.stderr)
    return 0


def _wants_partition(args, options) -> bool:
    """--partitioned, or a partitioning option given (docs/partition.md)."""
    from tidlc.config import TargetOptions
    t, default = options.target, TargetOptions()
    return bool(getattr(args, "partitioned", False) or t.deny_op_types or t.deny_op_names
                or t.max_subgraphs != default.max_subgraphs or t.min_subgraph_ops != default.min_subgraph_ops)


def _print_partitioned(args, rep) -> int:
    if args.json:
        sys.stdout.write(rep.to_json())
    else:
        sys.stdout.write(rep.render_text())
    if args.plot:
        warn("--plot draws a whole-model report; a partitioned model has none", code="ignored")
    return 0
