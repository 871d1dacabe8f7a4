"""The ``float-ref`` backend: a compile target that keeps the model in float.

``tidlc compile MODEL --target float-ref -o OUT`` writes the optimised float
IR (``OUT/float.tir`` + ``float.weights``) and a marker file; loading the
folder runs it on tidlc's float interpreter. It is the reference a quantized
target is compared with (what the model computes before quantization), and a
backend as small as the contract allows (docs/backends.md).
"""
from __future__ import annotations

import json
import os

from tidlc.backend import Verdict

STEM = "float"
MARKER = "float-ref.json"


class FloatExecutable:
    def __init__(self, graph):
        self.graph = graph

    def input_info(self) -> list:
        from tidlc.ir.types import numpy_dtype
        return [(op.attrs["name"], tuple(op.results[0].type.shape), numpy_dtype(op.results[0].type.dtype).name)
                for op in self.graph.input_ops]

    def run(self, feeds: dict, **kw) -> dict:
        from tidlc.interp import run_graph
        return run_graph(self.graph, feeds)


class FloatRefBackend:
    name = "float-ref"

    def devices(self) -> list:
        return ["host"]

    def supports(self, op) -> Verdict:
        if op.opdef.compute is None:
            return Verdict("host", f"'{op.kind}' has no float reference")
        return Verdict("accelerated", "the float interpreter runs every op with a reference")

    def prepare_pipeline(self, level: int, passes: list) -> list:
        return [p for p in passes if p != "quantize"]  # float through and through

    def emit(self, graph, outdir: str, options) -> list:
        from tidlc.compiler import write_ir
        from tidlc.fileio import atomic_write
        paths = write_ir(graph, outdir, STEM)
        marker = os.path.join(outdir, MARKER)
        with atomic_write(marker, "w") as fh:  # last: a folder with the marker has the IR
            json.dump({"target": self.name, "ir": f"{STEM}.tir"}, fh)
        return [*paths, marker]

    def recognizes(self, location) -> bool:
        return os.path.isfile(os.path.join(os.fspath(location), MARKER))

    def load(self, location) -> FloatExecutable:
        from tidlc.compiler import load
        from tidlc.diagnostics import TidlcError
        if not self.recognizes(location):
            raise TidlcError(f"no {MARKER} here", os.fspath(location),
                             hint="tidlc compile MODEL --target float-ref -o DIR writes one", code="file")
        return FloatExecutable(load(os.path.join(os.fspath(location), f"{STEM}.tir")))
