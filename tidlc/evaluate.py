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
    from tidlc.preprocess import IMAGE_SUFFIXES
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


def _check(precisions, task: str) -> None:
    if task not in ("classify", "detect"):
        raise TidlcError(f"--task {task}: tidlc eval scores classifiers and detectors so far",
                         hint="--task classify or --task detect", code="option")
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise TidlcError(f"--precision {','.join(unknown)}: unknown", hint="float, 8 and/or 16", code="option")


def _records(model: str, options: CompileOptions, images: list[str], precisions, plugins=None,
             progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Per precision: the per-frame top-5 classes and output SNR vs float, and the seconds the runs took.

    Quantization depends only on the model, the options and ``--calib``, never on ``images``: a
    shard of the frames run in another process gets the very same fixed-point graph."""
    from tidlc.compiler import backend_for, float_graph, plugins_for
    from tidlc.interp import Interpreter
    from tidlc.metrics import snr_db
    from tidlc.postprocess import top_k
    plugins = plugins or plugins_for(options)
    backend = backend_for(options, plugins)
    graph = float_graph(model, options, plugins)
    feeds = _frames(graph, options, images)
    interp = Interpreter(graph)
    start = time.perf_counter()
    reference = []
    for i, f in enumerate(feeds):
        reference.append(interp.run(f))
        if progress:
            progress("float", i + 1, len(feeds))
    records = {"float": ([top_k(o) for o in reference],
                         [float("inf")] * len(feeds), time.perf_counter() - start)}
    for precision in precisions:
        if precision == "float":
            continue
        q = backend.quantize(graph, options.replace(bits=int(precision), emit="bin"))
        run = backend.load(q.graph).run
        tops, snrs = [], []
        start = time.perf_counter()
        for i, (f, ref) in enumerate(zip(feeds, reference)):
            out = run(f)
            tops.append(top_k(out))
            snrs.append(min(snr_db(np.asarray(ref[k]), np.asarray(out[k])) for k in ref))
            if progress:
                progress(f"{precision}-bit", i + 1, len(feeds))
        records[precision] = (tops, snrs, time.perf_counter() - start)
    return records


def _shard(job: tuple) -> dict:
    """One worker process's share (top-level, so it pickles): one kernel thread per worker."""
    model, options, images, precisions = job
    os.environ["TIDLC_NUM_THREADS"] = "1"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the parent already warned (synthetic calibration, ...)
        return _records(model, options, images, precisions)


def shards(items: list, workers: int) -> list[list]:
    """Contiguous, deterministic shards (the first ones one longer when the count does not divide)."""
    size, extra = divmod(len(items), workers)
    out, start = [], 0
    for w in range(workers):
        end = start + size + (1 if w < extra else 0)
        out.append(items[start:end])
        start = end
    return [s for s in out if s]


def evaluate(model: str, data: str, options: CompileOptions, precisions=PRECISIONS, frames: int | None = None,
             task: str = "classify", plugins=None, progress: Callable[[str, int, int], None] | None = None,
             workers: int = 1) -> EvalResult:
    """Score ``model`` on ``data`` at each precision; ``workers`` > 1 runs contiguous shards of the
    frames in that many processes (the metrics are identical to one process: each frame's result does
    not depend on where it ran, and the shards are put back in order)."""
    _check(precisions, task)
    if workers < 1:
        raise TidlcError(f"--workers {workers}: expected at least 1", code="option")
    images, labels = dataset(data)
    if frames is not None:
        images, labels = images[:frames], (labels[:frames] if labels is not None else None)
    wall = time.perf_counter()
    if workers == 1 or len(images) < 2:
        records = _records(model, options, images, precisions, plugins, progress)
    else:
        import concurrent.futures
        import multiprocessing
        jobs = [(model, options, part, tuple(precisions)) for part in shards(images, workers)]
        # fork: the workers get this process's tidlc (spawn re-imports from sys.path, which a source
        # checkout in the working directory can shadow); spawn where fork does not exist
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with concurrent.futures.ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context(method)) as pool:
            parts = list(pool.map(_shard, jobs))
        records = {p: ([t for part in parts for t in part[p][0]], [s for part in parts for s in part[p][1]],
                       time.perf_counter() - wall) for p in parts[0]}
    ref_top = records["float"][0]
    rows = []
    for precision in precisions:
        tops, snrs, seconds = records[precision]
        top1 = top5 = None
        if labels is not None:
            top1 = float(np.mean([t[0] == y for t, y in zip(tops, labels)]))
            top5 = float(np.mean([y in t for t, y in zip(tops, labels)]))
        agreement = float(np.mean([t[0] == r[0] for t, r in zip(tops, ref_top)]))
        finite = [x for x in snrs if np.isfinite(x)]
        rows.append(Row(precision, len(tops), top1, top5, agreement,
                        float(np.mean(finite)) if finite else float("inf"), len(tops) / max(seconds, 1e-9)))
    return EvalResult(model, task, labels is not None, tuple(rows))


# ----------------------------------------------------------------------------- detection (COCO mAP)
@attrs.frozen
class DetRow:
    precision: str
    frames: int
    map: float  # mAP@[0.5:0.95]
    map50: float  # mAP@0.5
    detections: int
    fps: float


def coco_map(annotations: dict, detections: list[dict]) -> tuple[float, float]:
    """(mAP@[.5:.95], mAP@.5) of ``detections`` (COCO result dicts) by pycocotools' COCOeval."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise TidlcError("--task detect scores with pycocotools, which is not installed",
                         hint="pip install tidlc[eval]", code="unsupported") from None
    import contextlib
    import io as _io
    with contextlib.redirect_stdout(_io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = annotations
        gt.createIndex()
        if not detections:
            return 0.0, 0.0
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(max(ev.stats[0], 0.0)), float(max(ev.stats[1], 0.0))


def evaluate_detection(model: str, annotations_path: str, options: CompileOptions, precisions=PRECISIONS,
                       frames: int | None = None, decoder: str = "detect", threshold: float = 0.05,
                       plugins=None, progress: Callable[[str, int, int], None] | None = None) -> list[DetRow]:
    """mAP per precision on a COCO-format set (``images[].file_name`` relative to the JSON's folder)."""
    from tidlc.compiler import backend_for, float_graph, plugins_for
    from tidlc.decoders import pick
    from tidlc.fileio import read_text
    from tidlc.interp import Interpreter
    from tidlc.preprocess import input_specs
    _check(precisions, "detect")
    try:
        annotations = json.loads(read_text(annotations_path, "COCO annotations"))
    except json.JSONDecodeError as exc:
        raise TidlcError(f"not JSON: {exc.msg} (line {exc.lineno})", annotations_path, code="input") from None
    if not isinstance(annotations, dict) or not annotations.get("images"):
        raise TidlcError("no images in the COCO annotations", annotations_path, hint="a COCO-format JSON with "
                         "images, annotations and categories", code="input")
    base = os.path.dirname(os.path.abspath(annotations_path))
    entries = annotations["images"][:frames] if frames else annotations["images"]
    paths = [os.path.join(base, e["file_name"]) for e in entries]
    plugins = plugins or plugins_for(options)
    backend = backend_for(options, plugins)
    graph = float_graph(model, options, plugins)
    spec = input_specs(graph)[0]
    size = (spec.shape[3], spec.shape[2]) if spec.layout != "NHWC" else (spec.shape[2], spec.shape[1])
    feeds = _frames(graph, options, paths)
    dec_options = {"threshold": threshold, "input_size": size}
    rows = []
    for precision in precisions:
        run = Interpreter(graph).run if precision == "float" else \
            backend.load(backend.quantize(graph, options.replace(bits=int(precision), emit="bin")).graph).run
        results, start = [], time.perf_counter()
        for i, (entry, feed) in enumerate(zip(entries, feeds)):
            outputs = run(feed)
            boxes = pick(decoder, outputs, dec_options, plugins).decode(outputs, dec_options)
            w, h = entry["width"], entry["height"]
            for _, label, score, x0, y0, x1, y1 in boxes:
                results.append({"image_id": entry["id"], "category_id": int(label), "score": float(score),
                                "bbox": [float(x0 * w), float(y0 * h), float((x1 - x0) * w), float((y1 - y0) * h)]})
            if progress:
                progress(precision, i + 1, len(entries))
        seconds = time.perf_counter() - start
        m, m50 = coco_map({**annotations, "images": entries}, results)
        rows.append(DetRow(precision, len(entries), m, m50, len(results), len(entries) / max(seconds, 1e-9)))
    return rows


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
