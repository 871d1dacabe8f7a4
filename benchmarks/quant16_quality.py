"""16-bit quantization quality: every test model available offline at ``--bits 16``, output SNR vs float.

For each model: compile (quantize) at 16 bits on natural-image calibration
frames, run the fixed-point executor on other natural-image frames, and
report the output SNR (dB) against the float model (the mean over outputs of
the SNR accumulated over all frames) and the worst layer as ``tidlc compare
--bits 16`` finds it (the first layer below the threshold, else the layer
with the lowest SNR).

Models: those of benchmarks/quant_quality.py (the Caffe corpus models with
weights: LeNet, CIFAR-10 quick, MTCNN det1-3, UltraFace slim/RFB-320;
UltraFace RFB-320 ONNX; the MobileNetV2 with trained-like batch norm of
benchmarks/mobilenet_like.py as ONNX, .pb and .tflite), UltraFace RFB-320 of
../shared/corpus/extra (ONNX and its TFLite twin), the Keras MobileNetV2 the
TensorFlow tests build (.pb and .tflite, random weights and batch norm;
skipped without TensorFlow), and small seeded ONNX models with the heads that
stress 16-bit table ops (conv -> sigmoid, a text detector's probability head
with wide logits, tanh, softmax, hardswish, hardsigmoid, exp).

With ``--mediapipe DIR``, also the trained MediaPipe models in ``mediapipe`` 0.10.14's wheel
(Apache-2.0; the face and palm detectors the 16-bit issue names, the pose detector, hand and
face landmarks): ``DIR`` holds them after ``pip download --no-deps mediapipe==0.10.14 -d DIR``
(the .tflite files are read from the wheel). Inputs as MediaPipe's graphs normalize them:
[-1, 1] for the face and pose detectors, [0, 1] for the rest.

With ``-O 3``: what ``tidlc compile -O3`` quantizes (cross-layer equalization
kept or undone by its check, which at 16 bits also tries the activation-range
weights; GPTQ weight rounding on graphs with depthwise layers, checked); the
row says what the checks chose.

    python benchmarks/quant16_quality.py [--models a,b] [-O 3] [--calib-frames 8] [--eval-frames 4] [--json FILE|-]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quant_quality as qq

REPO = qq.REPO
EXTRA = qq.SHARED / "corpus" / "extra" / "ultraface"
THRESHOLD = 60.0


# ----------------------------------------------------------------------------- small ONNX heads
def _conv(helper, numpy_helper, rng, inits, name, x, cin, cout, k=3, stride=1, std=None):
    w = rng.normal(0.0, std or math.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k)).astype(np.float32)
    b = rng.normal(0.0, 0.1, cout).astype(np.float32)
    inits += [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
    return helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [name], pads=[k // 2] * 4, strides=[stride] * 2)


def head_model(path: str, head: str, size: int = 64, seed: int = 0) -> None:
    """A small seeded CNN (conv-relu x3, stride 2) ending in ``head``: ``sigmoid`` (a text detector's
    score map: one channel, biased toward background), ``tanh``, ``softmax`` (over channels),
    ``hardswish`` / ``hardsigmoid`` (then a 1x1 conv), ``exp`` (a box-size regressor)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    nodes.append(_conv(helper, numpy_helper, rng, inits, "c1", "input", 3, 16, stride=2))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"]))
    nodes.append(_conv(helper, numpy_helper, rng, inits, "c2", "r1", 16, 32))
    nodes.append(helper.make_node("Relu", ["c2"], ["r2"]))
    nodes.append(_conv(helper, numpy_helper, rng, inits, "c3", "r2", 32, 32))
    nodes.append(helper.make_node("Relu", ["c3"], ["r3"]))
    out_c = {"sigmoid": 1, "softmax": 4}.get(head, 8)  # (textdet: 8 channels into its deconvs)
    nodes.append(_conv(helper, numpy_helper, rng, inits, "logits", "r3", 32, out_c, k=1,
                       std=(3.0 if head == "sigmoid" else 1.0) / math.sqrt(32)))
    last = "logits"
    if head == "textdet":  # DBNet's probability head: conv-BN-ReLU, two 2x2 stride-2 deconvs, sigmoid
        w1 = rng.normal(0.0, 0.5 / math.sqrt(8 * 4), (8, 8, 2, 2)).astype(np.float32)
        w2 = rng.normal(0.0, 24.0 / math.sqrt(8 * 4), (8, 1, 2, 2)).astype(np.float32)
        inits += [numpy_helper.from_array(w1, "up1.w"), numpy_helper.from_array(np.full(8, 0.1, np.float32), "up1.b"),
                  numpy_helper.from_array(w2, "up2.w"), numpy_helper.from_array(np.array([-8.0], np.float32), "up2.b")]
        nodes.append(helper.make_node("Relu", ["logits"], ["lr"]))
        nodes.append(helper.make_node("ConvTranspose", ["lr", "up1.w", "up1.b"], ["up1"], strides=[2, 2]))
        nodes.append(helper.make_node("Relu", ["up1"], ["ur"]))
        nodes.append(helper.make_node("ConvTranspose", ["ur", "up2.w", "up2.b"], ["up2"], strides=[2, 2]))
        nodes.append(helper.make_node("Sigmoid", ["up2"], ["out"]))
    elif head == "sigmoid":  # background-heavy: most scores near 0, like a text detector's probability map
        inits.append(numpy_helper.from_array(np.array([-4.0], np.float32), "shift"))
        nodes.append(helper.make_node("Add", ["logits", "shift"], ["shifted"]))
        nodes.append(helper.make_node("Sigmoid", ["shifted"], ["out"]))
    elif head == "tanh":
        nodes.append(helper.make_node("Tanh", [last], ["out"]))
    elif head == "softmax":
        nodes.append(helper.make_node("Softmax", [last], ["out"], axis=1))
    elif head == "exp":
        nodes.append(helper.make_node("Exp", [last], ["out"]))
    elif head in ("hardswish", "hardsigmoid"):
        nodes.append(helper.make_node("HardSwish" if head == "hardswish" else "HardSigmoid", [last], ["act"]))
        nodes.append(_conv(helper, numpy_helper, rng, inits, "out", "act", 8, 4, k=1))
    else:
        raise ValueError(head)
    side = size * 2 if head == "textdet" else size // 2
    shape_c = {"sigmoid": 1, "textdet": 1, "softmax": 4, "hardswish": 4, "hardsigmoid": 4}.get(head, 8)
    graph = helper.make_graph(nodes, f"head_{head}",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, shape_c, side, side])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.save(model, path)


HEADS = ("sigmoid", "textdet", "tanh", "softmax", "exp", "hardswish", "hardsigmoid")


# ----------------------------------------------------------------------------- the model list
def tf_models_folder() -> Path | None:
    """The Keras models of the TensorFlow tests (built and cached by make_models.py), or None."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return None
    sys.path.insert(0, str(REPO / "tests" / "frontends" / "tensorflow"))
    import make_models
    return Path(make_models.cached(224))


def models(tmp: str, with_tf: bool = True) -> dict[str, qq.Model]:
    out = {k: v for k, v in qq.models().items()}
    if (EXTRA / "version-RFB-320_without_postprocessing.onnx").exists():
        out["ultraface-extra-onnx"] = qq.Model("UltraFace RFB-320 (extra, ONNX)",
                                               EXTRA / "version-RFB-320_without_postprocessing.onnx",
                                               mean=(127.0,), scale=(1 / 128,))
    if (EXTRA / "version-RFB-320_without_postprocessing.tflite").exists():
        out["ultraface-extra-tflite"] = qq.Model("UltraFace RFB-320 (extra, TFLite)",
                                                 EXTRA / "version-RFB-320_without_postprocessing.tflite",
                                                 mean=(127.0,), scale=(1 / 128,))
    for head in HEADS:
        path = os.path.join(tmp, f"head_{head}.onnx")
        head_model(path, head)
        out[f"head-{head}"] = qq.Model(f"conv -> {head} (ONNX, seeded)", path, mean=(127.5,), scale=(1 / 127.5,))
    folder = tf_models_folder() if with_tf else None
    if folder is not None:
        for name, file in (("keras-mobilenetv2-pb", "mobilenet_v2.pb"),
                           ("keras-mobilenetv2-tflite", "mobilenet_v2.tflite")):
            out[name] = qq.Model(f"MobileNetV2 (Keras, test suite's BN, {file.split('.')[-1]})", folder / file,
                                 mean=(127.5,), scale=(1 / 127.5,))
            out[name].extra = {"input_shapes": {"input": (1, 224, 224, 3)}}
    return out


MEDIAPIPE = {  # key: (path in the wheel, mean, scale)
    "mp-face-detection": ("mediapipe/modules/face_detection/face_detection_short_range.tflite", 127.5, 1 / 127.5),
    "mp-palm-lite": ("mediapipe/modules/palm_detection/palm_detection_lite.tflite", 0.0, 1 / 255),
    "mp-palm-full": ("mediapipe/modules/palm_detection/palm_detection_full.tflite", 0.0, 1 / 255),
    "mp-pose-detection": ("mediapipe/modules/pose_detection/pose_detection.tflite", 127.5, 1 / 127.5),
    "mp-face-landmark": ("mediapipe/modules/face_landmark/face_landmark.tflite", 0.0, 1 / 255),
    "mp-face-mesh-attention": ("mediapipe/modules/face_landmark/face_landmark_with_attention.tflite", 0.0, 1 / 255),
    "mp-hand-landmark-lite": ("mediapipe/modules/hand_landmark/hand_landmark_lite.tflite", 0.0, 1 / 255),
    "mp-iris-landmark": ("mediapipe/modules/iris_landmark/iris_landmark.tflite", 0.0, 1 / 255),
}


def mediapipe_models(folder: str, tmp: str) -> dict[str, qq.Model]:
    """The MEDIAPIPE models, extracted from the mediapipe wheel in ``folder``."""
    import zipfile
    wheels = sorted(Path(folder).glob("mediapipe-*.whl"))
    if not wheels:
        raise SystemExit(f"--mediapipe {folder}: no mediapipe wheel there "
                         f"(pip download --no-deps mediapipe==0.10.14 -d {folder})")
    out = {}
    with zipfile.ZipFile(wheels[-1]) as wheel:
        names = set(wheel.namelist())
        for key, (inner, mean, scale) in MEDIAPIPE.items():
            if inner in names:
                path = Path(tmp) / Path(inner).name
                path.write_bytes(wheel.read(inner))
                out[key] = qq.Model(f"MediaPipe {path.stem} (TFLite)", path, mean=(mean,), scale=(scale,))
    return out


# ----------------------------------------------------------------------------- one model
def frames_for(graph, model: qq.Model, images, count: int, seed: int) -> list[dict]:
    """quant_quality's frames, for NCHW or NHWC inputs (the TFLite and Keras models are NHWC)."""
    from tidlc.preprocess import Preprocess, _chw, input_specs
    spec = input_specs(graph)[0]
    c, h, w = _chw(spec.shape, spec.layout)
    pre = Preprocess(mean=model.mean, scale=model.scale, channel_order="rgb" if model.rgb else "bgr")
    return [{spec.name: pre.apply(img, spec.shape, spec.layout)}
            for img in qq.crops(images, count, (w, h), seed, gray=model.gray or c == 1)]


def worst_layer(quantized, feeds, threshold: float) -> dict:
    """What ``tidlc compare`` names: the layer whose own error alone costs the outputs the most
    (noise injection), and the first layer below ``threshold``."""
    from tidlc.commands.compare import culprit_of, layer_rows, mark
    rows = layer_rows(quantized, feeds, attribution=True)
    first = mark(rows, threshold)
    row = culprit_of(rows) or min(rows, key=lambda r: r.snr_db)
    return {"name": row.name, "op": row.op, "snr_db": row.snr_db, "own_snr_db": row.own_snr_db,
            "alone_snr_db": row.alone_snr_db, "cause": row.cause,
            "first_below": first.name if first is not None else None}


def measure(key: str, model: qq.Model, images, n_calib: int, n_eval: int, threshold: float = THRESHOLD,
            bits: int = 16, with_bounds: bool = False, opt_level: int = 2) -> dict:
    from tidlc.backends.tidl.fixed import FixedExecutor
    from tidlc.backends.tidl.quantize.api import quantize_checked

    from tidlc.compiler import load, optimize
    from tidlc.interp import Interpreter
    # -O3: what `tidlc compile -O3` runs (equalize and its check, the weights check); the inputs are
    # images pre-processed by mean/scale (--mean/--scale), which bounds their range for equalize
    opts = model.options(bits=bits, opt_level=opt_level, **getattr(model, "extra", {}),
                         **({"mean": model.mean, "scale": model.scale} if opt_level == 3 else {}))
    graph = load(model.path, opts)
    undo = optimize(graph, opts).stash.get("equalize")
    calib = frames_for(graph, model, images, n_calib, seed=1)
    evals = frames_for(graph, model, images, n_eval, seed=2)
    interp = Interpreter(graph)
    ref_outputs = [interp.run(f) for f in evals]
    start = time.perf_counter()
    q = quantize_checked(graph, opts, undo, frames=calib)[0]
    seconds = time.perf_counter() - start
    verdicts = {k.split(".")[1]: str(q.graph.attrs[k]).split(":")[0] for k in ("quant.equalize", "quant.weights")
                if k in q.graph.attrs}
    executor = FixedExecutor(q.graph)
    outs = [executor.run(f) for f in evals]
    per_output = output_snrs(ref_outputs, outs)
    ref_feeds = {op.attrs["name"]: evals[0][op.attrs["name"]] for op in q.reference.input_ops}
    worst = worst_layer(q, ref_feeds, threshold)
    extra = {}
    if with_bounds:  # on the float graph that was quantized (-O3: as its equalize check chose)
        chosen = Interpreter(q.reference)
        extra["bounds_db"] = bounds(q.reference, evals, [chosen.run(f) for f in evals], bits)
    return {**extra, "key": key, "model": model.name, "bits": bits, "opt_level": opt_level, "chosen": verdicts,
            "snr_db": min(per_output.values()),
            "mean_snr_db": float(np.mean([min(v, 150.0) for v in per_output.values()])),
            "outputs_db": per_output, "quantize_seconds": seconds, "worst_layer": worst}


VALUE_KEEPING = ("reshape", "flatten", "transpose", "squeeze", "unsqueeze", "identity")


def _channel_grid(x: np.ndarray, bits: int) -> np.ndarray:
    """``x`` rounded to a ``bits``-bit grid per channel (axis 1) fitted to the channel's own range (per
    tensor for a tensor of rank < 3): what per-channel activation scales would allow (TIDL has none)."""
    from tidlc.backends.tidl.quantize.mixed import _fake_quant
    from tidlc.backends.tidl.quantize.ptq import full_range_scale

    from tidlc.ir.types import QuantInfo
    x = np.asarray(x, np.float64)
    if x.ndim < 3:
        return _grid(x, bits)
    signed = bool(x.min() < 0)
    per = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)
    scales = tuple(full_range_scale(float(c.min()), float(c.max()), bits, signed) for c in per)
    return _fake_quant(x, QuantInfo(bits, signed, scales, axis=1))


def _grid(x: np.ndarray, bits: int) -> np.ndarray:
    """``x`` rounded to the ``bits``-bit grid of its own range (unsigned when x >= 0), as the
    quantizer rounds: its full-range scale, halves away from zero."""
    from tidlc.backends.tidl.quantize.mixed import _fake_quant
    from tidlc.backends.tidl.quantize.ptq import full_range_scale

    from tidlc.ir.types import QuantInfo
    x = np.asarray(x, np.float64)
    if not np.any(x):
        return x
    signed = bool(x.min() < 0)
    return _fake_quant(x, QuantInfo(bits, signed, full_range_scale(float(x.min()), float(x.max()), bits, signed)))


def _weight_grid(w: np.ndarray, bits: int, per_channel: bool) -> np.ndarray:
    """``w`` on the quantizer's np2 weight grid: one scale per tensor (TIDL) or per output channel."""
    from tidlc.backends.tidl.quantize.mixed import _fake_quant
    from tidlc.backends.tidl.quantize.ptq import weight_range, weight_scale

    from tidlc.ir.types import QuantInfo
    w = np.asarray(w, np.float64)
    sw = weight_scale(weight_range(w, per_channel, bits), bits, "np2")  # the 16-bit scale: nothing saturates
    return _fake_quant(w, QuantInfo(bits, True, tuple(np.atleast_1d(sw)), axis=0 if per_channel else None))


def bound_outputs(graph, feeds, bits: int, what: str) -> dict[str, np.ndarray]:
    """The float graph's outputs with one part of quantization only, what a ``bits``-bit scheme can
    reach at best with it: ``weights`` (every MAC layer's weights on one grid per tensor, as TIDL
    stores them), ``weights-per-channel`` (a grid per output channel), ``activations`` (float
    weights; the input and every layer's output rounded to a grid fitted to its own range on this
    very frame: an ideal calibration with non-power-of-2 scales), ``activations-per-channel`` (the
    same with one grid per channel)."""
    from tidlc.interp import evaluate_op
    env: dict[int, np.ndarray] = {}
    weights = {id(op.operands[1]) for op in graph.ops if op.kind in ("conv2d", "dense", "deconv2d")
               and len(op.operands) > 1 and op.operands[1].const_value() is not None}
    for op in graph.ops:
        if op.kind == "input":
            x = np.asarray(feeds[op.attrs["name"]])
            env[id(op.results[0])] = _grid(x, bits) if what.startswith("activations") else x
            continue
        if op.kind == "const":
            c = op.results[0].const_value()
            if id(op.results[0]) in weights and what.startswith("weights"):
                c = _weight_grid(c, bits, what == "weights-per-channel").astype(c.dtype)
            env[id(op.results[0])] = c
            continue
        results = evaluate_op(op, [env[id(u)] for u in op.operands])
        for r, value in zip(op.results, results):
            value = np.asarray(value)
            keeps = op.kind in VALUE_KEEPING or (op.kind == "pool2d" and op.attrs.get("mode") == "max")
            if what.startswith("activations") and not keeps and value.dtype.kind == "f":
                grid = _channel_grid if what == "activations-per-channel" else _grid
                value = grid(value, bits).astype(value.dtype)
            env[id(r)] = value
    return {name: env[id(v)] for name, v in zip(graph.output_names, graph.outputs)}


def bounds(graph, evals, ref_outputs, bits: int) -> dict[str, float]:
    """Worst-output SNR (dB) of each :func:`bound_outputs` kind over the evaluation frames."""
    return {what: min(output_snrs(ref_outputs, [bound_outputs(graph, f, bits, what) for f in evals]).values())
            for what in ("weights", "weights-per-channel", "activations", "activations-per-channel")}


def output_snrs(ref_outputs, outputs) -> dict[str, float]:
    """Per output name, the SNR (dB) accumulated over all frames (capped at 150 dB: exact)."""
    from tidlc.metrics import SnrAccumulator
    acc: dict[str, SnrAccumulator] = {}
    for ref, out in zip(ref_outputs, outputs):
        for name, value in ref.items():
            acc.setdefault(name, SnrAccumulator()).add(value, out[name])
    return {name: min(a.db, 150.0) for name, a in acc.items()}


def short(name: str, width: int = 48) -> str:
    """TFLite layer names join every fused TF name with ';': the first one."""
    name = name.split(";")[0]
    return name if len(name) <= width else "..." + name[-(width - 3):]


def fmt_db(value) -> str:
    return "-" if value is None else "inf" if math.isinf(value) else f"{value:.1f}"


def _bounds_text(row: dict) -> str:
    b = row.get("bounds_db")
    if not b:
        return ""
    return "; alone: " + ", ".join(f"{k} {fmt_db(v)}" for k, v in b.items())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="", help="comma-separated keys (default: all available)")
    ap.add_argument("--calib-frames", type=int, default=16)
    ap.add_argument("--eval-frames", type=int, default=4)
    ap.add_argument("--bits", type=int, default=16)
    ap.add_argument("-O", dest="opt_level", type=int, choices=(2, 3), default=2,
                    help="2 (default) or 3: what `tidlc compile -O3` quantizes (equalize and its checks)")
    ap.add_argument("--threshold", type=float, default=THRESHOLD, help="compare's threshold (dB)")
    ap.add_argument("--no-tf", action="store_true", help="skip the Keras models (no TensorFlow build)")
    ap.add_argument("--mediapipe", metavar="DIR", help="also the trained MediaPipe models of the mediapipe wheel in DIR")
    ap.add_argument("--bounds", action="store_true",
                    help="also what each part of quantization allows alone: weights per tensor (TIDL), weights per "
                         "channel, activations on ideal per-frame grids (float runs on the evaluation frames)")
    ap.add_argument("--json", metavar="FILE", help="write the rows as JSON ('-': stdout only)")
    args = ap.parse_args(argv)
    quiet = args.json == "-"
    images = qq.natural_images()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        available = models(tmp, with_tf=not args.no_tf)
        if args.mediapipe:
            available.update(mediapipe_models(args.mediapipe, tmp))
        keys = args.models.split(",") if args.models else list(available)
        unknown = [k for k in keys if k not in available]
        if unknown:
            raise SystemExit(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(available)}")
        for key in keys:
            row = measure(key, available[key], images, args.calib_frames, args.eval_frames, args.threshold,
                          args.bits, with_bounds=args.bounds, opt_level=args.opt_level)
            rows.append(row)
            if not quiet:
                w = row["worst_layer"]
                outs = ", ".join(f"{n} {v:.1f}" for n, v in row["outputs_db"].items())
                print(f"{key:<24} {row['snr_db']:7.2f} dB  ({outs})  worst layer {short(w['name'])} ({w['op']}, "
                      f"alone {fmt_db(w['alone_snr_db'])} dB)" + _bounds_text(row) +
                      ("".join(f"; {k}: {v}" for k, v in row["chosen"].items())), flush=True)
    if not quiet:
        print()
        more = " alone: weights per tensor / per channel / ideal activations per tensor / per channel (dB) |" \
            if args.bounds else ""
        print(f"| model | -O{args.opt_level} {args.bits}-bit output SNR, worst output (dB) | per output (dB) | layer costing the most "
              "(outputs with its error alone, dB) |" + more)
        print("|---|---:|---|---|" + ("---|" if args.bounds else ""))
        for r in rows:
            w = r["worst_layer"]
            outs = ", ".join(f"{n} {v:.1f}" for n, v in r["outputs_db"].items())
            b = r.get("bounds_db")
            print(f"| {r['model']} | {r['snr_db']:.2f} | {outs} | {short(w['name'])} ({w['op']}, "
                  f"{fmt_db(w['alone_snr_db'])}) |" + (" " + " / ".join(fmt_db(v) for v in b.values()) + " |"
                                                       if b else ""))
    if args.json:
        text = json.dumps({"bits": args.bits, "threshold_db": args.threshold, "calib_frames": args.calib_frames,
                           "eval_frames": args.eval_frames, "models": rows}, indent=2,
                          default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else str(v))
        if args.json == "-":
            sys.stdout.write(text + "\n")
        else:
            Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
