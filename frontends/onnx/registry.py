"""The ONNX converter table: one row per (op type, first opset of a semantics version).

A converter is registered for the opset where the op's semantics last
changed::

    @converter("Softmax", since=1)     # axis coerces the input to 2-D
    def softmax_v1(node: Node) -> None: ...

    @converter("Softmax", since=13)    # axis is a plain reduction axis
    def softmax_v13(node: Node) -> None: ...

A model of opset N uses, for each op, the newest row with ``since <= N``.
An optional ``check(node) -> problem or None`` runs on every node *before*
anything is converted, so a model's whole list of problems is reported at
once (unsupported modes, training outputs, ...).
"""
from __future__ import annotations

from collections.abc import Callable

import attrs

ConvertFn = Callable[..., None]
CheckFn = Callable[..., str | None]


@attrs.frozen
class Converter:
    op_type: str
    since: int
    convert: ConvertFn
    check: CheckFn | None = None


class ConverterTable:
    """op type -> converter rows sorted by ``since``."""

    def __init__(self) -> None:
        self._rows: dict[str, list[Converter]] = {}

    def register(self, op_type: str, since: int, check: CheckFn | None = None):
        def decorate(fn: ConvertFn) -> ConvertFn:
            rows = self._rows.setdefault(op_type, [])
            if any(r.since == since for r in rows):
                raise ValueError(f"ONNX converter {op_type} since opset {since} is registered twice")
            rows.append(Converter(op_type, since, fn, check))
            rows.sort(key=lambda r: r.since)
            return fn
        return decorate

    def lookup(self, op_type: str, opset: int) -> Converter | None:
        """The newest converter of ``op_type`` usable at ``opset`` (None if there is none)."""
        best = None
        for row in self._rows.get(op_type, ()):
            if row.since <= opset:
                best = row
        return best

    def first_opset(self, op_type: str) -> int | None:
        rows = self._rows.get(op_type)
        return rows[0].since if rows else None

    def versions(self) -> dict[str, tuple[int, ...]]:
        """op type -> the opsets where a converter version starts (for docs and ``--help``)."""
        return {op: tuple(r.since for r in rows) for op, rows in sorted(self._rows.items())}

    def __contains__(self, op_type: str) -> bool:
        return op_type in self._rows


CONVERTERS = ConverterTable()


def converter(op_type: str, since: int = 1, check: CheckFn | None = None):
    """Register ``fn(node)`` as the converter of ``op_type`` from opset ``since`` on."""
    return CONVERTERS.register(op_type, since, check)
