"""Sparse constant tensors (``Tensor.sparsity``) and the DENSIFY op.

The models are made by TensorFlow's own converter with
``tf.lite.Optimize.EXPERIMENTAL_SPARSITY`` on layers whose kernels are mostly
zeros: a Conv2D (a CSR tensor read by DENSIFY), a Dense (a CSR tensor read by
DENSIFY) and a Dense with 1x4 blocks (a block-sparse tensor FULLY_CONNECTED
reads directly, no DENSIFY). Each is compared with the TFLite interpreter.
``densify`` itself is checked against a straight port of TFLite's recursive
``FormatConverter::SparseToDense`` on other traversal orders and block maps.
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from tidlc.frontends.tflite.importer import parse_tflite
from tidlc.frontends.tflite.sparsity import (
    DENSE,
    SPARSE_CSR,
    Level,
    Sparsity,
    SparsityError,
    densify,
    tensor_sparsity,
)

from tidlc.diagnostics import TidlcError

tf = pytest.importorskip("tensorflow")


def _sparse_model(kind: str) -> bytes:
    rng = np.random.default_rng({"dense": 0, "block": 1, "conv": 2}[kind])
    if kind == "conv":
        inp = tf.keras.Input((8, 8, 16), batch_size=1)
        layer = tf.keras.layers.Conv2D(8, 3, padding="same")
        kernel = rng.standard_normal((3, 3, 16, 8)) * (rng.random((3, 3, 16, 8)) < 0.15)
    else:
        inp = tf.keras.Input((64,), batch_size=1)
        layer = tf.keras.layers.Dense(32, activation="relu")
        if kind == "block":  # 1x4 blocks along the input features (TFLite's sparse FC kernels)
            keep = (rng.random((16, 32)) < 0.15).repeat(4, axis=0)
        else:
            keep = rng.random((64, 32)) < 0.15
        kernel = rng.standard_normal((64, 32)) * keep
    model = tf.keras.Model(inp, layer(inp))
    layer.set_weights([kernel.astype(np.float32), rng.standard_normal(layer.weights[1].shape).astype(np.float32)])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converter.convert()


@pytest.fixture(scope="module")
def sparse_models():
    return {kind: _sparse_model(kind) for kind in ("dense", "block", "conv")}


def _sparse_tensors(model: bytes):
    m = parse_tflite(model, "sparse.tflite")
    return m, {t.index: sp for t in m.tensors if (sp := tensor_sparsity(m, t.index)) is not None}


@pytest.mark.parametrize("kind, has_densify, blocks", [("dense", True, False), ("conv", True, False),
                                                       ("block", False, True)])
def test_sparse_model_matches_tflite(tfl, sparse_models, kind, has_densify, blocks):
    model = sparse_models[kind]
    m, sparse = _sparse_tensors(model)
    assert len(sparse) == 1, "the converter kept the weights dense"
    (sp,) = sparse.values()
    assert bool(sp.block_map) == blocks
    assert any(level.format == SPARSE_CSR for level in sp.levels)
    assert ("DENSIFY" in {op.op_type for op in m.operators}) == has_densify
    x = tfl.randn(*((1, 8, 8, 16) if kind == "conv" else (1, 64)), seed=3)
    (ref,) = tfl.tfl_run(model, {"x": x})
    for level in (0, 1):
        graph = tfl.tidlc_graph(model, level)
        (got,) = tfl.run_graph(graph, {graph.input_names()[0]: x}).values()
        assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    folded = tfl.tidlc_graph(model, 1)
    kinds = [op.kind for op in folded.ops]
    assert not [k for k in kinds if k not in ("input", "const", "dense", "conv2d", "transpose", "reshape",
                                              "relu", "output")], kinds


def test_densify_output_is_a_constant(tfl, sparse_models):
    """DENSIFY leaves a const named after its output tensor, even at -O0."""
    model = sparse_models["dense"]
    m = parse_tflite(model, "sparse.tflite")
    (op,) = [op for op in m.operators if op.op_type == "DENSIFY"]
    out_name = m.tensors[op.outputs[0]].name
    graph = tfl.tidlc_graph(model, 0)
    consts = {op.results[0].name for op in graph.ops if op.kind == "const"}
    assert out_name in consts


# --------------------------------------------------------------------------- densify() itself
def _reference(shape, sp: Sparsity, values):
    """TFLite's FormatConverter::SparseToDense, recursively, as written in C++."""
    rank = len(shape)
    order, block_map = sp.traversal_order, sp.block_map
    block_size = [sp.levels[rank + k].dense_size for k in range(len(block_map))]
    dense = np.zeros(shape, np.asarray(values).dtype)
    ptr = [0]

    def populate(indices, level, prev):
        if level == len(indices):
            orig = [0] * rank
            for i in range(rank):
                orig[order[i]] = indices[i]
            for i in range(rank, len(indices)):
                b = order[i] - rank
                orig[block_map[b]] = orig[block_map[b]] * block_size[b] + indices[i]
            dense[tuple(orig)] = values[ptr[0]]
            ptr[0] += 1
            return
        lv = sp.levels[level]
        if lv.format == DENSE:
            for i in range(lv.dense_size):
                indices[level] = i
                populate(indices, level + 1, prev * lv.dense_size + i)
        else:
            for i in range(int(lv.segments[prev]), int(lv.segments[prev + 1])):
                indices[level] = int(lv.indices[i])
                populate(indices, level + 1, i)

    populate([0] * len(order), 0, 0)
    assert ptr[0] == len(values)
    return dense


def _encode(dense: np.ndarray, order, block_map, block_sizes, formats):
    """Sparsity parameters + values of ``dense`` (zero blocks dropped at CSR levels), built by
    brute force: the walk's index tuples, grouped by prefix."""
    rank = dense.ndim
    blocked = list(dense.shape)
    for d, b in zip(block_map, block_sizes):
        blocked[d] //= b
    sizes = [blocked[d] if d < rank else block_sizes[d - rank] for d in order]

    def element(t):
        orig = [0] * rank
        for i in range(rank):
            orig[order[i]] = t[i]
        for i in range(rank, len(t)):
            b = order[i] - rank
            orig[block_map[b]] = orig[block_map[b]] * block_sizes[b] + t[i]
        return dense[tuple(orig)]

    tuples = list(itertools.product(*[range(s) for s in sizes]))

    def kept(prefix):  # a prefix is stored when its subtree holds a nonzero, or every level above is dense
        return any(element(t) != 0 for t in tuples if t[:len(prefix)] == prefix)

    levels, parents = [], [()]
    for lv, size in enumerate(sizes):
        if formats[lv] == DENSE:
            levels.append(Level(DENSE, size))
            parents = [p + (i,) for p in parents for i in range(size)]
        else:
            segments, indices, children = [0], [], []
            for p in parents:
                for i in range(size):
                    if kept(p + (i,)):
                        indices.append(i)
                        children.append(p + (i,))
                segments.append(len(indices))
            levels.append(Level(SPARSE_CSR, 0, np.array(segments), np.array(indices)))
            parents = children
    values = np.array([element(t) for t in parents], dense.dtype)
    return Sparsity(tuple(order), tuple(block_map), levels), values


@pytest.mark.parametrize("order, block_map, block_sizes, formats", [
    ((0, 1), (), (), (DENSE, SPARSE_CSR)),  # CSR
    ((1, 0), (), (), (DENSE, SPARSE_CSR)),  # CSC
    ((0, 1), (), (), (SPARSE_CSR, SPARSE_CSR)),  # doubly compressed
    ((0, 1, 2), (1,), (4,), (DENSE, SPARSE_CSR, DENSE)),  # TFLite's 1x4 blocks
    ((1, 0, 2, 3), (0, 1), (2, 2), (DENSE, SPARSE_CSR, DENSE, DENSE)),  # 2x2 blocks, column-major blocks
    ((0, 1, 3, 2), (0, 1), (2, 4), (SPARSE_CSR, SPARSE_CSR, DENSE, DENSE)),  # blocks walked in another order
])
def test_densify_matches_tflite_format_converter(order, block_map, block_sizes, formats):
    rng = np.random.default_rng(7)
    dense = rng.standard_normal((4, 8)).astype(np.float32)
    blocked = [4, 8]
    for d, b in zip(block_map, block_sizes):
        blocked[d] //= b
    keep = rng.random(blocked) < 0.3
    keep[0, 0] = True
    for d, b in zip(block_map, block_sizes):
        keep = keep.repeat(b, axis=d)
    dense = dense * keep
    sp, values = _encode(dense, order, block_map, block_sizes, formats)
    if not block_map or tuple(order[2:]) == tuple(range(2, 2 + len(block_map))):
        np.testing.assert_array_equal(_reference(dense.shape, sp, values), dense)
    np.testing.assert_array_equal(densify(dense.shape, sp, values), dense)


def test_densify_int8_and_three_dims():
    rng = np.random.default_rng(3)
    dense = (rng.integers(-127, 128, (3, 4, 5)) * (rng.random((3, 4, 5)) < 0.2)).astype(np.int8)
    sp, values = _encode(dense, (2, 0, 1), (), (), (DENSE, SPARSE_CSR, SPARSE_CSR))
    out = densify(dense.shape, sp, values)
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, dense)


@pytest.mark.parametrize("change, message", [
    (lambda sp, v: (sp.levels[1].indices.__setitem__(0, 99), v), "outside its dimension"),
    (lambda sp, v: (sp.levels[1].segments.__setitem__(-1, 10_000), v), "array_segments"),
    (lambda sp, v: (None, v[:-1]), "buffer holds"),
    (lambda sp, v: (setattr(sp, "traversal_order", (0, 0)), v), "traversal_order"),
    (lambda sp, v: (setattr(sp.levels[0], "dense_size", 3), v), "DENSE of size 3"),
    (lambda sp, v: (setattr(sp, "block_map", (5,)), v), "traversal_order"),
])
def test_densify_rejects_damaged_parameters(change, message):
    dense = np.diag(np.arange(1, 5, dtype=np.float32))
    sp, values = _encode(dense, (0, 1), (), (), (DENSE, SPARSE_CSR))
    _, values = change(sp, values)
    with pytest.raises(SparsityError, match=message):
        densify(dense.shape, sp, values)


def test_damaged_sparse_tensor_names_the_tensor(tfl, sparse_models, monkeypatch):
    from tidlc.frontends.tflite import importer
    model = sparse_models["dense"]

    def short(m, index, path=""):
        sp = tensor_sparsity(m, index, path)
        if sp is not None:
            sp.levels[1].indices = sp.levels[1].indices.copy()
            sp.levels[1].indices[0] = 1000
        return sp

    monkeypatch.setattr(importer, "tensor_sparsity", short)
    with pytest.raises(TidlcError, match="sparse tensor .*outside its dimension") as info:
        tfl.tidlc_graph(model, 0)
    assert info.value.code == "corrupt"
