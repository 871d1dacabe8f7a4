"""Device descriptions for the performance model: TOML files and the ``tidlc_devices`` hook.

Builtin devices are the ``*.toml`` files in ``tidlc/backends/tidl/devices/``.
Plugins add devices by implementing ``tidlc_devices()`` and returning paths to
TOML files or dicts with the same keys. A device may say ``extends = "NAME"``
to take every value it does not set from another device. The same device name
from two places is an error naming both.
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from tidlc.diagnostics import TidlcError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "devices"
SCHEMA = 1

# (section.key, attribute name, type, check) for every value a device file sets
_FIELDS = (
    ("c7x.mhz", "c7x_mhz", float, "positive"),
    ("c7x.vector_bytes", "vector_bytes", int, "positive"),
    ("c7x.vector_ops_per_cycle", "vector_ops_per_cycle", float, "positive"),
    ("mma.panel_bytes", "mma_panel_bytes", int, "positive"),
    ("mma.width_align", "width_align", int, "positive"),
    ("mma.width_align_stride2", "width_align_stride2", int, "positive"),
    ("mma.block_pixels", "mma_block_pixels", int, "positive"),
    ("mma.loop_overhead_cycles", "mma_loop_overhead_cycles", int, "non-negative"),
    ("mma.bias_in_k", "bias_in_k", bool, None),
    ("memory.l2_kb", "l2_kb", int, "positive"),
    ("memory.l2_resident_kb", "l2_resident_kb", int, "non-negative"),
    ("memory.l2_work_kb", "l2_work_kb", int, "positive"),
    ("memory.msmc_kb", "msmc_kb", int, "non-negative"),
    ("memory.msmc_scratch_kb", "msmc_scratch_kb", int, "non-negative"),
    ("ddr.mts", "ddr_mts", float, "positive"),
    ("ddr.bus_bits", "ddr_bus_bits", int, "positive"),
    ("ddr.efficiency", "ddr_efficiency", float, "fraction"),
    ("msmc.bytes_per_cycle", "msmc_bytes_per_cycle", float, "positive"),
    ("msmc.efficiency", "msmc_efficiency", float, "fraction"),
    ("overhead.layer_setup_cycles", "layer_setup_cycles", int, "non-negative"),
    ("overhead.network_setup_cycles", "network_setup_cycles", int, "non-negative"),
    ("multicore.cores", "cores", int, "positive"),
    ("multicore.mode", "inference_mode", str, "mode"),
    ("multicore.sync_cycles", "sync_cycles", int, "non-negative"),
)
_TOP = ("schema", "name", "description", "extends", "sources")

# TIDL's inference modes on SoCs with several C7x/MMA cores (edgeai-tidl-tools docs/multi_c7x.md):
# "single" (TIDL_inferenceModeDefault: one network on one core), "high-throughput" (one frame per
# core, N instances of the network), "low-latency" (one frame split across the cores)
MODES = ("single", "high-throughput", "low-latency")
# values a device file may leave out (single-C7x devices need no [multicore] section)
_DEFAULTS = {"multicore.cores": 1, "multicore.mode": "single", "multicore.sync_cycles": 0}


@attrs.frozen
class Device:
    """One device's parameters (units in the attribute names; see tda4vm.toml)."""

    name: str
    description: str
    c7x_mhz: float
    vector_bytes: int
    vector_ops_per_cycle: float
    mma_panel_bytes: int
    width_align: int
    width_align_stride2: int
    mma_block_pixels: int
    mma_loop_overhead_cycles: int
    bias_in_k: bool
    l2_kb: int
    l2_resident_kb: int
    l2_work_kb: int
    msmc_kb: int
    msmc_scratch_kb: int
    ddr_mts: float
    ddr_bus_bits: int
    ddr_efficiency: float
    msmc_bytes_per_cycle: float
    msmc_efficiency: float
    layer_setup_cycles: int
    network_setup_cycles: int
    cores: int = 1  # C7x/MMA cores TIDL can use for one network
    inference_mode: str = "single"  # default mode (MODES); PerfOptions.inference_mode overrides it
    sync_cycles: int = 0  # low-latency mode: inter-core synchronisation per split layer
    origin: str = ""  # file or plugin it came from
    sources: Mapping[str, str] = attrs.field(factory=dict, converter=dict, eq=False)

    def peak_macs(self, bits: int = 8) -> int:
        """MMA MACs per cycle: (panel / element bytes) squared; 4096 for 8-bit, 1024 for 16-bit."""
        panel = self.mma_panel_bytes // (1 if bits <= 8 else 2)
        return panel * panel

    @property
    def ddr_peak_bytes_per_s(self) -> float:
        return self.ddr_mts * 1e6 * self.ddr_bus_bits / 8

    @property
    def ddr_bytes_per_cycle(self) -> float:
        """Effective DDR bytes per C7x cycle."""
        return self.ddr_peak_bytes_per_s * self.ddr_efficiency / (self.c7x_mhz * 1e6)

    @property
    def msmc_effective_bytes_per_cycle(self) -> float:
        return self.msmc_bytes_per_cycle * self.msmc_efficiency

    def cycles_to_ms(self, cycles: float) -> float:
        return cycles / (self.c7x_mhz * 1e3)

    def to_dict(self) -> dict[str, Any]:
        """The device as nested TOML-like sections (for reports and round trips); a single-core
        device has no ``multicore`` section."""
        out: dict[str, Any] = {"name": self.name, "description": self.description}
        for key, attr, _, _ in _FIELDS:
            section, leaf = key.split(".")
            if section == "multicore" and self.cores == 1 and self.inference_mode == "single":
                continue
            out.setdefault(section, {})[leaf] = getattr(self, attr)
        return out


def _check(key: str, value: Any, kind: type, rule: str | None, where: str) -> Any:
    if kind is str:
        if not isinstance(value, str) or (rule == "mode" and value not in MODES):
            raise TidlcError(f"device value '{key}' must be one of {', '.join(MODES)}, got {value!r}", where)
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise TidlcError(f"device value '{key}' must be true or false, got {value!r}", where)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TidlcError(f"device value '{key}' must be a number, got {value!r}", where)
    if kind is int:
        if float(value) != int(value):
            raise TidlcError(f"device value '{key}' must be an integer, got {value!r}", where)
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise TidlcError(f"device value '{key}' must be finite", where)
    bad = {"positive": value <= 0, "non-negative": value < 0, "fraction": not 0 < value <= 1}.get(rule, False)
    if bad:
        raise TidlcError(f"device value '{key}' must be {rule.replace('fraction', 'in (0, 1]')}, got {value!r}", where)
    return value


def _flatten(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Nested sections -> {"section.key": value}; unknown keys are errors."""
    known = {key for key, *_ in _FIELDS}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TOP:
            continue
        if isinstance(value, Mapping):
            for leaf, v in value.items():
                flat[f"{key}.{leaf}"] = v
        else:
            flat[key] = value
    unknown = sorted(set(flat) - known)
    if unknown:
        raise TidlcError(f"unknown device key(s): {', '.join(unknown)}", where,
                         hint=f"known keys: {', '.join(sorted(known))}")
    return flat


@attrs.frozen
class DeviceSource:
    """Where a device is defined: raw data (from a file or a plugin dict) and its owner."""

    name: str
    data: Mapping[str, Any] = attrs.field(eq=False)
    origin: str


def read_device_file(path: os.PathLike | str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise TidlcError(f"cannot read device file: {exc.strerror}", str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise TidlcError(f"bad device file: {exc}", str(path)) from None


def _source(item: Any, origin: str) -> DeviceSource:
    if isinstance(item, Mapping):
        data, where = dict(item), origin
    elif isinstance(item, (str, os.PathLike)):
        data, where = read_device_file(item), f"{item} ({origin})" if origin != "builtin" else str(item)
    else:
        raise TidlcError(f"tidlc_devices of {origin} returned {type(item).__name__}, "
                         "not a path or a dict", hint="return TOML paths or dicts with the device keys")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise TidlcError("device has no 'name'", where)
    if data.get("schema", SCHEMA) != SCHEMA:
        raise TidlcError(f"device schema {data.get('schema')!r} is not supported (expected {SCHEMA})", where)
    return DeviceSource(name, data, where)


def available_devices(plugins=None) -> dict[str, DeviceSource]:
    """Every known device by name: builtin files first, then plugin-provided ones."""
    found: dict[str, DeviceSource] = {}

    def add(src: DeviceSource) -> None:
        old = found.get(src.name)
        if old is not None:
            raise TidlcError(f"device '{src.name}' is defined twice: by {old.origin} and by {src.origin}",
                             hint="rename one device")
        found[src.name] = src

    for path in sorted(BUILTIN_DIR.glob("*.toml")):
        add(_source(path, "builtin"))
    if plugins is not None:
        caller = plugins.hook.tidlc_devices
        for impl in caller.get_hookimpls():
            for item in impl.function() or ():
                add(_source(item, f"plugin '{impl.plugin_name}'"))
    return found


def _resolve(name: str, known: Mapping[str, DeviceSource], chain: tuple = ()) -> tuple[dict, dict, str]:
    src = known[name]
    if name in chain:
        raise TidlcError(f"device 'extends' loop: {' -> '.join(chain + (name,))}", src.origin)
    flat = _flatten(src.data, src.origin)
    sources = {k: str(v) for k, v in dict(src.data.get("sources", {})).items()}
    base = src.data.get("extends")
    if base is not None:
        if base not in known:
            raise TidlcError(f"device '{name}' extends unknown device '{base}'", src.origin,
                             hint=f"known devices: {', '.join(sorted(known))}")
        base_flat, base_sources, _ = _resolve(base, known, chain + (name,))
        flat = {**base_flat, **flat}
        sources = {**base_sources, **sources}
    return flat, sources, src.origin


def build_device(name: str, known: Mapping[str, DeviceSource],
                 overrides: Mapping[str, Any] | None = None) -> Device:
    flat, sources, origin = _resolve(name, known)
    flat = {**_DEFAULTS, **flat}
    if overrides:
        flat.update(_flatten(_nest(overrides), "overrides"))
    missing = [key for key, *_ in _FIELDS if key not in flat]
    if missing:
        raise TidlcError(f"device '{name}' misses value(s): {', '.join(missing)}", origin,
                         hint="set them, or 'extends' a complete device")
    values = {attr: _check(key, flat[key], kind, rule, origin) for key, attr, kind, rule in _FIELDS}
    if values["inference_mode"] != "single" and values["cores"] < 2:
        raise TidlcError(f"device '{name}': multicore.mode '{values['inference_mode']}' needs "
                         f"multicore.cores >= 2, got {values['cores']}", origin)
    description = str(known[name].data.get("description", ""))
    return Device(name=name, description=description, origin=origin, sources=sources, **values)


def _nest(flat: Mapping[str, Any]) -> dict:
    nested: dict = {}
    for key, value in flat.items():
        section, _, leaf = key.partition(".")
        if leaf:
            nested.setdefault(section, {})[leaf] = value
        else:
            nested[key] = value
    return nested


def load_device(spec: str | os.PathLike | Device = "tda4vm", plugins=None,
                overrides: Mapping[str, Any] | None = None) -> Device:
    """A device by name (builtin or plugin) or by path to a TOML file.

    ``overrides`` maps ``"section.key"`` to values (e.g. ``{"memory.msmc_kb": 2048}``).
    """
    if isinstance(spec, Device):
        if not overrides:
            return spec
        spec = spec.name
    known = available_devices(plugins)
    text = os.fspath(spec)
    if text.endswith(".toml") or os.sep in text or (os.altsep and os.altsep in text):
        src = _source(text, "file")
        known = {**known, src.name: src}  # a file may shadow (or extend) a known device
        return build_device(src.name, known, overrides)
    if text not in known:
        raise TidlcError(f"unknown device '{text}'", hint=f"known devices: {', '.join(sorted(known))}; "
                                                           "or give a path to a .toml device file")
    return build_device(text, known, overrides)
