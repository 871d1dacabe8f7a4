"""Cleanup passes: shape inference, dead-code elimination, identity/dropout removal.

* ``shape-inference`` re-derives every result type from the graph inputs.
* ``dce`` removes ops none of whose results reach a graph output.
* ``remove-identity`` forwards the input of ``identity``, ``dropout`` and
  no-op ``cast``/``reshape`` ops to their readers.
"""
from __future__ import annotations

from typing import ClassVar

import attrs

from tidlc.hookspecs import hookimpl
from tidlc.passes.base import Pass
from tidlc.passes.rewrite import apply_rules
from tidlc.shapes import reinfer


@attrs.frozen
class ShapeInference(Pass):
    name: ClassVar[str] = "shape-inference"
    opt_level: ClassVar[int] = 0
    summary: ClassVar[str] = "re-infer all types from the inputs"

    def run(self, ctx, graph) -> bool:
        return reinfer(graph)


def live_ops(graph) -> set[int]:
    live: set[int] = set()
    stack = [v.producer for v in graph.outputs if v.producer is not None]
    while stack:
        op = stack.pop()
        if id(op) in live:
            continue
        live.add(id(op))
        stack.extend(v.producer for v in op.operands if v.producer is not None)
    return live


@attrs.frozen
class DeadCodeElimination(Pass):
    name: ClassVar[str] = "dce"
    opt_level: ClassVar[int] = 1
    summary: ClassVar[str] = "remove ops that do not reach an output (inputs are kept)"

    def run(self, ctx, graph) -> bool:
        live = live_ops(graph)
        dead = [op for op in graph.ops if id(op) not in live and op.kind != "input"]
        graph.remove_ops(dead)
        return bool(dead)


def _forward(rw, op) -> bool:
    src = op.operands[0]
    out = op.results[0]
    if out.type.shape != src.type.shape or out.type.dtype != src.type.dtype:
        return False
    if rw.is_output(out) and (rw.is_output(src) or src.producer.kind == "input"):
        return False  # keep a distinct output value
    rw.replace(out, src)
    rw.erase(op)
    return True


def _noop_cast(rw, op) -> bool:
    return op.attrs["dtype"] == op.operands[0].type.dtype and _forward(rw, op)


def _noop_reshape(rw, op) -> bool:
    return (op.results[0].type.is_static and op.results[0].type.shape == op.operands[0].type.shape
            and _forward(rw, op))


IDENTITY_RULES = [("identity", _forward), ("dropout", _forward), ("cast", _noop_cast),
                  ("reshape", _noop_reshape), ("flatten", _noop_reshape)]


@attrs.frozen
class RemoveIdentity(Pass):
    name: ClassVar[str] = "remove-identity"
    opt_level: ClassVar[int] = 1
    summary: ClassVar[str] = "drop identity, dropout and no-op cast/reshape"

    def run(self, ctx, graph) -> bool:
        return apply_rules(graph, IDENTITY_RULES)


@hookimpl
def tidlc_passes():
    return [ShapeInference, DeadCodeElimination, RemoveIdentity]
