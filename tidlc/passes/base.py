"""Pass base class and the pass context.

A pass is a small frozen attrs class: its fields are its options
(``-p 'fold-constants{max-iters=4}'``), ``name`` and ``opt_level`` are class
variables, and ``run(ctx, graph)`` returns whether it changed the graph.

The ``-O`` pipelines are made from the passes' own declarations, nothing else:
a pass with ``opt_level`` N runs in every ``-O`` pipeline from N up, at its
``order`` (ascending; ties by name); ``also_at`` adds further runs as
``(level, order)`` pairs (dce runs after the cleanups from -O1 and again after
the fusions from -O2). ``opt_level = None`` keeps a pass out of the ``-O``
lists: a backend adds it (TIDL's ``quantize``) or the user names it with ``-p``.
"""
from __future__ import annotations

from typing import Any, ClassVar

import attrs

from tidlc.ir.core import Graph


def option_text(value: Any) -> str:
    """An option value as written in a pipeline string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ":".join(map(str, value))
    return str(value)


@attrs.frozen
class Pass:
    name: ClassVar[str] = ""
    opt_level: ClassVar[int | None] = None  # lowest -O level whose pipeline runs it (None: none)
    order: ClassVar[int] = 50  # where in the -O pipelines (ascending)
    also_at: ClassVar[tuple[tuple[int, int], ...]] = ()  # more runs: (from -O level, at order)
    summary: ClassVar[str] = ""

    @classmethod
    def schedule(cls) -> tuple[tuple[int, int], ...]:
        """Every ``(from level, order)`` at which the -O pipelines run this pass."""
        own = () if cls.opt_level is None else ((cls.opt_level, cls.order),)
        return own + tuple(cls.also_at)

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
    # what a pass leaves for a later one of the same run (e.g. equalize's undo record for the
    # quantize pass's check), by key; PassManager.stash keeps it after the run
    stash: dict[str, Any] = attrs.Factory(dict)

    def note(self, message: str) -> None:
        self.notes.append(f"{self.pass_name}: {message}" if self.pass_name else message)
