"""fold-constants: constant subgraphs (incl. Shape-driven ones) become constants; numerics unchanged."""
import numpy as np
import pytest
from tidlc.plugins.fold_constants import FoldConstants

from tidlc.diagnostics import TidlcError
from tidlc.ir import Builder, TensorType, parse_graph, print_graph
from tidlc.passes import PassManager

RNG = np.random.default_rng(3)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def consts(graph):
    return [op for op in graph.ops if op.kind == "const"]


def test_shape_gather_unsqueeze_concat_reshape_collapses(run_passes, count):
    # the ONNX export of x.view(x.size(0), -1)
    b = Builder()
    x = b.input("x", TensorType((2, 3, 4, 5), layout="NCHW"))
    y = b.op("relu", [x])
    shape = b.op("shape", [y])
    batch = b.op("gather", [shape, b.const(np.array(0, np.int64))], axis=0)
    batch = b.op("unsqueeze", [batch], axes=[0])
    target = b.op("concat", [batch, b.const(np.array([-1], np.int64))], axis=0)
    out = b.op("reshape", [y, target], name="flatten")
    b.output(out, "out")
    assert out.type.shape == (None, None)  # the target is not known before folding
    assert run_passes(b.graph, "fold-constants", {"x": randn(2, 3, 4, 5)}) is True
    assert count(b.graph) == {"relu": 1, "reshape": 1}
    reshape = b.graph.ops[-1]
    assert reshape.operands == [y] and reshape.attrs["shape"] == (2, -1) and out.type.shape == (2, 60)
    assert consts(b.graph) == []  # the folded target moved into the attribute; leftovers removed


def test_constant_of_shape_folds_to_a_zero_stride_splat(run_passes, count):
    b = Builder()
    x = b.input("x", TensorType((1, 64, 8, 8), layout="NCHW"))
    ones = b.op("constant_of_shape", [b.op("shape", [x])], value=1.0)
    b.output(b.op("add", [x, ones]), "y")
    assert run_passes(b.graph, "fold-constants", {"x": randn(1, 64, 8, 8)}) is True
    assert count(b.graph) == {"add": 1}
    (splat,) = consts(b.graph)
    assert splat.data.shape == (1, 64, 8, 8) and splat.data.strides == (0, 0, 0, 0)
    assert splat.data.dtype == np.float32 and (splat.data == 1).all()
    text, weights = print_graph(b.graph)
    assert "const dense<1.0> : tensor<1x64x8x8xf32>" in text and weights == {}
    assert print_graph(parse_graph(text))[0] == text


def test_splats_keep_zero_strides_across_dtypes():
    for dtype in ("f64", "i32", "f16"):
        b = Builder()
        filled = b.op("constant_of_shape", [b.const(np.array([3, 4], np.int64))], value=2.0, dtype=dtype)
        b.output(filled, "y")
        FoldConstants().run(None, b.graph)
        (splat,) = consts(b.graph)
        assert splat.data.strides == (0, 0) and splat.results[0].type.dtype == dtype


def test_reshape_and_transpose_of_constants(run_passes, count):
    b = Builder()
    x = b.input("x", TensorType((2, 12)))
    w = b.op("reshape", [b.const(randn(3, 4, 2), "w")], shape=(-1, 2))
    w = b.op("transpose", [w], perm=[1, 0])
    w = b.op("reshape", [w, b.const(np.array([2, 12], np.int64))])
    b.output(b.op("mul", [x, w]), "y")
    assert run_passes(b.graph, "fold-constants", {"x": randn(2, 12)}) is True
    assert count(b.graph) == {"mul": 1}
    (folded,) = consts(b.graph)
    assert folded.data.shape == (2, 12) and folded.results[0].type == TensorType((2, 12))


def test_arithmetic_on_constants_keeps_the_element_type(run_passes, count):
    b = Builder()
    x = b.input("x", TensorType((4,), "i64"))
    c = b.op("mul", [b.const(np.array([1, 2, 3, 4], np.int64)), b.const(np.array(3, np.int64))])
    c = b.op("div", [c, b.const(np.array(2, np.int64))])
    b.output(b.op("add", [x, c]), "y")
    assert run_passes(b.graph, "fold-constants", {"x": np.arange(4)}) is True
    (folded,) = consts(b.graph)
    assert folded.data.dtype == np.int64 and folded.data.tolist() == [1, 3, 4, 6]


def test_multi_result_ops_fold_into_one_constant_each(run_passes, count):
    b = Builder()
    x = b.input("x", TensorType((2,)))
    a, c = b.op("split", [b.const(np.float32([1, 2, 3, 4]))], name="halves", axis=0, sizes=(2, 2))
    b.output(b.op("sub", [b.op("add", [x, a]), c]), "y")
    assert run_passes(b.graph, "fold-constants", {"x": randn(2)}) is True
    assert count(b.graph) == {"add": 1, "sub": 1}
    assert [op.name for op in consts(b.graph)] == ["halves:0", "halves:1"]


def test_prior_box_folds_but_detection_output_does_not(count):
    b = Builder()
    priors = b.op("prior_box", [], feature_size=(1, 1), image_size=(8, 8), steps=(8.0, 8.0), min_sizes=(4.0,))
    det = b.op("detection_output", [b.const(np.zeros((1, 4), np.float32)), b.const(np.float32([[0.2, 0.8]])),
                                    priors], num_classes=2, keep_top_k=1)
    b.output(det, "det")
    assert FoldConstants().run(None, b.graph) is True
    assert count(b.graph) == {"detection_output": 1}


def test_dynamic_shapes_are_not_folded(run_passes, count):
    b = Builder()
    x = b.input("x", TensorType((None, 3)))
    b.output(b.op("shape", [x]), "s")
    assert run_passes(b.graph, "fold-constants", {"x": randn(5, 3)}) is False
    assert count(b.graph) == {"shape": 1}


def test_max_iters_option(registry):
    b = Builder()
    x = b.input("x", TensorType((2, 3)))
    b.output(b.op("reshape", [x, b.op("shape", [x])]), "y")
    pm = PassManager.from_string(registry, "fold-constants{max-iters=1}")
    assert pm.passes[0] == FoldConstants(max_iters=1)
    assert pm.run(b.graph) is True


def test_a_bad_constant_subgraph_is_the_models_fault():
    b = Builder()
    x = b.input("x", TensorType((6,)))
    bad = b.op("reshape", [b.const(np.zeros(6, np.float32))], name="bad_reshape", shape=(6,))
    bad.producer.attrs = {**bad.producer.attrs, "shape": (4, -1)}  # as a broken model would say
    b.output(b.op("mul", [x, bad]), "y")
    with pytest.raises(TidlcError) as info:
        FoldConstants().run(None, b.graph)
    assert str(info.value) == "'bad_reshape': error: cannot fold reshape: cannot reshape (6,) to (4, -1)"
