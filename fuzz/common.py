"""Seed material shared by the targets: a tiny Caffe net, compiled once per worker process."""
from __future__ import annotations

import functools
import os
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(os.path.dirname(ROOT), "shared", "corpus")

TINY_NET = b'''name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 16 dim: 16 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
'''


def read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


@functools.cache
def compiled(emit: str = "bin") -> str:
    """A folder holding the tiny net compiled with ``--emit EMIT`` (bin: net.bin + io.bin;
    qir: model.tir + model.weights; ir: float IR), plus ``tiny.prototxt``."""
    from fuzz.runner import cli
    out = tempfile.mkdtemp(prefix=f"fuzz-tiny-{emit}-")
    proto = os.path.join(out, "tiny.prototxt")
    with open(proto, "wb") as fh:
        fh.write(TINY_NET)
    code = cli("compile", proto, "--random-weights", "0", "--emit", emit, "-o", out)
    assert code == 0, f"compiling the tiny seed net failed ({code})"
    return out


def corpus(*parts: str) -> str:
    return os.path.join(CORPUS, *parts)
