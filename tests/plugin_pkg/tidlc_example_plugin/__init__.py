"""tidlc-example-plugin: the hook implementations tidlc finds through the entry point.

This module is imported when tidlc starts, so it stays small: the Darknet
loader (``fmt.py``) is named by a string and imported only when a ``.cfg``
model is loaded.
"""
from __future__ import annotations

from tidlc.frontend import Frontend
from tidlc.hookspecs import hookimpl
from tidlc_example_plugin.instrument import log_pass
from tidlc_example_plugin.ops import SWISH
from tidlc_example_plugin.passes import DecomposeSwish

__version__ = "0.1.0"


def sniff_darknet(head: bytes, path: str) -> bool:
    """A Darknet cfg starts (after comments and blank lines) with a ``[net]`` section."""
    for raw in head.splitlines():
        line = raw.strip()
        if not line or line[:1] in (b"#", b";"):
            continue
        return line.replace(b" ", b"").lower() in (b"[net]", b"[network]")
    return False


@hookimpl
def tidlc_frontends():
    return [Frontend("darknet", (".cfg",), "tidlc_example_plugin.fmt:load", sniff_darknet,
                     "Darknet cfg (+ .weights)")]


@hookimpl
def tidlc_ops():
    return [SWISH]


@hookimpl
def tidlc_passes():
    return [DecomposeSwish]


@hookimpl
def tidlc_backends():
    from tidlc_example_plugin.backend import (
        FloatRefBackend,  # the class only: methods import the rest
    )

    return [FloatRefBackend()]


@hookimpl
def tidlc_pass_finished(pass_, graph, changed: bool, seconds: float) -> None:
    log_pass(pass_, graph, changed, seconds)
