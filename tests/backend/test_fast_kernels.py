"""The fast MAC kernels equal the numpy specification bit for bit (random and real tensors)."""
import numpy as np
import pytest
from tidlc.backends.tidl.fixed import FixedExecutor, fast
from tidlc.backends.tidl.fixed import reference as ref


@pytest.mark.parametrize("seed", range(6))
def test_conv_equals_the_specification(seed):
    rng = np.random.default_rng(seed)
    for _ in range(6):
        cin, cout = int(rng.integers(1, 80)), int(rng.integers(1, 20))
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        strides = tuple(int(v) for v in rng.integers(1, 3, 2))
        dil = tuple(int(v) for v in rng.integers(1, 3, 2))
        pads = tuple(int(v) for v in rng.integers(0, 3, 4))
        h, w = int(rng.integers((kh - 1) * dil[0] + 1, 14)), int(rng.integers((kw - 1) * dil[1] + 1, 14))
        unsigned = bool(rng.integers(2))
        x = (rng.integers(0, 256, (2, cin, h, w)) if unsigned else rng.integers(-128, 128, (2, cin, h, w)))
        x = x.astype(np.uint8 if unsigned else np.int8)
        wt = rng.integers(-128, 128, (cout, cin, kh, kw)).astype(np.int8)
        want = ref.conv2d_acc(x, wt, strides, pads, dil, 1)
        got = fast.conv2d_acc(x, fast.DenseWeights(wt), strides, pads, dil, max_chunks=None)
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_long_products_are_chunked_and_stay_exact():
    rng = np.random.default_rng(9)
    x = np.full((1, 600, 3, 3), 255, np.uint8)  # K = 5400 at the extremes: needs several chunks
    wt = np.full((4, 600, 3, 3), -128, np.int8)
    wt[1] = 127
    wt[2] = rng.integers(-128, 128, wt[2].shape)
    assert fast.chunk_length(600 * 9, 255, 128) < 600 * 9
    want = ref.conv2d_acc(x, wt, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    assert np.array_equal(fast.conv2d_acc(x, fast.DenseWeights(wt), (1, 1), (1, 1, 1, 1), (1, 1), max_chunks=None), want)
    assert np.array_equal(fast.conv2d_acc(x, fast.DenseWeights(wt), (1, 1), (1, 1, 1, 1), (1, 1)), want)
    xd = rng.integers(0, 256, (3, 5000)).astype(np.uint8)
    wd = rng.integers(-128, 128, (7, 5000)).astype(np.int8)
    assert np.array_equal(fast.dense_acc(xd, fast.DenseWeights(wd)), ref.dense_acc(xd, wd))


def test_16_bit_data_uses_float64_and_beyond_that_the_specification():
    x = np.full((1, 2, 3, 3), 30000, np.int16)
    w = np.full((1, 2, 1, 1), -30000, np.int16)
    got = fast.conv2d_acc(x, fast.DenseWeights(w), (1, 1), (0, 0, 0, 0), (1, 1))
    assert np.array_equal(got, ref.conv2d_acc(x, w, (1, 1), (0, 0, 0, 0), (1, 1), 1))
    huge = np.full((1, 2, 3, 3), 1 << 30, np.int64)
    assert fast.conv2d_sums(huge, fast.DenseWeights(huge[:, :, :1, :1]), (1, 1), (0, 0, 0, 0), (1, 1)) is None


def test_executor_auto_equals_numpy_on_a_real_network(monkeypatch):
    """ResNet-50 (the onnx wheel's light model), 8-bit: every layer's output identical, with the
    VNNI integer convolutions and (VNNI switched off) with the exact float GEMMs."""
    onnx = pytest.importorskip("onnx")
    import os
    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_resnet50.onnx")
    if not os.path.exists(path):
        pytest.skip("light_resnet50.onnx not in this onnx wheel")
    from tidlc.compiler import compile_model
    from tidlc.config import CompileOptions
    with pytest.warns(Warning):
        graph = compile_model(path, CompileOptions.of(emit="none", quantize=True, calib_frames=1)).graph
    feeds = {op.attrs["name"]: np.random.default_rng(0).uniform(-2, 2, op.results[0].type.shape).astype(np.float32)
             for op in graph.input_ops}
    from tidlc.backends.tidl.fixed import _igemm

    def trace(kernels):
        seen = []
        FixedExecutor(graph, kernels=kernels).run(feeds, observer=lambda op, rs: seen.extend(r.copy() for r in rs))
        return seen

    want, got = trace("numpy"), [trace("auto")]
    monkeypatch.setattr(_igemm, "available", lambda: False)
    got.append(trace("auto"))
    for seen in got:
        assert len(seen) == len(want) > 50
        for a, b in zip(want, seen):
            assert a.dtype == b.dtype and np.array_equal(a, b)


def test_the_compiled_kernels_are_in_use():
    from tidlc.backends.tidl.fixed import _requant
    assert type(_requant.mac_output_channels).__name__ in ("cython_function_or_method", "builtin_function_or_method",
                                                           "_fused_cpdef", "fused_cython_function")


@pytest.mark.parametrize("seed", range(4))
def test_fused_output_stage_equals_the_specification(seed):
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64, np.int64):
        sums = rng.integers(-(1 << 33), 1 << 33, (2, 5, 7, 3)).astype(dtype)  # beyond 32 bits: saturates
        if dtype is np.float32:
            sums = rng.integers(-(1 << 24), 1 << 24, (2, 5, 7, 3)).astype(dtype)
        bias = rng.integers(-(1 << 20), 1 << 20, 5).astype(np.int32)
        for mult, shift in ((int(rng.integers(1, 1 << 15)), int(rng.integers(0, 30))),
                            (rng.integers(1, 1 << 15, 5), int(rng.integers(0, 30))), (1, 0), (3, -2)):
            lo, hi = (0, 255) if rng.integers(2) else (-128, 127)
            acc = sums.astype(np.int64) + bias.astype(np.int64).reshape(1, -1, 1, 1)
            want = ref.mac_output(acc, 32, mult, shift, lo, hi, 1)
            got = fast.mac_output(sums, bias, 32, mult, shift, lo, hi)
            assert got.dtype == want.dtype and np.array_equal(got, want)
            assert np.array_equal(fast.mac_output(sums, None, 32, mult, shift, lo, hi),
                                  ref.mac_output(sums.astype(np.int64), 32, mult, shift, lo, hi, 1))
