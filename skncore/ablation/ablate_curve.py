"""Ablation as a dose-response curve: the top K against random sets of K over a grid of K, or one set
steered by a factor S over a grid of S, each point with the same kind of controls as `skn.ablation.ablate`.

    K grid (default)   1, 3, 10, 30, 100, ... below the number of neurons, then every neuron
    controls           per K, C random sets with the top K's count per layer at its slots, drawn from the
                       layer's neurons outside the top K, or from all of the layer's neurons where too few
                       are left (at K = every neuron the controls hold the same neurons as the top K)
    S grid             one set (the top K), `Value.scale(S)` for each S, the same C control sets at every S
    departure          the first grid point whose p (loss by default) is below alpha = 0.05 after Holm's
                       step-down correction over the grid: p_(i) * (G - i + 1) for the i-th smallest,
                       made monotone; it holds the family-wise error rate at alpha.

The smallest empirical p is 1 / (C + 1), and Holm's smallest adjusted p is G / (C + 1): a grid of G points
can only depart with C >= G / alpha - 1 controls (20 G, roughly).

Several curves in one call: `--value mean,zero --where prompt,all` measures one curve per (value, where),
with the same control sets; the correction is over each curve's own grid (each is its own question).

Cost: 1 + V * W * G * (1 + C) sets (V values, W places, G grid points, C controls), one pass over the items
each, or with `share` S sets per forward (the items repeated S times along the batch) ceil(sets / S)
passes of S-times-larger forwards. The default curve (mean at the prompt, C = 20) on SmolLM2-135M
(30 x 1536 = 46,080 neurons: G = 11, K = 1 .. 30,000 and 46,080) is 1 + 11 * 21 = 232 sets: 232 passes,
29 with --share 8; all four combinations are 925 sets: 925 passes, 116 with --share 8. A pass is
ceil(N / batch) forwards over N items.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum

import torch

from skn.ablation.ablate import (MEASURES, AblationConfig, ControlComparison, Measures, NoStore, SetStore, comparison_of, draw_controls,
                                 measure_many, passes)
from skn.ablation.stacked_forward import AblationData
from skn.ablation.ablate_test import resolve_test
from skn.ablation.intervention import Target, Value, ValueKind, Where, build_intervention
from skn.errors import UsageError
from skn.engine.progress import ProgressSink, SilentProgress

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
    comparison: ControlComparison
    p_holm: Mapping[str, float | None]  # by measure


@dataclass(frozen=True)
class Curve:
    """One curve: one value and one place (`config.value`, `config.where`). The curves of one call share
    the unablated pass, their `forwards` (passes over the items, all curves together) and `seconds`."""

    axis: Axis
    config: AblationConfig
    metric: str
    items: tuple[int, ...]
    base: Measures
    points: tuple[CurvePoint, ...]
    departure: int | None  # index into points (loss), or None
    forwards: int
    seconds: float
    sets: int = 0  # sets measured by the whole call, the unablated model included


@dataclass(frozen=True)
class _Point:
    """One grid point of one curve before it is measured: the set under test first, then its controls."""

    curve: int
    k: int
    scale: float | None
    label: str
    value: Value
    where: Where
    sets: tuple[tuple[Target, ...], ...]


def _measure_points(
    data: AblationData, axis: Axis, configs: Sequence[AblationConfig], points: Sequence[_Point], mean_x: torch.Tensor,
    items: Sequence[int], progress: ProgressSink, title: str, store: SetStore,
) -> tuple[Curve, ...]:
    """Measure every set of every point, `share` sets per pass (the unablated model among them), then
    correct each curve over its own grid (Holm, per curve: each curve is its own question).

    Where the model takes the split forward, the points at the prompt and those everywhere are measured apart,
    each with its own unablated run: the sets that edit only the prompt share each batch's instruction between
    them, while a set that edits everywhere runs the instruction under its own edits
    (`skn.ablation.stacked_forward.instruction_edits`), so a pass that mixed the two would run it once per set.
    The forwards `store` holds are not run again."""
    start = time.perf_counter()
    share = configs[0].share
    at_prompt = [p for p in points if p.where is Where.PROMPT]
    groups = [g for g in (at_prompt, [p for p in points if p.where is not Where.PROMPT]) if g] if data.split else [list(points)]
    stacks = [[None, *(build_intervention(t, p.value, p.where, mean_x) for p in group for t in p.sets)] for group in groups]
    with progress.task(title, sum(len(stack) for stack in stacks)) as advance:
        measured = [measure_many(data, stack, share, advance, store) for stack in stacks]
    raw: list[list[tuple[int, float | None, ControlComparison]]] = [[] for _ in configs]
    bases: dict[int, Measures] = {}
    family = [sum(1 for p in points if p.curve == c) for c in range(len(configs))]
    tests = [resolve_test(config.test, config.n_controls, g) for config, g in zip(configs, family, strict=True)]
    for group, results in zip(groups, measured, strict=True):
        at = 1
        for p in group:
            measures = results[at : at + len(p.sets)]
            bases[p.curve] = results[0]
            raw[p.curve].append((p.k, p.scale, comparison_of(results[0], p.label, p.sets, measures, tests[p.curve])))
            at += len(p.sets)
    seconds = time.perf_counter() - start
    n_sets = sum(len(stack) for stack in stacks)
    n_passes = sum(passes(len(stack), share) for stack in stacks)
    curves = []
    for c, (config, rows) in enumerate(zip(configs, raw, strict=True)):
        adjusted = {m: holm([x.summary[m].p for _, _, x in rows]) for m in MEASURES}
        done = tuple(CurvePoint(k, s, x, {m: adjusted[m][i] for m in MEASURES}) for i, (k, s, x) in enumerate(rows))
        curves.append(Curve(axis, config, data.spec.text, tuple(items), bases[c], done, first_departure(adjusted["loss"]),
                            n_passes, seconds, n_sets))
    return tuple(curves)


def combinations(config: AblationConfig, values: Sequence[Value] = (), wheres: Sequence[Where] = ()) -> tuple[AblationConfig, ...]:
    """One config per (value, where), values outermost; empty lists mean the config's own."""
    return tuple(replace(config, value=v, where=w) for v in (values or (config.value,)) for w in (wheres or (config.where,)))


def k_curves(
    data: AblationData, ranked: Sequence[Target], grid: Sequence[int], mean_x: torch.Tensor,
    configs: Sequence[AblationConfig], items: Sequence[int], progress: ProgressSink = SilentProgress(),
    store: SetStore = NoStore(),
) -> tuple[Curve, ...]:
    """The top K of `ranked` (best first) against random sets of K, for each K of `grid`, one curve per
    config (value x where, see `combinations`). The controls of a K are the same sets in every curve (one
    seed), so the curves differ only by what the neurons become and where. Cost: one unablated run per place
    (prompt, everywhere) + curves * G * (1 + C) sets, ceil(that / share) passes over the items per place."""
    if not grid or max(grid) > len(ranked):
        raise UsageError(f"the K grid must lie within the {len(ranked)} ranked neurons")
    if not configs:
        raise UsageError("no curve to measure")
    width = data.loaded.sites.width
    n_controls, seed = configs[0].n_controls, configs[0].seed
    drawn = {k: (tuple(ranked[:k]), *draw_controls(ranked[:k], width, n_controls, seed, True)) for k in grid}
    points = [_Point(c, k, None, f"top {k}", config.value, config.where, drawn[k])
              for c, config in enumerate(configs) for k in grid]
    return _measure_points(data, Axis.K, configs, points, mean_x, items, progress, "curve over K", store)


def k_curve(
    data: AblationData, ranked: Sequence[Target], grid: Sequence[int], mean_x: torch.Tensor, config: AblationConfig,
    items: Sequence[int], progress: ProgressSink = SilentProgress(),
) -> Curve:
    """`k_curves` for the config's one value and place."""
    return k_curves(data, ranked, grid, mean_x, (config,), items, progress)[0]


def scale_curves(
    data: AblationData, targets: Sequence[Target], scales: Sequence[float], mean_x: torch.Tensor,
    configs: Sequence[AblationConfig], items: Sequence[int], progress: ProgressSink = SilentProgress(),
    store: SetStore = NoStore(),
) -> tuple[Curve, ...]:
    """One set steered by each factor S of `scales` (`scale:S`), against the same random sets at every S;
    one curve per config's place (its value is replaced by scale:S)."""
    sets = (tuple(targets), *draw_controls(targets, data.loaded.sites.width, configs[0].n_controls, configs[0].seed))
    points = [_Point(c, len(targets), s, f"scale {s:g}", Value(ValueKind.SCALE, s), config.where, sets)
              for c, config in enumerate(configs) for s in scales]
    return _measure_points(data, Axis.SCALE, configs, points, mean_x, items, progress, "curve over S", store)


def scale_curve(
    data: AblationData, targets: Sequence[Target], scales: Sequence[float], mean_x: torch.Tensor,
    config: AblationConfig, items: Sequence[int], progress: ProgressSink = SilentProgress(),
) -> Curve:
    return scale_curves(data, targets, scales, mean_x, (config,), items, progress)[0]
