"""The commands: compile (net.bin by default, --emit qir, --calib), run (fixed point), compare (table, JSON, plot)."""
import json
from pathlib import Path

import numpy as np
import pytest
from tidlc.backends.tidl.binfmt import read_compiled

from tidlc.cli import main

ROOT = Path(__file__).resolve().parents[2]
CIFAR = ROOT.parent / "shared" / "corpus" / "caffe" / "cifar10_quick"



def tidlc(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def model(tmp_path, small_caffe_net):
    path = tmp_path / "net.prototxt"
    path.write_text(small_caffe_net)
    rng = np.random.default_rng(0)
    calib = tmp_path / "calib.npy"
    np.save(calib, rng.uniform(-1, 1, (6, 1, 3, 12, 12)).astype(np.float32))
    x = tmp_path / "x.npy"
    np.save(x, rng.uniform(-1, 1, (1, 3, 12, 12)).astype(np.float32))
    return {"net": path, "calib": calib, "x": x, "dir": tmp_path}


def test_compile_quantizes_by_default_with_one_loud_warning(model, capsys):
    out_dir = model["dir"] / "out"
    code, _, err = tidlc(capsys, "compile", model["net"], "-O2", "--random-weights", "1", "-o", out_dir)
    assert code == 0
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: no calibration data") and "--calib DATA" in lines[0]
    graph = read_compiled(str(out_dir)).graph  # the default output: net.bin + io.bin
    assert graph.attrs["quantized"] is True and "data_convert" in [op.kind for op in graph.ops]
    code, _, err = tidlc(capsys, "compile", model["net"], "-O2", "--random-weights", "1", "--emit", "qir",
                         "-o", out_dir)
    assert code == 0
    text = (out_dir / "model.tir").read_text()
    assert "!q<" in text and "data_convert" in text and "quantized = true" in text.splitlines()[0]


def test_compile_with_calib_then_run_fixed_point(model, capsys):
    out_dir = model["dir"] / "q"
    code, out, err = tidlc(capsys, "compile", model["net"], "--random-weights", "1", "--calib", model["calib"],
                           "--calib-method", "mse", "-o", out_dir)
    assert code == 0 and err == ""
    attrs = read_compiled(str(out_dir)).graph.attrs
    assert attrs["quant.calib_frames"] == 6 and attrs["quant.calib_method"] == "mse"
    code, out, err = tidlc(capsys, "run", out_dir, "--input", model["x"], "-o", model["dir"] / "q.npz")
    assert code == 0, err
    code, _, err = tidlc(capsys, "run", model["net"], "--random-weights", "1", "--input", model["x"],
                         "-o", model["dir"] / "f.npz")
    assert code == 0, err
    fixed, real = np.load(model["dir"] / "q.npz")["prob"], np.load(model["dir"] / "f.npz")["prob"]
    assert fixed.dtype == np.float32 and fixed.shape == real.shape
    assert not np.array_equal(fixed, real) and np.abs(fixed - real).max() < 0.05
    code, out, err = tidlc(capsys, "run", out_dir, "--input", model["x"], "--raw",
                           "-o", model["dir"] / "raw.npz")
    assert code == 0 and "prob: uint8" in out


def test_compile_reports_the_output_snr_and_warns_when_it_is_low(model, capsys, monkeypatch):
    """PP-OCRv4's text recognizer compiled at 8 bits -O2 without a word (6 dB from float) and read
    none of 20 text lines: compile now says how far its net is from float on calibration frames,
    and warns with what to try when that is low. The figure is the compare/mixed-precision measure:
    the float graph against the fixed-point executor."""
    from tidlc.backends.tidl.quantize import api
    out_dir = model["dir"] / "snr"
    argv = ["compile", model["net"], "--random-weights", "1", "--calib", model["calib"], "-o", out_dir]
    code, out, err = tidlc(capsys, *argv)
    assert code == 0 and err == "", err
    (line,) = [x for x in out.splitlines() if "output SNR vs float" in x]
    db = float(line.split("output SNR vs float: ")[1].split(" dB")[0])
    assert 20 < db < 80 and "4 calibration frame(s)" in line
    monkeypatch.setattr(api, "LOW_SNR_DB", {8: db + 1, 16: db + 1})
    code, out, err = tidlc(capsys, *argv)
    assert code == 0 and err.startswith(f"warning: the 8-bit net is far from the float model: output SNR {db:.1f} dB")
    assert "-O3" in err and "--bits 16" in err and "tidlc compare" in err
    monkeypatch.setattr(api, "LOW_SNR_DB", {8: 1000.0, 16: 1000.0})
    code, out, err = tidlc(capsys, *argv, "-O3", "--bits", "16")
    assert "far from the float model" in err and "-O3 (" not in err and "--bits 16" not in err and "tidlc compare" in err
    code, out, err = tidlc(capsys, "compile", model["net"], "--random-weights", "1", "-o", out_dir)
    assert "output SNR" not in out + err.replace("no calibration data", "")  # random frames tell nothing


def test_emit_ir_keeps_float(model, capsys):
    out_dir = model["dir"] / "f"
    code, _, err = tidlc(capsys, "compile", model["net"], "--random-weights", "1", "--emit", "ir", "-o", out_dir)
    assert code == 0 and err == ""
    assert "!q<" not in (out_dir / "model.tir").read_text()
    code, out, _ = tidlc(capsys, "compile", model["net"], "--random-weights", "1", "--print-pipeline",
                         "--emit", "none", "-O0")
    assert out.splitlines()[0] == "shape-inference"
    code, out, _ = tidlc(capsys, "compile", model["net"], "--random-weights", "1", "--print-pipeline",
                         "--calib", model["calib"], "-O0", "-o", model["dir"] / "o0")
    assert out.splitlines()[0] == "shape-inference,quantize"


def test_sixteen_bits_and_bad_options(model, capsys):
    code, _, err = tidlc(capsys, "compile", model["net"], "--random-weights", "1", "--calib", model["calib"],
                         "--bits", "16", "-o", model["dir"] / "b16")
    assert code == 0, err
    graph = read_compiled(str(model["dir"] / "b16")).graph
    assert any(v.type.dtype == "u16" and v.type.shape == (1, 8, 12, 12) for op in graph.ops for v in op.results)
    code, _, err = tidlc(capsys, "compile", model["net"], "--random-weights", "1", "--calib", model["calib"],
                         "--16bit-layers", "conv,nope", "-o", model["dir"] / "bad")
    assert code == 2 and "unknown layer(s) nope" in err and "in pass 'quantize'" in err
    code, _, err = tidlc(capsys, "compile", model["net"], "--random-weights", "1", "--calib",
                         model["dir"] / "missing", "-o", model["dir"] / "bad")
    assert code == 2 and "no such file or folder" in err


def test_compare_prints_the_table_json_and_plot(model, capsys):
    report = model["dir"] / "report.json"
    argv = ["compare", model["net"], "--random-weights", "1", "--calib", model["calib"], "--input", model["x"],
            "--threshold", "80", "--json", report]
    try:  # matplotlib is optional
        import matplotlib  # noqa: F401
        argv += ["--plot", model["dir"] / "snr.png"]
    except ImportError:
        pass
    code, out, err = tidlc(capsys, *argv)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["layer", "op", "shape", "type"]
    assert any(line.startswith("> ") for line in lines)  # the first layer below 80 dB is marked
    assert "first layer below 80 dB:" in out and "likely cause:" in out
    doc = json.loads(report.read_text())
    names = [row["name"] for row in doc["layers"]]
    assert {"conv", "pool", "fc", "prob"} <= set(names)
    row = doc["layers"][names.index("conv")]
    assert row["dtype"] == "u8" and 0 <= row["saturated_pct"] <= 100 and -1 <= row["cosine"] <= 1
    assert sum(r["below"] for r in doc["layers"]) == 1
    if (model["dir"] / "snr.png").exists():
        assert (model["dir"] / "snr.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(not CIFAR.is_dir(), reason="corpus not available")
def test_compare_on_a_trained_model_with_images(tmp_path, capsys):
    samples = CIFAR / "samples"
    listing = tmp_path / "calib.txt"
    listing.write_text("".join(f"{p} 0\n" for p in sorted(samples.glob("*.png"))))
    code, out, err = tidlc(capsys, "compare", CIFAR / "cifar10_quick.prototxt", "--weights",
                           CIFAR / "cifar10_quick_iter_5000.caffemodel", "--calib", listing,
                           "--mean", "125.3,123.0,113.9", "--channel-order", "bgr",
                           "--input", samples / "dog10.png", "--threshold", "15")
    assert code == 0, err
    assert "every layer is at or above 15 dB" in out


@pytest.mark.parametrize("frames", [6, 32])
def test_o3_8_bit_prints_and_keeps_the_bias_calibration_verdict(model, capsys, frames):
    """-O3 at 8 bits checks its bias calibration on calibration frames it was not fitted on (24 or
    more; else it stays off and says why): `tidlc compile` prints the verdict, net.bin keeps it,
    and quant.bias_calibration is there only when it was kept."""
    calib = model["dir"] / f"calib{frames}.npy"
    np.save(calib, np.random.default_rng(1).uniform(-1, 1, (frames, 1, 3, 12, 12)).astype(np.float32))
    out_dir = model["dir"] / f"o3-{frames}"
    code, out, err = tidlc(capsys, "compile", model["net"], "-O3", "--random-weights", "1", "--calib", calib,
                           "-o", out_dir)
    assert code == 0, err
    verdicts = [line for line in out.splitlines() if line.startswith("  bias calibration: ")]
    assert len(verdicts) == 1, out
    attrs = read_compiled(str(out_dir)).graph.attrs
    assert verdicts[0] == "  bias calibration: " + attrs["quant.bias"]
    if frames < 24:
        assert attrs["quant.bias"].startswith("off: not checked (6 calibration frame(s)")
    else:
        assert "16 calibration frames it was not fitted on" in attrs["quant.bias"]
    assert ("quant.bias_calibration" in attrs) == attrs["quant.bias"].startswith("kept")


def test_compare_says_it_does_not_apply_partitioning(model, capsys):
    """The shared model options offer --deny-op-name and friends; compare quantizes the whole graph,
    so it says they are not applied instead of ignoring them."""
    code, out, err = tidlc(capsys, "compare", model["net"], "--random-weights", "1", "--calib", model["calib"],
                           "--input", model["x"], "--deny-op-name", "conv", "--max-subgraphs", "2",
                           "--no-attribution")
    assert code == 0, err
    assert "compare: --deny-op-name, --max-subgraphs not applied" in err and "tidlc run OUT" in err
    assert "first layer below" in out or "every layer is at or above" in out
