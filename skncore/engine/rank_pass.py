"""The ranking step, between the pass and the features' sections: score every cell and choose the top neurons.

    --score predictivity       Wang et al.'s predictivity (two prompt-only passes: skn.statistics.predictivity)
    a holdout                  r on the selection fold, each top neuron confirmed on the other (skn.ranking.holdout)
    otherwise                  r over all examples
    with --control             every r above is the partial r given the covariates (skn.statistics.partial)

A ranking in which no cell has a finite score has found nothing: `MetricFailure` says why, keeping the metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from skn.engine.encoding import encode
from skn.engine.probe import PassResult
from skn.engine.probe_config import Score
from skn.errors import MetricError
from skn.features.feature import Covariates, PassSetup, RankedPass
from skn.inputs.data import Example
from skn.ranking.holdout import HoldoutResult, rank_with_holdout
from skn.ranking.rank import rank_neurons
from skn.statistics.partial import partial_correlation
from skn.statistics.predictivity import PredictivityCounts, binary_labels, predictivity_counts, rank_by_predictivity
from skn.statistics.stats import correlation


class MetricFailure(MetricError):
    """A metric found useless after the pass (constant, NaN); `values` keeps what was computed."""

    def __init__(self, error: MetricError, values: Tensor) -> None:
        super().__init__(str(error))
        self.values = values


def rank_pass(setup: PassSetup, passed: PassResult, covariates: Covariates | None,
              train_examples: Sequence[Example]) -> RankedPass:
    """Rank the neurons of a finished pass (see the module docstring); `train_examples` give predictivity's baseline."""
    config, loaded = setup.config, setup.loaded
    holdout: HoldoutResult | None = None
    counts: PredictivityCounts | None = None
    if config.score is Score.PREDICTIVITY:
        labels = binary_labels(passed.metric)
        train_rows = encode(loaded, tuple(train_examples), config.template, setup.prompt_len)
        counts = predictivity_counts(loaded, setup.prompt, train_rows, setup.rows, labels, config.batch_size)
        corr = correlation(passed.stats)
        neurons = rank_by_predictivity(counts, corr, config.top_k)
    elif passed.folds is not None:
        ranked = rank_with_holdout(passed.folds, config.top_k, config.reduce, setup.plan.fraction, config.holdout_seed,
                                   covariates.folds if covariates is not None else None)
        corr, neurons, holdout = ranked.corr, ranked.neurons, ranked.holdout
    else:
        corr = correlation(passed.stats) if covariates is None else partial_correlation(passed.stats, covariates.full)
        neurons = rank_neurons(corr, config.top_k, config.reduce)
    check_some_finite(corr, passed.stats.m2_y, passed.metric)
    ranked_stats = passed.folds.selection if passed.folds is not None and counts is None else passed.stats
    return RankedPass(corr, neurons, passed.stats, ranked_stats, passed.metric, holdout, counts, covariates)


def check_some_finite(corr: Tensor, m2_y: float, metric: Tensor) -> None:
    """A probe in which no correlation is a number has found nothing: say why instead of ranking NaNs."""
    if bool(torch.isfinite(corr).any()):
        return
    if not math.isfinite(m2_y):
        why = (f"the metric's spread overflows float64 (|values| up to {float(metric.abs().max()):.3g}); "
               "rescale the metric (e.g. a log or z-score)")
    else:
        why = "every neuron is constant or non-finite over the validation examples"
    raise MetricFailure(MetricError(f"no neuron has a finite correlation with the metric: {why}"), metric)


__all__ = ["MetricFailure", "check_some_finite", "rank_pass"]
