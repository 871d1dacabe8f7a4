"""Caffe frontend: ``.prototxt`` (lark grammar) + ``.caffemodel`` weights."""
from __future__ import annotations

from tidlc.frontend import Frontend
from tidlc.hookspecs import hookimpl


def _sniff(head: bytes, path: str) -> bool:
    text = head.decode("utf-8", "replace")
    return any(k in text for k in ("layer {", "layers {", "layer{", "input_dim", "input_shape"))


@hookimpl
def tidlc_frontends():
    # (".pt" is not claimed: it is PyTorch's suffix; other names are recognised by _sniff)
    return [Frontend("caffe", (".prototxt",), "tidlc.frontends.caffe.lower:load_caffe", _sniff,
                     "Caffe prototxt (+ caffemodel weights)")]
