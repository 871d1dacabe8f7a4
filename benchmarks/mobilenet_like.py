"""A MobileNetV2 whose batch-norm layers look trained, as ONNX, frozen .pb and .tflite.

No trained MobileNetV2 is available offline, and the test suite's Keras
MobileNetV2 (tests/frontends/tensorflow/make_models.py) draws its batch-norm
statistics uniformly in [0.5, 1.5]: after folding, every channel of a layer has
about the same weight range, so per-tensor 8-bit weights lose little and
cross-layer equalization has nothing to do. In a trained MobileNetV2 the
folded depthwise ranges spread over two to three decades (Nagel et al., ICCV
2019, fig. 2), mostly because some channels feeding a depthwise layer are
nearly dead (ReLU6 of a strongly negative pre-activation): their variance is
tiny, and BN's ``gamma / sqrt(var + eps)`` multiplies the depthwise weights by
up to ``1 / sqrt(eps)``. This builder reproduces that mechanism:

* ``keras.applications.MobileNetV2(weights=None, classifier_activation=None)``,
  seeded (Glorot-uniform kernels, as Keras initializes them);
* every BatchNormalization gets ``gamma ~ lognormal(0, 0.5)`` and
  ``beta ~ normal(0, 1)`` (so some channels after ReLU6 are nearly always 0
  and some nearly always clipped at 6, as in trained nets);
* ``moving_mean`` / ``moving_variance`` are then the real per-channel batch
  statistics of 24 natural-image crops (preprocessed as Keras does: ``x / 127.5
  - 1``), all layers at once (one forward pass in training mode with momentum
  0): every BN normalizes what it actually sees, as after training.

The result (printed by ``--stats``): folded depthwise per-channel weight
ranges with a median max/min ratio over layers of about 10^2 to 10^3.

Exports: ONNX (NCHW, one node per Keras layer: Conv, BatchNormalization,
Clip(0, 6), explicit Pad for ZeroPadding2D, Add, GlobalAveragePool, Gemm; checked
against Keras to 1e-4), and from the same model the frozen ``.pb`` and float
``.tflite`` (TensorFlow's own converters, as make_models.py does). Cached under
``~/.cache/tidlc-tests/mobilenet-like-<hash of this file>``.

    python benchmarks/mobilenet_like.py [--stats]   # prints the folder
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np

SIZE = 224
SEED = 0
BN_FRAMES = 24
FILES = ("mobilenet_v2.onnx", "mobilenet_v2.pb", "mobilenet_v2.tflite")


def cache_dir() -> str:
    base = os.environ.get("TIDLC_TEST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tidlc-tests")
    with open(os.path.abspath(__file__), "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()[:12]
    return os.path.join(base, f"mobilenet-like-{digest}")


def cached() -> str:
    folder = cache_dir()
    if all(os.path.exists(os.path.join(folder, f)) for f in FILES):
        return folder
    partial = f"{folder}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    build(partial)
    try:
        os.replace(partial, folder)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def bn_frames(count: int = BN_FRAMES) -> np.ndarray:
    """NHWC float crops of the benchmark's natural images, in [-1, 1] (Keras' preprocessing)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from quant_quality import crops, natural_images
    images = [img[:, :, ::-1] for img in crops(natural_images(), count, (SIZE, SIZE), seed=7)]  # RGB
    return np.stack(images).astype(np.float32) / 127.5 - 1.0


def make_keras_model():
    import keras
    keras.utils.set_random_seed(SEED)
    model = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), weights=None, classifier_activation=None)
    rng = np.random.default_rng(SEED + 1)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bns:
        gamma, _beta, mean, var = layer.get_weights()
        n = gamma.shape[0]
        layer.set_weights([rng.lognormal(0.0, 0.5, n).astype(np.float32), rng.normal(0.0, 1.0, n).astype(np.float32),
                           mean, var])
        layer.momentum = 0.0
    model(bn_frames(), training=True)  # moving statistics := this batch's statistics, layer by layer
    for layer in bns:
        layer.momentum = 0.99
    return model


def _tensor_layer(t) -> str:
    return t._keras_history.operation.name


def to_onnx(model, path: str) -> None:
    """The Keras MobileNetV2 as an NCHW ONNX graph (the layer types MobileNetV2 uses)."""
    import keras
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits = [], []
    out_name = {}

    def init(array, name):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array.astype(np.float32)), name))
        return name

    for layer in model.layers:
        name = layer.name
        if isinstance(layer, keras.layers.InputLayer):
            out_name[name] = "input"
            continue
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        ins = [out_name[_tensor_layer(t)] for t in inputs]
        out_name[name] = name
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            k = layer.get_weights()[0]  # (kh, kw, C, 1)
            w = np.transpose(k, (2, 3, 0, 1))
            nodes.append(_conv(helper, layer, ins[0], init(w, name + ".w"), w.shape[0], name))
        elif isinstance(layer, keras.layers.Conv2D):
            weights = layer.get_weights()
            w = np.transpose(weights[0], (3, 2, 0, 1))
            extra = [init(weights[1], name + ".b")] if layer.use_bias else []
            nodes.append(_conv(helper, layer, ins[0], init(w, name + ".w"), 1, name, extra))
        elif isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            names = [init(a, f"{name}.{s}") for a, s in ((g, "g"), (b, "b"), (m, "m"), (v, "v"))]
            nodes.append(helper.make_node("BatchNormalization", [ins[0]] + names, [name], name=name,
                                          epsilon=float(layer.epsilon)))
        elif isinstance(layer, keras.layers.ReLU):
            lo = init(np.array(0.0), name + ".lo")
            hi = init(np.array(float(layer.max_value)), name + ".hi")
            nodes.append(helper.make_node("Clip", [ins[0], lo, hi], [name], name=name))
        elif isinstance(layer, keras.layers.ZeroPadding2D):
            (top, bottom), (left, right) = layer.padding
            pads = numpy_helper.from_array(np.array([0, 0, top, left, 0, 0, bottom, right], np.int64), name + ".pads")
            inits.append(pads)
            nodes.append(helper.make_node("Pad", [ins[0], pads.name], [name], name=name, mode="constant"))
        elif isinstance(layer, keras.layers.Add):
            nodes.append(helper.make_node("Add", ins, [name], name=name))
        elif isinstance(layer, keras.layers.GlobalAveragePooling2D):
            nodes.append(helper.make_node("GlobalAveragePool", ins, [name + ".pool"], name=name))
            nodes.append(helper.make_node("Flatten", [name + ".pool"], [name], name=name + ".flatten", axis=1))
        elif isinstance(layer, keras.layers.Dense):
            w, b = layer.get_weights()
            nodes.append(helper.make_node("Gemm", [ins[0], init(w.T, name + ".w"), init(b, name + ".b")], [name],
                                          name=name, transB=1))
        else:
            raise NotImplementedError(f"to_onnx: {type(layer).__name__} ({name})")
    last = out_name[model.layers[-1].name]
    nodes.append(helper.make_node("Identity", [last], ["logits"], name="output"))
    graph = helper.make_graph(nodes, "mobilenet_v2_like",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, path)


def _conv(helper, layer, x, w, group_of, name, extra=()):
    kh, kw = layer.kernel_size
    sh, sw = layer.strides
    group = layer.input.shape[-1] if group_of != 1 else 1
    if layer.padding == "same":  # TF: the extra row/column goes bottom/right
        h, wd = layer.input.shape[1], layer.input.shape[2]
        ph = max((-(-h // sh) - 1) * sh + kh - h, 0)
        pw = max((-(-wd // sw) - 1) * sw + kw - wd, 0)
        pads = [ph // 2, pw // 2, ph - ph // 2, pw - pw // 2]
    else:
        pads = [0, 0, 0, 0]
    return helper.make_node("Conv", [x, w, *extra], [name], name=name, kernel_shape=[kh, kw], strides=[sh, sw],
                            pads=pads, group=int(group))


def build(outdir: str) -> None:
    import warnings
    warnings.filterwarnings("ignore")
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "frontends",
                                    "tensorflow"))
    from make_models import freeze, write
    os.makedirs(outdir, exist_ok=True)
    model = make_keras_model()
    to_onnx(model, os.path.join(outdir, "mobilenet_v2.onnx"))
    x = bn_frames(2)[:1]
    ref = np.asarray(model(x, training=False))
    import onnxruntime as ort
    sess = ort.InferenceSession(os.path.join(outdir, "mobilenet_v2.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
    err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
    if err > 1e-4:
        raise SystemExit(f"mobilenet_like: the ONNX export differs from Keras by {err:.2e}")
    concrete, fn, graph_def = freeze(model, SIZE)
    write(os.path.join(outdir, "mobilenet_v2.pb"), graph_def.SerializeToString())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
    write(os.path.join(outdir, "mobilenet_v2.tflite"), converter.convert())


def depthwise_spread(path: str) -> list[float]:
    """max/min of the folded per-channel weight ranges of every depthwise layer (tidlc -O2)."""
    from tidlc.compiler import load, optimize
    from tidlc.config import CompileOptions
    opts = CompileOptions.of(opt_level=2, emit="none")
    graph = load(path, opts)
    optimize(graph, opts)
    out = []
    for op in graph.ops:
        if op.kind == "conv2d" and op.attrs["groups"] > 1:
            w = op.operands[1].const_value()
            r = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
            out.append(float(r.max() / max(r.min(), 1e-12)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stats", action="store_true", help="print the folded depthwise range spreads")
    args = ap.parse_args(argv)
    folder = cached()
    print(folder)
    if args.stats:
        spread = depthwise_spread(os.path.join(folder, "mobilenet_v2.onnx"))
        print("depthwise max/min range ratio per layer:", " ".join(f"{s:.0f}" for s in spread))
        print(f"median {np.median(spread):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
