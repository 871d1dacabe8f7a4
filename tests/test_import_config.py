"""TIDL-RT import config files as a way into ``tidlc compile`` (docs/import-config.md).

A config names the model and the outputs under TIDL's conventions
(``outputNetFile``, ``outputParamsFile`` + ``1.bin``); its keys become
compile options; ``--key value`` arguments override it; every mistake is one
line with ``file:line`` and a hint, exit code 2, and nothing is written.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tidlc.backends.tidl.binfmt import read_compiled

from tidlc.cli import main
from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError
from tidlc.import_config import (
    IGNORED,
    KEYS,
    MAPPED,
    REJECTED,
    load_import_config,
    looks_like_import_config,
    parse_overrides,
    parse_text,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "ultraface"
PROTOTXT = EXAMPLES / "ultraface-rfb320.prototxt"
CAFFEMODEL = EXAMPLES / "ultraface-rfb320.caffemodel"
ONNX_MODEL = EXAMPLES / "ultraface-rfb320.onnx"
DOC = ROOT / "docs" / "import-config.md"



def tidlc(capsys, *argv) -> tuple[int, list[str], list[str]]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


def random_weights_config(folder: Path, prototxt: str, keys: str, name: str = "small.prototxt") -> Path:
    """``prototxt`` written as ``name`` beside an import.txt that compiles it with random weights
    (randParams = 1) and the config ``keys`` (lines)."""
    (folder / name).write_text(prototxt)
    config = folder / "import.txt"
    config.write_text(f"inputNetFile = {name}\nrandParams = 1\n" + keys)
    return config


def caffe_config(folder: Path, extra: str = "") -> Path:
    """A config next to nothing: the model is found through relative paths from the config's folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "import_ultraface.txt"
    path.write_text(f'''# UltraFace RFB-320 (Caffe), written like TI's public import configs
modelType          = 0
inputNetFile       = "{rel(PROTOTXT, folder)}"
inputParamsFile    = "{rel(CAFFEMODEL, folder)}"
outputNetFile      = "out/tidl_net_ultraface.bin"
outputParamsFile   = "out/tidl_io_ultraface_"
numParamBits       = 8
numFeatureBits     = 8
inDataNorm         = 1
inMean             = 127 127 127
inScale            = 0.0078125 0.0078125 0.0078125
inWidth            = 320
inHeight           = 240
inNumChannels      = 3
inData             = calib.npy
inFileFormat       = 1      # raw frames: tidlc takes them as .npy
numFrames          = 2
{extra}''')
    rng = np.random.default_rng(0)
    np.save(folder / "calib.npy", rng.uniform(-1, 1, (2, 1, 3, 240, 320)).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def compiled_caffe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("caffe") / "configs"
    config = caffe_config(folder)
    assert main(["compile", str(config)]) == 0
    return {"config": config, "out": folder / "out"}


# ----------------------------------------------------------------------------- compiling
def test_caffe_config_writes_tidl_names_next_to_the_config(compiled_caffe, capsys):
    out = compiled_caffe["out"]
    assert sorted(p.name for p in out.iterdir()) == ["tidl_io_ultraface_1.bin", "tidl_net_ultraface.bin"]
    model = read_compiled(str(out / "tidl_net_ultraface.bin"))
    assert model.io["inputs"][0]["dims"] == [1, 3, 240, 320]
    pre = model.io["inputs"][0]["preprocess"]
    assert pre["mean"] == [127.0, 127.0, 127.0] and pre["scale"] == [0.0078125] * 3
    assert model.graph.attrs["quant.calib_frames"] == 2


@pytest.mark.parametrize("where", ["dir", "net", "config"])
def test_run_and_perf_read_outputs_under_tidl_names(compiled_caffe, capsys, tmp_path, where):
    out = compiled_caffe["out"]
    location = {"dir": out, "net": out / "tidl_net_ultraface.bin", "config": compiled_caffe["config"]}[where]
    code, lines, err = tidlc(capsys, "run", location, "--random-input", "0", "--kernels", "numpy",
                             "-o", tmp_path / "y.npz")
    assert code == 0, err
    assert lines[0].startswith("boxes: float32 [1, 4420, 4]") and lines[1].startswith("scores: float32")
    assert set(np.load(tmp_path / "y.npz").files) == {"boxes", "scores"}
    code, lines, err = tidlc(capsys, "perf", location, "--top", "2", "--no-hints")
    assert code == 0, err
    assert lines[0].startswith("ultraface-rfb320 on tda4vm")


def test_onnx_config_is_byte_identical_across_runs(tmp_path, capsys):
    for run in ("a", "b"):
        folder = tmp_path / run
        folder.mkdir()
        config = folder / "import.txt"
        config.write_text(f"modelType = onnx\ninputNetFile = {ONNX_MODEL}\n"
                          "outputNetFile = model/net_uf.bin\noutputParamsFile = model/io_uf_\n"
                          "inFileFormat = 4   # random frames\nnumFrames = 2\n")
        code, lines, err = tidlc(capsys, "compile", config)
        assert code == 0, err
        assert lines[1:] == [f"  wrote {folder / 'model' / 'net_uf.bin'}", f"  wrote {folder / 'model' / 'io_uf_1.bin'}"]
    for name in ("net_uf.bin", "io_uf_1.bin"):
        assert (tmp_path / "a" / "model" / name).read_bytes() == (tmp_path / "b" / "model" / name).read_bytes()
    assert not list((tmp_path / "a" / "model").glob("*.tmp*"))


def test_overrides_and_tidlc_flags(tmp_path, capsys, monkeypatch):
    config = caffe_config(tmp_path / "cfg")
    monkeypatch.chdir(tmp_path)
    # TIDL's --key value overrides the file; paths given there are relative to the working directory
    code, _, err = tidlc(capsys, "compile", config, "--numParamBits", "16", "--numFeatureBits", "16",
                         "--outputNetFile", "o16/net16.bin", "--outputParamsFile", "o16/io16_", "--numFrames", "1")
    assert code == 0, err
    model = read_compiled(str(tmp_path / "o16" / "net16.bin"))
    assert model.graph.attrs["quant.bits"] == 16 and model.graph.attrs["quant.calib_frames"] == 1
    assert (tmp_path / "o16" / "io16_1.bin").is_file() and not (tmp_path / "cfg" / "out").exists()
    # tidlc's own flags win over the file; -o puts the config's file names into that folder
    code, _, err = tidlc(capsys, "compile", config, "--bits", "16", "--calib-frames", "1", "-o", tmp_path / "flags")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "flags").iterdir()) == ["tidl_io_ultraface_1.bin",
                                                                       "tidl_net_ultraface.bin"]
    assert read_compiled(str(tmp_path / "flags")).graph.attrs["quant.bits"] == 16
    # --emit qir writes the quantized IR into the outputNetFile's folder
    code, lines, err = tidlc(capsys, "compile", config, "--emit", "qir", "--calib-frames", "1")
    assert code == 0, err
    assert [line for line in lines if "wrote" in line][0].endswith("model.tir")
    assert (tmp_path / "cfg" / "out" / "model.tir").is_file()


def test_explicit_import_config_flag_and_detection(tmp_path, capsys):
    config = caffe_config(tmp_path / "cfg")
    renamed = tmp_path / "cfg" / "ultraface.cfg"
    renamed.write_text(config.read_text())
    assert looks_like_import_config(str(config)) and looks_like_import_config(str(renamed))
    for path in (PROTOTXT, ONNX_MODEL, ROOT / "tests" / "plugin_pkg" / "examples" / "cifar-swish.cfg"):
        assert not looks_like_import_config(str(path))
    code, _, err = tidlc(capsys, "compile", "--import-config", renamed, "--calib-frames", "1", "--emit", "none")
    assert code == 0, err
    code, _, err = tidlc(capsys, "compile", PROTOTXT, "--import-config", renamed)
    assert code == 2 and len(err) == 1 and "not both" in err[0]
    code, _, err = tidlc(capsys, "compile", PROTOTXT, "--numParamBits", "16", "--emit", "none")
    assert code == 2 and err == [("error: unrecognized arguments: --numParamBits 16 (hint: --key value overrides "
                                  "follow a TIDL import config file; see tidlc compile --help)")]


def test_post_proc_type_and_rand_params_reach_tidlc_run(tmp_path, capsys, small_caffe_net):
    config = random_weights_config(tmp_path, small_caffe_net, "postProcType = classification\n"
                                   "outputNetFile = net.bin\noutputParamsFile = io_\ninFileFormat = 4\n")
    code, _, err = tidlc(capsys, "compile", config)
    assert code == 0, err
    code, lines, err = tidlc(capsys, "run", tmp_path / "net.bin", "--random-input", "1", "--kernels", "numpy")
    assert code == 0, err
    assert lines[-1].startswith("top-5 classes: ")


WIDE_POOL = """name: "wide"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 5 stride: 1 pad: 1 } }
layer { name: "head" type: "Convolution" bottom: "pool" top: "head" convolution_param { num_output: 2 kernel_size: 1 } }
"""


def test_a_config_whose_model_partitions_is_run_and_estimated_through_the_config(tmp_path, capsys):
    """TIDL pools validate 1x1-3x3 windows: this model's 5x5 max pool (padded 1: not a chain of 3x3
    ones, and an average pool would be a depthwise conv at -O2) runs on the host, so the compile
    writes model.tdp and subgraph folders, not outputNetFile. The compile says so, and `tidlc run|perf
    IMPORT.txt` find the partitioned model (they looked for the net file); a stale net file from an
    earlier whole-model compile is removed."""
    config = random_weights_config(tmp_path, WIDE_POOL, "outputNetFile = out/net_up.bin\n"
                                   "outputParamsFile = out/io_up_\ninFileFormat = 4\n", "up.prototxt")
    code, lines, err = tidlc(capsys, "compile", config)
    assert code == 0, err
    assert any(line.startswith("  partition: 2 subgraph(s)") and "1 host op(s)" in line for line in lines), lines
    assert (tmp_path / "out" / "model.tdp").is_file() and not (tmp_path / "out" / "net_up.bin").exists()
    code, lines, err = tidlc(capsys, "run", config, "--random-input", "1")
    assert code == 0 and lines[0].startswith("head: float32 [1, 2, 6, 6]"), (lines, err)
    code, lines, err = tidlc(capsys, "perf", config)
    assert code == 0 and lines[0].startswith("partitioned model on tda4vm: 2 subgraph(s), 1 host op(s)"), lines
    (tmp_path / "out" / "net_up.bin").write_bytes(b"stale")  # an earlier whole-model compile's
    assert tidlc(capsys, "compile", config)[0] == 0
    assert not (tmp_path / "out" / "net_up.bin").exists()


def test_run_of_a_config_not_compiled_yet_says_so(tmp_path, capsys, small_caffe_net):
    config = random_weights_config(tmp_path, small_caffe_net, "outputNetFile = out/net.bin\n")
    for command in ("run", "perf"):
        code, _, err = tidlc(capsys, command, config, *(["--random-input", "1"] if command == "run" else []))
        want = (f"{config}: error: the import config's outputNetFile {tmp_path / 'out' / 'net.bin'} does not "
                f"exist: not compiled yet (hint: tidlc compile {config})")
        assert code == 2 and err == [want], err


def test_calibration_warning_speaks_the_config_language(tmp_path, capsys, small_caffe_net):
    """No inData: the warning says inData (not --calib); inFileFormat = 4 asks for random frames: no warning."""
    for extra, expect in (("", "inData = DATA in the import config"), ("inFileFormat = 4\n", None)):
        config = random_weights_config(tmp_path, small_caffe_net,
                                       "outputNetFile = net.bin\noutputParamsFile = io_\n" + extra)
        code, _, err = tidlc(capsys, "compile", config)
        assert code == 0, err
        calib = [line for line in err if "no calibration data" in line]
        if expect is None:
            assert calib == [], err
        else:
            assert len(calib) == 1 and expect in calib[0] and "--calib" not in calib[0], err


def test_input_sizes_resize_the_network_input(tmp_path, capsys, small_caffe_net):
    conv_only = small_caffe_net.split('layer { name: "pool"')[0]
    config = random_weights_config(tmp_path, conv_only, "inWidth = 20\ninHeight = 16\ninNumChannels = -1\n"
                                   "outputNetFile = o/net.bin\noutputParamsFile = o/io_\ninFileFormat = 4\n",
                                   "conv.prototxt")
    code, _, err = tidlc(capsys, "compile", config)
    assert code == 0, err
    model = read_compiled(str(tmp_path / "o"))
    assert model.io["inputs"][0]["dims"] == [1, 3, 16, 20] and model.io["outputs"][0]["dims"] == [1, 8, 16, 20]
    code, _, err = tidlc(capsys, "compile", config, "--input-shape", "data=1,3,8,8", "-o", tmp_path / "flag")
    assert code == 0, err
    assert read_compiled(str(tmp_path / "flag")).io["inputs"][0]["dims"] == [1, 3, 8, 8]  # tidlc's flag wins


def test_ti_tool_layout_resolves_paths_from_the_working_directory(tmp_path, capsys, monkeypatch):
    """A config as TI ships them: paths relative to ti_dl/utils/tidlModelImport, where the tool runs."""
    tool = tmp_path / "ti_dl" / "utils" / "tidlModelImport"
    models = tmp_path / "ti_dl" / "test" / "testvecs" / "models" / "public" / "caffe" / "ultraface"
    configs = tmp_path / "ti_dl" / "test" / "testvecs" / "config" / "import" / "public" / "caffe"
    for folder in (tool, models, configs):
        folder.mkdir(parents=True)
    for source in (PROTOTXT, CAFFEMODEL):
        (models / source.name).symlink_to(source)
    config = configs / "tidl_import_ultraface.txt"
    config.write_text(TI_STYLE_CONFIG)
    monkeypatch.chdir(tool)
    code, _, err = tidlc(capsys, "compile", "../../test/testvecs/config/import/public/caffe/tidl_import_ultraface.txt",
                             "--numFrames", "1")
    assert code == 0, err
    out = tmp_path / "ti_dl" / "test" / "testvecs" / "config" / "tidl_models" / "caffe"
    assert sorted(p.name for p in out.iterdir()) == ["tidl_io_ultraface_1.bin", "tidl_net_ultraface.bin"]
    assert any("paths are taken from the working directory (TIDL's rule)" in line for line in err)
    ignored = sorted(re.findall(r"warning: \S+:\d+: (\w+) ignored", "\n".join(err)))
    assert ignored == ["perfSimConfig", "quantRangeExpansionFactor"]  # default-valued ignored keys stay quiet


# The syntax of TI's public configs (ti_dl/test/testvecs/config/import/public/caffe/tidl_import_*.txt and the
# yolox example of the TIDL user guide): aligned '=', quoted relative paths, inline '#' comments, bare paths.
TI_STYLE_CONFIG = '''# Default - 0
randParams         = 0

# 0: Caffe, 1: TensorFlow, 2: ONNX, 3: tfLite, Default - 0
modelType          = 0

# 0: Fixed quantization By tarininng Framework, 1: Dyanamic quantization by TIDL, Default - 1
quantizationStyle  = 2

# quantRoundAdd/100 will be added while rounding to integer, Default - 50
quantRoundAdd      = 50

numParamBits       = 8
numFeatureBits     = 8
# 0 : 8bit Unsigned, 1 : 8bit Signed Default - 1
inElementType      = 0

inputNetFile      = "../../test/testvecs/models/public/caffe/ultraface/ultraface-rfb320.prototxt"   #Net definition
inputParamsFile   = "../../test/testvecs/models/public/caffe/ultraface/ultraface-rfb320.caffemodel"
outputNetFile      = "../../test/testvecs/config/tidl_models/caffe/tidl_net_ultraface.bin"
outputParamsFile   = "../../test/testvecs/config/tidl_models/caffe/tidl_io_ultraface_"

inDataNorm  = 1
inMean = 127 127 127
inScale = 0.0078125 0.0078125 0.0078125
inDataFormat = 1
inWidth     = 320
inHeight    = 240
inNumChannels = 3
numFrames   = 1
inFileFormat = 4
#inData  =   "../../test/testvecs/config/imageNet_sample_val.txt"
postProcType = 0
quantRangeExpansionFactor = 1.5
foldBnInConv2D = true
debugTraceLevel = 0
perfSimConfig = ../../test/testvecs/config/import/device_config.cfg
'''


def test_ti_style_syntax_parses():
    settings = parse_text(TI_STYLE_CONFIG, "tidl_import.txt")
    by_key = {s.key: s for s in settings}
    assert by_key["inputNetFile"].items == ("../../test/testvecs/models/public/caffe/ultraface/ultraface-rfb320.prototxt",)
    assert by_key["inMean"].items == ("127", "127", "127") and by_key["inMean"].loc.line == TI_STYLE_CONFIG.splitlines().index("inMean = 127 127 127") + 1
    assert by_key["perfSimConfig"].items == ("../../test/testvecs/config/import/device_config.cfg",)
    assert "inData" not in by_key  # commented out
    assert by_key["foldBnInConv2D"].items == ("true",)


def test_syntax_details():
    text = '\ufeffinData="my frames/list #1.txt"  # comment\r\nmodelType=onnx\n\n  # indented comment\n' \
           'deviceName = 0x100\ninMean = 1,2,3\n'
    settings = {s.key: s for s in parse_text(text, "c.txt")}
    assert settings["inData"].items == ("my frames/list #1.txt",)
    assert settings["modelType"].items == ("onnx",) and settings["deviceName"].loc.line == 5
    overrides = parse_overrides(["--inMean", "0", "-1.5", "2", "--numFrames=3", "--quantRangeUpdateFactor", "-1"])
    assert [(s.key, s.items) for s in overrides] == [("inMean", ("0", "-1.5", "2")), ("numFrames", ("3",)),
                                                      ("quantRangeUpdateFactor", ("-1",))]


def test_keys_map_onto_compile_options(tmp_path, recwarn):
    (tmp_path / "m.onnx").write_bytes(ONNX_MODEL.read_bytes()[:64])
    (tmp_path / "frames").mkdir()
    config = tmp_path / "c.txt"
    config.write_text("modelType = onnx\ninputNetFile = m.onnx\ninData = frames\ninFileFormat = 2\nnumFrames = 5\n"
                      "numParamBits = 12\nquantizationStyle = 3\ncalibrationOption = 13\n"
                      "biasCalibrationIterations = 20\nbiasCalibrationFactor = 0.1\npercentileActRangeShrink = 0.05\n"
                      "inDataNorm = 1\ninMean = 1 2 3\ninScale = 0.5\ninDataFormat = 0\nresizeWidth = 256\n"
                      "resizeHeight = 256\ninWidth = 224\ninHeight = 224\ninNumChannels = 3\ninLayout = 1\n"
                      "numBatches = 4\nmsmcSizeKB = 2048\ndeviceName = 0\npostProcType = 3\n"
                      "outputFeature16bitNamesList = \"conv1, conv2\"\nmixedPrecisionFactor = 1.2\n")
    imported = load_import_config(str(config))
    options = imported.compile_options()
    assert imported.model == str(tmp_path / "m.onnx")
    load, quant, pre, target = options.load, options.quant, options.preprocess, options.target
    assert (load.format, quant.bits, quant.quant_style, quant.calib_method) == ("onnx", 16, "p2", "histogram")
    assert (quant.bias_calibration, quant.bias_calibration_factor, quant.per_channel_depthwise) == (20, 0.1, True)
    assert (quant.calib, quant.calib_frames, quant.percentile) == (str(tmp_path / "frames"), 5, 0.05)
    assert (pre.mean, pre.scale, pre.channel_order) == ((1.0, 2.0, 3.0), (0.5,), "bgr")
    assert (pre.resize, pre.crop, load.input_dims) == ((256, 256), (224, 224), ((-1, 3, 224, 224),))
    assert (load.input_layout, target.batches, target.msmc_kb, target.device) == ("NHWC", 4, 2048, "tda4vm")
    assert target.post_process == "segment" and quant.layers_16bit == ("conv1", "conv2")
    assert quant.mixed_precision_factor == 1.2 and target.emit == "bin"
    assert (target.outdir, target.net_name, target.io_name) == ("out", "net.bin", "io.bin")  # no output keys
    messages = [str(w.message) for w in recwarn]
    assert messages == [f"{config}:6: numParamBits = 12 needs 16-bit features: numFeatureBits = 16 (TIDL's rule)",
                        f"{config}:6: numParamBits = 12: tidlc stores 16-bit weights"]


def test_tidl_defaults_apply_without_keys(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    config = tmp_path / "c.txt"
    config.write_text("inputNetFile = m.onnx\n")
    options = load_import_config(str(config)).compile_options(CompileOptions.of(emit="bin", calib_method="mse"))
    assert options.load.format is None  # no modelType: tidlc detects the format
    assert (options.quant.bits, options.quant.calib_method, options.quant.quant_style) == (8, "minmax", "np2")  # calibrationOption 0


# ----------------------------------------------------------------------------- mistakes
ERRORS = [  # (line added to a working config, error text after "error: ", hint text)
    ("numParamBit = 8", "unknown key 'numParamBit'", "did you mean 'numParamBits'?"),
    ("NumFrames = 2", "unknown key 'NumFrames'", "did you mean 'numFrames'?"),
    ("numParamBits = 7", "numParamBits = 7: tidlc quantizes weights to 8 or 16 bits", "numParamBits = 8"),
    ("numParamBits = 3", "numParamBits = 3: TIDL accepts 4..16, or 32 (float)", "numParamBits = 8 (or 16)"),
    ("numParamBits = 32", "numParamBits = 32: float inference is TIDL's PC-only emulation", "--emit ir"),
    ("numFeatureBits = 12", "numFeatureBits = 12: expected 8, 16 or 32 (float)", "numFeatureBits = 8"),
    ("numParamBits = eight", "numParamBits = eight: expected an integer", "numParamBits = 8"),
    ("quantizationStyle = 6", "quantizationStyle = 6 (asymmetric per-channel) is not supported on TDA4VM",
     "2 (non-power-of-2"),
    ("modelType = 9", "modelType = 9: expected 0 caffe, 1 tensorflow, 2 onnx, 3 tflite", "modelType = onnx"),
    ("modelType = pytorch", "modelType = pytorch: expected an integer; or one of caffe, tensorflow, onnx, tflite",
     "modelType = 0"),
    ("modelType = onnx", "modelType = 2 (onnx) but inputNetFile is a caffe model (.prototxt)", "modelType = caffe"),
    ("inputNetFile = missing.prototxt", "inputNetFile: no such file 'missing.prototxt'", "config file's folder"),
    ("inputParamsFile = nope.caffemodel", "inputParamsFile: no such file 'nope.caffemodel'", "config file's folder"),
    ("inData = frames.npy", "inData: no such file 'frames.npy'", "config file's folder"),
    ("inFileFormat = 3\ninData = import_ultraface.txt", "inFileFormat = 3: tidlc does not read raw binary frames",
     "numpy.save"),
    ("calibrationOption = 300", "calibrationOption = 300: a bit field of 1, 2, 4, 8, 16, 32, 64", "calibrationOption = 0"),
    ("metaArchType = 3", "metaArchType = 3 is not supported", "detection meta-architectures"),
    ("outDataNamesList = \"boxes\"", "outDataNamesList = boxes is not supported", "cut the model first"),
    ("numCores = 2", "numCores = 2: TDA4VM has one C7x/MMA core", "numCores = 1"),
    ("deviceName = 2", "deviceName = 2 (tda4am): tidlc has no device model for it", "deviceName = 0 is TDA4VM"),
    ("quantRoundAdd = 0", "quantRoundAdd = 0: tidlc rounds to nearest", "quantRoundAdd = 50"),
    ("resizeWidth = 256", "resizeWidth and resizeHeight go together", "give both, or neither"),
    ("inDataFormat = 1 0", "inDataFormat = 1 0: tidlc applies one value to every input", "inDataFormat = 1"),
    ("mixedPrecisionFactor = 0.5", "mixedPrecisionFactor = 0.5: expected -1 (off) or a latency factor",
     "mixedPrecisionFactor = 1.2"),
    ("numFrames = 1 2", "'numFrames' takes one value, got 2: 1 2", "numFrames = 1"),
    ("inData =", "'inData' has no value", "comment the line out"),
    ("outputNetFile = import_ultraface.txt", "outputNetFile would overwrite an input file", "elsewhere"),
    ("outputNetFile = out/x1.bin\noutputParamsFile = out/x", "the io descriptor would overwrite the net file",
     "<prefix>1.bin"),
    ("numParamBits 8", "expected 'key = value', got 'numParamBits 8'", "'#' starts a comment"),
    ('inData = "frames.npy', "'inData': unterminated \"", 'close the quoted value'),
]


@pytest.mark.parametrize("line,message,hint", ERRORS, ids=[e[0].split("\n")[-1][:30] for e in ERRORS])
def test_each_mistake_is_one_line_with_its_location(tmp_path, capsys, line, message, hint):
    config = caffe_config(tmp_path, extra=line + "\n")
    before = config.read_bytes()
    number = config.read_text().splitlines().index(line.split("\n")[-1]) + 1
    if "inFileFormat = 3" in line:
        number -= 1  # the error is on inFileFormat
    code, out, err = tidlc(capsys, "compile", config)
    assert code == 2 and out == []
    assert len(err) == 1, err
    assert err[0].startswith(f"{config}:{number}: error: {message}"), err[0]
    assert "(hint: " in err[0] and hint in err[0].split("(hint: ", 1)[1]
    assert not (tmp_path / "out").exists()
    assert config.read_bytes() == before


def test_missing_input_net_file_and_bad_override(tmp_path, capsys):
    config = tmp_path / "import.txt"
    config.write_text("modelType = onnx\n")
    code, _, err = tidlc(capsys, "compile", config)
    assert code == 2 and err == [f"{config}: error: no inputNetFile (hint: add a line: inputNetFile = path/to/model.onnx)"]
    config = caffe_config(tmp_path / "c")
    code, _, err = tidlc(capsys, "compile", config, "--numParamBit", "16")
    assert code == 2 and err == ["--numParamBit: error: unknown key 'numParamBit' (hint: did you mean 'numParamBits'?)"]
    code, _, err = tidlc(capsys, "compile", config, "--quantizationStyle", "1")
    assert code == 2 and err == [("--quantizationStyle: error: quantizationStyle = 1 (dynamic) is not supported on "
                                  "TDA4VM (hint: 2 (non-power-of-2 weight scales) or 3 (power-of-2))")]
    assert not (tmp_path / "c" / "out").exists()


def test_several_mistakes_are_reported_together(tmp_path, capsys):
    config = caffe_config(tmp_path, extra="numParamBit = 8\nquantRoundAd = 50\n")
    code, _, err = tidlc(capsys, "compile", config)
    assert code == 2 and len(err) == 2
    assert "unknown key 'numParamBit'" in err[0] and err[1].startswith("  ") and "quantRoundAd" in err[1]


def test_cli_subprocess_exit_code_and_no_traceback(tmp_path):
    config = caffe_config(tmp_path, extra="numParamBits = 7\n")
    number = config.read_text().splitlines().index("numParamBits = 7") + 1
    proc = subprocess.run([sys.executable, "-m", "tidlc.cli", "compile", str(config)], cwd=tmp_path,
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"{config}:{number}: error: numParamBits = 7")
    assert not (tmp_path / "out").exists()


def test_ignored_keys_warn_once_naming_the_key(tmp_path, recwarn):
    (tmp_path / "m.onnx").write_bytes(b"x")
    config = tmp_path / "c.txt"
    config.write_text("inputNetFile = m.onnx\nperfSimTool = ti_cnnperfsim.out\ngraphVizTool = viz.out\n"
                      "foldBnInConv2D = 1\ndebugTraceLevel = 2\ninMean = 1 2 3\n")
    load_import_config(str(config))
    assert [str(w.message) for w in recwarn] == [
        f"{config}:2: perfSimTool ignored: TI's ti_cnnperfsim.out; tidlc's perf model is built in (tidlc perf)",
        f"{config}:3: graphVizTool ignored: TI's graph visualiser; use `tidlc ir`",
        f"{config}:5: debugTraceLevel ignored: use --debug for tracebacks",
        f"{config}:6: inMean/inScale ignored: TIDL applies them only with inDataNorm = 1",
    ]


def test_errors_are_tidlc_errors_from_python(tmp_path):
    config = tmp_path / "c.txt"
    config.write_text("inputNetFile = m.onnx\n")
    with pytest.raises(TidlcError, match="inputNetFile: no such file 'm.onnx'") as info:
        load_import_config(str(config))
    assert info.value.loc.line == 1


# ----------------------------------------------------------------------------- the key table
FACTS_KEYS = [  # every key of reference/tidl-facts.md section 1
    "modelType", "inputNetFile", "inputParamsFile", "outputNetFile", "outputParamsFile", "numParamBits",
    "numFeatureBits", "quantizationStyle", "calibrationOption", "activationRangeMethod", "weightRangeMethod",
    "percentileActRangeShrink", "percentileWtRangeShrink", "biasCalibrationFactor", "biasCalibrationIterations",
    "numFrames", "numFramesBiasCalibration", "quantRoundAdd", "quantRangeExpansionFactor", "quantRangeUpdateFactor",
    "inFileFormat", "inData", "inDataNorm", "inMean", "inScale", "inDataFormat", "resizeWidth", "resizeHeight",
    "inResizeType", "inWidth", "inHeight", "inNumChannels", "inDIM1", "inDIM2", "numBatches", "inElementType",
    "rawDataInElementType", "inLayout", "outLayout", "inQuantFactor", "inTensorScale", "inZeroPoint",
    "outElementType", "outElementSize", "outTensorScale", "outZeroPoint", "inDataPadInTIDL", "inYuvFormat",
    "inDataNamesList", "outDataNamesList", "postProcType", "postProcDataId", "metaArchType", "metaLayersNamesList",
    "foldBnInConv2D", "foldPreBnConv2D", "foldEltWiseInConv2D", "foldMaxPoolInConv2D", "foldDepthToSpaceInConv2D",
    "addDataConvertToNet", "debugTraceLevel", "writeTraceLevel", "perfSimConfig", "perfSimTool", "graphVizTool",
    "tidlStatsTool", "modelDumpTool", "executeNetworkCompiler", "executeQuantsTool", "msmcSizeKB", "deviceName",
    "numCores", "inferenceMode", "enableHighResOptimization", "compileConstraintsFlag",
    "outputFeature16bitNamesList", "params16bitNamesList", "mixedPrecisionFactor", "modelGroupId",
    "quantParamsPrototxtFile", "preQuantizedModel", "enableBiasFusion", "batchMode", "partialInitDuringCompile",
    "packetizeMode", "softmax16BitScaleUpdate", "use16BitForTopK", "enableShapeFolding", "randParams",
]


def test_every_tidl_key_is_mapped_ignored_or_rejected_and_documented():
    assert set(FACTS_KEYS) <= set(KEYS)
    assert {k.status for k in KEYS.values()} == {MAPPED, IGNORED, REJECTED}
    text = DOC.read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| (mapped|ignored|rejected) \|", text, re.MULTILINE))
    assert rows == {name: key.status for name, key in KEYS.items()}, "docs/import-config.md's key table is stale"
