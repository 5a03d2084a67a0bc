"""Streaming statistics against an independent float64 numpy reference over stored activations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import reference_r
from skn.statistics.stats import LayerMoments, PearsonStats, StatsAccumulator, correlation, empty_stats, merge


def stream(acts: torch.Tensor, y: torch.Tensor, batch: int) -> PearsonStats:
    n, layers, positions, width = acts.shape
    acc = StatsAccumulator(layers, positions, width)
    for i in range(0, n, batch):
        acc.add_batch(acts[i : i + batch].transpose(0, 1), y[i : i + batch])
    return acc.snapshot()


def assert_r_close(stats: PearsonStats, acts: torch.Tensor, y: torch.Tensor, tol: float = 1e-5) -> None:
    # the reference sees exactly the values the stream saw (after any fp16/bf16 rounding)
    expected = reference_r(acts.to(torch.float64).numpy(), y.numpy())
    got = correlation(stats).numpy().astype(np.float64)
    assert np.array_equal(np.isnan(expected), np.isnan(got))
    finite = ~np.isnan(expected)
    assert np.max(np.abs(got[finite] - expected[finite])) <= tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_streamed_r_matches_numpy(dtype: torch.dtype, batch: int) -> None:
    gen = torch.Generator().manual_seed(1)
    acts = torch.randn(50, 2, 3, 11, generator=gen).to(dtype)
    y = torch.randn(50, generator=gen, dtype=torch.float64) + 0.5 * acts[:, 0, 0, 0].double()
    assert_r_close(stream(acts, y, batch), acts, y)


def test_large_offset_keeps_accuracy() -> None:
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(300, 1, 2, 5, generator=gen, dtype=torch.float64)
    acts = base + 1e6
    y = 1e6 + base[:, 0, 0, 0] + 0.1 * torch.randn(300, generator=gen, dtype=torch.float64)
    stats = stream(acts, y, 13)
    assert_r_close(stats, acts, y, tol=1e-6)  # corr is stored as float32
    # the naive one-pass formula sum(xy) - n mean_x mean_y in float32 is hopeless here: the test can fail
    assert correlation(stats)[0, 0, 0] > 0.99


def test_ragged_batches_and_two_examples() -> None:
    acts = torch.tensor([[[[1.0, 5.0]]], [[[3.0, 5.0]]]])
    y = torch.tensor([0.0, 2.0], dtype=torch.float64)
    r = correlation(stream(acts, y, 1))
    assert r[0, 0, 0] == pytest.approx(1.0)
    assert math.isnan(float(r[0, 0, 1]))  # constant neuron -> NaN, not an error


def test_constant_neuron_is_nan_others_exact() -> None:
    gen = torch.Generator().manual_seed(3)
    acts = torch.randn(40, 2, 2, 4, generator=gen)
    acts[:, 1, 0, 2] = 7.25
    y = torch.randn(40, generator=gen, dtype=torch.float64)
    stats = stream(acts, y, 9)
    assert math.isnan(float(correlation(stats)[1, 0, 2]))
    assert_r_close(stats, acts, y)


def test_merge_equals_one_stream_and_is_symmetric() -> None:
    gen = torch.Generator().manual_seed(4)
    acts = torch.randn(61, 2, 3, 5, generator=gen) * 3 + 10
    y = torch.randn(61, generator=gen, dtype=torch.float64)
    whole = stream(acts, y, 8)
    a, b = stream(acts[:25], y[:25], 4), stream(acts[25:], y[25:], 16)
    for merged in (merge(a, b), merge(b, a)):
        assert merged.count == whole.count == 61
        torch.testing.assert_close(merged.mean_x, whole.mean_x, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(merged.m2_x, whole.m2_x, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(merged.c_xy, whole.c_xy, rtol=1e-10, atol=1e-10)
        assert merged.m2_y == pytest.approx(whole.m2_y, rel=1e-12)
    empty = empty_stats(2, 3, 5)
    assert merge(empty, a) is a and merge(a, empty) is a


def test_moments_match_numpy() -> None:
    gen = torch.Generator().manual_seed(5)
    acts = torch.randn(33, 1, 2, 3, generator=gen)
    y = torch.randn(33, generator=gen, dtype=torch.float64)
    stats = stream(acts, y, 5)
    x = acts.double().numpy()
    np.testing.assert_allclose(stats.mean_x.numpy()[0], x.mean(axis=0)[0], rtol=1e-12)
    np.testing.assert_allclose(stats.m2_x.numpy()[0], ((x - x.mean(axis=0)) ** 2).sum(axis=0)[0], rtol=1e-10)
    assert stats.mean_y == pytest.approx(float(y.mean()), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_update_leaves_the_activations_alone(dtype: torch.dtype) -> None:
    acts = torch.randn(5, 2, 3, dtype=dtype)
    before = acts.clone()
    acc = StatsAccumulator(1, 2, 3)
    acc.add_batch(acts.unsqueeze(0), torch.randn(5, dtype=torch.float64))
    assert torch.equal(acts, before)


def test_workspace_update_equals_the_reference_across_shapes() -> None:
    """TorchLayerUpdate reuses one buffer: a smaller batch after a larger one must not see stale rows."""
    from skn.statistics.stats import TorchLayerUpdate, update_layer_torch_

    update = TorchLayerUpdate()
    gen = torch.Generator().manual_seed(7)
    ours = [torch.zeros(2, 3, dtype=torch.float64) for _ in range(3)]
    ref = [t.clone() for t in ours]
    count, mean_y = 0, 0.0
    for batch in (5, 2, 4, 1):
        acts = torch.randn(batch, 2, 3, generator=gen).to(torch.bfloat16)
        y = torch.randn(batch, generator=gen, dtype=torch.float64)
        update(LayerMoments(*ours, count, mean_y), acts, y)
        update_layer_torch_(LayerMoments(*ref, count, mean_y), acts, y)
        count, mean_y = count + batch, mean_y + (float(y.mean()) - mean_y) * batch / (count + batch)
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)
