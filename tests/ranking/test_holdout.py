"""Selection bias on synthetic streams driven through the statistics API: the held-out r is honest."""

from __future__ import annotations

import math

import numpy as np
import torch

from skn.statistics.folds import FoldAccumulator
from skn.ranking.holdout import rank_with_holdout
from skn.ranking.rank import Reduce, rank_neurons
from skn.statistics.stats import correlation

N, LAYERS, POSITIONS, WIDTH, BATCH, REPS = 400, 2, 2, 100, 64, 200


def stream_folds(acts: torch.Tensor, y: torch.Tensor, confirm: torch.Tensor) -> FoldAccumulator:
    folds = FoldAccumulator(confirm, LAYERS, POSITIONS, WIDTH)
    for first in range(0, N, BATCH):
        size = min(BATCH, N - first)
        folds.begin_batch(first, size)
        for layer in range(LAYERS):
            folds.add_layer(layer, first, acts[first : first + size, layer], y[first : first + size])
        folds.finish_batch(first, y[first : first + size])
    return folds


def one_rep(seed: int, planted: float) -> tuple[list[float], list[float], tuple[float, float, float], bool]:
    gen = torch.Generator().manual_seed(seed)
    acts = torch.randn(N, LAYERS, POSITIONS, WIDTH, generator=gen)
    y = torch.randn(N, generator=gen, dtype=torch.float64)
    if planted:
        noise = torch.randn(N, generator=gen, dtype=torch.float64)
        acts[:, 1, 0, 7] = (planted * y + math.sqrt(1 - planted**2) * noise).float()
    confirm = torch.randperm(N, generator=gen) < N // 2
    ranked = rank_with_holdout(stream_folds(acts, y, confirm).snapshot(), 10, Reduce.ABS, 0.5, seed)
    signs = [math.copysign(1.0, n.r) for n in ranked.neurons]
    aligned_held = [s * h.r_held_out for s, h in zip(signs, ranked.holdout.per_neuron)]
    aligned_sel = [s * h.r_selection for s, h in zip(signs, ranked.holdout.per_neuron)]
    top = ranked.neurons[0]
    h = ranked.holdout.per_neuron[0]
    return aligned_held, aligned_sel, (h.r_held_out, h.low, h.high), (top.layer, top.position, top.index) == (1, 0, 7)


def test_noise_winners_hold_out_near_zero() -> None:
    held, chosen = [], []
    for seed in range(REPS):
        a, b, _, _ = one_rep(seed, 0.0)
        held += a
        chosen += b
    assert abs(float(np.mean(held))) < 0.02  # the held-out r of pure-noise winners is centred on 0
    assert float(np.mean(chosen)) > 0.15  # while the r that chose them is far from it (top 10 of 400 cells, n = 200)


def test_planted_cell_interval_covers_its_true_r() -> None:
    covered, found = 0, 0
    for seed in range(REPS):
        _, _, (r, low, high), is_planted = one_rep(10_000 + seed, 0.4)
        found += is_planted
        covered += low <= 0.4 <= high
        assert low < r < high
    assert found >= 0.95 * REPS  # the planted cell is the one chosen
    assert 0.90 <= covered / REPS <= 0.99  # a 95% interval, over 200 seeded repetitions


def test_ranking_is_on_the_selection_fold_and_full_is_the_merge() -> None:
    gen = torch.Generator().manual_seed(5)
    acts = torch.randn(N, LAYERS, POSITIONS, WIDTH, generator=gen)
    y = torch.randn(N, generator=gen, dtype=torch.float64)
    confirm = torch.randperm(N, generator=gen) < N // 4
    folds = stream_folds(acts, y, confirm).snapshot()
    ranked = rank_with_holdout(folds, 5, Reduce.ABS, 0.25, 0)
    assert ranked.neurons == rank_neurons(correlation(folds.selection), 5)
    assert torch.equal(ranked.corr, correlation(folds.full))
    for n, h in zip(ranked.neurons, ranked.holdout.per_neuron):
        assert h.r_selection == n.r
        assert h.r_full == float(ranked.corr[n.layer, n.position, n.index])
        assert h.r_held_out == float(correlation(folds.confirmation)[n.layer, n.position, n.index])
    assert ranked.holdout.n_selection == 300 and ranked.holdout.n_confirmation == 100
    assert 0.0 <= ranked.holdout.replication.rate <= 1.0
