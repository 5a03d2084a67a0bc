"""The held-out r of every top neuron, from the two folds' moments (see skn.statistics.folds for why and how).

    rank on the selection fold (its corr, the usual best-position score)
    for each of the top K, at its cell (layer, position, neuron):
        r held out      the confirmation fold's r, with its 95% Fisher-z interval on n_confirmation examples
        r selection     the score it was ranked by (biased upward by the choice)
        r full          the r over the whole validation set (the merge of the folds)
    cross-fitting: rank on the confirmation fold too and report the replication rate (skn.ranking.replication)

The r to quote, and to hold against a threshold, is the held-out one: it was measured on examples that
played no part in choosing the neuron.

With covariates (`--control`, skn.statistics.partial) every r above is the partial r given them, from each fold's own
co-moments with the covariates; its Fisher-z interval and the replication's p use n - q (a partial r on n
examples given q covariates is distributed as a plain r on n - q).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

from skn.statistics.fisher import fisher_interval
from skn.statistics.folds import FoldStats
from skn.statistics.null_verdict import NullResult
from skn.statistics.partial import FoldCovariates, partial_correlation
from skn.statistics.passing import ALL, SELECTION, PassingCounts, count_passing
from skn.ranking.rank import Neuron, Reduce, rank_neurons
from skn.ranking.replication import Replication, cross_fit
from skn.statistics.stats import PearsonStats, correlation

LEVEL = 0.95


@dataclass(frozen=True)
class HeldOutR:
    """One top neuron's r on each set of examples, at the cell it was chosen at."""

    r_held_out: float
    low: float  # the 95% Fisher-z interval of the held-out r
    high: float
    r_selection: float
    r_full: float


@dataclass(frozen=True)
class HoldoutResult:
    """What a probe with a holdout adds: the folds, their correlations, and the top neurons' held-out r."""

    fraction: float
    seed: int
    folds: FoldStats
    corr_selection: Tensor  # [L, P, m] float32
    corr_confirmation: Tensor
    per_neuron: tuple[HeldOutR, ...]  # neurons.json order
    replication: Replication

    @property
    def n_selection(self) -> int:
        return self.folds.selection.count

    @property
    def n_confirmation(self) -> int:
        return self.folds.confirmation.count

    def summary(self) -> dict[str, object]:
        """The part of run.json that describes the holdout (strict JSON: NaN becomes null)."""
        rep = self.replication

        def safe(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "fraction": self.fraction,
            "seed": self.seed,
            "n_selection": self.n_selection,
            "n_confirmation": self.n_confirmation,
            "ranked_on": "selection",
            "interval_level": LEVEL,
            "replication": {
                "top_k": rep.top_k,
                "alpha": rep.alpha,
                "selection_to_confirmation": safe(rep.selection_to_confirmation),
                "confirmation_to_selection": safe(rep.confirmation_to_selection),
                "rate": safe(rep.rate),
            },
        }


def held_out_r(neuron: Neuron, corr_confirmation: Tensor, corr_full: Tensor, n_confirmation: int) -> HeldOutR:
    r = float(corr_confirmation[neuron.layer, neuron.position, neuron.index])
    low, high = fisher_interval(r, n_confirmation, LEVEL)
    return HeldOutR(r, low, high, neuron.r, float(corr_full[neuron.layer, neuron.position, neuron.index]))


@dataclass(frozen=True)
class Ranked:
    """A ranking with a holdout: the top neurons (chosen on the selection fold), the full-set corr, the rest."""

    neurons: tuple[Neuron, ...]
    corr: Tensor  # the full set's, [L, P, m] float32
    stats: PearsonStats  # the full set's moments
    holdout: HoldoutResult


def rank_with_holdout(folds: FoldStats, top_k: int, reduce: Reduce, fraction: float, seed: int,
                      covariates: FoldCovariates | None = None) -> Ranked:
    """Rank on the selection fold, measure on the others, cross-fit (see the module docstring); with
    `covariates`, on each fold's partial r."""
    full = folds.full
    if covariates is None:
        corr, corr_selection, corr_confirmation = correlation(full), correlation(folds.selection), correlation(folds.confirmation)
        q = 0
    else:
        corr = partial_correlation(full, covariates.full)
        corr_selection = partial_correlation(folds.selection, covariates.selection)
        corr_confirmation = partial_correlation(folds.confirmation, covariates.confirmation)
        q = covariates.full.q
    neurons = rank_neurons(corr_selection, top_k, reduce)
    swapped = rank_neurons(corr_confirmation, top_k, reduce)
    replication = cross_fit(neurons, swapped, corr_selection, corr_confirmation, folds.selection.count - q,
                            folds.confirmation.count - q)
    per_neuron = tuple(held_out_r(n, corr_confirmation, corr, folds.confirmation.count - q) for n in neurons)
    result = HoldoutResult(fraction, seed, folds, corr_selection, corr_confirmation, per_neuron, replication)
    return Ranked(neurons, corr, full, result)


def summary_from_info(info: Mapping[str, object]) -> Mapping[str, object]:
    """run.json's `holdout` object ({} when the run has none)."""
    value = info.get("holdout")
    return value if isinstance(value, Mapping) else {}


def ranked_passing(corr: Tensor, holdout: HoldoutResult | None, count: int, reduce: Reduce, null: NullResult) -> PassingCounts:
    """How many neurons pass the null's threshold on the r they were ranked on (and the null computed on): the
    selection fold's with a holdout, else `corr` over all `count` examples (skn.statistics.passing)."""
    if holdout is not None:
        return count_passing(holdout.corr_selection, reduce, null, SELECTION, holdout.n_selection)
    return count_passing(corr, reduce, null, ALL, count)
