"""skn's exceptions. Every error a user can cause is one of these, with text that says what and where.

The CLI prints one red line for any `SknError` and exits with its `exit_code`: 2 for usage and data
errors (the user can fix them), 1 for internal ones.
"""

from __future__ import annotations


class SknError(Exception):
    """Base class of every error skn raises on purpose."""

    exit_code: int = 1


class UsageError(SknError):
    """A flag, option or argument that does not make sense."""

    exit_code = 2


class DataError(SknError):
    """A data file that cannot be read: malformed line, missing field, empty set."""

    exit_code = 2


class MetricError(SknError):
    """A metric that cannot be computed or is useless (constant, NaN)."""

    exit_code = 2


class ModelError(SknError):
    """A model we cannot load or cannot map onto layers and FFN neurons."""

    exit_code = 2


class RunDirError(SknError):
    """A run directory that is missing files or holds files of the wrong shape."""

    exit_code = 2


class TrainingError(SknError):
    """Training that cannot give a usable prompt: a non-finite loss, a resume that does not match."""

    exit_code = 2


class StorageError(SknError):
    """The machine refused a file: disk or quota full, file size limit, read-only, no permission, too many open files."""

    exit_code = 2


class InternalError(SknError):
    """A broken invariant inside skn: a bug, please report it."""

    exit_code = 1


class DistributedFailure(SknError):
    """A rank of a torchrun run failed (skn.engine.distributed): the run stops on every rank with that rank's message."""

    exit_code = 1
