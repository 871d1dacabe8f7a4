"""Automatic mixed precision and bias calibration: quality and time against plain 8-bit calibration.

For each model (UltraFace RFB-320 from examples/; a MobileNetV2 whose batch
norms look trained, benchmarks/mobilenet_like.py, when its cached ONNX exists
or TensorFlow can build it), with the same calibration and evaluation frames
(crops of natural images, benchmarks/quant_quality.py):

* plain 8-bit calibration (histogram): SNR and wall time;
* ``--mixed-precision auto --time-budget B`` for each budget: the chosen
  16-bit layers, the predicted time over all-8-bit, the SNR on the evaluation
  frames, wall time and its ratio to plain calibration; against it, the mean
  (and min/max) SNR of ``--random`` draws of the same number of 16-bit layers
  from the same candidates (``--16bit-layers``), and their predicted time;
* bias calibration (``--bias-calibration N``, the one-pass layer-ordered
  correction): SNR and time ratio to plain calibration.

SNR: the mean over a model's outputs of the SNR (dB) over all evaluation
frames against the float model (tidlc's interpreter, itself checked against
onnxruntime by the test suite).

    python benchmarks/mixed_precision.py [--models ultraface,mobilenetv2] [--budgets 1.1,1.2]
        [--calib-frames 32] [--eval-frames 8] [--random 5] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _models():
    import quant_quality as qq
    models = {"ultraface": qq.models()["ultraface"]}
    try:
        import mobilenet_like
        folder = mobilenet_like.cache_dir()
        path = os.path.join(folder, "mobilenet_v2.onnx")
        if not os.path.exists(path):
            path = os.path.join(mobilenet_like.cached(), "mobilenet_v2.onnx")  # builds it (TensorFlow)
        models["mobilenetv2"] = qq.Model("MobileNetV2 (trained-like BN)", path, mean=(127.5,), scale=(1 / 127.5,))
    except (ImportError, OSError, SystemExit) as exc:  # no TensorFlow and no cached copy
        print(f"mobilenetv2: skipped ({exc})", file=sys.stderr)
    return models


def _snr(graph_q, evals, refs) -> float:
    import quant_quality as qq
    from tidlc.backends.tidl.fixed import FixedExecutor
    executor = FixedExecutor(graph_q, kernels="auto")
    return qq.snr_over(refs, [executor.run(f) for f in evals])


def _ms(q, device: str = "tda4vm") -> float:
    from tidlc.backends.tidl.perf import PerfOptions, estimate
    return float(estimate(q.graph, device, PerfOptions(bits=8, layers_16bit=tuple(q.layers_16bit), hints=False)).ms)


def run_model(key: str, model, images, args) -> dict:
    import quant_quality as qq
    from tidlc.backends.tidl.quantize.api import quantize_graph
    from tidlc.backends.tidl.quantize.mixed import _candidates
    from tidlc.backends.tidl.quantize.ptq import QuantConfig

    from tidlc.compiler import load, optimize
    from tidlc.interp import Interpreter
    opts = model.options()
    graph = load(model.path, opts)
    optimize(graph, opts)
    calib = qq.frames_for(graph, model, images, args.calib_frames, seed=1)
    evals = qq.frames_for(graph, model, images, args.eval_frames, seed=2)
    interp = Interpreter(graph)
    refs = [interp.run(f) for f in evals]
    quantize_graph(graph, model.options(), frames=calib[:2], warn_synthetic=False)  # warm-up (not timed)

    cpu = {}

    def quantize(**kw):
        start, start_cpu = time.perf_counter(), time.process_time()
        q = quantize_graph(graph, model.options(**kw), frames=calib, warn_synthetic=False)
        cpu[id(q)] = time.process_time() - start_cpu  # (the machine may be shared: CPU time too)
        return q, time.perf_counter() - start

    q8, t8 = quantize()
    c8 = cpu[id(q8)]
    again, t8b = quantize()  # twice: the fastest of two is the baseline (a shared machine is noisy)
    t8, c8 = min(t8, t8b), min(c8, cpu[id(again)])
    ms8 = _ms(q8)
    snr8 = _snr(q8.graph, evals, refs)
    out = {"model": model.name, "key": key, "calib_frames": len(calib), "eval_frames": len(evals),
           "plain": {"snr_db": snr8, "seconds": t8, "cpu_seconds": c8, "ms": ms8}, "auto": [], "bias": []}
    print(f"{model.name}: plain 8-bit {snr8:.2f} dB, {t8:.2f} s, predicted {ms8:.3f} ms", flush=True)
    pool = [c.op.name for c in _candidates(q8.reference, q8_prepared(q8), QuantConfig())]
    rng = np.random.default_rng(args.seed)
    for budget in args.budgets:
        q, seconds = quantize(mixed_precision="auto", time_budget=budget)
        m = q.mixed
        layers = list(m.layers)
        row = {"budget": budget, "layers": layers, "n_layers": len(layers), "ms": _ms(q),
               "snr_db": _snr(q.graph, evals, refs), "seconds": seconds, "time_ratio_to_plain": seconds / t8,
               "cpu_ratio_to_plain": cpu[id(q)] / c8,
               "search_snr_before": m.snr_8bit, "search_snr_after": m.snr, "candidates": len(pool)}
        row["ratio"] = row["ms"] / ms8
        randoms = []
        for _ in range(args.random if layers else 0):
            pick = sorted(rng.choice(len(pool), len(layers), replace=False).tolist())
            names = [pool[i] for i in pick]
            qr, _ = quantize(layers_16bit=names)
            randoms.append({"layers": names, "snr_db": _snr(qr.graph, evals, refs), "ratio": _ms(qr) / ms8})
        row["random"] = randoms
        if randoms:
            snrs = [r["snr_db"] for r in randoms]
            row["random_mean_db"], row["random_min_db"], row["random_max_db"] = \
                float(np.mean(snrs)), float(np.min(snrs)), float(np.max(snrs))
            row["random_mean_ratio"] = float(np.mean([r["ratio"] for r in randoms]))
        out["auto"].append(row)
        print(f"  auto x{budget:g}: {len(layers)} layer(s) {', '.join(layers[:8])}{' ...' if len(layers) > 8 else ''}",
              flush=True)
        print(f"    predicted {row['ms']:.3f} ms = {row['ratio']:.3f}x; SNR {snr8:.2f} -> {row['snr_db']:.2f} dB "
              f"(search frames {m.snr_8bit:.2f} -> {m.snr:.2f}); {seconds:.2f} s = {seconds / t8:.2f}x plain "
              f"(CPU {row['cpu_ratio_to_plain']:.2f}x)"
              + (f"; random x{len(randoms)}: mean {row['random_mean_db']:.2f} dB "
                 f"[{row['random_min_db']:.2f}, {row['random_max_db']:.2f}] at {row['random_mean_ratio']:.3f}x"
                 if randoms else ""), flush=True)
    for iterations in args.bias:
        q, seconds = quantize(bias_calibration=iterations)
        row = {"iterations": iterations, "snr_db": _snr(q.graph, evals, refs), "seconds": seconds,
               "time_ratio_to_plain": seconds / t8, "cpu_ratio_to_plain": cpu[id(q)] / c8}
        out["bias"].append(row)
        print(f"  bias calibration ({iterations}): {snr8:.2f} -> {row['snr_db']:.2f} dB, {seconds:.2f} s = "
              f"{seconds / t8:.2f}x plain (CPU {row['cpu_ratio_to_plain']:.2f}x)", flush=True)
    return out


def q8_prepared(q):
    """The all-8-bit QuantResult of a Quantized (what the search starts from)."""
    from tidlc.backends.tidl.quantize.ptq import QuantResult
    return QuantResult(q.graph, q.origin)


def render(results: list[dict]) -> str:
    header = (f"{'model':<30} {'config':<14} {'16-bit':>6} {'x 8-bit':>8} {'SNR dB':>7} {'random dB':>10} "
              f"{'seconds':>8} {'x plain':>8} {'CPU x':>6}")
    lines = [header]
    lines.append("-" * len(lines[0]))
    for r in results:
        p = r["plain"]
        lines.append(f"{r['model']:<30} {'8-bit':<14} {0:>6} {1.0:8.3f} {p['snr_db']:7.2f} {'':>10} "
                     f"{p['seconds']:8.2f} {1.0:8.2f} {1.0:6.2f}")
        for a in r["auto"]:
            rnd = f"{a['random_mean_db']:10.2f}" if "random_mean_db" in a else f"{'':>10}"
            lines.append(f"{'':<30} {'auto x' + format(a['budget'], 'g'):<14} {a['n_layers']:>6} {a['ratio']:8.3f} "
                         f"{a['snr_db']:7.2f} {rnd} {a['seconds']:8.2f} {a['time_ratio_to_plain']:8.2f} {a['cpu_ratio_to_plain']:6.2f}")
        for b in r["bias"]:
            lines.append(f"{'':<30} {'bias ' + str(b['iterations']):<14} {0:>6} {1.0:8.3f} {b['snr_db']:7.2f} "
                         f"{'':>10} {b['seconds']:8.2f} {b['time_ratio_to_plain']:8.2f} {b['cpu_ratio_to_plain']:6.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="ultraface,mobilenetv2")
    parser.add_argument("--budgets", default="1.1,1.2")
    parser.add_argument("--bias", default="50", help="bias-calibration iteration counts to time ('' for none)")
    parser.add_argument("--calib-frames", type=int, default=32)
    parser.add_argument("--eval-frames", type=int, default=8)
    parser.add_argument("--random", type=int, default=5, help="random draws per budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the results as JSON (the table goes to stderr)")
    args = parser.parse_args(argv)
    args.budgets = [float(b) for b in args.budgets.split(",") if b]
    args.bias = [int(b) for b in args.bias.split(",") if b]
    import quant_quality as qq
    models = _models()
    images = qq.natural_images()
    results = []
    stdout = sys.stdout
    if args.json:
        sys.stdout = sys.stderr
    try:
        for key in [k for k in args.models.split(",") if k]:
            if key not in models:
                print(f"{key}: unknown or unavailable model", file=sys.stderr)
                continue
            results.append(run_model(key, models[key], images, args))
        print(render(results))
    finally:
        sys.stdout = stdout
    if args.json:
        print(json.dumps({"schema": "tidlc.bench.mixed_precision/1", "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
