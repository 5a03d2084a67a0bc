"""The maths of comparing neuron rankings: top-K overlap against chance, rank correlation, consensus.

All on per-neuron scores [L, m] (a neuron's r at its best position, sign kept; NaN where undefined), in
float64 numpy.

- top K: the K neurons of largest |score|, NaN last, ties in (layer, neuron) order (as skn.ranking.rank).
- Jaccard J = |A n B| / |A u B| of two top-K sets. By chance (two independent uniform K-subsets of M
  neurons) the overlap j is hypergeometric, P(j) = C(K, j) C(M - K, K - j) / C(M, K), so
  E[J] = sum_j P(j) j / (2K - j) and E[|A n B|] = K^2 / M.
- Spearman's rho of the signed scores over the neurons finite in both runs: Pearson r of their ranks,
  ties given their average rank.
- consensus (THU-KEG/Skill-Neuron's `min`, with signs required to agree): min over runs of |score| with the
  common sign, 0 where the signs differ or a score is undefined; and the plain mean of the scores
  (NaN where any is undefined). Neurons are ranked by |min consensus|, then |mean|.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy.stats import hypergeom, spearmanr

Array = NDArray[np.float64]


def top_k_flat(scores: Array, k: int) -> NDArray[np.int64]:
    """Flat indices (layer * m + neuron) of the top k by |score|, best first; NaN last; stable among ties."""
    flat = scores.reshape(-1)
    key = np.where(np.isnan(flat), -1.0, np.abs(flat))
    order = np.argsort(-key, kind="stable")
    return order[: min(k, flat.size)].astype(np.int64)


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    sa, sb = set(a), set(b)
    union = sa | sb
    return len(sa & sb) / len(union) if union else math.nan


def chance_overlap_pmf(k: int, m: int) -> Array:
    """P(|A n B| = j), j = 0..k, for two independent uniform k-subsets of m items (scipy's hypergeometric)."""
    if not 0 <= k <= m:
        raise ValueError(f"top K {k} must be between 0 and the {m} neurons")
    pmf: Array = np.asarray(hypergeom(m, k, k).pmf(np.arange(k + 1)), dtype=np.float64)
    return pmf


def chance_jaccard(k: int, m: int) -> float:
    """E[J] of two independent uniform k-subsets of m items."""
    if k == 0:
        return math.nan
    pmf = chance_overlap_pmf(k, m)
    j = np.arange(k + 1, dtype=np.float64)
    return float((pmf * j / (2 * k - j)).sum())


def spearman(a: Array, b: Array) -> tuple[float, int]:
    """Spearman's rho (scipy's, ties given their average rank) over the entries finite in both, and how many
    those are; NaN below 3 entries or where either side is constant."""
    x, y = a.reshape(-1), b.reshape(-1)
    keep = np.isfinite(x) & np.isfinite(y)
    n = int(keep.sum())
    if n < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return math.nan, n
    return float(spearmanr(x[keep], y[keep]).statistic), n


def consensus_min(scores: Sequence[Array]) -> Array:
    """Sign * min |score| over runs where every run has the same sign (and a defined score), else 0."""
    stack = np.stack([np.asarray(s, dtype=np.float64) for s in scores])
    finite = np.isfinite(stack).all(axis=0)
    safe = np.where(np.isfinite(stack), stack, 0.0)
    positive = (safe > 0).all(axis=0)
    negative = (safe < 0).all(axis=0)
    magnitude = np.abs(safe).min(axis=0)
    return np.where(finite & positive, magnitude, np.where(finite & negative, -magnitude, 0.0))


def consensus_mean(scores: Sequence[Array]) -> Array:
    """The mean score over runs (NaN where any run's is undefined)."""
    mean: Array = np.stack([np.asarray(s, dtype=np.float64) for s in scores]).mean(axis=0)
    return mean


def consensus_order(minimum: Array, mean: Array) -> NDArray[np.int64]:
    """Flat indices by |min consensus| descending, then |mean| (NaN last), then (layer, neuron)."""
    first = np.abs(minimum.reshape(-1))
    second = np.where(np.isnan(mean.reshape(-1)), -1.0, np.abs(mean.reshape(-1)))
    return np.lexsort((second * -1.0, first * -1.0)).astype(np.int64)
