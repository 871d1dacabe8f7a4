"""Caffe ``.caffemodel`` weights, read with a small protobuf wire-format reader.

A .caffemodel is a binary ``caffe.NetParameter``. We need only a few of its
fields, so instead of compiling caffe.proto we walk the wire format ourselves
(field numbers checked against BVLC caffe.proto)::

    NetParameter      name = 1 (string), layer = 100 (LayerParameter), layers = 2 (V1)
    LayerParameter    name = 1, type = 2 (string), blobs = 7 (BlobProto)
    V1LayerParameter  name = 4, type = 5 (enum LayerType), blobs = 6, layer = 1 (V0, unsupported)
    BlobProto         shape = 7 (BlobShape), data = 5 (float), double_data = 8 (double),
                      num = 1, channels = 2, height = 3, width = 4 (legacy 4-D shape)
    BlobShape         dim = 1 (int64)

Floats are decoded with ``numpy.frombuffer`` whether packed or not (an
unpacked run is a fixed 5- or 9-byte stride), so a 240 MB AlexNet loads at
memory speed. Every length and count is checked against the bytes actually
present before it is used: a corrupt or truncated file raises
:class:`TidlcError` naming the file and the byte offset, and never allocates
more than the file holds.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from math import prod
from pathlib import Path

import attrs
import numpy as np

from tidlc import fileio, limits
from tidlc.diagnostics import Loc, TidlcError

from .netspec import v1_layer_type

__all__ = ["CaffeWeights", "LayerWeights", "read_caffemodel", "sniff_caffemodel"]

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_MAX_AXES = 32  # caffe::kMaxBlobAxes


@attrs.define(eq=False)
class LayerWeights:
    """The blobs of one layer. ``offset`` is where the layer starts in the file."""

    name: str
    type: str
    blobs: list[np.ndarray]
    offset: int


class CaffeWeights(Mapping[str, list[np.ndarray]]):
    """Layer name -> list of float32 blobs (in Caffe's order: weights, bias, ...).

    Every layer of the file is present, also those without blobs. If a name
    occurs twice the later layer wins, as when Caffe copies trained layers.
    """

    def __init__(self, path: str, name: str, layers: dict[str, LayerWeights]):
        self.path = path
        self.name = name
        self.layers = layers

    def __getitem__(self, name: str) -> list[np.ndarray]:
        return self.layers[name].blobs

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def type_of(self, name: str) -> str:
        """The layer's V2 type string (V1 enum types are mapped, e.g. "Convolution")."""
        return self.layers[name].type

    def blob(self, layer: str, index: int, shape: tuple[int, ...] | None = None,
             loc: Loc | None = None) -> np.ndarray:
        """Blob ``index`` of ``layer``, or a TidlcError saying what is missing.

        With ``shape``, a blob holding the same number of values is reshaped to
        it (legacy 4-D blobs such as (1, 1, Cout, Cin) for InnerProduct);
        otherwise the mismatch is an error at ``loc`` (the prototxt layer).
        """
        entry = self.layers.get(layer)
        where = loc or Loc(name=layer, file=self.path)
        if entry is None or index >= len(entry.blobs):
            have = 0 if entry is None else len(entry.blobs)
            raise TidlcError(f"weights file has {have} blob(s) for layer '{layer}', "
                             f"blob {index} is needed", loc=where,
                             hint=f"is {Path(self.path).name} the caffemodel of this prototxt?")
        array = entry.blobs[index]
        if shape is None or tuple(array.shape) == tuple(shape):
            return array
        if array.size == prod(shape):
            return array.reshape(shape)
        raise TidlcError(f"blob {index} of layer '{layer}' has shape {tuple(array.shape)}, "
                         f"expected {tuple(shape)}", loc=where)


def sniff_caffemodel(head: bytes) -> bool:
    """True if ``head`` (the first bytes of a file) starts like a binary NetParameter."""
    # First field: name (tag 0x0a), V1 layers (0x12) or layer (0xa2 0x06).
    return head[:1] in (b"\x0a", b"\x12") or head[:2] == b"\xa2\x06"


def read_caffemodel(path: str | Path) -> CaffeWeights:
    """Read the layer blobs of a binary .caffemodel (V2 ``layer`` or V1 ``layers``)."""
    return _Reader(fileio.read_bytes(str(path), "caffemodel"), str(path)).net()


class _Reader:
    """Protobuf wire-format walker over ``data``; spans are [start, end) byte offsets."""

    def __init__(self, data: bytes, path: str):
        self.data = data
        self.path = path
        self.blob_count = 0
        self.total_bytes = 0  # of the float32 blobs made so far

    def fail(self, what: str, offset: int) -> TidlcError:
        hint = "the file is damaged, truncated or not a .caffemodel"
        head = self.data[:256]
        if head.startswith(b"\x89HDF"):
            hint = "this is an HDF5 file (.caffemodel.h5); convert it to a binary caffemodel"
        elif head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
            hint = "this looks like a text file; is it the .prototxt?"
        return TidlcError(f"corrupt caffemodel: {what} at byte {offset}",
                          loc=Loc(file=self.path), hint=hint, code="corrupt")

    # -- primitives ------------------------------------------------------------------------

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        data, start, result, shift = self.data, pos, 0, 0
        while True:
            if pos >= end:
                raise self.fail("truncated varint", start)
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                if result >> 64:
                    raise self.fail("varint overflows 64 bits", start)
                return result, pos
            shift += 7
            if shift >= 70:
                raise self.fail("varint longer than 10 bytes", start)

    def field(self, pos: int, end: int) -> tuple[int, int, int, int, int]:
        """Read one field at ``pos``: (number, wire type, a, b, next pos).

        For a varint, ``a`` is its value; otherwise [a, b) is the payload span.
        """
        key, body = self.varint(pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise self.fail("field number 0", pos)
        if wire == _VARINT:
            value, after = self.varint(body, end)
            return number, wire, value, after, after
        if wire == _BYTES:
            length, body = self.varint(body, end)
            size = 0
        elif wire in (_FIXED64, _FIXED32):
            length = size = 8 if wire == _FIXED64 else 4
        else:
            raise self.fail(f"unsupported wire type {wire} (field {number})", pos)
        if length > end - body:
            what = "length-delimited" if not size else f"{size * 8}-bit"
            raise self.fail(f"{what} field {number} needs {length} bytes but only "
                            f"{end - body} remain", pos)
        return number, wire, body, body + length, body + length

    def expect(self, number: int, wire: int, wanted: int, what: str, pos: int) -> None:
        if wire != wanted:
            raise self.fail(f"{what} (field {number}) has wire type {wire}, expected {wanted}", pos)

    def text(self, start: int, end: int, what: str) -> str:
        limits.check("string", end - start, what, Loc(file=self.path, offset=start))
        try:
            return self.data[start:end].decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8", start) from None

    @staticmethod
    def signed(value: int) -> int:
        return value - (1 << 64) if value >> 63 else value

    # -- messages --------------------------------------------------------------------------

    def net(self) -> CaffeWeights:
        pos, end = 0, len(self.data)
        name, layers, count = "", {}, 0
        while pos < end:
            number, wire, a, b, next_pos = self.field(pos, end)
            if number == 1:
                self.expect(number, wire, _BYTES, "net name", pos)
                name = self.text(a, b, "net name")
            elif number in (100, 2):
                self.expect(number, wire, _BYTES, "layer", pos)
                count += 1  # an empty layer is 3 bytes: count them before they pile up
                limits.check("ops", count, "caffemodel layers", Loc(file=self.path, offset=pos))
                layer = self.layer(a, b, legacy=number == 2)
                layers[layer.name] = layer
            pos = next_pos
        if not layers:
            raise TidlcError("caffemodel contains no layers", loc=Loc(file=self.path),
                             hint="is this a .caffemodel (binary NetParameter)?")
        return CaffeWeights(self.path, name, layers)

    def layer(self, start: int, end: int, legacy: bool) -> LayerWeights:
        name_field, type_field, blobs_field = (4, 5, 6) if legacy else (1, 2, 7)
        pos, name, layer_type, blobs = start, "", "", []
        while pos < end:
            number, wire, a, b, next_pos = self.field(pos, end)
            if number == name_field:
                self.expect(number, wire, _BYTES, "layer name", pos)
                name = self.text(a, b, "layer name")
            elif number == type_field and legacy:
                self.expect(number, wire, _VARINT, "V1 layer type", pos)
                layer_type = v1_layer_type(a) or f"V1LayerType({a})"
            elif number == type_field:
                self.expect(number, wire, _BYTES, "layer type", pos)
                layer_type = self.text(a, b, "layer type")
            elif number == blobs_field:
                self.expect(number, wire, _BYTES, "blob", pos)
                blobs.append((pos, a, b))
                self.blob_count += 1  # an empty blob is 2 bytes: count them too
                limits.check("ops", self.blob_count, "caffemodel blobs",
                             Loc(file=self.path, offset=pos))
            elif number == 1 and legacy:
                raise TidlcError("caffemodel uses V0 layers, which tidlc does not read",
                                 loc=Loc(file=self.path),
                                 hint="upgrade it with Caffe's upgrade_net_proto_binary tool")
            pos = next_pos
        label = name or f"#{start}"
        arrays = [self.blob(a, b, f"blob {i} of layer '{label}'", tag_pos)
                  for i, (tag_pos, a, b) in enumerate(blobs)]
        return LayerWeights(name, layer_type, arrays, start)

    def blob(self, start: int, end: int, what: str, offset: int) -> np.ndarray:
        pos = start
        dims: list[int] | None = None
        legacy: dict[int, int] = {}
        values = {5: _Values(self.data, "<f4"), 8: _Values(self.data, "<f8")}  # data, double_data
        while pos < end:
            number, wire, a, b, next_pos = self.field(pos, end)
            if number == 7:
                self.expect(number, wire, _BYTES, "blob shape", pos)
                dims = (dims or []) + self.shape(a, b)
                if len(dims) > _MAX_AXES:  # several shape fields add up
                    raise self.fail(f"blob shape has more than {_MAX_AXES} dimensions", pos)
            elif number in values:
                next_pos = self.data_field(values[number], number, wire, pos, a, b, end)
            elif number in (1, 2, 3, 4):
                self.expect(number, wire, _VARINT, "legacy blob dimension", pos)
                legacy[number] = self.signed(a)
            pos = next_pos
        # Like caffe::Blob::FromProto: any legacy dimension means a 4-D legacy shape.
        shape = tuple(legacy.get(i, 0) for i in (1, 2, 3, 4)) if legacy else tuple(dims or ())
        if any(d < 0 for d in shape):
            raise self.fail(f"{what} has a negative dimension {shape}", offset)
        # Like caffe::Blob::FromProto: double_data wins when present.
        array = (values[8] if values[8].count else values[5]).array()
        if array.size != prod(shape):
            raise self.fail(f"{what} has {array.size} values but its shape {shape} "
                            f"needs {prod(shape)}", offset)
        where = Loc(file=self.path, offset=offset)
        limits.check_shape(shape, 4, what, where)
        self.total_bytes += 4 * array.size
        limits.check("total_bytes", self.total_bytes, "the blobs of the caffemodel", where)
        return array.astype(np.float32).reshape(shape)

    def data_field(self, values: _Values, number: int, wire: int, pos: int, a: int, b: int,
                   end: int) -> int:
        """Add one ``data`` / ``double_data`` field at ``pos`` (packed, or the start of a run of
        unpacked values) to ``values``; return where the next field starts."""
        size = values.itemsize
        if wire == _BYTES:
            if (b - a) % size:
                raise self.fail(f"packed {values.dtype} data of {b - a} bytes is not a "
                                f"multiple of {size}", pos)
            values.add_span(a, b)
            return b
        self.expect(number, wire, _FIXED32 if size == 4 else _FIXED64, "blob data", pos)
        if not self.data.startswith(self.data[pos:a], b):  # a lone value: no run to look for
            values.add_bytes(memoryview(self.data)[a:b])
            return b
        run, after = self.unpacked(pos, a, end, size)
        values.add_bytes(run)
        return after

    def shape(self, start: int, end: int) -> list[int]:
        pos, dims = start, []
        while pos < end:
            number, wire, a, b, next_pos = self.field(pos, end)
            if number == 1:
                if wire == _BYTES:  # packed
                    while a < b:
                        value, a = self.varint(a, b)
                        dims.append(self.signed(value))
                        if len(dims) > _MAX_AXES:
                            break
                else:
                    self.expect(number, wire, _VARINT, "blob dimension", pos)
                    dims.append(self.signed(a))
                if len(dims) > _MAX_AXES:
                    raise self.fail(f"blob shape has more than {_MAX_AXES} dimensions", start)
            pos = next_pos
        return dims

    def unpacked(self, pos: int, body: int, end: int, size: int) -> tuple[bytes, int]:
        """The value bytes of a run of unpacked repeated floats/doubles whose first tag spans
        [pos, body), and where the run ends.

        Each element is the same tag plus ``size`` bytes, so the run is a
        (rows, tag + size) byte matrix; it ends at the first row that does not
        start with the tag. The caller has checked that the first element is
        whole. The end is searched in doubling windows, so many short runs in
        one blob cost time linear in the blob, not quadratic.
        """
        width = body - pos
        stride = width + size
        tag = np.frombuffer(self.data, np.uint8, width, pos)
        rows = (end - pos) // stride
        matrix = np.frombuffer(self.data, np.uint8, rows * stride, pos).reshape(rows, stride)
        count, window = 0, 64
        while count < rows:
            limit = min(rows, count + window)
            not_tag = np.flatnonzero((matrix[count:limit, :width] != tag).any(axis=1))
            if not_tag.size:
                count += int(not_tag[0])
                break
            count, window = limit, window * 2
        return matrix[:count, width:].tobytes(), pos + count * stride


class _Values:
    """The values of one repeated float field of a blob, in file order. A single packed field
    stays a view of the file; pieces (several fields, unpacked runs) are copied into one buffer,
    so memory stays within the size of the file and no Python object is made per value."""

    def __init__(self, data: bytes, dtype: str):
        self.data = data
        self.dtype = dtype
        self.itemsize = np.dtype(dtype).itemsize
        self.span: tuple[int, int] | None = None  # the only piece so far, in the file
        self.buffer: bytearray | None = None

    @property
    def count(self) -> int:
        if self.buffer is not None:
            return len(self.buffer) // self.itemsize
        return 0 if self.span is None else (self.span[1] - self.span[0]) // self.itemsize

    def add_span(self, start: int, stop: int) -> None:
        if self.span is None and self.buffer is None:
            self.span = (start, stop)
        else:
            self.add_bytes(memoryview(self.data)[start:stop])

    def add_bytes(self, piece) -> None:
        if self.buffer is None:
            self.buffer = bytearray()
            if self.span is not None:
                self.buffer += memoryview(self.data)[self.span[0]:self.span[1]]
                self.span = None
        self.buffer += piece

    def array(self) -> np.ndarray:
        if self.buffer is not None:
            return np.frombuffer(self.buffer, self.dtype)
        if self.span is not None:
            return np.frombuffer(self.data, self.dtype, self.count, self.span[0])
        return np.zeros(0, self.dtype)
