"""Replication: do the neurons one fold chose hold up on the other?

A neuron chosen at cell (layer, position, neuron) with score r_a on fold A replicates on fold B when its r_b at
the same cell has the same sign and a per-cell two-sided p < alpha on fold B's n_b examples (Fisher z, see
skn.statistics.fisher). The replication rate of a top-K set is the share that replicates; cross-fitting computes it in
both directions (rank on A, check on B; rank on B, check on A) and pools them: (hits_AB + hits_BA) / (2K).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from skn.statistics.fisher import correlation_p
from skn.ranking.rank import Neuron

ALPHA = 0.05


def replicates(r_chosen: float, r_other: float, n_other: int, alpha: float = ALPHA) -> bool:
    """Same sign as where it was chosen, and p < alpha where it is checked."""
    if math.isnan(r_chosen) or math.isnan(r_other) or r_chosen == 0.0:
        return False
    p = correlation_p(r_other, n_other)
    return (r_other > 0.0) == (r_chosen > 0.0) and r_other != 0.0 and p < alpha


def replication_hits(chosen: Sequence[Neuron], other_corr: Tensor, n_other: int, alpha: float = ALPHA) -> int:
    """How many of `chosen` (ranked on one fold) replicate on the other fold, whose corr [L, P, m] is given."""
    return sum(
        replicates(n.r, float(other_corr[n.layer, n.position, n.index]), n_other, alpha) for n in chosen
    )


@dataclass(frozen=True)
class Replication:
    """Cross-fitted replication of the top K: each direction's share, and the pooled rate."""

    top_k: int
    selection_to_confirmation: float  # chosen on the selection fold, checked on the confirmation fold
    confirmation_to_selection: float  # folds swapped
    rate: float  # pooled over both directions
    alpha: float = ALPHA


def cross_fit(
    chosen_on_selection: Sequence[Neuron],
    chosen_on_confirmation: Sequence[Neuron],
    corr_selection: Tensor,
    corr_confirmation: Tensor,
    n_selection: int,
    n_confirmation: int,
    alpha: float = ALPHA,
) -> Replication:
    k = len(chosen_on_selection)
    if k == 0 or len(chosen_on_confirmation) != k:
        return Replication(k, math.nan, math.nan, math.nan, alpha)
    forward = replication_hits(chosen_on_selection, corr_confirmation, n_confirmation, alpha)
    backward = replication_hits(chosen_on_confirmation, corr_selection, n_selection, alpha)
    return Replication(k, forward / k, backward / k, (forward + backward) / (2 * k), alpha)
