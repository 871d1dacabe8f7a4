"""``tidlc eval --plot FILE.png``: each precision's per-class (or per-image) change from float.

Draws a ``tidlc.eval/1`` document's ``breakdown``: grouped bars, one group per class (classify:
top-1 accuracy; segment: IoU; detect: AP) or per image (detect without labels: F1 of the boxes
against float's), one bar per quantized precision, the height being its value minus float's. With
many keys only the ones that move most are drawn (the title says how many of how many). Rendered
with matplotlib's Agg backend and written atomically (a failed run leaves no half-written PNG).
"""
from __future__ import annotations

import os

from tidlc.diagnostics import TidlcError

MAX_KEYS = 40
_LABELS = {"accuracy": "top-1 accuracy", "agreement": "top-1 agreement with float", "iou": "IoU",
           "iou_vs_float": "IoU against float", "ap": "AP@[.5:.95]", "f1_vs_float": "F1 of the boxes against float"}


def check_path(path: str) -> None:
    """Fail early (before the evaluation) on a --plot path that cannot work."""
    if not path.lower().endswith(".png"):
        raise TidlcError(f"--plot {path}: expected a .png file name", hint="e.g. --plot deltas.png", code="option")
    parent = os.path.dirname(os.path.abspath(path))
    probe = parent
    while probe and not os.path.exists(probe):  # the nearest existing ancestor must be a folder
        probe = os.path.dirname(probe)
    if probe and not os.path.isdir(probe):
        raise TidlcError(f"--plot {path}: {probe} is not a folder", path, code="output")
    if os.path.isdir(path):
        raise TidlcError(f"--plot {path}: is a folder", path, hint="give a file name ending in .png", code="output")
    _pyplot()


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TidlcError("--plot needs matplotlib", hint='pip install "tidlc[plot]"', code="unsupported") from None
    return plt


def deltas(doc: dict) -> tuple[list[str], dict[str, list[float]], bool]:
    """(keys, per quantized precision its deltas to float per key (NaN where either is missing), whether
    these are deltas) of the document's breakdown; without a float row, the values themselves."""
    breakdown = doc.get("breakdown") or {}
    keys, values = list(breakdown.get("keys", [])), breakdown.get("values", {})
    base = values.get("float")
    out = {}
    for precision, vals in values.items():
        if precision == "float" and base is not None:
            continue
        out[precision] = [float("nan") if v is None or (base is not None and base[i] is None)
                          else v - (base[i] if base is not None else 0.0) for i, v in enumerate(vals)]
    return keys, out, base is not None


def plot(doc: dict, path: str) -> None:
    import math

    import numpy as np

    from tidlc.fileio import atomic_write
    check_path(path)
    plt = _pyplot()
    keys, series, relative = deltas(doc)
    breakdown = doc.get("breakdown") or {}
    what = _LABELS.get(breakdown.get("metric"), breakdown.get("metric", "metric"))
    by = breakdown.get("by", "class")
    shown = list(range(len(keys)))
    if len(keys) > MAX_KEYS:  # the keys that move most, in their original order
        swing = [max((abs(s[i]) for s in series.values() if not math.isnan(s[i])), default=0.0)
                 for i in range(len(keys))]
        shown = sorted(sorted(range(len(keys)), key=lambda i: (-swing[i], i))[:MAX_KEYS])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * len(shown) * max(1, len(series)) + 2), 4.0))
    width = 0.8 / max(1, len(series))
    for n, (precision, vals) in enumerate(series.items()):
        heights = [0.0 if math.isnan(vals[i]) else 100 * vals[i] for i in shown]
        label = precision if precision == "float" else f"{precision}-bit"
        ax.bar(np.arange(len(shown)) + (n - (len(series) - 1) / 2) * width, heights, width, label=label)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels([keys[i] for i in shown], rotation=90 if len(shown) > 12 else 0, fontsize=7)
    ax.set_xlabel(by)
    ax.set_ylabel(f"{what}, {'change from float' if relative else 'value'} (points)")
    plural = {"class": "classes", "image": "images"}.get(by, by)
    subset = f" ({len(shown)} of {len(keys)} {plural} that move most)" if len(shown) < len(keys) else ""
    ax.set_title(f"{os.path.basename(str(doc.get('model', '')))}: {doc.get('task', '')} per {by}{subset}",
                 fontsize=9)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_write(path) as fh:
            fig.savefig(fh, format="png", dpi=110)
    finally:
        plt.close(fig)
