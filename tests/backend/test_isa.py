"""Every integer-kernel variant (TIDLC_ISA=avx512vnni|avxvnni|avx2|c) equals the numpy specification bit
for bit: single conv/dense/depthwise/one-pixel layers and element-wise adds (saturation, rounding,
odd shapes included) and whole networks (every layer's output)."""
import ctypes
import os
import platform
import shutil
import subprocess

import numpy as np
import pytest
from tidlc.backends.tidl.fixed import FixedExecutor, _igemm, fast
from tidlc.backends.tidl.fixed import reference as ref

from tidlc.diagnostics import TidlcError

ISAS = _igemm.ISAS  # every variant; those this CPU cannot run are skipped


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


def _out_hw(h, w, k, strides, pads, dil):
    return ((h + pads[0] + pads[2] - dil[0] * (k[0] - 1) - 1) // strides[0] + 1,
            (w + pads[1] + pads[3] - dil[1] * (k[1] - 1) - 1) // strides[1] + 1)


def test_conv_tile_edges_equal_the_specification(isa):
    """Channel counts around the micro tiles (6, 8, 16 rows), pixel counts around the 8/16-pixel
    groups, odd K, and thread counts that split the channels (few pixels) or the pixels."""
    rng = np.random.default_rng(11)
    for m in (1, 5, 6, 7, 13, 17):
        for hw in ((1, 1), (1, 7), (2, 4), (3, 3), (1, 15), (4, 4), (1, 17), (5, 7)):
            cin = int(rng.integers(1, 6))
            x = rng.integers(-128, 128, (1, cin, *hw)).astype(np.int8)
            wt = rng.integers(-128, 128, (m, cin, 1, 1)).astype(np.int8)
            bias = rng.integers(-5000, 5000, m)
            mult = np.where(np.arange(m) % 2, 1, 3)  # rows with and without the multiplier in one tile
            want = ref.mac_output(ref.add_bias(ref.conv2d_acc(x, wt, (1, 1), (0, 0, 0, 0), (1, 1), 1), bias), 32,
                                  mult, 4, -128, 127).astype(np.int8)
            layer = fast.VnniConv.plan(fast.IntConvWeights(wt), np.int8, (1, 1), (0, 0, 0, 0), (1, 1), (1, m, *hw),
                                       mult, 4, -128, 127, np.int8)
            for threads in (1, 2, 3):
                assert np.array_equal(layer.run(x, bias, threads), want), (isa, m, hw, threads)


def _depthwise_case(rng, c, h, w, kh, kw, strides, dil, pads, signed, extreme):
    x = (rng.integers(-128, 128, (2, c, h, w)).astype(np.int8) if signed
         else rng.integers(0, 256, (2, c, h, w)).astype(np.uint8))
    if extreme:
        x[...] = -128 if signed else 255
    wt = rng.integers(-128, 128, (c, 1, kh, kw)).astype(np.int8)
    if extreme:
        wt[::2] = -128
    return x, wt


@pytest.mark.parametrize("seed", range(3))
def test_depthwise_equals_the_specification(isa, seed):
    """Channels and widths off the 16-lane groups, stride 2 along W, dilation, asymmetric and wide
    padding, every output type and every output-stage form (int32 direct and split, int64)."""
    rng = np.random.default_rng(300 + seed)
    shapes = ((1, 1, 1), (3, 5, 15), (7, 9, 16), (17, 6, 17), (33, 4, 33), (2, 11, 50))
    for t, (c, h, w) in enumerate(shapes):
        kh, kw = (3, 3) if t % 2 else (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        strides = (int(rng.integers(1, 3)), 1 + (t + seed) % 2)
        dil = (1 + t % 2, 1 + (t + seed) % 2)
        pads = tuple(int(v) for v in rng.integers(0, 4, 4))
        if (h + pads[0] + pads[2] - dil[0] * (kh - 1) - 1) < 0 or (w + pads[1] + pads[3] - dil[1] * (kw - 1) - 1) < 0:
            pads = ((kh - 1) * dil[0], (kw - 1) * dil[1]) * 2
        x, wt = _depthwise_case(rng, c, h, w, kh, kw, strides, dil, pads, bool(t % 2), t == seed)
        ho, wo = _out_hw(h, w, (kh, kw), strides, pads, dil)
        dtype = (np.int8, np.uint8, np.int16, np.uint16)[(t + seed) % 4]
        info = np.iinfo(dtype)
        lo, hi = int(info.min), int(info.max)
        if t % 3 == 2:
            lo, hi = max(lo, 0), min(hi, 97)  # a fused ReLU6-like clamp
        # direct (mult 1), split (15-bit multipliers, shift >= 17), int64 (a bias past 2**31)
        stages = ((1, int(rng.integers(0, 9)), rng.integers(-3000, 3000, c)),
                  (rng.integers(1, 1 << 15, c), 20, rng.integers(-(1 << 20), 1 << 20, c)),
                  (int(rng.integers(1, 300)), 12, np.full(c, 1 << 31)))
        for mult, shift, bias in stages:
            want = ref.mac_output(ref.add_bias(ref.conv2d_acc(x, wt, strides, pads, dil, c), bias), 32, mult, shift,
                                  lo, hi).astype(dtype)
            layer = fast.VnniDepthwise.plan_for(wt, c, x.dtype, strides, pads, dil, (2, c, ho, wo), mult, shift,
                                                lo, hi, dtype)
            assert layer is not None
            for threads in (1, 2):
                got = layer.run(x, bias, threads)
                assert got.dtype == want.dtype and np.array_equal(got, want), (isa, c, h, w, kh, kw, strides, dil, pads)


@pytest.mark.parametrize("signed", (False, True))
def test_one_pixel_layers_equal_the_specification(isa, signed):
    """The matrix-vector kernel (a window covering the whole input): odd K and M, the extremes."""
    rng = np.random.default_rng(40 + int(signed))
    for c, k, m in ((1, 1, 1), (3, 3, 7), (129, 1, 9), (1280, 1, 1000)):
        x = (rng.integers(-128, 128, (2, c, k, k)).astype(np.int8) if signed
             else rng.integers(0, 256, (2, c, k, k)).astype(np.uint8))
        x[1] = -128 if signed else 255
        wt = rng.integers(-128, 128, (m, c, k, k)).astype(np.int8)
        wt[0] = -128
        bias = rng.integers(-(1 << 20), 1 << 20, m)
        for mult, shift in ((1, 0), (rng.integers(1, 1 << 15, m), 22), (77, 9)):
            want = ref.mac_output(ref.add_bias(ref.conv2d_acc(x, wt, (1, 1), (0, 0, 0, 0), (1, 1), 1), bias), 32,
                                  mult, shift, -128, 127).astype(np.int8)
            layer = fast.VnniConv.plan(fast.IntConvWeights(wt), x.dtype, (1, 1), (0, 0, 0, 0), (1, 1), (2, m, 1, 1),
                                       mult, shift, -128, 127, np.int8)
            assert np.array_equal(layer.run(x, bias), want), (isa, c, k, m)


def test_eltwise_add_equals_the_specification(isa):
    """The SIMD add of two 8-bit tensors (C form under TIDLC_ISA=c): lengths off the 16-element
    steps, negative multipliers, sub, saturation at both ends, 8- and 16-bit results."""
    from tidlc.backends.tidl.fixed import fast_ops
    rng = np.random.default_rng(9)
    for n in (1, 15, 16, 17, 100, 1027):
        for ta, tb in ((np.int8, np.int8), (np.uint8, np.int8), (np.uint8, np.uint8)):
            a = rng.integers(np.iinfo(ta).min, np.iinfo(ta).max + 1, (1, n)).astype(ta)
            b = rng.integers(np.iinfo(tb).min, np.iinfo(tb).max + 1, (1, n)).astype(tb)
            a[0, :3], b[0, :3] = np.iinfo(ta).min, np.iinfo(tb).max
            for ma, mb, shift in ((1, 1, 0), (181, -77, 7), (-32767, 32767, 20), (3, 5, 1)):
                for out, (lo, hi) in ((np.int8, (-128, 127)), (np.uint8, (0, 255)), (np.int16, (-300, 32767)),
                                      (np.uint16, (0, 65535))):
                    for sub in (False, True):
                        want = ref.eltwise_add(a, b, ma, mb, shift, lo, hi, sub).astype(out)
                        got = fast_ops.eltwise_add(a, b, ma, mb, shift, lo, hi, sub, out)
                        assert got.dtype == want.dtype and np.array_equal(got, want), (isa, n, ta, tb, ma, mb, out)


HERE = os.path.dirname(os.path.abspath(__file__))
FIXED = os.path.join(os.path.dirname(os.path.dirname(HERE)), "backends", "tidl", "fixed")


@pytest.fixture(scope="module")
def vnni_emulated(tmp_path_factory):
    """tests/backend/avxvnni/harness.c built against igemm_port.h with vpdpbusd emulated in AVX2."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or platform.machine() not in ("x86_64", "AMD64") or "avx2" not in _igemm.supported_isas():
        pytest.skip("needs an x86-64 C compiler and an AVX2 CPU")
    lib = str(tmp_path_factory.mktemp("avxvnni") / "harness.so")
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-I", FIXED, "-o", lib, os.path.join(HERE, "avxvnni", "harness.c")],
                   check=True)
    return ctypes.CDLL(lib)


@pytest.mark.parametrize("seed", range(3))
def test_avxvnni_gemm_equals_the_specification_with_vpdpbusd_emulated(vnni_emulated, seed):
    """The AVX-VNNI GEMM (byte quads, pack_weights_quads) next to the AVX2 one (int16 pairs,
    pack_weights_pairs), on a CPU without AVX-VNNI: every other instruction of the variant runs as
    built; work split into channel parts and item ranges as the threads would."""
    rng = np.random.default_rng(500 + seed)

    def ptr(a):
        return a.ctypes.data_as(ctypes.c_void_p)
    for t in range(40):
        cin, m = int(rng.integers(1, 40)), int(rng.integers(1, 20))
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        sh, sw, dh, dw = (int(v) for v in rng.integers(1, 3, 4))
        h, w = int(rng.integers((kh - 1) * dh + 1, 30)), int(rng.integers((kw - 1) * dw + 1, 30))
        ho, wo = (h - (kh - 1) * dh - 1) // sh + 1, (w - (kw - 1) * dw - 1) // sw + 1
        signed = bool(t % 2)
        x = (rng.integers(-128, 128, (1, cin, h, w)).astype(np.int8) if signed
             else rng.integers(0, 256, (1, cin, h, w)).astype(np.uint8))
        if t % 7 == 0:
            x[...] = -128 if signed else 255
        wt = rng.integers(-128, 128, (m, cin, kh, kw)).astype(np.int8)
        w2 = wt.reshape(m, -1)
        bias = rng.integers(-5000, 5000, m).astype(np.int64)
        mult = np.ones(m, np.int64) if t % 3 == 0 else rng.integers(1, 1 << 14, m).astype(np.int64)
        shift = int(rng.integers(0, 20))
        want = ref.mac_output(ref.add_bias(ref.conv2d_acc(x, wt, (sh, sw), (0, 0, 0, 0), (dh, dw), 1), bias), 32,
                              mult, shift, -128, 127)[0].reshape(m, -1)
        layer = fast.VnniConv.plan(fast.IntConvWeights(wt), x.dtype, (sh, sw), (0, 0, 0, 0), (dh, dw), (1, m, ho, wo),
                                   mult, shift, -128, 127, np.int8)
        b = np.ascontiguousarray(bias - 128 * w2.astype(np.int64).sum(axis=1) if signed else bias)
        narrow = _igemm.ConvPlan(layer.weights.packed, m, cin, kh, kw, (sh, sw), (dh, dw), ho, wo, b, mult, shift,
                                 -128, 127, np.int8, signed).narrow
        xb = np.ascontiguousarray(x[0]).view(np.uint8)
        for variant, packed in ((0, _igemm.pack_weights_pairs(w2)), (1, _igemm.pack_weights_quads(w2))):
            for msplit, parts in ((1, 1), (2, 3), (3, 2)):
                out = np.zeros((m, ho * wo), np.int8)
                rc = vnni_emulated.run(variant, ptr(xb), int(signed), cin, h, w, kh, kw, sh, sw, dh, dw, ho, wo,
                                       ptr(packed), m, ptr(b), ptr(mult), shift, ctypes.c_int64(-128),
                                       ctypes.c_int64(127), narrow, ptr(out), 0, msplit, parts)
                assert rc == 0 and np.array_equal(out, want), (variant, t, msplit, parts)


def _light_resnet_graph():
    onnx = pytest.importorskip("onnx")
    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_resnet50.onnx")
    if not os.path.exists(path):
        pytest.skip("light_resnet50.onnx not in this onnx wheel")
    from tidlc.compiler import compile_model
    from tidlc.config import CompileOptions
    with pytest.warns(Warning):
        return compile_model(path, CompileOptions.of(emit="none", quantize=True, calib_frames=1)).graph


def _ultraface_graph():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples",
                        "ultraface", "ultraface-rfb320.onnx")
    if not os.path.exists(path):
        pytest.skip("examples/ultraface not in this checkout")
    import warnings

    from tidlc.compiler import compile_model
    from tidlc.config import CompileOptions
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compile_model(path, CompileOptions.of(emit="none", quantize=True, calib_frames=1)).graph


_GRAPHS = {}


@pytest.mark.parametrize("model,seed", (("resnet50", 0), ("resnet50", 1), ("ultraface", 0)))
def test_whole_network_equals_numpy(isa, model, seed):
    """light ResNet-50 and UltraFace (depthwise, concat, softmax), 8-bit: every layer's output
    identical to --kernels numpy under this ISA (so identical across the variants)."""
    if model not in _GRAPHS:
        _GRAPHS[model] = _light_resnet_graph() if model == "resnet50" else _ultraface_graph()
    graph = _GRAPHS[model]
    feeds = {op.attrs["name"]: np.random.default_rng(seed).uniform(-2, 2, op.results[0].type.shape).astype(np.float32)
             for op in graph.input_ops}

    def trace(kernels):
        seen = []
        FixedExecutor(graph, kernels=kernels).run(feeds, observer=lambda op, rs: seen.extend(r.copy() for r in rs))
        return seen

    from tidlc.backends.tidl.fixed.dispatch import accepted_by
    from tidlc.backends.tidl.fixed.fast_kernels import VNNI
    macs = [op for op in graph.ops if op.kind in ("conv2d", "dense")]
    assert macs and all(accepted_by(op, VNNI) for op in macs)  # every layer on this variant's integer kernels
    want, got = trace("numpy"), trace("auto")
    assert len(got) == len(want) > 50
    for a, b in zip(want, got):
        assert a.dtype == b.dtype and np.array_equal(a, b)
