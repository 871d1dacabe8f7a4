"""Compile speed and interpreter speed of tidlc against peers, measured in one run.

For each of the 9 real architectures shipped in the onnx wheel
(``onnx/backend/test/data/light/*.onnx``):

* tidlc: in-process ``-O2`` compile (float; import + passes + IR text and
  weights written to a temp dir);
* OpenVINO: ``openvino.convert_model(path)`` (its C++ ONNX frontend);
* onnxsim: ``onnxsim.simplify(onnx.load(path))``;
* interpreter: one forward pass of tidlc's float interpreter on the compiled
  graph vs onnxruntime (CPU, 2 intra-op threads) on the same input.

Each time is the best of ``--repeat`` runs after one warm-up. Ratios > 1 mean
tidlc is faster (peer time / tidlc time) for compile; for the interpreter the
ratio is tidlc time / onnxruntime time (target: <= 3).

    pip install ".[bench]" && python benchmarks/compile_speed.py
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

import numpy as np


def light_models() -> list[str]:
    import onnx
    folder = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    return sorted(glob.glob(os.path.join(folder, "*.onnx")))


def best_of(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", nargs="*", help="substring filter on model names")
    args = parser.parse_args(argv)

    import onnx
    import onnxruntime as ort

    from tidlc.compiler import compile_model
    from tidlc.config import CompileOptions
    from tidlc.interp import run_graph

    try:
        import openvino as ov
    except ImportError:
        ov = None
    try:
        import onnxsim
    except ImportError:
        onnxsim = None
    if ov is None or onnxsim is None:
        print("note: install the peers with pip install '.[bench]' (openvino, onnxsim)", file=sys.stderr)

    rows = []
    models = [m for m in light_models() if not args.models or any(s in m for s in args.models)]
    with tempfile.TemporaryDirectory() as tmp:
        for path in models:
            name = os.path.basename(path)[len("light_"):-len(".onnx")]
            options = CompileOptions.of(opt_level=2, emit="ir", outdir=os.path.join(tmp, name))
            t_ours = best_of(lambda: compile_model(path, options), args.repeat)
            t_ov = best_of(lambda: ov.convert_model(path), args.repeat) if ov else float("nan")
            t_sim = best_of(lambda: onnxsim.simplify(onnx.load(path)), args.repeat) if onnxsim else float("nan")

            graph = compile_model(path, CompileOptions.of(opt_level=2, emit="none")).graph
            in_op = graph.input_ops[0]
            x = np.random.default_rng(0).random(in_op.results[0].type.shape, dtype=np.float32)
            so = ort.SessionOptions()
            so.intra_op_num_threads = 2
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            feed_name = sess.get_inputs()[0].name
            t_ort = best_of(lambda: sess.run(None, {feed_name: x}), args.repeat)
            t_interp = best_of(lambda: run_graph(graph, {in_op.attrs["name"]: x}), args.repeat)
            ref = sess.run(None, {feed_name: x})[0]
            got = next(iter(run_graph(graph, {in_op.attrs["name"]: x}).values()))
            err = float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-30))
            rows.append((name, t_ours, t_ov, t_sim, t_interp, t_ort, err))
            print(f"  measured {name}", file=sys.stderr)

    head = (f"{'model':<12} {'tidlc -O2 s':>11} {'openvino s':>10} {'onnxsim s':>9} "
            f"{'vs ov':>6} {'vs sim':>7} | {'interp s':>8} {'ort s':>7} {'interp/ort':>10} {'rel err':>8}")
    print(head)
    print("-" * len(head))
    for name, t, tov, tsim, ti, to, err in rows:
        print(f"{name:<12} {t:>11.3f} {tov:>10.3f} {tsim:>9.3f} {tov / t:>5.1f}x {tsim / t:>6.1f}x | "
              f"{ti:>8.3f} {to:>7.3f} {ti / to:>9.2f}x {err:>8.1e}")
    slow_ov = [r[0] for r in rows if not r[2] / r[1] > 1]
    slow_sim = [r[0] for r in rows if not r[3] / r[1] > 1]
    slow_interp = [r[0] for r in rows if r[4] / r[5] > 3]
    print()
    print(f"faster than OpenVINO convert_model on {len(rows) - len(slow_ov)}/{len(rows)} models"
          + (f" (not: {', '.join(slow_ov)})" if slow_ov else ""))
    print(f"faster than onnxsim.simplify on {len(rows) - len(slow_sim)}/{len(rows)} models"
          + (f" (not: {', '.join(slow_sim)})" if slow_sim else ""))
    print(f"interpreter within 3x of onnxruntime on {len(rows) - len(slow_interp)}/{len(rows)} models"
          + (f" (not: {', '.join(slow_interp)})" if slow_interp else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
