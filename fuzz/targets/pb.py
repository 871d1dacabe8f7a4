"""`tidlc ir MODEL.pb`: the frozen TensorFlow GraphDef reader (tidlc's own protobuf schema),
the structural checks, the NHWC converters and the constants they fold at import. Seeds: tiny
frozen graphs in fuzz/seeds/pb/ (conv/depthwise/bias/relu6/pool, matmul/softmax, concat/reshape
computed from Shape, pad/mean, fused batch norm, strided slices, resize, splits, transposed
conv), written once by ``python -m fuzz.targets.pb`` with TensorFlow."""
from __future__ import annotations

import os
import random

from fuzz.mutate import byte_mutation, protobuf_mutation
from fuzz.runner import ROOT, Seed, cli
from fuzz.targets.onnx import inside

SEEDS = os.path.join(ROOT, "fuzz", "seeds", "pb")
# GraphDef.node; NodeDef.attr; AttrEntry.value; AttrValue.tensor
NODE, ATTR, VALUE, TENSOR = 1, 5, 2, 8


def seeds() -> list[Seed]:
    out = []
    for name in sorted(os.listdir(SEEDS)):
        if name.endswith(".pb"):
            with open(os.path.join(SEEDS, name), "rb") as fh:
                out.append(Seed({"model.pb": fh.read()}, "model.pb"))
    return out


def mutate(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    # byte edits test the parse errors; field edits land in one node, half of them in one of its
    # attributes (the shapes, strides, paddings and constant tensors the converters read);
    # edits that break the wire format are retried a few times
    if rng.random() < 0.1:
        return byte_mutation(data, rng, others)
    for _ in range(4):
        where = rng.random()
        path = () if where < 0.1 else (NODE,) if where < 0.5 else (NODE, ATTR, VALUE) if where < 0.8 \
            else (NODE, ATTR, VALUE, TENSOR)
        out = inside(data, path, rng, others) if path else protobuf_mutation(data, rng, others)
        if _parses(out):
            break
    return out


def _parses(data: bytes) -> bool:
    from tidlc.frontends.tensorflow.graphdef import message_class
    try:
        message_class("GraphDef")().ParseFromString(data)
    except Exception:  # noqa: BLE001 - any failure means "does not parse"
        return False
    return True


def run(path: str) -> None:
    cli("ir", path)


# ----------------------------------------------------------------------------- seed files
def _graphs() -> dict:
    """name -> (function, input shape): frozen at 8x8 images so that one input takes milliseconds."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def w(*shape):
        return tf.constant(rng.standard_normal(shape).astype(np.float32))

    def conv_pool(x):
        y = tf.nn.bias_add(tf.nn.conv2d(x, w(3, 3, 3, 4), 1, "SAME"), w(4))
        y = tf.nn.relu6(y)
        y = tf.nn.max_pool2d(y, 2, 2, "VALID")
        y = tf.reduce_mean(y, [1, 2])
        return tf.nn.softmax(tf.matmul(y, w(4, 5)))

    def depthwise_concat(x):
        a = tf.nn.depthwise_conv2d(x, w(3, 3, 3, 2), (1, 2, 2, 1), "SAME")
        b = tf.nn.avg_pool2d(x, 2, 2, "SAME")
        y = tf.concat([a, b], axis=3)
        y = tf.pad(y, [[0, 0], [1, 1], [0, 2], [0, 0]])
        return tf.reshape(y, [tf.shape(y)[0], -1])  # Shape -> StridedSlice -> Pack, folded at import

    def batchnorm(x):
        y = tf.nn.conv2d(x, w(1, 1, 3, 4), 1, "VALID")
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(y, w(4), w(4), w(4), tf.abs(w(4)) + 0.5, epsilon=1e-3,
                                                   is_training=False)
        y = tf.nn.leaky_relu(y * tf.math.rsqrt(tf.abs(w(4)) + 1.0) + w(4), 0.1)
        return tf.nn.sigmoid(y)

    def slices(x):
        y = tf.image.resize(x, (12, 12), "bilinear")
        y = y[:, 1:-1:2, ::-1, :2]
        a, b = tf.split(y, [1, 1], axis=3)
        y = tf.transpose(tf.squeeze(a, 3) + tf.squeeze(b, 3), (0, 2, 1))
        return tf.expand_dims(tf.math.reduce_max(y, 2), -1)

    def deconv(x):
        y = tf.nn.conv2d_transpose(x, w(2, 2, 4, 3), (1, 16, 16, 4), 2, "SAME")
        y = tf.raw_ops.MirrorPad(input=y, paddings=[[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
        y = tf.image.resize(y, (9, 9), "nearest")
        return tf.cast(tf.argmax(y, axis=3), tf.int32)

    def eltwise(x):
        y = tf.maximum(x, w(3)) - tf.minimum(x, 0.5) / (tf.abs(x) + 1.0)
        y = tf.math.squared_difference(y, w(1, 1, 1, 3)) + tf.square(x) * tf.exp(-x)
        y = tf.raw_ops.PadV2(input=y, paddings=[[0, 0], [1, 0], [0, 1], [0, 0]], constant_values=1.0)
        return tf.nn.log_softmax(tf.reduce_sum(y, [1, 2], keepdims=False))

    return {"conv_pool_matmul": conv_pool, "depthwise_concat_reshape": depthwise_concat,
            "batchnorm": batchnorm, "slices_resize_split": slices, "deconv_mirrorpad_argmax": deconv,
            "eltwise_padv2": eltwise}


def make_seeds(directory: str = SEEDS) -> None:
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    os.makedirs(directory, exist_ok=True)
    for name, fn in _graphs().items():
        spec = tf.TensorSpec((1, 8, 8, 3), tf.float32, name="input")
        frozen = convert_variables_to_constants_v2(tf.function(fn, autograph=False).get_concrete_function(spec))
        with open(os.path.join(directory, name + ".pb"), "wb") as fh:
            fh.write(frozen.graph.as_graph_def().SerializeToString())


if __name__ == "__main__":
    make_seeds()
