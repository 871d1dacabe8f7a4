"""shape-inference, dce and remove-identity: structure after the pass, numerics unchanged."""
import numpy as np
import pytest

from tidlc.diagnostics import TidlcError
from tidlc.ir import Builder, QuantInfo, TensorType, verify
from tidlc.shapes import apply_input_shapes

RNG = np.random.default_rng(7)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def classifier(batch=1, size=8):
    b = Builder()
    x = b.input("data", TensorType((batch, 3, size, size), layout="NCHW"))
    y = b.op("conv2d", [x, b.const(randn(4, 3, 3, 3), "w"), b.const(randn(4), "b")], pads=(1, 1, 1, 1))
    y = b.op("pool2d", [y], mode="max", kernel=(2, 2), strides=(2, 2))
    y = b.op("global_pool", [y], mode="avg")
    y = b.op("reshape", [y], shape=(0, -1))
    b.output(b.op("dense", [y, b.const(randn(5, 4), "fc")]), "logits")
    return b.graph


def test_shape_inference_after_an_input_shape_change(run_passes):
    graph = classifier()
    apply_input_shapes(graph, {"data": (2, 3, 16, 12)})
    verify(graph)  # apply_input_shapes re-infers everything right away
    conv, pool = graph.ops[3], graph.ops[4]
    assert conv.results[0].type == TensorType((2, 4, 16, 12), layout="NCHW")
    assert pool.results[0].type == TensorType((2, 4, 8, 6), layout="NCHW")
    assert graph.outputs[0].type == TensorType((2, 5))
    assert run_passes(graph, "shape-inference", {"data": randn(2, 3, 16, 12)}) is False  # already current


def test_shape_inference_resolves_unknown_dims_and_keeps_annotations(run_passes):
    b = Builder()
    x = b.input("x", TensorType((None, 2, None, None), layout="NCHW"))
    y = b.op("relu", [x])
    z = b.op("concat", [y, y], axis=1)
    b.output(z, "z")
    quant = QuantInfo(8, False, 0.5)
    y.type = y.type.with_quant(quant)
    x.type = TensorType((1, 2, 3, 4), layout="NCHW")  # what --input-shape does
    assert run_passes(b.graph, "shape-inference", {"x": randn(1, 2, 3, 4)}) is True
    assert y.type == TensorType((1, 2, 3, 4), layout="NCHW", quant=quant)
    assert z.type == TensorType((1, 4, 3, 4), layout="NCHW")


def test_input_shape_errors():
    graph = classifier()
    with pytest.raises(TidlcError) as info:
        apply_input_shapes(graph, {"image": (1, 3, 8, 8)})
    assert str(info.value) == "error: --input-shape names unknown input 'image' (hint: the model's inputs are: data)"
    with pytest.raises(TidlcError) as info:
        apply_input_shapes(graph, {"data": (1, 3, 8)})
    assert str(info.value) == ("error: --input-shape data: rank 3 but the model declares (1, 3, 8, 8) "
                               "(hint: give one value per dimension)")
    with pytest.raises(TidlcError, match=r"'conv2d': error: conv2d: window 3 larger than padded input 2"):
        apply_input_shapes(graph, {"data": (1, 3, 8, 0)})


def test_dce_removes_what_no_output_needs(run_passes, count):
    b = Builder()
    x = b.input("x", TensorType((2, 6)))
    b.input("unused", TensorType((3,)))
    parts = b.op("split", [x], axis=1, sizes=(2, 4))  # only the first part is used: the op stays
    dead = b.op("exp", [b.op("neg", [parts[1]])])
    b.op("add", [dead, b.const(np.ones(4, np.float32), "dead_const")])
    b.output(b.op("relu", [parts[0]]), "y")
    feeds = {"x": randn(2, 6), "unused": randn(3)}
    assert run_passes(b.graph, "dce", feeds) is True
    assert count(b.graph) == {"split": 1, "relu": 1}
    assert [op.kind for op in b.graph.ops] == ["input", "input", "split", "relu"]  # inputs stay
    assert b.graph.find_input("unused") is not None
    assert run_passes(b.graph, "dce", feeds) is False


@pytest.mark.parametrize("kind, attrs", [("identity", {}), ("dropout", {"ratio": 0.3}), ("cast", {"dtype": "f32"}),
                                         ("reshape", {"shape": (0, 0, -1)}), ("flatten", {"axis": 1}),
                                         ("slice", {"starts": (0, 0), "ends": (3, 99), "axes": (1, 2)}),
                                         ("pad", {"pads": (0,) * 6})])
def test_remove_identity(run_passes, count, kind, attrs):
    b = Builder()
    x = b.input("x", TensorType((2, 6) if kind == "flatten" else (2, 3, 4)))
    y = b.op(kind, [b.op("neg", [x], name="n")], **attrs)
    b.output(b.op("relu", [y]), "out")
    shape = x.type.shape
    assert run_passes(b.graph, "remove-identity", {"x": randn(*shape)}) is True
    assert count(b.graph) == {"neg": 1, "relu": 1}
    assert b.graph.ops[-1].operands[0].producer.name == "n"


def test_remove_identity_keeps_real_conversions(run_passes, count):
    b = Builder()
    x = b.input("x", TensorType((2, 3, 4)))
    b.output(b.op("cast", [x], dtype="f16"), "half")
    b.output(b.op("reshape", [x], shape=(6, 4)), "flat")
    b.output(b.op("flatten", [x]), "flat2")
    b.output(b.op("slice", [x], starts=(-1,), ends=(-5,), axes=(2,), steps=(-1,)), "reversed")
    b.output(b.op("pad", [x], pads=(0, 0, 1, 0, 0, 0)), "padded")
    assert run_passes(b.graph, "remove-identity", {"x": randn(2, 3, 4)}) is False
    assert count(b.graph) == {"cast": 1, "reshape": 1, "flatten": 1, "slice": 1, "pad": 1}


def test_identity_between_input_and_output_stays(run_passes, count):
    b = Builder()
    x = b.input("x", TensorType((3,)))
    b.output(b.op("identity", [x]), "copy")  # removing it would make the input a graph output
    y = b.op("dropout", [b.op("neg", [x], name="n")])
    b.output(y, "negated")
    assert run_passes(b.graph, "remove-identity", {"x": randn(3)}) is True
    assert count(b.graph) == {"identity": 1, "neg": 1}
    assert b.graph.outputs[1].producer.name == "n" and b.graph.output_names == ["copy", "negated"]


def test_reshape_chains_become_one_reshape_or_none(run_passes, count):
    """global_pool -> reshape (1,1,1,C) -> reshape (1,C,1,1) (EfficientNet's squeeze-excite in a frozen
    graph once the layout is NCHW) is no reshape at all; flatten -> unsqueeze -> reshape is one."""
    b = Builder()
    x = b.input("x", TensorType((1, 6, 4, 4), layout="NCHW"))
    g = b.op("global_pool", [x], mode="avg")
    y = b.op("reshape", [b.op("reshape", [g], shape=(1, 1, 1, 6))], shape=(1, 6, 1, 1))
    y = b.op("conv2d", [y, b.const(randn(3, 6, 1, 1))])
    z = b.op("unsqueeze", [b.op("flatten", [x], axis=1)], axes=(0,))
    z = b.op("reshape", [z], shape=(2, 48))
    b.output(y, "se")
    b.output(z, "z")
    assert run_passes(b.graph, "remove-identity,dce", feeds_for(b.graph)) is True
    assert count(b.graph) == {"global_pool": 1, "conv2d": 1, "reshape": 1}
    reshape = b.graph.outputs[1].producer
    assert reshape.operands[0] is b.graph.inputs[0] and reshape.attrs["shape"] == (2, 48)


def test_a_reshape_chain_between_an_input_and_an_output_stays_a_value(run_passes, count):
    b = Builder()
    x = b.input("x", TensorType((2, 6)))
    b.output(b.op("reshape", [b.op("reshape", [x], shape=(3, 4))], shape=(2, 6)), "y")
    run_passes(b.graph, "remove-identity,dce", feeds_for(b.graph))
    assert b.graph.outputs[0] is not b.graph.inputs[0]


def test_cse_merges_repeated_ops(run_passes, count):
    """A frozen NASNet reads each cell's input through two identical ReLUs, one per branch: one stays,
    and what read the second (here a repeated conv, merged in turn) reads the first."""
    b = Builder()
    x = b.input("x", TensorType((1, 4, 6, 6), layout="NCHW"))
    w = b.const(randn(4, 4, 3, 3))
    branches = []
    for _ in range(2):
        r = b.op("relu", [x])
        branches.append(b.op("conv2d", [r, w], pads=(1, 1, 1, 1)))
    other = b.op("conv2d", [b.op("relu", [x]), w], pads=(0, 0, 0, 0))  # other attributes: kept
    b.output(b.op("add", [branches[0], branches[1]]), "y")
    b.output(other, "z")
    assert run_passes(b.graph, "cse,dce", feeds_for(b.graph)) is True
    assert count(b.graph) == {"relu": 1, "conv2d": 2, "add": 1}
    add = b.graph.outputs[0].producer
    assert add.operands[0] is add.operands[1]


def test_cse_leaves_outputs_constants_host_ops_and_kept_ops(run_passes, count):
    from tidlc.passes.rewrite import keep_ops
    b = Builder()
    x = b.input("x", TensorType((1, 4)))
    b.output(b.op("relu", [x]), "a")
    b.output(b.op("relu", [x]), "b")  # two graph outputs: two values
    s = b.op("add", [b.op("sigmoid", [x], name="s1"), b.op("sigmoid", [x], name="s2")])
    b.output(s, "c")
    keep_ops(b.graph, names=["s2"])
    try:
        assert run_passes(b.graph, "cse,dce", feeds_for(b.graph)) is False
    finally:
        keep_ops(b.graph)
    assert count(b.graph) == {"relu": 2, "sigmoid": 2, "add": 1}
    assert run_passes(b.graph, "cse,dce", feeds_for(b.graph)) is True
    assert count(b.graph) == {"relu": 2, "sigmoid": 1, "add": 1}


def feeds_for(graph):
    return {op.attrs["name"]: randn(*op.results[0].type.shape) for op in graph.input_ops}
