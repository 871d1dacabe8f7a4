"""Pass base class and the pass context.

A pass is a small frozen attrs class: its fields are its options
(``-p 'fold-constants{max-iters=4}'``), ``name`` and ``opt_level`` are class
variables, and ``run(ctx, graph)`` returns whether it changed the graph.
"""
from __future__ import annotations

from typing import Any, ClassVar

import attrs

from tidlc.ir.core import Graph


def option_text(value: Any) -> str:
    """An option value as written in a pipeline string."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


@attrs.frozen
class Pass:
    name: ClassVar[str] = ""
    opt_level: ClassVar[int] = 1  # lowest -O level whose default pipeline runs it
    summary: ClassVar[str] = ""

    def run(self, ctx: PassContext, graph: Graph) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def options(cls) -> dict[str, attrs.Attribute]:
        """CLI option name (kebab-case) -> attrs field."""
        return {f.name.replace("_", "-"): f for f in attrs.fields(cls)}

    def spec(self) -> str:
        """How this configured pass is written in a ``-p`` pipeline string."""
        opts = []
        for key, field in self.options().items():
            value = getattr(self, field.name)
            if value != field.default:
                opts.append(f"{key}={option_text(value)}")
        return self.name + ("{" + ",".join(opts) + "}" if opts else "")


@attrs.define
class PassContext:
    """What passes can see besides the graph: options, plugin hooks, collected notes."""

    options: Any = None
    hook: Any = None  # pluggy hook relay (for tidlc_pass_finished)
    verify_each: bool = False
    notes: list[str] = attrs.Factory(list)
    pass_name: str | None = None

    def note(self, message: str) -> None:
        self.notes.append(f"{self.pass_name}: {message}" if self.pass_name else message)
