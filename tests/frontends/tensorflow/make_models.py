"""Build the TensorFlow / TFLite test models with TensorFlow's own tools, plus their reference outputs.

    python tests/frontends/tensorflow/make_models.py OUTDIR [--size 224]
    python tests/frontends/tensorflow/make_models.py --cached   # prints the cache folder

writes into OUTDIR:

* ``mobilenet_v2.pb``, ``resnet50.pb``: Keras applications (``weights=None``,
  seeded; batch-norm statistics randomised so fusing them is really tested;
  ``classifier_activation=None``: the output is the logits, as a softmax over
  random logits is flat and would hide errors), traced with ``tf.function``
  and frozen with ``convert_variables_to_constants_v2``; input ``input``
  ``(None, size, size, 3)``, output node ``Identity``;
* ``mobilenet_v2.tflite`` (float32), ``mobilenet_v2_f16.tflite`` (float16
  weights: DEQUANTIZE ops) and ``mobilenet_v2_int8.tflite`` (full-integer
  int8, int8 input and output, calibrated on 8 seeded random images in [-1, 1])
  from the same Keras model with ``tf.lite.TFLiteConverter``;
* ``reference.npz``: one seeded input per model and the outputs of TensorFlow
  (the frozen graphs) and of the TFLite interpreter, both with its default
  kernels (XNNPACK) and without delegates (TFLite's own optimized kernels);
* ``versions.json``: the TensorFlow and Keras versions used.

The test suite runs this once into a cache folder keyed by the TensorFlow
version and a hash of this file (tests/frontends/tensorflow/conftest.py), so
a rerun costs nothing; ResNet50's 100 MB .pb is never committed.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # the same numerics on every machine

import numpy as np

SEED = 0
CALIBRATION_FRAMES = 8


def randomize_batchnorm(model, rng) -> None:
    """Give every BatchNormalization non-trivial statistics (the defaults are an identity)."""
    import keras
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n).astype(np.float32),
                               rng.normal(0.0, 0.1, n).astype(np.float32),
                               rng.normal(0.0, 0.1, n).astype(np.float32),
                               rng.uniform(0.5, 1.5, n).astype(np.float32)])


def freeze(model, size: int):
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([None, size, size, 3], tf.float32, name="input"))
    frozen = convert_variables_to_constants_v2(concrete)
    return concrete, fn, frozen.graph.as_graph_def()


def tf_run(graph_def, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run("Identity:0", {"input:0": x})


def tflite_run(path: str, x: np.ndarray, delegates: bool) -> np.ndarray:
    import tensorflow as tf
    kind = tf.lite.experimental.OpResolverType
    interpreter = tf.lite.Interpreter(
        model_path=path, experimental_op_resolver_type=kind.AUTO if delegates else kind.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


def write(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def tensorflow_version() -> str:
    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "none"


def cache_dir(size: int) -> str:
    """``$TIDLC_TEST_CACHE`` (default ``~/.cache/tidlc-tests``)/tf-VERSION-HASH-SIZE: a new TensorFlow
    or an edit of this script gives a new folder."""
    base = os.environ.get("TIDLC_TEST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tidlc-tests")
    with open(os.path.abspath(__file__), "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()[:12]
    return os.path.join(base, f"tf-{tensorflow_version()}-{digest}-{size}")


def cached(size: int) -> str:
    """The cache folder, with the models built in it first if they are not there yet."""
    folder = cache_dir(size)
    if os.path.exists(os.path.join(folder, "versions.json")):
        return folder
    partial = f"{folder}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    sys.stdout, stdout = sys.stderr, sys.stdout  # progress to stderr: stdout names the folder only
    try:
        build(partial, size)
    finally:
        sys.stdout = stdout
    try:
        os.replace(partial, folder)
    except OSError:  # another process finished first
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outdir", nargs="?", help="where to write (omit with --cached)")
    parser.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    parser.add_argument("--cached", action="store_true",
                        help="build into the cache folder unless already there; print the folder")
    args = parser.parse_args(argv)
    if args.cached:
        print(cached(args.size))
        return 0
    if not args.outdir:
        parser.error("give OUTDIR or --cached")
    build(args.outdir, args.size)
    return 0


def build(outdir: str, size: int) -> None:
    os.makedirs(outdir, exist_ok=True)
    start = time.perf_counter()

    import warnings
    warnings.filterwarnings("ignore")
    import keras
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")

    rng = np.random.default_rng(SEED)
    x = rng.uniform(-1.0, 1.0, (1, size, size, 3)).astype(np.float32)
    refs: dict[str, np.ndarray] = {"input": x}

    for name, builder in (("mobilenet_v2", keras.applications.MobileNetV2), ("resnet50", keras.applications.ResNet50)):
        keras.utils.set_random_seed(SEED)
        model = builder(input_shape=(size, size, 3), weights=None, classifier_activation=None)
        randomize_batchnorm(model, np.random.default_rng(SEED + 1))
        concrete, fn, graph_def = freeze(model, size)
        write(os.path.join(outdir, f"{name}.pb"), graph_def.SerializeToString())
        refs[f"{name}.pb"] = tf_run(graph_def, x)
        print(f"{name}.pb: {len(graph_def.node)} nodes", flush=True)
        if name != "mobilenet_v2":
            continue
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
        write(os.path.join(outdir, f"{name}.tflite"), converter.convert())

        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        write(os.path.join(outdir, f"{name}_f16.tflite"), converter.convert())

        def representative():
            calib = np.random.default_rng(SEED + 2)
            for _ in range(CALIBRATION_FRAMES):
                yield [calib.uniform(-1.0, 1.0, (1, size, size, 3)).astype(np.float32)]

        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        write(os.path.join(outdir, f"{name}_int8.tflite"), converter.convert())

        for variant in ("", "_f16"):
            path = os.path.join(outdir, f"{name}{variant}.tflite")
            refs[f"{name}{variant}.tflite"] = tflite_run(path, x, delegates=True)
        path = os.path.join(outdir, f"{name}_int8.tflite")
        interpreter = tf.lite.Interpreter(model_path=path)
        scale, zero = interpreter.get_input_details()[0]["quantization"]
        xq = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
        refs["input_int8"] = xq
        refs[f"{name}_int8.tflite"] = tflite_run(path, xq, delegates=True)
        refs[f"{name}_int8.tflite:builtin"] = tflite_run(path, xq, delegates=False)

    np.savez(os.path.join(outdir, "reference.npz"), **refs)
    with open(os.path.join(outdir, "versions.json"), "w") as fh:
        json.dump({"tensorflow": tf.__version__, "keras": keras.__version__, "size": size}, fh)
    print(f"models written to {outdir} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
