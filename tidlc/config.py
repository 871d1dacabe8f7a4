"""Compile options (one attrs class shared by the CLI and the Python API)."""
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


@attrs.define
class CompileOptions:
    """Everything that changes what ``compile`` produces."""

    opt_level: int = 2
    input_shapes: dict[str, tuple[int, ...]] = attrs.Factory(dict)
    pipeline: str | None = None  # explicit -p pipeline string; replaces the -O list
    verify_each: bool = False
    time_passes: bool = False
    emit: str = "ir"
    outdir: str = "out"
    format: str | None = None  # force a frontend by name
    weights: str | None = None  # Caffe: .caffemodel path
    random_weights: int | None = None  # seed: fill missing weights randomly
    blocked_plugins: tuple[str, ...] = ()
    input_layout: str | None = None  # NCHW | NHWC: what the compiled network accepts (TIDL inLayout)
    # per input (N, C, H, W) in order, -1 keeps the model's (TIDL inNumChannels/inHeight/inWidth);
    # --input-shape wins for the inputs it names
    input_dims: tuple[tuple[int, int, int, int], ...] = ()

    # --- --emit bin outputs (TIDL import config: outputNetFile, outputParamsFile, deviceName, ...)
    net_name: str = "net.bin"  # the net file: a name inside outdir, or a path
    io_name: str = "io.bin"  # the io descriptor: a name inside outdir, or a path
    device: str = "tda4vm"  # the device net.bin and its perf estimate are for (deviceName)
    target: str = "tidl"  # the backend (--target; tidlc.backend, docs/backends.md)
    batches: int | None = None  # frames per call of the perf estimate in net.bin (numBatches)
    msmc_kb: int | None = None  # MSMC KB of the perf estimate in net.bin (msmcSizeKB)
    quant_params: bool = False  # onnx-qdq: also write TIDL's quantization-parameters prototxt
    post_process: str | None = None  # classify | detect | segment: `tidlc run`'s default --post (postProcType)

    # --- quantization (docs/quantization.md; CLI flags in tidlc/commands/quant_options.py) ---
    quantize: bool | None = None  # None: when the emitted artifact is fixed point (emit "qir")
    bits: int = 8  # numParamBits / numFeatureBits: 8 or 16
    quant_style: str = "np2"  # quantizationStyle 2 (np2) or 3 (p2)
    calib: str | None = None  # list file, folder, .npy or .npz of calibration frames
    calib_frames: int | None = None  # numFrames (None: all of --calib, or 8 synthetic)
    calib_source: str = "cli"  # where calibration data is asked for: cli (--calib), config (inData), random (inFileFormat 4)
    calib_method: str = "histogram"  # minmax | histogram | entropy | mse
    percentile: float = 0.01  # percentileActRangeShrink (%)
    bias_calibration: int | None = None  # biasCalibrationIterations (None: off)
    bias_calibration_factor: float = 0.05  # biasCalibrationFactor
    per_channel_depthwise: bool = False  # calibrationOption bit 8
    layers_16bit: tuple[str, ...] = ()  # outputFeature16bitNamesList / params16bitNamesList
    mixed_precision_factor: float | None = None  # mixedPrecisionFactor
    mean: tuple[float, ...] = ()  # inMean (per channel)
    scale: tuple[float, ...] = ()  # inScale (per channel)
    resize: tuple[int, int] | None = None  # resizeWidth, resizeHeight
    crop: tuple[int, int] | None = None  # inWidth, inHeight (centre crop)
    channel_order: str = "rgb"  # inDataFormat 1 (rgb) or 0 (bgr)

    def wants_quantization(self) -> bool:
        """Whether the -O pipeline keeps its ``quantize`` pass."""
        return self.quantize if self.quantize is not None else self.emit in QUANTIZED_EMITS


QUANTIZED_EMITS = ("qir", "bin")  # artifacts that are fixed point
