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
