"""A small vision transformer as PyTorch's TorchScript exporter (``torch.onnx.export(..., dynamo=False)``,
opset 13) writes one: patch-embedding conv, ``flatten(2).transpose(1, 2)``, the class token
``cls.expand(B, -1, -1)`` spelled ``ConstantOfShape -> Mul -> Equal -> Where -> Expand``, LayerNorm
as ``ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add``, attention (MatMul, Softmax) and an MLP
with ``erf`` GELU. Checked against onnxruntime, and for what -O2 makes of it: one accelerated
graph with every LayerNorm and GELU one op."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tidlc.interp import run_graph

DIM, HEADS, PATCH, IMG = 16, 2, 4, 16
TOKENS = (IMG // PATCH) ** 2 + 1


def _vit(rng) -> tuple:
    nodes, inits = [], []

    def const(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def layernorm(x, prefix):
        mean = node("ReduceMean", [x], f"{prefix}/ReduceMean", axes=[-1])
        d = node("Sub", [x, mean], f"{prefix}/Sub")
        sq = node("Pow", [d, const(f"{prefix}/two", 2.0)], f"{prefix}/Pow")
        var = node("ReduceMean", [sq], f"{prefix}/ReduceMean_1", axes=[-1])
        std = node("Sqrt", [node("Add", [var, const(f"{prefix}/eps", 1e-5)], f"{prefix}/Add")], f"{prefix}/Sqrt")
        y = node("Div", [d, std], f"{prefix}/Div")
        y = node("Mul", [y, const(f"{prefix}/g", rng.uniform(0.5, 1.5, DIM))], f"{prefix}/Mul")
        return node("Add", [y, const(f"{prefix}/b", rng.normal(0, 0.1, DIM))], f"{prefix}/Add_1")

    def linear(x, prefix, cin, cout):
        y = node("MatMul", [x, const(f"{prefix}/w", rng.normal(0, cin ** -0.5, (cin, cout)))], f"{prefix}/MatMul")
        return node("Add", [y, const(f"{prefix}/bias", rng.normal(0, 0.1, cout))], f"{prefix}/Add")

    x = node("Conv", ["input", const("pe.w", rng.normal(0, 0.1, (DIM, 3, PATCH, PATCH))),
                      const("pe.b", rng.normal(0, 0.1, DIM))], "pe", kernel_shape=[PATCH, PATCH],
             strides=[PATCH, PATCH])
    x = node("Reshape", [x, const("flat", [1, DIM, TOKENS - 1], np.int64)], "flatten")
    x = node("Transpose", [x], "tokens", perm=[0, 2, 1])
    # cls.expand(x.shape[0], -1, -1), as the TorchScript exporter writes it
    ones = node("ConstantOfShape", [const("three", [3], np.int64)], "ones",
                value=helper.make_tensor("v", TensorProto.INT64, [1], [1]))
    minus = node("Mul", [ones, const("minus_one", -1, np.int64)], "minus")
    target = const("target", [1, -1, -1], np.int64)
    eq = node("Equal", [target, minus], "eq")
    shape = node("Where", [eq, ones, target], "where")
    cls = node("Expand", [const("cls", rng.normal(0, 0.5, (1, 1, DIM))), shape], "cls_expand")
    x = node("Concat", [cls, x], "with_cls", axis=1)
    x = node("Add", [x, const("pos", rng.normal(0, 0.5, (1, TOKENS, DIM)))], "pos_add")
    # one block: x + attn(ln1(x)); x + mlp(ln2(x))
    h = layernorm(x, "n1")
    qkv = linear(h, "qkv", DIM, 3 * DIM)
    qkv = node("Reshape", [qkv, const("qkv_shape", [1, TOKENS, 3, HEADS, DIM // HEADS], np.int64)], "qkv_r")
    qkv = node("Transpose", [qkv], "qkv_t", perm=[2, 0, 3, 1, 4])
    q, k, v = (node("Gather", [qkv, const(f"i{i}", i, np.int64)], f"g{i}", axis=0) for i in range(3))
    q = node("Mul", [q, const("qscale", (DIM // HEADS) ** -0.5)], "q_scaled")
    a = node("MatMul", [q, node("Transpose", [k], "k_t", perm=[0, 1, 3, 2])], "scores")
    a = node("Softmax", [a], "attn", axis=-1)
    o = node("Transpose", [node("MatMul", [a, v], "context")], "context_t", perm=[0, 2, 1, 3])
    o = node("Reshape", [o, const("merge", [1, TOKENS, DIM], np.int64)], "merged")
    x = node("Add", [x, linear(o, "proj", DIM, DIM)], "res1")
    h = linear(layernorm(x, "n2"), "fc1", DIM, 2 * DIM)
    e = node("Erf", [node("Div", [h, const("sqrt2", np.sqrt(2.0))], "gelu/Div")], "gelu/Erf")
    e = node("Add", [e, const("one", 1.0)], "gelu/Add")
    g = node("Mul", [node("Mul", [h, e], "gelu/Mul"), const("half", 0.5)], "gelu/Mul_1")
    x = node("Add", [x, linear(g, "fc2", 2 * DIM, DIM)], "res2")
    x = layernorm(x, "norm")
    first = node("Gather", [x, const("zero", 0, np.int64)], "cls_token", axis=1)
    node("Gemm", [first, const("head.w", rng.normal(0, 0.25, (10, DIM))), const("head.b", np.zeros(10))],
         "logits", transB=1)
    return nodes, inits


@pytest.fixture(scope="module")
def vit(ox):
    nodes, inits = _vit(np.random.default_rng(0))
    graph = helper.make_graph(nodes, "vit", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                             [1, 3, IMG, IMG])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


def test_every_level_matches_onnxruntime(ox, vit):
    feeds = {"input": np.random.default_rng(1).standard_normal((1, 3, IMG, IMG)).astype(np.float32)}
    ox.check(vit, feeds, rtol=1e-5, levels=(0, 1, 2, 3))


def test_o2_is_one_accelerated_graph_of_fused_ops(ox, vit):
    graph = ox.tidlc_graph(vit, 2)
    kinds = [op.kind for op in graph.ops]
    # the class token's Equal has no converter (a host op at import): folded with its constant operands
    assert "host" not in kinds
    assert kinds.count("layernorm") == 3  # n1 too, which reads the patch embedding's transpose
    assert not {"reduce", "sqrt", "erf", "pow", "div", "gelu"} & set(kinds)  # (the GELU: fused, below)
    # each Linear one dense with its bias, fc1 with the GELU fused (TIDL's InnerProduct, actType 9);
    # what stays: the attention's two matmuls, the residual and position adds, the query's scale
    dense = [op for op in graph.ops if op.kind == "dense"]
    assert len(dense) == 5 and all(len(op.operands) == 3 for op in dense)
    assert [op.name for op in dense if op.attrs["act"] == "gelu"] == ["fc1/MatMul"]
    assert kinds.count("matmul") == 2 and kinds.count("add") == 3
    feeds = {"input": np.random.default_rng(2).standard_normal((1, 3, IMG, IMG)).astype(np.float32)}
    ox.assert_close(run_graph(graph, feeds)["logits"], ox.ort_run(vit, feeds)["logits"], 1e-5, "-O2 logits")


def test_the_equal_of_constants_is_folded_at_import(ox, vit):
    """The exporter's Equal (of constants) has no converter; left a host op it would be one subgraph
    boundary per ViT export. The import evaluates it: no host op even at -O0."""
    kinds = [op.kind for op in ox.tidlc_graph(vit, 0).ops]
    assert "host" not in kinds
