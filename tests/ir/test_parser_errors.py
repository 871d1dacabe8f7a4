"""Parse errors: ``file:line:col: error: message``, then the offending line and a caret."""
import numpy as np
import pytest

from tidlc.diagnostics import TidlcError
from tidlc.ir import parse_graph

HEAD = 'tidlc.graph @g {\n  %x = input "x" : tensor<1x4xf32>\n'
TAIL = "  output(%0)\n}\n"
WEIGHTS = {"w": np.zeros(2, np.float32)}

# (name, the line(s) after HEAD, line, col, message) -- col is 1-based
CASES = [
    ("syntax", "  %0 = relu(%x : tensor<1x4xf32>\n", 3, 16,
     "syntax error: unexpected ':'; expected ')', ','"),
    ("bad character", "  %0 = relu(%x) : tensor<1x4xf32> #\n", 3, 35,
     "syntax error: unexpected character '#'; expected %value, ',', identifier"),
    ("bad element type", "  %0 = relu(%x) : tensor<4xf8>\n", 3, 26,
     "syntax error: unexpected '4'; expected shape and element type (e.g. 1x3x?xf32)"),
    ("input with parentheses", "  %0 = input(%x) : tensor<1x4xf32>\n", 3, 13,
     "syntax error: unexpected '('; expected string"),
    ("undefined value", "  %0 = add(%x, %y) : tensor<1x4xf32>\n", 3, 16,
     "use of undefined value %y (hint: values must be defined by an earlier line)"),
    ("duplicate definition", "  %0 = relu(%x) : tensor<1x4xf32>\n  %0 = relu(%x) : tensor<1x4xf32>\n", 4, 3,
     "value %0 is defined twice (hint: first defined on line 3)"),
    ("unknown op", "  %0 = frobnicate(%x) : tensor<1x4xf32>\n", 3, 8,
     "unknown op 'frobnicate' (hint: is the plugin that defines it installed?)"),
    ("attribute type", '  %0 = softmax(%x) {axis = "a"} : tensor<1x4xf32>\n', 3, 8,
     "softmax: attribute 'axis': expected an integer"),
    ("unknown attribute", "  %0 = softmax(%x) {axes = 1} : tensor<1x4xf32>\n", 3, 8,
     "softmax: unknown attribute(s) axes; known: axis, log"),
    ("attribute twice", "  %0 = softmax(%x) {axis = 1, axis = 0} : tensor<1x4xf32>\n", 3, 20,
     "attribute 'axis' is given twice"),
    ("attribute choice", '  %0 = pool2d(%x) {mode = "sum"} : tensor<1x4xf32>\n', 3, 8,
     "pool2d: attribute 'mode': 'sum' is not one of max, avg"),
    ("operand count", "  %0 = add(%x) : tensor<1x4xf32>\n", 3, 8, "add takes 2 operand(s), got 1"),
    ("result count", "  %0, %1 = relu(%x) : tensor<1x4xf32>, tensor<1x4xf32>\n", 3, 12,
     "relu has 1 result(s), 2 named"),
    ("missing type", "  %0 = relu(%x) :\n", 3, 8, "relu: 1 result(s) but 0 type(s)"),
    ("dense count", "  %0 = const dense<[1.0, 2.0]> : tensor<3xf32>\n", 3, 3,
     "dense constant has 2 values, type tensor<3xf32> needs 3"),
    ("dense float into int", "  %0 = const dense<[1.5, 2]> : tensor<2xi32>\n", 3, 3,
     "dense values do not fit element type int32"),
    ("dense out of range", "  %0 = const dense<[300]> : tensor<1xu8>\n", 3, 3,
     "dense value out of range: Python integer 300 out of bounds for uint8"),
    ("dynamic constant", "  %0 = const dense<1.0> : tensor<?xf32>\n", 3, 3,
     "a constant needs a static shape, got tensor<?xf32>"),
    ("missing weight", '  %0 = const @"w/0" : tensor<3xf32>\n', 3, 14,
     'constant @"w/0" not found in the weights file (hint: keep the .weights file next to the .tir file)'),
    ("weight shape", "  %0 = const @w : tensor<3xf32>\n", 3, 14,
     "constant @w is float32[2] in the weights file but tensor<3xf32> in the text"),
    ("quant field", "  %0 = relu(%x) : tensor<1x4xf32, !q<bits=8, signed=true, scale=1.0, zero=0>>\n", 3, 35,
     "unknown quantization field 'zero'; known: bits, signed, scale, zp, shift, axis"),
    ("quant bits", "  %0 = relu(%x) : tensor<1x4xf32, !q<bits=7, signed=true, scale=1.0>>\n", 3, 35,
     "quantization bits must be one of 4, 8, 12, 16, 32, 64, got 7"),
    ("quant missing", "  %0 = relu(%x) : tensor<1x4xf32, !q<bits=8, scale=1.0>>\n", 3, 35,
     "quantization needs signed"),
    ("per-channel without axis", "  %0 = relu(%x) : tensor<1x4xf32, !q<bits=8, signed=true, scale=[1.0, 2.0]>>\n",
     3, 35, "per-channel quantization (a list of scales) needs an axis"),
    ("quant zp type", "  %0 = relu(%x) : tensor<1x4xf32, !q<bits=8, signed=true, scale=1.0, zp=0.5>>\n",
     3, 35, "quantization zp must be an integer, got 0.5"),
]


@pytest.mark.parametrize("name, body, line, col, message", CASES, ids=[c[0] for c in CASES])
def test_error_is_located_and_quotes_the_line(name, body, line, col, message):
    text = HEAD + body + TAIL
    with pytest.raises(TidlcError) as info:
        parse_graph(text, WEIGHTS, filename="m.tir")
    source = text.splitlines()[line - 1]
    expected = f"m.tir:{line}:{col}: error: {message}\n  {source}\n  {' ' * (col - 1)}^"
    assert str(info.value) == expected


def test_end_of_input():
    with pytest.raises(TidlcError) as info:
        parse_graph(HEAD, filename="cut.tir")
    assert str(info.value).splitlines()[0] == (
        "cut.tir:2:34: error: syntax error: unexpected end of input; "
        "expected %value, ',', 'loc', 'output', identifier")


@pytest.mark.parametrize("output, col, message", [
    ("output(%z)", 10, "use of undefined value %z (hint: values must be defined by an earlier line)"),
    ('output(%x) {names = ["a", "b"]}', 3, "output has 1 values but 2 names"),
    ('output(%x) {name = ["a"]}', 3, "output: unknown attribute(s) name; known: names"),
    ("output(%x) {names = [1]}", 3, "output names must be a list of strings"),
])
def test_output_errors(output, col, message):
    with pytest.raises(TidlcError) as info:
        parse_graph(HEAD + f"  {output}\n}}\n", filename="m.tir")
    assert str(info.value).splitlines()[0] == f"m.tir:3:{col}: error: {message}"


def test_input_defines_one_value():
    text = 'tidlc.graph @g {\n  %x, %y = input "x" : tensor<2xf32>\n  output(%x)\n}\n'
    with pytest.raises(TidlcError) as info:
        parse_graph(text)
    assert str(info.value).splitlines()[0] == "<ir>:2:7: error: input defines exactly one value"


def test_error_location_is_the_value_token_not_the_line_start():
    text = HEAD + "  %0 = concat(%x, %x, %x,\n                %nope) : tensor<3x4xf32>\n" + TAIL
    with pytest.raises(TidlcError) as info:
        parse_graph(text, filename="m.tir")
    assert info.value.loc.line == 4 and info.value.loc.col == 17
