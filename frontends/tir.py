"""Frontend for tidlc's own IR text form (``.tir`` + sidecar ``.weights``)."""
from __future__ import annotations

import os
import re

from tidlc.diagnostics import TidlcError
from tidlc.frontend import Frontend
from tidlc.hookspecs import hookimpl


def load_tir(path: str, options=None):
    from tidlc.fileio import read_text
    from tidlc.ir.parser import parse_graph
    from tidlc.ir.weights import read_weights

    text = read_text(path, "IR text file")
    graph = parse_graph(text, {}, path) if not re.search(r"\bconst\s+@", text) else None
    if graph is None:
        weights_path = _weights_path(path, text)
        if not os.path.lexists(weights_path):
            raise TidlcError(f"weights file {os.path.basename(weights_path)} not found", path,
                             hint="keep the .weights file that compile wrote next to the .tir file", code="file")
        graph = parse_graph(text, read_weights(weights_path, _header_string(text, "weights_digest")), path)
    if options is not None and options.load.input_shapes:
        from tidlc.ir.types import TensorType  # noqa: F401
        from tidlc.shapes import apply_input_shapes
        apply_input_shapes(graph, options.load.input_shapes)
    return graph


def _header_string(text: str, key: str) -> str | None:
    """A string attribute of the graph header (the first line), unquoted; None when absent."""
    from tidlc.ir.parser import unquote
    # (the unrolled string pattern: no backtracking memory on a long first line)
    m = re.search(rf'\b{key} = ("[^"\\\n]*(?:\\.[^"\\\n]*)*")', text.split("\n", 1)[0])
    return unquote(m.group(1)) if m else None


def _weights_path(path: str, text: str) -> str:
    name = _header_string(text, "weights") or os.path.splitext(os.path.basename(path))[0] + ".weights"
    return os.path.join(os.path.dirname(os.path.abspath(path)), name)


def _sniff(head: bytes, path: str) -> bool:
    return head.lstrip().startswith(b"tidlc.graph")


@hookimpl
def tidlc_frontends():
    return [Frontend("tir", (".tir",), "tidlc.frontends.tir:load_tir", _sniff, "tidlc IR text form")]
