"""Cleanup passes: shape inference, dead-code elimination, identity/dropout removal.

* ``shape-inference`` re-derives every result type from the graph inputs.
* ``dce`` removes ops none of whose results reach a graph output.
* ``cse`` merges ops that compute the same thing (same kind, operands and
  attributes) into the first of them.
* ``remove-identity`` forwards the input of ``identity``, ``dropout`` and
  no-op ``cast``/``reshape``/``slice``/``pad`` ops to their readers, and makes a chain of
  reshapes (``flatten``, ``squeeze``, ``unsqueeze``) one reshape.
"""
from __future__ import annotations

import numpy as np

from tidlc.hookspecs import hookimpl
from tidlc.ir.rewrite import Rewriter
from tidlc.passes.rewrite import graph_pass, kept_ops, rule_pass
from tidlc.shapes import reinfer

ShapeInference = graph_pass("shape-inference", reinfer, opt_level=0, order=0,
                            summary="re-infer all types from the inputs")
# after the cleanups, and from -O2 again after the fusions
DeadCodeElimination = graph_pass("dce", lambda graph: bool(graph.prune()), opt_level=1, order=30, also_at=((2, 90),),
                                 summary="remove ops that do not reach an output (inputs are kept)")


def _forward(rw, op, src=None) -> bool:
    """``op``'s readers read ``src`` (its first operand by default), which has its type."""
    src = op.operands[0] if src is None else src
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


def _noop_slice(rw, op) -> bool:
    """A slice of whole axes (``x[:, :H, :W]`` after a window padding of 0: torchvision's Swin at
    224x224, 24 such slices) keeps every element in order."""
    steps = op.attrs.get("steps") or ()
    return all(s == 1 for s in steps) and _noop_reshape(rw, op)


def _noop_pad(rw, op) -> bool:
    return not any(op.attrs["pads"]) and _noop_reshape(rw, op)


_RESHAPES = ("reshape", "flatten", "squeeze", "unsqueeze")


def _reshape_of_reshape(rw, op) -> bool:
    """A reshape of a reshape (flatten, squeeze, unsqueeze) -> one reshape of the first one's input,
    which is no reshape at all when the shapes match: a frozen graph's Dense on tokens
    (``Tensordot``: reshape to 2-D, MatMul, reshape back) followed by the next one's reshape to 2-D."""
    if op.kind == "reshape" and len(op.operands) != 1:
        return False
    inner = op.operands[0].producer
    if inner is None or inner.kind not in _RESHAPES or len(inner.operands) != 1:
        return False
    src, out = inner.operands[0], op.results[0]
    if not (src.type.is_static and out.type.is_static) or src.type.dtype != out.type.dtype:
        return False
    if out.type.shape == src.type.shape:
        return _forward(rw, op, src)
    rw.replace_op(op, rw.make("reshape", [src], {"shape": list(out.type.shape)}, op.name, op.loc))
    return True


IDENTITY_RULES = [("identity", _forward), ("dropout", _forward), ("cast", _noop_cast),
                  ("reshape", _noop_reshape), ("flatten", _noop_reshape), ("slice", _noop_slice), ("pad", _noop_pad),
                  *[(kind, _reshape_of_reshape) for kind in _RESHAPES]]

RemoveIdentity = rule_pass("remove-identity", IDENTITY_RULES, opt_level=1, order=10, also_at=((2, 85),),
                           summary="drop identity, dropout and no-op cast/reshape; merge reshape chains")


def _frozen(value):
    """An attribute value as a hashable key (arrays by type, shape and bytes)."""
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return value


def common_subexpressions(graph) -> bool:
    """Each op that repeats an earlier one (same kind, the very same operands, equal attributes and
    result types) is replaced by it: a frozen NASNet reads each cell's input through two identical
    ReLUs, one per branch (TFLite's converter merges them). Graph inputs, constants and host ops
    (a random draw repeats its kind, not its value) are left alone, and so is an op whose result
    is a graph output or that a deny list keeps."""
    rw = Rewriter(graph)
    kinds, names = kept_ops(graph)
    seen: dict = {}
    changed = False
    for op in graph.ops:
        if op.kind in ("input", "const", "host") or op.kind in kinds or op.name in names or not op.results \
                or any(rw.is_output(r) for r in op.results):
            continue
        try:
            key = (op.kind, tuple(id(v) for v in op.operands), _frozen(dict(op.attrs)),
                   tuple(str(r.type) for r in op.results))
            first = seen.setdefault(key, op)
        except TypeError:  # an attribute that does not hash
            continue
        if first is not op:
            rw.replace_op(op, first.results if len(first.results) > 1 else first.results[0])
            changed = True
    rw.commit()
    return changed


CommonSubexpressions = graph_pass("cse", common_subexpressions, opt_level=1, order=25,
                                  summary="merge ops that compute the same value")


@hookimpl
def tidlc_passes():
    return [ShapeInference, DeadCodeElimination, RemoveIdentity, CommonSubexpressions]
