"""Graph edits for passes: replace an op, change its attributes (validated), keep a use map.

The edits a pass makes come down to a few moves, each spelt once here:

* ``rw.replace_op(old, new)``: ``old`` leaves the graph and its readers (and
  the graph outputs) read ``new`` instead: a new op, placed where ``old``
  was, whose results stand for ``old``'s position by position; or the
  existing values that stand for them (``rw.replace_op(identity, x)``);
* ``update_attrs(op, act="relu")`` (also ``rw.update_attrs``): new attribute
  values, normalised and checked against the op's :class:`~tidlc.ir.opdef.OpDef`
  like the builder's, then against its operands by its type inference; a
  bad value is a :class:`~tidlc.diagnostics.TidlcError` at the op that
  names the op and the attribute, instead of an IR the verifier rejects
  passes later;
* ``graph.live_ops()`` / ``graph.prune()`` (on :class:`~tidlc.ir.core.Graph`):
  what the outputs depend on, and dropping the rest.

A :class:`Rewriter` buffers insertions and erasures until :meth:`Rewriter.commit`
and keeps a use map current, so rules stay O(1) per look-up while they edit.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tidlc.diagnostics import TidlcError
from tidlc.ir.builder import Builder, infer_types
from tidlc.ir.core import Graph, Op, Value


def update_attrs(op: Op, **changes: Any) -> None:
    """Set attributes of ``op``: every value normalised as the builder does (``act_params=[0, 6]``
    is stored as ``(0.0, 6.0)``), then the op's type inference checks them against its operands
    (``act`` and ``act_params`` agree, ...). Result types are left as they are: a change that
    alters them needs a new op (:meth:`Rewriter.replace_op`) or ``shape-inference``.

    Raises TidlcError at the op (``conv2d 'conv1': attribute 'act': 'gelu' is not one of ...``)
    and leaves the op unchanged."""
    try:
        normalized = op.opdef.normalize_attrs({**op.attrs, **changes})
    except ValueError as exc:
        raise _attr_error(op, str(exc)) from None
    old, op.attrs = op.attrs, normalized
    try:
        infer_types(op)  # its error names the op and what does not fit, at the op
    except TidlcError:
        op.attrs = old
        raise


def _attr_error(op: Op, problem: str) -> TidlcError:
    """``KIND 'NAME': problem`` at the op (the op kind said once, the name when it has one)."""
    problem = problem[len(op.kind) + 2:] if problem.startswith(f"{op.kind}: ") else problem
    label = f"{op.kind} '{op.name}'" if op.name else op.kind
    return TidlcError(f"{label}: {problem}", op.where(), code="model")


class Rewriter:
    """Graph edits with a maintained use map, so rules stay O(1) per look-up.

    Erasures and insertions are buffered (the op list is not touched) until
    :meth:`commit`; operand and output redirections happen at once."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.uses = graph.users()
        self.outputs = {id(v) for v in graph.outputs}
        self.dead: set[int] = set()
        self.builder = Builder(graph)
        # insertions are buffered and placed by commit(): list.index per insert is O(n)
        self.before: dict[int, list[Op]] = {}
        self.front: list[Op] = []

    update_attrs = staticmethod(update_attrs)

    # --- queries -----------------------------------------------------------
    def users(self, v: Value) -> list[tuple[Op, int]]:
        return [(op, i) for op, i in self.uses.get(v, ()) if id(op) not in self.dead]

    def single_user(self, v: Value) -> Op | None:
        """The only reader of ``v`` if there is exactly one and ``v`` is not a graph output."""
        users = self.users(v)
        if len(users) != 1 or id(v) in self.outputs:
            return None
        return users[0][0]

    def is_output(self, v: Value) -> bool:
        return id(v) in self.outputs

    def unused(self, v: Value) -> bool:
        """Nothing reads ``v`` any more (no live op, no graph output)."""
        return not self.users(v) and not self.is_output(v)

    # --- edits -------------------------------------------------------------
    def replace(self, old: Value, new: Value) -> None:
        """Every reader of ``old`` (ops and graph outputs) reads ``new``; an output keeps its name."""
        for op, i in self.users(old):
            op.operands[i] = new
            self.uses.setdefault(new, []).append((op, i))
        self.uses.pop(old, None)
        if id(old) in self.outputs:
            self.graph.outputs = [new if v is old else v for v in self.graph.outputs]
            self.outputs.discard(id(old))
            self.outputs.add(id(new))
            if not new.name:
                new.name = old.name

    def replace_op(self, old: Op, new: Op | Value | Sequence[Value]) -> None:
        """``old`` leaves the graph; what read its results reads ``new``'s.

        ``new`` is an op not yet in the graph (placed right before ``old``, after anything
        already inserted there) or the values standing for ``old``'s results, one per result (a
        single Value for a single result). Graph outputs follow and keep their names."""
        if isinstance(new, Op):
            self.insert_before(old, new)
            values = list(new.results)
        else:
            values = [new] if isinstance(new, Value) else list(new)
        if len(values) != len(old.results):
            raise ValueError(f"replace_op: {old.kind} has {len(old.results)} result(s), "
                             f"{len(values)} replacement(s) given")
        for result, value in zip(old.results, values):
            self.replace(result, value)
        self.erase(old)

    def set_operands(self, op: Op, operands: Sequence[Value]) -> None:
        """Give ``op`` new operands (the use map follows)."""
        for i, v in enumerate(op.operands):
            entries = self.uses.get(v, [])
            entries[:] = [(user, k) for user, k in entries if not (user is op and k == i)]
        op.operands = list(operands)
        for i, v in enumerate(op.operands):
            self.uses.setdefault(v, []).append((op, i))

    def erase(self, op: Op) -> None:
        self.dead.add(id(op))

    def insert_before(self, anchor: Op, op: Op) -> None:
        self.before.setdefault(id(anchor), []).append(op)
        for i, v in enumerate(op.operands):
            self.uses.setdefault(v, []).append((op, i))

    def const(self, data, name: str = "", anchor: Op | None = None) -> Value:
        """A new const op placed before ``anchor`` (or at the front)."""
        value = Builder(Graph()).const(data, name)
        op = value.producer
        if anchor is None:
            self.front.append(op)
        else:
            self.before.setdefault(id(anchor), []).append(op)
        return value

    def make(self, kind: str, operands, attrs=None, name: str = "", loc=None) -> Op:
        """A validated, typed op (not inserted: pass it to ``replace_op`` or ``insert_before``)."""
        return self.builder.make(kind, operands, attrs, name, loc)

    def commit(self) -> None:
        """Place buffered insertions (each before its anchor) and drop erased ops."""
        if not (self.dead or self.before or self.front):
            return
        ops: list[Op] = []

        def place(op: Op) -> None:
            for new in self.before.pop(id(op), ()):
                place(new)
            if id(op) not in self.dead:
                ops.append(op)

        for op in self.front:
            place(op)
        for op in self.graph.ops:
            place(op)
        self.graph.ops = ops
        self.front = []
        self.dead.clear()


__all__ = ["Rewriter", "update_attrs"]
