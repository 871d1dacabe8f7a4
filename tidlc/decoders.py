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
* ``classify`` and ``segment``: the first output's top classes / per-pixel
  argmax.

``--post detect`` picks the first detector that accepts the outputs.
"""
from __future__ import annotations

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


# ----------------------------------------------------------------------------- classify / segment
def _first(outputs) -> np.ndarray:
    return np.asarray(next(iter(outputs.values())))


def _classify_decode(outputs, options: dict) -> list[int]:
    from tidlc.postprocess import top_k
    return top_k(outputs, int(options.get("k", 5)))


def _segment_decode(outputs, options: dict) -> np.ndarray:
    x = _first(outputs)
    return x[0].argmax(axis=0) if x.ndim == 4 else x.reshape(x.shape[-2:])


BUILTIN = (
    PostProcessor("ssd", "detect", "Caffe SSD DetectionOutput rows [1, 1, rows, 7]",
                  lambda o, opts=None: _ssd_output(o) is not None, _ssd_decode),
    PostProcessor("ultraface", "detect", "scores [1, N, C] + box offsets [1, N, 4] against generated SSD priors "
                  "(UltraFace's strides and min boxes), per-class NMS", _ultraface_accepts, _ultraface_decode),
    PostProcessor("classify", "classify", "top-k classes of the first output",
                  lambda o, opts=None: bool(o), _classify_decode),
    PostProcessor("segment", "segment", "per-pixel argmax over the channels of the first output",
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


def pick(name: str, outputs, options: dict, plugins=None) -> PostProcessor:
    """The post-processor ``--post NAME`` means: a name, or a task (the first that accepts the outputs)."""
    table = registry(plugins)
    if name in table:
        return table[name]
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
