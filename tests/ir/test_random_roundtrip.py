"""Randomised round trip: seeded random small graphs survive print -> parse -> print unchanged,
keep every op, attribute, type, name, location and constant, and still compute the same."""
import numpy as np
import pytest

from tidlc.diagnostics import Loc, TidlcError
from tidlc.interp import run_graph
from tidlc.ir import Builder, QuantInfo, TensorType, parse_graph, print_graph, verify

NAME_CHARS = list("abcxyz_019./:-") + ['"', "\\", " ", "\t", "\n", "é", "@", "%", "{"]
ACTS = [("none", ()), ("relu", ()), ("relu6", ()), ("clip", (-1.0, 2.5)), ("leaky_relu", (0.1,)),
        ("sigmoid", ()), ("tanh", ()), ("hardsigmoid", (0.2, 0.5)), ("hardswish", ()), ("elu", (1.0,)),
        ("gelu", ())]


def random_name(rng, allow_empty=True):
    if allow_empty and rng.random() < 0.3:
        return ""
    return "".join(rng.choice(NAME_CHARS) for _ in range(rng.integers(1, 9)))


def random_loc(rng):
    if rng.random() < 0.5:
        return None
    file = random_name(rng) or "model.onnx"
    line = int(rng.integers(0, 500))
    return Loc("", file, line, int(rng.integers(1, 80)) if line else 0)


def random_const(rng, b, shape):
    kind = rng.integers(3)
    if kind == 0:  # a splat: zero-stride view, printed as one value
        data = np.broadcast_to(np.float32(rng.standard_normal()), shape)
    else:  # small ones inline, big ones into the sidecar
        data = rng.standard_normal(shape).astype(np.float32)
    return b.const(data, random_name(rng), random_loc(rng))


def conv(rng, b, x):
    c = x.type.shape[1]
    groups = int(rng.choice([g for g in (1, 2, c) if c % g == 0]))
    cout = groups * int(rng.integers(1, 3))
    k = int(rng.integers(1, 4))
    w = random_const(rng, b, (cout, c // groups, k, k))
    operands = [x, w] + ([random_const(rng, b, (cout,))] if rng.random() < 0.5 else [])
    act, params = ACTS[rng.integers(len(ACTS))]
    return b.op("conv2d", operands, random_name(rng), random_loc(rng),
                strides=tuple(int(s) for s in rng.integers(1, 3, 2)),
                pads=tuple(int(p) for p in rng.integers(0, 3, 4)),
                dilations=tuple(int(d) for d in rng.integers(1, 3, 2)), groups=groups, act=act, act_params=params)


def pool(rng, b, x):
    k = int(rng.integers(1, 4))
    return b.op("pool2d", [x], random_name(rng), random_loc(rng), mode=str(rng.choice(["max", "avg"])),
                kernel=(k, k), strides=(int(rng.integers(1, 3)),) * 2, pads=(int(rng.integers(0, k)),) * 4,
                ceil_mode=bool(rng.random() < 0.5), count_include_pad=bool(rng.random() < 0.5))


def activation(rng, b, x):
    kind = str(rng.choice(["relu", "sigmoid", "tanh", "clip", "leaky_relu", "abs", "neg", "softmax"]))
    attrs = {"clip": {"min": -0.5, "max": 0.5}, "leaky_relu": {"alpha": float(rng.random())},
             "softmax": {"axis": 1}}.get(kind, {})
    return b.op(kind, [x], random_name(rng), random_loc(rng), **attrs)


def binary(rng, b, x):
    c = x.type.shape[1]
    other = random_const(rng, b, (c, 1, 1)) if rng.random() < 0.7 else x
    act, params = ACTS[rng.integers(len(ACTS))]
    return b.op(str(rng.choice(["add", "sub", "mul", "max", "min"])), [x, other], random_name(rng),
                random_loc(rng), act=act, act_params=params)


def batchnorm(rng, b, x):
    c = x.type.shape[1]
    params = [random_const(rng, b, (c,)) for _ in range(3)]
    var = b.const(rng.random(c).astype(np.float32) + 0.5)
    return b.op("batchnorm", [x, *params, var], random_name(rng), random_loc(rng), epsilon=1e-3)


def concat_split(rng, b, x):
    y = b.op("concat", [x, x], random_name(rng), random_loc(rng), axis=1)
    c = y.type.shape[1]
    parts = b.op("split", [y], random_name(rng), sizes=(1, c - 1), axis=1)
    return parts[1]


def resize(rng, b, x):
    return b.op("resize", [x], random_name(rng), scales=(1.0, 1.0, 2.0, 2.0),
                mode=str(rng.choice(["nearest", "linear"])),
                coord_mode=str(rng.choice(["asymmetric", "half_pixel", "align_corners"])))


def reshape_back(rng, b, x):
    shape = x.type.shape
    flat = b.op("reshape", [x], shape=(shape[0], -1))
    return b.op("reshape", [flat], random_name(rng), shape=shape)


STEPS = [conv, pool, activation, binary, batchnorm, concat_split, resize, reshape_back]


def random_graph(seed):
    rng = np.random.default_rng(seed)
    b = Builder()
    b.graph.name = random_name(rng, allow_empty=False)
    if rng.random() < 0.5:
        b.graph.attrs = {"source": random_name(rng), "opset": int(rng.integers(7, 22)),
                         "with space": [1.5, "x"]}
    c, h, w = (int(v) for v in rng.integers(1, 5, 3) * (1, 2, 2))
    x = b.input(random_name(rng, allow_empty=False), TensorType((1, c, h, w), layout="NCHW"), random_loc(rng))
    outputs = []
    for _ in range(rng.integers(2, 7)):
        step = STEPS[rng.integers(len(STEPS))]
        try:
            y = step(rng, b, x)
        except TidlcError:  # an impossible combination (e.g. window larger than the input)
            continue
        if y.type.shape[2] * y.type.shape[3] > 256:
            continue
        x = y
        if rng.random() < 0.3:
            outputs.append(x)
    outputs.append(x)
    for i, v in enumerate(dict.fromkeys(outputs)):
        b.output(v, f"out{i}")
    for op in b.graph.compute_ops():  # some quantization annotations on the way
        if rng.random() < 0.2:
            per_channel = rng.random() < 0.5
            c = op.results[0].type.shape[1]
            quant = QuantInfo(8, bool(rng.random() < 0.5), list(rng.random(c) + 0.1) if per_channel else 0.5,
                              zero_point=int(rng.integers(0, 5)), shift=int(rng.integers(0, 9)),
                              axis=1 if per_channel else None)
            op.results[0].type = op.results[0].type.with_quant(quant)
    return b.graph, rng


def same_graph(a, b, weights):
    assert a.name == b.name and a.attrs == b.attrs and a.output_names == b.output_names
    assert len(a.ops) == len(b.ops)
    index_a = {id(r): (k, i) for k, op in enumerate(a.ops) for i, r in enumerate(op.results)}
    index_b = {id(r): (k, i) for k, op in enumerate(b.ops) for i, r in enumerate(op.results)}
    for op_a, op_b in zip(a.ops, b.ops):
        assert (op_a.kind, op_a.attrs) == (op_b.kind, op_b.attrs)
        # an unnamed sidecar constant comes back named by its weight symbol
        assert op_a.name == op_b.name or (op_a.kind == "const" and not op_a.name and op_b.name in weights)
        assert (op_a.loc or Loc()).where() == (op_b.loc or Loc()).where()
        assert [index_a[id(v)] for v in op_a.operands] == [index_b[id(v)] for v in op_b.operands]
        assert [r.type for r in op_a.results] == [r.type for r in op_b.results]
        if op_a.kind == "const":
            assert op_a.data.dtype == op_b.data.dtype
            np.testing.assert_array_equal(op_a.data, op_b.data)
    assert [index_a[id(v)] for v in a.outputs] == [index_b[id(v)] for v in b.outputs]


@pytest.mark.parametrize("seed", range(40))
def test_random_graph_round_trip(seed):
    graph, rng = random_graph(seed)
    verify(graph)
    text, weights = print_graph(graph)
    again = parse_graph(text, weights)
    verify(again)
    assert print_graph(again)[0] == text
    same_graph(graph, again, weights)
    feed = rng.standard_normal(graph.inputs[0].type.shape).astype(np.float32)
    expected = run_graph(graph, {graph.input_names()[0]: feed})
    got = run_graph(again, {again.input_names()[0]: feed})
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
