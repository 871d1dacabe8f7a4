"""Rewrite tables: rules by op kind (and "*"), applied to a fixed point through a Rewriter."""
import numpy as np

from tidlc.ir import Builder, TensorType, verify
from tidlc.passes.rewrite import Rewriter, apply_rules


def chain(n_neg=4):
    b = Builder()
    x = b.input("x", TensorType((3,)))
    y = x
    for i in range(n_neg):
        y = b.op("neg", [y], name=f"neg{i}")
    b.output(b.op("relu", [y], name="r"), "y")
    return b.graph


def drop_double_neg(rw, op):
    inner = op.operands[0].producer
    if inner.kind != "neg" or rw.single_user(inner.results[0]) is not op:
        return False
    rw.replace(op.results[0], inner.operands[0])
    rw.erase(op)
    rw.erase(inner)
    return True


def test_rules_run_to_a_fixed_point():
    graph = chain(4)
    assert apply_rules(graph, [("neg", drop_double_neg)]) is True
    verify(graph)
    assert [op.kind for op in graph.ops] == ["input", "relu"]
    assert apply_rules(graph, [("neg", drop_double_neg)]) is False


def test_max_iters_bounds_the_sweeps():
    calls = []

    def count(rw, op):
        calls.append(op.name)
        return True  # claims a change every time: only max_iters stops it

    graph = chain(1)
    assert apply_rules(graph, [("neg", count)], max_iters=3) is True
    assert calls == ["neg0"] * 3


def test_star_rules_see_every_op_after_the_kind_rules():
    seen = []

    def by_kind(rw, op):
        seen.append(("kind", op.name))
        return False

    def every(rw, op):
        seen.append(("*", op.name or op.kind))
        return False

    apply_rules(chain(1), [("*", every), ("neg", by_kind)])
    assert seen == [("*", "x"), ("kind", "neg0"), ("*", "neg0"), ("*", "r")]


def test_single_user_is_none_for_several_readers_or_an_output():
    b = Builder()
    x = b.input("x", TensorType((3,)))
    y = b.op("neg", [x])
    b.output(b.op("relu", [y]), "a")
    z = b.op("exp", [x])
    b.output(z, "z")
    w = b.op("abs", [z])
    b.output(w, "w")
    rw = Rewriter(b.graph)
    assert rw.single_user(x) is None  # two readers
    assert rw.single_user(y) is b.graph.ops[2]
    assert rw.single_user(z) is None and rw.is_output(z)  # read once, but a graph output


def test_replace_moves_graph_outputs_and_names():
    b = Builder()
    x = b.input("x", TensorType((3,)))
    y = b.op("identity", [b.op("neg", [x])])
    b.output(y, "result")
    rw = Rewriter(b.graph)
    new = rw.make("abs", [x], name="abs")
    rw.insert_before(y.producer, new)
    rw.replace(y, new.results[0])
    rw.erase(y.producer)
    rw.commit()
    assert b.graph.outputs == [new.results[0]] and new.results[0].name == "result"
    c = rw.const(np.ones(3, np.float32), "one")
    assert c.producer not in b.graph.ops  # insertions are buffered until commit
    rw.commit()
    assert b.graph.ops[0] is c.producer  # no anchor: placed first
    verify(b.graph)
