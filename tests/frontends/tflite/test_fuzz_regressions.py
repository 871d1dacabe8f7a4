"""Bad .tflite files found by the fuzz campaign (python -m fuzz --target tflite): each becomes one
TidlcError naming the file and the byte offset (or the tensor/operator), never a bare exception,
a hang or a huge allocation. The cases are the fuzz seeds (fuzz/seeds/tflite/) with one field
patched at the position tidlc's own reader reports for it."""
from __future__ import annotations

import math
import pathlib
import struct

import pytest
from tidlc.frontends.tflite.flatbuf import FlatBufferError, Table
from tidlc.frontends.tflite.importer import TFLiteImporter, import_model, parse_tflite
from tidlc.frontends.tflite.schema import Tensor, _buffer

from tidlc.cli import main
from tidlc.diagnostics import TidlcError

ROOT = pathlib.Path(__file__).resolve().parents[3]
SEEDS = ROOT / "fuzz" / "seeds" / "tflite"


# ----------------------------------------------------------------------------- helpers
def seed(name: str = "pool_fc_float") -> bytearray:
    return bytearray((SEEDS / f"{name}.tflite").read_bytes())


def root(buf) -> Table:
    return Table.root(bytes(buf))


def subgraph(buf) -> Table:
    return root(buf).tables(2)[0]


def tensor(buf, index: int) -> Table:
    return subgraph(buf).tables(0)[index]


def operator(buf, index: int) -> Table:
    return subgraph(buf).tables(3)[index]


def put(buf: bytearray, pos: int, fmt: str, value) -> bytearray:
    struct.pack_into("<" + fmt, buf, pos, value)
    return buf


def tidlc_ir(tmp_path, capsys, data: bytes) -> str:
    """Run ``tidlc ir`` on ``data``: exit 2 and one error line (returned), no traceback."""
    path = tmp_path / "m.tflite"
    path.write_bytes(bytes(data))
    assert main(["ir", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    first = err.splitlines()[0]
    assert first.startswith(f"{path}"), err
    return err.replace(str(path), "M")


def first_line(err: str) -> str:
    return err.splitlines()[0]


# pool_fc_float: tensors 0 x0 (input), 2 MatMul (5, 12) weights, 4 Pad/paddings (4, 2) i32,
# 9 Conv2D1 (8, 3, 3, 3) filter; operators 0 CONV_2D, 1 MAX_POOL_2D, 2 PAD, 3 MEAN, ...
# cnn_int8: tensor 0 is the int8 graph input


# ----------------------------------------------------------------------------- flatbuffer structure
def test_root_offset_past_the_end(tmp_path, capsys):
    data = b"\xff\x00\x00\x00TFL3" + bytes(8)
    assert first_line(tidlc_ir(tmp_path, capsys, data)) == (
        "M: byte 0: error: corrupt TFLite model: offset at byte 0 points to byte 255, past the end of "
        "the file (16 bytes) (hint: the file is truncated or damaged; convert the model again)")


def test_vtable_before_the_start_is_not_read_from_the_end(tmp_path, capsys):
    # struct reads a negative offset from the end of the buffer: it must be refused, not read
    buf = seed()
    pos = root(buf).pos
    put(buf, pos, "i", pos + 100)
    assert f"M: byte {pos}: error: corrupt TFLite model: the table at byte {pos} has its vtable at byte -100" \
        in tidlc_ir(tmp_path, capsys, buf)


def test_vector_longer_than_the_file_is_refused_before_allocating(tmp_path, capsys):
    buf = seed()
    start = subgraph(buf).vector_offset(0, 0, 4) - 4  # the tensors vector's length word
    put(buf, start, "I", 0x3FFFFFFF)
    assert f"M: byte {start}: error: corrupt TFLite model: vector of 1073741823 x 4 bytes at byte {start} " \
        "runs past the end of the file" in tidlc_ir(tmp_path, capsys, buf)


def test_self_referencing_offset_ends(tmp_path, capsys):
    # the subgraphs vector's element pointing at itself: a table whose vtable is itself (no fields)
    buf = seed()
    pos = root(buf).vector_offset(2, 0, 4)
    put(buf, pos, "I", 0)
    err = tidlc_ir(tmp_path, capsys, buf)
    assert "error: the model's subgraph has no outputs" in err


def test_field_past_the_end(tmp_path, capsys):
    buf = seed()
    t = tensor(buf, 0)
    entry = t._entry(2)  # the vtable entry of the tensor's buffer index
    put(buf, entry, "H", 0xFFF0)
    assert f"M: byte {entry}: error: corrupt TFLite model: field 2 of the table at byte {t.pos} lies outside " \
        "the file" in tidlc_ir(tmp_path, capsys, buf)


def test_huge_string_length(tmp_path, capsys):
    buf = seed()
    name = tensor(buf, 0).field_offset(3)
    start = name + struct.unpack_from("<I", buf, name)[0]
    put(buf, start, "I", 0x7FFFFFF0)
    assert f"M: byte {start}: error: corrupt TFLite model: string of 2147483632 bytes at byte {start} lies " \
        "outside the file" in tidlc_ir(tmp_path, capsys, buf)


def test_external_buffer_outside_the_file():
    # (models over 2 GB keep their buffers after the flatbuffer: offset and size fields)
    class Buffer:
        pos = 40

        def scalar(self, slot, fmt, default=0):
            return {1: 1000, 2: 64}[slot]

        def field_offset(self, slot):
            return 48

    with pytest.raises(FlatBufferError, match=r"buffer 3: 64 bytes at byte 1000 lie outside the file \(500 "):
        _buffer(Buffer(), 3, 500)


# ----------------------------------------------------------------------------- indices
def test_no_subgraph(tmp_path, capsys):
    buf = seed()
    start = root(buf).vector_offset(2, 0, 4) - 4
    put(buf, start, "I", 0)
    assert first_line(tidlc_ir(tmp_path, capsys, buf)).startswith(
        f"M: byte {root(buf).field_offset(2)}: error: corrupt TFLite model: the model has no subgraph")


def test_op_code_index_out_of_range(tmp_path, capsys):
    buf = seed()
    pos = operator(buf, 1).field_offset(0)
    put(buf, pos, "I", 77)
    assert f"M: byte {pos}: error: corrupt TFLite model: operator #1 uses op code 77, but the model has" \
        in tidlc_ir(tmp_path, capsys, buf)


@pytest.mark.parametrize("value", [19, 1 << 30, -2])
def test_operator_tensor_index_out_of_range(tmp_path, capsys, value):
    buf = seed()
    pos = operator(buf, 2).vector_offset(1, 0, 4)
    put(buf, pos, "i", value)
    assert f"M: byte {pos}: error: corrupt TFLite model: operator #2 (PAD) input 0 is tensor {value}, but " \
        "the subgraph has 19 tensors" in tidlc_ir(tmp_path, capsys, buf)


def test_omitted_input_that_is_required(tmp_path, capsys):
    buf = seed()
    put(buf, operator(buf, 2).vector_offset(1, 1, 4), "i", -1)  # PAD without paddings
    assert "'Pad': error: PAD: input 1 is required but missing" in tidlc_ir(tmp_path, capsys, buf)


@pytest.mark.parametrize("value", [-1, 19])
def test_graph_input_index_out_of_range(tmp_path, capsys, value):
    buf = seed()
    pos = subgraph(buf).vector_offset(1, 0, 4)
    put(buf, pos, "i", value)
    assert f"M: byte {pos}: error: corrupt TFLite model: subgraph input 0 is tensor {value}, but the subgraph " \
        "has 19 tensors" in tidlc_ir(tmp_path, capsys, buf)


def test_buffer_index_out_of_range(tmp_path, capsys):
    buf = seed()
    pos = tensor(buf, 9).field_offset(2)
    put(buf, pos, "I", 1000)
    assert f"M: byte {pos}: error: corrupt TFLite model: tensor #9 'Conv2D1' uses buffer 1000, but the model " \
        "has 22 buffers" in tidlc_ir(tmp_path, capsys, buf)


# ----------------------------------------------------------------------------- shapes and buffers
def test_negative_dimension(tmp_path, capsys):
    buf = seed()
    pos = tensor(buf, 9).vector_offset(0, 1, 4)
    put(buf, pos, "i", -5)
    assert "error: corrupt TFLite model: tensor #9 'Conv2D1' has shape (8, -5, 3, 3)" \
        in tidlc_ir(tmp_path, capsys, buf)


def test_huge_dimension_is_a_limit_error_with_the_byte(tmp_path, capsys):
    buf = seed()
    t = tensor(buf, 9)
    put(buf, t.vector_offset(0, 0, 4), "i", 1 << 30)
    assert f"M: byte {t.field_offset(0)}: 'Conv2D1': error: tensor #9 'Conv2D1' dimension: 1,073,741,824 is " \
        "over the dim limit of 16,777,216" in tidlc_ir(tmp_path, capsys, buf)


def test_buffer_size_does_not_match_the_shape(tmp_path, capsys):
    buf = seed()
    put(buf, tensor(buf, 9).vector_offset(0, 0, 4), "i", 4)  # (4, 3, 3, 3) but 8 x 27 floats stored
    assert "'Conv2D1': error: tensor #9: 864 bytes for shape (4, 3, 3, 3) of FLOAT32 (432 bytes)" \
        in tidlc_ir(tmp_path, capsys, buf)


def test_constant_with_unknown_dimension(tmp_path, capsys):
    buf = seed()
    put(buf, tensor(buf, 3).vector_offset(0, 0, 4), "i", -1)  # MEAN's axes
    assert "'Mean/reduction_indices': error: constant tensor #3 has unknown dimensions (-1,)" \
        in tidlc_ir(tmp_path, capsys, buf)


def test_unknown_tensor_type(tmp_path, capsys):
    buf = seed("cnn_int8")
    put(buf, tensor(buf, 0).field_offset(1), "b", 77)
    err = tidlc_ir(tmp_path, capsys, buf)
    assert "(AVERAGE_POOL_2D): tensor 'x0' has element type type 77, which tidlc does not support" in err


def test_unknown_tensor_type_of_an_unused_graph_input():
    model = parse_tflite(bytes(seed()), "m.tflite")
    model.tensors.append(Tensor(19, "handle", (1,), None, 13, 0, None))  # a RESOURCE
    model.inputs.append(19)
    with pytest.raises(TidlcError, match="graph input: tensor 'handle' has element type RESOURCE"):
        import_model(model, None, "m.tflite")


def test_folding_a_huge_pad_of_a_constant_is_a_limit_error(tmp_path, capsys):
    buf = seed()
    put(buf, operator(buf, 2).vector_offset(1, 0, 4), "i", 9)  # PAD the conv filter (a constant)
    start, _ = root(buf).tables(4)[5]._vector(0)  # the paddings' data
    for k in range(8):
        put(buf, start + 4 * k, "i", 100)
    assert "'Pad': error: pad of constants elements: 1,740,008,816 is over the elements limit" \
        in tidlc_ir(tmp_path, capsys, buf)


# ----------------------------------------------------------------------------- options and enums
@pytest.mark.parametrize("op, slot, fmt, value, problem", [
    (0, 1, "i", 0, "stride_w 0 is not positive"),
    (0, 2, "i", -3, "stride_h -3 is not positive"),
    (1, 0, "b", 7, "padding 7 is not SAME or VALID"),
    (1, 3, "i", 0, "filter_width 0 is not positive"),
])
def test_bad_options_are_listed(tmp_path, capsys, op, slot, fmt, value, problem):
    buf = seed()
    options = operator(buf, op).table(4)
    put(buf, options.field_offset(slot), fmt, value)
    err = tidlc_ir(tmp_path, capsys, buf)
    assert "unsupported TFLite operator" in first_line(err)
    assert f"): {problem}" in err


@pytest.mark.parametrize("key, value, problem", [
    ("dilation_h_factor", 0, "dilation_h_factor 0 is not positive"),
    ("fused_activation_function", 9, "fused activation 9 is not supported"),
    ("fused_activation_function", 5, "fused activation SIGN_BIT is not supported"),
])
def test_bad_options_the_seed_leaves_at_their_default(key, value, problem):
    model = parse_tflite(bytes(seed()), "m.tflite")
    model.operators[0].options[key] = value
    with pytest.raises(TidlcError, match="unsupported TFLite operator") as info:
        import_model(model, None, "m.tflite")
    assert info.value.problems == [f"operator #0 'Conv2D2' (CONV_2D): {problem}"]


def test_unknown_builtin_code(tmp_path, capsys):
    buf = seed()
    code = root(buf).tables(1)[operator(buf, 3).scalar(0, "I")]
    put(buf, code.field_offset(3), "i", 999)
    if code.has(0):
        put(buf, code.field_offset(0), "b", 0)
    assert "(BUILTIN_999): not supported" in tidlc_ir(tmp_path, capsys, buf)


def test_zero_input_channels(tmp_path, capsys):
    buf = seed()
    put(buf, tensor(buf, 0).vector_offset(0, 3, 4), "i", 0)  # x0: (1, 8, 8, 0)
    assert "error: CONV_2D: expects a 4-D NHWC input with known channels, got tensor<1x8x8x0xf32, NHWC>" \
        in tidlc_ir(tmp_path, capsys, buf)


def test_filter_of_the_wrong_rank(tmp_path, capsys):
    buf = seed()
    put(buf, operator(buf, 0).vector_offset(1, 1, 4), "i", 2)  # CONV_2D filter := the (5, 12) FC weights
    assert "error: CONV_2D: the filter ('MatMul') has shape (5, 12), expected 4 positive dimensions" \
        in tidlc_ir(tmp_path, capsys, buf)


def test_reduction_of_a_scalar(tmp_path, capsys):
    buf = seed()
    put(buf, operator(buf, 3).vector_offset(1, 0, 4), "i", 9)  # MEAN of the (8, 3, 3, 3) filter
    put(buf, root(buf).tables(4)[4]._vector(0)[0], "i", 7)  # over axis 7
    assert "error: MEAN: axis 7 is out of range for rank 4" in tidlc_ir(tmp_path, capsys, buf)


def test_resize_of_an_empty_input(tmp_path, capsys):
    buf = seed("resize_slice_float")
    put(buf, tensor(buf, 0).vector_offset(0, 1, 4), "i", 0)
    assert "error: RESIZE_BILINEAR: expects a 4-D NHWC input without empty dimensions, got (1, 0, 8, 3)" \
        in tidlc_ir(tmp_path, capsys, buf)


def test_space_to_batch_without_outputs(tmp_path, capsys):
    buf = seed("dilated_stb_float")
    put(buf, operator(buf, 0).vector_offset(2, 0, 4) - 4, "I", 0)  # SPACE_TO_BATCH_ND: no outputs
    err = tidlc_ir(tmp_path, capsys, buf)
    assert "  operator #0 'op0' (SPACE_TO_BATCH_ND): only supported as part of a dilated convolution" in err


def test_space_to_batch_with_odd_paddings(tmp_path, capsys):
    buf = seed("dilated_stb_float")
    put(buf, tensor(buf, 2).vector_offset(0, 1, 4), "i", 1)  # paddings (2, 1): 2 values, not 4
    put(buf, root(buf).tables(4)[2].vector_offset(0, 0, 1) - 4, "I", 8)
    err = tidlc_ir(tmp_path, capsys, buf)
    assert "  operator #0 't3' (SPACE_TO_BATCH_ND): only supported as part of a dilated convolution" in err


# ----------------------------------------------------------------------------- quantization
def quant(buf, index: int) -> Table:
    return tensor(buf, index).table(4)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan, math.inf])
def test_bad_quantization_scale(tmp_path, capsys, scale):
    buf = seed("cnn_int8")
    put(buf, quant(buf, 0).vector_offset(2, 0, 4), "f", scale)
    err = tidlc_ir(tmp_path, capsys, buf)
    assert f"'x0': error: tensor #0 'x0': quantization scale {float(scale)} is not positive and finite" in err
    # the same without converting anything
    importer = TFLiteImporter(parse_tflite(bytes(buf), "m.tflite"), None, "m.tflite")
    with pytest.raises(TidlcError, match="quantization scale .* is not positive and finite"):
        importer.quant(importer.model.tensors[0])


def test_zero_point_out_of_range(tmp_path, capsys):
    buf = seed("cnn_int8")
    put(buf, quant(buf, 0).vector_offset(3, 0, 8), "q", 1000)
    assert "tensor #0 'x0': zero point 1000 is outside the range of INT8" in tidlc_ir(tmp_path, capsys, buf)


def per_channel_tensor(buf) -> int:
    model = parse_tflite(bytes(buf))
    return next(t.index for t in model.tensors if t.quant is not None and t.quant.scale.size > 1)


@pytest.mark.parametrize("axis, problem", [(9, "quantized dimension 9 is not an axis of shape"),
                                            (1, r"8 scales for \d+ channels along axis 1")])
def test_per_channel_axis_out_of_range(axis, problem):
    buf = seed("cnn_int8")
    model = parse_tflite(bytes(buf), "m.tflite")
    t = model.tensors[per_channel_tensor(buf)]
    t.quant.axis = axis
    with pytest.raises(TidlcError, match=f"tensor #{t.index} '.*': {problem}"):
        TFLiteImporter(model, None, "m.tflite").quant(t)


def test_zero_point_count_mismatch(tmp_path, capsys):
    buf = seed("cnn_int8")
    index = per_channel_tensor(buf)
    q = quant(buf, index)
    put(buf, q.vector_offset(3, 0, 8) - 4, "I", 2)  # 2 zero points for 8 scales
    assert f"M: byte {q.field_offset(3)}: error: corrupt TFLite model: tensor '" in tidlc_ir(tmp_path, capsys, buf)
