"""The compile driver (the Python API behind ``tidlc compile``)."""
from __future__ import annotations

import os
import weakref

import attrs

from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError
from tidlc.fileio import remove_stale
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


def load(path: str, options: CompileOptions | None = None, plugins: Plugins | None = None,
         for_device: bool = False) -> Graph:
    """Import a model file into IR (input shapes applied, types inferred). ``for_device``: the
    graph is for the accelerator (compile, check, perf, compare), so an input whose only dynamic
    dimension is the batch gets batch 1 (see :func:`_batch_one`); the float interpreter runs any.
    The builtin frontends take it as they import (``LoadOptions.batch_one``, so shape arithmetic on
    the input is static); :func:`_batch_one` after the import serves a frontend that does not."""
    options = options or CompileOptions()
    plugins = plugins or plugins_for(options)
    if for_device and not any(dims[0] >= 0 for dims in options.load.input_dims):  # (an import config's N wins)
        options = options.replace(batch_one=True)
    graph = load_model(plugins.registry.frontends, path, options, options.load.format,
                       blame=lambda name: plugins.blame("frontend", name))
    shapes = {**tidl_input_shapes(graph, options.load.input_dims), **options.load.input_shapes}
    if for_device:
        shapes.update(_batch_one(graph, shapes))
    if shapes:
        apply_input_shapes(graph, shapes)
    if options.load.input_layout:
        apply_input_layout(graph, options.load.input_layout)
    return graph


def _batch_one(graph: Graph, given: dict) -> dict[str, tuple[int, ...]]:
    """Inputs whose only dynamic dimension is the batch (``torch.onnx.export(dynamic_axes={0: ...})``,
    a Keras ``None`` batch) get batch 1, with a warning: TIDL runs one frame per inference (more
    with numBatches). An input named in ``--input-shape`` keeps what it says; any other dynamic
    dimension stays dynamic, for the error that asks for ``--input-shape``."""
    from tidlc.shapes import batch_one, warn_batch_one
    shapes = {}
    for op in graph.input_ops:
        name = op.attrs["name"]
        if name not in given and (shape := batch_one(op.results[0].type.shape)) is not None:
            shapes[name] = shape
    if shapes:
        warn_batch_one(shapes)
    return shapes


def float_graph(path: str, options: CompileOptions, plugins: Plugins | None = None) -> Graph:
    """``path`` imported and optimised at ``options``' -O level, left float (no quantize pass): what
    the backend would quantize; ``tidlc check``, ``tune``, ``eval`` and ``sweep`` start from it."""
    plugins = plugins or plugins_for(options)
    float_options = options.replace(emit="ir", quantize=False)
    graph = load(path, float_options, plugins, for_device=True)
    stash = optimize(graph, float_options, plugins).stash
    if stash:  # what passes left for the quantize pass (-O3: equalize's record, for its check)
        _STASHES[graph] = stash
    return graph


_STASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def float_stash(graph: Graph) -> dict:
    """What the passes of :func:`float_graph` left for the quantize pass (their context's stash;
    -O3: ``equalize``'s record), so a backend quantizing the float graph runs the same checks as
    ``tidlc compile``; empty for any other graph."""
    return _STASHES.get(graph, {})


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
    _run_pinned(pm, graph, PassContext(options=options, hook=plugins.hook,
                                       verify_each=options.pipeline.verify_each), options)
    return pm


def _run_pinned(pm: PassManager, graph: Graph, ctx: PassContext, options: CompileOptions) -> None:
    """Run ``pm`` with the deny-listed ops pinned (kept as they are), then verify the graph."""
    pinned = pin_denied(graph, options)
    try:
        pm.run(graph, ctx)
    finally:
        unpin(graph, pinned)
    # structure only: every op's types were inferred when it was built
    verify(graph, check_types=options.pipeline.verify_each)


def pin_denied(graph: Graph, options: CompileOptions) -> int | None:
    """Keep the ops the deny lists name (--deny-op-type/--deny-op-name) through the passes: their
    operands and results become graph outputs for the pipeline's time, so no fusion absorbs them
    (a ReLU fused into its conv would leave no 'relu1' to run on the host). Checks the names
    first (an unknown one is an error naming the nearest). Returns the real output count."""
    t = options.target
    if not (t.deny_op_types or t.deny_op_names):
        return None
    from tidlc.partition import check_deny_lists
    check_deny_lists(graph, t.deny_op_types, t.deny_op_names)
    count = len(graph.outputs)
    kinds, names = set(t.deny_op_types), set(t.deny_op_names)
    seen = {id(v) for v in graph.outputs}
    from tidlc.passes.rewrite import keep_ops
    keep_ops(graph, kinds, names)
    for op in graph.compute_ops():
        if op.kind in kinds or op.name in names:
            for v in (*op.operands, *op.results):
                if id(v) not in seen and v.producer is not None and v.producer.kind not in ("input", "const"):
                    seen.add(id(v))
                    graph.outputs.append(v)
                    graph.output_names.append(f"__pinned_{len(graph.outputs)}")
    return count


def unpin(graph: Graph, count: int | None) -> None:
    if count is not None:
        from tidlc.passes.rewrite import keep_ops
        keep_ops(graph)
        del graph.outputs[count:]
        del graph.output_names[count:]
        graph.prune()


def plan_for(graph: Graph, backend, options: CompileOptions):
    """The partition of an optimised float graph on ``backend`` (tidlc.partition, docs/partition.md)."""
    from tidlc.partition import plan_partition
    t = options.target
    cost_of = getattr(backend, "partition_cost", None)
    # the names were checked on the imported graph (pin_denied); one a pass removed (an identity) is gone
    present = {op.name for op in graph.compute_ops()}
    deny_names = tuple(n for n in t.deny_op_names if n in present)
    return plan_partition(graph, backend, max_subgraphs=t.max_subgraphs, min_subgraph_ops=t.min_subgraph_ops,
                          deny_types=t.deny_op_types, deny_names=deny_names,
                          cost=cost_of(graph, options) if cost_of is not None else None)


def optimize_and_plan(graph: Graph, options: CompileOptions, plugins: Plugins, backend):
    """Optimise, plan the partition after the float passes and before ``quantize``: (pass manager,
    partition). A whole-model plan runs ``quantize`` as the pipeline's last pass, as always; a
    partitioned one leaves the graph float (the backend quantizes each subgraph when it emits)."""
    pm = build_pass_manager(options, plugins)
    passes = list(pm.passes)
    last = passes[-1] if passes and passes[-1].name == "quantize" else None
    ctx = PassContext(options=options, hook=plugins.hook, verify_each=options.pipeline.verify_each)
    pm.passes = passes[:-1] if last is not None else passes
    _run_pinned(pm, graph, ctx, options)
    partition = plan_for(graph, backend, options)
    if last is not None and partition.is_whole:
        pm.passes = [last]
        pm.run(graph, ctx)
        verify(graph, check_types=options.pipeline.verify_each)
        pm.passes = passes
    return pm, partition


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
    graph = load(path, options, plugins, for_device=True)
    if options.target.emit in ("bin", "qir"):  # a static shape is needed: say so before optimising
        from tidlc.preprocess import input_specs
        input_specs(graph, path)
    if options.target.emit == "bin" and graph.attrs.get("missing_weights"):  # say so before optimising
        raise TidlcError("the model has no weights (structure only), so net.bin cannot be written", path,
                         hint="pass --weights FILE or --random-weights SEED; --emit ir writes the "
                              "structure-only IR (for tidlc perf)")
    partition = None
    if options.target.emit in ("bin", "qir", "ir") and callable(getattr(backend, "emit_partitioned", None)):
        # a backend that can leave ops to the host (docs/partition.md); others compile the whole graph
        pm, partition = optimize_and_plan(graph, options, plugins, backend)
    else:
        pm = optimize(graph, options, plugins)
    if partition is not None and not partition.is_whole:
        return _compile_partitioned(path, graph, pm, partition, backend, options)
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
        remove_stale(options.target.outdir, [MANIFEST])  # a partitioned compile's manifest would shadow net.bin
    return result


MANIFEST = "model.tdp"


def _compile_partitioned(path: str, graph: Graph, pm: PassManager, partition, backend,
                         options: CompileOptions) -> CompileResult:
    """A model split into accelerated subgraphs and host ops (docs/partition.md): ``--emit bin``
    hands the float graph and the plan to the backend (``emit_partitioned``); ``--emit ir`` writes
    the float graph and reports the plan; ``--emit qir`` has no single quantized graph to write."""
    if options.target.post_process:
        graph.attrs["post_process"] = options.target.post_process
    result = CompileResult(graph, pm, notes=[partition.summary()])
    emit = options.target.emit
    if emit == "qir":
        raise TidlcError("--emit qir writes one quantized graph, but this model is partitioned "
                         f"({len(partition.regions)} accelerated subgraph(s), {len(partition.host_ops)} host op(s))",
                         path, hint="use --emit bin (one net.bin per subgraph + model.tdp), or --emit ir",
                         code="option")
    if emit == "ir":
        graph.attrs["partition"] = partition.summary()
        result.outputs = write_ir(graph, options.target.outdir)
        return result
    try:
        result.outputs = list(backend.emit_partitioned(graph, partition, options.target.outdir, options))
    except TidlcError as exc:
        if exc.loc is None and getattr(exc, "about_model", False):
            exc.loc = path
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
