"""Speed of the fixed-point executor (``tidlc run --kernels auto``) per integer-kernel variant, against
onnxruntime float32 and onnxruntime int8.

Models: the 8-bit ResNet-50 (``light_resnet50.onnx`` from the onnx wheel), MobileNetV2 (the Caffe
corpus prototxt with seeded random weights, exported to float ONNX here for the peers) in 8 and 16
bits, and UltraFace (examples/ultraface, 8-bit). For each model and thread count (1 and 2):

* tidlc under every variant of ``TIDLC_ISA`` this CPU runs (``fast.set_isa``: avx512vnni, avxvnni,
  avx2, and the portable ``c`` always);
* onnxruntime float32 on the float model (CPU provider, same intra-op threads);
* onnxruntime int8: the QDQ model from ``onnxruntime.quantization.quantize_static`` (per-tensor,
  uint8 activations, int8 weights, MinMax calibration on 4 random frames), the nearest integer peer.

Each time is the median of ``--repeat`` runs (milliseconds per frame, wall clock); the contenders
take turns in blocks of runs (the first of each block not counted), so the slow phases of a shared
machine hit all of them alike. Ratios: tidlc time / onnxruntime time (lower is better), and for
the 16-bit model its time / the 8-bit model's under the same variant and threads.

    python benchmarks/executor_speed.py [--repeat 5] [--models resnet50,mobilenet_v2,...]
        [--isas avx2,c] [--threads 1,2] [--json]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOBILENET_V2 = os.path.join(os.path.dirname(ROOT), "shared", "corpus", "caffe", "mobilenet_v2",
                            "mobilenet_v2_deploy.prototxt")
ULTRAFACE = os.path.join(ROOT, "examples", "ultraface", "ultraface-rfb320.onnx")
MODELS = ("resnet50", "mobilenet_v2", "mobilenet_v2_16bit", "ultraface")


def median_times(fns: dict, repeat: int, block: int = 5, pause: float = 0.2) -> dict:
    """Median seconds per call of each function. The functions take turns in blocks of ``block``
    calls after a pause, the first call of each block not counted (the previous contender's
    threads may still be spinning), so a slow phase of a shared machine hits every contender alike."""
    times = {key: [] for key in fns}
    while min(len(t) for t in times.values()) < repeat:
        for key, fn in fns.items():
            if len(times[key]) >= repeat:
                continue
            time.sleep(pause)  # let the previous contender's threads stop spinning and sleep
            fn()
            for _ in range(min(block - 1, repeat - len(times[key]))):
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
    return {key: statistics.median(t) for key, t in times.items()}


def export_float_onnx(graph, path: str) -> None:
    """A float tidlc graph of conv2d/add/global_pool/flatten/reshape/dense/softmax as ONNX (peers only)."""
    import onnx
    from onnx import helper, numpy_helper
    names, nodes, inits, counter = {}, [], [], [0]

    def name_of(v):
        if id(v) not in names:
            counter[0] += 1
            names[id(v)] = f"t{counter[0]}"
        return names[id(v)]

    inputs = []
    for op in graph.ops:
        a = op.attrs
        if op.kind == "input":
            names[id(op.results[0])] = a["name"]
            inputs.append(helper.make_tensor_value_info(a["name"], onnx.TensorProto.FLOAT, list(op.results[0].type.shape)))
            continue
        if op.kind == "const":
            inits.append(numpy_helper.from_array(np.asarray(op.data, np.float32), name_of(op.results[0])))
            continue
        ins, out = [name_of(v) for v in op.operands], name_of(op.results[0])
        act = a.get("act", "none")
        pre = out + "_pre" if act not in ("none", None) else out
        if op.kind == "conv2d":
            kh, kw = op.operands[1].type.shape[2:]
            pt, pl, pb, pr = a["pads"]
            nodes.append(helper.make_node("Conv", ins, [pre], strides=list(a["strides"]), pads=[pt, pl, pb, pr],
                                          dilations=list(a["dilations"]), group=a["groups"], kernel_shape=[kh, kw]))
        elif op.kind == "dense":
            nodes.append(helper.make_node("Gemm", ins, [pre], transB=1))
        elif op.kind == "add":
            nodes.append(helper.make_node("Add", ins, [pre]))
        elif op.kind == "global_pool":
            nodes.append(helper.make_node("GlobalAveragePool" if a["mode"] == "avg" else "GlobalMaxPool", ins, [pre]))
        elif op.kind in ("flatten", "reshape"):
            shape = numpy_helper.from_array(np.asarray(op.results[0].type.shape, np.int64), out + "_shape")
            inits.append(shape)
            nodes.append(helper.make_node("Reshape", [ins[0], shape.name], [pre]))
        elif op.kind == "softmax":
            nodes.append(helper.make_node("Softmax", ins, [pre], axis=a["axis"]))
        else:
            raise SystemExit(f"export: no ONNX form for {op.kind}")
        if act == "relu":
            nodes.append(helper.make_node("Relu", [pre], [out]))
        elif act == "relu6":
            nodes.append(helper.make_node("Clip", [pre], [out], min=0.0, max=6.0))
        elif act not in ("none", None):
            raise SystemExit(f"export: no ONNX form for act {act}")
    outputs = [helper.make_tensor_value_info(name_of(v), onnx.TensorProto.FLOAT, list(v.type.shape)) for v in graph.outputs]
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.save(model, path)


def model_sources(name: str, tmp: str):
    """(tidlc source, compile options, float ONNX path for the peers) of a model, or None when absent."""
    import onnx
    if name == "resnet50":
        path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_resnet50.onnx")
        return (path, {"calib_frames": 2}, path) if os.path.exists(path) else None
    if name.startswith("mobilenet_v2"):
        if not os.path.exists(MOBILENET_V2):
            return None
        path = os.path.join(tmp, "mobilenet_v2.onnx")
        if not os.path.exists(path):
            from tidlc.compiler import load, optimize
            from tidlc.config import CompileOptions
            opts = CompileOptions.of(emit="ir", random_weights=0)
            graph = load(MOBILENET_V2, opts)
            optimize(graph, opts)
            export_float_onnx(graph, path)
        options = {"random_weights": 0, "calib_frames": 2}
        if name.endswith("16bit"):
            options["bits"] = 16
        return MOBILENET_V2, options, path
    if name == "ultraface":
        return (ULTRAFACE, {"calib_frames": 2}, ULTRAFACE) if os.path.exists(ULTRAFACE) else None
    raise SystemExit(f"unknown model {name!r} (known: {', '.join(MODELS)})")


def quantize_qdq(src: str, dst: str, feeds: list) -> None:
    """onnxruntime's static QDQ quantization of ``src`` (MinMax on ``feeds``)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=False,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)


def bench_model(name: str, isas: list, thread_counts: list, repeat: int, tmp: str) -> list[dict]:
    """ms/frame of every contender on one model: rows {model, contender, threads, ms}."""
    import onnxruntime as ort
    from tidlc.backends.tidl.fixed import FixedExecutor, fast

    from tidlc.compiler import compile_model
    from tidlc.config import CompileOptions
    ort.set_default_logger_severity(3)
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's advice on pre-processing
    src = model_sources(name, tmp)
    if src is None:
        print(f"{name}: model not found, skipped", file=sys.stderr)
        return []
    source, options, float_onnx = src
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = compile_model(source, CompileOptions.of(emit="none", quantize=True, **options)).graph
    (op,) = graph.input_ops
    shape = op.results[0].type.shape
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    probe = ort.InferenceSession(float_onnx, so, providers=["CPUExecutionProvider"])
    in_name = probe.get_inputs()[0].name
    qdq = os.path.join(tmp, f"{name}_qdq.onnx")
    if not os.path.exists(qdq):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_qdq(float_onnx, qdq, [{in_name: rng.uniform(-1, 1, shape).astype(np.float32)} for _ in range(4)])
    before = fast.isa()
    executors = {isa: (fast.set_isa(isa), FixedExecutor(graph, kernels="auto"))[1] for isa in isas}
    fast.set_isa(before)
    feeds = {op.attrs["name"]: x}
    fns = {}
    for threads in thread_counts:
        for label, path in (("onnxruntime f32", float_onnx), ("onnxruntime int8", qdq)):
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            fns[(label, threads)] = lambda sess=sess: sess.run(None, {in_name: x})
        for isa, ex in executors.items():
            fns[(f"tidlc {isa}", threads)] = lambda ex=ex, isa=isa, threads=threads: (
                fast.set_isa(isa), fast.set_threads(threads), ex.run(feeds))
    try:
        times = median_times(fns, repeat)
    finally:
        fast.set_isa(before)
        fast.set_threads(None)
    return [{"model": name, "contender": label, "threads": threads, "ms": 1000 * t}
            for (label, threads), t in times.items()]


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each tidlc row with its ratios to onnxruntime f32 / int8 (and a 16-bit model's to its 8-bit twin)."""
    by = {(r["model"], r["contender"], r["threads"]): r["ms"] for r in rows}
    for r in rows:
        if not r["contender"].startswith("tidlc"):
            continue
        for peer, key in (("onnxruntime f32", "x_ort_f32"), ("onnxruntime int8", "x_ort_int8")):
            ms = by.get((r["model"].replace("_16bit", ""), peer, r["threads"]))
            if ms:
                r[key] = r["ms"] / ms
        if r["model"].endswith("_16bit"):
            ms8 = by.get((r["model"].replace("_16bit", ""), r["contender"], r["threads"]))
            if ms8:
                r["x_8bit"] = r["ms"] / ms8
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'model':<20} {'threads':>7} {'contender':<18} {'ms/frame':>9} {'x ORT f32':>10} {'x ORT int8':>11} "
          f"{'x 8-bit':>8}")
    for r in sorted(rows, key=lambda r: (MODELS.index(r["model"]), r["threads"], r["ms"])):
        cols = [f"{r[k]:.2f}" if k in r else "" for k in ("x_ort_f32", "x_ort_int8", "x_8bit")]
        print(f"{r['model']:<20} {r['threads']:>7} {r['contender']:<18} {r['ms']:>9.1f} {cols[0]:>10} {cols[1]:>11} "
              f"{cols[2]:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per contender (median)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--isas", default="", help="comma-separated variants (default: every one this CPU runs)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    args = parser.parse_args()
    from tidlc.backends.tidl.fixed import _igemm
    have = _igemm.supported_isas()
    isas = [s for s in args.isas.split(",") if s] or list(have)
    missing = [s for s in isas if s not in have]
    if missing:
        raise SystemExit(f"--isas: {', '.join(missing)} not available on this CPU (it has: {', '.join(have)})")
    threads = [int(t) for t in args.threads.split(",") if t]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m for m in args.models.split(",") if m]:
            if not args.json:
                print(f"{name} ...", file=sys.stderr, flush=True)
            rows.extend(bench_model(name, isas, threads, args.repeat, tmp))
    rows = with_ratios(rows)
    if args.json:
        print(json.dumps({"isas": isas, "rows": rows}, indent=1))
    else:
        print_table(rows)


if __name__ == "__main__":
    main()
