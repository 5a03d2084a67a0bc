"""skn.statistics.fold_sums: both folds' moments from shifted sums, against float64 numpy on inputs built to hurt them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skn.errors import RunDirError
from skn.statistics.fold_sums import FoldSums
from skn.statistics.folds import FoldAccumulator
from skn.statistics.stats import PearsonStats, correlation, update_layer_torch_

from helpers import reference_moments, reference_r


def feed(sums: FoldSums, acts: torch.Tensor, y: torch.Tensor, confirm: torch.Tensor, sizes: list[int]) -> None:
    """acts [N, L, P, m] in batches of `sizes`, each batch's rows routed by `confirm` as skn.statistics.folds does."""
    first = 0
    for size in sizes:
        mask = confirm[first : first + size]
        index = torch.arange(size)
        sums.begin_batch(index[~mask], index[mask])
        for layer in range(acts.shape[1]):
            sums.add_layer(layer, acts[first : first + size, layer], y[first : first + size])
        sums.finish_batch(y[first : first + size])
        first += size
    assert first == acts.shape[0]


def check_fold(got: PearsonStats, x: np.ndarray, y: np.ndarray) -> None:
    mean, m2, c = reference_moments(x, y)
    assert got.count == x.shape[0]
    np.testing.assert_allclose(got.mean_x.numpy(), mean, rtol=1e-13, atol=1e-13 * np.abs(x).max())
    np.testing.assert_allclose(got.m2_x.numpy(), m2, rtol=1e-9, atol=0)
    # C against its natural scale sqrt(M2_x M2_y): a relative test would fail where C is near 0
    scale = np.sqrt(m2 * ((y - y.mean()) ** 2).sum())
    assert np.all(np.abs(got.c_xy.numpy() - c) <= 1e-9 * scale)
    assert got.mean_y == pytest.approx(float(y.mean()), rel=1e-13)


def test_an_outlier_first_a_large_offset_and_sorted_batches() -> None:
    """The shift is each fold's first example: make it a spike 10^4 standard deviations out, on a 10^6 offset,
    with the examples sorted by the metric (each batch unlike the last). r must still match to float32."""
    gen = torch.Generator().manual_seed(11)
    n, layers, positions, width = 300, 2, 3, 5
    y = torch.sort(torch.randn(n, generator=gen, dtype=torch.float64)).values
    acts = 1e6 + torch.randn(n, layers, positions, width, generator=gen, dtype=torch.float64)
    acts[:, 0, 0, 0] += 0.8 * y
    acts[:2] += 1e4  # the first example of each fold (rows 0 and 1 below) is far out
    confirm = torch.zeros(n, dtype=torch.bool)
    confirm[1::2] = True
    sums = FoldSums(layers, positions, width)
    feed(sums, acts, y, confirm, [7, 16, 1, 64, 100, 112])
    selection, confirmation = sums.snapshot()
    x, yv = acts.numpy(), y.numpy()
    for stats, mask in ((selection, ~confirm.numpy()), (confirmation, confirm.numpy())):
        check_fold(stats, x[mask], yv[mask])
        got = correlation(stats).numpy().astype(np.float64)
        assert np.max(np.abs(got - reference_r(x[mask], yv[mask]))) <= 1e-6  # r is stored as float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_cell_constant_on_one_fold_is_nan_there_only(dtype: torch.dtype) -> None:
    """A neuron silent on every selection example but not on the others: M2 exactly 0 and r NaN on that fold
    (its shift is one of its own values, so every difference is exactly 0), finite on the other and overall."""
    gen = torch.Generator().manual_seed(12)
    n = 90
    acts = (torch.randn(n, 1, 2, 4, generator=gen) * 3 + 5).to(dtype)
    confirm = torch.rand(n, generator=gen) < 0.5
    acts[~confirm, 0, 1, 2] = torch.tensor(0.3, dtype=dtype)
    y = torch.randn(n, generator=gen, dtype=torch.float64)
    sums = FoldSums(1, 2, 4)
    feed(sums, acts, y, confirm, [16] * 5 + [10])
    selection, confirmation = sums.snapshot()
    assert float(selection.m2_x[0, 1, 2]) == 0.0 and float(selection.c_xy[0, 1, 2]) == 0.0
    assert torch.isnan(correlation(selection)[0, 1, 2])
    assert torch.isfinite(correlation(confirmation)[0, 1, 2])
    x, yv = acts.double().numpy(), y.numpy()
    check_fold(confirmation, x[confirm.numpy()], yv[confirm.numpy()])


def test_state_round_trip_is_bitwise_and_another_layout_is_refused() -> None:
    gen = torch.Generator().manual_seed(13)
    acts = torch.randn(40, 2, 2, 3, generator=gen)
    y = torch.randn(40, generator=gen, dtype=torch.float64)
    confirm = torch.rand(40, generator=gen) < 0.5
    whole = FoldSums(2, 2, 3)
    feed(whole, acts, y, confirm, [8] * 5)
    first = FoldSums(2, 2, 3)
    feed(first, acts[:16], y[:16], confirm[:16], [8, 8])
    resumed = FoldSums(2, 2, 3)
    resumed.load_state(first.state())
    feed(resumed, acts[16:], y[16:], confirm[16:], [8] * 3)
    for a, b in zip(whole.snapshot(), resumed.snapshot()):
        assert a.count == b.count and a.mean_y == b.mean_y and a.m2_y == b.m2_y
        for name in ("mean_x", "m2_x", "c_xy"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
    # the per-fold Chan layout (skn before, and the Triton backend's) is refused with a message, not a KeyError
    per_fold = FoldAccumulator(confirm, 2, 2, 3, update_layer=update_layer_torch_)
    with pytest.raises(RunDirError, match="--overwrite"):
        FoldSums(2, 2, 3).load_state(per_fold.state())
    with pytest.raises(RunDirError, match="--overwrite"):
        per_fold.load_state(first.state())
