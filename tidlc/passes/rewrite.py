"""Table-driven rewriting: rules are (op kind, function) rows, applied to a fixed point.

A rule function ``fn(rw, op) -> bool`` inspects ``op`` and, if it matches,
edits the graph through the :class:`Rewriter` and returns True. The kind
``"*"`` matches every op (tried after the rules for the op's own kind).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from tidlc.ir.builder import Builder
from tidlc.ir.core import Graph, Op, Value

Rule = tuple[str, Callable[["Rewriter", Op], bool]]


class Rewriter:
    """Graph edits with a maintained use map, so rules stay O(1) per look-up."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.uses = graph.users()
        self.outputs = {id(v) for v in graph.outputs}
        self.dead: set[int] = set()
        self.builder = Builder(graph)
        # insertions are buffered and placed by commit(): list.index per insert is O(n)
        self.before: dict[int, list[Op]] = {}
        self.front: list[Op] = []

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

    def replace(self, old: Value, new: Value) -> None:
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


def apply_rules(graph: Graph, rules: Iterable[Rule], max_iters: int = 8) -> bool:
    """Apply the rules over the graph until nothing matches (or ``max_iters`` sweeps)."""
    table: dict[str, list] = {}
    for kind, fn in rules:
        table.setdefault(kind, []).append(fn)
    changed = False
    for _ in range(max_iters):
        rw = Rewriter(graph)
        sweep = False
        for op in list(graph.ops):
            if id(op) in rw.dead:
                continue
            for fn in table.get(op.kind, []) + table.get("*", []):
                if fn(rw, op):
                    sweep = True
                    break
        rw.commit()
        if not sweep:
            break
        changed = True
    return changed
