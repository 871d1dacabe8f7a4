"""The campaign runner: worker processes feed mutated files to one target each.

Each input is classified as
- ``ok``: the reader accepted it,
- ``clean``: a :class:`~tidlc.diagnostics.TidlcError` (one line, location, hint: what we want),
- ``internal``: any other exception (a bug: tidlc would print "internal error ... please report it"),
- ``hang``: over the time limit (5 s; a SIGALRM in the worker, and the parent kills a worker that
  stops answering),
- ``memory``: the worker's peak resident set grew over the memory limit (2 GiB) during the input.

Inputs are derived deterministically from ``(campaign seed, target, index)``, so any finding is
replayed with ``python -m fuzz --target T --only INDEX``; every internal error, hang and
memory finding is also saved under ``fuzz/findings/TARGET/``.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import multiprocessing as mp
import os
import random
import resource
import shutil
import signal
import tempfile
import time
import traceback
from collections import Counter

import attrs

TARGETS = ("prototxt", "caffemodel", "onnx", "pb", "tflite", "tir", "weights", "netbin", "iobin",
           "import_config", "calib", "input_npy", "special")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@attrs.frozen
class Seed:
    """The files of one seed case: ``files`` maps a file name to its bytes, ``main`` is the one
    that is mutated (None: nothing is mutated, the case runs as it is)."""

    files: dict
    main: str | None


class Hang(BaseException):  # BaseException: tidlc's own `except Exception` must not swallow it
    pass


def load_target(name: str):
    return importlib.import_module(f"fuzz.targets.{name}")


def cli(*argv: str) -> int:
    """Run ``tidlc ARGV`` in this process with --debug (so exceptions propagate, classified by the
    runner), output discarded. Returns the exit code of a run that did not raise."""
    from tidlc.cli import main
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(["--debug", *argv])


def _rss_reset() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM (the peak resident set) of this process
    except OSError:
        pass


def _rss_peak() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_input(target, seeds: list[Seed], campaign: int, name: str, index: int) -> Seed:
    rng = random.Random(f"{campaign}:{name}:{index}")
    seed = seeds[index % len(seeds)]
    if seed.main is None:
        return seed
    others = [s.files[s.main] for s in seeds if s.main is not None]
    mutate = getattr(target, "mutate", None)
    if mutate is None:
        from fuzz.mutate import byte_mutation as mutate
    data = seed.files[seed.main]
    if index >= len(seeds):  # the first round runs every seed unchanged
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            data = mutate(data, rng, others)
    return Seed({**seed.files, seed.main: data}, seed.main)


def _write(case: Seed, directory: str) -> str | None:
    for fname, data in case.files.items():
        path = os.path.join(directory, fname)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if callable(data):  # a special file made by a function (FIFO, symlink, ...)
            data(path)
        else:
            with open(path, "wb") as fh:
                fh.write(data)
    return os.path.join(directory, case.main) if case.main else directory


def _alarm(signum, frame):
    raise Hang()


def _classify(exc: BaseException) -> tuple[str, str]:
    from tidlc.diagnostics import TidlcError
    if isinstance(exc, TidlcError):
        return "clean", ""
    if isinstance(exc, Hang):
        return "hang", "Hang"
    if isinstance(exc, SystemExit) and exc.code in (0, 1, 2, None):
        return "clean", ""  # argparse usage errors
    tb = traceback.extract_tb(exc.__traceback__)
    own = [f for f in tb if "tidlc" in f.filename or "/fuzz/" in f.filename] or tb
    where = f"{os.path.basename(own[-1].filename)}:{own[-1].lineno}" if own else "?"
    return "internal", f"{type(exc).__name__} at {where}: {str(exc)[:160]}"


def worker(name: str, indices: list[int], campaign: int, timeout: float, mem_limit: int,
           conn, findings_dir: str) -> None:
    """Runs in a child process: one result tuple per input through ``conn``."""
    os.environ.setdefault("TIDLC_NUM_THREADS", "1")
    # a parent that already ran the kernels (pytest) has an OpenMP pool that does not survive fork:
    # one thread in the workers, whatever the parent chose
    from tidlc.backends.tidl.fixed.fast import set_threads
    set_threads(1)
    resource.setrlimit(resource.RLIMIT_AS, (mem_limit * 3, mem_limit * 3))  # a safety net for the machine
    signal.signal(signal.SIGALRM, _alarm)
    import warnings
    warnings.simplefilter("ignore")
    target = load_target(name)
    warm_up = getattr(target, "warm_up", None)
    if warm_up is not None:  # one-time costs (importing a runtime) are not a per-input hang
        warm_up()
    seeds = target.seeds()
    work = tempfile.mkdtemp(prefix=f"fuzz-{name}-")
    try:
        for index in indices:
            case = make_input(target, seeds, campaign, name, index)
            case_dir = os.path.join(work, str(index))
            os.makedirs(case_dir)
            _rss_reset()
            start = time.perf_counter()
            outcome, detail = "ok", ""
            try:
                path = _write(case, case_dir)
                signal.setitimer(signal.ITIMER_REAL, timeout)
                try:
                    target.run(path)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except BaseException as exc:  # noqa: BLE001 - classifying is the point
                if isinstance(exc, KeyboardInterrupt):
                    raise
                outcome, detail = _classify(exc)
            elapsed = time.perf_counter() - start
            peak = _rss_peak()
            if outcome != "hang" and elapsed > timeout:
                outcome, detail = "hang", f"took {elapsed:.1f} s"
            elif peak > mem_limit and outcome != "internal":
                outcome, detail = "memory", f"peak RSS {peak >> 20} MiB"
            if outcome in ("internal", "hang", "memory"):
                _save(findings_dir, name, index, outcome, case, detail)
            shutil.rmtree(case_dir, ignore_errors=True)
            conn.send((index, outcome, detail, elapsed, peak))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        conn.send(None)


def _save(findings_dir: str, name: str, index: int, outcome: str, case: Seed, detail: str) -> None:
    if not findings_dir or case.main is None or callable(case.files[case.main]):
        return
    directory = os.path.join(findings_dir, name)
    os.makedirs(directory, exist_ok=True)
    base = os.path.join(directory, f"{outcome}-{index}-{os.path.basename(case.main)}")
    with open(base, "wb") as fh:
        fh.write(case.files[case.main])
    with open(base + ".txt", "w") as fh:
        fh.write(detail + "\n")


@attrs.define
class Result:
    target: str
    inputs: int = 0
    ok: int = 0
    clean: int = 0
    internal: int = 0
    hang: int = 0
    memory: int = 0
    peak_rss: int = 0
    seconds: float = 0.0
    findings: Counter = attrs.Factory(Counter)

    def as_dict(self) -> dict:
        return {"target": self.target, "inputs": self.inputs, "successes": self.ok, "clean_errors": self.clean,
                "internal_errors": self.internal, "hangs": self.hang, "over_memory": self.memory,
                "peak_rss_mib": round(self.peak_rss / 2**20, 1), "seconds": round(self.seconds, 1),
                "findings": dict(self.findings.most_common(50))}


def campaign(name: str, n: int, workers: int = 2, campaign_seed: int = 0, timeout: float = 5.0,
             mem_limit: int = 2 << 30, findings_dir: str | None = None, only: list[int] | None = None,
             progress=None) -> Result:
    """Feed ``n`` inputs (or the ``only`` indices) to target ``name`` over ``workers`` processes."""
    indices = list(only) if only is not None else list(range(n))
    result = Result(name)
    ctx = mp.get_context("fork")
    start = time.perf_counter()
    pending = [indices[w::workers] for w in range(workers)]
    running = {}  # conn -> (process, remaining indices, last answer time)

    def launch(todo: list[int]) -> None:
        if not todo:
            return
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=worker, args=(name, todo, campaign_seed, timeout, mem_limit, child,
                                                findings_dir or ""), daemon=True)
        proc.start()
        child.close()
        running[parent] = [proc, list(todo), time.monotonic()]

    for todo in pending:
        launch(todo)
    from multiprocessing.connection import wait
    while running:
        ready = wait(list(running), timeout=1.0)
        now = time.monotonic()
        for conn in ready:
            proc, todo, _ = running[conn]
            try:
                msg = conn.recv()
            except EOFError:
                msg = "died"
            if msg is None or msg == "died":
                proc.join(timeout=5)
                del running[conn]
                if msg == "died" and todo:  # the worker died on todo[0]: a crash of the process itself
                    bad = todo.pop(0)
                    result.inputs += 1
                    result.internal += 1
                    result.findings[f"internal: worker died (exit {proc.exitcode}) on input {bad}"] += 1
                    launch(todo)
                continue
            index, outcome, detail, elapsed, peak = msg
            todo.remove(index)
            running[conn][2] = now
            result.inputs += 1
            setattr(result, outcome, getattr(result, outcome) + 1)
            result.peak_rss = max(result.peak_rss, peak)
            if detail:
                result.findings[f"{outcome}: {detail}"] += 1
            if progress:
                progress(result)
        for conn, (proc, todo, last) in list(running.items()):
            if now - last > max(4 * timeout, 20):  # stuck where SIGALRM cannot reach (C code)
                proc.kill()
                proc.join()
                del running[conn]
                bad = todo.pop(0)
                result.inputs += 1
                result.hang += 1
                result.findings[f"hang: killed after {now - last:.0f} s on input {bad}"] += 1
                launch(todo)
    result.seconds = time.perf_counter() - start
    return result
