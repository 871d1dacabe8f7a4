"""TIDL-RT import config files: ``tidlc compile import.txt`` does the job of
``tidl_model_import.out import.txt`` (docs/import-config.md).

Syntax, as TIDL's ``readparamfile`` reads it: one ``key = value`` per line;
``#`` starts a comment that runs to the end of the line (outside double
quotes); a value is one or more whitespace-separated items (several for the
per-channel / per-input keys, ``inMean = 103.94 116.78 123.68``); an item in
double quotes may hold spaces; ``modelType`` and ``postProcType`` take names
or numbers, integer keys take ``true``/``false``; a key given twice keeps its
last value. tidlc also accepts ``key=value`` without spaces. Trailing
``--key value [value ...]`` arguments override the file, as in TIDL's tool.

Every key TIDL knows is in :data:`KEYS` with what tidlc does with it:
``mapped`` onto :class:`~tidlc.config.CompileOptions`; ``ignored`` (accepted,
with a one-line warning naming the key and why when its value is not TIDL's
default); or ``rejected`` (an error unless the value is TIDL's default,
because ignoring it would change the network's results). Unknown keys are
errors with a did-you-mean hint.

Relative paths are resolved against the config file's folder. A config
written for TI's tool (paths relative to the folder the tool ran in) still
works: if ``inputNetFile`` is not found next to the config but is found
from the working directory, every path of the file is taken from the
working directory, with a warning. Paths given as ``--key value`` overrides
are relative to the working directory.
"""
from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from tidlc import limits
from tidlc.config import BIAS_CALIBRATION_ITERATIONS, CompileOptions
from tidlc.diagnostics import Loc, TidlcError, warn
from tidlc.fileio import check_regular, open_regular, read_bytes
from tidlc.names import nearest_names, resolve_tensor_name

MAPPED, IGNORED, REJECTED = "mapped", "ignored", "rejected"
MODEL_TYPES = {"caffe": 0, "tensorflow": 1, "onnx": 2, "tflite": 3}
FORMATS = {0: "caffe", 1: "tensorflow", 2: "onnx", 3: "tflite"}
# accepted when they name the model's own inputs / outputs (TensorFlow's 'name:0' too), else rejected
_IO_NAME_KEYS = ("inDataNamesList", "outDataNamesList")
FORMAT_SUFFIXES = {".prototxt": "caffe", ".pb": "tensorflow", ".onnx": "onnx", ".tflite": "tflite"}
POST_PROC_TYPES = {"disabled": 0, "classification": 1, "detection": 2, "segmentation": 3}
POST_PROCESS = {0: None, 1: "classify", 2: "detect", 3: "segment"}  # tidlc run --post
DEVICES = {0: "tda4vm", 1: "tda4aep", 2: "tda4am", 3: "tda4amplus", 4: "am62a"}  # deviceName
CONFIG_HINT = "see docs/import-config.md for every key"


@attrs.frozen
class Key:
    """One import-config key: its value kind, TIDL's default, and what tidlc does with it.

    ``kind``: ``int``, ``float``, ``str`` (a string or a list of names),
    ``path``; a trailing ``s`` (``ints``, ``floats``) takes several values
    (per channel or per input). ``note`` says what the key becomes (mapped),
    why it is ignored, or the hint of its rejection.
    """

    name: str
    kind: str
    default: Any
    status: str
    note: str
    names: dict[str, int] = attrs.field(factory=dict)


def _rows() -> list[Key]:
    m, i, r = MAPPED, IGNORED, REJECTED
    model, post = MODEL_TYPES, POST_PROC_TYPES
    rows = [
        # --- the model and the outputs
        Key("modelType", "int", 0, m, "the frontend: 0 caffe, 1 tensorflow, 2 onnx, 3 tflite (names work too); "
            "without it tidlc detects the format", model),
        Key("inputNetFile", "path", "", m, "the model file"),
        Key("inputParamsFile", "path", "", m, "Caffe: the .caffemodel (--weights)"),
        Key("outputNetFile", "path", "", m, "the net.bin path"),
        Key("outputParamsFile", "path", "", m, "prefix of the io descriptor: <prefix>1.bin"),
        Key("randParams", "int", 0, m, "1: seeded random weights for missing ones (--random-weights 0)"),
        # --- quantization
        Key("numParamBits", "int", 8, m, "--bits (8 or 16; TIDL's 9..15 become 16)"),
        Key("numFeatureBits", "int", 8, m, "--bits (8 or 16)"),
        Key("quantizationStyle", "int", 2, m, "--quant-style: 2 np2, 3 p2"),
        Key("calibrationOption", "int", 0, m, "bit 1 histogram (else minmax), bit 4 --bias-calibration, "
            "bit 8 --per-channel-depthwise"),
        Key("activationRangeMethod", "int", 0, m, "tidlc's histogram always spans all frames (TIDL's 1)"),
        Key("percentileActRangeShrink", "float", 0.01, m, "--percentile"),
        Key("biasCalibrationFactor", "float", 0.05, m, "--bias-calibration-factor"),
        Key("biasCalibrationIterations", "int", -1, m, "--bias-calibration ITERS (-1: 50)"),
        Key("numFrames", "int", -1, m, "--calib-frames (-1: every frame of inData)"),
        Key("quantRoundAdd", "int", 50, m, "50 only: tidlc rounds to nearest"),
        Key("outputFeature16bitNamesList", "str", "", m, "--16bit-layers"),
        Key("params16bitNamesList", "str", "", m, "--16bit-layers (the whole layer becomes 16-bit)"),
        Key("mixedPrecisionFactor", "float", -1.0, m, "--mixed-precision-factor (-1: off)"),
        Key("preQuantizedModel", "int", 0, m, "tidlc detects pre-quantized (QDQ, int8) models itself"),
        # --- calibration data and pre-processing
        Key("inFileFormat", "int", 2, m, "0 image, 2 list file: inData is --calib; 4 random frames; "
            "1/3/5 (raw) only with a .npy/.npz inData"),
        Key("inData", "path", "", m, "--calib"),
        Key("inDataNorm", "ints", 0, m, "1: apply inMean/inScale"),
        Key("inMean", "floats", 0.0, m, "--mean (when inDataNorm = 1)"),
        Key("inScale", "floats", 1.0, m, "--scale (when inDataNorm = 1)"),
        Key("inDataFormat", "ints", 1, m, "--channel-order: 0 bgr, 1 rgb"),
        Key("resizeWidth", "ints", -1, m, "--resize W,H"),
        Key("resizeHeight", "ints", -1, m, "--resize W,H"),
        Key("inWidth", "ints", -1, m, "the input width (the model's if -1); --crop after a resize"),
        Key("inHeight", "ints", -1, m, "the input height (the model's if -1); --crop after a resize"),
        Key("inNumChannels", "ints", -1, m, "the input channels (the model's if -1)"),
        Key("inLayout", "ints", 0, m, "--input-layout: 0 NCHW, 1 NHWC (absent: the model's own)"),
        # --- device, perf and run
        Key("numBatches", "ints", 1, m, "frames per call of the perf estimate in net.bin (tidlc perf --batches)"),
        Key("msmcSizeKB", "int", -1, m, "MSMC KB of the perf estimate in net.bin (tidlc perf --msmc-size)"),
        Key("deviceName", "int", -1, m, "the device of net.bin and its perf estimate: 0 TDA4VM"),
        Key("numCores", "int", 1, m, "1 only (TDA4VM has one C7x/MMA)"),
        Key("inferenceMode", "int", 0, m, "0 only (TDA4VM has one C7x/MMA)"),
        Key("postProcType", "int", 0, m, "stored in net.bin for `tidlc run`: 1 --post classify, 2 detect, "
            "3 segment", post),
        # --- accepted and ignored (a warning when not TIDL's default)
        Key("weightRangeMethod", "int", 1, i, "weights keep their full range"),
        Key("percentileWtRangeShrink", "float", 0.01, i, "weights keep their full range"),
        Key("numFramesBiasCalibration", "int", -1, i, "bias calibration uses the calibration frames"),
        Key("quantRangeExpansionFactor", "float", 1.0, i, "tidlc uses the calibrated ranges as they are"),
        Key("quantRangeUpdateFactor", "float", -1.0, i, "tidlc accumulates ranges over all frames"),
        Key("foldBnInConv2D", "int", 1, i, "-O2 always folds batchnorm (use -O1 to keep it)"),
        Key("foldPreBnConv2D", "int", 1, i, "-O2 always folds batchnorm (use -O1 to keep it)"),
        Key("foldEltWiseInConv2D", "int", 0, i, "not supported by TIDL either"),
        Key("foldMaxPoolInConv2D", "int", 0, i, "not supported by TIDL either"),
        Key("foldDepthToSpaceInConv2D", "int", 0, i, "tidlc keeps depth-to-space a layer of its own"),
        Key("addDataConvertToNet", "int", 0, i, "tidlc networks always convert float inputs and outputs inside"),
        Key("debugTraceLevel", "int", 0, i, "use --debug for tracebacks"),
        Key("writeTraceLevel", "int", 0, i, "use `tidlc run --trace DIR` for layer traces"),
        Key("compileConstraintsFlag", "int", 0, i, "TI's network-compiler flags"),
        Key("executeNetworkCompiler", "int", 1, i, "tidlc has no separate network compiler"),
        Key("executeQuantsTool", "int", 1, i, "tidlc always calibrates in-process"),
        Key("perfSimTool", "path", "", i, "TI's ti_cnnperfsim.out; tidlc's perf model is built in (tidlc perf)"),
        Key("graphVizTool", "path", "", i, "TI's graph visualiser; use `tidlc ir`"),
        Key("tidlStatsTool", "path", "", i, "TI's calibration executable; tidlc calibrates in-process"),
        Key("modelDumpTool", "path", "", i, "TI's tidl_dump.out; use `tidlc ir` or `tidlc perf`"),
        Key("perfSimConfig", "path", "", i, "TI's device_config.cfg; tidlc has its own device model "
            "(use deviceName, msmcSizeKB)"),
        Key("inElementType", "ints", 0, i, "tidlc picks the input element type from the calibrated range"),
        Key("rawDataInElementType", "ints", -1, i, "only for raw inData files, which tidlc does not read"),
        Key("NetInElementType", "ints", -1, i, "tidlc picks the input element type from the calibrated range"),
        Key("outElementType", "ints", -1, i, "io.bin records the computed output types; outputs are float"),
        Key("outElementSize", "ints", -1, i, "io.bin records the computed output types; outputs are float"),
        Key("outLayout", "ints", 0, i, "outputs keep the model's layout"),
        Key("inDataPadInTIDL", "ints", 0, i, "tidlc tensors are unpadded"),
        Key("inDIM1", "ints", 1, i, "6-D inputs are not modelled"),
        Key("inDIM2", "ints", 1, i, "6-D inputs are not modelled"),
        Key("postProcDataId", "int", 0, i, "`tidlc run --post` reads the first output"),
        Key("enableHighResOptimization", "int", 0, i, "TI's network-compiler option"),
        Key("modelGroupId", "int", 0, i, "a TIDL-RT memory-sharing option"),
        Key("enableBiasFusion", "int", 0, i, "-O2 fuses biases"),
        Key("softmax16BitScaleUpdate", "int", 0, i, "a TIDL-RT kernel option"),
        Key("use16BitForTopK", "int", 0, i, "a TIDL-RT kernel option"),
        Key("actMethod", "ints", -1, i, "a TIDL-RT kernel option"),
        Key("actType", "str", "", i, "a TIDL-RT kernel option"),
        Key("reserved", "ints", 0, i, "reserved by TIDL"),
        Key("inStrVal", "str", "", i, "internal to TIDL"),
        Key("fileNameGrpInfo", "str", "", i, "internal to TIDL"),
        Key("negativeTestUpdate", "str", "", i, "internal to TIDL"),
        Key("ddrLayers", "ints", -1, i, "TI's network-compiler placement"),
        Key("singleCoreLayersNames", "str", "", i, "multi-core placement (TDA4VM has one core)"),
        Key("spatialSplitLayersNames", "str", "", i, "multi-core placement (TDA4VM has one core)"),
        Key("channelSplitLayersNames", "str", "", i, "multi-core placement (TDA4VM has one core)"),
        Key("c7xFirmwareVersion", "str", "", i, "tidlc's format is not tied to a firmware release"),
        Key("logFileName", "path", "", i, "tidlc prints to the terminal"),
        Key("partialInitDuringCompile", "int", 0, i, "a TIDL-RT init option"),
        Key("batchMode", "int", 0, i, "a TIDL-RT option"),
        Key("enableShapeFolding", "int", 0, i, "fold-constants folds shape computations"),
        Key("optimizeBatchNormHigherDims", "int", 0, i, "a TIDL-RT option"),
        Key("forceSpatialSplitInLowLatencyMode", "int", 0, i, "multi-core only"),
        Key("forceBatchSplitInLowLatencyMode", "int", 0, i, "multi-core only"),
        Key("optimizeTopKAxis", "int", 1, i, "a TIDL-RT option"),
        Key("packetizeMode", "int", -1, i, "a TIDL-RT weight-packing option"),
        Key("ncTempInfoDir", "path", "", i, "TI's network-compiler scratch folder"),
        Key("enableTFROptimization", "int", 0, i, "an experimental TIDL option"),
        # --- rejected unless TIDL's default: ignoring them would change the results
        Key("metaArchType", "int", -1, r, "detection meta-architectures are not imported; export the model "
            "with its post-processing, or cut it before the detection head"),
        Key("metaLayersNamesList", "path", "", r, "detection meta-architectures are not imported"),
        Key("inDataNamesList", "str", "", r, "tidlc compiles the whole graph; cut the model first "
            "(e.g. onnx.utils.extract_model)"),
        Key("outDataNamesList", "str", "", r, "tidlc compiles the whole graph; cut the model first "
            "(e.g. onnx.utils.extract_model)"),
        Key("quantParamsPrototxtFile", "path", "", r, "tidlc neither reads nor writes TIDL quant-params "
            "files; remove the key (pre-quantized ONNX/TFLite models keep their scales)"),
        Key("enableCustomLayers", "int", 0, r, "TIDL custom layers are C code; write a tidlc op plugin "
            "(docs/plugins.md)"),
        Key("inYuvFormat", "ints", -1, r, "NV12 input is not supported; feed RGB/BGR planes"),
        Key("inResizeType", "ints", 0, r, "only plain resizing (0) is supported"),
        Key("inQuantFactor", "floats", 1.0, r, "fixed-point input scales come from calibration"),
        Key("inTensorScale", "floats", 1.0, r, "fixed-point input scales come from calibration"),
        Key("inZeroPoint", "ints", 0, r, "TDA4VM tensors have zero point 0"),
        Key("outTensorScale", "floats", 0.0, r, "fixed-point output scales come from calibration"),
        Key("outZeroPoint", "ints", 0, r, "TDA4VM tensors have zero point 0"),
    ]
    return rows


KEYS: dict[str, Key] = {k.name: k for k in _rows()}
_ASSIGNMENT = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)\Z", re.DOTALL)


# ----------------------------------------------------------------------------- reading
@attrs.frozen
class Setting:
    """One ``key = value`` as written: its items, where, and the folder its paths are relative to."""

    key: str
    items: tuple[str, ...]
    loc: Loc
    base: str | None  # None: the config file's folder (decided once the whole file is read)

    def where(self) -> str:
        return self.loc.where()


def _strip_comment(line: str) -> str:
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
    return line


def _items(text: str) -> tuple[list[str], bool]:
    """Whitespace-separated items; ``"..."`` is one item. Returns (items, closed quotes?)."""
    items, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == '"':
            end = text.find('"', i + 1)
            if end < 0:
                return items, False
            items.append(text[i + 1:end])
            i = end + 1
        else:
            end = i
            while end < n and not text[end].isspace() and text[end] != '"':
                end += 1
            items.append(text[i:end])
            i = end
    return items, True


def parse_text(text: str, path: str) -> list[Setting]:
    """The ``key = value`` lines of a config file, in order (syntax errors raise, one per line)."""
    settings, problems = [], []
    for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        loc = Loc(file=path, line=number)
        match = _ASSIGNMENT.match(line)
        if not match:
            problems.append(TidlcError(f"expected 'key = value', got {line[:60]!r}", loc,
                                       hint="one key per line; '#' starts a comment", code="syntax"))
            continue
        key, rest = match.group(1), match.group(2)
        items, closed = _items(rest)
        if not closed:
            problems.append(TidlcError(f"'{key}': unterminated \"", loc, hint='close the quoted value with "',
                                       code="syntax"))
            continue
        settings.append(Setting(key, tuple(items), loc, None))
    _raise(problems)
    return settings


def parse_overrides(argv: Sequence[str]) -> list[Setting]:
    """TIDL's trailing ``--key value [value ...]`` arguments (``--key=value`` too)."""
    settings, problems, i = [], [], 0
    loc = Loc(file="command line")
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or len(arg) == 2:
            problems.append(TidlcError(f"unexpected argument {arg!r}", loc,
                                       hint="import-config overrides are written --key value [value ...]"))
            i += 1
            continue
        key, sep, inline = arg[2:].partition("=")
        values: list[str] = [inline] if sep else []
        i += 1
        if not sep:
            if i < len(argv) and not argv[i].startswith("--"):  # the first value may be negative
                values.append(argv[i])
                i += 1
            while i < len(argv) and not (argv[i].startswith("-") and not _is_number(argv[i])):
                values.append(argv[i])
                i += 1
        settings.append(Setting(key, tuple(values), Loc(file=f"--{key}"), os.getcwd()))
    _raise(problems)
    return settings


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _raise(problems: list[TidlcError]) -> None:
    """One problem: that error. Several: the first, the others as indented lines under it."""
    if not problems:
        return
    first = problems[0]
    if len(problems) > 1:
        first.problems.extend(str(p) for p in problems[1:])
    raise first


def _read_text(path: str) -> str:
    data = read_bytes(path, "import config file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # TIDL reads bytes; a stray non-UTF-8 comment must not fail


def looks_like_import_config(path: str, limit: int = 1 << 16) -> bool:
    """Whether ``path`` is a TIDL import config: a text file whose lines are mostly ``key = value``
    with at least one TIDL key (a ``.txt`` file: all lines ``key = value``, any keys). A config
    with a broken line is still one, so that its error names the line."""
    if not os.path.isfile(path):
        return False
    try:
        with open_regular(path, "import config file") as fh:  # (a FIFO swapped in is not read)
            data = fh.read(limit + 1)
    except (TidlcError, OSError):
        return False
    if b"\0" in data:
        return False
    try:
        text = data[:limit].decode("utf-8")
    except UnicodeDecodeError:
        return False
    lines = text.lstrip("\ufeff").splitlines()
    if len(data) > limit and lines:
        lines = lines[:-1]  # the last line may be cut
    lines = [line for line in (_strip_comment(raw).strip() for raw in lines) if line]
    keys = [m.group(1) for m in map(_ASSIGNMENT.match, lines) if m]
    if not keys:
        return False
    if any(k in KEYS for k in keys) and 2 * len(keys) > len(lines):
        return True
    return len(keys) == len(lines) and path.lower().endswith(".txt")


# ----------------------------------------------------------------------------- values
def _unknown_key(setting: Setting) -> TidlcError:
    lower = {k.lower(): k for k in KEYS}
    close = [lower[setting.key.lower()]] if setting.key.lower() in lower else \
        difflib.get_close_matches(setting.key, list(KEYS), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else CONFIG_HINT
    return TidlcError(f"unknown key '{setting.key[:100]}'", setting.loc, hint=hint, code="config")


def _convert(setting: Setting, spec: Key) -> Any:
    """The typed value of a setting (TidlcError at its location if it does not fit)."""
    items = setting.items
    if not items:
        raise TidlcError(f"'{spec.name}' has no value", setting.loc,
                         hint=f"write {spec.name} = VALUE, or comment the line out with #")
    if spec.kind in ("str", "path"):
        if spec.kind == "path" and len(items) > 1:
            raise TidlcError(f"'{spec.name}' takes one path, got {len(items)} items", setting.loc,
                             hint='quote a path with spaces: "my models/net.onnx"')
        return " ".join(items)
    many = spec.kind.endswith("s")
    if not many and len(items) > 1:
        raise TidlcError(f"'{spec.name}' takes one value, got {len(items)}: {_show(items)}", setting.loc,
                         hint=f"{spec.name} = {_show(items[0])}", code="config")
    values = []
    for item in (v for text in items for v in text.replace(",", " ").split()):
        values.append(_number(item, spec, setting))
    if not values:
        raise TidlcError(f"'{spec.name}' has no value", setting.loc, hint=f"write {spec.name} = VALUE")
    return tuple(values) if many else values[0]


def _number(item: str, spec: Key, setting: Setting) -> int | float:
    names = {**spec.names, "true": 1, "false": 0} if spec.kind.startswith("int") else {}
    if item.lower() in names:
        return names[item.lower()]
    try:
        if not spec.kind.startswith("int"):
            value = float(item)
            if value != value or value in (float("inf"), float("-inf")):
                raise TidlcError(f"{spec.name} = {_show(item)}: expected a finite number", setting.loc,
                                 hint=f"{spec.name} = {spec.default}", code="config")
            return value
        return int(item, 16) if item.lower().lstrip("-").startswith("0x") else int(item)
    except ValueError:
        pass
    what = "an integer" if spec.kind.startswith("int") else "a number"
    choices = f"; or one of {', '.join(spec.names)}" if spec.names else ""
    raise TidlcError(f"{spec.name} = {_show(item)}: expected {what}{choices}", setting.loc,
                     hint=f"{spec.name} = {spec.default}")


def _every(value: Any, ok) -> bool:
    return all(ok(v) for v in value) if isinstance(value, tuple) else ok(value)


def _is_default(value: Any, spec: Key) -> bool:
    if isinstance(value, tuple):
        return all(v == spec.default for v in value)
    return value == spec.default


def _show(value: Any, width: int = 80) -> str:
    """A value as written, clipped: messages stay one readable line whatever the file holds."""
    text = " ".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return text if len(text) <= width else text[:width] + "..."


# ----------------------------------------------------------------------------- the config
@attrs.define
class ImportConfig:
    """A read and checked import config: the model to compile and the CompileOptions values."""

    path: str
    model: str
    values: dict[str, Any]  # CompileOptions field -> value
    net_path: str | None  # outputNetFile (absolute), None: not given
    io_path: str | None  # <outputParamsFile>1.bin (absolute), None: not given
    settings: dict[str, Setting] = attrs.Factory(dict)

    def compile_options(self, base: CompileOptions | None = None, explicit: Iterable[str] = ()) -> CompileOptions:
        """``base`` with the config's values, except for the fields named in ``explicit``
        (tidlc's own flags win over the file). ``-o`` (``outdir`` in ``explicit``) puts
        the outputs, under the config's file names, into that folder."""
        base = base or CompileOptions.of(emit="bin")
        explicit = set(explicit)
        values = {k: v for k, v in self.values.items() if k not in explicit}  # (--input-shape wins in load)
        if self.net_path or self.io_path:
            net = self.net_path or os.path.join(os.path.dirname(self.io_path or ""), "net.bin")
            io = self.io_path or os.path.join(os.path.dirname(net), "io.bin")
            if "outdir" in explicit:
                values.update(net_name=os.path.basename(net), io_name=os.path.basename(io))
            else:
                outdir = os.path.dirname(net)
                io_name = os.path.basename(io) if os.path.dirname(io) == outdir else io
                values.update(outdir=outdir, net_name=os.path.basename(net), io_name=io_name)
        return base.replace(**values)


def load_import_config(path: str, overrides: Sequence[str] = (), quiet: bool = False) -> ImportConfig:
    """Read ``path`` and the ``--key value`` ``overrides``, check every value, map the keys.

    Warnings (ignored keys, TIDL's bit-width promotions, the working-directory
    fallback for paths) are issued with :func:`tidlc.diagnostics.warn` unless ``quiet``.
    """
    settings = parse_text(_read_text(path), path) + parse_overrides(overrides)
    problems = [_unknown_key(s) for s in settings if s.key not in KEYS]
    _raise(problems)
    latest: dict[str, Setting] = {}
    for s in settings:
        latest[s.key] = s
    builder = _Builder(path, latest, quiet)
    return builder.build()


class _Builder:
    """Turns the settings of one config into CompileOptions values, collecting every problem."""

    def __init__(self, path: str, settings: dict[str, Setting], quiet: bool):
        self.path = path
        self.settings = settings
        self.quiet = quiet
        self.problems: list[TidlcError] = []
        self.warnings: list[tuple[tuple[int, int], str]] = []  # (order, text); issued if there is no error
        self.values: dict[str, Any] = {}
        self.typed: dict[str, Any] = {}
        self.model_path = ""  # inputNetFile, once checked (build)
        self._io_names: tuple[list[str], list[str]] | None | bool = False  # False: not read yet
        for key, s in settings.items():
            try:
                self.typed[key] = _convert(s, KEYS[key])
            except TidlcError as exc:
                self.problems.append(exc)
        self.base = self._base_dir()

    # -- helpers
    def get(self, key: str) -> Any:
        return self.typed.get(key, KEYS[key].default)

    def given(self, key: str) -> bool:
        return key in self.typed

    def error(self, key: str, message: str, hint: str = "") -> None:
        s = self.settings.get(key)
        self.problems.append(TidlcError(message, s.loc if s else self.path, hint=hint, code="config"))

    def warning(self, key: str, message: str) -> None:
        s = self.settings.get(key)
        order = (1 if s.loc.file == self.path else 2, s.loc.line) if s else (0, 0)  # file lines, then overrides
        self.warnings.append((order, f"{s.where() if s else self.path}: {message}"))

    def resolve(self, key: str) -> str:
        s = self.settings[key]
        value = os.path.expanduser(self.typed[key])
        return os.path.normpath(os.path.join(s.base or self.base, value))

    def _base_dir(self) -> str:
        """The config's folder; the working directory for a TI-style config whose model is found from there."""
        folder = os.path.dirname(os.path.abspath(self.path))
        s, model = self.settings.get("inputNetFile"), self.typed.get("inputNetFile")
        if s is None or s.base is not None or not isinstance(model, str) or os.path.isabs(model):
            return folder
        model = os.path.expanduser(model)
        if not os.path.exists(os.path.join(folder, model)) and os.path.exists(model):
            message = (f"{self.path}: paths are taken from the working directory (TIDL's rule): "
                       f"inputNetFile '{model}' is not next to the config file")
            self.warnings.append(((0, 0), message))
            return os.getcwd()
        return folder

    def check_range(self, key: str, ok: bool, expected: str, hint: str = "") -> bool:
        if self.given(key) and not ok:
            self.error(key, f"{key} = {_show(self.get(key))}: {expected}", hint or f"{key} = {KEYS[key].default}")
        return ok

    def check_file(self, key: str, path: str, folder_ok: bool = False) -> bool:
        """Whether the file a path key names exists and is a regular file (or a folder, if
        ``folder_ok``); else an error at the key's line naming what it is (a FIFO, ...)."""
        if not os.path.lexists(path):
            self.error(key, f"{key}: no such file '{_show(self.typed[key])}'",
                       f"relative paths start from the config file's folder ({self.base})")
            return False
        if folder_ok and os.path.isdir(path):
            return True
        try:
            check_regular(path, "file")
        except TidlcError as exc:
            self.error(key, f"{key}: '{_show(self.typed[key])}' {exc.message}", exc.hint)
            return False
        return True

    def one_per_input(self, key: str) -> Any:
        """A per-input key that tidlc applies to every input: its single value."""
        values = self.get(key)
        values = values if isinstance(values, tuple) else (values,)
        if len(set(values)) > 1:
            self.error(key, f"{key} = {_show(values)}: tidlc applies one value to every input",
                       f"{key} = {values[0]}")
        return values[0]

    # -- the build
    def build(self) -> ImportConfig:
        if self.problems:  # values that do not parse: report those first
            _raise(self.problems)
        model = self.model_path = self.model()
        self.bits()
        self.calibration()
        self.preprocess()
        self.device_and_run()
        self.ignored_and_rejected()
        net_path, io_path = self.outputs(model)
        _raise(self.problems)
        for _, message in [] if self.quiet else sorted(self.warnings, key=lambda w: w[0]):
            warn(message, code="config")
        return ImportConfig(self.path, model, self.values, net_path, io_path, dict(self.settings))

    def model(self) -> str:
        kind = self.get("modelType")
        fmt = None
        if self.given("modelType"):
            if kind in (4, 5, 6):
                self.error("modelType", f"modelType = {kind}: TIDL's internal formats (TVM relay, ...) "
                           "are not imported", "0 caffe, 1 tensorflow, 2 onnx, 3 tflite")
            elif self.check_range("modelType", kind in FORMATS, "expected 0 caffe, 1 tensorflow, 2 onnx, 3 tflite",
                                  "modelType = onnx (or 0..3)"):
                fmt = FORMATS[kind]
        if not self.given("inputNetFile"):
            self.problems.append(TidlcError("no inputNetFile", self.path,
                                            hint="add a line: inputNetFile = path/to/model.onnx"))
            return ""
        model = self.resolve("inputNetFile")
        self.check_file("inputNetFile", model)
        suffix = os.path.splitext(model)[1].lower()
        if fmt and FORMAT_SUFFIXES.get(suffix, fmt) != fmt:
            self.error("modelType", f"modelType = {kind} ({fmt}) but inputNetFile is a {FORMAT_SUFFIXES[suffix]} "
                       f"model ({suffix})", f"modelType = {FORMAT_SUFFIXES[suffix]}")
        if fmt:
            self.values["format"] = fmt
        caffe = (fmt or FORMAT_SUFFIXES.get(suffix)) == "caffe"
        if self.given("inputParamsFile"):
            if caffe:
                weights = self.resolve("inputParamsFile")
                self.check_file("inputParamsFile", weights)
                self.values["weights"] = weights
            else:
                self.warning("inputParamsFile", "inputParamsFile ignored: only Caffe models keep their weights "
                             "in a separate file")
        if self.check_range("randParams", self.get("randParams") in (0, 1), "expected 0 or 1") \
                and self.get("randParams") == 1:
            self.values["random_weights"] = 0
        return model

    def bits(self) -> None:
        params, features = self.get("numParamBits"), self.get("numFeatureBits")
        if not self.check_range("numParamBits", 4 <= params <= 16 or params == 32,
                                "TIDL accepts 4..16, or 32 (float)", "numParamBits = 8 (or 16)"):
            return
        if not self.check_range("numFeatureBits", features in (8, 16, 32), "expected 8, 16 or 32 (float)",
                                "numFeatureBits = 8 (or 16)"):
            return
        if params == 32 or features == 32:  # TIDL: params 32 => features 32 (float emulation)
            key = "numParamBits" if params == 32 else "numFeatureBits"
            self.error(key, f"{key} = 32: float inference is TIDL's PC-only emulation; tidlc compiles fixed point",
                       "use 8 or 16; `tidlc compile MODEL --emit ir` writes the float IR, `tidlc run MODEL` runs it")
            return
        if params < 8:
            self.error("numParamBits", f"numParamBits = {params}: tidlc quantizes weights to 8 or 16 bits",
                       "numParamBits = 8 (or 16 with numFeatureBits = 16)")
            return
        if params > 8 and features <= 8:  # TIDL's promotion rules (tidlValidateImportParams)
            features = 16
            self.warning("numParamBits", f"numParamBits = {params} needs 16-bit features: numFeatureBits = 16 "
                         "(TIDL's rule)")
        if 8 < params < 16:
            self.warning("numParamBits", f"numParamBits = {params}: tidlc stores 16-bit weights")
        self.values["bits"] = 16 if features > 8 else 8

    def calibration(self) -> None:
        style = self.get("quantizationStyle")
        styles = {0: "Caffe-jacinto fixed", 1: "dynamic", 5: "asymmetric TFLite", 6: "asymmetric per-channel",
                  10: "custom"}
        if style in (2, 3):
            self.values["quant_style"] = "np2" if style == 2 else "p2"
        else:
            what = f" ({styles[style]})" if style in styles else ""
            self.error("quantizationStyle", f"quantizationStyle = {style}{what} is not supported on TDA4VM",
                       "2 (non-power-of-2 weight scales) or 3 (power-of-2)")
        option = self.get("calibrationOption")
        if self.check_range("calibrationOption", 0 <= option <= 127, "a bit field of 1, 2, 4, 8, 16, 32, 64",
                            "calibrationOption = 0 (simple), 1 (histogram) or 7 (advanced bias calibration)"):
            self.values["calib_method"] = "histogram" if option & 1 else "minmax"
            if option & 4:
                iterations = self.get("biasCalibrationIterations")
                self.values["bias_calibration"] = iterations if iterations > 0 else BIAS_CALIBRATION_ITERATIONS
            if option & 8:
                self.values["per_channel_depthwise"] = True
            unsupported = {2: "weight range", 16: "mixed-precision depthwise", 32: "mixed-precision input",
                           64: "bias range"}
            off = [f"{bit} ({name})" for bit, name in unsupported.items() if option & bit]
            if off:
                self.warning("calibrationOption", f"calibrationOption bit(s) {', '.join(off)} ignored: tidlc "
                             "keeps weight and bias ranges whole; for 16-bit layers use outputFeature16bitNamesList "
                             "or mixedPrecisionFactor")
        self.check_range("activationRangeMethod", self.get("activationRangeMethod") in (0, 1), "expected 0 or 1")
        self.check_range("biasCalibrationIterations", self.get("biasCalibrationIterations") >= -1
                         and self.get("biasCalibrationIterations") != 0, "expected -1 (auto) or a positive count")
        if self.get("biasCalibrationIterations") > limits.current().frames:  # each one runs the frames again
            self.problems.append(limits.exceeded("frames", self.get("biasCalibrationIterations"),
                                                 "biasCalibrationIterations",
                                                 self.settings["biasCalibrationIterations"].loc))
        if self.given("percentileActRangeShrink") and self.check_range(
                "percentileActRangeShrink", 0 <= self.get("percentileActRangeShrink") < 50,
                "a percentage in [0, 50)"):
            self.values["percentile"] = self.get("percentileActRangeShrink")
        if self.given("biasCalibrationFactor") and self.check_range(
                "biasCalibrationFactor", 0 < self.get("biasCalibrationFactor") <= 1, "expected a weight in (0, 1]"):
            self.values["bias_calibration_factor"] = self.get("biasCalibrationFactor")
        frames = self.get("numFrames")
        if self.check_range("numFrames", frames == -1 or frames > 0, "expected -1 (every frame) or a count") \
                and frames > 0:
            synthetic = self.get("inFileFormat") == 4 or not self.given("inData")
            if synthetic and frames > limits.current().frames:  # made one by one: refuse up front
                self.problems.append(limits.exceeded("frames", frames, "numFrames (random frames)",
                                                     self.settings["numFrames"].loc))
            self.values["calib_frames"] = frames
        self.check_range("quantRoundAdd", 0 <= self.get("quantRoundAdd") <= 100, "TIDL accepts 0..100")
        if 0 <= self.get("quantRoundAdd") <= 100 and self.get("quantRoundAdd") != 50:
            self.error("quantRoundAdd", f"quantRoundAdd = {self.get('quantRoundAdd')}: tidlc rounds to nearest",
                       "quantRoundAdd = 50, or remove the line")
        names = []
        for key in ("outputFeature16bitNamesList", "params16bitNamesList"):
            listed = [n for n in re.split(r"[\s,]+", self.get(key)) if n]
            names += [n for n in listed if n not in names]
            if key == "params16bitNamesList" and listed:
                self.warning(key, "params16bitNamesList: tidlc computes these layers entirely in 16 bits "
                             "(activations too)")
        if names:
            self.values["layers_16bit"] = tuple(names)
        factor = self.get("mixedPrecisionFactor")
        if self.check_range("mixedPrecisionFactor", factor == -1 or factor >= 1.0,
                            "expected -1 (off) or a latency factor of at least 1.0", "mixedPrecisionFactor = 1.2") \
                and factor >= 1.0:
            self.values["mixed_precision_factor"] = factor
        self.check_range("preQuantizedModel", self.get("preQuantizedModel") in (0, 1), "expected 0 or 1")
        self.data()

    def data(self) -> None:
        fmt = self.get("inFileFormat")
        if not self.check_range("inFileFormat", 0 <= fmt <= 5, "expected 0 (image), 1 (raw), 2 (list), "
                                "3/5 (raw list) or 4 (random)", "inFileFormat = 2"):
            return
        self.values["calib_source"] = "random" if fmt == 4 else "config"
        if fmt == 4 or not self.given("inData"):
            return
        data = self.resolve("inData")
        if not self.check_file("inData", data, folder_ok=True):
            pass
        elif fmt in (1, 3, 5) and not data.lower().endswith((".npy", ".npz")):
            self.error("inFileFormat", f"inFileFormat = {fmt}: tidlc does not read raw binary frames",
                       "save the frames with numpy.save and set inData to the .npy file")
        self.values["calib"] = data

    def preprocess(self) -> None:
        self.check_range("inDataNorm", _every(self.get("inDataNorm"), lambda v: v in (0, 1)), "expected 0 or 1")
        if self.one_per_input("inDataNorm") == 1:
            if self.given("inMean"):
                self.values["mean"] = self.get("inMean")
            if self.given("inScale"):
                self.values["scale"] = self.get("inScale")
        elif any(self.given(k) and not _is_default(self.get(k), KEYS[k]) for k in ("inMean", "inScale")):
            self.warning("inMean" if self.given("inMean") else "inScale",
                         "inMean/inScale ignored: TIDL applies them only with inDataNorm = 1")
        fmt = self.one_per_input("inDataFormat")
        if self.check_range("inDataFormat", fmt in (0, 1), "expected 0 (BGR) or 1 (RGB)"):
            self.values["channel_order"] = "bgr" if fmt == 0 else "rgb"
        width, height = self.one_per_input("resizeWidth"), self.one_per_input("resizeHeight")
        sizes_ok = [self.check_range(key, v == -1 or v > 0, "expected -1 (no resize) or a size in pixels")
                    for key, v in (("resizeWidth", width), ("resizeHeight", height))]
        if all(sizes_ok) and (width > 0) != (height > 0):
            self.error("resizeWidth" if width > 0 else "resizeHeight",
                       "resizeWidth and resizeHeight go together", "give both, or neither")
        resize = width > 0 and height > 0
        if resize:
            self.values["resize"] = (width, height)
        dims = {}
        for key in ("inNumChannels", "inHeight", "inWidth"):
            values = self.get(key)
            values = values if isinstance(values, tuple) else (values,)
            if self.check_range(key, all(v == -1 or v > 0 for v in values), "expected -1 (the model's) or a size"):
                dims[key] = values
        if len(dims) == 3 and any(self.given(k) for k in dims):
            count = max(len(v) for v in dims.values())  # per input; missing entries keep the model's (-1)
            c, h, w = (dims[k] + (-1,) * (count - len(dims[k])) for k in ("inNumChannels", "inHeight", "inWidth"))
            self.values["input_dims"] = tuple((-1, *chw) for chw in zip(c, h, w))
            if resize and dims["inWidth"][0] > 0 and dims["inHeight"][0] > 0:
                self.values["crop"] = (dims["inWidth"][0], dims["inHeight"][0])
        if self.given("inLayout"):
            layout = self.one_per_input("inLayout")
            if self.check_range("inLayout", layout in (0, 1), "expected 0 (NCHW) or 1 (NHWC)"):
                self.values["input_layout"] = "NHWC" if layout == 1 else "NCHW"

    def device_and_run(self) -> None:
        batches = self.one_per_input("numBatches")
        if self.check_range("numBatches", 1 <= batches <= 1024, "TIDL accepts 1..1024") and batches > 1:
            self.values["batches"] = batches
        msmc = self.get("msmcSizeKB")
        if self.check_range("msmcSizeKB", msmc >= -1, "expected -1 (the device's) or a size in KB") and msmc >= 0:
            self.values["msmc_kb"] = msmc
        device = self.get("deviceName")
        if self.given("deviceName") and device != -1:
            name = DEVICES.get(device & 0xFF) if device >= 0 else None
            from tidlc.compiler import backend_for
            known = backend_for("tidl").available_devices()
            if name is None:
                self.error("deviceName", f"deviceName = {device}: expected 0 TDA4VM, 1 TDA4AEP, 2 TDA4AM, "
                           "3 TDA4AMPlus or 4 AM62A", "deviceName = 0")
            elif name not in known:
                self.error("deviceName", f"deviceName = {device} ({name}): tidlc has no device model for it",
                           f"known devices: {', '.join(sorted(known))}; deviceName = 0 is TDA4VM")
            else:
                self.values["device"] = name
        self.check_range("numCores", self.get("numCores") == 1, "TDA4VM has one C7x/MMA core", "numCores = 1")
        self.check_range("inferenceMode", self.get("inferenceMode") == 0, "TDA4VM runs one core (mode 0)",
                         "inferenceMode = 0")
        post = self.get("postProcType")
        if self.check_range("postProcType", post in POST_PROCESS, "expected 0 disabled, 1 classification, "
                            "2 detection or 3 segmentation") and POST_PROCESS[post]:
            self.values["post_process"] = POST_PROCESS[post]

    def ignored_and_rejected(self) -> None:
        for key in self.typed:
            spec = KEYS[key]
            value = self.get(key)
            if spec.status == MAPPED or _is_default(value, spec):
                continue
            if spec.status == IGNORED:
                self.warning(key, f"{key} ignored: {spec.note}")
            elif key in _IO_NAME_KEYS:
                problem = self.io_names_problem(key)
                if problem is not None:
                    self.error(key, f"{key} = {_show(value)} is not supported",
                               spec.note + (f"; {problem}" if problem else ""))
            else:
                self.error(key, f"{key} = {_show(value)} is not supported", spec.note)

    def io_names_problem(self, key: str) -> str | None:
        """None when ``inDataNamesList`` / ``outDataNamesList`` names every input / output of the
        model, in the model's order (nothing is cut, so the key changes nothing); names match as
        :func:`tidlc.names.resolve_tensor_name` matches them (``input:0`` is input ``input``).
        Else what differs ("" when the model's names cannot be read)."""
        listed = [n for n in re.split(r"[\s,]+", self.get(key)) if n]
        io = self.model_io_names()
        if io is None:
            return ""
        names = io[0] if key == "inDataNamesList" else io[1]
        what = "input" if key == "inDataNamesList" else "output"
        for name in listed:
            if resolve_tensor_name(name, names) is None:
                near = nearest_names(name, names)
                return f"'{name}' is not an {what} of the model" + (f" (did you mean '{near[0]}'?)" if near else "")
        resolved = [resolve_tensor_name(n, names) for n in listed]
        if resolved != list(names):
            return f"the model's {what}s are {', '.join(names)} (only the whole list, in this order, is accepted)"
        return None

    def model_io_names(self) -> tuple[list[str], list[str]] | None:
        """(input names, output names) of the config's model, imported once; None if it cannot be."""
        if self._io_names is False:
            self._io_names = None
            if self.model_path:
                from tidlc.compiler import load
                picked = {k: self.values[k] for k in ("format", "weights", "random_weights") if k in self.values}
                try:
                    graph = load(self.model_path, CompileOptions.of(**picked))
                except TidlcError:
                    return None
                outputs = list(graph.output_names) or [v.name for v in graph.outputs]
                self._io_names = (graph.input_names(), outputs)
        return self._io_names

    def outputs(self, model: str) -> tuple[str | None, str | None]:
        net = self.resolve("outputNetFile") if self.given("outputNetFile") else None
        io = None
        if self.given("outputParamsFile"):  # a prefix: TIDL writes <prefix>1.bin
            s = self.settings["outputParamsFile"]
            prefix = os.path.expanduser(self.typed["outputParamsFile"])
            io = os.path.normpath(os.path.join(s.base or self.base, prefix + "1.bin"))
        for key, path in (("outputNetFile", net), ("outputParamsFile", io)):
            if path and os.path.isdir(path):
                self.error(key, f"{key} names a folder: {path}", f"{key} = {os.path.join(path, 'net.bin')}"
                           if key == "outputNetFile" else f"{key} = {os.path.join(path, 'io_')}")
        if net and io and os.path.abspath(net) == os.path.abspath(io):
            self.error("outputParamsFile", f"the io descriptor would overwrite the net file {net}",
                       "outputParamsFile is a prefix: the io descriptor is <prefix>1.bin")
        inputs = {os.path.abspath(p) for p in (model, self.values.get("weights"), self.values.get("calib"),
                                              os.path.abspath(self.path)) if p}
        for key, path in (("outputNetFile", net), ("outputParamsFile", io)):
            if path and os.path.abspath(path) in inputs:
                self.error(key, f"{key} would overwrite an input file: {path}", "write the outputs elsewhere")
        return net, io


def key_table() -> list[tuple[str, str, str]]:
    """(key, status, note) for every known key, in table order (docs/import-config.md)."""
    return [(k.name, k.status, k.note) for k in KEYS.values()]
