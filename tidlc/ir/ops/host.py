"""The ``host`` op: a framework op tidlc does not lower, kept opaque and run on its own runtime.

A frontend that meets an op without a converter (and ``--no-host`` is not given) keeps it as::

    %y, %yh = host(%x, %w, %r) {framework = "onnx", op_type = "LSTM",
                                results = ["1x1x4x8xf32", "1x4x8xf32"], payload = "<base64>"} : ...

* ``framework``: ``"onnx"`` or ``"tflite"``, which runtime executes it (``tidlc.hostrt``);
* ``op_type``: the op's name in its framework (``LSTM``, ``If``, ``UNIDIRECTIONAL_SEQUENCE_LSTM``);
* ``payload``: base64 of a self-contained model of just this op -- ONNX: a serialized ModelProto
  with the one node (attributes and subgraphs), the original opset imports and typed graph
  inputs, one per operand in order, then typed outputs, one per result; TFLite: a .tflite
  flatbuffer with the one operator, its constant and variable tensors embedded, its subgraph
  inputs one per operand in order and outputs one per result;
* ``reason`` (optional): why an op that has a converter was kept, the form the converter does not
  lower (``3-D convolution is not supported (1-D and 2-D only)``);
* ``results``: the result types as ``1x?x8xf32`` / ``*xf32`` (shape and element type, the IR
  text's tensor syntax), found at import by the framework's shape inference or one run of the
  runtime. Type inference returns them: the op's typing never changes with the graph.

No traits (layout, fusion and quantization passes leave it alone), not foldable, no MACs.
"""
from __future__ import annotations

import base64
import binascii

from tidlc.ir.opdef import AttrSpec, a_str, defop
from tidlc.ir.types import DTYPES, TensorType

FRAMEWORKS = ("onnx", "tflite")


def type_text(t: TensorType) -> str:
    """``1x?x8xf32`` (``*xf32``: rank unknown); layout and quantization are not kept."""
    if t.shape is None:
        return f"*x{t.dtype}"
    return "".join(("?" if d is None else str(d)) + "x" for d in t.shape) + t.dtype


def parse_type_text(text: str) -> TensorType:
    """The TensorType of a ``results`` entry (ValueError if it is not one)."""
    *dims, dtype = text.split("x")
    if dtype not in DTYPES:
        raise ValueError(f"bad result type {text!r}")
    if dims == ["*"]:
        return TensorType(None, dtype)
    shape = []
    for d in dims:
        if d == "?":
            shape.append(None)
        elif d.isdigit():
            shape.append(int(d))
        else:
            raise ValueError(f"bad result type {text!r}")
    return TensorType(tuple(shape), dtype)


def _check_results(values) -> str | None:
    for text in values:
        try:
            parse_type_text(text)
        except ValueError as exc:
            return str(exc)
    return None


def _check_payload(value: str) -> str | None:
    try:
        base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return "must be base64"
    return None


def payload_bytes(op) -> bytes:
    """The decoded payload of a host op."""
    return base64.b64decode(op.attrs["payload"].encode("ascii"))


def encode_payload(data: bytes) -> str:
    return base64.b64encode(bytes(data)).decode("ascii")


def _infer(op, types):
    return [parse_type_text(t) for t in op.attrs["results"]]


def _compute(op, *args):
    from tidlc.hostrt import run_host_op
    return run_host_op(op, list(args))


defop("host", ("xs*",), {
    "framework": a_str(choices=FRAMEWORKS, doc="the runtime that executes it: onnx | tflite"),
    "op_type": a_str(doc="the op's name in its framework"),
    "results": AttrSpec("strs", check=_check_results, doc="result types, e.g. 1x?x8xf32"),
    "payload": a_str(check=_check_payload, doc="base64 of a one-op model of the framework"),
    "reason": a_str("", doc="why the frontend kept it: the form of the op its converter does not lower "
                            "(empty: the op has no converter)"),
}, infer=_infer, compute=_compute, num_results=lambda a: len(a["results"]), foldable=False,
    category="misc", doc="A framework op tidlc does not lower, run by its framework's runtime on the "
                         "host (onnxruntime, the TFLite interpreter); see docs/host-ops.md.")
