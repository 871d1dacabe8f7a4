"""Build graphs op by op with types inferred as you go (used by every frontend)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tidlc import limits
from tidlc.diagnostics import Loc, TidlcError
from tidlc.ir.core import Graph, Op, Value
from tidlc.ir.opdef import get_opdef
from tidlc.ir.types import TensorType, dtype_of, numpy_dtype


def to_dtype(arr: np.ndarray, dtype) -> np.ndarray:
    """``arr.astype(dtype)`` that keeps a splat (zero-stride) array a zero-stride view."""
    if arr.dtype == dtype:
        return arr
    if arr.size > 1 and all(s == 0 for s in arr.strides):
        return np.broadcast_to(arr.reshape(-1)[:1].astype(dtype).reshape(()), arr.shape)
    return arr.astype(dtype)


def infer_types(op: Op, where: Loc | None = None) -> list[TensorType]:
    """Run the op's type inference; errors become TidlcError at the op's location."""
    opdef = op.opdef
    try:
        types = list(opdef.infer(op, [v.type for v in op.operands]))
    except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError) as exc:
        message = str(exc)
        if not message.startswith(op.kind):  # most rules already name their op
            message = f"{op.kind}: {message}"
        raise TidlcError(message, where or op.where()) from None
    return types


def check_result_sizes(op: Op, types: Sequence[TensorType]) -> None:
    """Inferred result shapes within the limits: an attribute can make any size (a pad of
    1e30 in an IR text), which must stop at the op that makes it, before anything downstream
    computes with it or allocates it."""
    for t in types:
        if t.shape is not None:
            limits.check_shape(t.shape, numpy_dtype(t.dtype).itemsize, f"{op.kind} result", op.where())


class Builder:
    """Appends ops to a graph.

    ``b.op("conv2d", [x, w], strides=(2, 2), name="conv1")`` validates the
    attributes against the op's declaration, infers the result types and
    returns the result value (a list when the op has several).
    """

    def __init__(self, graph: Graph | None = None, file: str = ""):
        self.graph = graph if graph is not None else Graph()
        self.file = file

    def input(self, name: str, type_: TensorType, loc: Loc | None = None) -> Value:
        op = Op("input", [], [], {"name": name}, name, loc)
        op.results = [Value(type_, op, 0, name)]
        self.graph.ops.append(op)
        return op.results[0]

    def const(self, data: Any, name: str = "", loc: Loc | None = None,
              layout: str | None = None) -> Value:
        arr = np.asarray(data)
        if arr.dtype == np.float64:  # numpy's default float; the IR computes in f32
            arr = to_dtype(arr, np.float32)
        op = Op("const", [], [], {}, name, loc, data=arr)
        op.results = [Value(TensorType(arr.shape, dtype_of(arr), layout), op, 0, name)]
        self.graph.ops.append(op)
        return op.results[0]

    def make(self, kind: str, operands: Sequence[Value], attrs: dict | None = None,
             name: str = "", loc: Loc | None = None) -> Op:
        """Create (but do not insert) a typed op."""
        opdef = get_opdef(kind)
        where = loc if loc is not None else Loc(name, self.file)
        n = len(operands)
        if n < opdef.min_operands or n > opdef.max_operands:
            raise TidlcError(f"{kind} takes {opdef.arity} operand(s), got {n}", where)
        try:
            norm = opdef.normalize_attrs({k: v for k, v in (attrs or {}).items()})
        except ValueError as exc:
            raise TidlcError(str(exc), where) from None
        op = Op(kind, list(operands), [], norm, name, loc)
        count = opdef.result_count(norm)
        op.results = [Value(TensorType(None), op, i) for i in range(count)]
        for v, t in zip(op.results, infer_types(op, where)):
            v.type = t
        return op

    def op(self, kind: str, operands: Sequence[Value], name: str = "", loc: Loc | None = None,
           **attrs: Any):
        op = self.make(kind, operands, attrs, name, loc)
        self.graph.ops.append(op)
        return op.results[0] if len(op.results) == 1 else list(op.results)

    def output(self, value: Value, name: str = "") -> None:
        self.graph.outputs.append(value)
        self.graph.output_names.append(name or value.name or f"output{len(self.graph.outputs) - 1}")
        if name and not value.name:
            value.name = name
