"""`tidlc ir NET.prototxt` (structure-only, and with --random-weights): the prototxt parser, the
net normalisation (inputs, phases, V1 layers), the converters and shape inference. Seeds: small
real prototxts copied from ../shared/corpus/caffe (LeNet, CIFAR-10 quick, MTCNN, UltraFace,
SqueezeNet, a caffe-jacinto net), hand-written ones that reach almost every
converter and text-format corner (fuzz/seeds/prototxt/zoo_*.prototxt), and the tiny seed net."""
from __future__ import annotations

import os
import random
import re

from fuzz.common import TINY_NET
from fuzz.mutate import byte_mutation, text_mutation
from fuzz.runner import ROOT, Seed, cli

SEEDS = os.path.join(ROOT, "fuzz", "seeds", "prototxt")
# values that stay valid text format, so that the edit reaches the lowering and shape inference
VALUES = ["0", "-1", "1", "2", "3", "4", "7", "8", "17", "255", "4096", "65536", "16777217",
          "2147483647", "-2147483648", "4294967297", "9223372036854775807", "18446744073709551615",
          "1e9", "1e308", "-1e308", "0.5", "-0.0", "nan", "inf", "-inf", "true", "false", "MAX",
          "AVE", "FLOOR", "INFERENCE", "WITHIN_CHANNEL", "PROD", "CENTER_SIZE", '""', '"data"',
          "{ }", "{ dim: 1 }", "[1, 2]"]
_NUMBER = re.compile(rb"[-+]?(\d[\w.+-]*|\.\d[\w.+-]*|nan|inf)")
NUMBERS = [v.encode() for v in VALUES if _NUMBER.fullmatch(v.encode())]
_SCALAR = re.compile(rb"(?<=:)[ \t]*(\"[^\"\n]*\"|'[^'\n]*'|[-+.\w]+)")
_FIELD_NAME = re.compile(rb"\b[a-z_]+(?=[ \t]*[:{<])")


def seeds() -> list[Seed]:
    texts = [TINY_NET]
    for name in sorted(os.listdir(SEEDS)):
        if name.endswith(".prototxt"):
            with open(os.path.join(SEEDS, name), "rb") as fh:
                texts.append(fh.read())
    return [Seed({"net.prototxt": text}, "net.prototxt") for text in texts]


def value_mutation(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    """Replace one scalar value (a number, enum, string) by an interesting one or by another
    value of the file, or one field name by another: the text still parses."""
    if rng.random() < 0.8:
        spans = list(_SCALAR.finditer(data))
        pool = [m.group(1) for m in spans] + [v.encode() for v in VALUES] * 2
    else:
        spans = list(_FIELD_NAME.finditer(data))
        pool = [m.group() for m in spans]
    if not spans:
        return text_mutation(data, rng, others)
    m = rng.choice(spans)
    group = m.lastindex or 0
    if _NUMBER.fullmatch(m.group(group)) and rng.random() < 0.7:
        pool = NUMBERS  # a number stays a number most of the time: that reaches shape inference
    start, end = m.span(group)
    return data[:start] + b" " + rng.choice(pool) + data[end:]


def mutate(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    # line and token edits test the parser, value edits keep the syntax and reach the lowering,
    # raw byte edits test the lexer and the decoder
    roll = rng.random()
    if roll < 0.55:
        return text_mutation(data, rng, others)
    if roll < 0.93:
        return value_mutation(data, rng, others)
    return byte_mutation(data, rng, others)


def run(path: str) -> None:
    # random weights allocate real arrays (sizes come from the file); zero splats do not.
    # A third of the inputs is enough for them, and they cost most of the time of the big seeds.
    if int(os.path.basename(os.path.dirname(path))) % 3 == 1:
        cli("ir", path, "--random-weights", "0")
    else:
        cli("ir", path)
