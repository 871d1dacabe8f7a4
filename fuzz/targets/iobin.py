"""`tidlc run OUTDIR` / `tidlc perf OUTDIR`: mutated io.bin files beside the net.bin they were
written with (docs/format.md).

The mutator edits the IODS descriptor (JSON) and rebuilds the container with correct checksums
most of the time; the net.bin digest in BIND is kept right in most cases so that the descriptor
reaches ``tidlc run``'s input feeding (random inputs, or an image through its pre-processing).
"""
from __future__ import annotations

import zlib

from fuzz.mutate import text_mutation
from fuzz.runner import Seed
from fuzz.targets.netbin import container_mutation, join, json_mutation, pair_seeds, run_pair, split


def seeds() -> list[Seed]:
    return pair_seeds("io.bin")


def mutate(data: bytes, rng, others) -> bytes:
    """75 %: one value of the IODS descriptor changed (BIND kept valid), 10 %: text edits of the
    JSON, 15 %: container-level edits (header, table, BIND, checksums)."""
    parts = split(data)
    roll = rng.random()
    if not parts or roll < 0.15:
        return container_mutation(data, rng, others)
    edit = json_mutation if roll < 0.9 else (lambda raw, r: text_mutation(raw, r, []))
    return join(parts[0], [(tag, edit(payload, rng) if tag == b"IODS" else payload) for tag, payload in parts[1]])


def run(path: str) -> None:
    import os
    with open(path, "rb") as fh:
        selector = zlib.crc32(fh.read())
    run_pair(os.path.dirname(path), selector >> 8)
