"""The sidecar weights file of the IR text form (``model.weights`` beside ``model.tir``).

Layout (little-endian): magic ``b"TIRWGT1\\n"``, u64 index length, a JSON
index ``{symbol: [dtype, shape, offset, nbytes]}`` (keys sorted), then the
raw arrays, each starting at a 64-byte boundary. No timestamps: the same
weights give the same bytes.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Mapping

import numpy as np

from tidlc.diagnostics import TidlcError
from tidlc.ir.types import dtype_of, numpy_dtype

MAGIC = b"TIRWGT1\n"
ALIGN = 64


def _pad(n: int) -> int:
    return (-n) % ALIGN


def write_weights(path: str, weights: Mapping[str, np.ndarray]) -> None:
    """Write atomically (temp file + rename)."""
    index, offset = {}, 0
    arrays = []
    for sym in sorted(weights):
        arr = np.ascontiguousarray(weights[sym])
        index[sym] = [dtype_of(arr), list(arr.shape), offset, arr.nbytes]
        arrays.append(arr)
        offset += arr.nbytes + _pad(arr.nbytes)
    head = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    start = len(MAGIC) + 8 + len(head)
    head += b" " * _pad(start)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + struct.pack("<Q", len(head)) + head)
            for arr in arrays:
                f.write(memoryview(arr).cast("B"))
                f.write(b"\0" * _pad(arr.nbytes))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_weights(path: str) -> dict[str, np.ndarray]:
    """Memory-map the arrays (read-only); corrupt files raise TidlcError."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + 8)
            if len(head) < len(MAGIC) + 8 or head[:len(MAGIC)] != MAGIC:
                raise TidlcError("not a tidlc weights file (bad magic)", path)
            (n,) = struct.unpack("<Q", head[len(MAGIC):])
            if n > size:
                raise TidlcError("weights index runs past the end of the file", path)
            index = json.loads(f.read(n))
    except OSError as exc:
        raise TidlcError(f"cannot read weights: {exc.strerror}", path) from None
    except (ValueError, UnicodeDecodeError):
        raise TidlcError("corrupt weights index", path) from None
    base = len(MAGIC) + 8 + n
    data = np.memmap(path, dtype=np.uint8, mode="r") if size > base else np.zeros(0, np.uint8)
    out = {}
    for sym, (dtype, shape, offset, nbytes) in index.items():
        dt = numpy_dtype(dtype)
        if base + offset + nbytes > size or nbytes != int(np.prod(shape)) * dt.itemsize:
            raise TidlcError(f"weights entry '{sym}' is truncated or inconsistent", path)
        out[sym] = np.ndarray(shape, dt, buffer=data, offset=base + offset)
    return out
