"""Test models for the backends: each compiled once per module for ``--target onnx-qdq`` and
``--target tidl`` with the same options, so the two can be compared."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
ULTRAFACE_ONNX = ROOT / "examples" / "ultraface" / "ultraface-rfb320.onnx"

# conv + relu, a dilated depthwise conv, eltwise sum, max pool, fc, softmax (random weights)
CAFFE_NET = '''name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "dw" type: "Convolution" bottom: "conv" top: "dw"
        convolution_param { num_output: 8 group: 8 kernel_size: 3 pad: 2 dilation: 2 } }
layer { name: "sum" type: "Eltwise" bottom: "conv" bottom: "dw" top: "sum" }
layer { name: "pool" type: "Pooling" bottom: "sum" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
'''


def small_onnx_model(seed: int = 0) -> onnx.ModelProto:
    """conv+bn+relu, max pool, depthwise conv + clip(0, 6), residual add, nearest 2x resize,
    conv + sigmoid, concat, global average pool, flatten, gemm, softmax; two outputs."""
    rng = np.random.default_rng(seed)

    def const(name, *shape, scale=0.3):
        return numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)

    inits = [
        const("w1", 8, 3, 3, 3), const("b1", 8, scale=0.1),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_scale"),
        const("bn_bias", 8, scale=0.2), const("bn_mean", 8, scale=0.1),
        numpy_helper.from_array(rng.uniform(0.5, 2.0, 8).astype(np.float32), "bn_var"),
        const("wdw", 8, 1, 3, 3, scale=0.5), const("bdw", 8, scale=0.1),
        numpy_helper.from_array(np.float32(0.0), "clip_lo"), numpy_helper.from_array(np.float32(6.0), "clip_hi"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up_scales"),
        const("w3", 4, 8, 1, 1), const("b3", 4, scale=0.1),
        const("wfc", 6, 12, scale=0.4), const("bfc", 6, scale=0.1),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn1"]),
        helper.make_node("Relu", ["bn1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "wdw", "bdw"], ["dw"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Clip", ["dw", "clip_lo", "clip_hi"], ["dw6"]),
        helper.make_node("Add", ["dw6", "p1"], ["res"]),
        helper.make_node("Resize", ["res", "", "up_scales"], ["up"], mode="nearest"),
        helper.make_node("Conv", ["up", "w3", "b3"], ["c3"]),
        helper.make_node("Sigmoid", ["c3"], ["s3"]),
        helper.make_node("GlobalAveragePool", ["up"], ["g8"]),
        helper.make_node("GlobalAveragePool", ["s3"], ["g4"]),
        helper.make_node("Concat", ["g8", "g4"], ["cat"], axis=1),
        helper.make_node("Flatten", ["cat"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wfc", "bfc"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
    ]
    graph = helper.make_graph(nodes, "small_onnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 6]),
                               helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="session")
def model_files(tmp_path_factory) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """name -> (model file, extra compile arguments)."""
    root = tmp_path_factory.mktemp("models")
    caffe = root / "small.prototxt"
    caffe.write_text(CAFFE_NET)
    small = root / "small.onnx"
    onnx.save(small_onnx_model(), small)
    return {"caffe": (caffe, ("--random-weights", "3")), "onnx": (small, ()), "ultraface": (ULTRAFACE_ONNX, ())}
