"""The Cython im2col kernel equals its numpy twin bit for bit (the twin is the specification)."""
import itertools

import numpy as np
import pytest

from tidlc import kernels
from tidlc.kernels import im2col_f32, im2col_f32_numpy


def test_the_compiled_kernel_is_in_use():
    # otherwise every comparison below would compare the twin with itself
    assert kernels.HAVE_CYTHON
    assert im2col_f32 is not im2col_f32_numpy
    assert type(im2col_f32).__name__ in ("cython_function_or_method", "builtin_function_or_method")


def random_case(rng):
    kh, kw = (int(k) for k in rng.integers(1, 5, 2))
    sh, sw = (int(s) for s in rng.integers(1, 4, 2))
    dh, dw = (int(d) for d in rng.integers(1, 4, 2))
    pads = tuple(int(p) for p in rng.integers(0, 5, 4))  # may exceed the kernel: whole rows of padding
    h = int(rng.integers(max(1, (kh - 1) * dh + 1 - pads[0] - pads[2]), 12))
    w = int(rng.integers(max(1, (kw - 1) * dw + 1 - pads[1] - pads[3]), 12))
    n, c = (int(v) for v in rng.integers(1, 4, 2))
    return (n, c, h, w), kh, kw, (sh, sw), pads, (dh, dw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(8))
def test_cython_equals_numpy_twin(dtype, seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        shape, kh, kw, strides, pads, dilations = random_case(rng)
        x = rng.standard_normal(shape).astype(dtype)
        x.flat[::7] = -0.0  # signed zeros and specials must be copied, not recomputed
        x.flat[3::11] = np.nan
        x.flat[5::13] = np.inf
        got, ho, wo = im2col_f32(x, kh, kw, strides, pads, dilations)
        want, ho_t, wo_t = im2col_f32_numpy(x, kh, kw, strides, pads, dilations)
        assert (ho, wo) == (ho_t, wo_t)
        assert got.dtype == want.dtype == dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes(), (shape, kh, kw, strides, pads, dilations)


def test_twin_matches_the_definition():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    kh, kw, (sh, sw), (pt, pl, pb, pr), (dh, dw) = 2, 3, (2, 1), (1, 2, 0, 1), (2, 1)
    cols, ho, wo = im2col_f32_numpy(x, kh, kw, (sh, sw), (pt, pl, pb, pr), (dh, dw))
    assert (ho, wo) == ((6 + 1 - 3) // 2 + 1, (5 + 3 - 3) // 1 + 1)
    for n, c, i, j, oy, ox in itertools.product(range(2), range(3), range(kh), range(kw), range(ho), range(wo)):
        y, x_ = oy * sh - pt + i * dh, ox * sw - pl + j * dw
        inside = 0 <= y < 6 and 0 <= x_ < 5
        assert cols[n, (c * kh + i) * kw + j, oy * wo + ox] == (x[n, c, y, x_] if inside else 0)


def test_non_contiguous_and_read_only_inputs():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((2, 6, 9, 10)).astype(np.float32)
    x = base[:, ::2, :, 1:]  # strided view
    ro = np.array(base)
    ro.flags.writeable = False  # weights from a memory-mapped file are read-only
    for arr in (x, ro):
        got = im2col_f32(arr, 3, 3, (1, 2), (1, 1, 1, 1), (1, 1))[0]
        want = im2col_f32_numpy(np.ascontiguousarray(arr), 3, 3, (1, 2), (1, 1, 1, 1), (1, 1))[0]
        assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", [np.float16, np.int8, np.int32])
def test_other_dtypes_use_the_twin(dtype):
    x = (np.arange(2 * 3 * 4 * 4) % 7).reshape(2, 3, 4, 4).astype(dtype)
    got, ho, wo = im2col_f32(x, 2, 2, (1, 1), (0, 1, 1, 0), (1, 1))
    want, _, _ = im2col_f32_numpy(x, 2, 2, (1, 1), (0, 1, 1, 0), (1, 1))
    assert got.dtype == dtype and got.tobytes() == want.tobytes() and (ho, wo) == (4, 4)


# --- sliding-window kernels: depthwise conv and pooling -----------------------------------
from tidlc.kernels import depthwise_conv2d, max_pool2d, pool2d_window, reference


def test_window_kernels_are_compiled():
    assert depthwise_conv2d is not reference.depthwise_conv2d
    assert pool2d_window is not reference.pool2d_window


def _out_size(size, k, s, p0, p1, d, extra):
    return (size + p0 + p1 - (k - 1) * d - 1) // s + 1 + extra


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(6))
def test_depthwise_equals_twin(dtype, seed):
    rng = np.random.default_rng(100 + seed)
    for _ in range(20):
        shape, kh, kw, strides, pads, dilations = random_case(rng)
        x = rng.standard_normal(shape).astype(dtype)
        w = rng.standard_normal((shape[1], 1, kh, kw)).astype(dtype)
        x.flat[3::11] = np.nan
        w.flat[::5] = -0.0
        got = depthwise_conv2d(x, w, strides, pads, dilations)
        want = reference.depthwise_conv2d(x, w, strides, pads, dilations)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(6))
def test_pool_equals_twin_and_max_is_separable(dtype, seed):
    rng = np.random.default_rng(200 + seed)
    for _ in range(20):
        shape, kh, kw, strides, pads, dilations = random_case(rng)
        extra = int(rng.integers(0, 2))  # ceil-mode windows overhanging the bottom/right edge
        ho = _out_size(shape[2], kh, strides[0], pads[0], pads[2], dilations[0], extra)
        wo = _out_size(shape[3], kw, strides[1], pads[1], pads[3], dilations[1], extra)
        x = rng.standard_normal(shape).astype(dtype)
        x.flat[4::17] = np.nan
        divisor = rng.integers(1, 10, (ho, wo)).astype(dtype)
        got = pool2d_window(x, False, (kh, kw), strides, pads, dilations, ho, wo, divisor)
        want = reference.pool2d_window(x, False, (kh, kw), strides, pads, dilations, ho, wo, divisor)
        np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))
        got_max = pool2d_window(x, True, (kh, kw), strides, pads, dilations, ho, wo)
        want_max = reference.pool2d_window(x, True, (kh, kw), strides, pads, dilations, ho, wo)
        np.testing.assert_array_equal(got_max, want_max)
        np.testing.assert_array_equal(max_pool2d(x, (kh, kw), strides, pads, dilations, ho, wo), want_max)
