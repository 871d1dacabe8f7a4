"""``estimate(graph, device, options) -> PerfReport``: the C7x/MMA performance model.

The per-layer equations live in the cycle kernel (``_cycles.pyx``, with its
readable twin ``reference.py``); this module turns a graph into the kernel's
tables, converts the device's parameters to the kernel's integer units, runs
it, and collects per-frame numbers into a :class:`PerfReport`.
"""
from __future__ import annotations

import json
import math
from typing import Any

import attrs
import numpy as np
from tidlc.backends.tidl.perf import columns as C
from tidlc.backends.tidl.perf.device import MODES, Device, load_device
from tidlc.backends.tidl.perf.layers import Tables, build_tables

from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError
from tidlc.ir.core import Graph

try:
    from tidlc.backends.tidl.perf import _cycles as kernel  # type: ignore[attr-defined]
    HAVE_CYTHON = True
except ImportError:  # pragma: no cover - only in unbuilt source trees
    from tidlc.backends.tidl.perf import reference as kernel
    HAVE_CYTHON = False

JSON_SCHEMA = "tidlc.perf/1"


def _positive_int(inst, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TidlcError(f"{attribute.name.replace('_', '-')} must be a positive integer, got {value!r}")


@attrs.frozen
class PerfOptions:
    """What the estimate depends on besides the graph and the device."""

    bits: int = 8  # 8 or 16 (numParamBits / numFeatureBits)
    layers_16bit: tuple[str, ...] = attrs.field(default=(), converter=tuple)  # mixed precision
    batches: int = attrs.field(default=1, validator=_positive_int)  # numBatches
    msmc_kb: int | None = None  # MSMC usable by the network (msmcSizeKB); None: device's
    persist_weights: bool = False  # ENABLE_PERSIST_WT_ALLOC-style weight persistence
    fps: float | None = attrs.field(default=None, converter=attrs.converters.optional(float))  # video rate
    hints: bool = True  # compute tuning hints (extra what-if runs)
    inference_mode: str | None = None  # multi-core SoCs: single | high-throughput | low-latency; None: device's

    def __attrs_post_init__(self):
        if self.bits not in (8, 16):
            raise TidlcError(f"perf models 8- or 16-bit inference, not {self.bits}-bit", hint="use --bits 8 or 16")
        if self.msmc_kb is not None and self.msmc_kb < 0:
            raise TidlcError(f"--msmc-size must not be negative, got {self.msmc_kb}")
        if self.fps is not None and not self.fps > 0:
            raise TidlcError(f"--fps must be positive, got {self.fps}")
        if self.inference_mode is not None and self.inference_mode not in MODES:
            raise TidlcError(f"inference mode must be one of {', '.join(MODES)}, got {self.inference_mode!r}")

    @classmethod
    def from_compile_options(cls, options: CompileOptions, graph: Graph | None = None) -> PerfOptions:
        """What a compile estimates with: the bits and 16-bit layers the graph was quantized with
        (graph attributes ``quant.bits``, ``quant.layers_16bit``; else the options'), --batches
        and --msmc-size."""
        attrs_ = graph.attrs if graph is not None else {}
        bits, wide = attrs_.get("quant.bits"), attrs_.get("quant.layers_16bit")
        return cls(bits=bits if isinstance(bits, int) else options.quant.bits,
                   layers_16bit=tuple(wide) if isinstance(wide, (list, tuple)) else options.quant.layers_16bit,
                   **compile_settings(options))

    @classmethod
    def from_options(cls, options: Any = None, **overrides: Any) -> PerfOptions:
        """From CompileOptions, an argparse namespace, a PerfOptions or None (missing fields default)."""
        if isinstance(options, cls) and not overrides:
            return options
        if isinstance(options, CompileOptions):
            options = cls.from_compile_options(options)
        values = {}
        for field in attrs.fields(cls):
            value = getattr(options, field.name, None) if options is not None else None
            if value is not None:
                values[field.name] = value
        if options is not None and "batches" not in values and getattr(options, "num_batches", None):
            values["batches"] = options.num_batches
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def compile_settings(options: CompileOptions) -> dict:
    """The deployment settings a compile gave explicitly (stored in net.bin: numBatches, msmcSizeKB,
    weight persistence)."""
    t = options.target
    return {k: v for k, v in (("batches", t.batches), ("msmc_kb", t.msmc_kb), ("persist_weights", t.persist_weights))
            if v is not None}


def inference_mode(device: Device, options: PerfOptions) -> str:
    """The multi-core mode an estimate uses: the options' if given, else the device's."""
    mode = options.inference_mode or device.inference_mode
    if mode != "single" and device.cores < 2:
        raise TidlcError(f"inference mode '{mode}' needs a device with several C7x cores; "
                         f"'{device.name}' has {device.cores}", hint="e.g. --device am69a-ll or am69a-ht")
    return mode


def frames_in_parallel(device: Device, options: PerfOptions) -> int:
    """Frames in flight: the cores in high-throughput mode (one frame per core), else 1."""
    return device.cores if inference_mode(device, options) == "high-throughput" else 1


def cores_per_frame(device: Device, options: PerfOptions) -> int:
    """Cores working on one frame: all of them in low-latency mode, else 1."""
    return device.cores if inference_mode(device, options) == "low-latency" else 1


def kernel_params(device: Device, options: PerfOptions) -> np.ndarray:
    """The device in the kernel's integer units (see columns.py). In high-throughput mode the
    cores stream their frames at the same time: each sees 1/cores of the DDR bandwidth."""
    p = np.zeros(C.P_COUNT, dtype=np.int64)
    msmc_kb = device.msmc_kb if options.msmc_kb is None else options.msmc_kb
    p[C.P_BATCHES] = options.batches
    p[C.P_MMA_PANEL_BYTES] = device.mma_panel_bytes
    p[C.P_MMA_BLOCK] = device.mma_block_pixels
    p[C.P_MMA_LOOP_OH] = device.mma_loop_overhead_cycles
    p[C.P_VEC_BYTES] = device.vector_bytes
    p[C.P_VEC_RATE] = max(1, round(device.vector_ops_per_cycle * 1000))
    p[C.P_L2_POOL] = device.l2_resident_kb * 1024
    p[C.P_L2_WORK] = device.l2_work_kb * 1024
    p[C.P_MSMC_POOL] = max(0, msmc_kb - device.msmc_scratch_kb) * 1024
    p[C.P_PERSIST] = int(options.persist_weights)
    sharing = frames_in_parallel(device, options)
    if sharing == 1:
        p[C.P_DDR_RATE] = max(1, round(device.ddr_bytes_per_cycle * 1000))
    else:
        p[C.P_DDR_RATE] = max(1, round(device.ddr_bytes_per_cycle * 1000 / sharing))
    p[C.P_MSMC_RATE] = max(1, round(device.msmc_effective_bytes_per_cycle * 1000))
    p[C.P_LAYER_SETUP] = device.layer_setup_cycles
    return p


def run_kernel(tables: Tables, params: np.ndarray, impl=None):
    """``(results, tensor_locations)`` of the compiled kernel (or ``impl``, e.g. the twin)."""
    impl = impl or kernel
    return impl.simulate(tables.layers, tables.in_ptr, tables.in_idx, tables.out_ptr, tables.out_idx,
                         tables.tensors, params)


def split_across_cores(res: np.ndarray, params: np.ndarray, cores: int, sync_cycles: int) -> np.ndarray:
    """Low-latency mode: every layer's work divided between ``cores`` C7x/MMA cores.

    Per layer (integers, like the kernel): compute / cores; the DDR part of the DMA is not
    divided (the cores share the DDR), the MSMC part is (each core has its own port); the
    compute/DMA overlap keeps the single-core share; the setup is paid by every core at once
    (not divided) and a layer with work pays ``sync_cycles`` for the cores to meet. A single
    core returns ``res`` itself.
    """
    if cores <= 1:
        return res
    out = res.copy()
    ddr_rate = max(int(params[C.P_DDR_RATE]), 1)
    for i in range(res.shape[0]):
        compute, dma, setup = (int(res[i, C.R_COMPUTE]), int(res[i, C.R_DMA]), int(res[i, C.R_SETUP]))
        busy = int(res[i, C.R_CYCLES]) - setup
        if busy <= 0:
            continue
        ddr = min(dma, -(-int(res[i, C.R_DDR_READ] + res[i, C.R_DDR_WRITE]) * 1000 // ddr_rate))
        new_compute = -(-compute // cores)
        new_dma = ddr + -(-(dma - ddr) // cores)
        hi, lo = max(compute, dma), min(compute, dma)
        new_hi, new_lo = max(new_compute, new_dma), min(new_compute, new_dma)
        overlap = -(-new_lo * (busy - hi) // lo) if lo > 0 else 0
        out[i, C.R_COMPUTE] = new_compute
        out[i, C.R_DMA] = new_dma
        out[i, C.R_CYCLES] = new_hi + overlap + setup + sync_cycles
    return out


def simulate(tables: Tables, device: Device, options: PerfOptions, params: np.ndarray | None = None):
    """``(results, tensor_locations)`` of one call on ``device`` in its inference mode (the
    kernel, then the low-latency split when the frame is divided between cores)."""
    params = kernel_params(device, options) if params is None else params
    res, loc = run_kernel(tables, params)
    cores = cores_per_frame(device, options)
    if cores > 1:
        res = split_across_cores(res, params, cores, device.sync_cycles)
    return res, loc


def batch_cycles(results: np.ndarray, device: Device) -> int:
    """Cycles of one call (one batch): every layer plus the per-call overhead."""
    return int(results[:, C.R_CYCLES].sum()) + device.network_setup_cycles


@attrs.frozen
class LayerPerf:
    """One TIDL layer's estimate, per frame."""

    index: int
    name: str
    op: str
    tidl_layer: str
    unit: str  # mma | vector | none
    note: str
    output_shape: tuple
    macs: int
    cycles: float
    compute_cycles: float
    dma_cycles: float
    setup_cycles: float
    bound: str  # compute | dma | setup | none
    percent: float
    mma_utilization: float
    ddr_read_bytes: float
    ddr_write_bytes: float
    msmc_bytes: float
    output_location: str
    weights_location: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "name": self.name, "op": self.op, "tidl_layer": self.tidl_layer,
            "unit": self.unit, "note": self.note, "output_shape": list(self.output_shape),
            "macs": self.macs, "cycles": _num(self.cycles), "compute_cycles": _num(self.compute_cycles),
            "dma_cycles": _num(self.dma_cycles), "setup_cycles": _num(self.setup_cycles),
            "bound": self.bound, "percent": round(self.percent, 3),
            "mma_utilization": round(self.mma_utilization, 5),
            "ddr_read_bytes": _num(self.ddr_read_bytes), "ddr_write_bytes": _num(self.ddr_write_bytes),
            "msmc_bytes": _num(self.msmc_bytes), "output_location": self.output_location,
            "weights_location": self.weights_location,
        }


def _num(value: float) -> int | float:
    """Integers stay integers in JSON; per-frame shares of a batch keep 2 decimals."""
    return int(value) if float(value).is_integer() else round(float(value), 2)


@attrs.frozen
class Hint:
    """A tuning hint with its predicted gain (cycles per frame)."""

    kind: str
    gain_cycles: float
    message: str
    layers: tuple[str, ...] = ()
    exact: bool = True  # predicted by re-running the model (False: a rough share)

    def to_dict(self, device: Device) -> dict[str, Any]:
        return {"kind": self.kind, "gain_cycles": _num(round(self.gain_cycles)),
                "gain_ms": round(device.cycles_to_ms(self.gain_cycles), 4), "exact": self.exact,
                "message": self.message, "layers": list(self.layers)}


@attrs.frozen
class FpsCheck:
    fps: float
    budget_ms: float
    keeps_up: bool
    load: float  # share of the C7x the model needs at that rate

    def to_dict(self) -> dict[str, Any]:
        return {"fps": self.fps, "budget_ms": round(self.budget_ms, 4), "keeps_up": self.keeps_up,
                "load": round(self.load, 4), "headroom_ms": round(self.budget_ms * (1 - self.load), 4)}


@attrs.frozen
class PerfReport:
    """The estimate for one graph on one device, per frame unless named otherwise."""

    model: str
    device: Device
    options: PerfOptions
    layers: tuple[LayerPerf, ...]
    batch_cycles: int  # one call processing ``options.batches`` frames
    macs: int
    ddr_read_bytes: float
    ddr_write_bytes: float
    msmc_bytes: float
    weight_bytes: int
    persistent_weight_bytes: int
    msmc_feature_bytes: int  # top of the feature maps kept in MSMC (per batch)
    spilled_tensors: int  # feature maps that live in DDR (not network inputs/outputs)
    width_waste_cycles: float
    channel_waste_cycles: float
    hints: tuple[Hint, ...] = ()
    fps_check: FpsCheck | None = None

    @property
    def total_cycles(self) -> float:
        return self.batch_cycles / self.options.batches

    @property
    def ms(self) -> float:
        return self.device.cycles_to_ms(self.total_cycles)

    @property
    def frames_in_parallel(self) -> int:
        """Frames in flight at once: the cores in high-throughput mode, else 1."""
        return frames_in_parallel(self.device, self.options)

    @property
    def inference_mode(self) -> str:
        return inference_mode(self.device, self.options)

    @property
    def fps(self) -> float:
        """Frames per second: 1000 / ms, times the frames in flight (high-throughput mode)."""
        if self.frames_in_parallel == 1:
            return 1000.0 / self.ms if self.ms > 0 else math.inf
        return self.frames_in_parallel * 1000.0 / self.ms if self.ms > 0 else math.inf

    @property
    def ddr_bytes_per_frame(self) -> float:
        return self.ddr_read_bytes + self.ddr_write_bytes

    @property
    def peak_macs(self) -> int:
        """MMA MACs per cycle working on one frame (all the cores' in low-latency mode)."""
        return self.device.peak_macs(self.options.bits) * cores_per_frame(self.device, self.options)

    @property
    def mac_utilization(self) -> float:
        return self.macs / (self.total_cycles * self.peak_macs) if self.total_cycles else 0.0

    @property
    def mma_bound_cycles(self) -> float:
        """The floor: every MAC at the MMA's peak rate."""
        return self.macs / self.peak_macs

    def ddr_gbps(self, fps: float | None = None) -> float:
        """DDR bandwidth at ``fps`` (default: the requested rate if it keeps up, else the achieved one)."""
        if fps is None:
            fps = self.fps_check.fps if self.fps_check and self.fps_check.keeps_up else self.fps
        return self.ddr_bytes_per_frame * fps / 1e9

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document (schema ``tidlc.perf/1``, docs/perf.md)."""
        o = self.options
        return {
            "schema": JSON_SCHEMA,
            "model": self.model,
            "device": {"name": self.device.name, "c7x_mhz": self.device.c7x_mhz,
                       "peak_macs_per_cycle": self.peak_macs, **self._multicore()},
            "settings": {"bits": o.bits, "layers_16bit": list(o.layers_16bit), "batches": o.batches,
                         "msmc_kb": self.device.msmc_kb if o.msmc_kb is None else o.msmc_kb,
                         "persist_weights": o.persist_weights, "fps": o.fps},
            "total_cycles": round(self.total_cycles),
            "batch_cycles": self.batch_cycles,
            "mcycles": round(self.total_cycles / 1e6, 4),
            "ms": round(self.ms, 4),
            "fps": round(self.fps, 2),
            "macs": self.macs,
            "mac_utilization": round(self.mac_utilization, 5),
            "mma_bound_cycles": round(self.mma_bound_cycles),
            "ddr_bytes_per_frame": round(self.ddr_bytes_per_frame),
            "ddr_read_bytes_per_frame": round(self.ddr_read_bytes),
            "ddr_write_bytes_per_frame": round(self.ddr_write_bytes),
            "ddr_gbps": round(self.ddr_gbps(), 4),
            "msmc_bytes_per_frame": round(self.msmc_bytes),
            "weight_bytes": self.weight_bytes,
            "persistent_weight_bytes": self.persistent_weight_bytes,
            "msmc_feature_bytes": self.msmc_feature_bytes,
            "spilled_tensors": self.spilled_tensors,
            "width_waste_cycles": round(self.width_waste_cycles),
            "channel_waste_cycles": round(self.channel_waste_cycles),
            "fps_check": self.fps_check.to_dict() if self.fps_check else None,
            "layers": [layer.to_dict() for layer in self.layers],
            "hints": [h.to_dict(self.device) for h in self.hints],
        }

    def _multicore(self) -> dict[str, Any]:
        """The ``device`` keys of a multi-core device (none for a single-core one)."""
        if self.device.cores == 1:
            return {}
        return {"cores": self.device.cores, "inference_mode": self.inference_mode,
                "frames_in_parallel": self.frames_in_parallel}

    def to_json(self) -> str:
        """Deterministic JSON text (same inputs, same bytes): one key per line, one layer per line."""
        def dump(value) -> str:
            return json.dumps(value, separators=(", ", ": "), allow_nan=False)

        parts = []
        for key, value in self.to_dict().items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                text = "[\n" + ",\n".join("  " + dump(item) for item in value) + "\n ]"
            else:
                text = dump(value)
            parts.append(f" {dump(key)}: {text}")
        return "{\n" + ",\n".join(parts) + "\n}\n"


# ---------------------------------------------------------------------------- estimate
@attrs.define
class Prepared:
    """A graph turned into kernel tables, re-usable for what-if runs (hints)."""

    graph: Graph
    device: Device
    options: PerfOptions
    tables: Tables
    _by_precision: dict = attrs.Factory(dict)

    def tables_for(self, options: PerfOptions) -> Tables:
        key = (options.bits, options.layers_16bit)
        if key == (self.options.bits, self.options.layers_16bit):
            return self.tables
        if key not in self._by_precision:
            self._by_precision[key] = tables_for(self.graph, self.device, options)
        return self._by_precision[key]

    def run(self, options: PerfOptions | None = None, tables: Tables | None = None):
        options = options or self.options
        tables = tables or self.tables_for(options)
        return simulate(tables, self.device, options)

    def frame_cycles(self, options: PerfOptions | None = None, tables: Tables | None = None) -> float:
        options = options or self.options
        res, _ = self.run(options, tables)
        return batch_cycles(res, self.device) / options.batches


def prepare(graph: Graph, device: Device | str = "tda4vm", options: Any = None) -> Prepared:
    device = load_device(device) if not isinstance(device, Device) else device
    opts = PerfOptions.from_options(options)
    return Prepared(graph, device, opts, tables_for(graph, device, opts))


def tables_for(graph: Graph, device: Device, options: PerfOptions) -> Tables:
    return build_tables(graph, options.bits, device.bias_in_k, options.layers_16bit,
                        device.width_align, device.width_align_stride2)


def _channel_waste(tables: Tables, res: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Per layer: compute cycles spent on panel padding (K and output channels), if compute-bound."""
    lay = tables.layers
    panel = params[C.P_MMA_PANEL_BYTES] // np.maximum(lay[:, C.L_ELEM], 1)
    k, cout = lay[:, C.L_K], lay[:, C.L_COUT_G]
    used = (k * cout).astype(np.float64)
    padded = (-(-k // panel) * panel * (-(-cout // panel) * panel)).astype(np.float64)
    share = np.where(padded > 0, 1.0 - used / np.maximum(padded, 1), 0.0)
    compute = res[:, C.R_COMPUTE].astype(np.float64)
    bound = np.maximum(compute - res[:, C.R_DMA], 0)  # only what max(compute, dma) would lose
    return np.where(lay[:, C.L_KIND] == C.KIND_MMA, np.minimum(compute * share, bound), 0.0)


def _without_width_alignment(tables: Tables) -> Tables:
    layers = tables.layers.copy()
    layers[:, C.L_ALIGN] = 1
    return attrs.evolve(tables, layers=layers)


def estimate(graph: Graph, device: Device | str = "tda4vm", options: Any = None) -> PerfReport:
    """Estimate one inference of ``graph`` on ``device`` (see docs/perf.md).

    ``options`` may be a :class:`PerfOptions`, CompileOptions (``bits``,
    ``batches``/``num_batches``, ``msmc_kb``, ``persist_weights`` are read when
    present) or None.
    """
    if isinstance(options, CompileOptions):
        options = PerfOptions.from_compile_options(options, graph)
    return report(prepare(graph, device, options))


def report(prep: Prepared) -> PerfReport:
    device, options, tables = prep.device, prep.options, prep.tables
    params = kernel_params(device, options)
    res, loc = simulate(tables, device, options, params)
    b = options.batches
    total_batch = batch_cycles(res, device)
    frame_total = total_batch / b
    peak = device.peak_macs(options.bits) * cores_per_frame(device, options)
    layers = []
    for i, info in enumerate(tables.info):
        r = res[i]
        cycles = r[C.R_CYCLES] / b
        out_loc = int(r[C.R_OUT_LOC])
        if out_loc < 0 and info.alias >= 0:
            out_loc = int(loc[info.alias])
        if info.unit == "none":
            bound = "none"
        elif r[C.R_SETUP] >= max(r[C.R_COMPUTE], r[C.R_DMA]):
            bound = "setup"
        else:
            bound = "compute" if r[C.R_COMPUTE] >= r[C.R_DMA] else "dma"
        layers.append(LayerPerf(
            index=i, name=info.name, op=info.op, tidl_layer=info.tidl, unit=info.unit, note=info.note,
            output_shape=tuple(info.out_shape), macs=info.macs, cycles=cycles,
            compute_cycles=r[C.R_COMPUTE] / b, dma_cycles=r[C.R_DMA] / b, setup_cycles=r[C.R_SETUP] / b,
            bound=bound, percent=100.0 * cycles / frame_total if frame_total else 0.0,
            mma_utilization=info.macs / (cycles * peak) if cycles else 0.0,
            ddr_read_bytes=r[C.R_DDR_READ] / b, ddr_write_bytes=r[C.R_DDR_WRITE] / b,
            msmc_bytes=r[C.R_MSMC_BYTES] / b,
            output_location=C.LOC_NAMES[out_loc] if out_loc >= 0 else "-",
            weights_location=C.LOC_NAMES[int(r[C.R_W_LOC])] if r[C.R_W_LOC] >= 0 else "-",
        ))
    weights = tables.layers[:, C.L_WBYTES]
    persistent = int(weights[res[:, C.R_W_LOC] == C.LOC_MSMC].sum())
    spilled = int(((loc == C.LOC_DDR) & (tables.tensors[:, C.T_PINNED] == 0)).sum())
    unaligned = batch_cycles(simulate(_without_width_alignment(tables), device, options, params)[0], device) / b
    rep = PerfReport(
        model=prep.graph.name, device=device, options=options, layers=tuple(layers),
        batch_cycles=total_batch, macs=sum(layer.macs for layer in layers),
        ddr_read_bytes=res[:, C.R_DDR_READ].sum() / b, ddr_write_bytes=res[:, C.R_DDR_WRITE].sum() / b,
        msmc_bytes=res[:, C.R_MSMC_BYTES].sum() / b, weight_bytes=int(weights.sum()),
        persistent_weight_bytes=persistent,
        msmc_feature_bytes=_msmc_top(tables, params),
        spilled_tensors=spilled,
        width_waste_cycles=max(0.0, frame_total - unaligned),
        channel_waste_cycles=float(_channel_waste(tables, res, params).sum()) / b,
    )
    fps_check = None
    if options.fps:
        budget = 1000.0 / options.fps
        n = rep.frames_in_parallel  # high-throughput: each core has n frame periods per frame
        if n == 1:
            fps_check = FpsCheck(options.fps, budget, rep.ms <= budget, rep.ms / budget)
        else:
            fps_check = FpsCheck(options.fps, budget, rep.ms <= budget * n, rep.ms / (budget * n))
    hints: tuple = ()
    if options.hints:
        from tidlc.backends.tidl.perf.hints import tuning_hints
        hints = tuple(tuning_hints(prep, rep, res, loc))
    return attrs.evolve(rep, hints=hints, fps_check=fps_check)


def _msmc_top(tables: Tables, params: np.ndarray) -> int:
    return int(kernel.place_tensors(tables.tensors, params)[1])
