"""Table-driven rewriting: rules are (op kind, function) rows, applied to a fixed point.

A rule function ``fn(rw, op) -> bool`` inspects ``op`` and, if it matches,
edits the graph through the :class:`~tidlc.ir.rewrite.Rewriter` (``rw.replace_op``,
``rw.update_attrs``, ...) and returns True. The kind ``"*"`` matches every op
(tried after the rules for the op's own kind).

A pass without options that is only a rule table, or only a function of the
graph, is declared in one statement (:func:`rule_pass`, :func:`graph_pass`).
"""
from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Iterable, Sequence

import attrs

from tidlc.ir.core import Graph, Op
from tidlc.ir.rewrite import Rewriter
from tidlc.passes.base import Pass

Rule = tuple[str, Callable[[Rewriter, Op], bool]]


def until_unchanged(step: Callable[[], bool], max_iters: int) -> bool:
    """Run ``step()`` until it reports no change, at most ``max_iters`` times; whether any run changed."""
    changed = False
    for _ in range(max_iters):
        if not step():
            break
        changed = True
    return changed


# ops no rule may rewrite, per graph: those the deny lists name (tidlc.compiler.pin_denied), which
# must reach the partitioner as the ops the user named (a grouped deconv denied to the host stays one)
_KEPT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def keep_ops(graph: Graph, kinds: Iterable[str] = (), names: Iterable[str] = ()) -> None:
    """Rules leave the ops of these kinds or names as they are (none given: no longer); by kind and
    name, as the deny lists match, so an op another pass rebuilt under its name is still kept."""
    kinds, names = frozenset(kinds), frozenset(names)
    if kinds or names:
        _KEPT[graph] = (kinds, names)
    else:
        _KEPT.pop(graph, None)


def kept_ops(graph: Graph) -> tuple[frozenset, frozenset]:
    """The kinds and names :func:`keep_ops` keeps in ``graph`` (empty sets when none)."""
    return _KEPT.get(graph, (frozenset(), frozenset()))


def apply_rules(graph: Graph, rules: Iterable[Rule], max_iters: int = 8) -> bool:
    """Apply the rules over the graph until nothing matches (or ``max_iters`` sweeps); ops kept with
    :func:`keep_ops` are skipped."""
    table: dict[str, list] = {}
    for kind, fn in rules:
        table.setdefault(kind, []).append(fn)
    kinds, names = kept_ops(graph)

    def sweep() -> bool:
        rw = Rewriter(graph)
        matched = False
        for op in list(graph.ops):
            if id(op) in rw.dead or op.kind in kinds or op.name in names:
                continue
            for fn in table.get(op.kind, []) + table.get("*", []):
                if fn(rw, op):
                    matched = True
                    break
        rw.commit()
        return matched

    return until_unchanged(sweep, max_iters)


def graph_pass(name: str, transform: Callable[[Graph], bool], *, opt_level: int | None, summary: str,
               order: int = 50, also_at: tuple[tuple[int, int], ...] = ()) -> type[Pass]:
    """A pass class without options whose ``run`` is ``transform(graph) -> changed``.

    ``DeadCodeElimination = graph_pass("dce", lambda g: bool(g.prune()), opt_level=1, order=30, summary=...)``
    declares what a five-line class would; the class is an ordinary frozen :class:`Pass`."""

    @attrs.frozen
    class GraphPass(Pass):
        def run(self, ctx, graph) -> bool:
            return transform(graph)

    GraphPass.name, GraphPass.opt_level, GraphPass.summary = name, opt_level, summary
    GraphPass.order, GraphPass.also_at = order, tuple(also_at)
    GraphPass.__name__ = GraphPass.__qualname__ = "".join(w.capitalize() for w in name.split("-"))
    # like namedtuple: the class belongs to the module that declares it (not to this one)
    GraphPass.__module__ = sys._getframe(1).f_globals.get("__name__", __name__)
    GraphPass.__doc__ = summary
    return GraphPass


def _rules_then_prune(graph: Graph, rules: tuple) -> bool:
    """``apply_rules``, then remove the ops that were live before and that nothing reads now (the
    pieces of a decomposition a rule rebuilt as one op); dead code from before stays for ``dce``."""
    live = graph.live_ops()
    changed = apply_rules(graph, rules)
    if changed:
        now = graph.live_ops()
        read: set[int] = set()  # what the ops that stay read (readers first: reverse graph order)
        gone = []
        for op in reversed(graph.ops):
            if op in live and op not in now and op.kind != "input" and not any(id(r) in read for r in op.results):
                gone.append(op)
            else:
                read.update(id(v) for v in op.operands)
        graph.remove_ops(gone)
    return changed


def rule_pass(name: str, rules: Sequence[Rule], *, opt_level: int | None, summary: str, order: int = 50,
              also_at: tuple[tuple[int, int], ...] = (), prune: bool = False) -> type[Pass]:
    """A pass class without options that applies the rule table ``rules`` to a fixed point; with
    ``prune``, the ops its rewrites left unread go too (their reads would keep a later rule's
    ``single_user`` from matching: a GELU's leftover ``mul(x, ...)`` kept the GELU from fusing into
    the layer before it)."""
    rules = tuple(rules)
    transform = (lambda graph: _rules_then_prune(graph, rules)) if prune else (lambda graph: apply_rules(graph, rules))
    cls = graph_pass(name, transform, opt_level=opt_level, summary=summary,
                     order=order, also_at=also_at)
    cls.__module__ = sys._getframe(1).f_globals.get("__name__", __name__)
    cls.rules = rules
    return cls


__all__ = ["Rewriter", "Rule", "apply_rules", "graph_pass", "keep_ops", "rule_pass", "until_unchanged"]
