"""The layout pass: NHWC graphs (as the TensorFlow/TFLite importers write them) become NCHW with
transposes only at the boundary; every rule keeps the numerics (run_passes compares before/after),
layouts are in the types and checked by the verifier, and --input-layout sets the interface."""
import numpy as np
import pytest
from tidlc.plugins.cleanup import DeadCodeElimination, RemoveIdentity, ShapeInference
from tidlc.plugins.fold_constants import FoldConstants
from tidlc.plugins.fuse import FuseActivation, FuseBatchNorm
from tidlc.plugins.layout import Layout, interior_transposes

from tidlc.diagnostics import TidlcError
from tidlc.interp import run_graph
from tidlc.ir import Builder, TensorType, parse_graph, print_graph, verify
from tidlc.passes import default_pipeline
from tidlc.shapes import apply_input_layout

RNG = np.random.default_rng(5)
TO_NCHW, TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


@pytest.fixture
def registry():
    return {cls.name: cls for cls in (ShapeInference, DeadCodeElimination, RemoveIdentity, FoldConstants,
                                      FuseBatchNorm, FuseActivation, Layout)}


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def nhwc_input(b, shape=(1, 6, 5, 4), name="x"):
    return b.input(name, TensorType(shape, layout="NHWC"))


def conv_nhwc(b, x, cout=4, name="conv"):
    """What the importers write: transpose, NCHW conv, transpose back."""
    cin = x.type.shape[3]
    t = b.op("transpose", [x], perm=TO_NCHW)
    y = b.op("conv2d", [t, b.const(randn(cout, cin, 3, 3)), b.const(randn(cout))], pads=(1, 1, 1, 1), name=name)
    return b.op("transpose", [y], perm=TO_NHWC)


def feeds(graph):
    return {op.attrs["name"]: randn(*op.results[0].type.shape) for op in graph.input_ops}


def transposes(graph):
    return [op for op in graph.ops if op.kind == "transpose"]


def test_a_chain_of_convs_keeps_only_the_boundary_transposes(run_passes, count):
    b = Builder()
    x = nhwc_input(b)
    y = b.op("relu", [conv_nhwc(b, x, name="c1")])
    y = b.op("add", [conv_nhwc(b, y, name="c2"), y])  # residual: both sides transposed alike
    y = b.op("mul", [conv_nhwc(b, y, name="c3"), b.const(randn(4))])  # per-channel constant (C,)
    b.output(b.op("sigmoid", [y]), "out")
    assert run_passes(b.graph, "layout,dce", feeds(b.graph)) is True
    assert count(b.graph) == {"transpose": 2, "conv2d": 3, "relu": 1, "add": 1, "mul": 1, "sigmoid": 1}
    first, last = transposes(b.graph)
    assert first.operands[0].producer.kind == "input" and last.results[0] is b.graph.outputs[0]
    assert interior_transposes(b.graph) == []
    mul = next(op for op in b.graph.ops if op.kind == "mul")
    assert mul.operands[1].type.shape == (1, 4, 1, 1) and mul.results[0].type.layout == "NCHW"


def test_fusions_follow_the_layout_pass(run_passes, count):
    b = Builder()
    y = conv_nhwc(b, nhwc_input(b))
    y = b.op("add", [b.op("mul", [y, b.const(randn(4))]), b.const(randn(1, 1, 1, 4))])  # batch norm, NHWC
    b.output(b.op("relu6", [y]), "out")
    run_passes(b.graph, "layout,fuse-batchnorm,fuse-activation,dce", feeds(b.graph))
    assert count(b.graph) == {"transpose": 2, "conv2d": 1}
    conv = next(op for op in b.graph.ops if op.kind == "conv2d")
    assert conv.attrs["act"] == "relu6"


def test_transposes_merge_cancel_and_fold(run_passes, count):
    b = Builder()
    x = b.input("x", TensorType((2, 3, 4, 5)))
    y = b.op("transpose", [b.op("transpose", [x], perm=(1, 0, 3, 2))], perm=(1, 0, 3, 2))  # cancels
    z = b.op("transpose", [b.op("transpose", [x], perm=(0, 2, 3, 1))], perm=(0, 2, 3, 1))  # merges
    c = b.op("transpose", [b.const(randn(2, 3, 4, 5))], perm=(3, 2, 1, 0))  # folds
    b.output(b.op("add", [y, x]), "y")
    b.output(z, "z")
    b.output(b.op("relu", [c]), "c")
    run_passes(b.graph, "layout,dce", feeds(b.graph))
    assert [op.attrs["perm"] for op in transposes(b.graph)] == [(0, 3, 1, 2)]


@pytest.mark.parametrize("build", [
    lambda b, t: b.op("concat", [t, b.op("tanh", [t]), b.const(randn(1, 5, 6, 2))], axis=-1),
    lambda b, t: b.op("pad", [t], pads=(0, 1, 0, 2, 0, 2, 1, 0), value=0.5),
    lambda b, t: b.op("pad", [t], pads=(0, 1, 2, 0, 0, 0, 1, 0), mode="reflect"),
    lambda b, t: b.op("slice", [t], starts=(1, 0), ends=(4, 2), axes=(1, -1), steps=(2, 1)),
    lambda b, t: b.op("gather", [t, b.const(np.array([1, 0, 1, 2, 3, 4, 3], np.int32))], axis=1),  # a mirror pad
    lambda b, t: b.op("split", [t], axis=3, sizes=(1, 3))[1],
    lambda b, t: b.op("resize", [t], scales=(1.0, 2.0, 1.5, 1.0), mode="linear", coord_mode="half_pixel"),
    lambda b, t: b.op("reduce", [t], op="mean", axes=(1, 2), keepdims=False),
    lambda b, t: b.op("reduce", [t], op="max", axes=(2,), keepdims=False),
    lambda b, t: b.op("reduce", [t], op="sum", axes=(3,), keepdims=True),
    lambda b, t: b.op("argmax", [t], axis=3, keepdims=False),
    lambda b, t: b.op("softmax", [t], axis=-1),
    lambda b, t: b.op("scale", [t, b.const(randn(4)), b.const(randn(4))], axis=3),
    lambda b, t: b.op("prelu", [t, b.const(randn(1, 1, 1, 4))]),
    lambda b, t: b.op("prelu", [t, b.const(randn(5))]),  # a 1-D slope of x.shape[1] values: per axis 1
    lambda b, t: b.op("clip", [t], min=-0.5, max=0.5),
    lambda b, t: b.op("squeeze", [b.op("reduce", [t], op="mean", axes=(1,), keepdims=True)], axes=(1,)),
    lambda b, t: b.op("dequantize", [b.op("quantize", [t], scale=(8.0, 4.0, 2.0, 1.0), axis=3)],
                      scale=(8.0, 4.0, 2.0, 1.0), axis=3),
    lambda b, t: b.op("dequantize", [b.op("quantize", [t], scale=(16.0,), zero_point=3, dtype="u8")],
                      scale=(16.0,), zero_point=3),
], ids=["concat", "pad", "pad-reflect", "slice", "gather-rows", "split", "resize", "mean-hw", "max-h", "sum-keep", "argmax",
        "softmax", "scale", "prelu-4d", "prelu-1d", "clip", "squeeze", "quant-per-channel", "quant-u8"])
def test_each_rule_moves_the_transpose_below_the_op(run_passes, build):
    b = Builder()
    t = conv_nhwc(b, nhwc_input(b, (1, 5, 6, 4)))
    b.output(build(b, t), "out")
    run_passes(b.graph, "layout,dce", feeds(b.graph))
    assert interior_transposes(b.graph) == []
    conv = next(op for op in b.graph.ops if op.kind == "conv2d")
    assert all(user.kind != "transpose" for user, _ in b.graph.users()[conv.results[0]])


def test_a_shared_transpose_is_not_duplicated(run_passes, count):
    b = Builder()
    t = conv_nhwc(b, nhwc_input(b))
    b.output(b.op("reshape", [t], shape=(1, -1)), "flat")  # reads NHWC memory order: needs the transpose
    b.output(b.op("relu", [t]), "relu")
    run_passes(b.graph, "layout,dce", feeds(b.graph))
    assert count(b.graph) == {"transpose": 2, "conv2d": 1, "reshape": 1, "relu": 1}


def test_identical_transposes_are_shared(run_passes, count):
    b = Builder()
    x = nhwc_input(b)
    b.output(conv_nhwc(b, x, name="a"), "a")
    b.output(conv_nhwc(b, x, name="b"), "b")
    run_passes(b.graph, "layout,dce", feeds(b.graph))
    assert count(b.graph)["transpose"] == 3  # one after the input, one before each output


def test_an_input_padded_before_its_transpose_gets_the_transpose_first(run_passes):
    b = Builder()
    x = nhwc_input(b)
    p = b.op("pad", [x], pads=(0, 1, 2, 0, 0, 1, 2, 0))
    b.output(b.op("relu", [conv_nhwc(b, p)]), "out")
    run_passes(b.graph, "layout,dce", feeds(b.graph))
    first = transposes(b.graph)[0]
    assert first.operands[0].producer.kind == "input" and interior_transposes(b.graph) == []


def test_an_input_read_twice_joins_through_one_transpose(run_passes, count):
    b = Builder()
    x = nhwc_input(b)
    b.output(b.op("concat", [conv_nhwc(b, x), b.op("relu", [x])], axis=3), "out")
    run_passes(b.graph, "layout,dce", feeds(b.graph))
    assert count(b.graph) == {"transpose": 2, "conv2d": 1, "relu": 1, "concat": 1}
    assert interior_transposes(b.graph) == []


def test_nchw_graphs_are_left_alone(run_passes):
    b = Builder()
    x = b.input("x", TensorType((1, 3, 4, 4), layout="NCHW"))
    b.output(b.op("relu", [b.op("conv2d", [x, b.const(randn(2, 3, 1, 1))])]), "out")
    text = print_graph(b.graph)[0]
    assert run_passes(b.graph, "layout", feeds(b.graph)) is False
    assert print_graph(b.graph)[0] == text


def test_input_layout_changes_the_interface(run_passes, count):
    b = Builder()
    x = nhwc_input(b)
    b.output(conv_nhwc(b, x), "out")
    x_nhwc = randn(1, 6, 5, 4)
    before = run_graph(b.graph, {"x": x_nhwc})["out"]
    assert apply_input_layout(b.graph, "NCHW") is True
    verify(b.graph)
    assert b.graph.inputs[0].type.shape == (1, 4, 6, 5) and b.graph.inputs[0].type.layout == "NCHW"
    x_nchw = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(run_graph(b.graph, {"x": x_nchw})["out"], before, rtol=1e-6)
    run_passes(b.graph, "layout,dce", {"x": x_nchw})
    assert count(b.graph) == {"conv2d": 1, "transpose": 1}  # only the NHWC output is left
    assert apply_input_layout(b.graph, "NCHW") is False  # already so


def test_input_layout_nhwc_for_an_nchw_model():
    b = Builder()
    x = b.input("data", TensorType((1, 3, 8, 8), layout="NCHW"))
    b.output(b.op("global_pool", [x], mode="avg"), "out")
    apply_input_layout(b.graph, "NHWC")
    verify(b.graph)
    assert b.graph.inputs[0].type.shape == (1, 8, 8, 3)
    x = randn(1, 8, 8, 3)
    np.testing.assert_allclose(run_graph(b.graph, {"data": x})["out"].reshape(-1), x.mean(axis=(0, 1, 2)), rtol=1e-5)
    with pytest.raises(TidlcError, match="unknown input layout"):
        apply_input_layout(b.graph, "NWCH")


def test_layouts_are_checked_by_the_verifier():
    b = Builder()
    x = nhwc_input(b)
    t = b.op("transpose", [x], perm=TO_NCHW)
    assert t.type.layout == "NCHW" and b.op("transpose", [t], perm=TO_NHWC).type.layout == "NHWC"
    with pytest.raises(TidlcError, match="conv2d computes on NCHW data, got an NHWC tensor"):
        b.op("conv2d", [x, b.const(randn(2, 4, 1, 1))])
    conv = b.op("conv2d", [t, b.const(randn(2, 4, 1, 1))])
    conv.producer.operands[0] = x  # a bad rewrite: NHWC data into the conv
    b.output(conv, "out")
    with pytest.raises(TidlcError) as info:
        verify(b.graph)
    assert any("conv2d computes on NCHW data, got an NHWC tensor" in p for p in info.value.problems)


def test_pass_output_round_trips_as_text(run_passes):
    b = Builder()
    b.output(b.op("relu", [conv_nhwc(b, nhwc_input(b))]), "out")
    run_passes(b.graph, "layout,dce", feeds(b.graph))
    text, weights = print_graph(b.graph)
    assert print_graph(parse_graph(text, weights))[0] == text
    assert "tensor<1x4x6x5xf32, NCHW>" in text and "tensor<1x6x5x4xf32, NHWC>" in text


def test_layout_runs_at_O2_before_the_fusions():
    names = default_pipeline(2)
    assert names.index("fold-constants") < names.index("layout") < names.index("fuse-batchnorm")
    assert "layout" not in default_pipeline(1)


def test_transposes_made_by_the_pass_get_derived_unique_names(run_passes):
    """A transpose moved next to conv 'c1' used to carry the name 'c1' too, so --16bit-layers c1
    and trace files could not tell the two apart."""
    b = Builder()
    x = nhwc_input(b)
    y = b.op("relu", [conv_nhwc(b, x, name="c1")], name="r1")
    b.output(b.op("sigmoid", [conv_nhwc(b, y, name="c2")], name="s"), "out")
    run_passes(b.graph, "layout,dce", feeds(b.graph))
    names = [op.name for op in b.graph.ops if op.name]
    assert len(names) == len(set(names)), names
    assert {op.name for op in b.graph.ops if op.kind == "conv2d"} == {"c1", "c2"}
    assert all(op.name.endswith(("/transpose", "/transpose.2")) or not op.name
               for op in transposes(b.graph) if op.name in {"c1", "c2"} or "/" in op.name)


def test_a_pre_quantized_squeeze_excite_keeps_no_transpose(run_passes, count):
    """An int8 TFLite squeeze-excite: the gate is scaled by a dequantized scalar (not a foldable
    constant) before it multiplies the NHWC features, and the pooled vector reaches the next conv as
    (1, 1, 1, C) through quantize/dequantize. The scalar broadcasts in any order, so the transposes
    sink through the mul; the (1, 1, 1, C) -> (1, C, 1, 1) transpose left only moves unit axes, a
    reshape (MobileNetV3-Small int8: 29 transposes -> 1, the input's)."""
    b = Builder()
    x = nhwc_input(b, (1, 6, 5, 4))
    feat = conv_nhwc(b, x, name="c1")
    pooled = b.op("reduce", [feat], op="mean", axes=(1, 2), keepdims=False)  # (1, 4)
    q = b.op("quantize", [pooled], scale=(50.0,), zero_point=0, dtype="i8")
    v = b.op("reshape", [b.op("dequantize", [q], scale=(50.0,), zero_point=0)], shape=(1, 1, 1, 4))
    gate = b.op("sigmoid", [conv_nhwc(b, v, name="se")])  # NHWC (1, 1, 1, 4)
    half = b.op("dequantize", [b.const(np.array(64, np.int8))], scale=(128.0,), zero_point=0)
    y = b.op("mul", [feat, b.op("mul", [gate, half])])
    b.output(conv_nhwc(b, y, name="c2"), "out")
    run_passes(b.graph, "layout,dce", feeds(b.graph))
    kinds = count(b.graph)
    assert interior_transposes(b.graph) == [] and kinds["transpose"] == 2, kinds
    assert kinds["reshape"] == 2  # the model's, and the unit transpose's
