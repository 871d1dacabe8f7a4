"""`tidlc compile IMPORT.txt --emit none`: TIDL-RT import config files (keys, values, quoting,
comments, paths) naming the tiny Caffe net written beside them; a quarter of the inputs also
calibrate (`-p quantize`, a low frames limit) so inData / numFrames / inFileFormat / the
pre-processing keys are exercised end to end."""
from __future__ import annotations

import io
import os
import re

import numpy as np

from fuzz.common import TINY_NET
from fuzz.mutate import text_mutation
from fuzz.runner import Seed, cli

FULL = b'''# the tiny net, written like TI's public import configs
modelType          = 0
inputNetFile       = "tiny.prototxt"
randParams         = 1
outputNetFile      = "out/tidl_net_tiny.bin"
outputParamsFile   = "out/tidl_io_tiny_"
numParamBits       = 8
numFeatureBits     = 8
quantizationStyle  = 2
calibrationOption  = 7
biasCalibrationIterations = 2
biasCalibrationFactor = 0.05
activationRangeMethod = 1
percentileActRangeShrink = 0.01
inDataNorm         = 1
inMean             = 127 127 127
inScale            = 0.0078125 0.0078125 0.0078125
inWidth            = 16
inHeight           = 16
inNumChannels      = 3
inData             = calib.npy
inFileFormat       = 1      # raw frames: tidlc takes them as .npy
numFrames          = 2
postProcType       = classification
deviceName         = 0
numBatches         = 1
msmcSizeKB         = 7968
quantRoundAdd      = 50
'''

RANDOM = b'''modelType=caffe
inputNetFile = tiny.prototxt
randParams = 1
inFileFormat = 4   # random frames
numFrames = 3
resizeWidth = 20
resizeHeight = 20
inWidth = 16
inHeight = 16
inDataFormat = 0
inLayout = 0
numParamBits = 16
mixedPrecisionFactor = 1.2
outputFeature16bitNamesList = "conv, fc"
foldBnInConv2D = 0
debugTraceLevel = 1
reserved = 1 2 3
'''

LIST = b'''inputNetFile = "tiny.prototxt"
randParams = true
inData = "frames list.txt"
inFileFormat = 2
numFrames = -1
inDataNorm = 1
inMean = 0
inScale = 1
resizeWidth = 16
resizeHeight = 16
'''

MINIMAL = b"inputNetFile = tiny.prototxt\nrandParams = 1\n"

VALUES = ["0", "1", "-1", "2", "3", "4", "7", "16", "32", "255", "65536", "2147483648", "-2147483649", "1e30",
          "nan", "inf", "0x10", "true", "onnx", "caffe", '"a b"', '"', "", "calib.npy", "tiny.prototxt",
          '"frames list.txt"', "frame.png", "/dev/zero", "/dev/null", ".", "..", "missing.bin", "out/", "~",
          "~nobody/x", "a" * 300, "1 2 3", "1,2,3", "\\x00"]


def _files() -> dict:
    import cv2
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.save(buf, rng.uniform(-1, 1, (2, 1, 3, 16, 16)).astype(np.float32), allow_pickle=False)
    ok, png = cv2.imencode(".png", (rng.random((16, 16, 3)) * 255).astype(np.uint8))
    return {"tiny.prototxt": TINY_NET, "calib.npy": buf.getvalue(), "frame.png": png.tobytes(),
            "frames list.txt": b"frame.png 1\nframe.png 2\n"}


def seeds() -> list[Seed]:
    files = _files()
    return [Seed({**files, "import.txt": text}, "import.txt") for text in (FULL, RANDOM, LIST, MINIMAL)]


def mutate(data: bytes, rng, others) -> bytes:
    """Half the edits change one value or one key of a line; the rest are text edits."""
    if rng.random() < 0.5:
        return text_mutation(data, rng, others)
    from tidlc.import_config import KEYS
    lines = data.decode("utf-8", "surrogateescape").split("\n")
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines))
        m = re.match(r"(\s*)([A-Za-z_][A-Za-z0-9_]*)(\s*=\s*)(.*)", lines[i])
        if m is None or rng.random() < 0.2:
            lines.insert(i, f"{rng.choice(sorted(KEYS))} = {rng.choice(VALUES)}")
        elif rng.random() < 0.7:
            lines[i] = m.group(1) + m.group(2) + m.group(3) + rng.choice(VALUES)
        else:
            lines[i] = m.group(1) + rng.choice(sorted(KEYS)) + m.group(3) + m.group(4)
    return "\n".join(lines).encode("utf-8", "surrogateescape")


def run(path: str) -> None:
    index = os.path.basename(os.path.dirname(path))  # the runner's case folder is the input index
    if index.isdigit() and int(index) % 4 == 0:
        cli("--limit", "frames=64", "-p", "quantize", "compile", path, "--emit", "none")
    else:
        cli("compile", path, "--emit", "none")
