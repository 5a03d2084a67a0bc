"""Named stages of a run, so that an unexpected failure says where it happened.

    with stage("loading the model", log_dir=out):
        loaded = load_requested_model(...)

A `SknError` passes through unchanged (it already says what and where; one that embeds a library's
message of several lines, which the CLI prints as one, is written to `log_dir/error.log` in full first). Any other exception (a bug in
skn or in a library it calls) becomes a `StageFailure` naming the stage; with `log_dir` its traceback is
written to `log_dir/error.log` first, so the CLI prints one red line and says where the details are.
`KeyboardInterrupt` and `SystemExit` are not caught.

A failure of the machine rather than of skn (a full disk or quota, `ulimit -f`, a read-only folder, no
permission, too many open files) is no bug: `storage_error` makes it a `StorageError` (exit 2) that names
the file, or the stage's folder where the error does not say which file ("cannot write R: No space left on
device (while writing the run directory)"). safetensors reports these as a `SafetensorError` ending in
"(os error N)"; they are read the same way.
"""

from __future__ import annotations

import errno
import os
import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

from skn.errors import InternalError, SknError, StorageError

ERROR_LOG = "error.log"
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})  # only a write meets these
ENVIRONMENT_ERRNOS = WRITE_ERRNOS | {errno.EACCES, errno.EPERM, errno.EMFILE, errno.ENFILE, errno.ENAMETOOLONG, errno.EIO}
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


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


def _os_error(error: BaseException) -> tuple[int, str, str] | None:
    """(errno, reason, file or "") of an OSError or of a SafetensorError that carries one; None otherwise."""
    if isinstance(error, OSError) and error.errno is not None:
        filename = error.filename if isinstance(error.filename, str) else ""
        return error.errno, error.strerror or os.strerror(error.errno), filename
    if isinstance(error, SafetensorError):
        found = _RUST_OS_ERROR.search(str(error))
        if found is not None:
            code = int(found.group(1))
            return code, os.strerror(code), ""
    return None


def storage_error(error: BaseException, where: Path | str | None = None, during: str = "") -> StorageError | None:
    """The machine's refusal in `error` as one line naming the file (else `where`, the folder being written),
    or None when `error` is something else (then it may be a bug)."""
    found = _os_error(error)
    if found is None or found[0] not in ENVIRONMENT_ERRNOS:
        return None
    code, reason, filename = found
    verb = "cannot write" if code in WRITE_ERRNOS else "cannot access"
    target = filename or (str(where) if where is not None else "")
    suffix = f" (while {during})" if during else ""
    return StorageError(f"{verb} {target}: {reason}{suffix}" if target else f"{verb} a file: {reason}{suffix}")


@contextmanager
def stage(name: str, log_dir: Path | None = None) -> Iterator[None]:
    try:
        yield
    except SknError as err:
        if "\n" in str(err).strip() and log_dir is not None and Path(log_dir).is_dir():
            write_error_log(log_dir, name, err)  # a library's message of many lines: the CLI shows one
        raise
    except Exception as err:
        refused = storage_error(err, log_dir, name)
        if refused is not None:
            raise refused from err
        log = write_error_log(log_dir, name, err) if log_dir is not None and Path(log_dir).is_dir() else ""
        raise StageFailure(name, err, log) from err


__all__ = ["ENVIRONMENT_ERRNOS", "ERROR_LOG", "StageFailure", "stage", "storage_error", "write_error_log"]
