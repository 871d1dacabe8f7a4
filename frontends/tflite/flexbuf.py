"""Just enough of the FlexBuffers format to read a TFLite custom op's options, without a dependency.

MediaPipe's custom ops (``Landmarks2TransformMatrix``, ``TransformTensorBilinear``, ...) keep their
options as a FlexBuffer: a schema-less tree whose root is at the *end* of the bytes. The last byte
is the root's byte width, the one before it the root's *packed type* (``type << 2 | bit width``),
and before those the root value itself, ``width`` bytes wide.

A value is either inline (null, int, uint, float, bool: stored in its parent's slot, at the
parent's width) or reached through an unsigned offset stored in the slot, *backwards* from the
slot (strings, keys, vectors, maps, blobs, and the indirect scalars). What the offset reaches:

* a key: a NUL-terminated UTF-8 string;
* a string or blob: its length (one width before), then the bytes;
* an untyped vector: its length (one width before), the elements (``width`` bytes each), then
  one packed-type byte per element;
* a typed vector (of ints, uints, floats, keys, bools): its length, then the elements, all of
  the element type; the fixed ones (int2/uint2/float2, ...3, ...4) store no length;
* a map: an untyped vector of values, sorted by key, with three more fields before its length:
  the offset to its keys (a typed vector of keys) and the keys' byte width.

:func:`loads` returns the tree as Python values (dict, list, int, float, str, bytes, bool, None);
every position is checked against the bytes (a :class:`FlatBufferError` says where).
"""
from __future__ import annotations

import struct

from .flatbuf import FlatBufferError

NULL, INT, UINT, FLOAT, KEY, STRING, INDIRECT_INT, INDIRECT_UINT, INDIRECT_FLOAT, MAP, VECTOR = range(11)
VECTOR_INT, VECTOR_UINT, VECTOR_FLOAT, VECTOR_KEY, VECTOR_STRING = range(11, 16)
FIXED_VECTORS = range(16, 25)  # int2, uint2, float2, int3, ..., float4
BLOB, BOOL, VECTOR_BOOL = 25, 26, 36
_DEPTH = 64  # nesting limit: a malicious buffer cannot recurse without end

_INTS = {1: "<b", 2: "<h", 4: "<i", 8: "<q"}
_UINTS = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}
_FLOATS = {4: "<f", 8: "<d"}


class _Reader:
    def __init__(self, buf: bytes):
        self.buf = bytes(buf)

    def _read(self, fmts: dict, pos: int, width: int, what: str):
        fmt = fmts.get(width)
        if fmt is None:
            raise FlatBufferError(f"FlexBuffer {what} at byte {pos} has width {width}", pos)
        if pos < 0 or pos + width > len(self.buf):
            raise FlatBufferError(f"FlexBuffer {what} at byte {pos} lies outside its {len(self.buf)} bytes", pos)
        return struct.unpack_from(fmt, self.buf, pos)[0]

    def uint(self, pos: int, width: int, what: str = "offset") -> int:
        return self._read(_UINTS, pos, width, what)

    def target(self, pos: int, width: int) -> int:
        """Where the offset stored at ``pos`` leads (offsets count backwards from their slot)."""
        to = pos - self.uint(pos, width)
        if not 0 <= to <= len(self.buf):
            raise FlatBufferError(f"FlexBuffer offset at byte {pos} leads outside the bytes", pos)
        return to

    def scalar(self, kind: int, pos: int, width: int):
        if kind in (INT, INDIRECT_INT):
            return self._read(_INTS, pos, width, "int")
        if kind in (UINT, INDIRECT_UINT):
            return self.uint(pos, width, "uint")
        if kind in (FLOAT, INDIRECT_FLOAT):
            return self._read(_FLOATS, pos, width, "float")
        if kind == BOOL:
            return bool(self.uint(pos, width, "bool"))
        if kind == KEY:
            end = self.buf.find(b"\0", pos)
            if end < 0:
                raise FlatBufferError(f"FlexBuffer key at byte {pos} has no terminating NUL", pos)
            return self.buf[pos:end].decode("utf-8", "replace")
        raise FlatBufferError(f"FlexBuffer value of type {kind} at byte {pos} is not supported", pos)

    def value(self, pos: int, parent_width: int, packed: int, depth: int = 0):
        """The value whose slot is at ``pos`` (``parent_width`` bytes), of packed type ``packed``."""
        if depth > _DEPTH:
            raise FlatBufferError(f"FlexBuffer nested deeper than {_DEPTH} at byte {pos}", pos)
        kind, width = packed >> 2, 1 << (packed & 3)
        if kind == NULL:
            return None
        if kind in (INT, UINT, FLOAT, BOOL):
            return self.scalar(kind, pos, parent_width)
        at = self.target(pos, parent_width)
        if kind in (INDIRECT_INT, INDIRECT_UINT, INDIRECT_FLOAT, KEY):
            return self.scalar(kind, at, width)
        if kind in (STRING, BLOB):
            n = self.uint(at - width, width, "length")
            if at + n > len(self.buf):
                raise FlatBufferError(f"FlexBuffer string at byte {at} runs past the end", at)
            data = self.buf[at:at + n]
            return data.decode("utf-8", "replace") if kind == STRING else data
        if kind in (VECTOR, MAP):
            n = self._length(at, width)
            types = at + n * width
            if types + n > len(self.buf):
                raise FlatBufferError(f"FlexBuffer vector at byte {at} runs past the end", at)
            values = [self.value(at + i * width, width, self.buf[types + i], depth + 1) for i in range(n)]
            if kind == VECTOR:
                return values
            keys_at = self.target(at - 3 * width, width)
            keys_width = self.uint(at - 2 * width, width, "key width")
            keys = self._typed(KEY, keys_at, keys_width, self._length(keys_at, keys_width))
            if len(keys) != n:
                raise FlatBufferError(f"FlexBuffer map at byte {at} has {len(keys)} keys for {n} values", at)
            return dict(zip(keys, values))
        if VECTOR_INT <= kind <= VECTOR_STRING or kind == VECTOR_BOOL:
            element = BOOL if kind == VECTOR_BOOL else KEY if kind == VECTOR_STRING else kind - VECTOR_INT + INT
            return self._typed(element, at, width, self._length(at, width))
        if kind in FIXED_VECTORS:
            size = 2 + (kind - FIXED_VECTORS.start) // 3
            return self._typed((kind - FIXED_VECTORS.start) % 3 + INT, at, width, size)
        raise FlatBufferError(f"FlexBuffer value of type {kind} at byte {pos} is not supported", pos)

    def _length(self, at: int, width: int) -> int:
        n = self.uint(at - width, width, "length")
        if at + n * width > len(self.buf):
            raise FlatBufferError(f"FlexBuffer vector at byte {at} of {n} elements runs past the end", at)
        return n

    def _typed(self, element: int, at: int, width: int, n: int) -> list:
        if element == KEY:
            return [self.scalar(KEY, self.target(at + i * width, width), 1) for i in range(n)]
        return [self.scalar(element, at + i * width, width) for i in range(n)]


def loads(buf: bytes):
    """The value a FlexBuffer holds (its root), as Python values."""
    if len(buf) < 3:
        raise FlatBufferError(f"a FlexBuffer needs at least 3 bytes, got {len(buf)}", 0)
    reader = _Reader(buf)
    width = reader.buf[-1]
    packed = reader.buf[-2]
    return reader.value(len(reader.buf) - 2 - width, width, packed)
