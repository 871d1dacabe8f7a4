"""A minimal .caffemodel writer (test utility): NetParameter with named layers and float blobs.

Only the fields tidlc and OpenCV read are written (caffe.proto numbers):
NetParameter.name = 1, .layer = 100; LayerParameter.name = 1, .type = 2,
.blobs = 7; BlobProto.shape = 7 (BlobShape.dim = 1, packed int64),
.data = 5 (packed float). Used to hand the random weights of a
structure-only model to OpenCV, so both run the same numbers. The Caffe tests
that write protobuf by hand use its ``varint`` and ``bytes_field``.

tests/frontends/caffe/conftest.py loads it as ``tidlc_test_caffemodel_writer``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def varint(n: int) -> bytes:
    """A protobuf varint (negative numbers as their 64-bit two's complement)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def bytes_field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def encode_blob(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype="<f4")
    shape = bytes_field(1, b"".join(varint(int(d)) for d in array.shape))
    return bytes_field(7, shape) + bytes_field(5, np.ascontiguousarray(array).tobytes())


def encode_net(layers: Mapping[str, tuple[str, Sequence[np.ndarray]]], name: str = "") -> bytes:
    """``{layer name: (layer type, [blobs])}`` -> NetParameter bytes (layers in dict order)."""
    out = bytearray(bytes_field(1, name.encode()) if name else b"")
    for layer_name, (layer_type, blobs) in layers.items():
        body = bytes_field(1, layer_name.encode()) + bytes_field(2, layer_type.encode())
        body += b"".join(bytes_field(7, encode_blob(b)) for b in blobs)
        out += bytes_field(100, body)
    return bytes(out)


def write_caffemodel(path: str | Path, layers: Mapping[str, tuple[str, Sequence[np.ndarray]]],
                     name: str = "") -> Path:
    path = Path(path)
    path.write_bytes(encode_net(layers, name))
    return path
