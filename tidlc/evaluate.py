"""``tidlc eval``: accuracy on labeled data, float against each precision, side by side.

Data (docs/eval.md): a list file of ``path label`` lines (the calibration
list format), or an ImageNet-style folder of class folders (labels are the
sorted folder names' indices), or unlabeled images (a folder, a list without
labels). Frames are pre-processed as ``tidlc compile`` does (``--mean``,
``--scale``, ``--resize``, ``--crop``, ``--channel-order``).

For each precision the float graph is quantized through the backend
(``Backend.quantize``, calibrated on ``--calib`` data, else on synthetic
frames with a warning: never on the evaluation frames) and run through
``Backend.load(...).run``. Reported per precision: top-1 / top-5 accuracy
(with labels) and their change from float, top-1 agreement with float, the
mean SNR of the outputs against float, and frames per second of the host
emulation.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable

import attrs
import numpy as np

from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError

SCHEMA = "tidlc.eval/1"
PRECISIONS = ("float", "8", "16")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


@attrs.frozen
class Row:
    precision: str
    frames: int
    top1: float | None  # None without labels
    top5: float | None
    agreement: float  # top-1 equal to float's
    snr_db: float  # mean over frames of the worst output's SNR vs float (inf for float itself)
    fps: float


@attrs.frozen
class EvalResult:
    model: str
    task: str
    labeled: bool
    rows: tuple[Row, ...]

    def to_dict(self) -> dict:
        base = next((r for r in self.rows if r.precision == "float"), None)

        def delta(r: Row, key: str):
            v, b = getattr(r, key), getattr(base, key) if base else None
            return None if v is None or b is None else round(v - b, 4)

        return {"schema": SCHEMA, "model": self.model, "task": self.task, "labeled": self.labeled,
                "rows": [{"precision": r.precision, "frames": r.frames, "top1": r.top1, "top5": r.top5,
                          "top1_delta": delta(r, "top1"), "top1_agreement": r.agreement,
                          "snr_db": None if not np.isfinite(r.snr_db) else round(r.snr_db, 2),
                          "fps": round(r.fps, 2)} for r in self.rows]}


def dataset(path: str) -> tuple[list[str], list[int] | None]:
    """(image paths, labels or None) of ``--data``."""
    from tidlc.postprocess import read_labels
    if os.path.isdir(path):
        entries = sorted(os.listdir(path))
        classes = [e for e in entries if os.path.isdir(os.path.join(path, e))]
        if classes:  # ImageNet style: one folder per class
            images, labels = [], []
            for index, name in enumerate(classes):
                folder = os.path.join(path, name)
                for f in sorted(os.listdir(folder)):
                    if f.lower().endswith(IMAGE_SUFFIXES):
                        images.append(os.path.join(folder, f))
                        labels.append(index)
            if not images:
                raise TidlcError("the class folders hold no images", path, code="input")
            return images, labels
        images = [os.path.join(path, e) for e in entries if e.lower().endswith(IMAGE_SUFFIXES)]
        if not images:
            raise TidlcError("no images in the folder", path, hint="a folder of images, of class folders, or "
                             "a list file of 'path label' lines", code="input")
        return images, None
    try:
        pairs = read_labels(path)
        return [p for p, _ in pairs], [label for _, label in pairs]
    except TidlcError:
        pass  # a list without labels
    from tidlc.fileio import read_text
    base = os.path.dirname(os.path.abspath(path))
    images = [os.path.join(base, line.split()[0]) for line in read_text(path, "data list file").splitlines()
              if line.strip() and not line.startswith("#")]
    if not images:
        raise TidlcError("the list file names no images", path, code="input")
    return images, None


def _frames(graph, options: CompileOptions, images: list[str]):
    from tidlc.preprocess import FrameSource, Preprocess, input_specs
    with tempfile.TemporaryDirectory() as tmp:
        listing = os.path.join(tmp, "data.txt")
        with open(listing, "w") as fh:
            fh.write("\n".join(os.path.abspath(p) for p in images) + "\n")
        pre = options.preprocess
        source = FrameSource(listing, input_specs(graph), Preprocess(mean=pre.mean, scale=pre.scale, resize=pre.resize,
                                                                     crop=pre.crop, channel_order=pre.channel_order),
                             limit=len(images))
        return list(source)


def _scores(outputs: dict) -> np.ndarray:
    first = next(iter(outputs.values()))
    return np.asarray(first, np.float64).reshape(-1)


def evaluate(model: str, data: str, options: CompileOptions, precisions=PRECISIONS, frames: int | None = None,
             task: str = "classify", plugins=None, progress: Callable[[str, int, int], None] | None = None
             ) -> EvalResult:
    from tidlc.compiler import backend_for, load, optimize, plugins_for
    from tidlc.interp import Interpreter
    from tidlc.metrics import snr_db
    if task != "classify":
        raise TidlcError(f"--task {task}: tidlc eval scores classifiers so far", hint="--task classify", code="option")
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise TidlcError(f"--precision {','.join(unknown)}: unknown", hint="float, 8 and/or 16", code="option")
    plugins = plugins or plugins_for(options)
    backend = backend_for(options, plugins)
    images, labels = dataset(data)
    if frames is not None:
        images, labels = images[:frames], (labels[:frames] if labels is not None else None)
    float_options = options.replace(emit="ir", quantize=False)
    graph = load(model, float_options, plugins)
    optimize(graph, float_options, plugins)
    feeds = _frames(graph, options, images)
    interp = Interpreter(graph)
    start = time.perf_counter()
    reference = []
    for i, f in enumerate(feeds):
        reference.append(interp.run(f))
        if progress:
            progress("float", i + 1, len(feeds))
    float_seconds = time.perf_counter() - start
    ref_top = [np.argsort(-_scores(o), kind="stable")[:5] for o in reference]
    rows = []
    for precision in precisions:
        if precision == "float":
            tops, snrs, seconds = ref_top, [float("inf")] * len(feeds), float_seconds
        else:
            q = backend.quantize(graph, options.replace(bits=int(precision), emit="bin"))
            run = backend.load(q.graph).run
            tops, snrs = [], []
            start = time.perf_counter()
            for i, (f, ref) in enumerate(zip(feeds, reference)):
                out = run(f)
                tops.append(np.argsort(-_scores(out), kind="stable")[:5])
                snrs.append(min(snr_db(np.asarray(ref[k]), np.asarray(out[k])) for k in ref))
                if progress:
                    progress(f"{precision}-bit", i + 1, len(feeds))
            seconds = time.perf_counter() - start
        top1 = top5 = None
        if labels is not None:
            top1 = float(np.mean([t[0] == y for t, y in zip(tops, labels)]))
            top5 = float(np.mean([y in t for t, y in zip(tops, labels)]))
        agreement = float(np.mean([t[0] == r[0] for t, r in zip(tops, ref_top)]))
        finite = [s for s in snrs if np.isfinite(s)]
        rows.append(Row(precision, len(feeds), top1, top5, agreement,
                        float(np.mean(finite)) if finite else float("inf"), len(feeds) / max(seconds, 1e-9)))
    return EvalResult(model, task, labels is not None, tuple(rows))


def render_text(result: EvalResult) -> str:
    doc = result.to_dict()
    head = f"{'precision':<10} {'frames':>6} {'top-1':>7} {'top-5':>7} {'d top-1':>8} {'agree':>6} {'SNR dB':>7} {'fps':>8}"
    lines = [f"{result.model}: {result.task}, {'labeled' if result.labeled else 'unlabeled (agreement with float)'}",
             "", head, "-" * len(head)]

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}"

    for r in doc["rows"]:
        delta = "-" if r["top1_delta"] is None else f"{100 * r['top1_delta']:+.2f}"
        snr = "-" if r["snr_db"] is None else f"{r['snr_db']:.1f}"
        lines.append(f"{r['precision']:<10} {r['frames']:>6} {pct(r['top1']):>7} {pct(r['top5']):>7} {delta:>8} "
                     f"{100 * r['top1_agreement']:>5.1f}% {snr:>7} {r['fps']:>8.1f}")
    return "\n".join(lines) + "\n"


def write_json(result: EvalResult, path: str) -> None:
    from tidlc.fileio import atomic_write
    with atomic_write(path) as fh:
        fh.write((json.dumps(result.to_dict(), indent=2) + "\n").encode())
