"""Automatic mixed precision (--mixed-precision auto --time-budget F): budget, SNR, graph attrs, CLI."""
import numpy as np
import pytest
from tidlc.backends.tidl.fixed import FixedExecutor
from tidlc.backends.tidl.quantize.api import quantize_graph

from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError
from tidlc.interp import Interpreter
from tidlc.metrics import SnrAccumulator

from .conftest import frames


def _q(graph, **kw):
    return quantize_graph(graph, CompileOptions.of(**kw), frames=frames(8), warn_synthetic=False)


def _snr(q, graph):
    acc = SnrAccumulator()
    ex, it = FixedExecutor(q.graph), Interpreter(graph)
    for f in frames(8, seed=5):
        ref, out = it.run(f), ex.run(f)
        for name in ref:
            acc.add(ref[name], out[name])
    return acc.db


@pytest.mark.parametrize("budget", [1.05, 1.5])
def test_auto_stays_within_budget_and_beats_8bit(cnn, budget):
    q8 = _q(cnn)
    q = _q(cnn, mixed_precision="auto", time_budget=budget)
    m = q.mixed
    assert m is not None and m.ratio <= budget + 1e-9
    assert list(q.graph.attrs.get("quant.layers_16bit", [])) == list(m.layers) == list(q.layers_16bit)
    assert "mixed precision" in q.graph.attrs["quant.mixed_precision"]
    if m.layers:
        assert m.snr > m.snr_8bit
        assert _snr(q, cnn) >= _snr(q8, cnn) - 0.5


def test_factor_is_the_same_mechanism(cnn):
    a = _q(cnn, mixed_precision_factor=1.5)
    b = _q(cnn, mixed_precision="auto", time_budget=1.5)
    assert a.layers_16bit == b.layers_16bit


def test_budget_checks(cnn):
    with pytest.raises(TidlcError):
        _q(cnn, time_budget=0.9)
    with pytest.raises(TidlcError):
        _q(cnn, time_budget=1.2, mixed_precision_factor=1.3)
    assert _q(cnn, mixed_precision="off", time_budget=1.5).mixed is None


def test_cli_records_layers_in_net_bin(tmp_path, small_caffe_net):
    from tidlc.backends.tidl.binfmt import read_compiled

    from tidlc.cli import main
    net = tmp_path / "net.prototxt"
    net.write_text(small_caffe_net)
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).uniform(-1, 1, (4, 1, 3, 12, 12)).astype(np.float32))
    out = tmp_path / "out"
    code = main(["compile", str(net), "--random-weights", "1",
                "--calib", str(calib), "--mixed-precision", "auto", "--time-budget", "1.2", "-o", str(out)])
    assert code == 0
    attrs_ = read_compiled(str(out)).graph.attrs
    assert "quant.mixed_precision" in attrs_ and attrs_["quant.time_ratio"] <= 1.2 + 1e-9
    assert isinstance(attrs_.get("quant.layers_16bit", ()), (list, tuple))
