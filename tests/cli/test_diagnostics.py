"""--diagnostics json, --limit, compile/run --json, special files: the CLI's contract for errors."""
from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import re
import subprocess
import sys

import attrs
import pytest

from tidlc.cli import main
from tidlc.diagnostics import CODES
from tidlc.limits import Limits

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"


def tidlc(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def tiny(tmp_path, small_caffe_net) -> pathlib.Path:
    path = tmp_path / "small.prototxt"
    path.write_text(small_caffe_net)
    return path


def test_errors_md_lists_every_code_and_every_limit():
    doc = (DOCS / "errors.md").read_text()
    codes = re.findall(r"^\| `([a-z]+)` \| [^|]+ \|$", doc, flags=re.M)
    assert codes == list(CODES)
    limits = re.findall(r"^\| `([a-z-]+)` \| [^|]+ \| [^|]+ \|$", doc, flags=re.M)
    assert limits == Limits.names()


def test_json_diagnostics_for_an_error(tmp_path):
    code, out, err = tidlc("--diagnostics", "json", "ir", tmp_path / "missing.onnx")
    doc = json.loads(err)
    assert code == 2 and doc["exit_code"] == 2 and doc["schema"] == "tidlc.diagnostics/1"
    (item,) = doc["diagnostics"]
    assert item["severity"] == "error" and item["code"] == "file"
    assert item["location"] == {"file": str(tmp_path / "missing.onnx")}


def test_json_diagnostics_carry_warnings_with_codes(tiny, tmp_path):
    code, out, err = tidlc("--diagnostics", "json", "compile", tiny, "--random-weights", "0", "-o", tmp_path / "o")
    doc = json.loads(err)
    assert code == 0 and doc["exit_code"] == 0
    warnings = [d for d in doc["diagnostics"] if d["severity"] == "warning"]
    assert warnings and all(d["code"] in CODES for d in warnings)
    assert any(d["code"] == "calibration" for d in warnings)  # synthetic frames: no --calib


def test_text_diagnostics_are_one_line_each(tmp_path):
    code, out, err = tidlc("ir", tmp_path / "missing.onnx")
    assert code == 2 and err.count("\n") == 1 and "error: no such file" in err


def test_unknown_limit_is_an_option_error():
    code, _, err = tidlc("--limit", "tensr-bytes=1G", "plugins")
    assert code == 2 and "unknown limit 'tensr-bytes=1G'" in err and "did you mean tensor-bytes" in err


@pytest.fixture
def input_npy(tmp_path) -> pathlib.Path:
    import numpy as np
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((1, 3, 12, 12), np.float64))  # 3456 bytes of data (the model's input: 1728)
    return path


@pytest.fixture
def relu_net(tmp_path) -> pathlib.Path:
    path = tmp_path / "relu.prototxt"
    path.write_text('input: "data"\ninput_shape { dim: 1 dim: 3 dim: 12 dim: 12 }\n'
                    'layer { name: "relu" type: "ReLU" bottom: "data" top: "out" }\n')
    return path


def test_a_lowered_limit_stops_the_reader_and_names_the_flag(relu_net, input_npy):
    tiny = relu_net
    code, _, err = tidlc("--limit", "tensor-bytes=2K", "run", tiny, "--random-weights", "0", "--input", input_npy)
    assert code == 2
    assert f"{input_npy}: error: array needs 3.4 KiB, over the tensor-bytes limit of 2 KiB" in err
    assert "(hint: raise it with --limit tensor-bytes=4K if the file is trusted)" in err
    assert tidlc("--limit", "tensor-bytes=4K", "run", tiny, "--random-weights", "0", "--input", input_npy)[0] == 0


def test_limits_from_the_environment(relu_net, input_npy, monkeypatch):
    tiny = relu_net
    monkeypatch.setenv("TIDLC_LIMITS", "tensor-bytes=2K")
    code, _, err = tidlc("run", tiny, "--random-weights", "0", "--input", input_npy)
    assert code == 2 and "tensor-bytes limit" in err


def test_compile_json_summary(tiny, tmp_path):
    code, out, err = tidlc("compile", tiny, "--random-weights", "0", "-o", tmp_path / "o", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["schema"] == "tidlc.compile/1"
    assert doc["outputs"] == [str(tmp_path / "o" / "net.bin"), str(tmp_path / "o" / "io.bin")]
    assert doc["ops"] == sum(doc["op_kinds"].values()) > 0 and doc["opt_level"] == 2


def test_run_json_summary_source_model_and_compiled(tiny, tmp_path):
    code, out, _ = tidlc("run", tiny, "--random-weights", "0", "--random-input", "0", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["schema"] == "tidlc.run/1"
    (name, entry), = doc["outputs"].items()
    assert entry["shape"] == [1, 5] and entry["dtype"] == "float32"
    assert abs(entry["mean"] * 5 - 1.0) < 1e-5  # a softmax over 5 classes
    assert tidlc("compile", tiny, "--random-weights", "0", "-o", tmp_path / "o")[0] == 0
    code, out, _ = tidlc("run", tmp_path / "o", "--random-input", "0", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["schema"] == "tidlc.run/1" and list(doc["outputs"]) == [name]


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "empty"])
def test_special_files_are_refused_by_name_without_blocking(tmp_path, kind):
    path = tmp_path / "model.onnx"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"")
    # a subprocess with a timeout: a regression here would block forever
    proc = subprocess.run([sys.executable, "-m", "tidlc.cli", "ir", str(path)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    want = {"fifo": "is a FIFO (named pipe)", "device": "is a character device", "directory": "is a directory",
            "empty": "error:"}[kind]
    assert proc.returncode == 2 and want in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_limits_defaults_are_documented_values():
    assert attrs.fields(Limits).tensor_bytes.default == 1 << 30
