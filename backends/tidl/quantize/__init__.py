"""The ``quantize`` pass: TIDL-style post-training quantization (docs/quantization.md).

The TIDL backend's ``prepare_pipeline`` puts it last in every ``-O`` pipeline when the compiled
artifact is fixed point (``tidlc compile`` emits ``bin`` by default; ``--emit ir`` keeps the
float IR). Its settings are the compile options' :class:`~tidlc.config.QuantOptions`
(``--bits``, ``--calib``, ...); the pass has one option per field of that group, so
``-p '...,quantize{bits=16,calib-method=mse}'`` overrides them for this run (an option
left out keeps the command line's value). Without a context (a pass run from tests or a
plain ``PassManager``) it does nothing; a graph that is already quantized, or has no
weights (structure only), is left as it is.
"""
from __future__ import annotations

from typing import ClassVar

import attrs

from tidlc.config import CompileOptions, QuantOptions
from tidlc.hookspecs import hookimpl
from tidlc.passes.base import Pass

# QuantOptions fields that are not pass options: whether to quantize at all, and where
# calibration data is asked for (an import config's detail)
NOT_PASS_OPTIONS = ("quantize", "calib_source")


@attrs.frozen
class QuantizeBase(Pass):
    name: ClassVar[str] = "quantize"
    opt_level: ClassVar[int | None] = None  # not in the -O lists: TidlBackend.prepare_pipeline adds it
    summary: ClassVar[str] = "post-training quantization to 8/16-bit fixed point (TIDL scheme)"

    def effective_options(self, options: CompileOptions) -> CompileOptions:
        """The compile options with this pass's own options (those given) over their quant group."""
        given = {f.name: getattr(self, f.name) for f in attrs.fields(type(self)) if getattr(self, f.name) is not None}
        return attrs.evolve(options, quant=attrs.evolve(options.quant, **given)) if given else options

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
        from .api import quantize_checked
        options = self.effective_options(ctx.options)
        undo = getattr(ctx, "stash", {}).pop("equalize", None)
        result, notes = quantize_checked(graph, options, undo, measure=True)
        for note in notes:
            ctx.note(note)
        q = result.graph
        graph.name, graph.ops, graph.outputs = q.name, q.ops, q.outputs
        graph.output_names, graph.attrs = q.output_names, q.attrs
        if result.mixed is not None:  # also in graph.attrs["quant.mixed_precision"] for `tidlc compile`
            ctx.note(result.mixed.summary())
        if result.float_islands:
            names = result.float_islands
            more = f", and {len(names) - 8} more (`tidlc check` lists them)" if len(names) > 8 else ""
            ctx.note(f"{len(names)} op(s) stay in float: {', '.join(names[:8])}{more}")
        return True


# one option per QuantOptions field (None: the compile options' value), so the two cannot drift
Quantize = attrs.make_class(
    "Quantize",
    {f.name: attrs.field(default=None, type=f.type) for f in attrs.fields(QuantOptions) if f.name not in NOT_PASS_OPTIONS},
    bases=(QuantizeBase,), frozen=True)
Quantize.__module__ = __name__
Quantize.__doc__ = QuantizeBase.summary


@hookimpl
def tidlc_passes():
    return [Quantize]
