"""Checks of configuration values, for the dataclasses' `__post_init__`: each error names the CLI flag."""

from __future__ import annotations

import math

from skn.errors import UsageError


def at_least(flag: str, value: int | float, minimum: int | float) -> None:
    """`flag` (e.g. "--steps") must be a number >= minimum."""
    if not value >= minimum:  # NaN fails too
        raise UsageError(f"{flag} must be at least {minimum}, got {value}")


def positive(flag: str, value: float) -> None:
    """`flag` must be a finite number > 0."""
    if not (value > 0.0 and math.isfinite(value)):
        raise UsageError(f"{flag} must be a positive number, got {value}")


def between(flag: str, value: float, low: float, high: float) -> None:
    """`flag` must lie strictly between low and high."""
    if not low < value < high:
        raise UsageError(f"{flag} must lie strictly between {low:g} and {high:g}, got {value}")
