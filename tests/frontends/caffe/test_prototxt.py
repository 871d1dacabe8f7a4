"""Caffe prototxt: text-format parsing, located errors, the corpus parsed and round-tripped."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from tidlc.frontends.caffe.netspec import (
    PHASE,
    POOL_METHOD,
    conv_params,
    load_netspec,
    pool_params,
)
from tidlc.frontends.caffe.prototxt import (
    Enum,
    Field,
    Message,
    format_prototxt,
    load_prototxt,
    parse_prototxt,
)

from tidlc.diagnostics import TidlcError

CORPUS = Path(__file__).resolve().parents[3].parent / "shared" / "corpus" / "caffe"
PROTOTXTS = sorted(CORPUS.glob("*/*.prototxt")) if CORPUS.is_dir() else []


def values(text: str, name: str = "a") -> list:
    return parse_prototxt(text).get_all(name)


def error_of(text: str, filename: str = "net.prototxt") -> TidlcError:
    with pytest.raises(TidlcError) as info:
        parse_prototxt(text, filename)
    return info.value


# ----------------------------------------------------------------------------- corpus

@pytest.mark.skipif(not PROTOTXTS, reason="shared corpus not available")
@pytest.mark.parametrize("path", PROTOTXTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_prototxt_parses_normalises_and_round_trips(path):
    message = load_prototxt(path)
    assert parse_prototxt(format_prototxt(message)) == message

    net = load_netspec(path)
    assert net.inputs, "every corpus net declares an input"
    for spec in net.inputs:
        assert spec.shape is not None and len(spec.shape) == 4 and all(d > 0 for d in spec.shape)
    assert net.layers
    names = [layer.name for layer in net.layers]
    assert len(names) == len(set(names))
    produced = {spec.name for spec in net.inputs}
    for layer in net.layers:
        assert layer.type and layer.type != "Input"
        assert layer.loc.file == str(path) and layer.loc.line > 0 and layer.loc.name == layer.name
        # Every bottom is an input or an earlier top (the file is in execution order).
        assert all(b in produced for b in layer.bottom), (layer.name, layer.bottom)
        produced.update(layer.top)
        if layer.type in ("Convolution", "Deconvolution"):
            conv = conv_params(layer.param("convolution_param"))
            assert conv.num_output > 0 and min(conv.kernel) >= 1
        elif layer.type == "Pooling":
            pool = pool_params(layer.param("pooling_param"))
            assert pool.global_pooling or pool.kernel is not None


@pytest.mark.skipif(not PROTOTXTS, reason="shared corpus not available")
def test_corpus_specifics():
    alexnet = load_netspec(CORPUS / "bvlc_alexnet" / "deploy.prototxt")
    assert (alexnet.name, alexnet.inputs[0].name, alexnet.inputs[0].shape) == (
        "AlexNet", "data", (10, 3, 227, 227))
    conv1 = conv_params(alexnet.layer("conv1").param("convolution_param"))
    assert (conv1.num_output, conv1.kernel, conv1.stride, conv1.pads) == (96, (11, 11), (4, 4),
                                                                          (0, 0, 0, 0))
    assert conv_params(alexnet.layer("conv2").param("convolution_param")).group == 2

    mtcnn = load_netspec(CORPUS / "mtcnn" / "det1.prototxt")  # input + input_dim x4
    assert [(i.name, i.shape) for i in mtcnn.inputs] == [("data", (1, 3, 12, 12))]

    ssd = load_netspec(CORPUS / "mobilenet_ssd" / "deploy.prototxt")  # include { phase: TEST }
    assert ssd.layers[-1].type == "DetectionOutput"
    assert ssd.layers[-1].param("detection_output_param").get_enum(
        "code_type", {"CORNER": 1, "CENTER_SIZE": 2}) == "CENTER_SIZE"
    assert load_netspec(CORPUS / "mobilenet_ssd" / "deploy.prototxt", phase="TRAIN"
                        ).layers[-1].type != "DetectionOutput"

    for weights in CORPUS.glob("*/*.caffemodel"):  # passed by mistake as the net
        with pytest.raises(TidlcError, match="prototxt is not a text file"):
            load_prototxt(weights)

    enet = load_netspec(CORPUS / "enet" / "enet_deploy.prototxt")
    python = next(layer for layer in enet.layers if layer.type == "Python")
    assert python.param("python_param").get_str("param_str") == "{'phase': 'TEST', 'p': '0.01'}"


# ----------------------------------------------------------------------------- syntax

def test_nested_messages_all_spellings():
    text = """
    layer { name: "a" }
    layer: { name: "b" }
    layer < name: "c" >
    layer: < name: 'd' >
    """
    msg = parse_prototxt(text)
    assert [m.get("name") for m in msg.messages("layer")] == ["a", "b", "c", "d"]
    assert msg.names() == ["layer"] and len(msg) == 4


def test_repeated_fields_lists_and_separators():
    msg = parse_prototxt("dim: 1; dim: 3, dim: 224 dim: 224\nmean: [1.5, 2, -3] empty: []\n"
                         "shape: [{dim: 1}, {dim: 2}]")
    assert msg.get_ints("dim") == [1, 3, 224, 224]
    assert msg.get("dim") == 224  # last one wins, like protobuf
    assert msg.get_all("mean") == [1.5, 2, -3] and msg.get_floats("mean") == [1.5, 2.0, -3.0]
    assert not msg.has("empty")
    assert [m.get_int("dim") for m in msg.messages("shape")] == [1, 2]


def test_identifiers_and_booleans():
    msg = parse_prototxt("pool: MAX type: CONVOLUTION on: true off: false big: True")
    assert msg.get("pool") == Enum("MAX") and str(msg.get("type")) == "CONVOLUTION"
    assert msg.get("on") is True and msg.get("off") is False and msg.get("big") is True


@pytest.mark.parametrize("literal, expected", [
    ("1", 1), ("-3", -3), ("- 3", -3), ("0", 0), ("1e-5", 1e-5), ("1E5", 1e5), (".5", 0.5),
    ("5.", 5.0), ("-.25", -0.25), ("1.0f", 1.0), ("2F", 2.0), ("0x1F", 31), ("-0X10", -16),
    ("017", 15), ("1.5e+3", 1500.0), ("inf", math.inf), ("-inf", -math.inf),
    ("Infinity", math.inf), ("-infinity", -math.inf),
    ("12345678901234567890", 12345678901234567890),
])
def test_numbers(literal, expected):
    (value,) = values(f"a: {literal}")
    assert value == expected and type(value) is type(expected)


def test_nan():
    (value,) = values("a: nan")
    (negative,) = values("a: -NaN")
    assert math.isnan(value) and math.isnan(negative)


@pytest.mark.parametrize("literal, expected", [
    ('"plain"', "plain"), ("'single'", "single"), (r'"tab\tnl\n"', "tab\tnl\n"),
    (r'"q\"q"', 'q"q'), (r"'a\'b'", "a'b"), (r'"back\\slash"', "back\\slash"),
    (r'"\101\60\7"', "A0\x07"), (r'"\x41\x4a\x7"', "AJ\x07"),
    (r'"\u00e9\U0001F600"', "\u00e9\U0001F600"),
    (r'"\303\251"', "\u00e9"), ('"a" \'b\'\n "c"', "abc"), ('"# not a comment"', "# not a comment"),
    ('"é"', "é"), ('""', ""),
])
def test_strings(literal, expected):
    assert values(f"a: {literal}") == [expected]


def test_comments_and_whitespace():
    text = "# header\nname: \"n\"  # trailing\n\tlayer {\r\n  # inside\n  top: 'x' }\n# end"
    msg = parse_prototxt(text)
    assert msg.get("name") == "n" and msg.message("layer").get("top") == "x"
    assert parse_prototxt("") == Message() and parse_prototxt("# only\n") == Message()


def test_locations():
    msg = parse_prototxt('name: "n"\nlayer {\n  top:  "t"\n}\n', "x.prototxt")
    layer = msg.field("layer")
    assert (layer.loc.file, layer.loc.line, layer.loc.col) == ("x.prototxt", 2, 1)
    top = layer.value.field("top")
    assert (top.loc.line, top.loc.col) == (3, 3)
    assert layer.value.loc == layer.loc and layer.value.name == "layer"


def test_equality_ignores_locations():
    assert parse_prototxt("a: 1\nb { c: 'x' }") == parse_prototxt("a:1 b:{c:\"x\"}")
    assert parse_prototxt("a: 1") != parse_prototxt("a: 2")
    assert parse_prototxt("a: 1") == Message((Field("a", 1),))


def test_format_round_trip_special_values():
    msg = parse_prototxt(r'a: "q\"\\\n\t\001é" b: -inf c: nan d: 1e-07 e: true f: X g { }')
    again = parse_prototxt(format_prototxt(msg))
    assert [f.name for f in again] == list("abcdefg")
    assert again.get("a") == "q\"\\\n\t\x01é" and again.get("b") == -math.inf
    assert math.isnan(again.get("c")) and again.get("d") == 1e-07 and again.get("g") == Message()


# ----------------------------------------------------------------------------- syntax errors

@pytest.mark.parametrize("text, where, message", [
    ('layer {\n  name: "a"\n  type "Conv"\n}', "3:8",
     "expected ':', '<' or '{', got string \"Conv\""),
    ('layer {\n  name: "a"\n', "2:12", "expected '}', got end of file"),
    ("}", "1:1", "expected end of file or field name, got '}'"),
    ("a: [1 2]", "1:7", "expected ',' or ']', got number '2'"),
    ("a < b: 1 }", "1:10", "expected '>', got '}'"),
    ("a: 1 b: ", "1:8", "expected a value, '<', '[' or '{', got end of file"),
    ("a {\n\tb: 1 c d\n}", "2:9", "expected ':', '<' or '{', got identifier 'd'"),
    ('a: "abc\n', "1:4", "unterminated string"),
    ("a: @", "1:4", "expected a value, '<', '[' or '{', got '@'"),
    ("a: 12abc", "1:4", "got '12abc'"),
    ("a: 1.2.3", "1:4", "got '1.2.3'"),
    ("a: -MAX", "1:4", "expected a number after '-', got identifier MAX"),
    ('x: 1\na: "x\\qy"', "2:6", "unknown escape sequence '\\q'"),
    (r'a: "\xg"', "1:5", "incomplete escape '\\x'"),
    (r'a: "\777"', "1:5", "octal escape '\\777' is out of range"),
    (r'a: "\xff"', "1:4", "string is not valid UTF-8"),
    ("a: 09", "1:4", "invalid octal number '09'"),
])
def test_syntax_errors_point_at_file_line_col(text, where, message):
    error = error_of(text)
    head = str(error).splitlines()[0]
    assert head.startswith(f"net.prototxt:{where}: error: "), head
    assert message in head
    assert error.loc.file == "net.prototxt"


def test_syntax_error_shows_source_line_and_caret():
    error = error_of('layer {\n\tname: "a"\n\ttop: : "b"\n}')
    assert str(error).splitlines() == [
        "net.prototxt:3:7: error: expected a value, '<', '[' or '{', got ':'",
        '  \ttop: : "b"',
        "  \t     ^",
    ]
    assert error.problems == ['\ttop: : "b"', "\t     ^"]


def test_unclosed_brace_hint():
    assert "a '{' or '<' is not closed" in str(error_of("layer {\n  layer {\n  }\n"))


def test_binary_and_missing_files(tmp_path):
    binary = tmp_path / "weights.caffemodel"
    binary.write_bytes(b"\x0a\x05LeNet\xa2\x06\x00" + bytes(range(256)) * 4)
    with pytest.raises(TidlcError, match="not a text file") as info:
        load_prototxt(binary)
    assert str(binary) in str(info.value) and "weights argument" in str(info.value)
    with pytest.raises(TidlcError, match="no such prototxt"):
        load_prototxt(tmp_path / "missing.prototxt")
    latin1 = tmp_path / "latin1.prototxt"  # legacy-encoded comment: still text
    latin1.write_bytes(b"# caf\xe9\nname: \"n\"\n")
    assert load_prototxt(latin1).get("name") == "n"
    bom = tmp_path / "bom.prototxt"
    bom.write_bytes(b"\xef\xbb\xbfname: 'n'")
    assert load_prototxt(bom).get("name") == "n"


def test_parse_error_in_file_names_the_file(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text("layer {\n  name: 'a'\n  bad bad\n}\n")
    with pytest.raises(TidlcError) as info:
        load_prototxt(path)
    assert str(info.value).startswith(f"{path}:3:7: error: expected ':'")


# ----------------------------------------------------------------------------- typed getters

def test_typed_getters():
    msg = parse_prototxt("i: 3 f: 0.5 g: 2 s: 'x' b: true b1: 1 bt: t e: AVE n: 1 r: [1, 2]")
    assert msg.get_int("i") == 3 and msg.get_float("f") == 0.5 and msg.get_float("g") == 2.0
    assert msg.get_str("s") == "x" and msg.get_bool("b") and msg.get_bool("b1")
    assert msg.get_bool("bt") and msg.get_bool("missing", False) is False
    assert msg.get_enum("e", POOL_METHOD) == "AVE"
    assert msg.get_enum("n", POOL_METHOD) == "AVE"  # integer form of the same enum
    assert msg.get_enum("missing", POOL_METHOD, "MAX") == "MAX"
    assert msg.get_int("missing", 7) == 7 and msg.get("missing") is None
    assert msg.get_ints("r") == [1, 2] and msg.get_all("missing") == []
    assert [f.name for f in msg][:2] == ["i", "f"] and "e" in msg and msg.has("e")


@pytest.mark.parametrize("call, message, where", [
    (lambda m: m.get_int("f"), "field 'f' must be an integer, got number 0.5", "1:6"),
    (lambda m: m.get_int("s"), "field 's' must be an integer, got string \"x\"", "2:1"),
    (lambda m: m.get_int("b"), "field 'b' must be an integer, got true", "2:8"),
    (lambda m: m.get_float("e"), "field 'e' must be a number, got identifier AVE", "2:16"),
    (lambda m: m.get_str("i"), "field 'i' must be a string, got number 3", "1:1"),
    (lambda m: m.get_bool("i"), "field 'i' must be true or false, got number 3", "1:1"),
    (lambda m: m.get_enum("e", PHASE), "field 'e' must be one of TRAIN, TEST, got identifier AVE",
     "2:16"),
    (lambda m: m.get_enum("i", PHASE), "field 'i' must be one of TRAIN, TEST, got number 3", "1:1"),
    (lambda m: m.message("i"), "field 'i' must be a message, got number 3", "1:1"),
    (lambda m: m.message("p").get_int("kernel_size"), "missing field 'kernel_size' in 'p'", "3:1"),
    (lambda m: m.message("q").get_int("x"), "missing field 'x' in 'q'", "1:1"),
])
def test_typed_getter_errors_point_at_the_field(call, message, where):
    msg = parse_prototxt("i: 3 f: 0.5\ns: 'x' b: true e: AVE\np { }", "m.prototxt")
    with pytest.raises(TidlcError) as info:
        call(msg)
    assert str(info.value) == f"m.prototxt:{where}: error: {message}"
