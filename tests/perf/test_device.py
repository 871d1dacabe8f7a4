"""Device files: the builtin TDA4VM values, provenance, overrides, 'extends' and plugin devices."""
from __future__ import annotations

import types

import pytest
from tidlc.backends.tidl.perf import available_devices, load_device
from tidlc.backends.tidl.perf.device import _FIELDS, BUILTIN_DIR

from tidlc.diagnostics import TidlcError
from tidlc.hookspecs import hookimpl
from tidlc.plugin_manager import create_plugins


def test_tda4vm_published_facts():
    dev = load_device("tda4vm")
    assert dev.c7x_mhz == 1000
    assert dev.peak_macs(8) == 4096 and dev.peak_macs(16) == 1024
    assert (dev.l2_kb, dev.msmc_kb, dev.vector_bytes) == (448, 7968, 64)
    assert dev.cycles_to_ms(6_294_273) == pytest.approx(6.294273)  # "Network cycles / 10^6 = ms @1 GHz"
    assert 10e9 < dev.ddr_peak_bytes_per_s < 20e9  # LPDDR4 x32


def test_every_value_says_where_it_comes_from():
    dev = load_device("tda4vm")
    keys = {key for key, *_ in _FIELDS}
    assert set(dev.sources) == keys
    assert all(v.split(":")[0].split(" ")[0] in ("fact", "estimate", "fitted") for v in dev.sources.values())


def test_fitted_constants_stay_plausible():
    """The calibrated values (benchmarks/perf_model_vs_device.py --fit) within their stated ranges."""
    dev = load_device("tda4vm")
    assert 4_000 <= dev.layer_setup_cycles <= 30_000
    assert 0 <= dev.mma_loop_overhead_cycles <= 2 * dev.mma_block_pixels
    assert 0.4 <= dev.ddr_efficiency <= 0.85
    assert 0.4 <= dev.msmc_efficiency <= 0.95
    assert dev.l2_resident_kb + dev.l2_work_kb <= dev.l2_kb


def test_overrides_and_unknown_keys():
    dev = load_device("tda4vm", overrides={"memory.msmc_kb": 2048, "ddr.efficiency": 0.5})
    assert dev.msmc_kb == 2048 and dev.ddr_efficiency == 0.5
    with pytest.raises(TidlcError, match="unknown device key"):
        load_device("tda4vm", overrides={"memory.msmc": 1})
    with pytest.raises(TidlcError, match=r"must be in \(0, 1\]"):
        load_device("tda4vm", overrides={"ddr.efficiency": 1.5})
    with pytest.raises(TidlcError, match="unknown device 'tda5'"):
        load_device("tda5")


def test_device_file_extends_a_builtin(tmp_path):
    path = tmp_path / "fast.toml"
    path.write_text('schema = 1\nname = "tda4vm-fastddr"\nextends = "tda4vm"\n[ddr]\nmts = 4266\n'
                    '[sources]\n"ddr.mts" = "estimate"\n')
    dev = load_device(str(path))
    assert dev.name == "tda4vm-fastddr" and dev.ddr_mts == 4266 and dev.msmc_kb == 7968
    assert dev.sources["ddr.mts"] == "estimate" and dev.sources["memory.l2_kb"].startswith("fact")


def test_incomplete_or_broken_files(tmp_path):
    half = tmp_path / "half.toml"
    half.write_text('name = "half"\n[c7x]\nmhz = 500\n')
    with pytest.raises(TidlcError, match="misses value"):
        load_device(str(half))
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(TidlcError, match="bad device file"):
        load_device(str(bad))


def _plugin(devices):
    mod = types.SimpleNamespace()

    @hookimpl
    def tidlc_devices():
        return devices
    mod.tidlc_devices = tidlc_devices
    return mod


def test_plugin_devices_through_the_hook(tmp_path):
    toml = tmp_path / "am68a.toml"
    toml.write_text('name = "am68a-like"\nextends = "tda4vm"\n[c7x]\nmhz = 1000\n[memory]\nmsmc_kb = 3968\n')
    plugins = create_plugins(load_entry_points=False, extra=[
        ("mydevices", _plugin([str(toml), {"name": "half-clock", "extends": "tda4vm", "c7x": {"mhz": 500}}]))])
    known = available_devices(plugins)
    assert {"tda4vm", "am68a-like", "half-clock"} <= set(known)
    assert "mydevices" in known["half-clock"].origin
    assert load_device("am68a-like", plugins).msmc_kb == 3968
    slow = load_device("half-clock", plugins)
    assert slow.c7x_mhz == 500 and slow.cycles_to_ms(1e6) == pytest.approx(2.0)


def test_a_device_defined_twice_names_both(tmp_path):
    plugins = create_plugins(load_entry_points=False, extra=[("dup", _plugin([{"name": "tda4vm"}]))])
    with pytest.raises(TidlcError, match="defined twice: by .*tda4vm.toml and by plugin 'dup'"):
        available_devices(plugins)


def test_builtin_folder_ships_the_device_files():
    assert (BUILTIN_DIR / "tda4vm.toml").is_file()
