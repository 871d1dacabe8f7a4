"""RecordedQuantization: a quantization redone from the first op a new 16-bit layer can change
(automatic mixed precision quantizes one such variant per candidate) gives the graph a full
quantization gives, and leaves the recorded one as it was."""
from pathlib import Path

import attrs
import numpy as np
import pytest
from tidlc.backends.tidl.quantize.prepare import prepare
from tidlc.backends.tidl.quantize.ptq import (
    QuantConfig,
    RecordedQuantization,
    WeightCache,
    quantize_prepared,
)

from tidlc.config import CompileOptions
from tidlc.interp import Interpreter

from .conftest import frames, small_cnn

CAFFE = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "caffe"
ULTRAFACE = Path(__file__).resolve().parents[2] / "examples" / "ultraface" / "ultraface-rfb320.onnx"


def _signature(graph) -> list:
    """Every op in order: kind, name, attributes, result types, constant bytes, and which results it reads."""
    where = {}
    sig = []
    for i, op in enumerate(graph.ops):
        for k, r in enumerate(op.results):
            where[id(r)] = (i, k)
        data = None if op.data is None else (np.asarray(op.data).dtype.str, np.asarray(op.data).tobytes())
        sig.append((op.kind, op.name, repr(sorted(op.attrs.items())), tuple(repr(r.type) for r in op.results),
                    data, tuple(where[id(v)] for v in op.operands)))
    sig.append(tuple(where[id(v)] for v in graph.outputs))
    return sig


def _origins(result) -> list:
    """The float value (of the prepared graph) each result of the fixed-point graph stands for."""
    return [id(result.origin.get(id(r))) for op in result.graph.ops for r in op.results]


def _load(key: str):
    from tidlc.compiler import load, optimize
    if key == "cnn":
        return small_cnn(seed=3, act="relu"), frames(4)
    if key == "mtcnn-onet":
        path, weights = CAFFE / "mtcnn" / "det3.prototxt", CAFFE / "mtcnn" / "det3.caffemodel"
    else:
        path, weights = ULTRAFACE, None
    if not path.exists():
        pytest.skip(f"{path} missing")
    opts = CompileOptions.of(opt_level=2, weights=weights and str(weights), emit="none")
    graph = load(str(path), opts)
    optimize(graph, opts)
    shape = graph.input_ops[0].results[0].type.shape
    rng = np.random.default_rng(0)
    return graph, [{graph.input_ops[0].attrs["name"]: rng.uniform(-1, 1, shape).astype(np.float32)} for _ in range(2)]


@pytest.mark.parametrize("key", ["cnn", "mtcnn-onet", "ultraface"])
def test_resumed_variants_equal_full_quantizations(key):
    graph, feeds = _load(key)
    fgraph = prepare(graph)[0].graph
    it = Interpreter(fgraph)
    seen: dict[int, tuple[float, float]] = {}
    squares: dict[int, float] = {}
    for f in feeds:
        for vid, x in it.values(f, keep_all=True).items():
            x = np.asarray(x)
            if x.dtype.kind == "f" and x.size:
                lo, hi = seen.get(vid, (0.0, 0.0))
                seen[vid] = (min(lo, float(x.min())), max(hi, float(x.max())))
                squares[vid] = squares.get(vid, 0.0) + float(np.mean(np.square(x, dtype=np.float64)))

    class Ranges:  # with the inputs' mean squares: 16-bit layers may take the full range (test_full_range)
        def __call__(self, v, bits=8):
            lo, hi = seen[id(v)]
            return (lo * 1.25, hi * 1.25) if bits > 8 else (lo, hi)

        def mean_square(self, v):
            return squares.get(id(v))

    ranges = Ranges()

    for base_layers in (frozenset(), frozenset({next(op.name for op in fgraph.compute_ops()
                                                     if op.kind == "conv2d")})):
        config = QuantConfig(layers_16bit=base_layers, full_range_16=True)
        recorded = RecordedQuantization(fgraph, ranges, config, WeightCache())
        before = _signature(recorded.result.graph)
        assert before == _signature(quantize_prepared(fgraph, ranges, config).graph)
        names = sorted({op.name for op in fgraph.compute_ops()} - base_layers)
        assert len(names) > 3
        sets = [frozenset({n}) for n in names] + [frozenset(names[1::3]), frozenset(names)]
        for extra in sets:
            variant = attrs.evolve(config, layers_16bit=base_layers | extra)
            got = recorded.variant(variant)
            want = quantize_prepared(fgraph, ranges, variant, WeightCache())
            assert _signature(got.graph) == _signature(want.graph), sorted(extra)
            assert _origins(got) == _origins(want)
        assert _signature(recorded.result.graph) == before  # the variants share its ops, unchanged
        assert recorded.start_of(frozenset()) == len(fgraph.ops)
    # another setting than the layers' precision: a full walk
    other = QuantConfig(per_channel_depthwise=True)
    assert _signature(recorded.variant(other).graph) == _signature(quantize_prepared(fgraph, ranges, other).graph)
