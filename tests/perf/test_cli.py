"""``tidlc perf`` on every model of the test suite, on a compile output directory, and its outputs."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import onnx
import pytest
from tidlc.backends.tidl.perf import PerfOptions, estimate
from tidlc.backends.tidl.perf.report import render_rich, render_text

from tidlc.cli import main

ROOT = Path(__file__).resolve().parents[2]
LIGHT = sorted((Path(onnx.__file__).parent / "backend" / "test" / "data" / "light").glob("light_*.onnx"))
CORPUS = ROOT.parent / "shared" / "corpus" / "caffe"
PROTOTXTS = sorted(CORPUS.glob("*/*.prototxt")) if CORPUS.is_dir() else []
EXAMPLES = sorted((ROOT / "examples" / "ultraface").glob("ultraface-rfb320.*[tx]"))  # .onnx, .prototxt
UNIMPORTABLE: set[str] = set()  # every corpus net imports (enet_deploy: its Python layers are dropout)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def perf(capsys, *argv) -> tuple[int, str, str]:
    code = main(["perf", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _table_and_totals(out: str) -> None:
    lines = out.splitlines()
    assert lines[0].endswith("weight persistence off") and " on tda4vm " in lines[0]
    assert re.match(r" *# +layer +TIDL layer +MACs +cycles +% +MMA util", lines[2])
    assert any(line.startswith("total ") and " ms = " in line and " fps" in line for line in lines)
    assert any(line.startswith("DDR ") and "MB/frame" in line and "GB/s" in line for line in lines)
    assert any(line.startswith("MACs ") and "MAC utilisation" in line for line in lines)
    assert not ANSI.search(out)  # plain text when stdout is not a terminal


MODELS = [pytest.param(p, id=_id(p)) for p in LIGHT + PROTOTXTS + EXAMPLES if _id(p) not in UNIMPORTABLE]


@pytest.mark.parametrize("path", MODELS)
def test_every_suite_model_prints_table_and_totals(capsys, path):
    code, out, err = perf(capsys, path)
    assert code == 0, err
    _table_and_totals(out)


@pytest.mark.skipif(not PROTOTXTS, reason="shared corpus not available")
def test_the_unimportable_net_fails_with_its_layer_list(capsys, tmp_path):
    path = tmp_path / "py.prototxt"
    path.write_text('input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n'
                    'layer { name: "py" type: "Python" bottom: "data" top: "py" python_param { module: "m" layer: "L" } }\n')
    code, out, err = perf(capsys, path)
    assert code == 2 and "cannot be imported" in err and "'py': Python: python_param m.L" in err and not out


def test_structure_only_prototxt_warns_and_estimates(capsys):
    if not PROTOTXTS:
        pytest.skip("shared corpus not available")
    code, out, err = perf(capsys, CORPUS / "mobilenet_v1" / "mobilenet_deploy.prototxt", "--fps", "30")
    assert code == 0 and "no weights" in err
    assert "keeps up with 30 fps" in out


def test_compile_output_directory(capsys, tmp_path):
    model = ROOT / "examples" / "ultraface" / "ultraface-rfb320.onnx"
    assert main(["compile", str(model), "-o", str(tmp_path), "--emit", "ir"]) == 0
    capsys.readouterr()
    code, from_dir, err = perf(capsys, tmp_path, "--no-hints")
    assert code == 0, err
    _table_and_totals(from_dir)
    code, from_model, _ = perf(capsys, model, "--no-hints")
    total = [line for line in from_dir.splitlines() if line.startswith("total")]
    assert total == [line for line in from_model.splitlines() if line.startswith("total")]


def test_directory_without_model_tir(capsys, tmp_path):
    code, _, err = perf(capsys, tmp_path)
    assert code == 2 and "no model.tir or net.bin" in err and "tidlc compile" in err


def test_bin_output_directory_matches_its_qir_twin(capsys, tmp_path):
    model = ROOT / "examples" / "ultraface" / "ultraface-rfb320.onnx"
    for emit in ("bin", "qir"):
        assert main(["compile", str(model), "-o", str(tmp_path / emit), "--emit", emit]) == 0
    capsys.readouterr()
    totals = []
    for emit in ("bin", "qir"):
        code, out, err = perf(capsys, tmp_path / emit, "--no-hints")
        assert code == 0, err
        _table_and_totals(out)
        totals.append([line for line in out.splitlines() if line.startswith("total")])
    assert totals[0] == totals[1]


def test_json_output(capsys):
    code, out, _ = perf(capsys, EXAMPLES[0], "--json", "--fps", "30", "--batches", "2",
                        "--persist-weights", "on", "--msmc-size", "2048")
    assert code == 0
    doc = json.loads(out)
    assert doc["settings"] == {"bits": 8, "layers_16bit": [], "batches": 2, "msmc_kb": 2048,
                               "persist_weights": True, "fps": 30.0}
    for key in ("total_cycles", "ms", "fps", "ddr_bytes_per_frame", "mac_utilization", "layers"):
        assert key in doc
    assert doc["fps_check"]["keeps_up"] is True
    assert perf(capsys, EXAMPLES[0], "--json", "--fps", "30", "--batches", "2", "--persist-weights", "on",
                "--msmc-size", "2048")[1] == out  # stable


def test_model_options_as_compile(capsys):
    model = ROOT / "examples" / "ultraface" / "ultraface-rfb320.onnx"
    _, small, _ = perf(capsys, model, "--json", "--input-shape", "input=1,3,120,160", "-O1", "--no-hints")
    _, big, _ = perf(capsys, model, "--json", "--no-hints")
    small, big = json.loads(small), json.loads(big)
    assert small["macs"] * 3.5 < big["macs"]  # a quarter of the pixels
    assert len(small["layers"]) > len(big["layers"])  # -O1: batchnorms and activations not fused
    _, wide, _ = perf(capsys, model, "--json", "--bits", "16", "--no-hints")
    assert json.loads(wide)["total_cycles"] > big["total_cycles"]


def test_fps_verdicts(capsys):
    _, out, _ = perf(capsys, EXAMPLES[0], "--fps", "5000", "--no-hints")
    assert "does NOT keep up with 5000 fps" in out and "too slow" in out


def test_unknown_device(capsys):
    code, _, err = perf(capsys, EXAMPLES[0], "--device", "tda9")
    assert code == 2 and "unknown device 'tda9'" in err and "tda4vm" in err


def test_device_file_option(capsys, tmp_path):
    dev = tmp_path / "slowddr.toml"
    dev.write_text('name = "slowddr"\nextends = "tda4vm"\n[ddr]\nmts = 1600\n')
    code, out, _ = perf(capsys, EXAMPLES[0], "--device", dev, "--no-hints")
    assert code == 0 and " on slowddr " in out


def test_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "cycles.png"
    code, _, err = perf(capsys, EXAMPLES[0], "--plot", png, "--no-hints")
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "wrote" in err


def test_rich_and_plain_renderings_carry_the_same_content(zoo_graphs):
    rep = estimate(zoo_graphs("mobilenet_v1"), "tda4vm", PerfOptions(fps=30))
    plain = render_text(rep)
    rich = render_rich(rep, width=250)
    assert ANSI.search(rich) and not ANSI.search(plain)
    assert "┃" in rich or "│" in rich  # a rich table
    text = ANSI.sub("", rich)
    for layer in rep.layers:
        assert layer.name in plain and layer.name in text
    for needle in ("MAC utilisation", "keeps up with 30 fps", "[batching]", "MB/frame"):
        assert needle in plain and needle in text


def test_top_limits_the_table(zoo_graphs):
    rep = estimate(zoo_graphs("mobilenet_v2_1.4"), "tda4vm", PerfOptions(hints=False))
    text = render_text(rep, top=5)
    rows = [line for line in text.splitlines() if re.match(r" *\d+  ", line)]
    assert len(rows) == 5
    heaviest = max(rep.layers, key=lambda lay: lay.cycles)
    assert any(heaviest.name in row for row in rows)


def test_perf_is_listed_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "perf" in capsys.readouterr().out


def test_subprocess_runs_outside_the_source_tree(tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "tidlc.cli", "perf", str(EXAMPLES[0]), "--json", "--no-hints"],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""},
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["schema"] == "tidlc.perf/1"
