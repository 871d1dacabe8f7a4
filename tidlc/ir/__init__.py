"""The typed IR: types, values/ops/graphs, op declarations, builder, verifier, text form."""
from tidlc.ir.builder import Builder, infer_types
from tidlc.ir.core import Graph, Op, Value
from tidlc.ir.opdef import OPS, AttrSpec, OpDef, get_opdef
from tidlc.ir.parser import parse_graph
from tidlc.ir.printer import print_graph
from tidlc.ir.types import QuantInfo, TensorType
from tidlc.ir.verifier import verify

__all__ = ["OPS", "AttrSpec", "Builder", "Graph", "Op", "OpDef", "QuantInfo", "TensorType", "Value",
           "get_opdef", "infer_types", "parse_graph", "print_graph", "verify"]
