"""The TensorFlow converter table: ``@converter("Conv2D", check=...)`` registers ``fn(node)``.

TensorFlow ops carry no version that changes their semantics (an op that
changes gets a new name: ``FusedBatchNormV3``), so the table is keyed by op
name only. A ``check(node) -> problem or None`` runs on every node before
anything is converted, so a model's whole list of problems is reported at once.
"""
from __future__ import annotations

from tidlc.frontend import ConverterTable

CONVERTERS = ConverterTable("TensorFlow")
converter = CONVERTERS.converter

__all__ = ["CONVERTERS", "converter"]
