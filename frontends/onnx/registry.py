"""The ONNX converter table: one row per (op type, first opset of a semantics version).

A converter is registered for the opset where the op's semantics last
changed::

    @converter("Softmax", since=1)     # axis coerces the input to 2-D
    def softmax_v1(node: Node) -> None: ...

    @converter("Softmax", since=13)    # axis is a plain reduction axis
    def softmax_v13(node: Node) -> None: ...

A model of opset N uses, for each op, the newest row with ``since <= N``
(:class:`tidlc.frontend.ConverterTable`). An optional ``check(node) ->
problem or None`` runs on every node *before* anything is converted, so a
model's whole list of problems is reported at once (unsupported modes,
training outputs, ...).
"""
from __future__ import annotations

from tidlc.frontend import ConverterTable

CONVERTERS = ConverterTable("ONNX")
converter = CONVERTERS.converter

__all__ = ["CONVERTERS", "ConverterTable", "converter"]
