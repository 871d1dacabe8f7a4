"""Numbers: tidlc's float interpreter against OpenCV's Caffe importer, at -O0 and -O2.

* Trained models of the corpus on real inputs (the sample PNGs, resized where
  a net needs another size): every output within 1e-4 x max |ref|.
* LeNet-MNIST classifies its ten samples as their file names say.
* Structure-only models with seeded random weights, written to a caffemodel
  so that OpenCV runs the same numbers; small input shapes where the
  architecture allows. Besides the outputs, the pre-softmax logits (random
  weights saturate softmax) and the SSD heads are compared.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tidlc.frontends.caffe.prototxt import Message, format_prototxt, load_prototxt


def relative_error(ours, ref) -> float:
    ref = np.asarray(ref, np.float64).reshape(ours.shape)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())

CORPUS = Path(__file__).resolve().parents[3].parent / "shared" / "corpus" / "caffe"
pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not available")
cv2 = pytest.importorskip("cv2")


def image(name: str, height: int, width: int) -> np.ndarray:
    """A corpus sample as float32 HxWx3 BGR, resized (area/linear) to height x width."""
    path = CORPUS / ("lenet_mnist" if name.startswith("img_") else "cifar10_quick") / "samples" / name
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)


def nchw(hwc: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(hwc.transpose(2, 0, 1)[None])


def mtcnn_input(size: int) -> np.ndarray:
    # MTCNN: (x - 127.5) / 128, and the MATLAB-trained nets see images transposed (W, H)
    x = (image("truck10.png", size, size) - 127.5) * 0.0078125
    return nchw(x.transpose(1, 0, 2))


# ----------------------------------------------------------------------------- trained models

TRAINED = {
    # prototxt: (caffemodel, {input: array}, extra op results to compare)
    "cifar10_quick/cifar10_quick.prototxt": (
        "cifar10_quick/cifar10_quick_iter_5000.caffemodel",
        lambda: {"data": nchw(image("cat10.png", 32, 32) - 128.0)}, ("ip2",)),
    "lenet_mnist/mnist_deploy.prototxt": (
        "lenet_mnist/lenet_iter_10000.caffemodel",
        lambda: {"data": image("img_7_0.png", 28, 28)[None, None, :, :, 0] / 256.0}, ("ip2",)),
    "mtcnn/det1.prototxt": ("mtcnn/det1.caffemodel", lambda: {"data": mtcnn_input(12)}, ()),
    "mtcnn/det2.prototxt": ("mtcnn/det2.caffemodel", lambda: {"data": mtcnn_input(24)}, ()),
    "mtcnn/det3.prototxt": ("mtcnn/det3.caffemodel", lambda: {"data": mtcnn_input(48)}, ()),
    "mtcnn/det4.prototxt": (  # five 24x24 patches around the landmarks, stacked on channels
        "mtcnn/det4.caffemodel",
        lambda: {"data": np.concatenate([np.roll(mtcnn_input(24), 3 * i, axis=2) for i in range(5)],
                                        axis=1)}, ()),
    "ultraface_rfb320/RFB-320.prototxt": (
        "ultraface_rfb320/RFB-320.caffemodel",
        lambda: {"input": nchw((image("dog10.png", 240, 320)[:, :, ::-1] - 127.0) / 128.0)}, ()),
    "ultraface_slim320/slim-320.prototxt": (
        "ultraface_slim320/slim-320.caffemodel",
        lambda: {"input": nchw((image("truck10.png", 240, 320)[:, :, ::-1] - 127.0) / 128.0)}, ()),
}


@pytest.mark.parametrize("key", sorted(TRAINED))
def test_trained_model_matches_opencv(key, reference):
    caffemodel, feeds, extra = TRAINED[key]
    errors = reference.compare(CORPUS / key, weights=CORPUS / caffemodel, feeds=feeds(), extra=extra)
    assert {level for level, _ in errors} == {0, 2}
    print(key, {f"-O{level} {name}": f"{err:.2e}" for (level, name), err in errors.items()})


def test_lenet_classifies_its_samples():
    from tidlc.compiler import load, optimize
    from tidlc.config import CompileOptions
    from tidlc.interp import run_graph
    options = CompileOptions.of(opt_level=2, weights=str(CORPUS / "lenet_mnist" / "lenet_iter_10000.caffemodel"))
    graph = load(str(CORPUS / "lenet_mnist" / "mnist_deploy.prototxt"), options)
    optimize(graph, options)
    samples = sorted((CORPUS / "lenet_mnist" / "samples").glob("img_*.png"))
    assert len(samples) == 10
    predicted, labels = [], []
    for path in samples:
        digit = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 256.0  # Caffe's scale
        predicted.append(int(run_graph(graph, {"data": digit[None, None]})["loss"].argmax()))
        labels.append(int(path.stem.split("_")[1]))  # img_LABEL_N.png
    assert predicted == labels


# ----------------------------------------------------------------------------- random weights

def _without(prototxt: Path, layer_type: str) -> str:
    """The prototxt text without its layers of one type (for OpenCV, which lacks them)."""
    msg = load_prototxt(prototxt)
    return format_prototxt(Message(tuple(f for f in msg.fields if not (
        f.name == "layer" and f.value.get("type") == layer_type))))


def _bias_as_scale(text: str):
    """OpenCV has no Bias layer: a Scale by ones with a bias term is the same thing."""
    text = text.replace('type: "Bias"', 'type: "Scale"').replace("bias_param {", "scale_param {\n  bias_term: true")

    def edit(blobs):
        return {name: (kind, [np.ones_like(b[0]), b[0]] if kind == "Bias" else b)
                for name, (kind, b) in blobs.items()}
    return text, edit


RANDOM = {
    # prototxt: (input shape or None for the declared one, extra op results, needs Bias edit)
    "squeezenet_v1.0/deploy.prototxt": ((1, 3, 64, 64), ("conv10",), False),
    "squeezenet_v1.1/deploy.prototxt": ((1, 3, 64, 64), ("conv10",), False),
    "bvlc_googlenet/deploy.prototxt": ((1, 3, 224, 224), ("loss3/classifier",), False),
    "bvlc_alexnet/deploy.prototxt": ((1, 3, 67, 67), ("fc8",), False),
    "bvlc_reference_caffenet/deploy.prototxt": ((1, 3, 67, 67), ("fc8",), False),
    "lenet_bvlc/lenet.prototxt": ((1, 1, 28, 28), ("ip2",), False),
    "resnet50/ResNet-50-deploy.prototxt": ((1, 3, 224, 224), ("fc1000",), False),
    "mobilenet_v1/mobilenet_deploy.prototxt": ((1, 3, 64, 64), ("fc7",), False),
    "mobilenet_v2/mobilenet_v2_deploy.prototxt": ((1, 3, 64, 64), ("fc7",), False),
    "mobilenet_ssd/MobileNetSSD_deploy.prototxt": (None, ("mbox_priorbox", "mbox_loc", "mbox_conf_flatten"), False),
    "mobilenet_ssd/deploy.prototxt": (None, ("mbox_priorbox", "mbox_conf_flatten"), False),
    "jacinto_cifar10_jacintonet11v2/deploy.prototxt": (None, ("fc10",), True),
    "jacinto_imagenet_jacintonet11v2/deploy.prototxt": ((1, 3, 64, 64), ("fc1000",), True),
    "jacinto_imagenet_jacintonet11v2/test_quantize_deploy.prototxt": ((1, 3, 64, 64), ("fc1000",), True),
    "jacinto_imagenet_mobilenet-0.5/deploy.prototxt": ((1, 3, 64, 64), ("fc7",), True),
    "jacinto_voc0712_jdetnet_ssd512x512/deploy.prototxt": (None, ("mbox_priorbox", "mbox_loc", "mbox_conf_flatten"), True),
    "jacinto_voc0712_jdetnet_ssd768x320/test_quantize_deploy.prototxt": (None, ("mbox_priorbox",), True),
}


@pytest.mark.parametrize("key", sorted(RANDOM))
def test_structure_only_model_with_random_weights_matches_opencv(key, reference):
    shape, extra, bias_edit = RANDOM[key]
    path = CORPUS / key
    text, edit = (_bias_as_scale(path.read_text()) if bias_edit else (None, None))
    shapes = {"data": shape} if shape else None
    errors = reference.compare(path, input_shapes=shapes, extra=extra, prototxt_text=text, blob_edit=edit)
    print(key, {f"-O{level} {name}": f"{err:.2e}" for (level, name), err in errors.items()})


def test_segmentation_net_with_deconv_and_argmax_matches_opencv(reference, tmp_path):
    """jsegnet21v2: grouped Deconvolution upsampling; OpenCV lacks ArgMax, so it gets the
    net without it and the argmax of its scores is compared with tidlc's ArgMax."""
    from tidlc.frontends.caffe.lower import lower_net
    from tidlc.frontends.caffe.netspec import load_netspec
    from tidlc.frontends.caffe.weights import RandomWeights

    from tidlc.interp import run_graph
    path = CORPUS / "jacinto_cityscapes5_jsegnet21v2" / "deploy.prototxt"
    text, edit = _bias_as_scale(_without(path, "ArgMax"))
    shapes = {"data": (1, 3, 64, 128)}
    source = RandomWeights(7)
    graph = lower_net(load_netspec(path), source, str(path), shapes)
    scores_op = next(op for op in graph.ops if op.name == "out_deconv_final_up8")
    graph.outputs.append(scores_op.results[0])
    graph.output_names.append("scores")
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, 64, 128)).astype(np.float32)
    ours = run_graph(graph, {"data": x})
    blobs = edit(reference.blobs_for(path, source))
    scores = reference.opencv(path, blobs, {"data": x}, ["out_deconv_final_up8"], text)[0]
    assert ours["argMaxOut"].shape == (1, 1, 64, 128) and ours["argMaxOut"].dtype == np.int64
    assert relative_error(ours["scores"], scores) <= 1e-4
    np.testing.assert_array_equal(ours["argMaxOut"], scores.argmax(axis=1)[:, None])
