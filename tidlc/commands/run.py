"""Run a compiled model (OUTDIR, a net.bin or an import config) or a source model / .tir
(float interpreter; fixed point for a quantized .tir). See docs/run.md.
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

from tidlc.cli_options import (
    add_model_options,
    add_pass_options,
    load_and_optimize,
    outputs_summary,
    print_json,
)
from tidlc.diagnostics import TidlcError

NAME = "run"
HELP = ("run a compiled model (OUTDIR, a net.bin or an import config) or a "
        "source model / .tir (float interpreter; fixed point for a quantized .tir)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model")
    p.add_argument("--raw", action="store_true", help="quantized model: write the integer outputs")
    p.add_argument("--input", action="append", default=[], metavar="[NAME=]FILE.npy",
                   help="an input tensor (repeatable)")
    p.add_argument("--output", "-o", default=None, metavar="OUT.npz", help="where to write the outputs")
    p.add_argument("--random-input", type=int, metavar="SEED", help="feed seeded uniform random inputs")
    p.add_argument("--kernels", choices=["auto", "numpy"], default="auto",
                   help="compiled model: auto = the fastest exact kernels, numpy = the numpy specification")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="worker threads of the fast kernels (default: $TIDLC_NUM_THREADS, else every CPU)")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="compiled model: run N times, print the median")
    p.add_argument("--trace", metavar="DIR", help="compiled model: write every layer's output to DIR/trace.npz")
    p.add_argument("--post", metavar="TASK|NAME",
                   help="compiled model: post-processing (TIDL postProcType): classify (top-5), detect (boxes drawn "
                        "in a PNG), segment (colour map), or a decoder by name: ssd, ultraface, yolov5, yolox, yolov8, a "
                        "plugin's; options in braces: 'yolov5{classes=80,iou=0.5}' (docs/run.md)")
    p.add_argument("--threshold", type=float, default=0.5, help="--post detect: smallest score drawn (default 0.5)")
    p.add_argument("--labels", metavar="LIST", help="--post classify: 'image label' lines; prints top-1/top-5 accuracy")
    p.add_argument("--post-output", metavar="OUT.png",
                   help="--post detect|segment: the PNG to write (default detect.png / segment.png)")
    p.add_argument("--json", action="store_true", help="print a JSON summary of the outputs instead of text")
    add_model_options(p, default_level=0)
    add_pass_options(p)


def _read_inputs(specs: Sequence[str], names: list[str], what: str = "a source model") -> dict:
    """``--input`` tensors by input name: .npy files (an image needs the pre-processing a compiled
    model's io.bin keeps)."""
    from tidlc.fileio import load_array
    from tidlc.preprocess import IMAGE_SUFFIXES
    from tidlc.run_compiled import split_input_spec
    feeds = {}
    for spec in specs:
        name, path = split_input_spec(spec, names, "FILE.npy")
        if path.lower().endswith(IMAGE_SUFFIXES):
            raise TidlcError(f"--input {path}: an image, but {what} takes pre-processed tensors (.npy)",
                             hint="compile it with the pre-processing (tidlc compile MODEL --mean M --scale S -o "
                                  "OUTDIR) and run OUTDIR with the image, or pass the tensor saved with numpy.save",
                             code="input")
        feeds[name] = load_array(path)
    return feeds


def run(args, options) -> int:
    import numpy as np

    from tidlc.compiler import plugins_for
    from tidlc.fileio import save_npz
    from tidlc.interp import run_graph
    from tidlc.ir.types import numpy_dtype
    from tidlc.run_compiled import is_compiled_location, run_compiled
    plugins = plugins_for(options)
    from tidlc.compiler import backend_for
    backend_for(options, plugins)  # an unknown --target fails first
    generic = _artifact_backend(args.model, plugins)
    if generic is not None:  # a compiled model of a backend without a net.bin (e.g. onnx-qdq)
        return _run_artifact(args, generic)
    partitioned = getattr(backend_for(options, plugins), "is_partitioned", None)
    if (partitioned is not None and partitioned(args.model)) or \
            is_compiled_location(args.model, options.target.backend, plugins):
        # net.bin + io.bin, an import config (docs/run.md), or model.tdp: subgraphs + host ops (docs/partition.md)
        return run_compiled(args, options.target.backend, plugins)
    graph = load_and_optimize(args, options, plugins)
    feeds = _read_inputs(args.input, graph.input_names())
    if args.random_input is not None:
        rng = np.random.default_rng(args.random_input)
        for op in graph.input_ops:
            t = op.results[0].type
            if op.attrs["name"] not in feeds:
                if not t.is_static:
                    from tidlc.shapes import dynamic_input_error
                    raise dynamic_input_error(op.attrs["name"], t.shape, t.layout, args.model)
                feeds[op.attrs["name"]] = rng.random(t.shape, dtype=np.float32).astype(numpy_dtype(t.dtype))
    start = time.perf_counter()
    from tidlc.compiler import backend_for
    backend = backend_for(options, plugins)
    if _backend_runs(backend, graph):  # a quantized graph: the backend's executor (TIDL: fixed point)
        outputs = backend.load(graph, kernels=args.kernels, threads=args.threads).run(feeds, raw=args.raw)
    else:
        outputs = run_graph(graph, feeds)
    elapsed = time.perf_counter() - start
    if args.output:
        save_npz(args.output, outputs)
    return _print_outputs(args, outputs, elapsed)


def _artifact_backend(path: str, plugins):
    """The backend whose compiled output ``path`` is, among those that have no net.bin-style
    artifact (``find_artifact``), or None."""
    from tidlc.backend import instance
    if not os.path.exists(path):
        return None
    for name in sorted(plugins.registry.backends):
        backend = instance(plugins.registry.backends[name])
        if getattr(backend, "find_artifact", None) is None and backend.recognizes(path):
            return backend
    return None


def _run_artifact(args, backend) -> int:
    """`tidlc run OUTDIR` through the contract only: ``load(OUTDIR).run(feeds)``."""
    import numpy as np

    from tidlc.fileio import save_npz
    if args.trace:
        raise TidlcError(f"--trace: a compiled '{backend.name}' model runs through the backend contract, "
                         "which gives its outputs only", args.model, hint="drop --trace", code="option")
    executable = backend.load(args.model)
    info = executable.input_info() if hasattr(executable, "input_info") else []
    feeds = _read_inputs(args.input, [name for name, _, _ in info], f"a compiled '{backend.name}' model")
    rng = np.random.default_rng(args.random_input if args.random_input is not None else 0)
    for name, shape, dtype in info:
        if name not in feeds:
            if args.random_input is None:
                raise TidlcError(f"no value for input '{name}'", args.model,
                                 hint="give --input NAME=FILE.npy or --random-input SEED", code="input")
            feeds[name] = rng.random(shape, dtype=np.float32).astype(dtype)
    start = time.perf_counter()
    outputs = executable.run(feeds)
    elapsed = time.perf_counter() - start
    if args.output:
        save_npz(args.output, outputs)
    return _print_outputs(args, outputs, elapsed, backend.name)


def _print_outputs(args, outputs, elapsed: float, target: str | None = None) -> int:
    """`tidlc run`'s report of a model run in process: the --json document, or a line per output."""
    import numpy as np
    if args.json:
        doc = {"schema": "tidlc.run/1", "model": args.model, **({"target": target} if target else {}),
               "ms": round(elapsed * 1e3, 3), "outputs": outputs_summary(outputs), "wrote": args.output}
        print_json(doc)
        return 0
    for name, arr in outputs.items():
        flat = np.asarray(arr).reshape(-1)
        summary = f"min {flat.min():.6g} max {flat.max():.6g}" if flat.size and arr.dtype.kind in "fiu" else ""
        print(f"{name}: {arr.dtype} {list(arr.shape)} {summary}")
    print(f"ran{f' on {target}' if target else ''} in {elapsed * 1e3:.1f} ms")
    if args.output:
        print(f"  wrote {args.output}")
    return 0


def _backend_runs(backend, graph) -> bool:
    """Whether ``graph`` is compiled for ``backend`` (run by it, not by the float interpreter)."""
    check = getattr(backend, "is_executable_graph", None)
    return bool(check(graph)) if check is not None else False
