"""The fuzz runner classifies what it sees: a smoke test that cannot fail would prove nothing."""
from __future__ import annotations

import pathlib
import sys
import time
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from fuzz.runner import TARGETS, Seed, campaign  # noqa: E402


def fake_target(name: str, behaviour) -> str:
    """Install ``fuzz.targets.NAME`` whose ``run`` does ``behaviour(data)`` on each input."""
    module = types.ModuleType(f"fuzz.targets.{name}")
    module.seeds = lambda: [Seed({"x.bin": bytes(range(64))}, "x.bin")]

    def run(path: str) -> None:
        with open(path, "rb") as fh:
            behaviour(fh.read())
    module.run = run
    sys.modules[module.__name__] = module
    return name


def clean(data: bytes) -> None:
    from tidlc.diagnostics import TidlcError
    if data != bytes(range(64)):
        raise TidlcError("bad input", "x.bin")


def buggy(data: bytes) -> None:
    if len(data) % 2:
        raise KeyError("oops")
    clean(data)


def slow(data: bytes) -> None:
    if data[:1] == b"\x00" and data != bytes(range(64)):
        time.sleep(30)


def greedy(data: bytes) -> None:
    if data != bytes(range(64)):
        block = bytearray(300 << 20)  # touched: resident
        block[::4096] = b"\x01" * len(block[::4096])


def test_clean_errors_and_successes_are_counted():
    r = campaign(fake_target("fake_clean", clean), 40, workers=2)
    assert r.inputs == 40 and r.internal == r.hang == r.memory == 0
    assert r.ok >= 1 and r.clean + r.ok == 40


def test_internal_errors_are_found_and_named():
    r = campaign(fake_target("fake_buggy", buggy), 40, workers=2)
    assert r.internal > 0 and r.inputs == 40
    assert any("KeyError" in finding for finding in r.findings)


def test_hangs_are_cut_at_the_timeout():
    start = time.perf_counter()
    r = campaign(fake_target("fake_slow", slow), 30, workers=2, timeout=0.5)
    assert r.hang > 0 and r.inputs == 30
    assert time.perf_counter() - start < 25


@pytest.mark.skipif(not pathlib.Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_memory_over_the_limit_is_a_finding():
    r = campaign(fake_target("fake_greedy", greedy), 6, workers=1, mem_limit=200 << 20)
    assert r.memory > 0 and r.peak_rss > 200 << 20


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_smoke(target):
    """Every reader, 200 mutated inputs: no internal error, hang or memory finding."""
    r = campaign(target, 200, workers=1)
    assert r.inputs == 200
    assert (r.internal, r.hang, r.memory) == (0, 0, 0), r.findings
    assert r.clean > 0  # the mutations reach the readers' checks
    if target in ("onnx", "pb"):
        assert r.ok > 0
