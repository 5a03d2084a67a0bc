"""`skn compare`: do different prompts (seeds) single out the same neurons?

Positions of two prompts are not the same thing, so runs are compared on neurons, not cells: each FFN
neuron (layer, index) takes its score in each run at that run's own best position (skn.ranking.rank.best_scores,
the run's --reduce) on the r the run ranked by: a holdout run's selection fold (`corr_selection`), so that
each run's top K here is its own top K, else all validation examples (`corr`; with --score predictivity
too, whose ranking is not an r). Then, for every pair of runs, the top-K Jaccard beside its chance
expectation and Spearman's rho of the scores over all neurons; over all runs, the consensus ranking
(skn.ranking.overlap). With the null, each run's count of neurons passing its family-wise threshold (skn.statistics.passing)
and the neurons that pass in every run with one sign. Runs must share the model, the metric and the shape
[L, P, m] is free in P but not in L and m. Each run counts once: a run named both by itself and through its
`skn probe --seeds` folder (or through two seeds folders), or two copies of one run (one run id, two
places), is refused with one line; naming the very same directory twice compares a run with itself.

Files in the output folder: `compare.json` (runs, pairs, consensus top K), `compare.csv` (the consensus top
K, one row per neuron with each run's score) and `compare.png` (one panel per pair of runs: run a's scores
against run b's, every neuron, the consensus top K marked).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
import torch
from matplotlib.figure import Figure

from skn.errors import UsageError
from skn.ranking.overlap import (
    Array,
    chance_jaccard,
    consensus_mean,
    consensus_min,
    consensus_order,
    jaccard,
    spearman,
    top_k_flat,
)
from skn.statistics.passing import passing_mask
from skn.views.figures import legend_above, new_figure, png_bytes, set_caption
from skn.ranking.rank import best_scores
from skn.files.result import ProbeResult
from skn.files.rundir import write_bytes, write_json, write_text
from skn.files.probe_read import read_probe_run

COMPARE_JSON = "compare.json"
COMPARE_CSV = "compare.csv"
COMPARE_PNG = "compare.png"
SUBRUN_PREFIX = "seed-"  # sub-runs of `skn probe --seeds`
SCORE_NOTE = ("r at each run's own best position, on the examples that ranked it: a holdout run's selection fold, "
              "else all validation examples")


@dataclass(frozen=True)
class RunScores:
    """One run as the comparison sees it: each neuron's score [L, m] at the run's best position."""

    name: str
    model: str
    metric: str
    score: Array  # [L, m] float64, NaN where undefined
    position: Array  # [L, m] the best position of each neuron in this run
    scored_on: str = "examples (all)"  # which r: "selection fold (n examples)" for a holdout run, else "n examples (all)"
    passes: NDArray[np.bool_] | None = None  # [L, m]: |score| > the run's family-wise threshold; None without a null
    run_id: str = ""  # the run's id (skn.files.rundir); "" for a run of an older skn


@dataclass(frozen=True)
class PairStats:
    a: int
    b: int
    overlap: int  # |top K of a n top K of b|
    jaccard: float
    jaccard_chance: float
    overlap_chance: float  # K^2 / M
    spearman: float
    n_spearman: int  # neurons with a defined score in both


@dataclass(frozen=True)
class ConsensusNeuron:
    rank: int
    layer: int
    index: int  # the FFN neuron (the column "neuron" of compare.json / .csv)
    consensus_min: float
    consensus_mean: float
    scores: tuple[float, ...]  # per run
    positions: tuple[int, ...]  # per run
    passes_all: bool | None = None  # passes the threshold in every run (None: a run has no null)


@dataclass(frozen=True)
class Comparison:
    runs: tuple[RunScores, ...]
    top_k: int
    neurons: int  # M = L * m
    pairs: tuple[PairStats, ...]
    consensus: tuple[ConsensusNeuron, ...]
    top_sets: tuple[tuple[int, ...], ...]  # per run, flat indices of its top K
    passing: tuple[int | None, ...] = ()  # per run: neurons passing its threshold (None: no null)
    passing_all: int | None = None  # neurons passing in every run, signs agreeing (None: a run has no null)

    @property
    def mean_jaccard(self) -> float:
        return float(np.mean([p.jaccard for p in self.pairs])) if self.pairs else math.nan


def run_scores(run: ProbeResult, name: str) -> RunScores:
    """The run's neurons as it ranked them: a holdout run's selection-fold r, else the r over all examples."""
    corr = run.ranked_corr
    best = best_scores(corr, run.info.reduce)
    scored_on = (f"selection fold ({run.holdout.n_selection} examples)" if run.holdout is not None
                 else f"{run.stats.count} examples (all)")
    passes = passing_mask(corr, run.info.reduce, run.null.threshold).numpy() if run.null is not None else None
    return RunScores(
        name=name,
        model=run.info.model,
        metric=run.info.metric,
        score=best.score.to(torch.float64).numpy(),
        position=best.position.to(torch.float64).numpy(),
        scored_on=scored_on,
        passes=passes,
        run_id=run.info.run_id,
    )


def seed_subruns(path: Path) -> tuple[Path, ...]:
    """The seed-N/ sub-runs of a `skn probe --seeds` folder, by seed (none when `path` is itself a run)."""
    path = Path(path)
    if (path / "stats.safetensors").is_file() or not path.is_dir():
        return ()
    subs = [p for p in path.glob(f"{SUBRUN_PREFIX}*") if p.is_dir() and (p / "stats.safetensors").is_file()]

    def seed(p: Path) -> tuple[int, str]:
        number = p.name[len(SUBRUN_PREFIX):]
        return (int(number), "") if number.lstrip("-").isdigit() else (0, number)

    return tuple(sorted(subs, key=seed))


@dataclass(frozen=True)
class NamedRun:
    """A run directory to compare, and the seeds folder that named it (None: named by itself)."""

    path: Path
    folder: Path | None = None


def named_runs(paths: Sequence[Path]) -> tuple[NamedRun, ...]:
    """Each path is a run directory, or a folder of `skn probe --seeds` sub-runs (seed-N/), which stand for it."""
    out: list[NamedRun] = []
    for path in paths:
        subs = seed_subruns(path)
        if subs:
            out.extend(NamedRun(sub, Path(path)) for sub in subs)
        else:
            out.append(NamedRun(Path(path)))
    return tuple(out)


def _how(named: NamedRun) -> str:
    return f"{named.path} (from {named.folder})" if named.folder is not None else str(named.path)


def check_each_once(runs: Sequence[NamedRun], run_ids: Sequence[str]) -> None:
    """A run must not count twice: the same directory reached through a seeds folder and otherwise, or two
    copies of one run (one run id in two directories), is a UsageError naming both. The same directory named
    twice by itself is a run compared with itself, and allowed."""
    seen_paths: dict[Path, NamedRun] = {}
    seen_ids: dict[str, NamedRun] = {}
    for named, run_id in zip(runs, run_ids, strict=True):
        where = named.path.resolve()
        first = seen_paths.get(where)
        if first is not None and (first.folder is not None or named.folder is not None):
            raise UsageError(f"compare: {_how(named)} is {_how(first)} again: each run counts once, so name it once")
        if first is None and run_id and run_id in seen_ids:
            raise UsageError(f"compare: {_how(named)} and {_how(seen_ids[run_id])} are copies of one run (run id "
                             f"{run_id}): each run counts once, so name one of them")
        seen_paths.setdefault(where, named)
        if run_id:
            seen_ids.setdefault(run_id, named)


def compare_scores(runs: Sequence[RunScores], top_k: int) -> Comparison:
    """Every pair's overlap and rank correlation, and the consensus top K (see the module docstring)."""
    if len(runs) < 2:
        raise UsageError(f"compare needs at least two runs, got {len(runs)}")
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    first = runs[0]
    for run in runs[1:]:
        if run.score.shape != first.score.shape:
            raise UsageError(f"{run.name}: {run.score.shape[0]} layers x {run.score.shape[1]} neurons, but {first.name} "
                             f"has {first.score.shape[0]} x {first.score.shape[1]}: not the same model")
        for what, mine, theirs in (("model", run.model, first.model), ("metric", run.metric, first.metric)):
            if mine != theirs:
                raise UsageError(f"{run.name}: {what} {mine!r}, but {first.name} has {theirs!r}: compare runs of one model and metric")
    layers, width = first.score.shape
    m = layers * width
    k = min(top_k, m)
    tops = tuple(tuple(int(i) for i in top_k_flat(r.score, k)) for r in runs)
    chance = chance_jaccard(k, m)
    pairs = []
    for a in range(len(runs)):
        for b in range(a + 1, len(runs)):
            rho, n = spearman(runs[a].score, runs[b].score)
            pairs.append(PairStats(a, b, len(set(tops[a]) & set(tops[b])), jaccard(tops[a], tops[b]), chance, k * k / m, rho, n))
    scores = [r.score for r in runs]
    minimum, mean = consensus_min(scores), consensus_mean(scores)
    masks = [r.passes for r in runs]
    every: NDArray[np.bool_] | None = None
    if all(mask is not None for mask in masks):
        every = np.logical_and.reduce([np.asarray(mask, dtype=bool) for mask in masks]) & (minimum != 0.0)
    consensus = []
    for rank, flat in enumerate(consensus_order(minimum, mean)[:k].tolist(), start=1):
        layer, neuron = divmod(int(flat), width)
        consensus.append(ConsensusNeuron(
            rank, layer, neuron, float(minimum[layer, neuron]), float(mean[layer, neuron]),
            tuple(float(r.score[layer, neuron]) for r in runs), tuple(int(r.position[layer, neuron]) for r in runs),
            None if every is None else bool(every[layer, neuron]),
        ))
    passing = tuple(None if mask is None else int(mask.sum()) for mask in masks)
    return Comparison(tuple(runs), k, m, tuple(pairs), tuple(consensus), tops, passing,
                      None if every is None else int(every.sum()))


def compare_runs(paths: Sequence[Path], top_k: int = 10) -> Comparison:
    """Read the run directories (seed folders expanded, each run once: `check_each_once`) and compare them."""
    runs = named_runs(paths)
    scores = [run_scores(read_probe_run(named.path), str(named.path)) for named in runs]
    check_each_once(runs, [r.run_id for r in scores])
    return compare_scores(scores, top_k)


def scored_on_line(comparison: Comparison) -> str:
    """Which r each run's neurons are compared on (the one it ranked by)."""
    return "compared on each neuron's r at its best position, on: " + "; ".join(
        f"run {i}: {r.scored_on}" for i, r in enumerate(comparison.runs))


def passing_line(comparison: Comparison) -> str:
    """How many neurons pass each run's family-wise threshold, and how many pass in every run (one sign)."""
    if comparison.passing_all is None:
        return "neurons passing the null: not counted (a run has no permutation null)"
    counts = ", ".join(str(n) for n in comparison.passing)
    marked = sum(1 for c in comparison.consensus if c.passes_all)
    return (f"neurons passing each run's family-wise threshold: {counts} of {comparison.neurons}; in every run with one "
            f"sign: {comparison.passing_all} (of the consensus top {comparison.top_k}: {marked})")


def _safe(value: float) -> float | None:
    return None if math.isnan(value) else value


def to_json(comparison: Comparison) -> dict[str, object]:
    return {
        "runs": [{"name": r.name, "model": r.model, "metric": r.metric, "scored_on": r.scored_on, "n_passing": n}
                 for r, n in zip(comparison.runs, comparison.passing or (None,) * len(comparison.runs), strict=True)],
        "top_k": comparison.top_k,
        "neurons": comparison.neurons,
        "score": SCORE_NOTE,
        "passing_all": comparison.passing_all,
        "mean_jaccard": _safe(comparison.mean_jaccard),
        "pairs": [
            {"a": p.a, "b": p.b, "overlap": p.overlap, "overlap_chance": p.overlap_chance, "jaccard": p.jaccard,
             "jaccard_chance": p.jaccard_chance, "spearman": _safe(p.spearman), "n_spearman": p.n_spearman}
            for p in comparison.pairs
        ],
        "top": [[divmod(i, comparison.runs[0].score.shape[1]) for i in top] for top in comparison.top_sets],
        "consensus": [
            {"rank": c.rank, "layer": c.layer, "neuron": c.index, "consensus_min": c.consensus_min,
             "consensus_mean": _safe(c.consensus_mean), "scores": [_safe(s) for s in c.scores], "positions": list(c.positions),
             "passes_all": c.passes_all}
            for c in comparison.consensus
        ],
    }


def to_csv(comparison: Comparison) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "layer", "neuron", "consensus_min", "consensus_mean",
                     *(f"score_{i}" for i in range(len(comparison.runs))), *(f"position_{i}" for i in range(len(comparison.runs))),
                     "passes_all"])
    for c in comparison.consensus:
        writer.writerow([c.rank, c.layer, c.index, repr(c.consensus_min), repr(c.consensus_mean),
                         *(repr(s) for s in c.scores), *c.positions, "" if c.passes_all is None else str(c.passes_all).lower()])
    return buffer.getvalue()


def _panels(pairs: int) -> tuple[int, int, float]:
    """Columns, rows and the panel size (inches) of the scatter figure's grid for `pairs` pairs."""
    if pairs == 1:
        return 1, 1, 5.0
    columns = 3 if pairs <= 9 else 4
    columns = min(columns, pairs)
    return columns, math.ceil(pairs / columns), 3.6 if pairs <= 9 else 3.0


def scatter_figure(comparison: Comparison) -> Figure:
    """One panel per pair of runs (a, b): run a's score against run b's for every neuron (gid "neurons"),
    the consensus top K marked (gid "consensus"); the pair's Spearman and Jaccard in the panel's title."""
    columns, rows, size = _panels(len(comparison.pairs))
    figure = new_figure(max(5.2, size * columns), size * rows + 1.3)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    width = comparison.runs[0].score.shape[1]
    flat = [c.layer * width + c.index for c in comparison.consensus]
    every = np.concatenate([r.score.reshape(-1) for r in comparison.runs])
    finite = np.abs(every[np.isfinite(every)])
    limit = (float(finite.max()) if finite.size else 1.0) * 1.06 + 1e-12  # one scale for every panel
    for ax, pair in zip(axes, comparison.pairs):
        x, y = comparison.runs[pair.a].score.reshape(-1), comparison.runs[pair.b].score.reshape(-1)
        keep = np.isfinite(x) & np.isfinite(y)
        ax.scatter(x[keep], y[keep], s=4, color="0.55", alpha=0.5, linewidths=0, gid="neurons",
                   label="every neuron with a score in both runs")
        ax.scatter(x[flat], y[flat], s=26, color="C3", edgecolors="white", linewidths=0.6, gid="consensus",
                   label=f"consensus top {comparison.top_k} (min |score|, signs agree)")
        ax.axhline(0.0, color="0.8", lw=0.8)
        ax.axvline(0.0, color="0.8", lw=0.8)
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_title(f"run {pair.a} against run {pair.b}: Spearman {pair.spearman:.3f}\ntop-{comparison.top_k} "
                     f"Jaccard {pair.jaccard:.2f} (chance {pair.jaccard_chance:.3f})", fontsize=8.5)
        ax.set_xlabel(f"score in run {pair.a}", fontsize=9)
        ax.set_ylabel(f"score in run {pair.b}", fontsize=9)
        ax.grid(alpha=0.25)
    for ax in axes[len(comparison.pairs):]:
        figure.delaxes(ax)
    legend_above(figure, axes[0], chars=80, ncols=2 if columns > 1 else 1, title_size=10,
                 title=f"Neuron scores of {len(comparison.runs)} runs, pair by pair (r at each run's own best position)")
    names = "; ".join(f"run {i}: {r.name}" for i, r in enumerate(comparison.runs))
    set_caption(figure, f"model: {comparison.runs[0].model}  \u00b7  metric: {comparison.runs[0].metric}  \u00b7  "
                        f"neurons = {comparison.neurons}  \u00b7  {names}")
    return figure


def write_comparison(out: Path, comparison: Comparison) -> tuple[Path, ...]:
    """compare.json, compare.csv and compare.png into `out`; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / COMPARE_JSON, to_json(comparison))
    write_text(out / COMPARE_CSV, to_csv(comparison))
    write_bytes(out / COMPARE_PNG, png_bytes(scatter_figure(comparison)))
    return out / COMPARE_JSON, out / COMPARE_CSV, out / COMPARE_PNG
