"""Frontend for tidlc's own IR text form (``.tir`` + sidecar ``.weights``)."""
from __future__ import annotations

import os

from tidlc.diagnostics import TidlcError
from tidlc.frontend import Frontend
from tidlc.hookspecs import hookimpl


def load_tir(path: str, options=None):
    from tidlc.ir.parser import parse_graph
    from tidlc.ir.weights import read_weights

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise TidlcError("not a text file", path, hint="a .tir file is tidlc IR text") from None
    except OSError as exc:
        raise TidlcError(f"cannot read: {exc.strerror}", path) from None
    graph = parse_graph(text, {}, path) if "const @" not in text else None
    if graph is None:
        weights_path = _weights_path(path, text)
        if not os.path.exists(weights_path):
            raise TidlcError(f"weights file {os.path.basename(weights_path)} not found", path,
                             hint="keep the .weights file that compile wrote next to the .tir file")
        graph = parse_graph(text, read_weights(weights_path), path)
    if options is not None and options.input_shapes:
        from tidlc.ir.types import TensorType  # noqa: F401
        from tidlc.shapes import apply_input_shapes
        apply_input_shapes(graph, options.input_shapes)
    return graph


def _weights_path(path: str, text: str) -> str:
    import re
    m = re.search(r'weights = "((?:\\.|[^"\\])*)"', text.split("\n", 1)[0])
    name = m.group(1) if m else os.path.splitext(os.path.basename(path))[0] + ".weights"
    return os.path.join(os.path.dirname(os.path.abspath(path)), name)


def _sniff(head: bytes, path: str) -> bool:
    return head.lstrip().startswith(b"tidlc.graph")


@hookimpl
def tidlc_frontends():
    return [Frontend("tir", (".tir",), "tidlc.frontends.tir:load_tir", _sniff, "tidlc IR text form")]
