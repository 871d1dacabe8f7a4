"""The compile driver (the Python API behind ``tidlc compile``)."""
from __future__ import annotations

import os

import attrs

from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError
from tidlc.frontend import load_model
from tidlc.ir.core import Graph
from tidlc.ir.printer import print_graph
from tidlc.ir.verifier import verify
from tidlc.ir.weights import weights_digest, write_weights
from tidlc.passes.base import PassContext
from tidlc.passes.manager import PassManager
from tidlc.plugin_manager import Plugins, create_plugins, default_plugins
from tidlc.shapes import apply_input_layout, apply_input_shapes


@attrs.define
class CompileResult:
    graph: Graph
    pass_manager: PassManager
    outputs: list[str] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)


def plugins_for(options: CompileOptions) -> Plugins:
    if options.pipeline.blocked_plugins:
        return create_plugins(options.pipeline.blocked_plugins)
    return default_plugins()


def load(path: str, options: CompileOptions | None = None, plugins: Plugins | None = None) -> Graph:
    """Import a model file into IR (input shapes applied, types inferred)."""
    options = options or CompileOptions()
    plugins = plugins or plugins_for(options)
    graph = load_model(plugins.registry.frontends, path, options, options.load.format,
                       blame=lambda name: plugins.blame("frontend", name))
    shapes = {**tidl_input_shapes(graph, options.load.input_dims), **options.load.input_shapes}
    if shapes:
        apply_input_shapes(graph, shapes)
    if options.load.input_layout:
        apply_input_layout(graph, options.load.input_layout)
    return graph


def tidl_input_shapes(graph: Graph, dims) -> dict[str, tuple[int, ...]]:
    """``--input-shape`` entries from TIDL's per-input (N, C, H, W) sizes (-1: the model's own).

    Only 4-D inputs whose shape changes are listed; an NHWC input takes the
    sizes in its own order (N, H, W, C).
    """
    shapes = {}
    for op, wanted in zip(graph.input_ops, dims):
        t = op.results[0].type
        if t.shape is None or len(t.shape) != 4:
            continue
        nhwc = t.layout == "NHWC"
        n, c, h, w = (t.shape[0], t.shape[3], t.shape[1], t.shape[2]) if nhwc else t.shape
        new = [old if size is None or size < 0 else size for size, old in zip(wanted, (n, c, h, w))]
        if None in new:
            continue  # still dynamic: the shape inference error names the input
        shape = (new[0], new[2], new[3], new[1]) if nhwc else tuple(new)
        if shape != tuple(t.shape):
            shapes[op.attrs["name"]] = shape
    return shapes


def build_pass_manager(options: CompileOptions, plugins: Plugins) -> PassManager:
    reg = plugins.registry.passes
    owners = {name: who for name in reg if (who := plugins.blame("pass", name))}
    kw = dict(verify_each=options.pipeline.verify_each, time_passes=options.pipeline.time_passes, owners=owners)
    if options.pipeline.passes:
        return PassManager.from_string(reg, options.pipeline.passes, hook=plugins.hook, **kw)
    pm = PassManager.from_level(reg, options.pipeline.opt_level, hook=plugins.hook, **kw)
    names = [p.name for p in pm.passes]
    wanted = list(backend_for(options, plugins).prepare_pipeline(options.pipeline.opt_level, list(names)))
    # a backend pass whose plugin is blocked (-p no:quantize) is left out
    wanted = [n for n in wanted if n in reg or n not in plugins.blocked]
    if wanted != names:  # the backend's own passes (an explicit -p pipeline is never edited)
        from tidlc.passes.manager import instantiate
        pm.passes = [instantiate(reg, n, {}) for n in wanted]
    if not options.wants_quantization():  # float output (--emit ir, tidlc ir/opt/run): no quantize pass
        pm.passes = [p for p in pm.passes if p.name != "quantize"]
    return pm


def optimize(graph: Graph, options: CompileOptions, plugins: Plugins | None = None) -> PassManager:
    plugins = plugins or plugins_for(options)
    pm = build_pass_manager(options, plugins)
    ctx = PassContext(options=options, hook=plugins.hook, verify_each=options.pipeline.verify_each)
    pm.run(graph, ctx)
    # structure only: every op's types were inferred when it was built
    verify(graph, check_types=options.pipeline.verify_each)
    return pm


def write_ir(graph: Graph, outdir: str, stem: str = "model") -> list[str]:
    """Write ``stem.tir`` and its ``stem.weights`` sidecar (weights first, text last)."""
    graph.attrs["weights"] = f"{stem}.weights"
    graph.attrs.pop("weights_digest", None)
    text, weights = print_graph(graph)
    if weights:  # the header names the sidecar's digest: a .tir never pairs with another compile's weights
        graph.attrs["weights_digest"] = weights_digest(weights)
        text, weights = print_graph(graph)
    tir_path = os.path.join(outdir, f"{stem}.tir")
    weights_path = os.path.join(outdir, f"{stem}.weights")
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as exc:
        raise TidlcError(f"cannot create output directory: {exc.strerror}", outdir, code="output") from None
    from tidlc.fileio import atomic_write, folder_lock
    with folder_lock(outdir):  # two compiles into one folder never interleave their two files
        write_weights(weights_path, weights)
        with atomic_write(tir_path, "w") as fh:
            fh.write(text)
    return [tir_path, weights_path]


def compile_model(path: str, options: CompileOptions | None = None,
                  plugins: Plugins | None = None) -> CompileResult:
    options = options or CompileOptions()
    plugins = plugins or plugins_for(options)
    if options.target.emit not in EMITS:
        raise TidlcError(f"unknown --emit {options.target.emit!r}", hint="use --emit bin, qir (fixed point) or ir (float)")
    backend = backend_for(options, plugins)  # an unknown --target fails before any work
    graph = load(path, options, plugins)
    if options.target.emit == "bin" and graph.attrs.get("missing_weights"):  # say so before optimising
        raise TidlcError("the model has no weights (structure only), so net.bin cannot be written", path,
                         hint="pass --weights FILE or --random-weights SEED; --emit ir writes the "
                              "structure-only IR (for tidlc perf)")
    pm = optimize(graph, options, plugins)
    if options.target.post_process:  # after quantize, which rebuilds the graph attributes
        graph.attrs["post_process"] = options.target.post_process
    result = CompileResult(graph, pm)
    if options.target.emit in ("ir", "qir"):  # qir: the same text form, fixed-point types
        result.outputs = write_ir(graph, options.target.outdir)
    elif options.target.emit == "bin":  # net.bin + io.bin (docs/format.md)
        try:
            result.outputs = list(backend.emit(graph, options.target.outdir, options))
        except TidlcError as exc:
            if exc.loc is None and getattr(exc, "about_model", False):
                exc.loc = path  # a backend's error about the compiled model names the model file
            raise
    return result


def backend_for(options_or_name: CompileOptions | str | None = None, plugins: Plugins | None = None):
    """The backend instance registered as ``--target`` (``registry.backends[target]``; default tidl).

    An unknown target is a one-line error (code "option") listing the installed ones.
    """
    from tidlc.backend import instance
    if isinstance(options_or_name, str):
        name = options_or_name
    else:
        options = options_or_name or CompileOptions()
        name = options.target.backend
        plugins = plugins or plugins_for(options)
    plugins = plugins or default_plugins()
    table = plugins.registry.backends
    if name not in table:
        installed = ", ".join(sorted(table)) or "none"
        raise TidlcError(f"unknown --target {name!r} (installed: {installed})",
                         hint="`tidlc plugins` lists the backends; a plugin adds one through tidlc_backends",
                         code="option")
    item = table[name]
    obj = instance(item)
    if obj is not item:
        table[name] = obj  # a class is instantiated once
    return obj


EMITS = ("bin", "qir", "ir", "none")
