"""A minimal GraphDef schema, declared at run time: reading a frozen ``.pb`` needs protobuf only.

TensorFlow's ``GraphDef`` is plain proto3. The handful of messages a frozen
inference graph uses (GraphDef, NodeDef, AttrValue and its ListValue,
TensorProto, TensorShapeProto) are declared here with
``descriptor_pb2`` and built with ``message_factory`` in a private
descriptor pool, under the package name ``tidlc.tf`` so they can never clash
with TensorFlow's own classes when both are loaded. Field numbers are
TensorFlow's (``tensorflow/core/framework/*.proto``); fields tidlc never
reads (debug info, resource handles, function attributes) are left out and
skipped by the parser as unknown fields. The function library is read:
frozen Keras 3 graphs call functions (``functions.py`` inlines the calls).
"""
from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tidlc import limits
from tidlc.diagnostics import TidlcError

PACKAGE = "tidlc.tf"

# TensorFlow DataType enum values -> (numpy dtype, TensorProto field with the typed values)
DATA_TYPES: dict[int, tuple[Any, str]] = {
    1: (np.float32, "float_val"), 2: (np.float64, "double_val"), 3: (np.int32, "int_val"),
    4: (np.uint8, "int_val"), 5: (np.int16, "int_val"), 6: (np.int8, "int_val"),
    9: (np.int64, "int64_val"), 10: (np.bool_, "bool_val"), 17: (np.uint16, "int_val"),
    19: (np.float16, "half_val"), 22: (np.uint32, "uint32_val"), 23: (np.uint64, "uint64_val"),
}
DATA_TYPE_NAMES = {0: "DT_INVALID", 1: "DT_FLOAT", 2: "DT_DOUBLE", 3: "DT_INT32", 4: "DT_UINT8",
                   5: "DT_INT16", 6: "DT_INT8", 7: "DT_STRING", 8: "DT_COMPLEX64", 9: "DT_INT64",
                   10: "DT_BOOL", 11: "DT_QINT8", 12: "DT_QUINT8", 13: "DT_QINT32", 14: "DT_BFLOAT16",
                   15: "DT_QINT16", 16: "DT_QUINT16", 17: "DT_UINT16", 18: "DT_COMPLEX128",
                   19: "DT_HALF", 20: "DT_RESOURCE", 21: "DT_VARIANT", 22: "DT_UINT32", 23: "DT_UINT64"}

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_SCALARS = {"string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "int64": _F.TYPE_INT64, "int32": _F.TYPE_INT32,
            "float": _F.TYPE_FLOAT, "double": _F.TYPE_DOUBLE, "bool": _F.TYPE_BOOL, "uint32": _F.TYPE_UINT32,
            "uint64": _F.TYPE_UINT64, "enum": _F.TYPE_INT32}  # DataType enums are read as plain ints

# message -> [(field name, number, type, repeated, packed)]; a type that is not a scalar names a message
_MESSAGES: dict[str, list[tuple[str, int, str, bool, bool]]] = {
    "TensorShapeProto.Dim": [("size", 1, "int64", False, False), ("name", 2, "string", False, False)],
    "TensorShapeProto": [("dim", 2, "TensorShapeProto.Dim", True, False),
                         ("unknown_rank", 3, "bool", False, False)],
    "TensorProto": [
        ("dtype", 1, "enum", False, False), ("tensor_shape", 2, "TensorShapeProto", False, False),
        ("version_number", 3, "int32", False, False), ("tensor_content", 4, "bytes", False, False),
        ("float_val", 5, "float", True, True), ("double_val", 6, "double", True, True),
        ("int_val", 7, "int32", True, True), ("string_val", 8, "bytes", True, False),
        ("int64_val", 10, "int64", True, True), ("bool_val", 11, "bool", True, True),
        ("half_val", 13, "int32", True, True), ("uint32_val", 16, "uint32", True, True),
        ("uint64_val", 17, "uint64", True, True)],
    "AttrValue.ListValue": [
        ("s", 2, "bytes", True, False), ("i", 3, "int64", True, True), ("f", 4, "float", True, True),
        ("b", 5, "bool", True, True), ("type", 6, "enum", True, True),
        ("shape", 7, "TensorShapeProto", True, False), ("tensor", 8, "TensorProto", True, False)],
    "AttrValue": [
        ("list", 1, "AttrValue.ListValue", False, False), ("s", 2, "bytes", False, False),
        ("i", 3, "int64", False, False), ("f", 4, "float", False, False), ("b", 5, "bool", False, False),
        ("type", 6, "enum", False, False), ("shape", 7, "TensorShapeProto", False, False),
        ("tensor", 8, "TensorProto", False, False), ("placeholder", 9, "string", False, False),
        ("func", 10, "NameAttrList", False, False)],
    "NameAttrList": [("name", 1, "string", False, False)],
    "NodeDef.AttrEntry": [("key", 1, "string", False, False), ("value", 2, "AttrValue", False, False)],
    "NodeDef": [("name", 1, "string", False, False), ("op", 2, "string", False, False),
                ("input", 3, "string", True, False), ("device", 4, "string", False, False),
                ("attr", 5, "NodeDef.AttrEntry", True, False)],
    "GraphDef": [("node", 1, "NodeDef", True, False), ("library", 2, "FunctionDefLibrary", False, False),
                 ("version", 3, "int32", False, False)],
    # the function library: frozen Keras 3 graphs call functions (functions.py inlines them)
    "FunctionDefLibrary": [("function", 1, "FunctionDef", True, False)],
    "FunctionDef": [("signature", 1, "OpDef", False, False), ("node_def", 3, "NodeDef", True, False),
                    ("ret", 4, "FunctionDef.RetEntry", True, False)],
    "FunctionDef.RetEntry": [("key", 1, "string", False, False), ("value", 2, "string", False, False)],
    "OpDef": [("name", 1, "string", False, False), ("input_arg", 2, "OpDef.ArgDef", True, False),
              ("output_arg", 3, "OpDef.ArgDef", True, False)],
    "OpDef.ArgDef": [("name", 1, "string", False, False), ("type", 3, "enum", False, False)],
}
_ONEOF_VALUE = {"list", "s", "i", "f", "b", "type", "shape", "tensor", "placeholder", "func"}  # AttrValue.value


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name="tidlc/tf_graph.proto", package=PACKAGE, syntax="proto3")
    top: dict[str, descriptor_pb2.DescriptorProto] = {}
    # outer messages first, so nested ones find their parent
    for full, fields in sorted(_MESSAGES.items(), key=lambda item: "." in item[0]):
        outer, _, inner = full.partition(".")
        if inner:
            msg = top[outer].nested_type.add(name=inner)
            if inner.endswith("Entry"):  # map<string, ...>
                msg.options.map_entry = True
        else:
            msg = top[outer] = fdp.message_type.add(name=outer)
        if full == "AttrValue":
            msg.oneof_decl.add(name="value")
        for name, number, kind, repeated, packed in fields:
            field = msg.field.add(name=name, number=number, label=_REPEATED if repeated else _OPTIONAL)
            if kind in _SCALARS:
                field.type = _SCALARS[kind]
            else:
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{kind}"
            if packed:
                field.options.packed = True
            if full == "AttrValue" and name in _ONEOF_VALUE:
                field.oneof_index = 0
    return fdp


@functools.cache
def message_class(name: str):
    """The generated class of one of the messages above (``"GraphDef"``, ``"TensorProto"``, ...)."""
    pool = _pool()
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))


@functools.cache
def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_descriptor())
    return pool


def parse_graphdef(data: bytes, path: str = ""):
    """Bytes of a serialized GraphDef -> a GraphDef message (a TidlcError if they are not one)."""
    graph = message_class("GraphDef")()
    try:
        graph.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's parser fails in assorted ways on garbage
        raise TidlcError(f"not a TensorFlow GraphDef (protobuf decode failed: {_one_line(exc)})", path,
                         hint="tidlc reads frozen graphs (.pb from convert_variables_to_constants_v2 or "
                              "freeze_graph); SavedModel folders must be frozen first", code="corrupt") from None
    return graph


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:120]


# ----------------------------------------------------------------------------- values
_LITTLE_ENDIAN = sys.byteorder == "little"


def shape_of(shape_proto) -> tuple[int, ...] | None:
    """A TensorShapeProto as a tuple (-1 for unknown dims), or None for an unknown rank."""
    if shape_proto.unknown_rank:
        return None
    return tuple(int(d.size) for d in shape_proto.dim)


def dtype_name(enum: int) -> str:
    return DATA_TYPE_NAMES.get(enum, f"type {enum}")


def numpy_type(enum: int, what: str, loc) -> Any:
    known = DATA_TYPES.get(enum)
    if known is None:
        raise TidlcError(f"{what}: element type {dtype_name(enum)} is not supported", loc,
                         hint="tidlc holds float32/16/64, (u)int8/16/32/64 and bool tensors")
    return known[0]


def tensor_to_array(tensor, what: str = "tensor", loc=None) -> np.ndarray:
    """A TensorProto as numpy: ``tensor_content`` is viewed, not copied; a short typed value list
    fills the shape with its last value (TensorFlow's rule for splat constants). The declared
    shape is checked against the limits before anything is allocated."""
    dtype = numpy_type(tensor.dtype, what, loc)
    dims = shape_of(tensor.tensor_shape)
    if dims is None:
        raise TidlcError(f"{what}: constant of unknown rank", loc, code="model")
    if any(d < 0 for d in dims):
        raise TidlcError(f"{what}: constant with unknown dims {dims}", loc, code="model")
    size = limits.check_shape(dims, np.dtype(dtype).itemsize, what, loc)
    if tensor.tensor_content:
        if len(tensor.tensor_content) != size * np.dtype(dtype).itemsize:
            raise TidlcError(f"{what}: tensor_content holds {len(tensor.tensor_content)} bytes, shape {dims} "
                             f"of {np.dtype(dtype).name} needs {size * np.dtype(dtype).itemsize}", loc,
                             code="corrupt")
        arr = np.frombuffer(tensor.tensor_content, dtype=np.dtype(dtype).newbyteorder("<"))
        if not _LITTLE_ENDIAN:  # pragma: no cover - big-endian hosts
            arr = arr.astype(np.dtype(dtype).newbyteorder("="))
        return arr.reshape(dims)
    field = DATA_TYPES[tensor.dtype][1]
    values = getattr(tensor, field)
    if len(values) > size:
        raise TidlcError(f"{what}: {len(values)} values for shape {dims}", loc, code="corrupt")
    try:
        if tensor.dtype == 19:  # float16 bits stored in int32 slots
            arr = np.asarray(values, dtype=np.uint16).view(np.float16)
        else:
            arr = np.asarray(values, dtype=dtype)
    except OverflowError:  # an int_val that does not fit an 8/16-bit type
        raise TidlcError(f"{what}: a value in {field} is out of range for {np.dtype(dtype).name}", loc,
                         code="corrupt") from None
    if arr.size == size:
        return arr.reshape(dims)
    if arr.size <= 1:  # a splat (or no value: zeros) stays a zero-stride view: it costs no memory
        return np.broadcast_to(arr.reshape(-1)[-1] if arr.size else np.zeros((), dtype), dims)
    # fewer values than elements: the last one repeats
    out = np.empty(size, dtype)
    out[:arr.size] = arr
    out[arr.size:] = arr[-1]
    return out.reshape(dims)


def decode_attr(value, what: str = "attribute", loc=None) -> Any:
    """An AttrValue as a Python value: ints, floats, bools, str, DataType ints, shapes (tuples),
    tensors (arrays), lists of those."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "list":
        lst = value.list
        for field in ("s", "i", "f", "b", "type"):
            items = getattr(lst, field)
            if len(items):
                return [v.decode("utf-8", "replace") for v in items] if field == "s" else list(items)
        if len(lst.shape):
            return [shape_of(s) for s in lst.shape]
        if len(lst.tensor):
            return [tensor_to_array(t, what, loc) for t in lst.tensor]
        return []
    if kind == "s":
        return value.s.decode("utf-8", "replace")
    if kind == "shape":
        return shape_of(value.shape)
    if kind == "tensor":
        return tensor_to_array(value.tensor, what, loc)
    return getattr(value, kind)


__all__ = ["DATA_TYPES", "decode_attr", "dtype_name", "message_class", "numpy_type", "parse_graphdef",
           "shape_of", "tensor_to_array"]
