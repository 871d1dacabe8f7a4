"""The GraphDef reader and the importer's contract: tidlc's own schema reads what TensorFlow
writes, every unsupported node is listed at once, bad files are one-line errors, and loading a
.pb or a .tflite never imports TensorFlow."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from tidlc.frontends.tensorflow.graphdef import (
    decode_attr,
    message_class,
    parse_graphdef,
    tensor_to_array,
)
from tidlc.frontends.tensorflow.importer import import_graphdef, supported_ops

from tidlc.cli import main
from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError


def node(graph, name, op, inputs=(), **attrs):
    """Append a NodeDef to a tidlc GraphDef message (attrs: str, int, float, bool, list of int, shape)."""
    n = graph.node.add(name=name, op=op)
    n.input.extend(inputs)
    for key, value in attrs.items():
        attr = n.attr[key]
        if isinstance(value, str):
            attr.s = value.encode()
        elif isinstance(value, bool):
            attr.b = value
        elif isinstance(value, int):
            attr.i = value
        elif isinstance(value, float):
            attr.f = value
        elif isinstance(value, tuple):  # a shape
            for d in value:
                attr.shape.dim.add(size=d)
        elif isinstance(value, np.ndarray):
            attr.tensor.dtype = {np.dtype(np.float32): 1, np.dtype(np.int32): 3}[value.dtype]
            for d in value.shape:
                attr.tensor.tensor_shape.dim.add(size=d)
            attr.tensor.tensor_content = value.tobytes()
        else:
            attr.list.i.extend(value)
    return n


def placeholder(graph, name="x", shape=(1, 4, 4, 3)):
    return node(graph, name, "Placeholder", dtype=1, shape=shape)


def test_schema_reads_what_tensorflow_writes(tf_models, tfx):
    tf = tfx.tf
    data = (tf_models / "mobilenet_v2.pb").read_bytes()
    ours = parse_graphdef(data)
    theirs = tf.compat.v1.GraphDef()
    theirs.ParseFromString(data)
    assert [n.name for n in ours.node] == [n.name for n in theirs.node]
    for a, b in zip(ours.node, theirs.node):
        assert a.op == b.op and list(a.input) == list(b.input) and sorted(a.attr) == sorted(b.attr)
        if a.op == "Const":
            np.testing.assert_array_equal(tensor_to_array(a.attr["value"].tensor), tf.make_ndarray(b.attr["value"].tensor))
        if a.op in ("Conv2D", "DepthwiseConv2dNative"):
            assert decode_attr(a.attr["strides"]) == list(b.attr["strides"].list.i)
            assert decode_attr(a.attr["padding"]) == b.attr["padding"].s.decode()


def test_splat_and_typed_value_constants():
    tensor = message_class("TensorProto")(dtype=1)
    tensor.tensor_shape.dim.add(size=2)
    tensor.tensor_shape.dim.add(size=3)
    tensor.float_val.extend([1.5, 2.5])  # fewer values than elements: the last one repeats
    np.testing.assert_array_equal(tensor_to_array(tensor), [[1.5, 2.5, 2.5], [2.5, 2.5, 2.5]])
    half = message_class("TensorProto")(dtype=19)
    half.half_val.extend(np.float16([0.5, -2.0]).view(np.uint16).tolist())
    half.tensor_shape.dim.add(size=2)
    np.testing.assert_array_equal(tensor_to_array(half), np.float16([0.5, -2.0]))


def test_every_unsupported_node_is_listed_at_once():
    graph = message_class("GraphDef")()
    placeholder(graph)
    node(graph, "scan", "Cumsum", ["x", "axis"])
    node(graph, "axis", "Const", value=np.int32([1]))
    node(graph, "bn", "FusedBatchNormV3", ["scan", "x", "x", "x", "x"], is_training=True)
    node(graph, "mirror", "MirrorPad", ["bn", "pads"], mode="SYMMETRIC")  # (supported: no problem line)
    node(graph, "pads", "Const", value=np.zeros((4, 2), np.int32))
    node(graph, "fancy", "MyCustomOp", ["mirror"])
    node(graph, "unused", "AlsoUnsupported", ["x"])  # not an ancestor of the output... but a sink itself
    with pytest.raises(TidlcError) as info:
        import_graphdef(graph, CompileOptions(), "net.pb", outputs=["fancy"])
    head = ("net.pb: error: 3 unsupported TensorFlow ops (hint: docs/frontends/tensorflow.md lists the "
            f"{len(supported_ops())} supported ops; or convert the model (tf.lite.TFLiteConverter, or tf2onnx), "
            "whose ops tidlc does not lower run on the host (docs/host-ops.md))")
    assert str(info.value).splitlines() == [
        head,
        "  'scan' (Cumsum): not supported",
        "  'bn' (FusedBatchNormV3): is_training=true is not supported (freeze the model in inference mode)",
        "  'fancy' (MyCustomOp): not supported",
    ]


def test_outputs_are_the_sinks_and_control_edges_are_ignored():
    graph = message_class("GraphDef")()
    placeholder(graph)
    node(graph, "r", "Relu", ["x", "^init"])
    node(graph, "init", "NoOp")
    node(graph, "t", "Tanh", ["x"])
    out = import_graphdef(graph, CompileOptions(), "net.pb")
    assert out.output_names == ["r", "t"]
    x = np.random.default_rng(0).standard_normal((1, 4, 4, 3)).astype(np.float32)
    from tidlc.interp import run_graph
    got = run_graph(out, {"x": x})
    np.testing.assert_allclose(got["r"], np.maximum(x, 0))
    np.testing.assert_allclose(got["t"], np.tanh(x), rtol=1e-6)


def test_input_shape_errors():
    graph = message_class("GraphDef")()
    placeholder(graph, shape=(-1, -1, 8, 3))
    node(graph, "r", "Relu", ["x"])
    with pytest.raises(TidlcError, match=r"hint: --input-shape x=N,H,8,3"):
        import_graphdef(graph, CompileOptions(), "net.pb")
    graph = message_class("GraphDef")()
    placeholder(graph, shape=(-1, 8, 8, 3))
    node(graph, "r", "Relu", ["x"])
    with pytest.raises(TidlcError, match=r"--input-shape x: rank 2 but the model declares \(\?, 8, 8, 3\)"):
        import_graphdef(graph, CompileOptions.of(input_shapes={"x": (1, 8)}), "net.pb")
    g = import_graphdef(graph, CompileOptions.of(input_shapes={"x": (2, 8, 8, 3)}), "net.pb")
    assert g.inputs[0].type.shape == (2, 8, 8, 3) and g.inputs[0].type.layout == "NHWC"


def test_bad_files_are_one_line_errors(tmp_path, capsys):
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\x0a\xff\xff\xff\xff\x0f" + os.urandom(64))
    assert main(["ir", str(garbage)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{garbage}: error: not a TensorFlow GraphDef") and "Traceback" not in err
    assert main(["ir", str(tmp_path / "missing.pb")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_format_is_sniffed_without_the_suffix(tf_models, tmp_path, capsys):
    renamed = tmp_path / "frozen_graph.bin"
    renamed.write_bytes((tf_models / "mobilenet_v2.pb").read_bytes())
    assert main(["ir", str(renamed), "--input-shape", "input=1,224,224,3"]) == 0
    assert "conv2d(" in capsys.readouterr().out
    renamed = tmp_path / "model.bin"
    renamed.write_bytes((tf_models / "mobilenet_v2.tflite").read_bytes())
    assert main(["ir", str(renamed)]) == 0
    assert "conv2d(" in capsys.readouterr().out


NO_TENSORFLOW = textwrap.dedent('''
    import sys
    for name in ("tensorflow", "tflite", "keras", "flatbuffers"):
        sys.modules[name] = None  # any "import tensorflow" now raises ImportError
    import numpy as np
    from tidlc.compiler import load, optimize
    from tidlc.config import CompileOptions
    from tidlc.interp import run_graph
    folder = sys.argv[1]
    for name, shape in (("mobilenet_v2.pb", (1, 224, 224, 3)), ("mobilenet_v2.tflite", None),
                        ("mobilenet_v2_int8.tflite", None)):
        options = CompileOptions.of(input_shapes={"input": shape} if shape else {})
        graph = load(f"{folder}/{name}", options)
        optimize(graph, options)
        t = graph.inputs[0].type
        out = run_graph(graph, {"input": np.zeros(t.shape, dtype=t.dtype.replace("f32", "float32").replace("i8", "int8"))})
        print(name, next(iter(out.values())).shape)
    assert not [m for m in ("tensorflow", "tflite", "keras") if sys.modules.get(m) is not None]
''')


def test_loading_never_imports_tensorflow(tf_models):
    result = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, str(tf_models)], capture_output=True,
                            text=True, timeout=300, check=False, cwd=str(tf_models))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["mobilenet_v2.pb", "(1,", "1000)", "mobilenet_v2.tflite", "(1,", "1000)",
                                     "mobilenet_v2_int8.tflite", "(1,", "1000)"]
