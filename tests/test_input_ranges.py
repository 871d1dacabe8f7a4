"""Frames that do not fit the ranges a quantized model's inputs were calibrated for (raw 0..255
pixels into a model calibrated without --mean/--scale on [-1, 1], a forgotten --scale) saturate at
its input, and its outputs say nothing about the model: `tidlc run` and `tidlc eval` say so, once,
with the range, what the frames span, what it was calibrated on and a hint."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from tidlc.diagnostics import TidlcWarning

LENET = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "caffe" / "lenet_mnist"
pytestmark = pytest.mark.skipif(not LENET.is_dir(), reason="shared corpus not available")
MODEL = ("--weights", LENET / "lenet_iter_10000.caffemodel")
SAMPLES = sorted((LENET / "samples").glob("*.png"))
WARNING = "outside the range it was calibrated for"


@pytest.fixture(scope="module")
def quantized():
    """LeNet quantized on synthetic frames without --mean/--scale: its input calibrated on [-1, 1]."""
    from tidlc.compiler import backend_for, float_graph, plugins_for
    from tidlc.config import CompileOptions
    options = CompileOptions.of(weights=str(LENET / "lenet_iter_10000.caffemodel"), quantize=True, emit="bin")
    graph = float_graph(str(LENET / "mnist_deploy.prototxt"), options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return backend_for(options, plugins_for(options)).quantize(graph, options).graph


def _check(graph, *frames):
    from tidlc.metrics import InputRangeCheck
    check = InputRangeCheck(graph)
    for frame in frames:
        check.add({"data": frame})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = check.warn()
    return names, [w.message for w in caught if isinstance(w.message, TidlcWarning)]


def test_frames_inside_the_calibrated_range_are_quiet(quantized):
    rng = np.random.default_rng(0)
    names, caught = _check(quantized, rng.uniform(-1, 1, (1, 1, 28, 28)).astype(np.float32))
    assert names == [] and caught == []


def test_raw_pixels_into_a_model_calibrated_on_minus_one_one_warn(quantized):
    rng = np.random.default_rng(0)
    frame = rng.uniform(0, 255, (1, 1, 28, 28)).astype(np.float32)
    names, caught = _check(quantized, frame, frame)
    assert names == ["data"] and len(caught) == 1
    message = str(caught[0])
    assert caught[0].code == "range" and caught[0].hint and "--calib" in caught[0].hint
    assert message.startswith("input 'data': 99.") and WARNING in message  # values below 1.0 fit
    assert "synthetic frames (no --calib)" in message and "they span 0.0" in message


def test_a_few_outliers_are_what_a_clipping_calibration_allows(quantized):
    frame = np.zeros((1, 1, 28, 28), np.float32)
    frame.flat[:7] = 50.0  # 7 of 784 values (0.9 %): at most 1 % stays quiet
    assert _check(quantized, frame) == ([], [])
    frame.flat[:8] = 50.0  # 8 of 784 (1.02 %)
    assert _check(quantized, frame)[0] == ["data"]


def _compile(cli, out, *extra):
    code, _, err = cli("compile", LENET / "mnist_deploy.prototxt", *MODEL, "-o", out, *extra)
    assert code == 0, err


def test_run_of_a_compiled_model_names_the_mismatch(cli, tmp_path):
    _compile(cli, tmp_path / "raw")
    code, _, err = cli("run", tmp_path / "raw", "--input", SAMPLES[0], quiet=False)
    assert code == 0 and err.count(WARNING) == 1, err
    assert "(hint: compile with --calib" in err
    _compile(cli, tmp_path / "scaled", "--scale", "0.00390625")  # the scale LeNet was trained with
    code, _, err = cli("run", tmp_path / "scaled", "--input", SAMPLES[0], quiet=False)
    assert code == 0 and WARNING not in err, err
    code, _, err = cli("run", tmp_path / "raw", "--random-input", "1", quiet=False)  # uniform [0, 1): ours
    assert code == 0 and WARNING not in err, err


def test_eval_warns_once_over_both_precisions(cli, tmp_path):
    data = tmp_path / "images"
    data.mkdir()
    for p in SAMPLES[:3]:
        shutil.copy(p, data)
    base = ("eval", LENET / "mnist_deploy.prototxt", *MODEL, "--data", data)
    code, _, err = cli(*base, quiet=False)
    assert code == 0 and err.count(WARNING) == 1, err
    assert "--mean/--scale the model was trained with" in err
    code, _, err = cli(*base, "--scale", "0.00390625", quiet=False)
    assert code == 0 and WARNING not in err, err


def test_one_image_into_a_batched_compiled_model_names_both_ways_out(cli, tmp_path):
    """A Caffe deploy file with batch 10 (AlexNet, SqueezeNet) compiles for 10 frames; one image
    then is an input error that names the .npy shape and --input-shape (not the executor's shape
    mismatch with a hint about source models), and no range warning before it."""
    proto = tmp_path / "b.prototxt"
    proto.write_text('input: "data"\ninput_dim: 4\ninput_dim: 1\ninput_dim: 28\ninput_dim: 28\n'
                     'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n'
                     '  convolution_param { num_output: 2 kernel_size: 3 } }\n')
    code, _, err = cli("compile", proto, "--random-weights", "1", "-o", tmp_path / "out")
    assert code == 0, err
    code, _, err = cli("run", tmp_path / "out", "--input", SAMPLES[0], quiet=False)
    assert code == 2 and err.count("\n") == 1 and WARNING not in err, err
    assert "one image, but the input 'data' [4, 1, 28, 28] takes a batch of 4" in err
    assert "a .npy of shape (4, 1, 28, 28)" in err and "--input-shape data=1,1,28,28" in err


def test_a_compiled_folder_where_a_model_file_is_needed_says_which_commands_take_which(cli, tmp_path):
    _compile(cli, tmp_path / "out")
    for command in ("compare", "check", "compile"):
        code, _, err = cli(command, tmp_path / "out", *(("-o", tmp_path / "again") if command == "compile" else ()))
        assert code == 2 and err.strip() == (
            f"{tmp_path / 'out'}: error: a compiled model's folder, where a source model is needed (hint: compile, "
            "check, compare, eval, tune and sweep take the model file (they quantize it themselves); run, perf, "
            "report and ir take a compiled folder)"), err


def test_the_warning_weighs_what_saturation_takes(quantized):
    """A share of values says little (MNIST: 8 % of pixels, the strokes, are all of the signal); the
    SNR the input keeps once clipped says it: 0 dB for the strokes, high for a few bright pixels."""
    frame = np.zeros((1, 1, 28, 28), np.float32)
    frame.flat[:64] = 255.0  # 8 % of the values, all the energy
    _, caught = _check(quantized, frame)
    assert "saturating them leaves the input at 0.0 dB SNR: the fixed-point outputs cannot follow" in str(caught[0])
    frame = np.random.default_rng(0).uniform(-1, 1, (1, 1, 28, 28)).astype(np.float32)
    frame.flat[:16] = 1.2  # 2 % of the values, 0.2 over the top
    _, caught = _check(quantized, frame)
    assert "cannot follow" not in str(caught[0]) and "leaves the input at 2" in str(caught[0]), str(caught[0])
