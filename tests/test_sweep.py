"""`tidlc sweep` (issue 15, item 3): models x grid -> one table; a rerun does no work; a failing
cell is reported and the others still run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


CAFFE = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "caffe"
pytestmark = pytest.mark.skipif(not CAFFE.is_dir(), reason="shared corpus not available")


def _config(tmp_path, extra_model: str = "") -> Path:
    lenet, cifar, pnet = CAFFE / "lenet_mnist", CAFFE / "cifar10_quick", CAFFE / "mtcnn"
    text = f"""
models = [{{path = "{lenet / 'mnist_deploy.prototxt'}", weights = "{lenet / 'lenet_iter_10000.caffemodel'}", scale = [0.00390625]}},
          {{path = "{cifar / 'cifar10_quick.prototxt'}", weights = "{cifar / 'cifar10_quick_iter_5000.caffemodel'}"}},
          {{path = "{pnet / 'det1.prototxt'}", mean = [127.5], scale = [0.0078125]}}{extra_model}]
[options]
calib_frames = 4
[grid]
bits = [8, 16]
calib_method = ["minmax", "histogram"]
"""
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_three_models_by_bits_by_calibration_then_a_rerun_does_nothing(cli, tmp_path):
    config, out = _config(tmp_path), tmp_path / "out"
    code, text, err = cli("sweep", config, "-o", out)
    assert code == 0, err
    assert "12 cells (12 computed, 0 reused)" in text
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["schema"] == "tidlc.sweep/1" and len(doc["rows"]) == 12 and not any(r["error"] for r in doc["rows"])
    for model in {r["model"] for r in doc["rows"]}:
        by_bits = {r["bits"]: r for r in doc["rows"] if r["model"] == model and r["calib_method"] == "minmax"}
        assert by_bits[16]["snr_db"] > by_bits[8]["snr_db"] and by_bits[16]["weight_kb"] > by_bits[8]["weight_kb"]
    assert (out / "sweep.csv").read_text().count("\n") == 13
    code, text, err = cli("sweep", config, "-o", out, "--json")
    assert code == 0, err
    again = json.loads(text)
    assert again["computed"] == 0 and again["reused"] == 12
    assert [r["snr_db"] for r in again["rows"]] == [r["snr_db"] for r in doc["rows"]]


def test_a_failing_cell_is_reported_and_the_sweep_goes_on(cli, tmp_path):
    bad = tmp_path / "missing.onnx"
    config = _config(tmp_path, f', {{path = "{bad}"}}')
    code, text, err = cli("sweep", config, "-o", tmp_path / "out")
    assert code == 1, err
    doc = json.loads((tmp_path / "out" / "sweep.json").read_text())
    errors = [r for r in doc["rows"] if r["error"]]
    assert len(errors) == 4 and all("missing.onnx" in r["model"] for r in errors)
    assert len([r for r in doc["rows"] if not r["error"]]) == 12
    assert "error: error:" not in text and text.count(" error: ") == 4, text


def test_a_failed_cell_runs_again_once_its_cause_is_fixed(cli, tmp_path):
    """A calibration folder that does not exist yet fails its cells; it is not part of their key (the
    options are), so a rerun reused the failure. Failed cells run again; the others are reused."""
    import shutil
    calib = tmp_path / "calib"
    pnet = CAFFE / "mtcnn" / "det1.prototxt"
    config = _config(tmp_path, f', {{path = "{pnet}", mean = [127.5], scale = [0.0078125], calib = "{calib}"}}')
    code, text, err = cli("sweep", config, "-o", tmp_path / "out", "--json")
    first = json.loads(text)
    assert code == 1 and [r["error"] is not None for r in first["rows"]].count(True) == 4, err
    calib.mkdir()
    for png in sorted((CAFFE / "cifar10_quick" / "samples").glob("*.png")):
        shutil.copy(png, calib)
    code, text, err = cli("sweep", config, "-o", tmp_path / "out", "--json")
    again = json.loads(text)
    assert code == 0 and again["computed"] == 4 and again["reused"] == 12, err
    assert not any(r["error"] for r in again["rows"])


def test_an_unknown_option_in_the_config_is_a_one_line_error(cli, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('models = ["m.onnx"]\n[options]\ncalib_frame = 4\n')
    code, _, err = cli("sweep", config, "-o", tmp_path / "o")
    assert code == 2 and "calib_frames" in err and len(err.strip().splitlines()) == 1
