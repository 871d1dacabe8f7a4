"""Parallel and distributed execution (issue 15, items 4-5; docs/scale.md): --workers N and --ray give
results identical to one process: calibration statistics merge exactly (net.bin bytes equal), eval
metrics and sweep tables equal."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from tidlc.backends.tidl.quantize.observers import BINS, RangeObserver, _coarsen

from tidlc.diagnostics import TidlcError
from tidlc.parallel import Executor, chunks, shards

CAFFE = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "caffe"
LENET = CAFFE / "lenet_mnist"
CIFAR = CAFFE / "cifar10_quick"
corpus = pytest.mark.skipif(not LENET.is_dir(), reason="shared corpus not available")
HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install \"tidlc[ray]\")")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (starting one takes seconds), shut down after it."""
    if not HAVE_RAY:
        pytest.skip("ray is not installed")
    import ray
    Executor(2, "local").slots()  # tidlc's own start: quiet, from a neutral working directory
    yield "local"
    ray.shutdown()


# ----------------------------------------------------------------------------- shards and the executor
def test_shards_are_contiguous_ordered_and_cover_everything():
    items = list(range(11))
    parts = shards(items, 3)
    assert parts == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert shards(items[:2], 4) == [[0], [1]] and shards([], 3) == []
    for n in range(1, 8):
        assert [x for p in shards(items, n) for x in p] == items


def test_chunks_stream_the_shards_in_bounded_pieces():
    drawn = []

    def stream():
        for i in range(10):
            drawn.append(i)
            yield i

    pieces = chunks(stream(), 10, 3, most=2)
    assert next(pieces) == [0, 1] and drawn == [0, 1]  # read as needed
    assert list(pieces) == [[2, 3], [4, 5], [6], [7, 8], [9]]  # within the shards [0-3] [4-6] [7-9]
    assert list(chunks(range(5), 3, 2)) == [[0, 1], [2], [3, 4]]  # a short total drops nothing


def _pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def _fail(x: int):
    if x == 2:
        raise TidlcError("job 2 is bad", "data.txt", hint="fix it", code="input")
    return x


def test_worker_processes_run_the_jobs_elsewhere_and_keep_their_order():
    results = Executor(2).map(_pid_and_square, list(range(6)))
    assert [r[1] for r in results] == [x * x for x in range(6)]
    assert os.getpid() not in {r[0] for r in results}  # really in other processes
    seen = []
    Executor(2).map(_pid_and_square, [1, 2, 3], done=lambda i, r: seen.append(i))
    assert sorted(seen) == [0, 1, 2]


def test_a_tidlc_error_in_a_worker_comes_back_whole():
    with pytest.raises(TidlcError) as info:
        Executor(2).map(_fail, [1, 2, 3])
    assert info.value.code == "input" and info.value.hint == "fix it" and "job 2 is bad" in str(info.value)


def test_bad_worker_counts_are_one_line_errors():
    with pytest.raises(TidlcError, match="--workers 0"):
        Executor(0)


def test_ray_missing_says_how_to_install(monkeypatch):
    import builtins
    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("no ray")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(TidlcError) as info:
        Executor(1, "local").map(_pid_and_square, [1])
    assert 'pip install "tidlc[ray]"' in str(info.value) and len(str(info.value).splitlines()) == 1


def test_a_ray_address_nobody_answers_is_a_one_line_error():
    import socket

    from tidlc.parallel import _check_reachable
    with socket.socket() as sock:  # a loopback port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TidlcError) as info:
        _check_reachable(f"127.0.0.1:{port}")
    assert "no Ray head answers" in str(info.value) and len(str(info.value).splitlines()) == 1
    _check_reachable("auto")  # left to Ray


# ----------------------------------------------------------------------------- exact histogram merges
def _frames(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = rng.normal(0, 0.5 * (i + 1), 500).astype(np.float32)
        x[0] = 2.0 ** (i % 4 - 1)  # exact powers of two: the value R itself lands in the top bin
        x[1] = -(2.0 ** (i % 3))
        if i == 3:
            x[:] = 0.0  # an all-zero frame
        out.append(x)
    return out


def _direct(values: np.ndarray, radius: float) -> np.ndarray:
    """The histogram of every value binned at ``radius`` at once (observers.py's layout)."""
    idx = np.floor(values.astype(np.float64) * (BINS / radius)).astype(np.int64) + BINS
    return np.bincount(idx, minlength=2 * BINS + 1)


def test_growing_histogram_equals_binning_at_the_final_radius():
    frames = _frames(0, 9)
    obs = RangeObserver()
    for x in frames:
        obs.update(x)
    np.testing.assert_array_equal(obs.counts, _direct(np.concatenate(frames), obs.radius))
    one = np.zeros(2 * BINS + 1, np.int64)
    one[2 * BINS] = 1  # the value R: at 4R it is bin BINS / 4
    assert _coarsen(one, 4)[BINS + BINS // 4] == 1


@pytest.mark.parametrize("cuts", [(1,), (4,), (2, 5, 7), (1, 2, 3, 4, 5, 6, 7, 8)])
def test_shard_observers_merge_into_exactly_the_one_pass_statistics(cuts):
    frames = _frames(1, 9)
    whole = RangeObserver(channel_axis=None)
    for x in frames:
        whole.update(x)
    merged = RangeObserver()
    for part in np.split(np.arange(len(frames)), cuts):
        obs = RangeObserver()
        for i in part:
            obs.update(frames[i])
        merged.merge(obs)
    assert (merged.lo, merged.hi, merged.radius, merged.count) == (whole.lo, whole.hi, whole.radius, whole.count)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    for method in ("minmax", "histogram", "entropy", "mse"):
        assert merged.range(method, levels=128) == whole.range(method, levels=128)


# ----------------------------------------------------------------------------- net.bin bytes
def _compile(cli, out: Path, *extra) -> bytes:
    code, _, err = cli("compile", LENET / "mnist_deploy.prototxt", "--weights", LENET / "lenet_iter_10000.caffemodel",
                       "--scale", "0.00390625", "--calib", LENET / "samples", "--calib-method", "entropy",
                       "-o", out, *extra)
    assert code == 0, err
    return (out / "net.bin").read_bytes()


@corpus
def test_calibration_in_two_workers_writes_the_same_net_bin(cli, tmp_path):
    one = _compile(cli, tmp_path / "one")
    assert _compile(cli, tmp_path / "two", "--workers", "2") == one
    assert _compile(cli, tmp_path / "three", "--workers", "3") == one


@corpus
@needs_ray
def test_calibration_on_ray_writes_the_same_net_bin(cli, tmp_path, local_ray):
    assert _compile(cli, tmp_path / "ray", "--ray") == _compile(cli, tmp_path / "one")


@corpus
@pytest.mark.parametrize("where", ["workers", "pieces", pytest.param("ray", marks=needs_ray)])
def test_cifar_calibration_statistics_are_identical_in_shards(where, request, monkeypatch):
    """Every observer of a real model (cifar10_quick on its samples), not just the bytes: its
    convolutions are large enough for numpy's BLAS to thread them, which changes float sums unless
    every worker uses the caller's BLAS thread count. "pieces": one frame per job, 2 workers."""
    from tidlc.backends.tidl.quantize import calibrate
    executor = {"workers": lambda: Executor(3), "pieces": lambda: Executor(2),
                "ray": lambda: Executor(3, request.getfixturevalue("local_ray"))}[where]()
    if where == "pieces":
        monkeypatch.setattr(calibrate, "SHARD_FRAMES", 1)
    import warnings

    from tidlc.backends.tidl.quantize.api import QuantSettings, calibration_frames, observed_values
    from tidlc.backends.tidl.quantize.calibrate import Calibration
    from tidlc.backends.tidl.quantize.prepare import prepare

    from tidlc.compiler import float_graph
    from tidlc.config import CompileOptions
    options = CompileOptions.of(weights=str(CIFAR / "cifar10_quick_iter_5000.caffemodel"), calib=str(CIFAR / "samples"))
    graph = prepare(float_graph(str(CIFAR / "cifar10_quick.prototxt"), options))[0].graph
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frames = list(calibration_frames(graph, QuantSettings.from_options(options))[0])
    wanted = observed_values(graph)
    serial = Calibration(graph, wanted).run(frames)
    sharded = Calibration(graph, wanted).run(frames, executor=executor)
    assert sharded.frames == serial.frames == len(frames) == 3  # the three samples, one shard each
    for vid, obs in serial.observers.items():
        other = sharded.observers[vid]
        assert (other.lo, other.hi, other.radius, other.count) == (obs.lo, obs.hi, obs.radius, obs.count)
        np.testing.assert_array_equal(other.counts, obs.counts)


# ----------------------------------------------------------------------------- eval and sweep
def _eval(cli, data, *extra) -> list[dict]:
    code, out, err = cli("eval", LENET / "mnist_deploy.prototxt", "--weights", LENET / "lenet_iter_10000.caffemodel",
                         "--scale", "0.00390625", "--data", data, "--calib", data, "--json", "-", *extra)
    assert code == 0, err
    return [{k: v for k, v in r.items() if k != "fps"} for r in json.loads(out)["rows"]]


@pytest.fixture(scope="module")
def labeled(tmp_path_factory) -> Path:
    listing = tmp_path_factory.mktemp("mnist") / "mnist.txt"
    listing.write_text("".join(f"{p} {p.name.split('_')[1]}\n" for p in sorted((LENET / "samples").glob("*.png"))))
    return listing


@corpus
@needs_ray
def test_eval_on_ray_equals_one_process(cli, labeled, local_ray):
    one = _eval(cli, labeled)
    assert _eval(cli, labeled, "--ray") == one
    assert _eval(cli, labeled, "--workers", "2") == one
    assert one[0]["top1"] == 1.0 and one[1]["snr_db"] is not None


@corpus
def test_sweep_cells_in_two_workers_and_on_ray_give_the_same_table(cli, tmp_path, request):
    config = tmp_path / "sweep.toml"
    config.write_text(f"""
models = [{{path = "{LENET / 'mnist_deploy.prototxt'}", weights = "{LENET / 'lenet_iter_10000.caffemodel'}", scale = [0.00390625]}},
          {{path = "{tmp_path / 'missing.onnx'}"}}]
[options]
calib_frames = 2
[grid]
bits = [8, 16]
""")
    docs = []
    runs = [("one", ()), ("two", ("--workers", "2"))]
    if HAVE_RAY:
        runs.append(("ray", ("--ray", request.getfixturevalue("local_ray"))))
    for name, extra in runs:
        code, out, err = cli("sweep", config, "-o", tmp_path / name, "--json", *extra)
        assert code == 1, err  # the missing model's cells fail, the others do not
        docs.append([{k: v for k, v in r.items() if k != "seconds"} for r in json.loads(out)["rows"]])
    assert all(doc == docs[0] for doc in docs) and len(docs[0]) == 4
    assert [bool(r["error"]) for r in docs[0]] == [False, False, True, True]


def test_float_runs_use_one_blas_thread_and_give_it_back():
    """The interpreter runs numpy's BLAS on one thread (same sums on any machine; idle OpenBLAS
    threads spinning took the integer kernels' cores) and leaves the process's setting as it was."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from tidlc.interp import Interpreter
    from tidlc.ir import Builder, TensorType

    def blas():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    if not blas():
        pytest.skip("no BLAS library found by threadpoolctl")
    b = Builder()
    x = b.input("x", TensorType((1, 4, 6, 6), layout="NCHW"))
    w = b.const(np.ones((8, 4, 3, 3), np.float32), "w")
    b.output(b.op("conv2d", [x, w], pads=(1, 1, 1, 1), name="c"), "y")
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        outside = blas()
        inside = []
        Interpreter(b.graph).run({"x": np.ones((1, 4, 6, 6), np.float32)}, lambda op, res: inside.extend(blas()))
        assert inside and set(inside) == {1}
        assert blas() == outside
        # nested blocks (quantization runs the interpreter): the outermost sets it and restores it
        from tidlc.parallel import one_blas_thread
        with one_blas_thread():
            with one_blas_thread():
                pass
            assert set(blas()) == {1}
        assert blas() == outside

