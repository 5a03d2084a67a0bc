"""Ablation as a dose-response curve: the top K against random sets of K over a grid of K, or one set
steered by a factor S over a grid of S, each point with the same kind of controls as `skn.ablate`.

    K grid (default)   1, 3, 10, 30, 100, ... below the number of neurons, then every neuron
    controls           per K, C random sets with the top K's count per layer at its slots, drawn from the
                       layer's neurons outside the top K, or from all of the layer's neurons where too few
                       are left (at K = every neuron the controls hold the same neurons as the top K)
    S grid             one set (the top K), `Value.scale(S)` for each S, the same C control sets at every S
    departure          the first grid point whose p (loss by default) is below alpha = 0.05 after Holm's
                       step-down correction over the grid: p_(i) * (G - i + 1) for the i-th smallest,
                       made monotone; it holds the family-wise error rate at alpha.

The smallest empirical p is 1 / (C + 1), and Holm's smallest adjusted p is G / (C + 1): a grid of G points
can only depart with C >= G / alpha - 1 controls (20 G, roughly). Cost: G * (1 + C) passes over the items
after the unablated one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import torch

from skn.ablate import MEASURES, AblationConfig, AblationData, Comparison, Measures, compare, measure
from skn.intervention import Target, Value, ValueKind
from skn.errors import UsageError
from skn.progress import ProgressSink, SilentProgress

ALPHA = 0.05


class Axis(Enum):
    K = "k"
    SCALE = "scale"


def default_grid(total: int) -> tuple[int, ...]:
    """1, 3, 10, 30, ... (half decades) below `total`, then `total`."""
    grid: list[int] = []
    power = 0
    while True:
        for step in (1, 3):
            k = step * 10**power
            if k >= total:
                return (*grid, total)
            grid.append(k)
        power += 1


def parse_grid(text: str, total: int) -> tuple[int, ...]:
    try:
        grid = tuple(sorted({int(p) for p in text.split(",") if p.strip()}))
    except ValueError:
        raise UsageError(f"--k {text}: write whole numbers separated by commas, e.g. 1,10,100") from None
    if not grid or grid[0] < 1 or grid[-1] > total:
        raise UsageError(f"--k {text}: every K must be between 1 and the {total} neurons")
    return grid


def parse_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise UsageError(f"--scales {text}: write numbers separated by commas, e.g. 0,0.5,2,4") from None
    if not scales or not all(math.isfinite(s) for s in scales):
        raise UsageError(f"--scales {text}: need at least one finite factor")
    return scales


def holm(pvalues: Sequence[float | None]) -> tuple[float | None, ...]:
    """Holm's step-down adjusted p-values (None stays None and does not count in the family)."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    g = len(present)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, p * (g - rank)))
        adjusted[i] = running
    return tuple(adjusted)


def first_departure(adjusted: Sequence[float | None], alpha: float = ALPHA) -> int | None:
    """Index of the first grid point whose adjusted p is below alpha."""
    for i, p in enumerate(adjusted):
        if p is not None and p < alpha:
            return i
    return None


@dataclass(frozen=True)
class CurvePoint:
    k: int
    scale: float | None  # the factor on the S axis
    comparison: Comparison
    p_holm: Mapping[str, float | None]  # by measure


@dataclass(frozen=True)
class Curve:
    axis: Axis
    config: AblationConfig
    metric: str
    items: tuple[int, ...]
    base: Measures
    points: tuple[CurvePoint, ...]
    departure: int | None  # index into points (loss), or None
    forwards: int
    seconds: float


def _finish(axis: Axis, config: AblationConfig, data: AblationData, items: Sequence[int], base: Measures,
            raw: Sequence[tuple[int, float | None, Comparison]], forwards: int, start: float) -> Curve:
    adjusted = {m: holm([c.summary[m].p for _, _, c in raw]) for m in MEASURES}
    points = tuple(CurvePoint(k, s, c, {m: adjusted[m][i] for m in MEASURES}) for i, (k, s, c) in enumerate(raw))
    return Curve(axis, config, data.spec.text, tuple(items), base, points, first_departure(adjusted["loss"]),
                 forwards, time.perf_counter() - start)


def k_curve(
    data: AblationData, ranked: Sequence[Target], grid: Sequence[int], mean_x: torch.Tensor, config: AblationConfig,
    items: Sequence[int], progress: ProgressSink = SilentProgress(),
) -> Curve:
    """The top K of `ranked` (best first) against random sets of K, for each K of `grid`."""
    if not grid or max(grid) > len(ranked):
        raise UsageError(f"the K grid must lie within the {len(ranked)} ranked neurons")
    start = time.perf_counter()
    forwards = 1 + len(grid) * (1 + config.n_controls)
    raw = []
    with progress.task("curve over K", forwards) as advance:
        base = measure(data, None)
        advance(1)
        for k in grid:
            c = compare(data, base, ranked[:k], config.value, config.where, mean_x, config.n_controls, config.seed,
                        label=f"top {k}", advance=advance, fallback=True)
            raw.append((k, None, c))
    return _finish(Axis.K, config, data, items, base, raw, forwards, start)


def scale_curve(
    data: AblationData, targets: Sequence[Target], scales: Sequence[float], mean_x: torch.Tensor,
    config: AblationConfig, items: Sequence[int], progress: ProgressSink = SilentProgress(),
) -> Curve:
    """One set steered by each factor S of `scales` (`scale:S`), against the same random sets."""
    start = time.perf_counter()
    forwards = 1 + len(scales) * (1 + config.n_controls)
    raw = []
    with progress.task("curve over S", forwards) as advance:
        base = measure(data, None)
        advance(1)
        for s in scales:
            c = compare(data, base, targets, Value(ValueKind.SCALE, s), config.where, mean_x, config.n_controls,
                        config.seed, label=f"scale {s:g}", advance=advance)
            raw.append((len(targets), s, c))
    return _finish(Axis.SCALE, config, data, items, base, raw, forwards, start)
