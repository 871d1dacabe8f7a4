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

    def supports(self, op) -> Verdict:
        """From what runs today: the perf model's TIDL layer mapping and the executor's integer kernels."""
        from tidlc.backends.tidl.perf import layers
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
        return Verdict("penalty", f"no TIDL layer for '{op.kind}': it runs in float between data_convert ops",
                       hint="replace it with a supported op, or expect a float (slow) layer")

    def prepare_pipeline(self, level: int, passes: list[str]) -> list[str]:
        """TIDL's own pass, ``quantize`` (``tidlc.backends.tidl.quantize``), ends every ``-O``
        pipeline; the compile driver drops it when the output is float (``--emit ir``)."""
        return [*(p for p in passes if p != "quantize"), "quantize"]

    def quantize(self, graph, options):
        """TIDL's post-training quantization of a float graph (``Quantized``: the fixed-point
        graph, its float reference and the map between them, for `tidlc compare`)."""
        from tidlc.backends.tidl.quantize.api import quantize_graph
        return quantize_graph(graph, options)

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
        return write_bin(graph, outdir, options, net_name=target.net_name, io_name=target.io_name,
                         device=target.device)

    def is_executable_graph(self, graph) -> bool:
        """Whether a graph is quantized for this backend (runs on the fixed-point executor)."""
        from tidlc.backends.tidl.fixed import graph_is_quantized
        return graph_is_quantized(graph)

    def recognizes(self, location: str) -> bool:
        from tidlc.backends.tidl.binfmt import find_net
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

    def load(self, location, kernels: str = "numpy", threads: int | None = None) -> TidlExecutable:
        """A location (folder, net file), a (net, io) pair, a CompiledModel or a quantized Graph."""
        from tidlc.ir.core import Graph
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
