"""SSD-style detection ops: prior boxes, box decoding + NMS, L2 normalisation.

These follow the SSD Caffe layers (PriorBox, DetectionOutput, Normalize),
which TIDL also implements as dedicated layers:

* ``prior_box`` has no operands: its result depends only on the feature-map
  and image sizes held in its attributes, so fold-constants turns it into a
  constant at -O1 (at -O0 the interpreter computes it).
* ``detection_output`` decodes boxes against the priors, thresholds the
  class scores, runs greedy per-class NMS and keeps the best ``keep_top_k``.
  Its result has a static shape ``[1, 1, rows, 7]`` (rows of ``[image,
  label, score, xmin, ymin, xmax, ymax]``): the kept detections first, in
  Caffe's order (by label, then by descending score), then rows of zeros, as
  OpenCV pads its output.
* ``normalize`` divides by the L2 norm over the channels (or over the whole
  sample) and scales per channel.
"""
from __future__ import annotations

import numpy as np

from tidlc.ir.opdef import a_bool, a_float, a_floats, a_int, a_ints, a_str, defop, positive
from tidlc.ir.ops._common import require_rank
from tidlc.ir.types import TensorType

CODE_TYPES = ("corner", "center_size", "corner_size")


# --------------------------------------------------------------------------- prior_box
def _prior_count(a) -> int:
    others = sum(1 for r in a["aspect_ratios"] if abs(r - 1.0) >= 1e-6)
    return len(a["min_sizes"]) * (1 + others) + len(a["max_sizes"])


def _prior_box_infer(op, types):
    a = op.attrs
    if a["max_sizes"] and len(a["max_sizes"]) != len(a["min_sizes"]):
        raise ValueError(f"prior_box: {len(a['max_sizes'])} max sizes for "
                         f"{len(a['min_sizes'])} min sizes")
    for lo, hi in zip(a["min_sizes"], a["max_sizes"]):
        if hi <= lo:
            raise ValueError(f"prior_box: max size {hi} must be larger than min size {lo}")
    if len(a["variances"]) != 4:
        raise ValueError(f"prior_box needs 4 variances, got {len(a['variances'])}")
    h, w = a["feature_size"]
    return [TensorType((1, 2, h * w * _prior_count(a) * 4), "f32")]


def prior_boxes(feature_size, image_size, steps, min_sizes, max_sizes=(), aspect_ratios=(1.0,),
                offset=0.5, clip=False, variances=(0.1, 0.1, 0.1, 0.1)) -> np.ndarray:
    """SSD priors (1, 2, H*W*P*4): boxes (xmin, ymin, xmax, ymax) / image size, then variances.

    Per position and per min size the order is: the square min box, the square
    sqrt(min*max) box (if a max size is given), then one box per aspect ratio != 1.
    """
    (fh, fw), (ih, iw), (step_h, step_w) = feature_size, image_size, steps
    sizes = []  # (box_w, box_h) per prior, in output order
    for k, m in enumerate(min_sizes):
        sizes.append((m, m))
        if max_sizes:
            s = np.sqrt(m * max_sizes[k])
            sizes.append((s, s))
        for r in aspect_ratios:
            if abs(r - 1.0) >= 1e-6:
                sizes.append((m * np.sqrt(r), m / np.sqrt(r)))
    half = np.asarray(sizes, dtype=np.float64) / 2.0  # (P, 2)
    cy, cx = np.meshgrid((np.arange(fh) + offset) * step_h, (np.arange(fw) + offset) * step_w,
                         indexing="ij")
    cx = cx.reshape(-1, 1)
    cy = cy.reshape(-1, 1)
    boxes = np.stack([(cx - half[:, 0]) / iw, (cy - half[:, 1]) / ih,
                      (cx + half[:, 0]) / iw, (cy + half[:, 1]) / ih], axis=-1)  # (H*W, P, 4)
    if clip:
        boxes = np.clip(boxes, 0.0, 1.0)
    boxes = boxes.astype(np.float32).reshape(-1)
    var = np.tile(np.asarray(variances, np.float32), boxes.size // 4)
    return np.stack([boxes, var])[None]


def _prior_box_compute(op):
    a = op.attrs
    return prior_boxes(a["feature_size"], a["image_size"], a["steps"], a["min_sizes"],
                       a["max_sizes"], a["aspect_ratios"], a["offset"], a["clip"], a["variances"])


defop("prior_box", (),
      {"feature_size": a_ints(length=2, check=positive, doc="(H, W) of the feature map"),
       "image_size": a_ints(length=2, check=positive, doc="(H, W) of the image"),
       "steps": a_floats(length=2, check=positive, doc="(step_h, step_w) in image pixels"),
       "min_sizes": a_floats(check=positive), "max_sizes": a_floats(()),
       "aspect_ratios": a_floats((1.0,), check=positive, doc="resolved ratios, flips included"),
       "offset": a_float(0.5), "clip": a_bool(False),
       "variances": a_floats((0.1, 0.1, 0.1, 0.1), length=4)},
      infer=_prior_box_infer, compute=_prior_box_compute, category="detection",
      doc="SSD prior boxes of one feature map (sizes only: folded to a constant at -O1).")


# --------------------------------------------------------------------------- detection_output
def _det_layout(op, types):
    """(batch, priors, location classes, output rows) from the operand types; checks them."""
    loc, conf, prior = types
    a = op.attrs
    for t, what in ((loc, "location"), (conf, "confidence"), (prior, "prior")):
        if not t.is_static:
            raise ValueError(f"detection_output: {what} input needs a static shape, got {t}")
    if len(prior.shape) != 3 or prior.shape[0] != 1 or prior.shape[2] % 4:
        raise ValueError(f"detection_output priors must be [1, 1 or 2, P*4], got {prior.shape}")
    want_rows = 1 if a["variance_encoded_in_target"] else 2
    if prior.shape[1] != want_rows:
        raise ValueError(f"detection_output priors have {prior.shape[1]} rows, expected "
                         f"{want_rows} "
                         "(boxes, then variances unless they are encoded in the target)")
    priors = prior.shape[2] // 4
    batch = loc.shape[0]
    classes = a["num_classes"]
    loc_classes = 1 if a["share_location"] else classes
    if conf.shape[0] != batch:
        raise ValueError(f"detection_output: batch {conf.shape[0]} of the scores != "
                         f"{batch} of the boxes")
    if int(np.prod(loc.shape[1:])) != priors * loc_classes * 4:
        raise ValueError(f"detection_output: location input {loc.shape} does not hold "
                         f"{priors} priors x {loc_classes} x 4 values")
    if int(np.prod(conf.shape[1:])) != priors * classes:
        raise ValueError(f"detection_output: confidence input {conf.shape} does not hold "
                         f"{priors} priors x {classes} classes")
    targets = classes - (1 if 0 <= a["background_label_id"] < classes else 0)
    per_class = priors if a["top_k"] < 0 else min(a["top_k"], priors)
    rows = a["keep_top_k"] if a["keep_top_k"] >= 0 else per_class * targets
    return batch, priors, loc_classes, max(rows, 1)


def _det_infer(op, types):
    if op.attrs["code_type"] not in CODE_TYPES:
        raise ValueError(f"unknown code_type {op.attrs['code_type']!r}")
    batch, _, _, rows = _det_layout(op, types)
    return [TensorType((1, 1, rows * batch, 7), types[1].dtype)]


def decode_boxes(loc: np.ndarray, priors: np.ndarray, variances, code_type: str) -> np.ndarray:
    """Box regression -> corner boxes. ``loc``/``priors`` (..., 4); ``variances`` (P, 4) or None
    (variance encoded in the target)."""
    d = loc.astype(np.float64) if variances is None else loc.astype(np.float64) * variances
    p = priors.astype(np.float64)
    pw, ph = p[..., 2] - p[..., 0], p[..., 3] - p[..., 1]
    if code_type == "corner":
        out = p + d
    elif code_type == "corner_size":
        out = p + d * np.stack([pw, ph, pw, ph], axis=-1)
    else:  # center_size
        cx = p[..., 0] + pw * 0.5 + d[..., 0] * pw
        cy = p[..., 1] + ph * 0.5 + d[..., 1] * ph
        w = np.exp(d[..., 2]) * pw
        h = np.exp(d[..., 3]) * ph
        out = np.stack([cx - w * 0.5, cy - h * 0.5, cx + w * 0.5, cy + h * 0.5], axis=-1)
    return out


def _area(b: np.ndarray) -> np.ndarray:
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    return np.where((w < 0) | (h < 0), 0.0, w * h)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Jaccard overlap of one box with many (normalised coordinates, no +1)."""
    inter = np.concatenate([np.maximum(box[:2], boxes[:, :2]),
                            np.minimum(box[2:], boxes[:, 2:])], axis=1)
    inter_area = _area(inter)
    union = _area(box) + _area(boxes) - inter_area
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter_area > 0, inter_area / union, 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, iou_threshold: float,
        top_k: int = -1, eta: float = 1.0) -> list[int]:
    """Greedy NMS as SSD's ApplyNMSFast: candidates above the threshold by descending score
    (stable), at most ``top_k`` of them; a box is kept if it overlaps no kept box by more than
    the (adaptive) threshold."""
    cand = np.flatnonzero(scores > score_threshold)
    cand = cand[np.argsort(-scores[cand], kind="stable")]
    if top_k > -1:
        cand = cand[:top_k]
    kept: list[int] = []
    threshold = iou_threshold
    for i in cand:
        if not kept or np.all(iou(boxes[i], boxes[kept]) <= threshold):
            kept.append(int(i))
            if eta < 1.0 and threshold > 0.5:
                threshold *= eta
    return kept


def detection_output_ref(loc, conf, prior, num_classes, share_location=True, background_label_id=0,
                         code_type="center_size", variance_encoded_in_target=False,
                         nms_threshold=0.45, top_k=-1, keep_top_k=-1, confidence_threshold=-np.inf,
                         eta=1.0, rows=None) -> np.ndarray:
    batch = loc.shape[0]
    priors = prior.shape[2] // 4
    loc_classes = 1 if share_location else num_classes
    prior_boxes_ = prior[0, 0].reshape(priors, 4)
    variances = (None if variance_encoded_in_target
                 else prior[0, 1].reshape(priors, 4).astype(np.float64))
    found = []
    for n in range(batch):
        boxes = decode_boxes(loc[n].reshape(priors, loc_classes, 4),
                             prior_boxes_[:, None, :],
                             None if variances is None else variances[:, None, :], code_type)
        scores = conf[n].reshape(priors, num_classes)
        picked: dict[int, list[int]] = {}
        for c in range(num_classes):
            if c == background_label_id:
                continue
            b = boxes[:, 0 if share_location else c]
            picked[c] = nms(b, scores[:, c], confidence_threshold, nms_threshold, top_k, eta)
        total = sum(len(v) for v in picked.values())
        if keep_top_k > -1 and total > keep_top_k:
            flat = [(c, i) for c, idx in picked.items() for i in idx]
            flat_scores = np.array([scores[i, c] for c, i in flat])
            best = np.argsort(-flat_scores, kind="stable")[:keep_top_k]
            picked = {}
            for j in best:
                c, i = flat[j]
                picked.setdefault(c, []).append(i)
        for c in sorted(picked):
            b = boxes[:, 0 if share_location else c]
            for i in picked[c]:
                found.append([n, c, scores[i, c], *b[i]])
    rows = rows if rows is not None else max(len(found), 1)
    out = np.zeros((1, 1, rows, 7), dtype=conf.dtype)
    if found:
        out[0, 0, :len(found)] = np.asarray(found[:rows], dtype=np.float64)
    return out


def _det_compute(op, loc, conf, prior):
    a = op.attrs
    rows = op.results[0].type.shape[2] if op.results[0].type.is_static else None
    return detection_output_ref(loc, conf, prior, a["num_classes"], a["share_location"],
                                a["background_label_id"], a["code_type"],
                                a["variance_encoded_in_target"], a["nms_threshold"], a["top_k"],
                                a["keep_top_k"], a["confidence_threshold"], a["eta"], rows)


defop("detection_output", ("loc", "conf", "priors"),
      {"num_classes": a_int(check=positive), "share_location": a_bool(True),
       "background_label_id": a_int(0), "code_type": a_str("center_size", choices=CODE_TYPES),
       "variance_encoded_in_target": a_bool(False), "nms_threshold": a_float(0.3),
       "top_k": a_int(-1), "keep_top_k": a_int(-1), "confidence_threshold": a_float(-np.inf),
       "eta": a_float(1.0)},
      infer=_det_infer, compute=_det_compute, foldable=False, category="detection",
      doc="SSD box decoding + per-class NMS -> [1, 1, rows, 7]: the kept rows, then zero rows.")


# --------------------------------------------------------------------------- normalize
def _normalize_infer(op, types):
    x, scale = types
    require_rank(x, 4, "normalize input")
    if x.shape is not None and x.shape[1] is not None and scale.shape is not None:
        n = int(np.prod(scale.shape))
        if n not in (1, x.shape[1]):
            raise ValueError(f"normalize scale has {n} values for {x.shape[1]} channels")
    return [x]


def _normalize_compute(op, x, scale):
    sq = x.astype(np.float64) ** 2
    axes = (1, 2, 3) if op.attrs["across_spatial"] else (1,)
    norm = np.sqrt(sq.sum(axis=axes, keepdims=True) + op.attrs["eps"])
    s = scale.reshape(1, -1, 1, 1) if scale.size > 1 else scale.reshape(())
    return (x / norm * s).astype(x.dtype)


defop("normalize", ("x", "scale"), {"across_spatial": a_bool(True), "eps": a_float(1e-10)},
      infer=_normalize_infer, compute=_normalize_compute, category="vector",
      doc="x / sqrt(sum(x^2) + eps) * scale; the sum runs over the channels at each position, "
          "or over the whole sample if across_spatial (SSD Normalize).")
