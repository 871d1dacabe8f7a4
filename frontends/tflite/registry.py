"""The TFLite converter table: ``@converter("CONV_2D", check=...)`` registers ``fn(node)``.

Keyed by builtin operator name. TFLite op versions only widen the types and
options an op accepts (the options tables are read with the schema's
defaults), so one converter serves every version; unsupported option values
are rejected by the row's ``check`` before anything is converted.
"""
from __future__ import annotations

from tidlc.frontend import ConverterTable

CONVERTERS = ConverterTable("TFLite")
converter = CONVERTERS.converter

__all__ = ["CONVERTERS", "converter"]
