"""Converters for the SSD Caffe layers: PriorBox, DetectionOutput, Normalize.

Parameters and defaults follow the SSD fork's caffe.proto (PriorBoxParameter,
DetectionOutputParameter with its NonMaximumSuppressionParameter,
NormalizeParameter). PriorBox becomes a ``prior_box`` op without operands
(its result depends only on the two bottoms' sizes); DetectionOutput becomes
one ``detection_output`` op.
"""
from __future__ import annotations

from .convert_nn import channels_of, one_bottom
from .registry import Layer, converter

CODE_TYPE = {"CORNER": 1, "CENTER_SIZE": 2, "CORNER_SIZE": 3}


def _prior_check(spec, weights=None) -> str | None:
    if len(spec.bottom) != 2:
        return f"{len(spec.bottom)} bottom(s); PriorBox takes the feature map and the image"
    p = spec.param("prior_box_param")
    if not p.get_floats("min_size"):
        return "min_size is required"
    if p.has("width") or p.has("height"):
        return "explicit prior width/height (an OpenCV extension) is not supported"
    if len(p.get_floats("variance")) not in (0, 1, 4):
        return "variance takes 1 or 4 values"
    bad = [r for r in p.get_floats("aspect_ratio") if not 0 < r < float("inf")]
    if bad:
        return f"aspect_ratio must be positive, got {bad[0]}"
    return None


def resolved_aspect_ratios(ratios: list[float], flip: bool) -> list[float]:
    """1.0 first, then each new ratio (and its inverse if ``flip``), as SSD's PriorBoxLayer."""
    out = [1.0]
    for r in ratios:
        if any(abs(r - q) < 1e-6 for q in out):
            continue
        out.append(r)
        if flip:
            out.append(1.0 / r)
    return out


@converter("PriorBox", check=_prior_check)
def prior_box(layer: Layer) -> None:
    """prior_box (folded to a constant at -O1)."""
    p = layer.param("prior_box_param")
    fh, fw = layer.shape4(0)[2:4]
    ih, iw = layer.shape4(1)[2:4]
    if p.has("img_size") or p.has("img_h") or p.has("img_w"):
        ih, iw = p.pair("img_size")
    if p.has("step") or p.has("step_h") or p.has("step_w"):
        step_h = p.get_float("step_h") if p.has("step_h") else p.get_float("step")
        step_w = p.get_float("step_w") if p.has("step_w") else p.get_float("step")
    else:
        step_h, step_w = ih / fh, iw / fw
    variances = p.get_floats("variance") or [0.1]
    if len(variances) == 1:
        variances = variances * 4
    min_sizes = p.get_floats("min_size")
    max_sizes = p.get_floats("max_size")
    if max_sizes and len(max_sizes) != len(min_sizes):
        raise layer.error(f"{len(max_sizes)} max_size values for {len(min_sizes)} min_size values")
    value = layer.op("prior_box", [], feature_size=(fh, fw), image_size=(ih, iw),
                     steps=(step_h, step_w), min_sizes=min_sizes, max_sizes=max_sizes,
                     aspect_ratios=resolved_aspect_ratios(p.get_floats("aspect_ratio"),
                                                          p.get_bool("flip", True)),
                     offset=p.get_float("offset", 0.5), clip=p.get_bool("clip", False),
                     variances=variances)
    layer.bind(value)


def _detection_check(spec, weights=None) -> str | None:
    if len(spec.bottom) != 3:
        return (f"{len(spec.bottom)} bottoms; only the SSD form (location, confidence, priors) "
                "is supported")
    p = spec.param("detection_output_param")
    if not p.has("num_classes"):
        return "num_classes is required"
    code = p.get_enum("code_type", CODE_TYPE, "CORNER")
    if code not in CODE_TYPE:
        return f"unknown code_type {code}"
    return None


@converter("DetectionOutput", check=_detection_check)
def detection_output(layer: Layer) -> None:
    """detection_output: decode + per-class NMS + keep_top_k; result [1, 1, rows, 7]."""
    p = layer.param("detection_output_param")
    nms = p.message("nms_param")
    attrs_ = {"num_classes": p.get_int("num_classes"),
                  "share_location": p.get_bool("share_location", True),
                  "background_label_id": p.get_int("background_label_id", 0),
                  "code_type": p.get_enum("code_type", CODE_TYPE, "CORNER").lower(),
                  "variance_encoded_in_target": p.get_bool("variance_encoded_in_target", False),
                  "nms_threshold": nms.get_float("nms_threshold", 0.3),
                  "top_k": nms.get_int("top_k", -1), "eta": nms.get_float("eta", 1.0),
                  "keep_top_k": p.get_int("keep_top_k", -1)}
    if p.has("confidence_threshold"):
        attrs_["confidence_threshold"] = p.get_float("confidence_threshold")
    layer.bind(layer.op("detection_output", layer.inputs, **attrs_))


@converter("Normalize", check=one_bottom)
def normalize(layer: Layer) -> None:
    """normalize: L2 over channels (or the whole sample if across_spatial), times scale."""
    p = layer.param("norm_param")
    shared = p.get_bool("channel_shared", True)
    scale = layer.blob(0, (1,) if shared else (channels_of(layer),), "gamma")
    layer.bind(layer.op("normalize", [layer.input(), layer.const(scale, "scale")],
                        across_spatial=p.get_bool("across_spatial", True),
                        eps=p.get_float("eps", 1e-10)))
