"""Quantized graphs: structure, text round trip, fixed-point execution against float."""
import numpy as np
import pytest
from tidlc.backends.tidl.fixed import FixedExecutor, graph_is_quantized
from tidlc.backends.tidl.quantize.api import quantize_graph

from tidlc.config import CompileOptions
from tidlc.interp import run_graph
from tidlc.ir import parse_graph, print_graph, verify
from tidlc.metrics import snr_db

from .conftest import frames, small_cnn


def quantized(graph, n=8, **kw):
    return quantize_graph(graph, CompileOptions.of(**kw), frames=frames(n), warn_synthetic=False)


def test_quantized_graph_types(cnn):
    q = quantized(cnn)
    verify(q.graph)
    assert graph_is_quantized(q.graph) and not graph_is_quantized(cnn)
    ops = {op.name: op for op in q.graph.ops}
    c1 = ops["c1"].results[0].type
    assert c1.dtype == "u8" and not c1.quant.signed and c1.quant.shift is not None  # unsigned after ReLU
    w = ops["c1"].operands[1].type
    assert w.dtype == "i8" and w.quant.signed
    bias = ops["c1"].operands[2].type
    assert bias.dtype == "i32" and bias.quant.scale[0] == pytest.approx(
        ops["c1"].operands[0].type.quant.scale[0] * w.quant.scale[0])  # accumulator scale
    assert c1.quant.scale[0] == pytest.approx(bias.quant.scale[0] / 2 ** c1.quant.shift)
    dw = ops["dw"].results[0].type.quant  # ReLU6: the full u8 range over [0, 6]
    assert not dw.signed and dw.scale[0] == pytest.approx(255 / 6)
    assert ops["prob"].results[0].type.quant.scale[0] == 255.0
    assert [op.kind for op in q.graph.ops if op.kind == "data_convert"] == ["data_convert"] * 3  # in, 2 outs
    assert q.graph.outputs[0].type.dtype == "f32"


def test_fixed_point_tracks_float(cnn):
    q = quantized(cnn)
    executor = FixedExecutor(q.graph)
    for feeds in frames(4, seed=7):
        want = run_graph(cnn, feeds)
        got = executor.run(feeds)
        assert snr_db(want["logits"], got["logits"]) > 25
        assert snr_db(want["prob"], got["prob"]) > 25


def test_sixteen_bits_is_much_closer(cnn):
    q8, q16 = quantized(cnn), quantized(cnn, bits=16)
    feeds = frames(1, seed=9)[0]
    want = run_graph(cnn, feeds)["logits"]
    s8 = snr_db(want, FixedExecutor(q8.graph).run(feeds)["logits"])
    s16 = snr_db(want, FixedExecutor(q16.graph).run(feeds)["logits"])
    assert s16 > 60 and s16 > s8 + 30
    types = {v.type.dtype for op in q16.graph.ops for v in op.results if v.type.quant is not None}
    assert types <= {"i16", "u16", "i64"}


def test_text_form_round_trips_and_runs_bit_exactly(cnn):
    q = quantized(cnn)
    text, weights = print_graph(q.graph)
    again = parse_graph(text, weights)
    assert print_graph(again)[0] == text
    feeds = frames(1, seed=3)[0]
    a = FixedExecutor(q.graph).run(feeds, raw=True)
    b = FixedExecutor(again).run(feeds, raw=True)
    for name in a:
        assert a[name].dtype.kind in "iu"
        np.testing.assert_array_equal(a[name], b[name])


def test_raw_outputs_are_the_integers_before_the_last_conversion(cnn):
    q = quantized(cnn)
    feeds = frames(1)[0]
    raw = FixedExecutor(q.graph).run(feeds, raw=True)
    real = FixedExecutor(q.graph).run(feeds)
    scale = q.graph.outputs[0].producer.operands[0].type.quant.scale[0]
    np.testing.assert_allclose(real["prob"], raw["prob"].astype(np.float32) / np.float32(scale), rtol=1e-6)
    assert raw["prob"].dtype == np.uint8


def test_input_graph_is_left_untouched(cnn):
    before = print_graph(cnn)[0]
    quantized(cnn, bias_calibration=2)
    assert print_graph(cnn)[0] == before


def test_power_of_two_weight_scales(cnn):
    q = quantized(cnn, quant_style="p2")
    for op in q.graph.ops:
        if op.kind == "conv2d":
            s = op.operands[1].type.quant.scale[0]
            assert s == 2.0 ** round(np.log2(s))


@pytest.mark.parametrize("bits", [8, 16])
def test_largest_positive_weight_not_clipped_at_16_bits(cnn, bits):
    """TIDL's weight scale ``2**(bits-1) / max|w|`` maps a positive largest weight to 2**(bits-1),
    one past the top code: it is clipped a step short. At 16 bits tidlc takes the scale that keeps
    it (``(2**15 - 1) / max w`` when that is the smaller one); at 8 bits it keeps TIDL's scale."""
    for op in cnn.ops:  # make every layer's largest |w| a positive one
        if op.kind in ("conv2d", "dense") and op.operands[1].const_value() is not None:
            w = op.operands[1].const_value()
            i = np.unravel_index(np.argmax(np.abs(w)), w.shape)
            if w[i] < 0:
                w *= -1.0
                if len(op.operands) > 2:
                    op.operands[2].const_value()[...] *= -1.0  # (negated outputs: any function will do)
    q = quantized(cnn, bits=bits)
    top = (1 << (bits - 1)) - 1
    checked = 0
    for op in q.graph.ops:
        if op.kind not in ("conv2d", "dense") or len(op.operands[1].type.quant.scale) != 1:
            continue
        codes = op.operands[1].const_value().astype(np.int64)
        w = next(o for o in cnn.ops if o.name == op.name).operands[1].const_value().astype(np.float64)
        scale = op.operands[1].type.quant.scale[0]
        if scale < top / np.abs(w).max() * (1 - 1e-9):
            continue  # lowered for the bias (TIDL's maxScale) or a relu6's fixed output scale
        assert w.max() == np.abs(w).max() and codes.max() == top
        error = np.abs(codes / scale - w).max() * scale  # in steps
        assert (error <= 0.5 + 1e-6) if bits == 16 else error > 0.5, (op.name, error)
        checked += 1
    assert checked >= 2


def test_per_channel_depthwise_scales(cnn):
    q = quantized(cnn, per_channel_depthwise=True)
    dw = next(op for op in q.graph.ops if op.name == "dw")
    wq = dw.operands[1].type.quant
    assert len(wq.scale) == 8 and wq.axis == 0
    c1 = next(op for op in q.graph.ops if op.name == "c1")
    assert len(c1.operands[1].type.quant.scale) == 1  # only depthwise layers
    feeds = frames(1, seed=5)[0]
    assert snr_db(run_graph(cnn, feeds)["logits"], FixedExecutor(q.graph).run(feeds)["logits"]) > 25


def test_per_channel_multipliers_are_exact():
    """Channels share one shift: a channel with a small ratio would get a multiplier of few bits (a
    gain error of up to half a step: 1.5 % for a channel 1000x smaller than the others); instead its
    weight scale makes its multiplier exact."""
    from tidlc.backends.tidl.fixed.spec_kernels import mac_params
    cnn = small_cnn()
    w = next(op for op in cnn.ops if op.name == "dw.w")
    w.data = w.data.copy()
    w.data[0] *= 1e-3
    feeds = frames(1, seed=5)[0]
    for bits in (8, 16):
        q = quantized(cnn, bits=bits, per_channel_depthwise=True)
        dw = next(op for op in q.graph.ops if op.name == "dw")
        p = mac_params(dw)
        out_scale = dw.results[0].type.quant.scale[0]
        np.testing.assert_allclose(np.asarray(p["mult"]) * p["s_acc"] / 2.0 ** p["shift"], out_scale, rtol=1e-9)
        ws = np.asarray(dw.operands[1].type.quant.scale)
        assert ws[0] > 100 * ws[1:].max()  # the small channel keeps its finer weight grid
        assert snr_db(run_graph(cnn, feeds)["logits"], FixedExecutor(q.graph).run(feeds)["logits"]) > 25


def test_sixteen_bit_layers_by_name(cnn):
    q = quantized(cnn, layers_16bit=("c1",))
    ops = {op.name: op for op in q.graph.ops}
    assert ops["c1"].results[0].type.dtype == "u16" and ops["c1"].operands[1].type.dtype == "i16"
    assert ops["c1"].operands[2].type.dtype == "i64"  # 64-bit accumulator for 16-bit layers
    assert ops["dw"].results[0].type.dtype == "u8"
    with pytest.raises(Exception, match="unknown layer"):
        quantized(cnn, layers_16bit=("c9",))


def test_a_16_bit_softmax_of_8_bit_logits(cnn):
    """Depth Anything's attention softmax over 1370 tokens: near-uniform rows are ~1/1370, under
    the 8-bit step of 1/255, and every weight was 0. Promoted alone, the softmax reads its 8-bit
    logits and writes 16-bit probabilities (steps of 1/65535); before, it took its input's bits,
    so mixed precision measured no gain and never chose it."""
    feeds = frames(4, seed=3)
    q8, q16 = quantized(cnn), quantized(cnn, layers_16bit=("prob",))
    prob = next(op for op in q16.graph.ops if op.name == "prob")
    assert prob.operands[0].type.dtype in ("i8", "u8") and prob.results[0].type.dtype == "u16"
    gains = []
    for f in feeds:
        ref = run_graph(cnn, f)["prob"]
        gains.append(snr_db(ref, FixedExecutor(q16.graph).run(f)["prob"])
                     - snr_db(ref, FixedExecutor(q8.graph).run(f)["prob"]))
    assert min(gains) > 0 and np.mean(gains) > 3, gains


def test_bias_calibration_and_mixed_precision_run(cnn):
    q = quantized(cnn, bias_calibration=3)
    assert all(len(op.operands) == 3 for op in q.graph.ops if op.kind == "conv2d")  # a bias to adjust
    mixed = quantized(cnn, mixed_precision_factor=1.5)
    assert set(mixed.layers_16bit) <= {"c1", "dw", "fc", "sum", "sig", "prob"}  # MAC, eltwise, table and softmax layers


def test_float_islands_for_ops_without_kernels():
    from tidlc.ir import Builder, TensorType
    b = Builder()
    x = b.input("x", TensorType((1, 3, 8, 8), layout="NCHW"))
    w = b.const(np.random.default_rng(0).normal(0, 0.3, (4, 3, 1, 1)).astype(np.float32), "w")
    c = b.op("conv2d", [x, w], name="conv")
    n = b.op("lrn", [c], size=3, name="lrn")  # no fixed-point kernel: runs in float
    b.output(b.op("relu", [n], name="r"), "y")
    q = quantize_graph(b.graph, CompileOptions(), frames=frames(4), warn_synthetic=False)
    kinds = [op.kind for op in q.graph.compute_ops()]
    assert kinds.index("lrn") > kinds.index("conv2d")
    lrn = next(op for op in q.graph.ops if op.kind == "lrn")
    assert lrn.operands[0].producer.kind == "data_convert" and lrn.results[0].type.dtype == "f32"
    # the relu after it only feeds the graph output: in fixed point it would add two conversions
    assert q.float_islands == ["lrn (lrn)", "r (relu: between float layers)"]
    feeds = frames(1, seed=2)[0]
    assert snr_db(run_graph(b.graph, feeds)["y"], FixedExecutor(q.graph).run(feeds)["y"]) > 25


def test_a_small_op_between_float_layers_stays_float():
    """MediaPipe's attention crop scales its float 4x4 crop matrix by a constant on its way to
    another float layer: quantized, that mul would round the matrix to one per-tensor step (8-bit:
    the refined lips moved by up to 11 px) and add two conversions. It stays float; a conv in the
    same place and an op on the graph input are still quantized."""
    from tidlc.ir import Builder, TensorType
    b = Builder()
    x = b.input("x", TensorType((1, 3, 8, 8), layout="NCHW"))
    w = b.const(np.random.default_rng(0).normal(0, 0.3, (4, 3, 1, 1)).astype(np.float32), "w")
    s = b.op("mul", [x, b.const(np.full((1, 3, 1, 1), 0.5, np.float32), "half")], name="on_input")
    n = b.op("lrn", [b.op("conv2d", [s, w], name="conv")], size=3, name="lrn")
    m = b.op("mul", [n, b.const(np.array([[[[1.0]], [[100.0]], [[0.01]], [[3.0]]]], np.float32), "k")],
             name="scaled")
    n2 = b.op("lrn", [m], size=3, name="lrn2")
    conv2 = b.op("conv2d", [n2, b.const(np.ones((2, 4, 1, 1), np.float32), "w2")], name="conv2")
    b.output(b.op("lrn", [conv2], size=3, name="lrn3"), "y")
    q = quantize_graph(b.graph, CompileOptions(), frames=frames(4), warn_synthetic=False)
    by_name = {op.name: op for op in q.graph.ops}
    assert by_name["scaled"].results[0].type.dtype == "f32"
    assert by_name["scaled"].operands[0].producer is by_name["lrn"]
    assert by_name["lrn2"].operands[0].producer is by_name["scaled"]
    assert by_name["on_input"].results[0].type.quant is not None  # on the graph input: integer
    assert by_name["conv2"].results[0].type.quant is not None  # a MAC layer: integer
    assert "scaled (mul: between float layers)" in q.float_islands
    feeds = frames(1, seed=2)[0]
    assert snr_db(run_graph(b.graph, feeds)["y"], FixedExecutor(q.graph).run(feeds)["y"]) > 25


def test_small_cnn_is_deterministic():
    a = quantized(small_cnn(3))
    b = quantized(small_cnn(3))
    assert print_graph(a.graph)[0] == print_graph(b.graph)[0]


@pytest.mark.parametrize("bits, min_db", [(8, 25.0), (16, 60.0)])
def test_layernorm_runs_in_integers(bits, min_db):
    """TIDL's LayerNorm layer takes 8-bit input: the quantizer gives layernorm an integer kernel
    (reference.layernorm) instead of a float island between two DataConverts (Keras ConvNeXtTiny's
    23 LayerNorms: 48 -> 2 DataConverts, 9.80 -> 8.87 ms predicted). Both executors give the same
    bits, and the text form runs the same."""
    from tidlc.ir import Builder, TensorType
    rng = np.random.default_rng(0)
    b = Builder()
    x = b.input("x", TensorType((1, 3, 8, 8), layout="NCHW"))
    c = b.op("conv2d", [x, b.const(rng.normal(0, 0.3, (16, 3, 1, 1)).astype(np.float32), "w")], name="conv")
    t = b.op("transpose", [c], perm=(0, 2, 3, 1), name="to_nhwc")
    ln = b.op("layernorm", [t, b.const(rng.uniform(0.5, 1.5, 16).astype(np.float32), "gamma"),
                            b.const(rng.normal(0, 0.3, 16).astype(np.float32), "beta")], axis=3, epsilon=1e-6, name="ln")
    b.output(b.op("dense", [ln, b.const(rng.normal(0, 0.3, (8, 16)).astype(np.float32), "fc")], name="fc"), "y")
    q = quantized(b.graph, bits=bits)
    assert q.float_islands == []
    kinds = [op.kind for op in q.graph.compute_ops()]
    assert kinds.count("data_convert") == 2 and "layernorm" in kinds
    feeds = frames(1, seed=2)[0]
    assert snr_db(run_graph(b.graph, feeds)["y"], FixedExecutor(q.graph).run(feeds)["y"]) > min_db
    fast = FixedExecutor(q.graph, kernels="auto").run(feeds, raw=True)["y"]
    np.testing.assert_array_equal(fast, FixedExecutor(q.graph, kernels="numpy").run(feeds, raw=True)["y"])
    text, weights = print_graph(q.graph)
    np.testing.assert_array_equal(FixedExecutor(parse_graph(text, weights)).run(feeds, raw=True)["y"], fast)


def test_a_concat_of_far_apart_ranges_at_an_output_joins_in_float():
    """YOLOv8's output concatenates boxes in pixels (to 640) and class scores in [0, 1]: in one 8-bit
    tensor the scores share a step of 5 and are all 0 (the whole output still read 42.5 dB). Such
    a concat (ranges more than 8x apart, only data movement to the outputs) joins in float, each
    input keeping its own step; a concat of like ranges stays in fixed point."""
    from tidlc.ir import Builder, TensorType
    rng = np.random.default_rng(0)

    def model(gain: float):
        b = Builder()
        x = b.input("x", TensorType((1, 3, 8, 8), layout="NCHW"))
        boxes = b.op("conv2d", [x, b.const((rng.normal(0, 0.5, (4, 3, 1, 1)) * gain).astype(np.float32), "wb")],
                     name="boxes")
        logits = b.op("conv2d", [x, b.const(rng.normal(0, 0.5, (6, 3, 1, 1)).astype(np.float32), "ws")], name="cls")
        scores = b.op("sigmoid", [logits], name="scores")
        joined = b.op("concat", [boxes, scores], axis=1, name="joined")
        b.output(b.op("reshape", [joined], shape=(1, 10, 64), name="flat"), "y")
        return b.graph

    feeds = frames(1, seed=2)[0]
    wide = model(300.0)
    q = quantized(wide)
    assert q.float_islands[0].startswith("joined (concat: joins ranges") and len(q.float_islands) == 2
    kinds = [op.kind for op in q.graph.compute_ops()]
    assert kinds[-2:] == ["concat", "reshape"] and kinds.count("data_convert") == 3  # in, and one per input
    ref, out = run_graph(wide, feeds)["y"], FixedExecutor(q.graph).run(feeds)["y"]
    assert snr_db(ref[:, 4:], out[:, 4:]) > 30 and snr_db(ref[:, :4], out[:, :4]) > 30
    near = quantized(model(1.0))
    assert near.float_islands == [] and [op.kind for op in near.graph.compute_ops()][-1] == "data_convert"


def test_concats_after_a_float_concat_join_in_float_too():
    """YOLOv8-pose joins each keypoint's x, y (pixels) with its visibility (a sigmoid), reshapes, and
    joins that with the boxes: both concats in float, the visibility kept (it was step 5, all 0)."""
    from tidlc.ir import Builder, TensorType
    rng = np.random.default_rng(0)
    b = Builder()
    x = b.input("x", TensorType((1, 3, 8, 8), layout="NCHW"))
    xy = b.op("conv2d", [x, b.const((rng.normal(0, 0.5, (2, 3, 1, 1)) * 300).astype(np.float32), "wxy")], name="xy")
    vis = b.op("sigmoid", [b.op("conv2d", [x, b.const(rng.normal(0, 0.5, (1, 3, 1, 1)).astype(np.float32), "wv")],
                                name="v")], name="vis")
    kpt = b.op("reshape", [b.op("concat", [xy, vis], axis=1, name="kpt")], shape=(1, 3, 64), name="flat")
    box = b.op("reshape", [b.op("conv2d", [x, b.const((rng.normal(0, 0.5, (4, 3, 1, 1)) * 300).astype(np.float32),
                                                    "wb")], name="box")], shape=(1, 4, 64), name="bflat")
    b.output(b.op("concat", [box, kpt], axis=1, name="out"), "y")
    q = quantized(b.graph)
    assert [i.split(" ")[0] for i in q.float_islands] == ["kpt", "flat", "out"]
    feeds = frames(1, seed=2)[0]
    ref, got = run_graph(b.graph, feeds)["y"], FixedExecutor(q.graph).run(feeds)["y"]
    assert snr_db(ref[:, 6], got[:, 6]) > 30  # the visibility row


@pytest.mark.parametrize(("device", "signed"), [("tda4vm", True), ("am68a", False)])
def test_a_matmul_of_computed_tensors_takes_signed_inputs_on_tda4vm(device, signed):
    """TIDL's operator table (InnerProduct): "For TDA4VM variable input case, doesn't support
    unsigned input". Attention's softmax probabilities and a ReLU'd map (a dynamic 1x1 conv's
    operand) are non-negative: on TDA4VM they are quantized signed (one bit less), so the net
    TIDL runs has no unsigned operand there; other devices keep them unsigned. Both executors
    agree, and the fixed-point output tracks float."""
    from tidlc.backends.tidl.constraints import check

    from tidlc.ir import Builder, TensorType
    rng = np.random.default_rng(3)
    b = Builder()
    x = b.input("x", TensorType((1, 3, 8, 8), layout="NCHW"))
    c = b.op("conv2d", [x, b.const(rng.normal(0, 0.5, (16, 3, 1, 1)).astype(np.float32), "w")], name="conv")
    r = b.op("relu", [c], name="relu")
    tokens = b.op("reshape", [r], shape=(1, 16, 64), name="tokens")
    scores = b.op("matmul", [b.op("transpose", [tokens], perm=(0, 2, 1), name="t"), tokens], name="qk")
    probs = b.op("softmax", [scores], axis=2, name="probs")
    b.output(b.op("matmul", [tokens, probs], name="av"), "y")
    q = quantized(b.graph, device=device)
    ops = {op.name: op for op in q.graph.ops}
    for name in ("qk", "av"):
        assert [v.type.quant.signed for v in ops[name].operands] == [signed, signed]
        assert check(ops[name], device=device) is None or check(ops[name], device=device).level != "host"
    assert ops["probs"].results[0].type.quant.scale[0] == (127.0 if signed else 255.0)
    feeds = frames(1, seed=2)[0]
    assert snr_db(run_graph(b.graph, feeds)["y"], FixedExecutor(q.graph).run(feeds)["y"]) > 25
    fast = FixedExecutor(q.graph, kernels="auto").run(feeds, raw=True)["y"]
    np.testing.assert_array_equal(fast, FixedExecutor(q.graph, kernels="numpy").run(feeds, raw=True)["y"])
