# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
"""The output stage of a MAC layer, fused into one pass (twin: ``reference.mac_output``).

acc (N, C, P) holds exact integer sums, as float32/float64 (a float GEMM that was
exact) or int64. Per element: add the channel's bias, saturate to the accumulator
width, multiply by the channel's multiplier, round-shift, saturate to [lo, hi].
Used for 32-bit accumulators only (8-bit layers), where no step can overflow int64.
"""
from libc.stdint cimport int64_t

import numpy as np

ctypedef fused acc_t:
    float
    double
    int64_t


cdef inline int64_t _clamp(int64_t v, int64_t lo, int64_t hi) noexcept nogil:
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


def mac_output_channels(const acc_t[:, :, ::1] acc, const int64_t[::1] bias, const int64_t[::1] mult,
                        int shift, int64_t amin, int64_t amax, int64_t lo, int64_t hi):
    """int64 (N, C, P): clamp(round_shift(clamp(acc + bias[c], amin, amax) * mult[c], shift), lo, hi)."""
    cdef Py_ssize_t n = acc.shape[0], c = acc.shape[1], p = acc.shape[2]
    if bias.shape[0] != c or mult.shape[0] != c:
        raise ValueError(f"bias/mult need {c} channels, got {bias.shape[0]}/{mult.shape[0]}")
    if shift > 62 or shift < -30:
        raise ValueError(f"shift {shift} out of range")
    out = np.empty((n, c, p), dtype=np.int64)
    cdef int64_t[:, :, ::1] o = out
    cdef int64_t half = (<int64_t>1 << (shift - 1)) if shift > 0 else 0
    cdef Py_ssize_t i, ch, k
    cdef int64_t b, m, v
    with nogil:
        for i in range(n):
            for ch in range(c):
                b = bias[ch]
                m = mult[ch]
                for k in range(p):
                    v = _clamp(<int64_t>acc[i, ch, k] + b, amin, amax) * m
                    if shift > 0:
                        v = (v + half) >> shift
                    elif shift < 0:
                        v = v << (-shift)
                    o[i, ch, k] = _clamp(v, lo, hi)
    return out
