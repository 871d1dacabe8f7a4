"""equalize (issue 14, item 1): cross-layer equalization keeps float outputs, equalizes the
per-channel weight ranges of each pair, and lifts per-tensor 8-bit SNR."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tidlc.frontends.onnx.importer import load_onnx
from tidlc.plugins.equalize import _in_ranges, _out_ranges

from tidlc.compiler import optimize
from tidlc.config import CompileOptions
from tidlc.interp import run_graph
from tidlc.metrics import snr_db

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
    from tidlc.backends.tidl.fixed.executor import run_fixed
    from tidlc.backends.tidl.quantize.api import quantize_graph
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


# ----------------------------------------------------------------------------- ReLU6 pairs
def _relu6_chain(tmp_path, spread_lo=-2.0, spread_hi=1.0) -> str:
    """conv 3x3 (3->16, relu6) -> depthwise 3x3 (16, relu6) -> conv 1x1 (16->8): MobileNetV2's
    dw/project pair. The depthwise input is a relu6 output (in [0, 6]), so the interval analysis
    bounds every depthwise channel; its ranges spread over three decades, so the narrow channels
    provably never reach 6 and the wide ones may."""
    rng = np.random.default_rng(3)
    spread = np.logspace(spread_lo, spread_hi, 16).astype(np.float32)
    w1 = rng.normal(size=(16, 3, 3, 3)).astype(np.float32)
    b1 = rng.normal(size=16).astype(np.float32)
    wd = rng.normal(size=(16, 1, 3, 3)).astype(np.float32) * spread[:, None, None, None]
    bd = rng.normal(size=16).astype(np.float32) * spread * 0.1
    w3 = rng.normal(size=(8, 16, 1, 1)).astype(np.float32) / spread[None, :, None, None]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (wd, "wd"), (bd, "bd"), (w3, "w3"))]
    inits += [numpy_helper.from_array(np.array(v, np.float32), n) for v, n in ((0.0, "lo"), (6.0, "hi"))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="c1", kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="r1"),
             helper.make_node("Conv", ["r1", "wd", "bd"], ["c2"], name="dw", kernel_shape=[3, 3], pads=[1] * 4,
                              group=16),
             helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="r2"),
             helper.make_node("Conv", ["r2", "w3"], ["y"], name="pw", kernel_shape=[1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    path = tmp_path / "relu6.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def _dw_scales(o2, o3) -> np.ndarray:
    """Per channel: the depthwise weights at -O3 over those at -O2 (1 where not equalized)."""
    before, after = _weight(o2, "dw")[1], _weight(o3, "dw")[1]
    return _out_ranges(after) / _out_ranges(before)


def test_relu6_pairs_equalized_within_the_bounds(tmp_path):
    """Only the depthwise channels whose pre-activation provably stays below 6 move, and those
    are widened up to the clip at most; the float function is the same for any input, even
    inputs driving most channels into the clip (x100)."""
    from tidlc.plugins.equalize import preact_bounds, value_bounds
    path = _relu6_chain(tmp_path)
    o2, o3 = _graph(path, 2), _graph(path, 3)
    dw2 = _weight(o2, "dw")[0]
    assert dw2.attrs["act"] == "relu6" and _weight(o3, "dw")[0].attrs["act"] == "relu6"
    _low, up = preact_bounds(dw2, value_bounds(o2)[id(dw2.operands[0])])
    scale = _dw_scales(o2, o3)
    safe = up <= 6.0
    assert 0 < safe.sum() < 16, up
    np.testing.assert_allclose(scale[~safe], 1.0, rtol=1e-6)  # may reach the clip: untouched
    assert np.any(np.abs(scale[safe] - 1.0) > 0.1)
    assert np.all(up[safe] * scale[safe] <= 6.0 * (1 + 1e-5))  # widened at most up to the clip
    rng = np.random.default_rng(4)
    for gain in (1.0, 100.0):
        x = (rng.uniform(-1, 1, SHAPE) * gain).astype(np.float32)
        ref, got = run_graph(o2, {"x": x})["y"], run_graph(o3, {"x": x})["y"]
        assert np.max(np.abs(got - ref)) <= 1e-5 * np.max(np.abs(ref)), gain


def test_relu6_skip_leaves_the_pairs(tmp_path, registry):
    from tidlc.passes.manager import PassManager
    path = _relu6_chain(tmp_path)
    graph = _graph(path, 2)
    assert not PassManager.from_string(registry, "equalize{relu6=skip}").run(graph)
    assert PassManager.from_string(registry, "equalize").run(graph)


def test_bounds_hold_on_data(tmp_path):
    """The interval analysis is sound: every observed pre-activation (computed without the clip)
    and every value lies within its bounds, for inputs in the given input range."""
    from tidlc.plugins.equalize import preact_bounds, value_bounds
    path = _relu6_chain(tmp_path, -1.0, 1.0)
    graph = _graph(path, 2)
    bounds = value_bounds(graph, (-1.0, 1.0))
    seen = {}

    def observe(op, results):
        seen.setdefault(id(op), []).append(results[0])

    rng = np.random.default_rng(5)
    for _ in range(4):
        run_graph(graph, {"x": rng.uniform(-1, 1, SHAPE).astype(np.float32)}, observer=observe)
    checked = 0
    for op in graph.compute_ops():
        if id(op.results[0]) not in bounds or id(op) not in seen:
            continue
        lo, hi = bounds[id(op.results[0])]
        y = np.stack(seen[id(op)])
        per = np.moveaxis(y, 2, 0).reshape(y.shape[2], -1) if y.ndim == 5 else y.reshape(1, -1)
        assert np.all(per.min(axis=1) >= lo - 1e-4) and np.all(per.max(axis=1) <= hi + 1e-4), op.name
        assert np.all(np.isfinite(hi)), op.name  # the input range bounds everything here
        checked += 1
    assert checked == 3
    dw = _weight(graph, "dw")[0]
    low, up = preact_bounds(dw, bounds[id(dw.operands[0])])
    assert np.all(low <= up)


def test_relu6_calib_mode(tmp_path, registry):
    """relu6=calib also equalizes the channels the calibration frames keep below 6 / headroom:
    exact on those frames; without --calib it is an error."""
    from tidlc.diagnostics import TidlcError
    from tidlc.passes.base import PassContext
    from tidlc.passes.manager import PassManager
    path = _relu6_chain(tmp_path)
    rng = np.random.default_rng(6)
    frames = rng.uniform(-1, 1, [4] + SHAPE[1:]).astype(np.float32)
    np.save(tmp_path / "calib.npy", frames)
    o2 = _graph(path, 2)
    bound, calib = _graph(path, 2), _graph(path, 2)
    PassManager.from_string(registry, "equalize").run(bound)
    PassManager.from_string(registry, "equalize{relu6=calib}").run(
        calib, PassContext(options=CompileOptions.of(calib=str(tmp_path / "calib.npy"))))
    moved_bound = np.abs(_dw_scales(o2, bound) - 1) > 1e-3
    moved_calib = np.abs(_dw_scales(o2, calib) - 1) > 1e-3
    assert moved_calib.sum() > moved_bound.sum()
    for f in frames:
        x = f[None]
        ref, got = run_graph(o2, {"x": x})["y"], run_graph(calib, {"x": x})["y"]
        assert np.max(np.abs(got - ref)) <= 1e-5 * np.max(np.abs(ref))
    with pytest.raises(TidlcError, match="needs calibration data"):
        PassManager.from_string(registry, "equalize{relu6=calib}").run(_graph(path, 2), PassContext())


def test_bad_options(tmp_path, registry):
    from tidlc.diagnostics import TidlcError
    from tidlc.passes.manager import PassManager
    graph = _graph(_relu6_chain(tmp_path), 2)
    for text in ("equalize{relu6=maybe}", "equalize{input-range=3:1}", "equalize{headroom=0.5}",
                 "equalize{activations=2}", "equalize{depthwise=both}", "equalize{depthwise=per-channel}"):
        with pytest.raises(TidlcError):
            PassManager.from_string(registry, text).run(graph)


def test_bounds_hold_through_pools_adds_concats_and_dense(tmp_path):
    """The interval analysis through an average pool with padding, a max pool, an add, a concat,
    a flatten and two dense layers: every value over random inputs in the input range lies
    within its bounds (per channel, or per feature after the flatten)."""
    from tidlc.plugins.equalize import value_bounds
    rng = np.random.default_rng(8)
    c = {"w1": rng.normal(size=(8, 3, 3, 3)), "b1": rng.normal(size=8), "w2": rng.normal(size=(8, 8, 1, 1)),
         "w3": rng.normal(size=(10, 16 * 4 * 4)) * 0.1, "b3": rng.normal(size=10), "w4": rng.normal(size=(4, 10))}
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in c.items()]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("AveragePool", ["r1"], ["a1"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[1, 1]),
             helper.make_node("Add", ["a1", "c2"], ["s"]),
             helper.make_node("Concat", ["r1", "s"], ["cat"], axis=1),
             helper.make_node("MaxPool", ["cat"], ["p"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["h"], transB=1),
             helper.make_node("Tanh", ["h"], ["t"]),
             helper.make_node("Gemm", ["t", "w4"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    path = tmp_path / "mixed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    g = _graph(str(path), 2)
    bounds = value_bounds(g, (-1.0, 1.0))
    seen = {}

    def observe(op, results):
        seen.setdefault(id(op.results[0]), []).append(results[0])

    for _ in range(6):
        run_graph(g, {"x": rng.uniform(-1, 1, SHAPE).astype(np.float32)}, observer=observe)
    checked = 0
    for key, values in seen.items():
        if key not in bounds:
            continue
        lo, hi = bounds[key]
        y = np.concatenate(values)
        per = np.moveaxis(y, 1, 0).reshape(y.shape[1], -1)
        assert np.all(per.min(axis=1) >= lo - 1e-4) and np.all(per.max(axis=1) <= hi + 1e-4)
        assert np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))
        checked += 1
    assert checked == len([op for op in g.compute_ops()]), checked


def test_image_input_range_from_mean_and_scale(tmp_path, registry):
    """With --mean/--scale the input is an 8-bit image: its range bounds the first layer, whose
    relu6 pair (c1, dw) then moves too; exact on the extreme images (all 0, all 255, random)."""
    from tidlc.plugins.equalize import image_range

    from tidlc.passes.base import PassContext
    from tidlc.passes.manager import PassManager
    assert image_range(CompileOptions.of(mean=(127.5,), scale=(1 / 127.5,)).preprocess) == (-1.0, 1.0)
    assert image_range(CompileOptions.of(scale=(0.5, 0.25, 1.0)).preprocess) == (0.0, 255.0)
    assert image_range(CompileOptions().preprocess) is None
    path = _relu6_chain(tmp_path, -1.0, 1.0)
    o2, plain, image = _graph(path, 2), _graph(path, 2), _graph(path, 2)
    PassManager.from_string(registry, "equalize").run(plain)
    options = CompileOptions.of(mean=(127.5,), scale=(1 / 2550,))
    PassManager.from_string(registry, "equalize").run(image, PassContext(options=options))

    def c1_scales(g):
        before, after = _weight(o2, "c1")[1], _weight(g, "c1")[1]
        return _out_ranges(before) / _out_ranges(after)

    assert np.allclose(c1_scales(plain), 1.0) and not np.allclose(c1_scales(image), 1.0)
    rng = np.random.default_rng(9)
    for pixels in (np.zeros(SHAPE), np.full(SHAPE, 255.0), rng.integers(0, 256, SHAPE)):
        x = ((pixels - 127.5) / 2550).astype(np.float32)
        ref, got = run_graph(o2, {"x": x})["y"], run_graph(image, {"x": x})["y"]
        assert np.max(np.abs(got - ref)) <= 1e-5 * np.max(np.abs(ref))


# ----------------------------------------------------------------------------- -O3's check
def _calib_npz(tmp_path, count=6, seed=5) -> str:
    rng = np.random.default_rng(seed)
    path = tmp_path / "calib.npz"
    np.savez(path, x=rng.uniform(-1, 1, [count] + SHAPE).astype(np.float32))
    return str(path)


def test_undo_restores_the_original_weights(unbalanced):
    from tidlc.compiler import load
    options = CompileOptions.of(opt_level=3, emit="none")
    o2 = _graph(unbalanced, 2)
    graph = load(unbalanced, options)
    undo = optimize(graph, options).stash["equalize"]
    assert not np.array_equal(_weight(graph, "dw")[1], _weight(o2, "dw")[1])
    assert undo.restore(graph) == 3  # c1 (weights, bias), dw (both sides), pw
    for name in ("c1", "dw", "pw"):
        (op, w), (op2, w2) = _weight(graph, name), _weight(o2, name)
        np.testing.assert_array_equal(w, w2)
        if len(op2.operands) > 2:
            np.testing.assert_array_equal(op.operands[2].const_value(), op2.operands[2].const_value())


def test_check_off_leaves_no_record(unbalanced):
    from tidlc.compiler import load
    options = CompileOptions.of(emit="none", passes="shape-inference,fuse-activation,equalize{check=off}")
    graph = load(unbalanced, options)
    assert "equalize" not in optimize(graph, options).stash


@pytest.mark.parametrize("prefer", ["with", "without"])
def test_O3_keeps_the_better_version(unbalanced, tmp_path, monkeypatch, prefer):
    """The quantize pass quantizes both versions and keeps the one with the better measured SNR
    (the measure is replaced here to force each verdict; the real one is checked below)."""
    from tidlc.backends.tidl.quantize import api

    from tidlc.compiler import compile_model
    real = api.variant_snr
    seen = []

    def forced(q, reference, frames, floats=None):
        seen.append(real(q, reference, frames, floats))
        equalized = len(seen) == 1  # the equalized version is measured first
        return 50.0 if equalized == (prefer == "with") else 10.0

    monkeypatch.setattr(api, "variant_snr", forced)
    options = CompileOptions.of(opt_level=3, emit="none", quantize=True, calib=_calib_npz(tmp_path))
    graph = compile_model(unbalanced, options).graph
    verdict = graph.attrs["quant.equalize"]
    assert verdict.startswith("kept" if prefer == "with" else "undone"), verdict
    # the chosen weights are in the compiled graph: the equalized depthwise ranges are balanced
    dw = next(op for op in graph.ops if op.name == "dw")
    codes = np.abs(dw.operands[1].const_value().astype(np.int64)).reshape(16, -1).max(axis=1)
    spread = codes.max() / max(codes.min(), 1)
    assert (spread < 10) == (prefer == "with"), (prefer, spread)


def test_O3_check_measures_both(unbalanced, tmp_path):
    """Unforced: on this model equalization wins by far at 8 bits, and the verdict says by how much."""
    from tidlc.compiler import compile_model
    options = CompileOptions.of(opt_level=3, emit="none", quantize=True, calib=_calib_npz(tmp_path))
    verdict = compile_model(unbalanced, options).graph.attrs["quant.equalize"]
    assert verdict.startswith("kept:"), verdict
    with_eq, without = (float(v.split(" dB")[0].split()[-1]) for v in verdict.split(", ")[:2])
    assert with_eq >= without + 3.0, verdict


# ----------------------------------------------------------------------------- activation ranges
def _spread(graph, name, frames) -> float:
    """max / min over channels of ``name``'s observed output range (|.| max) on ``frames``."""
    from tidlc.plugins.equalize import observed_ranges
    op = next(op for op in graph.ops if op.name == name)
    low, up = observed_ranges(graph, [op], [{"x": f[None]} for f in frames])[id(op)]
    r = np.maximum(np.abs(low), np.abs(up))
    return float(r.max() / r[r > 0].min())


def test_activations_weight_balances_the_observed_ranges(unbalanced, tmp_path, registry):
    """equalize{activations=1} balances the first layers' observed output ranges (against the
    second layers' weight ranges) instead of their weight ranges; float outputs stay."""
    from tidlc.passes.base import PassContext
    from tidlc.passes.manager import PassManager
    calib = _calib_npz(tmp_path, count=6)
    frames = np.load(calib)["x"][:, 0]
    graphs = {}
    for beta in (0, 1):
        graph = _graph(unbalanced, 2)
        PassManager.from_string(registry, f"equalize{{activations={beta}}}").run(
            graph, PassContext(options=CompileOptions.of(calib=calib)))
        graphs[beta] = graph
    o2 = _graph(unbalanced, 2)
    assert _spread(graphs[1], "dw", frames) < _spread(graphs[0], "dw", frames) / 2
    assert _spread(graphs[1], "dw", frames) < _spread(o2, "dw", frames) / 2
    x = frames[:1]
    ref, got = run_graph(o2, {"x": x})["y"], run_graph(graphs[1], {"x": x})["y"]
    assert np.max(np.abs(got - ref)) <= 1e-5 * np.max(np.abs(ref))


@pytest.mark.parametrize("bits", [8, 16])
def test_O3_16bit_check_also_tries_activation_weights(unbalanced, tmp_path, bits):
    """At 16 bits (and with real calibration frames) -O3's check also redoes the pass with each
    activation weight, keeps the best of all versions, and says which; at 8 bits it does not."""
    from tidlc.backends.tidl.quantize.api import ACTIVATION_WEIGHTS

    from tidlc.compiler import compile_model
    options = CompileOptions.of(opt_level=3, emit="none", quantize=True, bits=bits, calib=_calib_npz(tmp_path))
    verdict = compile_model(unbalanced, options).graph.attrs["quant.equalize"]
    tried = [f"(activations={b:g})" for b in ACTIVATION_WEIGHTS]
    assert all((t in verdict) == (bits == 16) for t in tried), verdict
    if bits == 16:
        snrs = [float(part.split(" dB")[0].split()[-1]) for part in verdict.split(": ", 1)[1].split("; ")]
        without = float(verdict.split(", ")[-2].split(" dB")[0].split()[-1])
        best = max(snrs)
        assert verdict.startswith("undone" if without > best else "kept"), verdict


def test_backend_quantize_of_the_float_graph_runs_compiles_checks(unbalanced, tmp_path):
    """`tidlc compare`, `eval` and `tune` quantize float_graph() through the backend: at -O3 they
    get the equalize check compile runs, the same verdict and codes, and the float graph is left
    equalized, so a second quantization (eval's second precision) gets them again."""
    from tidlc.compiler import backend_for, compile_model, float_graph, float_stash, plugins_for
    options = CompileOptions.of(opt_level=3, emit="none", quantize=True, calib=_calib_npz(tmp_path))
    compiled = compile_model(unbalanced, options).graph
    graph = float_graph(unbalanced, options)
    assert "equalize" in float_stash(graph)
    backend = backend_for(options, plugins_for(options))
    want = next(op for op in compiled.ops if op.name == "dw").operands[1].const_value()
    for _ in range(2):
        q = backend.quantize(graph, options)
        assert q.graph.attrs["quant.equalize"] == compiled.attrs["quant.equalize"]
        np.testing.assert_array_equal(next(op for op in q.graph.ops if op.name == "dw").operands[1].const_value(),
                                      want)
    assert float_stash(_graph(unbalanced, 3)) == {}


# ----------------------------------------------------------------------------- per-channel depthwise
def _observed(graph, name, frames) -> np.ndarray:
    from tidlc.plugins.equalize import observed_ranges
    op = next(op for op in graph.ops if op.name == name)
    low, up = observed_ranges(graph, [op], [{"x": f[None]} for f in frames])[id(op)]
    return np.maximum(np.abs(low), np.abs(up))


def test_per_channel_scales_rules():
    """The three cases of per_channel_scales on hand-made ranges: a depthwise second grows the
    first's narrow channels to the wider of their weight row and output (both maxima stay); a
    depthwise first balances its outputs against the second's input ranges; two depthwise
    layers grow the outputs alone. A channel with no weights or no output keeps 1."""
    from types import SimpleNamespace as NS

    from tidlc.plugins.equalize import per_channel_scales
    def layer(groups, shape):
        return NS(kind="conv2d", attrs={"groups": groups}, operands=[None, NS(type=NS(shape=shape))])
    conv, dw = layer(1, (4, 4, 3, 3)), layer(4, (4, 1, 3, 3))
    r1, r2, act = np.array([4.0, 1.0, 2.0, 0.0]), np.array([1.0, 4.0, 2.0, 1.0]), np.array([1.0, 2.0, 0.5, 3.0])
    np.testing.assert_allclose(per_channel_scales(conv, dw, r1, r2, act), [1.0, 1.0, 0.5, 1.0])
    np.testing.assert_allclose(per_channel_scales(dw, conv, r1, r2, act), [1.0, np.sqrt(0.5), 0.5, np.sqrt(3)])
    np.testing.assert_allclose(per_channel_scales(dw, dw, r1, r2, act), [0.5, 1.0, 0.25, 1.0])


def test_depthwise_per_channel_balance(unbalanced, tmp_path, registry):
    """equalize{depthwise=per-channel}: float outputs stay; the conv's channels feeding the
    depthwise layer grow (finer per-tensor steps) without widening its weight or output maxima;
    the depthwise layer's outputs are balanced against the pointwise layer's inputs."""
    from tidlc.passes.base import PassContext
    from tidlc.passes.manager import PassManager
    calib = _calib_npz(tmp_path, count=6)
    frames = np.load(calib)["x"][:, 0]
    o2 = _graph(unbalanced, 2)
    graph = _graph(unbalanced, 2)
    PassManager.from_string(registry, "equalize{depthwise=per-channel}").run(
        graph, PassContext(options=CompileOptions.of(calib=calib)))
    x = frames[:1]
    ref, got = run_graph(o2, {"x": x})["y"], run_graph(graph, {"x": x})["y"]
    assert np.max(np.abs(got - ref)) <= 1e-5 * np.max(np.abs(ref))
    (_, w_before), (_, w_after) = _weight(o2, "c1"), _weight(graph, "c1")
    r_before, r_after = _out_ranges(w_before), _out_ranges(w_after)
    assert r_after.max() <= r_before.max() * (1 + 1e-6)
    assert np.all(r_after >= r_before * (1 - 1e-6)) and np.any(r_after > 1.5 * r_before)
    a_before, a_after = _observed(o2, "c1", frames), _observed(graph, "c1", frames)
    assert a_after.max() <= a_before.max() * (1 + 1e-5)
    assert np.median(a_after / a_after.max()) > np.median(a_before / a_before.max())
    # the pointwise pair: the depthwise outputs against the pointwise input ranges, sqrt(act / r2)
    act = _observed(graph, "dw", frames)
    _, w3 = _weight(graph, "pw")
    pw = next(op for op in graph.ops if op.name == "pw")
    balance = act / _in_ranges(pw, w3)
    assert balance.max() / balance.min() < 3, balance


def test_depthwise_auto_follows_per_channel_weights(unbalanced, tmp_path, registry):
    """depthwise=auto is per-channel with --per-channel-depthwise and --calib, per-tensor otherwise."""
    from tidlc.passes.base import PassContext
    from tidlc.passes.manager import PassManager
    calib = _calib_npz(tmp_path, count=6)
    results = {}
    for text, options in (("auto", CompileOptions.of(calib=calib, per_channel_depthwise=True)),
                          ("per-channel", CompileOptions.of(calib=calib)),
                          ("auto", CompileOptions.of(calib=calib)),
                          ("per-tensor", CompileOptions.of(calib=calib, per_channel_depthwise=True))):
        graph = _graph(unbalanced, 2)
        PassManager.from_string(registry, f"equalize{{depthwise={text}}}").run(graph, PassContext(options=options))
        results.setdefault(text, []).append(_weight(graph, "dw")[1])
    np.testing.assert_array_equal(results["auto"][0], results["per-channel"][0])
    np.testing.assert_array_equal(results["auto"][1], results["per-tensor"][0])
    assert not np.array_equal(results["auto"][0], results["auto"][1])


def test_O3_16bit_check_tries_per_channel_depthwise(unbalanced, tmp_path, monkeypatch):
    """At 16 bits -O3's check also tries per-channel depthwise scales with the balance that suits
    them; when that version wins (forced here) the compiled graph has per-channel depthwise
    weights and says so, and the verdict names it."""
    from tidlc.backends.tidl.quantize import api

    from tidlc.compiler import compile_model
    real = api.variant_snr
    labels = []

    def forced(q, reference, frames, floats=None):
        real(q, reference, frames, floats)
        labels.append(q.settings.per_channel_depthwise)
        return 60.0 if q.settings.per_channel_depthwise and len(labels) <= 4 else 40.0

    monkeypatch.setattr(api, "variant_snr", forced)
    options = CompileOptions.of(opt_level=3, emit="none", quantize=True, bits=16, calib=_calib_npz(tmp_path))
    graph = compile_model(unbalanced, options).graph
    verdict = graph.attrs["quant.equalize"]
    assert "(depthwise=per-channel)" in verdict and verdict.startswith("kept (equalize{depthwise=per-channel})"), \
        verdict
    assert graph.attrs.get("quant.per_channel_depthwise") is True
    # unforced, at 8 bits the variant is not tried
    monkeypatch.setattr(api, "variant_snr", real)
    options = CompileOptions.of(opt_level=3, emit="none", quantize=True, bits=8, calib=_calib_npz(tmp_path))
    assert "per-channel" not in compile_model(unbalanced, options).graph.attrs["quant.equalize"]
