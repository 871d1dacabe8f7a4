"""`tidlc ir MODEL.tir` (and `tidlc run MODEL.tir --random-input 0`): the IR text form, its
grammar, types, quantization annotations and attributes, with the weights sidecar beside it
unchanged. Seeds: the tiny net as float and quantized IR, and the hand-written graphs of
tests/ir/test_text_form.py (fuzz/seeds/tir/)."""
from __future__ import annotations

import os
import re

from fuzz.mutate import text_mutation
from fuzz.runner import ROOT, Seed, cli

SEEDS = os.path.join(ROOT, "fuzz", "seeds", "tir")


def _read(name: str) -> bytes:
    with open(os.path.join(SEEDS, name), "rb") as fh:
        return fh.read()


def seeds() -> list[Seed]:
    out = []
    for name in sorted(os.listdir(SEEDS)):
        stem, ext = os.path.splitext(name)
        if ext != ".tir":
            continue
        # the tiny net's text names its sidecar "model.weights" (what compile wrote)
        tir, weights = ("model.tir", "model.weights") if stem.startswith("tiny_") else (name, stem + ".weights")
        files = {tir: _read(name)}
        if os.path.exists(os.path.join(SEEDS, stem + ".weights")):
            files[weights] = _read(stem + ".weights")
        out.append(Seed(files, tir))
    return out


NUMBERS = ("0", "1", "2", "3", "-1", "-2", "4", "7", "16", "255", "256", "65536", "2147483648", "1e30", "-0.0",
           "nan", "inf", "1e-40", "99999999999")
DTYPES = ("f32", "f16", "f64", "i8", "u8", "i16", "u16", "i32", "u32", "i64", "bool")
OPS = ("relu", "add", "conv2d", "pool2d", "dense", "softmax", "concat", "reshape", "flatten", "transpose",
       "slice", "data_convert", "resize", "gather", "split", "pad", "matmul", "deconv2d", "reduce", "argmax")


def _sub(pattern: str, text: str, rng, choices) -> str:
    found = list(re.finditer(pattern, text))
    if not found:
        return text
    m = rng.choice(found)
    return text[:m.start()] + rng.choice(choices) + text[m.end():]


def mutate(data: bytes, rng, others) -> bytes:
    """Half the edits keep the text parseable (a number, an element type, an op or an operand
    changed), so shape inference, the verifier and the executors see them; the rest are
    text_mutation's line and token edits."""
    if rng.random() < 0.5:
        return text_mutation(data, rng, others)
    text = data.decode("utf-8", "replace")
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(4)
        if op == 0:
            text = _sub(r"(?<![\w.%@])-?\d+(\.\d+)?(e[-+]?\d+)?", text, rng, NUMBERS)
        elif op == 1:
            text = _sub(r"(?<=x)(f32|f16|f64|i8|u8|i16|u16|i32|u32|i64|bool)\b", text, rng, DTYPES)
        elif op == 2:
            text = _sub(r"(?<== )[a-z_0-9]+(?=\()", text, rng, OPS)
        else:
            names = re.findall(r"%[A-Za-z0-9_.$-]+", text)
            text = _sub(r"%[A-Za-z0-9_.$-]+", text, rng, names) if names else text
    return text.encode("utf-8", "surrogateescape")


def run(path: str) -> None:
    # running the graph goes through shape inference, the verifier and the executors too;
    # a quarter of the inputs is enough for that (printing is cheaper)
    index = os.path.basename(os.path.dirname(path))  # the runner's case folder is the input index
    if index.isdigit() and int(index) % 4 == 0:
        cli("run", path, "--random-input", "0")
    else:
        cli("ir", path)
