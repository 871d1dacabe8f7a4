"""TensorFlow frontend: frozen GraphDef ``.pb`` files, read with protobuf only (no TensorFlow)."""
from __future__ import annotations

from tidlc.frontend import Frontend
from tidlc.hookspecs import hookimpl


def _sniff(head: bytes, path: str) -> bool:
    # GraphDef starts with node (field 1, length-delimited: 0x0a); each NodeDef starts with its
    # name (0x0a) then op (0x12); ONNX (0x08) and TFLite ("TFL3" at 4) look different
    if len(head) < 8 or head[0] != 0x0A or head[4:8] == b"TFL3":
        return False
    return b"\x12" in head[2:200] and any(op in head[:4096] for op in (b"Placeholder", b"Const"))


@hookimpl
def tidlc_frontends():
    return [Frontend("tensorflow", (".pb",), "tidlc.frontends.tensorflow.importer:load_pb", _sniff,
                     "TensorFlow frozen GraphDef")]
