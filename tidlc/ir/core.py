"""Values, operations and graphs.

Values are SSA: each is produced by exactly one op (``input`` and ``const`` are
ops too). Ops are mutable nodes compared by identity; their kind names an
:class:`~tidlc.ir.opdef.OpDef` that declares attributes, typing and numerics.
A graph keeps its ops in a topological order.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import numpy as np

from tidlc.diagnostics import Loc
from tidlc.ir import opdef as _opdef
from tidlc.ir.types import TensorType


@attrs.define(eq=False, slots=True, repr=False)
class Value:
    """An SSA value: a tensor of a known (possibly partially known) type."""

    type: TensorType
    producer: Op | None = None
    index: int = 0
    name: str = ""  # framework tensor name, kept for users (run outputs, errors)

    @property
    def shape(self):
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    def const_value(self) -> np.ndarray | None:
        """The array if this value is produced by a ``const`` op, else None."""
        op = self.producer
        return op.data if op is not None and op.kind == "const" else None

    def __repr__(self) -> str:
        label = self.name or (self.producer.kind if self.producer else "?")
        return f"<Value {label}: {self.type}>"


@attrs.define(eq=False, slots=True, repr=False)
class Op:
    """One operation. ``attrs`` holds normalised attribute values (see OpDef)."""

    kind: str
    operands: list[Value]
    results: list[Value]
    attrs: dict[str, Any]
    name: str = ""
    loc: Loc | None = None
    data: np.ndarray | None = None  # payload of ``const`` ops

    @property
    def result(self) -> Value:
        if len(self.results) != 1:
            raise ValueError(f"{self.kind} has {len(self.results)} results")
        return self.results[0]

    @property
    def opdef(self):
        return _opdef.OPS._defs.get(self.kind) or _opdef.get_opdef(self.kind)

    def attr(self, key: str) -> Any:
        return self.attrs[key]

    def where(self) -> Loc:
        """A location for diagnostics: the op's loc, or at least its name."""
        if self.loc is not None:
            return self.loc if self.loc.name or not self.name else attrs.evolve(self.loc, name=self.name)
        return Loc(name=self.name or self.kind)

    def __repr__(self) -> str:
        return f"<Op {self.kind} {self.name!r}>"


@attrs.define(eq=False, slots=True, repr=False)
class Graph:
    """A network: ops in topological order, named outputs and graph attributes."""

    name: str = "main"
    ops: list[Op] = attrs.Factory(list)
    outputs: list[Value] = attrs.Factory(list)
    output_names: list[str] = attrs.Factory(list)
    attrs: dict[str, Any] = attrs.Factory(dict)

    # --- queries ---------------------------------------------------------
    @property
    def inputs(self) -> list[Value]:
        return [op.results[0] for op in self.ops if op.kind == "input"]

    @property
    def input_ops(self) -> list[Op]:
        return [op for op in self.ops if op.kind == "input"]

    def input_names(self) -> list[str]:
        return [op.attrs["name"] for op in self.input_ops]

    def find_input(self, name: str) -> Op | None:
        for op in self.input_ops:
            if op.attrs["name"] == name:
                return op
        return None

    def compute_ops(self) -> Iterator[Op]:
        """Ops that compute something (not input/const)."""
        return (op for op in self.ops if op.kind not in ("input", "const"))

    def users(self) -> dict[Value, list[tuple[Op, int]]]:
        """Map each value to the (op, operand index) pairs that read it."""
        uses: dict[Value, list[tuple[Op, int]]] = {}
        for op in self.ops:
            for i, v in enumerate(op.operands):
                uses.setdefault(v, []).append((op, i))
        return uses

    def output_set(self) -> set[Value]:
        return set(self.outputs)

    def live_ops(self) -> set[Op]:
        """The ops some graph output depends on (the outputs' producers and, through their
        operands, everything those read)."""
        live: set[Op] = set()
        stack = [v.producer for v in self.outputs if v.producer is not None]
        while stack:
            op = stack.pop()
            if op in live:
                continue
            live.add(op)
            stack.extend(v.producer for v in op.operands if v.producer is not None)
        return live

    # --- edits -------------------------------------------------------------
    def replace_uses(self, old: Value, new: Value, uses: dict | None = None) -> None:
        """Make every reader of ``old`` (ops and graph outputs) read ``new``."""
        if uses is not None:
            for op, i in uses.get(old, ()):
                op.operands[i] = new
            uses.setdefault(new, []).extend(uses.pop(old, []))
        else:
            for op in self.ops:
                op.operands = [new if v is old else v for v in op.operands]
        self.outputs = [new if v is old else v for v in self.outputs]
        if old.name and not new.name:
            new.name = old.name

    def insert_before(self, anchor: Op, new_ops: Iterable[Op]) -> None:
        i = self.ops.index(anchor)
        self.ops[i:i] = list(new_ops)

    def remove_ops(self, dead: Iterable[Op]) -> None:
        dead_ids = {id(op) for op in dead}
        if dead_ids:
            self.ops = [op for op in self.ops if id(op) not in dead_ids]

    def prune(self, kinds: Iterable[str] | None = None) -> list[Op]:
        """Remove the ops no graph output depends on and return them (in graph order).

        Graph inputs always stay: they are the network's signature, read or not. With
        ``kinds``, only dead ops of those kinds go (``prune({"const"})`` drops the weights a
        rewrite orphaned and leaves any other dead op for ``dce``); a dead op of those kinds that
        a dead op left in place reads stays too (no operand is left dangling)."""
        live = self.live_ops()
        allowed = None if kinds is None else set(kinds)
        dead = [op for op in self.ops if op not in live and op.kind != "input"]
        if allowed is not None:
            read: set[int] = set()  # values read by the ops that stay, readers first (reverse graph order)
            for op in self.ops:
                if op in live:
                    read.update(id(v) for v in op.operands)
            gone = []
            for op in reversed(dead):
                if op.kind in allowed and not any(id(r) in read for r in op.results):
                    gone.append(op)
                else:
                    read.update(id(v) for v in op.operands)
            dead = gone[::-1]
        self.remove_ops(dead)
        return dead

    def toposort(self) -> None:
        """Re-order ops so every operand is produced before it is read (stable)."""
        produced: set[int] = set()
        placed: set[int] = set()
        order: list[Op] = []
        pending = list(self.ops)
        while pending:
            progress = False
            rest = []
            for op in pending:
                if all(id(v) in produced for v in op.operands):
                    order.append(op)
                    placed.add(id(op))
                    produced.update(id(r) for r in op.results)
                    progress = True
                else:
                    rest.append(op)
            if not progress:
                names = ", ".join(op.name or op.kind for op in rest[:5])
                raise ValueError(f"graph has a cycle or dangling operand near: {names}")
            pending = rest
        self.ops = order
