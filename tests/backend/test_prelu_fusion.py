"""A prelu after a conv2d or dense layer is fused into it in fixed point (TIDL actType 2): one
rounding at the prelu's output scale instead of two. The fused output stage
(``reference.mac_output_prelu``) is the specification; every fast kernel runs it as two plain stages
(``spec_kernels.prelu_sides``), which must equal it bit for bit under every ISA variant, at 8 and 16
bits, with positive, zero and negative slopes and at saturation."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from tidlc.backends.tidl.fixed import FixedExecutor
from tidlc.backends.tidl.fixed import reference as ref
from tidlc.backends.tidl.fixed.spec_kernels import prelu_sides

from tidlc.ir.builder import Builder
from tidlc.ir.types import TensorType

MTCNN = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "caffe" / "mtcnn"


@pytest.mark.parametrize("seed", range(4))
def test_the_two_sides_add_up_to_the_specification(seed):
    """pos + (neg, negated where the slope is) clamped at hi == mac_output_prelu, at the extremes."""
    rng = np.random.default_rng(seed)
    c = 7
    acc = rng.integers(-(1 << 40), 1 << 40, size=(2, c, 5, 5), dtype=np.int64)
    # the largest sums prelu_bits allows with these multipliers (2**46 x 2**15 x 1.5 < 2**62), tiny ones,
    # and (32-bit accumulators) saturating ones
    acc[0, :, 0, :] = np.array([-(1 << 46), -1, 0, 1, (1 << 46)])[None, :]
    acc[1, :, 1, 1] = -(1 << 20) - (1 << 19)  # an exact rounding tie
    for acc_width, lo, hi in ((64, -32768, 32767), (32, -128, 127), (64, 0, 65535)):
        a = np.clip(acc, -(1 << 31), (1 << 31) - 1) if acc_width == 32 else acc
        m_pos = rng.integers(1 << 14, 1 << 15, size=c)
        slope = rng.uniform(-1.5, 1.5, c)
        slope[0] = 0.0
        if lo >= 0:
            slope = np.abs(slope)  # the quantizer fuses negative slopes into signed outputs only
        m_neg = ref.round_half_away(slope * m_pos).astype(np.int64)
        p = {"mult": m_pos, "m_neg": m_neg, "shift": 21, "acc_width": acc_width, "lo": lo, "hi": hi}
        want = ref.mac_output_prelu(a, acc_width, m_pos, m_neg, 21, lo, hi)
        pos, neg, flip = prelu_sides(p)
        got_pos = ref.mac_output(a, acc_width, pos["mult"], 21, pos["lo"], pos["hi"])
        got_neg = ref.mac_output(a, acc_width, neg["mult"], 21, neg["lo"], neg["hi"])
        assert not np.any((got_pos != 0) & (got_neg != 0))
        sign = np.where(flip, -1, 1) if flip is not None else np.ones(c, np.int64)
        got = np.minimum(got_pos + got_neg * sign[None, :, None, None], hi)
        np.testing.assert_array_equal(got, want)


def test_the_specification_is_prelu_of_the_sums():
    """Away from rounding, the fused stage is prelu(acc) x m / 2**shift: slope per channel, its sign too."""
    acc = np.array([[-4096, -1024, 0, 1024, 4096]] * 3, np.int64).T[None, :, :]  # (1, 5 values, 3 channels)
    acc = np.moveaxis(acc, 2, 1)  # (1, 3, 5)
    slope = np.array([0.25, 0.0, -0.5])
    out = ref.mac_output_prelu(acc, 64, 1 << 10, ref.round_half_away(slope * (1 << 10)).astype(np.int64),
                               10, -32768, 32767)
    np.testing.assert_array_equal(out, np.where(acc >= 0, acc, acc * slope[None, :, None]).astype(np.int64))


def _prelu_net(dense: bool, slopes: np.ndarray, bias: float = 0.0):
    rng = np.random.default_rng(3)
    b = Builder()
    x = b.input("x", TensorType((1, 3, 10, 10)))
    y = b.op("conv2d", [x, b.const(rng.normal(0, 0.4, (6, 3, 3, 3)).astype(np.float32)),
                        b.const(np.full(6, bias, np.float32))], "conv", pads=(1, 1, 1, 1))
    y = b.op("prelu", [y, b.const(slopes.astype(np.float32))], "prelu")
    if dense:
        y = b.op("flatten", [y], "flatten")
        y = b.op("dense", [y, b.const(rng.normal(0, 0.05, (8, 600)).astype(np.float32)),
                           b.const(rng.normal(0, 0.1, 8).astype(np.float32))], "fc")
        y = b.op("prelu", [y, b.const(np.linspace(-0.3, 0.6, 8).astype(np.float32))], "prelu_fc")
    b.output(y, "y")
    return b.graph


def _quantized(graph, **settings):
    from tidlc.backends.tidl.quantize.api import quantize_graph

    from tidlc.config import CompileOptions
    rng = np.random.default_rng(0)
    frames = [{"x": rng.normal(0, 1, (1, 3, 10, 10)).astype(np.float32)} for _ in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_graph(graph, CompileOptions.of(emit="none", **settings), frames=frames), frames


def _trace(graph, feeds, kernels):
    seen = []
    FixedExecutor(graph, kernels=kernels).run(feeds, observer=lambda op, rs: seen.extend((op, r.copy()) for r in rs))
    return seen


SLOPES = {"mixed": np.array([0.25, -0.5, 0.0, 1.0, -0.05, 0.7]), "positive": np.full(6, 0.1),
          "scalar": np.array([0.2])}


@pytest.mark.parametrize("bits", (8, 16))
@pytest.mark.parametrize("dense", (False, True), ids=("conv", "conv+dense"))
@pytest.mark.parametrize("slopes", SLOPES, ids=str)
@pytest.mark.parametrize("style", ("np2", "p2"))
def test_fused_layers_equal_the_specification(isa, bits, dense, slopes, style):
    q, frames = _quantized(_prelu_net(dense, SLOPES[slopes]), bits=bits, quant_style=style)
    if style == "p2":  # a power-of-2 shift of the accumulator, as every p2 MAC output: m is a power of 2
        from tidlc.backends.tidl.fixed.spec_kernels import mac_params
        for op in q.graph.ops:
            if op.attrs.get("act") == "prelu":
                m = int(mac_params(op)["mult"])
                assert m & (m - 1) == 0, m
    kinds = [op.kind for op in q.graph.ops]
    assert "prelu" not in kinds, kinds  # every prelu fused into the layer before it
    fused = [op for op in q.graph.ops if op.attrs.get("act") == "prelu"]
    assert len(fused) == 1 + dense
    for frame in frames + [{"x": frames[0]["x"] * 40.0}]:  # the last one saturates
        want, got = _trace(q.graph, frame, "numpy"), _trace(q.graph, frame, "auto")
        assert len(got) == len(want)
        for (op, a), (_, b) in zip(want, got):
            assert a.dtype == b.dtype and np.array_equal(a, b), op.where()


def test_fused_layers_are_close_to_float_and_layers_of_other_precisions_are_not_fused():
    from tidlc.interp import Interpreter
    from tidlc.metrics import SnrAccumulator
    graph = _prelu_net(True, SLOPES["mixed"])
    interp = Interpreter(graph)
    for bits, floor_db in ((8, 25.0), (16, 70.0)):
        q, frames = _quantized(graph, bits=bits)
        acc = SnrAccumulator()
        ex = FixedExecutor(q.graph)
        for f in frames:
            acc.add(interp.run(f)["y"], ex.run(f)["y"])
        assert acc.db >= floor_db, (bits, acc.db)
    pair, _ = _quantized(graph, bits=8, layers_16bit=("prelu",))  # the conv is 8-bit, its prelu 16-bit
    assert [op.kind for op in pair.graph.ops].count("prelu") == 1
    assert sum(op.attrs.get("act") == "prelu" for op in pair.graph.ops) == 1  # the dense one


def test_negative_slopes_into_an_unsigned_output_stay_a_layer():
    """A non-negative calibrated prelu output is unsigned: a negative slope there is not fused."""
    q, frames = _quantized(_prelu_net(False, SLOPES["mixed"], bias=50.0), bits=8)
    assert [op.kind for op in q.graph.ops].count("prelu") == 1
    assert not any(op.attrs.get("act") == "prelu" for op in q.graph.ops)
    want, got = _trace(q.graph, frames[0], "numpy"), _trace(q.graph, frames[0], "auto")
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(want, got))


def test_fused_layers_survive_net_bin_and_onnx_qdq(tmp_path):
    """net.bin keeps the fused prelu (act and slopes): the loaded graph gives the same integers; the
    ONNX QDQ export writes it as a PRelu after the layer."""
    from tidlc.backends.tidl.binfmt import read_compiled, write_bin
    q, frames = _quantized(_prelu_net(True, SLOPES["mixed"]), bits=16)
    write_bin(q.graph, str(tmp_path))
    loaded = read_compiled(str(tmp_path)).graph
    fused = [op for op in loaded.ops if op.attrs.get("act") == "prelu"]
    assert len(fused) == 2 and len(fused[0].attrs["act_params"]) == 6
    for f in frames:
        np.testing.assert_array_equal(FixedExecutor(loaded).run(f)["y"], FixedExecutor(q.graph).run(f)["y"])
    pytest.importorskip("onnx")
    from tidlc.backends.onnx_qdq.export import export
    assert [n.op_type for n in export(q.graph).model.graph.node].count("PRelu") == 2


def test_mtcnn_onet_fuses_every_prelu_and_matches_the_specification(isa):
    if not (MTCNN / "det3.caffemodel").is_file():
        pytest.skip("shared corpus not available")
    from tidlc.compiler import compile_model
    from tidlc.config import CompileOptions
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = compile_model(str(MTCNN / "det3.prototxt"), CompileOptions.of(
            emit="none", quantize=True, bits=16, weights=str(MTCNN / "det3.caffemodel"))).graph
    assert not any(op.kind == "prelu" for op in graph.ops)
    assert sum(op.attrs.get("act") == "prelu" for op in graph.ops) == 5
    rng = np.random.default_rng(1)
    feeds = {op.attrs["name"]: rng.uniform(-1, 1, op.results[0].type.shape).astype(np.float32)
             for op in graph.input_ops}
    want, got = _trace(graph, feeds, "numpy"), _trace(graph, feeds, "auto")
    for (op, a), (_, b) in zip(want, got):
        assert a.dtype == b.dtype and np.array_equal(a, b), op.where()


def test_a_float_layer_carrying_prelu_runs_and_quantizes_like_the_pair():
    """conv2d{act=prelu, act_params=slopes} (a plugin's fusion, say) is prelu(conv) in float, and
    the quantizer splits it and fuses it back: the same fixed-point graph as the pair gives."""
    from tidlc.interp import Interpreter
    pair = _prelu_net(False, SLOPES["mixed"])
    rng = np.random.default_rng(3)
    b = Builder()
    x = b.input("x", TensorType((1, 3, 10, 10)))
    y = b.op("conv2d", [x, b.const(rng.normal(0, 0.4, (6, 3, 3, 3)).astype(np.float32)),
                        b.const(np.zeros(6, np.float32))], "conv", pads=(1, 1, 1, 1), act="prelu",
             act_params=tuple(SLOPES["mixed"]))
    b.output(y, "y")
    one = b.graph
    frame = {"x": rng.normal(0, 1, (1, 3, 10, 10)).astype(np.float32)}
    np.testing.assert_allclose(Interpreter(one).run(frame)["y"], Interpreter(pair).run(frame)["y"], rtol=1e-6)
    q1, frames = _quantized(one, bits=16)
    q2, _ = _quantized(pair, bits=16)
    assert [op.attrs.get("act") for op in q1.graph.ops if op.kind == "conv2d"] == ["prelu"]
    for f in frames:
        np.testing.assert_array_equal(FixedExecutor(q1.graph).run(f)["y"], FixedExecutor(q2.graph).run(f)["y"])


@pytest.mark.parametrize("bits", (8, 16))
def test_leaky_relu_is_fused_as_a_prelu_of_one_slope(isa, bits, monkeypatch):
    """conv2d -> leaky_relu (fused into the conv's act at -O2, split before calibration) computes
    with one rounding too: the layer's act is leaky_relu, equal to the specification bit for bit,
    and closer to float than the conv and its lookup table (measured: 8 bits 29.0 -> 32.4 dB,
    16 bits 78.1 -> 79.0 on this net)."""
    from tidlc.backends.tidl.quantize import ptq

    from tidlc.interp import Interpreter
    from tidlc.metrics import SnrAccumulator
    rng = np.random.default_rng(5)
    b = Builder()
    y = b.input("x", TensorType((1, 3, 10, 10)))
    for i, c in enumerate((3, 6)):
        y = b.op("conv2d", [y, b.const(rng.normal(0, 0.4, (6, c, 3, 3)).astype(np.float32))], f"conv{i}",
                 pads=(1, 1, 1, 1))
        y = b.op("leaky_relu", [y], f"leaky{i}", alpha=0.1)
    b.output(y, "y")
    interp = Interpreter(b.graph)

    def snr(q, frames):
        acc = SnrAccumulator()
        for f in frames:
            acc.add(interp.run(f)["y"], FixedExecutor(q.graph).run(f)["y"])
        return acc.db

    q, frames = _quantized(b.graph, bits=bits)
    kinds = [op.kind for op in q.graph.ops]
    assert "leaky_relu" not in kinds and [op.attrs["act"] for op in q.graph.ops if op.kind == "conv2d"] == \
        ["leaky_relu"] * 2, kinds
    for f in frames + [{"x": frames[0]["x"] * 40.0}]:
        want, got = _trace(q.graph, f, "numpy"), _trace(q.graph, f, "auto")
        for (op, a), (_, c) in zip(want, got):
            assert a.dtype == c.dtype and np.array_equal(a, c), op.where()
    monkeypatch.setattr(ptq, "FUSED_PRELU", ("prelu",))  # the layer and its table, as before
    pair, _ = _quantized(b.graph, bits=bits)
    assert [op.kind for op in pair.graph.ops].count("leaky_relu") == 2
    assert snr(q, frames) > snr(pair, frames)


def test_a_dense_layer_of_rank_3_keeps_its_prelu():
    """dense over the last axis of (N, T, K): the prelu's per-channel slopes run along axis 1 (T), not
    along the layer's channels (the last axis), so the pair is not fused; it still equals the
    specification and stays close to float."""
    from tidlc.plugins.fuse import FuseActivation

    from tidlc.interp import Interpreter
    from tidlc.metrics import SnrAccumulator
    from tidlc.passes.manager import PassManager

    def net():
        rng = np.random.default_rng(7)
        b = Builder()
        x = b.input("x", TensorType((1, 4, 8)))
        y = b.op("dense", [x, b.const(rng.normal(0, 0.4, (6, 8)).astype(np.float32))], "fc")
        y = b.op("prelu", [y, b.const(np.array([0.1, -0.2, 0.3, 0.0], np.float32))], "prelu")
        b.output(y, "y")
        return b
    fused = net().graph
    PassManager.from_string({"fuse-activation": FuseActivation}, "fuse-activation").run(fused)
    assert [op.kind for op in fused.ops].count("prelu") == 1  # -O2's fuse-activation leaves it too
    b, rng = net(), np.random.default_rng(8)
    from tidlc.backends.tidl.quantize.api import quantize_graph

    from tidlc.config import CompileOptions
    frames = [{"x": rng.normal(0, 1, (1, 4, 8)).astype(np.float32)} for _ in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_graph(b.graph, CompileOptions.of(emit="none", bits=16), frames=frames)
    assert [op.kind for op in q.graph.ops].count("prelu") == 1
    acc = SnrAccumulator()
    for f in frames:
        want, got = _trace(q.graph, f, "numpy"), _trace(q.graph, f, "auto")
        assert all(np.array_equal(a, c) for (_, a), (_, c) in zip(want, got))
        acc.add(Interpreter(b.graph).run(f)["y"], FixedExecutor(q.graph).run(f)["y"])
    assert acc.db > 70.0, acc.db


@pytest.mark.parametrize("slope_shape,x_shape,want", [
    ((1, 6, 1, 1), (1, 6, 5, 5), "channels"),  # TFLite's (1, 1, C) alpha after the layout pass
    ((6, 1, 1), (1, 6, 5, 5), "channels"),  # PyTorch's nn.PReLU(C) exported to ONNX
    ((6,), (1, 6, 5, 5), "channels"),
    ((1, 1, 1, 1), (1, 6, 5, 5), "one"),
    ((1, 1, 1, 6), (1, 6, 5, 6), None),  # per column (W == C), not per channel
    ((6,), (1, 6, 5, 6), "channels"),  # tidlc's prelu: a 1-D slope of C values is per channel
    ((5,), (1, 6, 5, 5), None),
    ((6, 5, 1), (1, 6, 5, 5), None),
    ((1, 6), (2, 6), "channels"),
], ids=str)
def test_channel_slopes_reads_broadcast_shapes(slope_shape, x_shape, want):
    from tidlc.ir.ops.nn import channel_slopes
    slope = np.arange(1, np.prod(slope_shape) + 1, dtype=np.float32).reshape(slope_shape)
    got = channel_slopes(slope, x_shape)
    if want is None:
        assert got is None
    else:
        assert got is not None and got.shape == ((x_shape[1],) if want == "channels" else (1,))
        np.testing.assert_array_equal(got, slope.reshape(-1))


def _palm_block():
    """conv -> prelu(slopes (1, C, 1, 1)) -> depthwise + residual add -> prelu(slopes (C, 1, 1)): a
    BlazePalm block as TFLite's layout or PyTorch's ONNX export leaves it; and a frame."""
    rng = np.random.default_rng(11)
    b = Builder()
    x = b.input("x", TensorType((1, 3, 10, 10)))
    y = b.op("conv2d", [x, b.const(rng.normal(0, 0.4, (6, 3, 3, 3)).astype(np.float32)),
                        b.const(rng.normal(0, 0.1, 6).astype(np.float32))], "conv", pads=(1, 1, 1, 1))
    p1 = b.op("prelu", [y, b.const(rng.uniform(-0.3, 0.6, (1, 6, 1, 1)).astype(np.float32))], "prelu1")
    d = b.op("conv2d", [p1, b.const(rng.normal(0, 0.4, (6, 1, 3, 3)).astype(np.float32))], "dw",
             pads=(1, 1, 1, 1), groups=6)
    s = b.op("add", [p1, d], "add")
    b.output(b.op("prelu", [s, b.const(rng.uniform(-0.3, 0.6, (6, 1, 1)).astype(np.float32))], "prelu2"), "y")
    return b.graph, {"x": rng.normal(0, 1, (1, 3, 10, 10)).astype(np.float32)}


def _no_float_island(q, frames):
    kinds = [op.kind for op in q.graph.ops]
    assert kinds.count("data_convert") == 2, kinds  # the input's and the output's: no float island
    for f in frames:
        for (op, a), (_, c) in zip(_trace(q.graph, f, "numpy"), _trace(q.graph, f, "auto")):
            assert a.dtype == c.dtype and np.array_equal(a, c), op.where()


@pytest.mark.parametrize("bits", (8, 16))
def test_prelu_slopes_of_shape_c11_fuse_and_run_in_integers(isa, bits):
    """-O2 makes the slopes of :func:`_palm_block`'s prelus 1-D: the first prelu fuses into the conv
    and the second is an integer layer; before, both ran in float between DataConverts (MediaPipe
    palm_detection_lite at 16 bits: 55 -> 3 DataConverts, 5.51 -> 4.26 ms, 42.0 -> 47.7 dB)."""
    from tidlc.compiler import optimize
    from tidlc.config import CompileOptions
    from tidlc.interp import Interpreter
    graph, frame = _palm_block()
    want = Interpreter(graph).run(frame)["y"]
    optimize(graph, CompileOptions.of(emit="none", opt_level=2))
    np.testing.assert_allclose(Interpreter(graph).run(frame)["y"], want, rtol=1e-5, atol=1e-6)
    assert [op.attrs.get("act") for op in graph.ops if op.kind == "conv2d"] == ["prelu", "none"]
    (prelu,) = [op for op in graph.ops if op.kind == "prelu"]
    assert prelu.operands[1].const_value().shape == (6,)
    _no_float_island(*_quantized(graph, bits=bits))


@pytest.mark.parametrize("bits", (8, 16))
def test_prelu_slopes_of_shape_c11_run_in_integers_without_the_rewrite(isa, bits, tmp_path):
    """At -O0/-O1 (no fuse-activation) the quantizer reads the broadcast slopes itself: the prelus are
    integer layers (the first fused into the conv), equal to the specification, close to float, and
    net.bin keeps them."""
    from tidlc.backends.tidl.binfmt import read_compiled, write_bin

    from tidlc.interp import Interpreter
    from tidlc.metrics import SnrAccumulator
    graph, _ = _palm_block()
    assert [op.operands[1].const_value().shape for op in graph.ops if op.kind == "prelu"] == [(1, 6, 1, 1), (6, 1, 1)]
    q, frames = _quantized(graph, bits=bits)
    _no_float_island(q, frames)
    assert [op.attrs.get("act") for op in q.graph.ops if op.kind == "conv2d"] == ["prelu", "none"]
    acc = SnrAccumulator()
    for f in frames:
        acc.add(Interpreter(graph).run(f)["y"], FixedExecutor(q.graph).run(f)["y"])
    assert acc.db > (30.0 if bits == 8 else 70.0), acc.db
    write_bin(q.graph, str(tmp_path))
    loaded = read_compiled(str(tmp_path)).graph
    for f in frames:
        np.testing.assert_array_equal(FixedExecutor(loaded).run(f)["y"], FixedExecutor(q.graph).run(f)["y"])
