"""Graph boundary ops: ``input`` and ``const``."""
from __future__ import annotations

from tidlc.ir.opdef import a_str, defop
from tidlc.ir.types import TensorType, dtype_of


def _input_infer(op, types):
    return [op.results[0].type]


def _input_compute(op):
    raise RuntimeError("input values are supplied by the caller")


defop("input", (), {"name": a_str()}, infer=_input_infer, compute=_input_compute, foldable=False,
      category="io", doc="A network input; its type is declared.")


def _const_infer(op, types):
    old = op.results[0].type if op.results else None
    return [TensorType(op.data.shape, dtype_of(op.data), old.layout if old else None,
                       old.quant if old else None)]


defop("const", (), {}, infer=_const_infer, compute=lambda op: op.data, foldable=False,
      category="io", doc="A constant tensor (weights); its data lives on the op.")
