"""What a converter sees of one ONNX node: decoded attributes, resolved inputs, a builder.

Converters are small functions ``fn(node: Node) -> None`` that read the
node's attributes and inputs, append IR ops with :meth:`Node.op` and bind the
node's outputs with :meth:`Node.bind`. Every op they create carries the
node's name and ``loc(name, model path)``.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from tidlc import limits
from tidlc.diagnostics import Loc, TidlcError
from tidlc.fileio import open_regular
from tidlc.frontend import NodeContext, RuntimeValue
from tidlc.hostrt import fold_host_op, foldable_host_op
from tidlc.ir.builder import check_result_sizes
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


# TensorProto.DataType -> (numpy type, the repeated field holding non-raw data); float16 values
# are stored as their bits in int32_data, uint32 ones in uint64_data (onnx.proto)
_TENSOR_FIELDS = {1: (np.float32, "float_data"), 2: (np.uint8, "int32_data"), 3: (np.int8, "int32_data"),
                  4: (np.uint16, "int32_data"), 5: (np.int16, "int32_data"), 6: (np.int32, "int32_data"),
                  7: (np.int64, "int64_data"), 9: (np.bool_, "int32_data"), 10: (np.float16, "int32_data"),
                  11: (np.float64, "double_data"), 12: (np.uint32, "uint64_data")}
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


def tensor_to_array(tensor, what: str, loc, base_dir: str = "") -> np.ndarray:
    """A TensorProto as numpy, its declared dims checked against the limits before anything is
    allocated (a 20-byte tensor may declare 2**40 elements); raw data is viewed, not copied.

    (onnx.numpy_helper is not used: it allocates from the dims before it checks the data, and
    costs ~20 us a call in checks a tidlc model does not need.)
    """
    if tensor.data_type not in _TENSOR_FIELDS:
        ir_dtype(tensor.data_type, what, loc)  # the error naming the type
    dtype, field = _TENSOR_FIELDS[tensor.data_type]
    itemsize = np.dtype(dtype).itemsize
    dims = tuple(tensor.dims)
    if any(d < 0 for d in dims):
        raise TidlcError(f"{what}: negative dimension in {list(dims)}", loc, code="corrupt")
    count = limits.check_shape(dims, itemsize, what, loc)
    if tensor.HasField("segment"):
        raise TidlcError(f"{what}: segmented tensors are not supported", loc, code="unsupported")
    if tensor.data_location == _EXTERNAL:
        raw = read_external(tensor, count * itemsize, what, loc, base_dir)
    elif tensor.HasField("raw_data"):
        raw = tensor.raw_data
    else:
        values = getattr(tensor, field)
        if len(values) != count:
            raise TidlcError(f"{what}: {len(values)} values in {field} for shape {list(dims)}", loc, code="corrupt")
        if dtype == np.float16:  # the bits, one per int32
            return np.asarray(values, np.int64).astype(np.uint16).view(np.float16).reshape(dims)
        try:
            return np.asarray(values, dtype=dtype).reshape(dims)
        except OverflowError:  # an int32_data value that does not fit an 8/16-bit type, uint64 > 2**32
            raise TidlcError(f"{what}: a value in {field} is out of range for {np.dtype(dtype).name}", loc,
                             code="corrupt") from None
    if len(raw) != count * itemsize:
        raise TidlcError(f"{what}: raw_data holds {len(raw)} bytes, shape {list(dims)} of "
                         f"{np.dtype(dtype).name} needs {count * itemsize}", loc, code="corrupt")
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype, copy=False).reshape(dims)


def read_external(tensor, size: int, what: str, loc, base_dir: str) -> bytes:
    """The ``size`` bytes of an external-data tensor, read from a regular file in the model's
    folder (locations that leave the folder are refused, as onnx does)."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    parts = location.replace("\\", "/").split("/")
    if not location or os.path.isabs(location) or ".." in parts or "\0" in location:
        raise TidlcError(f"{what}: bad external data location {location[:100]!r}", loc,
                         hint="a file name relative to the model's folder", code="corrupt")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info.get("length", str(size)))
    except ValueError:
        raise TidlcError(f"{what}: external data offset/length are not integers", loc, code="corrupt") from None
    if length != size or offset < 0:
        raise TidlcError(f"{what}: external data of {length} bytes at offset {offset}, the shape needs "
                         f"{size}", loc, code="corrupt")
    path = os.path.join(base_dir, location)
    with open_regular(path, f"file of external data for {what}") as fh:
        if offset + size > os.fstat(fh.fileno()).st_size:
            raise TidlcError(f"cannot load external data: {what} needs bytes {offset}-{offset + size} "
                             "beyond the end of the file", path, code="corrupt")
        fh.seek(offset)
        return fh.read(size)


def decode_attribute(attr, loc=None, base_dir: str = "") -> Any:
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
        return tensor_to_array(attr.t, f"attribute '{attr.name}'", loc, base_dir)
    return attr  # graphs, sparse tensors, type protos: converters reject them


def _brief(value: Any) -> str:
    """A short one-line picture of an attribute value for messages."""
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} tensor of shape {value.shape}"
    if not isinstance(value, (int, float, str, tuple)):
        return f"a {type(value).__name__}"
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


class _AttributeKinds:
    """``onnx.AttributeProto`` enum values, resolved on first use (importing tidlc never imports onnx)."""

    def __getattr__(self, name: str) -> int:
        from onnx import AttributeProto
        value = getattr(AttributeProto, name)
        setattr(self, name, value)
        return value


_ATTR = _AttributeKinds()


STATIC_DEPTH = 32  # how many ops back static_value looks (Swin's shifted-window padding: 17)


def static_value(value: Value, depth: int = STATIC_DEPTH, memo: dict | None = None) -> np.ndarray | None:
    """The data of ``value`` when it is computed from constants and static shapes only, evaluated now
    (None when it depends on the input data, or lies deeper than ``depth`` ops): PyTorch writes
    ``F.interpolate(x, size=y.shape[-2:])`` (FPN, U-Net) as ``Shape -> Slice -> Concat -> Resize``,
    whose sizes a converter needs at import; an ONNX op tidlc does not lower (a host op) is evaluated by
    onnx's reference evaluator (``tidlc.hostrt.fold_host_op``): torchvision's Swin pads its windows by
    ``(7 - H % 7) % 7``, with ``Mod``. The ops stay in the graph; nothing reads them any more,
    so dead-code elimination removes them. ``memo`` (id of a value -> its data, or the depth at
    which it was not found) keeps a DAG of shape arithmetic from being walked once per path."""
    data = value.const_value()
    if data is not None or depth <= 0 or value.producer is None:
        return data
    memo = {} if memo is None else memo
    known = memo.get(id(value))
    if isinstance(known, np.ndarray):
        return known
    if known is not None and known >= depth:
        return None
    data = _static_value(value, depth, memo)
    memo[id(value)] = data if data is not None else depth
    return data


def _static_value(value: Value, depth: int, memo: dict) -> np.ndarray | None:
    op = value.producer
    if op.kind == "shape":  # as FoldingImporter.emit folds it
        t = op.operands[0].type
        return np.array(t.shape, np.int64) if t.is_static else None
    results = static_results(op, depth - 1, memo)
    return None if results is None else results[value.index]


def static_results(op, depth: int = STATIC_DEPTH, memo: dict | None = None) -> list[np.ndarray] | None:
    """Every result of ``op`` evaluated now, when its operands are static (:func:`static_value`,
    looking ``depth`` ops back from them) and it can be evaluated: a foldable op, or an ONNX host
    op onnx's reference evaluator runs (``tidlc.hostrt.fold_host_op``); else None."""
    memo = {} if memo is None else memo
    host = op.kind == "host" and foldable_host_op(op)
    if not (host or (op.opdef.foldable and op.opdef.compute is not None)):
        return None
    inputs = []
    for v in op.operands:
        inputs.append(static_value(v, depth, memo))
        if inputs[-1] is None:
            return None
    check_result_sizes(op, [r.type for r in op.results])  # before numpy allocates them, as FoldingImporter does
    if host:
        results = fold_host_op(op, inputs)
        return None if results is None else [np.asarray(r) for r in results]
    from tidlc.interp import evaluate_op
    try:
        return [np.asarray(r) for r in evaluate_op(op, inputs)]
    except (ValueError, IndexError, TypeError, ArithmeticError, TidlcError):
        return None


class Node(NodeContext):
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
        value = self._attrs[key] = decode_attribute(raw, self.loc, self.importer.base_dir)
        return value

    def attr_int(self, key: str, default: Any = _REQUIRED) -> int | None:
        value = self.attr(key, default)
        if value is None:
            return None
        if not isinstance(value, (int, np.integer)):
            raise self.error(f"attribute '{key}' must be an integer, got {_brief(value)}")
        return int(value)

    def attr_float(self, key: str, default: Any = _REQUIRED) -> float | None:
        value = self.attr(key, default)
        if value is None:
            return None
        if not isinstance(value, (int, float, np.integer, np.floating)):
            raise self.error(f"attribute '{key}' must be a number, got {_brief(value)}")
        return float(value)

    def attr_str(self, key: str, default: Any = _REQUIRED) -> str:
        value = self.attr(key, default)
        if not isinstance(value, str):
            raise self.error(f"attribute '{key}' must be a string, got {_brief(value)}")
        return value

    def attr_ints(self, key: str, default: Any = _REQUIRED) -> tuple[int, ...] | None:
        return self._attr_list(key, default, "iub", "a list of integers", int)

    def attr_floats(self, key: str, default: Any = _REQUIRED) -> tuple[float, ...] | None:
        return self._attr_list(key, default, "iubf", "a list of numbers", float)

    def _attr_list(self, key: str, default: Any, kinds: str, expected: str, convert) -> tuple | None:
        """A list attribute (a single number counts as a list of one; a tensor of rank <= 1 too)."""
        value = self.attr(key, default)
        if value is None:
            return None
        if isinstance(value, (tuple, list, np.ndarray)):
            data = np.asarray(value)
            if data.ndim <= 1 and (data.size == 0 or data.dtype.kind in kinds):
                return tuple(convert(v) for v in data.reshape(-1).tolist())
        elif isinstance(value, (int, float, np.integer, np.floating)) and np.asarray(value).dtype.kind in kinds:
            return (convert(value),)
        raise self.error(f"attribute '{key}' must be {expected}, got {_brief(value)}")

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
            data = static_value(value)
        if data is None:
            subject = f"{what or f'input {i}'} ('{self.input_names[i]}')"
            err = self.error(f"{subject} must be a constant initializer",
                             hint="tidlc imports static graphs; fold it first (e.g. with onnxsim) "
                                  "or fix the input shapes with --input-shape")
            raise RuntimeValue(err.message, err.loc, hint=err.hint, code=err.code, subject=subject)
        return data

    def static_input(self, i: int, suffix: str) -> Value:
        """Input ``i``, as a new constant when it is shape arithmetic of static shapes (see
        :func:`static_value`), so the op reading it (an Expand's or ConstantOfShape's shape) gets a
        static type at import and the converters after it see static shapes."""
        value = self.input(i)
        if value.const_value() is None:
            data = static_value(value)
            if data is not None:
                return self.const(data, suffix)
        return value

    def const_ints(self, i: int, what: str = "") -> tuple[int, ...] | None:
        """The values of an integer constant input (axes, pads, sizes), flattened; None if absent."""
        data = self.const_input(i, what)
        return None if data is None else self.int_values(data, what or f"input {i}")

    def int_values(self, data: np.ndarray, what: str) -> tuple[int, ...]:
        if data.dtype.kind not in "iub":
            raise self.error(f"{what} must be integers, got {data.dtype}")
        return tuple(int(v) for v in data.reshape(-1).tolist())

    def one_value(self, data: np.ndarray, what: str) -> float:
        """The single value of a scalar-like constant (a bound, a ratio, a fill value)."""
        if data.size != 1:
            raise self.error(f"{what} must hold one value, got shape {data.shape}")
        return float(data.reshape(-1)[0])

    # --- outputs ----------------------------------------------------------------------
    @property
    def num_outputs(self) -> int:
        return len(self.output_names)

    def output_used(self, i: int) -> bool:
        """True if output ``i`` exists and some node or graph output reads it."""
        return i < len(self.output_names) and self.output_names[i] != "" and \
            self.output_names[i] in self.importer.used_names

    # --- building -----------------------------------------------------------------------
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

    def axis(self, axis: int, rank: int | None, extra: int = 0) -> int:
        """``axis`` made non-negative when the rank is known (``extra=1``: axis == rank is allowed)."""
        if rank is None:
            return axis
        if not -rank <= axis < rank + extra:
            raise self.error(f"axis {axis} out of range for rank {rank}")
        return axis + rank if axis < 0 else axis
