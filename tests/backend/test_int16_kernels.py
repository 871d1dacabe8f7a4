"""The 16-bit integer kernels (igemm16.h, _igemm16.pyx; issue 16 item 2) equal the numpy specification
bit for bit: conv2d (strides, padding, dilation), depthwise, dense, with 8/16-bit activations and
weights, at the extremes (saturation, rounding ties, the largest sums), under the portable C and the
AVX2 variants (fast.set_isa) and any thread count; and whole 16-bit (and mixed 8/16-bit) networks
run by ``--kernels auto`` equal ``--kernels numpy`` layer by layer."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from tidlc.backends.tidl.fixed import FixedExecutor, _igemm, _igemm16, fast, fast_kernels
from tidlc.backends.tidl.fixed import reference as ref

CIFAR = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "caffe" / "cifar10_quick"
X_DTYPES = (np.uint8, np.int8, np.uint16, np.int16)
OUT_DTYPES = (np.int8, np.uint8, np.int16, np.uint16)


@pytest.fixture(params=("avx2", "c"))
def isa(request):
    """The variant under test: ``c`` runs the portable C kernels, every other ISA the AVX2 ones."""
    name = request.param
    if name not in _igemm.supported_isas() or (name != "c" and not _igemm16.have_avx2()):
        pytest.skip(f"this CPU (or build) cannot run the {name} variant")
    before = fast.isa()
    fast.set_isa(name)
    yield name
    fast.set_isa(before)


def _codes(rng, dtype, shape, extreme: bool) -> np.ndarray:
    info = np.iinfo(dtype)
    if extreme:  # only the ends of the range: the largest products and sums
        return rng.choice(np.array([info.min, info.max], np.int64), shape).astype(dtype)
    return rng.integers(int(info.min), int(info.max) + 1, shape).astype(dtype)


def _stage(rng, acc: np.ndarray, m: int, out_dtype, per_channel: bool):
    """A multiplier and shift that bring the sums near the output range (so that the rounding and
    not only the clamp decides most results), a bias and the output clamp."""
    info = np.iinfo(out_dtype)
    span = max(1, int(np.abs(acc).max()))
    shift = int(np.clip(span.bit_length() - info.bits + 8, 0, 62))
    mult = rng.integers(1, 1 << 8, m).astype(np.int64) if per_channel else int(rng.integers(1, 1 << 8))
    bias = rng.integers(-span, span + 1, m).astype(np.int64)
    lo, hi = int(info.min), int(info.max)
    if rng.random() < 0.3:  # a fused ReLU-like clamp
        lo = max(lo, 0)
    return bias, mult, shift, lo, hi


def _spec(x, w, bias, strides, pads, dil, groups, acc_width, mult, shift, lo, hi, out_dtype):
    acc = ref.add_bias(ref.conv2d_acc(x, w, strides, pads, dil, groups), bias)
    return ref.mac_output(acc, acc_width, mult, shift, lo, hi).astype(out_dtype)


def _run_all_threads(layer, x, bias, want):
    for threads in (1, 2, 3):
        got = layer.run(x, bias, threads, fast.isa() != "c")
        assert got is not None and got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want), threads


@pytest.mark.parametrize("seed", range(12))
def test_conv_equals_the_specification(isa, seed):
    rng = np.random.default_rng(1600 + seed)
    x_dtype = X_DTYPES[seed % 4]
    w_dtype = np.int16 if x_dtype in (np.uint8, np.int8) or seed % 3 else np.int8
    for case in range(3):
        cin, cout = int(rng.integers(1, 40)), int(rng.integers(1, 20))
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        strides = ((1, 1), (2, 2), (1, 2), (2, 1))[case + seed % 2]
        dil = (1, 1) if case else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        pads = tuple(int(v) for v in rng.integers(0, 3, 4))
        h, wd = int(rng.integers((kh - 1) * dil[0] + 1, 30)), int(rng.integers((kw - 1) * dil[1] + 1, 30))
        extreme = seed % 3 == 0
        x = _codes(rng, x_dtype, (2, cin, h, wd), extreme)
        w = _codes(rng, w_dtype, (cout, cin, kh, kw), extreme)
        acc = ref.conv2d_acc(x, w, strides, pads, dil, 1)
        out_dtype = OUT_DTYPES[int(rng.integers(4))]
        bias, mult, shift, lo, hi = _stage(rng, acc, cout, out_dtype, per_channel=bool(case % 2))
        want = _spec(x, w, bias, strides, pads, dil, 1, 64, mult, shift, lo, hi, out_dtype)
        layer = _igemm16.plan_conv(w, 1, x.dtype, strides, pads, dil, want.shape, mult, shift, 64, lo, hi, out_dtype)
        assert layer is not None
        _run_all_threads(layer, x, bias, want)


@pytest.mark.parametrize("seed", range(8))
def test_depthwise_equals_the_specification(isa, seed):
    rng = np.random.default_rng(2600 + seed)
    x_dtype = X_DTYPES[seed % 4]
    w_dtype = np.int16 if x_dtype in (np.uint8, np.int8) or seed % 2 else np.int8
    for case in range(3):
        c = int(rng.integers(1, 24))
        k = (3, 5, 1)[case]
        strides = ((1, 1), (2, 2), (1, 3))[(case + seed) % 3]
        dil = (1, 1) if seed % 4 else (2, 2)
        pads = (k // 2,) * 4 if case != 2 else (0, 1, 1, 0)
        h, wd = int(rng.integers((k - 1) * dil[0] + 1, 30)), int(rng.integers((k - 1) * dil[1] + 1, 40))
        extreme = seed % 3 == 0
        x = _codes(rng, x_dtype, (2, c, h, wd), extreme)
        w = _codes(rng, w_dtype, (c, 1, k, k), extreme)
        acc = ref.conv2d_acc(x, w, strides, pads, dil, c)
        out_dtype = OUT_DTYPES[int(rng.integers(4))]
        bias, mult, shift, lo, hi = _stage(rng, acc, c, out_dtype, per_channel=bool(seed % 2))
        want = _spec(x, w, bias, strides, pads, dil, c, 64, mult, shift, lo, hi, out_dtype)
        layer = _igemm16.plan_conv(w, c, x.dtype, strides, pads, dil, want.shape, mult, shift, 64, lo, hi, out_dtype)
        assert isinstance(layer, _igemm16.Depthwise16)
        _run_all_threads(layer, x, bias, want)


@pytest.mark.parametrize("x_dtype", X_DTYPES)
def test_dense_equals_the_specification(isa, x_dtype):
    rng = np.random.default_rng(5)
    for k, m, rows in ((5, 3, 1), (301, 17, 4), (4097, 10, 2), (64, 130, 70)):
        x = _codes(rng, x_dtype, (rows, k), False)
        w = _codes(rng, np.int16, (m, k), False)
        acc = ref.dense_acc(x, w)
        bias, mult, shift, lo, hi = _stage(rng, acc, m, np.int16, per_channel=True)
        want = ref.mac_output(ref.add_bias(acc, bias, axis=-1), 64, mult, shift, lo, hi, axis=-1).astype(np.int16)
        layer = _igemm16.plan_dense(w, x.dtype, (rows, m), mult, shift, 64, lo, hi, np.int16)
        assert layer is not None
        for threads in (1, 2):
            got = layer.run(x, bias, threads, fast.isa() != "c")
            assert got.dtype == want.dtype and np.array_equal(got, want), (k, m, rows, threads)


def test_the_largest_sums_and_the_wrapping_output_stage(isa):
    """Every product at its largest (|x w| = 2**30, pairs of them at 2**31, the case vpmaddwd
    cannot hold: the kernels pack -32768 as -32767 and correct the sums), sums far past int32, a 32-bit accumulator that saturates,
    and a multiplier that takes ``sum * mult`` past int64 (numpy wraps; so must the kernels)."""
    k = 40000  # pairs per int32 block: more than I16_KBLOCK
    for x_val, w_val, x_dtype in ((-32768, -32768, np.int16), (-32768, 32767, np.int16), (65535, -32768, np.uint16),
                                  (0, -32768, np.uint16), (65535, 32767, np.uint16)):
        x = np.full((1, 2 * k, 1, 9), x_val, x_dtype)
        w = np.full((3, 2 * k, 1, 1), w_val, np.int16)
        w[1] = -w[0] if w_val != -32768 else 32767
        acc = ref.conv2d_acc(x, w, (1, 1), (0, 0, 0, 0), (1, 1), 1)
        assert np.abs(acc).max() > 1 << 40 or x_val == 0  # uint16 zeros: the kernels' -32768 offset at its largest
        for acc_width, mult, shift in ((64, 3, 40), (32, 5, 3), (64, (1 << 62) + 12345, 62), (64, 1, 0)):
            bias = np.array([7, -(1 << 50), 1 << 45], np.int64)
            want = _spec(x, w, bias, (1, 1), (0, 0, 0, 0), (1, 1), 1, acc_width, mult, shift, -32768, 32767, np.int16)
            layer = _igemm16.plan_conv(w, 1, x.dtype, (1, 1), (0, 0, 0, 0), (1, 1), want.shape, mult, shift,
                                       acc_width, -32768, 32767, np.int16)
            _run_all_threads(layer, x, bias, want)


def test_rounding_ties_round_half_up():
    """Sums at exactly half a step: ``round_shift`` adds half and shifts (-2.5 -> -2, 2.5 -> 3)."""
    x = np.array([[[[-5, -3, -1, 1, 3, 5, 7, -7]]]], np.int16)
    w = np.ones((1, 1, 1, 1), np.int16)
    want = _spec(x, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1, 64, 1, 1, -100, 100, np.int16)
    assert want.reshape(-1).tolist() == [-2, -1, 0, 1, 2, 3, 4, -3]
    for avx2 in (False, True):
        layer = _igemm16.plan_conv(w, 1, x.dtype, (1, 1), (0, 0, 0, 0), (1, 1), want.shape, 1, 1, 64, -100, 100,
                                   np.int16)
        assert np.array_equal(layer.run(x, None, 1, avx2), want)
        dw = _igemm16.Depthwise16(w, x.dtype, (1, 1), (0, 0, 0, 0), (1, 1), 1, 8, 1, 1, 64, -100, 100, np.int16)
        assert np.array_equal(dw.run(x, None, 1, avx2), want)


def test_8_bit_layers_and_other_parameters_are_declined():
    w8, w16 = np.ones((2, 3, 1, 1), np.int8), np.ones((2, 3, 1, 1), np.int16)
    geo = ((1, 1), (0, 0, 0, 0), (1, 1), (1, 2, 4, 4))
    assert _igemm16.plan_conv(w8, 1, np.uint8, *geo, 1, 8, 32, 0, 255, np.uint8) is None  # 8-bit: _igemm's
    assert _igemm16.plan_conv(w16, 1, np.uint16, *geo, 1, 63, 64, 0, 255, np.uint8) is None  # shift
    assert _igemm16.plan_conv(w16, 1, np.uint16, *geo, 1, 8, 64, 0, 255, np.int32) is None  # output type
    assert _igemm16.plan_conv(w16, 1, np.int32, *geo, 1, 8, 64, 0, 255, np.uint8) is None  # activations
    assert _igemm16.plan_conv(None, 1, np.int16, *geo, 1, 8, 64, 0, 255, np.uint8) is None  # weights not constant
    assert _igemm16.plan_conv(np.ones((4, 1, 1, 1), np.int16), 2, np.int16, (1, 1), (0, 0, 0, 0), (1, 1),
                              (1, 4, 4, 4), 1, 8, 64, 0, 255, np.uint8) is None  # grouped, not depthwise
    layer = _igemm16.plan_conv(w16, 1, np.uint16, *geo, 1, 8, 64, 0, 255, np.uint8)
    assert layer.run(np.zeros((1, 3, 4, 4), np.int16), None) is None  # a frame of another element type


# ----------------------------------------------------------------------------- whole networks
def _cifar_graph(**options):
    if not CIFAR.is_dir():
        pytest.skip("shared corpus not available")
    from tidlc.compiler import compile_model
    from tidlc.config import CompileOptions
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compile_model(str(CIFAR / "cifar10_quick.prototxt"), CompileOptions.of(
            emit="none", quantize=True, weights=str(CIFAR / "cifar10_quick_iter_5000.caffemodel"),
            calib=str(CIFAR / "samples"), **options)).graph


def _trace(graph, feeds, kernels):
    seen = []
    FixedExecutor(graph, kernels=kernels).run(feeds, observer=lambda op, rs: seen.extend((op, r.copy()) for r in rs))
    return seen


def _mac_kernel_kinds(graph):
    """Which builder of the fast table each MAC layer gets: the 16-bit integer kernel or another."""
    from tidlc.backends.tidl.fixed.dispatch import KernelContext
    from tidlc.backends.tidl.fixed.spec_kernels import mac_params
    return [fast_kernels._int16_mac(op, KernelContext(), mac_params(op)) is not None
            for op in graph.ops if op.kind in ("conv2d", "dense")]


@pytest.mark.parametrize("options", [{"bits": 16}, {"layers_16bit": ("conv2", "ip1")}], ids=["16-bit", "mixed"])
def test_cifar10_quick_equals_the_specification(isa, options):
    """cifar10_quick (the Caffe model with its trained weights, calibrated on its samples), every
    layer's output identical to the specification; every 16-bit MAC layer on the integer kernels."""
    graph = _cifar_graph(**options)
    uses = _mac_kernel_kinds(graph)
    assert all(uses) if "bits" in options else 0 < sum(uses) < len(uses), uses
    rng = np.random.default_rng(0)
    for frame in range(2):
        feeds = {op.attrs["name"]: rng.uniform(-1, 1, op.results[0].type.shape).astype(np.float32) * (1 + 60 * frame)
                 for op in graph.input_ops}
        want, got = _trace(graph, feeds, "numpy"), _trace(graph, feeds, "auto")
        assert len(got) == len(want) > 10
        for (op, a), (_, b) in zip(want, got):
            assert a.dtype == b.dtype and np.array_equal(a, b), op.where()


# ------------------------------------------------------------ the direct (multiplier 1) stages
def _weights_with_extremes(rng, shape, scale):
    """int16 weights of a given spread (small ones: the depthwise plain int32 sums; large ones: the
    split sums) with -32768 and 32767 planted (the GEMM's corrections)."""
    w = np.clip(np.rint(rng.normal(0, scale, shape)), -32768, 32767).astype(np.int16)
    if scale > 1000:
        w.reshape(-1)[:: max(1, w.size // 5)] = -32768
        w.reshape(-1)[1] = 32767
    return w


@pytest.mark.parametrize("seed", range(10))
def test_direct_stage_equals_the_specification(isa, seed):
    """Multiplier 1 (TIDL's power-of-2 scales): the GEMM and depthwise tiles start their sums at
    bias + half and shift in int32 lanes. Shifts below and above 8 and 16, every output type, a
    clamp narrower than the type, uint16/int16 activations at their extremes, -32768 weights, tails
    in K, M and the pixels, 1x1 (packed without gathers) and kxk, and biases on both sides of the
    bound where the stage falls back to int64 lanes."""
    rng = np.random.default_rng(7700 + seed)
    x_dtype = (np.uint16, np.int16)[seed % 2]
    out_dtype = OUT_DTYPES[seed % 4]
    info = np.iinfo(out_dtype)
    for case in range(4):
        shift = int((0, 5, 8, 13, 16, 17, 24, 40)[(seed + 3 * case) % 8])
        lo, hi = int(info.min), int(info.max)
        if case == 3:
            lo, hi = max(lo, 0) + 3, hi - 5
        bias_span = (1 << 43) if case == 2 else 1 << min(62, shift + 8)
        wscale = 12000.0 if shift >= 13 else 12000.0 / 2 ** (16 - shift)  # sums near the output range
        extreme = case == 1

        def centered(acc):  # a bias that brings each channel's sums near 0 (plus noise), or a huge one
            axes = tuple(a for a in range(acc.ndim) if a != 1)
            noise = rng.integers(-bias_span, bias_span, acc.shape[1]).astype(np.int64)
            return noise if case == 2 else noise - np.rint(acc.mean(axis=axes)).astype(np.int64)
        # conv: 1x1 (contiguous pixels, several chunks with a tail) and 3x3
        for kh, cin, cout, h, wd, pads in ((1, int(rng.integers(1, 70)), int(rng.integers(1, 14)), 13, 11, (0,) * 4),
                                           (3, int(rng.integers(1, 9)), int(rng.integers(1, 9)), 9, 10, (1,) * 4)):
            x = _codes(rng, x_dtype, (1, cin, h, wd), extreme)
            w = _weights_with_extremes(rng, (cout, cin, kh, kh), wscale)
            bias = centered(ref.conv2d_acc(x, w, (1, 1), pads, (1, 1), 1))
            want = _spec(x, w, bias, (1, 1), pads, (1, 1), 1, 64, 1, shift, lo, hi, out_dtype)
            layer = _igemm16.plan_conv(w, 1, x.dtype, (1, 1), pads, (1, 1), want.shape, 1, shift, 64, lo, hi,
                                       out_dtype)
            _run_all_threads(layer, x, bias, want)
        # depthwise: plain (small weights) and split sums, strides 1 and 2, widths below and above 16
        for scale, stride, dil, wd in ((300.0, 1, 1, 37), (15000.0, 2, 1, 45), (15000.0, 1, 2, 9), (900.0, 2, 2, 20)):
            c = int(rng.integers(1, 7))
            x = _codes(rng, x_dtype, (1, c, 11, wd), extreme)
            w = _weights_with_extremes(rng, (c, 1, 3, 3), scale if shift >= 13 else min(scale, wscale))
            pads = (dil,) * 4
            bias = centered(ref.conv2d_acc(x, w, (stride, stride), pads, (dil, dil), c))
            want = _spec(x, w, bias, (stride, stride), pads, (dil, dil), c, 64, 1, shift, lo, hi, out_dtype)
            layer = _igemm16.plan_conv(w, c, x.dtype, (stride, stride), pads, (dil, dil), want.shape, 1, shift, 64,
                                       lo, hi, out_dtype)
            _run_all_threads(layer, x, bias, want)


def test_depthwise_extreme_weights_and_kernel_widths(isa):
    """Depthwise taps at +-32768 x -32768 (the split sums at their largest), kernel widths 1, 2, 4, 5
    (pairs of taps, odd and even), 2 and 4 the largest kernel sizes the AVX2 path takes (15 x 17 = 255
    taps) and one past it (the C loops)."""
    rng = np.random.default_rng(99)
    for kh, kw, stride in ((1, 2, 1), (2, 4, 2), (5, 5, 1), (1, 1, 2), (15, 17, 1), (16, 16, 2)):
        for x_dtype in (np.uint16, np.int16):
            c = 3
            x = _codes(rng, x_dtype, (1, c, kh + 6, kw + 21), True)
            w = _codes(rng, np.int16, (c, 1, kh, kw), True)
            w[0] = -32768
            pads = (kh // 2, kw // 2, kh // 2, kw // 2)
            for mult, shift in ((1, 20), (1, 3), (3, 22)):
                acc = ref.conv2d_acc(x, w, (stride, stride), pads, (1, 1), c)
                bias = rng.integers(-(1 << 30), 1 << 30, c).astype(np.int64)
                want = _spec(x, w, bias, (stride, stride), pads, (1, 1), c, 64, mult, shift, -32768, 32767, np.int16)
                assert kh * kw < 9 or np.abs(acc).max() > 1 << 31  # past int32
                layer = _igemm16.plan_conv(w, c, x.dtype, (stride, stride), pads, (1, 1), want.shape, mult, shift, 64,
                                           -32768, 32767, np.int16)
                _run_all_threads(layer, x, bias, want)
