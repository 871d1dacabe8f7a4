"""Function calls in frozen graphs (``PartitionedCall`` / ``StatefulPartitionedCall`` of the graph's
function library), inlined at import: Keras 3 runs grouped convolutions (ConvNeXt's depthwise 7x7)
as XLA-compiled functions, and a frozen ConvNeXtTiny was 18 'unsupported ops'."""
from __future__ import annotations

import pytest
from tidlc.frontends.tensorflow.graphdef import message_class, parse_graphdef
from tidlc.frontends.tensorflow.importer import import_graphdef

from tidlc.diagnostics import TidlcError


def _ops(data: bytes) -> list[str]:
    return [node.op for node in parse_graphdef(data).node]


def test_keras3_grouped_convolutions_are_inlined(tfx):
    keras = tfx.tf.keras
    keras.utils.set_random_seed(3)
    inp = keras.Input((10, 10, 8), batch_size=1)
    y = keras.layers.Conv2D(8, 7, padding="same", groups=8)(inp)  # ConvNeXt's depthwise
    y = keras.layers.Conv2D(12, 3, groups=4, use_bias=False)(y)  # ResNeXt / RegNet
    model = keras.Model(inp, keras.layers.Dense(5)(y))
    x = tfx.randn(1, 10, 10, 8)
    data, outputs, refs = tfx.freeze(lambda t: model(t, training=False), {"x": x})
    assert "StatefulPartitionedCall" in _ops(data)  # what Keras 3 writes (else this test tests nothing)
    for level in (0, 2):
        graph = tfx.tidlc_graph(data, outputs, level)
        tfx.assert_close(next(iter(tfx.run_graph(graph, {"x": x}).values())), refs[0], 1e-5, f"-O{level}")
    convs = [op for op in graph.ops if op.kind == "conv2d"]
    assert [op.attrs["groups"] for op in convs] == [8, 4]
    assert not {"host", "reshape"} & {op.kind for op in graph.ops}  # the Dense on NHWC: one dense


def test_nested_calls_with_two_results(tfx):
    """A jit-compiled function returning two tensors, called directly and from another one."""
    tf = tfx.tf

    @tf.function(jit_compile=True)
    def inner(x):
        return tf.nn.relu(x), x * 2.0

    @tf.function(jit_compile=True)
    def outer(x):
        a, b = inner(x)
        return a - b

    def fn(x):
        a, b = inner(x)
        return a + b * 3.0, outer(x)

    x = tfx.randn(2, 3)
    data, outputs, refs = tfx.freeze(fn, {"x": x})
    assert _ops(data).count("PartitionedCall") == 2
    graph = tfx.tidlc_graph(data, outputs, 0)
    for got, ref in zip(tfx.run_graph(graph, {"x": x}).values(), refs):
        tfx.assert_close(got, ref, 1e-6, "output")
    names = {op.name for op in graph.ops}
    assert "PartitionedCall_1/PartitionedCall/Relu" in names  # body nodes live under their call


def _graph_calling(fname: str, library: dict[str, str]):
    """x -> call(fname) -> y; each library function: one argument 'a' through an op to 'out'."""
    g = message_class("GraphDef")()
    x = g.node.add(name="x", op="Placeholder")
    x.attr["dtype"].type = 1
    x.attr["shape"].shape.dim.add(size=4)
    call = g.node.add(name="call", op="StatefulPartitionedCall", input=["x"])
    call.attr["f"].func.name = fname
    g.node.add(name="y", op="Relu", input=["call"])
    for name, body_op in library.items():
        f = g.library.function.add()
        f.signature.name = name
        f.signature.input_arg.add(name="a", type=1)
        f.signature.output_arg.add(name="out", type=1)
        f.node_def.add(name="n", op=body_op, input=["a"]).attr["f"].func.name = name
        f.ret["out"] = "n:output:0"
    return g


def test_a_hand_written_library_function_is_inlined():
    graph = import_graphdef(_graph_calling("neg", {"neg": "Neg"}), None, "m.pb")
    assert [op.kind for op in graph.compute_ops()] == ["neg", "relu"]
    assert next(graph.compute_ops()).name == "call/n"


@pytest.mark.parametrize("fname, library, message", [
    ("missing", {}, ("node 'call' (StatefulPartitionedCall) calls function 'missing', which the graph's "
                     "library does not define")),
    ("loop", {"loop": "PartitionedCall"}, "node 'call/n' (PartitionedCall) calls function 'loop' recursively"),
])
def test_bad_calls_are_one_error(fname, library, message):
    with pytest.raises(TidlcError) as info:
        import_graphdef(_graph_calling(fname, library), None, "m.pb")
    assert info.value.message == message and "m.pb" in str(info.value)
