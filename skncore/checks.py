"""Checks of configuration values, for the dataclasses' `__post_init__`: each error names the CLI flag."""

from __future__ import annotations

import math
import os

from skn.errors import UsageError

SEED_MAX = 2**32 - 1  # seeds are what every generator skn seeds accepts (numpy's too): 0 .. 2^32 - 1
COUNT_MAX = 2**63 - 1  # a count torch can hold (int64)
THREADS_PER_CORE = 4  # --threads above this many per core only exhausts the process's threads


def at_least(flag: str, value: int | float, minimum: int | float) -> None:
    """`flag` (e.g. "--steps") must be a number >= minimum."""
    if not value >= minimum:  # NaN fails too
        raise UsageError(f"{flag} must be at least {minimum}, got {value}")


def at_most(flag: str, value: int | float, maximum: int | float) -> None:
    """`flag` must be a number <= maximum."""
    if not value <= maximum:  # NaN fails too
        raise UsageError(f"{flag} must be at most {maximum}, got {value}")


def count(flag: str, value: int, minimum: int) -> None:
    """`flag` must be a whole number from `minimum` to COUNT_MAX (what torch can hold)."""
    at_least(flag, value, minimum)
    at_most(flag, value, COUNT_MAX)


def finite(flag: str, value: float) -> None:
    """`flag` must be a finite number (not inf, not NaN)."""
    if not math.isfinite(value):
        raise UsageError(f"{flag} must be a finite number, got {value}")


def positive(flag: str, value: float) -> None:
    """`flag` must be a finite number > 0."""
    if not (value > 0.0 and math.isfinite(value)):
        raise UsageError(f"{flag} must be a positive number, got {value}")


def between(flag: str, value: float, low: float, high: float) -> None:
    """`flag` must lie strictly between low and high."""
    if not low < value < high:
        raise UsageError(f"{flag} must lie strictly between {low:g} and {high:g}, got {value}")


def seed_value(flag: str, value: int) -> None:
    """`flag` must be a seed: a whole number from 0 to SEED_MAX."""
    if not 0 <= value <= SEED_MAX:
        raise UsageError(f"{flag} must be a whole number from 0 to {SEED_MAX}, got {value}")


def max_threads() -> int:
    """The most CPU threads --threads may ask for: THREADS_PER_CORE per core of this machine."""
    return THREADS_PER_CORE * (os.cpu_count() or 1)


def thread_count(flag: str, value: int) -> None:
    """`flag` must be 0 (torch's default) or a thread count up to `max_threads()`."""
    limit = max_threads()
    if not 0 <= value <= limit:
        raise UsageError(f"{flag} must be from 0 to {limit} ({THREADS_PER_CORE} per core of this machine), got {value}")
