"""Compile options: typed groups shared by the CLI and the Python API (docs/architecture.md)."""
from __future__ import annotations

import attrs

from tidlc.diagnostics import TidlcError


def parse_shape_spec(text: str) -> tuple[str, tuple[int, ...]]:
    """``"data=1,3,224,224"`` -> ``("data", (1, 3, 224, 224))``."""
    name, sep, dims = text.rpartition("=")
    if not sep or not name:
        raise TidlcError(f"bad --input-shape {text!r}", hint="write NAME=d0,d1,... e.g. data=1,3,224,224")
    try:
        shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise TidlcError(f"bad --input-shape {text!r}: dims must be integers", hint="e.g. data=1,3,224,224") from None
    if not shape or any(d <= 0 for d in shape):
        raise TidlcError(f"bad --input-shape {text!r}: dims must be positive", hint="e.g. data=1,3,224,224")
    return name, shape


@attrs.frozen
class LoadOptions:
    """How a model file becomes a graph (``tidlc.compiler.load``; every frontend reads these)."""

    format: str | None = None  # force a frontend by name
    weights: str | None = None  # Caffe: .caffemodel path
    random_weights: int | None = None  # seed: fill missing weights randomly
    input_shapes: dict[str, tuple[int, ...]] = attrs.Factory(dict)
    input_layout: str | None = None  # NCHW | NHWC: what the compiled network accepts (TIDL inLayout)
    # per input (N, C, H, W) in order, -1 keeps the model's (TIDL inNumChannels/inHeight/inWidth);
    # --input-shape wins for the inputs it names
    input_dims: tuple[tuple[int, int, int, int], ...] = ()
    # an op the frontend cannot lower stays as an opaque `host` op (run on the host);
    # False (--no-host): one error lists every unsupported op instead
    allow_host: bool = True
    # the graph is for the accelerator (set by ``compiler.load(for_device=True)``): an input whose
    # only dynamic dimension is the batch is imported with batch 1, so shape arithmetic on it
    # (a TorchScript export's ``chunk`` under ``dynamic_axes``) is static at import
    batch_one: bool = False


@attrs.frozen
class PipelineOptions:
    """Which passes run (``-O``, ``-p``) and how they are checked and timed."""

    opt_level: int = 2
    passes: str | None = None  # explicit -p pipeline string; replaces the -O list
    blocked_plugins: tuple[str, ...] = ()  # -p no:NAME
    verify_each: bool = False
    time_passes: bool = False


BIAS_CALIBRATION_ITERATIONS = 50  # TIDL's biasCalibrationIterations default (-1); what -O3 runs


@attrs.frozen
class QuantOptions:
    """Post-training quantization (docs/quantization.md). The ``quantize`` pass has one option per
    field but ``quantize`` and ``calib_source``, so ``-p 'quantize{bits=16,calib-method=mse}'``
    overrides these for that pass."""

    quantize: bool | None = None  # None: when the emitted artifact is fixed point (emit "qir"/"bin")
    bits: int = 8  # numParamBits / numFeatureBits: 8 or 16
    quant_style: str = "np2"  # quantizationStyle 2 (np2) or 3 (p2)
    calib: str | None = None  # list file, folder, .npy or .npz of calibration frames
    calib_frames: int | None = None  # numFrames (None: all of --calib, or 8 synthetic)
    calib_source: str = "cli"  # where calibration data is asked for: cli (--calib), config (inData), random (inFileFormat 4)
    calib_method: str = "histogram"  # minmax | histogram | entropy | mse
    percentile: float = 0.01  # percentileActRangeShrink (%)
    bias_calibration: int | None = None  # biasCalibrationIterations (None: 50 at -O3 (8-bit: checked), else off; 0: off)
    bias_calibration_factor: float = 0.05  # biasCalibrationFactor
    per_channel_depthwise: bool = False  # calibrationOption bit 8
    weight_rounding: str | None = None  # nearest | gptq (None: gptq at -O3, else nearest)
    layers_16bit: tuple[str, ...] = ()  # outputFeature16bitNamesList / params16bitNamesList
    mixed_precision_factor: float | None = None  # mixedPrecisionFactor (the same budget as time_budget)
    mixed_precision: str | None = None  # auto | off: choose 16-bit layers by measured sensitivity
    time_budget: float | None = None  # auto mixed precision: predicted time <= this x all-8-bit
    workers: int = 1  # calibration statistics (and tidlc eval/sweep) in N local processes (docs/scale.md)
    ray: str | None = None  # ... or as Ray tasks: "local" (a Ray started here) or a cluster address

    def bias_iterations(self, opt_level: int) -> int | None:
        """The bias calibration a compile at ``opt_level`` runs: ``--bias-calibration ITERS`` as
        given (0: off), else TIDL's 50 iterations at -O3, and none otherwise (measured at -O3 on
        every test model, docs/quantization.md#bias-calibration: at 16 bits no model lost more
        than 0.03 dB; at 8 bits UltraFace gained 5-11 dB but MobileNetV2 lost up to 0.8, so there
        it is checked: :meth:`bias_checked`)."""
        if self.bias_calibration is not None:
            return self.bias_calibration or None
        return BIAS_CALIBRATION_ITERATIONS if opt_level >= 3 else None

    def bias_checked(self, opt_level: int) -> bool:
        """Whether the bias calibration is kept only where calibration frames it was not fitted on
        agree (-O3's 8-bit default; an explicit ``--bias-calibration`` is used as given)."""
        return self.bias_calibration is None and opt_level >= 3 and self.bits == 8


@attrs.frozen
class PreprocessOptions:
    """Image pre-processing of calibration and run inputs (TIDL inMean/inScale/resize/crop)."""

    mean: tuple[float, ...] = ()  # inMean (per channel)
    scale: tuple[float, ...] = ()  # inScale (per channel)
    resize: tuple[int, int] | None = None  # resizeWidth, resizeHeight
    crop: tuple[int, int] | None = None  # inWidth, inHeight (centre crop)
    channel_order: str = "rgb"  # inDataFormat 1 (rgb) or 0 (bgr)


@attrs.frozen
class TargetOptions:
    """The backend and what it writes (TIDL import config: outputNetFile, deviceName, ...)."""

    backend: str = "tidl"  # --target NAME (tidlc.backend, docs/plugins.md)
    device: str = "tda4vm"  # the device net.bin and its perf estimate are for (deviceName)
    emit: str = "ir"
    outdir: str = "out"
    net_name: str = "net.bin"  # the net file: a name inside outdir, or a path
    io_name: str = "io.bin"  # the io descriptor: a name inside outdir, or a path
    batches: int | None = None  # frames per call of the perf estimate in net.bin (numBatches)
    msmc_kb: int | None = None  # MSMC KB of the perf estimate in net.bin (msmcSizeKB)
    # weights that fit in MSMC stay there between frames (perfsim enablePersistWtAlloc); None: off,
    # and -O3 turns it on where the perf model predicts fewer cycles
    persist_weights: bool | None = None
    quant_params: bool = False  # onnx-qdq: also write TIDL's quantization-parameters prototxt
    post_process: str | None = None  # classify | detect | segment: `tidlc run`'s default --post (postProcType)
    # partitioning into accelerator subgraphs + host ops (docs/partition.md; TIDL's deny_list options)
    max_subgraphs: int = 16  # at most this many accelerated subgraphs; the smallest fall back to the host
    min_subgraph_ops: int = 1  # a region with fewer ops runs on the host
    deny_op_types: tuple[str, ...] = ()  # op kinds forced to the host (deny_list:layer_type)
    deny_op_names: tuple[str, ...] = ()  # op names forced to the host (deny_list:layer_name)


GROUPS = {"load": LoadOptions, "pipeline": PipelineOptions, "quant": QuantOptions,
          "preprocess": PreprocessOptions, "target": TargetOptions}


def _group_of_field() -> dict[str, str]:
    owner: dict[str, str] = {}
    for group, cls in GROUPS.items():
        for field in attrs.fields(cls):
            assert field.name not in owner, f"option {field.name!r} is in two groups"
            owner[field.name] = group
    return owner


FIELD_GROUP = _group_of_field()  # option name -> the group that holds it


@attrs.frozen
class CompileOptions:
    """Everything that changes what ``compile`` produces, in typed groups.

    ``CompileOptions.of(emit="bin", bits=16)`` builds one from option names (each
    name lives in exactly one group); ``options.replace(bits=16)`` changes some.
    An unknown name is a ``TypeError``, never a silent default.
    """

    load: LoadOptions = attrs.Factory(LoadOptions)
    pipeline: PipelineOptions = attrs.Factory(PipelineOptions)
    quant: QuantOptions = attrs.Factory(QuantOptions)
    preprocess: PreprocessOptions = attrs.Factory(PreprocessOptions)
    target: TargetOptions = attrs.Factory(TargetOptions)

    @classmethod
    def of(cls, **values) -> CompileOptions:
        return cls().replace(**values)

    def replace(self, **values) -> CompileOptions:
        by_group: dict[str, dict] = {}
        for name, value in values.items():
            group = FIELD_GROUP.get(name)
            if group is None:
                raise TypeError(f"CompileOptions has no option {name!r}")
            by_group.setdefault(group, {})[name] = value
        return attrs.evolve(self, **{g: attrs.evolve(getattr(self, g), **v) for g, v in by_group.items()})

    def value(self, name: str):
        """One option by name (``options.value("bits")`` is ``options.quant.bits``)."""
        group = FIELD_GROUP.get(name)
        if group is None:
            raise TypeError(f"CompileOptions has no option {name!r}")
        return getattr(getattr(self, group), name)

    def wants_quantization(self) -> bool:
        """Whether the -O pipeline keeps its ``quantize`` pass."""
        q = self.quant.quantize
        return q if q is not None else self.target.emit in QUANTIZED_EMITS


QUANTIZED_EMITS = ("qir", "bin")  # artifacts that are fixed point
