"""The batches of a pass, with a batch that runs out of CUDA memory retried at half the size.

`run_batches` calls `one_batch(first, size)` for consecutive slices of the examples. With `retry` on
(the default on CUDA), the state of every statistic of the pass (skn.statistics.statistic.Statistic: the moments,
the null, the covariates, the activation store) is copied before each batch; a batch raising `torch.cuda.OutOfMemoryError` is
rolled back to that copy (the in-pass hooks merge layer by layer, so half a batch may already be in),
the cache is emptied, and the same examples are tried again at half the size, down to 1; the smaller
size is kept for the rest of the pass and reported (`on_shrink`). The statistics do not depend on
where the batches split (Chan's merge is exact up to float64 rounding), and the within-batch null
draws its permutations for the batch it is actually given (its generator is rolled back too).

Why a copy rather than an undo: a Chan update cannot be reversed exactly, and the copy is of the
running state only (3 L P m float64 of moments, the null's and the covariates' co-moments; the activation
store's is two numbers, its file cut back on restore), reused from batch to batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from skn.statistics.statistic import Statistic


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError)


class _Undo:
    """One reusable copy of every part's state."""

    def __init__(self, parts: Sequence[Statistic]) -> None:
        self._parts = parts
        self._saved: list[dict[str, Tensor]] = []

    def save(self) -> None:
        self._saved = []  # the previous copy goes before the next is made: at most one copy lives
        self._saved = [part.state() for part in self._parts]

    def restore(self) -> None:
        for part, state in zip(self._parts, self._saved, strict=True):
            part.load_state(state)


def run_batches(
    count: int,
    start: int,
    batch_size: int,
    one_batch: Callable[[int, int], None],
    after: Callable[[int], None],
    parts: Sequence[Statistic] = (),
    retry: bool = False,
    on_shrink: Callable[[int, int], None] = lambda done, size: None,
) -> int:
    """Examples start .. count - 1 in batches; `after(done)` once each batch is merged; `on_shrink(done,
    size)` after a rollback (the caller drops what it kept of examples from `done` on). Returns the
    batch size in use at the end (smaller than `batch_size` after an out-of-memory retry)."""
    undo = _Undo(parts) if retry else None
    first, size = start, batch_size
    while first < count:
        size_now = min(size, count - first)
        if undo is not None:
            undo.save()
        try:
            one_batch(first, size_now)
        except Exception as err:
            if undo is None or not _is_oom(err) or size_now == 1:
                raise
            undo.restore()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            size = max(1, size_now // 2)
            on_shrink(first, size)
            continue
        first += size_now
        after(first)
    return size
