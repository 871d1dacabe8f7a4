"""Post-processing for ``tidlc run OUTDIR --post ...`` (TIDL's ``postProcType``).

* ``classify``: top-1/top-5 of the first output; with ``--labels LIST`` (lines
  ``image label``), every listed image is run and top-1/top-5 accuracy printed;
* ``detect``: the boxes of a DetectionOutput output (``[1, 1, rows, 7]``: image,
  label, score, xmin, ymin, xmax, ymax in 0..1) above ``--threshold``, drawn on
  the input image (PNG);
* ``segment``: per-pixel argmax over the channels of the first 4-D output,
  coloured and blended over the input image, written as PNG.
"""
from __future__ import annotations

import os

import numpy as np

from tidlc.diagnostics import TidlcError


def _scores(outputs: dict) -> np.ndarray:
    first = next(iter(outputs.values()))
    return np.asarray(first, dtype=np.float64).reshape(first.shape[0] if first.ndim > 1 else 1, -1)[0]


def top_k(outputs: dict, k: int = 5) -> list[int]:
    scores = _scores(outputs)
    order = np.lexsort((np.arange(scores.size), -scores))  # ties: the lower class first (deterministic)
    return [int(i) for i in order[:k]]


def read_labels(path: str) -> list[tuple[str, int]]:
    """``image label`` lines (regular files only: a FIFO or a device is refused, not read)."""
    from tidlc.diagnostics import Loc
    from tidlc.fileio import check_regular, read_text
    base = os.path.dirname(os.path.abspath(path))
    items = []
    for number, line in enumerate(read_text(path, "label list").splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        loc = Loc(file=path, line=number)
        if len(parts) < 2 or not parts[1].lstrip("-").isdigit() or len(parts[1]) > 18:
            raise TidlcError("expected 'image label'", loc, code="input")
        image = parts[0] if os.path.isabs(parts[0]) else os.path.join(base, parts[0])
        if not os.path.lexists(image):
            image = parts[0] if os.path.lexists(parts[0]) else None
        if image is None:
            raise TidlcError(f"no such file '{parts[0][:200]}'", loc, code="input")
        try:
            check_regular(image, "image")
        except TidlcError as exc:
            raise TidlcError(f"'{parts[0][:200]}' {exc.message}", loc, hint=exc.hint, code=exc.code) from None
        items.append((image, int(parts[1])))
    if not items:
        raise TidlcError("the label list names no images", path, code="input")
    return items


def classify_accuracy(run_image, labels: list[tuple[str, int]]) -> tuple[float, float]:
    top1 = top5 = 0
    for image, label in labels:
        best = top_k(run_image(image))
        top1 += best[0] == label
        top5 += label in best
    return top1 / len(labels), top5 / len(labels)


PALETTE = np.array([(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
                    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
                    (0, 80, 100), (0, 0, 230), (119, 11, 32), (0, 0, 0)], dtype=np.uint8)  # RGB


def segment_png(outputs: dict, image_path: str | None, path: str, alpha: float = 0.5) -> None:
    """Colour the per-pixel class of the first 4-D output, blend it over the image, write a PNG."""
    import cv2
    maps = [v for v in outputs.values() if np.ndim(v) == 4]
    if not maps:
        raise TidlcError("--post segment needs a 4-D (N, C, H, W) output")
    scores = np.asarray(maps[0])[0]
    classes = scores[0].astype(np.int64) if scores.shape[0] == 1 else np.argmax(scores, axis=0)
    colour = PALETTE[classes % len(PALETTE)][:, :, ::-1]  # BGR for OpenCV
    if image_path:
        image = cv2.imread(image_path, cv2.IMREAD_COLOR)
        if image is not None:
            colour = cv2.resize(colour, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
            colour = cv2.addWeighted(image, 1 - alpha, colour, alpha, 0.0)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(colour))
    if not ok:
        raise TidlcError("cannot encode the PNG", path)
    from tidlc.fileio import atomic_write
    with atomic_write(path) as fh:
        fh.write(data.tobytes())


def detections(outputs: dict, threshold: float) -> np.ndarray:
    """Rows ``[image, label, score, xmin, ymin, xmax, ymax]`` (coordinates in 0..1) of the first
    DetectionOutput-shaped output (N, 1, rows, 7) scoring at least ``threshold``."""
    found = [v for v in outputs.values() if np.ndim(v) == 4 and np.shape(v)[-1] == 7]
    if not found:
        raise TidlcError("--post detect needs a DetectionOutput output ([1, 1, rows, 7])")
    rows = np.asarray(found[0], dtype=np.float64).reshape(-1, 7)
    return rows[(rows[:, 2] >= threshold) & (rows[:, 5] > rows[:, 3]) & (rows[:, 6] > rows[:, 4])]


def detect_png(outputs: dict, image_path: str | None, size: tuple[int, int], path: str,
               threshold: float = 0.5, boxes: np.ndarray | None = None) -> int:
    """Draw the kept boxes (class-coloured, labelled ``class:score``) on the image; returns their count.
    ``boxes`` are decoded rows (tidlc.decoders); without them, the DetectionOutput rows of ``outputs``."""
    import cv2
    boxes = detections(outputs, threshold) if boxes is None else boxes
    image = cv2.imread(image_path, cv2.IMREAD_COLOR) if image_path else None
    if image is None:
        image = np.zeros((size[1], size[0], 3), np.uint8)
    h, w = image.shape[:2]
    for _, label, score, x0, y0, x1, y1 in boxes:
        colour = tuple(int(c) for c in PALETTE[int(label) % len(PALETTE)][::-1])
        p0 = (int(np.rint(np.clip(x0, 0, 1) * (w - 1))), int(np.rint(np.clip(y0, 0, 1) * (h - 1))))
        p1 = (int(np.rint(np.clip(x1, 0, 1) * (w - 1))), int(np.rint(np.clip(y1, 0, 1) * (h - 1))))
        cv2.rectangle(image, p0, p1, colour, 2)
        cv2.putText(image, f"{int(label)}:{score:.2f}", (p0[0], max(p0[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, colour, 1)
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise TidlcError("cannot encode the PNG", path)
    from tidlc.fileio import atomic_write
    with atomic_write(path) as fh:
        fh.write(data.tobytes())
    return len(boxes)
