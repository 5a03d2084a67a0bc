"""Progress reporting for long work: a Rich bar for people, silence for tests and scripts.

The core calls `progress.task(description, total)` and then `advance(n, **fields)` on what it gets;
it never prints anything else.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Advance(Protocol):
    def __call__(self, steps: int = 1, note: str = "") -> None: ...


class ProgressSink(Protocol):
    def task(self, description: str, total: int) -> "TaskContext": ...


class TaskContext(Protocol):
    def __enter__(self) -> Advance: ...
    def __exit__(self, *exc: object) -> None: ...


class SilentProgress:
    """Reports nothing."""

    @contextmanager
    def _task(self, description: str, total: int) -> Iterator[Advance]:
        def advance(steps: int = 1, note: str = "") -> None:
            return None

        yield advance

    def task(self, description: str, total: int) -> TaskContext:
        return self._task(description, total)  # type: ignore[return-value]


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
        return self._task(description, total)  # type: ignore[return-value]
