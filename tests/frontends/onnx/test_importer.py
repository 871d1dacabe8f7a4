"""The import rules (names, constants, shapes, opsets), the all-at-once unsupported-op report,
and bad input files (one error line, exit code 2)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from tidlc.frontends.onnx.importer import load_onnx, supported_ops
from tidlc.frontends.onnx.registry import ConverterTable

from tidlc.cli import main
from tidlc.compiler import compile_model, load
from tidlc.config import CompileOptions
from tidlc.diagnostics import Loc, TidlcError, TidlcWarning
from tidlc.interp import run_graph

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
SQUEEZENET = LIGHT / "light_squeezenet.onnx"


def _conv_relu_model(ox, opset=13, batch=1, **kw):
    h = ox.helper
    nodes = [h.make_node("Conv", ["data", "w", "b"], ["conv_out"], name="conv1", pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["conv_out"], ["prob"])]  # unnamed: takes its output's name
    model = ox.make_model(nodes, {"data": ox.randn(batch, 3, 8, 8)}, ["prob"],
                          {"w": ox.randn(4, 3, 3, 3, seed=1), "b": ox.randn(4, seed=2)}, opset=opset, **kw)
    return model


def _save(model, tmp_path, name="model.onnx") -> str:
    path = tmp_path / name
    onnx.save(model, str(path))
    return str(path)


# ----------------------------------------------------------------------------- names, constants, inputs
def test_names_locations_and_constants(ox, tmp_path):
    path = _save(_conv_relu_model(ox), tmp_path)
    graph = load_onnx(path, CompileOptions())
    kinds = [(op.kind, op.name) for op in graph.ops]
    assert kinds == [("input", "data"), ("const", "w"), ("const", "b"), ("conv2d", "conv1"), ("relu", "prob")]
    data, w, _b, conv, relu = graph.ops
    assert data.results[0].type.layout == "NCHW" and data.results[0].name == "data"
    assert w.results[0].name == "w" and w.loc == Loc("w", path)
    assert conv.loc == Loc("conv1", path) and conv.results[0].name == "conv_out"
    assert graph.output_names == ["prob"] and graph.outputs[0] is relu.results[0]
    assert graph.attrs["onnx_opset"] == 13


def test_graph_input_that_is_an_initializer_is_a_constant(ox):
    model = _conv_relu_model(ox)
    model.graph.input.append(onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [4, 3, 3, 3]))
    graph = ox.tidlc_graph(model, None)
    assert graph.input_names() == ["data"]
    assert graph.ops[1].kind == "const" and graph.ops[1].name == "w"


def test_unused_initializers_are_not_imported(ox):
    model = _conv_relu_model(ox)
    model.graph.initializer.append(ox.numpy_helper.from_array(np.zeros(1000, np.float32), "unused"))
    graph = ox.tidlc_graph(model, None)
    assert "unused" not in {op.name for op in graph.ops}


def test_symbolic_dims_import_as_unknown_and_input_shape_fixes_them(ox, tmp_path):
    model = _conv_relu_model(ox)
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.dim_param = "N"
    path = _save(model, tmp_path)
    graph = load_onnx(path, CompileOptions())
    assert graph.inputs[0].shape == (None, 3, 8, 8)
    assert graph.outputs[0].shape == (None, 4, 8, 8)
    graph = load(path, CompileOptions.of(input_shapes={"data": (2, 3, 8, 8)}))
    assert graph.outputs[0].shape == (2, 4, 8, 8)
    x = ox.randn(2, 3, 8, 8)
    ref = ox.ort_run(model, {"data": x})["prob"]
    ox.assert_close(run_graph(graph, {"data": x})["prob"], ref)


def test_input_shape_rank_mismatch(ox, tmp_path):
    path = _save(_conv_relu_model(ox), tmp_path)
    with pytest.raises(TidlcError, match=r"--input-shape data: rank 2 but the model declares \(1, 3, 8, 8\)"):
        load_onnx(path, CompileOptions.of(input_shapes={"data": (1, 3)}))


def test_unknown_rank_input(ox):
    model = _conv_relu_model(ox)
    model.graph.input[0].type.tensor_type.ClearField("shape")
    graph = ox.tidlc_graph(model, None)
    assert graph.inputs[0].shape is None and graph.inputs[0].type.layout is None


def test_same_padding_needs_static_spatial_dims(ox):
    h = ox.helper
    node = h.make_node("Conv", ["x", "w"], ["y"], name="c", auto_pad="SAME_UPPER")
    model = ox.make_model([node], {"x": ox.randn(1, 3, 8, 8)}, ["y"], {"w": ox.randn(2, 3, 3, 3)})
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    with pytest.raises(TidlcError, match="auto_pad SAME_UPPER needs the static spatial size") as info:
        ox.tidlc_graph(model, None)
    assert "--input-shape" in info.value.hint
    graph = ox.tidlc_graph(model, None, input_shapes={"x": (1, 3, 8, 8)})
    assert graph.outputs[0].shape == (1, 2, 8, 8)


def test_external_data(ox, tmp_path):
    model = _conv_relu_model(ox)
    x = ox.randn(1, 3, 8, 8)
    ref = ox.ort_run(model, {"data": x})["prob"]
    folder = tmp_path / "ext"
    folder.mkdir()
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (folder / "weights.bin").stat().st_size > 0
    graph = load_onnx(str(folder / "model.onnx"), CompileOptions())
    ox.assert_close(run_graph(graph, {"data": x})["prob"], ref)
    (folder / "weights.bin").unlink()
    with pytest.raises(TidlcError, match="external data"):
        load_onnx(str(folder / "model.onnx"), CompileOptions())


def test_unsorted_nodes_are_sorted(ox):
    model = _conv_relu_model(ox)
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    graph = ox.tidlc_graph(model, 0)
    assert [op.kind for op in graph.compute_ops()] == ["conv2d", "relu"]


def test_light_model_constants_fold_at_o1():
    graph = load(str(SQUEEZENET), CompileOptions())
    assert sum(op.kind == "constant_of_shape" for op in graph.ops) == 39  # imported, not evaluated
    result = compile_model(str(SQUEEZENET), CompileOptions.of(opt_level=1, emit="none"))
    assert not any(op.kind == "constant_of_shape" for op in result.graph.ops)


# ----------------------------------------------------------------------------- opsets and the table
def test_converter_table_picks_the_newest_version():
    table = ConverterTable()
    table.register("Op", 1)(lambda node: "v1")
    table.register("Op", 13)(lambda node: "v13")
    assert table.lookup("Op", 12).since == 1
    assert table.lookup("Op", 13).since == 13 and table.lookup("Op", 21).since == 13
    assert table.lookup("Op", 0) is None and table.lookup("Other", 13) is None
    with pytest.raises(ValueError, match="registered twice"):
        table.register("Op", 13)(lambda node: None)


def test_supported_ops_cover_the_issue_list():
    ops = supported_ops()
    required = ["Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Gelu", "Softplus", "Exp", "Log", "Sqrt", "Abs", "Neg", "Reciprocal", "Floor", "Ceil", "Erf", "Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Sum", "Mean", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LRN", "Softmax", "LogSoftmax", "Concat", "Split", "Slice", "Pad", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Constant", "ConstantOfShape", "Shape", "Gather", "Cast", "Expand", "Resize", "Upsample", "DepthToSpace", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL2", "ReduceSumSquare", "ArgMax", "Where"]
    assert not [op for op in required if op not in ops]
    assert ops["Softmax"] == (1, 13) and ops["Resize"] == (10, 11, 13, 18, 19)
    assert ops["Squeeze"] == (1, 13) and ops["ReduceSum"] == (1, 13) and ops["ReduceMean"] == (1, 18)


def test_old_opset_is_upgraded(ox, tmp_path):
    # PyTorch <= 0.3 and Caffe2 exports: opset 6, upgraded in memory with one warning, the file untouched
    model = _conv_relu_model(ox, opset=6)
    path = _save(model, tmp_path)
    before = Path(path).read_bytes()
    with pytest.warns(TidlcWarning, match="opset 6 is older than the opsets tidlc reads.*upgraded to opset 11") as w:
        graph = load_onnx(path)
    assert [x.message.code for x in w if isinstance(x.message, TidlcWarning)] == ["version"]
    assert str(w[0].message).startswith(f"{path}: ") and graph.attrs["onnx_opset"] == 11
    assert [op.kind for op in graph.compute_ops()] == ["conv2d", "relu"]
    assert Path(path).read_bytes() == before
    feeds = {"data": ox.randn(1, 3, 8, 8)}
    ox.assert_close(run_graph(graph, feeds)["prob"], ox.ort_run(model, feeds)["prob"])


def test_old_opset_the_converter_cannot_upgrade(ox):
    node = ox.helper.make_node("Scatter", ["x", "i", "u"], ["y"], name="sc")
    model = ox.make_model([node], {"x": ox.randn(2, 3), "i": np.zeros((1, 3), np.int64), "u": ox.randn(1, 3)},
                          ["y"], opset=6)
    with pytest.raises(TidlcError, match="opset 6 is older than the opsets tidlc reads .7-21., and onnx's version "
                                         "converter cannot upgrade it: No Adapter From Version .8 for Scatter") as info:
        ox.tidlc_graph(model, None)
    assert info.value.code == "version" and "export the model again with opset 11" in info.value.hint


def test_newer_opset_warns(ox):
    model = _conv_relu_model(ox, opset=22)
    with pytest.warns(TidlcWarning, match="opset 22 is newer than the tested range 7-21"):
        graph = ox.tidlc_graph(model, None)
    assert [op.kind for op in graph.compute_ops()] == ["conv2d", "relu"]


def test_op_newer_than_the_model_opset(ox):
    node = ox.helper.make_node("HardSwish", ["x"], ["y"], name="hs")
    model = ox.make_model([node], {"x": ox.randn(2, 3)}, ["y"], opset=13)
    with pytest.raises(TidlcError) as info:
        ox.tidlc_graph(model, None, allow_host=False)  # (else a host op)
    assert info.value.problems == ["'hs' (HardSwish): supported from opset 14, the model has opset 13"]


# ----------------------------------------------------------------------------- all unsupported ops at once
def test_all_unsupported_ops_in_one_error(ox, tmp_path):
    h = ox.helper
    nodes = [h.make_node("Relu", ["x"], ["a"], name="ok"),
             h.make_node("NonMaxSuppression", ["a"], ["b"], name="nms"),
             h.make_node("Resize", ["b", "", "scales"], ["c"], name="up", mode="cubic"),
             h.make_node("QuantizeLinear", ["c", "s"], ["d"], name="q", block_size=2),
             h.make_node("FusedConv", ["d"], ["e"], name="fc", domain="com.microsoft"),
             h.make_node("ArgMax", ["e"], ["y"], name="am", select_last_index=1)]
    model = ox.make_model(nodes, {"x": ox.randn(1, 2, 3, 3)}, [("y", np.int64)],
                          {"scales": np.ones(4, np.float32), "s": np.float32(1)}, opset=13)
    model.opset_import.append(h.make_opsetid("com.microsoft", 1))
    path = _save(model, tmp_path)
    with pytest.raises(TidlcError) as info:
        load_onnx(path, CompileOptions.of(allow_host=False))
    err = info.value
    assert err.message == "5 unsupported ONNX ops" and err.loc == path
    assert err.problems == [
        "'nms' (NonMaxSuppression): not supported",
        "'up' (Resize): mode 'cubic' is not supported (nearest and linear are)",
        "'q' (QuantizeLinear): blocked quantization (block_size) is not supported",
        "'fc' (FusedConv): ops of domain 'com.microsoft' are not supported",
        "'am' (ArgMax): select_last_index=1 is not supported",
    ]
    assert "docs/frontends/onnx.md" in err.hint and "supported op types" in err.hint
    lines = str(err).splitlines()
    assert lines[0].startswith(f"{path}: error: 5 unsupported ONNX ops (hint: ") and len(lines) == 6


def test_cli_lists_unsupported_ops(ox, tmp_path, capsys):
    node = ox.helper.make_node("Mod", ["x", "x"], ["y"], name="m")
    path = _save(ox.make_model([node], {"x": ox.randn(2, 2)}, ["y"]), tmp_path)
    assert main(["compile", path, "-o", str(tmp_path / "out"), "--no-host"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{path}: error: 1 unsupported ONNX op (hint:")
    assert err[1:] == ["  'm' (Mod): not supported"]
    assert not (tmp_path / "out").exists()


INDICES = ("the Indices output is not supported (the switches MaxUnpool reads: SegNet, ENet; TIDL has no "
           "unpooling: a nearest x2 resize or a ConvTranspose in its place, fine-tuned, runs on TIDL)")


def test_used_maxpool_indices_are_rejected(ox):
    node = ox.helper.make_node("MaxPool", ["x"], ["y", "i"], name="mp", kernel_shape=[2, 2])
    model = ox.make_model([node], {"x": ox.randn(1, 1, 4, 4)}, ["y", ("i", np.int64)], opset=12)
    with pytest.raises(TidlcError) as info:
        ox.tidlc_graph(model, None, allow_host=False)
    assert info.value.problems == ["'mp' (MaxPool): " + INDICES]
    # with host ops allowed, onnxruntime runs it and the reason stays with the op
    graph = ox.tidlc_graph(model, None)
    (host,) = [op for op in graph.ops if op.kind == "host"]
    assert host.attrs["op_type"] == "MaxPool" and host.attrs["reason"] == INDICES


def test_3d_conv_is_a_host_op(ox):
    node = ox.helper.make_node("Conv", ["x", "w"], ["y"], name="c3", kernel_shape=[1, 1, 1])
    model = ox.make_model([node], {"x": ox.randn(1, 1, 2, 2, 2)}, ["y"], {"w": ox.randn(1, 1, 1, 1, 1)})
    with pytest.raises(TidlcError) as info:
        ox.tidlc_graph(model, None, allow_host=False)
    assert info.value.problems == ["'c3' (Conv): 3-D convolution is not supported (1-D and 2-D only)"]
    graph = ox.tidlc_graph(model, None)
    assert [(op.kind, op.attrs.get("reason")) for op in graph.compute_ops()] == \
        [("host", "3-D convolution is not supported (1-D and 2-D only)")]
    feeds = {"x": ox.randn(1, 1, 2, 2, 2)}
    ox.assert_close(run_graph(graph, feeds)["y"], ox.ort_run(model, feeds)["y"])


# ----------------------------------------------------------------------------- bad files
def test_missing_file(tmp_path):
    with pytest.raises(TidlcError, match="no such file"):
        load_onnx(str(tmp_path / "nope.onnx"))


@pytest.mark.parametrize("content", [b"", b"hello, this is not a model\n", bytes(range(256)) * 4,
                                     b"\x08\x07\x12\x04test"], ids=["empty", "text", "binary", "header-only"])
def test_not_an_onnx_file(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(TidlcError) as info:
        load_onnx(str(path))
    assert "ONNX model" in info.value.message
    assert len(str(info.value).splitlines()) == 1


def test_every_truncation_is_a_clean_error(tmp_path):
    data = SQUEEZENET.read_bytes()
    path = tmp_path / "cut.onnx"
    for cut in sorted({1, 2, 10, 100, 1000, len(data) // 2, len(data) - 100, len(data) - 10, len(data) - 1}):
        path.write_bytes(data[:cut])
        with pytest.raises(TidlcError) as info:
            load_onnx(str(path))
        assert len(str(info.value).splitlines()) == 1, cut


def test_malformed_graph(ox):
    node = ox.helper.make_node("Relu", ["ghost"], ["y"], name="r")
    model = ox.make_model([node], {"x": ox.randn(2)}, ["y"])
    with pytest.raises(TidlcError, match=r"malformed ONNX graph \(1 problem\)") as info:
        ox.tidlc_graph(model, None)
    assert info.value.problems == ["node 'r' (Relu) reads 'ghost', which nothing produces"]


def test_cycle(ox):
    h = ox.helper
    nodes = [h.make_node("Relu", ["b"], ["a"], name="first"), h.make_node("Relu", ["a"], ["b"], name="second")]
    model = ox.make_model(nodes, {"x": ox.randn(2)}, ["b"])
    with pytest.raises(TidlcError, match="the ONNX graph has a cycle"):
        ox.tidlc_graph(model, None)


def test_cli_truncated_model_exits_2_with_one_line(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(SQUEEZENET.read_bytes()[:5000])
    # cwd outside the source tree: `python -m` puts the cwd first on sys.path
    proc = subprocess.run([sys.executable, "-m", "tidlc.cli", "compile", str(broken), "-o", str(tmp_path / "o")],
                          cwd=tmp_path,
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{broken}: error: not a valid ONNX model"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_missing_and_non_onnx(tmp_path, capsys):
    assert main(["compile", str(tmp_path / "missing.onnx")]) == 2
    assert capsys.readouterr().err.strip() == f"{tmp_path / 'missing.onnx'}: error: no such file"
    text = tmp_path / "notes.onnx"
    text.write_text("just some text\n")
    assert main(["compile", str(text)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error: not" in err[0]


def test_cli_compile_and_run(tmp_path, capsys):
    model = tmp_path / "squeezenet.onnx"
    shutil.copy(SQUEEZENET, model)
    assert main(["compile", str(model), "-o", str(tmp_path / "out")]) == 0
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TidlcWarning)
        assert main(["run", str(tmp_path / "out"), "--input", f"data_0={tmp_path / 'x.npy'}",
                     "--output", str(tmp_path / "y.npz")]) == 0
    out = capsys.readouterr().out
    assert "softmaxout_1: float32 [1, 1000, 1, 1]" in out
