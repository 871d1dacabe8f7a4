"""ONNX frontend (opsets 7-21, the CNN op set). Loaded lazily: importing this never imports onnx."""
from __future__ import annotations

from tidlc.frontend import Frontend
from tidlc.hookspecs import hookimpl


def _sniff(head: bytes, path: str) -> bool:
    # ModelProto starts with ir_version (field 1, varint) and usually a producer name
    return len(head) > 2 and head[0] == 0x08 and (b"pytorch" in head[:64] or b"onnx" in head[:256].lower()
                                                   or b"\x12" in head[2:4] or b"\x3a" in head[2:6])


@hookimpl
def tidlc_frontends():
    return [Frontend("onnx", (".onnx",), "tidlc.frontends.onnx.importer:load_onnx", _sniff, "ONNX model")]
