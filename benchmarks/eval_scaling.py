"""Scaling of ``tidlc eval``: frames/s with 1 and 2 local workers and on a local Ray, in one run.

The data is real and labeled: scikit-learn's 1,797 handwritten digits (8x8,
0..16), drawn MNIST-style as 28x28 PNGs (the digit scaled to 20x20 and
centred, as tests/test_eval.py does), through the trained LeNet of the shared
corpus (``caffe/lenet_mnist``), at float, 8 and 16 bits, calibrated on the
first 32 digits. Every kernel runs on one thread (the integer kernels and
numpy's BLAS: ``TIDLC_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and
``OMP_NUM_THREADS`` are 1 before numpy loads), so the 2-worker run uses the
two cores through processes only.

Each configuration runs ``tidlc.evaluate.evaluate`` end to end (load, quantize
once, run every frame at each precision, score) after one warm-up on a few
frames (which also starts the Ray workers); frames/s = frames / wall seconds
of the best of ``--repeat`` runs (the configurations take turns, so a busy
spell of the machine does not hit one alone). Printed: frames/s per
configuration and the CPU seconds this process and its forked workers used
(the same CPU in less wall time is the split working; on a machine busy with
other work, wall time cannot show it), the 2-workers / 1-worker ratio
(target >= 1.7 on an otherwise idle 2-core machine), Ray's added time per
frame over the 2 local workers (same number of CPUs), whether the metrics
(top-1, top-5, agreement, SNR) of every run are identical (they must be), and
the load average.

    pip install ".[test]" && python benchmarks/eval_scaling.py [--frames N] [--json]
"""
from __future__ import annotations

import os

for _name in ("TIDLC_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"  # before numpy loads: one kernel thread per process

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

LENET = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "caffe" / "lenet_mnist"


def digits_listing(folder: Path) -> Path:
    """scikit-learn's digits as 28x28 PNGs and a 'path label' list (as tests/test_eval.py makes them)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    try:
        from test_eval import digits_listing as write
    finally:
        sys.path.pop(0)
    return write(folder)


def _cpu_seconds() -> float:
    import resource
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, help="the first N digits only (default all 1,797)")
    parser.add_argument("--model-dir", default=str(LENET), help="the lenet_mnist folder (default: the shared corpus)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per configuration; the best counts")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    from tidlc.config import CompileOptions
    from tidlc.evaluate import evaluate
    from tidlc.parallel import Executor

    model_dir = Path(args.model_dir)
    model = str(model_dir / "mnist_deploy.prototxt")
    if not os.path.isfile(model):
        print(f"error: no LeNet at {model_dir} (--model-dir)", file=sys.stderr)
        return 2
    use_ray = not args.no_ray
    if use_ray:
        try:
            import ray
        except ImportError:
            print('note: Ray is not installed (pip install "tidlc[ray]"): skipping the Ray run', file=sys.stderr)
            use_ray = False
    with tempfile.TemporaryDirectory() as tmp:
        listing = str(digits_listing(Path(tmp)))
        options = CompileOptions.of(weights=str(model_dir / "lenet_iter_10000.caffemodel"), scale=(0.00390625,),
                                    calib=listing, calib_frames=32)
        runs = [("1 worker", 1, None), ("2 workers", 2, None)] + ([("Ray (2 CPUs)", 2, "local")] if use_ray else [])
        if use_ray:
            Executor(2, "local").slots()  # start the local Ray outside the timings
        best: dict = {}
        every_run: list = []  # the metrics of every timed run, all of which must be equal
        cpu_used: dict = {}  # CPU seconds of this process and its (forked) workers per run
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for label, workers, ray in runs:
                evaluate(model, listing, options, frames=16, workers=workers, ray=ray)  # warm-up
            for _ in range(max(1, args.repeat)):  # interleaved: a busy spell of the machine hits every run alike
                for label, workers, ray in runs:
                    cpu = _cpu_seconds()
                    start = time.perf_counter()
                    result = evaluate(model, listing, options, frames=args.frames, workers=workers, ray=ray)
                    seconds = time.perf_counter() - start
                    cpu_used.setdefault(label, []).append(_cpu_seconds() - cpu)
                    every_run.append([{k: v for k, v in r.items() if k != "fps"} for r in result.to_dict()["rows"]])
                    if label not in best or seconds < best[label][0]:
                        best[label] = (seconds, result)
        results = {}
        for label, workers, ray in runs:
            seconds, result = best[label]
            frames = result.rows[0].frames
            results[label] = {"workers": workers, "ray": ray, "frames": frames, "seconds": round(seconds, 3),
                              "fps": round(frames / seconds, 1),
                              # Ray's workers are not this process's children: their CPU is not counted
                              "cpu_seconds": None if ray else round(min(cpu_used[label]), 3),
                              "metrics": [{k: v for k, v in r.items() if k != "fps"} for r in result.to_dict()["rows"]]}
        if use_ray:
            import ray
            ray.shutdown()
    one, two = results["1 worker"], results["2 workers"]
    doc = {"schema": "tidlc.bench.eval_scaling/1", "model": "caffe/lenet_mnist", "data": "sklearn digits 28x28",
           "precisions": ["float", "8", "16"], "frames": one["frames"], "cpus": os.cpu_count(),
           "runs": results, "speedup_2_workers": round(two["fps"] / one["fps"], 3),
           "identical_metrics": all(m == one["metrics"] for m in every_run),
           "load_average": [round(x, 2) for x in os.getloadavg()]}  # other work on the machine skews the ratio
    if use_ray:
        r = results["Ray (2 CPUs)"]
        doc["ray_overhead_ms_per_frame"] = round(1000 * (r["seconds"] - two["seconds"]) / r["frames"], 3)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        metrics = {m["precision"]: m for m in one["metrics"]}
        print(f"tidlc eval: LeNet on {doc['frames']} sklearn digits at float/8/16 bits, one kernel thread per process, "
              f"{doc['cpus']} CPUs")
        print(f"  top-1: float {metrics['float']['top1']:.4f}, 8-bit {metrics['8']['top1']:.4f}, "
              f"16-bit {metrics['16']['top1']:.4f}")
        print(f"  {'run':<14} {'seconds':>8} {'frames/s':>9} {'CPU s':>7}")
        for label, r in results.items():
            cpu = "-" if r["cpu_seconds"] is None else f"{r['cpu_seconds']:.2f}"
            print(f"  {label:<14} {r['seconds']:>8.2f} {r['fps']:>9.1f} {cpu:>7}")
        print(f"  2 workers / 1 worker: {doc['speedup_2_workers']:.2f}x (target >= 1.7x)")
        if "ray_overhead_ms_per_frame" in doc:
            print(f"  Ray over 2 local workers: {doc['ray_overhead_ms_per_frame']:+.3f} ms per frame")
        print(f"  metrics identical across runs: {'yes' if doc['identical_metrics'] else 'NO'}")
        print(f"  load average at the end: {', '.join(map(str, doc['load_average']))} (other work skews the ratio)")
    return 0 if doc["identical_metrics"] else 1


if __name__ == "__main__":
    sys.exit(main())
