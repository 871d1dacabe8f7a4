"""The non-TDA4VM devices (AM62A, AM67A, AM68A, AM69A) and TIDL's multi-core inference modes.

Every new device runs ``tidlc perf --device NAME --json`` on the example model and a few corpus
prototxts (structure only); the modes keep their sanity relations on MMA-bound networks.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from tidlc.backends.tidl.perf import PerfOptions, available_devices, estimate, load_device
from tidlc.backends.tidl.perf.device import _FIELDS

from tidlc.cli import main
from tidlc.diagnostics import TidlcError

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus" / "caffe"
EXAMPLE = ROOT / "examples" / "ultraface" / "ultraface-rfb320.onnx"
PROTOTXTS = [CORPUS / p for p in ("mobilenet_v1/mobilenet_deploy.prototxt", "bvlc_googlenet/deploy.prototxt",
                                  "squeezenet_v1.1/deploy.prototxt", "resnet50/ResNet-50-deploy.prototxt")]
MODELS = [EXAMPLE] + [p for p in PROTOTXTS if p.is_file()]
NEW = ("am62a", "am67a", "am67a-ll", "am67a-ht", "am68a", "am69a", "am69a-ll", "am69a-ht")
MULTI = {"am67a": 2, "am67a-ll": 2, "am67a-ht": 2, "am69a": 4, "am69a-ll": 4, "am69a-ht": 4}


def _perf_json(capsys, model, device) -> dict:
    code = main(["perf", str(model), "--device", device, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("device", NEW)
@pytest.mark.parametrize("model", MODELS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_new_device_estimates_every_model(capsys, model, device):
    doc = _perf_json(capsys, model, device)
    dev = load_device(device)
    assert doc["device"]["name"] == device
    assert doc["ms"] > 0 and doc["fps"] > 0 and doc["layers"]
    cores = MULTI.get(device, 1)
    if cores == 1:
        assert "cores" not in doc["device"]  # single-core devices: the TDA4VM document, keys unchanged
        assert doc["device"]["peak_macs_per_cycle"] == dev.peak_macs(8)
    else:
        mode = doc["device"]["inference_mode"]
        assert doc["device"]["cores"] == cores and mode == dev.inference_mode
        assert doc["device"]["frames_in_parallel"] == (cores if mode == "high-throughput" else 1)
        per_frame = cores if mode == "low-latency" else 1
        assert doc["device"]["peak_macs_per_cycle"] == dev.peak_macs(8) * per_frame
        assert doc["fps"] == pytest.approx(1000 * doc["device"]["frames_in_parallel"] / doc["ms"], rel=1e-3)
    assert sum(layer["cycles"] for layer in doc["layers"]) <= doc["total_cycles"] + len(doc["layers"])


def test_builtin_devices_are_listed_and_fit_the_net_bin_name_field():
    names = set(available_devices())
    assert {"tda4vm", *NEW} <= names
    assert all(len(n.encode()) <= 16 for n in names)  # net.bin stores the device in 16 bytes


@pytest.mark.parametrize("device", NEW)
def test_every_value_of_a_new_device_says_where_it_comes_from(device):
    dev = load_device(device)
    assert set(dev.sources) == {key for key, *_ in _FIELDS}
    assert all(v.split(":")[0].split(" ")[0] in ("fact", "estimate", "fitted") for v in dev.sources.values())
    assert dev.l2_resident_kb + dev.l2_work_kb <= dev.l2_kb
    assert dev.msmc_scratch_kb < dev.msmc_kb


def test_published_hardware_numbers():
    am62a, am67a, am68a, am69a = (load_device(n) for n in ("am62a", "am67a", "am68a", "am69a"))
    tops = {d.name: 2 * d.peak_macs(8) * d.c7x_mhz * 1e6 * d.cores / 1e12 for d in (am62a, am67a, am68a, am69a)}
    assert tops == pytest.approx({"am62a": 2.048, "am67a": 4.096, "am68a": 8.192, "am69a": 32.768})
    assert (am62a.peak_macs(8), am62a.peak_macs(16), am62a.vector_bytes) == (1024, 256, 32)
    assert (am62a.l2_kb, am62a.msmc_kb) == (224, 1024)  # TIDL's device_config.cfg for AM62A
    assert (am67a.l2_kb, am67a.msmc_kb, am67a.cores) == (224, 2048, 2)
    assert (am69a.l2_kb, am69a.msmc_kb, am69a.cores) == (448, 3072, 4)
    assert am68a.peak_macs(8) == am69a.peak_macs(8) == load_device("tda4vm").peak_macs(8)


# ---------------------------------------------------------------------------- sanity relations
@pytest.fixture(scope="module")
def resnet50():
    from tidlc.backends.tidl.perf import zoo
    return zoo.build("resnet50")


def _rep(graph, device, **kw):
    return estimate(graph, device, PerfOptions(hints=False, **kw))


def test_am62a_is_slower_than_tda4vm_on_mma_bound_nets(resnet50):
    tda, am62 = _rep(resnet50, "tda4vm"), _rep(resnet50, "am62a")
    assert am62.ms > 2 * tda.ms  # a quarter of the MACs per cycle
    assert am62.mma_bound_cycles == 4 * tda.mma_bound_cycles


def test_am69a_modes_against_tda4vm(resnet50):
    tda = _rep(resnet50, "tda4vm")
    one, ll, ht = (_rep(resnet50, d) for d in ("am69a", "am69a-ll", "am69a-ht"))
    assert 3.2 * tda.fps <= ht.fps <= 4.8 * tda.fps  # one frame per core: ~4x the frames
    assert ht.fps == pytest.approx(4 * 1000 / ht.ms)
    assert ht.ms >= one.ms  # the four cores share the DDR
    assert ll.ms < one.ms and ll.ms < tda.ms  # one frame split across the cores
    assert ll.ms > one.ms / 4  # setup and the per-layer sync are not divided


def test_mode_is_also_a_perf_option(resnet50):
    by_file = _rep(resnet50, "am69a-ll")
    by_option = _rep(resnet50, "am69a", inference_mode="low-latency")
    assert by_option.total_cycles == by_file.total_cycles
    assert _rep(resnet50, "am69a-ll", inference_mode="single").total_cycles == _rep(resnet50, "am69a").total_cycles
    with pytest.raises(TidlcError, match="several C7x cores"):
        _rep(resnet50, "tda4vm", inference_mode="high-throughput")
    with pytest.raises(TidlcError, match="inference mode must be one of"):
        PerfOptions(inference_mode="fast")


def test_high_throughput_video_check_counts_every_core(resnet50):
    ht = _rep(resnet50, "am69a-ht", fps=4 * 1000 / _rep(resnet50, "am69a-ht").ms * 0.99)
    assert ht.fps_check.keeps_up and ht.fps_check.load == pytest.approx(0.99, rel=1e-6)


def test_multicore_device_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('schema = 1\nname = "bad"\nextends = "tda4vm"\n[multicore]\nmode = "low-latency"\n')
    with pytest.raises(TidlcError, match="needs multicore.cores >= 2"):
        load_device(str(bad))
    bad.write_text('schema = 1\nname = "bad"\nextends = "am69a"\n[multicore]\nmode = "turbo"\n')
    with pytest.raises(TidlcError, match="must be one of single, high-throughput, low-latency"):
        load_device(str(bad))


def test_tda4vm_document_has_no_multicore_keys(capsys):
    doc = _perf_json(capsys, EXAMPLE, "tda4vm")
    assert set(doc["device"]) == {"name", "c7x_mhz", "peak_macs_per_cycle"}
    assert "multicore" not in load_device("tda4vm").to_dict()
    assert load_device("am69a-ll").to_dict()["multicore"] == {"cores": 4, "mode": "low-latency", "sync_cycles": 5000}


@pytest.mark.filterwarnings("ignore:no calibration data")
def test_compiled_net_bin_remembers_its_device(capsys, tmp_path):
    from tidlc.compiler import compile_model
    from tidlc.config import CompileOptions
    compile_model(str(EXAMPLE), CompileOptions.of(device="am69a-ht", emit="bin", outdir=str(tmp_path)))
    capsys.readouterr()
    code = main(["perf", str(tmp_path), "--json", "--no-hints"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["device"]["name"] == "am69a-ht" and doc["device"]["frames_in_parallel"] == 4
