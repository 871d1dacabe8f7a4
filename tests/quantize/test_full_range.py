"""16-bit MAC layers take the full-range output scale where their weights can pay for it
(``Quantizer.full_range_pays``), from the calibrated mean square of their inputs."""
import math

import numpy as np
import pytest
from tidlc.backends.tidl.fixed import FixedExecutor
from tidlc.backends.tidl.quantize.api import CalibratedRanges, quantize_graph
from tidlc.backends.tidl.quantize.observers import RangeObserver
from tidlc.backends.tidl.quantize.ptq import (
    QuantConfig,
    Quantizer,
    full_range_scale,
    quantize_prepared,
)

from tidlc.config import CompileOptions
from tidlc.interp import run_graph
from tidlc.ir import Builder, TensorType
from tidlc.metrics import SnrAccumulator


def test_mean_square_comes_from_the_histogram_and_merges_exactly():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 2.0, 50_000).astype(np.float32)
    b = rng.uniform(0.0, 10.0, 30_000).astype(np.float32)
    one = RangeObserver()
    one.update(a)
    one.update(b)
    two, other = RangeObserver(), RangeObserver()
    two.update(b)
    other.update(a)
    two.merge(other)
    want = float(np.mean(np.concatenate([a, b]).astype(np.float64) ** 2))
    assert one.mean_square() == pytest.approx(want, rel=1e-3)
    assert one.mean_square() == two.mean_square()  # the same histogram, whatever the order
    assert RangeObserver().mean_square() == 0.0


def chain(seed: int = 0):
    """Four 3x3 convs (ReLU) with batch-norm-like channel gains, then a 1x1 regression conv."""
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.input("x", TensorType((1, 3, 24, 24), layout="NCHW"))
    cin = 3
    for i, cout in enumerate((16, 16, 24, 24)):
        gain = rng.lognormal(0.0, 0.7, (cout, 1, 1, 1))
        w = b.const((rng.normal(0, math.sqrt(2.0 / (9 * cin)), (cout, cin, 3, 3)) * gain).astype(np.float32), f"c{i}.w")
        bias = b.const(rng.normal(0, 0.2, cout).astype(np.float32), f"c{i}.b")
        x = b.op("conv2d", [x, w, bias], pads=(1, 1, 1, 1), act="relu", name=f"c{i}")
        cin = cout
    w = b.const(rng.normal(0, 0.3 / math.sqrt(cin), (4, cin, 1, 1)).astype(np.float32), "head.w")
    b.output(b.op("conv2d", [x, w], pads=(0, 0, 0, 0), name="head"), "y")
    return b.graph


def chain_frames(n, seed):
    rng = np.random.default_rng(seed)
    return [{"x": rng.uniform(-1, 1, (1, 3, 24, 24)).astype(np.float32)} for _ in range(n)]


def quantized(graph, frames, opt_level: int = 3, bits: int = 16, **kw):
    return quantize_graph(graph, CompileOptions.of(bits=bits, opt_level=opt_level, **kw), frames=frames,
                          warn_synthetic=False)


def snr(graph, q, frames) -> float:
    acc = SnrAccumulator()
    executor = FixedExecutor(q.graph)
    for f in frames:
        acc.add(run_graph(graph, f)["y"], executor.run(f)["y"])
    return acc.db


def full_range_of(q, op) -> float:
    """The full-range scale of ``op``'s 16-bit output: its calibrated min/max with the 16-bit headroom."""
    from tidlc.backends.tidl.quantize.api import WIDE_HEADROOM
    obs = q.calibration.observers[id(q.origin[id(op.results[0])])]
    lo, hi = obs.lo * WIDE_HEADROOM, obs.hi * WIDE_HEADROOM
    return full_range_scale(lo, hi, 16, lo < 0)


def test_16bit_layers_take_the_full_range_at_O3_where_their_weights_pay_for_it():
    graph = chain()
    calib, evals = chain_frames(8, 1), chain_frames(8, 2)
    new = quantized(graph, calib, bias_calibration=0)  # -O3's output scales alone (its bias calibration off)
    old = quantized(graph, calib, opt_level=2)  # TIDL's scales
    full = []
    for a, b in zip(new.graph.ops, old.graph.ops):
        if a.kind != "conv2d":
            continue
        out, target = a.results[0].type.quant, full_range_of(new, a)
        s_acc = a.operands[0].type.quant.scale[0] * a.operands[1].type.quant.scale[0]
        assert out.scale[0] == pytest.approx(s_acc / 2.0 ** out.shift, rel=1e-12)  # still a power-of-2 shift
        if out.scale[0] == pytest.approx(target, rel=1e-9):
            full.append(a.name)
            lowered = b.operands[1].type.quant.scale[0] / a.operands[1].type.quant.scale[0]
            assert 1.0 < lowered < 2.0  # the weight grid at most 2x coarser
        else:
            assert target / 2 < out.scale[0] < target  # TIDL's roundBits scale
    assert 0 < len(full) < 5, full  # a choice per layer
    assert snr(graph, new, evals) > snr(graph, old, evals) + 0.5


def test_8bit_layers_keep_tidls_scales(monkeypatch):
    monkeypatch.setattr(Quantizer, "full_range_pays", lambda self, *args: pytest.fail("asked at 8 bits"))
    quantized(chain(), chain_frames(4, 1), bits=8)


def test_without_mean_squares_the_quantizer_keeps_tidls_scales():
    """A ranges function of (lo, hi) only (any caller of quantize_prepared): TIDL's rule everywhere."""
    q = quantized(chain(), chain_frames(4, 1))
    wide = {vid: (obs.lo, obs.hi) for vid, obs in q.calibration.observers.items()}
    rich = CalibratedRanges(q.ranges, wide, {}, q.calibration)

    def scales(ranges, config):
        return [op.results[0].type.quant.scale for op in quantize_prepared(q.reference, ranges, config).graph.ops
                if op.kind == "conv2d"]

    on = QuantConfig(bits=16, full_range_16=True)
    tidl = scales(rich, QuantConfig(bits=16))
    assert scales(lambda v, bits=8: rich(v, bits), on) == tidl
    assert scales(rich, on) != tidl
