"""The ``tidlc`` command on Caffe models: what a user sees, one line per problem, exit codes.

Also the example of examples/ultraface: it compiles with its caffemodel found
beside the prototxt, and ``tidlc run`` matches OpenCV.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tidlc.cli import main

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "ultraface" / "ultraface-rfb320.prototxt"
CORPUS = ROOT.parent / "shared" / "corpus" / "caffe"

NET = '''name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
'''


def tidlc(capsys, *argv) -> tuple[int, list[str], list[str]]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def write(tmp_path, text, name="net.prototxt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_syntax_error_shows_location_and_source_line(tmp_path, capsys):
    path = write(tmp_path, NET.replace("kernel_size: 3 }", "kernel_size: 3 ]"))
    code, out, err = tidlc(capsys, "compile", path, "-o", tmp_path / "out")
    assert code == 2 and out == []
    line = "        convolution_param { num_output: 4 kernel_size: 3 ] }"
    assert err == [f"{path}:4:58: error: expected ',', ';', '}}' or field name, got ']'",
                   f"  {line}", "  " + " " * line.index("]") + "^"]
    assert not (tmp_path / "out").exists()


def test_unsupported_layers_one_line_each(tmp_path, capsys):
    path = write(tmp_path, NET + '''layer { name: "py" type: "Python" bottom: "conv" top: "py" python_param { module: "m" layer: "L" } }
layer { name: "acc" type: "Accuracy" bottom: "py" bottom: "label" top: "acc" }
''')
    code, _out, err = tidlc(capsys, "compile", path, "-o", tmp_path / "out")
    assert code == 2
    assert err == [
        (f"{path}: error: 2 layer(s) of the net cannot be imported (hint: see docs/frontends/caffe.md "
        "for the supported layers)"),
        (f"  {path}:6:1: 'py': Python: python_param m.L: arbitrary Python code, which no TIDL layer or host "
         "runtime runs (replace it in the deploy prototxt with the Caffe layers it computes; a dropout-like "
         "layer named *dropout* is taken as the identity)"),
        f"  {path}:7:1: 'acc': unsupported layer type 'Accuracy'"]


def test_missing_weights_file(tmp_path, capsys):
    path = write(tmp_path, NET)
    code, _, err = tidlc(capsys, "compile", path, "--weights", tmp_path / "nope.caffemodel", "-o", tmp_path / "o")
    assert code == 2
    assert err == [(f"{tmp_path / 'nope.caffemodel'}: error: weights file not found "
                   "(hint: --weights takes the path of a .caffemodel)")]


def test_mismatched_and_extra_blobs(tmp_path, capsys, caffemodel_writer):
    path = write(tmp_path, NET)
    model = caffemodel_writer.write_caffemodel(tmp_path / "w.caffemodel", {
        "conv": ("Convolution", [np.zeros((4, 3, 5, 5)), np.zeros(4)]),
        "relu": ("ReLU", [np.zeros(1)])})
    code, _, err = tidlc(capsys, "compile", path, "--weights", model, "-o", tmp_path / "o")
    assert code == 2
    assert err == [
        f"{model}: error: 2 problem(s) with the weights (hint: is the caffemodel trained from this prototxt?)",
        (f"  {path}:3:1: 'conv': blob 0 (weight) in w.caffemodel has shape [4, 3, 5, 5], "
        "the prototxt implies [4, 3, 3, 3]"),
        f"  {path}:5:1: 'relu': w.caffemodel has 1 blob(s) for this ReLU layer, the prototxt uses 0"]


@pytest.mark.parametrize("spec,message", [
    ("data=1,3,8", ("{path}:2:1: 'data': error: --input-shape data: rank 3 but the prototxt declares "
                   "[1, 3, 8, 8] (hint: give one value per dimension)")),
    ("image=1,3,8,8", "error: --input-shape names unknown input(s) image (hint: the net's inputs are: data)"),
    ("data=1,3,2,2", "{path}:3:1: 'conv': error: conv2d: window 3 larger than padded input 2"),
])
def test_wrong_input_shape(tmp_path, capsys, spec, message):
    path = write(tmp_path, NET)
    code, _, err = tidlc(capsys, "compile", path, "--input-shape", spec, "--random-weights", "1",
                         "-o", tmp_path / "o")
    assert code == 2
    assert err == [message.format(path=path)]


def test_structure_only_compile_warns_once_and_writes_ir(tmp_path, capsys):
    path = write(tmp_path, NET)
    code, out, err = tidlc(capsys, "compile", path, "-o", tmp_path / "bin")  # default: net.bin, which needs weights
    assert code == 2 and out == [] and not (tmp_path / "bin").exists()
    assert err[1] == (f"{path}: error: the model has no weights (structure only), so net.bin cannot be written "
                      "(hint: pass --weights FILE or --random-weights SEED; --emit ir writes the structure-only "
                      "IR (for tidlc perf))")
    code, out, err = tidlc(capsys, "compile", path, "--emit", "ir", "-o", tmp_path / "out")
    assert code == 0
    assert err == [(f"warning: {path}: no weights (no --weights and no net.caffemodel beside it): "
                   "structure only, every weight is zero (hint: pass --weights FILE or --random-weights SEED to explore)")]
    assert out[1:] == [f"  wrote {tmp_path / 'out' / 'model.tir'}", f"  wrote {tmp_path / 'out' / 'model.weights'}"]
    text = (tmp_path / "out" / "model.tir").read_text()
    assert "missing_weights = true" in text.splitlines()[0]


def test_structure_only_run_is_refused_random_weights_run(tmp_path, capsys):
    path = write(tmp_path, NET)
    np.save(tmp_path / "x.npy", np.ones((1, 3, 8, 8), np.float32))
    code, out, err = tidlc(capsys, "run", path, "--input", tmp_path / "x.npy")
    assert code == 2 and out == []
    assert err[0].startswith("warning: ") and err[1].endswith(
        "net.prototxt: error: the model has no weights (structure only), so it cannot be run "
        "(hint: pass --weights FILE or --random-weights SEED)")
    code, out, err = tidlc(capsys, "run", path, "--input", tmp_path / "x.npy", "--random-weights", "3")
    assert code == 0 and err == [] and out[0].startswith("conv: float32 [1, 4, 6, 6] min 0 max ")


@pytest.mark.skipif(not EXAMPLE.is_file(), reason="example model not in this checkout")
def test_ultraface_example_compiles_and_runs_like_opencv(tmp_path, capsys, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    monkeypatch.chdir(tmp_path)
    code, out, err = tidlc(capsys, "compile", EXAMPLE, "-O2", "-o", "out/uf")
    # the caffemodel beside the prototxt is found: the one warning is quantization's (no --calib)
    assert code == 0 and len(err) == 1 and "no calibration data" in err[0] and "--calib" in err[0]
    assert out[1:] == ["  wrote out/uf/net.bin", "  wrote out/uf/io.bin"]
    if CORPUS.is_dir():
        img = cv2.imread(str(CORPUS / "cifar10_quick" / "samples" / "dog10.png"), cv2.IMREAD_COLOR)
        img = cv2.resize(img, (320, 240)).astype(np.float32)[:, :, ::-1]
    else:
        img = np.random.default_rng(0).uniform(0, 255, (240, 320, 3)).astype(np.float32)
    x = np.ascontiguousarray(((img - 127.0) / 128.0).transpose(2, 0, 1)[None], np.float32)
    np.save(tmp_path / "x.npy", x)
    net = cv2.dnn.readNetFromCaffe(str(EXAMPLE), str(EXAMPLE.with_suffix(".caffemodel")))
    net.setInput(x, "input")
    boxes, scores = net.forward(["boxes", "scores"])
    for level in ("-O0", "-O2"):
        code, out, err = tidlc(capsys, "run", EXAMPLE, level, "--input", f"input={tmp_path / 'x.npy'}",
                               "-o", tmp_path / "y.npz")
        assert code == 0 and err == [], err
        assert out[0].startswith("boxes: float32 [1, 4420, 4]") and out[1].startswith("scores: float32 [1, 4420, 2]")
        ours = np.load(tmp_path / "y.npz")
        for name, ref in (("boxes", boxes), ("scores", scores)):
            assert np.abs(ours[name] - ref.reshape(ours[name].shape)).max() <= 1e-4 * np.abs(ref).max()
    # the compiled (8-bit, synthetically calibrated) net.bin runs too, in fixed point, close to float
    code, out, err = tidlc(capsys, "run", "out/uf", "--input", f"input={tmp_path / 'x.npy'}",
                           "-o", tmp_path / "z.npz")
    assert code == 0, err
    fixed, real = np.load(tmp_path / "z.npz")["scores"], np.load(tmp_path / "y.npz")["scores"]
    snr = 10 * np.log10(np.sum(real.astype(np.float64) ** 2) / np.sum((fixed - real.astype(np.float64)) ** 2))
    assert snr > 25, snr


def test_no_weights_names_the_caffemodel_beside_it(tmp_path, capsys):
    """cifar10_quick.prototxt ships with cifar10_quick_iter_5000.caffemodel: not found by its name,
    so not used unasked, but the warning names it for --weights."""
    path = write(tmp_path, NET)
    (tmp_path / "net_iter_5000.caffemodel").write_bytes(b"")
    code, _, err = tidlc(capsys, "run", path, "--random-input", "1")
    assert code == 2
    assert err[0].endswith(f"every weight is zero (hint: pass --weights {tmp_path / 'net_iter_5000.caffemodel'} "
                           "(the caffemodel beside it), or --random-weights SEED to explore)"), err
    (tmp_path / "other.caffemodel").write_bytes(b"")
    code, _, err = tidlc(capsys, "run", path, "--random-input", "1")
    assert "(hint: pass --weights with one of net_iter_5000.caffemodel, other.caffemodel (beside it)" in err[0]
