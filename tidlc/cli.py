"""The ``tidlc`` command.

Every failure a user can cause prints one line per problem (``file:line:col:
error: ... (hint: ...)``) and exits 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
import time
import warnings
from collections.abc import Sequence

import tidlc
from tidlc.cli_options import (
    add_model_options,
    add_pass_options,
    add_quant_options,
    explicit_names,
    options_from_args,
)
from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError, TidlcWarning


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidlc", description="Open model compiler for TI TDA4 (C7x + MMA).")
    parser.add_argument("--version", action="version", version=f"tidlc {tidlc.__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="also print the passes' notes")
    parser.add_argument("--diagnostics", choices=["text", "json"], default="text",
                        help="json: print every error and warning as one JSON document on stderr "
                             "(codes in docs/errors.md)")
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                        help="raise or lower a resource limit for untrusted input, e.g. tensor-bytes=4G "
                             "(repeatable; docs/errors.md lists them; also $TIDLC_LIMITS)")
    parser.add_argument("-p", dest="plugin_args", action="append", default=[], metavar="no:NAME | PIPELINE",
                        help="'no:NAME' blocks a plugin; otherwise a pass pipeline "
                             "'name{opt=v},...' that replaces the -O pipeline")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("compile", help="import, optimise, quantize and write net.bin + io.bin",
                       description="MODEL is a model file or a TIDL-RT import config (docs/import-config.md); "
                                   "after a config file, TIDL-style --key value arguments override its keys.")
    p.add_argument("model", nargs="?", metavar="MODEL|IMPORT.txt",
                   help="a model file, or a TIDL import config file (detected by its key = value lines)")
    p.add_argument("--import-config", metavar="FILE",
                   help="read FILE as a TIDL import config (when detection is not wanted)")
    p.add_argument("-o", "--output-dir", default=None,
                   help="output directory (default: out; with an import config, its outputNetFile's folder)")
    p.add_argument("--emit", default="bin", choices=["bin", "qir", "ir", "none"],
                   help="what to write: bin = OUTDIR/net.bin + io.bin (default; docs/format.md), "
                        "qir = quantized IR (OUTDIR/model.tir), ir = float IR, none = nothing")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of text (docs/cli.md)")
    p.add_argument("--quant-params", action="store_true", default=None,
                   help="--target onnx-qdq: also write TIDL's TIDLNetQuantParams prototxt (docs/ti-flow.md)")
    add_model_options(p)
    add_pass_options(p)
    add_quant_options(p)

    p = sub.add_parser("run", help="run a compiled model (OUTDIR, a net.bin or an import config) or a "
                                   "source model / .tir (float interpreter; fixed point for a quantized .tir)")
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
    p.add_argument("--post", choices=["classify", "detect", "segment"],
                   help="compiled model: post-processing (TIDL postProcType): top-5 classes, boxes or a colour map (PNG)")
    p.add_argument("--threshold", type=float, default=0.5, help="--post detect: smallest score drawn (default 0.5)")
    p.add_argument("--labels", metavar="LIST", help="--post classify: 'image label' lines; prints top-1/top-5 accuracy")
    p.add_argument("--post-output", metavar="OUT.png",
                   help="--post detect|segment: the PNG to write (default detect.png / segment.png)")
    p.add_argument("--json", action="store_true", help="print a JSON summary of the outputs instead of text")
    add_model_options(p, default_level=0)
    add_pass_options(p)

    p = sub.add_parser("ir", help="print the IR of a model")
    p.add_argument("model")
    add_model_options(p, default_level=0)
    add_pass_options(p)

    p = sub.add_parser("opt", help="run passes over a .tir file and print (or write) the result")
    p.add_argument("model")
    p.add_argument("-o", "--output", default=None, metavar="OUT.tir")
    add_model_options(p, default_level=0)
    add_pass_options(p)

    sub.add_parser("plugins", help="list installed plugins, frontends, passes, backends and ops")
    for module in COMMAND_MODULES:
        mod = importlib.import_module(module)
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.__doc__)
        mod.add_arguments(p)
    return parser


def _report_passes(pm, args) -> None:
    if getattr(args, "time_passes", False):
        print(pm.timing_report(), file=sys.stderr)
    if getattr(args, "time_passes", False) or getattr(args, "verbose", False):
        for note in pm.notes:  # what the passes had to say (ctx.note)
            print(f"note: {note}", file=sys.stderr)


def _print_pipeline(options, plugins) -> None:
    from tidlc.compiler import build_pass_manager
    print(build_pass_manager(options, plugins).pipeline_string())


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


def cmd_compile(args, options) -> int:
    from tidlc.compiler import compile_model, plugins_for
    model, options = _compile_source(args, options)
    plugins = plugins_for(options)
    if args.print_pipeline:
        _print_pipeline(options, plugins)
    start = time.perf_counter()
    result = compile_model(model, options, plugins)
    _report_passes(result.pass_manager, args)
    g = result.graph
    n_ops = sum(1 for _ in g.compute_ops())
    seconds = time.perf_counter() - start
    if args.json:
        print_json({"schema": "tidlc.compile/1", "model": args.model or args.import_config,
                    "opt_level": options.pipeline.opt_level, "pipeline": result.pass_manager.pipeline_string(),
                    "emit": options.target.emit, "ops": n_ops, "op_kinds": _op_kinds(g), "seconds": round(seconds, 3),
                    "outputs": list(result.outputs)})
        return 0
    how = f"with -p '{options.pipeline.passes}'" if options.pipeline.passes else f"at -O{options.pipeline.opt_level}"
    print(f"compiled {args.model or args.import_config} {how}: {n_ops} ops, {seconds:.2f} s")
    for path in result.outputs:
        print(f"  wrote {path}")
    return 0


def _op_kinds(graph) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for op in graph.compute_ops():
        kinds[op.kind] = kinds.get(op.kind, 0) + 1
    return dict(sorted(kinds.items()))


def print_json(doc: dict) -> None:
    import json
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def outputs_summary(outputs) -> dict:
    """``{name: {dtype, shape, min, max, mean}}`` of a run's outputs (the ``tidlc run --json`` schema)."""
    import numpy as np
    out = {}
    for name, arr in outputs.items():
        arr = np.asarray(arr)
        entry = {"dtype": str(arr.dtype), "shape": list(arr.shape)}
        if arr.size and arr.dtype.kind in "fiub":
            flat = arr.astype(np.float64).reshape(-1)
            entry.update(min=float(flat.min()), max=float(flat.max()), mean=float(flat.mean()))
        out[name] = entry
    return out


def _read_inputs(specs: Sequence[str], graph) -> dict:
    from tidlc.commands.run_bin import split_input_spec
    from tidlc.fileio import load_array
    feeds = {}
    names = graph.input_names()
    for spec in specs:
        name, path = split_input_spec(spec, names, "FILE.npy")
        feeds[name] = load_array(path)
    return feeds


def cmd_run(args, options) -> int:
    import numpy as np

    from tidlc.commands.run_bin import is_compiled_location, run_compiled
    from tidlc.compiler import load, optimize, plugins_for
    from tidlc.fileio import save_npz
    from tidlc.interp import run_graph
    from tidlc.ir.types import numpy_dtype
    plugins = plugins_for(options)
    from tidlc.compiler import backend_for
    backend_for(options, plugins)  # an unknown --target fails first
    generic = _artifact_backend(args.model, plugins)
    if generic is not None:  # a compiled model of a backend without a net.bin (e.g. onnx-qdq)
        return _run_artifact(args, generic)
    if is_compiled_location(args.model, options.target.backend, plugins):  # net.bin + io.bin, or an import config (docs/run.md)
        return run_compiled(args, options.target.backend, plugins)
    if args.print_pipeline:
        _print_pipeline(options, plugins)
    graph = load(args.model, options, plugins)
    pm = optimize(graph, options, plugins)
    _report_passes(pm, args)
    feeds = _read_inputs(args.input, graph)
    if args.random_input is not None:
        rng = np.random.default_rng(args.random_input)
        for op in graph.input_ops:
            t = op.results[0].type
            if op.attrs["name"] not in feeds:
                if not t.is_static:
                    raise TidlcError(f"input '{op.attrs['name']}' has a dynamic shape",
                                     hint="give --input-shape NAME=d0,d1,...")
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

    from tidlc.fileio import load_array, save_npz
    executable = backend.load(args.model)
    info = executable.input_info() if hasattr(executable, "input_info") else []
    names = [name for name, _, _ in info]
    from tidlc.commands.run_bin import split_input_spec
    feeds = {}
    for spec in args.input:
        name, path = split_input_spec(spec, names, "FILE.npy")
        feeds[name] = load_array(path)
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


def cmd_ir(args, options) -> int:
    from tidlc.commands.run_bin import compiled_ir
    from tidlc.compiler import load, optimize, plugins_for
    from tidlc.ir.printer import print_graph
    text = compiled_ir(args.model)  # a net.bin / compiled folder: the graph it holds
    if text is not None:
        sys.stdout.write(text)
        return 0
    plugins = plugins_for(options)
    graph = load(args.model, options, plugins)
    if args.print_pipeline:
        _print_pipeline(options, plugins)
    pm = optimize(graph, options, plugins)
    _report_passes(pm, args)
    sys.stdout.write(print_graph(graph)[0])
    return 0


def cmd_opt(args, options) -> int:
    from tidlc.compiler import load, optimize, plugins_for, write_ir
    from tidlc.ir.printer import print_graph
    plugins = plugins_for(options)
    graph = load(args.model, options, plugins)
    if args.print_pipeline:
        _print_pipeline(options, plugins)
    pm = optimize(graph, options, plugins)
    _report_passes(pm, args)
    if args.output:
        stem = os.path.splitext(os.path.basename(args.output))[0]
        for path in write_ir(graph, os.path.dirname(os.path.abspath(args.output)), stem):
            print(f"  wrote {path}", file=sys.stderr)
    else:
        sys.stdout.write(print_graph(graph)[0])
    return 0


def cmd_plugins(args, options) -> int:
    from tidlc.compiler import plugins_for
    from tidlc.ir.opdef import OPS
    plugins = plugins_for(options)
    print("plugins:")
    for name, dist in plugins.plugin_names():
        print(f"  {name:<24} {dist}")
    reg = plugins.registry
    print("frontends:")
    for name, fe in sorted(reg.frontends.items()):
        print(f"  {name:<24} {' '.join(fe.suffixes):<20} {fe.description}  [{fe.plugin}]")
    print("passes:")
    for name, cls in sorted(reg.passes.items()):
        level = "backend" if cls.opt_level is None else f"-O{cls.opt_level}"
        print(f"  {name:<24} {level:<8} {cls.summary}  [{reg.owner[('pass', name)]}]")
    print("backends:")
    for name in sorted(reg.backends):
        print(f"  {name:<24} [{reg.owner[('backend', name)]}]")
    plugin_ops = {name: owner for (kind, name), owner in reg.owner.items() if kind == "op"}
    builtin = [n for n in OPS.names() if n not in plugin_ops]
    print(f"ops: {len(builtin)} builtin ({', '.join(builtin)})")
    for name, owner in sorted(plugin_ops.items()):
        print(f"  {name:<24} [{owner}]")
    return 0


COMMANDS = {"compile": cmd_compile, "run": cmd_run, "ir": cmd_ir, "opt": cmd_opt, "plugins": cmd_plugins}

# Commands in their own modules (tidlc/commands/*.py). Each module has NAME,
# HELP, a docstring, ``add_arguments(parser)`` and ``run(args, options) -> int``;
# arguments whose ``dest`` matches a CompileOptions field fill that field.
COMMAND_MODULES: tuple[str, ...] = ("tidlc.commands.compare", "tidlc.commands.perf")


@functools.cache
def _parser() -> argparse.ArgumentParser:
    """The parser, built once per process (building it costs more than reading a small model, and
    argparse re-applies every default on each parse, so reuse is safe)."""
    return build_parser()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extras = parser.parse_known_args(argv)
    if extras and args.command != "compile":
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    args.tidl_overrides = extras  # compile: TIDL's --key value overrides of an import config
    if not args.command:
        parser.print_help()
        return 2
    report = Diagnostics(args.diagnostics == "json", args.debug)
    with report:
        return report.finish(_dispatch(args, report))
    return report.code  # an exception was reported (the with block swallowed it)


def _dispatch(args, report: Diagnostics) -> int:
    from tidlc import limits
    before = limits.current()
    limits.set_limits(limits.parse_limits(args.limit, limits.limits_from_env()))
    try:  # the limits hold for this command only (main() may be called again in one process)
        return _run_command(args, report)
    finally:
        limits.set_limits(before)


def _run_command(args, report: Diagnostics) -> int:
    options = options_from_args(args)
    with warnings.catch_warnings():
        warnings.showwarning = report.show_warning
        warnings.simplefilter("default", TidlcWarning)
        if not args.debug:
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=RuntimeWarning)
        handler = COMMANDS.get(args.command)
        if handler is None:
            handler = next(importlib.import_module(m).run for m in COMMAND_MODULES
                           if importlib.import_module(m).NAME == args.command)
        return handler(args, options)


class Diagnostics:
    """How errors and warnings reach the user: text lines on stderr, or (``--diagnostics json``)
    one JSON document ``{"schema": "tidlc.diagnostics/1", "diagnostics": [...], "exit_code": N}``
    on stderr at exit. Used as a context manager around the command: it turns exceptions into
    exit codes (2 user error, 3 internal error, 130 interrupted) unless ``--debug``."""

    def __init__(self, as_json: bool, debug: bool):
        self.as_json = as_json
        self.debug = debug
        self.items: list[dict] = []
        self.code = 0

    def show_warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        if not (issubclass(category, TidlcWarning) or self.debug):
            return
        if self.as_json:
            item = message.to_dict() if isinstance(message, TidlcWarning) else {
                "severity": "warning", "code": "warning", "message": str(message), "location": {}, "hint": None}
            self.items.append(item)
        else:
            print(f"warning: {message}", file=sys.stderr)

    def finish(self, code: int) -> int:
        self.code = code
        if self.as_json:
            import json
            sys.stderr.write(json.dumps({"schema": "tidlc.diagnostics/1", "diagnostics": self.items,
                                         "exit_code": code}, indent=1) + "\n")
        return code

    def error(self, item: dict, text: str, code: int) -> None:
        if self.as_json:
            self.items.append(item)
        else:
            print(text, file=sys.stderr)
        self.finish(code)

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None:
            return False
        if isinstance(exc, KeyboardInterrupt):
            self.error({"severity": "error", "code": "error", "message": "interrupted", "location": {}},
                       "interrupted", 130)
            return True
        if isinstance(exc, BrokenPipeError):  # `tidlc ir model | head`: the reader left, that is fine
            try:
                sys.stdout = open(os.devnull, "w")
            except OSError:
                pass
            self.code = 0
            return True
        if self.debug or not isinstance(exc, Exception):
            return False
        if isinstance(exc, TidlcError):
            self.error(exc.to_dict(), str(exc), exc.exit_code)
        elif isinstance(exc, MemoryError):
            self.error({"severity": "error", "code": "internal", "message": "out of memory", "location": {},
                        "hint": "lower --limit tensor-bytes / total-bytes, or report the input"},
                       "error: out of memory", 3)
        else:  # an internal error: short message, traceback on --debug
            text = (f"internal error: {type(exc).__name__}: {exc} (run with --debug for a traceback "
                    "and please report it)")
            self.error({"severity": "error", "code": "internal", "message": f"{type(exc).__name__}: {exc}",
                        "location": {}, "hint": "run with --debug for a traceback and please report it"},
                       text, 3)
        return True


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
