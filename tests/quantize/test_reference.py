"""The integer semantics of the fixed-point specification, pinned on hand-computed cases."""
import numpy as np
import pytest
from tidlc.backends.tidl.fixed import reference as ref


def test_integer_rounding_shift_rounds_halves_up():
    # (acc + 2**(n-1)) >> n: -2.5 -> -2, -1.5 -> -1, -0.5 -> 0, 0.5 -> 1, 1.5 -> 2, 2.5 -> 3
    acc = np.array([-5, -3, -1, 1, 3, 5, -4, 4])
    np.testing.assert_array_equal(ref.round_shift(acc, 1), [-2, -1, 0, 1, 2, 3, -2, 2])
    np.testing.assert_array_equal(ref.round_shift(np.array([-6, -7, -9, 6, 9]), 2), [-1, -2, -2, 2, 2])
    np.testing.assert_array_equal(ref.round_shift(acc, 0), acc)
    per_channel = ref.round_shift(np.array([[5, 5]]), np.array([1, 2]))
    np.testing.assert_array_equal(per_channel, [[3, 1]])


def test_real_rounding_is_half_away_from_zero():
    # TIDL quantRoundAdd = 50: add 0.5 away from zero, truncate
    np.testing.assert_array_equal(ref.round_half_away([-2.5, -1.5, -0.5, -0.49, 0.5, 1.5, 2.5]),
                                  [-3, -2, -1, 0, 1, 2, 3])
    assert ref.round_half_away_int(-2.5) == -3 and ref.round_half_away_int(2.5) == 3


def test_quantize_saturates_after_rounding():
    np.testing.assert_array_equal(ref.quantize([-3.0, 254.4, 254.5, 300.0], 1.0, 0, 255), [0, 254, 255, 255])
    np.testing.assert_array_equal(ref.quantize([-128.5, -128.4, 127.4, 127.5], 1.0, -128, 127),
                                  [-128, -128, 127, 127])
    np.testing.assert_array_equal(ref.quantize([0.26, -0.26], 4.0, -128, 127), [1, -1])  # 1.04 -> 1
    np.testing.assert_array_equal(ref.dequantize(np.array([3, -4]), 2.0), np.float32([1.5, -2.0]))


def test_multipliers_have_fifteen_bits():
    assert ref.multiplier(1.0) == (16384, 14)
    assert ref.multiplier(0.25) == (16384, 16)
    assert ref.multiplier(3.0) == (24576, 13)
    assert ref.multiplier(1e6) == (1000000, 0)  # a huge ratio keeps n = 0
    m, n = ref.multiplier(0.1)
    assert 2 ** 14 <= m < 2 ** 15 and abs(m / 2 ** n - 0.1) < 0.1 * 2 ** -14
    assert ref.common_multipliers([0.25, 0.5]) == ([8192, 16384], 15)


def test_requantize_uses_multiplier_then_rounding_shift():
    # u8 at 2 steps/unit -> 0.5 steps/unit: ratio 1/4 = 16384 / 2**16
    np.testing.assert_array_equal(ref.requantize(np.array([0, 1, 2, 3, 14, 255]), 2.0, 0.5, -128, 127),
                                  [0, 0, 1, 1, 4, 64])
    np.testing.assert_array_equal(ref.requantize(np.array([-2, 2, 100]), 1.0, 1.0, 0, 50), [0, 2, 50])  # copy + clamp


def test_mac_output_stage_saturates_the_accumulator_then_shifts_then_clamps():
    acc = np.array([2 ** 40, -(2 ** 40), 1000, -1000, 3 * 2 ** 20])
    # 32-bit accumulator, shift 24, clamp to u8 with ReLU (lo = 0)
    out = ref.mac_output(acc, 32, 1, 24, 0, 255)
    np.testing.assert_array_equal(out, [128, 0, 0, 0, 0])  # (2**31 - 1 + 2**23) >> 24 = 128
    wide = ref.mac_output(acc, 64, 1, 24, -(2 ** 31), 2 ** 31 - 1)
    assert wide[0] == 2 ** 16 and wide[4] == 0  # 3 * 2**20 / 2**24 = 0.1875 -> 0
    per_channel = ref.mac_output(np.array([[[[100]], [[100]]]]), 32, np.array([3, 5]), 2, -128, 127)
    np.testing.assert_array_equal(per_channel.reshape(-1), [75, 125])


def test_u8_conv_after_relu_by_hand():
    # x (1, 1, 2, 2) i8, one 2x2 filter per output channel, bias at the accumulator scale
    x = np.array([[[[10, -20], [30, 40]]]], dtype=np.int8)
    w = np.array([[[[1, 2], [3, 4]]], [[[-1, -2], [-3, -4]]]], dtype=np.int8)
    acc = ref.conv2d_acc(x, w, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    np.testing.assert_array_equal(acc.reshape(-1), [220, -220])  # 10 - 40 + 90 + 160
    acc = ref.add_bias(acc, np.array([5, 5], dtype=np.int32))
    out = ref.mac_output(acc, 32, 1, 3, 0, 255)  # ReLU: negative sums clamp to 0 in u8
    np.testing.assert_array_equal(out.reshape(-1), [28, 0])  # (225 + 4) >> 3 = 28


def test_exact_gemm_on_large_codes():
    rng = np.random.default_rng(0)
    x = rng.integers(-32768, 32767, (1, 8, 5, 5)).astype(np.int16)
    w = rng.integers(-32768, 32767, (4, 8, 3, 3)).astype(np.int16)
    got = ref.conv2d_acc(x, w, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    want = ref._conv2d_int64(x, w, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    np.testing.assert_array_equal(got, want)


def test_eltwise_add_with_different_scales():
    # a at 4 steps/unit, b at 2, output at 1: multipliers 8192 and 16384, shift 15
    qa, qb = np.array([10, 2, -2, 127]), np.array([3, 0, 0, 127])
    out = ref.eltwise_add(qa, qb, 8192, 16384, 15, -128, 127)
    # 2.5 + 1.5 = 4; 0.5 -> 1 (half up); -0.5 -> 0 (half toward +inf); 31.75 + 63.5 = 95.25 -> 95
    np.testing.assert_array_equal(out, [4, 1, 0, 95])
    np.testing.assert_array_equal(ref.eltwise_add(qa, qb, 8192, 16384, 15, -128, 127, subtract=True),
                                  [1, 1, 0, -32])  # 2.5 - 1.5; 0.5; -0.5; 31.75 - 63.5 = -31.75
    np.testing.assert_array_equal(ref.eltwise_mul(np.array([3, -3]), np.array([5, 5]), 16384, 14, -128, 127),
                                  [15, -15])


def test_average_pool_multiplies_by_the_reciprocal_count():
    x = np.array([[[[1, 2], [3, 4]]]])
    out = ref.avg_pool(x, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 1, 1, np.array([[4]]))
    assert out.item() == 3  # 10 * 16384 / 65536 = 2.5 -> 3
    assert ref.global_avg_pool(np.array([[[[1, 2], [3, 3]]]])).item() == 2  # 9/4 = 2.25
    assert ref.avg_multipliers(np.array(9)) == 7282


def test_softmax_and_tables():
    table = ref.exp_table(16.0, 8)
    assert table[0] == 65536 and table[16] == 24109  # exp(-1) * 2**16
    out = ref.softmax(np.array([[5, 5]]), 1, table, 255)
    np.testing.assert_array_equal(out, [[128, 128]])  # (65536 * 255 + 65536) // 131072
    sig = ref.make_table(lambda r: 1 / (1 + np.exp(-r)), 16.0, 255.0, (-128, 127), (0, 255))
    assert sig[128] == 128 and sig[0] == 0 and sig[-1] == 255  # 0 -> 127.5 -> 128
    np.testing.assert_array_equal(ref.lut(np.array([-128, 0, 127]), sig, -128), [0, 128, 255])


def test_linear_resize_rounds_once():
    lo, hi, w = ref.linear_weights(np.array([0.0, 0.25, 0.5, 1.0]), 2)
    np.testing.assert_array_equal(w, [0, 256, 512, 0])
    out = ref.resize_linear(np.array([[0, 10]]), [(1, lo, hi, w)])
    np.testing.assert_array_equal(out, [[0, 3, 5, 10]])  # 2.5 -> 3 (half up), 5


def test_prelu_by_hand():
    out = ref.prelu(np.array([[[[-8]], [[-8]], [[8]]]]), 16384, np.array([8192, 4096, 0]), 14, -128, 127)
    np.testing.assert_array_equal(out.reshape(-1), [-4, -2, 8])


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf")])
def test_multiplier_rejects_bad_ratios(bad):
    with pytest.raises(ValueError):
        ref.multiplier(bad)


def test_integer_square_root_and_bit_length_are_exact():
    import math
    rng = np.random.default_rng(0)
    v = np.concatenate([np.arange(0, 2000), rng.integers(0, 1 << 62, 20000), (1 << 62) - np.arange(50),
                        np.array([k * k - d for k in (1 << 30, (1 << 31) - 1, 3037000499) for d in (0, 1)
                                  if k * k - d <= 1 << 62])]).astype(np.int64)
    assert ref.isqrt(v).tolist() == [math.isqrt(int(x)) for x in v]
    assert ref.bit_length(v).tolist() == [int(x).bit_length() for x in v]


@pytest.mark.parametrize("bits", [8, 16])
def test_integer_layernorm_is_within_a_step_of_the_real_one(bits):
    """The integer layernorm (sums, an exact integer square root, one Q24 normalized value) against
    the real formula on the same codes: within one output step, every row alike."""
    rng = np.random.default_rng(bits)
    qmax = (1 << (bits - 1)) - 1
    n, s_in, s_out, eps = 96, qmax / 12.0, qmax / 6.0, 1e-6
    q = np.clip(np.round(rng.normal(0, 2, (50, n)) * s_in + rng.normal(0, 3, (50, 1)) * s_in), -qmax - 1, qmax)
    q[0] = 7  # a constant row: variance 0, the epsilon alone
    gamma, beta = rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n)
    top = float(np.max(np.abs(gamma * s_out)))
    shift = 31 - int(np.frexp(top)[1])
    gain = ref.round_half_away(gamma * s_out * 2.0 ** shift).astype(np.int64)
    e = max(1, round(n * n * eps * s_in * s_in))
    out = ref.layernorm(q.astype(np.int64), n, e, gain, shift, ref.round_half_away(beta * s_out).astype(np.int64),
                        -qmax - 1, qmax)
    x = q / s_in
    real = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + eps) * gamma + beta
    expected = np.clip(real * s_out, -qmax - 1, qmax)
    assert np.abs(out - expected).max() <= 1.0
    np.testing.assert_array_equal(out[0], ref.round_half_away(beta * s_out))
