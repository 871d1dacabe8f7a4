"""A Keras transformer encoder block as a frozen graph: Einsum (MultiHeadAttention, EinsumDense),
BatchMatMulV2, Erfc (the exact GELU) and Tile were unsupported ops (an error: a .pb has no host
runtime). Checked against TensorFlow, and for what -O2 makes of it."""
from __future__ import annotations

import sys

checks = sys.modules["tidlc_frontend_checks"]


def test_encoder_block_matches_tensorflow_and_fuses(tfx):
    x = tfx.randn(1, 9, 16)
    fn = checks.keras_encoder_block(tfx.tf.keras)
    tfx.check(fn, {"x": x}, rtol=1e-5, interior=None)
    data, outputs, _ = tfx.freeze(fn, {"x": x})
    kinds = checks.encoder_block_kinds(tfx.tidlc_graph(data, outputs, 2))
    assert kinds.count("layernorm") == 2 and kinds.count("dense+gelu") == 1
    assert kinds.count("add") == 2  # the two residuals: every bias is in its dense
    assert kinds.count("matmul") == 2 and kinds.count("softmax") == 1
    assert not {"reduce", "erf", "sqrt", "reciprocal", "host"} & set(kinds)


def test_tile_of_a_class_token(tfx):
    cls = tfx.randn(1, 1, 8, seed=1)

    def fn(x):
        return tfx.tf.concat([tfx.tf.tile(cls, [tfx.tf.shape(x)[0], 1, 1]), x], axis=1) + 1.0

    tfx.check(fn, {"x": tfx.randn(1, 4, 8)})
