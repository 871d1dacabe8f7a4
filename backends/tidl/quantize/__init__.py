"""The ``quantize`` pass: TIDL-style post-training quantization (docs/quantization.md).

The TIDL backend's ``prepare_pipeline`` puts it last in every ``-O`` pipeline when the compiled artifact is fixed
point (``tidlc compile`` emits ``qir`` by default; ``--emit ir`` keeps the
float IR). Settings come from the compile options (``--bits``,
``--calib``, ...). Without a context (a pass run from tests or a plain
``PassManager``) it does nothing; a graph that is already quantized, or has
no weights (structure only), is left as it is.
"""
from __future__ import annotations

from typing import ClassVar

import attrs

from tidlc.hookspecs import hookimpl
from tidlc.passes.base import Pass


@attrs.frozen
class Quantize(Pass):
    name: ClassVar[str] = "quantize"
    opt_level: ClassVar[int | None] = None  # not in the -O lists: TidlBackend.prepare_pipeline adds it
    summary: ClassVar[str] = "post-training quantization to 8/16-bit fixed point (TIDL scheme)"

    def run(self, ctx, graph) -> bool:
        from tidlc.backends.tidl.fixed.executor import graph_is_quantized
        if ctx is None or ctx.options is None:
            return False
        if graph_is_quantized(graph):
            ctx.note("the graph is already quantized")
            return False
        if graph.attrs.get("missing_weights"):
            ctx.note("structure only (no weights): nothing to calibrate, the graph stays float")
            return False
        from .api import quantize_graph
        result = quantize_graph(graph, ctx.options)
        q = result.graph
        graph.name, graph.ops, graph.outputs = q.name, q.ops, q.outputs
        graph.output_names, graph.attrs = q.output_names, q.attrs
        if result.float_islands:
            ctx.note(f"{len(result.float_islands)} op(s) stay in float: {', '.join(result.float_islands[:8])}")
        return True


@hookimpl
def tidlc_passes():
    return [Quantize]
