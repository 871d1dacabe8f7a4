"""`tidlc ir NET.prototxt --weights NET.caffemodel`: the caffemodel wire-format reader and the
matching of blobs to layers (shapes, counts, legacy forms), beside a fixed prototxt.

Seeds (each a caffemodel and its prototxt): MTCNN det1 (a real trained net, copied from
../shared/corpus/caffe), CIFAR-10 quick from the corpus when it is there, and nets written once
by ``python -m fuzz.targets.caffemodel`` into fuzz/seeds/caffemodel/: the tiny seed net in
every wire form the reader takes (packed floats, unpacked floats, doubles, legacy 4-D blob
dims, V1 ``layers``) and the hand-written layer zoo of the prototxt target with random blobs
(BatchNorm, Scale, PReLU, BN, Deconvolution, Normalize...)."""
from __future__ import annotations

import os
import random

from fuzz.common import corpus
from fuzz.mutate import byte_mutation, protobuf_mutation
from fuzz.runner import ROOT, Seed, cli

SEEDS = os.path.join(ROOT, "fuzz", "seeds", "caffemodel")


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _seed(prototxt: str, caffemodel: str) -> Seed:
    files = {"net.prototxt": _read(prototxt), "net.caffemodel": _read(caffemodel)}
    return Seed(files, "net.caffemodel")


def seeds() -> list[Seed]:
    stems = [os.path.join(SEEDS, name[:-len(".caffemodel")]) for name in sorted(os.listdir(SEEDS))
             if name.endswith(".caffemodel")]
    out = [_seed(stem + ".prototxt", stem + ".caffemodel") for stem in stems]
    cifar = corpus("caffe", "cifar10_quick", "cifar10_quick")
    if os.path.exists(cifar + ".prototxt"):  # 570 KB: read from the corpus, not committed
        out.append(_seed(cifar + ".prototxt", cifar + "_iter_5000.caffemodel"))
    return out


def mutate(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    # field-aware edits reach the blob matching; byte edits test the wire-format reader
    if rng.random() < 0.85:
        return protobuf_mutation(data, rng, others)
    return byte_mutation(data, rng, others)


def run(path: str) -> None:
    prototxt = os.path.join(os.path.dirname(path), "net.prototxt")
    # every fourth input lets random blobs fill the layers the caffemodel lacks
    if int(os.path.basename(os.path.dirname(path))) % 4 == 3:
        cli("ir", prototxt, "--weights", path, "--random-weights", "0")
    else:
        cli("ir", prototxt, "--weights", path)


# ----------------------------------------------------------------------------- seed files
def _writer():
    import importlib.util
    path = os.path.join(ROOT, "tests", "frontends", "caffe", "caffemodel_writer.py")
    spec = importlib.util.spec_from_file_location("fuzz_caffemodel_writer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _random_blobs(prototxt: str) -> dict:
    """{layer: (type, blobs)}: the blobs tidlc's random weight source gives the net."""
    from tidlc.frontends.caffe.lower import lower_net
    from tidlc.frontends.caffe.netspec import load_netspec
    from tidlc.frontends.caffe.weights import RandomWeights
    net = load_netspec(prototxt)
    source = RandomWeights(0)
    lower_net(net, source, prototxt)
    types = {layer.name: layer.type for layer in net.layers}
    return {name: (types[name], blobs) for name, blobs in source.blobs_in_caffe_layout().items()}


def _legacy_blob(w, array, unpacked: bool, doubles: bool) -> bytes:
    """A BlobProto with the legacy num/channels/height/width dims (4-D, padded with 1s) and
    unpacked (one tag per value) floats or packed doubles."""
    import numpy as np
    dims = (1,) * (4 - array.ndim) + tuple(array.shape)
    out = b"".join(w._varint(number << 3) + w._varint(d) for number, d in zip((1, 2, 3, 4), dims))
    if doubles:
        return out + w._bytes_field(8, np.ascontiguousarray(array, "<f8").tobytes())
    if unpacked:
        return out + b"".join(b"\x2d" + v.tobytes() for v in np.asarray(array, "<f4").reshape(-1))
    return out + w._bytes_field(5, np.ascontiguousarray(array, "<f4").tobytes())


def _v1_net(w, layers: dict) -> bytes:
    """V1 ``layers`` (field 2): name = 4, type = 5 (enum), blobs = 6 with legacy dims."""
    from tidlc.frontends.caffe.netspec import V1_LAYER_TYPES
    numbers = {v2: number for number, v2 in V1_LAYER_TYPES.values()}
    out = w._bytes_field(1, b"tiny_v1")
    for i, (name, (layer_type, blobs)) in enumerate(layers.items()):
        body = w._bytes_field(4, name.encode()) + w._varint(5 << 3)
        body += w._varint(numbers.get(layer_type, 0))
        odd = i % 2 == 1  # unpacked floats and packed doubles, layer by layer
        body += b"".join(w._bytes_field(6, _legacy_blob(w, b, not odd, odd)) for b in blobs)
        out += w._bytes_field(2, body)
    return out


def write_seeds() -> None:
    """Write fuzz/seeds/caffemodel/*.{prototxt,caffemodel} (run once; the files are committed)."""
    import shutil
    import tempfile
    from fuzz.common import TINY_NET
    w = _writer()
    os.makedirs(SEEDS, exist_ok=True)
    tmp = tempfile.mkdtemp()
    tiny = os.path.join(tmp, "tiny.prototxt")
    with open(tiny, "wb") as fh:
        fh.write(TINY_NET)
    nets = {"tiny": (TINY_NET, _random_blobs(tiny))}
    zoo = os.path.join(ROOT, "fuzz", "seeds", "prototxt", "zoo_layers.prototxt")
    nets["zoo_layers"] = (_read(zoo), _random_blobs(zoo))
    for name, (text, layers) in nets.items():
        with open(os.path.join(SEEDS, name + ".prototxt"), "wb") as fh:
            fh.write(text)
        w.write_caffemodel(os.path.join(SEEDS, name + ".caffemodel"), layers, name)
    with open(os.path.join(SEEDS, "tiny_v1.prototxt"), "wb") as fh:
        fh.write(TINY_NET)
    with open(os.path.join(SEEDS, "tiny_v1.caffemodel"), "wb") as fh:
        fh.write(_v1_net(w, nets["tiny"][1]))
    for ext in ("prototxt", "caffemodel"):
        target = os.path.join(SEEDS, f"mtcnn_det1.{ext}")
        shutil.copy(corpus("caffe", "mtcnn", f"det1.{ext}"), target)
        os.chmod(target, 0o644)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    write_seeds()
