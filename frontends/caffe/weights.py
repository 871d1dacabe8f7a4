"""Where a Caffe layer's blobs come from: a caffemodel, seeded random values, or nothing.

Converters ask for blob ``index`` of a layer with the shape the prototxt
implies (:meth:`WeightSource.blob`); every source records what it handed out
in ``used`` (Caffe's layout, by layer name), which is what a test writes
back into a caffemodel to run the same net in another framework.

* :class:`FileWeights` matches blobs to layers by name, like Caffe's
  ``CopyTrainedLayersFrom``. A missing layer or blob, or a blob of the wrong
  size, is recorded as a problem (all are reported together after lowering);
  layers of the caffemodel that the prototxt does not have are ignored.
* :class:`RandomWeights` draws each blob from a generator seeded by the seed,
  the layer name and the blob index, so a blob does not depend on the order
  of conversion. Distributions keep activations in a sane range (He-scaled
  weights, positive variances, slopes in [0, 0.3]). A blob of more than 4M
  values repeats its first 4M (time), and all blobs together stay within the
  total-bytes limit (memory).
* :class:`ZeroWeights` (structure-only mode) returns zero splats:
  ``np.broadcast_to(np.float32(0), shape)`` costs no memory.
"""
from __future__ import annotations

import zlib
from math import prod
from pathlib import Path

import numpy as np

from tidlc import limits

from .caffemodel import CaffeWeights
from .netspec import LayerSpec


def zero_splat(shape) -> np.ndarray:
    return np.broadcast_to(np.float32(0), tuple(shape))


class WeightSource:
    """Base class: records the blobs handed out and the problems found."""

    path = ""  # the file the blobs come from, if any

    def __init__(self) -> None:
        self.used: dict[str, dict[int, np.ndarray]] = {}
        self.problems: list[str] = []

    def blob(self, layer: LayerSpec, index: int, shape: tuple[int, ...], role: str) -> np.ndarray:
        array = self._blob(layer, index, shape, role)
        self.used.setdefault(layer.name, {})[index] = array
        return array

    def _blob(self, layer: LayerSpec, index: int, shape: tuple[int, ...], role: str) -> np.ndarray:
        raise NotImplementedError

    def available(self, layer_name: str) -> int | None:
        """How many blobs the source holds for a layer (None: any number, generated)."""
        return None

    def blobs_in_caffe_layout(self) -> dict[str, list[np.ndarray]]:
        """The blobs handed out, per layer, in index order (for writing a caffemodel)."""
        return {name: [np.ascontiguousarray(blobs[i], np.float32) for i in sorted(blobs)]
                for name, blobs in self.used.items()}


class ZeroWeights(WeightSource):
    """Structure only: every blob is a zero splat."""

    def _blob(self, layer, index, shape, role):
        return zero_splat(shape)


_ROLES = ("weight", "bias", "mean", "var", "factor", "gamma", "beta", "slope")


class RandomWeights(WeightSource):
    """Seeded random blobs, independent of the order in which layers ask for them."""

    def __init__(self, seed: int):
        super().__init__()
        self.seed = int(seed)
        self.total = 0  # bytes of the blobs made so far

    def _blob(self, layer, index, shape, role):
        if role not in _ROLES:
            raise ValueError(f"unknown blob role {role!r}")
        self.count_bytes(layer, shape)
        key = [self.seed & 0xFFFFFFFF, zlib.crc32(layer.name.encode()), index]
        rng = np.random.default_rng(key)
        if role == "weight":
            fan_in = max(1, prod(shape[1:]) if len(shape) > 1 else 1)
            return _draw(shape, lambda n: rng.normal(0.0, np.sqrt(2.0 / fan_in), n))
        if role == "factor":
            return np.ones(shape, np.float32)
        low, high = _UNIFORM.get(role, (None, None))
        if low is None:  # mean
            return _draw(shape, lambda n: rng.normal(0.0, 0.1, n))
        return _draw(shape, lambda n: rng.uniform(low, high, n))

    def count_bytes(self, layer: LayerSpec, shape: tuple[int, ...]) -> None:
        """All blobs made together stay within the total-bytes limit (each one is checked by
        the converter against the tensor limits)."""
        self.total += 4 * prod(shape)
        limits.check("total_bytes", self.total, "the random weights of the net", layer.loc)


_UNIFORM = {"bias": (-0.1, 0.1), "beta": (-0.1, 0.1), "var": (0.5, 1.5), "gamma": (0.8, 1.2),
            "slope": (0.0, 0.3)}
_PERIOD = 1 << 22  # values drawn for one blob; a bigger blob repeats them


def _draw(shape: tuple[int, ...], draw) -> np.ndarray:
    """A float32 blob of ``draw(n)`` values (float64). A blob of more than 4M values repeats
    its first 4M: drawing the hundreds of millions of normal values a hostile (or just huge)
    prototxt declares would take a minute, and exploring a structure needs no more."""
    size = prod(shape)
    out = np.empty(size, np.float32)
    out[:_PERIOD] = draw(min(size, _PERIOD))
    filled = min(size, _PERIOD)
    while filled < size:  # copy in doubling steps: memory speed
        count = min(filled, size - filled)
        out[filled:filled + count] = out[:count]
        filled += count
    return out.reshape(shape)


class FileWeights(WeightSource):
    """Blobs of a caffemodel; ``fallback`` (if any) fills layers the file does not have."""


    def __init__(self, weights: CaffeWeights, fallback: WeightSource | None = None):
        super().__init__()
        self.weights = weights
        self.path = weights.path
        self.fallback = fallback
        self.filled: list[str] = []  # layers the fallback had to fill

    def available(self, layer_name: str) -> int | None:
        if layer_name in self.weights:
            return len(self.weights[layer_name])
        return None if self.fallback is not None else 0

    def _blob(self, layer, index, shape, role):
        name = Path(self.weights.path).name
        where = layer.loc.where()
        if layer.name not in self.weights:
            if self.fallback is not None:
                if layer.name not in self.filled:
                    self.filled.append(layer.name)
                return self.fallback.blob(layer, index, shape, role)
            self._problem(f"{where}: '{layer.name}': {name} has no weights for this "
                          f"{layer.type} layer")
            return zero_splat(shape)
        blobs = self.weights[layer.name]
        if index >= len(blobs):
            self._problem(f"{where}: '{layer.name}': {name} has {len(blobs)} blob(s) for this "
                          f"{layer.type} layer, blob {index} ({role}, shape {list(shape)}) "
                          "is needed")
            return zero_splat(shape)
        array = blobs[index]
        if tuple(array.shape) == shape:
            return array
        if array.size == prod(shape):
            return array.reshape(shape)  # legacy 4-D blobs, e.g. (1, 1, N, K) for InnerProduct
        self._problem(f"{where}: '{layer.name}': blob {index} ({role}) in {name} has shape "
                      f"{list(array.shape)}, the prototxt implies {list(shape)}")
        return zero_splat(shape)

    def _problem(self, line: str) -> None:
        if line not in self.problems:
            self.problems.append(line)

    def check_counts(self, layers: list[LayerSpec]) -> None:
        """Extra blobs: layers of the prototxt whose caffemodel entry has more blobs than used."""
        name = Path(self.weights.path).name
        for layer in layers:
            if layer.name not in self.weights:
                continue
            have = len(self.weights[layer.name])
            used = len(self.used.get(layer.name, {}))
            if have > used:
                self._problem(f"{layer.loc.where()}: '{layer.name}': {name} has {have} blob(s) for "
                              f"this {layer.type} layer, the prototxt uses {used}")
