"""`tidlc run OUTDIR` / `tidlc perf OUTDIR`: mutated net.bin files (tidlc's own format, docs/format.md)
beside the io.bin of the same compile.

Most byte edits of a net.bin only break a CRC32; to reach the section parsers (tensor table,
layer table, parameters, JSON metadata) the mutator rebuilds the container around an edited
section in most cases (fresh offsets, CRCs, header checksum), and ``run`` re-binds io.bin to
the mutated net (io.bin records the net's SHA-256) so that the graph itself is executed.
"""
from __future__ import annotations

import functools
import os
import struct
import tempfile
import zlib

from fuzz.common import TINY_NET, compiled
from fuzz.mutate import byte_mutation, text_mutation
from fuzz.runner import Seed, cli

# Two inputs and two outputs (an eltwise sum and a pooled branch).
TWO_IO_NET = b'''name: "two"
input: "a"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
input: "b"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "ca" type: "Convolution" bottom: "a" top: "ca" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "cb" type: "Convolution" bottom: "b" top: "cb" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "ca" bottom: "cb" top: "sum" }
layer { name: "pool" type: "Pooling" bottom: "cb" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
'''
JSON_TAGS = (b"META", b"PERF", b"IODS")
_HEADER = struct.Struct("<8sHHIII16s16sII")
_ENTRY = struct.Struct("<4sIQQI4x")


@functools.cache
def compile_extra(name: str) -> dict[str, bytes]:
    """net.bin + io.bin of a small variant: ``16bit`` (the tiny net at 16 bits) or ``two`` (two
    inputs, two outputs), compiled in a temporary folder."""
    from fuzz.common import read
    with tempfile.TemporaryDirectory(prefix=f"fuzz-netbin-{name}-") as out:
        proto = os.path.join(out, "model.prototxt")
        with open(proto, "wb") as fh:
            fh.write(TINY_NET if name == "16bit" else TWO_IO_NET)
        extra = ("--bits", "16") if name == "16bit" else ()
        code = cli("compile", proto, "--random-weights", "0", *extra, "-o", out)
        assert code == 0, f"compiling the {name} seed net failed ({code})"
        return {n: read(os.path.join(out, n)) for n in ("net.bin", "io.bin")}


def _png() -> bytes:
    """A small colour image of another size than the inputs (so io.bin's pre-processing resizes)."""
    import cv2
    import numpy as np
    image = (np.arange(20 * 18 * 3, dtype=np.uint32) * 37 % 251).astype(np.uint8).reshape(18, 20, 3)
    return cv2.imencode(".png", image)[1].tobytes()


def pair_seeds(main: str) -> list[Seed]:
    """One seed per compiled pair (net.bin + io.bin, and an image to feed), ``main`` being the file mutated."""
    from fuzz.common import read
    tiny = {n: read(os.path.join(compiled("bin"), n)) for n in ("net.bin", "io.bin")}
    png = _png()
    return [Seed({**pair, "img.png": png}, main) for pair in (tiny, compile_extra("16bit"), compile_extra("two"))]


def seeds() -> list[Seed]:
    return pair_seeds("net.bin")


# ----------------------------------------------------------------------------- container surgery
def split(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
    """(header fields, [(tag, payload)]) of a well-formed container, else None."""
    if len(data) < 64:
        return None
    n = _HEADER.unpack_from(data, 0)[5]
    if n > 64 or 64 + 32 * n > len(data):
        return None
    sections = []
    for i in range(n):
        tag, _align, offset, size, _crc = _ENTRY.unpack_from(data, 64 + 32 * i)
        if offset + size > len(data):
            return None
        sections.append((tag, data[offset: offset + size]))
    return data[:64], sections


def join(header: bytes, sections: list[tuple[bytes, bytes]]) -> bytes:
    """Rebuild a container: the header's fields kept, offsets, CRCs, file size and checksum recomputed."""
    fields = list(_HEADER.unpack(header))
    start = cursor = (64 + 32 * len(sections) + 63) // 64 * 64
    table, body = [], []
    for tag, payload in sections:
        table.append(_ENTRY.pack(tag, 64, cursor, len(payload), zlib.crc32(payload)))
        padded = payload + b"\0" * (-len(payload) % 64)
        body.append(padded)
        cursor += len(padded)
    fields[5], fields[8], fields[9] = len(sections), 0, cursor
    return fix_header(_HEADER.pack(*fields) + b"".join(table) + b"\0" * (start - 64 - 32 * len(sections))
                      + b"".join(body))


def fix_header(data: bytes) -> bytes:
    """Recompute the header CRC of ``data`` (whatever its table says)."""
    if len(data) < 64:
        return data
    n = min(struct.unpack_from("<I", data, 20)[0], (len(data) - 64) // 32)
    buf = bytearray(data)
    buf[56:60] = b"\0\0\0\0"
    struct.pack_into("<I", buf, 56, zlib.crc32(bytes(buf[:64 + 32 * n])))
    return bytes(buf)


# ----------------------------------------------------------------------------- structure-aware edits
INTERESTING_DIMS = (0, 1, 2, 3, 4, 5, 7, 8, 16, 255, 256, 65535, 1 << 20, 1 << 31, 1 << 40, -1, -2)
INTERESTING_FLOATS = (0.0, -1.0, 1e-300, 1e300, float("inf"), float("nan"), 0.5, 3.0, 1e-8)
OP_KINDS = ("conv2d", "dense", "add", "relu", "softmax", "avgpool2d", "maxpool2d", "const", "input",
            "data_convert", "requantize", "concat", "reshape", "transpose", "nonexistent")


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        st = struct.Struct("<" + fmt)
        if self.pos + st.size > len(self.data):
            raise ValueError("short")
        out = st.unpack_from(self.data, self.pos)
        self.pos += st.size
        return out

    def string(self) -> bytes:
        (n,) = self.take("H")
        self.pos += n
        if self.pos > len(self.data):
            raise ValueError("short")
        return self.data[self.pos - n: self.pos]


def _read_tensor(r: _Reader) -> dict:
    t = {"id": r.take("I")[0], "name": r.string()}
    t["d"], t["l"], t["has"] = r.take("BBB")
    (rank,) = r.take("I")
    t["dims"] = list(r.take(f"{rank}q"))
    t["pad"] = r.take("4H")
    t["q"] = None
    if r.take("B")[0]:
        q = list(r.take("BBiBiBi"))
        (n,) = r.take("I")
        t["q"] = q + [list(r.take(f"{n}d"))]
    return t


def _write_tensor(t: dict) -> bytes:
    out = struct.pack("<I", t["id"]) + struct.pack("<H", len(t["name"])) + t["name"]
    out += struct.pack("<BBBI", t["d"], t["l"], t["has"], len(t["dims"]))
    out += struct.pack(f"<{len(t['dims'])}q", *t["dims"]) + struct.pack("<4H", *t["pad"])
    if t["q"] is None:
        return out + b"\0"
    *fields, scales = t["q"]
    return out + b"\1" + struct.pack("<BBiBiBi", *fields) + struct.pack(f"<I{len(scales)}d", len(scales), *scales)


def _read_layer(r: _Reader) -> dict:
    layer = {"kind": r.string(), "name": r.string()}
    for group in ("ins", "outs"):
        (n,) = r.take("I")
        layer[group] = list(r.take(f"{n}I"))
    layer["act"] = r.string()
    (n,) = r.take("I")
    r.pos += n
    layer["blob"] = r.data[r.pos - n: r.pos]
    layer["param"] = list(r.take("QQB"))
    return layer


def _write_layer(layer: dict) -> bytes:
    def s(raw: bytes) -> bytes:
        return struct.pack("<H", len(raw)) + raw
    out = s(layer["kind"]) + s(layer["name"])
    for group in ("ins", "outs"):
        out += struct.pack(f"<I{len(layer[group])}I", len(layer[group]), *layer[group])
    return out + s(layer["act"]) + struct.pack("<I", len(layer["blob"])) + layer["blob"] + \
        struct.pack("<QQB", *layer["param"])


def _table(payload: bytes, read) -> list[dict] | None:
    r = _Reader(payload)
    try:
        (n,) = r.take("I")
        return [read(r) for _ in range(n)]
    except (ValueError, struct.error):
        return None


def _pick(rng, values):
    return values[rng.randrange(len(values))]


def _mutate_tensor(t: dict, rng, n_tensors: int) -> None:
    op = rng.randrange(8)
    if op == 0:
        t["d"] = rng.randrange(12)
    elif op == 1:
        t["l"] = rng.randrange(4)
    elif op == 2 and t["dims"]:
        t["dims"][rng.randrange(len(t["dims"]))] = _pick(rng, INTERESTING_DIMS)
    elif op == 3:
        if t["dims"] and rng.random() < 0.5:
            del t["dims"][rng.randrange(len(t["dims"]))]
        else:
            t["dims"].insert(rng.randrange(len(t["dims"]) + 1), _pick(rng, INTERESTING_DIMS[:8]))
    elif op == 4:
        t["has"] = rng.randrange(3)
    elif op == 5:
        t["id"] = rng.choice((t["id"] + 1, n_tensors, rng.randrange(n_tensors + 1)))
    elif t["q"] is None:
        t["q"] = [8, 1, 0, 0, 0, 0, 0, [1.0]]
    else:
        _mutate_quant(t["q"], rng)


def _mutate_quant(q: list, rng) -> None:
    field = rng.randrange(8)
    if field == 7:
        scales = q[7]
        if scales and rng.random() < 0.6:
            scales[rng.randrange(len(scales))] = _pick(rng, INTERESTING_FLOATS)
        elif scales and rng.random() < 0.5:
            del scales[rng.randrange(len(scales))]
        else:
            scales.extend([1.0] * rng.choice((1, 3, 7)))
    elif field == 0:
        q[0] = _pick(rng, (1, 4, 8, 12, 16, 32, 64, 0, 255))
    elif field in (1, 3, 5):
        q[field] = rng.randrange(3)
    else:
        q[field] = _pick(rng, (0, 1, -1, 7, 31, 32, 33, 63, 64, 100, -128, 127, 255, 1 << 30, -(1 << 31)))


def _mutate_layer(layers: list[dict], rng, n_tensors: int) -> None:
    i = rng.randrange(len(layers))
    layer = layers[i]
    op = rng.randrange(9)
    if op == 0:
        layer["kind"] = _pick(rng, OP_KINDS).encode()
    elif op in (1, 2):
        group = layer[rng.choice(("ins", "outs"))]
        if group and rng.random() < 0.6:
            group[rng.randrange(len(group))] = rng.choice((rng.randrange(max(1, n_tensors)), n_tensors, 0xFFFFFFFF))
        elif group and rng.random() < 0.5:
            del group[rng.randrange(len(group))]
        else:
            group.insert(rng.randrange(len(group) + 1), rng.randrange(max(1, n_tensors)))
    elif op in (3, 4, 5):
        layer["blob"] = json_mutation(layer["blob"], rng)
    elif op == 6:
        p = layer["param"]
        k = rng.randrange(3)
        p[k] = _pick(rng, ((0, 64, 128, 1 << 40, 0xFFFFFFFFFFFFFFFF), (0, 1, 4, 8, 1 << 40), (0, 3, 7, 11, 12))[k])
    elif op == 7 and len(layers) > 1:
        j = rng.randrange(len(layers))
        layers[i], layers[j] = layers[j], layers[i]
    elif len(layers) > 1:
        del layers[i]


def json_mutation(raw: bytes, rng) -> bytes:
    """Parse, change one value somewhere (type, number, key, nesting), dump again."""
    import json
    if raw.count(b"[") + raw.count(b"{") > 200:  # deep: json and the walk below would recurse too far
        return text_mutation(raw, rng, [])
    try:
        doc = json.loads(raw)
    except ValueError:
        return text_mutation(raw, rng, [])
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + [k])
        elif isinstance(node, list):
            for k, v in enumerate(node):
                walk(v, path + [k])
    walk(doc, [])
    path = _pick(rng, paths)
    replacement = _pick(rng, (0, 1, -1, 2, 3, 0.5, -7, 1 << 31, 1 << 62, 10 ** 30, 1e300, None, True, "", "x",
                              "NCHW", "relu", [], [0], [1, 1], [0, 0, 0, 0], [-1, 5], {}, {"$float": "inf"},
                              {"$float": "x"}, [[[[1]]]], "\u0000"))
    if not path:
        return json.dumps(replacement).encode()
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and rng.random() < 0.15:
        del parent[path[-1]]
    elif isinstance(parent, list) and rng.random() < 0.15:
        parent.append(parent[path[-1]])
    else:
        parent[path[-1]] = replacement
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _structured(tag: bytes, payload: bytes, rng, sections: dict) -> bytes | None:
    """A field-level edit of a table section, or None if the section does not parse."""
    tensors = _table(sections.get(b"TENS", b""), _read_tensor) or []
    if tag == b"TENS" and tensors:
        _mutate_tensor(_pick(rng, tensors), rng, len(tensors))
        return struct.pack("<I", len(tensors)) + b"".join(_write_tensor(t) for t in tensors)
    layers = _table(payload, _read_layer) if tag == b"LAYR" else None
    if layers:
        _mutate_layer(layers, rng, len(tensors))
        return struct.pack("<I", len(layers)) + b"".join(_write_layer(x) for x in layers)
    return None


def _edit_section(header: bytes, sections: list, rng, others: list[bytes]) -> bytes:
    i = rng.randrange(len(sections))
    tag, payload = sections[i]
    op = rng.random()
    edited = None
    if op < 0.04 and len(sections) > 1:  # drop a section
        del sections[i]
    elif op < 0.07:  # duplicate one, or add an unknown tag
        sections.insert(rng.randrange(len(sections) + 1), (rng.choice((tag, b"ZZZZ")), payload))
    elif tag in (b"TENS", b"LAYR") and op < 0.8:
        edited = _structured(tag, payload, rng, dict(sections))
    elif tag in JSON_TAGS:
        edited = json_mutation(payload, rng) if op < 0.8 else text_mutation(payload, rng, [])
    if edited is None and op >= 0.07:
        edited = byte_mutation(payload, rng, [])
    if edited is not None:
        sections[i] = (tag, edited)
    return join(header, sections)


HEADER_FIELDS = ((8, "H"), (10, "H"), (12, "I"), (16, "I"), (20, "I"), (60, "I"))  # version, flags, sizes, count
ENTRY_FIELDS = ((0, "4s"), (4, "I"), (8, "Q"), (16, "Q"), (24, "I"))


def _edit_header(data: bytes, rng) -> bytes:
    """One hostile header or table field (version, sizes, offsets, counts), in place, mostly with
    a valid header checksum."""
    from fuzz.mutate import INTERESTING
    buf = bytearray(data)
    n = min(struct.unpack_from("<I", buf, 20)[0], (len(buf) - 64) // 32) if len(buf) >= 64 else 0
    if n and rng.random() < 0.6:
        where, fmt = _pick(rng, ENTRY_FIELDS)
        where += 64 + 32 * rng.randrange(n)
    else:
        where, fmt = _pick(rng, HEADER_FIELDS)
    if where + struct.calcsize(fmt) > len(buf):
        return byte_mutation(data, rng, [])
    if fmt == "4s":
        value = _pick(rng, (b"META", b"TENS", b"LAYR", b"PARM", b"PERF", b"IODS", b"BIND", b"\0\0\0\0"))
    else:
        bits = 8 * struct.calcsize(fmt)
        value = _pick(rng, INTERESTING) % (1 << bits)
        if fmt == "H" and rng.random() < 0.5:
            value = _pick(rng, (0, 1, 2, 3))
    struct.pack_into("<" + fmt, buf, where, value)
    return fix_header(bytes(buf)) if rng.random() < 0.9 else bytes(buf)


def container_mutation(data: bytes, rng, others: list[bytes]) -> bytes:
    """75 %: a section edited (field-level for tables and JSON) and the container rebuilt with
    right checksums; 10 %: one header or table field, checksum fixed; 15 %: plain byte edits."""
    parts = split(data)
    roll = rng.random()
    if parts and parts[1] and roll < 0.75:
        return _edit_section(parts[0], list(parts[1]), rng, others)
    if roll < 0.85:
        return _edit_header(data, rng)
    return byte_mutation(data, rng, others)


def mutate(data: bytes, rng, others) -> bytes:
    return container_mutation(data, rng, others)


# ----------------------------------------------------------------------------- binding
def bind(folder: str, rng_value: int) -> None:
    """Re-bind io.bin to the (mutated) net.bin beside it, most of the time: io.bin records the
    net's SHA-256, and a mismatch stops ``tidlc run`` before the graph is executed."""
    import hashlib
    if rng_value % 10 == 0:
        return
    net, io = os.path.join(folder, "net.bin"), os.path.join(folder, "io.bin")
    with open(io, "rb") as fh:
        parts = split(fh.read())
    if not parts:
        return
    with open(net, "rb") as fh:
        digest = hashlib.sha256(fh.read()).digest()
    sections = [(tag, digest if tag == b"BIND" else payload) for tag, payload in parts[1]]
    with open(io, "wb") as fh:
        fh.write(join(parts[0], sections))


def run_pair(folder: str, selector: int) -> None:
    """`tidlc run` with random inputs, or (1 in 3) the image through io.bin's pre-processing
    for the first input; 1 in 4 also `tidlc perf`, 1 in 4 the IR text of `tidlc ir`."""
    feed = ("--random-input", "0")
    if selector % 3 == 0:
        first = "a" if b'"name":"two"' in _read(folder, "net.bin") else "data"  # the seeds' first inputs
        feed = ("--input", f"{first}={os.path.join(folder, 'img.png')}", *feed)
    cli("run", folder, "--threads", "1", *feed)  # one thread: a forked worker must not use the parent's OpenMP pool
    if selector % 4 == 0:  # perf reads the same files through the same reader, then models the graph
        cli("perf", folder, "--no-hints")
    elif selector % 4 == 1:  # `tidlc ir OUTDIR`: the graph printed as IR text
        from tidlc.run_compiled import compiled_ir
        compiled_ir(folder)


def _read(folder: str, name: str) -> bytes:
    with open(os.path.join(folder, name), "rb") as fh:
        return fh.read()


def run(path: str) -> None:
    with open(path, "rb") as fh:
        selector = zlib.crc32(fh.read())
    folder = os.path.dirname(path)
    bind(folder, selector)
    run_pair(folder, selector >> 8)
