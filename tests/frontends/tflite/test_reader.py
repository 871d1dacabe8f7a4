"""tidlc's own flatbuffer reader against the ``tflite`` package, and the importer's contract:
custom and unsupported operators listed at once with their index, bad files as one-line errors."""
import numpy as np
import pytest
from tidlc.frontends.tflite.flatbuf import FlatBufferError, Table
from tidlc.frontends.tflite.importer import import_model, parse_tflite, supported_ops
from tidlc.frontends.tflite.schema import read_model

from tidlc.cli import main
from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError

tflite = pytest.importorskip("tflite")


@pytest.mark.parametrize("name", ["mobilenet_v2.tflite", "mobilenet_v2_f16.tflite", "mobilenet_v2_int8.tflite"])
def test_reader_agrees_with_the_tflite_package(tf_models, name):
    buf = (tf_models / name).read_bytes()
    ours = read_model(buf)
    theirs = tflite.Model.GetRootAsModel(buf, 0)
    sg = theirs.Subgraphs(0)
    assert ours.version == theirs.Version() and len(ours.tensors) == sg.TensorsLength()
    assert ours.inputs == list(sg.InputsAsNumpy()) and ours.outputs == list(sg.OutputsAsNumpy())
    for i, t in enumerate(ours.tensors):
        ref = sg.Tensors(i)
        assert t.name == ref.Name().decode() and t.type_code == ref.Type() and t.buffer == ref.Buffer()
        assert t.shape == tuple(ref.ShapeAsNumpy()) if not ref.ShapeIsNone() else t.shape == ()
        q = ref.Quantization()
        if t.quant is not None:
            np.testing.assert_array_equal(t.quant.scale, q.ScaleAsNumpy())
            np.testing.assert_array_equal(t.quant.zero_point, q.ZeroPointAsNumpy())
            assert t.quant.axis == q.QuantizedDimension()
        data = ours.buffer_data(t)
        if data is not None:
            assert bytes(data) == theirs.Buffers(t.buffer).DataAsNumpy().tobytes()
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    for i, op in enumerate(ours.operators):
        ref = sg.Operators(i)
        code = theirs.OperatorCodes(ref.OpcodeIndex())
        assert op.op_type == names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        assert op.inputs == list(ref.InputsAsNumpy()) and op.outputs == list(ref.OutputsAsNumpy())
        if op.op_type == "CONV_2D":
            options = tflite.Conv2DOptions()
            table = ref.BuiltinOptions()
            options.Init(table.Bytes, table.Pos)
            assert (op.options["stride_h"], op.options["stride_w"], op.options["padding"],
                    op.options["fused_activation_function"]) == (
                options.StrideH(), options.StrideW(), options.Padding(), options.FusedActivationFunction())


def digamma_model(tfl):
    tf = tfl.tf
    return tfl.convert(lambda x: tf.nn.relu(tf.math.digamma(tf.nn.relu(x)) + tf.math.cumsum(x, axis=1)),
                       {"x": tfl.randn(1, 4)}, custom_ops=True)


def test_custom_op_is_reported_with_name_and_index(tfl, tmp_path, capsys):
    path = tmp_path / "custom.tflite"
    path.write_bytes(digamma_model(tfl))
    index = next(op.index for op in read_model(path.read_bytes()).operators if op.op_type == "CUSTOM")
    assert main(["ir", str(path), "--no-host"]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0].startswith(f"{path}: error: ") and "unsupported TFLite operator" in lines[0]
    custom = [line for line in lines if "CUSTOM" in line]
    assert custom == [f"  operator #{index} 'Digamma' (CUSTOM 'Digamma'): custom op 'Digamma' is not supported"]
    assert any("(CUMSUM): not supported" in line for line in lines)  # every problem, in one error
    assert "Traceback" not in err


def test_unsupported_options_are_listed_before_converting(tfl):
    tf = tfl.tf
    model = tfl.convert(lambda x: (tf.gather(x, [[0, 1], [1, 0]], axis=1, batch_dims=1), tf.math.cumsum(x, axis=1)),
                        {"x": tfl.randn(2, 4)})
    with pytest.raises(TidlcError) as info:
        import_model(parse_tflite(model, "m.tflite"), CompileOptions.of(allow_host=False), "m.tflite")
    problems = info.value.problems
    assert len(problems) == 2
    assert any("(GATHER): batch_dims=1 is not supported" in p for p in problems)
    assert any("(CUMSUM): not supported" in p for p in problems)
    assert f"lists the {len(supported_ops())} supported ops" in str(info.value)


def test_bad_files_are_one_line_errors(tf_models, tmp_path, capsys):
    good = (tf_models / "mobilenet_v2.tflite").read_bytes()
    cases = {"truncated.tflite": good[:2000], "noise.tflite": b"\x10\x00\x00\x00TFL3" + bytes(range(256)) * 3,
             "other.tflite": b"PK\x03\x04" + good[4:100]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert main(["ir", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(f"{tmp_path / name}: ") and ": error: " in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) <= 3


def test_flatbuffer_offsets_are_checked():
    with pytest.raises(FlatBufferError):
        Table.root(b"\x00\x01\x00\x00TFL3")
    with pytest.raises(FlatBufferError):
        Table(b"\x00" * 8, 100)


def test_input_shape_override(tf_models):
    model = read_model((tf_models / "mobilenet_v2.tflite").read_bytes())
    graph = import_model(model, CompileOptions.of(input_shapes={"input": (2, 160, 160, 3)}), "m.tflite")
    assert graph.inputs[0].type.shape == (2, 160, 160, 3)
    with pytest.raises(TidlcError, match="rank 2 but the model declares"):
        import_model(model, CompileOptions.of(input_shapes={"input": (2, 160)}), "m.tflite")


def _open_size_tflite() -> bytes:
    """A Keras-style model with input (None, None, None, 3): the converter writes a 1x1x1x3
    placeholder shape and -1 in shape_signature (Keras' MobileNetV3 with weights=None)."""
    tf = pytest.importorskip("tensorflow")
    w = tf.constant(np.random.default_rng(0).standard_normal((3, 3, 3, 4)).astype(np.float32))
    fn = tf.function(lambda x: tf.nn.relu(tf.nn.conv2d(x, w, 2, "SAME")), autograph=False)
    concrete = fn.get_concrete_function(tf.TensorSpec([None, None, None, 3], tf.float32, name="image"))
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn).convert()


def test_open_input_dims_ask_for_the_input_shape_by_name():
    """The placeholder 1x1 plane made a 3x3 stride-2 conv fail with "window 3 larger than padded
    input 2"; an --input-shape naming no input was ignored."""
    model = read_model(_open_size_tflite())
    name = model.tensors[model.inputs[0]].name
    with pytest.raises(TidlcError, match=r"needs the static height and width") as info:
        import_model(model, CompileOptions.of(), "m.tflite")
    assert f"--input-shape {name}=1,H,W,3" in info.value.hint
    graph = import_model(model, CompileOptions.of(input_shapes={name.split(":")[0]: (1, 16, 12, 3)}), "m.tflite")
    assert graph.outputs[0].type.shape == (1, 8, 6, 4)  # (the name without ':0' names it too)
    with pytest.raises(TidlcError, match="--input-shape names unknown input 'imagee'") as info:
        import_model(model, CompileOptions.of(input_shapes={"imagee": (1, 16, 12, 3)}), "m.tflite")
    assert name in info.value.hint
