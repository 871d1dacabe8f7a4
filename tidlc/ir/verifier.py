"""Structural and type checks of a graph (run after every pass with --verify-each)."""
from __future__ import annotations

from tidlc.diagnostics import TidlcError
from tidlc.ir.core import Graph
from tidlc.ir.opdef import get_opdef


def verify(graph: Graph, check_types: bool = True) -> None:
    """Raise TidlcError listing every problem found."""
    problems: list[str] = []
    defined: set[int] = set()
    seen_ops: set[int] = set()
    for op in graph.ops:
        where = str(op.where())
        if id(op) in seen_ops:
            problems.append(f"{where}: op appears twice in the graph")
        seen_ops.add(id(op))
        try:
            opdef = get_opdef(op.kind)
        except KeyError:
            problems.append(f"{where}: unknown op '{op.kind}'")
            continue
        for i, v in enumerate(op.operands):
            if id(v) not in defined:
                problems.append(f"{where}: operand {i} is not defined before use (dangling or out of order)")
        n = len(op.operands)
        if n < opdef.min_operands or n > opdef.max_operands:
            problems.append(f"{where}: {op.kind} has {n} operands")
        if len(op.results) != opdef.result_count(op.attrs):
            problems.append(f"{where}: {op.kind} has {len(op.results)} results")
        for i, r in enumerate(op.results):
            if r.producer is not op or r.index != i:
                problems.append(f"{where}: result {i} does not point back to its op")
            defined.add(id(r))
        if op.kind == "const" and op.data is None:
            problems.append(f"{where}: const without data")
        if check_types:
            try:
                opdef.normalize_attrs(op.attrs)
                inferred = opdef.infer(op, [v.type for v in op.operands])
            except (ValueError, TypeError, IndexError, KeyError) as exc:
                problems.append(f"{where}: {exc}")
                continue
            for i, (r, t) in enumerate(zip(op.results, inferred)):
                if t.shape is not None and r.type.shape is not None and t.shape != r.type.shape:
                    problems.append(f"{where}: result {i} has type {r.type} but infers {t}")
                elif t.dtype != r.type.dtype and r.type.quant is None:
                    problems.append(f"{where}: result {i} has element type {r.type.dtype}, infers {t.dtype}")
                if t.layout and r.type.layout and t.layout != r.type.layout:
                    problems.append(f"{where}: result {i} has layout {r.type.layout}, infers {t.layout}")
    for i, v in enumerate(graph.outputs):
        if id(v) not in defined:
            problems.append(f"output {i}: value is not defined in the graph")
    if graph.output_names and len(graph.output_names) != len(graph.outputs):
        problems.append("output names and outputs differ in number")
    if not graph.outputs:
        problems.append("graph has no outputs")
    if problems:
        raise TidlcError(f"IR verification failed ({len(problems)} problem(s))", graph.name, problems=problems)
