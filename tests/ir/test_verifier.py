"""The verifier: each broken graph gives the exact diagnostic (all problems at once)."""
import numpy as np
import pytest

from tidlc.diagnostics import Loc, TidlcError
from tidlc.ir import Builder, Op, QuantInfo, TensorType, Value, verify


def small_graph():
    """input -> conv1 -> relu1 -> output, plus the values for tests to break."""
    b = Builder()
    x = b.input("x", TensorType((1, 2, 4, 4), layout="NCHW"))
    w = b.const(np.ones((3, 2, 1, 1), np.float32), "w")
    y = b.op("conv2d", [x, w], name="conv1")
    z = b.op("relu", [y], name="relu1")
    b.output(z, "out")
    return b.graph


def problems_of(graph):
    with pytest.raises(TidlcError) as info:
        verify(graph)
    err = info.value
    assert err.message == f"IR verification failed ({len(err.problems)} problem(s))"
    return err.problems


def test_valid_graph_passes():
    verify(small_graph())


def test_error_text_lists_every_problem():
    graph = small_graph()
    graph.outputs, graph.output_names = [], []
    with pytest.raises(TidlcError) as info:
        verify(graph)
    assert str(info.value) == "main: error: IR verification failed (1 problem(s))\n  graph has no outputs"


def test_dangling_operand():
    graph = small_graph()
    other = Builder().input("elsewhere", TensorType((1, 3, 4, 4), layout="NCHW"))
    graph.ops[3].operands[0] = other
    assert problems_of(graph) == ["'relu1': operand 0 is dangling: its producer is not in the graph"]


def test_ops_out_of_order():
    graph = small_graph()
    graph.ops[2], graph.ops[3] = graph.ops[3], graph.ops[2]
    assert problems_of(graph) == ["'relu1': operand 0 is used before it is defined (ops out of order)"]
    graph.toposort()
    verify(graph)


def test_wrong_result_shape_and_element_type():
    graph = small_graph()
    conv = graph.ops[2]
    conv.results[0].type = TensorType((1, 3, 5, 4), layout="NCHW")
    assert problems_of(graph) == [
        "'conv1': result 0 has type tensor<1x3x5x4xf32, NCHW> but infers tensor<1x3x4x4xf32, NCHW>",
        "'relu1': result 0 has type tensor<1x3x4x4xf32, NCHW> but infers tensor<1x3x5x4xf32, NCHW>"]
    conv.results[0].type = TensorType((1, 3, 4, 4), "f16", "NCHW")
    assert problems_of(graph) == ["'conv1': result 0 has element type f16, infers f32",
                                  "'relu1': result 0 has element type f32, infers f16"]


def test_unknown_dims_are_compatible_with_known_ones():
    graph = small_graph()
    graph.ops[2].results[0].type = TensorType((1, 3, None, None), layout="NCHW")
    verify(graph)  # less precise is not wrong
    graph.ops[2].results[0].type = TensorType((1, 3, None), layout=None)
    assert problems_of(graph)[0] == "'conv1': result 0 has type tensor<1x3x?xf32> but infers tensor<1x3x4x4xf32, NCHW>"


def test_wrong_layout():
    graph = small_graph()
    graph.ops[3].results[0].type = TensorType((1, 3, 4, 4), layout="NHWC")
    assert problems_of(graph) == ["'relu1': result 0 has layout NHWC, infers NCHW"]
    graph = small_graph()
    graph.ops[1].results[0].type = TensorType((3, 2, 1, 1), layout=None)
    graph.ops[0].results[0].type = TensorType((1, 2, 16), layout="NCHW")
    assert problems_of(graph)[0] == \
        "'x': result 0: layout NCHW on a rank-3 tensor (layouts describe 4-D tensors)"


def test_missing_and_undefined_outputs():
    graph = small_graph()
    graph.outputs, graph.output_names = [], []
    assert problems_of(graph) == ["graph has no outputs"]
    graph = small_graph()
    graph.outputs.append(Builder().input("y", TensorType((1,))))
    assert problems_of(graph) == ["output 1: value is not defined in the graph",
                                  "2 outputs but 1 output names"]


def test_duplicate_names():
    graph = small_graph()
    Builder(graph).input("x", TensorType((1,)))
    graph.outputs.append(graph.outputs[0])
    graph.output_names.append("out")
    assert problems_of(graph) == ["input name 'x' is used more than once", "output name 'out' is used more than once"]


def test_bad_attributes_unknown_op_and_arity():
    graph = small_graph()
    graph.ops[2].attrs["strides"] = (1, 1, 1)
    graph.ops[3].attrs["alpha"] = 0.1
    assert problems_of(graph) == ["'conv1': conv2d: attribute 'strides': expected 2 values, got 3",
                                  "'relu1': relu: unknown attribute(s) alpha; known: none"]
    graph = small_graph()
    graph.ops[3].kind = "swish"
    graph.ops[2].operands.append(graph.ops[2].operands[1])
    graph.ops[2].operands.append(graph.ops[2].operands[1])
    assert problems_of(graph) == ["'conv1': conv2d has 4 operands, expects 2 to 3", "'relu1': unknown op 'swish'"]


def test_result_bookkeeping():
    graph = small_graph()
    relu = graph.ops[3]
    relu.results.append(Value(relu.results[0].type, relu, 1))
    assert problems_of(graph) == ["'relu1': relu has 2 results, expects 1"]
    graph = small_graph()
    graph.ops[3].results[0].producer = graph.ops[2]
    assert problems_of(graph) == ["'relu1': result 0 does not point back to its op"]
    graph = small_graph()
    graph.ops.append(graph.ops[3])
    assert problems_of(graph)[0] == "'relu1': op appears twice in the graph"


def test_const_without_data_and_type_inference_errors():
    graph = small_graph()
    graph.ops[1].data = None
    problems = problems_of(graph)
    assert problems[0] == "'w': const without data"
    graph = small_graph()
    graph.ops[1].data = np.ones((3, 5, 1, 1), np.float32)  # data no longer matches its declared type
    assert problems_of(graph) == ["'w': result 0 has type tensor<3x2x1x1xf32> but infers tensor<3x5x1x1xf32>"]
    graph = small_graph()
    graph.ops[1].results[0].type = TensorType((3, 5, 1, 1))
    graph.ops[1].data = np.ones((3, 5, 1, 1), np.float32)
    assert problems_of(graph) == ["'conv1': conv2d input has 2 channels, weight expects 5 x 1 groups"]


def test_quantization_annotations():
    graph = small_graph()
    per_channel = QuantInfo(8, True, [0.5, 0.25], axis=1)
    graph.ops[3].results[0].type = TensorType((1, 3, 4, 4), "i8", "NCHW", per_channel)
    graph.ops[2].results[0].type = TensorType((1, 3, 4, 4), "f32", "NCHW", QuantInfo(8, False, 1.0, zero_point=-1))
    assert problems_of(graph) == ["'conv1': result 0: zero point -1 outside [0, 255]",
                                  "'relu1': result 0: 2 scales for 3 channels on axis 1"]
    graph.ops[2].results[0].type = TensorType((1, 3, 4, 4), layout="NCHW")
    graph.ops[3].results[0].type = TensorType((1, 3, 4, 4), "i8", "NCHW", QuantInfo(8, True, [1.0, 2.0]))
    assert problems_of(graph) == ["'relu1': result 0: 2 scales but no quantization axis"]
    graph.ops[3].results[0].type = TensorType((1, 3, 4, 4), "i8", "NCHW", QuantInfo(8, True, [1.0, 2.0], axis=4))
    assert problems_of(graph) == ["'relu1': result 0: quantization axis 4 out of range for rank 4"]
    graph.ops[3].results[0].type = TensorType((1, 3, 4, 4), "i8", "NCHW", QuantInfo(8, True, [1, 2, 3], axis=-3))
    verify(graph)  # a quantized type may change the element type


def test_problems_carry_source_locations():
    graph = small_graph()
    graph.ops[3].loc = Loc("", "net.prototxt", 40, 3)
    graph.ops[3].attrs["alpha"] = 0.1
    assert problems_of(graph) == ["net.prototxt:40:3: 'relu1': relu: unknown attribute(s) alpha; known: none"]


def test_unnamed_ops_are_named_by_kind():
    b = Builder()
    x = b.input("x", TensorType((2,)))
    b.output(b.op("relu", [x]))
    op = b.graph.ops[1]
    op.operands = []
    assert problems_of(b.graph) == ["'relu': relu has 0 operands, expects 1"]
    assert isinstance(op, Op)


def test_quantized_integer_tensor_must_be_stored_in_its_bits():
    """bits=32 on an i8 tensor made the fast kernels write past their buffers (found by fuzzing a .tir)."""
    from tidlc.ir import QuantInfo, TensorType
    from tidlc.ir.verifier import type_problems
    assert type_problems(TensorType((1, 4), "i8", quant=QuantInfo(8, True, 0.5))) == []
    assert type_problems(TensorType((1, 4), "i8", quant=QuantInfo(32, True, 0.5))) == [
        "32-bit signed values stored in i8 (expected i32)"]
    assert type_problems(TensorType((1, 4), "f32", quant=QuantInfo(8, True, 0.5))) == []  # an annotation
