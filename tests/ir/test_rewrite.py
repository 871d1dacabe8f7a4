"""Rewrite helpers: Rewriter.replace_op / set_operands, update_attrs (validated),
Graph.live_ops / Graph.prune, and the one-statement pass declarations."""
import numpy as np
import pytest

from tidlc.diagnostics import TidlcError
from tidlc.ir import Builder, TensorType, parse_graph, print_graph, verify
from tidlc.ir.rewrite import Rewriter, update_attrs
from tidlc.passes import Pass
from tidlc.passes.rewrite import graph_pass, rule_pass


def roundtrip(graph) -> str:
    """Verify, print, re-parse and compare: the edited graph is valid IR."""
    verify(graph)
    text, weights = print_graph(graph)
    assert print_graph(parse_graph(text, weights))[0] == text
    return text


CONV_RELU = """tidlc.graph @main {
  %x = input "x" : tensor<1x2x4x4xf32, NCHW>
  %w = const dense<1.0> : tensor<2x2x1x1xf32> loc("w")
  %conv = conv2d(%x, %w) : tensor<1x2x4x4xf32, NCHW> loc("conv")
  %relu = relu(%conv) : tensor<1x2x4x4xf32, NCHW> loc("relu")
  output(%relu) {names = ["out"]}
}"""


def conv_relu():
    """The graph, the conv's result and the relu's."""
    graph = parse_graph(CONV_RELU)
    return graph, graph.ops[2].results[0], graph.ops[3].results[0]


# --------------------------------------------------------------------------- replace_op
def test_replace_op_with_a_new_op_takes_its_place_its_readers_and_its_output_name():
    b = Builder()
    x = b.input("x", TensorType((3,)))
    y = b.op("neg", [x], name="n")
    z = b.op("exp", [y], name="e")
    b.output(y, "y")
    b.output(z, "z")
    graph = b.graph
    old = y.producer
    rw = Rewriter(graph)
    new = rw.make("abs", [x], name="a")
    rw.replace_op(old, new)
    rw.commit()
    assert [op.kind for op in graph.ops] == ["input", "abs", "exp"]  # where the old op was
    assert z.producer.operands == [new.results[0]]  # the reader follows
    assert graph.outputs == [new.results[0], z] and graph.output_names == ["y", "z"]
    assert new.results[0].name == "y"  # a graph output keeps its name
    assert rw.users(new.results[0]) == [(z.producer, 0)] and rw.users(y) == []
    roundtrip(graph)


def test_replace_op_by_existing_values_forwards_them():
    graph, y, r = conv_relu()
    rw = Rewriter(graph)
    rw.replace_op(r.producer, y)  # drop the relu: the conv result stands for it
    rw.commit()
    assert graph.outputs == [y] and y.name == "out"
    assert [op.kind for op in graph.ops] == ["input", "const", "conv2d"]
    roundtrip(graph)


def test_replace_op_of_a_multi_result_op_maps_results_in_order():
    b = Builder()
    x = b.input("x", TensorType((4, 2)))
    first, second = b.op("split", [x], axis=0, sizes=(2, 2), name="s")
    b.output(b.op("neg", [first]), "a")
    b.output(b.op("exp", [second]), "b")
    graph = b.graph
    split = first.producer
    rw = Rewriter(graph)
    swapped = rw.make("split", [x], {"axis": 0, "sizes": (2, 2)}, "s2")
    rw.insert_before(split, swapped)
    rw.replace_op(split, list(reversed(swapped.results)))  # values, one per result, in order
    rw.commit()
    readers = {op.kind: op.operands[0] for op in graph.ops if op.kind in ("neg", "exp")}
    assert readers == {"neg": swapped.results[1], "exp": swapped.results[0]}
    assert split not in graph.ops
    with pytest.raises(ValueError, match="split has 2 result"):
        Rewriter(graph).replace_op(swapped, x)
    roundtrip(graph)


def test_set_operands_keeps_the_use_map():
    b = Builder()
    x = b.input("x", TensorType((3,)))
    y = b.input("y", TensorType((3,)))
    s = b.op("add", [x, y], name="s")
    b.output(s, "s")
    rw = Rewriter(b.graph)
    rw.set_operands(s.producer, [x, x])
    assert rw.users(x) == [(s.producer, 0), (s.producer, 1)]
    assert rw.users(y) == [] and rw.unused(y) and not rw.unused(s)
    roundtrip(b.graph)


# --------------------------------------------------------------------------- update_attrs
def test_update_attrs_normalises_like_the_builder():
    graph, y, _ = conv_relu()
    conv = y.producer
    update_attrs(conv, act="clip", act_params=[0, 6])
    assert conv.attrs["act"] == "clip" and conv.attrs["act_params"] == (0.0, 6.0)
    rw = Rewriter(graph)
    rw.update_attrs(conv, act="relu6", act_params=())  # the same helper on the rewriter
    assert 'act = "relu6"' in roundtrip(graph)


@pytest.mark.parametrize("changes, message", [
    ({"act": "gelu2"}, "conv2d 'conv': attribute 'act': 'gelu2' is not one of none, relu"),
    ({"groups": 0}, "conv2d 'conv': attribute 'groups': must be positive"),
    ({"strides": (1, 2, 3)}, "conv2d 'conv': attribute 'strides': expected 2 values, got 3"),
    ({"stride": (2, 2)}, "conv2d 'conv': unknown attribute(s) stride; known: "),
    ({"act": "clip"}, "activation clip takes 2 parameter(s), got 0"),  # checked by type inference
])
def test_update_attrs_rejects_a_bad_attribute_at_the_op_and_changes_nothing(changes, message):
    graph, y, _ = conv_relu()
    conv = y.producer
    before = dict(conv.attrs)
    with pytest.raises(TidlcError) as info:
        update_attrs(conv, **changes)
    assert message in info.value.message
    assert info.value.loc.name == "conv"
    assert conv.attrs == before
    roundtrip(graph)


# --------------------------------------------------------------------------- live_ops / prune
def branches():
    """Two outputs, a dead branch hanging off the live path, an unused input and an orphan const."""
    b = Builder()
    x = b.input("x", TensorType((3,)))
    b.input("unused", TensorType((3,)))
    c = b.const(np.ones(3, np.float32), "c")
    b.const(np.zeros(3, np.float32), "orphan")
    a = b.op("add", [x, c], name="a")
    b.op("exp", [b.op("neg", [a], name="dead1")], name="dead2")
    out1 = b.op("relu", [a], name="out1")
    out2 = b.op("abs", [x], name="out2")
    b.output(out1, "o1")
    b.output(out2, "o2")
    return b.graph, {op.name: op for op in b.graph.ops}


def test_live_ops_are_what_every_output_depends_on():
    graph, ops = branches()
    assert graph.live_ops() == {ops[n] for n in ("x", "c", "a", "out1", "out2")}


def test_prune_drops_dead_branches_keeps_inputs_and_returns_what_went():
    graph, _ = branches()
    removed = graph.prune()
    assert [op.name for op in removed] == ["orphan", "dead1", "dead2"]  # in graph order
    assert [op.name for op in graph.ops] == ["x", "unused", "c", "a", "out1", "out2"]
    assert graph.prune() == []
    roundtrip(graph)


def test_prune_by_kind_leaves_other_dead_ops():
    graph, ops = branches()
    assert [op.name for op in graph.prune({"const"})] == ["orphan"]
    assert ops["dead1"] in graph.ops and ops["dead2"] in graph.ops
    assert [op.name for op in graph.prune({"exp"})] == ["dead2"]
    roundtrip(graph)


def test_prune_by_kind_keeps_what_a_remaining_dead_op_reads():
    """A dead const read by a dead op of another kind stays: removing it would leave that op's
    operand dangling (fuse-patterns leaves a LayerNorm's reduce chain for dce; layout pruned its
    constants and the graph no longer verified)."""
    b = Builder()
    x = b.input("x", TensorType((3,)))
    k = b.const(np.full(3, 2.0, np.float32), "k")
    b.op("pow", [b.op("transpose", [b.op("neg", [x], name="n")], name="t", perm=(0,)), k], name="sq")
    b.output(b.op("relu", [x], name="out"), "o")
    graph = b.graph
    assert graph.prune({"const", "transpose"}) == []
    verify(graph)
    assert [op.name for op in graph.prune()] == ["k", "n", "t", "sq"]


# --------------------------------------------------------------------------- pass declarations
def test_rule_and_graph_passes_are_ordinary_option_less_passes():
    def drop_relu(rw, op):
        rw.replace_op(op, op.operands[0])
        return True

    DropRelu = rule_pass("drop-relu", [("relu", drop_relu)], opt_level=3, summary="relu(x) -> x")
    Prune = graph_pass("prune-all", lambda graph: bool(graph.prune()), opt_level=1, summary="prune")
    for cls, name, level in ((DropRelu, "drop-relu", 3), (Prune, "prune-all", 1)):
        assert issubclass(cls, Pass) and cls.name == name and cls.opt_level == level
        assert cls.options() == {} and cls().spec() == name and cls() == cls()
        assert cls.__module__ == __name__
    assert DropRelu.__name__ == "DropRelu"
    graph, y, _ = conv_relu()
    assert DropRelu().run(None, graph) is True
    assert DropRelu().run(None, graph) is False
    assert graph.outputs == [y]
    g2, _ = branches()
    assert Prune().run(None, g2) is True and Prune().run(None, g2) is False
