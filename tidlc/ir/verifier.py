"""Structural and type checks of a graph (run after every pass with --verify-each).

Each problem is one line ``<where>: <what>``; all problems are collected and
raised together in one TidlcError.
"""
from __future__ import annotations

from tidlc.diagnostics import TidlcError
from tidlc.ir.core import Graph, Op
from tidlc.ir.opdef import get_opdef
from tidlc.ir.types import TensorType

# What a type-inference function may raise on a bad op (not a verifier crash).
_INFER_ERRORS = (ValueError, TypeError, IndexError, KeyError, ArithmeticError, AttributeError)


def _dims_compatible(a, b) -> bool:
    """Same rank and equal wherever both dimensions are known."""
    if a is None or b is None:
        return True
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def type_problems(t: TensorType) -> list[str]:
    """Problems of a type on its own: a layout needs rank 4, per-channel scales need an axis."""
    out = []
    if t.layout is not None and t.rank is not None and t.rank != 4:
        out.append(f"layout {t.layout} on a rank-{t.rank} tensor (layouts describe 4-D tensors)")
    q = t.quant
    if q is not None:
        if t.dtype[0] in "iu" and t.dtype != q.storage:  # the fixed-point kernels size buffers by it
            # (a float tensor may carry quantization as an annotation: pre-quantized imports)
            out.append(f"{q.bits}-bit {'signed' if q.signed else 'unsigned'} values stored in {t.dtype} "
                       f"(expected {q.storage})")
        if not q.qmin <= q.zero_point <= q.qmax:
            out.append(f"zero point {q.zero_point} outside [{q.qmin}, {q.qmax}]")
        if len(q.scale) > 1 or q.axis is not None:
            if q.axis is None:
                out.append(f"{len(q.scale)} scales but no quantization axis")
            elif t.rank is not None and not -t.rank <= q.axis < t.rank:
                out.append(f"quantization axis {q.axis} out of range for rank {t.rank}")
            elif t.rank is not None:
                channels = t.shape[q.axis]
                if channels is not None and len(q.scale) not in (1, channels):
                    out.append(f"{len(q.scale)} scales for {channels} channels on axis {q.axis}")
    return out


def _result_problems(op: Op, inferred: list[TensorType]) -> list[str]:
    out = []
    for i, (r, t) in enumerate(zip(op.results, inferred)):
        if not _dims_compatible(t.shape, r.type.shape):
            out.append(f"result {i} has type {r.type} but infers {t}")
        elif t.dtype != r.type.dtype and r.type.quant is None:
            out.append(f"result {i} has element type {r.type.dtype}, infers {t.dtype}")
        if t.layout and r.type.layout and t.layout != r.type.layout:
            out.append(f"result {i} has layout {r.type.layout}, infers {t.layout}")
    return out


def verify(graph: Graph, check_types: bool = True) -> None:
    """Raise TidlcError listing every problem found."""
    problems: list[str] = []
    position = {id(r): k for k, op in enumerate(graph.ops) for r in op.results}
    defined: set[int] = set()
    seen_ops: set[int] = set()
    for k, op in enumerate(graph.ops):
        where = str(op.where())

        def add(message: str, where: str = where) -> None:
            problems.append(f"{where}: {message}")

        if id(op) in seen_ops:
            add("op appears twice in the graph")
        seen_ops.add(id(op))
        try:
            opdef = get_opdef(op.kind)
        except KeyError:
            add(f"unknown op '{op.kind}'")
            defined.update(id(r) for r in op.results)  # one problem, not one per reader
            continue
        for i, v in enumerate(op.operands):
            if id(v) in defined:
                continue
            if position.get(id(v), -1) >= k:
                add(f"operand {i} is used before it is defined (ops out of order)")
            else:
                add(f"operand {i} is dangling: its producer is not in the graph")
        n = len(op.operands)
        arity_ok = opdef.min_operands <= n <= opdef.max_operands
        if not arity_ok:
            add(f"{op.kind} has {n} operands, expects {opdef.arity}")
        attrs_ok = True
        try:
            opdef.normalize_attrs(op.attrs)
        except ValueError as exc:
            add(str(exc))
            attrs_ok = False
        want: int | None = opdef.result_count(op.attrs) if attrs_ok else None
        if want is not None and len(op.results) != want:
            add(f"{op.kind} has {len(op.results)} results, expects {want}")
        for i, r in enumerate(op.results):
            if r.producer is not op or r.index != i:
                add(f"result {i} does not point back to its op")
            defined.add(id(r))
            for problem in type_problems(r.type):
                add(f"result {i}: {problem}")
        if op.kind == "const" and op.data is None:
            add("const without data")
            continue
        if check_types and attrs_ok and arity_ok:
            try:
                inferred = opdef.infer(op, [v.type for v in op.operands])
            except _INFER_ERRORS as exc:
                add(str(exc))
                continue
            for problem in _result_problems(op, inferred):
                add(problem)
    for i, v in enumerate(graph.outputs):
        if id(v) not in defined:
            problems.append(f"output {i}: value is not defined in the graph")
    if graph.output_names and len(graph.output_names) != len(graph.outputs):
        problems.append(f"{len(graph.outputs)} outputs but {len(graph.output_names)} output names")
    for what, names in (("input", graph.input_names()), ("output", graph.output_names)):
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"{what} name '{name}' is used more than once")
    if not graph.outputs:
        problems.append("graph has no outputs")
    if problems:
        raise TidlcError(f"IR verification failed ({len(problems)} problem(s))", graph.name, problems=problems)

