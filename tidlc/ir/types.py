"""Tensor types: shape, element type, layout and optional quantization.

Types are immutable values (``attrs.frozen``); two equal types are
interchangeable. A dimension is an ``int`` or ``None`` (unknown until shape
inference); ``shape is None`` means even the rank is unknown.
"""
from __future__ import annotations

import attrs
import numpy as np

DTYPES = {
    "f32": np.float32, "f64": np.float64, "f16": np.float16,
    "i8": np.int8, "u8": np.uint8, "i16": np.int16, "u16": np.uint16,
    "i32": np.int32, "u32": np.uint32, "i64": np.int64, "bool": np.bool_,
}
_NP_TO_DTYPE = {np.dtype(v): k for k, v in DTYPES.items()}
LAYOUTS = ("NCHW", "NHWC")


def dtype_of(array_or_dtype) -> str:
    """The IR dtype name of a numpy array, scalar or dtype."""
    is_value = isinstance(array_or_dtype, (np.ndarray, np.generic))
    dt = np.dtype(array_or_dtype.dtype if is_value else array_or_dtype)
    try:
        return _NP_TO_DTYPE[dt]
    except KeyError:
        raise ValueError(f"no IR element type for numpy dtype {dt}") from None


def numpy_dtype(dtype: str) -> np.dtype:
    return np.dtype(DTYPES[dtype])


def _check_dtype(inst, attribute, value):
    if value not in DTYPES:
        raise ValueError(f"unknown element type {value!r}; one of {', '.join(DTYPES)}")


def _check_layout(inst, attribute, value):
    if value is not None and value not in LAYOUTS:
        raise ValueError(f"unknown layout {value!r}; one of {', '.join(LAYOUTS)}")


def _to_shape(value):
    if value is None:
        return None
    if type(value) is tuple and all(type(d) is int and d >= 0 for d in value):
        return value  # the common case, already canonical
    return tuple(None if d is None or (isinstance(d, (int, np.integer)) and d < 0) else int(d)
                 for d in value)


def _to_floats(value):
    return tuple(float(v) for v in np.atleast_1d(value))


QUANT_BITS = (4, 8, 12, 16, 32, 64)  # 32/64: accumulator-scale biases


def _check_bits(inst, attribute, value):
    if isinstance(value, bool) or value not in QUANT_BITS:
        raise ValueError(f"quantization bits must be one of {', '.join(map(str, QUANT_BITS))}, got {value!r}")


def _check_scale(inst, attribute, value):
    if not value or not all(np.isfinite(s) and s > 0 for s in value):
        raise ValueError(f"quantization scales must be positive and finite, got {list(value)}")


def _check_shift(inst, attribute, value):
    # an output shift of an integer accumulator: beyond 63 it is meaningless (and 2.0**shift overflows)
    if value is not None and (isinstance(value, bool) or not 0 <= value <= 63):
        raise ValueError(f"quantization shift must be 0..63, got {value!r}")


def _check_zero_point(inst, attribute, value):
    if isinstance(value, bool) or not -(1 << inst.bits) <= value <= (1 << inst.bits):
        raise ValueError(f"quantization zero point {value!r} does not fit {inst.bits} bits")


def _check_axis(inst, attribute, value):
    if value is not None and (isinstance(value, bool) or not -64 <= value < 64):
        raise ValueError(f"quantization axis {value!r} is out of range")


@attrs.frozen
class QuantInfo:
    """How a fixed-point tensor maps to real numbers: ``real = (q - zero_point) / scale``.

    ``scale`` has one entry (per tensor) or one per channel along ``axis``.
    ``shift`` is the power-of-2 output shift (TIDL ``roundBits``) that produced
    the tensor from its accumulator, when known.
    """

    bits: int = attrs.field(validator=_check_bits)
    signed: bool
    scale: tuple[float, ...] = attrs.field(converter=_to_floats, validator=_check_scale)
    zero_point: int = attrs.field(default=0, validator=_check_zero_point)
    shift: int | None = attrs.field(default=None, validator=_check_shift)
    axis: int | None = attrs.field(default=None, validator=_check_axis)

    @property
    def storage(self) -> str:
        """The integer element type that holds the values."""
        width = 8 if self.bits <= 8 else 16 if self.bits <= 16 else 32 if self.bits <= 32 else 64
        return ("i" if self.signed else "u") + str(width)

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1


@attrs.frozen
class TensorType:
    """A tensor's static type."""

    shape: tuple[int | None, ...] | None = attrs.field(converter=_to_shape)
    dtype: str = attrs.field(default="f32", validator=_check_dtype)
    layout: str | None = attrs.field(default=None, validator=_check_layout)
    quant: QuantInfo | None = None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(d is not None for d in self.shape)

    @property
    def size(self) -> int:
        """Number of elements (the shape must be static)."""
        if not self.is_static:
            raise ValueError(f"size of a dynamic shape {self}")
        return int(np.prod(self.shape, dtype=np.int64))

    def with_shape(self, shape) -> TensorType:
        return attrs.evolve(self, shape=shape)

    def with_dtype(self, dtype: str) -> TensorType:
        return attrs.evolve(self, dtype=dtype)

    def with_layout(self, layout: str | None) -> TensorType:
        return attrs.evolve(self, layout=layout)

    def with_quant(self, quant: QuantInfo | None) -> TensorType:
        return attrs.evolve(self, quant=quant)

    def __str__(self) -> str:
        from tidlc.ir.printer import format_type
        return format_type(self)


def f32(*shape, layout=None) -> TensorType:
    return TensorType(shape, "f32", layout)
