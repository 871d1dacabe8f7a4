"""Input pre-processing (TIDL's, with OpenCV) and calibration data sources.

A frame is what the network's inputs receive: ``{input name: float32 array}``.
Images are pre-processed like TIDL's import tool does it:

1. read with OpenCV (``IMREAD_COLOR`` for 3-channel inputs, grayscale for 1);
2. resize to ``resize = (W, H)`` (TIDL ``resizeWidth/resizeHeight``), bilinear;
3. centre-crop to ``crop = (W, H)`` (TIDL ``inWidth/inHeight``; by default the
   network's input size); an image of another size without ``resize``/``crop``
   is resized straight to the network's size;
4. channel order ``rgb`` (TIDL ``inDataFormat`` 1, the default) or ``bgr`` (0);
5. ``(x - mean[c]) * scale[c]`` (TIDL ``inMean``/``inScale``);
6. planar NCHW (or NHWC if the input is declared so), batch 1.

``.npy`` inputs are taken as already pre-processed tensors.

Calibration data (``--calib``): a TIDL-style list file (``path [label]`` per
line; relative paths from the list's folder, then from the working directory),
a folder of images and/or ``.npy`` files (sorted by name), one ``.npy`` of
stacked frames (``N x input shape``, or one frame), or an ``.npz`` with one
stacked array per input name. Frames are read one at a time.
"""
from __future__ import annotations

import contextlib
import os
import re
import struct
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import numpy as np

from tidlc import limits
from tidlc.config import PreprocessOptions
from tidlc.diagnostics import Loc, TidlcError
from tidlc.fileio import NpzFile, check_regular, load_array, read_bytes, read_text

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
CHANNEL_ORDERS = ("rgb", "bgr")

def _floats(value) -> tuple[float, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    return tuple(float(v) for v in np.atleast_1d(value))


def _pair(value) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.replace("x", ",").split(",") if v.strip()]
    pair = tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) <= 0:
        raise TidlcError(f"expected W,H (two positive integers), got {value!r}", hint="e.g. --resize 256,256")
    return pair  # type: ignore[return-value]


@attrs.frozen
class Preprocess:
    """How images become input tensors (recorded in the graph for io.bin)."""

    mean: tuple[float, ...] = attrs.field(default=(), converter=_floats)
    scale: tuple[float, ...] = attrs.field(default=(), converter=_floats)
    resize: tuple[int, int] | None = attrs.field(default=None, converter=_pair)
    crop: tuple[int, int] | None = attrs.field(default=None, converter=_pair)
    channel_order: str = attrs.field(default="rgb", validator=attrs.validators.in_(CHANNEL_ORDERS))

    @classmethod
    def from_options(cls, options: PreprocessOptions) -> Preprocess:
        return cls(mean=options.mean, scale=options.scale, resize=options.resize, crop=options.crop,
                   channel_order=options.channel_order)

    @property
    def is_default(self) -> bool:
        return self == Preprocess()

    def graph_attrs(self) -> dict[str, Any]:
        """Flat graph attributes (``preprocess.*``) that the text form can hold."""
        out: dict[str, Any] = {"preprocess.channel_order": self.channel_order}
        if self.mean:
            out["preprocess.mean"] = list(self.mean)
        if self.scale:
            out["preprocess.scale"] = list(self.scale)
        if self.resize:
            out["preprocess.resize"] = list(self.resize)
        if self.crop:
            out["preprocess.crop"] = list(self.crop)
        return out

    def apply(self, image: np.ndarray, shape: Sequence[int], layout: str | None) -> np.ndarray:
        """An OpenCV image (H, W[, 3] BGR uint8) -> one input tensor of ``shape`` (batch 1)."""
        import cv2
        channels, height, width = _chw(shape, layout)
        for what, size in (("--resize", self.resize), ("--crop", self.crop)):
            if size:  # before OpenCV allocates the resized image
                limits.check("image_pixels", size[0] * size[1], f"{what} {size[0]},{size[1]}")
        if self.resize:
            image = cv2.resize(image, self.resize, interpolation=cv2.INTER_LINEAR)
        crop_w, crop_h = self.crop or (width, height)
        h, w = image.shape[:2]
        if (h, w) != (crop_h, crop_w) and not self.resize and not self.crop:
            image = cv2.resize(image, (crop_w, crop_h), interpolation=cv2.INTER_LINEAR)
            h, w = crop_h, crop_w
        if h < crop_h or w < crop_w:
            raise TidlcError(f"image of {w}x{h} is smaller than the crop {crop_w}x{crop_h}",
                             hint="resize first: --resize W,H")
        top, left = (h - crop_h) // 2, (w - crop_w) // 2
        image = image[top: top + crop_h, left: left + crop_w]
        if (crop_h, crop_w) != (height, width):
            raise TidlcError(f"pre-processing gives {crop_w}x{crop_h} images, the input is {width}x{height}",
                             hint="--crop W,H must be the network's input size")
        x = image.astype(np.float32)
        if x.ndim == 2:
            x = x[:, :, None]
        if x.shape[2] == 3 and self.channel_order == "rgb":
            x = x[:, :, ::-1]
        if x.shape[2] != channels:
            raise TidlcError(f"the image has {x.shape[2]} channels, the input {channels}")
        if self.mean:
            x = x - _per_channel(self.mean, channels, "mean")
        if self.scale:
            x = x * _per_channel(self.scale, channels, "scale")
        if layout != "NHWC":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x[None], dtype=np.float32)


def _per_channel(values: tuple[float, ...], channels: int, what: str) -> np.ndarray:
    if len(values) not in (1, channels):
        raise TidlcError(f"--{what} has {len(values)} values for {channels} channels",
                         hint="give one value or one per channel")
    return np.asarray(values if len(values) == channels else values * channels, dtype=np.float32)


def _chw(shape: Sequence[int], layout: str | None) -> tuple[int, int, int]:
    if len(shape) != 4:
        raise TidlcError(f"images need a 4-D input, the model's is {list(shape)}",
                         hint="pass pre-processed .npy tensors instead")
    if layout == "NHWC":
        return shape[3], shape[1], shape[2]
    return shape[1], shape[2], shape[3]


def read_image(path: str, channels: int) -> np.ndarray:
    """Decode an image file (regular files only; its pixel count checked against the
    image-pixels limit from the header before decoding where the format allows, else after)."""
    import cv2
    data = read_bytes(path, "image")
    if not data:
        raise TidlcError("empty image file", path, code="input")
    bad = _png_chunk_past_end(data)
    if bad is not None:  # OpenCV allocates a chunk by its declared length (a 263-byte file took 2.4 GiB)
        raise TidlcError("corrupt PNG: a chunk runs past the end of the file", Loc(file=path, offset=bad),
                         hint=IMAGE_HINT, code="input")
    size = image_size(data)
    if size is not None:
        limits.check("image_pixels", size[0] * size[1], f"image of {size[0]}x{size[1]}", path)
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    try:
        with _quiet_stderr():  # libpng/libjpeg print their own complaints; ours is the one line below
            image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error as exc:  # OpenCV's decoders report some damage as exceptions, most as None
        raise TidlcError(f"cannot decode image: {str(exc).strip().splitlines()[-1][:120]}", path,
                         hint=IMAGE_HINT, code="input") from None
    if image is None or image.size == 0:
        raise TidlcError("cannot read image", path, hint=IMAGE_HINT, code="input")
    limits.check("image_pixels", image.shape[0] * image.shape[1], "decoded image", path)
    return image


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (the C decoders write to it directly) while the block runs."""
    import cv2
    try:
        cv2.setLogLevel(0)  # OpenCV's own "[ERROR:0@...] imdecode_" lines
    except AttributeError:  # pragma: no cover - older OpenCV
        pass
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr (embedded): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


IMAGE_HINT = "a PNG/JPEG/BMP file, or pre-processed .npy"
_PNM = re.compile(rb"P[1-6]\s+(?:#[^\n]*\n\s*)*(\d{1,12})\s+(\d{1,12})\s")
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (they hold the size)


def _png_chunk_past_end(data: bytes) -> int | None:
    """The byte offset of the first PNG chunk whose declared length runs past the end of
    ``data`` (None: every chunk fits, or not a PNG)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    i = 8
    while i + 8 <= len(data):
        (length,) = struct.unpack(">I", data[i:i + 4])
        if i + 12 + length > len(data):
            return i
        if data[i + 4:i + 8] == b"IEND":
            break
        i += 12 + length
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, BMP, PNM or JPEG header without decoding; None for other
    formats (or a header too damaged to say: the decoder then decides)."""
    pnm = _PNM.match(data[:64])
    if pnm:
        return int(pnm.group(1)), int(pnm.group(2))
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 <= len(data) and data[i] == 0xFF:
            marker = data[i + 1]
            if marker in _JPEG_SOF:
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return w, h
            if marker == 0xFF:  # fill byte
                i += 1
            elif 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
                i += 2
            else:
                i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


# ----------------------------------------------------------------------------- frames
@attrs.define
class InputSpec:
    name: str
    shape: tuple[int, ...]
    layout: str | None
    dtype: str = "f32"


def input_specs(graph, loc=None) -> list[InputSpec]:
    """The graph's inputs; one still dynamic is an error (at ``loc``, else the graph's source)."""
    specs = []
    for op in graph.input_ops:
        t = op.results[0].type
        if not t.is_static:
            from tidlc.shapes import dynamic_input_error
            raise dynamic_input_error(op.attrs["name"], t.shape, t.layout, loc or graph.attrs.get("source"))
        specs.append(InputSpec(op.attrs["name"], tuple(t.shape), t.layout, t.dtype))
    return specs


class FrameSource:
    """Calibration frames from ``--calib DATA`` (see the module docstring).

    Every file is opened through :mod:`tidlc.fileio` (regular files only, size limits; .npy and
    .npz headers checked before their data is read); the number of frames is bounded by the
    frames limit unless ``limit`` (``--calib-frames``) asks for fewer."""

    def __init__(self, path: str, specs: list[InputSpec], preprocess: Preprocess = Preprocess(),
                 limit: int | None = None):
        if not os.path.lexists(path):
            raise TidlcError("no such file or folder", path, hint=CALIB_HINT, code="file")
        self.path = path
        self.specs = specs
        self.preprocess = preprocess
        self.limit = limit
        self.stack: np.ndarray | None = None  # one .npy of stacked frames
        self.arrays: dict[str, np.ndarray] = {}  # an .npz: input name -> stacked frames
        # a 4-D input with a batch N > 1 (Caffe deploy files: AlexNet 10, LeNet 64): N consecutive
        # images are one frame
        self.batch = specs[0].shape[0] if len(specs) == 1 and len(specs[0].shape) == 4 and specs[0].shape[0] > 1 \
            else 1
        self.items = self._batched(self._items())

    def _cap(self) -> int:
        """How many items to collect: the frames asked for, else one over the frames limit."""
        return self.limit if self.limit is not None else limits.current().frames + 1

    def _files_per_frame(self, path: str) -> int:
        """How many files like ``path`` make one frame: ``batch`` images (:meth:`_batched` groups
        them), or one .npy (the whole input; a mix of the two is refused there)."""
        return 1 if path.lower().endswith(".npy") else self.batch

    def _batched(self, items: list) -> list:
        """``items`` with images grouped by the input's batch (``batch`` consecutive images per frame;
        a remainder is left out)."""
        if self.batch == 1:
            return items
        images = [item for kind, item in items if kind == "file" and self._files_per_frame(item) > 1]
        if not images:
            return items
        from tidlc.shapes import shape_hint
        spec = self.specs[0]
        hint = (f"or give {shape_hint(spec.name, (1, *spec.shape[1:]))} to compile for one frame per inference "
                "(TIDL batches frames with numBatches: tidlc perf --batches N)")
        if len(images) != len(items):
            raise TidlcError(f"images and .npy files mixed for the input '{spec.name}' with a batch of {self.batch}",
                             self.path, hint="images only (each fills one slot of the batch), or .npy files of "
                             f"the whole input {list(spec.shape)}", code="input")
        if len(images) < self.batch:
            raise TidlcError(f"{len(images)} image(s) do not fill one frame: the input '{spec.name}' "
                             f"{list(spec.shape)} takes a batch of {self.batch} images", self.path,
                             hint=f"give at least {self.batch} images, {hint}", code="input")
        return [("images", tuple(images[i:i + self.batch]))
                for i in range(0, len(images) - self.batch + 1, self.batch)]

    def _check_count(self, available: int) -> None:
        if self.limit is None:
            limits.check("frames", available, "the calibration data's frames", self.path)

    def _items(self) -> list:
        path = self.path
        if os.path.isdir(path):
            return self._folder(path)
        lower = path.lower()
        if lower.endswith(".npz"):
            return self._npz()
        if lower.endswith(".npy"):
            return self._npy_stack()
        if lower.endswith(IMAGE_SUFFIXES):
            check_regular(path, "image")
            return [("file", path)]
        return self._list_file(path)

    def _folder(self, path: str) -> list:
        try:
            names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES + (".npy",)))
        except OSError as exc:
            raise TidlcError(f"cannot list the folder: {exc.strerror}", path, code="file") from None
        if not names:
            raise TidlcError("no images or .npy files in the folder", path, code="input")
        per = self._files_per_frame(names[0])
        self._check_count(len(names) // per)
        return [("file", os.path.join(path, n)) for n in names[:self._cap() * per]]

    def _npz(self) -> list:
        with NpzFile(self.path, "calibration .npz") as npz:
            missing = [s.name for s in self.specs if s.name not in npz.files]
            if missing:
                raise TidlcError(f".npz has no array for input(s) {', '.join(missing)}", self.path,
                                 hint=f"it holds {', '.join(npz.files[:10]) or 'no arrays'}", code="input")
            for spec in self.specs:
                arr = npz.array(spec.name)
                if arr.ndim != len(spec.shape) + 1 or _size(arr.shape[1:]) != _size(spec.shape):
                    raise TidlcError(f"array '{spec.name}' of shape {list(arr.shape)} does not hold frames of "
                                     f"{list(spec.shape)}", self.path, hint="stack the frames on a new first axis",
                                     code="input")
                self.arrays[spec.name] = arr
        counts = {a.shape[0] for a in self.arrays.values()}
        if len(counts) != 1:
            raise TidlcError("the .npz arrays hold different numbers of frames", self.path, code="input")
        count = counts.pop()
        self._check_count(count)
        return [("npz", i) for i in range(min(count, self._cap()))]

    def _npy_stack(self) -> list:
        spec = self._single_spec()
        arr = load_array(self.path, "calibration .npy")
        per = _size(spec.shape)
        if arr.ndim == len(spec.shape) + 1 and _size(arr.shape[1:]) == per:
            count = arr.shape[0]
            self.stack = arr.reshape(count, *spec.shape)
        elif arr.ndim == len(spec.shape) and arr.shape[1:] == spec.shape[1:] and spec.shape[0] > 0 \
                and arr.shape[0] % spec.shape[0] == 0:  # frames of a batch > 1 stacked on the batch axis
            count = arr.shape[0] // spec.shape[0]
            self.stack = arr.reshape(count, *spec.shape)
        else:
            raise TidlcError(f"array of shape {list(arr.shape)} does not hold frames of {list(spec.shape)}",
                             self.path, hint="N x the input shape, or one frame", code="input")
        self._check_count(count)
        return [("stack", i) for i in range(min(count, self._cap()))]

    def _list_file(self, path: str) -> list:
        base = os.path.dirname(os.path.abspath(path))
        text = read_text(path, "calibration list file")
        items = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if len(items) == self._cap() * (self._files_per_frame(items[0][1]) if items else 1):
                break
            items.append(("file", self._list_entry(line.split()[0], base, Loc(file=path, line=number))))
        if not items:
            raise TidlcError("the list file names no files", path, hint=CALIB_HINT, code="input")
        self._check_count(len(items) // self._files_per_frame(items[0][1]))  # (only raises without --calib-frames)
        return items

    def _list_entry(self, entry: str, base: str, loc: Loc) -> str:
        """The file a list line names: from the list's folder, then from the working directory;
        a missing or non-regular file is an error at the line."""
        candidates = [entry] if os.path.isabs(entry) else [os.path.join(base, entry), entry]
        found = next((c for c in candidates if os.path.lexists(c)), None)
        if found is None:
            raise TidlcError(f"no such file '{entry[:200]}'", loc, hint="relative paths start from the list "
                             "file's folder", code="input")
        if os.path.abspath(found) == os.path.abspath(self.path):
            raise TidlcError("the list file names itself", loc, code="input")
        try:
            check_regular(found, "calibration file")
        except TidlcError as exc:
            raise TidlcError(f"'{entry[:200]}' {exc.message}", loc, hint=exc.hint, code=exc.code) from None
        return found

    def _single_spec(self) -> InputSpec:
        if len(self.specs) != 1:
            raise TidlcError(f"the model has {len(self.specs)} inputs; images and .npy frames feed one",
                             self.path, hint="pass an .npz with one stacked array per input name", code="input")
        return self.specs[0]

    def __len__(self) -> int:
        return len(self.items) if self.limit is None else min(self.limit, len(self.items))

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for number, (kind, item) in enumerate(self.items[:len(self)], 1):
            if kind == "stack":
                frame = {self._single_spec().name: np.asarray(self.stack[item], np.float32)}
            elif kind == "npz":
                frame = {s.name: np.asarray(self.arrays[s.name][item], np.float32).reshape(s.shape)
                         for s in self.specs}
            elif kind == "images":  # one image per slot of the batch
                frame = {self._single_spec().name: np.concatenate([self.load_file(p) for p in item])}
                item = item[0]
            else:
                frame = {self._single_spec().name: self.load_file(item)}
            for name, x in frame.items():
                if not np.isfinite(x).all():  # NaN/inf would make every range (and scale) meaningless
                    raise TidlcError(f"calibration frame {number} ('{name}') holds NaN or infinite values",
                                     item if kind in ("file", "images") else self.path, code="input")
            yield frame

    def load_file(self, path: str) -> np.ndarray:
        spec = self._single_spec()
        if path.lower().endswith(".npy"):
            arr = load_array(path, "calibration .npy")
            if arr.size != _size(spec.shape):
                raise TidlcError(f"array of shape {list(arr.shape)}, the input '{spec.name}' is {list(spec.shape)}",
                                 path, code="input")
            return np.asarray(arr, dtype=np.float32).reshape(spec.shape)
        channels = _chw(spec.shape, spec.layout)[0]
        return self.preprocess.apply(read_image(path, channels), (1, *spec.shape[1:]), spec.layout)


CALIB_HINT = "--calib takes a list file, a folder of images or .npy files, a .npy or an .npz"


def _size(shape) -> int:
    return int(np.prod(shape, dtype=object))  # Python integers: no overflow


def _synthetic_image(rng: np.random.Generator, spec: InputSpec, preprocess: Preprocess) -> np.ndarray:
    """One smooth random image for a 4-D input, as a batch-1 tensor (see :func:`synthetic_frames`)."""
    import cv2
    shape = (1, *spec.shape[1:])
    channels, height, width = _chw(shape, spec.layout)
    coarse = rng.uniform(0, 255, (max(height // 8, 2), max(width // 8, 2), channels)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.float32)
    image = image.reshape(height, width, channels)
    if spec.dtype[0] in "iu":  # a fixed-point input: the image spread over the type's range
        info = np.iinfo(spec.dtype.replace("i", "int").replace("u", "uint"))
        pixels = np.ascontiguousarray(image.transpose(2, 0, 1)[None] if spec.layout != "NHWC" else image[None])
        return np.round(info.min + pixels / 255.0 * (info.max - info.min)).reshape(shape)
    if preprocess.mean or preprocess.scale:
        x = preprocess.apply(image.astype(np.uint8).squeeze(), shape, spec.layout) if channels in (1, 3) else image
    else:
        x = image / 127.5 - 1.0
        x = x.transpose(2, 0, 1)[None] if spec.layout != "NHWC" else x[None]
    return np.ascontiguousarray(x, dtype=np.float32).reshape(shape)


def synthetic_frames(specs: list[InputSpec], count: int, preprocess: Preprocess = Preprocess(),
                     seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Smooth random images (low-frequency noise, 0..255), pre-processed like real ones.

    Without a mean/scale the pixels are mapped to [-1, 1]. Only a stand-in: the
    ranges real data gives can be quite different (hence the warning).
    """
    rng = np.random.default_rng(seed)
    for _ in range(count):
        frame = {}
        for spec in specs:
            if len(spec.shape) == 4:  # one image per slot of the batch
                frame[spec.name] = np.concatenate([_synthetic_image(rng, spec, preprocess)
                                                   for _ in range(max(spec.shape[0], 1))])
            else:
                frame[spec.name] = rng.uniform(-1, 1, spec.shape).astype(np.float32)
        yield frame
