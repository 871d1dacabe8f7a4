"""Per-op numerics against onnxruntime: activations, unary math, (variadic) arithmetic with
broadcasting, Clip in both forms, Cast, Where."""
from __future__ import annotations

import numpy as np
import pytest

ACTIVATIONS = [
    ("Relu", {}, 7), ("Relu", {}, 14), ("Sigmoid", {}, 13), ("Tanh", {}, 13), ("Softplus", {}, 7),
    ("LeakyRelu", {}, 7), ("LeakyRelu", {"alpha": 0.3}, 16), ("Elu", {}, 7), ("Elu", {"alpha": 0.5}, 13),
    ("Selu", {}, 7), ("Selu", {"alpha": 1.2, "gamma": 0.9}, 13),
    ("HardSigmoid", {}, 7), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, 13),
    ("HardSwish", {}, 14), ("Gelu", {}, 20), ("Gelu", {"approximate": "tanh"}, 20),
    ("Softsign", {}, 13), ("Mish", {}, 18),
]


@pytest.mark.parametrize("op_type,attrs,opset", ACTIVATIONS,
                         ids=[f"{o}-{'-'.join(map(str, a.values())) or 'default'}-op{v}" for o, a, v in ACTIVATIONS])
def test_activation(ox, op_type, attrs, opset):
    x = ox.randn(2, 3, 4, 5) * 4
    ox.check_node(op_type, {"x": x}, attrs, opset=opset)


UNARY = ["Exp", "Log", "Sqrt", "Abs", "Neg", "Reciprocal", "Floor", "Ceil", "Erf"]


@pytest.mark.parametrize("op_type", UNARY)
@pytest.mark.parametrize("opset", [9, 13])
def test_unary(ox, op_type, opset):
    x = ox.randn(3, 7) * 3
    if op_type in ("Log", "Sqrt", "Reciprocal"):
        x = np.abs(x) + 0.1
    ox.check_node(op_type, {"x": x}, opset=opset)


@pytest.mark.parametrize("slope_shape", [(3, 1, 1), (1,), (3,), (1, 3, 1, 1), (3, 4, 3), (4, 1)], ids=str)
@pytest.mark.parametrize("opset", [7, 9, 16])
def test_prelu(ox, slope_shape, opset):
    # W == C == 3: a (3,) slope is per column, not per channel
    ox.check_node("PRelu", {"x": ox.randn(2, 3, 4, 3)}, opset=opset,
                  initializers={"slope": ox.randn(*slope_shape, seed=5)})


def test_prelu_2d_and_slope_input(ox):
    ox.check_node("PRelu", {"x": ox.randn(4, 6)}, initializers={"slope": ox.randn(6, seed=5)})
    ox.check_node("PRelu", {"x": ox.randn(2, 3, 4), "slope": ox.randn(3, 1, seed=5)})
    # a runtime (W,) slope with W == C must still broadcast along the last axis
    ox.check_node("PRelu", {"x": ox.randn(2, 3, 4, 3), "slope": ox.randn(3, seed=5)})
    ox.check_node("PRelu", {"x": ox.randn(2, 3, 4, 3), "slope": ox.randn(1, 3, 1, 1, seed=5)})


@pytest.mark.parametrize("bounds", [(-0.5, 0.7), (0.0, 6.0), (None, 1.0), (-1.0, None), (None, None)], ids=str)
def test_clip_attrs(ox, bounds):
    attrs = {k: v for k, v in zip(("min", "max"), bounds) if v is not None}
    ox.check_node("Clip", {"x": ox.randn(2, 3, 4) * 4}, attrs, opset=7)


@pytest.mark.parametrize("bounds", [(-0.5, 0.7), (0.0, 6.0), (None, 1.0), (-1.0, None), (None, None)], ids=str)
@pytest.mark.parametrize("opset", [11, 13])
def test_clip_inputs(ox, bounds, opset):
    lo, hi = bounds
    inits = {}
    names = ["x", "", ""]
    if lo is not None:
        inits["lo"], names[1] = np.float32(lo), "lo"
    if hi is not None:
        inits["hi"], names[2] = np.float32(hi), "hi"
    while names[-1] == "":
        names.pop()
    ox.check_node("Clip", {"x": ox.randn(2, 3, 4) * 4}, opset=opset, initializers=inits, input_names=names)


def test_clip_bounds_from_graph_inputs(ox):
    ox.check_node("Clip", {"x": ox.randn(2, 3) * 4, "lo": np.array(-1, np.float32), "hi": np.array(0.5, np.float32)},
                  opset=13)


BROADCASTS = [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (4,)), ((2, 3, 4), ()), ((3, 1), (1, 4)),
              ((1, 3, 1, 5), (2, 1, 4, 1)), ((5,), (2, 5))]


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div", "Max", "Min"])
@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
def test_binary(ox, op_type, shapes):
    a, b = ox.randn(*shapes[0]), ox.randn(*shapes[1], seed=1)
    ox.check_node(op_type, {"a": a, "b": np.asarray(b)}, opset=13)


@pytest.mark.parametrize("op_type", ["Add", "Mul", "Sub", "Div"])
@pytest.mark.parametrize("opset", [7, 14])
def test_binary_const_operand(ox, op_type, opset):
    ox.check_node(op_type, {"a": ox.randn(1, 3, 4, 4)}, opset=opset,
                  initializers={"b": ox.randn(3, 1, 1, seed=2)})


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div"])
def test_binary_int(ox, op_type):
    a = np.array([[7, -7, 9], [3, 4, -5]], np.int64)
    b = np.array([2, 3, -4], np.int64)
    ox.check_node(op_type, {"a": a, "b": b}, outputs=[("y", np.int64)])


@pytest.mark.parametrize("exponent", [np.float32(2.0), np.array([0.5, 2.0, 3.0], np.float32), np.int64(3),
                                      np.int32(2)], ids=["f32", "vec", "i64", "i32"])
@pytest.mark.parametrize("opset", [7, 13, 15])
def test_pow(ox, exponent, opset):
    if opset == 7 and np.asarray(exponent).dtype != np.float32:
        pytest.skip("Pow-7 has one type for both inputs")
    ox.check_node("Pow", {"x": np.abs(ox.randn(2, 3)) + 0.5}, opset=opset, initializers={"e": exponent})


@pytest.mark.parametrize("op_type", ["Sum", "Mean", "Max", "Min"])
@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("opset", [7, 8, 13])
def test_variadic(ox, op_type, count, opset):
    shapes = [(2, 3, 4), (3, 4), (2, 3, 4)] if opset >= 8 else [(2, 3, 4)] * 3
    inputs = {f"x{k}": ox.randn(*shapes[k], seed=k) for k in range(count)}
    ox.check_node(op_type, inputs, opset=opset)


@pytest.mark.parametrize("to,src,dst", [(1, np.int64, np.float32), (7, np.float32, np.int64),
                                        (6, np.float32, np.int32), (9, np.float32, np.bool_),
                                        (2, np.float32, np.uint8), (10, np.float32, np.float16),
                                        (1, np.float16, np.float32), (9, np.int64, np.bool_)],
                         ids=["i64>f32", "f32>i64", "f32>i32", "f32>bool", "f32>u8", "f32>f16", "f16>f32",
                              "i64>bool"])
@pytest.mark.parametrize("opset", [7, 13, 19])
def test_cast(ox, to, src, dst, opset):
    x = (np.abs(ox.randn(3, 4)) * 5).astype(src)
    ox.check_node("Cast", {"x": x}, {"to": to}, opset=opset, outputs=[("y", dst)])


def test_cast_like(ox):
    ox.check_node("CastLike", {"x": ox.randn(3, 4) * 5, "like": np.zeros(2, np.int32)}, opset=15,
                  outputs=[("y", np.int32)])


@pytest.mark.parametrize("opset", [9, 16])
def test_where(ox, opset):
    cond = ox.randn(3, 4, seed=7) > 0
    ox.check_node("Where", {"c": cond, "a": ox.randn(3, 4), "b": ox.randn(4, seed=2)}, opset=opset)


def test_pow_int_exponent_input(ox):
    ox.check_node("Pow", {"x": np.abs(ox.randn(2, 3)) + 0.5, "e": np.array([1, 2, 3], np.int64)}, opset=13)


@pytest.mark.parametrize(("threshold", "as_constant", "host"), [(20.0, False, False), (20.0, True, False),
                                                               (5.0, False, True)])
def test_pytorch_thresholded_softplus_is_one_softplus(ox, threshold, as_constant, host):
    """PyTorch's dynamo exporter writes F.softplus (and nn.Mish's) as ``Where(Greater(x, 20), x,
    Softplus(x))``: the Greater was a host op splitting the graph. From 15 on the two agree to
    float32's resolution, and the Softplus is the whole of it; a lower threshold changes values
    and stays as written."""
    h = ox.helper
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("Softplus", ["c"], ["sp"]), h.make_node("Greater", ["c", "t"], ["gt"]),
             h.make_node("Where", ["gt", "c", "sp"], ["y"])]
    t = np.array(threshold, np.float32)
    inits = {"w": np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32) * 6}
    if as_constant:
        nodes.insert(0, h.make_node("Constant", [], ["t"], value=ox.numpy_helper.from_array(t, "t")))
    else:
        inits["t"] = t
    x = ox.randn(1, 3, 8, 8) * 3
    model = ox.make_model(nodes, {"x": x}, ["y"], inits, 18)
    ref = ox.check(model, {"x": x})
    assert float(np.abs(ref["y"]).max()) > 40  # (values on both sides of the threshold)
    kinds = [op.kind for op in ox.tidlc_graph(model, 2).compute_ops()]
    assert ("host" in kinds) == host, kinds


@pytest.mark.parametrize(("source", "host"), [("Softmax", False), ("Relu", True)])
def test_pytorch_nan_guarded_softmax_is_the_softmax(ox, source, host):
    """``scaled_dot_product_attention`` exports its softmax as ``Where(IsNaN(s), 0, s)``: IsNaN had
    no converter, so Hugging Face's DETR had a host op and a subgraph split in every attention
    layer. A softmax is NaN only on a fully masked (all -inf) row; the guard goes. The same
    guard on anything else stays as written."""
    h = ox.helper
    nodes = [h.make_node("MatMul", ["q", "k"], ["s"]), h.make_node(source, ["s"], ["p"], **(
                 {"axis": -1} if source == "Softmax" else {})),
             h.make_node("IsNaN", ["p"], ["nan"]), h.make_node("Where", ["nan", "zero", "p"], ["y"])]
    q = ox.randn(1, 2, 5, 8)
    model = ox.make_model(nodes, {"q": q}, ["y"], {"k": ox.randn(1, 2, 8, 5, seed=3),
                                                   "zero": np.array(0.0, np.float32)}, 17)
    ox.check(model, {"q": q})
    kinds = [op.kind for op in ox.tidlc_graph(model, 2).compute_ops()]
    assert ("host" in kinds) == host, kinds


def test_mish_is_lowered_not_hosted(ox):
    """PyTorch's dynamo exporter writes nn.Mish as the opset-18 Mish op: it was a host op."""
    x = ox.randn(1, 3, 4, 5) * 4
    model = ox.make_model([ox.helper.make_node("Mish", ["x"], ["y"])], {"x": x}, ["y"], None, 18)
    ox.check(model, {"x": x})
    assert [op.kind for op in ox.tidlc_graph(model, 2).compute_ops()] == ["softplus", "tanh", "mul"]
