"""Speed of ``tidlc run`` (the fixed-point executor on net.bin) against peers.

Models: the 8-bit compiled ResNet-50 (``light_resnet50.onnx`` from the onnx
wheel) and MobileNetV2 (the Caffe corpus prototxt with seeded random weights;
exported to ONNX here, float, for the peers). For each model:

* tidlc ``--kernels auto`` (fast exact kernels; 2 threads like the onnxruntime session, and
  1 thread) and ``--kernels numpy`` (the specification), run from net.bin/io.bin read back
  from disk;
* onnxruntime float32, CPU, 2 intra-op threads;
* ``onnx.reference.ReferenceEvaluator`` (one timed run: it is slow).

Each time is the median of ``--repeat`` runs, in frames/s; the contenders take turns in blocks
of runs (the first of each block not counted), so the slow phases of a shared machine hit all
of them alike.
Targets (issue 6): tidlc auto within 2x of onnxruntime (ratio ort_fps / tidlc_fps
<= 2); at least 20x faster than onnx.reference.

    python benchmarks/executor_speed.py [--repeat 5] [--skip-reference]
    python benchmarks/executor_speed.py --isa   # ms/frame per integer-kernel variant (TIDLC_ISA), 1 and 2 threads
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOBILENET_V2 = os.path.join(os.path.dirname(ROOT), "shared", "corpus", "caffe", "mobilenet_v2",
                            "mobilenet_v2_deploy.prototxt")


def median_times(fns: dict, repeat: int, block: int = 5) -> dict:
    """Median seconds per call of each function. The functions take turns in blocks of ``block``
    calls after a pause, the first call of each block not counted (the previous contender's
    threads may still be spinning), so a slow phase of a shared machine hits every contender alike."""
    times = {key: [] for key in fns}
    while min(len(t) for t in times.values()) < repeat:
        for key, fn in fns.items():
            time.sleep(0.2)  # let the previous contender's threads stop spinning and sleep
            fn()
            for _ in range(block - 1):
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


def bench(label: str, onnx_path: str, source: str, options: dict, repeat: int, skip_reference: bool) -> dict:
    import onnx
    import onnxruntime as ort
    from tidlc.backends.tidl.binfmt import read_compiled
    from tidlc.backends.tidl.fixed import FixedExecutor, fast

    from tidlc.compiler import compile_model
    from tidlc.config import CompileOptions
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compile_model(source, CompileOptions.of(emit="bin", outdir=tmp, **options))
        model = read_compiled(tmp)
    (entry,) = model.io["inputs"]
    x = np.random.default_rng(0).uniform(-1, 1, entry["dims"]).astype(np.float32)
    row = {"model": label}
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    fns = {}
    ex = FixedExecutor(model.graph, kernels="auto")
    for key, threads in (("tidlc_auto", 2), ("tidlc_auto_1t", 1)):
        fns[key] = lambda threads=threads: (fast.set_threads(threads), ex.run({entry["name"]: x}))
    fns["onnxruntime_f32"] = lambda: sess.run(None, {in_name: x})
    row.update({key: 1 / t for key, t in median_times(fns, repeat).items()})
    fast.set_threads(None)
    # the specification runs apart: its float GEMMs leave OpenBLAS threads spinning, which would
    # take the cores of whatever runs next
    spec = FixedExecutor(model.graph, kernels="numpy")
    row["tidlc_numpy"] = 1 / median_times({"spec": lambda: spec.run({entry["name"]: x})}, 3, block=4)["spec"]
    if not skip_reference:
        from onnx.reference import ReferenceEvaluator
        ref = ReferenceEvaluator(onnx.load(onnx_path))
        start = time.perf_counter()
        ref.run(None, {in_name: x})
        row["onnx_reference"] = 1 / (time.perf_counter() - start)
    return row


def bench_isas(label: str, onnx_path: str, source: str, options: dict, repeat: int) -> list:
    """ms/frame of ``--kernels auto`` under every integer-kernel variant this CPU has (and the
    exact float-GEMM path, "float"), threads 1 and 2, against onnxruntime float32 (same threads)."""
    import onnxruntime as ort
    from tidlc.backends.tidl.fixed import FixedExecutor, _igemm, fast

    from tidlc.compiler import compile_model
    from tidlc.config import CompileOptions
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = compile_model(source, CompileOptions.of(emit="none", quantize=True, **options)).graph
    (op,) = graph.input_ops
    entry = {"name": op.attrs["name"]}
    x = np.random.default_rng(0).uniform(-1, 1, op.results[0].type.shape).astype(np.float32)

    class model:
        pass
    model.graph = graph
    before = fast.isa()
    fns = {}
    for threads in (1, 2):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        in_name = sess.get_inputs()[0].name
        fns[("onnxruntime f32", threads)] = lambda sess=sess, in_name=in_name: sess.run(None, {in_name: x})
        for isa in _igemm.supported_isas():
            ex = FixedExecutor(model.graph, kernels="auto")
            fns[(isa, threads)] = lambda ex=ex, isa=isa, threads=threads: (
                fast.set_isa(isa), fast.set_threads(threads), ex.run({entry["name"]: x}))
    real = _igemm.available
    _igemm.available = lambda: False  # the exact float-GEMM tables
    try:
        floats = FixedExecutor(model.graph, kernels="auto")
    finally:
        _igemm.available = real
    for threads in (1, 2):
        fns[("float", threads)] = lambda threads=threads: (fast.set_threads(threads), floats.run({entry["name"]: x}))
    times = median_times(fns, repeat)
    fast.set_isa(before)
    fast.set_threads(None)
    return [(label, isa, threads, 1000 * t) for (isa, threads), t in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-reference", action="store_true", help="skip onnx.reference (minutes per model)")
    parser.add_argument("--isa", action="store_true",
                        help="only the per-ISA table: ms/frame of each integer-kernel variant, threads 1 and 2")
    args = parser.parse_args()
    import onnx
    rows = []
    r50 = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_resnet50.onnx")
    if args.isa:
        from tidlc.backends.tidl.fixed import fast
        print(f"chosen ISA: {fast.isa()}")
        table = bench_isas("resnet50 (light)", r50, r50, {"calib_frames": 2}, args.repeat)
        print(f"{'model':<18} {'kernels':<16} {'threads':>7} {'ms/frame':>9}")
        for label, isa, threads, ms in sorted(table, key=lambda r: (r[0], r[2], r[3])):
            print(f"{label:<18} {isa:<16} {threads:>7} {ms:>9.1f}")
        return
    rows.append(bench("resnet50 (light)", r50, r50, {"calib_frames": 2}, args.repeat, args.skip_reference))
    if os.path.exists(MOBILENET_V2):
        from tidlc.compiler import load, optimize
        from tidlc.config import CompileOptions
        opts = CompileOptions.of(emit="ir", random_weights=0)
        graph = load(MOBILENET_V2, opts)
        optimize(graph, opts)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "mobilenet_v2.onnx")
            export_float_onnx(graph, path)
            rows.append(bench("mobilenet_v2", path, MOBILENET_V2, {"random_weights": 0, "calib_frames": 2},
                              args.repeat, args.skip_reference))
    print(f"{'model':<18} {'tidlc 2T':>9} {'tidlc 1T':>9} {'tidlc numpy':>12} {'ORT f32 2T':>11} {'onnx.ref':>9} "
          f"{'ORT/auto':>9} {'auto/ref':>9}   (frames/s; ratios of fps)")
    for r in rows:
        ref_fps = r.get("onnx_reference")
        print(f"{r['model']:<18} {r['tidlc_auto']:>9.2f} {r['tidlc_auto_1t']:>9.2f} {r['tidlc_numpy']:>12.2f} "
              f"{r['onnxruntime_f32']:>11.2f} "
              f"{ref_fps if ref_fps else float('nan'):>9.3f} {r['onnxruntime_f32'] / r['tidlc_auto']:>9.2f} "
              f"{(r['tidlc_auto'] / ref_fps) if ref_fps else float('nan'):>9.1f}")


if __name__ == "__main__":
    main()
