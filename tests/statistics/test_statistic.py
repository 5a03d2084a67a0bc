"""One protocol for every statistic of the pass (skn.statistics.statistic): each kind, fed three ranks' shards and merged
with its own `merge` over a collective of three threads, equals the same statistic fed the whole set; and
every kind is a Statistic, so the pass, the checkpoint, the retry and the merge can take any of them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import pytest
import torch
from torch import Tensor

from skn.engine.distributed import ShardStatistic
from skn.statistics.exemplar_store import ActivationStore
from skn.statistics.folds import FoldAccumulator
from skn.statistics.null import NullAccumulator, NullConfig, SelectedRows
from skn.statistics.covariate_moments import CovariateAccumulator
from skn.statistics.statistic import Statistic
from skn.statistics.stats import StatsAccumulator

N, L, P, M = 37, 2, 3, 5
BATCH = 4
WORLD = 3


class ThreadRanks:
    """`WORLD` threads as the ranks of one group: each collective waits for every rank, then combines in rank order."""

    def __init__(self, rank: int, slots: list[Tensor | None], barrier: threading.Barrier) -> None:
        self.rank, self._slots, self._barrier = rank, slots, barrier

    @property
    def active(self) -> bool:
        return True

    def _exchange(self, tensor: Tensor) -> list[Tensor]:
        self._slots[self.rank] = tensor.clone()
        self._barrier.wait()
        parts = [t.clone() for t in self._slots if t is not None]
        self._barrier.wait()  # nobody writes the next collective's slot before all have read this one's
        return parts

    def all_gather(self, tensor: Tensor) -> list[Tensor]:
        return self._exchange(tensor)

    def broadcast_(self, tensor: Tensor, src: int) -> None:
        tensor.copy_(self._exchange(tensor)[src])

    def sum_(self, tensor: Tensor) -> None:
        parts = self._exchange(tensor)
        total = parts[0]
        for part in parts[1:]:
            total += part
        tensor.copy_(total)


def merge_in_threads(statistics: Sequence[Statistic]) -> None:
    slots: list[Tensor | None] = [None] * len(statistics)
    barrier = threading.Barrier(len(statistics), timeout=60)
    errors: list[BaseException] = []

    def merge(rank: int) -> None:
        try:
            statistics[rank].merge(ThreadRanks(rank, slots, barrier))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=merge, args=(rank,)) for rank in range(len(statistics))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def data() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(5)
    acts = torch.randn(N, L, P, M, generator=gen, dtype=torch.float64) * 3 + 1e3  # an offset each shift must carry
    y = torch.randn(N, generator=gen, dtype=torch.float64) + 50
    z = torch.randn(N, 2, generator=gen, dtype=torch.float64)
    confirm = torch.rand(N, generator=gen) < 0.4
    return acts.to(torch.float32), y, z, confirm


def feed(statistic: Statistic, acts: Tensor, y: Tensor, start: int, stop: int, known: Tensor | None) -> None:
    """Examples start .. stop - 1 in batches of BATCH, numbered from `start` (ShardStatistic adds it back)."""
    statistic.begin(stop - start, known)
    for first in range(start, stop, BATCH):
        end = min(stop, first + BATCH)
        for layer in range(L):
            statistic.add_layer(layer, first - start, acts[first:end, layer], y[first:end])
        statistic.finish_batch(first - start, y[first:end])


Make = Callable[[], Statistic]
Read = Callable[[Statistic], list[Tensor]]


def kinds() -> dict[str, tuple[Make, Read, bool, float]]:
    """name -> (a fresh statistic, what to compare after the merge, whether the metric is known before, tolerance)."""
    _, _, z, confirm = data()

    def moments(s: Statistic) -> list[Tensor]:
        snap = s.snapshot()  # type: ignore[attr-defined]
        return [snap.mean_x, snap.m2_x, snap.c_xy, torch.tensor([snap.count, snap.mean_y, snap.m2_y])]

    def folds(s: Statistic) -> list[Tensor]:
        snap = s.snapshot()  # type: ignore[attr-defined]
        return [t for fold in (snap.selection, snap.confirmation)
                for t in (fold.mean_x, fold.m2_x, fold.c_xy, torch.tensor([fold.count, fold.mean_y, fold.m2_y]))]

    def null(s: Statistic) -> list[Tensor]:
        inner = s.inner if isinstance(s, SelectedRows) else s
        snap = inner.snapshot()  # type: ignore[attr-defined]
        return [snap.comoments.to(torch.float64), snap.perm_y, snap.perm_z]

    def covariates(s: Statistic) -> list[Tensor]:
        return [s.fold_xz(0), s.fold_xz(1)]  # type: ignore[attr-defined]

    config = NullConfig(7, 0.2, 3)
    return {
        "moments": (lambda: StatsAccumulator(L, P, M), moments, False, 1e-9),
        "folds": (lambda: FoldAccumulator(confirm, L, P, M), folds, False, 1e-9),
        "null whole set": (lambda: NullAccumulator(L, P, M, config), null, True, 1e-4),
        "null whole set, covariates": (lambda: NullAccumulator(L, P, M, config, covariates=z), null, True, 1e-4),
        "null of one fold": (lambda: SelectedRows(NullAccumulator(L, P, M, config), ~confirm), null, True, 1e-4),
        "covariates": (lambda: CovariateAccumulator(z, confirm.long(), 2, L, P, M), covariates, False, 1e-9),
    }


@pytest.mark.parametrize("kind", list(kinds()))
def test_three_ranks_merged_equal_one_pass(kind: str) -> None:
    make, read, known_before, tolerance = kinds()[kind]
    acts, y, _, _ = data()
    known = y if known_before else None
    whole = make()
    feed(whole, acts, y, 0, N, known)
    bounds = [0, 12, 24, N]  # shards at multiples of the batch, as skn.engine.distributed.Ranks.shard cuts them
    ranks = [ShardStatistic(make(), bounds[k], N, known) for k in range(WORLD)]
    for k, rank in enumerate(ranks):
        feed(rank, acts, y, bounds[k], bounds[k + 1], known)
    merge_in_threads(ranks)
    for rank in ranks:
        for got, want in zip(read(rank.inner), read(whole), strict=True):
            scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
            torch.testing.assert_close(got.to(torch.float64), want.to(torch.float64), rtol=0, atol=tolerance * scale)


def test_a_merge_that_did_nothing_would_fail() -> None:
    """The comparison above can fail: a rank's own moments are not the whole set's."""
    make, read, _, _ = kinds()["moments"]
    acts, y, _, _ = data()
    whole, part = make(), make()
    feed(whole, acts, y, 0, N, None)
    feed(part, acts, y, 0, 12, None)
    assert not torch.allclose(read(part)[2], read(whole)[2])


def test_every_kind_is_a_statistic() -> None:
    acts, y, z, confirm = data()
    for make, _, _, _ in kinds().values():
        assert isinstance(make(), Statistic)
    store = ActivationStore(L, P, M, 1 << 20)
    try:
        assert isinstance(store, Statistic)
        assert isinstance(ShardStatistic(store, 0, N, None), Statistic)
    finally:
        store.close()


def test_the_store_rolls_back_to_a_state() -> None:
    """ActivationStore.load_state forgets the batches after the state: the file is cut back, a rewrite reads true."""
    acts, y, _, _ = data()
    store = ActivationStore(L, P, M, 1 << 20)
    try:
        store.begin(8, None)
        for first in (0, 4):
            if first == 4:
                saved = store.state()
            for layer in range(L):
                store.add_layer(layer, first, acts[first : first + 4, layer] * (100 if first == 4 else 1), y[first : first + 4])
            store.finish_batch(first, y[first : first + 4])
        store.load_state(saved)
        assert store.file_bytes() == int(saved["bytes"])
        for first in (4, 6):  # the rolled-back batch again, at half the size
            for layer in range(L):
                store.add_layer(layer, first, acts[first : first + 2, layer], y[first : first + 2])
            store.finish_batch(first, y[first : first + 2])
        from skn.ranking.rank import Neuron

        cells = [Neuron(0, layer, index, position, 0.0) for layer in range(L) for position in range(P) for index in range(M)]
        got = store.read(cells)
        want = acts[:8].permute(1, 2, 3, 0).reshape(len(cells), 8)
        assert torch.equal(got, want)
    finally:
        store.close()
