"""Crash safety of `tidlc compile`'s outputs (docs/format.md, "Writing"): a compile killed at any
moment, or two compiles into one folder at once, never leave a pair that `tidlc run` accepts
unless it is one complete, consistent compile; outputs are byte-identical whatever the hash seed."""
from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from tidlc.backends.tidl.binfmt import read_compiled
from tidlc.backends.tidl.binfmt.container import FORMAT_MAJOR

from tidlc.cli import main
from tidlc.diagnostics import TidlcError
from tidlc.fileio import folder_lock, temp_name

NET = '''name: "{name}"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 3 dim: 16 dim: 16 }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param {{ num_output: {channels} kernel_size: 3 pad: 1 }} }}
layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
layer {{ name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param {{ num_output: 5 }} }}
'''
PAIR = ("net.bin", "io.bin")


def compile_cmd(model: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tidlc.cli", "compile", str(model), "--random-weights", "0", "-o", str(out), *extra]


def env(**extra: str) -> dict:
    return {**os.environ, "TIDLC_NUM_THREADS": "1", **extra}


def run_cli(*argv) -> tuple[int, str]:
    """`tidlc ARGV` in-process: (exit code, stderr)."""
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, err.getvalue()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two different small models and their reference outputs (compiled in subprocesses)."""
    d = tmp_path_factory.mktemp("models")
    refs = {}
    for name, channels in (("a", 4), ("b", 6)):
        (d / f"{name}.prototxt").write_text(NET.format(name=name, channels=channels))
        out = d / f"ref_{name}"
        subprocess.run(compile_cmd(d / f"{name}.prototxt", out), cwd=d, env=env(), check=True, capture_output=True)
        refs[name] = {f: (out / f).read_bytes() for f in PAIR}
    assert refs["a"]["net.bin"] != refs["b"]["net.bin"]
    return d, refs


def which_pair(out: Path, refs: dict) -> tuple[str, str]:
    """Which model each of OUT's net.bin and io.bin belongs to (every file is complete)."""
    owners = []
    for f in PAIR:
        data = (out / f).read_bytes()
        owner = [name for name, files in refs.items() if files[f] == data]
        assert owner, f"{f} is torn or foreign ({len(data)} bytes)"
        owners.append(owner[0])
    return owners[0], owners[1]


def check_run(out: Path, refs: dict) -> str:
    """`tidlc run OUT` accepts a consistent pair and refuses a mixed one in one line."""
    net_of, io_of = which_pair(out, refs)
    code, err = run_cli("run", out, "--random-input", "0")
    if net_of == io_of:
        assert code == 0, err
        return "consistent"
    assert code == 2 and len(err.strip().splitlines()) == 1 and "different compiles" in err, err
    return "mixed"


def test_sigkill_at_random_points_never_leaves_an_accepted_torn_pair(models, tmp_path):
    d, refs = models
    out = tmp_path / "out"
    out.mkdir()
    for f in PAIR:
        (out / f).write_bytes(refs["a"][f])
    start = time.perf_counter()
    subprocess.run(compile_cmd(d / "b.prototxt", out), cwd=d, env=env(), check=True, capture_output=True)
    duration = time.perf_counter() - start
    rng = random.Random(11)
    outcomes = []
    for k in range(12):
        model = d / ("a.prototxt" if k % 2 == 0 else "b.prototxt")
        proc = subprocess.Popen(compile_cmd(model, out), cwd=d, env=env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 1.0) * duration)  # spans import, compile and the writes
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        outcomes.append(check_run(out, refs))
    assert set(outcomes) <= {"consistent", "mixed"}
    leftovers = [p.name for p in out.iterdir() if ".tmp" in p.name]
    subprocess.run(compile_cmd(d / "a.prototxt", out), cwd=d, env=env(), check=True, capture_output=True)
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name], leftovers  # stale temps removed
    assert which_pair(out, refs) == ("a", "a")


def test_a_kill_between_the_two_renames_is_refused(models, tmp_path, monkeypatch):
    """The one moment a kill can mix the pair (net.bin renamed, io.bin not yet): `tidlc run` refuses it."""
    d, refs = models
    out = tmp_path / "out"
    assert run_cli("compile", d / "a.prototxt", "--random-weights", "0", "-o", out)[0] == 0
    real_replace = os.replace

    class Killed(BaseException):
        pass

    def replace_then_die(src, dst):
        real_replace(src, dst)
        if str(dst).endswith("net.bin"):
            raise Killed  # what SIGKILL would do here: nothing more
    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(Killed):
        run_cli("compile", d / "b.prototxt", "--random-weights", "0", "-o", out)
    monkeypatch.undo()
    assert which_pair(out, refs) == ("b", "a")
    assert check_run(out, refs) == "mixed"


def test_hash_seed_does_not_change_the_outputs(models, tmp_path):
    d, _ = models
    script = ("import sys; from tidlc.cli import main; m, o = sys.argv[1:]; "
              "assert main(['compile', m, '--random-weights', '0', '-o', o + '/bin']) == 0; "
              "assert main(['compile', m, '--random-weights', '0', '--emit', 'qir', '-o', o + '/qir']) == 0")
    for seed in ("1", "987"):
        subprocess.run([sys.executable, "-c", script, str(d / "a.prototxt"), str(tmp_path / seed)], cwd=d,
                       env=env(PYTHONHASHSEED=seed), check=True, capture_output=True)
    for name in ("bin/net.bin", "bin/io.bin", "qir/model.tir", "qir/model.weights"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "987" / name).read_bytes(), name


def test_concurrent_compiles_into_one_folder_leave_one_consistent_pair(models, tmp_path):
    d, refs = models
    for k in range(2):
        out = tmp_path / f"out{k}"
        procs = [subprocess.Popen(compile_cmd(d / f"{m}.prototxt", out), cwd=d, env=env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for m in "ab"]
        for p in procs:
            assert p.wait() == 0, p.stderr.read()
        assert check_run(out, refs) == "consistent"
        assert not [p.name for p in out.iterdir() if ".tmp" in p.name]


def test_the_pair_is_renamed_under_the_folder_lock(models, tmp_path):
    """A compile that finished writing its temp files waits for the lock before renaming either."""
    d, refs = models
    out = tmp_path / "out"
    assert run_cli("compile", d / "a.prototxt", "--random-weights", "0", "-o", out)[0] == 0
    with folder_lock(str(out)):
        proc = subprocess.Popen(compile_cmd(d / "b.prototxt", out), cwd=d, env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len([p for p in out.iterdir() if ".tmp" in p.name]) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert proc.poll() is None and which_pair(out, refs) == ("a", "a")  # blocked, nothing renamed
    assert proc.wait(timeout=60) == 0
    assert which_pair(out, refs) == ("b", "b")


def test_stale_temps_of_dead_writers_are_removed_and_never_read(models, tmp_path):
    d, refs = models
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f"net.bin.tmp{dead.pid}"
    stale.write_bytes(refs["b"]["net.bin"])
    with pytest.raises(TidlcError, match="no net.bin in this folder"):  # a temp is never taken for the net
        read_compiled(str(out))
    live = out / f"io.bin.tmp{os.getppid()}"  # a running process's temp: a concurrent compile's
    live.write_bytes(b"x")
    assert run_cli("compile", d / "a.prototxt", "--random-weights", "0", "-o", out)[0] == 0
    assert not stale.exists() and live.exists()
    assert not Path(temp_name(str(out / "net.bin"))).exists()


def test_a_mismatched_pair_is_one_line_naming_both_files(models, tmp_path):
    d, refs = models
    (tmp_path / "net.bin").write_bytes(refs["a"]["net.bin"])
    (tmp_path / "io.bin").write_bytes(refs["b"]["io.bin"])
    code, err = run_cli("run", tmp_path, "--random-input", "0")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{tmp_path / 'io.bin'}: error: io.bin was not written with {tmp_path / 'net.bin'}" in err
    assert "recompile" in err
    with pytest.raises(TidlcError) as info:
        read_compiled(str(tmp_path))
    assert info.value.code == "mismatch"


def _with_major(data: bytes, major: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into("<H", buf, 8, major)
    n = struct.unpack_from("<I", buf, 20)[0]
    buf[56:60] = b"\0\0\0\0"
    struct.pack_into("<I", buf, 56, zlib.crc32(bytes(buf[:64 + 32 * n])))
    return bytes(buf)


def test_files_of_the_previous_format_ask_for_a_recompile(models, tmp_path):
    _, refs = models
    (tmp_path / "net.bin").write_bytes(_with_major(refs["a"]["net.bin"], FORMAT_MAJOR - 1))
    (tmp_path / "io.bin").write_bytes(refs["a"]["io.bin"])
    code, err = run_cli("run", tmp_path, "--random-input", "0")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"net.bin format {FORMAT_MAJOR - 1}.0 is older than this tidlc reads" in err and "recompile" in err


def test_perf_reports_the_settings_the_net_was_compiled_with(models, tmp_path):
    d, _ = models
    (tmp_path / "import.txt").write_text(f"modelType = 0\ninputNetFile = {d / 'a.prototxt'}\n"
                                         f"outputNetFile = {tmp_path / 'out' / 'net.bin'}\n"
                                         f"outputParamsFile = {tmp_path / 'out' / 'io'}\n"
                                         "numBatches = 4\nmsmcSizeKB = 2048\n")
    assert run_cli("compile", tmp_path / "import.txt", "--random-weights", "0")[0] == 0
    for extra, expected in (((), (4, 2048)), (("--batches", "2", "--msmc-size", "512"), (2, 512))):
        import contextlib
        import io
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["perf", str(tmp_path / "out"), "--json", *extra]) == 0
        settings = json.loads(buf.getvalue())["settings"]
        assert (settings["batches"], settings["msmc_kb"]) == expected, extra


def test_a_tir_never_pairs_with_another_compiles_weights(models, tmp_path):
    """--emit qir writes model.weights then model.tir; the .tir names its sidecar's digest, so a kill
    between the two renames (new weights beside the old text) is refused, not run with wrong weights."""
    d, _ = models
    for name in ("a", "b"):
        assert run_cli("compile", d / "a.prototxt", "--random-weights", "0" if name == "a" else "1",
                       "--emit", "qir", "-o", tmp_path / name)[0] == 0
    assert run_cli("run", tmp_path / "a" / "model.tir", "--random-input", "0")[0] == 0
    (tmp_path / "a" / "model.weights").write_bytes((tmp_path / "b" / "model.weights").read_bytes())
    code, err = run_cli("run", tmp_path / "a" / "model.tir", "--random-input", "0")
    assert code == 2 and err.count("\n") == 1
    assert "model.weights: error: the weights file was not written with this IR text" in err
