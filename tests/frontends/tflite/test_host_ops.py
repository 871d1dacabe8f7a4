"""TFLite operators without a converter become opaque ``host`` ops run by the TFLite interpreter
(docs/host-ops.md): a UNIDIRECTIONAL_SEQUENCE_LSTM (constant weights and variable state tensors
travel in the op's one-operator model), CUMSUM/REVERSE_V2 between lowered ops; a custom op no
runtime can run is one clear error at import; ``allow_host=False`` keeps the old error."""
from __future__ import annotations

import base64
import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
schema = pytest.importorskip("tensorflow.lite.python.schema_py_generated")
import flatbuffers
from tidlc.frontends.tflite.importer import import_model, parse_tflite

from tidlc.compiler import optimize
from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError
from tidlc.interp import run_graph
from tidlc.ir.parser import parse_graph
from tidlc.ir.printer import print_graph
from tidlc.ir.verifier import verify

RNG = np.random.default_rng(0)


def _tfl_run(model: bytes, feeds: list[np.ndarray]) -> list[np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = tf.lite.Interpreter(model_content=model)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), feeds):
        it.set_tensor(d["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]) for d in it.get_output_details()]


def _check(model: bytes, feeds: dict, host_types: list[str]) -> None:
    graph = import_model(parse_tflite(model), None, "m.tflite")
    verify(graph)
    hosts = [op for op in graph.ops if op.kind == "host"]
    assert [op.attrs["op_type"] for op in hosts] == host_types
    assert all(op.attrs["framework"] == "tflite" and not op.opdef.traits for op in hosts)
    refs = _tfl_run(model, list(feeds.values()))

    def compare(g):
        got = list(run_graph(g, feeds).values())
        assert len(got) == len(refs)
        for a, ref in zip(got, refs):
            assert a.shape == ref.shape
            tol = 1e-4 * max(float(np.abs(ref).max()), 1e-12)
            assert float(np.abs(a - ref).max()) <= tol

    compare(graph)
    optimized = import_model(parse_tflite(model), None, "m.tflite")
    optimize(optimized, CompileOptions.of(opt_level=2, verify_each=True))  # the passes leave host ops alone
    assert [op.attrs["op_type"] for op in optimized.ops if op.kind == "host"] == host_types
    compare(optimized)
    text, weights = print_graph(graph)
    again = parse_graph(text, weights)
    assert print_graph(again)[0] == text
    compare(again)
    with pytest.raises(TidlcError) as info:
        import_model(parse_tflite(model), CompileOptions.of(allow_host=False), "m.tflite")
    n = len(host_types)
    assert info.value.message == f"{n} unsupported TFLite operator{'s' if n > 1 else ''}"
    assert [p.rsplit(": ", 1)[1] for p in info.value.problems] == ["not supported"] * n


# ----------------------------------------------------------------------------- model builders
def _convert(fn, specs) -> bytes:
    concrete = tf.function(fn, autograph=False).get_concrete_function(*specs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converter.convert()


def _lstm_model(batch=1, steps=5, n_in=3, n_cell=4) -> bytes:
    """x -> FULLY_CONNECTED -> UNIDIRECTIONAL_SEQUENCE_LSTM (4 gates, batch-major) -> TANH, written
    with the schema's object API (TensorFlow's converter emits a WHILE loop for Keras 3 LSTMs)."""
    tensors, buffers = [], [schema.BufferT()]

    def tensor(name, shape, data=None, variable=False):
        t = schema.TensorT()
        t.name, t.shape, t.type = name, list(shape), schema.TensorType.FLOAT32
        t.isVariable = variable
        t.buffer = 0
        if data is not None:
            b = schema.BufferT()
            b.data = np.frombuffer(np.asarray(data, np.float32).tobytes(), np.uint8)
            t.buffer = len(buffers)
            buffers.append(b)
        tensors.append(t)
        return len(tensors) - 1

    def w(*shape):
        return (RNG.standard_normal(shape) * 0.5).astype(np.float32)

    x = tensor("x", (batch, steps, n_in))
    fc_w, fc_b = tensor("fc_w", (n_in, n_in), w(n_in, n_in)), tensor("fc_b", (n_in,), w(n_in))
    h = tensor("fc", (batch, steps, n_in))
    ins = [h] + [tensor(f"w_i{g}", (n_cell, n_in), w(n_cell, n_in)) for g in "ifco"]
    ins += [tensor(f"w_r{g}", (n_cell, n_cell), w(n_cell, n_cell)) for g in "ifco"]
    ins += [-1, -1, -1]  # no peepholes
    ins += [tensor(f"b_{g}", (n_cell,), w(n_cell) + (1.0 if g == "f" else 0.0)) for g in "ifco"]
    ins += [-1, -1]  # no projection
    ins += [tensor("out_state", (batch, n_cell), variable=True), tensor("cell_state", (batch, n_cell), variable=True)]
    ins += [-1, -1, -1, -1]  # no layer norm
    seq = tensor("lstm", (batch, steps, n_cell))
    y = tensor("y", (batch, steps, n_cell))

    def code(builtin):
        c = schema.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = builtin, min(builtin, 127), 1
        return c

    fc = schema.OperatorT()
    fc.opcodeIndex, fc.inputs, fc.outputs = 0, [x, fc_w, fc_b], [h]
    fc.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
    fc.builtinOptions = schema.FullyConnectedOptionsT()
    fc.builtinOptions.keepNumDims = True
    lstm = schema.OperatorT()
    lstm.opcodeIndex, lstm.inputs, lstm.outputs = 1, ins, [seq]
    lstm.builtinOptionsType = schema.BuiltinOptions.UnidirectionalSequenceLSTMOptions
    lstm.builtinOptions = schema.UnidirectionalSequenceLSTMOptionsT()
    lstm.builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.TANH
    lstm.builtinOptions.timeMajor = False
    tanh = schema.OperatorT()
    tanh.opcodeIndex, tanh.inputs, tanh.outputs = 2, [seq], [y]
    sg = schema.SubGraphT()
    sg.tensors, sg.inputs, sg.outputs, sg.operators, sg.name = tensors, [x], [y], [fc, lstm, tanh], "main"
    model = schema.ModelT()
    model.version, model.subgraphs, model.buffers = 3, [sg], buffers
    model.operatorCodes = [code(schema.BuiltinOperator.FULLY_CONNECTED),
                           code(schema.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM),
                           code(schema.BuiltinOperator.TANH)]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _as_custom(model: bytes, builtin_name: str, custom_code: str) -> bytes:
    """``model`` with the op code of ``builtin_name`` turned into a custom op ``custom_code``."""
    m = schema.ModelT.InitFromPackedBuf(model, 0)
    want = getattr(schema.BuiltinOperator, builtin_name)
    for c in m.operatorCodes:
        if max(c.builtinCode, c.deprecatedBuiltinCode) == want:
            c.builtinCode = c.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
            c.customCode = custom_code
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _cumsum_model() -> bytes:
    w = RNG.standard_normal((8, 6)).astype(np.float32)

    def fn(x):
        y = tf.math.cumsum(tf.matmul(x, w), axis=1)
        return tf.nn.relu(tf.reverse(y, axis=[1]))

    return _convert(fn, [tf.TensorSpec((2, 8), tf.float32, name="x")])


# ----------------------------------------------------------------------------- tests
def test_sequence_lstm():
    model = _lstm_model()
    x = RNG.standard_normal((1, 5, 3)).astype(np.float32)
    _check(model, {"x": x}, ["UNIDIRECTIONAL_SEQUENCE_LSTM"])
    graph = import_model(parse_tflite(model))
    (host,) = [op for op in graph.ops if op.kind == "host"]
    assert len(host.operands) == 1  # weights and states are in the payload
    assert [str(r.type) for r in host.results] == ["tensor<1x5x4xf32>"]
    assert base64.b64decode(host.attrs["payload"])[4:8] == b"TFL3"
    # the state is reset on every run: two runs give the same result
    first = run_graph(graph, {"x": x})
    np.testing.assert_array_equal(run_graph(graph, {"x": x})["y"], first["y"])


def test_cumsum_and_reverse():
    x = RNG.standard_normal((2, 8)).astype(np.float32)
    _check(_cumsum_model(), {"x": x}, ["CUMSUM", "REVERSE_V2"])


def test_custom_op_no_runtime_can_run_is_an_import_error():
    model = _as_custom(_cumsum_model(), "CUMSUM", "MyCumsum")
    with pytest.raises(TidlcError) as info:
        import_model(parse_tflite(model), None, "m.tflite")
    err = info.value
    assert err.message == "1 unsupported TFLite operator" and err.code == "unsupported"
    (problem,) = err.problems
    assert problem.startswith("operator #1 'Cumsum' (CUSTOM 'MyCumsum'): custom op 'MyCumsum' cannot run on the host")
    assert "needs a TFLite interpreter with a kernel for 'MyCumsum' registered" in problem
    with pytest.raises(TidlcError) as info:  # --no-host: the old text
        import_model(parse_tflite(model), CompileOptions.of(allow_host=False), "m.tflite")
    assert [p.split(": ", 1)[1] for p in info.value.problems] == ["custom op 'MyCumsum' is not supported",
                                                                  "not supported"]


def test_missing_runtime_names_the_extra(monkeypatch):
    from tidlc import hostrt
    graph = import_model(parse_tflite(_cumsum_model()))
    monkeypatch.setattr(hostrt, "_INTERPRETERS", {})
    monkeypatch.setattr(hostrt, "_INTERPRETER_CLASS", ())
    with pytest.raises(TidlcError, match=r"\(tflite CUMSUM\) runs on a TFLite interpreter") as info:
        run_graph(graph, {"x": np.ones((2, 8), np.float32)})
    assert info.value.hint == "pip install tidlc[host]"


def test_keras_lstm_while_loop():
    """TensorFlow writes a Keras 3 LSTM as a WHILE loop over body/cond subgraphs: the payload
    carries those subgraphs (same indices) with their op codes and buffers."""
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((6, 4), batch_size=1)
    y = tf.keras.layers.LSTM(5, return_sequences=True)(tf.keras.layers.Dense(8)(inp))
    keras_model = tf.keras.Model(inp, tf.keras.layers.Dense(3)(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tf.lite.TFLiteConverter.from_keras_model(keras_model).convert()
    assert parse_tflite(model).subgraph_count > 1
    x = RNG.standard_normal((1, 6, 4)).astype(np.float32)
    _check(model, {parse_tflite(model).tensors[parse_tflite(model).inputs[0]].name: x}, ["WHILE"])
