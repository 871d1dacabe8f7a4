"""Quantize a float graph end to end: prepare, calibrate, choose precisions, build, bias-calibrate.

``quantize_graph(graph, options)`` leaves ``graph`` untouched and returns a
:class:`Quantized` with the fixed-point graph, the prepared float graph it
was derived from (the reference ``tidlc compare`` uses) and the map between
their values.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from tidlc import limits
from tidlc.diagnostics import TidlcError, warn
from tidlc.ir.core import Graph, Value
from tidlc.parallel import Executor, one_blas_thread
from tidlc.preprocess import FrameSource, Preprocess, input_specs, synthetic_frames

from .calibrate import Calibration
from .observers import METHODS
from .prepare import prepare
from .ptq import INHERIT_OPS, QuantConfig, WeightCache, float_pad, has_depthwise, quantize_prepared

SYNTHETIC_FRAMES = 8
DEFAULT_TIME_BUDGET = 1.2  # --mixed-precision auto without --time-budget
WIDE_HEADROOM = 1.25  # 16-bit ranges: calibrated min/max x 1.25
# 16-bit layers whose result is a graph output (through reshapes and transposes): x 2. An output
# saturates in full (no layer after it to absorb it), and logits and regressions go past their
# calibrated range on new frames: MediaPipe's face landmarks on scikit-image's photos, 16 frames,
# -O3: its face-flag logit reached 12.2 on one frame where its range ended at 12.0, and that frame
# took the output from ~70 to 36 dB (all 16 frames: 45.7 -> 65.3 dB). On the benchmark frames the
# 16-bit models move by -0.5 to +0.7 dB, a conv -> exp head -1.9 (83.9 -> 82.0). Bounded outputs
# (sigmoid, relu6, clip) keep their own range.
OUTPUT_HEADROOM = 2.0
CALIB_WARNING = ("no calibration data: quantized with ranges from {n} synthetic random frames, which can be far "
                 "from real inputs; pass real ones with {how} (a list file of 'path [label]' lines, "
                 "a folder of images or .npy files, or one .npy of stacked pre-processed frames)")
CALIB_HOW = {"cli": "--calib DATA", "config": "inData = DATA in the import config"}


@attrs.define
class QuantSettings:
    """The quantization options (a view of CompileOptions; see docs/quantization.md)."""

    bits: int = 8
    quant_style: str = "np2"
    calib: str | None = None
    calib_frames: int | None = None
    calib_source: str = "cli"  # cli | config | random (inFileFormat 4: synthetic frames asked for, no warning)
    calib_method: str = "histogram"
    percentile: float = 0.01
    bias_calibration: int | None = None
    bias_calibration_factor: float = 0.05
    bias_check: bool = False  # keep the bias calibration only where held-out frames agree (-O3, 8 bits)
    per_channel_depthwise: bool = False
    weight_rounding: str = "nearest"  # nearest | gptq (gptq.py) | auto (-O3: gptq on graphs with depthwise layers)
    layers_16bit: tuple[str, ...] = ()
    mixed_precision_factor: float | None = None
    mixed_precision: str | None = None  # auto | off (None: auto when a budget is given)
    time_budget: float | None = None
    device: str = "tda4vm"  # whose perf model prices 16-bit layers
    full_range_16: bool = False  # -O3: 16-bit MAC layers may take a full-range output scale (ptq.full_range_pays)
    preprocess: Preprocess = attrs.Factory(Preprocess)
    executor: Any = None  # tidlc.parallel.Executor of the calibration statistics (--workers, --ray)

    @classmethod
    def from_options(cls, options: Any) -> QuantSettings:
        if options is None:
            return cls()
        q = options.quant
        settings = cls(bits=q.bits, quant_style=q.quant_style, calib=q.calib, calib_frames=q.calib_frames,
                       calib_source=q.calib_source, calib_method=q.calib_method, percentile=q.percentile,
                       bias_calibration=q.bias_iterations(options.pipeline.opt_level),
                       bias_calibration_factor=q.bias_calibration_factor,
                       bias_check=q.bias_checked(options.pipeline.opt_level),
                       per_channel_depthwise=q.per_channel_depthwise, layers_16bit=q.layers_16bit,
                       weight_rounding=q.weight_rounding or ("auto" if options.pipeline.opt_level >= 3 else "nearest"),
                       mixed_precision_factor=q.mixed_precision_factor, mixed_precision=q.mixed_precision,
                       time_budget=q.time_budget, device=options.target.device,
                       full_range_16=options.pipeline.opt_level >= 3,
                       preprocess=Preprocess.from_options(options.preprocess),
                       executor=Executor.from_options(options))
        settings.check()
        return settings

    def check(self) -> None:
        if self.bits not in (8, 16):
            raise TidlcError(f"--bits {self.bits}: tidlc quantizes to 8 or 16 bits", hint="--bits 8 or --bits 16")
        if self.quant_style not in ("np2", "p2"):
            raise TidlcError(f"unknown --quant-style {self.quant_style!r}", hint="np2 (quantizationStyle 2) or p2 (3)")
        if self.calib_method not in METHODS:
            raise TidlcError(f"unknown --calib-method {self.calib_method!r}", hint=f"one of {', '.join(METHODS)}")
        if self.calib_frames is not None and self.calib_frames < 1:
            raise TidlcError(f"--calib-frames {self.calib_frames}: expected a positive count",
                             hint="numFrames = -1 (or no --calib-frames) uses every frame", code="option")
        if self.bias_calibration is not None:  # a count, like the frames (the one-pass calibration runs at most
            # 1 + bias.MAX_CORRECTIONS times per layer on at most 16 frames, whatever the count)
            limits.check("frames", self.bias_calibration, "--bias-calibration iterations")
        if self.weight_rounding not in ("nearest", "gptq", "auto"):
            raise TidlcError(f"unknown --weight-rounding {self.weight_rounding!r}", hint="nearest, gptq or auto (-O3: gptq where the graph has depthwise layers)",
                             code="option")
        if self.mixed_precision not in (None, "auto", "off"):
            raise TidlcError(f"unknown --mixed-precision {self.mixed_precision!r}", hint="auto or off")
        for flag, value in (("--mixed-precision-factor", self.mixed_precision_factor),
                            ("--time-budget", self.time_budget)):
            if value is not None and not value >= 1.0:
                raise TidlcError(f"{flag} must be at least 1.0 (the all-8-bit time), got {value}",
                                 hint="e.g. 1.2 allows 20% more predicted time than all 8 bit")
        if None not in (self.mixed_precision_factor, self.time_budget) and \
                self.mixed_precision_factor != self.time_budget:
            raise TidlcError(f"--time-budget {self.time_budget} and --mixed-precision-factor "
                             f"{self.mixed_precision_factor} disagree",
                             hint="they are the same budget (mixedPrecisionFactor is TIDL's name): give one")

    @property
    def mixed_budget(self) -> float | None:
        """The time budget of automatic mixed precision (x all-8-bit), or None when it is off:
        ``--mixed-precision auto`` (default budget 1.2), ``--time-budget F`` or
        ``--mixed-precision-factor F`` (TIDL's name for the same budget)."""
        if self.mixed_precision == "off" or self.bits != 8:
            return None
        budget = self.time_budget if self.time_budget is not None else self.mixed_precision_factor
        if budget is None and self.mixed_precision == "auto":
            budget = DEFAULT_TIME_BUDGET
        return budget


@attrs.define
class Quantized:
    graph: Graph  # the fixed-point graph
    reference: Graph  # the prepared float graph
    origin: dict[int, Value]  # fixed-point value id -> reference value
    mapping: dict[int, Value]  # input graph value id -> reference value
    ranges: dict[int, tuple[float, float]]
    calibration: Calibration
    settings: QuantSettings
    layers_16bit: tuple[str, ...] = ()
    float_islands: list[str] = attrs.Factory(list)
    calib_seconds: float = 0.0
    synthetic: bool = False
    mixed: Any = None  # the MixedChoice of --mixed-precision auto (mixed.py), else None

    def first_frame(self) -> dict[str, np.ndarray]:
        """The first calibration frame (of --calib, or a synthetic one), for the reference graph."""
        frames, _, _ = calibration_frames(self.reference, self.settings)
        return next(iter(frames))


def calibration_frames(graph: Graph, settings: QuantSettings) -> tuple[Iterable[Mapping[str, np.ndarray]], int, bool]:
    """(frames, count, synthetic?) for the graph's inputs."""
    specs = input_specs(graph)
    if settings.calib:
        source = FrameSource(settings.calib, specs, settings.preprocess, settings.calib_frames)
        return source, len(source), False
    count = settings.calib_frames or SYNTHETIC_FRAMES
    limits.check("frames", count, "synthetic calibration frames")  # made one by one: bound the time
    return synthetic_frames(specs, count, settings.preprocess), count, True


WEIGHTS_CHECK_FRAMES = 16  # ... three versions, whose SNRs are closer (keep_best_weights)
CHECK_FRAMES = 4  # calibration frames that compare two quantized versions of one float function
# ... at 16 bits, where -O3's equalize check compares five versions whose SNRs differ by tenths of a dB
# and 4 frames chose wrongly (UltraFace RFB-320 TFLite: 78.0 vs 77.4 dB on 4 frames, 74.3 vs 76.3 dB on
# the evaluation frames)
CHECK_FRAMES_16 = 16


def check_frames(q: Quantized, count: int) -> list[dict[str, np.ndarray]]:
    """The first ``count`` calibration frames (of --calib, or synthetic) of ``q``'s reference graph."""
    frames, _, _ = calibration_frames(q.reference, q.settings)
    out = []
    for feeds in frames:
        out.append(feeds)
        if len(out) >= count:
            break
    return out


def float_outputs(reference: Graph, frames) -> list[dict[str, np.ndarray]]:
    """The float graph ``reference``'s outputs on each of ``frames`` (computed once for all the
    variants a check compares: each is measured against the same float graph)."""
    from tidlc.interp import Interpreter
    interp = Interpreter(reference)
    return [interp.run(f) for f in frames]


def _output_noise(q: Quantized, reference: Graph, frames, floats=None) -> tuple[np.ndarray, np.ndarray]:
    """(signal, noise) energy per float output of ``q`` against ``reference`` over ``frames``
    (``floats``: the reference's outputs on them, when already computed)."""
    from tidlc.backends.tidl.fixed import FixedExecutor

    from .mixed import output_noise
    if floats is None:
        floats = float_outputs(reference, frames)
    return output_noise(FixedExecutor(q.graph, kernels="auto"), frames, floats)


def variant_snr(q: Quantized, reference: Graph, frames, floats=None) -> float:
    """The mean over float outputs of the output SNR (dB) of ``q`` against ``reference`` (a float
    graph of the same function and inputs) over ``frames`` (``floats``: its outputs on them)."""
    from .mixed import mean_snr_db
    return mean_snr_db(*_output_noise(q, reference, frames, floats))


ACTIVATION_WEIGHTS = (0.25, 0.5)  # equalize{activations=...} tried by -O3's 16-bit check


def keep_better_equalized(graph: Graph, options: Any, equalized: Quantized, undo,
                          frames: Iterable | None = None, calibrate_bias: bool = True) -> tuple[Quantized, str]:
    """-O3's check of cross-layer equalization (plugins/equalize.py): ``equalized`` is ``graph``
    quantized after the pass; ``undo`` (the pass's record) puts the original weights back into
    ``graph``, which is quantized again, and the version with the better mean output SNR against
    float on the first CHECK_FRAMES calibration frames (``frames``, else those of the options) is
    returned with a one-line verdict (also stored as the graph attribute ``quant.equalize``).
    Equalization is exact in float but not always better in fixed point (measured: it costs
    UltraFace RFB-320 9 dB at 16 bits, where weights matter less than activations). At 16 bits,
    with real calibration frames, the pass is also redone with each of ACTIVATION_WEIGHTS (the
    channels' observed output ranges in the balance, ``equalize{activations=...}``) and, for a
    graph with per-tensor depthwise layers, with ``equalize{depthwise=per-channel}`` quantized
    with per-channel depthwise scales (TIDL's calibrationOption bit 8); those versions compete
    too, on the first CHECK_FRAMES_16 frames. ``graph`` is left with its original weights.
    ``calibrate_bias``: as :func:`quantize_graph`'s."""
    frames = list(frames) if frames is not None else None
    undo.restore(graph)
    plain = quantize_graph(graph, options, frames=frames, warn_synthetic=False, calibrate_bias=calibrate_bias)
    redo = plain.settings.bits > 8 and undo.redo is not None
    real = frames if frames is not None else _real_frames(plain) if redo else None  # (read once, for both)
    check = real[:CHECK_FRAMES_16 if redo else CHECK_FRAMES] if real else check_frames(plain, CHECK_FRAMES)
    floats = float_outputs(plain.reference, check)
    scored = [("weights", variant_snr(equalized, plain.reference, check, floats), equalized)]
    variants = []  # (label, beta, per-channel depthwise, options): the pass redone on the original graph
    if redo and real:
        variants = [(f"activations={beta:g}", beta, False, options) for beta in ACTIVATION_WEIGHTS]
        if not plain.settings.per_channel_depthwise and has_depthwise(plain.reference):
            # TIDL's per-channel depthwise scales, with the balance that suits them
            variants.append(("depthwise=per-channel", 0.0, True,
                             attrs.evolve(options, quant=attrs.evolve(options.quant, per_channel_depthwise=True))))
    for label, beta, per_channel, variant_options in variants:
        again = undo.redo(graph, real, beta, per_channel)
        if again is None:
            continue
        q = quantize_graph(graph, variant_options, frames=frames, warn_synthetic=False, calibrate_bias=calibrate_bias)
        again.restore(graph)
        scored.append((label, variant_snr(q, plain.reference, check, floats), q))
    without = variant_snr(plain, plain.reference, check, floats)
    best = max(scored, key=lambda t: t[1])  # ties: the earlier one
    chosen = plain if without > best[1] else best[2]
    kept = "" if len(scored) == 1 else " (weight ranges)" if best[0] == "weights" else f" (equalize{{{best[0]}}})"
    with_eq = "; ".join(f"{snr:.1f} dB with it" + ("" if len(scored) == 1 else f" ({label})")
                        for label, snr, _ in scored)
    verdict = (f"{'undone' if chosen is plain else 'kept' + kept}: {with_eq}, {without:.1f} dB without "
               f"(mean output SNR, {len(check)} calibration frames)")
    chosen.graph.attrs["quant.equalize"] = verdict  # net.bin keeps it; `tidlc compile` prints it
    return chosen, verdict


def _real_frames(q: Quantized, count: int = 64) -> list[dict[str, np.ndarray]] | None:
    """The first ``count`` calibration frames of ``q``'s options when they are real (--calib), else None."""
    frames, _, synthetic = calibration_frames(q.reference, q.settings)
    return None if synthetic else first(frames, count)


def keep_best_weights(graph: Graph, options: Any, chosen: Quantized,
                      frames: Iterable | None = None, calibrate_bias: bool = True) -> tuple[Quantized, str]:
    """-O3's check of its weight settings: ``chosen`` (GPTQ rounding, after the equalize check) is
    compared on the first WEIGHTS_CHECK_FRAMES calibration frames with ``graph`` quantized with per-channel
    depthwise scales too (TIDL's calibrationOption bit 8; when the graph has depthwise layers and
    they were per tensor) and with nearest rounding (what -O2 compiles); the best mean output SNR
    against float wins, with a one-line verdict (also the graph attribute ``quant.weights``). GPTQ
    and per-channel scales lower each layer's error on the calibration inputs, but not always the
    network's (measured: MTCNN ONet 16-bit 55.1 -> 54.1 dB with GPTQ). ``calibrate_bias``: as
    :func:`quantize_graph`'s."""
    frames = list(frames) if frames is not None else None
    settings = chosen.settings
    if settings.weight_rounding == "nearest":
        return chosen, ""

    def variant(**quant):
        return quantize_graph(graph, attrs.evolve(options, quant=attrs.evolve(options.quant, **quant)),
                              frames=frames, warn_synthetic=False, calibrate_bias=calibrate_bias)

    equalized = str(chosen.graph.attrs.get("quant.equalize", "")).startswith("kept")
    unequalized = ", not equalized" if equalized else ""
    candidates = [("gptq" + (" + per-channel depthwise" if settings.per_channel_depthwise else "") +
                   (", equalized" if equalized else ""), chosen)]
    if not settings.per_channel_depthwise and has_depthwise(chosen.reference):
        candidates.append(("gptq + per-channel depthwise" + unequalized,
                           variant(weight_rounding="gptq", per_channel_depthwise=True)))
    candidates.append(("nearest" + unequalized + " (-O2)", variant(weight_rounding="nearest")))
    check = frames[:WEIGHTS_CHECK_FRAMES] if frames is not None else check_frames(chosen, WEIGHTS_CHECK_FRAMES)
    floats = float_outputs(chosen.reference, check)
    scored = [(variant_snr(q, chosen.reference, check, floats), i, label, q) for i, (label, q) in enumerate(candidates)]
    best = max(scored, key=lambda t: (t[0], -t[1]))  # ties: the earlier candidate
    verdict = f"{best[2]}: " + "; ".join(f"{label} {snr:.1f} dB" for snr, _, label, _ in scored) + \
        f" (mean output SNR, {len(check)} calibration frames)"
    if "quant.equalize" in chosen.graph.attrs and best[3] is not chosen:  # the equalize verdict stays on record
        was = chosen.graph.attrs["quant.equalize"]
        best[3].graph.attrs["quant.equalize"] = f"undone by the weights check; it was {was}" if equalized else was
    best[3].graph.attrs["quant.weights"] = verdict
    return best[3], verdict


# the output SNR (dB, worst output) below which `tidlc compile` warns that the fixed-point net is far
# from the float one: PP-OCRv4's text recognizer at 8 bits -O2 gave 3.3 dB here and read none of 20
# rendered text lines as onnxruntime reads them; -O3 10.6 dB and 14-15 lines, 16 bits 46.1 dB and 20
LOW_SNR_DB = {8: 15.0, 16: 40.0}
SNR_FRAMES = 4  # calibration frames the compile's output SNR is measured on


def output_snr(q: Quantized, count: int = SNR_FRAMES, frames=None) -> tuple[float, int] | None:
    """(the worst float output's SNR in dB, frames) of ``q`` against its float graph on the first
    ``count`` calibration frames (``frames``: those it was calibrated on, when given rather than
    read from --calib: a subgraph's input tensors), or None for synthetic frames (random inputs tell
    nothing) or a graph without float outputs. In-sample, so optimistic: a sanity check, not an
    accuracy."""
    if q.synthetic:
        return None
    from .mixed import snr_db
    frames = list(frames)[:count] if frames is not None else check_frames(q, count)
    if not frames:
        return None
    signal, noise = _output_noise(q, q.reference, frames)
    return (float(np.min(snr_db(signal, noise))), len(frames)) if len(signal) else None


def snr_note(q: Quantized, opt_level: int, frames=None, what: str = "net") -> str:
    """The compile's note on its output SNR (and a warning when it is low), "" when not measured
    (``frames``, as :func:`output_snr`'s; ``what``: "net", or "subgraph N" of a partitioned model)."""
    got = output_snr(q, frames=frames)
    if got is None:
        return ""
    db, n = got
    bits = q.settings.bits
    if db < LOW_SNR_DB[bits]:
        mixed = ("--mixed-precision auto" if q.mixed is None else
                 f"a --time-budget above {q.mixed.budget:g}")  # (auto ran: it found nothing within its budget)
        tries = [t for t, ok in (("-O3 (per-channel depthwise weights, equalization, bias calibration)", opt_level < 3),
                                 (mixed, bits == 8 and (q.mixed is not None or not q.layers_16bit)),
                                 ("--bits 16", bits == 8)) if ok]
        warn(f"the {bits}-bit {what} is far from the float model: output SNR {db:.1f} dB on {n} calibration "
             f"frame(s) (worst output)", code="accuracy",
             hint=(f"try {', '.join(tries)}; " if tries else "") + "`tidlc compare` names the layers that lose it")
    return f"output SNR vs float: {db:.1f} dB (worst output, {n} calibration frame(s))"


def quantize_checked(graph: Graph, options: Any, undo=None,
                     frames: Iterable | None = None, measure: bool = False) -> tuple[Quantized, list[str]]:
    """What the ``quantize`` pass compiles, with the notes ``tidlc compile`` prints: ``graph``
    quantized; then, when ``undo`` (the equalize pass's record, -O3) is given, the equalize check
    (:func:`keep_better_equalized`; not with automatic mixed precision, whose 16-bit layers were
    chosen for the equalized graph), and when -O3 chose GPTQ itself, the weights check
    (:func:`keep_best_weights`). ``graph`` is left as it came (equalized, if it was): `tidlc
    compare`, `eval` and `tune` quantize one float graph more than once. ``measure`` (the compile's
    quantize pass): also the output SNR on a few calibration frames (:func:`snr_note`)."""
    frames = list(frames) if frames is not None else None
    notes: list[str] = []
    # -O3's checked 8-bit bias calibration: once, on the version the checks chose (calibrating each
    # one would judge them on frames it was fitted on)
    deferred = options is not None and options.quant.bias_checked(options.pipeline.opt_level)
    result = quantize_graph(graph, options, frames=frames, warn_synthetic=frames is None,
                            calibrate_bias=not deferred)
    choice = result.mixed  # automatic mixed precision's, None without it
    promoted = choice is not None and bool(choice.layers)
    if choice is not None and not promoted:
        # nothing promoted: the all-8-bit net, which -O3's checks judge as without --mixed-precision
        # (they skipped it, and -O3 + auto compiled a worse net than -O3: PP-PicoDet's layout
        # detector -1.2 against -0.2 dB in `tidlc tune`)
        options = attrs.evolve(options, quant=attrs.evolve(options.quant, mixed_precision="off"))
    if undo is not None:
        if promoted:
            notes.append("equalize: kept (not checked: --mixed-precision auto chose 16-bit layers for it)")
            undo = None
        else:
            result, verdict = keep_better_equalized(graph, options, result, undo, frames=frames,
                                                    calibrate_bias=not deferred)
            notes.append(f"equalize {verdict}")
    if not promoted and result.settings.weight_rounding == "gptq" and \
            options.quant.weight_rounding is None:  # -O3's choice, not the user's
        result, verdict = keep_best_weights(graph, options, result, frames=frames, calibrate_bias=not deferred)
        notes.append(f"weights {verdict}")
    if choice is not None and result.mixed is None:  # (a checked variant won: the choice stays on record)
        result.mixed = choice
        result.graph.attrs.update(choice.graph_attrs())
    if deferred:
        bias_frames = frames if frames is not None else \
            first(calibration_frames(result.reference, result.settings)[0], 2 * BIAS_FRAMES)
        calibrate_checked(result.reference, result, bias_frames, result.settings)
    if result.graph.attrs.get("quant.bias"):
        notes.append(f"bias calibration {result.graph.attrs['quant.bias']}")
    if undo is not None:
        undo.reapply(graph)
    if measure and (note := snr_note(result, options.pipeline.opt_level if options is not None else 2)):
        notes.append(note)
    return result, notes


def observed_values(graph: Graph) -> set[int]:
    """Float tensors that need a range (results of ops that do not just keep their input's scale)."""
    wanted = {id(op.results[0]) for op in graph.input_ops}
    for op in graph.compute_ops():
        if op.kind in INHERIT_OPS and not float_pad(op):  # (a float op's result is quantized by its reader)
            continue
        wanted.update(id(r) for r in op.results if r.type.dtype[0] == "f")
    return wanted


def frames_change_nothing(graph: Graph, hints: Mapping[int, tuple[float, float]], settings: QuantSettings) -> bool:
    """A fully pre-quantized model (an int8 TFLite, a QDQ ONNX): every float tensor that needs a
    range has the model's, and nothing else reads the calibration frames (bias calibration, GPTQ
    rounding, mixed precision, 16-bit layers), so synthetic frames are no approximation."""
    if settings.bias_calibration or settings.weight_rounding != "nearest" or settings.mixed_budget is not None \
            or settings.layers_16bit or settings.bits != 8:
        return False
    integer_inputs = {id(op.results[0]) for op in graph.input_ops if op.results[0].type.dtype[0] != "f"}
    return bool(hints) and observed_values(graph) - integer_inputs <= set(hints)


def quantize_graph(graph: Graph, options: Any = None, frames: Iterable | None = None,
                   warn_synthetic: bool = True, calibrate_bias: bool = True) -> Quantized:
    """``graph`` quantized with ``options`` (calibrated on ``frames``, else on those the options
    name). ``calibrate_bias=False`` leaves a checked bias calibration (-O3, 8 bits) to the caller
    (:func:`calibrate_checked`; the layers get their zero biases to correct all the same)."""
    with one_blas_thread():  # float runs, searches and fixed-point checks alike (see there)
        return _quantize_graph(graph, options, frames, warn_synthetic, calibrate_bias)


def _quantize_graph(graph: Graph, options: Any, frames: Iterable | None, warn_synthetic: bool,
                    calibrate_bias: bool = True) -> Quantized:
    settings = QuantSettings.from_options(options)
    prepared, mapping = prepare(graph)
    ref_graph = prepared.graph
    if prepared.asymmetric:
        names = ", ".join(sorted({n for n in prepared.asymmetric if n})[:5])
        warn(f"{len(set(prepared.asymmetric))} pre-quantized tensor(s) have an asymmetric zero point "
             f"(e.g. {names}); TDA4VM is symmetric, so each range is widened to max(|min|, |max|)",
             code="quantization")
    synthetic = False
    if frames is None:
        frames, total, synthetic = calibration_frames(ref_graph, settings)
    else:
        frames = list(frames)
        total = len(frames)
    from_model = synthetic and frames_change_nothing(ref_graph, prepared.hints, settings)
    if synthetic and warn_synthetic and settings.calib_source != "random" and not from_model:
        warn(CALIB_WARNING.format(n=total, how=CALIB_HOW.get(settings.calib_source, "--calib DATA")), code="calibration")
    budget = settings.mixed_budget
    if settings.weight_rounding == "auto":  # -O3's default: GPTQ on depthwise-heavy graphs only
        # (measured on MTCNN, no depthwise layer: GPTQ won the weights check on calibration frames and
        # lost up to 1.3 dB on others; its dense layers see one input sample per frame)
        settings = attrs.evolve(settings, weight_rounding="gptq" if has_depthwise(ref_graph) else "nearest")
    gptq = settings.weight_rounding == "gptq"
    keep = max(settings.bias_calibration and 1 or 0, 2 if budget is not None else 0, gptq)
    kept: list = []
    calibration = Calibration(ref_graph, observed_values(ref_graph))

    def tee(source):
        for feeds in source:
            if keep and len(kept) < 64:
                kept.append(feeds)
            yield feeds

    start = time.perf_counter()
    calibration.run(tee(frames), total, executor=settings.executor)
    if calibration.frames == 0:
        raise TidlcError("no calibration frames", settings.calib or "", hint="--calib-frames must be at least 1")
    ranges = compute_ranges(calibration, prepared.hints, settings)
    wide = compute_ranges(calibration, prepared.hints, attrs.evolve(settings, calib_method="minmax"))
    calib_seconds = time.perf_counter() - start

    range_of = CalibratedRanges(ranges, wide, prepared.hints, calibration, output_values(ref_graph))
    config = QuantConfig(bits=settings.bits, style=settings.quant_style,
                         per_channel_depthwise=settings.per_channel_depthwise,
                         layers_16bit=frozenset(_check_layer_names(ref_graph, settings.layers_16bit)),
                         ensure_bias=_bias_runs(settings, calibration.frames), full_range_16=settings.full_range_16,
                         device=settings.device)
    weights = None
    if gptq:  # the layers' input second moments, from a nearest-rounded quantization's integer codes
        from .gptq import cached_hessians
        nearest = quantize_prepared(ref_graph, range_of, config)
        weights = WeightCache(keep=budget is not None, hessians=cached_hessians(ref_graph, nearest.graph, kept))
    mixed = None
    if budget is not None:
        from .mixed import choose_16bit_layers
        mixed = choose_16bit_layers(ref_graph, range_of, config, kept, budget, settings.device,
                                    calib_frames=calibration.frames, weights=weights)
        config = attrs.evolve(config, layers_16bit=config.layers_16bit | frozenset(mixed.layers))
        result = mixed.result
    else:
        result = quantize_prepared(ref_graph, range_of, config, weights)
    result.graph.attrs.update(quant_attrs(settings, calibration, synthetic))
    if from_model:
        result.graph.attrs["quant.calib_source"] = "model"
    if settings.bias_calibration and (calibrate_bias or not settings.bias_check):
        calibrate_checked(ref_graph, result, kept, settings)
    order = {op.name: i for i, op in enumerate(ref_graph.ops)}
    layers16 = tuple(sorted(config.layers_16bit, key=lambda n: (order.get(n, len(order)), n)))
    if layers16:
        result.graph.attrs["quant.layers_16bit"] = list(layers16)  # net.bin keeps it; `tidlc perf` reads it
        _warn_still_8bit(ref_graph, result.graph, settings.layers_16bit)
    if mixed is not None:
        result.graph.attrs.update(mixed.graph_attrs())
    return Quantized(result.graph, ref_graph, result.origin, mapping, ranges, calibration, settings,
                     layers16, result.float_islands, calib_seconds, synthetic, mixed)


BIAS_FRAMES = 16  # bias calibration fits the first 16 calibration frames (TIDL's iterations read them all)
BIAS_HELD_OUT = 8  # -O3 at 8 bits: at least this many of the next 16 frames check it
BIAS_AGREEMENT = 2.0  # ... and their gains must agree: t = mean / standard error of the per-frame gains


def _checkable(frames: int) -> bool:
    """Whether ``frames`` calibration frames leave enough held out to check a bias calibration."""
    return frames >= BIAS_FRAMES + BIAS_HELD_OUT


def _bias_runs(settings: QuantSettings, frames: int) -> bool:
    """Whether bias calibration will run (so every MAC layer gets a bias for it to adjust): asked
    for, and at -O3's 8 bits with enough calibration frames to check it."""
    return bool(settings.bias_calibration) and (not settings.bias_check or _checkable(frames))


def calibrate_checked(ref_graph: Graph, result, kept: Sequence[Mapping[str, np.ndarray]],
                      settings: QuantSettings) -> None:
    """Bias calibration of ``result`` (a quantization of ``ref_graph``; in place, bias.py) on the
    first BIAS_FRAMES calibration frames ``kept``. With ``settings.bias_check`` (-O3's 8-bit
    default) it is kept only if the mean output SNR against float on the next BIAS_FRAMES frames,
    which it was not fitted on, is higher than without it and those frames agree on the gain
    (BIAS_AGREEMENT, a one-sided t-test of the per-frame gains); the one-line verdict is the graph
    attribute ``quant.bias`` (net.bin keeps it; `tidlc compile` prints it), and
    ``quant.bias_calibration`` goes when it is off. At 8 bits a layer's mean error moves with the
    frames more than at 16 (measured at -O3: UltraFace gained 5-11 dB, MobileNetV2 lost up to
    0.8), so frames it did not see decide."""
    verdict = _calibrate_checked(ref_graph, result, list(kept), settings)
    if verdict:
        result.graph.attrs["quant.bias"] = verdict
        if not verdict.startswith("kept"):
            result.graph.attrs.pop("quant.bias_calibration", None)


def _calibrate_checked(ref_graph: Graph, result, kept: list, settings: QuantSettings) -> str:
    from .bias import bias_constants, calibrate_biases
    from .mixed import mean_snr_db, output_noise
    if settings.bias_check and not _checkable(len(kept)):
        return (f"off: not checked ({len(kept)} calibration frame(s); -O3 checks it at 8 bits on frames it "
                f"was not fitted on, from {BIAS_FRAMES + BIAS_HELD_OUT})")
    held = kept[BIAS_FRAMES:2 * BIAS_FRAMES] if settings.bias_check else []
    before = bias_constants(result.graph)
    layers = calibrate_biases(ref_graph, result.graph, result.origin, kept[:BIAS_FRAMES], settings.bias_calibration,
                              settings.bias_calibration_factor)
    if not held or not layers:
        return ""
    from tidlc.backends.tidl.fixed import FixedExecutor

    from tidlc.interp import Interpreter
    interp = Interpreter(ref_graph)
    float_outputs = [interp.run(f) for f in held]

    def noise() -> np.ndarray:  # (frames, signal/noise, outputs)
        ex = FixedExecutor(result.graph, kernels="auto")
        return np.array([output_noise(ex, [f], [r]) for f, r in zip(held, float_outputs)])

    calibrated, after = noise(), bias_constants(result.graph)
    for op, data in before.values():
        op.data = data
    plain = noise()
    signal = plain[:, 0].sum(axis=0)
    with_db, without_db = (mean_snr_db(signal, e[:, 1].sum(axis=0)) for e in (calibrated, plain))
    # each frame's share of the noise it takes away, per output relative to that output's noise
    # without it (the linear part of the change in mean dB): kept when the frames agree on a gain
    # (measured on 16 held-out frames: UltraFace t = 2.9-3.6; MTCNN 1.0-1.9 with +1.2..+2.5 dB, and
    # ONet then lost 0.5 dB on 256 other crops)
    t = agreement(((plain[:, 1] - calibrated[:, 1]) / np.maximum(plain[:, 1].sum(axis=0), 1e-300)).sum(axis=1))
    keep = with_db > without_db and t >= BIAS_AGREEMENT
    if keep:
        for op, data in after.values():
            op.data = data
    return (f"{'kept' if keep else 'off'}: {with_db:.1f} dB with it, {without_db:.1f} dB without (mean output "
            f"SNR on {len(held)} calibration frames it was not fitted on; their gains agree at t = {t:.1f}, "
            f"kept from {BIAS_AGREEMENT:g})")


def agreement(gains: np.ndarray) -> float:
    """How much samples agree on a positive mean: the mean over its standard error (one-sample
    t statistic; +inf when they agree exactly on a gain, 0 on none)."""
    gains = np.asarray(gains, np.float64)
    mean = float(np.mean(gains)) if len(gains) else 0.0
    spread = float(np.std(gains, ddof=1)) / np.sqrt(len(gains)) if len(gains) > 1 else 0.0
    if spread > 0:
        return mean / spread
    return float("inf") if mean > 0 else 0.0


OUTPUT_VIEWS = ("transpose", "reshape", "flatten", "squeeze", "unsqueeze", "identity")


def output_values(graph: Graph) -> frozenset[int]:
    """The ids of the values whose range is a graph output's: the outputs, and back through the ops
    that only reshape or permute them. (Not through a concat of heads, a detector's boxes: its
    inputs were not measured that way.)"""
    seen: set[int] = set()
    todo = list(graph.outputs)
    while todo:
        v = todo.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if v.producer is not None and v.producer.kind in OUTPUT_VIEWS:
            todo.extend(u for u in v.producer.operands if u.const_value() is None)
    return frozenset(seen)


@attrs.frozen
class CalibratedRanges:
    """The quantizer's ``ranges(value, bits)``: calibration's ranges (``narrow`` at 8 bits, min/max
    ``wide`` with headroom at 16: more for the ``outputs``, :func:`output_values`), a pre-quantized
    model's ``hints`` as they are; and the calibrated ``mean_square(value)`` (None for a value not
    observed)."""

    narrow: Mapping[int, tuple[float, float]]
    wide: Mapping[int, tuple[float, float]]
    hints: Mapping[int, tuple[float, float]]
    calibration: Calibration
    outputs: frozenset[int] = frozenset()  # ids of the values that get OUTPUT_HEADROOM

    def __call__(self, v: Value, bits: int = 8) -> tuple[float, float]:
        got = (self.narrow if bits <= 8 else self.wide).get(id(v))
        if got is None:
            raise TidlcError(f"no calibration range for '{v.name or (v.producer.name if v.producer else '?')}'")
        if bits > 8 and id(v) not in self.hints:
            # 16-bit steps are so fine that clipping only adds error: min/max, with headroom for
            # inputs beyond the calibration frames (x 1.25 costs a third of one of the 16 bits; an
            # output's x 2, one bit)
            k = OUTPUT_HEADROOM if id(v) in self.outputs else WIDE_HEADROOM
            got = (got[0] * k, got[1] * k)
        return got

    def mean_square(self, v: Value) -> float | None:
        obs = self.calibration.observers.get(id(v))
        return obs.mean_square() if obs is not None and obs.seen else None


def _warn_still_8bit(ref_graph: Graph, fixed: Graph, names) -> None:
    """``--16bit-layers`` names of layers that stayed 8-bit because they take their inputs'
    precision (a concat, slice, max pool): one warning naming the layers that set it."""
    from .ptq import precision_sources
    bits: dict[str, int] = {}
    for op in fixed.compute_ops():
        for r in op.results:
            if op.name in names and r.type.quant is not None:
                bits[op.name] = max(bits.get(op.name, 0), r.type.quant.bits)
    by_name = {op.name: op for op in ref_graph.compute_ops()}
    stayed = [n for n in names if bits.get(n, 16) <= 8 and n in by_name]
    for name in stayed:
        sources = precision_sources(by_name[name])
        warn(f"--16bit-layers {name}: the {by_name[name].kind} stays 8-bit; it takes its inputs' precision (TIDL "
             "changes precision in MAC, element-wise, table and average-pool layers only)", code="option",
             hint=f"name the layers that set it: --16bit-layers {','.join(sources)}" if sources else "")


def _check_layer_names(graph: Graph, names) -> list[str]:
    known = {op.name for op in graph.compute_ops()}
    unknown = [n for n in names if n not in known]
    if unknown:
        import difflib
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        raise TidlcError(f"--16bit-layers names unknown layer(s) {', '.join(unknown)}",
                         hint=(f"did you mean '{close[0]}'? " if close else "") + "layer names are the op names "
                         "of `tidlc ir MODEL -O2`")
    return list(names)


def compute_ranges(calibration: Calibration, hints: Mapping[int, tuple[float, float]],
                   settings: QuantSettings) -> dict[int, tuple[float, float]]:
    ranges = {}
    for vid, obs in calibration.observers.items():
        if not obs.seen:
            continue
        signed = obs.lo < 0
        levels = 1 << (settings.bits - (1 if signed else 0))
        ranges[vid] = obs.range(settings.calib_method, settings.percentile, levels)
    ranges.update(hints)  # a pre-quantized model's ranges win
    return ranges


def quant_attrs(settings: QuantSettings, calibration: Calibration, synthetic: bool) -> dict[str, Any]:
    """What the quantized graph records about how it was made (graph attributes, for io.bin)."""
    out = {"quant.bits": settings.bits, "quant.style": settings.quant_style,
           "quant.calib_method": settings.calib_method, "quant.calib_frames": calibration.frames,
           "quant.calib_source": "synthetic" if synthetic else str(settings.calib)}
    if settings.bias_calibration:
        out["quant.bias_calibration"] = settings.bias_calibration
    if settings.weight_rounding != "nearest":
        out["quant.weight_rounding"] = settings.weight_rounding
    if settings.per_channel_depthwise:
        out["quant.per_channel_depthwise"] = True
    out.update(settings.preprocess.graph_attrs())
    return out


def first(iterable, n: int) -> list:
    return list(itertools.islice(iterable, n))
