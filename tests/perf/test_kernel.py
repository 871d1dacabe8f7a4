"""The compiled cycle kernel equals its numpy twin (the specification) bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
from tidlc.backends.tidl.perf import (
    PerfOptions,
    _cycles,  # type: ignore[attr-defined]
    columns,
    model,
    reference,
)


def test_the_compiled_kernel_is_in_use():
    assert model.HAVE_CYTHON
    assert model.kernel is _cycles
    assert type(_cycles.simulate).__name__ in ("cython_function_or_method", "builtin_function_or_method")


def test_column_layout_agrees():
    assert _cycles.column_layout() == columns.layout()


@pytest.mark.parametrize("seed", range(12))
def test_random_networks_bit_equal(seed, tables_factory):
    random_tables, random_params = tables_factory
    rng = np.random.default_rng(seed)
    for _ in range(4):
        tables = random_tables(rng, int(rng.integers(1, 60)))
        params = random_params(rng)
        got_res, got_loc = _cycles.simulate(*tables, params)
        want_res, want_loc = reference.simulate(*tables, params)
        assert got_res.dtype == want_res.dtype == np.int64
        assert got_res.tobytes() == want_res.tobytes()
        assert got_loc.tobytes() == want_loc.tobytes()
        assert _cycles.compute_cycles(tables[0], params).tobytes() == \
            reference.compute_cycles(tables[0], params).tobytes()


@pytest.mark.parametrize("seed", range(6))
def test_plan_bit_equal_and_valid(seed):
    """Same offsets from both plans, and no two tensors alive together overlap in memory."""
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 80))
    sizes = rng.choice([64, 128, 1000, 4096, 50_000], n).astype(np.int64)  # many ties
    first = rng.integers(-1, 30, n)
    last = first + rng.integers(0, 10, n)
    cand = rng.random(n) < 0.8
    got = _cycles.plan_offsets(sizes, first, last, cand)
    want = reference.plan_offsets(sizes, first, last, cand)
    assert got.tolist() == want.tolist()
    placed = np.flatnonzero(cand)
    assert (got[~cand] == -1).all() and (got[placed] >= 0).all()
    for a in placed:
        for b in placed:
            if a < b and first[a] <= last[b] and first[b] <= last[a]:
                assert got[a] + sizes[a] <= got[b] or got[b] + sizes[b] <= got[a]


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2_1.4", "yolox_nano_lite_416"])
@pytest.mark.parametrize("batches,persist,bits", [(1, False, 8), (4, True, 8), (1, True, 16)])
def test_real_networks_bit_equal(zoo_graphs, name, batches, persist, bits):
    prep = model.prepare(zoo_graphs(name), "tda4vm",
                         PerfOptions(batches=batches, persist_weights=persist, bits=bits, hints=False))
    params = model.kernel_params(prep.device, prep.options)
    got = model.run_kernel(prep.tables, params)
    want = model.run_kernel(prep.tables, params, impl=reference)
    assert got[0].tobytes() == want[0].tobytes() and got[1].tobytes() == want[1].tobytes()


def test_zero_layers():
    layers = np.zeros((0, columns.L_COLS), dtype=np.int64)
    tensors = np.zeros((1, columns.T_COLS), dtype=np.int64)
    tensors[0] = (100, -1, 0, 1)
    ptr = np.zeros(1, dtype=np.int64)
    idx = np.zeros(0, dtype=np.int64)
    params = np.ones(columns.P_COUNT, dtype=np.int64) * 64
    for impl in (_cycles, reference):
        res, loc = impl.simulate(layers, ptr, idx, ptr, idx, tensors, params)
        assert res.shape == (0, columns.R_COLS) and loc.tolist() == [columns.LOC_DDR]


def test_degenerate_values_do_not_divide_by_zero(tables_factory):
    """Zero rates, widths or element sizes (a bad device file, a plugin's table) give equal results, no crash."""
    random_tables, _ = tables_factory
    rng = np.random.default_rng(7)
    tables = list(random_tables(rng, 20))
    tables[0][::3, columns.L_ELEM] = 0
    tables[0][::4, columns.L_ALIGN] = 0
    params = np.zeros(columns.P_COUNT, dtype=np.int64)
    params[columns.P_BATCHES] = 1
    got = _cycles.simulate(*tables, params)
    want = reference.simulate(*tables, params)
    assert got[0].tobytes() == want[0].tobytes() and got[1].tobytes() == want[1].tobytes()
