"""--target onnx-qdq: the QDQ model checked against the TIDL backend compiled with the same options.

Per test model and quantization variant, both targets are compiled and:

* the model passes ``onnx.checker`` with ``full_check`` and uses opset 13
  (8-bit) or 21 (16-bit tensors);
* every activation QDQ pair's scale is the reciprocal of the net.bin value's
  scale (to float32 precision), every quantized activation of net.bin has one,
  and every weight DQ gives back net.bin's integer codes exactly;
* layer by layer, fed TIDL's own integer inputs (each layer's input tensors
  replaced by graph inputs: "teacher forcing"), every QDQ layer output is
  within 1 LSB of the TIDL fixed-point executor's, and at most 5% of all
  activation values differ. The two differ only where they round: TIDL's output shift
  rounds halves up, QuantizeLinear rounds halves to even;
* end to end the outputs agree to an SNR of at least ``MIN_SNR_DB`` (measured
  values in docs/ti-flow.md): 1-LSB differences grow through deep networks, so
  the end-to-end bound is looser than the per-layer one.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tidlc.backends.onnx_qdq.backend import META_NAME, MODEL_NAME, OnnxQdqBackend
from tidlc.backends.tidl.backend import TidlBackend

from tidlc.cli import main
from tidlc.diagnostics import TidlcError
from tidlc.preprocess import input_specs, synthetic_frames

# (model, extra compile arguments, end-to-end SNR floor in dB per output; None: every output)
VARIANTS = {
    "caffe-8bit": ("caffe", (), 30.0),
    "caffe-16bit": ("caffe", ("--bits", "16"), 60.0),
    "caffe-p2": ("caffe", ("--quant-style", "p2"), 30.0),
    "caffe-per-channel": ("caffe", ("--per-channel-depthwise",), 30.0),
    "caffe-mixed": ("caffe", ("--16bit-layers", "conv,fc"), 30.0),
    "onnx-8bit": ("onnx", (), 30.0),
    "onnx-16bit": ("onnx", ("--bits", "16"), 60.0),
    "ultraface": ("ultraface", (), {"scores": 40.0, "boxes": 20.0}),
}


def _compile(model, args, target: str, outdir) -> None:
    code = main(["compile", str(model), *args, "--target", target, "-o", str(outdir)])
    assert code == 0


@pytest.fixture(scope="module")
def compiled(model_files, tmp_path_factory):
    """variant -> {"qdq": folder, "tidl": folder}, compiled once per module."""
    cache: dict[str, dict] = {}

    def get(variant: str) -> dict:
        if variant not in cache:
            name, args, _ = VARIANTS[variant]
            model, model_args = model_files[name]
            root = tmp_path_factory.mktemp(variant)
            for target, folder in (("onnx-qdq", "qdq"), ("tidl", "tidl")):
                _compile(model, (*model_args, *args), target, root / folder)
            cache[variant] = {"qdq": root / "qdq", "tidl": root / "tidl"}
        return cache[variant]
    return get


def _tidl(folder):
    backend = TidlBackend()
    return backend.load(str(folder))


def _frame(graph, seed: int = 11) -> dict:
    """A synthetic frame like the calibration frames, from another seed."""
    return next(synthetic_frames(input_specs(graph), 1, seed=seed))


def _initializers(model) -> dict:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_qdq_model_checks_and_carries_the_tidl_scales(variant, compiled):
    folders = compiled(variant)
    model = onnx.load(folders["qdq"] / MODEL_NAME)
    onnx.checker.check_model(model, full_check=True)
    meta = json.loads((folders["qdq"] / META_NAME).read_text())
    graph = _tidl(folders["tidl"]).graph
    wide = any(op.kind != "const" and r.type.quant is not None and r.type.quant.bits > 8
               for op in graph.ops for r in op.results)
    assert model.opset_import[0].version == meta["opset"] == (21 if wide else 13)
    assert [i.name for i in model.graph.input] == [op.attrs["name"] for op in graph.input_ops]
    assert [o.name for o in model.graph.output] == list(graph.output_names)

    inits = _initializers(model)
    producer = {out: node for node in model.graph.node for out in node.output}
    covered = set()
    for act in meta["activations"]:
        op = graph.ops[act["op"]]
        assert (op.kind, op.name) == (act["kind"], act["layer"])
        q = op.results[act["result"]].type.quant
        dq = producer[act["tensor"]]
        assert dq.op_type == "DequantizeLinear"
        onnx_scale = float(inits[dq.input[1]])
        assert 1.0 / onnx_scale == pytest.approx(q.scale[0], rel=1e-6), act["tensor"]
        zero = inits[dq.input[2]]
        assert zero.dtype == {(8, True): np.int8, (8, False): np.uint8, (16, True): np.int16,
                              (16, False): np.uint16}[(q.bits, q.signed)] and int(zero) == 0
        covered.add((act["op"], act["result"]))
    wanted = {(i, j) for i, op in enumerate(graph.ops) if op.kind != "const"
              for j, r in enumerate(op.results) if r.type.quant is not None}
    assert covered == wanted and wanted

    layers = {node.name: node for node in model.graph.node}
    checked = 0
    for op in graph.ops:
        if op.kind not in ("conv2d", "deconv2d", "dense") or op.operands[1].type.quant is None:
            continue
        w = op.operands[1]
        dq = producer[layers[op.name].input[1]]
        qnode = producer[dq.input[0]]
        assert (dq.op_type, qnode.op_type) == ("DequantizeLinear", "QuantizeLinear")
        scale = inits[qnode.input[1]].astype(np.float64)
        real = inits[qnode.input[0]].astype(np.float64)
        if op.kind == "dense" and layers[op.name].op_type == "MatMul":
            real = real.T
        if scale.ndim:  # per output channel (axis 0)
            scale = scale.reshape((-1,) + (1,) * (real.ndim - 1))
        np.testing.assert_allclose(1.0 / scale.reshape(-1), np.asarray(w.type.quant.scale), rtol=1e-6)
        np.testing.assert_array_equal(np.round(real / scale), np.asarray(w.producer.data))
        checked += 1
    assert checked >= 2


def _teacher_forced(model, acts) -> onnx.ModelProto:
    """Every activation tensor becomes a graph input; each layer's own QDQ result an output."""
    forced = onnx.ModelProto()
    forced.CopyFrom(model)
    dq = {node.output[0]: node for node in forced.graph.node if node.op_type == "DequantizeLinear"}
    del forced.graph.output[:]
    for act in acts:
        dq[act["tensor"]].output[0] = act["tensor"] + "/own"
        forced.graph.input.append(helper.make_tensor_value_info(act["tensor"], TensorProto.FLOAT, None))
        forced.graph.output.append(helper.make_tensor_value_info(act["tensor"] + "/own", TensorProto.FLOAT, None))
    return forced


def _session(model):
    ort = pytest.importorskip("onnxruntime")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.mean((got.astype(np.float64) - ref) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.mean(ref.astype(np.float64) ** 2)) / noise)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_layer_matches_the_fixed_point_executor_within_one_lsb(variant, compiled):
    pytest.importorskip("onnxruntime")
    folders = compiled(variant)
    meta = json.loads((folders["qdq"] / META_NAME).read_text())
    tidl = _tidl(folders["tidl"])
    feeds = _frame(tidl.graph)
    results: dict[int, list] = {}
    tidl.run(feeds, observer=lambda op, res: results.__setitem__(id(op), res))
    acts = meta["activations"]
    session = _session(_teacher_forced(onnx.load(folders["qdq"] / MODEL_NAME), acts))

    def codes(act):
        return np.asarray(results[id(tidl.graph.ops[act["op"]])][act["result"]]).astype(np.int64)

    forced = dict(feeds)
    for act in acts:  # what DequantizeLinear gives for TIDL's codes: q * float32(1 / scale)
        forced[act["tensor"]] = codes(act).astype(np.float32) * np.float32(1.0 / act["scale"])
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, forced)))
    differing = total = 0
    for act in acts:
        own = np.round(outputs[act["tensor"] + "/own"].astype(np.float64) * act["scale"]).astype(np.int64)
        diff = np.abs(own - codes(act))
        assert diff.max() <= 1, f"{act['kind']} '{act['tensor']}': {diff.max()} LSB from the executor"
        differing += int((diff > 0).sum())
        total += diff.size
    assert differing <= 0.05 * total, f"{differing} of {total} activation values differ by 1 LSB"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_end_to_end_outputs_agree_with_the_fixed_point_executor(variant, compiled):
    pytest.importorskip("onnxruntime")
    folders = compiled(variant)
    tidl = _tidl(folders["tidl"])
    qdq = OnnxQdqBackend().load(str(folders["qdq"]))
    floor = VARIANTS[variant][2]
    for seed in (11, 12):
        feeds = _frame(tidl.graph, seed)
        want, got = tidl.run(feeds), qdq.run(feeds)
        assert list(got) == list(want)
        for name in want:
            assert got[name].shape == want[name].shape and got[name].dtype == np.float32
            bound = floor[name] if isinstance(floor, dict) else floor
            assert snr_db(want[name], got[name]) >= bound, (name, snr_db(want[name], got[name]))


def test_load_recognizes_and_input_info(compiled, tmp_path):
    folders = compiled("caffe-8bit")
    backend, tidl = OnnxQdqBackend(), TidlBackend()
    qdq_dir, tidl_dir = str(folders["qdq"]), str(folders["tidl"])
    assert backend.recognizes(qdq_dir) and backend.recognizes(str(folders["qdq"] / MODEL_NAME))
    assert not backend.recognizes(tidl_dir) and not tidl.recognizes(qdq_dir)
    assert not backend.recognizes(str(tmp_path))
    exe = backend.load(qdq_dir)
    assert exe.input_info() == [("data", (1, 3, 12, 12), "float32")]
    (tmp_path / META_NAME).write_text('{"format": "tidlc-onnx-qdq", "version": 99, "model": "m", '
                                      '"inputs": [], "outputs": []}')
    with pytest.raises(TidlcError, match="newer"):
        backend.load(str(tmp_path))
    (tmp_path / META_NAME).write_text('{"format": "something else"}')
    assert not backend.recognizes(str(tmp_path))
    with pytest.raises(TidlcError, match="no qdq.json"):
        backend.load(str(tmp_path))


def test_run_checks_its_inputs_and_needs_onnxruntime(compiled, monkeypatch):
    exe = OnnxQdqBackend().load(str(compiled("caffe-8bit")["qdq"]))
    with pytest.raises(TidlcError, match="expects"):
        exe.run({"data": np.zeros((1, 3, 8, 8), np.float32)})
    with pytest.raises(TidlcError, match="unknown input"):
        exe.run({"data": np.zeros((1, 3, 12, 12), np.float32), "extra": np.zeros(1)})
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    with pytest.raises(TidlcError) as info:
        exe.run({"data": np.zeros((1, 3, 12, 12), np.float32)})
    assert info.value.hint == "pip install onnxruntime"


def test_an_op_without_onnx_mapping_is_named(model_files, tmp_path):
    from tidlc.backends.onnx_qdq.export import export

    from tidlc.ir import Builder, TensorType
    b = Builder()
    x = b.input("x", TensorType((1, 3, 4, 4), layout="NCHW"))
    _pooled, indices = b.op("max_pool_index", [x], kernel=(2, 2), strides=(2, 2), name="argpool")
    b.output(indices, "idx")
    graph = b.graph
    graph.attrs["quantized"] = True
    with pytest.raises(TidlcError, match="max_pool_index") as info:
        export(graph)
    assert info.value.code == "unsupported"
    assert OnnxQdqBackend().supports(graph.ops[1]).level == "host"


def test_float_graph_is_refused(model_files, tmp_path):
    model, args = model_files["caffe"]
    code = main(["compile", str(model), *args, "--target", "onnx-qdq", "-p", "shape-inference",
                 "-o", str(tmp_path)])
    assert code == 2
    assert not (tmp_path / MODEL_NAME).exists()


# ----------------------------------------------------------------------------- quant params

QUANT_PROTO = """
syntax = "proto2";
message TIDLNetQuantParams {
  optional int32 num_layers = 1;
  optional TidlQuantType quant_type = 2 [default = SYMMETRIC];
  optional TidlCalibType calib_type = 3 [default = PERTENSOR];
  repeated TidlLayerQuantParams layers = 4;
}
"""


def quant_params_message():
    """TI's TIDLNetQuantParams schema (docs: tidl_quantParams.md) built at run time."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="tidl_quant_params_test.proto", package="tidlqp", syntax="proto2")
    for name, values in (("TidlQuantType", (("SYMMETRIC", 1), ("ASYMMETRIC", 2))),
                         ("TidlCalibType", (("PERTENSOR", 1), ("PERCHANNEL", 2)))):
        enum = proto.enum_type.add(name=name)
        for value_name, number in values:
            enum.value.add(name=value_name, number=number)

    def message(name, fields):
        msg = proto.message_type.add(name=name)
        for number, (field, kind, label, type_name) in enumerate(fields, 1):
            f = msg.field.add(name=field, number=number, type=kind, label=label)
            if type_name:
                f.type_name = type_name

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("TidlTensorQuantParams", [("min", F.TYPE_FLOAT, opt, ""), ("max", F.TYPE_FLOAT, opt, ""),
                                      ("size", F.TYPE_UINT32, opt, ""), ("element_type", F.TYPE_UINT32, opt, ""),
                                      ("scale", F.TYPE_DOUBLE, rep, ""), ("zero_point", F.TYPE_UINT32, rep, ""),
                                      ("value", F.TYPE_DOUBLE, rep, "")])
    tensor = ".tidlqp.TidlTensorQuantParams"
    message("TidlLayerQuantParams", [("layer_name", F.TYPE_STRING, opt, ""), ("layer_type", F.TYPE_STRING, opt, ""),
                                     ("bit_depth", F.TYPE_UINT32, opt, ""), ("outputs", F.TYPE_MESSAGE, rep, tensor),
                                     ("weights", F.TYPE_MESSAGE, rep, tensor), ("bias", F.TYPE_MESSAGE, rep, tensor),
                                     ("slope", F.TYPE_MESSAGE, rep, tensor)])
    message("TIDLNetQuantParams", [("num_layers", F.TYPE_INT32, opt, ""),
                                   ("quant_type", F.TYPE_ENUM, opt, ".tidlqp.TidlQuantType"),
                                   ("calib_type", F.TYPE_ENUM, opt, ".tidlqp.TidlCalibType"),
                                   ("layers", F.TYPE_MESSAGE, rep, ".tidlqp.TidlLayerQuantParams")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tidlqp.TIDLNetQuantParams"))()


@pytest.mark.parametrize("extra", [(), ("--per-channel-depthwise",), ("--bits", "16")])
def test_quant_params_prototxt_parses_with_tidls_schema(model_files, tmp_path, extra):
    from google.protobuf import text_format

    from tidlc.compiler import compile_model
    from tidlc.config import CompileOptions
    model, _ = model_files["caffe"]
    options = CompileOptions.of(emit="qir", outdir=str(tmp_path / "qir"), random_weights=3,
                             per_channel_depthwise="--per-channel-depthwise" in extra,
                             bits=16 if "16" in extra else 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # synthetic calibration frames, random weights
        graph = compile_model(str(model), options).graph
    written = OnnxQdqBackend().emit(graph, str(tmp_path / "out"), CompileOptions.of(quant_params=True))
    assert sorted(p.rsplit("/", 1)[1] for p in written) == [MODEL_NAME, META_NAME, "quant_params.prototxt"]
    meta = json.loads((tmp_path / "out" / META_NAME).read_text())
    assert meta["quant_params"] == "quant_params.prototxt"
    params = quant_params_message()
    text_format.Parse((tmp_path / "out" / "quant_params.prototxt").read_text(), params)
    assert params.num_layers == len(params.layers) > 0
    assert params.calib_type == (2 if extra == ("--per-channel-depthwise",) else 1)
    by_name = {layer.layer_name: layer for layer in params.layers}
    assert by_name["data"].layer_type == "TIDL_DataLayer"
    assert by_name["conv"].layer_type == "TIDL_ConvolutionLayer" and by_name["fc"].layer_type == "TIDL_InnerProductLayer"
    for layer in params.layers:  # what TIDL needs to skip calibration
        assert layer.bit_depth == (2 if "16" in extra else 1)
        for tensor in [*layer.outputs, *layer.weights, *layer.bias]:
            assert np.isfinite(tensor.min) and np.isfinite(tensor.max) and tensor.min < tensor.max
        for bias in layer.bias:
            assert bias.size == len(bias.value) > 0
    scales = {a["tensor"]: a["scale"] for a in meta["activations"]}
    for name in ("conv", "sum", "prob"):
        assert by_name[name].outputs[0].scale[0] == pytest.approx(scales[name])
    conv = next(op for op in graph.ops if op.name == "conv")
    assert list(by_name["conv"].weights[0].scale) == pytest.approx(list(conv.operands[1].type.quant.scale))
