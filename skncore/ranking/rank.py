"""Ranking: a neuron's score is its r at its best prompt position; keep the top K by |score|.

Only correlations go in and only small tables come out: ranking knows nothing of models or batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from skn.errors import UsageError


class Reduce(Enum):
    """How a neuron's P correlations (one per prompt position) become one score."""

    ABS = "abs"  # r at argmax_k |r|, sign kept (default)
    MAX = "max"  # the paper's literal max_k r


@dataclass(frozen=True)
class Neuron:
    """One ranked neuron: FFN neuron `index` of layer `layer`, read at prompt position `position`
    (the column `neuron` of neurons.json / neurons.csv)."""

    rank: int
    layer: int
    index: int
    position: int
    r: float


@dataclass(frozen=True)
class BestScores:
    """Every neuron's score [L, m] (NaN where all its positions are undefined) and best position [L, m]."""

    score: Tensor
    position: Tensor


def best_scores(corr: Tensor, reduce: Reduce = Reduce.ABS) -> BestScores:
    """Reduce corr [L, P, m] over positions. NaN entries never win; an all-NaN neuron scores NaN."""
    finite = ~torch.isnan(corr)
    if reduce is Reduce.ABS:
        key = torch.where(finite, corr.abs(), torch.full_like(corr, -math.inf))
    else:
        key = torch.where(finite, corr, torch.full_like(corr, -math.inf))
    position = key.argmax(dim=1)
    score = corr.gather(1, position.unsqueeze(1)).squeeze(1)
    score = torch.where(finite.any(dim=1), score, torch.full_like(score, math.nan))
    return BestScores(score=score, position=position)


def rank_neurons(corr: Tensor, top_k: int, reduce: Reduce = Reduce.ABS) -> tuple[Neuron, ...]:
    """The top_k neurons by |score|, best first (ties broken by layer, then neuron). NaN ranks last."""
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    best = best_scores(corr, reduce)
    layers, width = best.score.shape
    flat = best.score.flatten().to(torch.float64)
    key = torch.where(torch.isnan(flat), torch.full_like(flat, -1.0), flat.abs())
    # stable sort on -key keeps (layer, neuron) order among equal scores
    order = torch.sort(-key, stable=True).indices[: min(top_k, layers * width)]
    ranked = []
    for rank, flat_index in enumerate(order.tolist(), start=1):
        layer, index = divmod(flat_index, width)
        ranked.append(
            Neuron(
                rank=rank,
                layer=layer,
                index=index,
                position=int(best.position[layer, index]),
                r=float(best.score[layer, index]),
            )
        )
    return tuple(ranked)


def top_k_threshold(corr: Tensor, top_k: int, reduce: Reduce = Reduce.ABS) -> float:
    """|score| of the K-th ranked neuron: the line drawn on the histogram of all scores."""
    ranked = rank_neurons(corr, top_k, reduce)
    return abs(ranked[-1].r)


@dataclass(frozen=True)
class Exemplars:
    """Indices of the validation examples that most and least activate one neuron, strongest first."""

    most: tuple[int, ...]
    least: tuple[int, ...]


def exemplars(activations: Tensor, n: int) -> Exemplars:
    """For one neuron's activations [N]: the n largest (descending) and n smallest (ascending)."""
    values = activations.to(torch.float64)
    count = min(n, int(values.numel()))
    most = torch.sort(-values, stable=True).indices[:count]
    least = torch.sort(values, stable=True).indices[:count]
    return Exemplars(most=tuple(int(i) for i in most), least=tuple(int(i) for i in least))
