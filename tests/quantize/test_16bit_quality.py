"""16-bit quality: the test models reach 60 dB at --bits 16, the 16-bit kernels that used to cap it
(average pools, tables) are exact, and `tidlc compare --bits 16` names the layer that loses it.

The models and frames are those of benchmarks/quant16_quality.py (natural-image crops), on few
frames so the test stays fast; the figures on more frames are in docs/quantization.md.
"""
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tidlc.backends.tidl.fixed import FixedExecutor
from tidlc.backends.tidl.fixed import reference as ref
from tidlc.backends.tidl.fixed.spec_kernels import table_of
from tidlc.backends.tidl.quantize.api import quantize_graph

from tidlc.cli import main
from tidlc.config import CompileOptions
from tidlc.interp import Interpreter, run_graph
from tidlc.ir import Builder, TensorType
from tidlc.metrics import SnrAccumulator

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
CAFFE = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "caffe"


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("cv2")
    import importlib.util
    sys.path.insert(0, str(BENCH))  # it imports its sibling quant_quality
    try:
        spec = importlib.util.spec_from_file_location("quant16_quality", BENCH / "quant16_quality.py")
        quant16_quality = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(quant16_quality)
    finally:
        sys.path.remove(str(BENCH))
    try:
        images = quant16_quality.qq.natural_images()
    except SystemExit:
        pytest.skip("no natural images installed (scikit-image / matplotlib)")
    return quant16_quality, images


def output_snr(bench, key, tmp_path, calib=16, evals=3) -> dict[str, float]:
    module, images = bench
    model = module.models(str(tmp_path), with_tf=False)[key]
    if not Path(model.path).exists() or (model.weights and not Path(model.weights).exists()):
        pytest.skip(f"{key}: model not available offline")
    from tidlc.compiler import load, optimize
    opts = model.options(bits=16)
    graph = load(model.path, opts)
    optimize(graph, opts)
    q = quantize_graph(graph, opts, frames=module.frames_for(graph, model, images, calib, seed=1),
                       warn_synthetic=False)
    frames = module.frames_for(graph, model, images, evals, seed=2)
    interp, executor = Interpreter(graph), FixedExecutor(q.graph)
    return module.output_snrs([interp.run(f) for f in frames], [executor.run(f) for f in frames])


# the test models that reach 60 dB on every output (benchmarks/quant16_quality.py measures them all;
# the UltraFace nets, MTCNN ONet and the trained-like MobileNetV2 do not yet: docs/quantization.md)
AT_60_DB = ["lenet", "cifar10", "mtcnn-pnet", "mtcnn-rnet", "head-sigmoid", "head-textdet", "head-tanh",
            "head-softmax", "head-exp", "head-hardswish", "head-hardsigmoid"]


@pytest.mark.parametrize("key", AT_60_DB)
def test_every_output_reaches_60_db_at_16_bits(bench, key, tmp_path):
    snrs = output_snr(bench, key, tmp_path)
    assert min(snrs.values()) >= 60.0, snrs


# ----------------------------------------------------------------------------- average pools
def pool_net(kernel: int = 7, size: int = 7, global_: bool = True):
    rng = np.random.default_rng(3)
    b = Builder()
    x = b.input("x", TensorType((1, 4, size, size), layout="NCHW"))
    w = b.const(rng.normal(0, 0.5, (8, 4, 3, 3)).astype(np.float32), "c.w")
    c = b.op("conv2d", [x, w], pads=(1, 1, 1, 1), act="relu", name="c")
    if global_:
        p = b.op("global_pool", [c], mode="avg", name="gap")
    else:
        p = b.op("pool2d", [c], mode="avg", kernel=(kernel, kernel), strides=(1, 1), pads=(2, 2, 2, 2),
                 count_include_pad=False, name="gap")
    b.output(p, "y")
    return b.graph


def pool_frames(n, size=7, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.uniform(-1, 1, (1, 4, size, size)).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("global_", [True, False])
def test_16bit_average_pools_divide_in_q30_and_the_fast_kernels_agree(global_):
    graph = pool_net(kernel=5, global_=global_)
    q16 = quantize_graph(graph, CompileOptions.of(bits=16), frames=pool_frames(4), warn_synthetic=False)
    q8 = quantize_graph(graph, CompileOptions.of(bits=8), frames=pool_frames(4), warn_synthetic=False)
    pool16 = next(op for op in q16.graph.ops if op.name == "gap")
    pool8 = next(op for op in q8.graph.ops if op.name == "gap")
    assert pool16.results[0].type.quant.shift == ref.AVG_POOL_SHIFT_16
    assert pool8.results[0].type.quant.shift is None  # 8 bits: TIDL's Q16 reciprocal, as before
    for feeds in pool_frames(3, seed=5):
        fast = FixedExecutor(q16.graph, kernels="auto").run(feeds, raw=True)["y"]
        spec = FixedExecutor(q16.graph, kernels="numpy").run(feeds, raw=True)["y"]
        assert np.array_equal(fast, spec)


def test_a_7x7_global_average_is_exact_to_half_a_step_at_16_bits():
    """round(2**16 / 49) is 0.035 % off 1/49: a Q16 average of a 16-bit tensor is off by up to 11
    steps (69 dB); in Q30 it is the exact average rounded once."""
    rng = np.random.default_rng(1)
    q = rng.integers(0, 65536, (2, 16, 7, 7))
    exact = q.reshape(2, 16, -1).mean(axis=2).reshape(2, 16, 1, 1)
    assert np.abs(ref.global_avg_pool(q, ref.AVG_POOL_SHIFT_16) - exact).max() <= 0.5
    assert np.abs(ref.global_avg_pool(q) - exact).max() > 5  # the Q16 reciprocal's error
    sums = q.reshape(2, 16, -1).sum(axis=2).reshape(2, 16, 1, 1)
    assert np.array_equal(ref.global_avg_pool(q, ref.AVG_POOL_SHIFT_16), ref.round_shift(
        sums * ref.round_half_away(2.0 ** 30 / 49).astype(np.int64), 30))


def test_the_q30_pool_survives_net_bin(tmp_path):
    from tidlc.backends.tidl.binfmt import read_compiled, write_bin
    graph = pool_net()
    q = quantize_graph(graph, CompileOptions.of(bits=16), frames=pool_frames(4), warn_synthetic=False)
    write_bin(q.graph, str(tmp_path))
    model = read_compiled(str(tmp_path))
    pool = next(op for op in model.graph.ops if op.name == "gap")
    assert pool.results[0].type.quant.shift == ref.AVG_POOL_SHIFT_16
    feeds = pool_frames(1, seed=9)[0]
    assert np.array_equal(FixedExecutor(model.graph).run(feeds)["y"], FixedExecutor(q.graph).run(feeds)["y"])


# ----------------------------------------------------------------------------- tables
def logit_net(bias: float = -20.0, gain: float = 12.0, kind: str = "sigmoid"):
    rng = np.random.default_rng(4)
    b = Builder()
    x = b.input("x", TensorType((1, 4, 8, 8), layout="NCHW"))
    w = b.const((rng.normal(0, 1, (2, 4, 1, 1)) * gain).astype(np.float32), "logit.w")
    bias_v = b.const(np.full(2, bias, np.float32), "logit.b")
    c = b.op("conv2d", [x, w, bias_v], name="logit")
    b.output(b.op(kind, [c], name="prob"), "y")
    return b.graph


def logit_frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.uniform(-1, 1, (1, 4, 8, 8)).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("kind", ["sigmoid", "tanh"])
def test_16bit_tables_are_exact_to_half_a_step(kind):
    graph = logit_net(bias=-2.0, gain=3.0, kind=kind)
    q = quantize_graph(graph, CompileOptions.of(bits=16), frames=logit_frames(4), warn_synthetic=False)
    op = next(o for o in q.graph.ops if o.name == "prob")
    table = table_of(op)
    xq, out = op.operands[0].type.quant, op.results[0].type.quant
    assert table.size == 1 << 16  # one entry per 16-bit input code: no interpolation needed
    codes = np.arange(xq.qmin, xq.qmax + 1)
    fn = {"sigmoid": lambda v: 1 / (1 + np.exp(-v)), "tanh": np.tanh}[kind]
    exact = fn(codes / xq.scale[0]) * out.scale[0]
    assert np.abs(table - exact).max() <= 0.5 + 1e-9


def test_a_logit_read_only_by_a_sigmoid_ends_where_the_table_saturates(monkeypatch):
    """Logits in about [-60, 20]: below -11.8 (and above 11.8) the 16-bit sigmoid is code 0 (65535),
    so the logit's range ends there and its step is about 4x finer: the sigmoid's output gains
    about 8 dB (82 vs 74 dB) over the logit quantized to its calibrated range."""
    from tidlc.backends.tidl.quantize.ptq import Quantizer
    graph = logit_net()
    frames = logit_frames(8)
    q = quantize_graph(graph, CompileOptions.of(bits=16), frames=frames, warn_synthetic=False)
    logit = next(o for o in q.graph.ops if o.name == "logit").results[0].type.quant
    top = max(-logit.qmin, logit.qmax) / logit.scale[0]
    assert 11.0 < top < 12.5  # not the calibrated ~60
    monkeypatch.setattr(Quantizer, "table_window", lambda self, v, bits, lo, hi: None)
    plain = quantize_graph(graph, CompileOptions.of(bits=16), frames=frames, warn_synthetic=False)
    plain_logit = next(o for o in plain.graph.ops if o.name == "logit").results[0].type.quant
    assert max(-plain_logit.qmin, plain_logit.qmax) / plain_logit.scale[0] > 40
    windowed, calibrated = SnrAccumulator(), SnrAccumulator()
    for feeds in logit_frames(4, seed=3):
        want = run_graph(graph, feeds)["y"]
        windowed.add(want, FixedExecutor(q.graph).run(feeds)["y"])
        calibrated.add(want, FixedExecutor(plain.graph).run(feeds)["y"])
    assert windowed.db > calibrated.db + 6, (windowed.db, calibrated.db)


def test_a_logit_with_another_reader_keeps_its_calibrated_range():
    graph = logit_net()
    logit = next(o for o in graph.ops if o.name == "logit").results[0]
    graph.outputs.append(logit)
    graph.output_names.append("logit")
    q = quantize_graph(graph, CompileOptions.of(bits=16), frames=logit_frames(8), warn_synthetic=False)
    quant = next(o for o in q.graph.ops if o.name == "logit").results[0].type.quant
    assert max(-quant.qmin, quant.qmax) / quant.scale[0] > 40  # a graph output: never clipped on purpose


def test_8bit_logits_are_left_as_tidl_calibrates_them():
    graph = logit_net()
    q = quantize_graph(graph, CompileOptions.of(bits=8), frames=logit_frames(8), warn_synthetic=False)
    quant = next(o for o in q.graph.ops if o.name == "logit").results[0].type.quant
    assert max(-quant.qmin, quant.qmax) / quant.scale[0] > 40


# ----------------------------------------------------------------------------- compare
def bad_layer_model(path):
    """conv a -> conv 'bad' (one output channel biased to 3000, the seven others about 1) -> conv c
    (which ignores that channel) -> conv d. At 16 bits 'bad's one per-tensor step is 1/7.6: the
    channels c reads round to a few hundred levels. Its own SNR is high (the wide channel dominates
    its energy) and c's own rounding is fine, so c is merely the first layer below 60 dB; the layer
    to fix is 'bad'."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def conv(name, x, w, b):
        inits.extend([numpy_helper.from_array(w.astype(np.float32), name + ".w"),
                      numpy_helper.from_array(b.astype(np.float32), name + ".b")])
        nodes.append(helper.make_node("Conv", [x, name + ".w", name + ".b"], [name], pads=[w.shape[2] // 2] * 4))
        return name

    a = conv("a", "input", rng.normal(0, 0.3, (8, 3, 3, 3)), rng.normal(0, 0.1, 8))
    nodes.append(helper.make_node("Relu", [a], ["ar"]))
    bias = rng.normal(0, 0.1, 8)
    bias[0] = 3000.0
    bad = conv("bad", "ar", rng.normal(0, 0.3, (8, 8, 3, 3)), bias)
    wc = rng.normal(0, 0.3, (4, 8, 1, 1))
    wc[:, 0] = 0.0
    c = conv("c", bad, wc, rng.normal(0, 0.1, 4))
    nodes.append(helper.make_node("Relu", [c], ["cr"]))
    d = conv("d", "cr", rng.normal(0, 0.3, (4, 4, 3, 3)), rng.normal(0, 0.1, 4))
    graph = helper.make_graph(nodes, "bad16", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info(d, TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_compare_16bit_names_the_layer_that_loses_it(tmp_path, capsys):
    path = tmp_path / "bad.onnx"
    bad_layer_model(path)
    frames = np.random.default_rng(2).uniform(-1, 1, (8, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "calib.npy", frames)
    code = main(["compare", str(path), "--bits", "16", "--calib", str(tmp_path / "calib.npy"), "--json", "-"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["threshold_db"] == 60.0  # the 16-bit default
    assert doc["culprit"] == "bad"
    rows = {r["name"]: r for r in doc["layers"]}
    assert rows["bad"]["culprit"] and rows["bad"]["alone_snr_db"] < 50
    assert rows["bad"]["own_snr_db"] > 80  # its own energy hides it: only the injection finds it
    assert rows["c"]["below"] and rows["c"]["own_snr_db"] > 80 and "inherited" in rows["c"]["cause"]
    assert "channels' ranges differ" in rows["bad"]["cause"] and "equalize{activations=0.5" in rows["bad"]["cause"]
    code = main(["compare", str(path), "--bits", "16", "--calib", str(tmp_path / "calib.npy")])
    out, _ = capsys.readouterr()
    assert code == 0
    assert "* costs the outputs the most: bad (conv2d)" in out
    assert "first layer below 60 dB: c (conv2d" in out


def test_compare_without_attribution_keeps_the_old_table(tmp_path, capsys):
    path = tmp_path / "bad.onnx"
    bad_layer_model(path)
    code = main(["compare", str(path), "--bits", "16", "--no-attribution", "--json", "-"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["culprit"] is None and all(r["alone_snr_db"] is None for r in doc["layers"])
    assert all(r["own_snr_db"] is not None for r in doc["layers"])  # the own error is always measured


def test_own_snr_of_exact_data_movement_is_infinite(tmp_path, capsys):
    """A transpose moves codes: nothing of its own (the float op run on its fixed-point input is
    its output exactly)."""
    b = Builder()
    x = b.input("x", TensorType((1, 3, 4, 5), layout="NCHW"))
    w = b.const(np.random.default_rng(0).normal(0, 1, (6, 3, 1, 1)).astype(np.float32), "c.w")
    c = b.op("conv2d", [x, w], name="c")
    b.output(b.op("transpose", [c], perm=(0, 2, 3, 1), name="t"), "y")
    graph = b.graph
    from tidlc.commands.compare import layer_rows
    feeds = {"x": np.random.default_rng(1).uniform(-1, 1, (1, 3, 4, 5)).astype(np.float32)}
    q = quantize_graph(graph, CompileOptions.of(bits=16), frames=[feeds], warn_synthetic=False)
    rows = {r.name: r for r in layer_rows(q, feeds, attribution=True)}
    assert rows["t"].own_snr_db == float("inf") and rows["t"].alone_snr_db == float("inf")
    # the output is c's result moved: c's own error alone gives the outputs c's own SNR; the outputs'
    # real SNR is lower (the input's rounding too)
    assert np.isfinite(rows["c"].own_snr_db) and rows["c"].alone_snr_db == pytest.approx(rows["c"].own_snr_db, abs=0.1)
    assert rows["t"].snr_db <= rows["c"].alone_snr_db
    acc = SnrAccumulator()
    acc.add(run_graph(graph, feeds)["y"], FixedExecutor(q.graph).run(feeds)["y"])
    assert acc.db == pytest.approx(rows["t"].snr_db, abs=0.01)


def test_an_output_no_code_can_show_is_not_named_the_culprit():
    """A score map far below its threshold (an empty segmentation mask: sigmoid of logits near -20,
    values about 1e-9) is code 0 everywhere at 16 bits: its 0 dB says nothing about quantization.
    compare says so for that row, and judges the other layers on the outputs that show something
    (before: the sigmoid was named as costing the outputs the most, at -90 dB)."""
    from tidlc.commands.compare import culprit_of, diagnose, format_table, layer_rows, mark
    rng = np.random.default_rng(6)
    b = Builder()
    x = b.input("x", TensorType((1, 4, 8, 8), layout="NCHW"))
    f = b.op("conv2d", [x, b.const(rng.normal(0, 0.5, (8, 4, 3, 3)).astype(np.float32))], name="features",
             pads=(1, 1, 1, 1), act="relu")
    logit = b.op("conv2d", [f, b.const(rng.normal(0, 0.02, (1, 8, 1, 1)).astype(np.float32)),
                            b.const(np.full(1, -20.0, np.float32))], name="logit")
    b.output(b.op("sigmoid", [logit], name="mask"), "mask")
    b.output(b.op("conv2d", [f, b.const(rng.normal(0, 0.5, (4, 8, 1, 1)).astype(np.float32))], name="box"), "box")
    frames = logit_frames(4)
    q = quantize_graph(b.graph, CompileOptions.of(bits=16), frames=frames, warn_synthetic=False)
    rows = {r.name: r for r in layer_rows(q, frames[0], attribution=True)}
    mask = rows["mask"]
    assert mask.below_step and mask.codes_used == 1 and mask.float_max < 1e-8
    assert "below the step" in diagnose(mask)
    assert not rows["box"].below_step and np.isfinite(rows["box"].alone_snr_db)
    # the logit's error reaches only the blank mask: nothing to judge it by
    assert rows["logit"].alone_snr_db == float("inf")
    mark(list(rows.values()), 60.0)
    assert culprit_of(list(rows.values())).name in ("features", "box", "x")
    assert mark(list(rows.values()), 60.0) is None  # not "the first layer below 60 dB": said apart
    table = format_table(list(rows.values()), 60.0)
    assert "every layer is at or above 60 dB" in table and "~ mask (sigmoid, 0.0 dB): below the step" in table


def test_bounds_isolate_each_part_of_quantization(bench):
    """quant16_quality --bounds: weights (and activations) on one grid per tensor lose more than on
    a grid per channel, and each bound is finite (rounding happened) on a real model."""
    module, images = bench
    model = module.models("/tmp", with_tf=False)["mtcnn-pnet"]
    if not Path(model.path).exists():
        pytest.skip("model not available offline")
    from tidlc.compiler import load, optimize
    opts = model.options(bits=16)
    graph = load(model.path, opts)
    optimize(graph, opts)
    frames = module.frames_for(graph, model, images, 2, seed=2)
    refs = [Interpreter(graph).run(f) for f in frames]
    got = module.bounds(graph, frames, refs, 16)
    assert set(got) == {"weights", "weights-per-channel", "activations", "activations-per-channel"}
    assert all(40 < v < 150 for v in got.values())
    assert got["weights-per-channel"] > got["weights"]
    assert got["activations-per-channel"] > got["activations"]
    assert module.bounds(graph, frames, refs, 8)["activations"] < got["activations"] - 30  # 8 bits: 48 dB less


def test_an_inherited_error_is_traced_to_a_layer_before_it():
    """EfficientNet: the first layer below the threshold is an early squeeze-excite pool, the culprit
    the last pool; what the early one inherits cannot come from the end, so the cause names the
    earlier layer with the largest error of its own."""
    from tidlc.commands.compare import Row, mark

    def row(name, snr, own, alone):
        return Row(name, "conv2d", [1, 8, 4, 4], "i8", 1.0, None, snr, 1.0, 0.0, 0.0, 1.0, 1.0, 200,
                   own_snr_db=own, alone_snr_db=alone)

    rows = [row("stem", 45.0, 45.0, 50.0), row("swish", 36.0, 34.8, 48.0), row("se_pool", 29.5, 35.5, 47.0),
            row("head", 31.0, 40.0, 44.0), row("avg_pool", 30.0, 35.0, 35.0)]
    first = mark(rows, 30.0)
    assert first.name == "se_pool" and rows[-1].culprit
    assert first.cause.endswith("accumulated over the layers before it (the largest own error among them: swish, "
                                "own 34.8 dB)")
    rows = [row("stem", 45.0, 45.0, 36.0), row("se_pool", 29.5, 35.5, 47.0)]
    assert mark(rows, 30.0).cause.endswith("most of it from stem (marked *)")


def test_a_concat_marked_for_its_part_keeps_that_cause():
    """A ViT's concat of its class token (a small constant) and the patch tokens: the tensor is at
    35.9 dB, above the threshold, and its own error is small, yet its class-token part is at 11 dB.
    The cause is that part's rounding, not "inherited", and the first-layer line names the part."""
    from tidlc.commands.compare import Row, format_table, mark

    def row(name, op, snr, own, alone, **kw):
        return Row(name, op, [1, 192, 197], "i8", 55.3, None, snr, 1.0, 0.0, 0.0, 1.0, 1.0, 200,
                   own_snr_db=own, alone_snr_db=alone, **kw)

    rows = [row("pe", "conv2d", 35.9, 36.1, 48.5),
            row("cat", "concat", 35.9, 59.3, 34.7, weak_part="cls", weak_part_db=11.2, weak_part_max=0.0485,
                weak_part_fix=["pe"], weak_part_const=True),
            row("softmax", "softmax", 12.6, 13.1, 18.3)]
    first = mark(rows, 30.0)
    assert first.name == "cat" and rows[2].culprit
    assert first.cause.startswith("rounding: its input 'cls'") and "--16bit-layers pe)" in first.cause
    assert "boxes" not in first.cause  # (a constant part: no detector advice)
    assert "first layer below 30 dB: cat (concat, 35.9 dB; the part from 'cls' at 11.2 dB)" in format_table(rows, 30.0)


def _detect_head(path):
    """A detector's decoded output: box centres in pixels (x 64) beside scores in [0, 1], joined by
    one concat: one per-tensor step for both. A layer reads it (a ReLU, which changes nothing):
    a concat right at an output would join in float (test_executor)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (6, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([0, 0, 0, 0], np.int64), "s0"),
             numpy_helper.from_array(np.array([1, 2, 64, 64], np.int64), "e0"),
             numpy_helper.from_array(np.array([0, 2, 0, 0], np.int64), "s1"),
             numpy_helper.from_array(np.array([1, 6, 64, 64], np.int64), "e1"),
             numpy_helper.from_array(np.float32(64.0), "stride")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["head"], pads=[1, 1, 1, 1], name="head"),
             helper.make_node("Sigmoid", ["head"], ["sig"], name="sig"),
             helper.make_node("Slice", ["sig", "s0", "e0"], ["xy"], name="xy"),
             helper.make_node("Mul", ["xy", "stride"], ["xyp"], name="xyp"),
             helper.make_node("Slice", ["sig", "s1", "e1"], ["score"], name="score"),
             helper.make_node("Concat", ["xyp", "score"], ["det"], axis=1, name="det"),
             helper.make_node("Relu", ["det"], ["out"], name="out")]
    graph = helper.make_graph(nodes, "det", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 6, 64, 64])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_compare_names_a_concat_that_drowns_its_narrow_input(tmp_path, capsys):
    """The concat's SNR is the boxes' (fine); its score part, at the step the pixels need, is not.
    compare names the part and the layers that set the concat's precision; with those at 16 bits
    the part is fine."""
    path = tmp_path / "det.onnx"
    _detect_head(path)
    frames = np.random.default_rng(2).uniform(-1, 1, (8, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "calib.npy", frames)
    args = ["compare", str(path), "--calib", str(tmp_path / "calib.npy"), "--no-attribution"]
    assert main([*args, "--json", "-"]) == 0
    det = next(r for r in json.loads(capsys.readouterr().out)["layers"] if r["name"] == "det")
    assert det["snr_db"] >= 30 and det["weak_part"] == "score" and det["weak_part_db"] < 30
    assert det["below"] and det["weak_part_fix"] == ["xyp", "head.sigmoid"]  # (the sigmoid fused into the conv)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "first layer below 30 dB: det (concat" in out and "--16bit-layers xyp,head.sigmoid" in out
    assert "end the model before it" not in out  # (a layer reads it: the model cannot end there)
    assert main([*args, "--16bit-layers", "xyp,head.sigmoid", "--json", "-"]) == 0
    det = next(r for r in json.loads(capsys.readouterr().out)["layers"] if r["name"] == "det")
    assert det["dtype"].endswith("16") and det["weak_part"] is None


def test_16bit_layers_naming_a_concat_warns_and_names_its_sources(tmp_path, cli):
    """TIDL's concat takes its inputs' precision: --16bit-layers det alone changed nothing, silently."""
    path = tmp_path / "det.onnx"
    _detect_head(path)
    frames = np.random.default_rng(2).uniform(-1, 1, (8, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "calib.npy", frames)
    args = ["compile", path, "-o", tmp_path / "out", "--calib", tmp_path / "calib.npy", "--16bit-layers"]
    code, _, err = cli(*args, "det", quiet=False)
    assert code == 0, err
    assert "warning: --16bit-layers det: the concat stays 8-bit" in err
    assert "(hint: name the layers that set it: --16bit-layers xyp,head.sigmoid)" in err
    code, _, err = cli(*args, "det,xyp", quiet=False)  # its widest input is 16-bit now, and so is the concat
    assert code == 0 and "16bit-layers" not in err, err


def test_layers_for_16bit_name_what_sets_a_layers_precision(tmp_path):
    """A softmax (attention probabilities: 9 codes at 8 bits) takes its input's precision; compare's
    hint names the layer before it, which --16bit-layers then makes 16-bit, softmax included."""
    from tidlc.backends.tidl.quantize.ptq import layers_for_16bit
    from tidlc.frontends.onnx.importer import load_onnx

    from tidlc.commands.compare import Row, diagnose
    from tidlc.compiler import optimize
    from tidlc.config import CompileOptions
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.float32(0.5), "half")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("Mul", ["p", "x2"], ["m"], name="scores"),
             helper.make_node("Softmax", ["m"], ["y"], axis=-1, name="attn")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
                                           helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, 4, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], inits)
    path = tmp_path / "attn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    g = load_onnx(str(path), CompileOptions())
    optimize(g, CompileOptions.of(opt_level=2))
    ops = {op.name: op for op in g.compute_ops()}
    assert layers_for_16bit(ops["attn"]) == ["scores"]
    assert layers_for_16bit(ops["scores"]) == ["scores"]
    assert layers_for_16bit(ops["pool"]) == ["conv"]
    row = Row("attn", "softmax", [1, 4, 4, 4], "u8", 255.0, None, 16.9, 0.99, 0.003, 0.0, 1.0, 1.0, 9,
              fix_16bit=["scores"])
    assert diagnose(row).endswith("try --16bit-layers scores (the softmax takes its input's precision)")


def test_ending_the_model_is_advised_only_for_a_concat_that_feeds_the_outputs():
    from tidlc.commands.compare import Row, diagnose
    row = Row(name="det", op="concat", shape=[1, 6, 8, 8], dtype="u8", scale=2.0, shift=None, snr_db=44.4,
              cosine=1.0, max_abs_error=0.1, saturated_pct=0.0, float_max=60.0, representable_max=127.5,
              codes_used=200)
    row.weak_part, row.weak_part_db, row.weak_part_max, row.weak_part_fix = "conf", 18.5, 0.76, ["xyo", "hsig"]
    assert "--16bit-layers xyo,hsig)" in diagnose(row) and "end the model" not in diagnose(row)
    row.weak_part_at_output = True
    assert diagnose(row).endswith("or end the model before it (join boxes and scores on the host)")


def test_a_relu6_at_its_clip_is_not_saturation_and_spread_weights_are_named():
    """A depthwise conv + ReLU6 whose folded weights spread over 40 dB (a trained net's batch norm
    after a nearly dead channel): at 16 bits with per-tensor weights its own error comes from the
    weights, and its outputs at 6 are the ReLU6's clip, not a range calibration missed. compare
    names the weights (before: "saturation ... the calibrated range is too small"); with one scale
    per channel (--per-channel-depthwise) the weights are fine and nothing is said of them."""
    from tidlc.commands.compare import diagnose, layer_rows
    rng = np.random.default_rng(9)
    b = Builder()
    x = b.input("x", TensorType((1, 8, 12, 12), layout="NCHW"))
    gain = np.where(np.arange(8) == 0, 40.0, 0.4)[:, None, None, None]  # one wide channel, seven narrow
    w = (rng.normal(0, 1, (8, 1, 3, 3)) * gain).astype(np.float32)
    dw = b.op("conv2d", [x, b.const(w, "dw.w"), b.const(np.zeros(8, np.float32), "dw.b")], name="dw",
              pads=(1, 1, 1, 1), groups=8, act="relu6")
    b.output(dw, "y")
    frames = [{"x": rng.uniform(-1, 1, (1, 8, 12, 12)).astype(np.float32)} for _ in range(4)]
    q = quantize_graph(b.graph, CompileOptions.of(bits=16), frames=frames, warn_synthetic=False)
    row = next(r for r in layer_rows(q, frames[0]) if r.name == "dw")
    assert row.saturated_pct > 1.0 and row.clipped_pct == 0.0  # at 6 in float too
    assert row.weight_spread_db == pytest.approx(40.0, abs=4.0) and row.narrow_weight_channel >= 1
    assert row.own_snr_db < row.rounding_db - 10.0
    assert diagnose(row).startswith("rounding of its weights: its output channels' weight ranges differ by")
    doc = json.loads(json.dumps(row.as_json(), allow_nan=False))
    assert doc["clipped_pct"] == 0.0 and doc["narrow_weight_channel"] == row.narrow_weight_channel
    per_channel = quantize_graph(b.graph, CompileOptions.of(bits=16, per_channel_depthwise=True), frames=frames,
                                 warn_synthetic=False)
    row = next(r for r in layer_rows(per_channel, frames[0]) if r.name == "dw")
    assert row.weight_spread_db is None and "weights" not in diagnose(row)


def test_the_costliest_layer_is_also_judged_by_its_errors_mean():
    """Noise injection once more for the layer that costs the most, with only its error's mean per
    channel: a bias costs the outputs as much as the whole error (and compare then points at bias
    calibration); of zero-mean noise, the mean is a small part."""
    from tidlc.commands.compare import Row, _attribute, diagnose
    b = Builder()
    x = b.input("x", TensorType((1, 4, 16, 16), layout="NCHW"))
    r = b.op("relu", [x], name="r")
    b.output(b.op("pool2d", [r], name="pool", mode="avg", kernel=(2, 2), strides=(2, 2)), "y")
    graph = b.graph
    rng = np.random.default_rng(2)
    feeds = {"x": rng.uniform(0.5, 1.5, (1, 4, 16, 16)).astype(np.float32)}
    env = Interpreter(graph).values(feeds, keep_all=True)
    origin = next(op for op in graph.ops if op.name == "r").results[0]
    for error, mean_close in ((np.full((1, 4, 16, 16), 1e-3), True), (rng.normal(0, 1e-3, (1, 4, 16, 16)), False)):
        row = Row("r", "relu", [1, 4, 16, 16], "u16", 1e4, None, 60.0, 1.0, 1e-3, 0.0, 1.5, 6.0, 1000)
        _attribute(graph, env, [(row, origin, error)])
        assert row.alone_mean_snr_db is not None
        json.dumps(row.as_json(), allow_nan=False)
        assert (abs(row.alone_mean_snr_db - row.alone_snr_db) < 0.5) == mean_close, (row.alone_snr_db,
                                                                                      row.alone_mean_snr_db)
        if not mean_close:
            assert row.alone_mean_snr_db > row.alone_snr_db + 10.0
    row.own_snr_db, row.alone_snr_db, row.alone_mean_snr_db = 80.0, 40.0, 42.0
    assert "which bias calibration takes back: --bias-calibration" in diagnose(row)
    row.alone_mean_snr_db = 70.0
    assert "bias calibration" not in diagnose(row)


def _head(seed: int = 0):
    """x -> conv (positive weights: a logit map) -> transpose -> output 'y'."""
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.input("x", TensorType((1, 3, 8, 8), layout="NCHW"))
    y = b.op("conv2d", [x, b.const(rng.uniform(0.1, 0.5, (2, 3, 3, 3)).astype(np.float32), "w")], name="logit")
    b.output(b.op("transpose", [y], name="nhwc", perm=(0, 2, 3, 1)), "y")
    return b.graph


@pytest.mark.parametrize("opt_level", [2, 3])
def test_an_output_layer_keeps_headroom_for_frames_past_its_calibration(opt_level, monkeypatch):
    """A 16-bit layer whose result is a graph output (here through a transpose) gets its calibrated
    range x OUTPUT_HEADROOM (2), the others x 1.25. A frame inside the input's calibrated range
    whose output goes 1.6x past every calibration frame's (all pixels alike: every tap adds up)
    saturates the output at x 1.25 and not at x 2 (MediaPipe's face landmarks: one frame's
    face-flag logit 2 % past its range cost that output 34 dB)."""
    from tidlc.backends.tidl.quantize import api
    from tidlc.backends.tidl.quantize.api import output_values
    graph = _head()
    by_name = {op.name: op for op in graph.ops}
    outputs = output_values(graph)
    assert id(by_name["logit"].results[0]) in outputs and id(graph.inputs[0]) not in outputs
    rng = np.random.default_rng(1)
    calib = [{"x": rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)} for _ in range(8)]
    top = max(float(np.abs(run_graph(graph, f)["y"]).max()) for f in calib)
    flat = np.ones((1, 3, 8, 8), np.float32)
    level = 1.6 * top / float(np.abs(run_graph(graph, {"x": flat})["y"]).max())
    assert level < 0.9  # inside the input's range
    loud = {"x": flat * np.float32(level)}
    want = run_graph(graph, loud)["y"]

    def snr(headroom: float) -> tuple[float, float]:
        monkeypatch.setattr(api, "OUTPUT_HEADROOM", headroom)
        q = quantize_graph(graph, CompileOptions.of(emit="none", bits=16, opt_level=opt_level), frames=calib,
                           warn_synthetic=False)
        acc = SnrAccumulator()
        acc.add(want, FixedExecutor(q.graph).run(loud)["y"])
        logit = next(op for op in q.graph.ops if op.name == "logit").results[0].type.quant
        return acc.db, logit.qmax / logit.scale[0]

    narrow, narrow_span = snr(api.WIDE_HEADROOM)
    wide, wide_span = snr(2.0)
    assert narrow_span < float(np.abs(want).max()) <= wide_span  # x 1.25 saturates the loud frame, x 2 holds it
    assert wide > 70.0 and wide > narrow + 15.0, (wide, narrow)
