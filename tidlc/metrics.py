"""Accuracy metrics of a fixed-point tensor against its float reference."""
from __future__ import annotations

import math

import numpy as np


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """``10 log10(sum(ref**2) / sum((ref - test)**2))``; inf when equal, -inf-ish when ref is 0."""
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    err = ref - np.asarray(test, dtype=np.float64).reshape(-1)
    noise = float(np.dot(err, err))
    signal = float(np.dot(ref, ref))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def cosine(reference: np.ndarray, test: np.ndarray) -> float:
    a = np.asarray(reference, dtype=np.float64).reshape(-1)
    b = np.asarray(test, dtype=np.float64).reshape(-1)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


class SnrAccumulator:
    """Signal and noise energies summed over frames (an SNR over a whole data set)."""

    def __init__(self):
        self.signal = 0.0
        self.noise = 0.0

    def add(self, reference: np.ndarray, test: np.ndarray) -> None:
        ref = np.asarray(reference, dtype=np.float64).reshape(-1)
        err = ref - np.asarray(test, dtype=np.float64).reshape(-1)
        self.signal += float(np.dot(ref, ref))
        self.noise += float(np.dot(err, err))

    @property
    def db(self) -> float:
        if self.noise == 0.0:
            return math.inf
        if self.signal == 0.0:
            return -math.inf
        return 10.0 * math.log10(self.signal / self.noise)
