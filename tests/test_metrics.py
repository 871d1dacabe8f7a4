"""SNR edge cases: `tidlc report --input` on MobileNet-SSD with random weights died with 'math
domain error' when an output's error energy overflowed float64 (signal / inf = 0, log10(0))."""
from __future__ import annotations

import math

import numpy as np

from tidlc.metrics import SnrAccumulator, snr_db


def test_exact_and_signal_free():
    x = np.arange(4, dtype=np.float32)
    assert snr_db(x, x) == math.inf
    assert snr_db(np.zeros(4), np.ones(4)) == -math.inf
    assert abs(snr_db(np.ones(4), np.full(4, 1.1)) - 20.0) < 1e-6


def test_an_overflowing_or_nan_error_is_minus_inf_not_a_crash():
    ref = np.array([1.0, 2.0])
    assert snr_db(ref, np.array([1e200, 2.0])) == -math.inf  # error energy 1e400: inf in float64
    assert snr_db(ref, np.array([np.nan, 2.0])) == -math.inf
    assert snr_db(np.array([np.inf, 1.0]), np.array([np.inf, 1.0])) == -math.inf  # inf - inf: NaN
    acc = SnrAccumulator()
    acc.add(ref, np.array([1e200, 2.0]))
    assert acc.db == -math.inf
