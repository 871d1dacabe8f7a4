"""The container shared by net.bin and io.bin: a 64-byte header, a section table, sections.

Layout (little-endian; docs/format.md is the specification)::

    header   64 bytes  magic[8] major:u16 minor:u16 flags:u32 header_size:u32 n_sections:u32
                       tidlc_version[16] device[16] header_crc:u32 file_size:u32
    table    32 bytes per section: tag[4] align:u32 offset:u64 size:u64 crc32:u32 reserved[4]
    sections each at a 64-byte aligned offset, zero padding in between

``header_crc`` is the CRC32 of header + table with that field zeroed; every
section carries its own CRC32. Readers never allocate more than the file holds,
and every error names the byte offset where the reader found the problem.
"""
from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from tidlc.diagnostics import Loc, TidlcError

# 2.0: io.bin binds to its net.bin (BIND section: the net's SHA-256); net.bin META keeps the
# deployment settings. 1.x files are refused with a "recompile" hint.
FORMAT_MAJOR = 2
FORMAT_MINOR = 0
RECOMPILE = "recompile the model with `tidlc compile MODEL -o DIR`"
ALIGN = 64
MAX_SECTIONS = 64
_HEADER = struct.Struct("<8sHHIII16s16sII")
_ENTRY = struct.Struct("<4sIQQI4x")
assert _HEADER.size == 64 and _ENTRY.size == 32


def align_up(n: int, align: int = ALIGN) -> int:
    return (n + align - 1) // align * align


def _fixed_str(text: str, width: int) -> bytes:
    raw = text.encode("utf-8")[:width]
    return raw + b"\0" * (width - len(raw))


def pack(magic: bytes, sections: Mapping[str, bytes], tidlc_version: str, device: str, flags: int = 0) -> bytes:
    """Header + section table + 64-byte aligned sections, in the order given."""
    tags = list(sections)
    offset = align_up(_HEADER.size + _ENTRY.size * len(tags))
    entries, body_parts, cursor = [], [], offset
    for tag in tags:
        data = sections[tag]
        entries.append((tag.encode("ascii"), ALIGN, cursor, len(data), zlib.crc32(data)))
        padded = data + b"\0" * (align_up(len(data)) - len(data))
        body_parts.append(padded)
        cursor += len(padded)
    table = b"".join(_ENTRY.pack(*e) for e in entries)

    if cursor >= 1 << 32:
        raise TidlcError(f"the compiled model needs {cursor} bytes; format {FORMAT_MAJOR} holds up to 4 GiB")

    def header(crc: int) -> bytes:
        return _HEADER.pack(magic, FORMAT_MAJOR, FORMAT_MINOR, flags, _HEADER.size, len(tags),
                            _fixed_str(tidlc_version, 16), _fixed_str(device, 16), crc, cursor)
    crc = zlib.crc32(header(0) + table)
    head = header(crc) + table
    return head + b"\0" * (offset - len(head)) + b"".join(body_parts)


def at(path: str, offset: int) -> Loc:
    """The location of byte ``offset`` of a binary file."""
    return Loc(file=path, offset=max(0, offset))


class Container:
    """A parsed, checked file: ``sections[tag] -> memoryview``, plus header fields."""

    def __init__(self, data: bytes, magic: bytes, what: str, path: str):
        self.path, self.what = path, what
        size = len(data)
        if size < _HEADER.size:
            self.fail(f"truncated {what}: {size} bytes, the header alone has {_HEADER.size}", size)
        (got_magic, major, minor, self.flags, header_size, n_sections, version, device,
         header_crc, file_size) = _HEADER.unpack_from(data, 0)
        if got_magic != magic:
            self.fail(f"not a tidlc {what} (bad magic {got_magic[:8]!r})", 0, code="format",
                      hint="TI's own net/io binaries are not readable; compile the model with tidlc")
        self._check_version(major, minor)
        if header_size != _HEADER.size or n_sections > MAX_SECTIONS:
            self.fail(f"corrupt {what} header (header size {header_size}, {n_sections} sections)", 16)
        table_end = _HEADER.size + _ENTRY.size * n_sections
        if table_end > size:
            self.fail(f"truncated {what}: the section table ends at byte {table_end}, the file has {size}", size)
        zeroed = bytearray(data[:table_end])
        zeroed[56:60] = b"\0\0\0\0"
        if zlib.crc32(zeroed) != header_crc:
            self.fail(f"corrupt {what}: header checksum mismatch", 56)
        if size != file_size:
            self.fail(f"truncated {what}: {size} bytes, the header says {file_size}" if size < file_size
                      else f"corrupt {what}: {size - file_size} bytes after the end the header states", size)
        self.version = (major, minor)
        self.tidlc_version = version.rstrip(b"\0").decode("utf-8", "replace")
        self.device = device.rstrip(b"\0").decode("utf-8", "replace")
        self.sections: dict[str, memoryview] = {}
        self.offsets: dict[str, int] = {}
        self._read_table(memoryview(data), n_sections, table_end)

    def _check_version(self, major: int, minor: int) -> None:
        if major > FORMAT_MAJOR:
            self.fail(f"{self.what} format {major}.{minor} is newer than this tidlc reads "
                      f"({FORMAT_MAJOR}.{FORMAT_MINOR})", 8, code="format", hint="upgrade tidlc or recompile")
        if major < FORMAT_MAJOR:
            self.fail(f"{self.what} format {major}.{minor} is older than this tidlc reads "
                      f"({FORMAT_MAJOR}.{FORMAT_MINOR})", 8, code="format", hint=RECOMPILE)

    def _read_table(self, view: memoryview, n_sections: int, table_end: int) -> None:
        size = len(view)
        for i in range(n_sections):
            entry = _HEADER.size + _ENTRY.size * i
            raw_tag, _align, offset, length, crc = _ENTRY.unpack_from(view, entry)
            tag = raw_tag.decode("ascii", "replace")
            if offset < table_end or offset > size or length > size - offset:
                self.fail(f"truncated or corrupt {self.what}: section {tag} at {offset}+{length} "
                          f"is outside the {size}-byte file", entry + 8)
            if tag in self.sections:
                self.fail(f"corrupt {self.what}: section {tag} appears twice", entry)
            body = view[offset: offset + length]
            if zlib.crc32(body) != crc:
                self.fail(f"corrupt {self.what}: checksum mismatch in section {tag}", offset)
            self.sections[tag], self.offsets[tag] = body, offset

    def fail(self, message: str, offset: int = 0, hint: str = "", code: str = "corrupt"):
        raise TidlcError(message, at(self.path, offset), hint=hint, code=code)

    def section(self, tag: str) -> memoryview:
        if tag not in self.sections:
            self.fail(f"corrupt {self.what}: section {tag} is missing")
        return self.sections[tag]

    def cursor(self, tag: str) -> Cursor:
        return Cursor(self.section(tag), tag, self.path, self.offsets[tag])

    def json(self, tag: str) -> Any:
        """A section holding canonical JSON, parsed (nesting checked first: no RecursionError)."""
        return load_json(bytes(self.section(tag)), f"section {tag}", self.path, self.offsets[tag])


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')


def json_depth(raw: bytes, bound: int = 0) -> int:
    """The deepest bracket nesting of JSON text (strings skipped), computed without recursion;
    when there are at most ``bound`` opening brackets, that count (an upper bound) is returned."""
    opening = raw.count(b"[") + raw.count(b"{")
    if opening <= bound:
        return opening
    text = np.frombuffer(_STRINGS.sub(b'""', raw), dtype=np.uint8)
    if not text.size:
        return 0
    step = np.isin(text, (ord("["), ord("{"))).astype(np.int64) - np.isin(text, (ord("]"), ord("}")))
    return int(np.cumsum(step).max())


def load_json(raw: bytes, what: str, path: str, offset: int = 0) -> Any:
    """Parse JSON from a binary file; every failure is a one-line TidlcError at ``offset``."""
    from tidlc import limits
    depth = json_depth(raw, limits.current().nesting)
    if depth > limits.current().nesting:
        raise limits.exceeded("nesting", depth, f"{what} JSON nesting", at(path, offset))
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, a huge integer
        pos = getattr(exc, "pos", 0) or 0
        raise TidlcError(f"corrupt file: {what} is not valid JSON ({str(exc).splitlines()[0][:120]})",
                         at(path, offset + pos), code="corrupt") from None


class Cursor:
    """Bounds-checked reading of one section; every overrun is a TidlcError naming the section
    and the byte offset in the file."""

    def __init__(self, data: memoryview, tag: str, path: str, base: int = 0):
        self.data, self.tag, self.path, self.pos, self.base = data, tag, path, 0, base

    def fail(self, message: str, code: str = "corrupt", back: int = 0):
        raise TidlcError(message, at(self.path, self.base + self.pos - back), code=code)

    def take(self, n: int) -> memoryview:
        if n < 0 or n > len(self.data) - self.pos:
            self.fail(f"corrupt file: section {self.tag} ends early (need {n} bytes at {self.pos})")
        out = self.data[self.pos: self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        st = struct.Struct("<" + fmt)
        return st.unpack(self.take(st.size))

    def u8(self) -> int:
        return self.unpack("B")[0]

    def u16(self) -> int:
        return self.unpack("H")[0]

    def u32(self) -> int:
        return self.unpack("I")[0]

    def i32(self) -> int:
        return self.unpack("i")[0]

    def string(self) -> str:
        n = self.u16()
        raw = bytes(self.take(n))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"corrupt file: section {self.tag} holds a name that is not UTF-8", back=n)

    def blob(self) -> bytes:
        return bytes(self.take(self.u32()))

    def count(self, item_size: int, what: str = "entries") -> int:
        """A u32 count, checked against the bytes left (no huge allocations from a bad count)."""
        n = self.u32()
        if n * max(item_size, 1) > len(self.data) - self.pos:
            self.fail(f"corrupt file: section {self.tag} claims {n} {what}, more than it holds", back=4)
        return n


class Writer:
    def __init__(self):
        self.parts: list[bytes] = []

    def put(self, fmt: str, *values) -> None:
        self.parts.append(struct.pack("<" + fmt, *values))

    def string(self, text: str) -> None:
        raw = text.encode("utf-8")
        if len(raw) > 0xFFFF:
            raise TidlcError(f"name too long for the binary format ({len(raw)} bytes)")
        self.put("H", len(raw))
        self.parts.append(raw)

    def blob(self, raw: bytes) -> None:
        self.put("I", len(raw))
        self.parts.append(raw)

    def bytes(self) -> bytes:
        return b"".join(self.parts)
