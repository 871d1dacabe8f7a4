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
SHARD_FRAMES = 512  # --workers/--ray: images per job at most (a worker holds their frames)
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
    breakdown: dict | None = None  # per class, each precision's accuracy (tidlc.evaluate_tasks.classify_breakdown)

    def to_dict(self) -> dict:
        base = next((r for r in self.rows if r.precision == "float"), None)

        def delta(r: Row, key: str):
            v, b = getattr(r, key), getattr(base, key) if base else None
            return None if v is None or b is None else round(v - b, 4)

        return {"schema": SCHEMA, "model": self.model, "task": self.task, "labeled": self.labeled,
                "rows": [{"precision": r.precision, "frames": r.frames, "top1": r.top1, "top5": r.top5,
                          "top1_delta": delta(r, "top1"), "top1_agreement": r.agreement,
                          "snr_db": None if not np.isfinite(r.snr_db) else round(r.snr_db, 2),
                          "fps": round(r.fps, 2)} for r in self.rows],
                **({"breakdown": self.breakdown} if self.breakdown else {})}


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


def eval_graph(model: str, options: CompileOptions, plugins=None):
    """The float graph eval quantizes and scores (:func:`tidlc.compiler.float_graph`), checked before
    any work: eval scores one image per inference, so a batched image input is an error."""
    from tidlc.compiler import float_graph
    from tidlc.preprocess import input_specs
    from tidlc.shapes import shape_hint
    graph = float_graph(model, options, plugins)
    for spec in input_specs(graph):
        if len(spec.shape) == 4 and spec.shape[0] > 1:  # BVLC deploy files: input_dim 10 (ten crops)
            raise TidlcError(f"the input '{spec.name}' {list(spec.shape)} takes a batch of {spec.shape[0]} images; "
                             "tidlc eval scores one image per inference", graph.attrs.get("source"),
                             hint=f"add {shape_hint(spec.name, (1, *spec.shape[1:]))}", code="input")
    return graph


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


RANGE_HINT = ("compile with --calib frames like --data's and the --mean/--scale the model was trained with "
              "(without --calib, 8 synthetic frames stand in: pixels mapped to [-1, 1] when no --mean/--scale)")


def warn_ranges(qgraphs, feeds) -> bool:
    """Warn once when the frames do not fit the ranges the fixed-point graphs' inputs were calibrated
    for (judged on the first 8 frames): their outputs then say nothing about the model. Whether it did."""
    from tidlc.metrics import InputRangeCheck
    for q in qgraphs:
        check = InputRangeCheck(q)
        for f in feeds[:8]:
            check.add(f)
        if check.warn(hint=RANGE_HINT):
            return True
    return False


def _check(precisions, task: str) -> None:
    if task not in ("classify", "detect", "segment"):
        raise TidlcError(f"--task {task}: unknown", hint="--task classify, detect or segment", code="option")
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise TidlcError(f"--precision {','.join(unknown)}: unknown", hint="float, 8 and/or 16", code="option")


def _models(model: str, options: CompileOptions, precisions, plugins=None) -> tuple:
    """(the float graph, {precision: fixed-point graph}, the backend): quantized once, here, whatever
    runs the frames (calibration statistics themselves run as ``options`` say: --workers, --ray).
    Quantization depends only on the model, the options and ``--calib``, never on the frames."""
    from tidlc.compiler import backend_for, plugins_for
    plugins = plugins or plugins_for(options)
    backend = backend_for(options, plugins)
    graph = eval_graph(model, options, plugins)
    quantized = {p: backend.quantize(graph, options.replace(bits=int(p), emit="bin")).graph
                 for p in precisions if p != "float"}
    return graph, quantized, backend


def _records(graph, quantized: dict, backend, options: CompileOptions, images: list[str],
             progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Per precision: the per-frame top-5 classes and output SNR vs float, and the seconds the runs took."""
    from tidlc.interp import Interpreter
    from tidlc.metrics import snr_db
    from tidlc.postprocess import top_k
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
    for precision, qgraph in quantized.items():
        run = backend.load(qgraph).run
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
    """One worker's contiguous share of the frames (a Ray task gets no backend object: it makes its own)."""
    graph, quantized, backend, options, images = job
    if backend is None:
        from tidlc.compiler import backend_for, plugins_for
        backend = backend_for(options, plugins_for(options))
    return _records(graph, quantized, backend, options, images)


def evaluate(model: str, data: str, options: CompileOptions, precisions=PRECISIONS, frames: int | None = None,
             task: str = "classify", plugins=None, progress: Callable[[str, int, int], None] | None = None,
             workers: int | None = None, ray: str | None = None) -> EvalResult:
    """Score ``model`` on ``data`` at each precision. ``workers`` > 1 or ``ray`` (default: the
    options' ``--workers``/``--ray``) run contiguous shards of the frames in worker processes or Ray
    tasks (tidlc.parallel); the metrics are identical to one process: each frame's result does not
    depend on where it ran, and the shards are put back in order."""
    from tidlc.parallel import Executor, chunks
    _check(precisions, task)
    executor = Executor(options.quant.workers if workers is None else workers,
                        options.quant.ray if ray is None else ray).connect()
    options = options.replace(workers=executor.workers, ray=executor.ray)  # calibration runs the same way
    images, labels = dataset(data)
    if frames is not None:
        images, labels = images[:frames], (labels[:frames] if labels is not None else None)
    graph, quantized, backend = _models(model, options, precisions, plugins)
    if quantized:
        warn_ranges(quantized.values(), _frames(graph, options, images[:8]))
    if not executor.parallel or len(images) < 2:
        records = _records(graph, quantized, backend, options, images, progress)
    else:
        slots = executor.slots()
        # one contiguous shard per worker, in pieces of at most SHARD_FRAMES images (a worker holds
        # one piece's frames at a time)
        parts = list(chunks(images, len(images), slots, SHARD_FRAMES))
        shared = backend if executor.shares_memory else None  # forked workers inherit it
        jobs = [(graph, quantized, shared, options, part) for part in parts]
        finished = []

        def done(i: int, _result) -> None:
            finished.append(len(parts[i]))
            if progress:
                progress(executor.describe(), sum(finished), len(images))

        results = executor.map(_shard, jobs, done)
        # the pieces ran ``slots`` at a time: a precision's time is its total over the workers
        workers = min(slots, len(parts))
        records = {p: ([t for part in results for t in part[p][0]], [s for part in results for s in part[p][1]],
                       sum(part[p][2] for part in results) / workers) for p in results[0]}
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
    from tidlc.evaluate_tasks import classify_breakdown
    breakdown = classify_breakdown({p: records[p][0] for p in ("float", *precisions)}, labels)
    breakdown["values"] = {p: breakdown["values"][p] for p in precisions}
    return EvalResult(model, task, labels is not None, tuple(rows), breakdown)


# ----------------------------------------------------------------------------- detection (COCO mAP)
@attrs.frozen
class DetRow:
    precision: str
    frames: int
    map: float  # mAP@[0.5:0.95]
    map50: float  # mAP@0.5
    detections: int
    fps: float
    per_class: dict = attrs.field(factory=dict)  # AP@[.5:.95] per category name (None: no ground truth)


def coco_map(annotations: dict, detections: list[dict]) -> tuple[float, float]:
    """(mAP@[.5:.95], mAP@.5) of ``detections`` (COCO result dicts) by pycocotools' COCOeval."""
    from tidlc.evaluate_tasks import coco_scores
    return coco_scores(annotations, detections)[:2]


def evaluate_detection(model: str, annotations_path: str, options: CompileOptions, precisions=PRECISIONS,
                       frames: int | None = None, decoder: str = "detect", threshold: float = 0.05,
                       plugins=None, progress: Callable[[str, int, int], None] | None = None) -> list[DetRow]:
    """mAP per precision on a COCO-format set (``images[].file_name`` relative to the JSON's folder)."""
    from tidlc.compiler import backend_for, plugins_for
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
    graph = eval_graph(model, options, plugins)
    spec = input_specs(graph)[0]
    size = (spec.shape[3], spec.shape[2]) if spec.layout != "NHWC" else (spec.shape[2], spec.shape[1])
    feeds = _frames(graph, options, paths)
    dec_options = {"threshold": threshold, "input_size": size}
    rows, warned = [], False
    for precision in precisions:
        if precision == "float":
            run = Interpreter(graph).run
        else:
            qgraph = backend.quantize(graph, options.replace(bits=int(precision), emit="bin")).graph
            warned = warned or warn_ranges([qgraph], feeds)
            run = backend.load(qgraph).run
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
        from tidlc.evaluate_tasks import coco_scores
        m, m50, per_class = coco_scores({**annotations, "images": entries}, results)
        rows.append(DetRow(precision, len(entries), m, m50, len(results), len(entries) / max(seconds, 1e-9),
                           per_class))
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
