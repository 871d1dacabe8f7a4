"""Calibration: run the float interpreter over frames and observe the tensors that need ranges.

With a parallel :class:`~tidlc.parallel.Executor` (``--workers N``, ``--ray``) the frames are cut
into contiguous shards, each shard is observed in a worker, and the observers are merged in
shard order (:meth:`RangeObserver.merge`, exact): ranges and net.bin are the same bytes as in
one process (docs/scale.md).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from tidlc.interp import Interpreter
from tidlc.ir.core import Graph

from .observers import RangeObserver

SHARD_FRAMES = 64  # frames per job at most when calibration runs in workers


def progress_bar(total: int | None, description: str):
    """Calibration's rich progress bar (count and elapsed time) on a terminal; a no-op object otherwise."""
    return progress(total, description, unit=None)


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def advance(self) -> None:
        pass


class _RichProgress:
    def __init__(self, progress, total, description):
        self.progress, self.total, self.description = progress, total, description

    def __enter__(self):
        self.progress.__enter__()
        self.task = self.progress.add_task(self.description, total=self.total)
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def advance(self) -> None:
        self.progress.advance(self.task)


def progress(total: int | None, description: str, unit: str | None = "frames"):
    """A rich progress bar (count, ``unit``, elapsed, ETA; with ``unit`` None only count and elapsed)
    on a terminal; a no-op object when piped."""
    if not sys.stderr.isatty():
        return _NoProgress()
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if unit is None:
        columns.append(TimeElapsedColumn())
    else:
        columns += [TextColumn(unit), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    return _RichProgress(Progress(*columns, console=Console(stderr=True), transient=True), total, description)


class Calibration:
    """Observers of one graph, filled frame by frame."""

    def __init__(self, graph: Graph, wanted: set[int], channel_means: set[int] = frozenset()):
        self.graph = graph
        self.channel_means = frozenset(channel_means)
        self.interp = Interpreter(graph)
        self.observers: dict[int, RangeObserver] = {
            vid: RangeObserver(channel_axis=1 if vid in channel_means else None) for vid in wanted}
        self.frames = 0
        self.seconds = 0.0
        self._scratch = np.empty(0, dtype=np.float32)

    def _observe(self, value_id: int, array: np.ndarray) -> None:
        obs = self.observers.get(value_id)
        if obs is None or array.dtype.kind != "f":
            return
        if self._scratch.size < array.size:
            self._scratch = np.empty(array.size, dtype=np.float32)
        obs.update(array, self._scratch)

    def add_frame(self, feeds: Mapping[str, np.ndarray]) -> None:
        start = time.perf_counter()
        for op in self.graph.input_ops:
            name = op.attrs["name"]
            if name in feeds:
                self._observe(id(op.results[0]), np.asarray(feeds[name]))

        def observer(op, results):
            for v, r in zip(op.results, results):
                if id(v) in self.observers:
                    self._observe(id(v), r)

        self.interp.run(feeds, observer)
        self.frames += 1
        self.seconds += time.perf_counter() - start

    def run(self, frames: Iterable[Mapping[str, np.ndarray]], total: int | None = None,
            description: str = "calibrating", executor: Any = None) -> Calibration:
        """Observe every frame; with a parallel ``executor``, shard by shard in its workers."""
        if executor is not None and executor.parallel:
            if total is None:
                frames = list(frames)
                total = len(frames)
            return self._run_sharded(frames, total, executor, description)
        with progress_bar(total, description) as bar:
            for feeds in frames:
                self.add_frame(feeds)
                bar.advance()
        return self

    def _run_sharded(self, frames: Iterable, total: int, executor: Any, description: str) -> Calibration:
        from tidlc.parallel import chunks
        values = _values(self.graph)
        index = {id(v): i for i, v in enumerate(values)}
        wanted = sorted(index[vid] for vid in self.observers)
        means = sorted(index[vid] for vid in self.channel_means if vid in index)
        # contiguous shards, one per worker, in pieces of at most SHARD_FRAMES read as workers
        # free up: the frames of a large set are never all in memory at once
        pieces = chunks(frames, total, executor.slots(), SHARD_FRAMES)
        sizes: list[int] = []

        def jobs():
            for piece in pieces:
                sizes.append(len(piece))
                yield self.graph, wanted, means, piece

        with progress_bar(total, f"{description} ({executor.describe()})") as bar:
            def done(i, _result):
                for _ in range(sizes[i]):
                    bar.advance()

            results = executor.map(_observe_shard, jobs(), done)
        for count, seconds, observers in results:  # in shard order (any order merges exactly)
            self.frames += count
            self.seconds += seconds
            for i, obs in zip(wanted, observers):
                self.observers[id(values[i])].merge(obs)
        return self


def _values(graph: Graph) -> list:
    """Every value of the graph in op order: the same positions in a copy of the graph sent to
    another process, whose value ids differ."""
    return [v for op in graph.ops for v in op.results]


def _observe_shard(job: tuple) -> tuple[int, float, list[RangeObserver]]:
    """A worker's shard of the frames: (frames, seconds, the observers in ``wanted`` order)."""
    graph, wanted, means, frames = job
    values = _values(graph)
    calibration = Calibration(graph, {id(values[i]) for i in wanted}, {id(values[i]) for i in means})
    for feeds in frames:
        calibration.add_frame(feeds)
    return calibration.frames, calibration.seconds, [calibration.observers[id(values[i])] for i in wanted]
