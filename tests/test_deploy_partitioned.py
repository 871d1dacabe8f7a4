"""Issue 13 acceptance, end to end through the command line: models with ops tidlc does not
lower (an LSTM between convolutions, Equal/Where/NonZero, an If; a TFLite sequence LSTM) and a
sparse TFLite model (DENSIFY).

For each: `tidlc check` prints the table and exits 1 (0 for DENSIFY); `tidlc compile -O2` writes
accelerated subgraphs and a model.tdp; `tidlc run OUTDIR` matches the framework's runtime in float
(`--emit ir`: max abs error <= 1e-4 x max |ref|) and within quantization noise (16-bit SNR >= 50 dB
on every output, 8-bit reported); `tidlc perf OUTDIR --json` splits the time into C7x, Arm and
transfers.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tidlc.metrics import snr_db

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto as TP  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

RNG = np.random.default_rng(0)


def _w(name, *shape, s=0.3):
    return numpy_helper.from_array((RNG.standard_normal(shape) * s).astype(np.float32), name)


def _c(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def _onnx(path: Path, nodes, inits, x_shape, outputs) -> Path:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(n, TP.FLOAT, s) for n, s in outputs], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def cnn_lstm(path: Path) -> Path:
    h = 16
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["a1"], name="relu1"),
             helper.make_node("Conv", ["a1", "w2"], ["c2"], strides=[2, 2], name="conv2"),
             helper.make_node("Relu", ["c2"], ["a2"], name="relu2"),
             helper.make_node("Reshape", ["a2", "s1"], ["seq"], name="to_seq"),
             helper.make_node("LSTM", ["seq", "W", "R", "B"], ["Y", "Y_h"], hidden_size=h, name="lstm"),
             helper.make_node("Reshape", ["Y", "s2"], ["img"], name="to_img"),
             helper.make_node("Conv", ["img", "w3"], ["out"], name="conv3")]
    inits = [_w("w1", 8, 3, 3, 3), _w("b1", 8, s=0.1), _w("w2", 16, 8, 2, 2), _c("s1", np.int64([16, 1, 16])),
             _w("W", 1, 4 * h, 16), _w("R", 1, 4 * h, h), _w("B", 1, 8 * h, s=0.1), _c("s2", np.int64([1, 16, 4, 4])),
             _w("w3", 4, 16, 1, 1)]
    return _onnx(path, nodes, inits, [1, 3, 8, 8], [("out", [1, 4, 4, 4])])


def equal_where(path: Path) -> Path:
    """conv -> relu -> (relu == 0 ? -1 : relu) -> conv; Equal stays on the host."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r"], name="relu"),
             helper.make_node("Equal", ["r", "zero"], ["is0"], name="eq"),
             helper.make_node("Where", ["is0", "minus", "r"], ["w"], name="where"),
             helper.make_node("Conv", ["w", "w2"], ["out"], name="conv2")]
    inits = [_w("w1", 8, 3, 3, 3), _c("zero", np.float32(0)), _c("minus", np.float32(-1)), _w("w2", 4, 8, 1, 1)]
    return _onnx(path, nodes, inits, [1, 3, 8, 8], [("out", [1, 4, 8, 8])])


def with_if(path: Path) -> Path:
    """conv -> If(sum > 0: h + 1, else h * h) -> conv; the branches read the outer 'h'."""
    then_g = helper.make_graph([helper.make_node("Add", ["h", "one"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TP.FLOAT, [1, 8, 8, 8])])
    else_g = helper.make_graph([helper.make_node("Mul", ["h", "h"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TP.FLOAT, [1, 8, 8, 8])])
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
             helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
             helper.make_node("If", ["cond"], ["b"], then_branch=then_g, else_branch=else_g, name="if"),
             helper.make_node("Conv", ["b", "w2"], ["out"], name="conv2")]
    inits = [_w("w1", 8, 3, 3, 3), _c("one", np.float32(1)), _c("zero", np.float32(0)), _w("w2", 4, 8, 1, 1)]
    return _onnx(path, nodes, inits, [1, 3, 8, 8], [("out", [1, 4, 8, 8])])


def _tflite(path: Path, build) -> Path:
    tf = pytest.importorskip("tensorflow")
    model = build(tf)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if getattr(model, "_sparse", False):
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path.write_bytes(converter.convert())
    return path


def tflite_lstm(path: Path) -> Path:
    def build(tf):
        tf.keras.utils.set_random_seed(0)
        inp = tf.keras.Input((8, 8, 3), batch_size=1)
        x = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
        x = tf.keras.layers.Reshape((8, 64))(x)
        x = tf.keras.layers.LSTM(16, return_sequences=True)(x)
        x = tf.keras.layers.Dense(4)(x)
        return tf.keras.Model(inp, x)
    return _tflite(path, build)


def tflite_sparse(path: Path) -> Path:
    def build(tf):
        rng = np.random.default_rng(4)
        inp = tf.keras.Input((8, 8, 16), batch_size=1)
        conv = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")
        model = tf.keras.Model(inp, conv(inp))
        kernel = rng.standard_normal((3, 3, 16, 8)) * (rng.random((3, 3, 16, 8)) < 0.15)
        conv.set_weights([kernel.astype(np.float32), rng.standard_normal(8).astype(np.float32) * 0.1])
        model._sparse = True
        return model
    return _tflite(path, build)


def _reference(model: Path, x: np.ndarray) -> list[np.ndarray]:
    if model.suffix == ".onnx":
        return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    tf = pytest.importorskip("tensorflow")
    it = tf.lite.Interpreter(model_content=model.read_bytes())
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]) for d in it.get_output_details()]


# builder, input shape, host op types, check exit code
CASES = {"onnx-lstm": (cnn_lstm, (1, 3, 8, 8), {"LSTM"}, 1),
         "onnx-equal-where": (equal_where, (1, 3, 8, 8), {"Equal"}, 1),  # Where lowers to `where`
         "onnx-if": (with_if, (1, 3, 8, 8), {"Greater", "If"}, 1),
         "tflite-lstm": (tflite_lstm, (1, 8, 8, 3), None, 1),
         "tflite-densify": (tflite_sparse, (1, 8, 8, 16), set(), 0)}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    build, shape, host_types, check_code = CASES[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    model = build(tmp / ("model.onnx" if request.param.startswith("onnx") else "model.tflite"))
    x = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
    np.save(tmp / "x.npy", x)
    return request.param, model, tmp, x, _reference(model, x), host_types, check_code


def _outputs(npz: Path) -> list[np.ndarray]:
    with np.load(npz) as data:
        return [data[k] for k in data.files]


def test_check_names_the_host_ops(cli, case):
    name, model, tmp, x, ref, host_types, check_code = case
    code, out, err = cli("check", model, "--json")
    assert code == check_code, out + err
    doc = json.loads(out)
    host = [layer for layer in doc["layers"] if layer["verdict"] == "host"]
    if host_types is not None:
        assert {layer["reason"].split("'")[1] for layer in host} == host_types, host
    assert (len(doc["partition"]["host_ops"]) > 0) == (check_code == 1)


def test_float_run_of_the_partitioned_ir_matches_the_runtime(cli, case):
    name, model, tmp, x, ref, *_ = case
    out = tmp / "ir"
    code, _, err = cli("compile", model, "--emit", "ir", "-o", out)
    assert code == 0, err
    code, _, err = cli("run", out / "model.tir", "--input", tmp / "x.npy", "-o", tmp / "ir.npz")
    assert code == 0, err
    for got, want in zip(_outputs(tmp / "ir.npz"), ref):
        assert got.shape == want.shape
        assert np.max(np.abs(got - want)) <= 1e-4 * np.max(np.abs(want)), name


@pytest.mark.parametrize("bits", [8, 16])
def test_compiled_subgraphs_run_within_quantization_noise(cli, case, bits):
    name, model, tmp, x, ref, host_types, check_code = case
    out = tmp / f"bin{bits}"
    code, _, err = cli("compile", model, "-O2", "--bits", bits, "-o", out)
    assert code == 0, err
    partitioned = (out / "model.tdp").exists()
    assert partitioned == (check_code == 1), sorted(p.name for p in out.iterdir())
    if partitioned:
        assert sorted(p.name for p in out.glob("subgraph_*")) and all(
            (p / "net.bin").exists() and (p / "io.bin").exists() for p in out.glob("subgraph_*"))
    code, _, err = cli("run", out, "--input", tmp / "x.npy", "-o", tmp / f"y{bits}.npz")
    assert code == 0, err
    snrs = [snr_db(want, got) for got, want in zip(_outputs(tmp / f"y{bits}.npz"), ref)]
    print(f"{name} {bits}-bit SNR: {', '.join(f'{s:.1f} dB' for s in snrs)}")
    assert min(snrs) >= (50.0 if bits == 16 else 15.0), snrs


def test_perf_splits_c7x_arm_and_transfers(cli, case):
    name, model, tmp, x, ref, host_types, check_code = case
    out = tmp / "perf"
    assert cli("compile", model, "-o", out)[0] == 0
    code, text, err = cli("perf", out, "--json")
    assert code == 0, err
    doc = json.loads(text)
    if check_code == 1:
        flat = json.dumps(doc)
        for key in ("c7x", "arm", "transfer"):
            assert key in flat.lower(), (key, sorted(doc))
    else:
        assert doc.get("ms", 0) > 0 or "total" in json.dumps(doc)
