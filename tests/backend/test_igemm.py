"""The integer convolution kernels (fast.conv2d_vnni / _igemm: GEMM, depthwise, one-pixel) equal the
numpy specification bit for bit, under every variant this CPU runs (TIDLC_ISA: avx512vnni, avxvnni,
avx2, c; each test runs once per variant)."""
import numpy as np
import pytest
from tidlc.backends.tidl.fixed import fast
from tidlc.backends.tidl.fixed import reference as ref

pytestmark = pytest.mark.usefixtures("isa")  # every test once per variant (conftest.py)


def out_hw(h, w, k, strides, pads, dil):
    ho = (h + pads[0] + pads[2] - dil[0] * (k[0] - 1) - 1) // strides[0] + 1
    wo = (w + pads[1] + pads[3] - dil[1] * (k[1] - 1) - 1) // strides[1] + 1
    return ho, wo


def spec(x, w, bias, strides, pads, dil, mult, shift, lo, hi):
    acc = ref.add_bias(ref.conv2d_acc(x, w, strides, pads, dil, 1), bias)
    return ref.mac_output(acc, 32, mult, shift, lo, hi)


def vnni(x, w, bias, strides, pads, dil, mult, shift, lo, hi, dtype):
    ho, wo = out_hw(x.shape[2], x.shape[3], w.shape[2:], strides, pads, dil)
    return fast.conv2d_vnni(x, fast.IntConvWeights(w), bias, strides, pads, dil, (x.shape[0], w.shape[0], ho, wo),
                            mult, shift, lo, hi, dtype)


@pytest.mark.parametrize("seed", range(8))
def test_random_convolutions(seed):
    rng = np.random.default_rng(seed)
    for t in range(25):
        cin, cout = int(rng.integers(1, 70)), int(rng.integers(1, 20))
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        strides = tuple(int(v) for v in rng.integers(1, 4, 2))
        dil = tuple(int(v) for v in rng.integers(1, 3, 2))
        pads = tuple(int(v) for v in rng.integers(0, 3, 4))
        h, w = int(rng.integers((kh - 1) * dil[0] + 1, 40)), int(rng.integers((kw - 1) * dil[1] + 1, 40))
        signed = bool(rng.integers(2))
        x = (rng.integers(-128, 128, (2, cin, h, w)).astype(np.int8) if signed
             else rng.integers(0, 256, (2, cin, h, w)).astype(np.uint8))
        wt = rng.integers(-128, 128, (cout, cin, kh, kw)).astype(np.int8)
        bias = rng.integers(-100000, 100000, cout).astype(np.int64) if t % 4 else None
        mult = rng.integers(1 << 14, 1 << 15, cout).astype(np.int64) if t % 2 else int(rng.integers(1, 1 << 15))
        shift = int(rng.integers(0, 30))
        dtype = [np.int8, np.uint8, np.int16, np.uint16][t % 4]
        lo, hi = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
        if t % 5 == 0:
            lo, hi = max(lo, 0), min(hi, 90)  # a fused ReLU6-like clamp
        got = vnni(x, wt, bias, strides, pads, dil, mult, shift, lo, hi, dtype)
        assert got.dtype == dtype
        assert np.array_equal(got.astype(np.int64), spec(x, wt, bias, strides, pads, dil, mult, shift, lo, hi))


def test_extreme_values_saturate_the_accumulator_like_the_specification():
    """K = 4608 of 255 x -128 (and 127): the int32 sums are exact, bias pushes them past 2**31."""
    x = np.full((1, 512, 5, 5), 255, np.uint8)
    w = np.full((9, 512, 3, 3), -128, np.int8)
    w[1], w[2] = 127, 0
    w[3, :, 1, 1] = 127
    bias = np.array([-(1 << 31), (1 << 31), 0, 5, -5, 1 << 40, -(1 << 40), 7, 0], np.int64)
    for shift, mult in ((0, 1), (31, (1 << 31) - 1), (20, 12345)):
        got = vnni(x, w, bias, (1, 1), (1, 1, 1, 1), (1, 1), mult, shift, -(1 << 15), (1 << 15) - 1, np.int16)
        want = spec(x, w, bias, (1, 1), (1, 1, 1, 1), (1, 1), mult, shift, -(1 << 15), (1 << 15) - 1)
        assert np.array_equal(got, want)
    xs = np.full((1, 512, 5, 5), -128, np.int8)
    got = vnni(xs, w, bias, (2, 2), (0, 1, 2, 0), (1, 1), 777, 24, -128, 127, np.int8)
    assert np.array_equal(got, spec(xs, w, bias, (2, 2), (0, 1, 2, 0), (1, 1), 777, 24, -128, 127))


def test_results_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (2, 40, 23, 31)).astype(np.uint8)
    w = rng.integers(-128, 128, (33, 40, 3, 3)).astype(np.int8)
    mult = rng.integers(1 << 14, 1 << 15, 33)
    results = []
    try:
        for threads in (1, 2, 3, 7):
            fast.set_threads(threads)
            results.append(vnni(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), mult, 21, 0, 255, np.uint8))
    finally:
        fast.set_threads(None)
    assert all(np.array_equal(r, results[0]) for r in results)
    assert np.array_equal(results[0], spec(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), mult, 21, 0, 255))


def test_cases_outside_the_kernel_are_declined():
    x = np.zeros((1, 2, 4, 4), np.int16)
    w = np.zeros((1, 2, 1, 1), np.int8)
    assert vnni(x, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1, 0, 0, 1, np.int16) is None  # 16-bit data
    x8 = np.zeros((1, 2, 4, 4), np.uint8)
    assert vnni(x8, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1, -1, 0, 1, np.uint8) is None  # left shift
    assert vnni(x8, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1 << 31, 3, 0, 1, np.uint8) is None  # huge multiplier
    assert vnni(x8, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1, 3, 0, 1, np.int32) is None  # 32-bit output
    assert not fast.IntConvWeights.supports(np.zeros((1, 2, 1, 1), np.int16))
    assert not fast.IntConvWeights.supports(np.zeros((1, 65793, 1, 1), np.int8))  # int32 sums could overflow


@pytest.mark.parametrize("seed", range(4))
def test_dense_layers(seed):
    rng = np.random.default_rng(seed)
    for t in range(10):
        rows, k, m = int(rng.integers(1, 5)), int(rng.integers(1, 3000)), int(rng.integers(1, 40))
        signed = bool(t % 2)
        x = (rng.integers(-128, 128, (rows, k)).astype(np.int8) if signed
             else rng.integers(0, 256, (rows, k)).astype(np.uint8))
        w = rng.integers(-128, 128, (m, k)).astype(np.int8)
        bias = rng.integers(-5000, 5000, m)
        mult, shift = rng.integers(1 << 14, 1 << 15, m), int(rng.integers(8, 24))
        dtype = (np.int8, np.uint8, np.int16)[t % 3]
        lo, hi = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
        want = ref.mac_output(ref.add_bias(ref.dense_acc(x, w), bias, -1), 32, mult, shift, lo, hi, -1)
        layer = fast.VnniDense.plan(w, x.dtype, (rows, m), mult, shift, lo, hi, dtype)
        got = layer.run(x, bias)
        assert got.dtype == dtype and got.shape == want.shape and np.array_equal(got, want)


@pytest.mark.parametrize("seed", range(6))
def test_depthwise_layers(seed):
    """The depthwise kernels (AVX-512: masked loads read the padding as zeros; AVX2: a zero-padded
    copy of each plane; C: the taps inside the image)."""
    rng = np.random.default_rng(seed)
    for t in range(12):
        c = int(rng.integers(1, 20))
        kh, kw = (int(v) for v in rng.integers(1, 6, 2))
        strides = (int(rng.integers(1, 4)), int(rng.integers(1, 3)))
        dil = tuple(int(v) for v in rng.integers(1, 3, 2))
        pads = tuple(int(v) for v in rng.integers(0, 4, 4))
        h = int(rng.integers(max(1, (kh - 1) * dil[0] + 1 - pads[0] - pads[2]), 30))
        w = int(rng.integers(max(1, (kw - 1) * dil[1] + 1 - pads[1] - pads[3]), 90))
        signed = bool(t % 2)
        x = (rng.integers(-128, 128, (2, c, h, w)).astype(np.int8) if signed
             else rng.integers(0, 256, (2, c, h, w)).astype(np.uint8))
        if t % 3 == 0:
            x[...] = -128 if signed else 255  # the extremes
        wt = rng.integers(-128, 128, (c, 1, kh, kw)).astype(np.int8)
        bias = rng.integers(-(1 << 20), 1 << 20, c)
        mult = rng.integers(1, 1 << 15, c) if t % 2 else int(rng.integers(1, 1 << 15))
        shift = int(rng.integers(0, 24))
        dtype = (np.int8, np.uint8, np.int16, np.uint16)[t % 4]
        lo, hi = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
        ho, wo = out_hw(h, w, (kh, kw), strides, pads, dil)
        want = ref.mac_output(ref.add_bias(ref.conv2d_acc(x, wt, strides, pads, dil, c), bias), 32, mult, shift, lo, hi)
        layer = fast.VnniDepthwise.plan_for(wt, c, x.dtype, strides, pads, dil, (2, c, ho, wo), mult, shift, lo, hi,
                                            dtype)
        got = layer.run(x, bias)
        assert got.dtype == dtype and np.array_equal(got, want), (c, kh, kw, strides, dil, pads, h, w)
    assert fast.VnniDepthwise.plan_for(wt, c, x.dtype, (1, 3), (0, 0, 0, 0), (1, 1), (2, c, 1, 1), 1, 0, 0, 1,
                                       np.uint8) is None  # W stride 3: the Cython kernel's case


def test_every_output_stage_form_is_exercised_and_exact():
    """int32 lanes when the bounds allow it (direct: power-of-2 scales; split: 15-bit multipliers
    with long shifts), int64 lanes otherwise."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (1, 30, 9, 37)).astype(np.uint8)
    w = rng.integers(-128, 128, (11, 30, 3, 3)).astype(np.int8)
    wd = rng.integers(-128, 128, (30, 1, 3, 3)).astype(np.int8)
    mult = rng.integers(1 << 14, 1 << 15, 11)
    for shift, bias, narrow in ((20, rng.integers(-9999, 9999, 11), 1), (12, None, 0),
                                (20, np.full(11, 1 << 31), 0), (47, None, 0)):
        conv = fast.VnniConv.plan(fast.IntConvWeights(w), np.uint8, (1, 1), (1, 1, 1, 1), (1, 1), (1, 11, 9, 37), mult,
                                  shift, 0, 255, np.uint8)
        got = conv.run(x, bias)
        assert conv._plan.narrow == narrow
        assert np.array_equal(got, spec(x, w, bias, (1, 1), (1, 1, 1, 1), (1, 1), mult, shift, 0, 255))
        dbias = None if bias is None else np.resize(bias, 30)
        dmult = np.resize(mult, 30)
        dw = fast.VnniDepthwise.plan_for(wd, 30, np.uint8, (1, 2), (1, 1, 1, 1), (1, 1), (1, 30, 9, 19), dmult,
                                         shift, -128, 127, np.int8)
        got = dw.run(x, dbias)
        assert dw._compiled.narrow == narrow
        want = ref.mac_output(ref.add_bias(ref.conv2d_acc(x, wd, (1, 2), (1, 1, 1, 1), (1, 1), 30), dbias), 32, dmult,
                              shift, -128, 127)
        assert np.array_equal(got, want)


@pytest.mark.parametrize("signed", [False, True])
def test_one_pixel_layers_take_the_matrix_vector_kernel(signed):
    """A window covering the whole input (classifier convolutions, dense with one row)."""
    rng = np.random.default_rng(int(signed))
    for (c, k, m) in ((1280, 1, 1000), (37, 3, 19), (5, 7, 33)):
        x = (rng.integers(-128, 128, (2, c, k, k)).astype(np.int8) if signed
             else rng.integers(0, 256, (2, c, k, k)).astype(np.uint8))
        x[1] = -128 if signed else 255
        w = rng.integers(-128, 128, (m, c, k, k)).astype(np.int8)
        bias = rng.integers(-(1 << 20), 1 << 20, m)
        mult = rng.integers(1 << 14, 1 << 15, m)
        for shift in (10, 22):
            got = vnni(x, w, bias, (1, 1), (0, 0, 0, 0), (1, 1), mult, shift, -128, 127, np.int8)
            assert np.array_equal(got, spec(x, w, bias, (1, 1), (0, 0, 0, 0), (1, 1), mult, shift, -128, 127))


def test_power_of_two_scales_take_the_direct_int32_form():
    """TIDL's default style: multiplier 1 (or small) and a short shift."""
    rng = np.random.default_rng(8)
    x = rng.integers(-128, 128, (1, 24, 11, 45)).astype(np.int8)
    w = rng.integers(-128, 128, (13, 24, 3, 3)).astype(np.int8)
    wd = rng.integers(-128, 128, (24, 1, 3, 3)).astype(np.int8)
    for mult, shift, narrow in ((1, 7, 2), (3, 0, 2), (1, 0, 2), (-5, 9, 2), (1 << 14, 7, 0)):
        bias = rng.integers(-3000, 3000, 13)
        conv = fast.VnniConv.plan(fast.IntConvWeights(w), np.int8, (1, 1), (1, 1, 1, 1), (1, 1), (1, 13, 11, 45),
                                  mult, shift, -128, 127, np.int8)
        assert np.array_equal(conv.run(x, bias), spec(x, w, bias, (1, 1), (1, 1, 1, 1), (1, 1), mult, shift, -128, 127))
        assert conv._plan.narrow == narrow
        dw = fast.VnniDepthwise.plan_for(wd, 24, np.int8, (1, 1), (1, 1, 1, 1), (1, 1), (1, 24, 11, 45), mult, shift,
                                         0, 255, np.uint8)
        want = ref.mac_output(ref.add_bias(ref.conv2d_acc(x, wd, (1, 1), (1, 1, 1, 1), (1, 1), 24), None), 32, mult,
                              shift, 0, 255)
        assert np.array_equal(dw.run(x, None), want)
        assert dw._compiled.narrow == narrow


@pytest.mark.parametrize("signed", [False, True])
def test_depthwise_narrow_planes_and_short_rows(signed):
    """Output rows of at most 8 pixels (the AVX2 kernel computes two rows per vector; an odd row
    count ends with one) and row tails of every length (the partial stores), every output type,
    multiplier 1 (sums preloaded with the bias) or not; 1 and 2 threads give the same bits."""
    rng = np.random.default_rng(11 + signed)
    cases = [(h, w, s, kh, kw) for h, w in ((1, 1), (2, 3), (3, 5), (5, 7), (7, 7), (8, 8), (9, 8), (14, 14),
                                            (6, 17), (4, 31), (3, 33))
             for s in (1, 2) for kh, kw in ((3, 3), (1, 2), (2, 5))]
    for t, (h, w, s, kh, kw) in enumerate(cases):
        c = int(rng.integers(1, 6))
        x = (rng.integers(-128, 128, (1, c, h, w)).astype(np.int8) if signed
             else rng.integers(0, 256, (1, c, h, w)).astype(np.uint8))
        wt = rng.integers(-128, 128, (c, 1, kh, kw)).astype(np.int8)
        pads = (kh // 2, kw // 2, kh // 2, kw // 2)
        ho, wo = out_hw(h, w, (kh, kw), (s, s), pads, (1, 1))
        if ho < 1 or wo < 1:
            continue
        bias = rng.integers(-(1 << 12), 1 << 12, c)
        mult, shift = (1, int(rng.integers(0, 9))) if t % 2 else (int(rng.integers(1, 1 << 15)), int(rng.integers(8, 24)))
        dtype = (np.int8, np.uint8, np.int16, np.uint16)[t % 4]
        lo, hi = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
        want = ref.mac_output(ref.add_bias(ref.conv2d_acc(x, wt, (s, s), pads, (1, 1), c), bias), 32, mult, shift, lo, hi)
        layer = fast.VnniDepthwise.plan_for(wt, c, x.dtype, (s, s), pads, (1, 1), (1, c, ho, wo), mult, shift, lo, hi,
                                            dtype)
        for threads in (1, 2):
            got = layer.run(x, bias, threads)
            assert got.dtype == dtype and np.array_equal(got, want), (h, w, s, kh, kw, threads)
