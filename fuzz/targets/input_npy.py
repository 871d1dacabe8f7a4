"""`tidlc run OUTDIR --input X.npy`: .npy inputs (headers, dtypes, shapes, truncation) fed to a
compiled tiny net."""
from __future__ import annotations

import io

import numpy as np

from fuzz.common import compiled
from fuzz.mutate import byte_mutation
from fuzz.runner import Seed, cli


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def seeds() -> list[Seed]:
    rng = np.random.default_rng(0)
    arrays = [rng.random((1, 3, 16, 16), dtype=np.float32), rng.random((3, 16, 16)).astype(np.float64),
              (rng.random((1, 16, 16, 3)) * 255).astype(np.uint8), np.zeros((1, 3, 16, 16), np.int16),
              np.asfortranarray(rng.random((1, 3, 16, 16), dtype=np.float32)), np.zeros((2, 3), np.float32)]
    return [Seed({"x.npy": _npy(a)}, "x.npy") for a in arrays]


def mutate(data: bytes, rng, others) -> bytes:
    if rng.random() < 0.5:  # the header is where the interesting bugs are: mutate it more often
        end = data.find(b"\n") + 1 or 128
        return byte_mutation(data[:end], rng, []) + data[end:]
    return byte_mutation(data, rng, others)


def run(path: str) -> None:
    cli("run", compiled("bin"), "--input", path)
