"""fold-constants: evaluate everything that does not depend on a graph input.

Rules, applied in one topological sweep (repeated up to ``max-iters`` times):

* an op whose operands are all constants is evaluated with its float
  reference implementation and replaced by ``const`` ops (this folds
  ``constant_of_shape``; its splat result stays a zero-stride view, so a
  weight filled with one value costs no memory);
* an ONNX ``host`` op (one tidlc does not lower) whose operands are all
  constants is evaluated with onnx's reference evaluator when it can be
  (not random draws or control flow; ``tidlc.hostrt.fold_host_op``);
* ``shape`` of a value with a static type becomes a constant, which lets
  ``Shape -> Gather -> Concat -> Reshape`` subgraphs collapse;
* ``reshape`` whose target operand became constant keeps only the data
  operand (the target moves into the ``shape`` attribute);
* types downstream are re-inferred as constants appear.
"""
from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np

from tidlc import limits
from tidlc.diagnostics import TidlcError
from tidlc.hookspecs import hookimpl
from tidlc.hostrt import fold_host_op, foldable_host_op
from tidlc.interp import evaluate_op
from tidlc.ir.builder import infer_types, to_dtype
from tidlc.ir.core import Graph, Op, Value
from tidlc.ir.types import TensorType, numpy_dtype
from tidlc.passes.base import Pass
from tidlc.passes.rewrite import Rewriter, until_unchanged

_NEVER = {"input", "const"}


def _const_op(data: np.ndarray, name: str, like: Value) -> Op:
    """A const op holding ``data`` in the element type of the value it replaces (splats stay views)."""
    data = to_dtype(np.asarray(data), numpy_dtype(like.type.dtype))
    t = like.type
    layout = t.layout if data.ndim == 4 else None
    op = Op("const", [], [], {}, name, like.producer.loc if like.producer else None, data=data)
    op.results = [Value(TensorType(data.shape, t.dtype, layout, t.quant), op, 0, like.name)]
    return op


def check_fold_size(op: Op) -> None:
    """Raise the limit error when a result of ``op`` would be over the tensor limits: checked on
    the inferred types *before* the reference implementation allocates (a 20-byte Expand or
    ConstantOfShape target may ask for terabytes). Unknown dims are left to the reference."""
    for res in op.results:
        shape = res.type.shape
        if shape is not None:
            known = [d for d in shape if d is not None]
            limits.check_shape(known, numpy_dtype(res.type.dtype).itemsize, f"folding {op.kind}", op.where())


def _sweep(graph: Graph) -> bool:
    rw = Rewriter(graph)
    changed = False
    # values whose type changed or that became constants: only their readers are re-inferred
    dirty: set[int] = set()
    for op in list(graph.ops):
        if op.kind in _NEVER:
            continue
        folded = None
        if op.kind == "shape" and op.operands[0].type.is_static:
            folded = [np.array(op.operands[0].type.shape, dtype=np.int64)]
        elif op.opdef.foldable and op.opdef.compute is not None and all(
                v.producer is not None and v.producer.kind == "const" for v in op.operands):
            check_fold_size(op)
            try:
                folded = evaluate_op(op, [v.producer.data for v in op.operands])
            except TidlcError:
                raise
            except Exception as exc:  # a bad constant subgraph is the model's fault
                raise TidlcError(f"cannot fold {op.kind}: {exc}", op.where()) from None
        elif op.kind == "host" and foldable_host_op(op) and all(
                v.producer is not None and v.producer.kind == "const" for v in op.operands):
            check_fold_size(op)
            folded = fold_host_op(op, [v.producer.data for v in op.operands])  # (None: it stays on the host)
        elif op.kind == "reshape" and len(op.operands) > 1 and op.operands[1].const_value() is not None:
            target = op.operands[1].const_value()
            if target.dtype.kind not in "iub":
                raise TidlcError(f"reshape: the target shape must be integers, got {target.dtype}", op.where())
            rw.set_operands(op, op.operands[:1])
            rw.update_attrs(op, shape=tuple(int(v) for v in target.reshape(-1).tolist()))
            changed = True
            dirty.add(id(op.operands[0]))
        if folded is not None:
            values = []
            for i, (res, data) in enumerate(zip(op.results, folded)):
                name = op.name if len(op.results) == 1 or not op.name else f"{op.name}:{i}"
                cop = _const_op(data, name or res.name, res)
                rw.insert_before(op, cop)
                values.append(cop.results[0])
                dirty.add(id(cop.results[0]))
            rw.replace_op(op, values)
            changed = True
            continue
        # keep types current so later shape ops see static shapes
        if any(id(v) in dirty for v in op.operands):
            for v, t in zip(op.results, infer_types(op)):
                if t.shape is not None and t != v.type and v.type.quant is None:
                    v.type = t if t.layout or not v.type.layout else t.with_layout(v.type.layout)
                    dirty.add(id(v))
    rw.commit()
    return changed


@attrs.frozen
class FoldConstants(Pass):
    name: ClassVar[str] = "fold-constants"
    opt_level: ClassVar[int] = 1
    order: ClassVar[int] = 20
    summary: ClassVar[str] = "evaluate constant subgraphs (incl. Shape-driven ones)"
    max_iters: int = 4

    def run(self, ctx, graph) -> bool:
        changed = until_unchanged(lambda: _sweep(graph), max(1, self.max_iters))
        if changed:
            graph.prune({"const"})
        return changed


@hookimpl
def tidlc_passes():
    return [FoldConstants]
