"""Bad ONNX files found by (or written after) the fuzz campaign: each must be one TidlcError
naming the file and the node or tensor, never an exception from numpy, onnx or protobuf, a
hang or a huge allocation. docs/fuzzing.md; fuzz/targets/onnx.py."""
from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

_tidlc_frontend_checks = sys.modules["tidlc_frontend_checks"]  # loaded from a file by tests/frontends/conftest.py
assert_one_line_error = _tidlc_frontend_checks.assert_one_line_error

from tidlc.frontends.onnx.importer import load_onnx

from tidlc import limits
from tidlc.cli import main
from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError


def _model(nodes, inits=(), inputs=None, outputs=("y",), opset=13) -> onnx.ModelProto:
    inputs = inputs if inputs is not None else [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 3, 4, 4))]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    graph = helper.make_graph(nodes, "g", inputs, outs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _ints(name: str, values) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _add_w(tensor: TensorProto) -> onnx.ModelProto:
    return _model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [tensor])


def _load(tmp_path, model, name: str = "m.onnx"):
    path = tmp_path / name
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    return load_onnx(str(path), CompileOptions()), str(path)


def _error(tmp_path, model, match: str, name: str = "m.onnx") -> TidlcError:
    path = tmp_path / name
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    with pytest.raises(TidlcError, match=match) as info:
        load_onnx(str(path), CompileOptions())
    assert "\n" not in info.value.format() or info.value.problems
    return info.value


# ----------------------------------------------------------------------------- the file
def test_invalid_utf8_name_is_an_error_not_bytes(tmp_path):
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")])
    data = model.SerializeToString().replace(b"relu", b"r\xfflu")
    err = _error(tmp_path, data, r"graph\.node\[0\]\.name is not UTF-8 text")
    assert err.loc == str(tmp_path / "m.onnx") and err.code == "corrupt"


def test_garbage_is_one_line(tmp_path, capsys):
    assert_one_line_error(capsys, tmp_path / "g.onnx", b"\x08\x07\x12\xff\xff\xff\xff\x0fgarbage",
                          "not a valid ONNX model")


# ----------------------------------------------------------------------------- tensors
def test_huge_declared_dims_with_no_data_are_checked_before_allocating(tmp_path):
    err = _error(tmp_path, _add_w(TensorProto(name="w", data_type=1, dims=[1 << 20, 1 << 20])),
                 r"initializer 'w' elements: 1,099,511,627,776 is over the elements limit")
    assert err.loc.name == "w" and err.code == "limit"


def test_negative_dim(tmp_path):
    tensor = numpy_helper.from_array(np.ones(3, np.float32), "w")
    tensor.dims[0] = -3
    _error(tmp_path, _add_w(tensor), r"initializer 'w': negative dimension in \[-3\]")


def test_raw_data_size_must_match_the_dims(tmp_path):
    tensor = numpy_helper.from_array(np.ones(3, np.float32), "w")
    tensor.raw_data = b"\0" * 5
    _error(tmp_path, _add_w(tensor), r"initializer 'w': raw_data holds 5 bytes, shape \[3\] of float32 needs 12")


def test_typed_data_count_must_match_the_dims(tmp_path):
    _error(tmp_path, _add_w(TensorProto(name="w", data_type=1, dims=[4], float_data=[1, 2])),
           r"initializer 'w': 2 values in float_data for shape \[4\]")


@pytest.mark.parametrize("dtype, name", [(8, "STRING"), (14, "COMPLEX64"), (16, "BFLOAT16"), (17, "type 17"),
                                         (0, "UNDEFINED"), (99, "type 99")])
def test_unknown_element_types(tmp_path, dtype, name):
    tensor = numpy_helper.from_array(np.ones(3, np.float32), "w")
    tensor.data_type = dtype
    _error(tmp_path, _add_w(tensor), rf"initializer 'w': element type {name} is not supported")


def test_float16_in_int32_data(tmp_path):
    bits = np.array([1.5, -2.0], np.float16).view(np.uint16).astype(np.int32)
    model = _model([helper.make_node("Cast", ["w"], ["y"], to=1)],
                   [TensorProto(name="w", data_type=10, dims=[2], int32_data=bits.tolist())])
    graph, _ = _load(tmp_path, model)
    const = next(op for op in graph.ops if op.kind == "const")
    assert const.data.dtype == np.float16 and const.data.tolist() == [1.5, -2.0]


def test_external_data_cannot_leave_the_folder_nor_block(tmp_path):
    tensor = numpy_helper.from_array(np.ones(3, np.float32), "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add(key="location", value="/etc/passwd")
    _error(tmp_path, _add_w(tensor), r"initializer 'w': bad external data location '/etc/passwd'")
    entry.value = "../w.bin"
    _error(tmp_path, _add_w(tensor), r"bad external data location '../w.bin'")
    os.mkfifo(tmp_path / "fifo.bin")
    entry.value = "fifo.bin"
    _error(tmp_path, _add_w(tensor), r"is a FIFO \(named pipe\), expected a file of external data for initializer 'w'")
    (tmp_path / "short.bin").write_bytes(b"\0" * 4)
    entry.value = "short.bin"
    _error(tmp_path, _add_w(tensor), r"initializer 'w' needs bytes 0-12 beyond the end of the file")


# ----------------------------------------------------------------------------- the graph
def test_cycle_does_not_hang_and_names_a_node(tmp_path):
    nodes = [helper.make_node("Relu", ["b"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["b"], name="second"),
             helper.make_node("Relu", ["a"], ["y"], name="out")]
    err = _error(tmp_path, _model(nodes), "the ONNX graph has a cycle")
    assert err.loc.name in ("first", "second")


def test_long_unsorted_chain_is_sorted_in_linear_time(tmp_path):
    n = 20000  # the old cycle check scanned the whole stack per edge: minutes for this
    nodes = [helper.make_node("Relu", [f"t{k - 1}" if k else "x"], [f"t{k}" if k < n - 1 else "y"], name=f"r{k}")
             for k in range(n)]
    graph, _ = _load(tmp_path, _model(list(reversed(nodes))))
    assert len(graph.ops) > n


def test_duplicate_declarations(tmp_path):
    relu = helper.make_node("Relu", ["x"], ["y"])
    err = _error(tmp_path, _model([relu], outputs=("y", "y")), r"malformed ONNX graph")
    assert err.problems == ["graph output 'y' is declared twice"]
    err = _error(tmp_path, _model([relu, helper.make_node("Relu", ["x"], ["y"], name="again")]), "malformed")
    assert err.problems == ["tensor 'y' is produced twice (node 'again')"]


def test_sparse_initializer_names_its_values(tmp_path):
    model = _model([helper.make_node("Add", ["x", "s"], ["y"])])
    sparse = model.graph.sparse_initializer.add()
    sparse.values.CopyFrom(numpy_helper.from_array(np.ones(1, np.float32), "s"))
    sparse.indices.CopyFrom(_ints("i", [0]))
    sparse.dims.extend([3])
    _error(tmp_path, model, "sparse initializer 's' is not supported")


def test_huge_or_deep_input_declarations(tmp_path):
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1 << 40, 4))]
    err = _error(tmp_path, _model([helper.make_node("Relu", ["x"], ["y"])], inputs=inputs),
                 r"input 'x' dimension: 1,099,511,627,776 is over the dim limit")
    assert err.loc.name == "x"
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1,) * 100)]
    _error(tmp_path, _model([helper.make_node("Relu", ["x"], ["y"])], inputs=inputs), r"input 'x' rank: 100")


# ----------------------------------------------------------------------------- attributes and inputs
def test_attribute_of_the_wrong_type(tmp_path):
    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", strides=[1.5, 2.0])
    err = _error(tmp_path, _model([conv], [w]),
                 r"Conv: attribute 'strides' must be a list of integers, got \(1\.5, 2\.0\)")
    assert err.loc.name == "conv"
    leaky = helper.make_node("LeakyRelu", ["x"], ["y"], name="leaky")
    leaky.attribute.add(name="alpha", type=onnx.AttributeProto.GRAPH)
    _error(tmp_path, _model([leaky]), r"LeakyRelu: attribute 'alpha' must be a number, got a AttributeProto")


def test_resize_to_or_from_empty_and_bad_scales(tmp_path):
    sizes = helper.make_node("Resize", ["x", "", "", "s"], ["y"], name="rs")
    _error(tmp_path, _model([sizes], [_ints("s", [1, 3, 0, 4])]), r"Resize: resizing \(1, 3, 4, 4\) to sizes")
    up = helper.make_node("Upsample", ["x", "s"], ["y"], name="up")
    scales = numpy_helper.from_array(np.array([1, 1, np.nan, 2], np.float32), "s")
    _error(tmp_path, _model([up], [scales], opset=9), r"Upsample: scales .* must be positive and finite")
    _error(tmp_path, _model([helper.make_node("Upsample", ["x"], ["y"], name="up")], opset=9),
           "Upsample: the scales input is required")
    axes = helper.make_node("Resize", ["x", "", "s"], ["y"], name="rs", axes=[7])
    scales = numpy_helper.from_array(np.array([2], np.float32), "s")
    _error(tmp_path, _model([axes], [scales], opset=18), "Resize: axis 7 out of range for rank 4")


def test_folding_checks_the_limits_before_allocating(tmp_path, capsys):
    one = numpy_helper.from_array(np.ones(1, np.float32), "one")
    expand = helper.make_node("Expand", ["one", "s"], ["y"], name="expand")
    path = tmp_path / "e.onnx"
    path.write_bytes(_model([expand], [one, _ints("s", [1 << 14, 1 << 14, 8])]).SerializeToString())
    assert main(["ir", str(path), "-O2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 2 and err[0].startswith(f"{path}: 'expand': error: ") and \
        "2,147,483,648 is over the elements limit" in err[0], err  # (the second line names the pass)


def test_limits_are_configurable(tmp_path):
    old = limits.current()
    limits.set_limits(limits.parse_limits(["tensor-bytes=100"]))
    try:  # the input (192 bytes) comes first
        _error(tmp_path, _add_w(numpy_helper.from_array(np.ones(3, np.float32), "w")),
               r"input 'x' needs 192.*, over the tensor-bytes limit of 100")
    finally:
        limits.set_limits(old)
