"""Fixtures of the perf-model tests: zoo networks (built once per session) and random tables."""
from __future__ import annotations

import numpy as np
import pytest
from tidlc.backends.tidl.perf import columns as C


@pytest.fixture(scope="session")
def zoo_graphs():
    """name -> graph after -O2, built on first use."""
    from tidlc.backends.tidl.perf import zoo
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = zoo.build(name)
        return cache[name]
    return get


def random_tables(rng: np.random.Generator, n_layers: int):
    """A random but well-formed network: layers, tensors with lifetimes, CSR inputs/outputs."""
    layers = np.zeros((n_layers, C.L_COLS), dtype=np.int64)
    layers[:, C.L_KIND] = rng.integers(0, 3, n_layers)
    layers[:, C.L_ROWS] = rng.integers(1, 120, n_layers)
    layers[:, C.L_W] = rng.integers(1, 200, n_layers)
    layers[:, C.L_ALIGN] = rng.choice([1, 8, 16], n_layers)
    layers[:, C.L_K] = rng.integers(1, 3000, n_layers)
    layers[:, C.L_COUT_G] = rng.integers(1, 600, n_layers)
    layers[:, C.L_GROUPS] = rng.choice([1, 1, 1, 2, 4], n_layers)
    layers[:, C.L_PLANES] = rng.integers(1, 300, n_layers)
    layers[:, C.L_OPS] = rng.integers(0, 12000, n_layers)
    layers[:, C.L_ELEM] = rng.choice([1, 2], n_layers)
    layers[:, C.L_WBYTES] = np.where(rng.random(n_layers) < 0.6, rng.integers(1, 3_000_000, n_layers), 0)
    # tensor 0 is the network input; layer i produces tensor i + 1 and reads 1-3 earlier tensors
    n_t = n_layers + 1
    tensors = np.zeros((n_t, C.T_COLS), dtype=np.int64)
    tensors[:, C.T_BYTES] = rng.integers(1, 4_000_000, n_t)
    tensors[:, C.T_FIRST] = np.arange(-1, n_layers)
    tensors[:, C.T_LAST] = tensors[:, C.T_FIRST]
    tensors[0, C.T_LAST] = 0
    in_lists, out_lists = [], []
    for i in range(n_layers):
        k = int(rng.integers(1, 4))
        ins = sorted({int(t) for t in rng.integers(max(0, i - 6), i + 1, k)})
        for t in ins:
            tensors[t, C.T_LAST] = max(tensors[t, C.T_LAST], i)
        in_lists.append(ins)
        out_lists.append([i + 1])
    tensors[0, C.T_PINNED] = 1
    tensors[-1, C.T_PINNED] = 1
    tensors[-1, C.T_LAST] = n_layers

    def csr(lists):
        ptr = np.zeros(len(lists) + 1, dtype=np.int64)
        ptr[1:] = np.cumsum([len(x) for x in lists])
        return ptr, np.array([t for x in lists for t in x], dtype=np.int64)

    in_ptr, in_idx = csr(in_lists)
    out_ptr, out_idx = csr(out_lists)
    return layers, in_ptr, in_idx, out_ptr, out_idx, tensors


def random_params(rng: np.random.Generator) -> np.ndarray:
    p = np.zeros(C.P_COUNT, dtype=np.int64)
    p[C.P_BATCHES] = rng.choice([1, 2, 4, 7])
    p[C.P_MMA_PANEL_BYTES] = rng.choice([32, 64, 128])
    p[C.P_MMA_BLOCK] = rng.integers(16, 600)
    p[C.P_MMA_LOOP_OH] = rng.integers(0, 200)
    p[C.P_VEC_BYTES] = rng.choice([32, 64])
    p[C.P_VEC_RATE] = rng.integers(300, 4000)
    p[C.P_L2_POOL] = rng.integers(0, 400_000)
    p[C.P_L2_WORK] = rng.integers(2_000, 400_000)
    p[C.P_MSMC_POOL] = rng.integers(0, 12_000_000)
    p[C.P_PERSIST] = rng.integers(0, 2)
    p[C.P_DDR_RATE] = rng.integers(1_000, 20_000)
    p[C.P_MSMC_RATE] = rng.integers(10_000, 150_000)
    p[C.P_LAYER_SETUP] = rng.integers(0, 30_000)
    return p


@pytest.fixture
def tables_factory():
    return random_tables, random_params
