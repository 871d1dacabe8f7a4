"""Mutators: plain bytes, text tokens, and protobuf wire format.

Every mutator is ``f(data: bytes, rng: random.Random, others: list[bytes]) -> bytes`` and
deterministic for a given ``rng`` state; ``others`` are the other seeds of the target (for
splicing). Targets pick the mutator that fits their format, or combine them.
"""
from __future__ import annotations

import random

INTERESTING = [0, 1, 2, 3, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 255, 256, 1023, 1024, 4095, 4096,
               32767, 32768, 65535, 65536, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000,
               0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF, -1, -2, -128, -32768, -0x80000000]
TEXT_NUMBERS = ["0", "-1", "1", "2", "3", "65535", "65536", "2147483647", "2147483648", "-2147483648",
                "4294967296", "99999999999999999999", "1e308", "-1e308", "1e-320", "nan", "inf", "-inf",
                "0.0", "-0", "1.5", "0x10", "", "1,2", "1 2", "7" * 400]


def _pack_int(value: int, size: int, little: bool) -> bytes:
    return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little" if little else "big")


def byte_mutation(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    """1-4 classic byte-level edits (AFL's havoc stage, simplified)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(10)
        n = len(buf)
        if op == 0 and n:  # flip a bit
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # random byte
            buf[rng.randrange(n)] = rng.randrange(256)
        elif op == 2 and n:  # interesting integer, 1/2/4/8 bytes, either endianness
            size = rng.choice((1, 2, 4, 8))
            i = rng.randrange(max(1, n - size + 1))
            buf[i:i + size] = _pack_int(rng.choice(INTERESTING), size, rng.random() < 0.8)
        elif op == 3 and n > 1:  # delete a range
            i = rng.randrange(n)
            del buf[i:i + rng.randint(1, max(1, min(n - i, rng.choice((1, 4, 16, 256, n)))))]
        elif op == 4 and n:  # duplicate a range
            i = rng.randrange(n)
            chunk = buf[i:i + rng.randint(1, min(64, n - i))]
            j = rng.randrange(n + 1)
            buf[j:j] = chunk * rng.choice((1, 1, 2, 16))
        elif op == 5:  # insert random bytes
            j = rng.randrange(len(buf) + 1)
            buf[j:j] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 6 and n:  # truncate
            del buf[rng.randrange(n):]
        elif op == 7 and others:  # splice with another seed
            other = rng.choice(others)
            if other and n:
                i, j = rng.randrange(n), rng.randrange(len(other))
                buf = buf[:i] + other[j:j + rng.randint(1, 4096)]
        elif op == 8 and n >= 2:  # overwrite a range with a copy from elsewhere
            i, j = rng.randrange(n), rng.randrange(n)
            k = rng.randint(1, min(32, n - max(i, j)))
            buf[i:i + k] = buf[j:j + k]
        elif op == 9 and n:  # fill with 0x00 / 0xff
            i = rng.randrange(n)
            buf[i:i + rng.randint(1, 32)] = bytes([rng.choice((0, 0xFF))]) * rng.randint(1, 32)
    return bytes(buf)


def text_mutation(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    """Line and token edits for text formats (prototxt, IR text, config and list files)."""
    import re
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(11)
        n = len(lines)
        i = rng.randrange(n) if n else 0
        if op == 0 and n:
            del lines[i]
        elif op == 1 and n:
            lines.insert(rng.randrange(n + 1), lines[i])
        elif op == 2 and n > 1:
            j = rng.randrange(n)
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3 and n:  # replace a number
            nums = list(re.finditer(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", lines[i]))
            if nums:
                m = rng.choice(nums)
                lines[i] = lines[i][:m.start()] + rng.choice(TEXT_NUMBERS) + lines[i][m.end():]
        elif op == 4 and n:  # replace a word by another word of the file
            words = re.findall(r"[A-Za-z_][A-Za-z0-9_./]*", text)
            found = list(re.finditer(r"[A-Za-z_][A-Za-z0-9_./]*", lines[i]))
            if words and found:
                m = rng.choice(found)
                lines[i] = lines[i][:m.start()] + rng.choice(words) + lines[i][m.end():]
        elif op == 5:  # deep nesting / long runs
            unit = rng.choice(("a {", "{", "[", "(", "layer {", "-", "\"", "x" * 64))
            lines.insert(rng.randrange(n + 1), unit * rng.choice((10, 100, 1000, 20000)))
        elif op == 6 and n:  # delete or insert one punctuation character
            line = lines[i]
            j = rng.randrange(len(line) + 1)
            if line and rng.random() < 0.5:
                lines[i] = line[:j] + line[j + 1:]
            else:
                lines[i] = line[:j] + rng.choice("{}[]():;,=\"'#%@<>\\\t\x00 ") + line[j:]
        elif op == 7 and n:  # truncate
            lines = lines[:i] + [lines[i][:rng.randrange(len(lines[i]) + 1)]]
        elif op == 8 and others:  # splice lines of another seed
            other = rng.choice(others).decode("utf-8", "replace").split("\n")
            j = rng.randrange(len(other))
            lines[i:i] = other[j:j + rng.randint(1, 20)]
        elif op == 9:
            return byte_mutation("\n".join(lines).encode(), rng, others)
        elif op == 10 and n:  # long string
            lines[i] += rng.choice(("\"", "")) + "y" * rng.choice((300, 70000, 2_000_000))
    return "\n".join(lines).encode("utf-8", "surrogateescape")


# --- protobuf wire format ---

def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf: bytes) -> list[tuple[int, int, bytes]] | None:
    """Top-level fields ``(number, wire type, payload)`` or None when ``buf`` is not a message."""
    out, pos = [], 0
    try:
        while pos < len(buf):
            key, pos = _read_varint(buf, pos)
            num, wt = key >> 3, key & 7
            if num == 0:
                return None
            if wt == 0:
                start = pos
                _, pos = _read_varint(buf, pos)
                out.append((num, wt, buf[start:pos]))
            elif wt == 1:
                out.append((num, wt, buf[pos:pos + 8]))
                pos += 8
            elif wt == 2:
                length, pos = _read_varint(buf, pos)
                if pos + length > len(buf):
                    return None
                out.append((num, wt, buf[pos:pos + length]))
                pos += length
            elif wt == 5:
                out.append((num, wt, buf[pos:pos + 4]))
                pos += 4
            else:
                return None
        return out if pos == len(buf) else None
    except ValueError:
        return None


def _encode(fields: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray()
    for num, wt, payload in fields:
        out += _varint(num << 3 | wt)
        if wt == 2:
            out += _varint(len(payload))
        out += payload
    return bytes(out)


def protobuf_mutation(data: bytes, rng: random.Random, others: list[bytes], depth: int = 0) -> bytes:
    """Edit one field somewhere in the message tree: its varint value, its length, its
    payload; or duplicate, drop or reorder fields. Falls back to byte edits."""
    fields = _fields(data)
    if not fields or depth > 12 or rng.random() < 0.08:
        return byte_mutation(data, rng, others)
    i = rng.randrange(len(fields))
    num, wt, payload = fields[i]
    op = rng.randrange(8)
    if op <= 2 and wt == 2 and payload:  # descend into a nested message (or mutate a string/bytes)
        inner = _fields(payload)
        if inner:
            fields[i] = (num, wt, protobuf_mutation(payload, rng, others, depth + 1))
        else:
            fields[i] = (num, wt, byte_mutation(payload, rng, others))
    elif op == 3 and wt == 0:
        fields[i] = (num, wt, _varint(rng.choice(INTERESTING)))
    elif op == 3 and wt in (1, 5):
        size = 8 if wt == 1 else 4
        fields[i] = (num, wt, _pack_int(rng.choice(INTERESTING), size, True))
    elif op == 4:
        fields.insert(rng.randrange(len(fields) + 1), fields[i])
    elif op == 5 and len(fields) > 1:
        del fields[i]
    elif op == 6 and wt == 2:  # lie about a length: encode by hand
        head = _encode(fields[:i])
        tail = _encode(fields[i + 1:])
        wrong = max(0, len(payload) + rng.choice((-1, 1, 7, -7, 1 << 20, 1 << 31)))
        return head + _varint(num << 3 | 2) + _varint(wrong) + payload + tail
    elif op == 7:  # change the field number or wire type
        fields[i] = (rng.choice((num, num + 1, max(1, num - 1), rng.randint(1, 40))), wt, payload)
    else:
        return byte_mutation(data, rng, others)
    return _encode(fields)
