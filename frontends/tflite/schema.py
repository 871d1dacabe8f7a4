"""The parts of TFLite's ``schema.fbs`` tidlc reads, as data: enums, field slots, option tables.

``read_model(buf)`` turns a ``.tflite`` file into plain Python objects
(:class:`Model`, :class:`Tensor`, :class:`Operator`) with every builtin
operator's options decoded into a dict. Slots and enum values are those of
TFLite's published schema; nothing here depends on the ``tflite`` or
``tensorflow`` packages.
"""
from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from tidlc import limits
from tidlc.diagnostics import Loc
from tidlc.ir.types import DTYPES

from . import flexbuf
from .flatbuf import FlatBufferError, Table, file_identifier

IDENTIFIER = b"TFL3"

# BuiltinOperator enum (the ops tidlc converts or names in messages; others print as their number)
BUILTIN_OPS = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
    5: "DEPTH_TO_SPACE", 6: "DEQUANTIZE", 7: "EMBEDDING_LOOKUP", 8: "FLOOR", 9: "FULLY_CONNECTED",
    10: "HASHTABLE_LOOKUP", 11: "L2_NORMALIZATION", 12: "L2_POOL_2D", 13: "LOCAL_RESPONSE_NORMALIZATION",
    14: "LOGISTIC", 15: "LSH_PROJECTION", 16: "LSTM", 17: "MAX_POOL_2D", 18: "MUL", 19: "RELU",
    20: "RELU_N1_TO_1", 21: "RELU6", 22: "RESHAPE", 23: "RESIZE_BILINEAR", 24: "RNN", 25: "SOFTMAX",
    26: "SPACE_TO_DEPTH", 27: "SVDF", 28: "TANH", 29: "CONCAT_EMBEDDINGS", 30: "SKIP_GRAM", 31: "CALL",
    32: "CUSTOM", 33: "EMBEDDING_LOOKUP_SPARSE", 34: "PAD", 35: "UNIDIRECTIONAL_SEQUENCE_RNN",
    36: "GATHER", 37: "BATCH_TO_SPACE_ND", 38: "SPACE_TO_BATCH_ND", 39: "TRANSPOSE", 40: "MEAN",
    41: "SUB", 42: "DIV", 43: "SQUEEZE", 44: "UNIDIRECTIONAL_SEQUENCE_LSTM", 45: "STRIDED_SLICE",
    46: "BIDIRECTIONAL_SEQUENCE_RNN", 47: "EXP", 48: "TOPK_V2", 49: "SPLIT", 50: "LOG_SOFTMAX",
    51: "DELEGATE", 52: "BIDIRECTIONAL_SEQUENCE_LSTM", 53: "CAST", 54: "PRELU", 55: "MAXIMUM",
    56: "ARG_MAX", 57: "MINIMUM", 58: "LESS", 59: "NEG", 60: "PADV2", 61: "GREATER", 62: "GREATER_EQUAL",
    63: "LESS_EQUAL", 64: "SELECT", 65: "SLICE", 66: "SIN", 67: "TRANSPOSE_CONV", 68: "SPARSE_TO_DENSE",
    69: "TILE", 70: "EXPAND_DIMS", 71: "EQUAL", 72: "NOT_EQUAL", 73: "LOG", 74: "SUM", 75: "SQRT",
    76: "RSQRT", 77: "SHAPE", 78: "POW", 79: "ARG_MIN", 80: "FAKE_QUANT", 81: "REDUCE_PROD",
    82: "REDUCE_MAX", 83: "PACK", 84: "LOGICAL_OR", 85: "ONE_HOT", 86: "LOGICAL_AND", 87: "LOGICAL_NOT",
    88: "UNPACK", 89: "REDUCE_MIN", 90: "FLOOR_DIV", 91: "REDUCE_ANY", 92: "SQUARE", 93: "ZEROS_LIKE",
    94: "FILL", 95: "FLOOR_MOD", 96: "RANGE", 97: "RESIZE_NEAREST_NEIGHBOR", 98: "LEAKY_RELU",
    99: "SQUARED_DIFFERENCE", 100: "MIRROR_PAD", 101: "ABS", 102: "SPLIT_V", 103: "UNIQUE", 104: "CEIL",
    105: "REVERSE_V2", 106: "ADD_N", 107: "GATHER_ND", 108: "COS", 109: "WHERE", 110: "RANK", 111: "ELU",
    112: "REVERSE_SEQUENCE", 113: "MATRIX_DIAG", 114: "QUANTIZE", 115: "MATRIX_SET_DIAG", 116: "ROUND",
    117: "HARD_SWISH", 118: "IF", 119: "WHILE", 120: "NON_MAX_SUPPRESSION_V4",
    121: "NON_MAX_SUPPRESSION_V5", 122: "SCATTER_ND", 123: "SELECT_V2", 124: "DENSIFY",
    125: "SEGMENT_SUM", 126: "BATCH_MATMUL", 128: "CUMSUM", 129: "CALL_ONCE", 130: "BROADCAST_TO",
    131: "RFFT2D", 132: "CONV_3D", 150: "GELU",
}
CUSTOM = 32
# the largest op code that still fits the deprecated int8 field; larger ones live in builtin_code
PLACEHOLDER_FOR_GREATER_OP_CODES = 127

# TensorType enum -> IR element type (None: not representable in tidlc)
TENSOR_TYPES: dict[int, tuple[str, str | None]] = {
    0: ("FLOAT32", "f32"), 1: ("FLOAT16", "f16"), 2: ("INT32", "i32"), 3: ("UINT8", "u8"),
    4: ("INT64", "i64"), 5: ("STRING", None), 6: ("BOOL", "bool"), 7: ("INT16", "i16"),
    8: ("COMPLEX64", None), 9: ("INT8", "i8"), 10: ("FLOAT64", "f64"), 11: ("COMPLEX128", None),
    12: ("UINT64", None), 13: ("RESOURCE", None), 14: ("VARIANT", None), 15: ("UINT32", "u32"),
    16: ("UINT16", "u16"), 17: ("INT4", None), 18: ("BFLOAT16", None),
}

ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
PADDINGS = {0: "SAME", 1: "VALID"}
MIRROR_PAD_MODES = {0: "REFLECT", 1: "SYMMETRIC"}

# Options tables of the builtin ops tidlc reads: op -> {option: (slot, struct format, default)}.
# Formats: b/B int8/uint8 (enums), i int32, f float32, ? bool, "[i]" a vector of int32.
_POOL = {"padding": (0, "b", 0), "stride_w": (1, "i", 0), "stride_h": (2, "i", 0),
         "filter_width": (3, "i", 0), "filter_height": (4, "i", 0), "fused_activation_function": (5, "b", 0)}
_ACT_ONLY = {"fused_activation_function": (0, "b", 0)}
_REDUCER = {"keep_dims": (0, "?", False)}
OPTIONS: dict[str, dict[str, tuple[int, str, Any]]] = {
    "CONV_2D": {"padding": (0, "b", 0), "stride_w": (1, "i", 0), "stride_h": (2, "i", 0),
                "fused_activation_function": (3, "b", 0), "dilation_w_factor": (4, "i", 1),
                "dilation_h_factor": (5, "i", 1)},
    "DEPTHWISE_CONV_2D": {"padding": (0, "b", 0), "stride_w": (1, "i", 0), "stride_h": (2, "i", 0),
                          "depth_multiplier": (3, "i", 0), "fused_activation_function": (4, "b", 0),
                          "dilation_w_factor": (5, "i", 1), "dilation_h_factor": (6, "i", 1)},
    "TRANSPOSE_CONV": {"padding": (0, "b", 0), "stride_w": (1, "i", 0), "stride_h": (2, "i", 0),
                       "fused_activation_function": (3, "b", 0)},
    "AVERAGE_POOL_2D": _POOL, "MAX_POOL_2D": _POOL, "L2_POOL_2D": _POOL,
    "FULLY_CONNECTED": {"fused_activation_function": (0, "b", 0), "weights_format": (1, "b", 0),
                        "keep_num_dims": (2, "?", False)},
    "ADD": _ACT_ONLY, "SUB": _ACT_ONLY, "MUL": _ACT_ONLY, "DIV": _ACT_ONLY,
    "CONCATENATION": {"axis": (0, "i", 0), "fused_activation_function": (1, "b", 0)},
    "RESHAPE": {"new_shape": (0, "[i]", None)},
    "SOFTMAX": {"beta": (0, "f", 0.0)},
    "RESIZE_BILINEAR": {"align_corners": (2, "?", False), "half_pixel_centers": (3, "?", False)},
    "RESIZE_NEAREST_NEIGHBOR": {"align_corners": (0, "?", False), "half_pixel_centers": (1, "?", False)},
    "LEAKY_RELU": {"alpha": (0, "f", 0.0)},
    "STRIDED_SLICE": {"begin_mask": (0, "i", 0), "end_mask": (1, "i", 0), "ellipsis_mask": (2, "i", 0),
                      "new_axis_mask": (3, "i", 0), "shrink_axis_mask": (4, "i", 0), "offset": (5, "?", False)},
    "SPLIT": {"num_splits": (0, "i", 0)}, "SPLIT_V": {"num_splits": (0, "i", 0)},
    "MEAN": _REDUCER, "SUM": _REDUCER, "REDUCE_MAX": _REDUCER, "REDUCE_MIN": _REDUCER, "REDUCE_PROD": _REDUCER,
    "DEPTH_TO_SPACE": {"block_size": (0, "i", 0)},
    "SQUEEZE": {"squeeze_dims": (0, "[i]", None)},
    "ARG_MAX": {"output_type": (0, "b", 0)},
    "MIRROR_PAD": {"mode": (0, "b", 0)},
    "PACK": {"values_count": (0, "i", 0), "axis": (1, "i", 0)},
    "UNPACK": {"num": (0, "i", 0), "axis": (1, "i", 0)},
    "GATHER": {"axis": (0, "i", 0), "batch_dims": (1, "i", 0)},
    "SHAPE": {"out_type": (0, "b", 0)},
    "CAST": {"in_data_type": (0, "b", 0), "out_data_type": (1, "b", 0)},
    "GELU": {"approximate": (0, "?", False)},
    "BATCH_MATMUL": {"adj_x": (0, "?", False), "adj_y": (1, "?", False)},
}


@attrs.define
class Quantization:
    """A tensor's affine quantization: ``real = scale * (q - zero_point)`` (TFLite's convention)."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1


@attrs.define
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    signature: tuple[int, ...] | None  # shape_signature: -1 for dims unknown when converting
    type_code: int
    buffer: int
    quant: Quantization | None

    @property
    def type_name(self) -> str:
        return TENSOR_TYPES.get(self.type_code, (f"type {self.type_code}", None))[0]

    @property
    def dtype(self) -> str | None:
        return TENSOR_TYPES.get(self.type_code, ("", None))[1]


@attrs.define
class Operator:
    index: int
    op_type: str  # builtin name, e.g. "CONV_2D"; for custom ops "CUSTOM"
    custom_code: str
    version: int
    inputs: list[int]  # tensor indices, -1 for an omitted optional input
    outputs: list[int]
    options: dict[str, Any]


@attrs.define
class Model:
    version: int
    description: str
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    subgraph_name: str
    subgraph_count: int
    buf: Any = attrs.field(repr=False)
    buffers: list[tuple[int, int]] = attrs.field(repr=False)  # (byte offset, size), checked

    def buffer_data(self, tensor: Tensor) -> memoryview | None:
        """The raw bytes of a constant tensor (None for activations)."""
        if tensor.buffer <= 0 or tensor.buffer >= len(self.buffers):
            return None
        start, size = self.buffers[tensor.buffer]
        return memoryview(self.buf)[start:start + size] if size else None


def op_name(code: int) -> str:
    return BUILTIN_OPS.get(code, f"BUILTIN_{code}")


def _options(op_type: str, table: Table | None) -> dict[str, Any]:
    spec = OPTIONS.get(op_type, {})
    out: dict[str, Any] = {}
    for key, (slot, fmt, default) in spec.items():
        if table is None:
            out[key] = default
        elif fmt == "[i]":
            arr = table.numbers(slot, np.int32)
            out[key] = None if arr is None else tuple(int(v) for v in arr)
        else:
            out[key] = table.scalar(slot, fmt, default)
    return out


def _quantization(table: Table | None, name: str) -> Quantization | None:
    if table is None:
        return None
    scale = table.numbers(2, np.float32)
    if scale is None or scale.size == 0:
        return None  # min/max only (a float tensor with a recorded range)
    zero = table.numbers(3, np.int64)
    if zero is None or zero.size == 0:
        zero = np.zeros(scale.size, np.int64)
    elif zero.size not in (1, scale.size):
        raise FlatBufferError(f"tensor '{name}': {zero.size} zero points for {scale.size} scales",
                              table.field_offset(3))
    # (the values are checked where they are used: quant_info; float tensors may carry anything)
    return Quantization(np.array(scale), np.array(zero), table.scalar(6, "i", 0))


def _op_code(code: Table) -> tuple[int, str, int]:
    deprecated = code.scalar(0, "b", 0)
    builtin = code.scalar(3, "i", 0)
    # writers fill one field or both: the larger value is the real code
    return max(deprecated, builtin), code.string(1), code.scalar(2, "i", 1)


def _indices(table: Table, slot: int, count: int, what: str, optional: bool) -> list[int]:
    """A vector of tensor indices, each in ``[0, count)`` (or -1 for an omitted ``optional`` one)."""
    arr = table.numbers(slot, np.int32)
    if arr is None:
        return []
    low = -1 if optional else 0
    bad = np.flatnonzero((arr < low) | (arr >= count))
    if bad.size:
        i = int(bad[0])
        raise FlatBufferError(f"{what} {i} is tensor {int(arr[i])}, but the subgraph has {count} tensors",
                              table.vector_offset(slot, i, 4))
    return arr.tolist()


def _tensor(t: Table, index: int, n_buffers: int) -> Tensor:
    name = t.string(3)
    label = f"tensor #{index} '{name}'"
    shape = t.numbers(0, np.int32)
    shape = () if shape is None else tuple(shape.tolist())
    signature = t.numbers(7, np.int32)
    type_code, buffer = t.scalar(1, "b", 0), t.scalar(2, "I", 0)
    dtype = TENSOR_TYPES.get(type_code, ("", None))[1]
    itemsize = np.dtype(DTYPES[dtype]).itemsize if dtype else 1
    limits.check_shape(shape, itemsize, label, Loc(name, offset=t.field_offset(0)))
    if any(d < -1 for d in shape):  # (-1: a dimension unknown when converting)
        raise FlatBufferError(f"{label} has shape {shape}", t.field_offset(0))
    if buffer >= max(n_buffers, 1):
        raise FlatBufferError(f"{label} uses buffer {buffer}, but the model has {n_buffers} buffers",
                              t.field_offset(2))
    return Tensor(index, name, shape, None if signature is None else tuple(signature.tolist()),
                  type_code, buffer, _quantization(t.table(4), name))


# Custom ops tidlc converts, with how their ``custom_options`` bytes read: code -> (options as little-endian
# int32 fields, in order). MediaPipe's Convolution2DTransposeBias (its selfie and hair segmentation
# models) keeps a TfLiteTransposeConvParams struct there: padding (TfLitePadding: 1 SAME, 2 VALID),
# stride width, stride height.
CUSTOM_OPTIONS: dict[str, tuple[str, ...]] = {
    "Convolution2DTransposeBias": ("padding", "stride_w", "stride_h"),
}
# Custom ops tidlc converts whose options are a FlexBuffer map (flexbuf.py): MediaPipe's attention
# crop of its face mesh (face_landmark_with_attention.tflite)
FLEX_OPTIONS = frozenset({"Landmarks2TransformMatrix", "TransformTensorBilinear", "TransformLandmarks"})


def converted_custom(code: str) -> bool:
    """Whether tidlc has a converter for the custom op ``code`` (it then goes by its custom code)."""
    return code in CUSTOM_OPTIONS or code in FLEX_OPTIONS


def _custom_options(code: str, op: Table, index: int) -> dict[str, Any]:
    if code in FLEX_OPTIONS:
        raw = op.numbers(5, np.uint8)
        if raw is None or raw.size == 0:
            return {}
        try:
            options = flexbuf.loads(raw.tobytes())
        except FlatBufferError as exc:
            raise FlatBufferError(f"operator #{index} (CUSTOM '{code}'): its custom options are not a "
                                  f"readable FlexBuffer: {exc}", op.field_offset(5)) from None
        if not isinstance(options, dict):
            raise FlatBufferError(f"operator #{index} (CUSTOM '{code}'): its custom options hold a "
                                  f"{type(options).__name__}, expected a map", op.field_offset(5))
        return options
    fields = CUSTOM_OPTIONS.get(code)
    if fields is None:
        return {}
    raw = op.numbers(5, np.uint8)  # Operator.custom_options: [ubyte]
    if raw is None or raw.size < 4 * len(fields):
        raise FlatBufferError(f"operator #{index} (CUSTOM '{code}') has {0 if raw is None else raw.size} bytes of "
                              f"custom options, expected {4 * len(fields)} ({', '.join(fields)})", op.field_offset(5))
    values = np.frombuffer(raw.tobytes()[:4 * len(fields)], "<i4")
    return {name: int(v) for name, v in zip(fields, values)}


def _operator(op: Table, index: int, codes: list, n_tensors: int) -> Operator:
    idx = op.scalar(0, "I", 0)
    if idx >= len(codes):
        raise FlatBufferError(f"operator #{index} uses op code {idx}, but the model has {len(codes)}",
                              op.field_offset(0))
    code, custom, version = codes[idx]
    op_type = op_name(code)
    ins = _indices(op, 1, n_tensors, f"operator #{index} ({op_type}) input", optional=True)
    outs = _indices(op, 2, n_tensors, f"operator #{index} ({op_type}) output", optional=True)
    options = _custom_options(custom, op, index) if op_type == "CUSTOM" else _options(op_type, op.table(4))
    return Operator(index, op_type, custom, version, ins, outs, options)


def _buffer(table: Table, index: int, size_of_file: int) -> tuple[int, int]:
    """(byte offset, size) of a buffer's data, inside the file."""
    offset, size = table.scalar(1, "Q", 0), table.scalar(2, "Q", 0)
    if offset > 1:  # models over 2 GB keep buffers after the flatbuffer
        if offset + size > size_of_file:
            raise FlatBufferError(f"buffer {index}: {size} bytes at byte {offset} lie outside the file "
                                  f"({size_of_file} bytes)", table.field_offset(1))
        return offset, size
    start, n = table._vector(0)
    return start, n


def _check_count(table: Table, slot: int, what: str) -> int:
    """The length of a vector of tables, checked against the ``ops`` limit before it is read (a
    vector may repeat one table's offset, so the file size alone does not bound the work)."""
    n = table.vector_length(slot, 4)
    limits.check("ops", n, f"TFLite {what}", Loc(offset=table.field_offset(slot)))
    return n


def read_model(buf) -> Model:
    """Decode a ``.tflite`` file's bytes (the first subgraph; the model's ``main``).

    Raises :class:`FlatBufferError` (with the byte offset) for a malformed file or indices
    that point nowhere, and limit errors (with the byte offset, no file) for huge counts and
    shapes: every index the importer follows later is checked here.
    """
    root = Table.root(buf)
    _check_count(root, 1, "operator codes")
    codes = [_op_code(code) for code in root.tables(1)]
    _check_count(root, 2, "subgraphs")
    subgraphs = root.tables(2)
    if not subgraphs:
        raise FlatBufferError("the model has no subgraph", root.field_offset(2))
    sg = subgraphs[0]
    n_buffers = _check_count(root, 4, "buffers")
    _check_count(sg, 0, "tensors")
    _check_count(sg, 3, "operators")
    tensors = [_tensor(t, i, n_buffers) for i, t in enumerate(sg.tables(0))]
    operators = [_operator(op, i, codes, len(tensors)) for i, op in enumerate(sg.tables(3))]
    return Model(root.scalar(0, "I", 0), root.string(3), tensors, operators,
                 _indices(sg, 1, len(tensors), "subgraph input", optional=False),
                 _indices(sg, 2, len(tensors), "subgraph output", optional=False),
                 sg.string(4), len(subgraphs), buf,
                 [_buffer(b, i, len(buf)) for i, b in enumerate(root.tables(4))])


def is_tflite(head: bytes) -> bool:
    return file_identifier(head) == IDENTIFIER


__all__ = [
    "ACTIVATIONS",
    "BUILTIN_OPS",
    "TENSOR_TYPES",
    "Model",
    "Operator",
    "Quantization",
    "Tensor",
    "is_tflite",
    "op_name",
    "read_model",
]
