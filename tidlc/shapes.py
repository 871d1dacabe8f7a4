"""Input-shape overrides and whole-graph type re-inference."""
from __future__ import annotations

from typing import Mapping

from tidlc.diagnostics import TidlcError
from tidlc.ir.builder import infer_types
from tidlc.ir.core import Graph


def apply_input_shapes(graph: Graph, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Set the declared shape of named inputs (``--input-shape``), then re-infer every type."""
    names = graph.input_names()
    for name, shape in shapes.items():
        op = graph.find_input(name)
        if op is None:
            raise TidlcError(f"--input-shape names unknown input '{name}'", hint=f"the model's inputs are: {', '.join(names)}")
        old = op.results[0].type
        if old.shape is not None and len(old.shape) != len(shape):
            raise TidlcError(f"--input-shape {name}: rank {len(shape)} but the model declares "
                             f"{tuple('?' if d is None else d for d in old.shape)}",
                             hint="give one value per dimension")
        op.results[0].type = old.with_shape(shape)
    reinfer(graph)


def reinfer(graph: Graph) -> bool:
    """Recompute every op's result types from its operands; returns whether any changed."""
    changed = False
    for op in graph.ops:
        if op.kind == "input":
            continue
        for v, t in zip(op.results, infer_types(op)):
            # keep annotations the inference cannot know (quantization)
            if v.type.quant is not None and t.quant is None:
                t = t.with_quant(v.type.quant)
            if t.layout is None and v.type.layout is not None and t.shape == v.type.shape:
                t = t.with_layout(v.type.layout)
            if t != v.type:
                v.type = t
                changed = True
    return changed
