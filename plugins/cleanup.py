"""Cleanup passes: shape inference, dead-code elimination, identity/dropout removal.

* ``shape-inference`` re-derives every result type from the graph inputs.
* ``dce`` removes ops none of whose results reach a graph output.
* ``remove-identity`` forwards the input of ``identity``, ``dropout`` and
  no-op ``cast``/``reshape`` ops to their readers.
"""
from __future__ import annotations

from tidlc.hookspecs import hookimpl
from tidlc.passes.rewrite import graph_pass, rule_pass
from tidlc.shapes import reinfer

ShapeInference = graph_pass("shape-inference", reinfer, opt_level=0, order=0,
                            summary="re-infer all types from the inputs")
# after the cleanups, and from -O2 again after the fusions
DeadCodeElimination = graph_pass("dce", lambda graph: bool(graph.prune()), opt_level=1, order=30, also_at=((2, 90),),
                                 summary="remove ops that do not reach an output (inputs are kept)")


def _forward(rw, op) -> bool:
    src = op.operands[0]
    out = op.results[0]
    if out.type.shape != src.type.shape or out.type.dtype != src.type.dtype:
        return False
    if rw.is_output(out) and (rw.is_output(src) or src.producer.kind == "input"):
        return False  # keep a distinct output value
    rw.replace_op(op, src)
    return True


def _noop_cast(rw, op) -> bool:
    return op.attrs["dtype"] == op.operands[0].type.dtype and _forward(rw, op)


def _noop_reshape(rw, op) -> bool:
    return (op.results[0].type.is_static and op.results[0].type.shape == op.operands[0].type.shape
            and _forward(rw, op))


IDENTITY_RULES = [("identity", _forward), ("dropout", _forward), ("cast", _noop_cast),
                  ("reshape", _noop_reshape), ("flatten", _noop_reshape)]

RemoveIdentity = rule_pass("remove-identity", IDENTITY_RULES, opt_level=1, order=10,
                           summary="drop identity, dropout and no-op cast/reshape")


@hookimpl
def tidlc_passes():
    return [ShapeInference, DeadCodeElimination, RemoveIdentity]
