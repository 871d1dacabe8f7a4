"""Command-line flags of quantization (``tidlc compile``, ``tidlc compare``).

Each flag's ``dest`` is a CompileOptions field, so the CLI fills the options
without further code. TIDL import-config names are given in the help.
"""
from __future__ import annotations

import argparse


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _pair(text: str) -> tuple[int, int]:
    try:
        pair = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        pair = ()
    if len(pair) != 2 or min(pair) <= 0:
        raise argparse.ArgumentTypeError(f"expected W,H (two positive integers), got {text!r}")
    return pair  # type: ignore[return-value]


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def add_quant_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("quantization (docs/quantization.md)")
    g.add_argument("--bits", type=int, choices=(8, 16), help="activation and weight bits (numParamBits/numFeatureBits; default 8)")
    g.add_argument("--quant-style", choices=("np2", "p2"),
                   help="weight scales: np2 = any (quantizationStyle 2, default), p2 = powers of two (3)")
    g.add_argument("--calib", metavar="DATA",
                   help="calibration data: a list file ('path [label]' lines), a folder of images/.npy, "
                        "a .npy of stacked pre-processed frames or an .npz per input")
    g.add_argument("--calib-frames", type=int, metavar="N", help="use the first N frames (numFrames; default all)")
    g.add_argument("--calib-method", choices=("minmax", "histogram", "entropy", "mse"),
                   help="activation ranges: minmax, histogram percentile (default; percentileActRangeShrink), "
                        "entropy (KL) or mse")
    g.add_argument("--percentile", type=float, metavar="P",
                   help="histogram: drop P %% of the elements on each side (default 0.01)")
    g.add_argument("--bias-calibration", type=int, nargs="?", const=50, metavar="ITERS",
                   help="TIDL's advanced bias calibration (default 50 iterations when given)")
    g.add_argument("--bias-calibration-factor", type=float, metavar="F",
                   help="bias update weight per iteration (biasCalibrationFactor; default 0.05)")
    g.add_argument("--per-channel-depthwise", action="store_true", default=None,
                   help="per-channel weight scales for depthwise layers (calibrationOption 8)")
    g.add_argument("--16bit-layers", dest="layers_16bit", type=_names, metavar="NAME,...",
                   help="layers computed in 16 bits (outputFeature16bitNamesList)")
    g.add_argument("--mixed-precision-factor", type=float, metavar="F",
                   help="promote layers to 16 bits automatically within F x the 8-bit cost (mixedPrecisionFactor)")
    g.add_argument("--mean", type=_floats, metavar="M[,M,M]", help="image pre-processing: subtract (inMean)")
    g.add_argument("--scale", type=_floats, metavar="S[,S,S]", help="image pre-processing: then multiply (inScale)")
    g.add_argument("--resize", type=_pair, metavar="W,H", help="resize images first (resizeWidth/resizeHeight)")
    g.add_argument("--crop", type=_pair, metavar="W,H", help="then centre-crop (inWidth/inHeight)")
    g.add_argument("--channel-order", choices=("rgb", "bgr"),
                   help="channel order the network expects (inDataFormat 1 = rgb, default; 0 = bgr)")
