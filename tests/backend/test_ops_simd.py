"""The SIMD forms (ops_simd.h, AVX2) of the non-GEMM kernels equal the numpy specification bit for bit.

The shapes are long enough for the vector loops (32 codes a step) and their tails; under
``TIDLC_ISA=c`` the same cases test the C forms. Each test also checks which form ran
(``_ops.simd_runs``): the AVX2 one wherever the CPU has it and the ISA is not ``c``.
"""
import contextlib

import numpy as np
import pytest
from tidlc.backends.tidl.fixed import _ops, fast, fast_ops
from tidlc.backends.tidl.fixed import reference as ref

from tidlc.ir.types import QuantInfo

EIGHT = (np.int8, np.uint8)
SMALL_OUT = (np.int8, np.uint8, np.int16, np.uint16)


def simd_expected() -> bool:
    return fast.isa() != "c"


@contextlib.contextmanager
def runs_simd(expected=None):
    """The block runs at least one AVX2 kernel (when expected), none otherwise."""
    before = _ops.simd_runs()
    yield
    ran = _ops.simd_runs() - before
    if simd_expected() if expected is None else expected:
        assert ran > 0, "the C form ran where the AVX2 form should have"
    else:
        assert ran == 0, "an AVX2 form ran under TIDLC_ISA=c"


def codes(rng, shape, dtype):
    info = np.iinfo(dtype)
    q = rng.integers(int(info.min), int(info.max) + 1, shape)
    pick = rng.random(q.shape)
    q[pick < 0.1] = info.min
    q[pick > 0.9] = info.max
    return q.astype(dtype)


def same(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def requant_to(rng, out):
    """A requantization into ``out``'s full range (some ratios saturate, one keeps the scale)."""
    info = np.iinfo(out)
    s_in = float(rng.uniform(0.5, 40))
    ratio = float(rng.choice([rng.uniform(0.05, 3.0), 1.0, 37.0]))
    return s_in, s_in * ratio, int(info.min), int(info.max)


# ----------------------------------------------------------------------------- requantize, concat
@pytest.mark.parametrize("src", EIGHT)
def test_requantize_and_concat(src):
    rng = np.random.default_rng(1)
    for n in (1, 7, 8, 31, 32, 33, 100, 1000):
        q = codes(rng, (n,), src)
        for out in SMALL_OUT:
            for _ in range(3):
                requant = requant_to(rng, out)
                with runs_simd():
                    got = fast_ops.requantize(q, *requant, out)
                same(got, ref.requantize(q, *requant).astype(out))
    for axis in (1, 3):
        parts = []
        for d in (src, src, np.uint8):
            shape = [2, 3, 9, 37]
            shape[axis] = int(rng.integers(1, 40))
            parts.append(codes(rng, shape, d))
        scales = [7.0, 3.3, 11.5]
        for out in SMALL_OUT:
            info = np.iinfo(out)
            want = np.concatenate([ref.requantize(p, s, 7.0, int(info.min), int(info.max))
                                   for p, s in zip(parts, scales)], axis=axis).astype(out)
            with runs_simd():
                same(fast_ops.concat(parts, scales, 7.0, int(info.min), int(info.max), axis, out), want)


def test_requantize_into_a_narrower_range_saturates_to_it():
    q = np.arange(-128, 128, dtype=np.int8)
    for lo, hi in ((-100, 90), (0, 6), (-128, 127)):
        with runs_simd():
            same(fast_ops.requantize(q, 10.0, 10.0, lo, hi, np.int8), np.clip(q, lo, hi).astype(np.int8))
            same(fast_ops.requantize(q, 10.0, 25.0, lo, hi, np.int16),
                 ref.requantize(q, 10.0, 25.0, lo, hi).astype(np.int16))


# ----------------------------------------------------------------------------- pooling
def out_size(n, k, s, p0, p1, d, ceil):
    span = n + p0 + p1 - (k - 1) * d - 1
    return max((-(-span // s) if ceil else span // s) + 1, 1)


POOLS = [  # kernel, strides, pads (t, l, b, r), dilations, ceil
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    ((2, 2), (2, 2), (0, 0, 1, 1), (1, 1), True),
    ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), False),
    ((3, 3), (2, 2), (0, 0, 0, 0), (1, 1), True),
    ((5, 3), (1, 2), (2, 1, 2, 1), (1, 2), False),
    ((3, 3), (3, 3), (1, 1, 1, 1), (1, 1), True),
    ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1), False),
]


def counts_of(kernel, strides, pads, dil, h, w, ho, wo, include_pad):
    lo_h, hi_h = (-pads[0], h + pads[2]) if include_pad else (0, h)
    lo_w, hi_w = (-pads[1], w + pads[3]) if include_pad else (0, w)
    ch = (np.arange(ho) * strides[0] - pads[0])[:, None] + np.arange(kernel[0]) * dil[0]
    cw = (np.arange(wo) * strides[1] - pads[1])[:, None] + np.arange(kernel[1]) * dil[1]
    return np.maximum((((ch >= lo_h) & (ch < hi_h)).sum(1))[:, None] * (((cw >= lo_w) & (cw < hi_w)).sum(1))[None, :],
                      1)


@pytest.mark.parametrize("dtype", EIGHT)
@pytest.mark.parametrize("window", POOLS, ids=[f"k{p[0][0]}{p[0][1]}s{p[1][0]}{p[1][1]}" for p in POOLS])
def test_pooling(dtype, window):
    kernel, strides, pads, dil, ceil = window
    rng = np.random.default_rng(hash(window) % 1000)
    for h, w in ((9, 77), (4, 33), (7, 64), (3, 5)):
        q = codes(rng, (2, 3, h, w), dtype)
        ho = out_size(h, kernel[0], strides[0], pads[0], pads[2], dil[0], ceil)
        wo = out_size(w, kernel[1], strides[1], pads[1], pads[3], dil[1], ceil)
        taps = all(fast_ops._windows_hold_a_tap(n_out, kernel[a], strides[a], pads[a], dil[a], q.shape[2 + a])
                   for a, n_out in ((0, ho), (1, wo)))
        for requant, out in ((None, dtype), (requant_to(rng, dtype), dtype), (requant_to(rng, np.int16), np.int16)):
            if taps:  # (a window of padding only: the specification runs)
                want = ref.max_pool(q, kernel, strides, pads, dil, ho, wo)
                if requant:
                    want = ref.requantize(want, *requant)
                with runs_simd():
                    same(fast_ops.max_pool(q, kernel, strides, pads, dil, ho, wo, requant, out), want.astype(out))
            requant = requant or requant_to(rng, out)  # the executor always saturates averages
            for include_pad in (False, True):
                counts = counts_of(kernel, strides, pads, dil, h, w, ho, wo, include_pad)
                want = ref.requantize(ref.avg_pool(q, kernel, strides, pads, dil, ho, wo, counts), *requant)
                with runs_simd():
                    got = fast_ops.avg_pool(q, kernel, strides, pads, dil, ho, wo, counts, requant, out)
                same(got, want.astype(out))


def test_max_pool_to_a_wider_type_runs_the_c_form():
    """int64 results (the executor's numpy dtype for some graphs) have no packed store: the C form."""
    q = codes(np.random.default_rng(0), (1, 2, 6, 40), np.int8)
    with runs_simd(expected=False):
        got = fast_ops.max_pool(q, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 3, 20, None, np.int64)
    same(got, ref.max_pool(q, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 3, 20))


@pytest.mark.parametrize("dtype", EIGHT)
def test_global_pooling(dtype):
    rng = np.random.default_rng(5)
    for p in (1, 31, 32, 33, 49, 100, 3136):
        q = codes(rng, (2, 5, p), dtype)
        if p == 3136:
            q[:] = np.iinfo(dtype).max  # the largest sums
            q[1] = np.iinfo(dtype).min
        for requant, out in ((None, np.int64), (requant_to(rng, dtype), dtype)):
            want = q.max(axis=2, keepdims=True).astype(np.int64)
            want = ref.requantize(want, *requant) if requant else want
            with runs_simd():
                same(fast_ops.global_pool(q, "max", requant, out), want.astype(out))
            want = ref.global_avg_pool(q)
            want = ref.requantize(want, *requant) if requant else want
            with runs_simd():
                same(fast_ops.global_pool(q, "avg", requant, out), want.astype(out))


# ----------------------------------------------------------------------------- resize
@pytest.mark.parametrize("dtype", EIGHT)
def test_linear_resize(dtype):
    from tidlc.ir.ops.tensor import _source_coords
    rng = np.random.default_rng(9)
    modes = ("half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel")
    for h, w, ho, wo in ((5, 40, 10, 80), (7, 9, 14, 18), (6, 33, 3, 17), (1, 50, 2, 101), (8, 8, 8, 8)):
        q = codes(rng, (2, 3, h, w), dtype)
        mode = modes[rng.integers(len(modes))]
        axes = [(axis, *ref.linear_weights(_source_coords(n_out, n_in, n_out / n_in, mode), n_in))
                for axis, n_in, n_out in ((2, h, ho), (3, w, wo)) if (n_in, n_out) != (8, 8)]
        for requant, out in ((None, dtype), (requant_to(rng, dtype), dtype), (requant_to(rng, np.uint16), np.uint16)):
            want = ref.resize_linear(q, axes)
            want = ref.requantize(want, *requant) if requant else want
            with runs_simd():
                same(fast_ops.resize_linear(q, axes, requant, out), want.astype(out))


# ----------------------------------------------------------------------------- data convert
def qinfo(bits, signed, scale, zero_point=0):
    return QuantInfo(bits=bits, signed=signed, scale=(scale,), zero_point=zero_point)


def real_inputs(rng, n):
    halves = (np.arange(-300, 301) / 8.0)  # exact halves at scales 4, 2, 0.5, ...
    special = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 0.49999997, -0.49999997, 0.5, -0.5, 2.5, -2.5,
               0.49999999999999994, -0.49999999999999994, 1e-45, np.nextafter(0.5, 0), 127.5, -128.5, 255.5]
    x = np.concatenate([halves, special, rng.normal(0, 40, n), rng.uniform(-300, 300, n)])
    return x[rng.permutation(x.size)]


@pytest.mark.parametrize("dtype", ["i8", "u8", "i16", "u16"])
def test_quantize_rounds_halves_away_and_saturates(dtype):
    rng = np.random.default_rng(11)
    bits, signed = int(dtype[1:]), dtype[0] == "i"
    for n in (0, 5, 333):
        x64 = real_inputs(rng, n)
        for x in (x64.astype(np.float32), x64, x64.astype(np.float32)[: 8 * (x64.size // 8) + 3]):
            for scale, zp in ((4.0, 0), (2.0, 0), (0.5, 0), (3.7, 0), (1e-3, 0), (123.25, 0), (4.0, 3), (0.8, -5)):
                dst = qinfo(bits, signed, scale, zp)
                with np.errstate(invalid="ignore"):
                    want = ref.convert(x, None, dst, dtype)
                    with runs_simd():
                        got = fast_ops.convert(x, None, dst, dtype)
                same(got, want)


@pytest.mark.parametrize("dtype", ["i8", "u8", "i16", "u16"])
def test_dequantize(dtype):
    rng = np.random.default_rng(13)
    bits, signed = int(dtype[1:]), dtype[0] == "i"
    np_type = {"i8": np.int8, "u8": np.uint8, "i16": np.int16, "u16": np.uint16}[dtype]
    for n in (3, 40, 1023, 1024, 5001):  # 8-bit: the table from 1024 codes on
        q = codes(rng, (n,), np_type)
        for scale, zp in ((4.0, 0), (3.7, 0), (1e-3, 0), (7.3e5, 0), (0.8, 3)):
            src = qinfo(bits, signed, scale, zp)
            with runs_simd():
                got = fast_ops.convert(q, src, None, "f32")
            same(got, ref.convert(q, src, None, "f32"))
