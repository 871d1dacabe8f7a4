"""A Keras transformer encoder block as .tflite: BATCH_MATMUL (MultiHeadAttention's einsums after
TFLite's conversion) was a host op, each splitting the graph; Keras' LayerNormalization (moments,
rsqrt) stayed nine pieces. Checked against the TFLite interpreter."""
from __future__ import annotations

import sys

checks = sys.modules["tidlc_frontend_checks"]


def test_encoder_block_matches_the_interpreter_and_fuses(tfl):
    x = tfl.randn(1, 9, 16)
    fn = checks.keras_encoder_block(tfl.tf.keras)
    tfl.check(fn, {"x": x}, rtol=1e-5, interior=None)
    kinds = checks.encoder_block_kinds(tfl.tidlc_graph(tfl.convert(fn, {"x": x}), 2))
    assert kinds.count("layernorm") == 2 and kinds.count("dense+gelu") == 1
    assert kinds.count("matmul") == 2 and kinds.count("softmax") == 1
    assert not {"reduce", "erf", "sqrt", "reciprocal", "host", "neg"} & set(kinds)
