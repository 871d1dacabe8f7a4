"""Regressions of the fuzz campaign (issue 11) over the Caffe readers: the prototxt parser, the
net lowering with its shape inference and weight blobs, and the caffemodel wire-format reader.
Each bad input must be one TidlcError with its location (exit 2), never an internal error, a
hang or a huge allocation; the smoke tests run a short campaign per target."""
from __future__ import annotations

import os
import struct
import sys
import time
from pathlib import Path

import attrs
import pytest
from tidlc.frontends.caffe.caffemodel import read_caffemodel
from tidlc.frontends.caffe.lower import load_caffe
from tidlc.frontends.caffe.prototxt import load_prototxt, parse_prototxt

from tidlc import limits
from tidlc.cli import main
from tidlc.diagnostics import TidlcError

_tidlc_test_caffemodel_writer = sys.modules["tidlc_test_caffemodel_writer"]  # loaded from a file by tests/frontends/caffe/conftest.py
bytes_field = _tidlc_test_caffemodel_writer.bytes_field
varint = _tidlc_test_caffemodel_writer.varint

ROOT = Path(__file__).resolve().parents[3]
SEEDS = ROOT / "fuzz" / "seeds" / "prototxt"
ZOO = (SEEDS / "zoo_layers.prototxt").read_text()
SSD = (SEEDS / "zoo_ssd.prototxt").read_text()
TINY = '''name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 16 dim: 16 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
        inner_product_param { num_output: 5 } }
'''
# a 4-D input and its flattened 2-D copy, for layers given a bottom of the wrong rank
FLAT = '''input: "data"
input_shape { dim: 1 dim: 4 dim: 8 dim: 8 }
layer { name: "f" type: "Flatten" bottom: "data" top: "f" }
'''


pytestmark = pytest.mark.usefixtures("no_hang")


def error_line(capsys, *argv) -> str:
    """Run tidlc; it must exit 2 with one error line (context lines under it are indented)."""
    code = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
    assert code == 2, err
    assert len(err) >= 1 and all(line.startswith("  ") for line in err[1:]), err
    return err[0]


def over(limit: str, needed: int, what: str, allowed: int | None = None) -> str:
    """The message and hint of a limit error (its wording is limits.py's), with the limit at
    ``allowed`` (what --limit set for the command) or at its current value."""
    before = limits.current()
    if allowed is not None:
        limits.set_limits(attrs.evolve(before, **{limit: allowed}))
    try:
        err = limits.exceeded(limit, needed, what)
    finally:
        limits.set_limits(before)
    return f"{err.message} (hint: {err.hint})"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return path


def net_error(capsys, tmp_path: Path, text: str, *options: str) -> str:
    """The error line of ``tidlc ir`` on ``text``, with the file shown as net.prototxt."""
    path = write(tmp_path, text)
    return error_line(capsys, "ir", path, *options).replace(str(path), "net.prototxt")


def lowering_problems(tmp_path: Path, text: str) -> list[str]:
    """The problem lines of the 'cannot be imported' error (the checks before conversion)."""
    path = write(tmp_path, text)
    with pytest.raises(TidlcError, match=r"layer\(s\) of the net cannot be imported") as info:
        load_caffe(str(path))
    return [line.replace(str(path), "net.prototxt") for line in info.value.problems]


def syntax_error(text: str) -> TidlcError:
    with pytest.raises(TidlcError) as info:
        parse_prototxt(text, "n.prototxt")
    return info.value


# ----------------------------------------------------------------------------- the parser
def test_deep_nesting_is_refused_before_the_parser_recurses():
    err = syntax_error("layer {\n" + "a { " * 20000 + "}" * 20000)
    assert err.code == "limit"
    # the 64th 'a {' on line 2 is depth 65: its brace is at column 63 * 4 + 3
    assert str(err) == f"n.prototxt:2:255: error: {over('nesting', 65, 'message nesting depth')}"


def test_braces_in_strings_and_comments_do_not_count_as_nesting():
    text = 'a { b: "{{{{{{{{" }  # {{{{{{{{{\n' * 40 + "c < d: '<<<<<<<<' >\n" * 40
    assert len(parse_prototxt(text)) == 80


def test_nesting_within_a_raised_limit_parses_without_recursion():
    limits.set_limits(limits.Limits(nesting=5000))
    msg = parse_prototxt("a { " * 4000 + "}" * 4000)
    depth = 0
    while msg.fields:
        msg, depth = msg.fields[0].value, depth + 1
    assert depth == 4000


def test_huge_string_is_refused_before_parsing():
    err = syntax_error('name: "ok"\nlayer { name: "' + "y" * (1 << 21) + '" }')
    assert str(err) == f"n.prototxt:2:15: error: {over('string', 1 << 21, 'string')}"


def test_adjacent_string_literals_are_limited_as_a_whole():
    half = '"' + "y" * 600_000 + '" '
    err = syntax_error("name: " + half * 2)
    assert str(err).startswith(f"n.prototxt:1:7: error: {over('string', 1_200_000, 'string')}")


def test_long_unterminated_string_is_fast_and_shown_in_a_window():
    limits.set_limits(limits.Limits(string=8 << 20))  # past the pre-scan: the lexer meets it
    start = time.perf_counter()
    err = syntax_error('name: "net"\nbottom: "' + "y" * 4_000_000 + "\n")
    assert time.perf_counter() - start < 0.5  # the string rule must not backtrack through 4 MB
    assert err.message.startswith("unterminated string") and (err.loc.line, err.loc.col) == (2, 9)
    assert all(len(line) < 200 for line in err.problems)


def test_long_lines_are_shown_around_the_error_column():
    err = syntax_error(" " * 5000 + "a: @b")
    src, caret = err.problems
    assert len(src) < 200 and src.startswith("...") and src.endswith("a: @b")
    assert caret.index("^") == src.index("@")


def test_integers_beyond_64_bits_are_syntax_errors():
    err = syntax_error("dim: " + "7" * 5000)  # int() refuses to convert this many digits
    assert err.code == "syntax" and str(err).startswith(
        "n.prototxt:1:6: error: integer 77777777777777777777... is out of the 64-bit range")
    assert "out of the 64-bit range" in syntax_error("dim: 0x1" + "0" * 16).message
    assert parse_prototxt("a: 18446744073709551615 b: -0x10 c: 017").get_all("c") == [15]


def test_prototxt_is_read_through_fileio(tmp_path):
    fifo = tmp_path / "net.prototxt"
    os.mkfifo(fifo)
    with pytest.raises(TidlcError) as info:
        load_prototxt(fifo)  # would block in open() without O_NONBLOCK
    assert str(info.value) == (f"{fifo}: error: is a FIFO (named pipe), expected a prototxt "
                               "(hint: tidlc reads regular files only)")


def test_too_many_layers(capsys, tmp_path):
    relu = 'layer { type: "ReLU" bottom: "data" top: "data" }\n'
    path = write(tmp_path, 'input: "data"\n' + relu * 5)
    assert error_line(capsys, "--limit", "ops=4", "ir", path) == (
        f"{path}:1:1: error: " + over("ops", 6, "layers and inputs", allowed=4))


# ----------------------------------------------------------------------------- the lowering
def _error_at(line: int, layer: str, limit: str, needed: int, what: str) -> str:
    return f"net.prototxt:{line}:1: '{layer}': error: " + over(limit, needed, what)


CONV_W = "Convolution layer: blob 0 (weight)"


@pytest.mark.parametrize("old, new, expected", [
    # declared sizes are checked before a blob is made (random weights would allocate them)
    ("num_output: 8", "num_output: 9223372036854775807",
     _error_at(4, "conv", "dim", 9223372036854775807, f"{CONV_W} dimension")),
    ("num_output: 5", "num_output: 4294967297",
     _error_at(8, "fc", "dim", 4294967297, "InnerProduct layer: blob 0 (weight) dimension")),
    ("kernel_size: 3", "kernel_size: 65536",
     _error_at(4, "conv", "elements", 8 * 3 * 65536 * 65536, f"{CONV_W} elements")),
    # so are the activations the parameters imply, and the inputs
    ("pad: 1", "pad: 2147483647",
     _error_at(4, "conv", "dim", 4294967308, "Convolution layer: top 'conv' dimension")),
    ("dim: 16 dim: 16", "dim: 16777216 dim: 16777216",
     _error_at(2, "data", "elements", 3 << 48, "input 'data' elements")),
    ("dim: 16 dim: 16", "dim: 18446744073709551615 dim: 16",
     _error_at(2, "data", "dim", 18446744073709551615, "input 'data' dimension")),
])
def test_declared_sizes_are_checked_before_allocating(capsys, tmp_path, old, new, expected):
    text = TINY.replace(old, new)
    assert net_error(capsys, tmp_path, text, "--random-weights", "0") == expected
    assert net_error(capsys, tmp_path, text) == expected  # structure-only: the same check


def test_random_weights_stay_within_the_total_bytes_limit(capsys, tmp_path):
    path = write(tmp_path, TINY.replace("num_output: 5", "num_output: 16384"))  # 32 MiB of fc
    limit = error_line(capsys, "--limit", "total-bytes=16M", "ir", path, "--random-weights", "0")
    assert limit == f"{path}:8:1: 'fc': error: " + over(
        "total_bytes", 4 * (8 * 3 * 3 * 3 + 8 + 16384 * 512), "the random weights of the net", allowed=16 << 20)


def test_non_positive_num_output(capsys, tmp_path):
    text = TINY.replace("num_output: 5", "num_output: -5")
    assert net_error(capsys, tmp_path, text, "--random-weights", "0") == (
        "net.prototxt:9:31: 'fc': error: InnerProduct layer: num_output must be positive, got -5")
    assert lowering_problems(tmp_path, TINY.replace("num_output: 8", "num_output: 0")) == [
        "net.prototxt:4:1: 'conv': Convolution: num_output must be positive, got 0"]


def test_negative_input_dimension(capsys, tmp_path):
    text = TINY.replace('input: "data"\ninput_shape { dim: 1 dim: 3 dim: 16 dim: 16 }',
                        'layer { name: "data" type: "DummyData" top: "data"\n'
                        '        dummy_data_param { shape { dim: 1 dim: 3 dim: -16 dim: 16 } } }')
    assert net_error(capsys, tmp_path, text) == (
        "net.prototxt:2:1: 'data': error: input 'data' has a negative dimension: [1, 3, -16, 16] "
        "(hint: give every dimension as a positive size)")


@pytest.mark.parametrize("text, old, new, expected", [
    (ZOO, "height: 8 width: 8", "shrink_factor: 0",  # was a ZeroDivisionError
     "net.prototxt:16:1: 'interp': Interp: shrink_factor must be 1 or more, got 0"),
    (ZOO, "height: 8 width: 8", "zoom_factor: -1",
     "net.prototxt:16:1: 'interp': Interp: zoom_factor must be 1 or more, got -1"),
    (SSD, "aspect_ratio: 2", "aspect_ratio: 0",  # was a ZeroDivisionError
     "net.prototxt:16:1: 'prior': PriorBox: aspect_ratio must be positive, got 0.0"),
])
def test_zero_factors_are_refused_before_conversion(tmp_path, text, old, new, expected):
    assert old in text
    assert lowering_problems(tmp_path, text.replace(old, new)) == [expected]


UP = 'upsample_param { scale: 2 } }\nlayer { name: "interp"'


@pytest.mark.parametrize("old, new, expected", [
    (UP, UP.replace("scale: 2", "scale: 0"),
     "net.prototxt:15:62: 'up': error: Upsample layer: scale must be 1 or more, got 0x0"),
    (UP, UP.replace("scale: 2", "scale: 16777216"),
     _error_at(15, "up", "dim", 67108864, "Upsample layer: top 'up' dimension")),
    (UP, UP.replace("scale: 2", "upsample_h: -1 upsample_w: 4"),  # was a dynamic '?' dim
     "net.prototxt:15:62: 'up': error: Upsample layer: output size -1x4 is empty"),
    ("upsample_param { scale: 2 } }\nlayer { name: \"up\"",
     "upsample_param { upsample_h: 1 upsample_w: 1 } }\nlayer { name: \"up\"",
     "net.prototxt:14:85: 'unpool': error: Upsample layer: output size 1x1 is smaller than the "
     "pooled input 4x4"),
    ("stride: 2 bias_term: false", "stride: 2147483647 bias_term: false",
     _error_at(17, "deconv", "dim", 6442450943, "Deconvolution layer: top 'deconv' dimension")),
    ("crop_param { axis: 2 offset: 0 }", "crop_param { axis: 2 offset: -3 }",
     "net.prototxt:19:1: 'crop': error: Crop layer: offset -3 is negative"),
])
def test_absurd_layer_parameters(capsys, tmp_path, old, new, expected):
    assert old in ZOO
    assert net_error(capsys, tmp_path, ZOO.replace(old, new), "--random-weights", "0") == expected


@pytest.mark.parametrize("layer, expected", [  # each was an IndexError or a ValueError
    ('layer { name: "u" type: "Upsample" bottom: "f" top: "u" }',
     "'u': error: Upsample layer: expects a 4-D (N, C, H, W) bottom, got [1, 256]"),
    ('layer { name: "u" type: "Interp" bottom: "f" top: "u" interp_param { height: 3 width: 3 } }',
     "'u': error: Interp layer: expects a 4-D (N, C, H, W) bottom, got [1, 256]"),
    ('layer { name: "u" type: "Interp" bottom: "data" bottom: "f" top: "u" }',
     "'u': error: Interp layer: expects a 4-D (N, C, H, W) bottom 1, got [1, 256]"),
    ('layer { name: "p" type: "PriorBox" bottom: "f" bottom: "data" top: "p" '
     'prior_box_param { min_size: 2 } }',
     "'p': error: PriorBox layer: expects a 4-D (N, C, H, W) bottom, got [1, 256]"),
    ('layer { name: "c" type: "Crop" bottom: "data" bottom: "f" top: "c" }',
     "'c': error: Crop layer: bottom 1 [1, 256] does not have the 4 axes of bottom 0 [1, 4, 8, 8]"),
    ('layer { name: "s" type: "Slice" bottom: "data" }', "'s': error: Slice layer: has no top"),
    ('layer { name: "d" type: "DummyData" dummy_data_param { shape { dim: 1 } } }',
     "'d': error: DummyData layer: has no top: the data it reads goes nowhere"),
])
def test_bottoms_and_tops_of_the_wrong_kind(capsys, tmp_path, layer, expected):
    assert net_error(capsys, tmp_path, FLAT + layer + "\n") == "net.prototxt:4:1: " + expected


def test_input_declared_twice(capsys, tmp_path):
    text = 'input: "data"\ninput: "data"\ninput_shape { dim: 1 }\ninput_shape { dim: 2 }\n'
    assert net_error(capsys, tmp_path, text) == (
        "net.prototxt:2:1: 'data': error: input 'data' is declared twice "
        "(hint: give every input its own name)")


# ----------------------------------------------------------------------------- the caffemodel
def _layer(blob_body: bytes, *dims: int) -> bytes:
    """A layer 'a' with one blob of shape ``dims`` and the given value fields."""
    shape = bytes_field(7, bytes_field(1, b"".join(varint(d) for d in dims)))
    return bytes_field(100, bytes_field(1, b"a") + bytes_field(7, shape + blob_body))


def _model(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "m.caffemodel"
    path.write_bytes(data)
    return path


def _read_error(tmp_path: Path, data: bytes) -> str:
    path = _model(tmp_path, data)
    with pytest.raises(TidlcError) as info:
        read_caffemodel(path)
    return str(info.value).replace(str(path), "m.caffemodel")


def _unpacked(count: int, every: int, value=None) -> bytes:
    """``count`` unpacked floats; every ``every``-th with the 2-byte form of the tag (0x2d, or
    0xad 0x00: field 5, fixed32, as a non-minimal varint)."""
    return b"".join((b"\xad\x00" if i % every == 0 else b"\x2d")
                    + struct.pack("<f", i if value is None else value) for i in range(count))


def test_empty_layers_are_counted_before_they_pile_up(tmp_path):
    limits.set_limits(limits.Limits(ops=1000))
    text = _read_error(tmp_path, b"\xa2\x06\x00" * 5000)  # 3 bytes a layer
    assert text == "m.caffemodel: byte 3000: error: " + over("ops", 1001, "caffemodel layers")


def test_empty_blobs_are_counted_too(tmp_path):
    limits.set_limits(limits.Limits(ops=1000))
    text = _read_error(tmp_path, bytes_field(100, bytes_field(1, b"a") + b"\x3a\x00" * 5000))
    assert text == "m.caffemodel: byte 2007: error: " + over("ops", 1001, "caffemodel blobs")


def test_unpacked_values_with_mixed_tags(tmp_path):
    weights = read_caffemodel(_model(tmp_path, _layer(_unpacked(3000, 3), 3000)))
    assert weights["a"][0].tolist() == list(range(3000))


def test_interleaved_tags_take_linear_time(tmp_path):
    path = _model(tmp_path, _layer(_unpacked(200_000, 2, 1.0), 200_000))
    start = time.perf_counter()
    read_caffemodel(path)
    assert time.perf_counter() - start < 3.0


def test_blob_over_the_tensor_limit(tmp_path):
    limits.set_limits(limits.Limits(tensor_bytes=1024))
    data = _layer(bytes_field(5, b"\0" * 4096), 32, 32)
    assert _read_error(tmp_path, data) == (
        "m.caffemodel: byte 7: error: " + over("tensor_bytes", 4096, "blob 0 of layer 'a'"))


def test_shape_fields_add_up_to_too_many_axes(tmp_path):
    one_axis = bytes_field(7, bytes_field(1, varint(1)))
    data = bytes_field(100, bytes_field(1, b"a") + bytes_field(7, one_axis * 40 + bytes_field(5, b"\0" * 4)))
    assert "blob shape has more than 32 dimensions at byte" in _read_error(tmp_path, data)


def test_weights_fifo_is_refused_by_name(capsys, tmp_path):
    fifo = tmp_path / "w.caffemodel"
    os.mkfifo(fifo)
    assert error_line(capsys, "ir", write(tmp_path, TINY), "--weights", fifo) == (
        f"{fifo}: error: is a FIFO (named pipe), expected a caffemodel "
        "(hint: tidlc reads regular files only)")
