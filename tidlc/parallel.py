"""Run independent jobs here, in local worker processes, or as Ray tasks (docs/scale.md).

Callers cut their work into deterministic contiguous shards (:func:`shards`)
or independent jobs, and :meth:`Executor.map` returns the results in job
order whatever finished first; merging them in that order makes the outcome
independent of where and when each job ran. Three ways to run:

* ``workers == 1`` and no Ray: the jobs run one after another in this process;
* ``--workers N``: N local processes at a time (forked where the platform
  forks: a job and the state it reads, graphs included, are inherited rather
  than pickled, and only results come back through a pipe; spawned
  elsewhere, with jobs pickled), each with one integer-kernel thread (tidlc's
  float runs use numpy's BLAS on one thread everywhere: :func:`one_blas_thread`);
* ``--ray [ADDRESS]``: one Ray task per job (one CPU each) on the cluster at
  ADDRESS, or on a local Ray started with ``num_cpus`` = the workers (all
  CPUs with ``--workers 1``). Ray is an optional extra: ``pip install
  "tidlc[ray]"``; jobs and results travel through Ray's object store, and
  every node needs the same tidlc installed.

A :class:`~tidlc.diagnostics.TidlcError` raised in a job is raised again
here with its code, location and hint.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import attrs

from tidlc.diagnostics import TidlcError

LOCAL_RAY = "local"  # --ray without an address: start a Ray on this machine
RAY_HINT = 'pip install "tidlc[ray]" (or pip install "ray>=2.9")'
BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


def chunks(items: Iterable, total: int, count: int, most: int | None = None) -> Iterator[list]:
    """The contiguous shards of :func:`shards` (``total`` items into ``count``), each cut further
    into pieces of at most ``most`` items, drawn from ``items`` as they are needed: a stream of
    frames is never all in memory."""
    it = iter(items)
    for part in shards(range(total), count):
        step = len(part) if not most else min(most, len(part))
        for start in range(0, len(part), step):
            piece = list(itertools.islice(it, min(step, len(part) - start)))
            if piece:
                yield piece
    while True:  # more items than ``total`` said: none is dropped
        piece = list(itertools.islice(it, most or max(1, total)))
        if not piece:
            return
        yield piece


def shards(items: Sequence, count: int) -> list[list]:
    """``items`` cut into at most ``count`` contiguous, deterministic shards (the first ones one
    longer when the count does not divide; no empty shard)."""
    count = max(1, int(count))
    size, extra = divmod(len(items), count)
    out, start = [], 0
    for w in range(count):
        end = start + size + (1 if w < extra else 0)
        if end > start:
            out.append(list(items[start:end]))
        start = end
    return out


@attrs.frozen
class _Failure:
    """A TidlcError raised in a worker, as plain fields (exceptions with keyword arguments do not
    survive pickling whole)."""

    message: str
    loc: str | None
    hint: str
    problems: list
    code: str

    @classmethod
    def of(cls, exc: TidlcError) -> _Failure:
        return cls(exc.message, str(exc.loc) if exc.loc else None, exc.hint, list(exc.problems), exc.code)

    def error(self) -> TidlcError:
        return TidlcError(self.message, self.loc, hint=self.hint, problems=self.problems, code=self.code)


def one_kernel_thread() -> None:
    """This worker's integer kernels on one thread (a worker among N must not use every core;
    integer results do not depend on the thread count)."""
    os.environ["TIDLC_NUM_THREADS"] = "1"  # read when a backend's kernels first choose their threads
    for module in list(sys.modules.values()):  # kernels already loaded (a forked worker): pin them now
        pin = getattr(module, "set_threads", None) if getattr(module, "__name__", "").startswith("tidlc.backends.") else None
        if callable(pin):
            pin(1)


_BLAS: dict = {"controller": None, "modules": 0, "depth": 0, "limiter": None}  # (threadpoolctl's)
_BLAS_LOCK = threading.Lock()


@contextlib.contextmanager
def one_blas_thread():
    """numpy's BLAS on one thread inside the block (tidlc's float and fixed-point runs use it).

    * Same bytes everywhere: how a BLAS splits a GEMM's sums can depend on its thread count, and
      calibration ranges come from the float interpreter's sums; one thread on every machine and
      in every worker takes that out of the question.
    * Speed: OpenBLAS's idle workers spin for a while after every multi-threaded call and take
      the cores the integer kernels' OpenMP threads need; a fixed-point run after a float one ran
      4-6x slower (UltraFace RFB-320 8-bit 17 ms/frame instead of 2.8 ms on 2 cores). The float
      runs lose nothing measurable on the test models (RFB-320 7.0 vs 6.8 ms/frame, MobileNetV2
      14.0 vs 14.4): their time is in im2col and the element-wise ops.

    Nested blocks (quantization runs the interpreter) share one limit: the outermost sets it
    and restores the process's own setting (a lock keeps the count across threads)."""
    with _BLAS_LOCK:
        if _BLAS["depth"] == 0:
            if _BLAS["controller"] is None or _BLAS["modules"] != len(sys.modules):
                # (again after an import: it may have loaded another BLAS, e.g. scipy's)
                try:
                    from threadpoolctl import ThreadpoolController
                    _BLAS["controller"] = ThreadpoolController()
                except ImportError:  # (a dependency of tidlc; without it runs are only slower)
                    _BLAS["controller"] = False
                _BLAS["modules"] = len(sys.modules)
            if _BLAS["controller"]:
                _BLAS["limiter"] = _BLAS["controller"].limit(limits=1, user_api="blas")
        _BLAS["depth"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS["depth"] -= 1
            if _BLAS["depth"] == 0 and _BLAS["limiter"] is not None:
                _BLAS["limiter"].restore_original_limits()
                _BLAS["limiter"] = None


def _call(fn: Callable[[Any], Any], job: Any) -> Any:
    """Run one job in a worker: one kernel thread, warnings off (the caller's process already
    gave them), a TidlcError returned as a :class:`_Failure`."""
    import warnings
    one_kernel_thread()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(job)
    except TidlcError as exc:
        return _Failure.of(exc)


def _raise_failures(results: list) -> list:
    for r in results:
        if isinstance(r, _Failure):
            raise r.error()
    return results


@attrs.frozen
class Executor:
    """Where jobs run: ``workers`` local processes, or Ray (``ray``: None = no Ray,
    ``"local"`` = a Ray started here, else a cluster address such as ``auto`` or ``HOST:6379``)."""

    workers: int = 1
    ray: str | None = None

    def __attrs_post_init__(self):
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 1:
            raise TidlcError(f"--workers {self.workers}: expected a whole number of at least 1", code="option",
                             hint="--workers 2 runs two local worker processes")

    @classmethod
    def from_options(cls, options: Any) -> Executor:
        """The executor of CompileOptions (``--workers``, ``--ray``; their ``quant`` group)."""
        if options is None:
            return cls()
        q = options.quant
        return cls(q.workers, q.ray)

    @property
    def parallel(self) -> bool:
        return self.workers > 1 or self.ray is not None

    @property
    def shares_memory(self) -> bool:
        """Whether jobs see this process's objects as they are (here, or in forked workers), so a
        job may carry unpicklable ones (a backend, plugins); else it must carry what pickles."""
        if self.ray is not None:
            return False
        import multiprocessing
        return self.workers == 1 or "fork" in multiprocessing.get_all_start_methods()

    def describe(self) -> str:
        if self.ray is not None:
            where = "a local Ray" if self.ray == LOCAL_RAY else f"the Ray cluster at {self.ray}"
            return f"{self.slots()} Ray task(s) on {where}"
        return f"{self.workers} worker process(es)" if self.workers > 1 else "this process"

    def connect(self) -> Executor:
        """Start or reach Ray now, when asked for (a command calls it before long work, so a bad
        address or a missing Ray is the first thing said); nothing to do for local workers."""
        if self.ray is not None:
            self._ray()
        return self

    def slots(self) -> int:
        """How many jobs run at once: the workers, or with Ray and one worker, the cluster's CPUs."""
        if self.ray is None or self.workers > 1:
            return self.workers
        ray = self._ray()
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def map(self, fn: Callable[[Any], Any], jobs: Iterable[Any],
            done: Callable[[int, Any], None] | None = None) -> list:
        """``[fn(job) for job in jobs]``, run as this executor says, in job order. ``jobs`` is
        consumed as workers free up (at most twice the slots ahead), so a generator of jobs keeps
        only those in flight in memory. ``done(index, result)`` is called in this process as each
        job's result arrives (for progress)."""
        if self.ray is not None:
            return self._map_ray(fn, jobs, done)
        if self.workers == 1:
            results = []
            for i, job in enumerate(jobs):
                results.append(fn(job))
                if done:
                    done(i, results[-1])
            return results
        import multiprocessing
        if "fork" in multiprocessing.get_all_start_methods():
            return _raise_failures(_map_forked(fn, jobs, self.workers, done))
        return _raise_failures(_map_spawned(fn, list(jobs), self.workers, done))

    # --- Ray ------------------------------------------------------------------------------
    def _ray(self):
        try:
            import ray
        except ImportError:
            raise TidlcError("--ray: Ray is not installed", hint=RAY_HINT, code="unsupported") from None
        if not ray.is_initialized():
            quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
                     "configure_logging": True}
            # Ray workers start in the driver's working directory, first on their sys.path: a source
            # checkout there (tidlc/ without its built extensions) would shadow the installed tidlc
            here = os.getcwd()
            neutral = os.path.join(tempfile.gettempdir(), "tidlc-ray")
            os.makedirs(neutral, exist_ok=True)
            try:
                os.chdir(neutral)
                if self.ray == LOCAL_RAY:
                    cpus = self.workers if self.workers > 1 else (os.cpu_count() or 1)
                    ray.init(num_cpus=cpus, **quiet)
                else:
                    _check_reachable(self.ray)
                    ray.init(address=self.ray, **quiet)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise TidlcError(f"--ray {self.ray}: cannot connect: {first}", code="option",
                                 hint="start a cluster with `ray start --head` and pass its address "
                                      "(or --ray alone for a local Ray); see docs/scale.md") from None
            finally:
                os.chdir(here)
        return ray

    def _map_ray(self, fn, jobs: Iterable, done) -> list:
        ray = self._ray()
        env = {name: "1" for name in BLAS_VARIABLES}  # (tidlc runs BLAS on one thread anyway)
        task = ray.remote(num_cpus=1, runtime_env={"env_vars": {**env, "TIDLC_NUM_THREADS": "1"}})(_call)
        ahead = 2 * self.slots()
        results: dict[int, Any] = {}
        index: dict = {}  # object ref -> job index
        upcoming = iter(enumerate(jobs))
        while True:
            while len(index) < ahead:
                nxt = next(upcoming, None)
                if nxt is None:
                    break
                index[task.remote(fn, nxt[1])] = nxt[0]
            if not index:
                break
            ready, _ = ray.wait(list(index), num_returns=1)
            for ref in ready:  # as they finish, for progress; the list comes back in job order
                i = index.pop(ref)
                results[i] = ray.get(ref)
                if done and not isinstance(results[i], _Failure):
                    done(i, results[i])
        return _raise_failures([results[i] for i in range(len(results))])


def _check_reachable(address: str, seconds: float = 5.0) -> None:
    """A HOST:PORT address that nothing answers on fails now, in one line (Ray itself retries for
    minutes); ``auto`` and ``ray://`` addresses are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return
    import socket
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as exc:
        raise TidlcError(f"--ray {address}: no Ray head answers there ({exc.strerror or exc})", code="option",
                         hint="start one with `ray start --head --port PORT`, or --ray alone for a local Ray "
                              "(docs/scale.md)") from None


def _map_forked(fn, jobs: Iterable, workers: int, done) -> list:
    """At most ``workers`` forked children at a time, one per job; each sends its pickled result
    (or a _Failure, or a traceback) back through a pipe."""
    import multiprocessing
    from multiprocessing.connection import wait
    ctx = multiprocessing.get_context("fork")
    results: dict[int, Any] = {}
    running: dict = {}  # reading end -> (index, process)
    upcoming = iter(enumerate(jobs))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        while True:
            while len(running) < workers:
                nxt = next(upcoming, None)
                if nxt is None:
                    break
                i, job = nxt
                reader, writer = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(fn, job, writer))
                proc.start()
                writer.close()
                running[reader] = (i, proc)
            if not running:
                break
            for reader in wait(list(running)):
                i, proc = running.pop(reader)
                try:
                    status, value = reader.recv()
                except EOFError:
                    status, value = "died", None
                reader.close()
                proc.join()
                if status == "died":
                    raise TidlcError(f"worker process {i + 1} died (exit code {proc.exitcode})", code="internal",
                                     hint="out of memory? try fewer --workers")
                if status == "crash":
                    raise RuntimeError(f"worker process {i + 1} failed:\n{value}")
                results[i] = value
                if done and not isinstance(value, _Failure):
                    done(i, value)
    finally:
        for reader, (_, proc) in running.items():
            proc.terminate()
            proc.join()
            reader.close()
    return [results[i] for i in range(len(results))]


def _child(fn, job, writer) -> None:
    try:
        result = ("ok", _call(fn, job))
    except BaseException:  # noqa: BLE001 - anything else goes back as text
        import traceback
        result = ("crash", traceback.format_exc())
    try:
        writer.send(result)
    except Exception:  # noqa: BLE001 - an unpicklable result
        import traceback
        writer.send(("crash", traceback.format_exc()))
    writer.close()


def _map_spawned(fn, jobs: list, workers: int, done) -> list:
    """Where nothing forks: a spawned pool (jobs and ``fn`` must pickle)."""
    import concurrent.futures
    import multiprocessing
    results: list = [None] * len(jobs)
    if not jobs:
        return results
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)),
                                                mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_call, fn, job): i for i, job in enumerate(jobs)}
        for future in concurrent.futures.as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            if done and not isinstance(results[i], _Failure):
                done(i, results[i])
    return results
