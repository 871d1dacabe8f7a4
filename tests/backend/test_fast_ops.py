"""The Cython kernels of the non-GEMM ops (fast_ops, _ops.pyx) equal the numpy specification bit for bit."""
import contextlib

import numpy as np
import pytest
from tidlc.backends.tidl.fixed import FixedExecutor, fast_ops
from tidlc.backends.tidl.fixed import reference as ref

from tidlc.ir.types import QuantInfo

SMALL = (np.int8, np.uint8, np.int16, np.uint16)
OUTS = (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64)


def codes(rng, shape, dtype, extremes=True):
    """Random codes of ``dtype`` with its minimum and maximum sprinkled in."""
    info = np.iinfo(dtype)
    q = rng.integers(int(info.min), int(info.max) + 1, shape)
    if extremes and q.size:
        flat = q.reshape(-1)
        pick = rng.random(flat.size)
        flat[pick < 0.15] = info.min
        flat[pick > 0.85] = info.max
    return q.astype(dtype)


def same(got, want, dtype=None):
    want = np.asarray(want)
    if dtype is not None:
        want = want.astype(dtype)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def requant_for(rng, dtype):
    info = np.iinfo(dtype)
    s_in = float(rng.uniform(0.5, 40))
    return s_in, s_in * float(rng.choice([rng.uniform(0.2, 3.0), 1.0])), int(info.min), int(info.max)


def spec_requant(values, requant):
    return values if requant is None else ref.requantize(values, *requant)


@contextlib.contextmanager
def kernels_only(*names):
    """Fail if fast_ops falls back to these specification functions (the case is the kernels')."""
    saved = {name: getattr(ref, name) for name in names}

    def refuse(*args, **kwargs):
        raise AssertionError("the specification ran instead of the kernel")
    try:
        for name in names:
            setattr(ref, name, refuse)
        yield
    finally:
        for name, fn in saved.items():
            setattr(ref, name, fn)


# ----------------------------------------------------------------------------- grouped conv
def conv_spec(x, w, bias, strides, pads, dil, groups, acc_width, mult, shift, lo, hi, out_dtype):
    acc = ref.add_bias(ref.conv2d_acc(x, w, strides, pads, dil, groups), bias)
    return ref.mac_output(acc, acc_width, mult, shift, lo, hi).astype(out_dtype)


@pytest.mark.parametrize("seed", range(8))
def test_grouped_conv_equals_the_specification(seed):
    rng = np.random.default_rng(seed)
    for trial in range(10):
        xt = SMALL[rng.integers(4)]
        wt = np.int8 if np.dtype(xt).itemsize == 1 and rng.random() < 0.8 else np.int16
        acc_width = 32 if np.dtype(xt).itemsize == 1 and wt is np.int8 else 64
        groups = int(rng.integers(1, 6))
        cg = 1 if rng.random() < 0.6 else int(rng.integers(1, 4))
        per = int(rng.integers(1, 3))
        kh, kw = (int(v) for v in rng.integers(1, 6, 2))
        strides = tuple(int(v) for v in rng.integers(1, 4, 2))
        dil = tuple(int(v) for v in rng.integers(1, 3, 2))
        pads = tuple(int(v) for v in rng.integers(0, 4, 4))
        h = int(rng.integers(max(1, (kh - 1) * dil[0] + 1 - pads[0] - pads[2]), 17))
        w_ = int(rng.integers(max(1, (kw - 1) * dil[1] + 1 - pads[1] - pads[3]), 17))
        x = codes(rng, (int(rng.integers(1, 3)), groups * cg, h, w_), xt)
        w = codes(rng, (groups * per, cg, kh, kw), wt)
        bias_bits = 31 if acc_width == 32 else 40
        bias = None if trial % 4 == 0 else rng.integers(-(1 << bias_bits), 1 << bias_bits, groups * per).astype(
            np.int32 if acc_width == 32 else np.int64)
        mult = int(rng.integers(1, 1 << 15)) if trial % 2 else rng.integers(1 << 14, 1 << 15, groups * per)
        if trial % 5 == 0:
            mult = 1
        shift = int(rng.integers(0, 40 if acc_width == 64 else 30))
        out_dtype = OUTS[rng.integers(len(OUTS))]
        info = np.iinfo(out_dtype)
        lo, hi = [(int(info.min), int(info.max)), (0, int(info.max)), (0, min(int(info.max), 200))][trial % 3]
        if out_dtype in (np.int32, np.int64):
            lo, hi = (-(1 << 20), 1 << 20) if trial % 2 else (lo, hi)
        want = conv_spec(x, w, bias, strides, pads, dil, groups, acc_width, mult, shift, lo, hi, out_dtype)
        direct = cg == 1 or cg * kh * kw <= fast_ops.DIRECT_CONV_TAPS
        with kernels_only("mac_output", *(("conv2d_acc",) if direct else ())):
            got = fast_ops.grouped_conv(x, w, bias, strides, pads, dil, groups, acc_width, mult, shift, lo, hi,
                                        out_dtype)
        same(got, want)


@pytest.mark.parametrize("dtype", SMALL)
def test_depthwise_conv_saturates_at_the_extremes(dtype):
    """Every input and weight at its extreme: the 32-bit accumulator saturates, ReLU6-like clamps."""
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    wt = np.int8 if np.dtype(dtype).itemsize == 1 else np.int16
    acc_width = 32 if wt is np.int8 else 64
    for fill_x in (info.min, info.max):
        x = np.full((1, 6, 9, 7), fill_x, dtype)
        for fill_w in (np.iinfo(wt).min, np.iinfo(wt).max):
            w = np.full((6, 1, 3, 3), fill_w, wt)
            bias = np.array([0, 1 << 30, -(1 << 30), (1 << 31) - 1, -(1 << 31), 7], np.int64)
            for mult, shift, lo, hi in ((1, 0, 0, 255), (rng.integers(1 << 14, 1 << 15, 6), 20, -128, 127),
                                        (32767, 62, -32768, 32767), (3, 1, 0, 191)):
                want = conv_spec(x, w, bias, (1, 1), (1, 1, 1, 1), (1, 1), 6, acc_width, mult, shift, lo, hi,
                                 np.int16)
                with kernels_only("mac_output", "conv2d_acc"):
                    got = fast_ops.grouped_conv(x, w, bias, (1, 1), (1, 1, 1, 1), (1, 1), 6, acc_width, mult, shift,
                                                lo, hi, np.int16)
                same(got, want)


def test_grouped_conv_many_taps_and_fallbacks():
    rng = np.random.default_rng(5)
    x = codes(rng, (1, 32, 9, 9), np.uint8)  # 16 channels per group, 3x3: the GEMM path + fused stage
    w = codes(rng, (8, 16, 3, 3), np.int8)
    bias = rng.integers(-5000, 5000, 8).astype(np.int32)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 2, 32, rng.integers(1 << 14, 1 << 15, 8), 18, 0, 255)
    same(fast_ops.grouped_conv(x, w, bias, *args, np.uint8), conv_spec(x, w, bias, *args, np.uint8))
    # per-channel shifts, a shift of 63, int64 data and float results run the specification
    for shift in ((np.arange(8) + 3).reshape(1, -1, 1, 1), 63):
        args = ((2, 1), (0, 1, 2, 0), (1, 2), 2, 64, 5, shift, -100, 100)
        same(fast_ops.grouped_conv(x, w, bias, *args, np.int8), conv_spec(x, w, bias, *args, np.int8))
    args = ((1, 1), (0, 0, 0, 0), (1, 1), 2, 64, 3, 2, -(1 << 40), 1 << 40)
    xl = x.astype(np.int64) << 20
    same(fast_ops.grouped_conv(xl, w, bias, *args, np.int64), conv_spec(xl, w, bias, *args, np.int64))
    huge = np.full(8, 1 << 62, np.int64)  # multiplier too large for int64: the specification
    args = ((1, 1), (0, 0, 0, 0), (1, 1), 2, 64, huge, 2, -(1 << 40), 1 << 40)
    same(fast_ops.grouped_conv(x, w, bias, *args, np.int64), conv_spec(x, w, bias, *args, np.int64))


# ----------------------------------------------------------------------------- pooling
def pool_case(rng):
    kh, kw = (int(v) for v in rng.integers(1, 5, 2))
    sh, sw = (int(v) for v in rng.integers(1, 4, 2))
    dh, dw = (int(v) for v in rng.integers(1, 3, 2))
    pt, pl = int(rng.integers(0, kh)), int(rng.integers(0, kw))
    h = int(rng.integers(max(1, (kh - 1) * dh + 1 - pt), 15))
    w = int(rng.integers(max(1, (kw - 1) * dw + 1 - pl), 15))
    ceil = bool(rng.integers(2))
    ho = -(-(h + 2 * pt - (kh - 1) * dh - 1) // sh) + 1 if ceil else (h + 2 * pt - (kh - 1) * dh - 1) // sh + 1
    wo = -(-(w + 2 * pl - (kw - 1) * dw - 1) // sw) + 1 if ceil else (w + 2 * pl - (kw - 1) * dw - 1) // sw + 1
    return (kh, kw), (sh, sw), (pt, pl, pt, pl), (dh, dw), h, w, max(ho, 1), max(wo, 1)


@pytest.mark.parametrize("seed", range(6))
def test_pooling_equals_the_specification(seed):
    rng = np.random.default_rng(seed)
    for trial in range(12):
        kernel, strides, pads, dil, h, w, ho, wo = pool_case(rng)
        dtype = SMALL[trial % 4]
        q = codes(rng, (int(rng.integers(1, 3)), int(rng.integers(1, 5)), h, w), dtype)
        requant = None if trial % 3 else requant_for(rng, dtype)
        out_dtype = np.dtype(dtype) if requant or trial % 2 else np.int64
        with np.errstate(invalid="ignore"):  # windows of padding only: -inf
            want = spec_requant(ref.max_pool(q, kernel, strides, pads, dil, ho, wo), requant).astype(out_dtype)
        taps = all(fast_ops._windows_hold_a_tap(n_out, kernel[a], strides[a], pads[a], dil[a], q.shape[2 + a])
                   for a, n_out in ((0, ho), (1, wo)))
        with kernels_only(*(("max_pool", "requantize") if taps else ())), np.errstate(invalid="ignore"):
            same(fast_ops.max_pool(q, kernel, strides, pads, dil, ho, wo, requant, out_dtype), want)
        for include_pad in (False, True):
            lo_h, hi_h = (-pads[0], h + pads[2]) if include_pad else (0, h)
            lo_w, hi_w = (-pads[1], w + pads[3]) if include_pad else (0, w)
            ch = ((np.arange(ho) * strides[0] - pads[0])[:, None] + np.arange(kernel[0]) * dil[0])
            cw = ((np.arange(wo) * strides[1] - pads[1])[:, None] + np.arange(kernel[1]) * dil[1])
            counts = np.maximum((((ch >= lo_h) & (ch < hi_h)).sum(1))[:, None]
                                * (((cw >= lo_w) & (cw < hi_w)).sum(1))[None, :], 1)
            want = spec_requant(ref.avg_pool(q, kernel, strides, pads, dil, ho, wo, counts), requant)
            with kernels_only("avg_pool", "requantize"):
                got = fast_ops.avg_pool(q, kernel, strides, pads, dil, ho, wo, counts, requant, out_dtype)
            same(got, want.astype(out_dtype))


def test_average_pool_saturates_where_the_q16_reciprocal_overshoots():
    """round(2**16 / 6) overshoots: six 65535s average to 65537; the executor saturates it to 65535
    (spec and kernels alike), it never wraps."""
    q = np.full((1, 1, 2, 3), 65535, np.uint16)
    raw = ref.avg_pool(q, (2, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1, 1, np.full((1, 1), 6))
    assert int(raw.reshape(-1)[0]) == 65537
    same(fast_ops.avg_pool(q, (2, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1, 1, np.full((1, 1), 6), (1.0, 1.0, 0, 65535),
                           np.uint16), np.full((1, 1, 1, 1), 65535, np.uint16))
    same(fast_ops.avg_pool(q, (2, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1, 1, np.full((1, 1), 6)), raw)

    from tidlc.backends.tidl.quantize.api import quantize_graph

    from tidlc.config import CompileOptions
    from tidlc.ir import Builder, TensorType
    b = Builder()
    x = b.input("x", TensorType((1, 1, 4, 6), layout="NCHW"))
    r = b.op("relu", [x], name="r")
    b.output(b.op("pool2d", [r], mode="avg", kernel=(2, 3), strides=(2, 3), pads=(0, 0, 0, 0), name="av"), "y")
    b.output(b.op("global_pool", [r], mode="avg", name="gp"), "g")
    frames = [{"x": np.full((1, 1, 4, 6), 2.0, np.float32)}]
    graph = quantize_graph(b.graph, CompileOptions.of(bits=16), frames=frames, warn_synthetic=False).graph
    for kernels in ("numpy", "auto"):
        out = FixedExecutor(graph, kernels=kernels).run({"x": np.full((1, 1, 4, 6), 1e6, np.float32)}, raw=True)
        for name in ("y", "g"):
            assert out[name].dtype == np.uint16 and (out[name] == 65535).all(), (kernels, name, out[name])


def test_max_pool_window_of_padding_only_runs_the_specification():
    q = np.arange(9, dtype=np.int8).reshape(1, 1, 3, 3)
    args = ((1, 1), (2, 2), (1, 1, 1, 1), (1, 1), 3, 3)  # the corner windows read padding only
    with np.errstate(invalid="ignore"):
        want = ref.max_pool(q, *args).astype(np.int8)
        same(fast_ops.max_pool(q, *args, None, np.int8), want)


@pytest.mark.parametrize("dtype", SMALL)
def test_global_pooling_equals_the_specification(dtype):
    rng = np.random.default_rng(3)
    for shape in ((2, 3, 7, 5), (1, 4, 1, 1), (1, 2, 3, 4, 5), (3, 1, 13)):
        q = codes(rng, shape, dtype)
        for requant in (None, requant_for(rng, dtype)):
            for out_dtype in (np.int64, dtype):
                want = spec_requant(q.max(axis=tuple(range(2, q.ndim)), keepdims=True).astype(np.int64), requant)
                with kernels_only("requantize"):
                    same(fast_ops.global_pool(q, "max", requant, out_dtype), want.astype(out_dtype))
                want = spec_requant(ref.global_avg_pool(q), requant)
                with kernels_only("requantize", "global_avg_pool"):
                    same(fast_ops.global_pool(q, "avg", requant, out_dtype), want.astype(out_dtype))


# ----------------------------------------------------------------------------- requantize, concat, convert
@pytest.mark.parametrize("seed", range(4))
def test_requantize_and_concat_equal_the_specification(seed):
    rng = np.random.default_rng(seed)
    for src in SMALL:
        for dst in SMALL:
            q = codes(rng, (2, 3, 5), src)
            info = np.iinfo(dst)
            for ratio in (1.0, 0.37, 1.9, 250.0, 1e-4):
                s_in = float(rng.uniform(1, 50))
                want = ref.requantize(q, s_in, s_in * ratio, int(info.min), int(info.max))
                with kernels_only("requantize"):
                    same(fast_ops.requantize(q, s_in, s_in * ratio, int(info.min), int(info.max), dst),
                         want.astype(dst))
                    same(fast_ops.requantize(q, s_in, s_in * ratio, int(info.min), int(info.max)), want)
    for axis in (0, 1, 2, 3, -1, -3):
        dtypes = [SMALL[i] for i in rng.integers(0, 4, 3)]
        out = SMALL[rng.integers(4)]
        shapes = []
        for _ in dtypes:
            shape = [2, 3, 4, 5]
            shape[axis] = int(rng.integers(1, 4))
            shapes.append(shape)
        parts = [codes(rng, s, d) for s, d in zip(shapes, dtypes)]
        scales = [float(rng.uniform(1, 30)) for _ in parts]
        scales[0] = 7.0
        info = np.iinfo(out)
        want = np.concatenate([ref.requantize(q, s, 7.0, int(info.min), int(info.max)) for q, s in zip(parts, scales)],
                              axis=axis)
        with kernels_only("requantize"):
            got = fast_ops.concat(parts, scales, 7.0, int(info.min), int(info.max), axis, out)
        same(got, want.astype(out))
        parts[1] = parts[1].astype(np.int32)  # the specification runs
        want = np.concatenate([ref.requantize(q, s, 7.0, int(info.min), int(info.max)) for q, s in zip(parts, scales)],
                              axis=axis)
        same(fast_ops.concat(parts, scales, 7.0, int(info.min), int(info.max), axis, out), want.astype(out))


def qinfo(bits, signed, scale, zero_point=0, axis=None):
    return QuantInfo(bits=bits, signed=signed, scale=scale, zero_point=zero_point, axis=axis)


def test_data_convert_equals_the_specification():
    rng = np.random.default_rng(7)
    halves = (np.arange(-40, 41) / 8.0).astype(np.float32)  # many exact halves at scale 4
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 0.49999997, -0.49999997,
                        0.5, -0.5, 2.5, -2.5], np.float32)
    x32 = np.concatenate([halves, special, rng.normal(0, 30, 500).astype(np.float32)]).reshape(2, -1)
    for x in (x32, x32.astype(np.float64), x32[:, ::3]):
        for bits, signed, dtype in ((8, True, "i8"), (8, False, "u8"), (16, True, "i16"), (16, False, "u16")):
            for dst in (qinfo(bits, signed, (4.0,)), qinfo(bits, signed, (3.7,)), qinfo(bits, signed, (0.01,), 3)):
                with np.errstate(invalid="ignore"):
                    want = ref.convert(x, None, dst, dtype)
                    q = ref.convert(x32, None, dst, dtype)
                with kernels_only("convert"):
                    got = fast_ops.convert(x, None, dst, dtype)
                same(got, want)
                want = ref.convert(q, dst, None, "f32")
                with kernels_only("convert"):
                    same(fast_ops.convert(q, dst, None, "f32"), want)
                for to in (qinfo(8, True, (1.3,)), qinfo(16, False, (dst.scale[0] * 3,)), dst):
                    d = "i8" if to.bits == 8 else "u16" if not to.signed else "i16"
                    want = ref.convert(q, dst, to, d)
                    with kernels_only(*(() if dst.zero_point else ("convert", "requantize"))):  # asymmetric: spec
                        same(fast_ops.convert(q, dst, to, d), want)
    per_channel = qinfo(8, True, (2.0, 3.0), axis=0)  # the specification runs
    with np.errstate(invalid="ignore"):
        same(fast_ops.convert(x32, None, per_channel, "i8"), ref.convert(x32, None, per_channel, "i8"))
        q = ref.convert(x32, None, per_channel, "i8")
    same(fast_ops.convert(q, per_channel, None, "f32"), ref.convert(q, per_channel, None, "f32"))
    same(fast_ops.convert(q, per_channel, qinfo(8, True, (1.0,)), "i8"),
         ref.convert(q, per_channel, qinfo(8, True, (1.0,)), "i8"))
    fake = qinfo(8, True, (4.0,))  # a float result with a quant annotation: fake quantization, the spec
    with np.errstate(invalid="ignore"):
        same(fast_ops.convert(x32, None, fake, "f32"), ref.convert(x32, None, fake, "f32"))


# ----------------------------------------------------------------------------- element-wise
SHAPE_PAIRS = [((2, 3, 5, 4), (2, 3, 5, 4)), ((2, 3, 5, 4), (2, 3, 1, 1)), ((1, 3, 1, 1), (2, 3, 5, 4)),
               ((3, 5, 4), (4,)), ((7,), (7,)), ((2, 3, 5, 4), ()), ((5, 1), (1, 6)), ((1, 2, 3, 4, 5), (5,))]


@pytest.mark.parametrize("seed", range(3))
def test_eltwise_ops_equal_the_specification(seed):
    rng = np.random.default_rng(seed)
    for sa, sb in SHAPE_PAIRS:
        for _ in range(3):
            ta, tb, out = SMALL[rng.integers(4)], SMALL[rng.integers(4)], OUTS[rng.integers(len(OUTS))]
            qa, qb = codes(rng, sa, ta), codes(rng, sb, tb)
            if rng.random() < 0.3:
                qa = np.asfortranarray(qa) if qa.ndim > 1 else qa[::-1]
            ma, mb, n = int(rng.integers(0, 1 << 15)), int(rng.integers(0, 1 << 15)), int(rng.integers(0, 25))
            if rng.random() < 0.3:  # negative, 16-bit edge and wide multipliers
                ma, mb = int(rng.choice([-ma, -(1 << 15), 1 << 15, 1 << 20])), int(rng.choice([-mb, -(1 << 15), 70000]))
            info = np.iinfo(out)
            lo, hi = (max(int(info.min), -(1 << 20)), min(int(info.max), 1 << 20)) if rng.random() < 0.5 else (0, 6)
            wants = [ref.eltwise_add(qa, qb, ma, mb, n, lo, hi, False),
                     ref.eltwise_add(qa, qb, ma, mb, n, lo, hi, True),
                     ref.eltwise_max(qa, qb, ma, mb, n, lo, hi, False),
                     ref.eltwise_max(qa, qb, ma, mb, n, lo, hi, True),
                     ref.eltwise_mul(qa, qb, ma, n, lo, hi)]
            five = len(np.broadcast_shapes(sa, sb)) > 4
            with kernels_only(*(() if five else ("eltwise_add", "eltwise_max", "eltwise_mul"))):
                gots = [fast_ops.eltwise_add(qa, qb, ma, mb, n, lo, hi, False, out),
                        fast_ops.eltwise_add(qa, qb, ma, mb, n, lo, hi, True, out),
                        fast_ops.eltwise_max(qa, qb, ma, mb, n, lo, hi, False, out),
                        fast_ops.eltwise_max(qa, qb, ma, mb, n, lo, hi, True, out),
                        fast_ops.eltwise_mul(qa, qb, ma, n, lo, hi, out)]
            for got, want in zip(gots, wants):
                same(got, want.astype(out))
    qa = codes(rng, (2, 3), np.int32)  # int32 operands: the specification
    same(fast_ops.eltwise_mul(qa, qa, 3, 1, -9, 9, np.int8), ref.eltwise_mul(qa, qa, 3, 1, -9, 9).astype(np.int8))


@pytest.mark.parametrize("dtype", SMALL)
def test_prelu_equals_the_specification(dtype):
    rng = np.random.default_rng(11)
    for shape in ((2, 4, 3, 5), (1, 4), (1, 4, 7)):
        q = codes(rng, shape, dtype)
        for m_neg in (int(rng.integers(-(1 << 15), 1 << 15)), rng.integers(-(1 << 15), 1 << 15, 4)):
            for m_pos, n in ((int(rng.integers(1 << 14, 1 << 15)), 15), (1, 0), (40000, 3)):
                info = np.iinfo(dtype)
                want = ref.prelu(q, m_pos, m_neg, n, int(info.min), int(info.max)).astype(dtype)
                with kernels_only("prelu"):
                    same(fast_ops.prelu(q, m_pos, m_neg, n, int(info.min), int(info.max), dtype), want)


# ----------------------------------------------------------------------------- tables, softmax, resize
@pytest.mark.parametrize("src", SMALL)
def test_lookup_tables_equal_the_specification(src):
    rng = np.random.default_rng(2)
    info = np.iinfo(src)
    for dst in (np.int8, np.uint8, np.int16):
        out = np.iinfo(dst)
        table = ref.make_table(np.tanh, float(rng.uniform(1, 100)), float(rng.uniform(10, 100)),
                               (int(info.min), int(info.max)), (int(out.min), int(out.max)))
        q = codes(rng, (2, 3, 17), src)
        want = ref.lut(q, table, int(info.min)).astype(dst)
        with kernels_only("lut"):
            same(fast_ops.lut(q, table, int(info.min), dst), want)
    short = np.arange(10)  # codes outside the table: the specification (and its IndexError)
    with pytest.raises(IndexError):
        fast_ops.lut(np.full(3, 100, src), short, 0, np.int8)


@pytest.mark.parametrize("seed", range(4))
def test_softmax_equals_the_specification(seed):
    rng = np.random.default_rng(seed)
    for shape, axis in (((2, 10), 1), ((2, 5, 3, 4), 1), ((3, 7, 4), -1), ((4, 3, 2), 0), ((1, 1), 1)):
        for src in SMALL:
            bits = np.dtype(src).itemsize * 8
            for out, qmax in ((np.uint8, 255), (np.uint16, 65535)):
                table = ref.exp_table(float(rng.uniform(0.5, 60)), bits, np.dtype(out).itemsize * 8)
                q = codes(rng, shape, src)
                want = ref.softmax(q, axis, table, qmax).astype(out)
                with kernels_only("softmax"):
                    same(fast_ops.softmax(q, axis, table, qmax, out), want)


@pytest.mark.parametrize("seed", range(4))
def test_linear_resize_equals_the_specification(seed):
    from tidlc.ir.ops.tensor import _source_coords
    rng = np.random.default_rng(seed)
    modes = ("half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel")
    for trial in range(8):
        dtype = SMALL[trial % 4]
        q = codes(rng, (int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 9)),
                        int(rng.integers(1, 9))), dtype)
        axes = []
        for axis in rng.permutation([2, 3])[: int(rng.integers(0, 3))]:
            n_in = q.shape[axis]
            n_out = int(rng.integers(1, 3 * n_in + 2))
            src = _source_coords(n_out, n_in, n_out / n_in, modes[rng.integers(len(modes))])
            axes.append((int(axis),) + ref.linear_weights(src, n_in))
        requant = None if trial % 2 else requant_for(rng, dtype)
        out = np.int64 if trial % 3 == 0 else dtype
        want = spec_requant(ref.resize_linear(q, axes), requant).astype(out)
        with kernels_only("resize_linear", "requantize"):
            same(fast_ops.resize_linear(q, axes, requant, out), want)
    q = codes(rng, (2, 3, 4), np.uint8)  # another axis: the specification
    axes = [(1,) + ref.linear_weights(_source_coords(5, 3, 5 / 3, "half_pixel"), 3)]
    same(fast_ops.resize_linear(q, axes), ref.resize_linear(q, axes))


# ----------------------------------------------------------------------------- the executor
def every_op_net(seed: int = 0):
    """A float net with every op that has a fast kernel: depthwise/grouped convs (strided, dilated),
    max/avg pooling (ceil mode, padding in and out of the count), global pooling, concat of
    differently scaled inputs, linear and nearest resize, tables, eltwise ops (broadcasting),
    prelu, pad, softmax."""
    from tidlc.ir import Builder, TensorType
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.input("x", TensorType((1, 3, 19, 23), layout="NCHW"))

    def conv(v, cout, cin_g, k, name, **kw):
        w = b.const(rng.normal(0, 0.4, (cout, cin_g, k, k)).astype(np.float32), name + ".w")
        bias = b.const(rng.normal(0, 0.2, cout).astype(np.float32), name + ".b")
        return b.op("conv2d", [v, w, bias], name=name, **kw)

    c1 = conv(x, 12, 3, 3, "c1", pads=(1, 1, 1, 1), act="relu")
    dw = conv(c1, 12, 1, 3, "dw", pads=(1, 1, 1, 1), groups=12, act="relu6")
    dws = conv(dw, 12, 1, 5, "dws", pads=(2, 1, 2, 3), strides=(2, 1), dilations=(1, 2), groups=12)
    grp = conv(dws, 24, 4, 3, "grp", pads=(1, 1, 1, 1), groups=3)
    mx = b.op("pool2d", [c1], mode="max", kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), ceil_mode=True, name="mx")
    av = b.op("pool2d", [dw], mode="avg", kernel=(3, 3), strides=(2, 1), pads=(1, 1, 1, 1), name="av")
    avi = b.op("pool2d", [dw], mode="avg", kernel=(2, 2), strides=(2, 2), pads=(0, 0, 1, 1), ceil_mode=True,
               count_include_pad=True, name="avi")
    sig = b.op("sigmoid", [grp], name="sig")
    th = b.op("tanh", [grp], name="tanh")
    gate = b.op("mul", [th, sig], name="gate")
    cat = b.op("concat", [mx, avi, b.op("hardswish", [mx], name="hsw")], name="cat")
    up = b.op("resize", [cat], scales=(1.0, 1.0, 1.7, 2.0), mode="linear", coord_mode="half_pixel", name="up")
    near = b.op("resize", [av], scales=(1.0, 1.0, 0.5, 0.5), mode="nearest", name="near")
    slope = b.const(rng.uniform(0.05, 0.4, 12).astype(np.float32), "pr.slope")
    pr = b.op("prelu", [near, slope], name="pr")
    se = b.op("global_pool", [pr], mode="avg", name="se")
    scaled = b.op("mul", [pr, b.op("sigmoid", [se], name="se_sig")], name="scaled")
    gmax = b.op("global_pool", [scaled], mode="max", name="gmax")
    hi = b.op("max", [scaled, b.op("neg", [scaled], name="neg")], name="hi")
    lo = b.op("min", [hi, gmax], name="lo")
    d = b.op("sub", [lo, scaled], name="d")
    padded = b.op("pad", [d], pads=(0, 0, 1, 0, 0, 0, 0, 2), value=0.5, name="padded")
    flat = b.op("flatten", [b.op("global_pool", [gate], mode="avg", name="gp")], name="flat")
    b.output(b.op("softmax", [flat], name="prob"), "prob")
    b.output(up, "up")
    b.output(padded, "padded")
    return b.graph


def assert_auto_equals_numpy(graph, feeds, min_ops=10):
    """Every op's output identical (values and type) with the fast kernels and the specification."""
    traces = []
    for kernels in ("numpy", "auto"):
        seen = []
        FixedExecutor(graph, kernels=kernels).run(
            feeds, observer=lambda op, rs, seen=seen: seen.extend((op, r.copy()) for r in rs))
        traces.append(seen)
    assert len(traces[0]) == len(traces[1]) >= min_ops
    for (op, a), (_, b) in zip(*traces):
        assert a.dtype == b.dtype and np.array_equal(a, b), f"{op.kind} {op.attrs.get('name')} differs"


def rescale_results(graph):
    """Give the results of the scale-preserving ops other scales: their kernels then requantize."""
    import attrs
    factors = iter([0.55, 1.7] * 50)
    for op in graph.ops:
        if op.kind in ("pool2d", "global_pool", "resize", "pad", "flatten"):
            t = op.results[0].type
            op.results[0].type = attrs.evolve(t, quant=attrs.evolve(t.quant, scale=(t.quant.scale[0] * next(factors),)))


@pytest.mark.parametrize("options", [{}, {"bits": 16}, {"per_channel_depthwise": True}, {"rescaled": True}],
                         ids=["8-bit", "16-bit", "per-channel", "requantizing"])
def test_executor_auto_equals_numpy_on_every_fast_op(options):
    from tidlc.backends.tidl.quantize.api import quantize_graph

    from tidlc.config import CompileOptions
    graph = every_op_net()
    calib = [{"x": np.random.default_rng(i).uniform(-1, 1, (1, 3, 19, 23)).astype(np.float32)} for i in range(4)]
    rescaled = options.pop("rescaled", False)
    q = quantize_graph(graph, CompileOptions.of(**options), frames=calib, warn_synthetic=False).graph
    if rescaled:
        rescale_results(q)
    kinds = {op.kind for op in q.ops}
    assert {"conv2d", "pool2d", "global_pool", "concat", "resize", "softmax", "sigmoid", "tanh", "mul", "max",
            "min", "sub", "prelu", "pad", "data_convert"} <= kinds
    for seed in range(2):
        rng = np.random.default_rng(10 + seed)
        x = rng.uniform(-1.5, 1.5, (1, 3, 19, 23)).astype(np.float32)
        x.reshape(-1)[:40] = [np.nan, np.inf, -np.inf, 1e9, -1e9] * 8  # saturating and invalid inputs
        with np.errstate(invalid="ignore"):  # NaN codes
            assert_auto_equals_numpy(q, {"x": x}, min_ops=30)


CORPUS = __import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "corpus" / "caffe"
CORPUS_NETS = ["ultraface_slim320/slim-320.prototxt", "mtcnn/det2.prototxt",
               "mobilenet_v2/mobilenet_v2_deploy.prototxt"]


@pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not available")
@pytest.mark.parametrize("net", CORPUS_NETS, ids=[n.split("/")[0] for n in CORPUS_NETS])
def test_executor_auto_equals_numpy_on_corpus_models(net):
    """Real networks (random weights): depthwise convs, pooling, concat, prelu, softmax, transposes."""
    import warnings

    from tidlc.compiler import compile_model
    from tidlc.config import CompileOptions
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = compile_model(str(CORPUS / net), CompileOptions.of(emit="none", quantize=True, calib_frames=1,
                                                                random_weights=0)).graph
    feeds = {op.attrs["name"]: np.random.default_rng(0).uniform(-2, 2, op.results[0].type.shape).astype(np.float32)
             for op in graph.input_ops}
    assert_auto_equals_numpy(graph, feeds)


def test_executor_auto_equals_numpy_on_ultraface():
    """The example model with its trained weights: depthwise convs, concat, softmax."""
    import os
    import warnings

    from tidlc.compiler import compile_model
    from tidlc.config import CompileOptions
    path = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "ultraface", "ultraface-rfb320.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = compile_model(path, CompileOptions.of(emit="none", quantize=True, calib_frames=2)).graph
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, 240, 320)).astype(np.float32)
    assert_auto_equals_numpy(graph, {graph.input_ops[0].attrs["name"]: x})


def test_kernels_refuse_arguments_that_would_leave_their_buffers():
    from tidlc.backends.tidl.fixed import _ops
    u8 = _ops.KINDS[np.dtype(np.uint8)]
    with pytest.raises(ValueError):  # codes 10..255 have no entry
        _ops.lut(np.zeros(3, np.uint8), np.zeros(10, np.uint8), 0, np.empty(3, np.uint8), u8)
    x, w = np.zeros((1, 2, 4, 4), np.uint8), np.full((2, 1, 3, 3), 40000, np.int32)
    with pytest.raises(ValueError):  # weights beyond int16
        _ops.grouped_conv(x, w, np.zeros(2, np.int64), np.ones(2, np.int64), 0, -(1 << 31), (1 << 31) - 1, 0, 255,
                          (1, 1), (1, 1, 1, 1), (1, 1), 2, 4, 4, True, False, np.empty(32, np.uint8), u8)
    with pytest.raises(ValueError):  # a result buffer of the wrong size
        _ops.requant_rows(np.zeros((1, 8), np.uint8), 1, 0, 0, 255, True, np.empty(7, np.uint8), u8, 8, 0)
    index = np.array([0, 4], np.int64)
    with pytest.raises(ValueError):  # a row index past the input
        _ops.resize_linear(np.zeros((1, 1, 4, 4), np.uint8), index, index, np.zeros(2, np.int64), index[:1],
                           index[:1], np.zeros(1, np.int64), 1, 0, 0, 255, np.empty(2, np.uint8), u8)
