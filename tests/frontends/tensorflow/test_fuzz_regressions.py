"""Bad frozen GraphDefs found by (or written after) the fuzz campaign: each must be one
TidlcError naming the file and the node, never an exception from numpy or protobuf, a hang or a
huge allocation. docs/fuzzing.md; fuzz/targets/pb.py."""
from __future__ import annotations

import sys

import numpy as np
import pytest

_tidlc_frontend_checks = sys.modules["tidlc_frontend_checks"]  # loaded from a file by tests/frontends/conftest.py
assert_one_line_error = _tidlc_frontend_checks.assert_one_line_error

from tidlc.frontends.tensorflow.graphdef import message_class, tensor_to_array
from tidlc.frontends.tensorflow.importer import import_graphdef

from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError

_DTYPES = {np.dtype(np.float32): 1, np.dtype(np.int32): 3}


def _graph(shape=(1, 4, 4, 3)):
    graph = message_class("GraphDef")()
    x = graph.node.add(name="x", op="Placeholder")
    x.attr["dtype"].type = 1
    for d in shape:
        x.attr["shape"].shape.dim.add(size=d)
    return graph


def _const(graph, name: str, value: np.ndarray):
    n = graph.node.add(name=name, op="Const")
    tensor = n.attr["value"].tensor
    tensor.dtype = _DTYPES[value.dtype]
    for d in value.shape:
        tensor.tensor_shape.dim.add(size=d)
    tensor.tensor_content = value.tobytes()
    return tensor


def _node(graph, name: str, op: str, inputs, **attrs):
    n = graph.node.add(name=name, op=op)
    n.input.extend(inputs)
    for key, value in attrs.items():
        if isinstance(value, str):
            n.attr[key].s = value.encode()
        elif isinstance(value, int):
            n.attr[key].i = value
        else:
            n.attr[key].list.i.extend(value)
    return n


def _error(graph, match: str) -> TidlcError:
    with pytest.raises(TidlcError, match=match) as info:
        import_graphdef(graph, CompileOptions(), "net.pb")
    return info.value


# ----------------------------------------------------------------------------- the file
def test_garbage_is_one_line(tmp_path, capsys):
    assert_one_line_error(capsys, tmp_path / "g.pb", b"\x0a\x05\x0a\x03\xff\xfe\xfdPlaceholder",
                          "not a TensorFlow GraphDef")


# ----------------------------------------------------------------------------- tensors
def test_huge_declared_shape_without_values_is_checked_before_allocating():
    graph = _graph()
    tensor = _const(graph, "w", np.zeros(0, np.float32))
    del tensor.tensor_shape.dim[:]
    tensor.tensor_shape.dim.add(size=1 << 20)
    tensor.tensor_shape.dim.add(size=1 << 20)
    _node(graph, "y", "AddV2", ["x", "w"])
    err = _error(graph, r"constant 'w' elements: 1,099,511,627,776 is over the elements limit")
    assert err.loc.name == "w" and err.loc.file == "net.pb"


def test_tensor_content_size_must_match_the_shape():
    graph = _graph()
    _const(graph, "w", np.zeros(3, np.float32)).tensor_content = b"\0" * 5
    _node(graph, "y", "AddV2", ["x", "w"])
    _error(graph, r"constant 'w': tensor_content holds 5 bytes, shape \(3,\) of float32 needs 12")


def test_splat_constant_is_a_view():
    tensor = message_class("TensorProto")(dtype=1)
    for d in (1 << 12, 1 << 12):
        tensor.tensor_shape.dim.add(size=d)
    tensor.float_val.append(2.5)
    data = tensor_to_array(tensor)
    assert data.shape == (4096, 4096) and data.strides == (0, 0) and float(data[7, 9]) == 2.5


# ----------------------------------------------------------------------------- attributes
def test_attribute_of_the_wrong_kind():
    graph = _graph()
    graph.node[0].attr["dtype"].list.i.extend([1])  # a list where a DataType belongs
    _node(graph, "y", "Relu", ["x"])
    err = _error(graph, r"Placeholder: attribute 'dtype' must be an integer, got \[1\]")
    assert err.loc.name == "x"
    graph = _graph()
    leaky = _node(graph, "y", "LeakyRelu", ["x"])
    leaky.attr["alpha"].s = b"big"
    _error(graph, r"LeakyRelu: attribute 'alpha' must be a number, got 'big'")


@pytest.mark.parametrize("attrs, match", [
    ({"strides": [1, 0, 0, 1], "padding": "SAME"}, r"strides \[1, 0, 0, 1\] must be positive"),
    ({"strides": [1, 1, 1, 1], "padding": "EXPLICIT", "explicit_paddings": [1, 2]},
     r"explicit_paddings \[1, 2\] must have 8 values"),
])
def test_conv_window_attributes(attrs, match):
    graph = _graph()
    _const(graph, "w", np.zeros((1, 1, 3, 2), np.float32))
    _node(graph, "y", "Conv2D", ["x", "w"], **attrs)
    _error(graph, match)


def test_conv_filter_and_input_ranks():
    graph = _graph()
    _const(graph, "w", np.zeros((1, 1, 0, 2), np.float32))
    _node(graph, "y", "Conv2D", ["x", "w"], strides=[1, 1, 1, 1], padding="VALID")
    _error(graph, r"Conv2D: the filter must have 4 positive dims \(kh, kw, in, out\), got \(1, 1, 0, 2\)")
    graph = _graph((1, 4))
    _const(graph, "w", np.zeros((1, 1, 3, 2), np.float32))
    _node(graph, "y", "Conv2D", ["x", "w"], strides=[1, 1, 1, 1], padding="SAME")
    _error(graph, r"Conv2D: expects a 4-D input, got tensor<1x4xf32>")


# ----------------------------------------------------------------------------- constant inputs
@pytest.mark.parametrize("op, value, match", [
    ("Mean", np.array([7], np.int32), "Mean: axis 7 out of range for rank 4"),
    ("ArgMax", np.zeros(0, np.int32), r"ArgMax: dimension \('a'\) must hold one value, got 0"),
    ("Pad", np.zeros(3, np.int32), r"Pad: paddings \[0, 0, 0\] must hold a \(before, after\) pair per dim"),
    ("Reshape", np.array([1.5, np.nan], np.float32), r"Reshape: shape \('a'\) must be an integer constant"),
    ("ResizeBilinear", np.array([0, 5], np.int32), r"ResizeBilinear: cannot resize .* to size \[0, 5\]"),
])
def test_bad_constant_operands(op, value, match):
    graph = _graph()
    _const(graph, "a", value)
    _node(graph, "y", op, ["x", "a"])
    assert _error(graph, match).loc.name == "y"


def test_split_count_and_axis():
    graph = _graph()
    _const(graph, "a", np.array(1, np.int32))
    _node(graph, "y", "Split", ["a", "x"], num_split=0)
    _error(graph, "Split: num_split 0 must be positive")
    graph = _graph()
    _const(graph, "a", np.array(9, np.int32))
    _node(graph, "y", "Split", ["a", "x"], num_split=2)
    _error(graph, "Split: axis 9 out of range for rank 4")


def test_variadic_ops_without_inputs():
    graph = _graph()
    _node(graph, "y", "AddN", [])
    _error(graph, "AddN: needs at least one input")
    graph = _graph()
    _node(graph, "y", "ConcatV2", [])
    _error(graph, "ConcatV2: needs the values and an axis")


def test_long_chain_and_cycle_do_not_recurse_or_hang():
    graph = _graph()
    for k in range(20000):
        _node(graph, f"r{k}", "Relu", [f"r{k - 1}" if k else "x"])
    assert len(import_graphdef(graph, CompileOptions(), "net.pb").ops) > 20000
    graph = _graph()
    _node(graph, "a", "Relu", ["b"])
    _node(graph, "b", "Relu", ["a"])
    _node(graph, "y", "Relu", ["a"])
    assert _error(graph, "the graph has a cycle").loc.name in ("a", "b")
