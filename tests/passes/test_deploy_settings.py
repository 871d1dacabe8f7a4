"""issue 14 item 3: -O3 chooses numBatches with the perf model (a target-stage decision stored in
net.bin): fewer predicted cycles per frame, the same network and outputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tidlc.backends.tidl.fixed import FixedExecutor
from tidlc.backends.tidl.perf import estimate, load_device
from tidlc.backends.tidl.perf.hints import BATCH_CHOICES, choose_batches
from tidlc.backends.tidl.perf.model import PerfOptions

from tidlc.compiler import compile_model
from tidlc.config import CompileOptions
from tidlc.run_compiled import read_model

CAFFE = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "caffe" / "lenet_mnist"


@pytest.fixture
def lenet() -> tuple[str, str]:
    model, weights = CAFFE / "mnist_deploy.prototxt", CAFFE / "lenet_iter_10000.caffemodel"
    if not weights.exists():
        pytest.skip("shared corpus not available")
    return str(model), str(weights)


def _compile(tmp_path, name, model, weights, **kw) -> object:
    out = tmp_path / name
    compile_model(model, CompileOptions.of(weights=weights, emit="bin", outdir=str(out), calib_frames=2, **kw))
    return read_model(str(out / "net.bin"))


@pytest.mark.filterwarnings("ignore::tidlc.diagnostics.TidlcWarning")  # synthetic calibration frames
def test_O3_batches_a_small_input(tmp_path, lenet):
    """LeNet's frame is mostly per-call cost: -O3 stores the perf model's numBatches (the knee of
    1, 2, 4, 8), the per-frame estimate drops, and the network and its outputs are those of the
    same compile with numBatches 1."""
    model, weights = lenet
    o2 = _compile(tmp_path, "o2", model, weights, opt_level=2)
    one = _compile(tmp_path, "one", model, weights, opt_level=3, batches=1, persist_weights=False)
    auto = _compile(tmp_path, "auto", model, weights, opt_level=3, persist_weights=False)
    assert "batches" not in o2.settings and one.settings == {"batches": 1, "persist_weights": False}
    n, cycles = choose_batches(auto.graph, load_device("tda4vm"))
    assert n > 1 and auto.settings == {"batches": n, "persist_weights": False}
    assert cycles == sorted(cycles, reverse=True)  # the model's what-if runs, per frame
    assert auto.perf["total_cycles"] < one.perf["total_cycles"] <= o2.perf["total_cycles"]
    assert auto.perf["total_cycles"] == pytest.approx(cycles[BATCH_CHOICES.index(n)], abs=1)  # stored as int
    x = np.random.default_rng(0).uniform(0, 1, (1, 1, 28, 28)).astype(np.float32)
    name = auto.graph.input_ops[0].attrs["name"]
    a, b = FixedExecutor(auto.graph).run({name: x}), FixedExecutor(one.graph).run({name: x})
    assert all(np.array_equal(a[k], b[k]) for k in a)


def _one_conv(tmp_path, out_c: int, in_c: int, side: int):
    """A single 3x3 conv (seeded weights, padding 1) as ONNX, loaded and optimized at -O3."""
    from tidlc.compiler import load, optimize
    w = numpy_helper.from_array(np.random.default_rng(1).normal(size=(out_c, in_c, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1] * 4)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, in_c, side, side])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_c, side, side])], [w])
    path = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    options = CompileOptions.of(opt_level=3)
    g = load(str(path), options)
    optimize(g, options)
    return g


def test_knee_stops_where_doubling_pays_little(tmp_path):
    """A single 3x3 conv over a 1024x1024 image: per-call costs are nothing beside its compute,
    so doubling the batch saves < 10 % and numBatches stays 1."""
    g = _one_conv(tmp_path, out_c=64, in_c=16, side=512)
    n, cycles = choose_batches(g, load_device("tda4vm"))
    assert n == 1 and cycles[1] > cycles[0] * 0.9, cycles
    assert cycles[0] == pytest.approx(estimate(g, "tda4vm", PerfOptions(hints=False)).total_cycles, rel=1e-6)


@pytest.mark.filterwarnings("ignore::tidlc.diagnostics.TidlcWarning")  # synthetic calibration frames
def test_O3_persists_weights_where_the_model_predicts_a_gain(tmp_path, lenet):
    """LeNet's 431 KB of weights fit in the MSMC beside its feature maps: -O3 stores weight
    persistence on (the perf model's cycles per frame drop), `tidlc perf` of the net.bin estimates
    with it, and an explicit off is kept."""
    from tidlc.backends.tidl.perf.hints import choose_persistence
    model, weights = lenet
    auto = _compile(tmp_path, "auto", model, weights, opt_level=3, batches=1)
    off = _compile(tmp_path, "off", model, weights, opt_level=3, batches=1, persist_weights=False)
    on, (c_off, c_on) = choose_persistence(off.graph, load_device("tda4vm"), PerfOptions(batches=1))
    assert on and c_on < c_off
    assert auto.settings == {"batches": 1, "persist_weights": True} and off.settings["persist_weights"] is False
    assert auto.perf["total_cycles"] == pytest.approx(c_on, abs=1) and off.perf["total_cycles"] == pytest.approx(c_off, abs=1)
    assert auto.perf["persistent_weight_bytes"] > 0 == off.perf["persistent_weight_bytes"]


def test_persistence_stays_off_when_nothing_fits(tmp_path):
    """Weights that do not fit in the MSMC (here: 1 KB of it) are loaded every frame either way:
    no gain, so -O3 leaves persistence off."""
    from tidlc.backends.tidl.perf.hints import choose_persistence
    g = _one_conv(tmp_path, out_c=256, in_c=256, side=16)
    on, cycles = choose_persistence(g, load_device("tda4vm"), PerfOptions(msmc_kb=1))
    assert not on and cycles[1] >= cycles[0], cycles
