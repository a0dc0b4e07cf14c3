"""Progress reporting: rich bars on a terminal, silence in CI and pipes.

Stages take a :class:`Progress`-like object and call ``task()``/``advance()``;
they never print. The CLI decides whether bars are shown.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class Reporter(Protocol):
    def start(self, label: str, total: int | None, unit: str) -> None: ...
    def advance(self, label: str, n: int = 1) -> None: ...
    def finish(self, label: str) -> None: ...


class Quiet:
    """Reports nothing (tests, CI logs, --json)."""

    def start(self, label: str, total: int | None, unit: str) -> None:
        pass

    def advance(self, label: str, n: int = 1) -> None:
        pass

    def finish(self, label: str) -> None:
        pass


class RichReporter:
    """Bars with count, rate and ETA on stderr."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TaskProgressColumn(),
            TextColumn("[cyan]{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._tasks: dict[str, Any] = {}

    def start(self, label: str, total: int | None, unit: str) -> None:
        if label in self._tasks:
            self._progress.update(self._tasks[label], total=total)
            return
        self._tasks[label] = self._progress.add_task(label, total=total, unit=unit, rate="")

    def advance(self, label: str, n: int = 1) -> None:
        task_id = self._tasks.get(label)
        if task_id is None:
            return
        self._progress.advance(task_id, n)
        task = self._progress.tasks[task_id]
        speed = task.speed
        self._progress.update(task_id, rate=f"{speed:,.1f}/s" if speed else "")

    def finish(self, label: str) -> None:
        task_id = self._tasks.get(label)
        if task_id is not None:
            task = self._progress.tasks[task_id]
            if task.total is None:
                self._progress.update(task_id, total=task.completed)

    @contextmanager
    def live(self) -> Iterator[RichReporter]:
        with self._progress:
            yield self


def wants_bars(json_output: bool = False) -> bool:
    """Bars only for a person at a terminal: not in CI, not with --json."""
    return not json_output and sys.stderr.isatty() and not os.environ.get("CI")
