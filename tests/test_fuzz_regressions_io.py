"""Regressions of the fuzz campaign (issue 11) over the text and data readers: the IR text form
and its weights sidecar, TIDL import configs, calibration data and special files given as any
input. Each bad input must be one TidlcError line with its location (exit 2), never an internal
error, a hang or a huge allocation; the smoke tests run a short campaign per target."""
from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from tidlc import limits
from tidlc.cli import main
from tidlc.diagnostics import TidlcError
from tidlc.ir.parser import parse_graph
from tidlc.ir.weights import MAGIC, read_weights, write_weights

TINY = b'''name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 16 dim: 16 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 5 } }
'''
HEAD = 'tidlc.graph @g {\n  %x = input "x" : tensor<1x4xf32>\n'
TAIL = "  output(%x)\n}\n"


pytestmark = pytest.mark.usefixtures("no_hang")


def error_line(capsys, *argv) -> str:
    """Run tidlc; it must exit 2 with exactly one error on stderr (context lines under it are
    indented), whose line is returned."""
    code = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
    assert code == 2, err
    assert len(err) >= 1 and all(line.startswith("  ") for line in err[1:]), err
    return err[0]


def over(limit: str, needed: int, what: str) -> str:
    """The message and hint of a limit error (its wording is limits.py's)."""
    err = limits.exceeded(limit, needed, what)
    return f"{err.message} (hint: {err.hint})"


def parse_error(text: str) -> TidlcError:
    with pytest.raises(TidlcError) as info:
        parse_graph(text, {}, "m.tir")
    return info.value


# ----------------------------------------------------------------------------- IR text
def test_deep_list_nesting_is_refused_before_lark_recurses():
    err = parse_error(HEAD + "  %0 = softmax(%x) {axis = " + "[" * 20000 + "1" + "]" * 20000
                      + "} : tensor<1x4xf32>\n" + TAIL)
    assert err.code == "limit" and (err.loc.line, err.loc.col) == (3, 27 + 65)  # the first bracket too deep
    assert err.message == limits.exceeded("nesting", 20000, "list nesting").message


def test_deep_dense_nesting_is_refused():
    err = parse_error(HEAD + "  %0 = const dense<" + "[" * 5000 + "1" + "]" * 5000 + "> : tensor<1xf32>\n" + TAIL)
    assert err.code == "limit" and err.loc.line == 3


def test_huge_dims_hit_the_limits_at_the_type():
    err = parse_error(HEAD + "  %0 = const dense<1.0> : tensor<99999x99999x4xf32>\n" + TAIL)
    assert (err.code, err.loc.line, err.loc.col) == ("limit", 3, 27)
    assert "tensor type" in err.message and "elements limit" in err.message
    err = parse_error(HEAD + "  %0 = relu(%x) : tensor<99999999999x4xf32>\n" + TAIL)
    assert "dim limit" in err.message
    err = parse_error(HEAD + "  %0 = const dense<1.0> : tensor<" + "1x" * 1000 + "f32>\n" + TAIL)
    assert "rank limit" in err.message


def test_huge_attribute_sizes_stop_at_the_op_that_makes_them(tmp_path, capsys):
    path = tmp_path / "m.tir"
    path.write_text('tidlc.graph @g {\n  %x = input "x" : tensor<1x2x3xf32>\n'
                    '  %0 = pad(%x) {pads = [0, 0, 0, 0, 0, 1e30]} : tensor<1x2x3xf32> loc("p" "m.onnx":7:1)\n'
                    '  %1 = flatten(%0) : tensor<1x6xf32>\n  output(%1)\n}\n')  # was an OverflowError in flatten
    assert error_line(capsys, "ir", path) == (
        f"m.onnx:7:1: 'p': error: {over('dim', int(1e30) + 3, 'pad result dimension')}")


def test_quantization_shift_zero_point_and_axis_are_bounded():
    for field, message in (("shift=65536", "quantization shift must be 0..63, got 65536"),  # was 2.0**shift
                           ("zp=99999999999", "quantization zero point 99999999999 does not fit 8 bits"),
                           ("axis=99999999999", "quantization axis 99999999999 is out of range")):
        err = parse_error(HEAD + f"  %0 = relu(%x) : tensor<1x4xf32, !q<bits=8, signed=true, scale=1.0, {field}>>\n"
                          + TAIL)
        assert err.message == message and err.loc.line == 3


def test_table_op_on_a_32_bit_input_is_unsupported_not_a_32_gib_table(tmp_path, capsys):
    path = tmp_path / "m.tir"
    path.write_text('tidlc.graph @g {quantized = true} {\n'
                    '  %x = input "x" : tensor<1x5xf32>\n'
                    '  %0 = data_convert(%x) {dtype = "i32"} : tensor<1x5xi32, !q<bits=32, signed=true, scale=100.0>>\n'
                    '  %1 = softmax(%0) {axis = 1} : tensor<1x5xu8, !q<bits=8, signed=false, scale=255.0>> '
                    'loc("prob" "m.prototxt":9:1)\n'
                    '  %2 = data_convert(%1) {dtype = "f32"} : tensor<1x5xf32>\n  output(%2)\n}\n')
    assert error_line(capsys, "run", path, "--random-input", "0") == (
        "m.prototxt:9:1: 'prob': error: softmax: a 32-bit input has no fixed-point lookup table (8 or 16 bits)")


def test_unterminated_long_string_is_a_short_syntax_error():
    err = parse_error(HEAD + '  %0 = relu(%x) {a = "' + "y" * 2_000_000 + "\n" + TAIL)
    assert err.code == "syntax" and err.loc.line == 3
    assert all(len(line) < 400 for line in str(err).splitlines())  # no 2 MB line in the message
    err = parse_error(HEAD + "  %0 = " + "y" * 100_000 + "\n" + TAIL)
    assert len(str(err).splitlines()[0]) < 400


def test_tir_file_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "m.tir"
    path.write_bytes(HEAD.encode() + b"\xff\n" + TAIL.encode())
    assert error_line(capsys, "ir", path) == f"{path}:3:1: error: not a UTF-8 text file (byte 0xff)"


# ----------------------------------------------------------------------------- weights sidecar
def _weights_file(path: Path, index: dict, data: bytes = bytes(64)) -> None:
    head = json.dumps(index).encode()
    head += b" " * ((-(16 + len(head))) % 64)
    path.write_bytes(MAGIC + struct.pack("<Q", len(head)) + head + data)


@pytest.mark.parametrize("entry, message", [
    ([["f32"], [2], 0, 8, 0], "corrupt weights index (entry 'w'): unknown dtype ['f32']"),  # was a TypeError
    (["f32", [2], 0, 12, 0], "corrupt weights index (entry 'w'): 12 bytes declared, f32[2] needs 8"),
    (["f32", [2.5], 0, 8, 0], "corrupt weights index (entry 'w'): shape, offset, size and checksum must be "
                              "non-negative integers"),
    (["f32", [16], 0, 64, 0], None),  # fits: the checksum fails
    (["f32", [32], 64, 128, 0], "weights entry 'w' is truncated or inconsistent"),  # outside the file
    (["f32", [1 << 20, 1 << 20], 0, 4 << 40, 0], "1,099,511,627,776"),
])
def test_bad_weights_index_entries(tmp_path, entry, message):
    path = tmp_path / "m.weights"
    _weights_file(path, {"w": entry})
    with pytest.raises(TidlcError) as info:
        read_weights(str(path))
    assert info.value.code in ("corrupt", "limit")
    assert str(info.value).startswith(f"{path}: byte ")
    assert (message or "damaged (checksum mismatch)") in info.value.message


def test_weights_index_nested_too_deep_is_corrupt_not_recursion(tmp_path):
    path = tmp_path / "m.weights"
    head = b"[" * 200_000
    path.write_bytes(MAGIC + struct.pack("<Q", len(head)) + head)
    with pytest.raises(TidlcError, match="corrupt weights index"):
        read_weights(str(path))


def test_weights_sidecar_that_is_a_fifo(tmp_path, capsys):
    (tmp_path / "m.tir").write_text(HEAD + "  %0 = const @w : tensor<2xf32>\n" + TAIL)
    os.mkfifo(tmp_path / "m.weights")
    assert error_line(capsys, "ir", tmp_path / "m.tir") == (
        f"{tmp_path / 'm.weights'}: error: is a FIFO (named pipe), expected a weights file "
        "(hint: tidlc reads regular files only)")


def test_weights_round_trip_still_works(tmp_path):
    path = tmp_path / "ok.weights"
    write_weights(str(path), {"a": np.arange(6, dtype=np.int8).reshape(2, 3), "s": np.array(1.5, np.float32)})
    back = read_weights(str(path))
    assert back["a"].tolist() == [[0, 1, 2], [3, 4, 5]] and float(back["s"]) == 1.5


# ----------------------------------------------------------------------------- import configs
def _config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "tiny.prototxt").write_bytes(TINY)
    path = tmp_path / "import.txt"
    path.write_text("inputNetFile = tiny.prototxt\nrandParams = 1\n" + text)
    return path


def test_huge_num_frames_with_random_frames_is_refused_up_front(tmp_path, capsys):
    path = _config(tmp_path, "inFileFormat = 4\nnumFrames = 2000000000\n")
    assert error_line(capsys, "compile", path, "--emit", "none") == (
        f"{path}:4: error: {over('frames', 2_000_000_000, 'numFrames (random frames)')}")


def test_calib_frames_flag_is_bounded_too(tmp_path, capsys):
    (tmp_path / "tiny.prototxt").write_bytes(TINY)
    line = error_line(capsys, "-p", "quantize", "compile", tmp_path / "tiny.prototxt", "--random-weights", "0",
                      "--emit", "none", "--calib-frames", "1000000000")
    assert line == f"error: {over('frames', 1_000_000_000, 'synthetic calibration frames')}"
    line = error_line(capsys, "-p", "quantize", "compile", tmp_path / "tiny.prototxt", "--random-weights", "0",
                      "--emit", "none", "--calib-frames", "-3")
    assert line.startswith("error: --calib-frames -3: expected a positive count")


@pytest.mark.parametrize("kind", ["fifo", "dir"])
def test_config_naming_a_special_model(tmp_path, capsys, kind):
    path = _config(tmp_path, "")
    path.write_text("inputNetFile = model.prototxt\n")
    os.mkfifo(tmp_path / "model.prototxt") if kind == "fifo" else os.mkdir(tmp_path / "model.prototxt")
    what = "a FIFO (named pipe)" if kind == "fifo" else "a directory"
    assert error_line(capsys, "compile", path, "--emit", "none") == (
        f"{path}:1: error: inputNetFile: 'model.prototxt' is {what}, expected a file "
        "(hint: tidlc reads regular files only)")


def test_huge_bias_calibration_iterations_are_refused_up_front(tmp_path, capsys):
    path = _config(tmp_path, "calibrationOption = 7\nbiasCalibrationIterations = 2147483647\n")
    assert error_line(capsys, "compile", path, "--emit", "none") == (
        f"{path}:4: error: {over('frames', 2147483647, 'biasCalibrationIterations')}")
    (tmp_path / "tiny.prototxt").write_bytes(TINY)
    line = error_line(capsys, "-p", "quantize", "compile", tmp_path / "tiny.prototxt", "--random-weights", "0",
                      "--emit", "none", "--bias-calibration", "1000000000")
    assert line == f"error: {over('frames', 10 ** 9, '--bias-calibration iterations')}"


def test_config_non_finite_number(tmp_path, capsys):
    path = _config(tmp_path, "inDataNorm = 1\ninMean = nan 0 0\n")
    assert error_line(capsys, "compile", path, "--emit", "none") == (
        f"{path}:4: error: inMean = nan: expected a finite number (hint: inMean = 0.0)")


def test_config_huge_value_is_clipped_in_the_message(tmp_path, capsys):
    path = _config(tmp_path, "numFrames = " + "x" * 100_000 + "\n")
    line = error_line(capsys, "compile", path, "--emit", "none")
    assert line.startswith(f"{path}:3: error: numFrames = xxx") and len(line) < 400


def test_import_config_read_through_fileio(tmp_path):
    from tidlc.import_config import load_import_config
    os.mkfifo(tmp_path / "import.txt")
    with pytest.raises(TidlcError, match=r"is a FIFO \(named pipe\), expected a import config file"):
        load_import_config(str(tmp_path / "import.txt"))


# ----------------------------------------------------------------------------- calibration data
def _calib(capsys, tmp_path: Path, data, *extra) -> str:
    (tmp_path / "tiny.prototxt").write_bytes(TINY)
    return error_line(capsys, "--limit", "frames=64", "-p", "quantize", "compile", tmp_path / "tiny.prototxt",
                      "--calib", data, "--emit", "none", "--random-weights", "0", *extra)


def _png(width: int = 16, height: int = 16) -> bytes:
    import cv2
    data = cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))[1].tobytes()
    ihdr = struct.pack(">II", width, height) + data[24:29]
    return data[:16] + ihdr + zlib.crc32(b"IHDR" + ihdr).to_bytes(4, "big") + data[33:]


def test_calib_object_dtype_npy(tmp_path, capsys):
    path = tmp_path / "frames.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "unsupported .npy dtype object" in _calib(capsys, tmp_path, path) or \
        "not a readable .npy array" in _calib(capsys, tmp_path, path)


def test_calib_truncated_npy(tmp_path, capsys):
    path = tmp_path / "frames.npy"
    np.save(path, np.zeros((2, 1, 3, 16, 16), np.float32))
    path.write_bytes(path.read_bytes()[:-100])
    assert _calib(capsys, tmp_path, path).startswith(f"{path}: error: truncated .npy array: 6044 data bytes for shape [2, 1, 3, 16, 16] float32 (6144 needed)")


def test_calib_misshaped_npy(tmp_path, capsys):
    path = tmp_path / "frames.npy"
    np.save(path, np.zeros((1, 3, 8, 8), np.float32))  # was a numpy reshape error
    assert _calib(capsys, tmp_path, path) == (
        f"{path}: error: array of shape [1, 3, 8, 8] does not hold frames of [1, 3, 16, 16] "
        "(hint: N x the input shape, or one frame)")


def test_calib_npz_pickled_member_and_missing_input(tmp_path, capsys):
    path = tmp_path / "frames.npz"
    np.savez(path, data=np.array([None, 1], dtype=object))
    assert "not a readable .npy array" in _calib(capsys, tmp_path, path) or \
        "unsupported .npy dtype" in _calib(capsys, tmp_path, path)
    np.savez(path, other=np.zeros(3))
    assert _calib(capsys, tmp_path, path) == f"{path}: error: .npz has no array for input(s) data (hint: it holds other)"


def test_calib_npz_bomb_member_is_not_inflated(tmp_path, capsys):
    path = tmp_path / "frames.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (1 << 16, 1, 3, 1 << 10, 1 << 10)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.npy", header.getvalue() + bytes(8 << 20))  # 8 MiB of zeros: 8 KiB deflated
    assert "elements limit" in _calib(capsys, tmp_path, path)


def test_calib_npz_that_is_not_a_zip(tmp_path, capsys):
    path = tmp_path / "frames.npz"
    path.write_bytes(b"PK\x03\x04 not really")
    assert _calib(capsys, tmp_path, path).startswith(f"{path}: error: not a readable .npz file")


def test_calib_image_cv2_cannot_decode(tmp_path, capsys):
    path = tmp_path / "a.png"
    path.write_bytes(_png()[:40])
    assert _calib(capsys, tmp_path, path) == (
        f"{path}: error: cannot read image (hint: a PNG/JPEG/BMP file, or pre-processed .npy)")


def test_calib_huge_image_header_is_refused_before_decoding(tmp_path, capsys):
    path = tmp_path / "a.png"
    path.write_bytes(_png(100_000, 100_000))
    assert _calib(capsys, tmp_path, path) == (
        f"{path}: error: {over('image_pixels', 10 ** 10, 'image of 100000x100000')}")


def test_calib_png_chunk_longer_than_the_file(tmp_path, capsys):
    path = tmp_path / "a.png"
    data = _png()
    path.write_bytes(data[:33] + struct.pack(">I", 0x8F43C1F5) + data[37:])  # OpenCV took 2.4 GiB on it
    assert _calib(capsys, tmp_path, path) == (
        f"{path}: byte 33: error: corrupt PNG: a chunk runs past the end of the file "
        "(hint: a PNG/JPEG/BMP file, or pre-processed .npy)")


def test_calib_huge_resize_is_refused(tmp_path, capsys):
    path = tmp_path / "a.png"
    path.write_bytes(_png())
    assert _calib(capsys, tmp_path, path, "--resize", "100000,100000") == (
        f"error: {over('image_pixels', 10 ** 10, '--resize 100000,100000')}")


def test_calib_nan_frames(tmp_path, capsys):
    path = tmp_path / "frames.npy"
    np.save(path, np.full((2, 1, 3, 16, 16), np.nan, np.float32))
    assert _calib(capsys, tmp_path, path) == f"{path}: error: calibration frame 1 ('data') holds NaN or infinite values"


@pytest.mark.parametrize("entry, make, message", [
    ("pipe.png", os.mkfifo, "'pipe.png' is a FIFO (named pipe), expected a calibration file"),
    ("sub", os.mkdir, "'sub' is a directory, expected a calibration file"),
    ("gone.png", None, "no such file 'gone.png'"),
    ("list.txt", None, "the list file names itself"),
])
def test_calib_list_entries(tmp_path, capsys, entry, make, message):
    if make:
        make(tmp_path / entry)
    (tmp_path / "list.txt").write_text(f"# frames\n{entry} 3\n")
    assert _calib(capsys, tmp_path, tmp_path / "list.txt").startswith(f"{tmp_path / 'list.txt'}:2: error: {message}")


def test_calib_list_with_more_frames_than_the_limit(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(_png())
    (tmp_path / "list.txt").write_text("a.png\n" * 100)
    limits.set_limits(limits.Limits(frames=64))  # (what --limit frames=64 sets, for the message)
    expected = f"{tmp_path / 'list.txt'}: error: {over('frames', 65, 'the calibration data' + chr(39) + 's frames')}"
    assert _calib(capsys, tmp_path, tmp_path / "list.txt") == expected


# ----------------------------------------------------------------------------- special files
@pytest.mark.parametrize("argv", [
    ("ir", "{p}"), ("compile", "{p}", "--emit", "none"), ("run", "{p}"), ("perf", "{p}"),
    ("-p", "quantize", "compile", "{d}/tiny.prototxt", "--random-weights", "0", "--emit", "none", "--calib", "{p}"),
])
def test_fifo_as_any_input_is_refused_at_once(tmp_path, capsys, argv):
    (tmp_path / "tiny.prototxt").write_bytes(TINY)
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    line = error_line(capsys, *(a.format(p=fifo, d=tmp_path) for a in argv))
    assert line.startswith(f"{fifo}: error: is a FIFO (named pipe), expected a ")


def test_label_list_that_is_a_fifo(tmp_path, capsys):
    (tmp_path / "tiny.prototxt").write_bytes(TINY)
    assert main(["compile", str(tmp_path / "tiny.prototxt"), "--random-weights", "0", "-o", str(tmp_path / "out")]) == 0
    os.mkfifo(tmp_path / "labels.txt")  # was read with open(): blocked for ever
    capsys.readouterr()
    assert error_line(capsys, "run", tmp_path / "out", "--random-input", "0", "--post", "classify",
                      "--labels", tmp_path / "labels.txt") == (
        f"{tmp_path / 'labels.txt'}: error: is a FIFO (named pipe), expected a label list "
        "(hint: tidlc reads regular files only)")


def test_nul_byte_in_a_listed_name(tmp_path, capsys):
    (tmp_path / "list.txt").write_bytes(b"a\x00b.png\n")
    line = _calib(capsys, tmp_path, tmp_path / "list.txt")
    assert line.startswith(f"{tmp_path / 'list.txt'}:1: error: ")
