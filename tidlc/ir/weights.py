"""The sidecar weights file of the IR text form (``model.weights`` beside ``model.tir``).

Layout (little-endian): magic ``b"TIRWGT1\\n"``, u64 index length, a JSON
index ``{symbol: [dtype, shape, offset, nbytes, crc32]}`` (keys sorted), then
the raw arrays, each starting at a 64-byte boundary. No timestamps: the same
weights give the same bytes. The CRC catches a damaged array, not only a
damaged index.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Mapping

import numpy as np

from tidlc import limits
from tidlc.diagnostics import Loc, TidlcError
from tidlc.fileio import atomic_write, open_regular
from tidlc.ir.types import DTYPES, dtype_of, numpy_dtype

MAGIC = b"TIRWGT1\n"
ALIGN = 64
HEAD = len(MAGIC) + 8  # the magic and the index length


def _pad(n: int) -> int:
    return (-n) % ALIGN


def _index(weights: Mapping[str, np.ndarray]) -> tuple[bytes, list[np.ndarray]]:
    """The padded JSON index (dtype, shape, offset, size, CRC32 per symbol) and the arrays in order."""
    index, offset = {}, 0
    arrays = []
    for sym in sorted(weights):
        arr = np.asarray(weights[sym], order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        index[sym] = [dtype_of(arr), list(arr.shape), offset, arr.nbytes, zlib.crc32(_bytes(arr))]
        arrays.append(arr)
        offset += arr.nbytes + _pad(arr.nbytes)
    head = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    start = len(MAGIC) + 8 + len(head)
    return head + b" " * _pad(start), arrays


def _digest(head: bytes) -> str:
    return hashlib.sha256(head).hexdigest()[:32]


def weights_digest(weights: Mapping[str, np.ndarray]) -> str:
    """A digest of the whole sidecar (its index holds every array's CRC): the .tir records it so a
    .tir and a .weights from different compiles (a kill between the two renames) never pair up."""
    return _digest(_index(weights)[0])


def write_weights(path: str, weights: Mapping[str, np.ndarray]) -> None:
    """Write atomically (temp file + rename)."""
    head, arrays = _index(weights)
    with atomic_write(path) as f:
        f.write(MAGIC + struct.pack("<Q", len(head)) + head)
        for arr in arrays:
            f.write(_bytes(arr))
            f.write(b"\0" * _pad(arr.nbytes))


def read_weights(path: str, digest: str | None = None) -> dict[str, np.ndarray]:
    """Memory-map the arrays (read-only); a corrupt file raises TidlcError at the byte it concerns.

    Everything the index declares (dtypes, shapes, offsets, sizes) is checked against the file
    size and the resource limits before an array is mapped, and every array against its CRC.
    ``digest`` (from the .tir header) must match the file's, when given.
    """
    with open_regular(path, "weights file") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(HEAD)
        if len(head) < HEAD or head[:len(MAGIC)] != MAGIC:
            raise TidlcError("not a tidlc weights file (bad magic)", path, code="format")
        (n,) = struct.unpack("<Q", head[len(MAGIC):])
        if HEAD + n > size:
            raise TidlcError("weights index runs past the end of the file", Loc(file=path, offset=len(MAGIC)),
                             hint=f"the index declares {n} bytes, the file has {size - HEAD} after the header",
                             code="corrupt")
        raw = f.read(n)
        if digest is not None and _digest(raw) != digest:
            raise TidlcError("the weights file was not written with this IR text (the two come from different "
                             "compiles)", path, hint="recompile, or keep the .tir and .weights of one compile together",
                             code="mismatch")
        index = _parse_index(raw, path)
        base = HEAD + n
        entries = _check_index(index, path, size - base)
        data = np.memmap(f, dtype=np.uint8, mode="r") if size > base else np.zeros(0, np.uint8)
    out = {}
    for sym, (dtype, shape, offset, nbytes, crc) in entries.items():
        arr = np.ndarray(shape, dtype, buffer=data, offset=base + offset) if nbytes else np.zeros(shape, dtype)
        if zlib.crc32(_bytes(arr)) != crc:
            raise TidlcError(f"weights entry '{sym[:200]}' is damaged (checksum mismatch)",
                             Loc(file=path, offset=base + offset), code="corrupt")
        out[sym] = arr
    return out


def _parse_index(raw: bytes, path: str):
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # json's own failure modes
        offset = HEAD + getattr(exc, "pos", 0) if isinstance(exc, json.JSONDecodeError) else HEAD
        raise TidlcError("corrupt weights index", Loc(file=path, offset=offset), code="corrupt") from None


def _check_index(index, path: str, data_size: int) -> dict:
    """``{symbol: (numpy dtype, shape, offset, nbytes, crc32)}`` or TidlcError for a malformed index:
    every field typed, each array's size consistent with its dtype and shape, inside the data
    part of the file (``data_size`` bytes) and within the limits."""
    where = Loc(file=path, offset=HEAD)

    def bad(sym: str, why: str) -> TidlcError:
        return TidlcError(f"corrupt weights index (entry '{sym[:200]}'): {why}", where, code="corrupt")

    if not isinstance(index, dict):
        raise TidlcError("corrupt weights index (not a JSON object)", where, code="corrupt")
    limits.check("ops", len(index), "weights index entries", where)
    out, total = {}, 0
    for sym, entry in index.items():
        if not isinstance(entry, list) or len(entry) != 5:
            raise bad(sym, "expected [dtype, shape, offset, nbytes, crc32]")
        dtype, shape, offset, nbytes, crc = entry
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise bad(sym, f"unknown dtype {str(dtype)[:40]}")
        if not isinstance(shape, list) or not all(_is_count(v) for v in (*shape, offset, nbytes, crc)):
            raise bad(sym, "shape, offset, size and checksum must be non-negative integers")
        if offset % ALIGN or crc >> 32:
            raise bad(sym, f"offset {offset} is not {ALIGN}-byte aligned" if offset % ALIGN else "checksum over 32 bits")
        np_dtype = numpy_dtype(dtype)
        count = limits.check_shape(shape, np_dtype.itemsize, f"weights entry '{sym[:200]}'", where)
        if nbytes != count * np_dtype.itemsize:
            raise bad(sym, f"{nbytes} bytes declared, {dtype}{shape} needs {count * np_dtype.itemsize}")
        if offset + nbytes > data_size:
            raise TidlcError(f"weights entry '{sym[:200]}' is truncated or inconsistent",
                             Loc(file=path, offset=HEAD), hint=f"it ends at data byte {offset + nbytes}, "
                             f"the file has {data_size}", code="corrupt")
        total += nbytes
        limits.check("total_bytes", total, "the weights", where)
        out[sym] = (np_dtype, tuple(shape), offset, nbytes, crc)
    return out


def _bytes(arr: np.ndarray) -> np.ndarray:
    """The raw bytes of ``arr`` (works for empty and 0-d arrays, unlike memoryview.cast)."""
    return np.asarray(arr, order="C").reshape(-1).view(np.uint8)


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0
