"""The perf model against TI's published TDA4VM timings (reference/tidl-facts.md, section 5).

    python benchmarks/perf_model_vs_device.py            # the comparison table
    python benchmarks/perf_model_vs_device.py --fit      # re-fit the 'fitted' device constants
    python benchmarks/perf_model_vs_device.py --keras    # also check the builders against tf.keras

The networks are built layer by layer with tidlc's IR Builder
(``tidlc.backends.tidl.perf.zoo``), compiled at -O2, and estimated on the
builtin ``tda4vm`` device at 8 bits, numBatches 1, weight persistence off
(the settings of TI's published numbers). First, every builder's MAC count is
checked against the published GMACs (the architecture must be the measured
one before its time means anything).

``--fit`` searches the constants marked ``fitted`` in tda4vm.toml over their
physically plausible ranges (below) and prints the best set: the objective is
the largest |log(predicted / published)| over the five timed models, plus TI's
statement that numBatches=4 saves 30-50 % per frame on a 224x224 MobileNet.
"""
from __future__ import annotations

import argparse
import itertools
import math
import sys
import time

from tidlc.backends.tidl.perf import PerfOptions, load_device, zoo
from tidlc.backends.tidl.perf.model import batch_cycles, kernel_params, prepare, run_kernel

# name -> (input, published GMACs, {SDK: ms}, SDK used for the comparison)
PUBLISHED = {
    "mobilenet_v1": ("224", 0.569, {"8.1": 1.90, "8.2": 1.04, "latest": 1.51}, "latest"),
    "mobilenet_v2_1.4": ("224", 0.583, {"latest": 3.02}, "latest"),
    "yolox_nano_lite_416": ("416", 1.476, {"latest": 4.64}, "latest"),
    "deeplabv3plus_mnv2_lite_512": ("512", 3.28, {"latest": 7.30}, "latest"),
    "yolox_s_lite_640": ("640", 13.43, {"latest": 11.66}, "latest"),
    "resnet18": ("224", 1.814, {}, None),
    "resnet50": ("224", 4.087, {}, None),
}
TARGET = 0.30  # every reproduced model within +-30 %
BATCHING = ("mobilenet_v1", 4, 0.30, 0.50)  # TI: numBatches=4 saves 30-50 % per frame

# Fitted constants and their plausible ranges (docs/perf.md explains each).
FIT_GRID = {
    "overhead.layer_setup_cycles": [6000, 10000, 14000, 16000, 18000, 20000, 22000],  # 6..22 us a layer
    "mma.loop_overhead_cycles": [16, 32, 64, 80, 96, 112, 128],  # accumulator drain (64) + loop setup
    "ddr.efficiency": [0.5, 0.6, 0.7, 0.8],  # LPDDR4 sustained / peak
    "msmc.efficiency": [0.5, 0.7, 0.9],  # MSMC <-> L2 sustained / peak
}


def _ms(prep, device, options=None) -> float:
    options = options or prep.options
    res, _ = run_kernel(prep.tables, kernel_params(device, options))
    return device.cycles_to_ms(batch_cycles(res, device) / options.batches)


def build_all() -> dict:
    graphs = {}
    for name in PUBLISHED:
        graphs[name] = zoo.build(name)
    return graphs


def check_macs(graphs: dict) -> list[str]:
    lines = [f"{'model':30s} {'GMACs (ours)':>13s} {'published':>10s} {'diff':>7s}"]
    for name, graph in graphs.items():
        ours = zoo.total_macs(graph) / 1e9
        pub = PUBLISHED[name][1]
        lines.append(f"{name:30s} {ours:13.4f} {pub:10.3f} {100 * (ours / pub - 1):+6.1f}%")
    return lines


def check_keras() -> list[str]:
    """Parameter counts of the Keras-mirroring builders against tf.keras.applications."""
    try:
        import keras
    except ImportError:
        return ["keras not installed: skipped"]
    pairs = [("MobileNet", zoo.mobilenet_v1(), lambda: keras.applications.MobileNet(weights=None)),
             ("MobileNetV2(alpha=1.4)", zoo.mobilenet_v2(), lambda: keras.applications.MobileNetV2(alpha=1.4, weights=None))]
    lines = []
    for label, graph, make in pairs:
        model = make()
        ours, theirs = zoo.parameter_count(graph), model.count_params()
        lines.append(f"keras {label:24s} parameters: builder {ours:,}  keras {theirs:,}  "
                     f"{'equal' if ours == theirs else 'DIFFERENT'}")
    return lines


def compare(graphs: dict, device) -> tuple[list[str], float]:
    lines = [(f"{'model':30s} {'input':>5s} {'predicted ms':>12s} {'published ms':>22s} {'error':>7s} "
              f"{'MAC util':>8s} {'DDR MB':>7s}")]
    worst = 0.0
    for name, graph in graphs.items():
        size, _, times, sdk = PUBLISHED[name]
        prep = prepare(graph, device, PerfOptions(hints=False))
        ms = _ms(prep, device)
        from tidlc.backends.tidl.perf import report
        rep = report(prep)
        if sdk is None:
            lines.append(f"{name:30s} {size:>5s} {ms:12.3f} {'(not published)':>22s} {'':>7s} "
                         f"{rep.mac_utilization:8.3f} {rep.ddr_bytes_per_frame / 1e6:7.1f}")
            continue
        pub = times[sdk]
        err = ms / pub - 1
        worst = max(worst, abs(err))
        shown = ", ".join(f"{v:.2f} ({k})" for k, v in times.items())
        lines.append(f"{name:30s} {size:>5s} {ms:12.3f} {shown:>22s} {100 * err:+6.1f}% "
                     f"{rep.mac_utilization:8.3f} {rep.ddr_bytes_per_frame / 1e6:7.1f}")
        for other, value in times.items():
            if other != sdk:
                lines.append(f"{'':30s} {'':>5s} {'':>12s} {'vs SDK ' + other:>22s} {100 * (ms / value - 1):+6.1f}%")
    name, n, lo, hi = BATCHING
    prep = prepare(graphs[name], device, PerfOptions(hints=False))
    saved = 1 - _ms(prep, device, PerfOptions(batches=n, hints=False)) / _ms(prep, device)
    lines.append(f"numBatches={n} on {name}: {100 * saved:.0f} % less time per frame "
                 f"(TI: {100 * lo:.0f}-{100 * hi:.0f} %)")
    return lines, worst


def fit(graphs: dict) -> list[str]:
    timed = {n: g for n, g in graphs.items() if PUBLISHED[n][3]}
    preps = {n: prepare(g, "tda4vm", PerfOptions(hints=False)) for n, g in timed.items()}
    name, n_batch, lo, hi = BATCHING
    results = []
    for values in itertools.product(*FIT_GRID.values()):
        over = dict(zip(FIT_GRID, values))
        dev = load_device("tda4vm", overrides=over)
        errs = []
        for name_, prep in preps.items():
            _, _, times, sdk = PUBLISHED[name_]
            errs.append(abs(math.log(_ms(prep, dev) / times[sdk])))
        one = _ms(preps[name], dev)
        saved = 1 - _ms(preps[name], dev, PerfOptions(batches=n_batch, hints=False)) / one
        batching_err = max(0.0, lo - saved, saved - hi)
        results.append((max(errs) + batching_err, max(errs), saved, over))
    results.sort(key=lambda r: r[0])
    lines = ["best fitted constants (objective: worst |log error| + batching miss):"]
    for score, worst, saved, over in results[:5]:
        lines.append(f"  score {score:.3f}  worst {100 * (math.exp(worst) - 1):.1f}%  batching {100 * saved:.0f}%  {over}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fit", action="store_true", help="search the fitted device constants")
    parser.add_argument("--keras", action="store_true", help="compare parameter counts with tf.keras")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    graphs = build_all()
    device = load_device("tda4vm")
    print("Architectures (built with the IR Builder, -O2) vs published GMACs:")
    print("\n".join(check_macs(graphs)))
    if args.keras:
        print("\n".join(check_keras()))
    print()
    print(f"Predicted vs published latency on {device.name} ({device.c7x_mhz:.0f} MHz), 8-bit, numBatches 1:")
    lines, worst = compare(graphs, device)
    print("\n".join(lines))
    print(f"worst error {100 * worst:.1f} % (target +-{100 * TARGET:.0f} %)")
    if args.fit:
        print()
        print("\n".join(fit(graphs)))
    print(f"({time.perf_counter() - start:.1f} s)")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
