"""Fixtures for quantization tests: small float graphs with seeded weights, and frames."""
import numpy as np
import pytest

from tidlc.ir import Builder, TensorType


def small_cnn(seed: int = 0, act: str = "relu"):
    """conv(relu) -> depthwise conv(relu6) -> avg pool + max pool -> add -> concat -> dense -> softmax."""
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.input("x", TensorType((1, 3, 8, 8), layout="NCHW"))
    w1 = b.const(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "c1.w")
    b1 = b.const(rng.normal(0, 0.1, 8).astype(np.float32), "c1.b")
    c1 = b.op("conv2d", [x, w1, b1], pads=(1, 1, 1, 1), act=act, name="c1")
    w2 = b.const(rng.normal(0, 0.5, (8, 1, 3, 3)).astype(np.float32), "dw.w")
    c2 = b.op("conv2d", [c1, w2], pads=(1, 1, 1, 1), groups=8, act="relu6", name="dw")
    avg = b.op("pool2d", [c2], mode="avg", kernel=(2, 2), strides=(2, 2), name="avg")
    mx = b.op("pool2d", [c1], mode="max", kernel=(2, 2), strides=(2, 2), name="max")
    s = b.op("add", [avg, mx], name="sum")
    cat = b.op("concat", [s, avg], name="cat")
    sig = b.op("sigmoid", [cat], name="sig")
    flat = b.op("flatten", [sig], name="flat")
    wd = b.const(rng.normal(0, 0.2, (10, 256)).astype(np.float32), "fc.w")
    bd = b.const(rng.normal(0, 0.1, 10).astype(np.float32), "fc.b")
    fc = b.op("dense", [flat, wd, bd], name="fc")
    b.output(b.op("softmax", [fc], name="prob"), "prob")
    b.output(fc, "logits")
    return b.graph


def frames(count: int, seed: int = 1, shape=(1, 3, 8, 8)):
    rng = np.random.default_rng(seed)
    return [{"x": rng.uniform(-1, 1, shape).astype(np.float32)} for _ in range(count)]


@pytest.fixture
def cnn():
    return small_cnn()
