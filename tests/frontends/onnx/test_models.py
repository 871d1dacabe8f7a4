"""Real architectures against onnxruntime.

The 9 "light" models of the onnx wheel (their weights are ConstantOfShape
splats, so the interesting numerics are the graph structure: pools with
ceil/pads, LRN, BN, concat trees, channel shuffles, grouped convs) plus the
UltraFace detector with real weights. For each model, once per module:

* onnxruntime runs a copy of the model that also outputs the logits (the input
  of the final Softmax; a softmax over equal weights would hide errors);
* the original file is compiled at -O2 to IR text + weights, then run by
  ``tidlc run`` in a subprocess and in process;
* the copy is imported and run at -O0, -O1 and -O2: each level matches
  onnxruntime and the others (1e-4 x max |ref|), and its IR text round-trips.

A softmax whose logits are so large that 1e-4 of them is more than a nat (the
splat weights of squeezenet give logits near 1e10 that differ in the last
float bits) is not determined by a float32 run: onnxruntime and tidlc agree on
the logits to 1e-7 and still print different distributions. There the softmax
output is checked against the softmax of tidlc's own logits (which are checked
against onnxruntime), and must be a distribution.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import attrs
import numpy as np
import onnx
import onnxruntime
import pytest
from tidlc.frontends.onnx.importer import load_onnx

from tidlc.compiler import compile_model, optimize
from tidlc.config import CompileOptions
from tidlc.interp import run_graph
from tidlc.ir.parser import parse_graph
from tidlc.ir.printer import print_graph

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
ULTRAFACE = Path(__file__).resolve().parents[3] / "examples" / "ultraface" / "ultraface-rfb320.onnx"
MODELS = {p.stem[len("light_"):]: p for p in sorted(LIGHT.glob("light_*.onnx"))}
if ULTRAFACE.exists():
    MODELS["ultraface"] = ULTRAFACE
SLOW = {"vgg19", "densenet121"}
TOL = 1e-4


def _param(name):
    return pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else [], id=name)


@attrs.define
class Case:
    name: str
    source: Path  # the original model
    probe: Path  # a copy that also outputs the logits
    tmp: Path
    feeds: dict
    ref: dict  # onnxruntime outputs of the probe model
    logits: dict  # softmax output name -> its input (also an output of the probe)
    graphs: dict = attrs.Factory(dict)  # level -> (graph, outputs)

    def at_level(self, level: int):
        if level not in self.graphs:
            graph = load_onnx(str(self.probe), CompileOptions())
            optimize(graph, CompileOptions.of(opt_level=level))
            self.graphs[level] = (graph, run_graph(graph, self.feeds))
        return self.graphs[level]

    def expected(self, out_name: str, logits: np.ndarray | None) -> np.ndarray:
        """onnxruntime's output, or for an ill-conditioned softmax the softmax of our ``logits``."""
        ref = self.ref[out_name]
        source = self.logits.get(out_name)
        if source is None or TOL * float(np.max(np.abs(self.ref[source]))) < 1.0:
            return ref
        assert logits is not None, f"'{out_name}' is an ill-conditioned softmax: its logits are needed"
        assert rel_err(logits, self.ref[source]) <= TOL
        z = logits.astype(np.float64)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _with_logits(model: onnx.ModelProto) -> dict[str, str]:
    """Add the input of every Softmax that produces a graph output as an output ('logits')."""
    outputs = {o.name for o in model.graph.output}
    added = {}
    for node in model.graph.node:
        if node.op_type == "Softmax" and node.output[0] in outputs and node.input[0] not in outputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT, None))
            added[node.output[0]] = node.input[0]
    return added


@pytest.fixture(scope="module", params=[_param(n) for n in MODELS])
def case(request, tmp_path_factory) -> Case:
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    source = MODELS[name]
    model = onnx.load(str(source))
    logits = _with_logits(model)
    probe = tmp / f"{name}_probe.onnx"
    onnx.save(model, str(probe))
    session_options = onnxruntime.SessionOptions()
    session_options.log_severity_level = 3  # the light models carry unused initializers
    session = onnxruntime.InferenceSession(str(probe), session_options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    x = np.random.default_rng(7).random(inp.shape, dtype=np.float32)
    names = [o.name for o in session.get_outputs()]
    ref = dict(zip(names, session.run(None, {inp.name: x})))
    return Case(name, source, probe, tmp, {inp.name: x}, ref, logits)


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert np.isfinite(got).all() and np.isfinite(ref).all()
    return float(np.max(np.abs(got.astype(np.float64) - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


def test_compile_o2_and_run_cli(case: Case):
    """Import + -O2 + IR written; `tidlc run model.tir` and the in-process graph match onnxruntime."""
    out = case.tmp / "out"
    start = time.perf_counter()
    result = compile_model(str(case.source), CompileOptions.of(opt_level=2, emit="ir", outdir=str(out)))
    seconds = time.perf_counter() - start
    assert sorted(os.path.basename(p) for p in result.outputs) == ["model.tir", "model.weights"]
    (name, x), = case.feeds.items()
    x_path = case.tmp / "x.npy"
    np.save(x_path, x)
    npz = case.tmp / "outputs.npz"
    proc = subprocess.run([sys.executable, "-m", "tidlc.cli", "run", str(out / "model.tir"),
                           "--input", f"{name}={x_path}", "--output", str(npz)],
                          cwd=case.tmp,  # not the source tree: `python -m` puts the cwd on sys.path
                          capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    in_process = run_graph(result.graph, case.feeds)
    with np.load(npz) as cli:
        assert sorted(cli.files) == sorted(result.graph.output_names)
        probe_outputs = case.at_level(2)[1]  # the same model at -O2, with its logits
        for out_name in result.graph.output_names:
            ref = case.expected(out_name, probe_outputs.get(case.logits.get(out_name)))
            assert rel_err(cli[out_name], ref) <= TOL
            assert rel_err(in_process[out_name], ref) <= TOL
    print(f"{case.name}: import + -O2 + IR written in {seconds:.3f} s")


def test_every_level_matches_onnxruntime(case: Case):
    levels = {level: case.at_level(level)[1] for level in (0, 1, 2)}
    for level, outputs in levels.items():
        assert sorted(outputs) == sorted(case.ref)
        for out_name in case.ref:
            ref = case.expected(out_name, outputs.get(case.logits.get(out_name)))
            err = rel_err(outputs[out_name], ref)
            assert err <= TOL, f"-O{level} '{out_name}': {err:.2e} vs onnxruntime"
    for out_name in case.ref:
        for level in (1, 2):
            err = rel_err(levels[level][out_name], levels[0][out_name])
            assert err <= TOL, f"-O{level} vs -O0 '{out_name}': {err:.2e}"


@pytest.mark.parametrize("level", [0, 2])
def test_ir_text_round_trip(case: Case, level: int):
    graph = case.at_level(level)[0]
    text, weights = print_graph(graph)
    assert print_graph(parse_graph(text, weights))[0] == text


def test_o2_folds_the_constant_subgraphs(case: Case):
    graph = case.at_level(2)[0]
    kinds = {op.kind for op in graph.compute_ops()}
    assert not kinds & {"constant_of_shape", "shape", "batchnorm", "gather", "dropout", "identity"}
    assert all(op.operands[1].const_value() is not None for op in graph.ops if op.kind in ("conv2d", "dense"))
