"""TensorFlow import speed: tidlc's .pb import + -O2 against tf2onnx on the same frozen graph.

The graph is Keras ResNet50 (``weights=None``, 224x224, ~100 MB) frozen by
tests/frontends/tensorflow/make_models.py (built on first use into the test
cache; pass ``--pb`` for another frozen graph). Measured in one run:

* tidlc: ``tidlc.compiler.load`` (GraphDef parse with tidlc's own schema,
  import with constant folding) + the ``-O2`` pipeline (layout, batch-norm and
  activation fusion), float, nothing written;
* tf2onnx: ``tf2onnx.convert.from_graph_def`` (opset 13) from the already
  parsed GraphDef, which includes its own graph optimisations (transpose
  push-down, constant folding, batch-norm folding) - the same job;
* optionally (``--tflite``) TensorFlow's TFLite converter from the Keras
  model's concrete function, clearly labelled: a different job (it traces
  and converts a SavedModel-like function, not a .pb), given for scale only.

Each time is the best of ``--repeat`` runs after one warm-up; the ratio is
peer time / tidlc time (> 1: tidlc is faster). tidlc's outputs are checked
against TensorFlow on the way (max error relative to max |ref|).

    pip install ".[bench]" && python benchmarks/tf_import_speed.py
"""
from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAKE_MODELS = ROOT / "tests" / "frontends" / "tensorflow" / "make_models.py"


def best_of(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cached_models() -> pathlib.Path:
    out = subprocess.run([sys.executable, str(MAKE_MODELS), "--cached"], capture_output=True, text=True, check=True)
    return pathlib.Path([line for line in out.stdout.splitlines() if line.strip()][-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pb", help="a frozen GraphDef (default: the ResNet50 of the test cache)")
    parser.add_argument("--input", default="input", help="input node name (default: input)")
    parser.add_argument("--output", default="Identity", help="output node name (default: Identity)")
    parser.add_argument("--shape", default="1,224,224,3", help="input shape (default: 1,224,224,3)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tflite", action="store_true",
                        help="also time TensorFlow's TFLite converter on the cached Keras ResNet50 (a different job)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    import numpy as np

    from tidlc.compiler import load, optimize
    from tidlc.config import CompileOptions
    from tidlc.interp import run_graph

    folder = None if args.pb else cached_models()
    pb = args.pb or str(folder / "resnet50.pb")
    shape = tuple(int(d) for d in args.shape.split(","))
    options = CompileOptions.of(opt_level=2, input_shapes={args.input: shape})

    def tidlc_compile():
        graph = load(pb, options)
        optimize(graph, options)
        return graph

    tidlc_time = best_of(tidlc_compile, args.repeat)
    graph = tidlc_compile()
    print(f"model: {pb} ({os.path.getsize(pb) / 1e6:.0f} MB), {sum(1 for _ in graph.compute_ops())} IR ops after -O2")
    print(f"tidlc import + -O2:       {tidlc_time:8.2f} s")

    import tensorflow as tf
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(pathlib.Path(pb).read_bytes())
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    tf_graph = tf.Graph()
    with tf_graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=tf_graph) as session:
        ref = session.run(f"{args.output}:0", {f"{args.input}:0": x})
    got = next(iter(run_graph(graph, {args.input: x}).values()))
    print(f"  tidlc vs TensorFlow: max error {np.max(np.abs(got - ref)) / np.max(np.abs(ref)):.2e} x max|ref|")

    try:
        import tf2onnx
    except ImportError:
        print("tf2onnx is not installed (pip install tf2onnx): no peer measured")
        return 0

    def convert():
        tf2onnx.convert.from_graph_def(graph_def, input_names=[f"{args.input}:0"],
                                       output_names=[f"{args.output}:0"], opset=13)

    import logging
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    peer = best_of(convert, args.repeat)
    print(f"tf2onnx {tf2onnx.__version__} (opset 13):  {peer:8.2f} s   ratio {peer / tidlc_time:5.1f}x")

    if args.tflite:
        import keras
        sys.path.insert(0, str(MAKE_MODELS.parent))
        import make_models
        keras.utils.set_random_seed(make_models.SEED)
        model = keras.applications.ResNet50(input_shape=shape[1:], weights=None, classifier_activation=None)
        concrete, fn, _ = make_models.freeze(model, shape[1])

        def tflite():
            tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn).convert()

        t = best_of(tflite, args.repeat)
        print(f"TFLite converter (a different job: function -> .tflite): {t:6.2f} s   ratio {t / tidlc_time:5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
