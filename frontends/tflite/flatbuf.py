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

from tidlc import limits
from tidlc.diagnostics import Loc

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_SCALARS = {"b": struct.Struct("<b"), "B": struct.Struct("<B"), "h": struct.Struct("<h"),
            "H": _U16, "i": _I32, "I": _U32, "q": struct.Struct("<q"), "Q": struct.Struct("<Q"),
            "f": struct.Struct("<f"), "d": struct.Struct("<d"), "?": struct.Struct("<?")}


class FlatBufferError(ValueError):
    """The bytes are not a well-formed FlatBuffer (an offset points outside the file, a vector runs
    past its end), or the model they hold is inconsistent; ``offset`` is the byte where (-1: none)."""

    def __init__(self, message: str, offset: int = -1):
        super().__init__(message)
        self.offset = offset


class Table:
    """One table of a FlatBuffer: ``buf`` (bytes or memoryview) and the table's position.

    Every position is checked against the file before it is read (``struct`` reads a negative
    offset from the end of the buffer, so a bad offset would otherwise read garbage silently),
    and a vector's length is checked against the bytes left before anything is allocated.
    Offsets only ever lead forward (``uoffset_t`` is unsigned) except a table's offset to its
    vtable, which is never followed further, so no chain of offsets can loop.
    """

    __slots__ = ("_vsize", "_vtable", "buf", "pos")

    def __init__(self, buf, pos: int):
        self.buf = buf
        self.pos = pos
        _need(buf, pos, 4, f"table at byte {pos}", pos)
        vtable = pos - _I32.unpack_from(buf, pos)[0]
        if vtable < 0 or vtable + 4 > len(buf):
            raise FlatBufferError(f"the table at byte {pos} has its vtable at byte {vtable}, outside the file "
                                  f"({len(buf)} bytes)", pos)
        self._vtable = vtable
        self._vsize = _U16.unpack_from(buf, vtable)[0]
        _need(buf, vtable, self._vsize, f"the vtable at byte {vtable} ({self._vsize} bytes)", vtable)

    @classmethod
    def root(cls, buf) -> Table:
        if len(buf) < 8:
            raise FlatBufferError(f"file too short for a FlatBuffer ({len(buf)} bytes)", 0)
        return cls(buf, _target(buf, 0))

    def _entry(self, slot: int) -> int:
        """Position of the vtable entry of ``slot``, or 0 if the vtable is too short to have it."""
        entry = 4 + 2 * slot
        return self._vtable + entry if entry + 2 <= self._vsize else 0

    def _field(self, slot: int) -> int:
        """Absolute position of field ``slot``, or 0 if the field is absent."""
        entry = self._entry(slot)
        off = _U16.unpack_from(self.buf, entry)[0] if entry else 0
        return self.pos + off if off else 0

    def has(self, slot: int) -> bool:
        return self._field(slot) != 0

    def field_offset(self, slot: int) -> int:
        """The byte offset of field ``slot`` for messages (the table's own when absent)."""
        return self._field(slot) or self.pos

    def scalar(self, slot: int, fmt: str, default=0):
        pos = self._field(slot)
        if not pos:
            return default
        unpacker = _SCALARS[fmt]
        _need(self.buf, pos, unpacker.size, f"field {slot} of the table at byte {self.pos}", self._entry(slot))
        return unpacker.unpack_from(self.buf, pos)[0]

    def table(self, slot: int) -> Table | None:
        pos = self._field(slot)
        return Table(self.buf, _target(self.buf, pos)) if pos else None

    def _vector(self, slot: int, itemsize: int = 1) -> tuple[int, int]:
        """(position of the first element, length), or (0, 0) when absent; the elements
        (``itemsize`` bytes each) are checked to lie in the file before anything is read."""
        pos = self._field(slot)
        if not pos:
            return 0, 0
        start = _target(self.buf, pos)
        n = _U32.unpack_from(self.buf, start)[0]
        if n * itemsize > len(self.buf) - start - 4:
            raise FlatBufferError(f"vector of {n} x {itemsize} bytes at byte {start} runs past the end of "
                                  f"the file ({len(self.buf)} bytes)", start)
        return start + 4, n

    def vector_length(self, slot: int, itemsize: int = 1) -> int:
        return self._vector(slot, itemsize)[1]

    def vector_offset(self, slot: int, index: int, itemsize: int) -> int:
        """The byte offset of element ``index`` of a vector (for messages)."""
        start, _ = self._vector(slot, itemsize)
        return start + index * itemsize if start else self.pos

    def _string_at(self, pos: int) -> str:
        n = _U32.unpack_from(self.buf, pos)[0]
        _need(self.buf, pos + 4, n, f"string of {n} bytes at byte {pos}", pos)
        if n > limits.current().string:
            raise limits.exceeded("string", n, "string", Loc(offset=pos))
        return bytes(self.buf[pos + 4:pos + 4 + n]).decode("utf-8", "replace")

    def string(self, slot: int, default: str = "") -> str:
        pos = self._field(slot)
        return self._string_at(_target(self.buf, pos)) if pos else default

    def numbers(self, slot: int, dtype) -> np.ndarray | None:
        """A vector of scalars as a read-only numpy view (None when absent)."""
        dt = np.dtype(dtype).newbyteorder("<")
        start, n = self._vector(slot, dt.itemsize)
        if not start:
            return None
        return np.frombuffer(self.buf, dtype=dt, count=n, offset=start)

    def tables(self, slot: int) -> list[Table]:
        """A vector of tables."""
        start, n = self._vector(slot, 4)
        return [Table(self.buf, _target(self.buf, start + 4 * i)) for i in range(n)]

    def strings(self, slot: int) -> list[str]:
        start, n = self._vector(slot, 4)
        return [self._string_at(_target(self.buf, start + 4 * i)) for i in range(n)]


def _target(buf, pos: int) -> int:
    """Where the ``uoffset_t`` stored at ``pos`` points: a table, vector or string, whose first
    4 bytes (the vtable offset or the length) must lie in the file."""
    _need(buf, pos, 4, f"offset at byte {pos}", pos)
    target = pos + _U32.unpack_from(buf, pos)[0]
    if target + 4 > len(buf):
        raise FlatBufferError(f"offset at byte {pos} points to byte {target}, past the end of the file "
                              f"({len(buf)} bytes)", pos)
    return target


def _need(buf, pos: int, size: int, what: str, where: int) -> None:
    """Raise unless bytes ``[pos, pos + size)`` lie in ``buf``; ``where``: the byte to report."""
    if pos < 0 or size < 0 or pos + size > len(buf):
        raise FlatBufferError(f"{what} lies outside the file ({len(buf)} bytes)", where)


def file_identifier(buf) -> bytes:
    """The 4-byte identifier after the root offset (``b"TFL3"`` for TFLite)."""
    return bytes(buf[4:8]) if len(buf) >= 8 else b""
