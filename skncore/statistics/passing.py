"""How many neurons pass the family-wise threshold, not only which of the top K.

With a label that separates item templates, a model can encode it in most of its neurons: the top K being
10 of 12 neurons that pass or 10 of 30,000 are different findings. This module counts them.

A neuron is an FFN neuron (layer, index) at its best prompt position, scored exactly as the ranking and the
null score it (`skn.ranking.rank.best_scores` with the run's Reduce) on the examples that ranked: the selection
fold with a holdout (the null's threshold is computed on that fold, skn.statistics.null.SelectedRows), else all
examples. It passes when |score| > the null's threshold, compared in float32 as `NullResult.significant`
is (the null's r are float32; the threshold is one of them), so a top neuron passes here exactly when
its `significant` flag is set, and the count is at least the top K's. An undefined score never passes;
an unreachable threshold (too few permutations for alpha) passes nothing.

The counts need only the ranked fold's corr [L, P, m] and the threshold, both in stats.safetensors, so
they are recomputed from any run directory (`ProbeResult.passing`) and written to run.json's `null`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from skn.statistics.null import NULL_DTYPE

from skn.statistics.null_verdict import NullResult
from skn.ranking.rank import Reduce, best_scores

SELECTION = "selection"  # `scored_on`: the holdout's selection fold
ALL = "all"  # every validation example


@dataclass(frozen=True)
class PassingCounts:
    """How many neurons pass the family-wise threshold, per layer and in all."""

    threshold: float  # |score| must exceed this (inf: unreachable)
    alpha: float
    permutations: int
    per_layer: tuple[int, ...]  # neurons of each layer that pass
    neurons: int  # L * m: the neurons counted over
    scored_on: str  # SELECTION or ALL: the examples whose r is counted (those that ranked)
    n_examples: int

    @property
    def total(self) -> int:
        return sum(self.per_layer)

    def line(self) -> str:
        """One plain-text line: '57 of 860 neurons pass |r| > 0.812 (per layer 12, 20, 0, 9, 16), on ...'."""
        threshold = f"{self.threshold:.3f}" if math.isfinite(self.threshold) else "an unreachable threshold"
        where = (f"the {self.n_examples} selection examples" if self.scored_on == SELECTION else f"all {self.n_examples} examples")
        layers = ", ".join(str(n) for n in self.per_layer)
        return (f"{self.total} of {self.neurons} neurons pass |r| > {threshold} (family-wise alpha {self.alpha:g}); "
                f"per layer {layers}; r on {where}")

    def to_json(self) -> dict[str, object]:
        """run.json's `null.passing` (strict JSON: an unreachable threshold is null)."""
        return {
            "total": self.total,
            "per_layer": list(self.per_layer),
            "neurons": self.neurons,
            "threshold": self.threshold if math.isfinite(self.threshold) else None,
            "scored_on": self.scored_on,
            "n_examples": self.n_examples,
        }


def passing_mask(corr: Tensor, reduce: Reduce, threshold: float) -> Tensor:
    """[L, m] bool: the neurons whose best-position |score| on `corr` [L, P, m] exceeds `threshold`."""
    score = best_scores(corr.to(NULL_DTYPE), reduce).score.abs()
    if not math.isfinite(threshold):
        return torch.zeros(tuple(score.shape), dtype=torch.bool)
    return torch.nan_to_num(score, nan=-1.0) > torch.tensor(threshold, dtype=NULL_DTYPE)


def count_passing(corr: Tensor, reduce: Reduce, null: NullResult, scored_on: str, n_examples: int) -> PassingCounts:
    """The counts for the corr [L, P, m] the neurons were ranked on (and the null computed on)."""
    mask = passing_mask(corr, reduce, null.threshold)
    layers, width = mask.shape
    return PassingCounts(null.threshold, null.alpha, null.permutations, tuple(int(n) for n in mask.sum(dim=1).tolist()),
                         layers * width, scored_on, n_examples)

