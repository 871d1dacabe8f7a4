"""Custom TFLite ops tidlc converts: MediaPipe's ``Convolution2DTransposeBias`` (its selfie and hair
segmentation decoders) becomes a deconv2d, checked against TFLite's builtin TRANSPOSE_CONV with a
bias input run by the TFLite interpreter on the same tensors; malformed custom options are an
import error naming the operator."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
schema = pytest.importorskip("tensorflow.lite.python.schema_py_generated")
import flatbuffers
from tidlc.frontends.tflite.importer import import_model, parse_tflite

from tidlc.diagnostics import TidlcError
from tidlc.interp import run_graph

RNG = np.random.default_rng(0)


def _model(x_shape, w: np.ndarray, b: np.ndarray, padding: int, strides: tuple[int, int], out_hw,
           builtin: bool, options: bytes | None = None) -> bytes:
    """x -> Convolution2DTransposeBias(x, w, b) (``builtin``: TRANSPOSE_CONV(output_shape, w, x, b),
    the reference) -> y."""
    buffers = [schema.BufferT()]
    tensors = []

    def tensor(name, shape, data=None, dtype=schema.TensorType.FLOAT32):
        t = schema.TensorT()
        t.name, t.shape, t.type = name, list(shape), dtype
        t.buffer = 0
        if data is not None:
            buf = schema.BufferT()
            buf.data = np.ascontiguousarray(data).tobytes()
            buffers.append(buf)
            t.buffer = len(buffers) - 1
        tensors.append(t)
        return len(tensors) - 1

    x = tensor("x", x_shape)
    wi, bi = tensor("w", w.shape, w), tensor("b", b.shape, b)
    y = tensor("y", (x_shape[0], *out_hw, w.shape[0]))
    op = schema.OperatorT()
    op.opcodeIndex, op.outputs = 0, [y]
    code = schema.OperatorCodeT()
    code.version = 3 if builtin else 1
    if builtin:
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.TRANSPOSE_CONV
        shape = tensor("output_shape", (4,), np.array([x_shape[0], *out_hw, w.shape[0]], np.int32),
                       schema.TensorType.INT32)
        op.inputs = [shape, wi, x, bi]
        op.builtinOptionsType = schema.BuiltinOptions.TransposeConvOptions
        op.builtinOptions = schema.TransposeConvOptionsT()
        op.builtinOptions.padding = {1: schema.Padding.SAME, 2: schema.Padding.VALID}[padding]
        op.builtinOptions.strideH, op.builtinOptions.strideW = strides
    else:
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        code.customCode = "Convolution2DTransposeBias"
        op.inputs = [x, wi, bi]
        op.customOptions = list(options if options is not None else
                                np.array([padding, strides[1], strides[0]], "<i4").tobytes())
    sg = schema.SubGraphT()
    sg.tensors, sg.inputs, sg.outputs, sg.operators, sg.name = tensors, [x], [y], [op], "main"
    model = schema.ModelT()
    model.version, model.subgraphs, model.buffers, model.operatorCodes = 3, [sg], buffers, [code]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _tfl_run(model: bytes, x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = tf.lite.Interpreter(model_content=model)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


@pytest.mark.parametrize("in_hw,kernel,strides,padding", [
    ((5, 6), (3, 3), (2, 2), 1),  # SAME, odd kernel: pads split 1 before / 0 after, as MediaPipe's decoder
    ((4, 4), (2, 2), (2, 2), 1),  # the selfie model's 2x2 stride-2 upsampling
    ((5, 7), (4, 3), (2, 3), 1),
    ((5, 6), (3, 3), (2, 2), 2),  # VALID
    ((3, 3), (3, 3), (1, 1), 1),
], ids=str)
def test_transpose_conv_bias_equals_tflites_transpose_conv(in_hw, kernel, strides, padding):
    cin, cout = 3, 4
    w = RNG.standard_normal((cout, *kernel, cin)).astype(np.float32)
    b = RNG.standard_normal(cout).astype(np.float32)
    same = padding == 1
    out_hw = tuple(s * (n - 1) + k - (max(0, k - (n - 1) % s - 1) if same else 0)
                   for n, k, s in zip(in_hw, kernel, strides))
    x = RNG.standard_normal((1, *in_hw, cin)).astype(np.float32)
    want = _tfl_run(_model(x.shape, w, b, padding, strides, out_hw, builtin=True), x)
    graph = import_model(parse_tflite(_model(x.shape, w, b, padding, strides, out_hw, builtin=False)), None, "m.tflite")
    assert [op.kind for op in graph.ops if op.kind not in ("input", "const", "transpose")] == ["deconv2d"]
    got = run_graph(graph, {"x": x})["y"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_short_custom_options_are_an_import_error():
    w, b = np.ones((2, 2, 2, 1), np.float32), np.zeros(2, np.float32)
    model = _model((1, 3, 3, 1), w, b, 1, (2, 2), (6, 6), builtin=False, options=b"\x01\x00\x00\x00")
    with pytest.raises(TidlcError, match=r"CUSTOM 'Convolution2DTransposeBias'\) has 4 bytes of custom options, "
                                         r"expected 12 \(padding, stride_w, stride_h\)"):
        import_model(parse_tflite(model), None, "m.tflite")


def test_unknown_padding_is_named():
    w, b = np.ones((2, 2, 2, 1), np.float32), np.zeros(2, np.float32)
    model = _model((1, 3, 3, 1), w, b, 1, (2, 2), (6, 6), builtin=False,
                   options=np.array([0, 2, 2], "<i4").tobytes())
    with pytest.raises(TidlcError) as info:
        import_model(parse_tflite(model), None, "m.tflite")
    assert any("padding 0 is not SAME (1) or VALID (2)" in p for p in info.value.problems), info.value.problems
