"""Post-processors: what a network's outputs mean (``tidlc run --post NAME``, docs/run.md).

A post-processor is a :class:`PostProcessor`: a ``name``, the ``task`` it
serves (``classify``, ``detect`` or ``segment``), ``accepts(outputs)``
(whether the outputs have its shape) and ``decode(outputs, options)``. Detectors
return rows ``[image, label, score, x0, y0, x1, y1]`` with coordinates in
0..1, which `tidlc run` draws on the input image. Plugins add their own
through the ``tidlc_postprocessors`` hook (docs/plugins.md); the builtins:

* ``ssd``: a Caffe SSD ``DetectionOutput`` output (``[1, 1, rows, 7]``);
* ``ultraface``: UltraFace-style raw heads, ``scores [1, N, C]`` (softmaxed)
  and box offsets ``[1, N, 4]``, decoded against SSD priors generated from
  the input size, the feature strides and the min box sizes (UltraFace's
  defaults; options ``strides``, ``min_boxes``, ``center_variance``,
  ``size_variance``), then per-class NMS;
* ``yolov5``: YOLOv5 grid heads, one per stride, ``[1, A*(5+C), H, W]`` or
  ``[1, A, H, W, 5+C]`` (options ``strides``, ``anchors`` in input pixels per
  stride, ``classes``, ``objectness``, ``sigmoid``, ``iou``, ``max_detections``,
  ``label_offset``);
* ``yolox``: YOLOX anchor-free heads, one ``[1, 5+C, H, W]`` per stride, or
  the export's one ``[1, N, 5+C]`` with the grids concatenated (same options
  but ``anchors``);
* ``classify`` and ``segment``: the first output's top classes / per-pixel
  argmax.

``--post detect`` picks the first detector that accepts the outputs. A name
may carry options, tidlc's pass-option syntax with JSON values:
``yolov5{classes=80,iou=0.5,strides=[8,16,32]}`` (:func:`split_spec`).
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import numpy as np

from tidlc.diagnostics import TidlcError

TASKS = ("classify", "detect", "segment")


@attrs.frozen
class PostProcessor:
    name: str
    task: str = attrs.field(validator=attrs.validators.in_(TASKS))
    summary: str
    accepts: Callable[[Mapping[str, np.ndarray], dict], bool]  # (outputs, options): do the outputs fit?
    decode: Callable[[Mapping[str, np.ndarray], dict], Any]
    plugin: str = "builtin"
    options: tuple[str, ...] = ()  # the options it reads beside threshold and input_size (checked by pick)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, top_k: int = 200) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (highest score first; ties: lower index)."""
    order = np.lexsort((np.arange(scores.size), -scores))
    x0, y0, x1, y1 = boxes.T
    area = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    keep = []
    while order.size and len(keep) < top_k:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        h = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = w * h
        union = area[i] + area[rest] - inter
        overlap = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


# ----------------------------------------------------------------------------- SSD DetectionOutput
def _ssd_output(outputs) -> np.ndarray | None:
    found = [v for v in outputs.values() if np.ndim(v) == 4 and np.shape(v)[-1] == 7]
    return np.asarray(found[0], np.float64).reshape(-1, 7) if found else None


def _ssd_decode(outputs, options: dict) -> np.ndarray:
    from tidlc.postprocess import detections
    return detections(outputs, float(options.get("threshold", 0.5)))


# ----------------------------------------------------------------------------- UltraFace / SSD priors
ULTRAFACE = {"strides": (8, 16, 32, 64), "min_boxes": ((10, 16, 24), (32, 48), (64, 96), (128, 192, 256)),
             "center_variance": 0.1, "size_variance": 0.2, "iou": 0.3, "threshold": 0.7}


def priors(width: int, height: int, strides=ULTRAFACE["strides"], min_boxes=ULTRAFACE["min_boxes"]) -> np.ndarray:
    """SSD priors ``(cx, cy, w, h)`` in 0..1, UltraFace's order: per feature map, rows, columns, sizes."""
    out = []
    for stride, sizes in zip(strides, min_boxes):
        fw, fh = math.ceil(width / stride), math.ceil(height / stride)
        for j in range(fh):
            for i in range(fw):
                for size in sizes:
                    out.append(((i + 0.5) / (width / stride), (j + 0.5) / (height / stride),
                                size / width, size / height))
    return np.clip(np.asarray(out, np.float64), 0.0, 1.0)


def _heads(outputs) -> tuple[np.ndarray, np.ndarray] | None:
    """(scores [N, C], offsets [N, 4]) of two 3-D outputs with the same N, else None."""
    three = [np.asarray(v) for v in outputs.values() if np.ndim(v) == 3 and np.shape(v)[0] == 1]
    boxes = [v for v in three if v.shape[-1] == 4]
    scores = [v for v in three if v.shape[-1] != 4 and any(v.shape[1] == b.shape[1] for b in boxes)]
    if not boxes or not scores:
        return None
    s = scores[0]
    b = next(b for b in boxes if b.shape[1] == s.shape[1])
    return s[0].astype(np.float64), b[0].astype(np.float64)


def _input_size(options: dict) -> tuple[int, int]:
    size = options.get("input_size")
    if not size:
        raise TidlcError("the ultraface decoder needs the input size", hint="tidlc run passes it; in Python give "
                         "options={'input_size': (W, H)}", code="option")
    return int(size[0]), int(size[1])


def _ultraface_accepts(outputs, options: dict | None = None) -> bool:
    heads = _heads(outputs)
    if heads is None:
        return False
    if options and options.get("input_size"):
        w, h = _input_size(options)
        return priors(w, h, options.get("strides", ULTRAFACE["strides"]),
                      options.get("min_boxes", ULTRAFACE["min_boxes"])).shape[0] == heads[0].shape[0]
    return True


def _ultraface_decode(outputs, options: dict) -> np.ndarray:
    heads = _heads(outputs)
    if heads is None:
        raise TidlcError("the ultraface decoder needs scores [1, N, C] and boxes [1, N, 4] outputs", code="input")
    scores, offsets = heads
    w, h = _input_size(options)
    p = priors(w, h, options.get("strides", ULTRAFACE["strides"]), options.get("min_boxes", ULTRAFACE["min_boxes"]))
    if p.shape[0] != scores.shape[0]:
        raise TidlcError(f"{scores.shape[0]} boxes but {p.shape[0]} priors for a {w}x{h} input",
                         hint="give the strides / min_boxes the model was trained with", code="input")
    cv, sv = options.get("center_variance", 0.1), options.get("size_variance", 0.2)
    centre = offsets[:, :2] * cv * p[:, 2:] + p[:, :2]
    size = np.exp(offsets[:, 2:] * sv) * p[:, 2:]
    corners = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    threshold, iou = float(options.get("threshold", ULTRAFACE["threshold"])), float(options.get("iou", 0.3))
    rows = []
    for label in range(1, scores.shape[1]):  # class 0 is the background
        mask = scores[:, label] >= threshold
        if not mask.any():
            continue
        idx = np.flatnonzero(mask)
        for k in nms(corners[idx], scores[idx, label], iou):
            i = idx[k]
            rows.append([0, label, scores[i, label], *np.clip(corners[i], 0.0, 1.0)])
    return np.asarray(rows, np.float64).reshape(-1, 7)


# ----------------------------------------------------------------------------- YOLOv5 / YOLOX grid heads
YOLOV5_ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))
YOLO = {"strides": (8, 16, 32), "iou": 0.45, "max_detections": 300, "objectness": True, "label_offset": 0}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warning for large |x|


def _option(options: dict, key: str, kind=float):
    value = options.get(key, YOLO.get(key))
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "on", "off", "1", "0"):
                return value.lower() in ("true", "on", "1")
            if not isinstance(value, (bool, int)):
                raise TypeError
            return bool(value)
        if kind is tuple:
            return tuple(int(v) for v in value)
        return kind(value)
    except (TypeError, ValueError):
        raise TidlcError(f"decoder option {key}={value!r}: expected {kind.__name__}", code="option") from None


def _yolo_levels(outputs, options: dict, anchors: int | None) -> list[tuple[int, np.ndarray]] | None:
    """``(stride, [A, H, W, 5+C] float64)`` per stride of the 4-D/5-D outputs whose grid is the input
    size over that stride (``anchors`` A; ``None``: YOLOX, one prediction per cell), else None."""
    if not options.get("input_size"):
        return None
    width, height = _input_size(options)
    classes = options.get("classes")
    levels = []
    for stride in _option(options, "strides", tuple):
        grid = (height // stride, width // stride)
        found = None
        for value in outputs.values():
            x = np.asarray(value)
            a = anchors or 1
            if x.ndim == 4 and x.shape[0] == 1 and tuple(x.shape[2:]) == grid and x.shape[1] % a == 0:
                depth = x.shape[1] // a
                if depth >= 6 and (classes is None or depth == 5 + int(classes)):
                    found = x[0].reshape(a, depth, *grid).transpose(0, 2, 3, 1)
            elif anchors and x.ndim == 5 and x.shape[:4] == (1, anchors, *grid) and x.shape[4] >= 6 and \
                    (classes is None or x.shape[4] == 5 + int(classes)):
                found = x[0]
            if found is not None:
                break
        if found is None:
            return None
        levels.append((stride, found.astype(np.float64)))
    if len({lv.shape[-1] for _, lv in levels}) != 1:
        return None
    return levels


def _v5_anchors(options: dict) -> np.ndarray:
    """``[levels, A, 2]`` anchor sizes in input pixels (a level: flat w,h pairs or a list of pairs)."""
    raw = options.get("anchors", YOLOV5_ANCHORS)
    try:
        levels = [np.asarray(level, np.float64).reshape(-1, 2) for level in raw]
        if len({lv.shape[0] for lv in levels}) != 1 or not levels or not levels[0].size:
            raise ValueError
    except (TypeError, ValueError):
        raise TidlcError(f"decoder option anchors={raw!r}: expected one list of w,h pairs per stride, as many "
                         "per stride", hint="e.g. anchors=[[10,13,16,30,33,23],[30,61,62,45,59,119],"
                         "[116,90,156,198,373,326]]", code="option") from None
    return np.stack(levels)


def _yolo_rows(boxes: np.ndarray, objectness: np.ndarray, classes: np.ndarray, options: dict) -> np.ndarray:
    """Detection rows from pixel corner boxes [N, 4], objectness [N] and class scores [N, C]: the best
    class per box, score = objectness x class score (class score alone with objectness=false), kept
    from the threshold, per-class NMS, the best ``max_detections`` rows."""
    width, height = _input_size(options)
    scores = classes * objectness[:, None] if _option(options, "objectness", bool) else classes
    label = scores.argmax(axis=1)
    score = scores[np.arange(len(scores)), label]
    keep = np.flatnonzero(score >= float(options.get("threshold", 0.25)))
    iou, offset = _option(options, "iou"), _option(options, "label_offset", int)
    rows = []
    for c in np.unique(label[keep]):
        idx = keep[label[keep] == c]
        for k in nms(boxes[idx], score[idx], iou, top_k=len(idx)):
            i = idx[k]
            x0, y0, x1, y1 = boxes[i]
            rows.append([0, c + offset, score[i], x0 / width, y0 / height, x1 / width, y1 / height])
    out = np.asarray(rows, np.float64).reshape(-1, 7)
    out[:, 3:] = np.clip(out[:, 3:], 0.0, 1.0)
    out = out[(out[:, 5] > out[:, 3]) & (out[:, 6] > out[:, 4])]  # nothing left inside the image: no box
    order = np.lexsort((out[:, 1], -out[:, 2]))[:_option(options, "max_detections", int)]
    return out[order]


def _flat_rows(outputs, options: dict, per_cell: int, extra: int, transposed: bool = False) -> np.ndarray | None:
    """The one ``[1, N, extra+C]`` output (``transposed``: ``[1, extra+C, N]``) whose N is ``per_cell``
    predictions for every cell of every stride's grid, as ``[N, extra+C]`` float64, else None."""
    if not options.get("input_size"):
        return None
    width, height = _input_size(options)
    cells = per_cell * sum((height // s) * (width // s) for s in _option(options, "strides", tuple))
    classes = options.get("classes")
    for value in outputs.values():
        x = np.asarray(value)
        if x.ndim != 3 or x.shape[0] != 1:
            continue
        rows = x[0].T if transposed else x[0]
        if rows.shape[0] == cells and rows.shape[1] > extra and (classes is None or rows.shape[1] == extra + int(classes)):
            return rows.astype(np.float64)
    return None


def _corners(cxcywh: np.ndarray) -> np.ndarray:
    centre, size = cxcywh[:, :2], cxcywh[:, 2:4]
    return np.concatenate([centre - size / 2, centre + size / 2], 1)


def _yolov5_accepts(outputs, options: dict | None = None) -> bool:
    options = options or {}
    try:
        anchors = _v5_anchors(options).shape[1]
        return _yolo_levels(outputs, options, anchors) is not None or \
            _flat_rows(outputs, options, anchors, 5) is not None
    except TidlcError:
        return False


def _yolov5_decode(outputs, options: dict) -> np.ndarray:
    """YOLOv5's Detect: ``xy = (2 s - 0.5 + cell) * stride``, ``wh = (2 s)^2 * anchor`` with s the
    sigmoid of the head (``sigmoid=false`` when the export already applied it)."""
    anchors = _v5_anchors(options)
    levels = _yolo_levels(outputs, options, anchors.shape[1])
    if levels is None:
        flat = _flat_rows(outputs, options, anchors.shape[1], 5)
        if flat is not None:  # the export with Detect in the graph: boxes in input pixels, sigmoid applied
            scores = _sigmoid(flat[:, 4:]) if _option({"sigmoid": False, **options}, "sigmoid", bool) else flat[:, 4:]
            return _yolo_rows(_corners(flat), scores[:, 0], scores[:, 1:], options)
        raise TidlcError("the yolov5 decoder needs one [1, A*(5+C), H, W] or [1, A, H, W, 5+C] output per "
                         f"stride {list(_option(options, 'strides', tuple))} of the input size, or the export's "
                         "decoded [1, N, 5+C] "
                         f"({', '.join(f'{k} {list(np.shape(v))}' for k, v in outputs.items())})",
                         hint="give the model's strides / anchors / classes as decoder options", code="input")
    if len(anchors) != len(levels):
        raise TidlcError(f"{len(anchors)} anchor levels for {len(levels)} strides", code="option")
    activate = _option({"sigmoid": True, **options}, "sigmoid", bool)
    boxes, objectness, classes = [], [], []
    for (stride, head), level_anchors in zip(levels, anchors):
        s = _sigmoid(head) if activate else head
        a, h, w, _ = s.shape
        cy, cx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        centre_x = (s[..., 0] * 2 - 0.5 + cx) * stride
        centre_y = (s[..., 1] * 2 - 0.5 + cy) * stride
        size_w = (s[..., 2] * 2) ** 2 * level_anchors[:, 0, None, None]
        size_h = (s[..., 3] * 2) ** 2 * level_anchors[:, 1, None, None]
        boxes.append(np.stack([centre_x - size_w / 2, centre_y - size_h / 2,
                               centre_x + size_w / 2, centre_y + size_h / 2], -1).reshape(-1, 4))
        objectness.append(s[..., 4].reshape(-1))
        classes.append(s[..., 5:].reshape(a * h * w, -1))
    return _yolo_rows(np.concatenate(boxes), np.concatenate(objectness), np.concatenate(classes), options)


def _yolox_flat(outputs, options: dict) -> np.ndarray | None:
    """The export's one ``[1, N, 5+C]`` output with N the cells of every stride's grid, else None."""
    return _flat_rows(outputs, options, 1, 5)


def _yolox_accepts(outputs, options: dict | None = None) -> bool:
    options = options or {}
    return _yolo_levels(outputs, options, None) is not None or _yolox_flat(outputs, options) is not None


def _yolox_decode(outputs, options: dict) -> np.ndarray:
    """YOLOX: ``xy = (reg + cell) * stride``, ``wh = exp(reg) * stride``; objectness and classes through a
    sigmoid for per-stride heads (the ``[1, N, 5+C]`` export has it applied; option ``sigmoid``)."""
    levels = _yolo_levels(outputs, options, None)
    if levels is not None:
        flat, activate = np.concatenate([head.reshape(-1, head.shape[-1]) for _, head in levels]), True
    else:
        flat, activate = _yolox_flat(outputs, options), False
        if flat is None:
            raise TidlcError("the yolox decoder needs one [1, 5+C, H, W] output per stride "
                             f"{list(_option(options, 'strides', tuple))} of the input size, or one [1, N, 5+C] "
                             f"({', '.join(f'{k} {list(np.shape(v))}' for k, v in outputs.items())})",
                             hint="give the model's strides / classes as decoder options", code="input")
    activate = _option({"sigmoid": activate, **options}, "sigmoid", bool)
    width, height = _input_size(options)
    grid, scale = [], []
    for stride in _option(options, "strides", tuple):
        cy, cx = np.meshgrid(np.arange(height // stride), np.arange(width // stride), indexing="ij")
        grid.append(np.stack([cx.reshape(-1), cy.reshape(-1)], 1))
        scale.append(np.full(cx.size, float(stride)))
    grid, scale = np.concatenate(grid).astype(np.float64), np.concatenate(scale)[:, None]
    centre = (flat[:, :2] + grid) * scale
    size = np.exp(np.minimum(flat[:, 2:4], 50.0)) * scale
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)
    scores = _sigmoid(flat[:, 4:]) if activate else flat[:, 4:]
    return _yolo_rows(boxes, scores[:, 0], scores[:, 1:], options)


def _yolov8_accepts(outputs, options: dict | None = None) -> bool:
    return _flat_rows(outputs, options or {}, 1, 4, transposed=True) is not None


def _yolov8_decode(outputs, options: dict) -> np.ndarray:
    """YOLOv8/YOLO11 (Ultralytics' export): ``[1, 4+C, N]``, box centre and size in input pixels, then
    the class scores (sigmoid applied, no objectness), N the cells of every stride's grid."""
    flat = _flat_rows(outputs, options, 1, 4, transposed=True)
    if flat is None:
        raise TidlcError("the yolov8 decoder needs one [1, 4+C, N] output, N the cells of the strides "
                         f"{list(_option(options, 'strides', tuple))} of the input size "
                         f"({', '.join(f'{k} {list(np.shape(v))}' for k, v in outputs.items())})",
                         hint="give the model's strides / classes as decoder options", code="input")
    scores = _sigmoid(flat[:, 4:]) if _option({"sigmoid": False, **options}, "sigmoid", bool) else flat[:, 4:]
    return _yolo_rows(_corners(flat), np.ones(len(flat)), scores, {**options, "objectness": False})


# ----------------------------------------------------------------------------- classify / segment
def _first(outputs) -> np.ndarray:
    return np.asarray(next(iter(outputs.values())))


def _classify_decode(outputs, options: dict) -> list[int]:
    from tidlc.postprocess import top_k
    return top_k(outputs, int(options.get("k", 5)))


def _segment_decode(outputs, options: dict) -> np.ndarray:
    """The class per pixel: the argmax over the channels of ``[1, C, H, W]``; a one-channel output
    (a Caffe ``ArgMax`` layer's) or a 3-D one already holds the classes."""
    x = _first(outputs)
    if x.ndim == 4 and x.shape[1] > 1:
        return x[0].argmax(axis=0)
    return np.rint(x.reshape(x.shape[-2:])).astype(np.int64)


BUILTIN = (
    PostProcessor("ssd", "detect", "Caffe SSD DetectionOutput rows [1, 1, rows, 7]",
                  lambda o, opts=None: _ssd_output(o) is not None, _ssd_decode),
    PostProcessor("ultraface", "detect", "scores [1, N, C] + box offsets [1, N, 4] against generated SSD priors "
                  "(UltraFace's strides and min boxes), per-class NMS", _ultraface_accepts, _ultraface_decode,
                  options=("strides", "min_boxes", "center_variance", "size_variance", "iou")),
    PostProcessor("yolov5", "detect", "YOLOv5 grid heads [1, A*(5+C), H, W] per stride (8, 16, 32), COCO anchors, "
                  "or the export's decoded [1, N, 5+C]",
                  _yolov5_accepts, _yolov5_decode, options=("strides", "anchors", "classes", "objectness", "sigmoid",
                                                            "iou", "max_detections", "label_offset")),
    PostProcessor("yolox", "detect", "YOLOX heads [1, 5+C, H, W] per stride (8, 16, 32), or their [1, N, 5+C]",
                  _yolox_accepts, _yolox_decode, options=("strides", "classes", "objectness", "sigmoid", "iou",
                                                          "max_detections", "label_offset")),
    PostProcessor("yolov8", "detect", "YOLOv8/YOLO11 export [1, 4+C, N]: boxes in pixels, class scores, strides "
                  "(8, 16, 32)", _yolov8_accepts, _yolov8_decode,
                  options=("strides", "classes", "sigmoid", "iou", "max_detections", "label_offset")),
    PostProcessor("classify", "classify", "top-k classes of the first output",
                  lambda o, opts=None: bool(o), _classify_decode, options=("k",)),
    PostProcessor("segment", "segment", "per-pixel argmax over the channels of the first output (one channel: "
                  "the classes already)",
                  lambda o, opts=None: bool(o) and _first(o).ndim in (3, 4), _segment_decode),
)


def registry(plugins=None) -> dict[str, PostProcessor]:
    """Builtin post-processors and those of installed plugins (``tidlc_postprocessors``), by name."""
    table = {p.name: p for p in BUILTIN}
    if plugins is None:
        return table
    for impl in plugins.hook.tidlc_postprocessors.get_hookimpls():
        for item in impl.function() or ():
            if not isinstance(item, PostProcessor):
                raise TidlcError(f"plugin '{impl.plugin_name}': tidlc_postprocessors returned {type(item).__name__}, "
                                 "expected a tidlc.decoders.PostProcessor", code="plugin")
            if item.name in table:
                raise TidlcError(f"post-processor '{item.name}' is provided twice", code="plugin",
                                 hint=f"block one with -p no:{impl.plugin_name}")
            table[item.name] = attrs.evolve(item, plugin=impl.plugin_name)
    return table


def split_spec(spec: str) -> tuple[str, dict]:
    """``"yolov5{classes=80,strides=[8,16,32]}"`` -> ``("yolov5", {"classes": 80, "strides": [8, 16, 32]})``:
    tidlc's pass-option syntax; a value is JSON when it parses (numbers, lists, true/false), else text."""
    spec = spec.strip()
    name, brace, rest = spec.partition("{")
    if not brace:
        return spec, {}
    if not rest.endswith("}"):
        raise TidlcError(f"decoder {spec!r}: missing the closing '}}'", hint="NAME{option=value,...}", code="option")
    items, depth, current = [], 0, ""
    for ch in rest[:-1]:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    options = {}
    for item in filter(None, (i.strip() for i in items)):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise TidlcError(f"decoder option {item!r} in {name.strip()!r} needs a value",
                             hint="NAME{option=value,...}", code="option")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value.strip()
    return name.strip(), options


def _with_options(processor: PostProcessor, given: dict) -> PostProcessor:
    """``processor`` with the options of its spec checked and laid over the caller's."""
    unknown = sorted(set(given) - set(processor.options))
    if unknown:
        import difflib
        close = difflib.get_close_matches(unknown[0], processor.options, 1)
        raise TidlcError(f"decoder {processor.name}: unknown option {unknown[0]!r}",
                         hint=(f"did you mean {close[0]!r}? " if close else "") +
                         f"it takes {', '.join(processor.options) or 'no options'}", code="option")
    if not given:
        return processor
    base_accepts, base_decode = processor.accepts, processor.decode
    return attrs.evolve(processor, accepts=lambda outputs, options=None: base_accepts(outputs, {**(options or {}),
                                                                                               **given}),
                        decode=lambda outputs, options: base_decode(outputs, {**options, **given}))


def task_of(spec: str, plugins=None) -> str:
    """The task of ``--post SPEC`` (a task name, or a post-processor's name with options)."""
    name, given = split_spec(spec)
    if name in TASKS and not given:
        return name
    table = registry(plugins)
    if name not in table:
        raise TidlcError(f"unknown --post {name!r}", hint=f"one of {', '.join(dict.fromkeys([*TASKS, *table]))}",
                         code="option")
    _with_options(table[name], given)
    return table[name].task


def pick(name: str, outputs, options: dict, plugins=None) -> PostProcessor:
    """The post-processor ``--post NAME`` means: a name (with options: :func:`split_spec`), or a task
    (the first that accepts the outputs)."""
    table = registry(plugins)
    name, given = split_spec(name)
    if name in table:
        return _with_options(table[name], given)
    if name in TASKS and given:
        raise TidlcError(f"--post {name}: options go with a decoder's name, not a task's",
                         hint=f"e.g. {next((p.name for p in table.values() if p.task == name), name)}"
                              f"{{{','.join(f'{k}={v}' for k, v in given.items())}}}", code="option")
    if name in TASKS:
        for p in table.values():
            if p.task == name and p.accepts(outputs, options):
                return p
        names = "; ".join(f"{p.name}: {p.summary}" for p in table.values() if p.task == name)
        raise TidlcError(f"--post {name}: no {name} decoder fits these outputs "
                         f"({', '.join(f'{k} {list(np.shape(v))}' for k, v in outputs.items())})",
                         hint=f"{name} decoders: {names}; a plugin adds more (tidlc_postprocessors)", code="input")
    raise TidlcError(f"unknown --post {name!r}", hint=f"one of {', '.join(dict.fromkeys([*TASKS, *table]))}",
                     code="option")
