"""Every integer-kernel variant (TIDLC_ISA=avx512vnni|avx2|c) equals the numpy specification bit for
bit: single conv/dense layers (saturation and rounding included) and whole networks."""
import os

import numpy as np
import pytest
from tidlc.backends.tidl.fixed import FixedExecutor, fast, _igemm
from tidlc.backends.tidl.fixed import reference as ref
from tidlc.diagnostics import TidlcError

ISAS = ("avx512vnni", "avxvnni", "avx2", "c")


@pytest.fixture(params=ISAS)
def isa(request):
    name = request.param
    if name not in _igemm.supported_isas():
        pytest.skip(f"this CPU (or build) cannot run the {name} variant")
    before = fast.isa()
    fast.set_isa(name)
    yield name
    fast.set_isa(before)


def test_unavailable_isa_is_a_clear_error(monkeypatch):
    missing = [n for n in _igemm.ISAS if n not in _igemm.supported_isas()]
    with pytest.raises(TidlcError, match="not available on this CPU"):
        fast.set_isa("neon-nonexistent")
    if missing:
        with pytest.raises(TidlcError, match="it has: "):
            fast.set_isa(missing[0])
    assert fast.isa() in _igemm.supported_isas()


def _conv_case(rng):
    cin, cout = int(rng.integers(1, 70)), int(rng.integers(1, 21))
    kh, kw = (int(v) for v in rng.integers(1, 4, 2))
    strides = tuple(int(v) for v in rng.integers(1, 4, 2))
    dil = tuple(int(v) for v in rng.integers(1, 3, 2))
    pads = tuple(int(v) for v in rng.integers(0, 3, 4))
    h = int(rng.integers((kh - 1) * dil[0] + 1, 40))
    w = int(rng.integers((kw - 1) * dil[1] + 1, 40))
    return cin, cout, kh, kw, strides, dil, pads, h, w


@pytest.mark.parametrize("seed", range(8))
def test_conv_output_stage_equals_the_specification(isa, seed):
    rng = np.random.default_rng(100 + seed)
    for _ in range(4):
        cin, cout, kh, kw, strides, dil, pads, h, w = _conv_case(rng)
        unsigned = bool(rng.integers(2))
        x = (rng.integers(0, 256, (2, cin, h, w)) if unsigned else rng.integers(-128, 128, (2, cin, h, w)))
        x = x.astype(np.uint8 if unsigned else np.int8)
        if seed % 3 == 0:  # extremes: the largest sums
            x[...] = 255 if unsigned else -128
        wt = rng.integers(-128, 128, (cout, cin, kh, kw)).astype(np.int8)
        bias = rng.integers(-(1 << 20), 1 << 20, cout).astype(np.int64)
        out_dtype = [np.int8, np.uint8, np.int16, np.uint16][int(rng.integers(4))]
        info = np.iinfo(out_dtype)
        shift = int(rng.integers(0, 30))
        mult = rng.integers(1, 1 << 14, cout).astype(np.int64) if seed % 2 else np.int64(int(rng.integers(1, 300)))
        acc = ref.conv2d_acc(x, wt, strides, pads, dil, 1)
        ho, wo = acc.shape[2:]
        want = ref.mac_output(ref.add_bias(acc, bias), 32, mult, shift, info.min, info.max).astype(out_dtype)
        layer = fast.VnniConv.plan(fast.IntConvWeights(wt), x.dtype, strides, pads, dil, (2, cout, ho, wo),
                                   mult, shift, info.min, info.max, out_dtype)
        assert layer is not None
        for threads in (1, 3):
            got = layer.run(x, bias, threads)
            assert got is not None and got.dtype == want.dtype and np.array_equal(got, want), (isa, threads)


def test_dense_equals_the_specification(isa):
    rng = np.random.default_rng(7)
    for k, m, rows in ((5, 3, 1), (300, 17, 4), (4096, 10, 2)):
        x = rng.integers(-128, 128, (rows, k)).astype(np.int8)
        wt = rng.integers(-128, 128, (m, k)).astype(np.int8)
        bias = rng.integers(-1000, 1000, m).astype(np.int64)
        want = ref.mac_output(ref.add_bias(ref.dense_acc(x, wt), bias, axis=-1), 32, 3, 9, -128, 127,
                              axis=-1).astype(np.int8)
        layer = fast.VnniDense.plan(wt, x.dtype, (rows, m), 3, 9, -128, 127, np.int8)
        assert layer is not None
        got = layer.run(x, bias)
        assert got is not None and np.array_equal(got, want), isa


def _light_resnet_graph():
    onnx = pytest.importorskip("onnx")
    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_resnet50.onnx")
    if not os.path.exists(path):
        pytest.skip("light_resnet50.onnx not in this onnx wheel")
    from tidlc.compiler import compile_model
    from tidlc.config import CompileOptions
    with pytest.warns(Warning):
        return compile_model(path, CompileOptions.of(emit="none", quantize=True, calib_frames=1)).graph


@pytest.mark.parametrize("seed", (0, 1))
def test_whole_network_equals_numpy(isa, seed):
    """light ResNet-50, 8-bit: every layer's output identical to --kernels numpy under this ISA."""
    graph = _light_resnet_graph()
    feeds = {op.attrs["name"]: np.random.default_rng(seed).uniform(-2, 2, op.results[0].type.shape).astype(np.float32)
             for op in graph.input_ops}

    def trace(kernels):
        seen = []
        FixedExecutor(graph, kernels=kernels).run(feeds, observer=lambda op, rs: seen.extend(r.copy() for r in rs))
        return seen

    want, got = trace("numpy"), trace("auto")
    assert len(got) == len(want) > 50
    for a, b in zip(want, got):
        assert a.dtype == b.dtype and np.array_equal(a, b)
