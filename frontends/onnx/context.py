"""What a converter sees of one ONNX node: decoded attributes, resolved inputs, a builder.

Converters are small functions ``fn(node: Node) -> None`` that read the
node's attributes and inputs, append IR ops with :meth:`Node.op` and bind the
node's outputs with :meth:`Node.bind`. Every op they create carries the
node's name and ``loc(name, model path)``.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from tidlc.diagnostics import Loc, TidlcError
from tidlc.ir.core import Value

_REQUIRED = object()

# ONNX TensorProto.DataType -> IR element type (what tidlc can hold)
ONNX_DTYPES = {1: "f32", 2: "u8", 3: "i8", 4: "u16", 5: "i16", 6: "i32", 7: "i64", 9: "bool",
               10: "f16", 11: "f64", 12: "u32"}
ONNX_DTYPE_NAMES = {0: "UNDEFINED", 1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16",
                    6: "INT32", 7: "INT64", 8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE",
                    12: "UINT32", 13: "UINT64", 14: "COMPLEX64", 15: "COMPLEX128", 16: "BFLOAT16"}


def ir_dtype(onnx_type: int, what: str, loc) -> str:
    try:
        return ONNX_DTYPES[onnx_type]
    except KeyError:
        name = ONNX_DTYPE_NAMES.get(onnx_type, f"type {onnx_type}")
        raise TidlcError(f"{what}: element type {name} is not supported", loc,
                         hint="tidlc holds f32/f16/f64, (u)int8/16/32, int64 and bool tensors") from None


# TensorProto.DataType -> (numpy type, the repeated field holding non-raw data)
_TENSOR_FIELDS = {1: (np.float32, "float_data"), 2: (np.uint8, "int32_data"), 3: (np.int8, "int32_data"),
                  4: (np.uint16, "int32_data"), 5: (np.int16, "int32_data"), 6: (np.int32, "int32_data"),
                  7: (np.int64, "int64_data"), 9: (np.bool_, "int32_data"), 11: (np.float64, "double_data"),
                  12: (np.uint32, "uint64_data")}
_LITTLE_ENDIAN = sys.byteorder == "little"


def tensor_to_array(tensor, base_dir: str = "") -> np.ndarray:
    """A TensorProto as numpy: raw data is viewed, not copied; other cases go to onnx.numpy_helper.

    (``numpy_helper.to_array`` costs ~20 us a call in checks a tidlc model does not need; the
    light models alone have thousands of small tensors.)
    """
    known = _TENSOR_FIELDS.get(tensor.data_type)
    if known is None or not _LITTLE_ENDIAN or tensor.data_location == 1 or tensor.HasField("segment"):
        from onnx.numpy_helper import to_array
        return to_array(tensor, base_dir)
    dtype, field = known
    dims = tuple(tensor.dims)
    if tensor.HasField("raw_data"):
        return np.frombuffer(tensor.raw_data, dtype=dtype).reshape(dims)
    return np.asarray(getattr(tensor, field), dtype=dtype).reshape(dims)


def decode_attribute(attr) -> Any:
    """An AttributeProto as a Python value (tensors as numpy arrays, strings decoded)."""
    kind = attr.type
    if kind == _ATTR.UNDEFINED:  # very old exporters left the type out
        kind = next((k for k, field in ((_ATTR.FLOATS, "floats"), (_ATTR.INTS, "ints"),
                                        (_ATTR.STRINGS, "strings")) if len(getattr(attr, field))), None)
        if kind is None:
            kind = next((k for k, field in ((_ATTR.TENSOR, "t"), (_ATTR.STRING, "s"),
                                            (_ATTR.FLOAT, "f"), (_ATTR.INT, "i"))
                         if attr.HasField(field)), _ATTR.UNDEFINED)
    if kind == _ATTR.INT:
        return attr.i
    if kind == _ATTR.FLOAT:
        return attr.f
    if kind == _ATTR.STRING:
        return attr.s.decode("utf-8", "replace")
    if kind == _ATTR.INTS:
        return tuple(attr.ints)
    if kind == _ATTR.FLOATS:
        return tuple(attr.floats)
    if kind == _ATTR.STRINGS:
        return tuple(s.decode("utf-8", "replace") for s in attr.strings)
    if kind == _ATTR.TENSOR:
        return tensor_to_array(attr.t)
    return attr  # graphs, sparse tensors, type protos: converters reject them


class _AttributeKinds:
    """``onnx.AttributeProto`` enum values, resolved on first use (importing tidlc never imports onnx)."""

    def __getattr__(self, name: str) -> int:
        from onnx import AttributeProto
        value = getattr(AttributeProto, name)
        setattr(self, name, value)
        return value


_ATTR = _AttributeKinds()


class Node:
    """One ONNX node during conversion (see the module docstring)."""

    def __init__(self, importer, proto, opset: int):
        self.importer = importer
        self.proto = proto
        self.op_type: str = proto.op_type
        self.domain: str = proto.domain
        self.opset = opset
        self.input_names: list[str] = list(proto.input)
        self.output_names: list[str] = list(proto.output)
        self.name: str = proto.name or next((o for o in self.output_names if o), "") or self.op_type
        self.loc = Loc(self.name, importer.path)
        self._raw_attrs = {a.name: a for a in proto.attribute}
        self._attrs: dict[str, Any] = {}

    @property
    def label(self) -> str:
        """``'name' (OpType)`` for messages."""
        return f"'{self.name}' ({self.op_type})"

    def error(self, message: str, hint: str = "") -> TidlcError:
        return TidlcError(f"{self.op_type}: {message}", self.loc, hint=hint)

    # --- attributes ---------------------------------------------------------------
    def has_attr(self, key: str) -> bool:
        return key in self._raw_attrs

    def attr(self, key: str, default: Any = _REQUIRED) -> Any:
        if key in self._attrs:
            return self._attrs[key]
        raw = self._raw_attrs.get(key)
        if raw is None:
            if default is _REQUIRED:
                raise self.error(f"missing required attribute '{key}'")
            return default
        value = self._attrs[key] = decode_attribute(raw)
        return value

    def attr_int(self, key: str, default: Any = _REQUIRED) -> int | None:
        value = self.attr(key, default)
        if value is None:
            return None
        if not isinstance(value, (int, np.integer)):
            raise self.error(f"attribute '{key}' must be an integer, got {value!r}")
        return int(value)

    def attr_float(self, key: str, default: Any = _REQUIRED) -> float | None:
        value = self.attr(key, default)
        if value is None:
            return None
        if not isinstance(value, (int, float, np.integer, np.floating)):
            raise self.error(f"attribute '{key}' must be a number, got {value!r}")
        return float(value)

    def attr_str(self, key: str, default: Any = _REQUIRED) -> str:
        value = self.attr(key, default)
        if not isinstance(value, str):
            raise self.error(f"attribute '{key}' must be a string, got {value!r}")
        return value

    def attr_ints(self, key: str, default: Any = _REQUIRED) -> tuple[int, ...] | None:
        value = self.attr(key, default)
        if value is None:
            return None
        if isinstance(value, (int, np.integer)):
            return (int(value),)
        try:
            return tuple(int(v) for v in value)
        except (TypeError, ValueError):
            raise self.error(f"attribute '{key}' must be a list of integers, got {value!r}") from None

    def attr_floats(self, key: str, default: Any = _REQUIRED) -> tuple[float, ...] | None:
        value = self.attr(key, default)
        if value is None:
            return None
        if isinstance(value, (int, float, np.integer, np.floating)):
            return (float(value),)
        return tuple(float(v) for v in value)

    # --- inputs ---------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        return len(self.input_names)

    def has_input(self, i: int) -> bool:
        return i < len(self.input_names) and self.input_names[i] != ""

    def input(self, i: int) -> Value:
        if not self.has_input(i):
            raise self.error(f"input {i} is required but missing")
        return self.importer.value(self.input_names[i], self)

    def optional_input(self, i: int) -> Value | None:
        return self.input(i) if self.has_input(i) else None

    def inputs(self) -> list[Value]:
        """Every present input, in order (for variadic ops)."""
        return [self.importer.value(n, self) for n in self.input_names if n]

    def is_constant(self, value: Value) -> bool:
        """True if ``value`` does not depend on a graph input (fold-constants will make it a const)."""
        return self.importer.is_constant(value)

    def const_input(self, i: int, what: str = "") -> np.ndarray | None:
        """The data of input ``i`` (None if absent); a non-constant input is a TidlcError.

        For inputs that replaced attributes in later opsets (Slice starts, Pad
        pads, Resize scales, ...): tidlc needs their values at import time.
        """
        if not self.has_input(i):
            return None
        value = self.input(i)
        data = value.const_value()
        if data is None:
            what = what or f"input {i}"
            raise self.error(f"{what} ('{self.input_names[i]}') must be a constant initializer",
                             hint="tidlc imports static graphs; fold it first (e.g. with onnxsim) "
                                  "or fix the input shapes with --input-shape")
        return data

    def const_ints(self, i: int, what: str = "") -> tuple[int, ...] | None:
        data = self.const_input(i, what)
        return None if data is None else tuple(int(v) for v in np.asarray(data).reshape(-1))

    # --- outputs ----------------------------------------------------------------------
    @property
    def num_outputs(self) -> int:
        return len(self.output_names)

    def output_used(self, i: int) -> bool:
        """True if output ``i`` exists and some node or graph output reads it."""
        return i < len(self.output_names) and self.output_names[i] != "" and \
            self.output_names[i] in self.importer.used_names

    # --- building -----------------------------------------------------------------------
    def op(self, kind: str, operands: Sequence[Value], **attrs: Any):
        """Append an IR op named after this node; returns its result (a list if several)."""
        return self.importer.emit(kind, operands, attrs, self)

    def const(self, data: Any, suffix: str = "") -> Value:
        """A new constant op named ``<node>.<suffix>`` (or the node's name without a suffix)."""
        return self.importer.new_const(np.asarray(data), f"{self.name}.{suffix}" if suffix else self.name,
                                       tensor_name=False)

    def bind(self, *values: Value | None) -> None:
        """Bind the node's outputs, in order, to IR values (None for outputs left unset)."""
        for name, value in zip(self.output_names, values):
            if name and value is not None:
                self.importer.bind(name, value, self)

    # --- type helpers -------------------------------------------------------------------
    @staticmethod
    def rank(value: Value) -> int | None:
        return value.type.rank

    def static_shape(self, value: Value, what: str = "input") -> tuple[int, ...]:
        """The fully known shape of ``value`` or a TidlcError asking for --input-shape."""
        if not value.type.is_static:
            raise self.error(f"needs the static shape of its {what}, which is "
                             f"{'unknown' if value.shape is None else value.type}",
                             hint="give the input shapes with --input-shape NAME=d0,d1,...")
        return tuple(value.shape)

    def need_rank(self, value: Value, what: str = "input") -> int:
        rank = value.type.rank
        if rank is None:
            raise self.error(f"needs the rank of its {what}, which is unknown",
                             hint="give the input shapes with --input-shape NAME=d0,d1,...")
        return rank
