"""A pass log: one line per finished pass, written only when asked for.

Set ``TIDLC_EXAMPLE_PASS_LOG=FILE`` and every pass tidlc runs appends
``pass<TAB>changed|unchanged<TAB>milliseconds<TAB>ops`` to FILE. Without the
variable the hook returns at once, so installing the plugin costs nothing.
"""
from __future__ import annotations

import os

ENV = "TIDLC_EXAMPLE_PASS_LOG"


def log_pass(pass_, graph, changed: bool, seconds: float) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    ops = sum(1 for _ in graph.compute_ops())
    line = f"{pass_.spec()}\t{'changed' if changed else 'unchanged'}\t{seconds * 1e3:.3f}\t{ops}\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
