"""The sidecar weights file of the IR text form (``model.weights`` beside ``model.tir``).

Layout (little-endian): magic ``b"TIRWGT1\\n"``, u64 index length, a JSON
index ``{symbol: [dtype, shape, offset, nbytes, crc32]}`` (keys sorted), then
the raw arrays, each starting at a 64-byte boundary. No timestamps: the same
weights give the same bytes. The CRC catches a damaged array, not only a
damaged index.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Mapping

import numpy as np

from tidlc.diagnostics import TidlcError
from tidlc.fileio import atomic_write
from tidlc.ir.types import DTYPES, dtype_of, numpy_dtype

MAGIC = b"TIRWGT1\n"
ALIGN = 64


def _pad(n: int) -> int:
    return (-n) % ALIGN


def write_weights(path: str, weights: Mapping[str, np.ndarray]) -> None:
    """Write atomically (temp file + rename)."""
    index, offset = {}, 0
    arrays = []
    for sym in sorted(weights):
        arr = np.asarray(weights[sym], order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        index[sym] = [dtype_of(arr), list(arr.shape), offset, arr.nbytes, zlib.crc32(_bytes(arr))]
        arrays.append(arr)
        offset += arr.nbytes + _pad(arr.nbytes)
    head = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    start = len(MAGIC) + 8 + len(head)
    head += b" " * _pad(start)
    with atomic_write(path) as f:
        f.write(MAGIC + struct.pack("<Q", len(head)) + head)
        for arr in arrays:
            f.write(_bytes(arr))
            f.write(b"\0" * _pad(arr.nbytes))


def read_weights(path: str) -> dict[str, np.ndarray]:
    """Memory-map the arrays (read-only); corrupt files raise TidlcError."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + 8)
            if len(head) < len(MAGIC) + 8 or head[:len(MAGIC)] != MAGIC:
                raise TidlcError("not a tidlc weights file (bad magic)", path)
            (n,) = struct.unpack("<Q", head[len(MAGIC):])
            if len(MAGIC) + 8 + n > size:
                raise TidlcError("weights index runs past the end of the file", path)
            index = json.loads(f.read(n))
    except OSError as exc:
        raise TidlcError(f"cannot read weights: {exc.strerror}", path) from None
    except (ValueError, UnicodeDecodeError):
        raise TidlcError("corrupt weights index", path) from None
    base = len(MAGIC) + 8 + n
    entries = _check_index(index, path)
    data = np.memmap(path, dtype=np.uint8, mode="r") if size > base else np.zeros(0, np.uint8)
    out = {}
    for sym, (dtype, shape, offset, nbytes, crc) in entries.items():
        if base + offset + nbytes > size or nbytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise TidlcError(f"weights entry '{sym}' is truncated or inconsistent", path)
        arr = np.ndarray(shape, dtype, buffer=data, offset=base + offset) if nbytes else np.zeros(shape, dtype)
        if zlib.crc32(_bytes(arr)) != crc:
            raise TidlcError(f"weights entry '{sym}' is damaged (checksum mismatch)", path)
        out[sym] = arr
    return out


def _check_index(index, path: str) -> dict:
    """``{symbol: (numpy dtype, shape, offset, nbytes, crc32)}`` or TidlcError for a malformed index."""
    def bad(sym: str) -> TidlcError:
        return TidlcError(f"corrupt weights index (entry '{sym}')", path)

    if not isinstance(index, dict):
        raise TidlcError("corrupt weights index", path)
    out = {}
    for sym, entry in index.items():
        if not isinstance(entry, list) or len(entry) != 5:
            raise bad(sym)
        dtype, shape, offset, nbytes, crc = entry
        if dtype not in DTYPES or not isinstance(shape, list) or not all(
                _is_count(v) for v in (*shape, offset, nbytes, crc)) or offset % ALIGN:
            raise bad(sym)
        out[sym] = (numpy_dtype(dtype), tuple(shape), offset, nbytes, crc)
    return out


def _bytes(arr: np.ndarray) -> np.ndarray:
    """The raw bytes of ``arr`` (works for empty and 0-d arrays, unlike memoryview.cast)."""
    return np.asarray(arr, order="C").reshape(-1).view(np.uint8)


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0
