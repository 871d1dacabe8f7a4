"""Speed of the fixed-point executor's non-GEMM kernels (``fast_ops``, ``_ops.pyx``, ``ops_simd.h``) per
variant, against onnxruntime running the same single op on the same 8-bit data.

Ops and shapes (uint8 codes, the hot cases of the 8-bit CNNs):

* max pool 3x3 s2 p1 on 1x64x112x112 (the ResNet stem) and 2x2 s2 on 1x64x112x112;
* average pool 3x3 s1 p1 on 1x64x56x56 (requantized, as the executor always does);
* global average pool on 1x1280x7x7 (MobileNetV2's head) and global max pool on 1x512x14x14;
* quantize float32 -> uint8 and dequantize uint8 -> float32 on 1x3x224x224 and 1x64x112x112;
* concat of two 1x64x56x56 inputs of different scales (each requantized to the output's);
* bilinear resize x2 (half_pixel) of 1x64x56x56.

Contenders, in one run: tidlc with the AVX2 forms (``fast.set_isa("avx2")``, when the CPU has it), tidlc
with the portable C forms (``set_isa("c")``: the kernels before the AVX2 forms), and onnxruntime
(CPU provider, one thread) on a one-node model: MaxPool on uint8, QLinearAveragePool /
QLinearGlobalAveragePool / QLinearConcat (com.microsoft), ReduceMax on uint8, QuantizeLinear,
DequantizeLinear, Resize on uint8. Each time is the median of ``--repeat`` calls (milliseconds,
wall clock), the contenders taking turns in blocks. Ratios: time / onnxruntime's (lower is better)
and C / AVX2 (the speed-up of the SIMD forms).

    python benchmarks/ops_speed.py [--repeat 31] [--ops "maxpool,quantize,..."] [--json]

(``benchmarks/executor_speed.py`` is the whole-network counterpart.)
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from executor_speed import median_times


# ----------------------------------------------------------------------------- onnxruntime peers
def _session(node, inputs, outputs, inits=(), ms_domain=False):
    import onnx
    import onnxruntime as ort
    from onnx import helper
    graph = helper.make_graph([node], "op", inputs, outputs, initializer=list(inits))
    opsets = [helper.make_opsetid("", 19)] + ([helper.make_opsetid("com.microsoft", 1)] if ms_domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 9
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]), onnx


def _vi(name, elem, shape):
    from onnx import helper
    return helper.make_tensor_value_info(name, elem, shape)


def _scalar(name, elem, value):
    from onnx import helper
    return helper.make_tensor(name, elem, [], [value])


def ort_peer(case: dict):
    """A callable running the op in onnxruntime, or None when this onnxruntime lacks the op."""
    from onnx import TensorProto as T
    from onnx import helper
    op, feeds = case["op"], case["ort_feeds"]
    x_shape = list(next(iter(feeds.values())).shape)
    u8, f32 = T.UINT8, T.FLOAT
    scalars = [_scalar("s", f32, 0.05), _scalar("z", u8, 0), _scalar("s2", f32, 0.07), _scalar("z2", u8, 0)]
    if op == "maxpool":
        k, s, p = case["window"]
        node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=k, strides=s, pads=p)
        args = ([_vi("x", u8, x_shape)], [_vi("y", u8, None)], ())
        ms = False
    elif op == "avgpool":
        k, s, p = case["window"]
        node = helper.make_node("QLinearAveragePool", ["x", "s", "z", "s2", "z2"], ["y"], domain="com.microsoft",
                                kernel_shape=k, strides=s, pads=p)
        args, ms = ([_vi("x", u8, x_shape)], [_vi("y", u8, None)], scalars), True
    elif op == "global_avg":
        node = helper.make_node("QLinearGlobalAveragePool", ["x", "s", "z", "s2", "z2"], ["y"],
                                domain="com.microsoft", channels_last=0)
        args, ms = ([_vi("x", u8, x_shape)], [_vi("y", u8, None)], scalars), True
    elif op == "global_max":
        node = helper.make_node("ReduceMax", ["x", "axes"], ["y"], keepdims=1)
        axes = helper.make_tensor("axes", T.INT64, [2], [2, 3])
        args, ms = ([_vi("x", u8, x_shape)], [_vi("y", u8, None)], (axes,)), False
    elif op == "quantize":
        node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
        args, ms = ([_vi("x", f32, x_shape)], [_vi("y", u8, None)], scalars[:2]), False
    elif op == "dequantize":
        node = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"])
        args, ms = ([_vi("x", u8, x_shape)], [_vi("y", f32, None)], scalars[:2]), False
    elif op == "concat":
        names = list(feeds)
        extra = [_scalar("s3", f32, 0.04), _scalar("z3", u8, 0)]
        node = helper.make_node("QLinearConcat", ["s", "z", names[0], "s2", "z2", names[1], "s3", "z3"], ["y"],
                                domain="com.microsoft", axis=1)
        args, ms = ([_vi(n, u8, list(feeds[n].shape)) for n in names], [_vi("y", u8, None)], scalars + extra), True
    elif op == "resize":
        node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear",
                                coordinate_transformation_mode="half_pixel")
        scales = helper.make_tensor("scales", f32, [4], [1.0, 1.0, 2.0, 2.0])
        args, ms = ([_vi("x", u8, x_shape)], [_vi("y", u8, None)], (scales,)), False
    else:
        raise ValueError(op)
    try:
        sess, _ = _session(node, *args, ms_domain=ms)
        sess.run(None, feeds)
    except Exception as err:  # noqa: BLE001 - a build without the op: no peer
        print(f"onnxruntime: {case['name']}: {type(err).__name__}: {str(err).splitlines()[0][:100]}", file=sys.stderr)
        return None
    return lambda: sess.run(None, feeds)


# ----------------------------------------------------------------------------- tidlc cases
def cases(rng) -> list[dict]:
    from tidlc.backends.tidl.fixed import fast_ops
    from tidlc.backends.tidl.fixed import reference as ref

    from tidlc.ir.ops.tensor import _source_coords
    from tidlc.ir.types import QuantInfo

    def u8(*shape):
        return rng.integers(0, 256, shape).astype(np.uint8)

    out = []

    def pool(name, shape, k, s, p, mode):
        q = u8(*shape)
        h, w = shape[2:]
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        window = ((k, k), (s, s), (p, p, p, p), (1, 1), ho, wo)
        if mode == "max":
            fn = lambda: fast_ops.max_pool(q, *window, None, np.uint8)
        else:
            counts = np.full((ho, wo), k * k)
            fn = lambda: fast_ops.avg_pool(q, *window, counts, (20.0, 20.0, 0, 255), np.uint8)
        out.append({"name": name, "shape": shape, "op": "maxpool" if mode == "max" else "avgpool", "tidlc": fn,
                    "window": ([k, k], [s, s], [p] * 4), "ort_feeds": {"x": q}})

    pool("maxpool 3x3 s2", (1, 64, 112, 112), 3, 2, 1, "max")
    pool("maxpool 2x2 s2", (1, 64, 112, 112), 2, 2, 0, "max")
    pool("avgpool 3x3 s1", (1, 64, 56, 56), 3, 1, 1, "avg")
    g = u8(1, 1280, 7, 7)
    out.append({"name": "global avg pool", "shape": g.shape, "op": "global_avg", "ort_feeds": {"x": g},
                "tidlc": lambda: fast_ops.global_pool(g, "avg", (20.0, 14.0, 0, 255), np.uint8)})
    gm = u8(1, 512, 14, 14)
    out.append({"name": "global max pool", "shape": gm.shape, "op": "global_max", "ort_feeds": {"x": gm},
                "tidlc": lambda: fast_ops.global_pool(gm, "max", None, np.uint8)})
    for shape in ((1, 3, 224, 224), (1, 64, 112, 112)):
        x = rng.normal(0, 3, shape).astype(np.float32)
        q = u8(*shape)
        info = QuantInfo(bits=8, signed=False, scale=(20.0,))
        out.append({"name": "quantize f32->u8", "shape": shape, "op": "quantize", "ort_feeds": {"x": x},
                        "tidlc": lambda x=x, info=info: fast_ops.convert(x, None, info, "u8")})
        out.append({"name": "dequantize u8->f32", "shape": shape, "op": "dequantize", "ort_feeds": {"x": q},
                        "tidlc": lambda q=q, info=info: fast_ops.convert(q, info, None, "f32")})
    a, b = u8(1, 64, 56, 56), u8(1, 64, 56, 56)
    out.append({"name": "concat (requant)", "shape": (1, 128, 56, 56), "op": "concat", "ort_feeds": {"a": a, "b": b},
                "tidlc": lambda: fast_ops.concat([a, b], [20.0, 14.3], 25.0, 0, 255, 1, np.uint8)})
    r = u8(1, 64, 56, 56)
    axes = [(axis, *ref.linear_weights(_source_coords(112, 56, 2.0, "half_pixel"), 56)) for axis in (2, 3)]
    out.append({"name": "resize bilinear x2", "shape": r.shape, "op": "resize", "ort_feeds": {"x": r},
                "tidlc": lambda: fast_ops.resize_linear(r, axes, None, np.uint8)})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=31)
    parser.add_argument("--ops", default="", help="comma-separated substrings of the op names to run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    from tidlc.backends.tidl.fixed import _igemm, fast
    isas = [i for i in ("avx2", "c") if i in _igemm.supported_isas()]
    rng = np.random.default_rng(0)
    rows = []
    for case in cases(rng):
        if args.ops and not any(s.strip() and s.strip() in case["name"] for s in args.ops.split(",")):
            continue
        fns = {}
        for isa in isas:
            def run(isa=isa, fn=case["tidlc"]):
                fast.set_isa(isa)
                return fn()
            fns[isa] = run
        peer = ort_peer(case)
        if peer is not None:
            fns["onnxruntime"] = peer
        times = median_times(fns, args.repeat, pause=0.0)
        row = {"op": case["name"], "shape": "x".join(map(str, case["shape"])),
               **{f"{k}_ms": v * 1e3 for k, v in times.items()}}
        rows.append(row)
    fast.set_isa(None)
    if args.json:
        print(json.dumps({"isas": isas, "rows": rows}, indent=2))
        return 0
    head = f"{'op':<20} {'shape':<14}" + "".join(f" {i + ' ms':>10}" for i in isas) + f" {'ort ms':>9}" \
        + "".join(f" {i + '/ort':>9}" for i in isas) + f" {'c/avx2':>7}"
    print(head)
    print("-" * len(head))
    for row in rows:
        ort_ms = row.get("onnxruntime_ms")
        line = f"{row['op']:<20} {row['shape']:<14}" + "".join(f" {row[i + '_ms']:>10.3f}" for i in isas)
        line += f" {ort_ms:>9.3f}" if ort_ms else f" {'-':>9}"
        line += "".join(f" {row[i + '_ms'] / ort_ms:>9.2f}" if ort_ms else f" {'-':>9}" for i in isas)
        line += f" {row['c_ms'] / row['avx2_ms']:>7.2f}" if "avx2" in isas else ""
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
