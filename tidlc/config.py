"""Compile options (one attrs class shared by the CLI and the Python API)."""
from __future__ import annotations

from typing import Optional

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
    pipeline: Optional[str] = None  # explicit -p pipeline string; replaces the -O list
    verify_each: bool = False
    time_passes: bool = False
    emit: str = "ir"
    outdir: str = "out"
    format: Optional[str] = None  # force a frontend by name
    weights: Optional[str] = None  # Caffe: .caffemodel path
    random_weights: Optional[int] = None  # seed: fill missing weights randomly
    blocked_plugins: tuple[str, ...] = ()
