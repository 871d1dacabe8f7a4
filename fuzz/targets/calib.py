"""`tidlc -p quantize compile tiny.prototxt --calib DATA --emit none`: calibration data in every
form --calib takes: a list file naming images and .npy files beside it, a folder of them, one
.npy of stacked frames, an .npz, a single PNG or JPEG; the list, the arrays and the images are
mutated. (`-p quantize` keeps the quantize pass, which reads the frames, without writing.)"""
from __future__ import annotations

import io
import os
import zipfile
import zlib

import numpy as np

from fuzz.common import TINY_NET
from fuzz.mutate import byte_mutation, text_mutation
from fuzz.runner import Seed, cli


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def seeds() -> list[Seed]:
    import cv2
    rng = np.random.default_rng(0)
    image = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
    png = cv2.imencode(".png", image)[1].tobytes()
    jpg = cv2.imencode(".jpg", cv2.resize(image, (24, 20)))[1].tobytes()
    bmp = cv2.imencode(".bmp", image[:, :, 0])[1].tobytes()
    frame = _npy(rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32))
    stack = _npy(rng.uniform(0, 255, (3, 1, 3, 16, 16)).astype(np.float32))
    npz = _npz(data=rng.uniform(-1, 1, (2, 1, 3, 16, 16)).astype(np.float32))
    base = {"tiny.prototxt": TINY_NET, "a.png": png, "b.jpg": jpg, "c.npy": frame}
    listing = b"a.png 0\nb.jpg 1\n# a comment\n\nc.npy\n"
    return [Seed({**base, "list.txt": listing}, "list.txt"),
            Seed({**base, "stack.npy": stack}, "stack.npy"),
            Seed({**base, "frames.npz": npz}, "frames.npz"),
            Seed(base, "a.png"),
            Seed(base, "b.jpg"),
            Seed({**base, "d.bmp": bmp}, "d.bmp"),
            Seed({"tiny.prototxt": TINY_NET, "frames/a.png": png, "frames/c.npy": frame}, "frames/c.npy")]


def _mutate_npy(data: bytes, rng) -> bytes:
    if rng.random() < 0.5:  # the header holds most of a .npy's meaning
        end = data.find(b"\n") + 1 or 128
        return byte_mutation(data[:end], rng, []) + data[end:]
    return byte_mutation(data, rng, [])


def _mutate_npz(data: bytes, rng) -> bytes:
    """Mutate a member (then zip it again, so the archive stays readable), rename or add one."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = {info.filename: zf.read(info) for info in zf.infolist()}
    except Exception:  # noqa: BLE001 - already broken: keep breaking it bytewise
        return byte_mutation(data, rng, [])
    name = rng.choice(sorted(members)) if members else "data.npy"
    op = rng.randrange(4)
    if op == 0:
        members[rng.choice(("x.npy", "data", "data.npy.npy", name))] = members.pop(name, b"")
    elif op == 1:
        members[rng.choice(("extra.npy", "data.npy"))] = rng.choice(list(members.values()) or [b""])
    else:
        members[name] = _mutate_npy(members.get(name, b""), rng)
    buf = io.BytesIO()
    method = rng.choice((zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED))
    with zipfile.ZipFile(buf, "w", method) as zf:
        for member, payload in members.items():
            zf.writestr(member, payload)
    return buf.getvalue()


def _mutate_png(data: bytes, rng) -> bytes:
    """Edit the IHDR chunk (size, bit depth, colour type) and fix its CRC, so that libpng
    reads past its checksum."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        return byte_mutation(data, rng, [])
    ihdr = bytearray(data[16:29])
    field = rng.choice(((0, 4), (4, 4), (8, 1), (9, 1)))
    value = rng.choice((0, 1, 2, 3, 4, 6, 8, 16, 255, 4096, 30000, 65535, 1 << 20, 0x7FFFFFFF))
    ihdr[field[0]:sum(field)] = (value & ((1 << (8 * field[1])) - 1)).to_bytes(field[1], "big")
    crc = zlib.crc32(b"IHDR" + bytes(ihdr)).to_bytes(4, "big")
    return data[:16] + bytes(ihdr) + crc + data[33:]


def mutate(data: bytes, rng, others) -> bytes:
    if data[:1].isalpha():  # the list file
        return text_mutation(data, rng, [])
    if data[:6] == b"\x93NUMPY":
        return _mutate_npy(data, rng)
    if data[:2] == b"PK" and rng.random() < 0.8:
        return _mutate_npz(data, rng)
    if data[:4] == b"\x89PNG" and rng.random() < 0.5:
        return _mutate_png(data, rng)
    return byte_mutation(data, rng, others)


def run(path: str) -> None:
    folder = os.path.dirname(path)
    if os.path.basename(folder) == "frames":  # the folder seed: calibrate from the folder
        path, folder = folder, os.path.dirname(folder)
    index = os.path.basename(folder)  # the runner's case folder is the input index
    extra = ("--resize", "20,20", "--mean", "127", "--scale", "0.01") if index.isdigit() and int(index) % 3 == 0 \
        else ()
    cli("--limit", "frames=64", "-p", "quantize", "compile", os.path.join(folder, "tiny.prototxt"),
        "--calib", path, "--emit", "none", "--random-weights", "0", *extra)
