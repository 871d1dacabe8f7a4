import sys

"""Real TFLite models: Keras MobileNetV2 as float32, float16-weight and full-integer int8 .tflite
(make_models.py), and the trained UltraFace detector (also against tidlc's import of its ONNX twin)."""
import pathlib

import numpy as np
import pytest
from tidlc.plugins.layout import interior_transposes

_tidlc_frontend_checks = sys.modules["tidlc_frontend_checks"]  # loaded from a file by tests/frontends/conftest.py
compiled = _tidlc_frontend_checks.compiled

from tidlc.cli import main
from tidlc.interp import run_graph

ROOT = pathlib.Path(__file__).resolve().parents[3]
ULTRAFACE = pathlib.Path("/work/shared/corpus/extra/ultraface/version-RFB-320_without_postprocessing.tflite")
ULTRAFACE_ONNX = ROOT / "examples" / "ultraface" / "ultraface-rfb320.onnx"


@pytest.mark.parametrize("name", ["mobilenet_v2.tflite", "mobilenet_v2_f16.tflite"])
def test_float_models_match_the_interpreter(tf_models, tf_refs, tfl, name):
    x, ref = tf_refs["input"], tf_refs[name]
    baseline = None
    for level in (0, 2):
        graph = compiled(tf_models / name, level)
        got = run_graph(graph, {"input": x})["Identity"]
        error = tfl.assert_close(got, ref, 1e-4, f"{name} -O{level}")
        print(f"{name} -O{level}: max error {error:.2e} x max|ref|")
        if level == 0:
            baseline = got
        else:
            assert interior_transposes(graph) == []
            tfl.assert_close(got, baseline, 1e-5, "-O2 vs -O0")


def test_float16_weights_become_float32_constants(tf_models):
    graph = compiled(tf_models / "mobilenet_v2_f16.tflite", 0)
    dtypes = {op.results[0].type.dtype for op in graph.ops if op.kind == "const"}
    assert "f16" not in dtypes and "f32" in dtypes
    assert not [op for op in graph.ops if op.kind in ("cast", "dequantize")]


def test_int8_model_within_one_lsb(tf_models, tf_refs, tfl):
    x = tf_refs["input_int8"]
    for level in (0, 2):
        graph = compiled(tf_models / "mobilenet_v2_int8.tflite", level)
        got = run_graph(graph, {"input": x})["Identity"]
        assert got.dtype == np.int8
        for kernels in ("", ":builtin"):
            ref = tf_refs["mobilenet_v2_int8.tflite" + kernels]
            diff = tfl.lsb_diff(got, ref)
            off = int(np.count_nonzero(got != ref))
            print(f"int8 -O{level} vs {kernels[1:] or 'default'} kernels: max {diff} LSB, {off}/{ref.size} differ")
            assert diff <= 1
        if level == 2:
            assert interior_transposes(graph) == []
    # for scale: TFLite's own two kernel sets disagree by as much
    ref, builtin = tf_refs["mobilenet_v2_int8.tflite"], tf_refs["mobilenet_v2_int8.tflite:builtin"]
    print(f"int8 default vs builtin kernels: max {tfl.lsb_diff(ref, builtin)} LSB, "
          f"{int(np.count_nonzero(ref != builtin))}/{ref.size} differ")


def test_int8_model_runs_from_the_command_line(tf_models, tf_refs, tmp_path, capsys):
    np.save(tmp_path / "x.npy", tf_refs["input_int8"])
    model = str(tf_models / "mobilenet_v2_int8.tflite")
    assert main(["run", model, "-O2", "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npz")]) == 0
    got = np.load(tmp_path / "y.npz")["Identity"]
    assert got.dtype == np.int8 and np.max(np.abs(got.astype(int) - tf_refs["mobilenet_v2_int8.tflite"])) <= 1


@pytest.fixture(scope="module")
def ultraface_input():
    return np.random.default_rng(0).uniform(-1, 1, (1, 240, 320, 3)).astype(np.float32)


@pytest.mark.skipif(not ULTRAFACE.exists(), reason="the shared model corpus is not here")
def test_ultraface_matches_the_interpreter(tfl, ultraface_input):
    model = ULTRAFACE.read_bytes()
    tf_refs = tfl.tfl_run(model, {"input_1": ultraface_input})
    for level in (0, 2):
        graph = compiled(ULTRAFACE, level)
        got = run_graph(graph, {"input_1": ultraface_input})
        assert list(got) == ["Identity", "Identity_1"]
        for (name, value), ref in zip(got.items(), tf_refs):
            error = tfl.assert_close(value, ref, 1e-4, f"UltraFace {name} -O{level}")
            print(f"UltraFace {name} -O{level}: max error {error:.2e} x max|ref|")
    # the dilated convolution written as SPACE_TO_BATCH_ND -> CONV_2D -> BATCH_TO_SPACE_ND is one conv
    dilations = sorted({op.attrs["dilations"] for op in graph.ops if op.kind == "conv2d"})
    assert dilations == [(1, 1), (2, 2), (3, 3), (5, 5)]
    # what is left: the NHWC input, and the heads' reshapes of NHWC memory
    left = interior_transposes(graph)
    assert {user for op in left for user in _readers(graph, op)} == {"reshape"}


def _readers(graph, op):
    return {user.kind for user, _ in graph.users().get(op.results[0], [])}


@pytest.mark.skipif(not ULTRAFACE.exists(), reason="the shared model corpus is not here")
def test_ultraface_tflite_and_onnx_agree(ultraface_input):
    tflite = run_graph(compiled(ULTRAFACE, 2, input_layout="NCHW"),
                       {"input_1": np.ascontiguousarray(ultraface_input.transpose(0, 3, 1, 2))})
    onnx = run_graph(compiled(ULTRAFACE_ONNX, 2, input_shapes={"input": (1, 3, 240, 320)}),
                     {"input": np.ascontiguousarray(ultraface_input.transpose(0, 3, 1, 2))})
    for mine, theirs in (("Identity", "boxes"), ("Identity_1", "scores")):
        a, b = tflite[mine], onnx[theirs]
        assert a.shape == b.shape
        # two exports of one trained network: the TFLite converter folded batch norms in its own order
        assert np.max(np.abs(a - b)) <= 1e-3 * np.max(np.abs(b)), (mine, np.max(np.abs(a - b)))
