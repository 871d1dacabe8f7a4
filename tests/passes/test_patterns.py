"""fuse-patterns (issue 14, item 0): decomposed activations and explicit pads become the single
ops TIDL runs, float outputs within 1e-5 of onnxruntime on the decomposed model."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tidlc.frontends.onnx.importer import load_onnx

from tidlc.compiler import optimize
from tidlc.config import CompileOptions
from tidlc.interp import run_graph

ort = pytest.importorskip("onnxruntime")
SHAPE = [1, 8, 6, 6]


def _c(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _model(tmp_path, nodes, consts: dict, out_shape=None, name="m") -> str:
    inits = [_c(k, v) for k, v in consts.items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape or SHAPE)], inits)
    path = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def _check(path: str, expect_kind: str, absent=("mul", "div", "add", "clip", "erf", "pad", "relu6")):
    x = np.random.default_rng(0).uniform(-6, 6, SHAPE).astype(np.float32)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    graph = load_onnx(path, CompileOptions())
    optimize(graph, CompileOptions.of(opt_level=2))
    kinds = [op.kind for op in graph.compute_ops()]
    assert expect_kind in kinds, kinds
    assert not set(kinds) & set(absent), kinds
    got = run_graph(graph, {"x": x})["y"]
    err = float(np.max(np.abs(got.astype(np.float64) - ref)) / max(float(np.max(np.abs(ref))), 1e-30))
    assert err <= 1e-5, err
    return kinds


def _relu6_plus3(out="r"):
    return [helper.make_node("Add", ["x", "three"], ["a"]),
            helper.make_node("Clip", ["a", "zero", "six"], [out])]


C = {"three": 3.0, "zero": 0.0, "six": 6.0}


@pytest.mark.parametrize("form", ["(x*r)/6", "x*(r/6)", "(x*r)*(1/6)", "x*(r*(1/6))"])
def test_hardswish_in_every_association(tmp_path, form):
    nodes = _relu6_plus3()
    if form == "(x*r)/6":
        nodes += [helper.make_node("Mul", ["x", "r"], ["p"]), helper.make_node("Div", ["p", "six"], ["y"])]
    elif form == "x*(r/6)":
        nodes += [helper.make_node("Div", ["r", "six"], ["h"]), helper.make_node("Mul", ["x", "h"], ["y"])]
    elif form == "(x*r)*(1/6)":
        nodes += [helper.make_node("Mul", ["r", "x"], ["p"]), helper.make_node("Mul", ["p", "sixth"], ["y"])]
    else:
        nodes += [helper.make_node("Mul", ["sixth", "r"], ["h"]), helper.make_node("Mul", ["h", "x"], ["y"])]
    kinds = _check(_model(tmp_path, nodes, {**C, "sixth": 1 / 6}), "hardswish")
    assert kinds == ["hardswish"]


def test_x_times_onnx_hardsigmoid_is_hardswish(tmp_path):
    nodes = [helper.make_node("HardSigmoid", ["x"], ["h"], alpha=1 / 6, beta=0.5),
             helper.make_node("Mul", ["x", "h"], ["y"])]
    assert _check(_model(tmp_path, nodes, {}), "hardswish") == ["hardswish"]


@pytest.mark.parametrize("form", ["x*a+b", "x/d+b", "relu6(x+3)/6"])
def test_hardsigmoid(tmp_path, form):
    if form == "x*a+b":
        nodes = [helper.make_node("Mul", ["x", "alpha"], ["m"]), helper.make_node("Add", ["m", "beta"], ["a"]),
                 helper.make_node("Clip", ["a", "zero", "one"], ["y"])]
    elif form == "x/d+b":
        nodes = [helper.make_node("Div", ["x", "d"], ["m"]), helper.make_node("Add", ["beta", "m"], ["a"]),
                 helper.make_node("Clip", ["a", "zero", "one"], ["y"])]
    else:
        nodes = _relu6_plus3() + [helper.make_node("Div", ["r", "six"], ["y"])]
    consts = {**C, "alpha": 0.2, "beta": 0.5, "d": 6.0, "one": 1.0}
    assert _check(_model(tmp_path, nodes, consts), "hardsigmoid") == ["hardsigmoid"]


@pytest.mark.parametrize("form", ["(x*0.5)*(1+e)", "(x*(1+e))*0.5", "0.5*(x*(1+e))... via (0.5*(1+e))*x",
                                  "(x*(1+e))/2", "mul-by-1/sqrt2"])
def test_gelu(tmp_path, form):
    scaled = ([helper.make_node("Mul", ["x", "rsqrt2"], ["s"])] if form == "mul-by-1/sqrt2"
              else [helper.make_node("Div", ["x", "sqrt2"], ["s"])])
    nodes = scaled + [helper.make_node("Erf", ["s"], ["e"]), helper.make_node("Add", ["e", "one"], ["a"])]
    if form == "(x*0.5)*(1+e)":
        nodes += [helper.make_node("Mul", ["x", "half"], ["h"]), helper.make_node("Mul", ["h", "a"], ["y"])]
    elif form in ("(x*(1+e))*0.5", "mul-by-1/sqrt2"):
        nodes += [helper.make_node("Mul", ["x", "a"], ["p"]), helper.make_node("Mul", ["p", "half"], ["y"])]
    elif form.startswith("0.5*"):
        nodes += [helper.make_node("Mul", ["half", "a"], ["p"]), helper.make_node("Mul", ["x", "p"], ["y"])]
    else:
        nodes += [helper.make_node("Mul", ["a", "x"], ["p"]), helper.make_node("Div", ["p", "two"], ["y"])]
    consts = {"sqrt2": math.sqrt(2), "rsqrt2": 1 / math.sqrt(2), "one": 1.0, "half": 0.5, "two": 2.0}
    assert _check(_model(tmp_path, nodes, consts), "gelu") == ["gelu"]


def test_a_decomposed_gelu_after_a_conv_fuses_into_it(tmp_path):
    """The GELU rebuilt, its pieces are gone before fuse-activation: the leftover ``mul(x, ...)``
    read the conv's result too, and the GELU stayed a layer of its own (TIDL fuses actType 9)."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Div", ["c", "sqrt2"], ["s"]), helper.make_node("Erf", ["s"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["c", "a"], ["p"]),
             helper.make_node("Mul", ["p", "half"], ["y"])]
    consts = {"w": rng.normal(0, 0.3, (8, 8, 3, 3)), "b": rng.normal(0, 0.1, 8), "sqrt2": math.sqrt(2),
              "one": 1.0, "half": 0.5}
    graph = load_onnx(_model(tmp_path, nodes, consts), CompileOptions())
    optimize(graph, CompileOptions.of(opt_level=2))
    (conv,) = graph.compute_ops()
    assert conv.kind == "conv2d" and conv.attrs["act"] == "gelu"


def test_a_near_miss_is_left_alone(tmp_path):
    """x * clip(x + 3, 0, 6) / 5 is not a hardswish: nothing fuses into one."""
    nodes = _relu6_plus3() + [helper.make_node("Mul", ["x", "r"], ["p"]), helper.make_node("Div", ["p", "five"], ["y"])]
    kinds = _check(_model(tmp_path, nodes, {**C, "five": 5.0}), "mul", absent=("hardswish", "hardsigmoid"))
    assert "hardswish" not in kinds


def test_explicit_pad_folds_into_the_conv(tmp_path):
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),
             helper.make_node("Conv", ["p", "w"], ["y"], kernel_shape=[3, 3])]
    path = tmp_path / "pad.onnx"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 7, 6])],
                              [numpy_helper.from_array(np.array([0, 0, 1, 0, 0, 0, 2, 2], np.int64), "pads"),
                               _c("w", rng.normal(size=(4, 8, 3, 3)))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    x = rng.uniform(-1, 1, SHAPE).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    g = load_onnx(str(path), CompileOptions())
    optimize(g, CompileOptions.of(opt_level=2))
    convs = [op for op in g.compute_ops() if op.kind == "conv2d"]
    assert [op.kind for op in g.compute_ops()] == ["conv2d"] and convs[0].attrs["pads"] == (1, 0, 2, 2)
    got = run_graph(g, {"x": x})["y"]
    assert np.max(np.abs(got - ref)) <= 1e-5 * np.max(np.abs(ref))


def test_max_pool_keeps_its_explicit_pad(tmp_path):
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),
             helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    path = tmp_path / "padpool.onnx"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])],
                              [numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    g = load_onnx(str(path), CompileOptions())
    optimize(g, CompileOptions.of(opt_level=2))
    assert [op.kind for op in g.compute_ops()] == ["pad", "pool2d"]


@pytest.mark.parametrize("affine", ["gamma+beta", "gamma", "beta", "none", "mul-square"])
def test_layernorm(tmp_path, affine):
    """ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div(/Mul/Add) over the last axis -> layernorm."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1]),
             helper.make_node("Sub", ["x", "m"], ["d"]),
             (helper.make_node("Mul", ["d", "d"], ["p"]) if affine == "mul-square"
              else helper.make_node("Pow", ["d", "two"], ["p"])),
             helper.make_node("ReduceMean", ["p"], ["v"], axes=[-1]),
             helper.make_node("Add", ["v", "eps"], ["ve"]),
             helper.make_node("Sqrt", ["ve"], ["s"]),
             helper.make_node("Div", ["d", "s"], ["n" if affine != "none" and affine != "mul-square" else "y"])]
    rng = np.random.default_rng(5)
    consts = {"two": 2.0, "eps": 1e-5, "gamma": rng.normal(size=6), "beta": rng.normal(size=6)}
    if affine == "gamma+beta":
        nodes += [helper.make_node("Mul", ["n", "gamma"], ["g"]), helper.make_node("Add", ["g", "beta"], ["y"])]
    elif affine == "gamma":
        nodes += [helper.make_node("Mul", ["gamma", "n"], ["y"])]
    elif affine == "beta":
        nodes += [helper.make_node("Add", ["n", "beta"], ["y"])]
    assert _check(_model(tmp_path, nodes, consts), "layernorm",
                  absent=("reduce", "sub", "pow", "sqrt", "div", "mul", "add")) == ["layernorm"]


def test_onnx_layer_normalization_imports_as_one_op(tmp_path):
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y"], axis=-2, epsilon=1e-3)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)],
                              [_c("gamma", rng.normal(size=(6, 6))), _c("beta", rng.normal(size=(6, 6)))])
    path = tmp_path / "ln.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert _check(str(path), "layernorm") == ["layernorm"]


def test_folding_the_pad_lowers_the_predicted_cycles(tmp_path):
    """The explicit pad is a layer of its own in TIDL (a copy through DDR/MSMC): folded at -O2 and
    -O3, the perf model predicts fewer cycles than at -O1 where it stays."""
    from tidlc.backends.tidl.perf import estimate, load_device
    rng = np.random.default_rng(7)
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),
             helper.make_node("Conv", ["p", "w"], ["y"], kernel_shape=[3, 3])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 64, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 64, 64])],
                              [numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
                               _c("w", rng.normal(size=(32, 32, 3, 3)))])
    path = tmp_path / "padconv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    device = load_device("tda4vm")
    cycles = {}
    for level in (1, 3):
        g = load_onnx(str(path), CompileOptions())
        optimize(g, CompileOptions.of(opt_level=level))
        cycles[level] = estimate(g, device).total_cycles
    assert cycles[3] < cycles[1], cycles


@pytest.mark.parametrize("kind", ["AveragePool", "MaxPool"])
def test_a_pool_over_the_whole_plane_is_a_global_pool(tmp_path, kind):
    """Caffe's ResNet-50 / GoogLeNet end in a 7x7 average pool on a 7x7 input: one window, the whole
    plane. TIDL validates 1x1-3x3 windows only, so as pool2d it went to the host; as global_pool it
    runs accelerated."""
    path = _model(tmp_path, [helper.make_node(kind, ["x"], ["y"], kernel_shape=SHAPE[2:])], {},
                  out_shape=SHAPE[:2] + [1, 1])
    _check(path, "global_pool", absent=("pool2d",))


@pytest.mark.parametrize("attrs", [{"kernel_shape": [5, 5]}, {"kernel_shape": [6, 6], "pads": [1, 1, 0, 0]},
                                   {"kernel_shape": [3, 6], "strides": [3, 1]}])
def test_a_pool_with_more_than_one_window_stays(tmp_path, attrs):
    out = [1, 8, 2, 2] if attrs["kernel_shape"] == [5, 5] else [1, 8, 2, 1]
    path = _model(tmp_path, [helper.make_node("AveragePool", ["x"], ["y"], **attrs)], {}, out_shape=out)
    # (the unpadded 5x5 is a 5x5 depthwise conv: test_an_average_pool_tidl_does_not_validate_...; the
    # others the dense layers of test_an_average_pool_no_rule_lowers_is_dense_layers)
    _check(path, "conv2d" if attrs == {"kernel_shape": [5, 5]} else "dense", absent=("global_pool", "pool2d"))


@pytest.mark.parametrize("kind", ["AveragePool", "MaxPool"])
def test_a_padded_window_over_the_whole_plane_is_a_global_pool(tmp_path, kind):
    """Caffe2's Inception v1 export ends in a 7x7 average pool padded at the bottom and right on a 6x6
    plane (the ONNX light model): one window, the padding not counted, so a global pool."""
    node = helper.make_node(kind, ["x"], ["y"], kernel_shape=[7, 7], pads=[0, 0, 1, 1])
    _check(_model(tmp_path, [node], {}, out_shape=SHAPE[:2] + [1, 1]), "global_pool", absent=("pool2d",))


def test_a_padded_window_whose_average_counts_the_padding_is_not_a_global_pool(tmp_path):
    """The padding's zeros are in that average: not a global pool, but a 7x7 depthwise conv (the
    same zeros as its padding) TIDL validates."""
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[7, 7], pads=[0, 0, 1, 1], count_include_pad=1)
    _check(_model(tmp_path, [node], {}, out_shape=SHAPE[:2] + [1, 1]), "conv2d", absent=("global_pool", "pool2d"))


def test_resnet50_pool5_is_accelerated():
    """The real model: every layer of Caffe's ResNet-50 on the accelerator at -O2 (pool5 was the one
    host layer)."""
    from pathlib import Path

    from tidlc.backends.tidl.constraints import check

    from tidlc.compiler import load
    proto = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "caffe" / "resnet50" / "ResNet-50-deploy.prototxt"
    if not proto.exists():
        pytest.skip("shared corpus not available")
    options = CompileOptions.of(opt_level=2)
    graph = load(str(proto), options)
    optimize(graph, options)
    assert [op.kind for op in graph.compute_ops() if op.name == "pool5"] == ["global_pool"]
    host = [op.name for op in graph.compute_ops() if (v := check(op)) is not None and v.verdict == "host"]
    assert host == []


def _one_node_at_o2(tmp_path, node, shape) -> list:
    """The compute ops of a one-node ONNX model (input x of ``shape``) at -O2, its output checked
    against onnxruntime's."""
    return _at_o2(tmp_path, [node], shape)


def _at_o2(tmp_path, nodes, shape, inits=(), opset: int = 13, x_max: float = 6.0, atol: float = 1e-6) -> list:
    """The compute ops of an ONNX model of ``nodes`` (input x of ``shape`` in +-``x_max``, output y)
    at -O2, its output checked against onnxruntime's."""
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(inits))
    path = str(tmp_path / "one.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    x = np.random.default_rng(0).uniform(-x_max, x_max, shape).astype(np.float32)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    g = load_onnx(path, CompileOptions())
    optimize(g, CompileOptions.of(opt_level=2))
    np.testing.assert_allclose(run_graph(g, {"x": x})["y"], ref, rtol=1e-5, atol=atol)
    return list(g.compute_ops())


@pytest.mark.parametrize(("kind", "attrs", "chain"), [
    ("MaxPool", {"kernel_shape": [5, 5], "pads": [2] * 4}, 2),  # YOLOv5's SPPF
    ("MaxPool", {"kernel_shape": [13, 13], "pads": [6] * 4}, 6),  # YOLOX's SPP
    ("MaxPool", {"kernel_shape": [4, 4], "strides": [4, 4]}, 2),
    ("AveragePool", {"kernel_shape": [8, 8], "strides": [8, 8]}, 3),
    ("MaxPool", {"kernel_shape": [5, 5], "pads": [1] * 4}, 1),  # not 'same' padding: stays
])
def test_a_pool_window_tidl_does_not_validate_is_a_chain_of_small_ones(tmp_path, kind, attrs, chain):
    """TIDL validates 1x1-3x3 pooling windows; YOLO's 5x5/9x9/13x13 stride-1 max pools were host
    layers. A max of maxima over windows growing by 2 is the same max; equal 2x2 blocks give the same
    max and mean."""
    from tidlc.backends.tidl.constraints import check
    ops = _one_node_at_o2(tmp_path, helper.make_node(kind, ["x"], ["y"], **attrs), [1, 4, 16, 16])
    assert [op.kind for op in ops] == ["pool2d"] * chain
    if chain > 1:
        assert all(check(op) is None for op in ops) and ops[-1].name == ops[0].name.split(".step")[0]


@pytest.mark.parametrize(("attrs", "shape", "expect"), [
    ({"kernel_shape": [3, 2], "strides": [3, 2]}, [1, 8, 3, 80], (3, 2, (0, 1, 0, 1))),  # PP-OCRv4 rec's neck
    ({"kernel_shape": [5, 5]}, [1, 4, 16, 16], (5, 1, (0, 0, 0, 0))),
    ({"kernel_shape": [7, 7], "strides": [2, 2], "pads": [3] * 4, "count_include_pad": 1}, [1, 4, 16, 16],
     (7, 2, (3, 3, 3, 3))),
    ({"kernel_shape": [2, 3], "strides": [1, 1]}, [1, 4, 9, 9], (3, 1, None)),
    ({"kernel_shape": [3, 3], "strides": [2, 2]}, [1, 4, 16, 16], None),  # TIDL's own pool
])
def test_an_average_pool_tidl_does_not_validate_is_a_depthwise_conv(tmp_path, attrs, shape, expect):
    """PP-OCRv4's text recognizer pools 3x2 stride 3x2 on a 3-row map: that pool ran on the host
    between two subgraphs. The same sums as a depthwise conv TIDL validates (3x3/5x5/7x7, stride 1
    or 2), weights 1/(kh*kw) on the window's taps; outputs checked against onnxruntime."""
    from tidlc.backends.tidl.constraints import check
    ops = _one_node_at_o2(tmp_path, helper.make_node("AveragePool", ["x"], ["y"], **attrs), shape)
    if expect is None:
        assert [op.kind for op in ops] == ["pool2d"]
        return
    (conv,) = ops
    k, stride, pads = expect
    assert conv.kind == "conv2d" and conv.attrs["groups"] == shape[1] and check(conv) is None
    assert conv.operands[1].type.shape == (shape[1], 1, k, k) and conv.attrs["strides"] == (stride, stride)
    if pads is not None:
        assert conv.attrs["pads"] == pads


@pytest.mark.parametrize(("attrs", "shape", "rows"), [
    ({"kernel_shape": [3, 2], "strides": [3, 2]}, [1, 8, 6, 80], True),  # two rows 3 apart: no stride 2 kernel
    ({"kernel_shape": [5, 5], "pads": [2] * 4}, [1, 4, 16, 16], True),  # borders average fewer values
    ({"kernel_shape": [9, 9], "strides": [4, 4], "pads": [4] * 4, "count_include_pad": 1}, [1, 4, 16, 32], True),
    ({"kernel_shape": [17, 17], "strides": [8, 8], "pads": [8] * 4, "count_include_pad": 1}, [1, 4, 16, 32], True),
    ({"kernel_shape": [1, 6], "strides": [1, 6], "pads": [0, 1, 0, 1]}, [1, 4, 5, 16], False),  # along W only
    ({"kernel_shape": [3, 3], "strides": [3, 3], "ceil_mode": 1}, [1, 4, 10, 11], True),  # a clipped last window
])
def test_an_average_pool_no_rule_lowers_is_dense_layers(tmp_path, attrs, shape, rows):
    """DDRNet's DAPPM pools its 1/64 feature map with 9x9 stride 4 and 17x17 stride 8 windows,
    counting the padding: TIDL pools 1x1-3x3 windows, and no depthwise kernel holds them (two
    host layers). An average pool is linear and separable: dense layers over W and over H
    with the pooling matrices, whatever the border divisor."""
    from tidlc.backends.tidl.constraints import check
    ops = _one_node_at_o2(tmp_path, helper.make_node("AveragePool", ["x"], ["y"], **attrs), shape)
    assert [op.kind for op in ops] == ["dense"] + ["transpose", "dense", "transpose"] * rows
    assert all(check(op) is None or check(op).level != "host" for op in ops)


def _adaptive_windows(n: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's adaptive pooling windows: [floor(i n / out), ceil((i + 1) n / out)), as gather
    indices padded to the longest window (clamped) and the mask of the real ones."""
    starts = [i * n // out for i in range(out)]
    ends = [-(-(i + 1) * n // out) for i in range(out)]
    k = max(e - b for b, e in zip(starts, ends))
    idx = np.array([[min(b + t, e - 1) for t in range(k)] for b, e in zip(starts, ends)], np.int64)
    mask = np.array([[t < e - b for t in range(k)] for b, e in zip(starts, ends)])
    return idx, mask


@pytest.mark.parametrize(("hw", "out", "chain"), [(16, 3, False), (16, 6, False), (10, 4, False), (32, 3, True)])
def test_an_adaptive_pool_exported_as_gather_nd_is_dense_layers(tmp_path, hw, out, chain):
    """PyTorch's dynamo exporter writes an adaptive average pool whose output does not divide
    the input (UperNet's and PSPNet's pyramid pooling) as a GatherND of the windows between
    transposes, masked and summed over each window, divided by its size: the GatherND was a
    host op. The region is a separable linear map of each plane: dense layers over W and H.
    PSPNet's export sums each window as a chain of gathers and adds (``chain``: 3 bins of a
    32x32 plane, 433 ops; at 512x1024, 64x128 planes, about 3000): a host op while the region
    was limited to 256 ops."""
    from tidlc.backends.tidl.constraints import check
    idx, mask = _adaptive_windows(hw, out)
    k = idx.shape[1]
    rows = np.broadcast_to(idx[:, :, None, None], (out, k, out, k))
    cols = np.broadcast_to(idx[None, None, :, :], (out, k, out, k))
    indices = np.stack([rows, cols], -1).astype(np.int64)  # (out, k, out, k, 2) of (h, w)
    both = (mask[:, :, None, None] & mask[None, None, :, :]).reshape(out, k, out, k, 1, 1)
    counts = both.sum(axis=(1, 3)).astype(np.float32)  # (out, out, 1, 1)
    nodes = [helper.make_node("Transpose", ["x"], ["hwnc"], perm=[2, 3, 0, 1]),
             helper.make_node("GatherND", ["hwnc", "idx"], ["win"]),
             helper.make_node("Where", ["mask", "win", "zero"], ["kept"])]
    inits = [numpy_helper.from_array(indices, "idx"), numpy_helper.from_array(both, "mask"),
             _c("zero", np.zeros((), np.float32)), numpy_helper.from_array(np.array([1, 3], np.int64), "axes"),
             _c("count", counts)]
    if chain:  # (out, k, out, k, N, C) -> one (out, out, N, C) term per window tap, added up
        inits += [numpy_helper.from_array(np.array(t, np.int64), f"t{t}") for t in range(k)]
        terms = []
        for a in range(k):
            nodes.append(helper.make_node("Gather", ["kept", f"t{a}"], [f"r{a}"], axis=1))
            for b in range(k):
                nodes.append(helper.make_node("Gather", [f"r{a}", f"t{b}"], [f"g{a}_{b}"], axis=2))
                terms.append(f"g{a}_{b}")
        for i in range(1, len(terms)):
            nodes.append(helper.make_node("Add", [terms[i - 1] if i == 1 else f"s{i - 1}", terms[i]], [f"s{i}"]))
        nodes.append(helper.make_node("Identity", [f"s{len(terms) - 1}"], ["sum"]))
    else:
        nodes.append(helper.make_node("ReduceSum", ["kept", "axes"], ["sum"], keepdims=0))
    nodes += [helper.make_node("Div", ["sum", "count"], ["mean"]),
              helper.make_node("Transpose", ["mean"], ["y"], perm=[2, 3, 0, 1])]
    ops = _at_o2(tmp_path, nodes, [1, 8, hw, hw], inits, opset=13, atol=1e-5)
    assert "host" not in [op.kind for op in ops] and [op.kind for op in ops].count("dense") == 2, ops
    assert all(check(op) is None or check(op).level != "host" for op in ops)
    x = np.random.default_rng(0).uniform(-6, 6, (1, 8, hw, hw))
    want = np.zeros((8, out, out))
    for i in range(out):
        for j in range(out):
            want[:, i, j] = x[0][:, idx[i][mask[i]]][:, :, idx[j][mask[j]]].mean(axis=(1, 2))
    graph = load_onnx(str(tmp_path / "one.onnx"), CompileOptions())
    optimize(graph, CompileOptions.of(opt_level=2))
    np.testing.assert_allclose(run_graph(graph, {"x": x.astype(np.float32)})["y"][0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("hw", "steps"), [((112, 112), ["pool2d"] * 2), ((56, 48), ["pool2d"]), ((32, 32), []),
                                            ((33, 33), ["conv2d"]), ((65, 65), ["conv2d"] * 2),
                                            ((66, 64), ["conv2d"] * 2), ((7, 1100), ["conv2d", "pool2d"]), ((1, 1100), None)])
def test_a_global_pool_over_a_large_plane_is_split(tmp_path, hw, steps):
    """EfficientNet's and MobileNetV3's squeeze-excite blocks average 112x112 and 56x56 planes; TIDL's
    global pooling takes at most 1024 elements, so they were host layers. 2x2 stride-2 average pools
    first leave a plane that fits (the same mean); a plane that fits stays as it is. An odd side
    (torchvision's LRASPP and DeepLabV3 at 520x520: 65x65 and 33x33) takes 2x2 stride-2 depthwise
    convs, zero-padded, the first weighted to undo the zeros; a plane 1 wide stays a host layer."""
    from tidlc.backends.tidl.constraints import check
    ops = _one_node_at_o2(tmp_path, helper.make_node("GlobalAveragePool", ["x"], ["y"]), [1, 4, *hw])
    assert [op.kind for op in ops][-1] == "global_pool"
    if steps is None:
        assert len(ops) == 1 and check(ops[0]).level == "host"
        return
    assert [op.kind for op in ops][:-1] == steps
    for op in ops[:-1]:
        assert op.attrs["strides"] == (2, 2) and (op.kind == "conv2d" or op.attrs["kernel"] == (2, 2))
    assert all(check(op) is None or check(op).level != "host" for op in ops)


@pytest.mark.parametrize(("op", "axes", "keepdims", "expect"), [
    ("ReduceMean", [2, 3], 1, ["pool2d", "pool2d", "global_pool"]),  # the dynamo exporter's squeeze-excite
    ("ReduceMean", [-1, -2], 0, ["pool2d", "pool2d", "global_pool", "reshape"]),
    ("ReduceMax", [2, 3], 1, ["global_pool"]),
    ("ReduceMean", [1, 2, 3], 1, ["pool2d", "pool2d", "global_pool", "conv2d"]),  # then the channel mean
    ("ReduceMin", [1, 2, 3], 1, ["reduce"]),  # a min over the channels too: left (TIDL's Reduce layer)
])
def test_a_reduction_over_the_plane_is_a_global_pool(tmp_path, op, axes, keepdims, expect):
    """PyTorch's dynamo exporter writes AdaptiveAvgPool2d(1) as ReduceMean over H and W: at 112x112
    (EfficientNet-B0's first squeeze-excite) it was a host layer (TIDL's global pooling takes 1024
    elements per plane) and split the model into 4 subgraphs."""
    from tidlc.backends.tidl.constraints import check
    node = helper.make_node(op, ["x"], ["y"], axes=axes, keepdims=keepdims)
    ops = _one_node_at_o2(tmp_path, node, [1, 4, 112, 112])
    assert [o.kind for o in ops] == expect
    if expect != ["reduce"]:  # (a min over C, H, W: a float layer)
        assert all(check(o) is None or check(o).level != "host" for o in ops)


@pytest.mark.parametrize(("groups", "perm", "fused"), [(2, [0, 2, 1, 3, 4], True), (4, [0, 2, 1, 3, 4], True),
                                                     (2, [0, 1, 2, 4, 3], False)])
def test_reshape_transpose_reshape_is_a_channel_shuffle(tmp_path, groups, perm, fused):
    """ShuffleNet's channel shuffle as PyTorch exports it (view, transpose(1, 2), view): TIDL's
    ShuffleChannel layer, as its import makes of the pattern. Another permutation is no shuffle."""
    c, h, w = 8, 5, 6
    nodes = [helper.make_node("Reshape", ["x", "split"], ["r"]), helper.make_node("Transpose", ["r"], ["t"], perm=perm),
             helper.make_node("Reshape", ["t", "merge"], ["m"]), helper.make_node("Relu", ["m"], ["y"])]
    inits = [numpy_helper.from_array(np.array([1, groups, c // groups, h, w], np.int64), "split"),
             numpy_helper.from_array(np.array([1, c, h, w] if fused else [1, c, w, h], np.int64), "merge")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = str(tmp_path / "shuffle.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    x = np.random.default_rng(0).uniform(-1, 1, (1, c, h, w)).astype(np.float32)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    g = load_onnx(path, CompileOptions())
    optimize(g, CompileOptions.of(opt_level=2))
    kinds = [op.kind for op in g.compute_ops()]
    assert (kinds == ["shuffle_channel", "relu"]) == fused, kinds
    np.testing.assert_array_equal(run_graph(g, {"x": x})["y"], ref)


@pytest.mark.parametrize(("axis", "index", "after", "expect"), [
    (0, 1, "Relu", ["relu", "slice", "reshape"]),  # ViT's qkv[1]
    (1, -1, "Relu", ["relu", "slice", "reshape"]),
    (0, 2, "Transpose", ["transpose", "gather"]),  # Swin's qkv.permute(...)[2]: layout would split the transpose
])
def test_a_gather_of_one_index_is_a_slice(tmp_path, axis, index, after, expect):
    nodes = [helper.make_node(after, ["x"], ["t"], **({"perm": [0, 2, 1]} if after == "Transpose" else {})),
             helper.make_node("Gather", ["t", "i"], ["y"], axis=axis)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array(index, np.int64), "i")])
    path = str(tmp_path / "gather.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 4, 5)).astype(np.float32)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    g = load_onnx(path, CompileOptions())
    optimize(g, CompileOptions.of(opt_level=2))
    assert [op.kind for op in g.compute_ops()] == expect
    np.testing.assert_array_equal(run_graph(g, {"x": x})["y"], ref)


@pytest.mark.parametrize(("group", "cout", "kernel", "stride", "pad", "bias"),
                         [(8, 8, 4, 2, 1, False), (4, 16, 4, 2, 1, True), (8, 8, 2, 2, 0, True),
                          (2, 4, 8, 4, 2, False)])
def test_a_grouped_deconv_is_phase_convs_and_depth_to_space(tmp_path, group, cout, kernel, stride, pad, bias):
    """TIDL's Deconv2D takes group 1 only, so JSegNet's grouped 4x4 s2 upsamplings went to the host;
    as one stride-1 conv per output phase (same groups), Concat and DepthToSpace they are TIDL
    layers. Against onnxruntime's ConvTranspose."""
    rng = np.random.default_rng(1)
    consts = {"w": rng.standard_normal((SHAPE[1], cout // group, kernel, kernel))}
    inputs = ["x", "w"]
    if bias:
        consts["b"], inputs = rng.standard_normal(cout), ["x", "w", "b"]
    node = helper.make_node("ConvTranspose", inputs, ["y"], group=group, kernel_shape=[kernel, kernel],
                            strides=[stride, stride], pads=[pad] * 4)
    path = _model(tmp_path, [node], consts, out_shape=[1, cout, SHAPE[2] * stride, SHAPE[3] * stride])
    kinds = _check(path, "depth_to_space", absent=("deconv2d",))
    assert kinds.count("conv2d") == stride * stride and "concat" in kinds


@pytest.mark.parametrize(("kernel", "stride", "pad", "bias"), [(4, 4, 0, True), (8, 4, 2, False), (3, 3, 0, True)])
def test_a_deconv_at_a_stride_tidl_lacks_is_one_conv_and_depth_to_space(tmp_path, kernel, stride, pad, bias):
    """Depth Anything's (DPT's) reassemble stage upsamples by a 4x4 stride-4 ConvTranspose, and
    TIDL's Deconv2D takes stride 2 only: a host layer. Ungrouped, the phase convs share their
    input, so one conv computes every phase (a 1x1 conv when the kernel is the stride), then
    DepthToSpace. Against onnxruntime's ConvTranspose."""
    from tidlc.backends.tidl.constraints import check as check_op
    rng = np.random.default_rng(kernel + stride)
    cout = 6
    consts = {"w": rng.standard_normal((SHAPE[1], cout, kernel, kernel))}
    inputs = ["x", "w"]
    if bias:
        consts["b"], inputs = rng.standard_normal(cout), ["x", "w", "b"]
    node = helper.make_node("ConvTranspose", inputs, ["y"], kernel_shape=[kernel, kernel], strides=[stride, stride],
                            pads=[pad] * 4)
    path = _model(tmp_path, [node], consts, out_shape=[1, cout, SHAPE[2] * stride, SHAPE[3] * stride])
    kinds = _check(path, "depth_to_space", absent=("deconv2d", "concat"))
    assert kinds.count("conv2d") == 1
    g = load_onnx(path, CompileOptions())
    optimize(g, CompileOptions.of(opt_level=2))
    assert all(check_op(op) is None or check_op(op).level != "host" for op in g.compute_ops())


def test_a_deconv_the_rule_cannot_express_stays(tmp_path):
    """Group 1 (TIDL's own Deconv2D) and an output that is not exactly stride x the input stay."""
    w = np.random.default_rng(1).standard_normal((8, 1, 3, 3))
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], group=8, kernel_shape=[3, 3], strides=[2, 2],
                            pads=[1, 1, 1, 1])
    _check(_model(tmp_path, [node], {"w": w}, out_shape=[1, 8, 11, 11]), "deconv2d", absent=("depth_to_space",))
    w = np.random.default_rng(1).standard_normal((8, 8, 4, 4))
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[4, 4], strides=[2, 2], pads=[1] * 4)
    _check(_model(tmp_path, [node], {"w": w}, out_shape=[1, 8, 12, 12]), "deconv2d", absent=("depth_to_space",))


def test_jsegnet_is_one_accelerated_subgraph():
    """TI's JSegNet21v2 (Caffe, corpus): its 4 grouped bilinear Deconvolutions were its 4 host layers."""
    from pathlib import Path

    from tidlc.backends.tidl.constraints import check

    from tidlc.compiler import load
    proto = (Path(__file__).resolve().parents[3] / "shared" / "corpus" / "caffe" / "jacinto_cityscapes5_jsegnet21v2"
             / "deploy.prototxt")
    if not proto.exists():
        pytest.skip("shared corpus not available")
    options = CompileOptions.of(opt_level=2, random_weights=1)
    graph = load(str(proto), options)
    optimize(graph, options)
    assert not [op for op in graph.compute_ops() if op.kind == "deconv2d"]
    assert [op.name for op in graph.compute_ops() if (v := check(op)) is not None and v.level == "host"] == []


def _host_conv(tmp_path, node, shape, w, b, rng):
    """A one-conv ONNX model (``w``, ``b``) whose conv TIDL takes only on the host: its imported
    graph, an input in +-1 and onnxruntime's output for it."""
    from tidlc.backends.tidl.constraints import check as check_op
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    path = str(tmp_path / "conv.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    imported = load_onnx(path, CompileOptions())
    assert check_op(next(imported.compute_ops())).level == "host"
    return imported, x, ref


@pytest.mark.parametrize("k,s,p,hw", [(7, 4, 3, (16, 24)), (9, 2, 4, (12, 12)), (5, 3, 2, (12, 9)),
                                      (6, 4, 1, (16, 16)), (7, 4, 0, (20, 16))])
def test_a_stride_tidl_does_not_validate_becomes_space_to_depth_and_a_stride_1_conv(tmp_path, k, s, p, hw):
    """SegFormer's overlapping patch embedding (7x7 stride 4 padded 3) was a host layer: TIDL takes
    stride 4 only with an 11x11 kernel. As a space-to-depth by 4 and a 2x2 stride-1 conv it is
    accelerated, equal to onnxruntime's conv within float rounding."""
    from tidlc.backends.tidl.constraints import check as check_op
    rng = np.random.default_rng(k * 10 + s)
    shape = [1, 3, *hw]
    w = rng.normal(0, 0.2, (8, 3, k, k)).astype(np.float32)
    b = rng.normal(0, 0.1, 8).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)
    graph, x, ref = _host_conv(tmp_path, node, shape, w, b, rng)
    optimize(graph, CompileOptions.of(opt_level=2))
    ops = list(graph.compute_ops())
    assert [op.kind for op in ops] == ["reshape", "transpose", "reshape", "conv2d"]
    conv = ops[-1]
    assert conv.attrs["strides"] == (1, 1) and conv.operands[1].type.shape[1] == 3 * s * s
    assert all(check_op(op) is None or check_op(op).level != "host" for op in ops)
    got = run_graph(graph, {"x": x})["y"]
    assert got.shape == ref.shape
    assert float(np.max(np.abs(got - ref))) <= 1e-5 * float(np.max(np.abs(ref)))


@pytest.mark.parametrize("hw,dil,stride,pad,kernel,group,expect", [
    ((16, 16), (24, 24), 1, 24, 3, 1, (1, 1)),  # DeepLabV3's ASPP at 256x256: a 1x1 conv
    ((16, 16), (36, 36), 1, 36, 3, 8, (1, 1)),  # grouped: the same
    ((16, 40), (24, 24), 1, 24, 3, 1, (1, 3)),  # only the rows are all padding
    ((6, 6), (4, 4), 1, (4, 4, 0, 0), 3, 1, (2, 2)),  # padded at the top and left only: tap 0 reads padding
    ((12, 12), (6, 6), 1, 6, 3, 1, None),  # every tap reads the input somewhere: unchanged
    ((2, 2), (1, 1), 2, 1, 3, 8, None),  # SSDLite's last depthwise: 2x2 stride 2 is no TIDL kernel: kept
])
def test_kernel_taps_that_read_only_padding_are_cropped(tmp_path, hw, dil, stride, pad, kernel, group, expect):
    """DeepLabV3's ASPP branches (3x3, dilation 24 and 36) on a 16x16 plane read the input only
    with their centre tap; TIDL rejects their padding, wider than the plane (two host layers)."""
    from tidlc.backends.tidl.constraints import check as check_op
    rng = np.random.default_rng(sum(hw) + dil[0])
    shape = [1, 8, *hw]
    w = rng.normal(0, 0.2, (8, 8 // group, kernel, kernel)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[kernel, kernel], strides=[stride] * 2,
                            pads=list(pad) if isinstance(pad, tuple) else [pad] * 4, dilations=list(dil),
                            group=group)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    path = str(tmp_path / "dilated.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    graph = load_onnx(path, CompileOptions())
    optimize(graph, CompileOptions.of(opt_level=2))
    (conv,) = graph.compute_ops()
    assert conv.operands[1].type.shape[2:] == (expect or (kernel, kernel))
    if expect == (1, 1):
        assert conv.attrs["pads"] == (0, 0, 0, 0) and conv.attrs["dilations"] == (1, 1)
        assert check_op(conv) is None or check_op(conv).level != "host"
    got = run_graph(graph, {"x": x})["y"]
    assert got.shape == ref.shape
    assert float(np.max(np.abs(got - ref))) <= 1e-5 * float(np.max(np.abs(ref)))


@pytest.mark.parametrize("hw,kernel,stride,pad,dw,expect", [
    ((1, 40), (1, 7), 1, (0, 3, 0, 3), True, (7, 7)),  # PP-OCRv6's recognizer: 1x7 depthwise on a 1-row plane
    ((8, 8), (1, 5), 1, (0, 2, 0, 2), True, (5, 5)),
    ((8, 8), (3, 1), 1, (1, 0, 1, 0), True, (3, 3)),
    ((8, 8), (2, 2), 2, (0, 0, 0, 0), True, (3, 3)),  # 2x2 s2 depthwise: 3x3 s2, the extra tap below/right
    ((9, 9), (6, 6), 1, (2, 3, 3, 2), False, (7, 7)),
    ((8, 40), (1, 33), 1, (0, 16, 0, 16), True, None),  # no validated kernel holds 1x33 (nor 3-tap pieces): host
])
def test_a_kernel_tidl_lacks_is_zero_padded_to_one_it_takes(tmp_path, hw, kernel, stride, pad, dw, expect):
    """A conv kernel TIDL does not validate at its stride, inside a larger one it does, becomes
    that one with zeros around it and the padding grown to match: the host layer is gone, the
    float outputs are onnxruntime's."""
    from tidlc.backends.tidl.constraints import check as check_op
    rng = np.random.default_rng(sum(kernel) + stride)
    shape = [1, 8, *hw]
    w = rng.normal(0, 0.3, (8, 1 if dw else 8, *kernel)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(kernel), strides=[stride] * 2,
                            pads=list(pad), group=8 if dw else 1)
    graph, x, ref = _host_conv(tmp_path, node, shape, w, rng.normal(0, 0.1, 8).astype(np.float32), rng)
    optimize(graph, CompileOptions.of(opt_level=2))
    (conv,) = graph.compute_ops()
    assert conv.operands[1].type.shape[2:] == (expect or kernel)
    verdict = check_op(conv)
    assert (verdict is None or verdict.level != "host") == (expect is not None), verdict
    got = run_graph(graph, {"x": x})["y"]
    assert got.shape == ref.shape
    assert float(np.max(np.abs(got - ref))) <= 1e-5 * float(np.max(np.abs(ref)))


@pytest.mark.parametrize(("kernel", "dil", "pad", "convs"), [
    ((1, 9), 1, (0, 4, 0, 4), 4),  # InceptionNeXt-atto's token mixer (timm)
    ((11, 1), 1, (5, 0, 5, 0), 5),  # its 11x1 at the default size
    ((1, 9), 2, (0, 8, 0, 8), 4),
    ((1, 21), 1, (0, 10, 0, 10), 10),  # SegNeXt's MSCA strips
    ((21, 1), 1, (10, 0, 10, 0), 10),
    # padding short of every split: the kernel split's pieces of 7 and 2 taps, on cropped input
    ((1, 9), 1, (0, 1, 0, 1), 2),
])
def test_a_depthwise_band_longer_than_7_is_a_sum_of_3_tap_convs(tmp_path, kernel, dil, pad, convs):
    """TIDL's depthwise kernels end at 7x7: InceptionNeXt's 1x9/9x1 band convs were 24 host layers
    and 13 subgraphs in a 105-layer net. Each is now the sum of 3-tap depthwise convs (the centre
    taps, then each pair of taps at distance j as a 3-tap kernel dilated j times)."""
    from tidlc.backends.tidl.constraints import check as check_op
    rng = np.random.default_rng(sum(kernel) + dil)
    shape = [1, 8, 12, 12]
    w = rng.normal(0, 0.3, (8, 1, *kernel)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(kernel), pads=list(pad), group=8,
                            dilations=[dil, dil])
    graph, x, ref = _host_conv(tmp_path, node, shape, w, rng.normal(0, 0.1, 8).astype(np.float32), rng)
    optimize(graph, CompileOptions.of(opt_level=2))
    ops = list(graph.compute_ops())
    assert [op.kind for op in ops].count("conv2d") == convs
    assert all(check_op(op) is None or check_op(op).level != "host" for op in ops)
    got = run_graph(graph, {"x": x})["y"]
    assert got.shape == ref.shape
    assert float(np.max(np.abs(got - ref))) <= 1e-5 * float(np.max(np.abs(ref)))


@pytest.mark.parametrize(("kernel", "stride", "pad", "dw", "pieces", "piece"), [
    ((9, 9), 1, (4, 4, 4, 4), True, 4, (5, 5)),  # MixNet's and EdgeNeXt's 9x9 depthwise mixers
    ((9, 9), 2, (4, 4, 4, 4), True, 4, (5, 5)),  # MixNet's stride-2 one
    ((11, 11), 2, (5, 5, 5, 5), True, 4, (7, 7)),  # its 11x11 (two 6-tap halves, each padded to 7)
    ((13, 13), 1, (6, 6, 6, 6), True, 4, (7, 7)),
    ((9, 5), 1, (4, 2, 4, 2), True, 2, (5, 5)),  # only the long axis is cut
    ((9, 9), 1, (4, 4, 4, 4), False, 4, (5, 5)),  # a full conv: the same
    ((9, 9), 2, (3, 3, 4, 4), True, 4, ((5, 5), (7, 7), (7, 7), (7, 7))),  # tf_mixnet_s: TF SAME, 3 before, 4 after (5x7 -> 7x7)
    ((9, 9), 1, (2, 2, 2, 2), True, 4, (7, 7)),  # less padding: pieces of 7 taps (0-6, 2-8)
    # the padding reaches too few taps (halves of 8): cut after 7 taps, each piece reading the input
    # cropped where its padding would be negative (7 + 2 taps; 2x2 in a 3x3, 7x2 in a 7x7)
    ((9, 9), 1, (1, 1, 1, 1), True, 4, ((3, 3), (7, 7), (7, 7), (7, 7))),
    ((13, 1), 1, (0, 0, 0, 0), False, 2, ((7, 1), (7, 1))),  # LPRNet's unpadded 13x1 conv (6 taps padded to 7)
    ((9, 9), 2, (0, 0, 0, 0), False, 4, ((2, 2), (7, 7), (7, 7), (7, 7))),  # unpadded, stride 2 (2x2 s2)
    ((15, 15), 1, (7, 7, 7, 7), True, 1, (15, 15)),  # the same
])
def test_a_kernel_larger_than_7_is_a_sum_of_convs_of_its_halves(tmp_path, kernel, stride, pad, dw, pieces, piece):
    """MixNet-S's 9x9 and 11x11 depthwise convs were six host layers and six subgraphs: each
    long axis is cut at its centre into two halves that share the centre tap, every piece a
    kernel TIDL takes, the outputs added."""
    from tidlc.backends.tidl.constraints import check as check_op
    rng = np.random.default_rng(sum(kernel) + stride)
    shape = [1, 8, 15, 13]
    w = rng.normal(0, 0.3, (8, 1 if dw else 8, *kernel)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(kernel), pads=list(pad),
                            strides=[stride] * 2, group=8 if dw else 1)
    graph, x, ref = _host_conv(tmp_path, node, shape, w, rng.normal(0, 0.1, 8).astype(np.float32), rng)
    optimize(graph, CompileOptions.of(opt_level=2))
    ops = list(graph.compute_ops())
    convs = [op for op in ops if op.kind == "conv2d"]
    assert len(convs) == pieces and [op.kind for op in ops].count("add") == pieces - 1
    assert sorted(op.operands[1].type.shape[2:] for op in convs) == sorted(
        piece if isinstance(piece[0], tuple) else [piece] * pieces)
    assert all(check_op(op) is None or check_op(op).level != "host" for op in ops) == (pieces > 1)
    got = run_graph(graph, {"x": x})["y"]
    assert got.shape == ref.shape
    assert float(np.max(np.abs(got - ref))) <= 1e-5 * float(np.max(np.abs(ref)))


@pytest.mark.parametrize(("hw", "kernel", "stride", "dil", "pad", "first"), [
    ((56, 56), 3, 2, 2, 2, True),  # SKResNet's second path: the pool picks the rows, then a 3x3 conv
    ((15, 13), 3, 2, 4, 4, True),  # (a 3x3 dilation 2 on the picked plane)
    ((14, 14), 3, 2, 3, 3, False),  # the stride does not divide the dilation: conv at stride 1, then the pool
    ((16, 16), 3, 2, 2, 1, False),  # nor the padding
    ((12, 12), 3, 3, 3, 3, None),  # stride 3: no TIDL pool takes it, left to the host
])
def test_a_dilated_strided_conv_is_a_strided_pick_and_a_stride_1_conv(tmp_path, hw, kernel, stride, dil, pad, first):
    """TIDL dilates only stride-1 convs: SKResNet-18's 3x3 stride-2 dilation-2 path convs were
    three host layers. A 1x1 max pool with the stride picks the rows and columns the taps read."""
    from tidlc.backends.tidl.constraints import check as check_op
    rng = np.random.default_rng(sum(hw) + dil)
    shape = [1, 8, *hw]
    w = rng.normal(0, 0.3, (16, 8, kernel, kernel)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[kernel] * 2, pads=[pad] * 4,
                            strides=[stride] * 2, dilations=[dil] * 2)
    graph, x, ref = _host_conv(tmp_path, node, shape, w, rng.normal(0, 0.1, 16).astype(np.float32), rng)
    optimize(graph, CompileOptions.of(opt_level=2))
    kinds = [op.kind for op in graph.compute_ops()]
    assert kinds == {True: ["pool2d", "conv2d"], False: ["conv2d", "pool2d"], None: ["conv2d"]}[first]
    assert all(check_op(op) is None or check_op(op).level != "host" for op in graph.compute_ops()) == (first is not None)
    got = run_graph(graph, {"x": x})["y"]
    assert got.shape == ref.shape
    assert float(np.max(np.abs(got - ref))) <= 1e-5 * float(np.max(np.abs(ref)))


@pytest.mark.parametrize("reduce", ["ReduceSum", "ReduceMean", "ReduceMax"])
@pytest.mark.parametrize("paths", [2, 3])
def test_a_stack_read_by_element_wise_ops_and_reductions_is_unstacked(tmp_path, reduce, paths):
    """SKNet's selective kernel: the paths stacked into 1xPxCxHxW (TIDL has no 5-D concat: host
    layers and a subgraph split per block), summed, a softmax over the paths from that, the stack
    weighted with it and reduced over the paths. Unstacked it is 4-D muls and adds."""
    from tidlc.backends.tidl.constraints import check as check_op
    rng = np.random.default_rng(paths)
    c = 8
    nodes, inits = [], [numpy_helper.from_array(np.array([1], np.int64), "ax1"),
                        numpy_helper.from_array(np.array([1, paths, c, 1, 1], np.int64), "attn_shape")]
    for p in range(paths):
        inits.append(numpy_helper.from_array(rng.normal(0, 0.3, (c, c, 3, 3)).astype(np.float32), f"w{p}"))
        nodes += [helper.make_node("Conv", ["x", f"w{p}"], [f"c{p}"], kernel_shape=[3, 3], pads=[1] * 4),
                  helper.make_node("Unsqueeze", [f"c{p}", "ax1"], [f"u{p}"])]
    inits.append(numpy_helper.from_array(rng.normal(0, 0.3, (paths * c, c, 1, 1)).astype(np.float32), "wsel"))
    nodes += [helper.make_node("Concat", [f"u{p}" for p in range(paths)], ["stack"], axis=1),
              helper.make_node("ReduceSum", ["stack", "ax1"], ["sum"], keepdims=0),
              helper.make_node("GlobalAveragePool", ["sum"], ["gap"]),
              helper.make_node("Conv", ["gap", "wsel"], ["sel"], kernel_shape=[1, 1]),
              helper.make_node("Reshape", ["sel", "attn_shape"], ["attn5"]),
              helper.make_node("Softmax", ["attn5"], ["attn"], axis=1),
              helper.make_node("Mul", ["stack", "attn"], ["weighted"])]
    if reduce == "ReduceSum":
        nodes.append(helper.make_node(reduce, ["weighted", "ax1"], ["y"], keepdims=0))
    else:
        nodes.append(helper.make_node(reduce, ["weighted"], ["y"], axes=[1], keepdims=0))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = str(tmp_path / "sk.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    x = rng.uniform(-1, 1, [1, c, 6, 6]).astype(np.float32)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    graph = load_onnx(path, CompileOptions())
    optimize(graph, CompileOptions.of(opt_level=2))
    ops = list(graph.compute_ops())
    # (the attention stays 5-D up to its slices: moves and a softmax TIDL takes)
    assert {op.kind for op in ops if len(op.results[0].type.shape) > 4} <= {"reshape", "softmax", "slice"}
    assert [op.kind for op in ops].count("mul") - paths in ((0, 1) if reduce == "ReduceMean" else (0,))
    assert all(check_op(op) is None or check_op(op).level != "host" for op in ops)
    got = run_graph(graph, {"x": x})["y"]
    assert got.shape == ref.shape
    assert float(np.max(np.abs(got - ref))) <= 1e-5 * float(np.max(np.abs(ref)))


def test_caffe_spp_max_pools_chain_in_ceil_mode(tmp_path):
    """Caffe pools are all in ceil mode, which at stride 1 changes nothing: a Caffe SPP block (5x5,
    9x9, 13x13 stride-1 max pools, concatenated) chains like the ONNX one, no host layer left, the
    same outputs as imported."""
    from tidlc.backends.tidl.constraints import check

    from tidlc.compiler import load
    pools = "".join(
        f'layer {{ name: "pool{k}" type: "Pooling" bottom: "data" top: "pool{k}" '
        f'pooling_param {{ pool: MAX kernel_size: {k} stride: 1 pad: {k // 2} }} }}\n' for k in (5, 9, 13))
    proto = tmp_path / "spp.prototxt"
    proto.write_text('name: "spp"\nlayer { name: "data" type: "Input" top: "data" '
                     'input_param { shape { dim: 1 dim: 4 dim: 16 dim: 16 } } }\n' + pools +
                     'layer { name: "cat" type: "Concat" bottom: "data" bottom: "pool5" bottom: "pool9" '
                     'bottom: "pool13" top: "cat" }\n')
    x = np.random.default_rng(0).uniform(-1, 1, (1, 4, 16, 16)).astype(np.float32)
    ref = run_graph(load(str(proto), CompileOptions()), {"data": x})["cat"]
    options = CompileOptions.of(opt_level=2)
    graph = load(str(proto), options)
    optimize(graph, options)
    pools = [op for op in graph.compute_ops() if op.kind == "pool2d"]
    assert len(pools) == 2 + 4 + 6 and all(op.attrs["kernel"] == (3, 3) for op in pools)
    assert not [op.name for op in graph.compute_ops() if (v := check(op)) is not None and v.level == "host"]
    np.testing.assert_array_equal(run_graph(graph, {"data": x})["cat"], ref)


@pytest.mark.parametrize("kind", ["Add", "Mul"])
def test_an_operand_broadcast_over_the_batch_goes_behind_a_leading_axis(tmp_path, kind):
    """Swin's relative position bias (1, heads, 49, 49) added to its windows stacked in the batch
    (64, heads, 49, 49) was a host layer (TIDL's EltWise broadcasts every axis but the batch): with
    a leading axis of 1 in front (reshapes) the windows are an ordinary axis."""
    from tidlc.backends.tidl.constraints import check
    rng = np.random.default_rng(5)
    bias = rng.normal(0, 1, (1, 3, 5, 5)).astype(np.float32)
    node = helper.make_node(kind, ["x", "bias"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 3, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(bias, "bias")])
    path = str(tmp_path / "bb.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    x = rng.normal(0, 1, (8, 3, 5, 5)).astype(np.float32)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    g = load_onnx(path, CompileOptions())
    assert check(next(g.compute_ops())).level == "host"
    optimize(g, CompileOptions.of(opt_level=2))
    assert not [op.name for op in g.compute_ops() if (v := check(op)) is not None and v.level == "host"]
    np.testing.assert_array_equal(run_graph(g, {"x": x})["y"], ref)


def test_a_per_channel_constant_on_a_batch_is_left_to_fuse_batchnorm(tmp_path):
    """conv -> mul by (1, C, 1, 1) at batch 4 still folds into the conv (not lifted to rank 5)."""
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(rng.normal(0, 1, (5, 3, 1, 1)).astype(np.float32), "w"),
                               numpy_helper.from_array(rng.normal(0, 1, (1, 5, 1, 1)).astype(np.float32), "s")])
    path = str(tmp_path / "pc.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    g = load_onnx(path, CompileOptions())
    optimize(g, CompileOptions.of(opt_level=2))
    assert [op.kind for op in g.compute_ops()] == ["conv2d"]


def _argmax_model(tmp_path, axis: int) -> str:
    w = np.random.default_rng(3).standard_normal((5, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["logits"], pads=[1, 1, 1, 1]),
             helper.make_node("ArgMax", ["logits"], ["y"], axis=axis, keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, None)], [_c("w", w)])
    path = str(tmp_path / f"argmax{axis}.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.mark.parametrize(("axis", "expect"), [(1, ["conv2d", "argmax", "reshape"]), (2, ["conv2d", "argmax"])])
def test_an_argmax_without_keepdims_keeps_the_axis_tidl_keeps(tmp_path, axis, expect):
    """A segmentation net's ``logits.argmax(1)`` (keepdims=0) was a host layer: TIDL's ArgMax keeps
    the reduced axis. It is that ArgMax and a reshape; along another axis the host runs it anyway."""
    from tidlc.backends.tidl.constraints import check
    path = _argmax_model(tmp_path, axis)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    g = load_onnx(path, CompileOptions())
    optimize(g, CompileOptions.of(opt_level=2))
    ops = list(g.compute_ops())
    assert [o.kind for o in ops] == expect
    np.testing.assert_array_equal(run_graph(g, {"x": x})["y"], ref)
    hosts = [o.kind for o in ops if (v := check(o)) is not None and v.level == "host"]
    assert hosts == ([] if axis == 1 else ["argmax"])


def test_the_argmax_runs_on_the_codes(cli, tmp_path):
    """TIDL's ArgMax reads the fixed-point codes (one per-tensor scale keeps their order): no
    data_convert to float before it, and the indices are the float model's but where two logits
    round to one code."""
    from tidlc.backends.tidl.binfmt import read_compiled
    path = _argmax_model(tmp_path, 1)
    x = np.random.default_rng(1).uniform(-1, 1, (8, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "calib.npy", x)
    np.save(tmp_path / "x.npy", x[:1])
    code, out, err = cli("compile", path, "--calib", tmp_path / "calib.npy", "-o", tmp_path / "out", quiet=False)
    assert code == 0 and "stay in float" not in out + err, out + err
    ops = read_compiled(str(tmp_path / "out" / "net.bin")).graph.compute_ops()
    assert [o.kind for o in ops][-3:] == ["conv2d", "argmax", "reshape"]  # (after the input's data_convert)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x[:1]})[0]
    code, _, err = cli("run", tmp_path / "out", "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npz")
    assert code == 0, err
    got = np.load(tmp_path / "y.npz")["y"]
    assert got.shape == ref.shape and np.mean(got == ref) > 0.97, np.mean(got == ref)


def _compiled_snr(cli, tmp_path, path: str, x: np.ndarray, ref: np.ndarray) -> float:
    """Compile ``path`` calibrated on frames ``x`` (one subgraph: no subgraph line), run it on
    the first frame: the SNR (dB) of output 'y' against ``ref``."""
    np.save(tmp_path / "calib.npy", x)
    np.save(tmp_path / "x.npy", x[:1])
    code, out, err = cli("compile", path, "--calib", tmp_path / "calib.npy", "-o", tmp_path / "out", quiet=False)
    assert code == 0 and "subgraph" not in out + err, out + err
    code, _, err = cli("run", tmp_path / "out", "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npz")
    assert code == 0, err
    got = np.load(tmp_path / "y.npz")["y"].astype(np.float64)
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((got - ref) ** 2)))


def _aspp_pool_model(tmp_path, mode: str, coord: str) -> str:
    """DeepLabV3's ASPP pooling branch: global pool, 1x1 conv, ReLU, resize back to the plane
    (torchvision: bilinear to 33x33 at 520x520, "x33"), concatenated with the input."""
    rng = np.random.default_rng(5)
    sizes = numpy_helper.from_array(np.array([1, 4, 9, 9], np.int64), "sizes")
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
             helper.make_node("Conv", ["p", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Resize", ["r", "", "", "sizes"], ["up"], mode=mode,
                              coordinate_transformation_mode=coord),
             helper.make_node("Concat", ["x", "up"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 9, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [_c("w", rng.normal(0, 1, (4, 4, 1, 1))), _c("b", rng.normal(0.5, 0.2, 4)), sizes])
    path = str(tmp_path / f"aspp_{mode}_{coord}.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.mark.parametrize(("mode", "coord"), [("linear", "half_pixel"), ("linear", "align_corners"),
                                             ("nearest", "asymmetric")])
def test_a_resize_of_one_pixel_is_a_broadcast(cli, tmp_path, mode, coord):
    """The x9 resize of a 1x1 plane was a host layer (TIDL resizes by powers of two): it copies the
    pixel whatever the mode, a multiplication by ones that TIDL's EltWise broadcasts. One subgraph,
    float outputs onnxruntime's, the compiled model near them."""
    from tidlc.backends.tidl.constraints import check
    path = _aspp_pool_model(tmp_path, mode, coord)
    x = np.random.default_rng(2).uniform(-1, 1, (8, 4, 9, 9)).astype(np.float32)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x[:1]})[0]
    g = load_onnx(path, CompileOptions())
    optimize(g, CompileOptions.of(opt_level=2))
    ops = list(g.compute_ops())
    assert "resize" not in [o.kind for o in ops] and "mul" in [o.kind for o in ops]
    assert not [o.name for o in ops if (v := check(o)) is not None and v.level == "host"]
    np.testing.assert_allclose(run_graph(g, {"x": x[:1]})["y"], ref, rtol=1e-6, atol=1e-6)
    assert _compiled_snr(cli, tmp_path, path, x, ref) > 30


@pytest.mark.parametrize(("mode", "coord", "nearest", "hw", "out", "expect"), [
    ("nearest", "asymmetric", "floor", (3, 3), (7, 7), "copies"),  # GhostNetV2's DFC attention (x2.33)
    ("nearest", "half_pixel", "round_prefer_floor", (3, 3), (7, 7), "copies"),
    ("nearest", "asymmetric", "floor", (5, 4), (7, 4), "copies"),  # only the rows change
    ("nearest", "asymmetric", "floor", (7, 7), (3, 3), "copies"),  # a shrink picks rows too
    ("nearest", "asymmetric", "floor", (10, 10), (25, 25), "dense"),  # 25 rows out: more than a concat reads
    ("linear", "half_pixel", "floor", (3, 3), (7, 7), "dense"),  # blends: the interpolation matrices
    ("linear", "align_corners", "floor", (8, 8), (16, 16), "dense"),  # a U-Net's x2 with align_corners
    ("linear", "half_pixel", "floor", (8, 6), (14, 6), "dense"),  # x1.75 along H only: no dense over W
    ("linear", "pytorch_half_pixel", "floor", (19, 19), (37, 37), "dense"),  # Depth Anything's fusion at 518
    ("linear", "half_pixel", "floor", (8, 8), (16, 16), "resize"),  # x2 half_pixel: TIDL's own Resize
])
def test_a_resize_tidl_lacks_is_copies_or_interpolation_matrices(tmp_path, mode, coord, nearest, hw, out, expect):
    """TIDL resizes by powers of two, bilinear with half-pixel centres: a nearest resize by
    another factor copies rows and columns (a concat of one-row slices along each axis it
    changes); any other resize of H and W is a dense layer over W with the interpolation matrix,
    then one over H between two transposes. The float outputs are onnxruntime's."""
    from tidlc.backends.tidl.constraints import check as check_op
    sizes = numpy_helper.from_array(np.array([1, 6, *out], np.int64), "sizes")
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode=mode, coordinate_transformation_mode=coord,
                            nearest_mode=nearest)
    ops = _at_o2(tmp_path, [node], [1, 6, *hw], [sizes], opset=13, atol=1e-5)
    kinds = [o.kind for o in ops]
    if expect == "copies":
        assert set(kinds) <= {"slice", "concat"}
    elif expect == "dense":
        rows, cols = hw[0] != out[0], hw[1] != out[1]
        by_rows, by_cols = ["transpose", "dense", "transpose"] * rows, ["dense"] * cols
        # (the transposes move the plane at its width then: rows first where the map widens it)
        assert kinds == (by_rows + by_cols if out[1] > hw[1] else by_cols + by_rows), kinds
    else:
        assert kinds == ["resize"]
    assert all(check_op(o) is None or check_op(o).level != "host" for o in ops)


def test_an_interpolated_resize_compiles_near_float(cli, tmp_path):
    """A U-Net decoder's x2 bilinear upsampling with align_corners, as dense layers: one
    subgraph, 8-bit output within quantization noise of onnxruntime's."""
    rng = np.random.default_rng(4)
    sizes = numpy_helper.from_array(np.array([1, 8, 32, 32], np.int64), "sizes")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1] * 4), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Resize", ["r1", "", "", "sizes"], ["up"], mode="linear",
                              coordinate_transformation_mode="align_corners"),
             helper.make_node("Conv", ["up", "w2"], ["y"], pads=[1] * 4)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [_c("w1", rng.normal(0, 0.3, (8, 3, 3, 3))), _c("w2", rng.normal(0, 0.3, (4, 8, 3, 3))),
                               sizes])
    path = str(tmp_path / "unet_up.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    x = rng.uniform(0, 1, (8, 3, 16, 16)).astype(np.float32)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x[:1]})[0]
    assert _compiled_snr(cli, tmp_path, path, x, ref) > 30


@pytest.mark.parametrize("n", [25, 50])
def test_a_concat_of_more_than_24_tensors_is_a_tree(tmp_path, n):
    """DenseNet-121's third dense block concatenates 25 tensors; a TIDL layer reads at most 24
    buffers, so it was a host layer between two subgraphs."""
    from tidlc.backends.tidl.constraints import check
    nodes = [helper.make_node("Mul", ["x", f"k{i}"], [f"m{i}"]) for i in range(n)]
    nodes.append(helper.make_node("Concat", [f"m{i}" for i in range(n)], ["y"], axis=1))
    ops = _at_o2(tmp_path, nodes, [1, 2, 4, 4], inits=[_c(f"k{i}", i + 1.0) for i in range(n)])
    concats = [op for op in ops if op.kind == "concat"]
    assert len(concats) == (n + 22) // 23 and all(len(op.operands) <= 24 for op in concats)
    assert not [op.name for op in ops if (v := check(op)) is not None and v.level == "host"]


@pytest.mark.parametrize(("op", "keepdims", "weighted", "expect"), [
    ("ReduceSum", 1, False, ["conv2d"]),
    ("ReduceMean", 0, False, ["conv2d", "reshape"]),
    ("ReduceSum", 0, True, ["conv2d", "reshape"]),  # a DFL head: (softmax(box, 1) * arange(8)).sum(1)
    ("ReduceMax", 1, False, ["reduce"]),  # (no conv computes a max: TIDL's Reduce layer, on the codes)
    ("ReduceProd", 1, False, ["reduce"]),  # (nor a product, and TIDL has no layer for it: a float layer)
])
def test_a_reduction_over_the_channels_is_a_1x1_conv(tmp_path, op, keepdims, weighted, expect):
    """TIDL has no integer Reduce sum: it was a float layer between data converts (check called it
    accelerated; compile said 'stays in float'). A sum or mean over the channels, also of a product
    with a constant per channel, is a 1x1 conv to one channel."""
    from tidlc.backends.tidl.backend import TidlBackend
    shape = [1, 8, 4, 20]
    nodes, inits, x = [], [], "x"
    if weighted:
        nodes.append(helper.make_node("Softmax", ["x"], ["p"], axis=1))
        nodes.append(helper.make_node("Mul", ["p", "bins"], ["px"]))
        inits.append(_c("bins", np.arange(8, dtype=np.float32).reshape(1, 8, 1, 1)))
        x = "px"
    nodes.append(helper.make_node(op, [x, "axes"], ["y"], keepdims=keepdims))
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    ops = [o for o in _at_o2(tmp_path, nodes, shape, inits, opset=18, x_max=3.0, atol=1e-5) if o.kind != "softmax"]
    assert [o.kind for o in ops] == expect
    levels = [TidlBackend().supports(o).level for o in ops]
    assert levels == (["penalty"] if op == "ReduceProd" else ["accelerated"] * len(ops))


@pytest.mark.parametrize(("op", "shape", "axes", "keepdims", "expect"), [
    ("ReduceSum", [1, 8, 4, 20], [3], 1, ["reshape", "global_pool", "scale", "reshape"]),  # MobileViTv2's context
    ("ReduceMax", [1, 8, 4, 20], [3], 0, ["reshape", "global_pool", "reshape"]),
    ("ReduceSum", [1, 8, 4, 20], [1, 2, 3], 1, ["reshape", "global_pool", "scale"]),
    ("ReduceSum", [1, 8, 40, 40], [2, 3], 0, ["pool2d", "global_pool", "scale", "reshape"]),  # (1600 > 1024: split)
    ("ReduceMean", [1, 7, 7, 24], [1, 2], 0, ["transpose", "global_pool", "reshape"]),  # MambaOut's NHWC head
    ("ReduceMax", [1, 7, 7, 24], [1, 2], 1, ["transpose", "global_pool", "reshape"]),
    ("ReduceMean", [1, 8, 4, 20], [3], 1, ["reduce"]),  # (a mean over the last axis: a layer norm's, left to it)
])
def test_a_reduction_over_trailing_or_nhwc_plane_axes_is_a_global_pool(tmp_path, op, shape, axes, keepdims, expect):
    """TIDL has no integer Reduce sum or mean: a sum (max) over the trailing axes of a 4-D tensor
    is a global pool of it seen as N x (leading) x (trailing) x 1, a mean (max) over axes 1 and
    2 (an NHWC plane) a transpose and a global pool; each was a float layer."""
    from tidlc.backends.tidl.backend import TidlBackend
    nodes = [helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)]
    inits = [numpy_helper.from_array(np.array(axes, np.int64), "axes")]
    ops = _at_o2(tmp_path, nodes, shape, inits, opset=18, x_max=3.0, atol=1e-5)
    assert [o.kind for o in ops] == expect
    levels = [TidlBackend().supports(o).level for o in ops]
    assert levels == (["penalty"] if expect == ["reduce"] else ["accelerated"] * len(ops))


@pytest.mark.parametrize(("hw", "kernel", "pad", "group"), [
    ((56, 56), 3, 1, 8),  # MViTv2's attention pooling: depthwise 3x3 stride 4 padded 1
    ((15, 13), 3, 1, 8),
    ((16, 16), 5, 2, 8),
])
def test_a_depthwise_conv_at_stride_4_is_stride_2_and_a_strided_pick(tmp_path, hw, kernel, pad, group):
    """TIDL's depthwise convs take strides 1 and 2: a stride-4 one (MViTv2: two host layers) is
    the conv at stride 2 and a 1x1 stride-2 max pool keeping every other output."""
    from tidlc.backends.tidl.constraints import check as check_op
    rng = np.random.default_rng(sum(hw) + kernel)
    w = rng.normal(0, 0.3, (8, 8 // group, kernel, kernel)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[kernel] * 2, pads=[pad] * 4,
                            strides=[4, 4], group=group)
    graph, x, ref = _host_conv(tmp_path, node, [1, 8, *hw], w, rng.normal(0, 0.1, 8).astype(np.float32), rng)
    optimize(graph, CompileOptions.of(opt_level=2))
    ops = list(graph.compute_ops())
    assert [op.kind for op in ops] == ["conv2d", "pool2d"] and ops[0].attrs["strides"] == (2, 2)
    assert all(check_op(op) is None or check_op(op).level != "host" for op in ops)
    got = run_graph(graph, {"x": x})["y"]
    assert got.shape == ref.shape
    assert float(np.max(np.abs(got - ref))) <= 1e-5 * float(np.max(np.abs(ref)))


@pytest.mark.parametrize(("op", "shape", "attrs", "expect"), [
    ("AveragePool", [1, 8, 64], {"kernel_shape": [4], "strides": [4]}, True),  # NeXt-ViT's AvgPool1d(4)
    ("AveragePool", [1, 8, 256], {"kernel_shape": [16], "strides": [16]}, True),
    ("MaxPool", [1, 8, 3, 12], {"kernel_shape": [1, 4], "strides": [1, 4]}, True),
    ("MaxPool", [1, 8, 12, 1], {"kernel_shape": [4, 1], "strides": [4, 1]}, True),  # a column
    ("AveragePool", [1, 8, 64], {"kernel_shape": [4], "strides": [4], "pads": [2, 2]}, False),  # padded: stays
])
def test_a_pool_of_1xk_windows_at_stride_k_is_a_global_pool_of_rows(tmp_path, op, shape, attrs, expect):
    nodes = [helper.make_node(op, ["x"], ["y"], **attrs)]
    ops = _at_o2(tmp_path, nodes, shape, opset=13, x_max=3.0, atol=1e-5)
    assert ("global_pool" in [o.kind for o in ops]) == expect


@pytest.mark.parametrize("radix", [2, 4])
def test_a_reduction_over_an_axis_a_reshape_split_out_is_a_sum_of_slices(tmp_path, radix):
    """ResNeSt's split attention: 1x(R*C)xHxW reshaped to 1xRxCxHxW, weighted by a softmax over
    the radix and summed over it (a 5-D float reduction): the channel slices, muls and adds."""
    from tidlc.backends.tidl.backend import TidlBackend
    c = 4
    nodes = [helper.make_node("Reshape", ["x", "split"], ["xs"]),
             helper.make_node("Mul", ["xs", "attn"], ["w"]),
             helper.make_node("ReduceSum", ["w", "ax1"], ["y"], keepdims=0)]
    attn = np.random.default_rng(radix).uniform(0, 1, (1, radix, c, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(np.array([1, radix, c, 6, 5], np.int64), "split"), _c("attn", attn),
             numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    ops = _at_o2(tmp_path, nodes, [1, radix * c, 6, 5], inits, opset=13, x_max=3.0, atol=1e-5)
    kinds = [o.kind for o in ops]
    assert "reduce" not in kinds and kinds.count("add") == radix - 1 and kinds.count("mul") == radix
    assert all(TidlBackend().supports(o).level == "accelerated" for o in ops)


def test_a_channel_max_runs_on_the_codes(cli, tmp_path):
    """CBAM's spatial attention pools the channels by mean and max: the mean is a 1x1 conv, the max
    TIDL's Reduce layer, which selects a code (the input's scale): no float layer between data
    converts (it was one), and the compile's SNR line is the only note."""
    from tidlc.backends.tidl.binfmt import read_compiled
    from tidlc.backends.tidl.fixed.executor import has_integer_kernel
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Conv", ["x", "w"], ["f"], pads=[1, 1, 1, 1]),
             helper.make_node("ReduceMean", ["f", "axes"], ["avg"], keepdims=1),
             helper.make_node("ReduceMax", ["f", "axes"], ["mx"], keepdims=1),
             helper.make_node("Concat", ["avg", "mx"], ["a"], axis=1),
             helper.make_node("Conv", ["a", "ws"], ["s"], pads=[3, 3, 3, 3]),
             helper.make_node("Sigmoid", ["s"], ["g"]), helper.make_node("Mul", ["f", "g"], ["y"])]
    inits = [_c("w", rng.standard_normal((8, 3, 3, 3))), _c("ws", rng.standard_normal((1, 2, 7, 7)) * 0.2),
             numpy_helper.from_array(np.array([1], np.int64), "axes")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = str(tmp_path / "cbam.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    np.save(tmp_path / "calib.npy", rng.uniform(-1, 1, (8, 3, 16, 16)).astype(np.float32))
    code, out, err = cli("compile", path, "--calib", tmp_path / "calib.npy", "-o", tmp_path / "out", quiet=False)
    assert code == 0 and "stay in float" not in out + err, out + err
    ops = list(read_compiled(str(tmp_path / "out" / "net.bin")).graph.compute_ops())
    assert [o.kind for o in ops].count("data_convert") == 2  # (the input's and the output's)
    red = next(o for o in ops if o.kind == "reduce")
    assert red.results[0].type.quant.scale == red.operands[0].type.quant.scale
    assert has_integer_kernel(red)
    x = rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    code, _, err = cli("run", tmp_path / "out", "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npz")
    assert code == 0, err
    got = np.load(tmp_path / "y.npz")["y"]
    snr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((got - ref.astype(np.float64)) ** 2))
    assert snr > 25, snr


@pytest.mark.parametrize(("mode", "pads", "opset"), [
    ("reflect", [0, 0, 1, 1, 0, 0, 1, 1], 13),  # monodepth2's ReflectionPad2d(1)
    ("reflect", [0, 0, 3, 3, 0, 0, 3, 3], 13),  # image-to-image nets' ReflectionPad2d(3)
    ("reflect", [0, 0, 0, 2, 0, 0, 1, 0], 13),
    ("edge", [0, 0, 2, 1, 0, 0, 0, 3], 13),
    ("wrap", [0, 0, 1, 2, 0, 0, 2, 1], 19),
    ("reflect", [0, 1, 1, 1, 0, 1, 1, 1], 13),  # channels too
])
def test_a_mirror_pad_is_a_gather_of_rows(tmp_path, mode, pads, opset):
    """TIDL's Pad layer pads with a constant: reflect, edge and wrap padding were float layers
    between data_convert ops. Along each padded axis the pad is a gather of the rows numpy's mode
    names, by constant indices (TIDL's Gather layer; it keeps the scale). Float outputs are
    onnxruntime's; no float layer is left."""
    from tidlc.backends.tidl.constraints import check as check_op
    node = helper.make_node("Pad", ["x", "pads"], ["y"], mode=mode)
    ops = _at_o2(tmp_path, [node], [1, 3, 5, 7], [numpy_helper.from_array(np.array(pads, np.int64), "pads")],
                 opset=opset)
    padded = [axis for axis in range(1, 4) if pads[axis] or pads[axis + 4]]
    assert [o.kind for o in ops] == ["gather"] * len(padded)
    assert [o.attrs["axis"] for o in ops] == padded
    assert all(check_op(o) is None for o in ops)


def test_a_cropping_pad_stays_a_pad(tmp_path):
    """A negative pad crops first: the rule leaves it (a float layer, named)."""
    node = helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")
    ops = _at_o2(tmp_path, [node], [1, 3, 5, 7],
                 [numpy_helper.from_array(np.array([0, 0, 1, -1, 0, 0, 1, 1], np.int64), "pads")])
    assert [o.kind for o in ops] == ["pad"]


@pytest.mark.parametrize(("groups", "bias", "kernel"), [(1, True, 1), (1, False, 1), (2, True, 1), (1, True, 3)])
def test_a_dynamic_pointwise_conv_is_a_matmul(tmp_path, groups, bias, kernel):
    """CondInst's, SOLOv2's and CondLaneNet's dynamic heads apply kernels a controller predicts
    (here from the map's own global pool) as 1x1 convs: a host layer, since a TIDL convolution
    has constant weights. As kernels x map it is TIDL's MatMul of two variable tensors. Float
    outputs are onnxruntime's; a 3x3 dynamic kernel stays a (host) conv."""
    rng = np.random.default_rng(6)
    cin, cout = 4, 6
    k = cout * (cin // groups) * kernel * kernel
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["p"], transB=1),
             helper.make_node("Slice", ["p", "s0", "s1", "ax"], ["wf"]),
             helper.make_node("Reshape", ["wf", "wshape"], ["w"])]
    inits = [_c("fc", rng.normal(0, 0.5, (k + cout, cin))), _c("fb", rng.normal(0, 0.1, k + cout)),
             numpy_helper.from_array(np.array([0], np.int64), "s0"), numpy_helper.from_array(np.array([k], np.int64), "s1"),
             numpy_helper.from_array(np.array([1], np.int64), "ax"),
             numpy_helper.from_array(np.array([cout, cin // groups, kernel, kernel], np.int64), "wshape")]
    conv_in = ["x", "w"]
    if bias:
        nodes += [helper.make_node("Slice", ["p", "s1", "s2", "ax"], ["bf"]),
                  helper.make_node("Reshape", ["bf", "bshape"], ["b"])]
        inits += [numpy_helper.from_array(np.array([k + cout], np.int64), "s2"),
                  numpy_helper.from_array(np.array([cout], np.int64), "bshape")]
        conv_in.append("b")
    nodes.append(helper.make_node("Conv", conv_in, ["y"], group=groups, pads=[kernel // 2] * 4))
    ops = _at_o2(tmp_path, nodes, [1, cin, 5, 7], inits, atol=1e-5)
    convs = [o for o in ops if o.kind == "conv2d"]
    assert len(convs) == (kernel != 1) and ("matmul" in [o.kind for o in ops]) == (kernel == 1)


@pytest.mark.parametrize(("kind", "attrs", "picks"), [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [1, 2]}, [3]),  # LPRNet
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 1], "pads": [1, 1, 1, 1]}, [2]),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [3, 3]}, [2, 3]),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [1, 2], "ceil_mode": 1}, None),  # ceil mode: stays
])
def test_a_pool_at_a_stride_tidl_lacks_is_a_stride_1_pool_and_gathers(tmp_path, kind, attrs, picks):
    """TIDL pools at equal strides 1 or 2: LPRNet's 3x3 max pools at stride (1, 2) were host
    layers. The pool at stride 1, then a gather of every stride-th row or column (TIDL's Gather
    layer), is the same result (onnxruntime's)."""
    from tidlc.backends.tidl.constraints import check
    ops = _one_node_at_o2(tmp_path, helper.make_node(kind, ["x"], ["y"], **attrs), [1, 4, 11, 14])
    if picks is None:
        assert [op.kind for op in ops] == ["pool2d"]
        return
    assert [op.kind for op in ops] == ["pool2d"] + ["gather"] * len(picks)
    assert [op.attrs["axis"] for op in ops[1:]] == picks and all(check(op) is None for op in ops)


@pytest.mark.parametrize(("op_type", "axes", "keepdims", "kinds"), [
    ("ReduceMean", None, 0, ["global_pool", "conv2d"]),  # torch.mean(f): every axis (N = 1)
    ("ReduceMean", [1, 2, 3], 1, ["global_pool", "conv2d"]),
    ("ReduceMax", [1, 2, 3], 1, ["global_pool"]),  # (the max of a 1x1 plane's channels: a global pool too)
    ("ReduceMean", [2], 0, ["transpose", "dense"]),  # LPRNet's mean over H (the transpose back: a reshape)
    ("ReduceSum", [2], 1, ["transpose", "dense"]),
])
def test_whole_and_height_reductions_are_pools_and_dense_layers(tmp_path, op_type, axes, keepdims, kinds):
    """LPRNet divides each feature map by ``torch.mean(f ** 2)`` and ends with a mean over H:
    five float layers. A mean (max) over C, H and W is a global pool, then the channel
    reduction (a 1x1 conv for a mean); a sum or mean over H is a dense layer over H."""
    from tidlc.backends.tidl.constraints import check
    node = helper.make_node(op_type, ["x"] + (["axes"] if axes else []), ["y"], keepdims=keepdims)
    inits = [numpy_helper.from_array(np.array(axes, np.int64), "axes")] if axes else []
    ops = _at_o2(tmp_path, [node], [1, 6, 5, 7], inits, opset=18, atol=1e-5)
    assert [op.kind for op in ops if op.kind != "reshape"] == kinds
    assert all(check(op) is None or check(op).level == "accelerated" for op in ops)


def test_a_gather_nd_region_that_is_no_separable_map_stays(tmp_path):
    """The region is identified from a cross through the plane, then checked on random inputs:
    a GatherND that transposes each plane (``y[i, j] = x[j, i]``: linear, but no rows x columns
    product) is left a host op, its output still onnxruntime's."""
    n = 6
    idx = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij")[::-1], -1).astype(np.int64)  # [i, j] -> (j, i)
    nodes = [helper.make_node("Transpose", ["x"], ["hwnc"], perm=[2, 3, 0, 1]),
             helper.make_node("GatherND", ["hwnc", "idx"], ["swapped"]),
             helper.make_node("Transpose", ["swapped"], ["y"], perm=[2, 3, 0, 1])]
    ops = _at_o2(tmp_path, nodes, [1, 4, n, n], [numpy_helper.from_array(idx, "idx")])
    assert [op.kind for op in ops if op.kind not in ("transpose",)] == ["host"]


@pytest.mark.parametrize(("op_type", "first", "keepdims"), [("ReduceMean", 2, 1), ("ReduceMean", 3, 0), ("ReduceMax", 2, 1)])
def test_a_mean_over_h_then_w_is_a_global_pool(tmp_path, op_type, first, keepdims):
    """FocalNet's global context, ``x.mean(2, keepdim=True).mean(3, keepdim=True)``: two float
    layers, now one global pool (onnxruntime's output)."""
    nodes = [helper.make_node(op_type, ["x", "a1"], ["m"], keepdims=1),
             helper.make_node(op_type, ["m", "a2"], ["y"], keepdims=keepdims)]
    inits = [numpy_helper.from_array(np.array([first], np.int64), "a1"),
             numpy_helper.from_array(np.array([5 - first], np.int64), "a2")]
    ops = _at_o2(tmp_path, nodes, [1, 6, 5, 7], inits, opset=18, atol=1e-5)
    assert [op.kind for op in ops if op.kind != "reshape"] == ["global_pool"]
