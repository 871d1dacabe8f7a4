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

import os
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import numpy as np

from tidlc.diagnostics import TidlcError

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
    def from_options(cls, options: Any) -> Preprocess:
        return cls(mean=getattr(options, "mean", ()) or (), scale=getattr(options, "scale", ()) or (),
                   resize=getattr(options, "resize", None), crop=getattr(options, "crop", None),
                   channel_order=getattr(options, "channel_order", None) or "rgb")

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
    import cv2
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    image = cv2.imread(path, flag)
    if image is None:
        raise TidlcError("cannot read image", path, hint="a PNG/JPEG/BMP file, or pre-processed .npy")
    return image


# ----------------------------------------------------------------------------- frames
@attrs.define
class InputSpec:
    name: str
    shape: tuple[int, ...]
    layout: str | None
    dtype: str = "f32"


def input_specs(graph) -> list[InputSpec]:
    specs = []
    for op in graph.input_ops:
        t = op.results[0].type
        if not t.is_static:
            raise TidlcError(f"input '{op.attrs['name']}' has a dynamic shape", hint="give --input-shape NAME=d0,d1,...")
        specs.append(InputSpec(op.attrs["name"], tuple(t.shape), t.layout, t.dtype))
    return specs


class FrameSource:
    """Calibration frames from ``--calib DATA`` (see the module docstring)."""

    def __init__(self, path: str, specs: list[InputSpec], preprocess: Preprocess = Preprocess(),
                 limit: int | None = None):
        if not os.path.exists(path):
            raise TidlcError("no such file or folder", path, hint="--calib takes a list file, a folder or a .npy")
        self.path = path
        self.specs = specs
        self.preprocess = preprocess
        self.limit = limit
        self.items = self._items()

    def _items(self) -> list:
        path = self.path
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES + (".npy",)))
            if not names:
                raise TidlcError("no images or .npy files in the folder", path)
            return [("file", os.path.join(path, n)) for n in names]
        lower = path.lower()
        if lower.endswith(".npz"):
            with np.load(path, allow_pickle=False) as data:
                missing = [s.name for s in self.specs if s.name not in data.files]
                if missing:
                    raise TidlcError(f".npz has no array for input(s) {', '.join(missing)}", path)
                counts = {data[s.name].shape[0] for s in self.specs}
            if len(counts) != 1:
                raise TidlcError("the .npz arrays hold different numbers of frames", path)
            return [("npz", i) for i in range(counts.pop())]
        if lower.endswith(".npy"):
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            return [("stack", i) for i in range(self._stack_frames(arr))]
        if lower.endswith(IMAGE_SUFFIXES):
            return [("file", path)]
        return self._list_file(path)

    def _stack_frames(self, arr) -> int:
        spec = self._single_spec()
        if arr.ndim == len(spec.shape) + 1:
            return arr.shape[0]
        if arr.ndim == len(spec.shape) and arr.shape[0] == spec.shape[0]:
            return 1 if tuple(arr.shape) == spec.shape else arr.shape[0] // max(spec.shape[0], 1)
        raise TidlcError(f"array of shape {list(arr.shape)} does not hold frames of {list(spec.shape)}", self.path)

    def _list_file(self, path: str) -> list:
        base = os.path.dirname(os.path.abspath(path))
        items = []
        try:
            with open(path, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise TidlcError(f"cannot read the list file: {exc}", path,
                             hint="a text file with one 'path [label]' per line") from None
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            entry = line.split()[0]
            candidates = [entry] if os.path.isabs(entry) else [os.path.join(base, entry), entry]
            found = next((c for c in candidates if os.path.isfile(c)), None)
            if found is None:
                raise TidlcError(f"line {number}: no such file '{entry}'", path)
            items.append(("file", found))
        if not items:
            raise TidlcError("the list file names no files", path)
        return items

    def _single_spec(self) -> InputSpec:
        if len(self.specs) != 1:
            raise TidlcError(f"the model has {len(self.specs)} inputs; images and .npy frames feed one",
                             self.path, hint="pass an .npz with one stacked array per input name")
        return self.specs[0]

    def __len__(self) -> int:
        return len(self.items) if self.limit is None else min(self.limit, len(self.items))

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        stack = None
        npz = None
        try:
            for kind, item in self.items[:len(self)]:
                if kind == "stack":
                    if stack is None:
                        stack = np.load(self.path, mmap_mode="r", allow_pickle=False)
                    yield {self._single_spec().name: self._frame(stack, item)}
                elif kind == "npz":
                    if npz is None:
                        npz = np.load(self.path, allow_pickle=False)
                    yield {s.name: np.asarray(npz[s.name][item:item + 1], np.float32).reshape(s.shape)
                           for s in self.specs}
                else:
                    yield {self._single_spec().name: self.load_file(item)}
        finally:
            if npz is not None:
                npz.close()

    def _frame(self, stack, i: int) -> np.ndarray:
        spec = self._single_spec()
        if stack.ndim == len(spec.shape) + 1:
            return np.asarray(stack[i], dtype=np.float32).reshape(spec.shape)
        n = spec.shape[0]
        return np.asarray(stack[i * n:(i + 1) * n], dtype=np.float32).reshape(spec.shape)

    def load_file(self, path: str) -> np.ndarray:
        spec = self._single_spec()
        if path.lower().endswith(".npy"):
            arr = np.load(path, allow_pickle=False)
            if arr.size != int(np.prod(spec.shape)):
                raise TidlcError(f"array of shape {list(arr.shape)}, the input '{spec.name}' is {list(spec.shape)}", path)
            return np.asarray(arr, dtype=np.float32).reshape(spec.shape)
        channels = _chw(spec.shape, spec.layout)[0]
        return self.preprocess.apply(read_image(path, channels), spec.shape, spec.layout)


def synthetic_frames(specs: list[InputSpec], count: int, preprocess: Preprocess = Preprocess(),
                     seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Smooth random images (low-frequency noise, 0..255), pre-processed like real ones.

    Without a mean/scale the pixels are mapped to [-1, 1]. Only a stand-in: the
    ranges real data gives can be quite different (hence the warning).
    """
    import cv2
    rng = np.random.default_rng(seed)
    for _ in range(count):
        frame = {}
        for spec in specs:
            if len(spec.shape) == 4:
                channels, height, width = _chw(spec.shape, spec.layout)
                coarse = rng.uniform(0, 255, (max(height // 8, 2), max(width // 8, 2), channels)).astype(np.float32)
                image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
                image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.float32)
                image = image.reshape(height, width, channels)
                if preprocess.mean or preprocess.scale:
                    x = preprocess.apply(image.astype(np.uint8).squeeze(), spec.shape, spec.layout) \
                        if channels in (1, 3) else image
                else:
                    x = image / 127.5 - 1.0
                    x = x.transpose(2, 0, 1)[None] if spec.layout != "NHWC" else x[None]
                frame[spec.name] = np.ascontiguousarray(x, dtype=np.float32).reshape(spec.shape)
                if spec.dtype[0] in "iu":  # a fixed-point input: the image spread over the type's range
                    info = np.iinfo(spec.dtype.replace("i", "int").replace("u", "uint"))
                    pixels = np.ascontiguousarray(image.reshape(height, width, channels).transpose(2, 0, 1)[None]
                                                  if spec.layout != "NHWC" else image[None])
                    frame[spec.name] = np.round(info.min + pixels / 255.0 * (info.max - info.min)).reshape(spec.shape)
            else:
                frame[spec.name] = rng.uniform(-1, 1, spec.shape).astype(np.float32)
        yield frame
