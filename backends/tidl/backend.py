"""The TIDL backend (``--target tidl``): net.bin + io.bin, the fixed-point executor, the perf model.

Importing this module is cheap; every method imports what it uses.
"""
from __future__ import annotations

import os

from tidlc.backend import Verdict


class TidlExecutable:
    """A compiled TIDL model (net.bin + io.bin, or a quantized graph) on the fixed-point executor."""

    def __init__(self, graph, model=None, kernels: str = "numpy", threads: int | None = None):
        self.graph = graph
        self.model = model  # the binfmt CompiledModel when loaded from net.bin, else None
        self.kernels = kernels
        self.threads = threads
        self._executor = None

    @property
    def executor(self):
        if self._executor is None:
            from tidlc.backends.tidl.fixed import FixedExecutor
            self._executor = FixedExecutor(self.graph, kernels=self.kernels, threads=self.threads)
        return self._executor

    def run(self, feeds: dict, **kw) -> dict:
        return self.executor.run(feeds, **kw)


# ops with no TIDL layer whose usual replacement is known (the hint of their float verdict)
_FLOAT_HINTS = {
    "max_pool_index": "TIDL pooling has no indices (SegNet/ENet max-unpooling decoders): use a plain max pool "
                      "and upsample with Resize (nearest or bilinear) instead of max_unpool, then fine-tune",
    "max_unpool": "TIDL has no unpooling: upsample with Resize (nearest or bilinear), or a stride-2 Deconv2D "
                  "(group 1), instead, then fine-tune",
    "lrn": "TIDL has no LRN layer (AlexNet, GoogLeNet): remove it and fine-tune (it adds little accuracy), or "
           "expect a float layer",
    "reduce": "TIDL's Reduce layer takes a max or min only: at -O2 a mean (max) over H and W becomes a "
              "global pool and a sum or mean over the channels (also of a product with a constant per channel, "
              "a DFL head) a 1x1 conv; write other reductions that way, or expect a float layer",
    # MediaPipe's attention crop (tidlc/ir/ops/mediapipe.py): small float work, no TIDL layer
    **{kind: f"MediaPipe's attention crop geometry ({what}): little float work per frame, no TIDL layer; "
             f"nothing to change, or --deny-op-type {kind} to run it on the host CPU"
       for kind, what in (("landmarks_to_matrix", "a 4x4 matrix from the mesh points"),
                          ("warp_bilinear", "a 16x16 bilinear crop of a feature map"),
                          ("transform_landmarks", "the refined points mapped back"))},
}


def _float_verdict(op) -> Verdict:
    return Verdict("penalty", f"no TIDL layer for '{op.kind}': it runs in float between data_convert ops",
                   hint=_FLOAT_HINTS.get(op.kind, "replace it with a supported op, or expect a float (slow) layer"))


class TidlBackend:
    """TI's TIDL on TDA4 (C7x + MMA), as tidlc models it."""

    name = "tidl"

    def devices(self) -> list[str]:
        from tidlc.backends.tidl.perf.device import available_devices
        return sorted(available_devices())

    def available_devices(self, plugins=None) -> dict:
        """Device name -> source, plugin devices included (``tidlc_devices``)."""
        from tidlc.backends.tidl.perf.device import available_devices
        return available_devices(plugins)

    def supports(self, op, device=None) -> Verdict:
        """TIDL's documented layer constraints first (``constraints.check``: kernel/stride pairs,
        resize factors, ranks...), then what runs today: the perf model's TIDL layer mapping and
        the executor's integer kernels. An accelerated op gets its notes (MMA padding waste...).
        ``device``: a device name, TOML path or Device (default ``tda4vm``)."""
        from tidlc.backends.tidl import constraints
        verdict = constraints.check(op, device)
        if verdict is not None and verdict.level != "accelerated":
            return verdict
        return constraints.annotate(self._layer_verdict(op), op, device)

    def _layer_verdict(self, op) -> Verdict:
        """The TIDL layer an op becomes (perf model tables, executor kernels), constraints aside."""
        from tidlc.backends.tidl.fixed.spec_kernels import selects_codes
        from tidlc.backends.tidl.perf import layers
        from tidlc.backends.tidl.quantize.ptq import float_pad
        if float_pad(op):
            return Verdict("penalty", f"{op.attrs['mode']} padding: TIDL's Pad layer pads with a constant; it "
                                      "runs in float between data_convert ops",
                           hint="compile at -O2 (the default: fuse-patterns makes it a gather of rows), or pad "
                                "with zeros (the conv's own padding: monodepth2's ReflectionPad2d + Conv2d(3x3) "
                                "-> Conv2d(3x3, padding=1)) and fine-tune")
        if op.kind in _FLOAT_HINTS and not selects_codes(op):  # no TIDL layer (tidl-facts' layer enum), and
            return _float_verdict(op)  # no integer kernel here
        for table in (layers._MMA, layers._VECTOR_OPS, layers._VIEWS, layers._FREE):
            if op.kind in table:
                return Verdict("accelerated", f"TIDL layer {_layer_name(table[op.kind])}")
        if op.kind in layers._ON_INPUT:
            return Verdict("accelerated", "TIDL reduction layer")
        try:
            from tidlc.backends.tidl.fixed.executor import has_integer_kernel
            if has_integer_kernel(op):
                return Verdict("accelerated", "integer kernel in the fixed-point executor")
        except Exception:  # noqa: BLE001, S110 - an op the executor cannot even inspect: not supported
            pass
        return _float_verdict(op)

    def precision_sources(self, op) -> list[str]:
        """The layers before ``op`` whose ``--16bit-layers`` make its inputs 16-bit, found through the
        layers that cannot change precision (a concat, slice or max pool takes its inputs'): see
        ``quantize.ptq.precision_sources``."""
        from tidlc.backends.tidl.quantize.ptq import precision_sources
        return precision_sources(op)

    def layers_for_16bit(self, op) -> list[str]:
        """What ``--16bit-layers`` must name to compute ``op`` in 16 bits: ``op`` itself, or for a
        layer that takes its inputs' precision (softmax, concat, max pool) the layers that set it."""
        from tidlc.backends.tidl.quantize.ptq import layers_for_16bit
        return layers_for_16bit(op)

    def prepare_pipeline(self, level: int, passes: list[str]) -> list[str]:
        """TIDL's own pass, ``quantize`` (``tidlc.backends.tidl.quantize``), ends every ``-O``
        pipeline; the compile driver drops it when the output is float (``--emit ir``)."""
        return [*(p for p in passes if p != "quantize"), "quantize"]

    def quantize(self, graph, options):
        """TIDL's post-training quantization of a float graph (``Quantized``: the fixed-point
        graph, its float reference and the map between them, for `tidlc compare`). A float graph
        from :func:`tidlc.compiler.float_graph` at -O3 gets the checks ``tidlc compile`` runs
        (equalize, weights), so `compare`, `eval` and `tune` measure what compile writes."""
        from tidlc.backends.tidl.quantize.api import quantize_checked

        from tidlc.compiler import float_stash
        return quantize_checked(graph, options, float_stash(graph).get("equalize"))[0]

    def emit(self, graph, outdir: str, options) -> list[str]:
        from tidlc.backends.tidl.binfmt import write_bin
        from tidlc.backends.tidl.fixed import graph_is_quantized

        from tidlc.diagnostics import TidlcError
        if not graph_is_quantized(graph):
            exc = TidlcError("the compiled graph is not quantized, so net.bin cannot be written",
                             hint="an explicit -p pipeline must end with quantize ('...,quantize'); "
                                  "--emit ir writes the float IR")
            exc.about_model = True  # compile_model puts the model file as the location
            raise exc
        target = options.target
        if options.pipeline.opt_level >= 3:  # -O3: numBatches and weight persistence from the perf model
            import attrs
            from tidlc.backends.tidl.perf.hints import choose_batches, choose_persistence
            from tidlc.backends.tidl.perf.model import PerfOptions, prepare
            popts = PerfOptions.from_compile_options(options, graph)
            prep = prepare(graph, target.device, popts)  # one for both what-ifs
            if target.batches is None:
                batches, _ = choose_batches(graph, target.device, popts, prep)
                if batches > 1:
                    options = options.replace(batches=batches)
                    popts = attrs.evolve(popts, batches=batches)
            if target.persist_weights is None:
                persist, _ = choose_persistence(graph, target.device, popts, prep)
                if persist:
                    options = options.replace(persist_weights=True)
        return write_bin(graph, outdir, options, net_name=target.net_name, io_name=target.io_name,
                         device=target.device)

    def emit_partitioned(self, graph, partition, outdir: str, options) -> list[str]:
        """A model split into subgraphs and host ops (``tidlc.partition``): OUTDIR/subgraph_N/net.bin
        + io.bin per subgraph (each quantized on its own), the float graph (model.tir + model.weights)
        and the manifest model.tdp (docs/partition.md)."""
        from tidlc.backends.tidl.partitioned import emit_partitioned
        return emit_partitioned(graph, partition, outdir, options)

    def is_partitioned(self, location) -> bool:
        """Whether ``location`` is a partitioned compiled model (a folder with model.tdp, or the file)."""
        from tidlc.backends.tidl.partitioned import is_partitioned
        return is_partitioned(location)

    def is_executable_graph(self, graph) -> bool:
        """Whether a graph is quantized for this backend (runs on the fixed-point executor)."""
        from tidlc.backends.tidl.fixed import graph_is_quantized
        return graph_is_quantized(graph)

    def recognizes(self, location: str) -> bool:
        from tidlc.backends.tidl.binfmt import find_net
        if self.is_partitioned(location):
            return True
        return isinstance(location, str) and os.path.exists(location) and find_net(location) is not None

    def find_artifact(self, location: str) -> str | None:
        """The net file at ``location`` (a folder, a net file), or None."""
        from tidlc.backends.tidl.binfmt import find_net
        return find_net(location)

    def is_artifact_file(self, path: str) -> bool:
        """Whether ``path`` is a file that starts with the net magic."""
        from tidlc.backends.tidl.binfmt import NET_MAGIC, file_magic
        return file_magic(path) == NET_MAGIC

    def read(self, net: str, io: str | None = None):
        """The binfmt CompiledModel (graph, io, settings, device) of a net file."""
        from tidlc.backends.tidl.binfmt import read_compiled
        return read_compiled(net, io)

    def load(self, location, kernels: str = "numpy", threads: int | None = None):
        """A location (folder, net file), a (net, io) pair, a CompiledModel or a quantized Graph:
        a TidlExecutable; a folder with model.tdp (or the file): a PartitionedExecutable."""
        from tidlc.ir.core import Graph
        if self.is_partitioned(location):  # model.tdp: subgraphs + host ops
            from tidlc.backends.tidl.partitioned import PartitionedExecutable
            return PartitionedExecutable(location, kernels, threads)
        if isinstance(location, Graph):
            return TidlExecutable(location, None, kernels, threads)
        if isinstance(location, tuple):
            model = self.read(*location)
        elif isinstance(location, str):
            model = self.read(self.find_artifact(location) or location)
        else:
            model = location
        return TidlExecutable(model.graph, model, kernels, threads)

    def estimate(self, graph, device="tda4vm", options=None, plugins=None):
        """The perf model's report (docs/perf.md); ``device`` a name, a TOML path or a Device."""
        from tidlc.backends.tidl.perf import estimate, load_device
        if isinstance(device, (str, os.PathLike)):
            device = load_device(device, plugins)
        return estimate(graph, device, options)

    def partition_cost(self, graph, options=None):
        """``cost(ops)`` for ``tidlc.partition.plan_partition``: the ops' predicted C7x cycles (the
        perf model on the whole float graph, run on first use) plus one call's network setup; None
        (count ops) when the perf model cannot estimate the graph."""
        cache: dict = {}

        def cost(ops) -> float:
            if "cycles" not in cache:
                import warnings
                try:
                    bits = options.quant.bits if options is not None else 8
                    device = self.load_device(options.target.device if options is not None else "tda4vm")
                    with warnings.catch_warnings():  # a cost, not a report: the compile stays quiet
                        warnings.simplefilter("ignore")
                        rep = self.estimate(graph, device, self.perf_options(bits=16 if bits > 8 else 8))
                    cache["cycles"] = {layer.name: float(layer.cycles) for layer in rep.layers}
                    cache["setup"] = float(device.network_setup_cycles)
                except Exception:  # noqa: BLE001 - no estimate (dynamic shapes, a plugin device): count ops
                    cache["cycles"] = None
            cycles = cache["cycles"]
            if cycles is None:
                return float(len(ops))
            return cache["setup"] + sum(cycles.get(op.name, 0.0) for op in ops)
        return cost

    def estimate_partitioned(self, graph, partition, subgraph_graphs, device="tda4vm", options=None, plugins=None):
        """The partitioned perf report (``perf/partitioned.py``): C7x per subgraph, host ops on the
        A72, call overheads, boundary transfers."""
        from tidlc.backends.tidl.perf import estimate, load_device
        from tidlc.backends.tidl.perf.partitioned import estimate_partitioned
        if isinstance(device, (str, os.PathLike)):
            device = load_device(device, plugins)
        return estimate_partitioned(graph, partition, subgraph_graphs, device, options, estimate)

    def read_partitioned(self, location):
        """(float graph, Partition, quantized subgraph graphs, device name) of a model.tdp folder."""
        from tidlc.backends.tidl.partitioned import PartitionedExecutable

        from tidlc.partition import Partition, Region
        exe = PartitionedExecutable(location)
        m = exe.manifest
        regions = tuple(Region(s["index"], tuple(s["ops"]), tuple(s["inputs"]), tuple(s["outputs"]), float(s["cost"]))
                        for s in m["subgraphs"])
        partition = Partition(regions, tuple(m["host_ops"]), dict(m["boundary"]))
        return exe.graph, partition, [model.graph for _, model, _ in exe.subgraphs], m["device"]

    def perf_options(self, **kw):
        from tidlc.backends.tidl.perf import PerfOptions
        return PerfOptions(**kw)

    def load_device(self, spec, plugins=None):
        from tidlc.backends.tidl.perf import load_device
        return load_device(spec, plugins)

    def report_renderers(self):
        """(plot, render_rich, render_text) of the perf report."""
        from tidlc.backends.tidl.perf.report import plot, render_rich, render_text
        return plot, render_rich, render_text

    def fixed_value_check(self):
        """``is_fixed(type)`` of the fixed-point executor (for `tidlc compare`)."""
        from tidlc.backends.tidl.fixed.executor import is_fixed
        return is_fixed


def _layer_name(entry) -> str:
    return entry[0] if isinstance(entry, tuple) else str(entry)
