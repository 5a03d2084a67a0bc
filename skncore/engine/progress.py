"""Progress reporting for long work: a Rich bar for people, silence for tests and scripts.

`AutoProgress` (the library's default) chooses when each task starts: a Rich bar where a person watches (stderr
is a terminal, or the code runs in Jupyter / IPython), silence elsewhere (CI, pipes, pytest's captured output).

The core enters `progress.task(description, total)` and calls the `advance(steps, note)` it yields: `steps`
units done since the last call, `note` a short free text (e.g. the current loss). It never prints anything else.
"""

from __future__ import annotations

import sys
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


def in_ipython() -> bool:
    """Whether this process runs an IPython shell or a Jupyter kernel. IPython is asked only when it is already
    imported: a process that never loaded it is not running it (and the import costs nothing here)."""
    module = sys.modules.get("IPython")
    get_ipython = getattr(module, "get_ipython", None)
    return callable(get_ipython) and get_ipython() is not None


def stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return callable(isatty) and bool(isatty())


def choose_progress(terminal: bool, notebook: bool) -> ProgressSink:
    """A Rich bar where a person watches (`terminal`: stderr is a TTY; `notebook`: Jupyter or IPython), else silence."""
    return RichProgress() if terminal or notebook else SilentProgress()


class AutoProgress:
    """The default sink: `choose_progress` for where this process runs, decided as each task starts."""

    def resolve(self) -> ProgressSink:
        return choose_progress(stderr_is_terminal(), in_ipython())

    def task(self, description: str, total: int) -> TaskContext:
        return self.resolve().task(description, total)
