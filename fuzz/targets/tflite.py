"""`tidlc ir MODEL.tflite`: tidlc's own FlatBuffers reader (offsets, vtables, vectors), the TFLite
schema decoding (op codes, tensor types, options, quantization parameters, buffers) and the
converters. Seeds: small models in fuzz/seeds/tflite/ (a float conv/depthwise/add/concat/reshape/
softmax net, a full-integer int8 net, a float16-weight net, pooling/fc/pad/slice/resize/
transpose-conv/dilated-conv nets, the SPACE_TO_BATCH_ND form of a dilated conv), written once by
``python -m fuzz.targets.tflite`` with TensorFlow's TFLiteConverter (and the flatbuffers package);
``mediapipe_crop.tflite``, MediaPipe's three attention-crop custom ops with FlexBuffer options,
written by the model builder of tests/frontends/tflite/test_mediapipe_ops.py."""
from __future__ import annotations

import os
import random
import struct

from fuzz.mutate import INTERESTING, byte_mutation
from fuzz.runner import ROOT, Seed, cli

SEEDS = os.path.join(ROOT, "fuzz", "seeds", "tflite")


def seeds() -> list[Seed]:
    out = []
    for name in sorted(os.listdir(SEEDS)):
        if name.endswith(".tflite"):
            with open(os.path.join(SEEDS, name), "rb") as fh:
                out.append(Seed({"model.tflite": fh.read()}, "model.tflite"))
    return out


# ----------------------------------------------------------------------------- mutation
def _offset_positions(data: bytes) -> list[int]:
    """Positions of 32-bit words that look like forward offsets (uoffset_t: the target lies in
    the file), found by a cheap scan of aligned words; these are the offsets, vector lengths and
    table-to-vtable offsets a structure-aware edit should hit."""
    n = len(data)
    words = struct.unpack_from(f"<{n // 4}I", data)
    return [4 * i for i, w in enumerate(words) if 0 < w < n - 4 * i]


def _vtable_entries(data: bytes, rng: random.Random) -> list[int]:
    """Positions of uint16 vtable entries: follow a few tables' soffsets back to their vtables."""
    out = []
    n = len(data)
    for _ in range(8):
        pos = rng.randrange(0, max(4, n - 4), 4)
        soff = struct.unpack_from("<i", data, pos)[0]
        vt = pos - soff
        if 0 <= vt <= n - 4:
            size = struct.unpack_from("<H", data, vt)[0]
            if 4 <= size <= 256 and size % 2 == 0 and vt + size <= n:
                out += range(vt, vt + size, 2)
    return out


def flatbuffer_mutation(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    """Edit what a FlatBuffer is made of: a 32-bit offset or vector length (to an interesting
    value, off by a little, pointing at itself or back), or a uint16 vtable entry/size."""
    if len(data) < 16:
        return byte_mutation(data, rng, others)
    buf = bytearray(data)
    if rng.random() < 0.6:
        positions = _offset_positions(data)
        if not positions:
            return byte_mutation(data, rng, others)
        pos = rng.choice(positions)
        old = struct.unpack_from("<I", buf, pos)[0]
        new = rng.choice([rng.choice(INTERESTING), old + rng.choice((-8, -4, -1, 1, 4, 8)), 0,
                          len(data) - pos, len(data) - pos - 2, -pos, old * 2, old * 1000])
        struct.pack_into("<I", buf, pos, new & 0xFFFFFFFF)
    else:
        entries = _vtable_entries(data, rng)
        if not entries:
            return byte_mutation(data, rng, others)
        pos = rng.choice(entries)
        new = rng.choice([0, 1, 2, 3, 4, 0xFF, 0xFFFF, 0x8000, rng.randrange(0x10000),
                          struct.unpack_from("<H", buf, pos)[0] + rng.choice((-4, -1, 1, 4))])
        struct.pack_into("<H", buf, pos, new & 0xFFFF)
    return bytes(buf)


_FORMATS = {"b": "<b", "?": "<B", "B": "<B", "i": "<i", "I": "<I", "f": "<f", "q": "<q"}
_FLOATS = [0.0, -0.0, -1.0, float("nan"), float("inf"), float("-inf"), 1e-45, 3e38, 1.0]


def _sites(data: bytes) -> list[tuple[int, str]]:
    """(byte offset, struct format) of the model's scalars that mean something: op codes and
    their indices, tensor types, buffer indices, shape dims, graph/operator tensor indices,
    quantization scales, zero points and axes, and every builtin option tidlc reads."""
    import numpy as np
    from tidlc.frontends.tflite.flatbuf import Table
    from tidlc.frontends.tflite.schema import OPTIONS, op_name

    out: list[tuple[int, str]] = []

    def fields(table, spec):
        for slot, fmt in spec:
            if fmt.startswith("["):
                start, n = table._vector(slot)
                out.extend((start + k * 4, fmt[1]) for k in range(min(n, 64)))
            elif table.has(slot):
                out.append((table._field(slot), fmt))

    root = Table.root(data)
    codes = []
    for code in root.tables(1):
        fields(code, ((0, "b"), (3, "i"), (2, "i")))
        codes.append(max(code.scalar(0, "b"), code.scalar(3, "i")))
    for sg in root.tables(2)[:1]:
        fields(sg, ((1, "[i"), (2, "[i")))
        for t in sg.tables(0):
            fields(t, ((0, "[i"), (1, "b"), (2, "I"), (7, "[i")))
            q = t.table(4)
            if q is not None:
                fields(q, ((2, "[f"), (6, "i")))
                start, n = q._vector(3)
                out.extend((start + k * 8, "q") for k in range(min(n, 64)))
        for op in sg.tables(3):
            fields(op, ((0, "I"), (1, "[i"), (2, "[i")))
            index = op.scalar(0, "I")
            options = op.table(4)
            if options is not None and index < len(codes):
                spec = OPTIONS.get(op_name(codes[index]), {})
                fields(options, [(slot, "[i" if fmt == "[i]" else fmt) for slot, fmt, _ in spec.values()])
    return [(pos, fmt) for pos, fmt in out if pos + np.dtype(_FORMATS[fmt][1]).itemsize <= len(data)]


def scalar_mutation(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    """Set one meaningful scalar (see :func:`_sites`) to an edge value: 0, -1, one past a count,
    huge, or for scales 0/NaN/inf/denormal."""
    from tidlc.diagnostics import TidlcError
    from tidlc.frontends.tflite.flatbuf import FlatBufferError
    try:
        sites = _sites(data)
    except (FlatBufferError, TidlcError):  # an earlier edit broke the structure
        sites = []
    if not sites:
        return byte_mutation(data, rng, others)
    pos, fmt = rng.choice(sites)
    packer = struct.Struct(_FORMATS[fmt])
    if fmt == "f":
        value = rng.choice(_FLOATS)
    else:
        old = packer.unpack_from(data, pos)[0]
        value = rng.choice([rng.choice(INTERESTING), old + 1, old - 1, -old, 0, -1, rng.randrange(200)])
        bits = packer.size * 8
        value &= (1 << bits) - 1
        if fmt in "biq" and value >= 1 << (bits - 1):
            value -= 1 << bits
    buf = bytearray(data)
    packer.pack_into(buf, pos, value)
    return bytes(buf)


def mutate(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    # scalar edits reach the converters with one bad value each; the structure-aware edits
    # reach the flatbuffer checks; byte edits hit anything, weights included
    r = rng.random()
    if r < 0.4:
        return scalar_mutation(data, rng, others)
    if r < 0.7:
        return flatbuffer_mutation(data, rng, others)
    return byte_mutation(data, rng, others)


def warm_up() -> None:
    """Import the TFLite runtime once (TensorFlow takes seconds): models with an op tidlc does not
    lower are probed on it at import (host ops), which should cost per input only the probe."""
    from tidlc.hostrt import tflite_interpreter_class
    tflite_interpreter_class()


def run(path: str) -> None:
    # every fourth input only reads the model, its quantization parameters and its constants
    # (no conversion), so they are fuzzed on inputs the converters would reject earlier
    index = os.path.basename(os.path.dirname(path))
    if index.isdigit() and int(index) % 4 == 0:
        from tidlc.frontends.tflite.importer import TFLiteImporter, read_tflite
        importer = TFLiteImporter(read_tflite(path), None, path)
        for t in importer.model.tensors:
            importer.quant(t)
            importer.buffer_array(t)
        return
    cli("ir", path)


# ----------------------------------------------------------------------------- seed files
def _models() -> dict:
    """name -> .tflite bytes: each a few KB, 8x8 images, so that one input takes milliseconds."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def w(*shape, scale=0.3):
        return tf.constant((rng.standard_normal(shape) * scale).astype(np.float32))

    def convert(fn, shapes, mode="float"):
        specs = [tf.TensorSpec(s, tf.float32, name=f"x{i}") for i, s in enumerate(shapes)]
        concrete = tf.function(fn, autograph=False).get_concrete_function(*specs)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
        if mode == "int8":
            data = np.random.default_rng(1)

            def representative():
                for _ in range(8):
                    yield [data.standard_normal(s).astype(np.float32) for s in shapes]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        elif mode == "f16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()

    k1, b1, dw, k2, k3 = w(3, 3, 3, 8), w(8), w(3, 3, 8, 1), w(1, 1, 8, 8), w(1, 1, 3, 4)

    def cnn(x):
        y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, k1, 1, "SAME"), b1))
        d = tf.nn.relu6(tf.nn.depthwise_conv2d(y, dw, (1, 2, 2, 1), "SAME"))
        a = d + tf.nn.conv2d(d, k2, 1, "VALID")
        c = tf.concat([a, tf.nn.conv2d(tf.nn.avg_pool2d(x, 2, 2, "VALID"), k3, 1, "SAME")], axis=3)
        return tf.nn.softmax(tf.reshape(c, (1, 16, 12)))

    fc_w, fc_b = w(12, 5), w(5)

    def pool_fc(x):
        y = tf.nn.max_pool2d(tf.nn.conv2d(x, k1, 2, "SAME"), 2, 2, "VALID")
        m = tf.reduce_mean(tf.pad(y, [[0, 0], [1, 1], [1, 1], [0, 0]]), [1, 2])
        z = tf.nn.leaky_relu(tf.matmul(tf.concat([m, m[:, :4]], 1), fc_w) + fc_b, 0.2)
        return tf.nn.sigmoid(z)

    tk = w(3, 3, 4, 3)

    def resize_slice(x):
        u = tf.image.resize(x, (12, 12), "bilinear")
        s = tf.strided_slice(u, [0, 1, 0, 0], [1, 11, 12, 3], [1, 2, 1, 1])
        t = tf.nn.conv2d_transpose(tf.transpose(s, (0, 2, 1, 3))[:, :6, :6, :], tk, (1, 12, 12, 4), 2, "SAME")
        n = tf.image.resize(t, (6, 6), "nearest")
        a, b = tf.split(n, 2, axis=3)
        return tf.nn.relu(a) * tf.tanh(b)

    kd = w(3, 3, 3, 4)

    def dilated(x):  # the SPACE_TO_BATCH_ND -> CONV_2D -> BATCH_TO_SPACE_ND form of a dilated conv
        s = tf.space_to_batch_nd(x, [2, 2], [[2, 4], [2, 4]])  # (crops: TensorFlow does not fuse it)
        y = tf.batch_to_space(tf.nn.conv2d(s, kd, 1, "VALID"), [2, 2], [[0, 2], [0, 2]])
        return tf.squeeze(tf.reduce_max(tf.expand_dims(y, 0), [2, 3], keepdims=True), [0, 2, 3])

    alpha = w(4)

    def misc(x):
        y = tf.nn.depth_to_space(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 1]], "REFLECT"), 2)
        t = tf.concat([y, y, y, y], axis=3)
        p = tf.nn.relu(t) - alpha * tf.nn.relu(-t)  # written to a PRELU
        a, b = tf.split(p, [1, 3], axis=3)
        g = tf.nn.gelu(a) * tf.nn.relu6(b[:, :, :, :1] + 3.0) / 6.0
        s = tf.slice(g, [0, 1, 1, 0], [1, 8, 8, 1])
        return tf.cast(tf.argmax(tf.stack([s, -s], axis=1), axis=-1), tf.int32)

    return {"cnn_float": convert(cnn, [(1, 8, 8, 3)]),
            "cnn_int8": convert(cnn, [(1, 8, 8, 3)], "int8"),
            "cnn_f16": convert(cnn, [(1, 8, 8, 3)], "f16"),
            "pool_fc_float": convert(pool_fc, [(1, 8, 8, 3)]),
            "pool_fc_int8": convert(pool_fc, [(1, 8, 8, 3)], "int8"),
            "resize_slice_float": convert(resize_slice, [(1, 8, 8, 3)]),
            "dilated_float": convert(dilated, [(1, 10, 10, 3)]),
            "misc_float": convert(misc, [(1, 5, 5, 3)])}


def _dilated_stb_model() -> bytes:
    """SPACE_TO_BATCH_ND -> CONV_2D (VALID) -> BATCH_TO_SPACE_ND, the form older TensorFlow
    versions wrote for a dilated convolution (today's converter fuses it, so it is written here
    field by field with the flatbuffers package)."""
    import flatbuffers
    import numpy as np

    b = flatbuffers.Builder(1024)
    rng = np.random.default_rng(0)
    consts = {1: np.array([2, 2], np.int32), 2: np.full((2, 2), 2, np.int32),
              4: (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32),
              5: rng.standard_normal(4).astype(np.float32), 7: np.zeros((2, 2), np.int32)}
    shapes = [(1, 10, 10, 3), (2,), (2, 2), (4, 7, 7, 3), (4, 3, 3, 3), (4,), (4, 5, 5, 4), (2, 2), (1, 10, 10, 4)]

    def offsets(items):
        b.StartVector(4, len(items), 4)
        for item in reversed(items):
            b.PrependUOffsetTRelative(item)
        return b.EndVector()

    def table(fields):  # [(slot, kind, value)], kind as in the Builder's Prepend<kind>Slot
        b.StartObject(max((slot for slot, _, _ in fields), default=-1) + 1)
        for slot, kind, value in fields:
            getattr(b, f"Prepend{kind}Slot")(slot, value, 0)
        return b.EndObject()

    def data(i):
        return [(0, "UOffsetTRelative", b.CreateNumpyVector(consts[i].view(np.uint8).reshape(-1)))]

    buffers = [table(data(i) if i in consts else []) for i in range(len(shapes))]
    tensors = []
    for i, shape in enumerate(shapes):
        name = b.CreateString(f"t{i}")
        dims = b.CreateNumpyVector(np.array(shape, np.int32))
        tensors.append(table([(0, "UOffsetTRelative", dims), (1, "Int8", 2 if i in (1, 2, 7) else 0),
                              (2, "Uint32", i), (3, "UOffsetTRelative", name)]))
    conv_options = table([(0, "Int8", 1), (1, "Int32", 1), (2, "Int32", 1)])  # VALID, stride 1
    ops = []
    for code, ins, outs, options in ((0, (0, 1, 2), (3,), None), (1, (3, 4, 5), (6,), conv_options),
                                     (2, (6, 1, 7), (8,), None)):
        fields = [(0, "Uint32", code), (1, "UOffsetTRelative", b.CreateNumpyVector(np.array(ins, np.int32))),
                  (2, "UOffsetTRelative", b.CreateNumpyVector(np.array(outs, np.int32)))]
        if options is not None:
            fields += [(3, "Uint8", 1), (4, "UOffsetTRelative", options)]  # BuiltinOptions.Conv2DOptions
        ops.append(table(fields))
    codes = [table([(0, "Int8", c), (2, "Int32", 1), (3, "Int32", c)]) for c in (38, 3, 37)]
    graph = table([(0, "UOffsetTRelative", offsets(tensors)),
                   (1, "UOffsetTRelative", b.CreateNumpyVector(np.array([0], np.int32))),
                   (2, "UOffsetTRelative", b.CreateNumpyVector(np.array([8], np.int32))),
                   (3, "UOffsetTRelative", offsets(ops)), (4, "UOffsetTRelative", b.CreateString("main"))])
    model = table([(0, "Uint32", 3), (1, "UOffsetTRelative", offsets(codes)),
                   (2, "UOffsetTRelative", offsets([graph])), (4, "UOffsetTRelative", offsets(buffers))])
    b.Finish(model, file_identifier=b"TFL3")
    return bytes(b.Output())


def make_seeds(directory: str = SEEDS) -> None:
    os.makedirs(directory, exist_ok=True)
    for name, data in {**_models(), "dilated_stb_float": _dilated_stb_model()}.items():
        with open(os.path.join(directory, name + ".tflite"), "wb") as fh:
            fh.write(data)


if __name__ == "__main__":
    make_seeds()
