"""Calibration: run the float interpreter over frames and observe the tensors that need ranges."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping

import numpy as np

from tidlc.interp import Interpreter
from tidlc.ir.core import Graph

from .observers import RangeObserver


def progress_bar(total: int | None, description: str):
    """A rich progress bar on a terminal; a no-op object otherwise."""
    if not sys.stderr.isatty():
        return _NoProgress()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=Console(stderr=True), transient=True)
    return _RichProgress(progress, total, description)


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


class Calibration:
    """Observers of one graph, filled frame by frame."""

    def __init__(self, graph: Graph, wanted: set[int], channel_means: set[int] = frozenset()):
        self.graph = graph
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
            description: str = "calibrating") -> Calibration:
        with progress_bar(total, description) as bar:
            for feeds in frames:
                self.add_frame(feeds)
                bar.advance()
        return self
