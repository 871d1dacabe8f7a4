"""ONNX ops without a converter become opaque ``host`` ops run by onnxruntime (docs/host-ops.md):
an LSTM between convolutions, Equal/NonZero between lowered ops, an ``If`` whose branches read an
outer-scope value. Each: the import keeps them as host ops, the float interpreter matches
onnxruntime on the whole model, the IR text round-trips, and ``allow_host=False`` gives the one
error listing every unsupported op."""
from __future__ import annotations

import base64

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper
from tidlc.frontends.onnx.importer import import_model, supported_ops

from tidlc.compiler import optimize
from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError
from tidlc.interp import run_graph
from tidlc.ir.parser import parse_graph
from tidlc.ir.printer import print_graph
from tidlc.ir.verifier import verify

RNG = np.random.default_rng(0)


def _const(name: str, data) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(data), name)


def _weights(name: str, *shape) -> onnx.TensorProto:
    return _const(name, (RNG.standard_normal(shape) * 0.3).astype(np.float32))


def _model(nodes, inputs, outputs, inits, opset: int = 13) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "host_test", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _check(model: onnx.ModelProto, feeds: dict, host_types: list[str]) -> None:
    """Import, host ops of ``host_types`` (in order), run vs onnxruntime, text round-trip,
    and the old error with allow_host=False."""
    graph = import_model(model, None, "m.onnx")
    verify(graph)
    hosts = [op for op in graph.ops if op.kind == "host"]
    assert [op.attrs["op_type"] for op in hosts] == host_types
    assert all(op.attrs["framework"] == "onnx" and not op.opdef.traits for op in hosts)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    refs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))

    def compare(g):
        got = run_graph(g, feeds)
        for name, ref in refs.items():
            assert got[name].shape == ref.shape, name
            if ref.dtype.kind == "f":
                tol = 1e-4 * max(float(np.abs(ref).max()), 1e-12)
                assert float(np.abs(got[name] - ref).max()) <= tol, name
            else:
                np.testing.assert_array_equal(got[name], ref)

    compare(graph)
    optimized = import_model(model, None, "m.onnx")
    optimize(optimized, CompileOptions.of(opt_level=2, verify_each=True))  # the passes leave host ops alone
    assert [op.attrs["op_type"] for op in optimized.ops if op.kind == "host"] == host_types
    compare(optimized)
    text, weights = print_graph(graph)
    again = parse_graph(text, weights)
    assert print_graph(again)[0] == text
    compare(again)  # the parsed payloads run too
    with pytest.raises(TidlcError) as info:
        import_model(model, CompileOptions.of(allow_host=False), "m.onnx")
    err = info.value
    assert err.code == "unsupported"
    n = len(host_types)
    assert err.message == f"{n} unsupported ONNX op{'s' if n > 1 else ''}"
    assert [p.split(": ", 1)[1] for p in err.problems] == ["not supported"] * n


def test_lstm_between_convolutions():
    hidden = 8
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["a1"], name="relu1"),
             helper.make_node("Reshape", ["a1", "s1"], ["seq"], name="to_seq"),
             helper.make_node("LSTM", ["seq", "W", "R", "B"], ["Y", "Y_h"], hidden_size=hidden, name="lstm"),
             helper.make_node("Reshape", ["Y", "s2"], ["r2"], name="to_img"),
             helper.make_node("Conv", ["r2", "w2"], ["out"], name="conv2")]
    inits = [_weights("w1", 4, 3, 3, 3), _const("s1", np.array([4, 1, 16], np.int64)),
             _weights("W", 1, 4 * hidden, 16), _weights("R", 1, 4 * hidden, hidden), _weights("B", 1, 8 * hidden),
             _const("s2", np.array([1, 4, 4, 2], np.int64)), _weights("w2", 2, 4, 1, 1)]
    model = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [1, 3, 4, 4])],
                   [helper.make_tensor_value_info("out", TP.FLOAT, [1, 2, 4, 2]),
                    helper.make_tensor_value_info("Y_h", TP.FLOAT, [1, 1, hidden])], inits)
    x = RNG.standard_normal((1, 3, 4, 4)).astype(np.float32)
    _check(model, {"x": x}, ["LSTM"])
    graph = import_model(model)
    (lstm,) = [op for op in graph.ops if op.kind == "host"]
    assert [str(r.type) for r in lstm.results] == ["tensor<4x1x1x8xf32>", "tensor<1x1x8xf32>"]
    # the weights are operands (constants of the IR), not payload
    assert [v.producer.kind for v in lstm.operands] == ["reshape", "const", "const", "const"]


def test_equal_where_nonzero():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Equal", ["r", "zero"], ["is0"], name="eq"),
             helper.make_node("Where", ["is0", "minus", "x"], ["w"], name="where"),
             helper.make_node("Mul", ["w", "two"], ["y"], name="mul"),
             helper.make_node("NonZero", ["is0"], ["nz"], name="nonzero"),
             helper.make_node("Transpose", ["nz"], ["idx"], perm=[1, 0], name="t")]
    inits = [_const("zero", np.float32(0)), _const("minus", np.float32(-1)), _const("two", np.float32(2))]
    model = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [2, 5])],
                   [helper.make_tensor_value_info("y", TP.FLOAT, [2, 5]),
                    helper.make_tensor_value_info("idx", TP.INT64, ["n", 2])], inits)
    x = RNG.standard_normal((2, 5)).astype(np.float32)
    _check(model, {"x": x}, ["Equal", "NonZero"])
    graph = import_model(model)
    nonzero = next(op for op in graph.ops if op.attrs.get("op_type") == "NonZero")
    assert str(nonzero.results[0].type) == "tensor<2x?xi64>"  # data-dependent: unknown count


def test_host_ops_of_constants_are_folded_except_random_draws():
    """The import (and fold-constants) evaluates an ONNX host op whose operands are all constants
    with onnx's reference evaluator (the TorchScript exporter's ``Equal -> Where`` for
    ``expand(B, -1, -1)``); a random draw stays a host op: each run draws anew."""
    nodes = [helper.make_node("ConstantOfShape", ["three"], ["ones"], name="ones",
                              value=helper.make_tensor("v", TP.INT64, [1], [1])),
             helper.make_node("Mul", ["ones", "minus"], ["m1"], name="m1"),
             helper.make_node("Equal", ["target", "m1"], ["eq"], name="eq"),
             helper.make_node("Where", ["eq", "ones", "target"], ["shape"], name="where"),
             helper.make_node("Expand", ["cls", "shape"], ["e"], name="expand"),
             helper.make_node("Add", ["x", "e"], ["y"], name="add"),
             helper.make_node("RandomUniformLike", ["cls"], ["noise"], name="noise", seed=1.0),
             helper.make_node("Add", ["y", "noise"], ["z"], name="add_noise")]
    inits = [_const("three", np.array([3], np.int64)), _const("minus", np.int64(-1)),
             _const("target", np.array([1, -1, -1], np.int64)), _weights("cls", 1, 1, 4)]
    model = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [1, 5, 4])],
                   [helper.make_tensor_value_info("y", TP.FLOAT, [1, 5, 4]),
                    helper.make_tensor_value_info("z", TP.FLOAT, [1, 5, 4])], inits)
    graph = import_model(model, None, "m.onnx")
    assert [op.attrs["op_type"] for op in graph.ops if op.kind == "host"] == ["RandomUniformLike"]
    optimize(graph, CompileOptions.of(opt_level=1, verify_each=True))
    assert [op.attrs["op_type"] for op in graph.ops if op.kind == "host"] == ["RandomUniformLike"]
    x = RNG.standard_normal((1, 5, 4)).astype(np.float32)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(run_graph(graph, {"x": x})["y"], session.run(["y"], {"x": x})[0], rtol=1e-6)


def _window_pad(prefix: str, x: str, window: int = 4) -> list:
    """torchvision's Swin pads H and W up to the window size: ``(w - H % w) % w`` with Mod, of the
    input's static shape; then it partitions the windows with a Reshape of computed sizes."""
    n = lambda op, ins, outs, **kw: helper.make_node(op, ins, [f"{prefix}{o}" for o in outs], **kw)
    p = lambda name: f"{prefix}{name}"
    return [n("Shape", [x], ["shape"]), n("Gather", [p("shape"), "i2"], ["h"], axis=0),
            n("Mod", [p("h"), "win"], ["m0"]), n("Sub", ["win", p("m0")], ["d"]), n("Mod", [p("d"), "win"], ["m1"]),
            n("Unsqueeze", [p("m1"), "ax0"], ["m1v"]),
            n("Concat", ["zeros6", p("m1v"), p("m1v")], ["pads"], axis=0),
            n("Pad", [x, p("pads")], ["padded"]),
            n("Shape", [p("padded")], ["pshape"]), n("Gather", [p("pshape"), "i2"], ["ph"], axis=0),
            n("Div", [p("ph"), "win"], ["nw"]), n("Unsqueeze", [p("nw"), "ax0"], ["nwv"]),
            n("Concat", ["head2", p("nwv"), "winv", p("nwv"), "winv"], ["target"], axis=0),
            n("Reshape", [p("padded"), p("target")], ["windows"])]


def test_shape_arithmetic_through_host_ops_is_evaluated_at_import():
    """A Pad whose pads (and a Reshape whose target) come from Mod of static shapes: Mod has no
    converter (a host op), and the Pad needs its pads at import. Two such blocks, the second reading
    the first's shape: the Reshape in between must keep its type static. torchvision's swin_t was
    "Pad: pads ... must be a constant initializer" at its second block."""
    nodes = _window_pad("a/", "x")
    nodes += [helper.make_node("Reshape", ["a/windows", "back"], ["r"]),
              helper.make_node("Slice", ["r", "zero1", "six1", "i2v"], ["s"])]
    nodes += _window_pad("b/", "s")
    nodes += [helper.make_node("Relu", ["b/windows"], ["y"])]
    inits = [_const("i2", np.int64(2)), _const("win", np.int64(4)), _const("ax0", np.array([0], np.int64)),
             _const("zeros6", np.zeros(6, np.int64)), _const("head2", np.array([1, 3], np.int64)),
             _const("winv", np.array([4], np.int64)), _const("back", np.array([1, 3, 8, 8], np.int64)),
             _const("zero1", np.array([0, 0], np.int64)), _const("six1", np.array([6, 6], np.int64)),
             _const("i2v", np.array([2, 3], np.int64))]
    model = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [1, 3, 6, 6])],
                   [helper.make_tensor_value_info("y", TP.FLOAT, [1, 3, 2, 4, 2, 4])], inits)
    graph = import_model(model, None, "m.onnx")
    assert graph.outputs[0].type.shape == (1, 3, 2, 4, 2, 4)  # static from end to end
    optimize(graph, CompileOptions.of(opt_level=1, verify_each=True))
    assert not [op for op in graph.ops if op.kind == "host"]  # the Mods folded
    x = RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(run_graph(graph, {"x": x})["y"], session.run(["y"], {"x": x})[0])


def test_a_cubic_resize_to_sizes_computed_from_the_shape_keeps_static_types():
    """timm's CrossViT resizes its 240x240 input to 224x224 with ``F.interpolate(mode="bicubic")``:
    a Resize (a host op: no cubic layer) to sizes of ``Concat(Slice(Shape(x)), [224, 224])``. Its
    result type was unknown, so everything after it was host layers on tensors "sized at run
    time"; and onnxruntime refused the payload, whose sizes input had no length."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Slice", ["shape", "zero", "two"], ["nc"]),
             helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             helper.make_node("Resize", ["x", "", "", "sizes"], ["r"], mode="cubic",
                              coordinate_transformation_mode="half_pixel"),
             helper.make_node("Conv", ["r", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    inits = [_const("zero", np.array([0], np.int64)), _const("two", np.array([2], np.int64)),
             _const("hw", np.array([7, 5], np.int64)), _weights("w", 4, 3, 3, 3)]
    model = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [1, 3, 8, 6])],
                   [helper.make_tensor_value_info("y", TP.FLOAT, [1, 4, 7, 5])], inits)
    graph = import_model(model, None, "m.onnx")
    (host,) = [op for op in graph.ops if op.kind == "host"]
    assert host.results[0].type.shape == (1, 3, 7, 5) and graph.outputs[0].type.shape == (1, 4, 7, 5)
    optimize(graph, CompileOptions.of(opt_level=2, verify_each=True))
    x = RNG.standard_normal((1, 3, 8, 6)).astype(np.float32)
    ref = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        ["y"], {"x": x})[0]
    got = run_graph(graph, {"x": x})["y"]
    assert float(np.abs(got - ref).max()) <= 1e-5 * float(np.abs(ref).max())


def test_a_host_op_of_constants_with_a_size_import_cannot_know_is_folded():
    """Range of constants has a result size shape inference leaves unknown (``?xi64``): torchvision's
    Swin builds its shifted-window mask from Ranges. The import folds it (onnx's reference evaluator)
    and takes the size from the evaluation, so what follows folds and knows its shapes too:
    RT-DETR's sine position embedding (``Range -> Cast -> Reshape -> MatMul -> Sin``) stopped its
    import at the ``Sin`` ("cannot tell the type of its results")."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "start"], ["limit"], axis=0),
             helper.make_node("Range", ["start", "limit", "delta"], ["r"]),
             helper.make_node("Cast", ["r"], ["rf"], to=TP.FLOAT),
             helper.make_node("Reshape", ["rf", "column"], ["rc"]),
             helper.make_node("MatMul", ["rc", "freq"], ["angle"]),
             helper.make_node("Sin", ["angle"], ["pe"]),
             helper.make_node("Add", ["x", "pe"], ["y"])]
    freq = np.array([[0.5, 0.25, 0.125]], np.float32)
    inits = [_const("start", np.int64(0)), _const("delta", np.int64(1)),
             _const("column", np.array([-1, 1], np.int64)), _const("freq", freq)]
    model = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [5, 3])],
                   [helper.make_tensor_value_info("y", TP.FLOAT, [5, 3])], inits)
    graph = import_model(model, None, "m.onnx")
    assert not [op for op in graph.ops if op.kind == "host"]
    assert graph.outputs[0].type.shape == (5, 3)
    x = RNG.standard_normal((5, 3)).astype(np.float32)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(run_graph(graph, {"x": x})["y"], session.run(["y"], {"x": x})[0], rtol=1e-6)
    np.testing.assert_allclose(run_graph(graph, {"x": x})["y"], x + np.sin(np.arange(5)[:, None] * freq), rtol=1e-6)


def test_if_with_outer_scope_value():
    # both branches read 'h' (computed outside the If) and 'bias' (an initializer of the main graph)
    then_g = helper.make_graph([helper.make_node("Add", ["h", "bias"], ["t_out"])], "then", [],
                               [helper.make_tensor_value_info("t_out", TP.FLOAT, [1, 4])])
    else_g = helper.make_graph([helper.make_node("Mul", ["h", "h"], ["e_out"])], "else", [],
                               [helper.make_tensor_value_info("e_out", TP.FLOAT, [1, 4])])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
             helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
             helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
             helper.make_node("If", ["cond"], ["branch"], then_branch=then_g, else_branch=else_g, name="if"),
             helper.make_node("Relu", ["branch"], ["out"], name="relu")]
    inits = [_weights("w", 3, 4), _const("bias", np.arange(4, dtype=np.float32)), _const("zero", np.float32(0))]
    model = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [1, 3])],
                   [helper.make_tensor_value_info("out", TP.FLOAT, [1, 4])], inits)
    graph = import_model(model)
    host = next(op for op in graph.ops if op.kind == "host" and op.attrs["op_type"] == "If")
    # the outer-scope values the branches read are explicit operands of the one-node model
    assert len(host.operands) == 3
    payload = onnx.load_model_from_string(base64.b64decode(host.attrs["payload"]))
    assert [i.name for i in payload.graph.input] == ["cond", "h", "bias"]
    assert {a.name for a in payload.graph.node[0].attribute} == {"then_branch", "else_branch"}
    for sign in (1.0, -1.0):  # both branches
        x = (np.abs(RNG.standard_normal((1, 3))) * sign).astype(np.float32)
        _check(model, {"x": x}, [t for t in ("Greater", "If") if t not in supported_ops()])


def test_if_reading_an_outer_scalar_gets_a_scalar():
    """torchvision's SSDlite export: the NMS branch of an ``If`` unsqueezes an outer 0-d constant
    into a Slice's axes. Fed as a 1-d array (``np.ascontiguousarray`` makes 0-d arrays 1-d), the
    axes became 2-d and onnxruntime failed the whole run ("Starts and axes shape mismatch")."""
    axes = helper.make_node("Unsqueeze", ["zero_i", "ax0"], ["axes"])
    sl = helper.make_node("Slice", ["h", "starts", "ends", "axes"], ["e_out"])
    else_g = helper.make_graph([axes, sl], "else", [], [helper.make_tensor_value_info("e_out", TP.FLOAT, [None, 3])],
                               [_const("ax0", np.array([0])), _const("starts", np.array([1])),
                                _const("ends", np.array([3]))])
    then_g = helper.make_graph([helper.make_node("Identity", ["h"], ["t_out"])], "then", [],
                               [helper.make_tensor_value_info("t_out", TP.FLOAT, [None, 3])])
    nodes = [helper.make_node("Constant", [], ["zero_i"], value=_const("zero_i", np.array(0, np.int64))),
             helper.make_node("Relu", ["x"], ["h"], name="relu"),
             helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
             helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
             helper.make_node("If", ["cond"], ["out"], then_branch=then_g, else_branch=else_g, name="if")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [4, 3])],
                   [helper.make_tensor_value_info("out", TP.FLOAT, [None, 3])],
                   [_const("zero", np.float32(0))])
    for sign in (1.0, -1.0):  # the then branch, then the slice
        x = (np.abs(RNG.standard_normal((4, 3))) * sign).astype(np.float32)
        _check(model, {"x": x}, [t for t in ("Greater", "If") if t not in supported_ops()])


def test_a_scalar_graph_input_stays_a_scalar():
    model = _model([helper.make_node("Add", ["k", "k"], ["y"], name="add")],
                   [helper.make_tensor_value_info("k", TP.FLOAT, [])],
                   [helper.make_tensor_value_info("y", TP.FLOAT, [])], [])
    got = run_graph(import_model(model), {"k": np.float32(2.5)})["y"]
    assert got.shape == () and float(got) == 5.0


def _data_padded_model(dynamic: bool = False) -> onnx.ModelProto:
    """An exported YOLO's NMS tail: the detections padded to a fixed count by a Pad whose pads are
    computed from the data (here: the largest input, if positive)."""
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=1), helper.make_node("Relu", ["m"], ["r"]),
             helper.make_node("Cast", ["r"], ["n"], to=TP.INT64),
             helper.make_node("Concat", ["z1", "n"], ["pads"], axis=0),
             helper.make_node("Pad", ["x", "pads"], ["y"], name="pad")]
    dim = "n" if dynamic else 6
    return _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [dim])],
                  [helper.make_tensor_value_info("y", TP.FLOAT, [None])],
                  [_const("z1", np.array([0], np.int64))])


def test_an_op_whose_attribute_input_is_computed_from_the_data_is_a_host_op():
    """ultralytics' ``export(nms=True)``: a Pad by the number of detections the NMS kept. The
    import stopped ("pads must be a constant initializer ... fold it first"), which no folding can
    do; with static inputs such a node is a host op that names why."""
    from tidlc.backends.tidl.constraints import check
    model = _data_padded_model()
    graph = import_model(model)
    (pad,) = [op for op in graph.ops if op.kind == "host" and op.attrs["op_type"] == "Pad"]
    assert "computed from the data" in pad.attrs["reason"] and check(pad).level == "host"
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for x in (np.array([1, -2, 3, -4, 5, 6], np.float32), np.full(6, -1, np.float32)):
        ref = session.run(None, {"x": x})[0]
        got = run_graph(graph, {"x": x})["y"]
        assert got.shape == ref.shape and np.array_equal(got, ref)
    with pytest.raises(TidlcError, match="must be a constant initializer"):  # --no-host
        import_model(model, CompileOptions.of(allow_host=False), "m.onnx")


def test_a_computed_attribute_input_with_dynamic_graph_inputs_stays_an_error():
    """With a dynamic input the value may be shape arithmetic that --input-shape makes static:
    the error and its hint stay."""
    with pytest.raises(TidlcError, match="--input-shape"):
        import_model(_data_padded_model(dynamic=True))


def test_converter_errors_still_raise():
    """A node whose converter rejects it as a fault of the model (a training-mode export) is an error
    even when host ops are allowed; one whose form tidlc does not lower is a host op with that reason."""
    nodes = [helper.make_node("ArgMax", ["x"], ["am"], select_last_index=1, name="am"),
             helper.make_node("Dropout", ["x"], ["d", "mask"], name="drop"),
             helper.make_node("NonZero", ["x"], ["nz"], name="nz")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [2, 5])],
                   [helper.make_tensor_value_info("am", TP.INT64, [1, 5]),
                    helper.make_tensor_value_info("mask", TP.BOOL, [2, 5]),
                    helper.make_tensor_value_info("nz", TP.INT64, [2, "n"])], [])
    with pytest.raises(TidlcError) as info:
        import_model(model, None, "m.onnx")
    assert info.value.message == "1 unsupported ONNX op"
    assert info.value.problems == ["'drop' (Dropout): the mask output is not supported (export the model in eval mode)"]
    del model.graph.output[1]
    del model.graph.node[1]
    graph = import_model(model, None, "m.onnx")
    assert {op.attrs["op_type"]: op.attrs.get("reason") for op in graph.ops if op.kind == "host"} == \
        {"ArgMax": "select_last_index=1 is not supported", "NonZero": ""}
    x = np.array([[1, 5, 3, 0, 2], [5, 5, 1, 0, 0]], np.float32)  # ties in columns 1 and 3: the last index
    assert run_graph(graph, {"x": x})["am"].tolist() == [[1, 1, 0, 1, 0]]


def test_missing_runtime_names_the_extra(monkeypatch):
    import sys

    from tidlc import hostrt
    nodes = [helper.make_node("NonZero", ["x"], ["nz"], name="nz")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [2, 5])],
                   [helper.make_tensor_value_info("nz", TP.INT64, [2, "n"])], [])
    graph = import_model(model)
    monkeypatch.setattr(hostrt, "_SESSIONS", {})
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    with pytest.raises(TidlcError, match=r"host op 'nz' \(onnx NonZero\) runs on onnxruntime") as info:
        run_graph(graph, {"x": np.ones((2, 5), np.float32)})
    assert info.value.hint == "pip install tidlc[host]"


def test_foreign_domain_op_typed_by_one_runtime_run():
    """ONNX shape inference does not know com.microsoft ops: the result types come from one
    onnxruntime run on seeded inputs; the payload keeps the model's opset imports."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Gelu", ["r"], ["g"], domain="com.microsoft", name="gelu"),
             helper.make_node("Neg", ["g"], ["y"], name="neg")]
    graph = helper.make_graph(nodes, "ms", [helper.make_tensor_value_info("x", TP.FLOAT, [2, 5])],
                              [helper.make_tensor_value_info("y", TP.FLOAT, [2, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    x = RNG.standard_normal((2, 5)).astype(np.float32)
    g = import_model(model, None, "m.onnx")
    (host,) = [op for op in g.ops if op.kind == "host"]
    assert host.attrs["op_type"] == "Gelu" and host.attrs["results"] == ("2x5xf32",)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(run_graph(g, {"x": x})["y"], ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    with pytest.raises(TidlcError) as info:
        import_model(model, CompileOptions.of(allow_host=False), "m.onnx")
    assert info.value.problems == ["'gelu' (Gelu): ops of domain 'com.microsoft' are not supported"]


def test_host_ops_on_tensors_of_run_time_size_and_rank_are_typed_by_element_type():
    """SuperPoint's keypoints (Hugging Face, dynamo export) are picked by boolean indexing:
    NonZero, then an Expand to a shape computed from the data and a GatherND of its result. The
    GatherND's indices had an unknown rank, no inference or run could type it, and the import
    stopped ("cannot tell the type of its results"). Its element type suffices: the host runs
    any shape."""
    nodes = [helper.make_node("Greater", ["x", "zero"], ["pos"]),
             helper.make_node("NonZero", ["pos"], ["nz"]),
             helper.make_node("Transpose", ["nz"], ["t"], perm=[1, 0]),
             helper.make_node("Gather", ["t", "one"], ["col"], axis=1),
             helper.make_node("Max", ["col", "zero_i"], ["mx"]),
             helper.make_node("Shape", ["mx"], ["shp"]),
             helper.make_node("Expand", ["col", "shp"], ["e"]),
             helper.make_node("Unsqueeze", ["e", "last"], ["u"]),
             helper.make_node("Min", ["u", "cap"], ["uc"]),
             helper.make_node("GatherND", ["t", "uc"], ["y"])]
    inits = [_const("zero", np.float32(0)), _const("one", np.int64(1)), _const("zero_i", np.int64(0)),
             _const("last", np.array([-1], np.int64)), _const("cap", np.int64(0))]
    model = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [1, 8])],
                   [helper.make_tensor_value_info("y", TP.INT64, [None, 2])], inits)
    graph = import_model(model, None, "m.onnx")
    (gnd,) = [op for op in graph.ops if op.kind == "host" and op.attrs["op_type"] == "GatherND"]
    assert gnd.results[0].type.dtype == "i64"
    x = np.array([[0.5, -1, 2, 3, -4, 0.1, -0.2, 7]], np.float32)
    ref = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        ["y"], {"x": x})[0]
    np.testing.assert_array_equal(run_graph(graph, {"x": x})["y"], ref)
