"""Pipelines: -O levels, ``-p`` pipeline strings, verification and timing."""
from __future__ import annotations

import difflib
import re
import time
from collections.abc import Sequence

import attrs

from tidlc.diagnostics import TidlcError
from tidlc.ir.core import Graph
from tidlc.ir.verifier import verify
from tidlc.passes.base import Pass, PassContext, option_text

# What each level is for (printed by --print-pipeline and documented in docs/passes.md).
LEVEL_PURPOSE = {
    0: "correct, nothing clever: the passes the backend needs",
    1: "cheap cleanup",
    2: "default, what TIDL does: fusions",
    3: "search: alignment and mixed precision guided by the perf model",
}


def default_pipeline(level: int, registry: dict[str, type] | None = None) -> list[str]:
    """The pass names of ``-O<level>`` from the passes' declared schedules (see
    :mod:`tidlc.passes.base`), before the ``tidlc_pipeline`` hook and the backend edit the list.

    ``registry`` (name -> pass class) defaults to the builtin passes."""
    if level not in LEVEL_PURPOSE:
        raise TidlcError(f"unknown optimisation level -O{level}", hint="use -O0, -O1, -O2 or -O3", code="option")
    if registry is None:
        from tidlc.plugin_manager import builtin_passes
        registry = builtin_passes()
    slots = sorted((order, name) for name, cls in registry.items()
                   for since, order in cls.schedule() if since <= level)
    return [name for _, name in slots]


_ITEM = re.compile(r"\s*([A-Za-z0-9_.-]+)\s*(\{([^{}]*)\})?\s*(,|$)")


def parse_pipeline(text: str) -> list[tuple[str, dict[str, str]]]:
    """``"a,b{x=1,y=on}"`` -> ``[("a", {}), ("b", {"x": "1", "y": "on"})]``."""
    items, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _ITEM.match(text, pos)
        if not m or m.end() == pos:
            raise TidlcError(f"bad pipeline string at column {pos + 1}: {text!r}",
                             hint="write passes as name or name{option=value,...}, comma separated", code="option")
        opts = {}
        if m.group(3):
            for kv in filter(None, (s.strip() for s in m.group(3).split(","))):
                if "=" not in kv:
                    raise TidlcError(f"pass option {kv!r} in {m.group(1)!r} needs a value", hint="name{option=value}", code="option")
                k, v = kv.split("=", 1)
                opts[k.strip()] = v.strip()
        items.append((m.group(1), opts))
        pos = m.end()
    return items


_KINDS = {"int": int, "float": float, "bool": bool, "str": str, "tuple[str, ...]": tuple}


def _option_kind(field: attrs.Attribute) -> type:
    """int/float/bool/str/tuple (of names) from the field's annotation (a string under PEP 563,
    ``X | None`` allowed) or its default."""
    if isinstance(field.type, type) and field.type in _KINDS.values():
        return field.type
    if isinstance(field.type, str):
        annotation = field.type.removesuffix(" | None")
        if annotation in _KINDS:
            return _KINDS[annotation]
    default = field.default
    return type(default) if type(default) in _KINDS.values() else str


def _convert(field: attrs.Attribute, text: str, pass_name: str, key: str):
    kind = _option_kind(field)
    try:
        if kind is tuple:  # names: layers-16bit=conv1:conv2 (commas separate options)
            return tuple(n for n in text.replace(":", " ").split() if n)
        if kind is bool:
            if text.lower() in ("1", "true", "on", "yes"):
                return True
            if text.lower() in ("0", "false", "off", "no"):
                return False
            raise ValueError
        return kind(text)
    except (TypeError, ValueError):
        hint = ""
        if field.default is not attrs.NOTHING:
            hint = f"e.g. {pass_name}{{{key}={option_text(field.default)}}}, the default"
        if kind is bool:
            hint = "write true/false, on/off, yes/no or 1/0" + (f"; {hint}" if hint else "")
        raise TidlcError(f"pass '{pass_name}': option {key}={text!r} is not {_KIND_WORDS[kind]}",
                         hint=hint, code="option") from None


_KIND_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               tuple: "names separated by ':'"}


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"did you mean '{close[0]}'? " if close else ""


def instantiate(registry: dict[str, type], name: str, options: dict[str, str]) -> Pass:
    cls = registry.get(name)
    if cls is None:
        raise TidlcError(f"unknown pass '{name}'",
                         hint=_did_you_mean(name, registry) + f"known passes: {', '.join(sorted(registry))}", code="option")
    known = cls.options()
    values = {}
    for key, text in options.items():
        field = known.get(key) or known.get(key.replace("_", "-"))
        if field is None:
            raise TidlcError(f"pass '{name}' has no option '{key}'",
                             hint=_did_you_mean(key, known) + f"its options: {', '.join(known) or 'none'}", code="option")
        values[field.name] = _convert(field, text, name, key)
    return cls(**values)


def _in_pass(name: str, done: Sequence[str]) -> str:
    return f"in pass '{name}' (passes before it: {', '.join(done) or 'none'})"


@attrs.define
class PassManager:
    """Runs a list of configured passes over a graph."""

    passes: list[Pass]
    verify_each: bool = False
    time_passes: bool = False
    hook: object = None
    owners: dict = attrs.Factory(dict)  # pass name -> "plugin 'NAME' (project VERSION)" for third-party passes
    notes: list = attrs.Factory(list)  # the passes' ctx.note(...) messages of the last run
    stash: dict = attrs.Factory(dict)  # the passes' ctx.stash of the last run
    timings: list[tuple[str, float, bool]] = attrs.Factory(list)

    @classmethod
    def from_level(cls, registry: dict[str, type], level: int, hook=None, **kw) -> PassManager:
        names = default_pipeline(level, registry)
        if hook is not None:
            hook.tidlc_pipeline(level=level, passes=names)
        return cls([instantiate(registry, n, {}) for n in names], hook=hook, **kw)

    @classmethod
    def from_string(cls, registry: dict[str, type], text: str, hook=None, **kw) -> PassManager:
        return cls([instantiate(registry, n, o) for n, o in parse_pipeline(text)], hook=hook, **kw)

    def pipeline_string(self) -> str:
        return ",".join(p.spec() for p in self.passes)

    def run(self, graph: Graph, ctx: PassContext | None = None) -> bool:
        ctx = ctx or PassContext()
        ctx.hook = ctx.hook or self.hook
        changed_any = False
        done: list[str] = []
        for p in self.passes:
            ctx.pass_name = p.name
            start = time.perf_counter()
            try:
                changed = bool(p.run(ctx, graph))
            except TidlcError as exc:
                # name the failing pass (str(exc) is fixed at construction: refresh it)
                exc.problems = exc.problems + [_in_pass(p.name, done)]
                exc.args = (exc.format(),)
                raise
            except Exception as exc:
                who = self.owners.get(p.name)
                if who:  # a third-party pass failed: the plugin's bug, named as such
                    from tidlc.plugin_manager import plugin_failure
                    raise plugin_failure(who, f"pass '{p.name}'", exc) from exc
                exc.add_note(_in_pass(p.name, done))  # an internal error: still say where it happened
                raise
            seconds = time.perf_counter() - start
            self.timings.append((p.spec(), seconds, changed))
            changed_any |= changed
            if self.verify_each:
                try:
                    verify(graph)
                except TidlcError as exc:
                    raise TidlcError(f"IR invalid after pass '{p.name}' (passes before it: "
                                     f"{', '.join(done) or 'none'})", graph.name, problems=exc.problems,
                                     hint="this is a bug in that pass") from None
            if ctx.hook is not None:
                ctx.hook.tidlc_pass_finished(pass_=p, graph=graph, changed=changed, seconds=seconds)
            done.append(p.name)
        ctx.pass_name = None
        self.notes = list(ctx.notes)
        self.stash = ctx.stash
        return changed_any

    def timing_report(self) -> str:
        total = sum(t for _, t, _ in self.timings) or 1e-12
        rows = [f"{'pass':<40} {'ms':>10} {'%':>6}  changed"]
        for name, t, changed in self.timings:
            rows.append(f"{name:<40} {t * 1e3:>10.2f} {100 * t / total:>6.1f}  {'yes' if changed else 'no'}")
        rows.append(f"{'total':<40} {total * 1e3:>10.2f}")
        return "\n".join(rows)


def run_pipeline(graph: Graph, names: Sequence[str], registry: dict[str, type]) -> None:
    """Convenience for tests: run passes by name."""
    PassManager([instantiate(registry, n, {}) for n in names]).run(graph)
