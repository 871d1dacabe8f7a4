"""issue 14 item 3: ``-O3`` never predicts more cycles than ``-O2`` (TDA4VM perf model), on every
test model that compiles quickly: the Caffe corpus models with their trained weights, a few
structure-only ones with random weights, examples/ultraface, the Keras-built TensorFlow / TFLite
models of tests/frontends and benchmarks/mobilenet_like.py's MobileNetV2 (ONNX, .pb, .tflite).
(Structure-only Caffe models without weights: tests/passes/test_prune.py.)"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from tidlc.backends.tidl.perf import estimate, load_device

from tidlc.compiler import load, optimize
from tidlc.config import CompileOptions

ROOT = Path(__file__).resolve().parents[2]
CAFFE = ROOT.parent / "shared" / "corpus" / "caffe"
DEVICE = load_device("tda4vm")

WEIGHTED = [("lenet_mnist/mnist_deploy.prototxt", "lenet_mnist/lenet_iter_10000.caffemodel"),
            ("cifar10_quick/cifar10_quick.prototxt", "cifar10_quick/cifar10_quick_iter_5000.caffemodel"),
            ("mtcnn/det1.prototxt", "mtcnn/det1.caffemodel"), ("mtcnn/det2.prototxt", "mtcnn/det2.caffemodel"),
            ("mtcnn/det3.prototxt", "mtcnn/det3.caffemodel"), ("mtcnn/det4.prototxt", "mtcnn/det4.caffemodel"),
            ("ultraface_rfb320/RFB-320.prototxt", "ultraface_rfb320/RFB-320.caffemodel"),
            ("ultraface_slim320/slim-320.prototxt", "ultraface_slim320/slim-320.caffemodel")]
RANDOM = ["mobilenet_v1/mobilenet_deploy.prototxt", "mobilenet_v2/mobilenet_v2_deploy.prototxt",
          "jacinto_imagenet_mobilenet-0.5/deploy.prototxt", "squeezenet_v1.1/deploy.prototxt",
          "mobilenet_ssd/MobileNetSSD_deploy.prototxt"]


def _cycles(path: str, **kw) -> dict[int, float]:
    out = {}
    for level in (2, 3):
        options = CompileOptions.of(opt_level=level, **kw)
        graph = load(path, options)
        optimize(graph, options)
        out[level] = estimate(graph, DEVICE).total_cycles
    return out


def _static(name: str) -> dict:
    """A frozen Keras graph's batch dimension is unknown: give it."""
    return {"input_shapes": {"input": (1, 224, 224, 3)}} if name.endswith("pb") else {}


def _corpus(rel: str) -> Path:
    path = CAFFE / rel
    if not path.exists():
        pytest.skip(f"shared corpus file {rel} not available")
    return path


@pytest.mark.parametrize("model,weights", WEIGHTED, ids=[m for m, _ in WEIGHTED])
def test_caffe_with_weights(model, weights):
    cycles = _cycles(str(_corpus(model)), weights=str(_corpus(weights)))
    assert cycles[3] <= cycles[2], cycles


@pytest.mark.filterwarnings("ignore::tidlc.diagnostics.TidlcWarning")
@pytest.mark.parametrize("model", RANDOM)
def test_caffe_random_weights(model):
    cycles = _cycles(str(_corpus(model)), random_weights=0)
    assert cycles[3] <= cycles[2], cycles


def test_ultraface_example():
    cycles = _cycles(str(ROOT / "examples" / "ultraface" / "ultraface-rfb320.onnx"))
    assert cycles[3] <= cycles[2], cycles


def _load_by_path(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tf_models() -> Path:
    """tests/frontends/tensorflow/make_models.py's cached Keras models (built on first use)."""
    pytest.importorskip("tensorflow")
    return _load_by_path("tidlc_o3_frontend_checks", ROOT / "tests" / "frontends" / "checks.py").tf_models_folder()


@pytest.mark.parametrize("name", ["mobilenet_v2.pb", "resnet50.pb", "mobilenet_v2.tflite"])
def test_keras_built(tf_models, name):
    cycles = _cycles(str(tf_models / name), **_static(name))
    assert cycles[3] <= cycles[2], cycles


@pytest.fixture(scope="module")
def mobilenet_like() -> Path:
    pytest.importorskip("tensorflow")
    return Path(_load_by_path("tidlc_mobilenet_like", ROOT / "benchmarks" / "mobilenet_like.py").cached())


@pytest.mark.parametrize("ext", ["onnx", "pb", "tflite"])
def test_mobilenet_like(mobilenet_like, ext):
    cycles = _cycles(os.fspath(mobilenet_like / f"mobilenet_v2.{ext}"), **_static(ext))
    assert cycles[3] <= cycles[2], cycles


def test_explicit_pad_and_zero_channels_go(tmp_path):
    """The acceptance model: an explicit Pad before a conv whose output channels 1, 4, 7, 9, 15 are
    all zero (weights and bias), then a 3x3 conv. -O3 has no pad (folded, from -O2 on) and 11
    channels; its outputs are onnxruntime's (1e-5); the predicted cycles drop at each step
    (-O1: pad layer, -O2: folded, -O3: pruned)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(16, 3, 3, 3)).astype(np.float32)
    b1 = rng.normal(size=16).astype(np.float32)
    w1[[1, 4, 7, 9, 15]], b1[[1, 4, 7, 9, 15]] = 0, 0
    w2 = rng.normal(size=(8, 16, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))]
    inits.append(numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"))
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),
             helper.make_node("Conv", ["p", "w1", "b1"], ["c1"], name="c1", kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="c2", kernel_shape=[3, 3], pads=[1] * 4)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 32, 32])], inits)
    path = str(tmp_path / "pad_zero.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    x = rng.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    from tidlc.interp import run_graph
    cycles, kinds = {}, {}
    for level in (1, 2, 3):
        options = CompileOptions.of(opt_level=level)
        g = load(path, options)
        optimize(g, options)
        got = run_graph(g, {"x": x})["y"]
        assert np.max(np.abs(got - ref)) <= 1e-5 * np.max(np.abs(ref)), level
        cycles[level] = estimate(g, DEVICE).total_cycles
        kinds[level] = [op.kind for op in g.compute_ops()]
        if level == 3:
            c1 = next(op for op in g.ops if op.name == "c1")
            assert c1.results[0].type.shape[1] == 11
    assert "pad" in kinds[1] and "pad" not in kinds[3], kinds
    assert cycles[3] < cycles[2] < cycles[1], cycles
