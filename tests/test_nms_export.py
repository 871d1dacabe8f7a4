"""A detector exported with its NMS (ultralytics ``export(nms=True)``; torchvision's detection
models): the network runs on the accelerator as one subgraph and its post-processing on the host.
The detections the NMS keeps are padded to a fixed count by a Pad whose pads are computed from
that count, so the import may not need them constant; everything after the NMS is sized at run
time and stays on the host; the float run is onnxruntime's."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

ort = pytest.importorskip("onnxruntime")
MAX_DET = 10


def _i64(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _f32(name, values):
    return numpy_helper.from_array(np.asarray(values, np.float32), name)


def _detector(path) -> str:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "wf", "bf"], ["f"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["f"], ["r"]),
        helper.make_node("Conv", ["r", "wb", "bb"], ["b4"]),  # boxes (x1, y1, x2, y2) per cell
        helper.make_node("Conv", ["r", "ws", "bs"], ["s1"]), helper.make_node("Sigmoid", ["s1"], ["s"]),
        helper.make_node("Reshape", ["b4", "bshape"], ["braw"]), helper.make_node("Transpose", ["braw"], ["boxes"], perm=[0, 2, 1]),
        helper.make_node("Reshape", ["s", "sshape"], ["scores"]),
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "maxper", "iou", "thr"], ["sel"]),
        helper.make_node("Gather", ["sel", "two"], ["idx"], axis=1),
        helper.make_node("Gather", ["boxes", "idx"], ["kept3"], axis=1),  # (1, N, 4)
        helper.make_node("Squeeze", ["kept3", "zero"], ["kept"]),
        helper.make_node("Shape", ["kept"], ["ks"]), helper.make_node("Gather", ["ks", "zero"], ["n"]),
        helper.make_node("Sub", ["maxdet", "n"], ["missing"]),
        helper.make_node("Concat", ["zeros2", "missing", "zero"], ["pads"], axis=0),
        helper.make_node("Pad", ["kept", "pads"], ["dets"]),
    ]
    inits = [_f32("wf", rng.normal(0, 0.4, (8, 3, 3, 3))), _f32("bf", rng.normal(0, 0.1, 8)),
             _f32("wb", rng.normal(0, 0.3, (4, 8, 1, 1))), _f32("bb", [0, 0, 4, 4]),
             _f32("ws", rng.normal(0, 0.5, (1, 8, 1, 1))), _f32("bs", [0.0]),
             _i64("bshape", [1, 4, 64]), _i64("sshape", [1, 1, 64]), _i64("maxper", [MAX_DET]),
             _f32("iou", [0.5]), _f32("thr", [0.3]), _i64("two", 2), _i64("zero", [0]),
             _i64("maxdet", [MAX_DET]), _i64("zeros2", [0, 0])]
    graph = helper.make_graph(nodes, "det", [helper.make_tensor_value_info("x", TP.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("dets", TP.FLOAT, [MAX_DET, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def test_check_puts_the_network_on_the_accelerator_and_the_nms_on_the_host(cli, tmp_path):
    model = _detector(tmp_path / "det.onnx")
    code, out, err = cli("check", model, "--json")
    assert code == 1, out + err  # (host ops)
    doc = json.loads(out)
    (region,) = doc["partition"]["subgraphs"]
    assert {"f", "b4", "s1"} <= set(region["ops"])  # the network
    host = {layer["name"]: layer["reason"] for layer in doc["layers"] if layer["verdict"] == "host"}
    assert "computed from the data" in host["dets"]  # the Pad
    assert any("known only at run time" in reason for reason in host.values())


def test_the_float_run_and_the_compiled_run_are_the_detections(cli, tmp_path):
    model = _detector(tmp_path / "det.onnx")
    rng = np.random.default_rng(1)
    calib = rng.uniform(-1, 1, (8, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "calib.npy", calib)
    np.save(tmp_path / "x.npy", calib[:1])
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": calib[:1]})[0]
    assert ref.shape == (MAX_DET, 4) and np.count_nonzero(ref.any(axis=1)) > 0  # (some detections kept)
    code, _, err = cli("run", model, "--input", tmp_path / "x.npy", "-o", tmp_path / "f.npz")
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "f.npz")["dets"], ref, rtol=1e-5, atol=1e-5)
    code, out, err = cli("compile", model, "--calib", tmp_path / "calib.npy", "-o", tmp_path / "out", quiet=False)
    assert code == 0 and "1 subgraph(s)" in out + err, out + err
    assert "  subgraph 0: output SNR vs float: " in out  # (as a whole model's compile reports it)
    code, _, err = cli("run", tmp_path / "out", "--input", tmp_path / "x.npy", "-o", tmp_path / "q.npz")
    assert code == 0, err
    got = np.load(tmp_path / "q.npz")["dets"]
    assert got.shape == ref.shape
    kept = ref.any(axis=1)
    assert np.array_equal(got.any(axis=1), kept)  # the same number of detections, then the padding
    assert float(np.abs(got[kept] - ref[kept]).max()) < 0.05 * float(np.abs(ref).max())
