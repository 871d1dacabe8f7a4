"""Exported models often keep a dynamic batch (torch.onnx.export with dynamic_axes, Keras' None):
compile, check and perf take it as 1 with a warning (it was 'input has a dynamic shape'); other
dynamic dimensions stay an error, now naming the shape and the --input-shape to give."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tidlc.backends.tidl.binfmt import read_compiled


def _model(tmp_path, dims) -> str:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], 4, *dims[2:]])], [w])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def test_a_dynamic_batch_compiles_as_one_with_a_warning(cli, tmp_path):
    path = _model(tmp_path, ["batch", 3, 8, 8])
    code, _, err = cli("compile", path, "-o", tmp_path / "out", quiet=False)
    assert code == 0, err
    assert "warning: dynamic batch dimension taken as 1 (x=1,3,8,8)" in err
    assert read_compiled(str(tmp_path / "out" / "net.bin")).graph.inputs[0].type.shape == (1, 3, 8, 8)
    for command in ("check", "perf"):
        code, _, err = cli(command, path, quiet=False)
        assert code == 0 and err.count("dynamic batch dimension taken as 1") == 1, (command, err)
    code, _, err = cli("compile", path, "--input-shape", "x=2,3,8,8", "-o", tmp_path / "two", quiet=False)
    assert code == 0 and "dynamic batch" not in err, err


def test_the_float_interpreter_still_runs_any_batch(cli, tmp_path):
    path = _model(tmp_path, ["batch", 3, 8, 8])
    np.save(tmp_path / "x.npy", np.zeros((5, 3, 8, 8), np.float32))
    code, out, err = cli("run", path, "--input", tmp_path / "x.npy", quiet=False)
    assert code == 0 and "y: float32 [5, 4, 8, 8]" in out and "dynamic batch" not in err, (out, err)


@pytest.mark.parametrize("command", ["compile", "run"])
def test_other_dynamic_dimensions_name_the_input_shape_to_give(cli, tmp_path, command):
    path = _model(tmp_path, ["batch", 3, "height", "width"])
    extra = ("-o", tmp_path / "out") if command == "compile" else ("--random-input", "1")
    code, _, err = cli(command, path, *extra)
    assert code == 2 and err.strip().splitlines()[-1] == (
        f"{path}: error: input 'x' has a dynamic shape [?, 3, ?, ?] (hint: give --input-shape x=N,3,H,W)"), err
    assert not (tmp_path / "out").exists()


def _chunked(tmp_path) -> str:
    """``torch.onnx.export(dynamic_axes={'x': {0: 'batch'}}, dynamo=False)`` of ``conv(x).chunk(2, 1)``:
    the split point is shape arithmetic on a tensor whose batch is dynamic,
    ``Shape -> Gather(1) -> Add(1) -> Div(2) -> Slice(0, that) / Slice(that, 2 * that)``."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             *(numpy_helper.from_array(np.array([v], np.int64), n) for n, v in
               (("one", 1), ("two", 2), ("axis", 1), ("zero", 0), ("idx", 1)))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Shape", ["y"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "idx"], ["c"], axis=0, name="gather"),
             helper.make_node("Add", ["c", "one"], ["c1"], name="add"),
             helper.make_node("Div", ["c1", "two"], ["half"], name="div"),
             helper.make_node("Mul", ["half", "two"], ["end"], name="mul"),
             helper.make_node("Slice", ["y", "zero", "half", "axis"], ["a"], name="slice0"),
             helper.make_node("Slice", ["y", "half", "end", "axis"], ["b"], name="slice1"),
             helper.make_node("Mul", ["a", "b"], ["z"], name="gate")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 2, 8, 8])], inits)
    path = tmp_path / "chunk.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def test_shape_arithmetic_on_a_dynamic_batch_is_static_for_the_device(cli, tmp_path):
    """The batch is taken as 1 as the model is imported, not after: the Slice's ends were an error
    ('must be a constant initializer'), asking for onnxsim."""
    path = _chunked(tmp_path)
    code, _, err = cli("compile", path, "-o", tmp_path / "out", quiet=False)
    assert code == 0, err
    assert err.count("dynamic batch dimension taken as 1 (x=1,3,8,8)") == 1, err
    assert read_compiled(str(tmp_path / "out" / "net.bin")).graph.outputs[0].type.shape == (1, 2, 8, 8)
    code, out, err = cli("check", path, quiet=False)
    assert code == 0 and "4 layers on tidl (tda4vm): 4 accelerated, 0 with a penalty, 0 on the host" in out, out
    np.save(tmp_path / "x.npy", np.ones((3, 3, 8, 8), np.float32))  # the float interpreter: with its shape given
    code, out, err = cli("run", path, "--input", tmp_path / "x.npy", "--input-shape", "x=3,3,8,8", quiet=False)
    assert code == 0 and "z: float32 [3, 2, 8, 8]" in out, (out, err)
