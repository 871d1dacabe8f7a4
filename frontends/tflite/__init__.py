"""TFLite frontend: ``.tflite`` flatbuffers (float, float16-weight and int8 models), read with
tidlc's own FlatBuffers reader (no TensorFlow, no ``tflite`` package)."""
from __future__ import annotations

from tidlc.frontend import Frontend
from tidlc.hookspecs import hookimpl


def _sniff(head: bytes, path: str) -> bool:
    return len(head) >= 8 and head[4:8] == b"TFL3"


@hookimpl
def tidlc_frontends():
    return [Frontend("tflite", (".tflite",), "tidlc.frontends.tflite.importer:load_tflite", _sniff,
                     "TensorFlow Lite flatbuffer")]
