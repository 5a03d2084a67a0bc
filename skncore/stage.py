"""Named stages of a run, so that an unexpected failure says where it happened.

    with stage("loading the model", log_dir=out):
        loaded = load_requested_model(...)

A `SknError` passes through unchanged (it already says what and where). Any other exception (a bug in
skn or in a library it calls) becomes a `StageFailure` naming the stage; with `log_dir` its traceback is
written to `log_dir/error.log` first, so the CLI prints one red line and says where the details are.
`KeyboardInterrupt` and `SystemExit` are not caught.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from skn.errors import InternalError, SknError

ERROR_LOG = "error.log"


class StageFailure(InternalError):
    """An unexpected exception inside a named stage; `log` is the error.log written ("" if none)."""

    def __init__(self, stage: str, error: BaseException, log: str) -> None:
        where = f" (traceback in {log})" if log else ""
        super().__init__(f"unexpected failure while {stage}: {type(error).__name__}: {error}{where}")
        self.stage = stage
        self.error = error
        self.log = log


def write_error_log(log_dir: Path, stage: str, error: BaseException) -> str:
    """Append the traceback of `error` to log_dir/error.log; returns its path ("" when not writable)."""
    path = Path(log_dir) / ERROR_LOG
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"while {stage}:\n")
            handle.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
            handle.write("\n")
    except OSError:
        return ""
    return str(path)


@contextmanager
def stage(name: str, log_dir: Path | None = None) -> Iterator[None]:
    try:
        yield
    except SknError:
        raise
    except Exception as err:
        log = write_error_log(log_dir, name, err) if log_dir is not None and Path(log_dir).is_dir() else ""
        raise StageFailure(name, err, log) from err


__all__ = ["ERROR_LOG", "StageFailure", "stage", "write_error_log"]
