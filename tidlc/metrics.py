"""Accuracy metrics of a fixed-point tensor against its float reference."""
from __future__ import annotations

import math

import numpy as np


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """``10 log10(sum(ref**2) / sum((ref - test)**2))``; inf when equal, -inf-ish when ref is 0."""
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowed or NaN tensor: -inf dB (_db)
        err = ref - np.asarray(test, dtype=np.float64).reshape(-1)
        return _db(float(np.dot(ref, ref)), float(np.dot(err, err)))


def _db(signal: float, noise: float) -> float:
    """``10 log10(signal / noise)``: inf when exact, -inf when nothing of the signal is left (no signal,
    or an error energy beyond float64 — an overflowed or NaN tensor — whatever the signal)."""
    if noise == 0.0:
        return math.inf
    ratio = signal / noise if math.isfinite(noise) else 0.0
    if not ratio > 0.0:  # 0, or NaN
        return -math.inf
    return 10.0 * math.log10(ratio)


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
        with np.errstate(over="ignore", invalid="ignore"):
            err = ref - np.asarray(test, dtype=np.float64).reshape(-1)
            self.signal += float(np.dot(ref, ref))
            self.noise += float(np.dot(err, err))

    @property
    def db(self) -> float:
        return _db(self.signal, self.noise)


class InputRangeCheck:
    """Do the frames fed to a fixed-point graph fit the ranges its inputs were calibrated for?

    A float input is quantized on the device's grid (its ``data_convert``): values beyond that
    grid saturate. Frames pre-processed unlike the calibration frames (raw 0..255 pixels into a
    model calibrated on [-1, 1], a forgotten ``--mean``) then give outputs with no relation to
    the float model's, silently. :meth:`add` counts, over frames, the values more than half a
    step outside the grid; :meth:`warn` says so once per input when more than ``limit`` of them
    are (the rare outlier that a percentile calibration clips on purpose stays quiet)."""

    def __init__(self, graph, limit: float = 0.01):
        users = graph.users()
        self.limit = limit
        self.source = graph.attrs.get("quant.calib_source")
        self.frames = graph.attrs.get("quant.calib_frames")
        self.ranges: dict[str, tuple[float, float, float]] = {}  # name -> (low, high, half a step)
        for op in graph.ops:
            if op.kind != "input" or op.results[0].type.dtype[0] != "f":
                continue
            for user, _ in users.get(op.results[0], ()):
                q = user.results[0].type.quant if user.kind == "data_convert" else None
                if q is not None and len(q.scale) == 1 and q.scale[0] > 0:
                    scale = q.scale[0]
                    self.ranges[op.attrs["name"]] = ((q.qmin - q.zero_point) / scale,
                                                     (q.qmax - q.zero_point) / scale, 0.5 / scale)
                    break
        # per input: values outside, values, min, max, and the energies of the input and of what
        # saturation takes from it (their ratio: the input's SNR once clipped to the grid)
        self.counts = {name: [0, 0, math.inf, -math.inf, SnrAccumulator()] for name in self.ranges}

    def add(self, feeds: dict) -> None:
        for name, (low, high, half) in self.ranges.items():
            if name not in feeds:
                continue
            x = np.asarray(feeds[name])
            if x.size == 0 or x.dtype.kind not in "fiu":
                continue
            c = self.counts[name]
            c[0] += int(np.count_nonzero((x < low - half) | (x > high + half)))
            c[1] += x.size
            c[2], c[3] = min(c[2], float(x.min())), max(c[3], float(x.max()))
            c[4].add(x, np.clip(x, low, high))

    def warn(self, hint: str = "") -> list[str]:
        """Warn (``code="range"``) about every input whose frames do not fit; return their names."""
        from tidlc.diagnostics import warn
        names = []
        for name, (outside, total, lo, hi, clipped) in self.counts.items():
            if not total or outside <= self.limit * total:
                continue
            low, high, _ = self.ranges[name]
            count = f"{self.frames} " if self.frames else ""
            source = (f"{count}synthetic frames (no --calib)" if self.source == "synthetic"
                      else f"{count}frames of '{self.source}'" if self.source else "its calibration frames")
            left = clipped.db  # what of the input survives saturation (MNIST's 8 % stroke pixels: all of it)
            effect = ": the fixed-point outputs cannot follow the float model" if left < 20.0 else ""
            warn(f"input '{name}': {100.0 * outside / total:.1f}% of its values are outside the range it was "
                 f"calibrated for, [{low:.4g}, {high:.4g}] (they span {lo:.4g} .. {hi:.4g}), and saturating them "
                 f"leaves the input at {left:.1f} dB SNR{effect}; it was calibrated on {source}",
                 code="range", hint=hint or "compile with --calib frames like these and the --mean/--scale the model "
                 "was trained with; an image gets the compile's --mean/--scale, a .npy is fed as it is")
            names.append(name)
        return names


# ----------------------------------------------------------------------------- segmentation
IGNORE_INDEX = 255  # label-mask value that no metric counts (object borders, void)


def confusion(predicted: np.ndarray, target: np.ndarray, classes: int, ignore: int = IGNORE_INDEX) -> np.ndarray:
    """``[classes, classes]`` pixel counts, row = target class, column = predicted class. Pixels whose
    target is ``ignore`` do not count; a target outside ``0..classes-1`` counts nowhere either (the
    caller checks labels before), a prediction outside it is clipped into the last column's range."""
    t = np.asarray(target).reshape(-1).astype(np.int64)
    p = np.asarray(predicted).reshape(-1).astype(np.int64)
    keep = (t != ignore) & (t >= 0) & (t < classes)
    index = t[keep] * classes + np.clip(p[keep], 0, classes - 1)
    return np.bincount(index, minlength=classes * classes).reshape(classes, classes)


def class_iou(matrix: np.ndarray) -> np.ndarray:
    """IoU per class, ``tp / (tp + fp + fn)``; NaN for a class absent from targets and predictions."""
    m = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(m)
    union = m.sum(axis=0) + m.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mean_iou(matrix: np.ndarray) -> float:
    """Mean IoU over the classes that occur (in targets or predictions); 0 when none does."""
    iou = class_iou(matrix)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0


def pixel_accuracy(matrix: np.ndarray) -> float:
    total = float(np.asarray(matrix).sum())
    return float(np.trace(matrix)) / total if total else 0.0


# ----------------------------------------------------------------------------- detection agreement
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[len(a), len(b)]`` IoU of corner boxes ``x0, y0, x1, y1``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_detections(reference: np.ndarray, test: np.ndarray, iou: float = 0.5) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching of detection rows ``[image, label, score, x0, y0, x1, y1]``, COCO
    style: ``test`` rows by descending score (ties: lower index) each take the unmatched ``reference``
    row of the same label with the highest IoU, if that IoU is at least ``iou``. Returns
    ``(test index, reference index, IoU)`` triples."""
    ref = np.asarray(reference, np.float64).reshape(-1, 7)
    tst = np.asarray(test, np.float64).reshape(-1, 7)
    if not len(ref) or not len(tst):
        return []
    overlap = box_iou(tst[:, 3:], ref[:, 3:])
    overlap[tst[:, None, 1] != ref[None, :, 1]] = -1.0  # another class never matches
    taken = np.zeros(len(ref), bool)
    pairs = []
    for i in np.lexsort((np.arange(len(tst)), -tst[:, 2])):
        candidates = np.where(taken, -1.0, overlap[i])
        j = int(np.argmax(candidates))
        if candidates[j] >= iou:
            taken[j] = True
            pairs.append((int(i), j, float(candidates[j])))
    return pairs
