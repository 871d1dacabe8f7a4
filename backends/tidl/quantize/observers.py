"""Calibration statistics: a streaming histogram per tensor, and the range rules that read it.

:class:`RangeObserver` keeps, for one tensor, its min, max and a symmetric
histogram of ``2 * BINS`` bins over ``[-R, R]``. ``R`` is a power of two
that only grows: when a frame exceeds it, ``R`` doubles (as often as needed)
and pairs of old bins merge exactly, so memory does not depend on the number
of frames and no pass over old data is needed. The counts are those of
binning every value at the final ``R`` directly, whatever order the frames
came in; so observers of disjoint shards of the frames :meth:`merge
<RangeObserver.merge>` into exactly the single-pass statistics
(``--workers``/``--ray``, docs/scale.md). One frame costs a min, a max
and one counting pass (a Cython kernel; ``histogram_numpy`` is its twin).

Range rules (``--calib-method``), each returning the clipping range
``(lo, hi)`` of the tensor:

* ``minmax``: the observed min and max (TIDL calibrationOption 0);
* ``histogram``: drop ``percentile`` % of all elements on each side (TIDL's
  ``percentileActRangeShrink``, default 0.01 %: 1 element in 10 000);
* ``entropy``: the threshold minimising the KL divergence between the
  clipped distribution of ``|x|`` and its quantized version (TensorRT's method);
* ``mse``: the threshold minimising the expected squared error of clipping
  plus rounding (uniform noise ``step**2 / 12`` inside the range).
"""
from __future__ import annotations

import math

import numpy as np

BINS = 2048  # bins per sign
METHODS = ("minmax", "histogram", "entropy", "mse")

try:
    from tidlc.backends.tidl.quantize._histogram import histogram_accumulate as _accumulate
except ImportError:  # pragma: no cover - an unbuilt source tree uses the numpy twin
    _accumulate = None


def histogram_numpy(flat: np.ndarray, k: np.float32, scratch: np.ndarray | None = None) -> np.ndarray:
    """Counts of ``floor(x * k) + BINS`` over ``2 * BINS + 1`` bins (the Cython kernel's twin)."""
    if scratch is None or scratch.size < flat.size:
        scratch = np.empty(flat.size, dtype=np.float32)
    buf = scratch[:flat.size]
    np.multiply(flat, k, out=buf)
    np.floor(buf, out=buf)  # (adding BINS in float32 first would round near bin edges)
    idx = buf.astype(np.intp)
    idx += BINS
    return np.bincount(idx, minlength=2 * BINS + 1)


class RangeObserver:
    """Streaming statistics of one tensor (see the module docstring)."""

    __slots__ = ("channel_axis", "channel_sum", "count", "counts", "hi", "lo", "radius")

    def __init__(self, channel_axis: int | None = None):
        self.lo = math.inf
        self.hi = -math.inf
        self.radius = 0.0  # R; 0 until the first non-zero value
        self.counts = np.zeros(2 * BINS + 1, dtype=np.int64)  # +1: the value R itself lands there
        self.count = 0
        self.channel_axis = channel_axis  # per-channel means (bias calibration)
        self.channel_sum: np.ndarray | None = None

    def update(self, x: np.ndarray, scratch: np.ndarray | None = None) -> None:
        x = np.asarray(x)
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        flat = x.reshape(-1)
        if flat.size == 0:
            return
        lo, hi = float(flat.min()), float(flat.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            flat = np.nan_to_num(flat, nan=0.0, posinf=np.finfo(np.float32).max, neginf=-np.finfo(np.float32).max)
            lo, hi = float(flat.min()), float(flat.max())
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        self.count += flat.size
        if self.channel_axis is not None and x.ndim > 1:
            axes = tuple(i for i in range(x.ndim) if i != self.channel_axis % x.ndim)
            sums = x.sum(axis=axes, dtype=np.float64)
            self.channel_sum = sums if self.channel_sum is None else self.channel_sum + sums
        peak = max(-lo, hi)
        if peak <= 0:
            self.counts[BINS] += flat.size  # all zeros: the first positive bin
            return
        if peak > self.radius:
            self._grow(peak)
        # bin = floor(x * BINS / R) + BINS: [-R, 0) -> 0..BINS-1, [0, R] -> BINS..2*BINS
        k = np.float32(BINS / self.radius)  # a power of two: x * k is exact
        if _accumulate is not None:
            _accumulate(np.ascontiguousarray(flat), self.counts, k, BINS)
        else:
            self.counts += histogram_numpy(flat, k, scratch)

    def _grow(self, peak: float) -> None:
        radius = self.radius
        if radius == 0.0:
            self.radius = 2.0 ** math.ceil(math.log2(peak))
            return
        factor = 1
        while radius * factor < peak:
            factor *= 2
        self.counts = _coarsen(self.counts, factor)
        self.radius = radius * factor

    def merge(self, other: RangeObserver) -> None:
        """Add the statistics of ``other`` (the same tensor seen on other frames). min, max, counts
        and the histogram merge exactly: both histograms are brought to the larger radius (bins
        of power-of-two ratios, see :func:`_coarsen`) and added, which is the histogram of all the
        frames whatever order they came in. Channel sums add in float64 (to rounding; the range
        rules do not read them)."""
        if other.count == 0:
            return
        self.lo, self.hi = min(self.lo, other.lo), max(self.hi, other.hi)
        self.count += other.count
        if other.channel_sum is not None:
            self.channel_sum = other.channel_sum.copy() if self.channel_sum is None \
                else self.channel_sum + other.channel_sum
        counts = other.counts
        if other.radius > self.radius:
            self._grow(other.radius)
        elif 0.0 < other.radius < self.radius:
            counts = _coarsen(counts, round(self.radius / other.radius))
        self.counts = self.counts + counts

    # --- read-out ---------------------------------------------------------------------
    @property
    def seen(self) -> bool:
        return self.count > 0

    def channel_means(self) -> np.ndarray | None:
        if self.channel_sum is None:
            return None
        per_channel = self.count / max(self.channel_sum.size, 1)
        return self.channel_sum / per_channel

    def mean_square(self) -> float:
        """The mean of x**2 over every value seen, from the histogram (each bin at its middle:
        exact to half a bin, and the same whatever order frames and shards came in)."""
        if not self.seen or self.radius == 0.0:
            return 0.0
        pos, neg = self.halves()
        middle = (np.arange(BINS) + 0.5) * (self.radius / BINS)
        return float(((pos + neg) * middle * middle).sum() / self.count)

    def halves(self) -> tuple[np.ndarray, np.ndarray]:
        """(positive, negative) counts in |x| order; bin j covers [j, j+1) * R / BINS."""
        pos = self.counts[BINS:2 * BINS].copy()
        pos[-1] += self.counts[2 * BINS]
        return pos, self.counts[:BINS][::-1].copy()

    def range(self, method: str = "minmax", percentile: float = 0.01, levels: int = 256) -> tuple[float, float]:
        """The clipping range ``(lo, hi)``; ``levels`` = quantization steps over ``[0, max|x|]``."""
        if not self.seen:
            return 0.0, 0.0
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        if method == "minmax" or self.radius == 0.0:
            return self.lo, self.hi
        pos, neg = self.halves()
        width = self.radius / BINS
        if method == "histogram":
            drop = percentile / 100.0 * self.count
            hi_c = _tail_edge(pos, drop) * width
            lo_c = -_tail_edge(neg, drop) * width
            return max(self.lo, lo_c) if self.lo < 0 else self.lo, min(self.hi, hi_c) if self.hi > 0 else self.hi
        magnitude = pos + neg
        if method == "entropy":
            edge = _kl_threshold(magnitude, levels)
        elif method == "mse":
            edge = _mse_threshold(magnitude, levels)
        else:
            raise ValueError(f"unknown calibration method {method!r}; one of {', '.join(METHODS)}")
        t = edge * width
        return max(lo, -t) if self.lo < 0 else self.lo, min(hi, t)


def _coarsen(counts: np.ndarray, factor: int) -> np.ndarray:
    """The ``2 * BINS + 1`` counts of a histogram over ``[-R, R]`` as they are over
    ``[-factor * R, factor * R]`` (``factor`` a power of two): exactly the counts the same values
    give when binned at the wider radius directly (bin ``floor(x * k)`` for ``k / factor`` is
    ``floor(floor(x * k) / factor)``), so a histogram does not depend on how its radius grew."""
    if factor == 1:
        return counts.copy()
    top = counts[2 * BINS]  # the value R itself: bin BINS / factor at the wider radius
    neg = counts[:BINS][::-1]  # |x| order: bin j covers [j, j+1) * R / BINS
    pos = counts[BINS:2 * BINS]
    new_pos = pos.reshape(-1, factor).sum(axis=1) if factor <= BINS else np.array([pos.sum()])
    new_neg = neg.reshape(-1, factor).sum(axis=1) if factor <= BINS else np.array([neg.sum()])
    out = np.zeros_like(counts)
    out[BINS:BINS + new_pos.size] = new_pos
    out[BINS - new_neg.size:BINS] = new_neg[::-1]
    out[BINS + BINS // factor] += top
    return out


def _tail_edge(counts: np.ndarray, drop: float) -> int:
    """The smallest upper bin edge k with at most ``drop`` elements in bins >= k."""
    tail = np.cumsum(counts[::-1])[::-1]  # tail[k] = elements in bins k..end
    over = np.nonzero(tail > drop)[0]
    return int(over[-1]) + 1 if over.size else 0


def _kl_threshold(hist: np.ndarray, levels: int) -> int:
    """Upper edge (in bins) of the clipping threshold with the least KL divergence."""
    nonzero = np.nonzero(hist)[0]
    if nonzero.size == 0:
        return 1
    last = int(nonzero[-1]) + 1
    if last <= levels:
        return last
    hist = hist[:last].astype(np.float64)
    factor = 1
    while last // factor > 4 * levels:  # a coarser histogram is plenty to place the threshold
        factor *= 2
    if factor > 1:
        pad = (-last) % factor
        hist = np.append(hist, np.zeros(pad)).reshape(-1, factor).sum(axis=1)
        last = hist.size
    best, best_kl = last, math.inf
    candidates = np.unique(np.linspace(levels, last, num=min(64, last - levels + 1)).astype(np.int64))
    for i in candidates:
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()  # outliers clip into the last bin
        # quantize the first i bins into ``levels`` groups, spread back over their non-empty bins
        groups = np.minimum((np.arange(i) * levels) // i, levels - 1)
        src = hist[:i]
        group_sum = np.bincount(groups, weights=src, minlength=levels)
        group_nonzero = np.bincount(groups, weights=(src > 0).astype(np.float64), minlength=levels)
        q = np.where(src > 0, group_sum[groups] / np.maximum(group_nonzero[groups], 1), 0.0)
        ps, qs = p.sum(), q.sum()
        if qs == 0:
            continue
        p /= ps
        q /= qs
        mask = p > 0
        if np.any(q[mask] == 0):
            q = np.where(q == 0, 1e-12, q)
        kl = float(np.sum(p[mask] * np.log(p[mask] / q[mask])))
        if kl < best_kl:
            best, best_kl = int(i), kl
    return best * factor


def _mse_threshold(hist: np.ndarray, levels: int) -> int:
    """Upper edge (in bins) minimising clipping error + rounding noise, over all edges at once."""
    hist = hist.astype(np.float64)
    n = hist.size
    centers = np.arange(n) + 0.5
    # suffix sums over bins >= k of c, c*m, c*m^2
    c = np.cumsum(hist[::-1])[::-1]
    cm = np.cumsum((hist * centers)[::-1])[::-1]
    cmm = np.cumsum((hist * centers ** 2)[::-1])[::-1]
    edges = np.arange(1, n + 1, dtype=np.float64)  # threshold t = edge k (bins < k inside)
    nxt = np.append(c[1:], 0.0), np.append(cm[1:], 0.0), np.append(cmm[1:], 0.0)
    clip_err = nxt[2] - 2 * edges * nxt[1] + edges ** 2 * nxt[0]
    inside = c[0] - nxt[0]
    step = edges / levels
    round_err = inside * step ** 2 / 12.0
    return int(np.argmin(clip_err + round_err)) + 1
