"""The backend contract (tidlc/backend.py): core reaches backends only through the registry,
TIDL is registered through the tidlc_backends hook, --target selects a backend."""
import ast
import json
from pathlib import Path

import numpy as np
import pytest

import tidlc
from tidlc.backend import Backend, Verdict
from tidlc.cli import main
from tidlc.config import CompileOptions
from tidlc.hookspecs import hookimpl
from tidlc.plugin_manager import create_plugins

TIDLC = Path(tidlc.__file__).resolve().parent
ALLOWED = ("backends", "plugins", "frontends")  # plugin packages may import each other


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def test_no_core_module_imports_a_backend():
    bad = []
    files = sorted(TIDLC.rglob("*.py"))
    assert files
    for path in files:
        rel = path.relative_to(TIDLC)
        if rel.parts[0] in ALLOWED:
            continue
        for line, name in _imports(ast.parse(path.read_text(), str(path))):
            if name == "tidlc.backends" or name.startswith("tidlc.backends."):
                bad.append(f"tidlc/{rel}:{line}: {name}")
    assert not bad, "core modules import a backend (use tidlc.compiler.backend_for):\n" + "\n".join(bad)


def test_plugins_lists_the_tidl_backend(capsys):
    code, out, _ = cli(capsys, "plugins")
    assert code == 0
    section = out.split("backends:")[1].splitlines()
    assert [line.split()[0] for line in section[1:3]] == ["onnx-qdq", "tidl"]
    from tidlc.compiler import backend_for
    backend = backend_for("tidl", create_plugins(load_entry_points=False))
    assert isinstance(backend, Backend)
    assert backend.name == "tidl" and "tda4vm" in backend.devices()


def test_unknown_target_is_a_one_line_option_error(tmp_path, small_caffe_net, capsys):
    net = tmp_path / "net.prototxt"
    net.write_text(small_caffe_net)
    for command in ("compile", "run", "perf"):
        code, _, err = cli(capsys, command, net, "--random-weights", "1", "--target", "nope",
                             *(("-o", tmp_path / "o") if command == "compile" else ()))
        assert code == 2, command
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "unknown --target 'nope'" in lines[0] and "installed: onnx-qdq, tidl" in lines[0], err
    code, _, err = cli(capsys, "--diagnostics", "json", "compile", net, "--random-weights", "1",
                       "--target", "nope", "-o", tmp_path / "o")
    assert code == 2 and '"option"' in err


def test_compile_run_perf_through_the_backend(tmp_path, small_caffe_net, capsys):
    net = tmp_path / "net.prototxt"
    net.write_text(small_caffe_net)
    out = tmp_path / "out"
    code, _, _ = cli(capsys, "compile", net, "--random-weights", "1", "-o", out, "--target", "tidl")
    assert code == 0
    code, text, _ = cli(capsys, "run", out, "--random-input", "0", "--json")
    assert code == 0 and json.loads(text)["outputs"]
    code, text, _ = cli(capsys, "perf", out, "--json")
    assert code == 0 and json.loads(text)
    # net.bin is what the TIDL writer makes of the same graph
    from tidlc.backends.tidl.binfmt import write_bin

    from tidlc.compiler import compile_model
    options = CompileOptions.of(emit="bin", random_weights=1, outdir=str(tmp_path / "api"))
    result = compile_model(str(net), options)
    assert result.outputs == [str(tmp_path / "api" / "net.bin"), str(tmp_path / "api" / "io.bin")]
    assert (tmp_path / "api" / "net.bin").read_bytes() == (out / "net.bin").read_bytes()
    write_bin(result.graph, str(tmp_path / "direct"), options)
    for name in ("net.bin", "io.bin"):
        assert (tmp_path / "direct" / name).read_bytes() == (out / name).read_bytes()
    # the backend's executable runs the compiled folder like `tidlc run`
    from tidlc.compiler import backend_for
    backend = backend_for("tidl")
    assert backend.recognizes(str(out)) and not backend.recognizes(str(net))
    x = np.random.default_rng(0).random((1, 3, 12, 12), dtype=np.float32)
    ran = backend.load(str(out)).run({"data": x})
    assert set(ran) == {"prob"}


def test_tidl_supports_verdicts():
    from tidlc.compiler import backend_for, load
    backend = backend_for("tidl")
    graph = load(str(Path(__file__).resolve().parents[1] / "examples/ultraface/ultraface-rfb320.prototxt"))
    verdicts = {op.kind: backend.supports(op) for op in graph.compute_ops()}
    assert verdicts["conv2d"].level == "accelerated"
    assert all(isinstance(v, Verdict) for v in verdicts.values())
    with pytest.raises(ValueError):
        Verdict("maybe")


class FakeBackend:
    name = "fake"

    def __init__(self):
        self.emitted = []

    def devices(self):
        return ["fake-board"]

    def supports(self, op):
        return Verdict("host", "fake runs nothing")

    def prepare_pipeline(self, level, passes):
        return [p for p in passes if p != "quantize"]  # fake has no fixed point

    def emit(self, graph, outdir, options):
        self.emitted.append((graph, outdir))
        return [f"{outdir}/fake.bin"]

    def recognizes(self, location):
        return False

    def load(self, location):
        raise NotImplementedError


def test_a_plugin_backend_is_selected_by_target(tmp_path, small_caffe_net):
    from tidlc.compiler import compile_model
    fake = FakeBackend()

    class Plugin:
        @hookimpl
        def tidlc_backends(self):
            return [fake]

    plugins = create_plugins(load_entry_points=False, extra=[("fake", Plugin())])
    assert sorted(plugins.registry.backends) == ["fake", "onnx-qdq", "tidl"]
    assert ("backend", "fake", "fake") in plugins.listing()
    net = tmp_path / "net.prototxt"
    net.write_text(small_caffe_net)
    options = CompileOptions.of(emit="bin", random_weights=1, outdir=str(tmp_path / "o"), backend="fake")
    result = compile_model(str(net), options, plugins)
    assert result.outputs == [f"{tmp_path / 'o'}/fake.bin"]
    assert len(fake.emitted) == 1 and not (tmp_path / "o" / "net.bin").exists()
    assert "quantize" not in result.pass_manager.pipeline_string()  # its prepare_pipeline was used
