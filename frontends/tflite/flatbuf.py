"""Just enough of the FlatBuffers wire format to read a ``.tflite`` file, without a dependency.

A FlatBuffer is a tree of *tables*. A table starts with a signed 32-bit
offset back to its *vtable*: ``uint16`` vtable size, ``uint16`` table size,
then one ``uint16`` per field giving the field's offset inside the table (0:
absent, the schema default applies). Scalars are stored inline; tables,
vectors and strings are reached through an unsigned 32-bit offset relative to
where the offset itself is stored; a vector is a ``uint32`` length followed by
its elements. All little-endian. A union field takes two slots: its type
(``uint8``) and then its value (a table offset).

:class:`Table` reads fields by slot number (the field's position in the
schema, counting a union as two); numeric vectors come back as numpy views of
the file's bytes, so weights are never copied.
"""
from __future__ import annotations

import struct

import numpy as np

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_SCALARS = {"b": struct.Struct("<b"), "B": struct.Struct("<B"), "h": struct.Struct("<h"),
            "H": _U16, "i": _I32, "I": _U32, "q": struct.Struct("<q"), "Q": struct.Struct("<Q"),
            "f": struct.Struct("<f"), "d": struct.Struct("<d"), "?": struct.Struct("<?")}


class FlatBufferError(ValueError):
    """The bytes are not a well-formed FlatBuffer (an offset points outside the file)."""


class Table:
    """One table of a FlatBuffer: ``buf`` (bytes or memoryview) and the table's position."""

    __slots__ = ("_vsize", "_vtable", "buf", "pos")

    def __init__(self, buf, pos: int):
        self.buf = buf
        self.pos = pos
        try:
            self._vtable = pos - _I32.unpack_from(buf, pos)[0]
            self._vsize = _U16.unpack_from(buf, self._vtable)[0]
        except struct.error:
            raise FlatBufferError(f"table at {pos} lies outside the file") from None

    @classmethod
    def root(cls, buf) -> Table:
        if len(buf) < 8:
            raise FlatBufferError("file too short for a FlatBuffer")
        return cls(buf, _U32.unpack_from(buf, 0)[0])

    def _field(self, slot: int) -> int:
        """Absolute position of field ``slot``, or 0 if the field is absent."""
        entry = 4 + 2 * slot
        if entry >= self._vsize:
            return 0
        off = _U16.unpack_from(self.buf, self._vtable + entry)[0]
        return self.pos + off if off else 0

    def has(self, slot: int) -> bool:
        return self._field(slot) != 0

    def scalar(self, slot: int, fmt: str, default=0):
        pos = self._field(slot)
        if not pos:
            return default
        try:
            return _SCALARS[fmt].unpack_from(self.buf, pos)[0]
        except struct.error:
            raise FlatBufferError(f"field {slot} at {pos} lies outside the file") from None

    def _indirect(self, pos: int) -> int:
        try:
            return pos + _U32.unpack_from(self.buf, pos)[0]
        except struct.error:
            raise FlatBufferError(f"offset at {pos} lies outside the file") from None

    def table(self, slot: int) -> Table | None:
        pos = self._field(slot)
        return Table(self.buf, self._indirect(pos)) if pos else None

    def _vector(self, slot: int) -> tuple[int, int]:
        """(position of the first element, length), or (0, 0) when absent."""
        pos = self._field(slot)
        if not pos:
            return 0, 0
        start = self._indirect(pos)
        try:
            n = _U32.unpack_from(self.buf, start)[0]
        except struct.error:
            raise FlatBufferError(f"vector at {start} lies outside the file") from None
        return start + 4, n

    def vector_length(self, slot: int) -> int:
        return self._vector(slot)[1]

    def string(self, slot: int, default: str = "") -> str:
        start, n = self._vector(slot)
        if not start:
            return default
        return bytes(self.buf[start:start + n]).decode("utf-8", "replace")

    def numbers(self, slot: int, dtype) -> np.ndarray | None:
        """A vector of scalars as a read-only numpy view (None when absent)."""
        start, n = self._vector(slot)
        if not start:
            return None
        dt = np.dtype(dtype).newbyteorder("<")
        if start + n * dt.itemsize > len(self.buf):
            raise FlatBufferError(f"vector of {n} x {dt} at {start} runs past the end of the file")
        return np.frombuffer(self.buf, dtype=dt, count=n, offset=start)

    def tables(self, slot: int) -> list[Table]:
        """A vector of tables."""
        start, n = self._vector(slot)
        return [Table(self.buf, self._indirect(start + 4 * i)) for i in range(n)]

    def strings(self, slot: int) -> list[str]:
        start, n = self._vector(slot)
        out = []
        for i in range(n):
            s = self._indirect(start + 4 * i)
            length = _U32.unpack_from(self.buf, s)[0]
            out.append(bytes(self.buf[s + 4:s + 4 + length]).decode("utf-8", "replace"))
        return out


def file_identifier(buf) -> bytes:
    """The 4-byte identifier after the root offset (``b"TFL3"`` for TFLite)."""
    return bytes(buf[4:8]) if len(buf) >= 8 else b""
