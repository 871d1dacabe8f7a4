"""``tidlc eval`` beyond classification: segmentation (mIoU, pixel accuracy), detection without labels
(box-level agreement with float), per-class breakdowns and the tables/documents of those tasks.

Every result is a ``tidlc.eval/1`` document (docs/eval.md, docs/schemas/tidlc.eval-1.json): ``rows``
(one per precision) and an optional ``breakdown`` (per class, or per image, one value list per
precision) that ``--plot`` draws.

* **segment**: ``--data`` images (a folder or a list file) and ``--masks DIR`` of single-channel PNG
  label masks named like the images (``masks/STEM.png``; value = class index, 255 = ignored). A mask
  goes through the image's geometry (``--resize``, centre ``--crop``) with nearest-neighbour
  sampling, then to the output's height x width. The decoder (``--decoder``, default ``segment``:
  argmax over the channels) gives a class per pixel; one confusion matrix per precision over all
  frames gives mIoU (the mean over the classes that occur), pixel accuracy and IoU per class.
  Without ``--masks``, float's prediction is the reference: pixel agreement and mIoU against float.
* **detect without labels** (``--data`` images instead of a COCO JSON): each precision's boxes are
  matched one-to-one to float's (same class, IoU >= 0.5, COCO's greedy order), giving the
  precision and recall of the quantized detections against float's, and the mean IoU of the pairs.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable

import attrs
import numpy as np

from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError

SCHEMA = "tidlc.eval/1"



def _decode(decoder: str, task: str, outputs: dict, options: dict, plugins):
    """``outputs`` through the post-processor ``decoder``, which must be one for ``task``."""
    from tidlc.decoders import pick
    post = pick(decoder, outputs, options, plugins)
    if post.task != task:
        raise TidlcError(f"--decoder {decoder}: a {post.task} decoder, --task {task} needs a {task} one",
                         code="option")
    return post.decode(outputs, options)

def _round(value, digits: int = 4):
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def _delta(value, base):
    return None if value is None or base is None else round(value - base, 4)


# ----------------------------------------------------------------------------- model runners
@attrs.frozen
class Runners:
    graph: object
    plugins: object
    make: Callable[..., Callable]  # (precision, frames) -> run(feed) -> outputs; frames: see runners
    input_size: tuple[int, int]  # (W, H) of the first input


def runners(model: str, options: CompileOptions, plugins=None) -> Runners:
    """The float interpreter and the backend's quantized executors of ``model`` (quantization depends on
    the options and ``--calib`` only, never on the evaluation frames). ``make(precision, frames)``
    warns, once, when ``frames`` do not fit the ranges the inputs were calibrated for."""
    from tidlc.compiler import backend_for, plugins_for
    from tidlc.evaluate import eval_graph
    from tidlc.interp import Interpreter
    from tidlc.preprocess import input_specs
    plugins = plugins or plugins_for(options)
    backend = backend_for(options, plugins)
    graph = eval_graph(model, options, plugins)
    spec = input_specs(graph)[0]
    size = (spec.shape[3], spec.shape[2]) if spec.layout != "NHWC" else (spec.shape[2], spec.shape[1])

    warned = []

    def make(precision: str, frames=()):
        if precision == "float":
            return Interpreter(graph).run
        from tidlc.evaluate import warn_ranges
        qgraph = backend.quantize(graph, options.replace(bits=int(precision), emit="bin")).graph
        if not warned and warn_ranges([qgraph], list(frames)):
            warned.append(precision)
        return backend.load(qgraph).run
    return Runners(graph, plugins, make, (int(size[0]), int(size[1])))


def _check_frames(frames: int) -> None:
    if frames < 1:
        raise TidlcError(f"--frames {frames}: expected at least 1", code="option")


def _ordered(precisions) -> list[str]:
    """float first (the reference of every delta and agreement), then the others as asked."""
    return ["float", *[p for p in precisions if p != "float"]]


# ----------------------------------------------------------------------------- segmentation
def _accumulate(table: dict, key: str, matrix: np.ndarray) -> None:
    """``table[key] += matrix``, the smaller of the two padded with zeros to the larger's size."""
    old = table.get(key, np.zeros((0, 0), np.int64))
    size = max(len(old), len(matrix))
    table[key] = np.pad(old, ((0, size - len(old)),) * 2) + np.pad(matrix, ((0, size - len(matrix)),) * 2)


def mask_pairs(data: str, masks: str | None) -> tuple[list[str], list[str] | None]:
    """The images of ``--data`` and, with ``--masks DIR``, the mask of each (``DIR/STEM.png``)."""
    from tidlc.evaluate import dataset
    images, _ = dataset(data)
    if masks is None:
        return images, None
    if not os.path.isdir(masks):
        raise TidlcError("--masks: not a folder", masks, hint="a folder of PNG label masks named like the images "
                         "(masks/STEM.png)", code="input")
    found = []
    for image in images:
        path = os.path.join(masks, os.path.splitext(os.path.basename(image))[0] + ".png")
        if not os.path.isfile(path):
            raise TidlcError(f"no mask for {os.path.basename(image)}", path, hint="masks are PNGs named like their "
                             "images (masks/STEM.png), one class index per pixel, 255 ignored", code="input")
        found.append(path)
    return images, found


def read_mask(path: str) -> np.ndarray:
    """A label mask: a one-channel PNG (8 or 16 bit) or a palette PNG (its indices, as PASCAL VOC's)."""
    import cv2

    from tidlc.fileio import check_regular
    check_regular(path, "mask")
    mask = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise TidlcError("not a readable PNG mask", path, code="input")
    if mask.ndim == 3:
        try:
            from PIL import Image
            with Image.open(path) as img:
                if img.mode == "P":
                    return np.asarray(img).astype(np.int64)
        except ImportError:
            pass
        raise TidlcError("the mask is a colour image", path, hint="one channel of class indices (255 = ignored), "
                         "or a palette PNG", code="input")
    return mask.astype(np.int64)


def fit_mask(mask: np.ndarray, preprocess, input_size: tuple[int, int], output_hw: tuple[int, int]) -> np.ndarray:
    """``mask`` through the image's geometry (``--resize``, centre ``--crop``, else straight to the input
    size), then to the output's ``(H, W)``; nearest neighbour throughout, so labels stay labels."""
    import cv2
    nearest = cv2.INTER_NEAREST
    m = mask.astype(np.uint16 if mask.max(initial=0) > 255 else np.uint8)
    if preprocess.resize:
        m = cv2.resize(m, tuple(preprocess.resize), interpolation=nearest)
    crop_w, crop_h = preprocess.crop or input_size
    h, w = m.shape
    if (h, w) != (crop_h, crop_w) and not preprocess.resize and not preprocess.crop:
        m = cv2.resize(m, (crop_w, crop_h), interpolation=nearest)
        h, w = crop_h, crop_w
    top, left = max(0, (h - crop_h) // 2), max(0, (w - crop_w) // 2)
    m = m[top: top + crop_h, left: left + crop_w]
    if m.shape != tuple(output_hw):
        m = cv2.resize(m, (output_hw[1], output_hw[0]), interpolation=nearest)
    return m.astype(np.int64)


def evaluate_segmentation(model: str, data: str, options: CompileOptions, masks: str | None = None,
                          precisions=("float", "8", "16"), frames: int | None = None, decoder: str = "segment",
                          plugins=None, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """The ``tidlc.eval/1`` document of a segmentation model on ``data`` (+ ``masks``)."""
    from tidlc.evaluate import _check, _frames
    from tidlc.metrics import IGNORE_INDEX, confusion
    _check(precisions, "segment")
    images, mask_paths = mask_pairs(data, masks)
    if frames is not None:
        _check_frames(frames)
        images = images[:frames]
        mask_paths = mask_paths[:frames] if mask_paths is not None else None
    run = runners(model, options, plugins)
    feeds = _frames(run.graph, options, images)
    dec_options = {"input_size": run.input_size}
    reference, matrices, agreement, seconds, classes, fixed = [], {}, {}, {}, None, False
    for precision in _ordered(precisions):
        execute = run.make(precision, feeds)
        start = time.perf_counter()
        for i, feed in enumerate(feeds):
            outputs = execute(feed)
            labels = np.asarray(_decode(decoder, "segment", outputs, dec_options, run.plugins)).astype(np.int64)
            if classes is None:  # the channels of a score map; else (an ArgMax output) grown with those seen
                first = np.asarray(next(iter(outputs.values())))
                classes = int(first.shape[1]) if first.ndim == 4 and first.shape[1] > 1 else None
                fixed = classes is not None
                classes = classes or 1
            target = None
            if mask_paths is not None:
                target = fit_mask(read_mask(mask_paths[i]), options.preprocess, run.input_size, labels.shape)
                bad = (target != IGNORE_INDEX) & ((target < 0) | (target >= (classes if fixed else IGNORE_INDEX)))
                if bad.any():
                    raise TidlcError(f"label {int(target[bad][0])} but the model has {classes} classes",
                                     mask_paths[i], hint=f"class indices 0..{classes - 1}, {IGNORE_INDEX} = ignored",
                                     code="input")
            if not fixed:
                seen = [labels.max(initial=0)] + ([target[target != IGNORE_INDEX].max(initial=0)]
                                                  if target is not None else [])
                classes = max(classes, int(max(seen)) + 1)
            if precision == "float":
                reference.append(labels)
            _accumulate(agreement, precision, confusion(labels, reference[i], classes, ignore=-1))
            if target is not None:
                _accumulate(matrices, precision, confusion(labels, target, classes))
            if progress:
                progress(f"{precision}" if precision == "float" else f"{precision}-bit", i + 1, len(feeds))
        seconds[precision] = time.perf_counter() - start
    return _segment_document(model, [p for p in _ordered(precisions) if p in precisions], len(feeds), classes,
                             matrices if mask_paths is not None else None, agreement, seconds)


def _segment_document(model: str, precisions: list[str], frames: int, classes: int, matrices: dict | None,
                      agreement: dict, seconds: dict) -> dict:
    """Rows and per-class IoU from the confusion matrices against the masks (None: unlabeled) and
    against float's prediction."""
    from tidlc.metrics import class_iou, mean_iou, pixel_accuracy
    for table in (matrices or {}, agreement):  # the class count may have grown after the first frames
        for key, m in table.items():
            table[key] = np.pad(m, ((0, classes - len(m)), (0, classes - len(m))))
    labeled = matrices is not None
    rows = []
    for precision in precisions:
        row = {"precision": precision, "frames": frames, "miou": None, "pixel_accuracy": None, "miou_delta": None,
               "pixel_accuracy_delta": None}
        if labeled:
            miou, acc = _round(mean_iou(matrices[precision])), _round(pixel_accuracy(matrices[precision]))
            row.update(miou=miou, pixel_accuracy=acc,
                       miou_delta=_delta(miou, _round(mean_iou(matrices["float"]))),
                       pixel_accuracy_delta=_delta(acc, _round(pixel_accuracy(matrices["float"]))))
        rows.append({**row, "miou_vs_float": _round(mean_iou(agreement[precision])),
                     "pixel_agreement": _round(pixel_accuracy(agreement[precision])),
                     "fps": round(frames / max(seconds[precision], 1e-9), 2)})
    source = matrices if labeled else agreement
    breakdown = {"by": "class", "metric": "iou" if labeled else "iou_vs_float", "keys": [str(c) for c in range(classes)],
                 "values": {p: [_round(v) for v in class_iou(source[p])] for p in precisions}}
    return {"schema": SCHEMA, "model": model, "task": "segment", "labeled": labeled, "rows": rows,
            "breakdown": breakdown}


# ----------------------------------------------------------------------------- detection
def coco_scores(annotations: dict, detections: list[dict]) -> tuple[float, float, dict[str, float | None]]:
    """(mAP@[.5:.95], mAP@.5, AP@[.5:.95] per category name) by pycocotools' COCOeval; a category
    without ground truth has no AP (None)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise TidlcError("--task detect scores with pycocotools, which is not installed",
                         hint="pip install tidlc[eval]", code="unsupported") from None
    import contextlib
    import io as _io
    names = {c["id"]: str(c.get("name", c["id"])) for c in annotations.get("categories", [])}
    with contextlib.redirect_stdout(_io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = annotations
        gt.createIndex()
        if not detections:
            return 0.0, 0.0, {name: (0.0 if gt.getAnnIds(catIds=[cid]) else None) for cid, name in names.items()}
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # precision[T, R, K, A, M]: the summary's own slice (all areas, the largest max-detections)
    precision = ev.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, cid in enumerate(ev.params.catIds):
        p = precision[:, :, k]
        per_class[names.get(cid, str(cid))] = float(p[p > -1].mean()) if (p > -1).any() else None
    return float(max(ev.stats[0], 0.0)), float(max(ev.stats[1], 0.0)), per_class


def detection_document(model: str, rows) -> dict:
    """The ``tidlc.eval/1`` document of :func:`tidlc.evaluate.evaluate_detection`'s rows."""
    base = next((r for r in rows if r.precision == "float"), None)
    doc_rows = [{"precision": r.precision, "frames": r.frames, "map": round(r.map, 4), "map50": round(r.map50, 4),
                 "map_delta": _delta(round(r.map, 4), round(base.map, 4)) if base else None,
                 "map50_delta": _delta(round(r.map50, 4), round(base.map50, 4)) if base else None,
                 "detections": r.detections, "fps": round(r.fps, 2)} for r in rows]
    doc = {"schema": SCHEMA, "model": model, "task": "detect", "labeled": True, "rows": doc_rows}
    per_class = [getattr(r, "per_class", None) for r in rows]
    if all(per_class):
        keys = list(per_class[0])
        doc["breakdown"] = {"by": "class", "metric": "ap", "keys": keys,
                            "values": {r.precision: [_round(pc.get(k)) for k in keys]
                                       for r, pc in zip(rows, per_class)}}
    return doc


def detection_agreement(model: str, data: str, options: CompileOptions, precisions=("float", "8", "16"),
                        frames: int | None = None, decoder: str = "detect", threshold: float = 0.05,
                        iou: float = 0.5, plugins=None,
                        progress: Callable[[str, int, int], None] | None = None) -> dict:
    """The ``tidlc.eval/1`` document of a detector on unlabeled images: its boxes at each precision
    against float's (one-to-one matches of the same class at IoU >= ``iou``)."""
    from tidlc.evaluate import _check, _frames, dataset
    from tidlc.metrics import match_detections
    _check(precisions, "detect")
    images, _ = dataset(data)
    if frames is not None:
        _check_frames(frames)
        images = images[:frames]
    run = runners(model, options, plugins)
    feeds = _frames(run.graph, options, images)
    dec_options = {"threshold": threshold, "input_size": run.input_size}
    reference, rows, per_image = [], [], {}
    for precision in _ordered(precisions):
        execute = run.make(precision, feeds)
        found = matched = 0
        ious, f1s = [], []
        start = time.perf_counter()
        for i, feed in enumerate(feeds):
            outputs = execute(feed)
            boxes = np.asarray(_decode(decoder, "detect", outputs, dec_options, run.plugins), np.float64).reshape(-1, 7)
            if precision == "float":
                reference.append(boxes)
            pairs = match_detections(reference[i], boxes, iou)
            found += len(boxes)
            matched += len(pairs)
            ious += [p[2] for p in pairs]
            total = len(boxes) + len(reference[i])
            f1s.append(1.0 if total == 0 else 2 * len(pairs) / total)
            if progress:
                progress(precision if precision == "float" else f"{precision}-bit", i + 1, len(feeds))
        seconds = time.perf_counter() - start
        per_image[precision] = f1s
        reference_count = sum(len(r) for r in reference)
        rows.append({"precision": precision, "frames": len(feeds), "detections": found, "matched": matched,
                     "precision_vs_float": _round(matched / found if found else 1.0 if not reference_count else 0.0),
                     "recall_vs_float": _round(matched / reference_count if reference_count else
                                               1.0 if not found else 0.0),
                     "mean_iou_vs_float": _round(float(np.mean(ious))) if ious else None,
                     "fps": round(len(feeds) / max(seconds, 1e-9), 2)})
    rows = [r for r in rows if r["precision"] in precisions]
    breakdown = {"by": "image", "metric": "f1_vs_float", "keys": [os.path.basename(p) for p in images],
                 "values": {r["precision"]: [_round(v) for v in per_image[r["precision"]]] for r in rows}}
    return {"schema": SCHEMA, "model": model, "task": "detect", "labeled": False, "rows": rows,
            "breakdown": breakdown}


# ----------------------------------------------------------------------------- classification breakdown
def classify_breakdown(tops: dict[str, list], labels: list[int] | None) -> dict:
    """Per class, each precision's top-1 accuracy (with labels) or agreement with float's top-1 (the
    class being float's prediction) -- what ``--plot`` draws for ``--task classify``."""
    reference = [t[0] for t in tops["float"]]
    truth = list(labels) if labels is not None else reference
    keys = sorted(set(truth))
    index = {k: [i for i, y in enumerate(truth) if y == k] for k in keys}
    values = {p: [_round(float(np.mean([t[i][0] == truth[i] for i in index[k]]))) for k in keys]
              for p, t in tops.items()}
    return {"by": "class", "metric": "accuracy" if labels is not None else "agreement",
            "keys": [str(k) for k in keys], "values": values}


# ----------------------------------------------------------------------------- text tables
_COLUMNS = {  # (task, labeled) -> (key, heading, format)
    ("segment", True): (("miou", "mIoU", "pct"), ("miou_delta", "d mIoU", "dpct"),
                        ("pixel_accuracy", "pix acc", "pct"), ("pixel_accuracy_delta", "d pix", "dpct"),
                        ("pixel_agreement", "agree", "pct")),
    ("segment", False): (("miou_vs_float", "mIoU/fp", "pct"), ("pixel_agreement", "agree", "pct")),
    ("detect", True): (("map", "mAP", "f3"), ("map_delta", "d mAP", "df3"), ("map50", "mAP@.5", "f3"),
                       ("map50_delta", "d @.5", "df3"), ("detections", "boxes", "int")),
    ("detect", False): (("detections", "boxes", "int"), ("matched", "matched", "int"),
                        ("precision_vs_float", "prec/fp", "pct"), ("recall_vs_float", "rec/fp", "pct"),
                        ("mean_iou_vs_float", "IoU/fp", "f3")),
}
_FORMATS = {"pct": "{:.2f}", "dpct": "{:+.2f}", "f3": "{:.3f}", "df3": "{:+.3f}", "int": "{:d}"}
_TITLES = {("segment", True): "segment (mIoU, pixel accuracy; ignore index 255)",
           ("segment", False): "segment, unlabeled (agreement with float)",
           ("detect", True): "detect (COCO mAP by pycocotools)",
           ("detect", False): "detect, unlabeled (boxes matched to float's: same class, IoU >= 0.5)"}


def render(doc: dict) -> str:
    """The text table of a segment/detect document (percentages for the 0..1 ratios)."""
    key = (doc["task"], doc["labeled"])
    columns = _COLUMNS[key]
    head = f"{'precision':<10} {'frames':>6} " + " ".join(f"{h:>8}" for _, h, _ in columns) + f" {'fps':>8}"
    lines = [f"{doc['model']}: {_TITLES[key]}", "", head, "-" * len(head)]
    for row in doc["rows"]:
        cells = []
        for name, _, kind in columns:
            v = row.get(name)
            cells.append("-" if v is None else _FORMATS[kind].format(100 * v if "pct" in kind else v))
        lines.append(f"{row['precision']:<10} {row['frames']:>6} " + " ".join(f"{c:>8}" for c in cells) +
                     f" {row['fps']:>8.1f}")
    return "\n".join(lines) + "\n"
