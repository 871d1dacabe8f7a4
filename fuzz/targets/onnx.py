"""`tidlc ir MODEL.onnx` (and now and then `-O2`): the ONNX reader, its structural checks, the
converters and fold-constants. Seeds: small models in fuzz/seeds/onnx/ (conv/bn/relu/pool/gemm,
concat/reshape, resize, slice/pad/split, QDQ, shape arithmetic folded at import, old-opset
attribute forms, an opset-21 model, a dynamic batch dim, initializers as raw_data and as
float_data), written once by ``python -m fuzz.targets.onnx`` with onnx.helper."""
from __future__ import annotations

import os
import random

from fuzz.mutate import _encode, _fields, byte_mutation, protobuf_mutation
from fuzz.runner import ROOT, Seed, cli

SEEDS = os.path.join(ROOT, "fuzz", "seeds", "onnx")


def seeds() -> list[Seed]:
    out = []
    for name in sorted(os.listdir(SEEDS)):
        if name.endswith(".onnx"):
            with open(os.path.join(SEEDS, name), "rb") as fh:
                out.append(Seed({"model.onnx": fh.read()}, "model.onnx"))
    return out


# ModelProto.graph; in GraphProto: node, initializer, input, output
GRAPH, NODE, INITIALIZER, INPUT, OUTPUT = 7, 1, 5, 11, 12


def mutate(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    # byte edits test the protobuf parse errors; field-aware edits reach the converters, most
    # of them inside the graph (a random field of the model is mostly metadata); about half of
    # them still break the wire format somewhere: those are retried a few times
    if rng.random() < 0.1:
        return byte_mutation(data, rng, others)
    for _ in range(4):
        out = _mutate_fields(data, rng, others)
        if _parses(out):
            break
    return out


def _mutate_fields(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    where = rng.random()
    if where < 0.15:
        return protobuf_mutation(data, rng, others)
    part = NODE if where < 0.65 else INITIALIZER if where < 0.8 else rng.choice((INPUT, OUTPUT)) if where < 0.9 \
        else None
    return inside(data, (GRAPH,) if part is None else (GRAPH, part), rng, others)


def inside(data: bytes, path: tuple[int, ...], rng: random.Random, others: list[bytes]) -> bytes:
    """``protobuf_mutation`` applied to one submessage reached through the field numbers ``path``
    (a random one where a field repeats); the whole message when the path does not exist."""
    fields = _fields(data)
    picks = [i for i, (num, wt, _) in enumerate(fields or ()) if num == path[0] and wt == 2] if path else []
    if not picks:
        return protobuf_mutation(data, rng, others)
    i = rng.choice(picks)
    num, wt, payload = fields[i]
    fields[i] = (num, wt, inside(payload, path[1:], rng, others))
    return _encode(fields)


def _parses(data: bytes) -> bool:
    from onnx import ModelProto
    try:
        ModelProto().ParseFromString(data)
    except Exception:  # noqa: BLE001 - any failure means "does not parse"
        return False
    return True


def run(path: str) -> None:
    # -O2 runs the whole pass pipeline (fusions, layout); a quarter of the inputs is enough for it
    if hash(os.path.basename(os.path.dirname(path))) % 4 == 0:
        cli("ir", path, "-O2")
    else:
        cli("ir", path)


# ----------------------------------------------------------------------------- seed files
def _models() -> dict:
    """name -> ModelProto: each a few KB, 8x8 images, so that one input takes milliseconds."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    f32 = TensorProto.FLOAT

    def w(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def init(name, array, raw=True):
        if raw:
            return numpy_helper.from_array(np.asarray(array), name)
        array = np.asarray(array, np.float32)
        return helper.make_tensor(name, f32, array.shape, array.reshape(-1).tolist())  # float_data

    def ints(name, values):
        return numpy_helper.from_array(np.asarray(values, np.int64), name)

    def model(nodes, inputs, outputs, inits=(), opset=13):
        graph = helper.make_graph(nodes, "seed", inputs, outputs, list(inits))
        opsets = [helper.make_opsetid("", opset)]
        m = helper.make_model(graph, opset_imports=opsets, producer_name="tidlc-fuzz")
        m.ir_version = helper.find_min_ir_version_for(opsets, True)
        return m

    def x(shape=(1, 3, 8, 8), name="x", dtype=f32):
        return helper.make_tensor_value_info(name, dtype, shape)

    def y(name="y", dtype=f32):
        return helper.make_tensor_value_info(name, dtype, None)

    n = helper.make_node
    out = {}
    out["conv_bn_relu_pool_gemm"] = model(
        [n("Conv", ["x", "w", "b"], ["c"], "conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
         n("BatchNormalization", ["c", "g", "be", "m", "v"], ["bn"], "bn", epsilon=1e-3),
         n("Relu", ["bn"], ["r"], "relu"),
         n("MaxPool", ["r"], ["p"], "pool", kernel_shape=[2, 2], strides=[2, 2]),
         n("GlobalAveragePool", ["p"], ["gap"], "gap"),
         n("Flatten", ["gap"], ["f"], "flatten", axis=1),
         n("Gemm", ["f", "fw", "fb"], ["y"], "fc", transB=1)],
        [x()], [y()],
        [init("w", w(4, 3, 3, 3)), init("b", w(4)), init("g", w(4)), init("be", w(4)), init("m", w(4)),
         init("v", np.abs(w(4)) + 0.5), init("fw", w(5, 4)), init("fb", w(5))])
    out["concat_reshape_softmax"] = model(
        [n("Conv", ["x", "w1"], ["a"], "conv_a", kernel_shape=[1, 1]),
         n("Conv", ["x", "w2"], ["b"], "conv_b", kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=3),
         n("Concat", ["a", "b"], ["c"], "concat", axis=1),
         n("Reshape", ["c", "shape"], ["r"], "reshape"),
         n("Softmax", ["r"], ["y"], "softmax", axis=-1)],
        [x()], [y()], [init("w1", w(2, 3, 1, 1)), init("w2", w(3, 1, 3, 3)), ints("shape", [1, 5, -1])])
    out["resize_upsample"] = model(
        [n("Resize", ["x", "", "scales"], ["a"], "resize", mode="nearest"),
         n("Resize", ["a", "", "", "sizes"], ["b"], "resize_lin", mode="linear",
           coordinate_transformation_mode="half_pixel"),
         n("AveragePool", ["b"], ["y"], "avg", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
        [x()], [y()], [init("scales", np.array([1, 1, 2, 2], np.float32)), ints("sizes", [1, 3, 12, 12])])
    out["slice_pad_split_transpose"] = model(
        [n("Slice", ["x", "st", "en", "ax", "sp"], ["s"], "slice"),
         n("Pad", ["s", "pads", "pv"], ["p"], "pad", mode="constant"),
         n("Split", ["p", "split"], ["p0", "p1"], "split", axis=1),
         n("Transpose", ["p0"], ["t"], "transpose", perm=[0, 2, 3, 1]),
         n("Squeeze", ["p1", "sq"], ["q"], "squeeze"),
         n("Unsqueeze", ["q", "sq"], ["u"], "unsqueeze"),
         n("ReduceMean", ["u"], ["y2"], "mean", axes=[2, 3], keepdims=0),
         n("Identity", ["t"], ["y"], "id")],
        [x()], [y(), y("y2")],
        [ints("st", [0, 1]), ints("en", [9999, -1]), ints("ax", [1, 2]), ints("sp", [1, 1]),
         ints("pads", [0, 0, 1, 2, 0, 0, 1, 2]), init("pv", np.array(0.5, np.float32)), ints("split", [2, 1]),
         ints("sq", [1])])
    qdq = [n("QuantizeLinear", ["x", "s", "z"], ["xq"], "q_x"),
           n("DequantizeLinear", ["xq", "s", "z"], ["xd"], "dq_x"),
           n("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], "dq_w", axis=0),
           n("Conv", ["xd", "wd", "b"], ["c"], "conv", kernel_shape=[3, 3], strides=[2, 2]),
           n("QuantizeLinear", ["c", "s", "z"], ["cq"], "q_c"),
           n("DequantizeLinear", ["cq", "s", "z"], ["cd"], "dq_c"),
           n("Relu", ["cd"], ["y"], "relu")]
    out["qdq_conv"] = model(
        qdq, [x()], [y()],
        [init("s", np.array(0.05, np.float32)), init("z", np.array(0, np.int8)),
         init("wq", rng.integers(-127, 127, (4, 3, 3, 3)).astype(np.int8)),
         init("ws", np.full(4, 0.02, np.float32)), init("wz", np.zeros(4, np.int8)), init("b", w(4))])
    # the same conv with its weights in float_data, its bias in raw_data
    out["float_data_raw_data"] = model(
        [n("Conv", ["x", "w", "b"], ["c"], "conv", kernel_shape=[3, 3], auto_pad="SAME_UPPER"),
         n("Mul", ["c", "k"], ["m"], "mul"), n("Add", ["m", "b2"], ["a"], "add"),
         n("Clip", ["a", "lo", "hi"], ["y"], "clip")],
        [x()], [y()],
        [init("w", w(2, 3, 3, 3), raw=False), init("b", w(2)), init("k", w(1, 2, 1, 1), raw=False),
         init("b2", w(2, 1, 1)), init("lo", np.array(0, np.float32)), init("hi", np.array(6, np.float32))])
    out["opset21"] = model(
        [n("Conv", ["x", "w"], ["c"], "conv", kernel_shape=[3, 3], dilations=[2, 2]),
         n("Gelu", ["c"], ["g"], "gelu"),
         n("ReduceMax", ["g", "axes"], ["r"], "rmax", keepdims=1),
         n("Split", ["g"], ["s0", "s1"], "split", axis=1, num_outputs=2),
         n("Add", ["s0", "s1"], ["a"], "add"),
         n("Mul", ["a", "r"], ["y"], "mul")],
        [x()], [y()], [init("w", w(4, 3, 3, 3)), ints("axes", [1])], opset=21)
    out["dynamic_batch"] = model(
        [n("Conv", ["x", "w"], ["c"], "conv", kernel_shape=[1, 1]),
         n("Shape", ["c"], ["sh"], "shape"),
         n("Gather", ["sh", "zero"], ["nb"], "gather", axis=0),
         n("Unsqueeze", ["nb", "zeros"], ["nb1"], "unsqueeze"),
         n("Concat", ["nb1", "minus1"], ["target"], "concat", axis=0),
         n("Reshape", ["c", "target"], ["r"], "reshape"),
         n("MatMul", ["r", "mw"], ["y"], "matmul")],
        [x(("N", 3, 8, 8))], [y()],
        [init("w", w(2, 3, 1, 1)), ints("zero", 0), ints("zeros", [0]), ints("minus1", [-1]),
         init("mw", w(128, 4))])
    out["constants_folded"] = model(
        [n("Constant", [], ["shape"], "const_shape", value=ints("v", [1, 3, 1, 1])),
         n("ConstantOfShape", ["shape"], ["ones"], "cos", value=init("one", np.array([1.5], np.float32))),
         n("Expand", ["ones", "exp_shape"], ["e"], "expand"),
         n("Constant", [], ["k"], "const_k", value_floats=[0.5, 2.0, 1.0]),
         n("Reshape", ["k", "shape"], ["kr"], "reshape"),
         n("Mul", ["e", "kr"], ["ek"], "mul"),
         n("Add", ["x", "ek"], ["a"], "add"),
         n("Gather", ["a", "idx"], ["g"], "gather", axis=1),
         n("Where", ["cond", "g", "x"], ["y"], "where")],
        [x()], [y()],
        [ints("exp_shape", [1, 3, 8, 1]), ints("idx", [2, 0, 1]),
         numpy_helper.from_array(np.array([True, False, True]).reshape(1, 3, 1, 1), "cond")])
    out["old_opset_attrs"] = model(
        [n("Upsample", ["x"], ["u"], "up", mode="nearest", scales=[1.0, 1.0, 2.0, 2.0]),
         n("Slice", ["u"], ["s"], "slice", starts=[1, 1], ends=[15, 15], axes=[2, 3]),
         n("Pad", ["s"], ["p"], "pad", pads=[0, 0, 1, 1, 0, 0, 1, 1], mode="reflect"),
         n("Reshape", ["p", "shape"], ["r"], "reshape"),
         n("LeakyRelu", ["r"], ["l"], "leaky", alpha=0.2),
         n("Dropout", ["l"], ["y"], "dropout", ratio=0.3)],
        [x()], [y()], [ints("shape", [1, 3, -1])], opset=7)
    out["convtranspose_depth_space"] = model(
        [n("ConvTranspose", ["x", "w"], ["c"], "deconv", kernel_shape=[2, 2], strides=[2, 2]),
         n("SpaceToDepth", ["c"], ["s"], "s2d", blocksize=2),
         n("DepthToSpace", ["s"], ["d"], "d2s", blocksize=2, mode="CRD"),
         n("HardSwish", ["d"], ["h"], "hswish"),
         n("ArgMax", ["h"], ["y"], "argmax", axis=1, keepdims=1)],
        [x()], [y("y", TensorProto.INT64)], [init("w", w(3, 4, 2, 2))], opset=14)
    return out


def make_seeds(directory: str = SEEDS) -> None:
    os.makedirs(directory, exist_ok=True)
    for name, m in _models().items():
        with open(os.path.join(directory, name + ".onnx"), "wb") as fh:
            fh.write(m.SerializeToString())


if __name__ == "__main__":
    make_seeds()
