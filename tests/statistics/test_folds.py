"""Folds: seeded assignment, per-fold moments routed batch by batch, the full set as their Chan merge."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from skn.inputs.data import Example
from skn.errors import UsageError
from skn.statistics.folds import MIN_AUTO_FOLD, Fold, FoldAccumulator, assign_folds, plan_holdout
from skn.inputs.layout import PromptRowBuffer
from skn.statistics.stats import PearsonStats, StatsAccumulator

from helpers import reference_moments, reference_r


def make_examples(n: int, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    return [Example(f"text {rng.random():.6f} {i}", " ok", {"v": rng.random()}, f"f:{i}") for i in range(n)]


def test_assignment_is_seeded_exact_and_order_free() -> None:
    data = make_examples(101)
    confirm = assign_folds(data, 0.5, seed=3)
    assert int(confirm.sum()) == round(0.5 * 101)
    assert torch.equal(confirm, assign_folds(data, 0.5, seed=3))
    assert not torch.equal(confirm, assign_folds(data, 0.5, seed=4))
    order = list(range(101))
    random.Random(1).shuffle(order)
    shuffled = assign_folds([data[i] for i in order], 0.5, seed=3)
    assert [bool(shuffled[j]) for j in range(101)] == [bool(confirm[i]) for i in order]
    # the metric plays no part: changing every metadata value moves no example
    changed = [Example(e.instruction, e.completion, {"v": -1.0}, e.source) for e in data]
    assert torch.equal(assign_folds(changed, 0.5, seed=3), confirm)
    assert int(assign_folds(data, 0.3, seed=0).sum()) == 30


def test_plan_holdout_default_and_bounds() -> None:
    assert not plan_holdout(None, 2 * MIN_AUTO_FOLD - 1).on
    assert "holdout off" in plan_holdout(None, 24).note
    on = plan_holdout(None, 2 * MIN_AUTO_FOLD)
    assert on.on and on.fraction == 0.5
    assert not plan_holdout(0.0, 10_000).on
    assert plan_holdout(0.25, 40).fraction == 0.25
    for bad in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(UsageError, match="--holdout"):
            plan_holdout(bad, 1000)
    with pytest.raises(UsageError, match="each fold needs"):
        plan_holdout(0.5, 6)


def subset_stats(acts: torch.Tensor, y: torch.Tensor) -> PearsonStats:
    acc = StatsAccumulator(acts.shape[1], acts.shape[2], acts.shape[3])
    acc.add_batch(acts.transpose(0, 1), y)
    return acc.snapshot()


def drive(acts: torch.Tensor, y: torch.Tensor, confirm: torch.Tensor, sizes: list[int], rows_mode: bool) -> FoldAccumulator:
    """Feed [N, L, P, m] through a FoldAccumulator in ragged batches, as the pass does."""
    n, layers, positions, width = acts.shape
    folds = FoldAccumulator(confirm, layers, positions, width)
    gathered = PromptRowBuffer()  # one buffer for every layer and batch, as the pass keeps it
    first = 0
    for size in sizes:
        folds.begin_batch(first, size)
        batch, yb = acts[first : first + size], y[first : first + size]
        for layer in range(layers):
            if rows_mode:  # the in-pass shape: [B, T, m] with the prompt rows at per-row offsets
                offsets = torch.arange(size, dtype=torch.int64) % 3
                x = torch.randn(size, positions + 3, width, dtype=acts.dtype)
                x[torch.arange(size)[:, None], offsets[:, None] + torch.arange(positions)] = batch[:, layer]
                folds.add_layer(layer, first, gathered.gather(x, offsets, positions), yb)
            else:
                folds.add_layer(layer, first, batch[:, layer], yb)
        folds.finish_batch(first, yb)
        first += size
    assert first == n
    return folds


@pytest.mark.parametrize("rows_mode", [False, True])
def test_merged_folds_equal_the_full_set(rows_mode: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    n = 57
    acts = torch.randn(n, 2, 3, 5, generator=gen, dtype=torch.float64) * 2 + 1e3
    y = torch.randn(n, generator=gen, dtype=torch.float64) + 0.3 * acts[:, 0, 0, 0]
    confirm = torch.zeros(n, dtype=torch.bool)
    confirm[[1, 2, 3, 4, 5, 6, 20, 30, 31, 50, 56]] = True
    # batches holding one fold only (0..0, 1..6), single rows of a fold, ragged sizes
    sizes = [1, 6, 1, 12, 9, 1, 20, 7]
    stats = drive(acts, y, confirm, sizes, rows_mode).snapshot()
    whole = subset_stats(acts, y)
    full = stats.full
    assert full.count == whole.count == n
    for name in ("mean_x", "m2_x", "c_xy"):
        torch.testing.assert_close(getattr(full, name), getattr(whole, name), rtol=1e-12, atol=1e-12)
    assert full.mean_y == pytest.approx(whole.mean_y, rel=1e-12, abs=1e-12)
    assert full.m2_y == pytest.approx(whole.m2_y, rel=1e-12)
    # each fold against numpy on its own examples
    for fold, mask in ((Fold.SELECTION, ~confirm), (Fold.CONFIRMATION, confirm)):
        part = stats.of(fold)
        assert part.count == int(mask.sum())
        expected = reference_r(acts[mask].numpy(), y[mask].numpy())
        got = part.c_xy.numpy() / np.sqrt(part.m2_x.numpy() * part.m2_y)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert torch.equal(stats.confirm, confirm)


def test_rows_of_the_current_batch_are_the_seam() -> None:
    confirm = torch.tensor([True, False, False, True, True])
    folds = FoldAccumulator(confirm, 1, 1, 1)
    folds.begin_batch(2, 3)
    assert folds.rows(Fold.SELECTION).tolist() == [0]
    assert folds.rows(Fold.CONFIRMATION).tolist() == [1, 2]
    assert folds.within(Fold.SELECTION).tolist() == [1]  # example 2 is the second selection example (after 1)
    assert folds.within(Fold.CONFIRMATION).tolist() == [1, 2]  # examples 3, 4 follow example 0 in their fold
    assert folds.fold_size(Fold.SELECTION) == 2 and folds.fold_size(Fold.CONFIRMATION) == 3


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_fold_moments_match_numpy_on_awkward_batches(dtype: torch.dtype) -> None:
    """Each fold's moments against float64 numpy, through the shifted sums (the torch path, skn.statistics.fold_sums) and
    through the per-fold Chan merge (the update the Triton backend plugs in): a 1e6 offset (float64 only: narrower types cannot hold
    it), a constant cell, ragged batches with one fold only, single rows of a fold."""
    from skn.statistics.stats import update_layer_torch_

    gen = torch.Generator().manual_seed(4)
    n = 61
    offset = 1e6 if dtype == torch.float64 else 8.0
    acts = (torch.randn(n, 2, 3, 4, generator=gen, dtype=torch.float64) * 1.5 + offset).to(dtype)
    acts[:, 1, 2, 3] = acts[0, 1, 2, 3]  # a constant cell: M2 stays 0, r NaN
    y = torch.randn(n, generator=gen, dtype=torch.float64) + 0.4 * acts[:, 0, 0, 0].double()
    confirm = torch.rand(n, generator=gen) < 0.4
    confirm[:5] = True  # batch 0..4 holds the confirmation fold only
    confirm[5:12] = torch.tensor([False, True, False, False, False, False, False])  # one confirmation row in 5..11
    sizes = [5, 7, 1, 16, 13, 19]
    buffered = drive(acts, y, confirm, sizes, rows_mode=False).snapshot()
    layers, positions, width = acts.shape[1:]
    per_fold = FoldAccumulator(confirm, layers, positions, width, update_layer=update_layer_torch_)
    first = 0
    for size in sizes:
        per_fold.begin_batch(first, size)
        for layer in range(layers):
            per_fold.add_layer(layer, first, acts[first : first + size, layer], y[first : first + size])
        per_fold.finish_batch(first, y[first : first + size])
        first += size
    other = per_fold.snapshot()
    x, yv = acts.double().numpy(), y.numpy()
    for fold, mask in ((Fold.SELECTION, ~confirm), (Fold.CONFIRMATION, confirm)):
        got, alt = buffered.of(fold), other.of(fold)
        mean, m2, c = reference_moments(x[mask.numpy()], yv[mask.numpy()])
        scale = np.abs(x).max()
        np.testing.assert_allclose(got.mean_x.numpy(), mean, rtol=1e-14, atol=1e-13 * scale)
        np.testing.assert_allclose(got.m2_x.numpy(), m2, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(got.c_xy.numpy(), c, rtol=1e-9, atol=1e-9)
        if dtype != torch.float64:  # a model's activations: their batch sums are exact in float64, so is M2 = 0
            assert float(got.m2_x[1, 2, 3]) == 0.0
        for name in ("mean_x", "m2_x", "c_xy"):
            torch.testing.assert_close(getattr(got, name), getattr(alt, name), rtol=1e-10, atol=1e-9)
        assert got.count == alt.count == int(mask.sum())
