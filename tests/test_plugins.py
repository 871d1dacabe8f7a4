"""The third-party plugin path, end to end, plus the plugin manager's rules.

``tests/plugin_pkg`` is a real external package (``tidlc-example-plugin``:
a Darknet ``.cfg`` frontend, a ``swish`` op, the ``decompose-swish`` pass, a
pass-log instrument). It is pip-installed into a temporary directory and the
``tidlc`` CLI runs in subprocesses with that directory on PYTHONPATH, so the
plugin is found exactly as an installed one is: through its entry point.
The in-process tests at the end exercise ``create_plugins`` directly.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest

from tidlc.diagnostics import TidlcError
from tidlc.hookspecs import hookimpl
from tidlc.ir.builder import Builder
from tidlc.ir.opdef import OPS, OpDef
from tidlc.ir.types import TensorType
from tidlc.passes.base import Pass
from tidlc.passes.manager import PassManager
from tidlc.plugin_manager import create_plugins

PACKAGE = Path(__file__).parent / "plugin_pkg"


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """tidlc-example-plugin installed with pip into a fresh target directory (offline)."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "src"  # build a copy: pip writes build/ and *.egg-info beside setup.py
    shutil.copytree(PACKAGE, source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = root / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--target", str(target), str(source)],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (target / "tidlc_example_plugin").is_dir()
    assert list(target.glob("tidlc_example_plugin-0.1.0.dist-info/entry_points.txt"))
    return target


@attrs.frozen
class Run:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
def tidlc(site, tmp_path_factory):
    """``tidlc(*args)``: the CLI in a subprocess that sees the installed plugin."""
    workdir = tmp_path_factory.mktemp("cli")

    def run(*args: str, env: dict | None = None) -> Run:
        environ = dict(os.environ)
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), environ.get("PYTHONPATH")]))
        environ.pop("TIDLC_EXAMPLE_PASS_LOG", None)
        environ.update(env or {})
        result = subprocess.run([sys.executable, "-m", "tidlc.cli", *map(str, args)], cwd=workdir,
                                env=environ, capture_output=True, text=True, timeout=120, check=False)
        return Run(result.returncode, result.stdout, result.stderr)

    return run


# A small classifier with every supported layer kind that carries numerics.
CFG = """\
# tiny darknet classifier for tests
[net]
batch=64
width=10
height=9
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=6
size=3
stride=2
pad=1
activation=swish

[convolutional]
batch_normalize=1
filters=6
size=1
stride=1
activation=mish

[shortcut]
from=-2
activation=linear

[route]
layers=-1,-3

[dropout]
probability=0.5

[avgpool]

[connected]
output=7
activation=linear

[softmax]
"""


def _bn_stats(rng, n):
    return (rng.uniform(0.5, 2.0, n), rng.normal(0, 0.3, n), rng.uniform(0.2, 2.0, n))


def make_weights(seed: int = 7) -> dict:
    """Darknet blobs per layer, in file order (float32)."""
    rng = np.random.default_rng(seed)

    def f32(a):
        return np.asarray(a, np.float32)

    w = {}
    w["conv0"] = {"biases": f32(rng.normal(0, 0.5, 8)), "stats": [f32(s) for s in _bn_stats(rng, 8)],
                  "weights": f32(rng.normal(0, 0.5, (8, 3, 3, 3)))}
    w["conv2"] = {"biases": f32(rng.normal(0, 0.5, 6)),
                  "weights": f32(rng.normal(0, 0.4, (6, 8, 3, 3)))}
    w["conv3"] = {"biases": f32(rng.normal(0, 0.5, 6)), "stats": [f32(s) for s in _bn_stats(rng, 6)],
                  "weights": f32(rng.normal(0, 0.6, (6, 6, 1, 1)))}
    w["fc8"] = {"biases": f32(rng.normal(0, 0.5, 7)), "weights": f32(rng.normal(0, 1.5, (7, 12)))}
    return w


def write_weights(path: Path, w: dict) -> None:
    """The darknet .weights layout: major, minor, revision (int32), seen (int64), blobs."""
    blobs = [np.array([0, 2, 5], "<i4").tobytes(), np.array([123456], "<i8").tobytes()]
    for layer in ("conv0", "conv2", "conv3"):
        blobs.append(w[layer]["biases"].tobytes())
        blobs += [s.tobytes() for s in w[layer].get("stats", [])]
        blobs.append(w[layer]["weights"].tobytes())
    blobs += [w["fc8"]["biases"].tobytes(), w["fc8"]["weights"].tobytes()]
    path.write_bytes(b"".join(blobs))


# ---- an independent numpy forward pass with darknet's definitions

def windows_of(x, size, stride):
    """(N, C, H, W) -> (N, C, Ho, Wo, size, size) sliding windows."""
    views = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(2, 3))
    return views[:, :, ::stride, ::stride]


def np_conv(x, w, stride, pad):
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = windows_of(xp, w.shape[2], stride)
    return np.einsum("nchwij,ocij->nohw", windows, w, optimize=True)


def np_batchnorm(y, biases, stats):
    scales, mean, variance = (s.reshape(1, -1, 1, 1) for s in stats)
    return (y - mean) / (np.sqrt(variance) + 1e-6) * scales + biases.reshape(1, -1, 1, 1)


def np_maxpool(x, size, stride):
    padding = size - 1
    xp = np.pad(x, ((0, 0), (0, 0), (padding // 2, padding - padding // 2),
                    (padding // 2, padding - padding // 2)), constant_values=-np.inf)
    return windows_of(xp, size, stride).max(axis=(4, 5))


def reference(x: np.ndarray, w: dict, logits: bool = False) -> np.ndarray:
    x = x.astype(np.float64)
    y = np_batchnorm(np_conv(x, w["conv0"]["weights"], 1, 1), w["conv0"]["biases"], w["conv0"]["stats"])
    y = np.where(y > 0, y, 0.1 * y)                                      # leaky
    y = np_maxpool(y, 2, 2)                                              # 9x10 -> 5x5
    y2 = np_conv(y, w["conv2"]["weights"], 2, 1) + w["conv2"]["biases"].reshape(1, -1, 1, 1)
    y2 = y2 / (1 + np.exp(-y2))                                          # swish
    y3 = np_conv(y2, w["conv3"]["weights"], 1, 0)
    y3 = np_batchnorm(y3, w["conv3"]["biases"], w["conv3"]["stats"])
    y3 = y3 * np.tanh(np.log1p(np.exp(y3)))                              # mish
    y4 = y3 + y2                                                         # shortcut from=-2
    y5 = np.concatenate([y4, y2], axis=1)                                # route -1,-3
    pooled = y5.mean(axis=(2, 3))                                        # avgpool
    z = pooled @ w["fc8"]["weights"].T + w["fc8"]["biases"]              # connected
    if logits:
        return z
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> dict:
    """tiny.cfg + tiny.weights + an input, and the expected output."""
    root = tmp_path_factory.mktemp("darknet")
    cfg = root / "tiny.cfg"
    cfg.write_text(CFG)
    w = make_weights()
    write_weights(root / "tiny.weights", w)
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, 9, 10)).astype(np.float32)
    np.save(root / "x.npy", x)
    return {"root": root, "cfg": cfg, "x": root / "x.npy", "expected": reference(x, w)}


def pipeline_of(run: Run) -> list[str]:
    """The pass names of the first stdout line (what --print-pipeline prints)."""
    return [re.sub(r"\{.*\}$", "", item) for item in run.out.splitlines()[0].split(",")]


def swish_ops(ir_text: str) -> int:
    return len(re.findall(r"= swish\(", ir_text))


# ----------------------------------------------------------------------------- installed plugin

def test_installed_plugin_is_listed_with_its_pass_frontend_and_op(tidlc):
    run = tidlc("plugins")
    assert run.code == 0, run.err
    text = run.out
    assert re.search(r"^  example\s+tidlc-example-plugin 0\.1\.0$", text, re.MULTILINE)
    assert re.search(r"^  darknet\s+\.cfg\s+Darknet cfg.*\[example\]$", text, re.MULTILINE)
    assert re.search(r"^  decompose-swish\s+-O2 .*\[example\]$", text, re.MULTILINE)
    assert re.search(r"^  swish +\[example\]$", text, re.MULTILINE)
    for builtin in ("cleanup", "fuse", "tir"):  # builtins are listed by the same registry
        assert re.search(rf"^  {builtin}\s+builtin$", text, re.MULTILINE)


def test_declared_schedule_puts_the_pass_before_fuse_batchnorm_at_o2_only(tidlc, model):
    o2 = tidlc("compile", model["cfg"], "-O2", "--print-pipeline", "--emit", "none")
    assert o2.code == 0, o2.err
    names = pipeline_of(o2)
    assert names.count("decompose-swish") == 1
    assert names.index("decompose-swish") == names.index("fuse-batchnorm") - 1
    o1 = tidlc("compile", model["cfg"], "-O1", "--print-pipeline", "--emit", "none")
    assert o1.code == 0, o1.err
    assert "decompose-swish" not in pipeline_of(o1)


def test_darknet_model_compiles_and_runs_like_numpy(tidlc, model):
    out = model["root"] / "out"
    compiled = tidlc("compile", model["cfg"], "--emit", "ir", "-o", out)  # float IR (net.bin is the default)
    assert compiled.code == 0, compiled.err
    assert (out / "model.tir").is_file() and (out / "model.weights").is_file()
    for source in (out / "model.tir", model["cfg"]):  # compiled at -O2; source run at -O0
        result = model["root"] / f"result-{source.suffix[1:]}.npz"
        ran = tidlc("run", source, "--input", model["x"], "-o", result)
        assert ran.code == 0, ran.err
        with np.load(result) as outputs:
            assert list(outputs) == ["softmax9"]
            np.testing.assert_allclose(outputs["softmax9"], model["expected"], rtol=1e-4, atol=1e-6)
    assert model["expected"].max() > 0.5  # a peaked distribution: the comparison means something


def test_decompose_swish_really_rewrites_the_graph(tidlc, model):
    source = tidlc("ir", model["cfg"])  # -O0: as imported
    assert source.code == 0, source.err
    assert swish_ops(source.out) == 1
    assert " scale(" in source.out  # darknet batch norm, before fuse-batchnorm folds it
    optimized = tidlc("ir", model["cfg"], "-O2")
    assert optimized.code == 0, optimized.err
    assert swish_ops(optimized.out) == 0
    gate = re.search(r"%(\d+) = sigmoid\(%(\d+)\)", optimized.out)
    assert gate, optimized.out
    assert re.search(rf"= mul\(%{gate.group(2)}, %{gate.group(1)}\)", optimized.out)  # x * sigmoid(x)
    assert " scale(" not in optimized.out


def test_swish_is_quantized_by_its_traits_without_being_decomposed(tidlc, model):
    """The op declares ELEMENTWISE, LAYOUT_AGNOSTIC and LUT (tests/passes/test_traits.py has the
    layout side): the quantize pass computes it in fixed point like a builtin activation."""
    out = model["root"] / "qir"
    run = tidlc("-p", "shape-inference,quantize", "compile", model["cfg"], "--emit", "qir", "-o", out)
    assert run.code == 0, run.err
    text = (out / "model.tir").read_text()
    assert swish_ops(text) == 1
    assert re.search(r"= swish\(%\d+\)[^\n]*: tensor<[0-9x]+x[iu]8, ", text), text  # not a float island


def test_pass_options_come_from_the_pipeline_string(tidlc, model):
    approx = tidlc("-p", "shape-inference,decompose-swish{approximate=true}", "ir", model["cfg"])
    assert approx.code == 0, approx.err
    assert swish_ops(approx.out) == 0
    assert len(re.findall(r"= hardswish\(", approx.out)) == 1
    bad = tidlc("-p", "decompose-swish{approximate=maybe}", "ir", model["cfg"])
    assert bad.code == 2
    assert "approximate" in bad.err and "Traceback" not in bad.err


def test_instrument_sees_every_pass(tidlc, model, tmp_path):
    log = tmp_path / "passes.log"
    run = tidlc("compile", model["cfg"], "--print-pipeline", "--emit", "none",
                env={"TIDLC_EXAMPLE_PASS_LOG": str(log)})
    assert run.code == 0, run.err
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    assert [row[0] for row in rows] == run.out.splitlines()[0].split(",")
    by_pass = {row[0]: row for row in rows}
    assert by_pass["decompose-swish"][1] == "changed"
    assert by_pass["shape-inference"][1] == "unchanged"
    assert all(float(row[2]) >= 0 and int(row[3]) > 0 for row in rows)


def test_blocking_the_plugin_removes_everything_it_provides(tidlc, model):
    listing = tidlc("-p", "no:example", "plugins")
    assert listing.code == 0, listing.err
    assert "example" not in listing.out and "darknet" not in listing.out
    assert "decompose-swish" not in listing.out
    builtin = re.search(r"^ops: \d+ builtin \((.*)\)$", listing.out, re.MULTILINE).group(1).split(", ")
    assert "swish" not in builtin and "hardswish" in builtin
    assert not re.search(r"^  swish ", listing.out, re.MULTILINE)
    compiled = tidlc("-p", "no:example", "compile", model["cfg"])
    assert compiled.code == 2
    assert compiled.err.count("\n") == 1 and "unrecognised model format" in compiled.err
    assert compiled.out == ""


def test_blocking_a_builtin_uses_the_same_path(tidlc, model):
    listing = tidlc("-p", "no:fuse", "plugins")
    assert listing.code == 0, listing.err
    assert not re.search(r"^  fuse\s", listing.out, re.MULTILINE)
    assert "fuse-batchnorm" not in listing.out and "fuse-activation" not in listing.out
    run = tidlc("-p", "no:fuse", "compile", model["cfg"], "-O2", "--print-pipeline", "--emit", "none")
    assert run.code == 0, run.err
    names = pipeline_of(run)
    assert not {"fuse-batchnorm", "fuse-activation"} & set(names)
    assert "decompose-swish" in names  # the plugin copes with its anchor being absent


def test_darknet_errors_are_one_line_per_problem(tidlc, model, tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text("[net]\nwidth=8\nheight=8\nchannels=3\n\n[convolutional]\nfilters=4\nsize=3\n"
                   "activation=gelu_fast\n\n[upsample]\nstride=2\n\n[yolo]\nclasses=2\n")
    run = tidlc("compile", bad, "--random-weights", "0")
    assert run.code == 2
    lines = run.err.splitlines()
    assert "3 unsupported Darknet feature(s)" in lines[0]
    assert lines[1:] == [f"  {bad}:9: activation=gelu_fast is not supported",
                         f"  {bad}:11: layer 1 [upsample] is not supported",
                         f"  {bad}:14: layer 2 [yolo] is not supported"]

    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(CFG)
    missing = tidlc("compile", cfg)
    assert missing.code == 2
    assert "tiny.weights not found" in missing.err and "--random-weights" in missing.err
    assert tidlc("compile", cfg, "--random-weights", "5", "--emit", "none").code == 0

    (tmp_path / "tiny.weights").write_bytes((model["root"] / "tiny.weights").read_bytes()[:-40])
    short = tidlc("compile", cfg)
    assert short.code == 2 and short.err.count("\n") == 1
    assert "weights file ends early: connected8 needs 84 weights" in short.err


def test_plugin_backend_is_listed_and_selected_by_target(tidlc, model, site):
    """The plugin's ``float-ref`` backend (tidlc_backends hook): listed beside the builtin ones,
    chosen by --target, and its compiled folder loads and runs through the contract."""
    run = tidlc("plugins")
    assert run.code == 0, run.err
    assert re.search(r"^  float-ref\s+\[example\]$", run.out, re.MULTILINE), run.out
    for builtin in ("tidl", "onnx-qdq"):
        assert re.search(rf"^  {builtin}\s+\[{builtin}\]$", run.out, re.MULTILINE), run.out
    unknown = tidlc("compile", model["cfg"], "--target", "nope")
    assert unknown.code == 2 and "float-ref, onnx-qdq, tidl" in unknown.err

    out = model["root"] / "float-ref"
    compiled = tidlc("compile", model["cfg"], "--target", "float-ref", "--emit", "bin", "-o", out)
    assert compiled.code == 0, compiled.err
    assert sorted(p.name for p in out.iterdir()) == ["float-ref.json", "float.tir", "float.weights"]
    text = (out / "float.tir").read_text()
    assert "!q<" not in text and "data_convert" not in text  # the backend's pipeline has no quantize

    # the backend's own API, in a subprocess that sees the plugin (importing it here would leak
    # its modules and entry points into the tests that run after this one)
    check = (
        "import sys, numpy as np\n"
        "from tidlc_example_plugin.backend import FloatRefBackend\n"
        "out, root, x = sys.argv[1:4]\n"
        "b = FloatRefBackend()\n"
        "assert b.recognizes(out) and not b.recognizes(root)\n"
        "e = b.load(out)\n"
        "((name, shape, dtype),) = e.input_info()\n"
        "assert tuple(shape) == (1, 3, 9, 10) and dtype == 'float32', (shape, dtype)\n"
        "np.save(sys.argv[4], e.run({name: np.load(x)})['softmax9'])\n")
    got_path = model["root"] / "float-ref-out.npy"
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", check, str(out), str(model["root"]), str(model["x"]), str(got_path)],
                            env=environ, cwd=model["root"],  # not the checkout: `-c` imports from the cwd
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(got_path), model["expected"], rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- in process

@attrs.frozen
class _Relu2(Pass):
    name = "relu2"
    summary = "test pass"

    def run(self, ctx, graph) -> bool:
        return False


class _ProvidesPass:
    def __init__(self, cls):
        self.cls = cls

    @hookimpl
    def tidlc_passes(self):
        return [self.cls]


def test_duplicate_pass_names_are_an_error_naming_both_plugins():
    with pytest.raises(TidlcError) as info:
        create_plugins(load_entry_points=False, extra=[("first", _ProvidesPass(_Relu2)),
                                                        ("second", _ProvidesPass(_Relu2))])
    assert "pass 'relu2' is provided twice" in str(info.value)
    assert "'first'" in str(info.value) and "'second'" in str(info.value)

    @attrs.frozen
    class Dce(_Relu2):
        name = "dce"

    mine = [("mine", _ProvidesPass(Dce))]
    with pytest.raises(TidlcError, match=r"pass 'dce' is provided twice: by plugin 'cleanup' and by plugin 'mine'"):
        create_plugins(load_entry_points=False, extra=mine)
    # blocking the builtin lets the replacement in
    plugins = create_plugins(blocked=["cleanup"], load_entry_points=False, extra=mine)
    assert plugins.registry.owner[("pass", "dce")] == "mine"


def test_duplicate_plugin_and_op_names_are_errors():
    with pytest.raises(TidlcError, match=r"two plugins are named 'fuse': builtin and extra"):
        create_plugins(load_entry_points=False, extra=[("fuse", _ProvidesPass(_Relu2))])

    def op(name):
        return OpDef(name=name, operands=("x",), attrs={}, infer=lambda o, types: [types[0]])

    class ProvidesOp:
        def __init__(self, name):
            self.name = name

        @hookimpl
        def tidlc_ops(self):
            return [op(self.name)]

    with pytest.raises(TidlcError, match=r"op 'relu' is provided twice: builtin and by plugin 'shadow'"):
        create_plugins(load_entry_points=False, extra=[("shadow", ProvidesOp("relu"))])
    try:
        twice = r"op 'test_op' is provided twice: by plugin 'one' and by plugin 'two'"
        with pytest.raises(TidlcError, match=twice):
            create_plugins(load_entry_points=False, extra=[("one", ProvidesOp("test_op")),
                                                            ("two", ProvidesOp("test_op"))])
        again = create_plugins(load_entry_points=False, extra=[("two", ProvidesOp("test_op"))])
        assert again.registry.owner[("op", "test_op")] == "two" and OPS.get("test_op").plugin == "two"
    finally:
        OPS.unregister("test_op")


def test_misspelt_hook_implementation_is_caught():
    class Typo:
        @hookimpl
        def tidlc_pass(self):  # should be tidlc_passes
            return []

    with pytest.raises(TidlcError) as info:
        create_plugins(load_entry_points=False, extra=[("typo", Typo())])
    text = str(info.value)
    assert "plugin 'typo' implements unknown hook 'tidlc_pass' (did you mean 'tidlc_passes'?)" in text

    class WrongArgument:
        @hookimpl
        def tidlc_pipeline(self, level, pases):
            pass

    with pytest.raises(TidlcError, match=r"plugin 'args' \(extra\) is invalid: .*pases"):
        create_plugins(load_entry_points=False, extra=[("args", WrongArgument())])


def test_pass_finished_is_called_for_every_pass_in_process():
    calls = []

    class Recorder:
        @hookimpl
        def tidlc_pass_finished(self, pass_, graph, changed, seconds):
            calls.append((pass_.name, changed, graph))

    plugins = create_plugins(load_entry_points=False, extra=[("recorder", Recorder())])
    b = Builder()
    x = b.input("x", TensorType((1, 4), "f32"))
    b.op("relu", [x], name="unused")
    b.output(b.op("sigmoid", [x], name="y"))
    pm = PassManager.from_string(plugins.registry.passes, "shape-inference,dce,dce", hook=plugins.hook)
    pm.run(b.graph)
    assert [(name, changed) for name, changed, _ in calls] == [
        ("shape-inference", False), ("dce", True), ("dce", False)]
    assert all(graph is b.graph for _, _, graph in calls)


def test_blocked_builtin_passes_leave_the_o2_pipeline_before_plugins_see_it():
    seen = []

    class Watcher:
        @hookimpl
        def tidlc_pipeline(self, level, passes):
            seen.append(list(passes))

    plugins = create_plugins(blocked=["fuse"], load_entry_points=False, extra=[("watcher", Watcher())])
    pm = PassManager.from_level(plugins.registry.passes, 2, hook=plugins.hook)
    assert seen == [[p.name for p in pm.passes]]
    assert not {"fuse-batchnorm", "fuse-activation"} & set(seen[0])
    assert [name for name, _ in plugins.plugin_names()] == sorted(
        ["cleanup", "fold-constants", "layout", "patterns", "equalize", "prune", "quantize", "onnx", "caffe", "tensorflow", "tflite", "tir", "tidl",
         "onnx-qdq",
         "watcher"])
