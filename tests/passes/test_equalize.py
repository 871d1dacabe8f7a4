"""equalize (issue 14, item 1): cross-layer equalization keeps float outputs, equalizes the
per-channel weight ranges of each pair, and lifts per-tensor 8-bit SNR."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tidlc.compiler import optimize
from tidlc.config import CompileOptions
from tidlc.frontends.onnx.importer import load_onnx
from tidlc.interp import run_graph
from tidlc.metrics import snr_db
from tidlc.plugins.equalize import _in_ranges, _out_ranges

SHAPE = [1, 3, 16, 16]


@pytest.fixture
def unbalanced(tmp_path) -> str:
    """conv 3x3 (3->16, relu) -> depthwise 3x3 (16, relu) -> conv 1x1 (16->8). The depthwise
    channel ranges spread over three decades (as BN folding leaves them in trained nets) and the
    pointwise layer weighs its inputs inversely, so every channel matters to the output."""
    rng = np.random.default_rng(0)
    spread = np.logspace(-1.5, 1.5, 16).astype(np.float32)
    w1 = rng.normal(size=(16, 3, 3, 3)).astype(np.float32)
    b1 = rng.normal(size=16).astype(np.float32) * 0.1
    wd = rng.normal(size=(16, 1, 3, 3)).astype(np.float32) * spread[:, None, None, None]
    bd = rng.normal(size=16).astype(np.float32) * spread * 0.1
    w3 = rng.normal(size=(8, 16, 1, 1)).astype(np.float32) / spread[None, :, None, None]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (wd, "wd"), (bd, "bd"), (w3, "w3"))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="c1", kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
             helper.make_node("Conv", ["r1", "wd", "bd"], ["c2"], name="dw", kernel_shape=[3, 3], pads=[1] * 4,
                              group=16),
             helper.make_node("Relu", ["c2"], ["r2"], name="r2"),
             helper.make_node("Conv", ["r2", "w3"], ["y"], name="pw", kernel_shape=[1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    path = tmp_path / "unbalanced.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def _graph(path: str, level: int):
    graph = load_onnx(path, CompileOptions())
    optimize(graph, CompileOptions.of(opt_level=level))
    return graph


def _weight(graph, name):
    op = next(op for op in graph.ops if op.name == name)
    return op, op.operands[1].const_value()


def test_float_outputs_stay_and_ranges_equalize(unbalanced):
    x = np.random.default_rng(1).uniform(-1, 1, SHAPE).astype(np.float32)
    o2, o3 = _graph(unbalanced, 2), _graph(unbalanced, 3)
    ref, got = run_graph(o2, {"x": x})["y"], run_graph(o3, {"x": x})["y"]
    assert np.max(np.abs(got - ref)) <= 1e-5 * np.max(np.abs(ref))
    for first, second in (("c1", "dw"), ("dw", "pw")):
        (_, w1), (op2, w2) = _weight(o3, first), _weight(o3, second)
        r1, r2 = _out_ranges(w1), _in_ranges(op2, w2)
        np.testing.assert_allclose(r1, r2, rtol=0.05)
    before, after = _weight(o2, "dw")[1], _weight(o3, "dw")[1]
    ratio = [float(r.max() / r.min()) for r in (_out_ranges(before), _out_ranges(after))]
    assert ratio[1] < ratio[0] / 10, ratio


def test_equalize_runs_at_O3_only():
    from tidlc.passes import default_pipeline
    assert "equalize" in default_pipeline(3) and "equalize" not in default_pipeline(2)


def test_8bit_snr_improves(unbalanced):
    from tidlc.backends.tidl.quantize.api import quantize_graph
    from tidlc.backends.tidl.fixed.executor import run_fixed
    rng = np.random.default_rng(2)
    frames = [{"x": rng.uniform(-1, 1, SHAPE).astype(np.float32)} for _ in range(8)]
    test = {"x": rng.uniform(-1, 1, SHAPE).astype(np.float32)}
    snrs = {}
    for level in (2, 3):
        graph = _graph(unbalanced, level)
        ref = run_graph(graph, test)["y"]
        q = quantize_graph(graph, CompileOptions.of(calib_method="minmax"), frames=iter(frames), warn_synthetic=False)
        got = run_fixed(q.graph, test)["y"]
        snrs[level] = snr_db(ref, got)
    assert snrs[3] >= snrs[2] + 3.0, snrs
