"""Histogram accumulation for calibration observers (the numpy twin: observers.histogram_numpy)."""
from libc.math cimport floorf
from libc.stdint cimport int64_t


cdef void _accumulate(const float[::1] x, int64_t[::1] counts, float k, Py_ssize_t offset) noexcept nogil:
    cdef Py_ssize_t i, n = x.shape[0]
    for i in range(n):
        counts[<Py_ssize_t>floorf(x[i] * k) + offset] += 1


def histogram_accumulate(const float[::1] x, int64_t[::1] counts, float k, Py_ssize_t offset):
    """``counts[floor(x * k) + offset] += 1`` for every element (indices must be in range)."""
    _accumulate(x, counts, k, offset)
