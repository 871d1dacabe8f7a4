"""`tidlc check` (issue 13, item 1): verdicts, hints, the partition preview, exit codes, JSON schema."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "schemas" / "tidlc.check-1.json").read_text())


def _validate(doc: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, SCHEMA)


def _weights(name: str, shape, seed: int):
    return numpy_helper.from_array(np.random.default_rng(seed).normal(0, 0.1, shape).astype(np.float32), name)


def _save(tmp_path, nodes, inits, x_shape, y_shape, name="m.onnx", opset=13) -> Path:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    path = tmp_path / name
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


@pytest.fixture
def plain_cnn(tmp_path) -> Path:
    """conv 3x3 s1 (16 ch) -> relu -> max pool 2x2 s2 -> conv 1x1 (64 ch): every layer accelerated."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2"], ["y"], name="conv2", kernel_shape=[1, 1])]
    inits = [_weights("w1", (16, 16, 3, 3), 1), _weights("b1", (16,), 2), _weights("w2", (64, 16, 1, 1), 3)]
    return _save(tmp_path, nodes, inits, [1, 16, 32, 32], [1, 64, 16, 16])


@pytest.fixture
def awkward(tmp_path) -> Path:
    """A 3x3 stride-2 ConvTranspose and a x3 nearest resize, between plain convs."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("ConvTranspose", ["c1", "wd"], ["d1"], name="deconv", kernel_shape=[3, 3],
                              strides=[2, 2], pads=[1, 1, 0, 0], output_padding=[1, 1]),
             helper.make_node("Resize", ["d1", "", "scales"], ["u1"], name="up3", mode="nearest"),
             helper.make_node("Conv", ["u1", "w2"], ["y"], name="conv2", kernel_shape=[1, 1])]
    inits = [_weights("w1", (16, 16, 3, 3), 1), _weights("wd", (16, 16, 3, 3), 2), _weights("w2", (16, 16, 1, 1), 3),
             numpy_helper.from_array(np.array([1, 1, 3, 3], np.float32), "scales")]
    return _save(tmp_path, nodes, inits, [1, 16, 16, 16], [1, 16, 96, 96])


def test_a_plain_cnn_is_accelerated_whole(cli, plain_cnn):
    code, out, err = cli("check", plain_cnn, quiet=False)
    assert code == 0, out + err
    assert "on the host" in out and "partition: the whole model is one accelerated subgraph" in out
    code, out, _ = cli("check", plain_cnn, "--json", quiet=False)
    doc = json.loads(out)
    _validate(doc)
    assert code == 0 and doc["summary"]["exit_code"] == 0 and doc["summary"]["host"] == 0
    assert len(doc["partition"]["subgraphs"]) == 1 and not doc["partition"]["host_ops"]


def test_deconv_3x3_s2_and_x3_resize_are_named_with_their_hints(cli, awkward):
    # (-O2 computes the x3 resize with dense layers; the deconv, 16 -> 33 rows, stays named)
    code, out, err = cli("check", awkward, quiet=False)
    named = {line.split()[0] for line in out.splitlines() if line.split()}
    assert code == 1 and "deconv" in named and "up3" not in named and "up3.cols" in out, out + err
    code, out, err = cli("check", awkward, "-O1", quiet=False)
    assert code == 1, out + err
    rows = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in ("deconv", "up3")}
    assert set(rows) == {"deconv", "up3"}, out
    assert "Resize" in rows["deconv"] or "resize" in rows["deconv"]
    assert "x2" in rows["up3"] or "x4" in rows["up3"]
    code, out, _ = cli("check", awkward, "-O1", "--json", quiet=False)
    doc = json.loads(out)
    _validate(doc)
    by_name = {layer["name"]: layer for layer in doc["layers"]}
    assert by_name["deconv"]["verdict"] != "accelerated" and by_name["deconv"]["hint"]
    assert by_name["up3"]["verdict"] != "accelerated" and by_name["up3"]["hint"]
    assert by_name["conv1"]["verdict"] == "accelerated"


def test_deny_list_moves_ops_to_the_host_and_shows_the_boundary(cli, plain_cnn):
    code, out, err = cli("check", plain_cnn, "--deny-op-name", "pool1", "--json", quiet=False)
    assert code == 1, err
    doc = json.loads(out)
    _validate(doc)
    part = doc["partition"]
    assert part["host_ops"] == ["pool1"] and len(part["subgraphs"]) == 2
    boundary = {b["tensor"]: b["bytes_per_frame"] for b in part["boundary"]}
    assert boundary and all(n > 0 for n in boundary.values())
    assert {layer["name"]: layer["verdict"] for layer in doc["layers"]}["pool1"] == "host"


def test_a_bad_deny_name_is_an_error_naming_the_nearest(cli, plain_cnn):
    code, out, err = cli("check", plain_cnn, "--deny-op-name", "pool_1", quiet=False)
    assert code == 2 and "pool1" in err and len(err.strip().splitlines()) == 1, err


def test_a_dynamic_input_is_a_problem(cli, tmp_path):
    # (the layers on its unknown dims are not "host" layers sized at run time, as after an NMS: they
    # wait for the size; PP-OCR's text classifier listed 105 of them)
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Sigmoid", ["r"], ["y"], name="sig")]
    path = _save(tmp_path, nodes, [], [1, 3, "H", "W"], [1, 3, "H", "W"])
    code, out, err = cli("check", path, "--json", quiet=False)
    doc = json.loads(out)
    _validate(doc)
    assert code == 1 and doc["dynamic_inputs"][0]["name"] == "x"
    assert any("--input-shape x=1,3,H,W" in p for p in doc["problems"])
    assert not [layer for layer in doc["layers"] if layer["verdict"] == "host"], doc["layers"]
    assert any(p.startswith("2 layer(s) sized by the dynamic input(s)") for p in doc["problems"]), doc["problems"]
    code, out, err = cli("check", path, "--input-shape", "x=1,3,8,8", quiet=False)
    assert code == 0, out + err


def test_a_dynamic_batch_alone_is_taken_as_one(cli, tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    path = _save(tmp_path, nodes, [], ["N", 3, 8, 8], ["N", 3, 8, 8])
    code, out, err = cli("check", path, "--json", quiet=False)
    assert code == 0 and json.loads(out)["dynamic_inputs"] == [], out
    assert "dynamic batch dimension taken as 1 (x=1,3,8,8)" in err


def test_every_op_of_a_node_has_its_verdict(cli, tmp_path):
    # InstanceNormalization becomes reshape, layernorm, reshape and scale, all named 'in1';
    # a 3-D convolution is a host op that keeps its reason
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("InstanceNormalization", ["c1", "s", "b"], ["y"], name="in1")]
    inits = [_weights("w1", (8, 3, 3, 3), 1), _weights("s", (8,), 2), _weights("b", (8,), 3)]
    path = _save(tmp_path, nodes, inits, [1, 3, 16, 16], [1, 8, 16, 16])
    code, out, _ = cli("check", path, "--json", quiet=False)
    rows = [(r["name"], r["kind"], r["verdict"]) for r in json.loads(out)["layers"]]
    assert rows == [("conv1", "conv2d", "accelerated"), ("in1", "reshape", "accelerated"),
                    ("in1", "layernorm", "accelerated"), ("in1", "reshape", "accelerated"),
                    ("in1", "scale", "accelerated")]
    nodes = [helper.make_node("Conv", ["x", "w3"], ["y"], name="c3d", kernel_shape=[1, 1, 1])]
    path = _save(tmp_path, nodes, [_weights("w3", (2, 3, 1, 1, 1), 4)], [1, 3, 2, 4, 4], [1, 2, 2, 4, 4], "c3.onnx")
    code, out, err = cli("check", path, quiet=False)
    assert code == 1 and "opset" not in err and "'Conv' is an opaque op the frontend kept: 3-D convolution is not supported" in out


def test_bad_input_exits_2(cli, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    code, out, err = cli("check", bad, quiet=False)
    assert code == 2 and len(err.strip().splitlines()) == 1, err


CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "caffe"
# TIDL layers that compute in float on the C7x by design (post-processing): accelerated, no integer kernel
FLOAT_TIDL_LAYERS = {"detection_output"}


@pytest.mark.parametrize("net", ["enet/enet_deploy_final.prototxt", "bvlc_googlenet/deploy.prototxt",
                                 "mobilenet_ssd/MobileNetSSD_deploy.prototxt"])
def test_accelerated_means_tidl_runs_it_in_fixed_point(net):
    """check said 'accelerated: TIDL layer Unpool' for ENet's max_unpool and 'TIDL reduction layer' for
    LRN, which TIDL's layer set does not have and the quantizer left in float: a verdict 'accelerated'
    now always has an integer kernel (or is a float TIDL layer by design), and those two are float
    penalties with a hint that names the replacement."""
    import warnings

    from tidlc.backends.tidl.fixed.executor import has_integer_kernel

    from tidlc.compiler import backend_for, load, optimize
    from tidlc.config import CompileOptions
    if not (CORPUS / net).exists():
        pytest.skip("shared corpus not available")
    options = CompileOptions.of(opt_level=2, random_weights=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = load(str(CORPUS / net), options)
    optimize(graph, options)
    backend = backend_for("tidl")
    verdicts = {op.name: (op, backend.supports(op)) for op in graph.compute_ops()}
    wrong = [(name, op.kind) for name, (op, v) in verdicts.items() if v.level == "accelerated"
             and not has_integer_kernel(op) and op.kind not in FLOAT_TIDL_LAYERS]
    assert wrong == []
    for op, v in verdicts.values():
        if op.kind in ("max_unpool", "lrn"):
            assert v.level == "penalty" and "float" in v.reason and ("instead" in v.hint or "remove it" in v.hint), v


def test_check_names_the_layers_compile_keeps_in_float(cli, tmp_path):
    """A relu between two LRNs (no TIDL layer: float) runs in float in the compiled net ('between
    float layers': fixed point would only add a conversion on each side). check said 'accelerated'
    for it; now check's float layers are exactly the quantizer's, and compile names them too."""
    from tidlc.backends.tidl.quantize.api import quantize_graph

    from tidlc.check import check_model
    from tidlc.compiler import float_graph
    from tidlc.config import CompileOptions
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", kernel_shape=[1, 1]),
             helper.make_node("LRN", ["c1"], ["n1"], name="lrn1", size=3),
             helper.make_node("Relu", ["n1"], ["m1"], name="r"),
             helper.make_node("LRN", ["m1"], ["n2"], name="lrn2", size=3),
             helper.make_node("Conv", ["n2", "w2"], ["y"], name="conv2", kernel_shape=[1, 1])]
    inits = [_weights("w1", (8, 3, 1, 1), 1), _weights("w2", (4, 8, 1, 1), 2)]
    path = _save(tmp_path, nodes, inits, [1, 3, 16, 16], [1, 4, 16, 16])
    options = CompileOptions.of(opt_level=2)
    report = check_model(str(path), options)
    checked = {v.name for v in report.layers if v.float_island}
    assert checked == {"lrn1", "r", "lrn2"}
    relu = next(v for v in report.layers if v.name == "r")
    assert relu.level == "penalty" and "between float layers" in relu.reason
    rng = np.random.default_rng(0)
    frames = [{"x": rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)} for _ in range(4)]
    q = quantize_graph(float_graph(str(path), options), options, frames=frames, warn_synthetic=False)
    assert {name.split(" (")[0] for name in q.float_islands} == checked
    code, out, err = cli("compile", path, "-o", tmp_path / "out", quiet=False)
    assert code == 0, out + err
    assert "3 op(s) stay in float: lrn1 (lrn), r (relu: between float layers), lrn2 (lrn)" in out


@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_a_reflection_pad_is_a_float_layer_and_compiles(cli, tmp_path, mode):
    """monodepth2 pads with ReflectionPad2d before each 3x3 conv. TIDL's Pad layer pads with a
    constant, so below -O2 the quantizer keeps it float; but calibration took it for a layer
    that keeps its input's scale and gave its result no range, and compile stopped at "no
    calibration range for 'pad'" (check had called it accelerated). At -O2 the pad is a gather
    of rows (fuse-patterns): no float layer."""
    import json
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Pad", ["r1", "pads"], ["p"], name="pad", mode=mode),
             helper.make_node("Conv", ["p", "w2"], ["y"], name="conv2", kernel_shape=[3, 3])]
    inits = [_weights("w1", (8, 3, 3, 3), 1), _weights("w2", (4, 8, 3, 3), 2),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")]
    path = _save(tmp_path, nodes, inits, [1, 3, 16, 16], [1, 4, 16, 16])
    code, out, err = cli("check", path, "--json", "-O1")
    assert code == 0, err
    layers = {v["name"]: v for v in json.loads(out)["layers"]}
    assert layers["pad"]["verdict"] == "penalty" and layers["pad"]["float"] and "zeros" in layers["pad"]["hint"]
    assert [n for n, v in layers.items() if v["float"]] == ["pad"]
    code, out, err = cli("check", path, "--json")
    assert code == 0, err
    layers = {v["name"]: v for v in json.loads(out)["layers"]}
    assert "pad" not in layers and not any(v["float"] for v in layers.values()), out
    assert [v["kind"] for n, v in layers.items() if n.startswith("pad.")] == ["gather", "gather"]
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).uniform(-1, 1, (4, 3, 16, 16)).astype(np.float32))
    snr = {}
    for level in ("-O1", "-O2"):
        code, out, err = cli("compile", path, "--calib", tmp_path / "calib.npy", "-o", tmp_path / level, level,
                             quiet=False)
        assert code == 0, out + err
        assert ("1 op(s) stay in float: pad (pad)" in out) == (level == "-O1"), out
        snr[level] = float(out.split("output SNR vs float: ")[1].split(" dB")[0])
    assert min(snr.values()) > 25, snr
