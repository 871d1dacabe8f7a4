"""`tidlc ir MODEL.tir` with a damaged sidecar ``.weights`` file (the .tir beside it unchanged):
the binary header, the JSON index (dtypes, shapes, offsets, sizes, CRCs) and the arrays.
Most mutations edit one index field and then recompute the CRCs, so that the checks past the
checksum (shapes against the text, the executors) are reached too."""
from __future__ import annotations

import json
import os
import struct
import zlib

from fuzz.mutate import INTERESTING, byte_mutation
from fuzz.runner import ROOT, Seed, cli

SEEDS = os.path.join(ROOT, "fuzz", "seeds", "tir")
MAGIC = b"TIRWGT1\n"
ODD_VALUES = [-1, 0, 1, 3, 63, 64, 65, 1 << 20, 1 << 40, 2 ** 64, 1.5, "f32", "x", None, True, [], [1, 2],
              {"a": 1}, [[1]], 10 ** 30]


def _read(name: str) -> bytes:
    with open(os.path.join(SEEDS, name), "rb") as fh:
        return fh.read()


def seeds() -> list[Seed]:
    pairs = [("tiny_ir", "model"), ("tiny_qir", "model"), ("cnn", "cnn")]
    return [Seed({f"{stem}.tir": _read(f"{seed}.tir"), f"{stem}.weights": _read(f"{seed}.weights")},
                 f"{stem}.weights") for seed, stem in pairs]


def _split(data: bytes):
    """(index, raw arrays) of a well-formed file, else None."""
    if data[:8] != MAGIC or len(data) < 16:
        return None
    (n,) = struct.unpack("<Q", data[8:16])
    try:
        index = json.loads(data[16:16 + n])
    except ValueError:
        return None
    return (index, data[16 + n:]) if isinstance(index, dict) and index else None


def _edit_index(index: dict, rng) -> None:
    sym = rng.choice(sorted(index))
    entry = index[sym]
    op = rng.randrange(6)
    if op == 0 and isinstance(entry, list) and entry:  # one field
        entry[rng.randrange(len(entry))] = rng.choice(ODD_VALUES + INTERESTING)
    elif op == 1 and isinstance(entry, list) and len(entry) > 1 and isinstance(entry[1], list):  # the shape
        shape = entry[1]
        if shape and rng.random() < 0.6:
            shape[rng.randrange(len(shape))] = rng.choice((0, 1, 2, 3, -1, 1 << 31, 10 ** 12))
        else:
            shape.insert(rng.randrange(len(shape) + 1), rng.choice((1, 2, 0)))
        if rng.random() < 0.5 and len(entry) > 3:  # keep nbytes consistent with the shape
            count = 1
            for d in shape:
                count *= d if isinstance(d, int) else 1
            entry[3] = abs(count) * 4
    elif op == 2 and isinstance(entry, list) and entry:  # the dtype
        entry[0] = rng.choice(("f32", "f16", "f64", "i8", "u8", "i16", "i32", "i64", "bool", "f99", 3))
    elif op == 3:
        del index[sym]
    elif op == 4:
        index[sym + rng.choice(("", "x", "/0"))] = entry
        index[rng.choice(sorted(index))] = rng.choice(ODD_VALUES)
    else:  # move the array
        if isinstance(entry, list) and len(entry) > 2:
            entry[2] = rng.choice((0, 64, 128, 4096, 1 << 30, 63))


def _fix_crcs(index: dict, raw: bytes) -> None:
    for entry in index.values():
        try:
            offset, nbytes = entry[2], entry[3]
            if 0 <= offset and 0 <= nbytes and offset + nbytes <= len(raw):
                entry[4] = zlib.crc32(raw[offset:offset + nbytes])
        except (TypeError, IndexError, KeyError):
            pass


def mutate(data: bytes, rng, others) -> bytes:
    parts = _split(data)
    if parts is None or rng.random() < 0.2:
        return byte_mutation(data, rng, others)
    index, raw = parts
    if rng.random() < 0.7:
        _edit_index(index, rng)
    else:
        raw = byte_mutation(raw, rng, [])
    if rng.random() < 0.8:
        _fix_crcs(index, raw)
    head = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    head += b" " * ((-(16 + len(head))) % 64)
    length = len(head) if rng.random() < 0.9 else rng.choice(INTERESTING) & (2 ** 64 - 1)
    return MAGIC + struct.pack("<Q", length) + head + raw


def run(path: str) -> None:
    tir = path[:-len(".weights")] + ".tir"
    index = os.path.basename(os.path.dirname(path))  # the runner's case folder is the input index
    if index.isdigit() and int(index) % 4 == 0:
        cli("run", tir, "--random-input", "0")
    else:
        cli("ir", tir)
