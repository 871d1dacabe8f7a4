"""Caffe .caffemodel reader: real weights, a protobuf cross-check, corrupt input."""
from __future__ import annotations

import random
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from tidlc.frontends.caffe.caffemodel import CaffeWeights, read_caffemodel, sniff_caffemodel
from tidlc.frontends.caffe.netspec import conv_params, load_netspec, pool_params

_tidlc_test_caffemodel_writer = sys.modules["tidlc_test_caffemodel_writer"]  # loaded from a file by tests/frontends/caffe/conftest.py
bfield = _tidlc_test_caffemodel_writer.bytes_field
varint = _tidlc_test_caffemodel_writer.varint

from tidlc.diagnostics import TidlcError

CORPUS = Path(__file__).resolve().parents[3].parent / "shared" / "corpus" / "caffe"
MODELS = sorted(CORPUS.glob("*/*.caffemodel")) if CORPUS.is_dir() else []
needs_corpus = pytest.mark.skipif(not MODELS, reason="shared corpus not available")
model_ids = [f"{p.parent.name}/{p.name}" for p in MODELS]


# ----------------------------------------------------------------------------- protobuf twin

def _protobuf_net_class(packed: bool):
    """NetParameter with the caffe.proto field numbers we read, built without a .proto file."""
    F = descriptor_pb2.FieldDescriptorProto
    package = f"tidlc_test_caffe_{'packed' if packed else 'unpacked'}"
    file = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package,
                                              syntax="proto2")

    def message(name, *fields):
        m = file.message_type.add(name=name)
        for field_name, number, kind, repeated, type_name in fields:
            f = m.field.add(name=field_name, number=number, type=kind,
                            label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if type_name:
                f.type_name = f".{package}.{type_name}"
            if repeated and kind not in (F.TYPE_STRING, F.TYPE_MESSAGE):
                f.options.packed = packed

    message("BlobShape", ("dim", 1, F.TYPE_INT64, True, None))
    message("BlobProto", ("shape", 7, F.TYPE_MESSAGE, False, "BlobShape"),
            ("data", 5, F.TYPE_FLOAT, True, None), ("diff", 6, F.TYPE_FLOAT, True, None),
            ("double_data", 8, F.TYPE_DOUBLE, True, None),
            ("num", 1, F.TYPE_INT32, False, None), ("channels", 2, F.TYPE_INT32, False, None),
            ("height", 3, F.TYPE_INT32, False, None), ("width", 4, F.TYPE_INT32, False, None))
    message("LayerParameter", ("name", 1, F.TYPE_STRING, False, None),
            ("type", 2, F.TYPE_STRING, False, None), ("bottom", 3, F.TYPE_STRING, True, None),
            ("top", 4, F.TYPE_STRING, True, None),
            ("blobs", 7, F.TYPE_MESSAGE, True, "BlobProto"))
    message("V1LayerParameter", ("bottom", 2, F.TYPE_STRING, True, None),
            ("top", 3, F.TYPE_STRING, True, None), ("name", 4, F.TYPE_STRING, False, None),
            ("type", 5, F.TYPE_INT32, False, None),
            ("blobs", 6, F.TYPE_MESSAGE, True, "BlobProto"))
    message("NetParameter", ("name", 1, F.TYPE_STRING, False, None),
            ("input", 3, F.TYPE_STRING, True, None),
            ("layers", 2, F.TYPE_MESSAGE, True, "V1LayerParameter"),
            ("layer", 100, F.TYPE_MESSAGE, True, "LayerParameter"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.NetParameter"))


NetPacked = _protobuf_net_class(packed=True)
NetUnpacked = _protobuf_net_class(packed=False)


def protobuf_blobs(data: bytes) -> dict[str, list[np.ndarray]]:
    """Decode with google.protobuf and apply caffe::Blob::FromProto's shape rules."""
    net = NetPacked.FromString(data)
    result = {}
    for layer in list(net.layers) + list(net.layer):
        arrays = []
        for blob in layer.blobs:
            legacy = [blob.HasField(f) for f in ("num", "channels", "height", "width")]
            shape = ((blob.num, blob.channels, blob.height, blob.width) if any(legacy)
                     else tuple(blob.shape.dim))
            values = blob.double_data if len(blob.double_data) else blob.data
            arrays.append(np.asarray(values, np.float32).reshape(shape))
        result[layer.name] = arrays
    return result


def write(tmp_path: Path, data: bytes, name: str = "m.caffemodel") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------- own encoder

def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def vfield(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def packed_floats(number: int, values) -> bytes:
    return bfield(number, np.asarray(values, "<f4").tobytes())


def shape(*dims: int) -> bytes:
    return bfield(7, bfield(1, b"".join(varint(d) for d in dims)))


def v2_layer(name: str, *blobs: bytes, layer_type: str = "Convolution") -> bytes:
    body = bfield(1, name.encode()) + bfield(2, layer_type.encode())
    return bfield(100, body + b"".join(bfield(7, b) for b in blobs))


# ----------------------------------------------------------------------------- corpus

@needs_corpus
@pytest.mark.parametrize("path", MODELS, ids=model_ids)
def test_corpus_caffemodel_matches_protobuf(path):
    weights = read_caffemodel(path)
    expected = protobuf_blobs(path.read_bytes())
    assert list(weights) == list(expected)
    for name, arrays in expected.items():
        got = weights[name]
        assert len(got) == len(arrays)
        for mine, theirs in zip(got, arrays):
            assert mine.dtype == np.float32 and mine.shape == theirs.shape
            assert np.array_equal(mine, theirs) and mine.flags.writeable


def _prototxt_for(model: Path) -> Path:
    same_stem = model.with_suffix(".prototxt")
    if same_stem.exists():
        return same_stem
    (only,) = model.parent.glob("*.prototxt")
    return only


def _input_shapes(net) -> dict[str, tuple | None]:
    """Layer name -> (C, H, W) of its first bottom, for the plain CNN layers in the corpus."""
    shapes: dict[str, tuple | None] = {i.name: tuple(i.shape[1:]) for i in net.inputs}
    layer_inputs = {}
    for layer in net.layers:
        ins = [shapes.get(b) for b in layer.bottom]
        first = ins[0] if ins else None
        out: tuple | None = None
        if layer.type in ("Convolution", "Pooling") and first is not None and len(first) == 3:
            c, h, w = first
            if layer.type == "Convolution":
                p = conv_params(layer.param("convolution_param"))
                size = [(n + 2 * pad - (d * (k - 1) + 1)) // s + 1 for n, k, s, pad, d in
                        zip((h, w), p.kernel, p.stride, p.pad, p.dilation)]
                out = (p.num_output, *size)
            else:
                p = pool_params(layer.param("pooling_param"))
                if p.global_pooling:
                    out = (c, 1, 1)
                else:
                    size = [-(-(n + 2 * pad - k) // s) + 1 for n, k, s, pad in
                            zip((h, w), p.kernel, p.stride, p.pad)]
                    out = (c, *size)
        elif layer.type == "InnerProduct":
            out = (layer.param("inner_product_param").get_int("num_output"),)
        elif layer.type == "Concat" and all(ins) and layer.param("concat_param").get_int(
                "axis", 1) == 1:
            out = (sum(s[0] for s in ins), *ins[0][1:])
        elif layer.type in ("ReLU", "PReLU", "Dropout", "BatchNorm", "Scale", "Eltwise",
                            "Softmax", "Sigmoid", "TanH", "LRN"):
            out = first
        for top in layer.top:
            shapes[top] = out
        if layer.type == "Slice" and first is not None:
            points = [0, *layer.param("slice_param").get_ints("slice_point"), first[0]]
            for top, lo, hi in zip(layer.top, points, points[1:]):
                shapes[top] = (hi - lo, *first[1:])
        layer_inputs[layer.name] = first
    return layer_inputs


@needs_corpus
@pytest.mark.parametrize("path", MODELS, ids=model_ids)
def test_corpus_blob_shapes_fit_their_prototxt(path):
    net = load_netspec(_prototxt_for(path))
    weights = read_caffemodel(path)
    input_shapes = _input_shapes(net)
    checked = 0
    for layer in net.layers:
        input_shape = input_shapes[layer.name]
        if layer.type in ("Convolution", "Deconvolution"):
            p = conv_params(layer.param("convolution_param"))
            weight = weights.blob(layer.name, 0, loc=layer.loc)
            cout, cin_per_group, kh, kw = weight.shape
            assert (cout, kh, kw) == (p.num_output, *p.kernel)
            if input_shape is not None:
                assert cin_per_group * p.group == input_shape[0]
            assert len(weights[layer.name]) == (2 if p.bias_term else 1)
            if p.bias_term:
                assert weights.blob(layer.name, 1, (p.num_output,)).shape == (p.num_output,)
            checked += 1
        elif layer.type == "InnerProduct":
            p = layer.param("inner_product_param")
            fan_in = int(np.prod(input_shape)) if input_shape else -1
            weight = weights.blob(layer.name, 0, (p.get_int("num_output"), fan_in)
                                  if fan_in > 0 else None)
            assert weight.shape[0] == p.get_int("num_output") or weight.ndim == 4
            assert weights.blob(layer.name, 1, (p.get_int("num_output"),)).ndim == 1
            checked += 1
        elif layer.type == "PReLU" and input_shape is not None:
            assert weights.blob(layer.name, 0).shape == (input_shape[0],)
            checked += 1
        if weights.get(layer.name):  # trained layers keep their type (deploy may rename loss)
            assert weights.type_of(layer.name) == layer.type
    assert checked >= 3
    # Every layer of the prototxt that learns parameters has them in the file (the
    # file may hold more: mtcnn det2 trains a landmark branch its deploy file omits).
    learned = ("Convolution", "Deconvolution", "InnerProduct", "PReLU", "BatchNorm", "Scale")
    assert all(weights.get(layer.name) for layer in net.layers if layer.type in learned)


@needs_corpus
def test_v1_caffemodel_types_and_legacy_shapes():
    weights = read_caffemodel(CORPUS / "cifar10_quick" / "cifar10_quick_iter_5000.caffemodel")
    assert weights.name == "CIFAR10_quick"
    assert weights.type_of("conv1") == "Convolution" and weights.type_of("ip1") == "InnerProduct"
    assert weights.type_of("pool1") == "Pooling" and weights.type_of("relu1") == "ReLU"
    assert [b.shape for b in weights["ip1"]] == [(1, 1, 64, 1024), (1, 1, 1, 64)]
    assert weights.blob("ip1", 0, (64, 1024)).shape == (64, 1024)
    with pytest.raises(TidlcError, match="has shape"):
        weights.blob("ip1", 0, (64, 1000))
    with pytest.raises(TidlcError, match="0 blob\\(s\\) for layer 'relu1', blob 0 is needed"):
        weights.blob("relu1", 0)
    with pytest.raises(TidlcError, match="for layer 'nope'"):
        weights.blob("nope", 0)
    with pytest.raises(TidlcError, match="is it the .prototxt"):
        read_caffemodel(CORPUS / "mtcnn" / "det1.prototxt")
    assert sniff_caffemodel((CORPUS / "mtcnn" / "det1.caffemodel").read_bytes()[:16])
    assert not sniff_caffemodel(b'name: "x"')


# ----------------------------------------------------------------------------- encodings

def test_packed_floats_doubles_legacy_and_v1_from_protobuf(tmp_path):
    net = NetPacked(name="hand")
    v1 = net.layers.add(name="old", type=4, bottom=["data"], top=["old"])
    legacy = v1.blobs.add(num=2, channels=1, height=1, width=3)
    legacy.data.extend([1, 2, 3, 4, 5, 6])
    v1.blobs.add(double_data=[0.5, -1.25], shape={"dim": [2]})
    v2 = net.layer.add(name="new", type="InnerProduct")
    v2.blobs.add(data=np.arange(12, dtype=np.float32), shape={"dim": [3, 4]})
    v2.blobs.add(data=[7.0])  # no shape at all: a scalar, as in Caffe
    weights = read_caffemodel(write(tmp_path, net.SerializeToString()))
    assert weights.name == "hand" and list(weights) == ["old", "new"]
    assert weights.type_of("old") == "Convolution" and weights.type_of("new") == "InnerProduct"
    old, doubles = weights["old"]
    assert old.shape == (2, 1, 1, 3) and old.ravel().tolist() == [1, 2, 3, 4, 5, 6]
    assert doubles.dtype == np.float32 and doubles.tolist() == [0.5, -1.25]
    matrix, scalar = weights["new"]
    assert np.array_equal(matrix, np.arange(12, dtype=np.float32).reshape(3, 4))
    assert scalar.shape == () and float(scalar) == 7.0


def test_unpacked_floats_doubles_and_dims_from_protobuf(tmp_path):
    net = NetUnpacked(name="u")
    layer = net.layer.add(name="l", type="Scale")
    values = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    layer.blobs.add(data=values, shape={"dim": [10, 100]})
    layer.blobs.add(double_data=[1e-3, 2.5, -7.0], shape={"dim": [3]})
    layer.blobs.add(data=[1.5], shape={"dim": [1]})
    data = net.SerializeToString()
    assert b"\x2d" + struct.pack("<f", values[1]) in data  # really unpacked
    weights = read_caffemodel(write(tmp_path, data))
    big, small, one = weights["l"]
    assert np.array_equal(big, values.reshape(10, 100))
    assert small.tolist() == np.float32([1e-3, 2.5, -7.0]).tolist() and one.tolist() == [1.5]
    assert {k: [a.tolist() for a in v] for k, v in protobuf_blobs(data).items()} == {
        "l": [a.tolist() for a in weights["l"]]}


def test_unknown_fields_chunks_and_non_canonical_tags(tmp_path):
    unknown = (vfield(50, 123) + key(51, 1) + b"\0" * 8 + key(52, 5) + b"\0" * 4
               + bfield(53, b"\xff" * 9))
    blob = (unknown + shape(2, 3) + packed_floats(5, [1, 2]) + unknown
            + packed_floats(5, [3, 4, 5, 6]) + packed_floats(6, [9] * 6))  # diff is ignored
    odd_tag = (b"\xad\x00" + struct.pack("<f", 8.0)  # field 5, fixed32, 2-byte tag
               + key(5, 5) + struct.pack("<f", 9.0))
    blob2 = shape(2) + odd_tag
    data = (bfield(1, b"net") + unknown + v2_layer("a", blob, blob2) + unknown
            + bfield(2, bfield(4, b"b") + vfield(5, 18) + unknown))
    weights = read_caffemodel(write(tmp_path, data))
    assert weights["a"][0].tolist() == [[1, 2, 3], [4, 5, 6]] and weights["a"][1].tolist() == [8, 9]
    assert weights.type_of("b") == "ReLU" and weights["b"] == []


def test_interleaved_unpacked_runs(tmp_path):
    def run(number, values):
        return b"".join(key(number, 5) + struct.pack("<f", v) for v in values)

    first, second = np.arange(150, dtype=np.float32), np.arange(70, dtype=np.float32) + 1000
    blob = shape(220) + run(5, first) + run(6, [7, 8, 9]) + run(5, second) + run(6, [1])
    weights = read_caffemodel(write(tmp_path, v2_layer("a", blob)))
    assert np.array_equal(weights["a"][0], np.concatenate([first, second]))


def test_legacy_dims_unpacked_shape_and_unknown_v1_type(tmp_path):
    blob = vfield(1, 1) + vfield(2, 2) + vfield(4, 2) + packed_floats(5, [])  # height missing: 0
    blob2 = bfield(7, vfield(1, 2) + vfield(1, 2)) + packed_floats(5, [1, 2, 3, 4])
    data = bfield(2, bfield(4, b"v1") + vfield(5, 77) + bfield(6, blob) + bfield(6, blob2))
    weights = read_caffemodel(write(tmp_path, data))
    assert [b.shape for b in weights["v1"]] == [(1, 2, 0, 2), (2, 2)]
    assert weights.type_of("v1") == "V1LayerType(77)"


def test_large_blob_is_fast(tmp_path):
    values = np.arange(16 << 20, dtype=np.float32)  # 64 MB of packed floats
    path = write(tmp_path, v2_layer("big", shape(16, 1 << 20) + packed_floats(5, values)))
    start = time.perf_counter()
    weights = read_caffemodel(path)
    assert time.perf_counter() - start < 5.0
    assert np.array_equal(weights["big"][0].ravel(), values)


# ----------------------------------------------------------------------------- corrupt input

def _error(tmp_path: Path, data: bytes) -> str:
    with pytest.raises(TidlcError) as info:
        read_caffemodel(write(tmp_path, data))
    return str(info.value)


@pytest.mark.parametrize("data, message", [
    (bfield(100, b"\x0a\x05ab"),
     "length-delimited field 1 needs 5 bytes but only 2 remain at byte 3"),
    (b"\xa2\x06" + b"\xff" * 11, "varint longer than 10 bytes at byte 2"),
    (b"\xa2", "truncated varint at byte 0"),
    (b"\x0b\x00", "unsupported wire type 3 (field 1) at byte 0"),
    (b"\x02\x00", "field number 0 at byte 0"),
    (bfield(100, b"\x3d\x00"), "32-bit field 7 needs 4 bytes but only 1 remain at byte 3"),
    (v2_layer("a", shape(2, 3) + packed_floats(5, [1, 2])),
     "blob 0 of layer 'a' has 2 values but its shape (2, 3) needs 6 at byte 19"),
    (v2_layer("a", shape(1 << 40, 1 << 40) + packed_floats(5, [1])),
     "needs 1208925819614629174706176"),
    (v2_layer("a", vfield(1, -1) + packed_floats(5, [1])), "negative dimension (-1, 0, 0, 0)"),
    (v2_layer("a", shape(*[1] * 33) + packed_floats(5, [1])), "more than 32 dimensions"),
    (v2_layer("a", bfield(5, b"\0" * 6)), "packed <f4 data of 6 bytes is not a multiple of 4"),
    (v2_layer("a", vfield(5, 1)), "blob data (field 5) has wire type 0, expected 5"),
    (bfield(100, vfield(1, 3)), "layer name (field 1) has wire type 0, expected 2"),
    (bfield(100, bfield(1, b"\xff\xfe")), "layer name is not valid UTF-8"),
    (vfield(100, 1), "layer (field 100) has wire type 0, expected 2"),
    (b"", "caffemodel contains no layers"),
    (bfield(1, b"just a name"), "caffemodel contains no layers"),
    (bfield(2, bfield(1, b"v0")), "V0 layers"),
])
def test_corrupt_files_name_file_and_offset(tmp_path, data, message):
    text = _error(tmp_path, data)
    assert str(tmp_path / "m.caffemodel") in text and message in text, text


def test_wrong_kind_of_file_hints(tmp_path):
    assert "is it the .prototxt?" in _error(tmp_path, b'name: "LeNet"\nlayer {\n}\n')
    assert "HDF5" in _error(tmp_path, b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(TidlcError, match="no such caffemodel"):
        read_caffemodel(tmp_path / "missing.caffemodel")


def _check_against_protobuf(tmp_path: Path, data: bytes) -> None:
    """Our reader raises only TidlcError, and always does when protobuf cannot parse."""
    try:
        NetPacked.FromString(data)
        protobuf_ok = True
    except DecodeError:
        protobuf_ok = False
    try:
        result = read_caffemodel(write(tmp_path, data))
    except TidlcError:
        return
    assert protobuf_ok, "protobuf rejects this file but tidlc accepted it"
    assert isinstance(result, CaffeWeights)


@needs_corpus
@pytest.mark.parametrize("path", MODELS[:6], ids=model_ids[:6])
def test_truncated_files(tmp_path, path):
    data = path.read_bytes()
    cuts = sorted({*range(64), *np.linspace(0, len(data) - 1, 60, dtype=int).tolist(),
                   len(data) - 1, len(data) - 4})
    for cut in cuts:
        _check_against_protobuf(tmp_path, data[:cut])
    # A cut inside the last layer can never load.
    with pytest.raises(TidlcError, match="at byte"):
        read_caffemodel(write(tmp_path, data[:-1]))


@needs_corpus
@pytest.mark.parametrize("path", MODELS[:6], ids=model_ids[:6])
def test_flipped_bytes(tmp_path, path):
    data = path.read_bytes()
    rng = random.Random(path.name)
    # Structure lives mostly in the first bytes of each layer; hit those often.
    positions = [rng.randrange(len(data)) for _ in range(150)] + list(range(0, 200, 3))
    for pos in positions:
        corrupt = bytearray(data)
        corrupt[pos] ^= 1 << rng.randrange(8)
        _check_against_protobuf(tmp_path, bytes(corrupt))
    for pos in range(0, 120, 7):  # 0xff runs make over-long varints and huge lengths
        corrupt = bytearray(data)
        corrupt[pos:pos + 11] = b"\xff" * 11
        _check_against_protobuf(tmp_path, bytes(corrupt))
