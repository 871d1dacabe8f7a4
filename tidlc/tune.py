"""``tidlc tune``: search deployment configurations, print the Pareto front, write the chosen one.

Each configuration (``-O`` level x precision) is optimised, quantized on the
calibration data and judged on the figures a user judges a deployment by:
the predicted time per frame (the backend's performance model), the SNR of
the fixed-point outputs against the float model on calibration frames, and
the size of the weights. The Pareto front (nothing both faster and more
accurate) is printed; the chosen configuration is the fastest one that meets
``--min-snr`` (and ``--fps``), else the most accurate. It is written as a
TIDL import config and a tidlc command line, and compiled (docs/tune.md).

Everything goes through the Backend contract (``quantize``, ``estimate``,
``load``), so any backend that offers them can be tuned.
"""
from __future__ import annotations

import json
import math
import os
import shlex
from collections.abc import Callable

import attrs
import numpy as np

from tidlc.config import CompileOptions, QuantOptions, TargetOptions
from tidlc.diagnostics import TidlcError

SCHEMA = "tidlc.tune/1"


@attrs.frozen
class Config:
    label: str
    opt_level: int
    bits: int
    time_budget: float | None = None  # 8-bit with automatic 16-bit layers within this x all-8-bit time

    def options(self, base: CompileOptions) -> CompileOptions:
        if self.time_budget is None:
            return base.replace(opt_level=self.opt_level, bits=self.bits, mixed_precision="off",
                                time_budget=None, mixed_precision_factor=None, emit="bin")
        return base.replace(opt_level=self.opt_level, bits=self.bits, mixed_precision="auto",
                            time_budget=self.time_budget, mixed_precision_factor=None, emit="bin")


@attrs.frozen
class Trial:
    config: Config
    ms: float
    snr_db: float
    weight_bytes: int
    layers_16bit: tuple[str, ...] = ()
    pareto: bool = False
    mixed: str = ""  # automatic mixed precision's summary (its choice, predicted time, SNR before/after)
    weights: str = ""  # -O3's weights check: the settings chosen (e.g. "gptq + per-channel depthwise, ...")
    per_channel_depthwise: bool = False  # the quantized graph's depthwise weights are per channel (bit 8)
    bias_calibration: int = 0  # the quantized graph's bias calibration iterations (bit 4; 0: none, or -O3's check undid it)

    @property
    def fps(self) -> float:
        return 1000.0 / self.ms if self.ms > 0 else float("inf")


@attrs.frozen
class TuneResult:
    model: str
    trials: tuple[Trial, ...]
    chosen: Trial
    reason: str
    min_snr: float | None
    fps: float | None
    written: tuple[str, ...] = ()
    command: str = ""

    def to_dict(self) -> dict:
        def row(t: Trial) -> dict:
            return {"config": t.config.label, "opt_level": t.config.opt_level, "bits": t.config.bits,
                    "mixed_precision": "auto" if t.config.time_budget is not None else "off",
                    "time_budget": t.config.time_budget, "ms": round(t.ms, 4),
                    "fps": round(t.fps, 2), "snr_db": round(t.snr_db, 2), "weight_bytes": t.weight_bytes,
                    "layers_16bit": list(t.layers_16bit), "mixed": t.mixed, "weights": t.weights,
                    "bias_calibration": t.bias_calibration, "pareto": t.pareto}
        return {"schema": SCHEMA, "model": self.model, "min_snr": self.min_snr, "fps": self.fps,
                "trials": [row(t) for t in self.trials], "chosen": row(self.chosen), "reason": self.reason,
                "written": list(self.written), "command": self.command}


def auto_config(budget: float, opt_level: int = 3) -> Config:
    return Config(f"-O{opt_level} 8-bit + auto 16-bit x{budget:g}", opt_level, 8, round(float(budget), 3))


DEFAULT_BUDGETS = (1.1, 1.2)
MAX_FPS_BUDGET = 4.0  # above it (a 16-bit MAC costs about 4 8-bit ones) the -O3 16-bit row answers already
DEFAULT_CONFIGS = (
    Config("-O2 8-bit", 2, 8), Config("-O3 8-bit", 3, 8),
    *(auto_config(b) for b in DEFAULT_BUDGETS),
    Config("-O2 16-bit", 2, 16), Config("-O3 16-bit", 3, 16),
)


def fps_budget(ms_8bit: float, fps: float | None) -> float | None:
    """The time budget (x all-8-bit) that just meets ``fps``, if it allows any 16-bit layer."""
    if fps is None or fps <= 0 or ms_8bit <= 0:
        return None
    budget = math.floor(1000.0 / fps / ms_8bit * 1000.0) / 1000.0  # rounded down: the fps still holds
    return budget if 1.0 < budget <= MAX_FPS_BUDGET else None


def _weight_bytes(graph) -> int:
    total = 0
    for op in graph.ops:
        if op.kind == "const" and op.results[0].type.is_static:
            t = op.results[0].type
            bits = t.quant.bits if t.quant is not None else 32
            total += int(np.prod(t.shape, dtype=np.int64)) * max(bits, 8) // 8
    return total


def _snr(reference: dict, outputs: dict) -> float:
    from tidlc.metrics import snr_db
    return min(snr_db(np.asarray(reference[k]), np.asarray(outputs[k])) for k in reference)


def _mark_pareto(trials: list[Trial]) -> list[Trial]:
    marked = []
    for t in trials:
        dominated = any(o is not t and o.ms <= t.ms and o.snr_db >= t.snr_db and (o.ms < t.ms or o.snr_db > t.snr_db)
                        for o in trials)
        marked.append(attrs.evolve(t, pareto=not dominated))
    return marked


def choose(trials: list[Trial], min_snr: float | None, fps: float | None) -> tuple[Trial, str]:
    ok = [t for t in trials if (min_snr is None or t.snr_db >= min_snr) and (fps is None or t.fps >= fps)]
    if ok:
        best = min(ok, key=lambda t: (t.ms, -t.snr_db))
        wants = " and ".join(w for w in (f"SNR >= {min_snr:g} dB" if min_snr is not None else "",
                                         f">= {fps:g} fps" if fps is not None else "") if w)
        return best, f"the fastest configuration with {wants}" if wants else "the fastest configuration"
    best = max(trials, key=lambda t: (t.snr_db, -t.ms))
    return best, "no configuration meets the targets: the most accurate one"


def check_backend(backend) -> None:
    for method in ("quantize", "estimate", "load"):
        if not callable(getattr(backend, method, None)):
            raise TidlcError(f"target '{backend.name}' cannot be tuned or swept: it has no {method}()",
                             code="option", hint="it needs quantize, estimate and load (--target tidl has them)")


def measure(model: str, opts: CompileOptions, backend, plugins, graphs: dict | None = None) -> dict:
    """One configuration: optimise (cached per -O level in ``graphs``), quantize through the backend,
    and measure predicted ms, SNR vs float on the first calibration frame, weight bytes and the
    16-bit layers; ``seconds`` is the optimise + quantize time."""
    import time

    from tidlc.compiler import float_graph
    from tidlc.interp import run_graph
    graphs = {} if graphs is None else graphs
    start = time.perf_counter()
    level = opts.pipeline.opt_level
    if level not in graphs:
        graphs[level] = float_graph(model, opts, plugins)
    q = backend.quantize(graphs[level], opts)
    seconds = time.perf_counter() - start
    frame = q.first_frame()
    reference = run_graph(q.reference, frame)
    outputs = backend.load(q.graph).run(frame)
    report = backend.estimate(q.graph, opts.target.device, opts)
    wide = list(q.graph.attrs.get("quant.layers_16bit") or q.layers_16bit or ())
    mixed = getattr(q, "mixed", None)
    return {"ms": float(report.ms), "snr_db": _snr(reference, outputs), "weight_bytes": _weight_bytes(q.graph),
            "layers_16bit": wide, "seconds": seconds, "mixed": mixed.summary() if mixed is not None else "",
            "weights": str(q.graph.attrs.get("quant.weights", "")).split(":")[0],
            "per_channel_depthwise": bool(q.graph.attrs.get("quant.per_channel_depthwise")),
            "bias_calibration": int(q.graph.attrs.get("quant.bias_calibration") or 0)}


def tune(model: str, options: CompileOptions, plugins=None, configs=DEFAULT_CONFIGS,
         min_snr: float | None = None, fps: float | None = None,
         progress: Callable[[str], None] | None = None) -> TuneResult:
    """Try ``configs`` on ``model`` (no files written; see :func:`write_choice`). With ``fps``,
    automatic mixed precision is also tried at the time budget that just meets it (from the
    first 8-bit configuration's predicted time at the same -O level)."""
    from tidlc.compiler import backend_for, plugins_for
    plugins = plugins or plugins_for(options)
    backend = backend_for(options, plugins)
    check_backend(backend)
    trials, graphs = [], {}
    todo = list(configs)
    added_fps = False
    while todo:
        config = todo.pop(0)
        if progress:
            progress(config.label)
        m = measure(model, config.options(options), backend, plugins, graphs)
        trials.append(Trial(config, m["ms"], m["snr_db"], m["weight_bytes"], tuple(m["layers_16bit"]),
                            mixed=m["mixed"], weights=m["weights"], per_channel_depthwise=m["per_channel_depthwise"],
                            bias_calibration=m["bias_calibration"]))
        if not added_fps and config.bits == 8 and config.time_budget is None and \
                any(c.time_budget is not None and c.opt_level == config.opt_level for c in configs):
            budget = fps_budget(m["ms"], fps)
            known = {c.time_budget for c in configs if c.opt_level == config.opt_level}
            if budget is not None and budget not in known:
                added_fps = True
                autos = [i for i, c in enumerate(todo) if c.opt_level == config.opt_level and c.time_budget]
                todo.insert(autos[-1] + 1 if autos else 0, auto_config(budget, config.opt_level))
    trials = _mark_pareto(trials)
    chosen, reason = choose(trials, min_snr, fps)
    return TuneResult(model, tuple(trials), chosen, reason, min_snr, fps)


# ----------------------------------------------------------------------------- writing the choice
def import_config_text(model: str, options: CompileOptions, trial: Trial, outdir: str) -> str:
    """The chosen configuration as a TIDL import config (the keys tidlc maps; docs/import-config.md)."""
    q, load, pre = options.quant, options.load, options.preprocess
    per_channel = q.per_channel_depthwise or trial.per_channel_depthwise
    bias = trial.bias_calibration
    lines = ["# written by `tidlc tune` (tidlc.tune/1); compile with:",
             f"#   tidlc compile THIS_FILE{' -O3' if trial.config.opt_level == 3 else ''}",
             f"inputNetFile = {os.path.abspath(model)}"]
    if load.format:
        lines.append(f"modelType = {load.format}")
    shapes = [s for s in load.input_shapes.values() if len(s) == 4]
    if shapes and len(shapes) == len(load.input_shapes):  # NCHW inputs: inNumChannels/inHeight/inWidth
        for key, axis in (("inNumChannels", 1), ("inHeight", 2), ("inWidth", 3)):
            lines.append(f"{key} = " + " ".join(str(s[axis]) for s in shapes))
    if load.random_weights is not None:
        lines.append("randParams = 1")
    if load.weights:
        lines.append(f"inputParamsFile = {os.path.abspath(load.weights)}")
    lines += [f"outputNetFile = {os.path.abspath(os.path.join(outdir, 'net.bin'))}",
              f"outputParamsFile = {os.path.abspath(os.path.join(outdir, 'io'))}",
              f"numParamBits = {trial.config.bits}", f"numFeatureBits = {trial.config.bits}",
              f"quantizationStyle = {2 if q.quant_style == 'np2' else 3}",
              f"calibrationOption = {(1 if q.calib_method == 'histogram' else 0) | (4 if bias else 0) | (8 if per_channel else 0)}"]
    if bias:  # TIDL's advanced bias calibration (-O3: at 16 bits; at 8 where its check kept it)
        lines += [f"biasCalibrationIterations = {bias}", f"biasCalibrationFactor = {q.bias_calibration_factor:g}"]
    if per_channel and not q.per_channel_depthwise:
        lines.insert(2, "# -O3's checks chose per-channel depthwise scales: calibrationOption bit 8")
    if q.calib_method not in ("histogram", "minmax"):
        lines.insert(2, f"# --calib-method {q.calib_method} has no TIDL key: the command line keeps it")
    if q.calib:
        lines.append(f"inData = {os.path.abspath(q.calib)}")
    else:
        lines.append("inFileFormat = 4")  # synthetic random frames, as tune used
    if q.calib_frames:
        lines.append(f"numFrames = {q.calib_frames}")
    if trial.config.time_budget:  # TIDL's name for the budget; tidlc chooses the layers (docs/tune.md)
        lines.append(f"mixedPrecisionFactor = {trial.config.time_budget:g}")
    if trial.layers_16bit and not trial.config.time_budget:
        lines.append(f"outputFeature16bitNamesList = {','.join(trial.layers_16bit)}")
    if pre.mean or pre.scale:
        lines.append("inDataNorm = 1")
        if pre.mean:
            lines.append("inMean = " + " ".join(f"{v:g}" for v in pre.mean))
        if pre.scale:
            lines.append("inScale = " + " ".join(f"{v:g}" for v in pre.scale))
    if pre.channel_order == "bgr":
        lines.append("inDataFormat = 0")
    if pre.resize:
        lines += [f"resizeWidth = {pre.resize[0]}", f"resizeHeight = {pre.resize[1]}"]
    if load.input_layout:
        lines.append(f"inLayout = {1 if load.input_layout == 'NHWC' else 0}")
    from tidlc.import_config import DEVICES
    device = {name: number for number, name in DEVICES.items()}.get(options.target.device)
    untold = []
    for flag, value in _target_flags(options.target):
        if flag == "--device" and device is not None:
            lines.append(f"deviceName = {device}")
        else:  # no TIDL key holds it
            untold.append(f"{flag} {value}" if flag == "--device" else flag)
    untold += [flag for flag, given in (("--no-host", not load.allow_host), ("--crop", pre.crop and not pre.resize))
               if given]
    if untold:
        lines.insert(2, f"# {', '.join(untold)}: no TIDL import key; tune.sh's command line keeps them")
    return "\n".join(lines) + "\n"


def command_line(model: str, options: CompileOptions, trial: Trial, outdir: str) -> str:
    q, pre = options.quant, options.preprocess
    argv = ["tidlc", "compile", model, f"-O{trial.config.opt_level}", "--bits", str(trial.config.bits),
            "-o", outdir]
    if trial.config.time_budget:
        argv += ["--mixed-precision", "auto", "--time-budget", f"{trial.config.time_budget:g}"]
    if options.load.weights:
        argv += ["--weights", options.load.weights]
    if options.load.random_weights is not None:
        argv += ["--random-weights", str(options.load.random_weights)]
    if q.calib:
        argv += ["--calib", q.calib]
    if q.calib_frames:
        argv += ["--calib-frames", str(q.calib_frames)]
    if q.calib_method != "histogram":
        argv += ["--calib-method", q.calib_method]
    if q.bias_calibration is not None:
        argv += ["--bias-calibration", str(q.bias_calibration)]
    if q.bias_calibration_factor != attrs.fields(QuantOptions).bias_calibration_factor.default:
        argv += ["--bias-calibration-factor", f"{q.bias_calibration_factor:g}"]
    if pre.mean:
        argv += ["--mean", ",".join(f"{v:g}" for v in pre.mean)]
    if pre.scale:
        argv += ["--scale", ",".join(f"{v:g}" for v in pre.scale)]
    if pre.channel_order != "rgb":
        argv += ["--channel-order", pre.channel_order]
    if pre.resize:
        argv += ["--resize", ",".join(map(str, pre.resize))]
    if pre.crop:
        argv += ["--crop", ",".join(map(str, pre.crop))]
    load, target = options.load, options.target
    for name, shape in load.input_shapes.items():
        argv += ["--input-shape", f"{name}={','.join(map(str, shape))}"]
    if load.format:
        argv += ["--format", load.format]
    if load.input_layout:
        argv += ["--input-layout", load.input_layout]
    if not load.allow_host:
        argv += ["--no-host"]
    defaults = {f.name: f.default for f in attrs.fields(QuantOptions)}
    if q.quant_style != defaults["quant_style"]:
        argv += ["--quant-style", q.quant_style]
    if q.percentile != defaults["percentile"]:
        argv += ["--percentile", f"{q.percentile:g}"]
    if q.per_channel_depthwise:
        argv += ["--per-channel-depthwise"]
    if q.weight_rounding:
        argv += ["--weight-rounding", q.weight_rounding]
    if q.layers_16bit:
        argv += ["--16bit-layers", ",".join(q.layers_16bit)]
    # where it runs and how it is split: the trials were measured so (tidlc tune --device, deny lists)
    for flag, value in _target_flags(target):
        argv += [flag, value]
    return shlex.join(argv)


def _target_flags(target: TargetOptions) -> list[tuple[str, str]]:
    """(flag, value) of the device and partitioning options that differ from their defaults."""
    default = {f.name: f.default for f in attrs.fields(TargetOptions)}
    flags = [("--device", target.device, target.device != default["device"]),
             ("--deny-op-type", ",".join(target.deny_op_types), bool(target.deny_op_types)),
             ("--deny-op-name", ",".join(target.deny_op_names), bool(target.deny_op_names)),
             ("--max-subgraphs", str(target.max_subgraphs), target.max_subgraphs != default["max_subgraphs"]),
             ("--min-subgraph-ops", str(target.min_subgraph_ops),
              target.min_subgraph_ops != default["min_subgraph_ops"])]
    return [(flag, value) for flag, value, given in flags if given]


def write_choice(result: TuneResult, options: CompileOptions, outdir: str, plugins=None) -> TuneResult:
    """Write ``OUTDIR/tune_import.txt``, ``OUTDIR/tune.sh`` and ``tune.json``, then compile the choice."""
    from tidlc.compiler import compile_model
    from tidlc.fileio import commit_files
    trial = result.chosen
    config_path = os.path.join(outdir, "tune_import.txt")
    command = command_line(result.model, options, trial, outdir)
    compiled = compile_model(result.model, trial.config.options(options).replace(outdir=outdir), plugins)
    doc = attrs.evolve(result, command=command).to_dict()
    files = {config_path: import_config_text(result.model, options, trial, outdir).encode(),
             os.path.join(outdir, "tune.sh"): (f"#!/bin/sh\n# written by `tidlc tune`\n{command}\n").encode(),
             os.path.join(outdir, "tune.json"): (json.dumps(doc, indent=2) + "\n").encode()}
    commit_files(files)
    return attrs.evolve(result, written=(*compiled.outputs, *files), command=command)


def render_text(result: TuneResult) -> str:
    header = f"{'configuration':<34} {'ms':>8} {'fps':>8} {'SNR dB':>7} {'16-bit':>6} {'weights KB':>10}  pareto"
    lines = [f"{result.model}: {len(result.trials)} configurations", "", header, "-" * len(header)]
    for t in result.trials:
        mark = ("*" if t.pareto else "") + ("  <- chosen" if t is result.chosen or t == result.chosen else "")
        wide = "all" if t.config.bits == 16 else str(len(t.layers_16bit))
        lines.append(f"{t.config.label:<34} {t.ms:8.3f} {t.fps:8.1f} {t.snr_db:7.1f} {wide:>6} "
                     f"{t.weight_bytes / 1024:10.1f}  {mark}")
    autos = [t for t in result.trials if t.mixed]
    if autos:
        lines.append("")
        for t in autos:
            lines.append(f"{t.config.label}: {t.mixed}")
    checked = [t for t in result.trials if t.weights]
    if checked:  # -O3's weights check (equalization and its check are in the SNR already)
        lines.append("")
        for t in checked:
            lines.append(f"{t.config.label}: weights {t.weights}")
    c = result.chosen
    lines += ["", f"chosen: {c.config.label} ({result.reason})"]
    if c.layers_16bit:
        lines.append(f"  16-bit layers: {', '.join(c.layers_16bit)}")
    if result.command:
        lines.append(f"  command: {result.command}")
    for path in result.written:
        lines.append(f"  wrote {path}")
    return "\n".join(lines) + "\n"
