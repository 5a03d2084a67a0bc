"""Progress reporting for long work: a Rich bar for people, silence for tests and scripts.

The core enters `progress.task(description, total)` and calls the `advance(steps, note)` it yields: `steps`
units done since the last call, `note` a short free text (e.g. the current loss). It never prints anything else.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol, TypeAlias

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Advance(Protocol):
    def __call__(self, steps: int = 1, note: str = "") -> None: ...


class ProgressSink(Protocol):
    def task(self, description: str, total: int) -> "TaskContext": ...


TaskContext: TypeAlias = AbstractContextManager[Advance]


class SilentProgress:
    """Reports nothing."""

    @contextmanager
    def _task(self, description: str, total: int) -> Iterator[Advance]:
        def advance(steps: int = 1, note: str = "") -> None:
            return None

        yield advance

    def task(self, description: str, total: int) -> TaskContext:
        return self._task(description, total)


class RichProgress:
    """A Rich progress bar per task, on stderr, with a free-text note (e.g. the current loss)."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console if console is not None else Console(stderr=True)

    @contextmanager
    def _task(self, description: str, total: int) -> Iterator[Advance]:
        columns = (
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}", markup=False),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self._console, transient=False) as bar:
            task_id = bar.add_task(description, total=total, note="")

            def advance(steps: int = 1, note: str = "") -> None:
                bar.update(task_id, advance=steps, note=note)

            yield advance

    def task(self, description: str, total: int) -> TaskContext:
        return self._task(description, total)
