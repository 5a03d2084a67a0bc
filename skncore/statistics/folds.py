"""Two folds of the validation set in one pass: a selection fold that ranks, a confirmation fold that checks.

Why: the top neuron is the largest |r| among 10^4-10^6 cells, so its r on the examples that chose it is biased
upward (the winner's curse). Its r on examples that played no part in choosing it is not.

Assignment (`assign_folds`): every example gets a key, sha256 of the seed and its instruction and completion
(skn.inputs.example_order.content_key); the round(F * N) examples with the smallest keys form the confirmation fold
(ties, i.e. duplicates, by index). The fold of an example depends on the seed and its own text only: not on its metric, not on where it sits in the file (shuffling the validation set moves no
example to the other fold; before issue #32 the key held the example's FILE:LINE, so it did).

Moments (`FoldAccumulator`): each batch's rows are routed to their fold. On the torch path both folds' moments
come from shifted sums, one set of operations per layer and batch (`skn.statistics.fold_sums`); with another update (the
Triton kernels) one `StatsAccumulator` per fold merges its rows (`PerFoldMoments`). The full-set moments are the
Chan merge of the two (`skn.statistics.stats.merge`), so nothing is computed twice. A batch may hold rows of one fold only,
or a single row of a fold: a fold with no row in the batch is skipped.

Seam for other per-pass accumulators (the permutation null must be computed on the selection fold, the fold
that chose): `FoldAccumulator.rows(fold)` is the index tensor of the current batch's rows in that fold, on
the statistics' device, so another accumulator can take `acts.index_select(0, rows)` and `y[rows]`;
`FoldAccumulator.within(fold)` numbers the same rows 0 .. n_fold - 1 across the whole pass (the index a
permutation of that fold's metric values is applied at), and `fold_size(fold)` is n_fold, known before the pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from skn.inputs.data import Example
from skn.inputs.example_order import FOLD_SALT, keyed_order
from skn.errors import InternalError, RunDirError, UsageError
from skn.statistics.fold_sums import FoldSums
from skn.statistics.scratch import Scratch
from skn.statistics.statistic import Collective, PassShape
from skn.statistics.stats import LayerUpdate, PearsonStats, StatsAccumulator, merge, merge_across

AUTO_FRACTION = 0.5
MIN_AUTO_FOLD = 100  # the automatic holdout needs at least this many examples in each fold
MIN_FOLD = 4  # an explicit --holdout needs this many per fold (Fisher z's standard error is 1/sqrt(n - 3))


class Fold(Enum):
    SELECTION = "selection"
    CONFIRMATION = "confirmation"


@dataclass(frozen=True)
class HoldoutPlan:
    """What `--holdout` resolved to for N examples: fraction 0.0 is off; `note` says why, for the output."""

    fraction: float
    note: str

    @property
    def on(self) -> bool:
        return self.fraction > 0.0


def plan_holdout(requested: float | None, n: int) -> HoldoutPlan:
    """`requested` None is the default: 0.5 once both folds would hold >= 100 examples, else off.
    0 is off (rank on all examples, as without a holdout); 0 < F < 1 holds out round(F * N) examples."""
    if requested is None:
        confirm = round(AUTO_FRACTION * n)
        if min(confirm, n - confirm) >= MIN_AUTO_FOLD:
            return HoldoutPlan(AUTO_FRACTION, f"holdout {AUTO_FRACTION:g}: {n - confirm} selection, {confirm} confirmation examples")
        return HoldoutPlan(
            0.0,
            f"holdout off: {n} validation examples, the default needs {MIN_AUTO_FOLD} in each fold "
            f"(--holdout F forces one); r below is measured on the examples that chose the neurons",
        )
    if not 0.0 <= requested < 1.0 or math.isnan(requested):
        raise UsageError(f"--holdout must be in [0, 1), got {requested}")
    if requested == 0.0:
        return HoldoutPlan(0.0, "holdout off (--holdout 0): neurons ranked on all examples")
    confirm = round(requested * n)
    if min(confirm, n - confirm) < MIN_FOLD:
        raise UsageError(
            f"--holdout {requested:g} on {n} validation examples leaves {n - confirm} selection and {confirm} "
            f"confirmation examples; each fold needs at least {MIN_FOLD}"
        )
    return HoldoutPlan(requested, f"holdout {requested:g}: {n - confirm} selection, {confirm} confirmation examples")


def assign_folds(examples: Sequence[Example], fraction: float, seed: int) -> Tensor:
    """[N] bool, True for the confirmation fold: the round(fraction * N) examples with the smallest seeded keys."""
    confirm = torch.zeros(len(examples), dtype=torch.bool)
    order = keyed_order(examples, seed, FOLD_SALT)
    confirm[list(order[: round(fraction * len(examples))])] = True
    return confirm


@dataclass(frozen=True)
class FoldStats:
    """The moments of each fold, and which examples were held out."""

    selection: PearsonStats
    confirmation: PearsonStats
    confirm: Tensor  # [N] bool, True = confirmation fold

    @property
    def full(self) -> PearsonStats:
        """The whole validation set: Chan's merge of the two folds."""
        return merge(self.selection, self.confirmation)

    def of(self, fold: Fold) -> PearsonStats:
        return self.selection if fold is Fold.SELECTION else self.confirmation


class PerFoldMoments:
    """One `StatsAccumulator` per fold, each merging its rows of every batch with `update_layer` (Chan's merge)."""

    def __init__(self, layers: int, positions: int, width: int, device: torch.device, update_layer: LayerUpdate) -> None:
        # the folds may share one backend (and its workspace): each call finishes before the next begins
        self._accumulators = (StatsAccumulator(layers, positions, width, device, update_layer),
                              StatsAccumulator(layers, positions, width, device, update_layer))
        self._fold_rows = Scratch()  # one fold's rows of the current layer
        self._rows: tuple[Tensor, ...] = ()

    def begin_batch(self, selection: Tensor, confirmation: Tensor) -> None:
        self._rows = (selection, confirmation)

    def add_layer(self, layer: int, acts: Tensor, y: Tensor) -> None:
        for accumulator, rows in zip(self._accumulators, self._rows):
            if rows.numel() == 0:
                continue
            if rows.numel() == acts.shape[0]:
                accumulator.add_layer(layer, 0, acts, y)  # (a StatsAccumulator does not number its rows)
            else:
                accumulator.add_layer(layer, 0, self._select(acts, rows), y.index_select(0, rows.to(y.device)))

    def _select(self, acts: Tensor, rows: Tensor) -> Tensor:
        """acts[rows], copied into the reused buffer (valid until the next call)."""
        out = self._fold_rows.take((int(rows.numel()), *acts.shape[1:]), acts.dtype, acts.device)
        return torch.index_select(acts, 0, rows.to(acts.device), out=out)

    def finish_batch(self, y: Tensor) -> None:
        for accumulator, rows in zip(self._accumulators, self._rows):
            if rows.numel():
                accumulator.finish_batch(0, y.index_select(0, rows.to(y.device)))
        self._rows = ()

    def state(self) -> dict[str, Tensor]:
        """Keyed `selection.NAME`, `confirmation.NAME` (NAME: `StatsAccumulator.state`'s)."""
        return {f"{fold.value}.{name}": value for fold, accumulator in zip(Fold, self._accumulators)
                for name, value in accumulator.state().items()}

    def load_state(self, state: Mapping[str, Tensor]) -> None:
        for fold, accumulator in zip(Fold, self._accumulators):
            prefix = f"{fold.value}."
            mine = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if "mean_x" not in mine:
                raise RunDirError("--resume: the checkpoint's holdout moments are of another layout (written by "
                                  "another version of skn, or another backend?); --overwrite to start afresh")
            accumulator.load_state(mine)

    def snapshot(self) -> tuple[PearsonStats, PearsonStats]:
        return self._accumulators[0].snapshot(), self._accumulators[1].snapshot()


class FoldAccumulator:
    """Both folds' moments, fed by one pass (a skn.statistics.statistic.Statistic): per batch `add_layer(layer, first, acts
    [B, P, m], y)` for every layer (the first call routes the batch's rows by fold), then `finish_batch(first, y)`.
    `update_layer` None: the torch path's shifted sums (skn.statistics.fold_sums); else that update merges each fold's rows
    (`PerFoldMoments`, the Triton kernels)."""

    def __init__(
        self,
        confirm: Tensor,
        layers: int,
        positions: int,
        width: int,
        device: torch.device | str = "cpu",
        update_layer: LayerUpdate | None = None,
    ) -> None:
        if confirm.dim() != 1 or confirm.dtype != torch.bool:
            raise InternalError(f"the fold mask must be [N] bool, got {tuple(confirm.shape)} {confirm.dtype}")
        self._confirm = confirm.to("cpu")
        self._device = torch.device(device)
        self._moments: FoldSums | PerFoldMoments = (
            FoldSums(layers, positions, width, self._device) if update_layer is None
            else PerFoldMoments(layers, positions, width, self._device, update_layer))
        self._rows: dict[Fold, Tensor] = {}
        self._within: dict[Fold, Tensor] = {}
        self._merged: FoldStats | None = None  # after `merge` across ranks: the whole set's folds
        # example i's number within its own fold: the count of earlier examples of the same fold
        self._rank_in_fold = {
            Fold.CONFIRMATION: torch.cumsum(self._confirm.to(torch.int64), 0) - 1,
            Fold.SELECTION: torch.cumsum((~self._confirm).to(torch.int64), 0) - 1,
        }

    def begin(self, count: int, known: Tensor | None) -> None:
        if count != self._confirm.numel():
            raise InternalError(f"fold mask of {self._confirm.numel()} examples for a pass over {count}")

    def begin_batch(self, first: int, size: int) -> None:
        """Route the rows of examples first .. first + size - 1 by fold (`add_layer` does, on a batch's first layer;
        call it earlier to read `rows` and `within` before)."""
        if first < 0 or first + size > self._confirm.numel():
            raise InternalError(f"batch {first}..{first + size - 1} outside the {self._confirm.numel()} examples")
        mask = self._confirm[first : first + size]
        index = torch.arange(size)
        selection, confirmation = index[~mask], index[mask]
        self._moments.begin_batch(selection, confirmation)
        self._rows = {
            Fold.SELECTION: selection.to(self._device),
            Fold.CONFIRMATION: confirmation.to(self._device),
        }
        self._within = {
            fold: self._rank_in_fold[fold][first : first + size][fold_mask].to(self._device)
            for fold, fold_mask in ((Fold.SELECTION, ~mask), (Fold.CONFIRMATION, mask))
        }

    def rows(self, fold: Fold) -> Tensor:
        """[b] int64 on the statistics' device: the current batch's rows in `fold` (the seam for other accumulators)."""
        if not self._rows:
            raise InternalError("FoldAccumulator.rows before begin_batch")
        return self._rows[fold]

    def within(self, fold: Fold) -> Tensor:
        """[b] int64: the number (0 .. n_fold - 1, over the whole pass) of each of `rows(fold)` within its fold."""
        if not self._within:
            raise InternalError("FoldAccumulator.within before begin_batch")
        return self._within[fold]

    def fold_size(self, fold: Fold) -> int:
        held = int(self._confirm.sum())
        return held if fold is Fold.CONFIRMATION else int(self._confirm.numel()) - held

    def add_layer(self, layer: int, first: int, acts: Tensor, y: Tensor) -> None:
        """One layer's prompt activations [B, P, m] of the batch of examples first .. first + B - 1."""
        if not self._rows:
            self.begin_batch(first, int(acts.shape[0]))
        self._moments.add_layer(layer, acts, y)

    def finish_batch(self, first: int, y: Tensor) -> None:
        self._moments.finish_batch(y)
        self._rows = {}
        self._within = {}

    def state(self) -> dict[str, Tensor]:
        """Both folds' running state (skn.engine.pass_checkpoint), exactly."""
        return self._moments.state()

    def load_state(self, state: Mapping[str, Tensor]) -> None:
        """Back to `state()`'s value, between batches (a batch rolled back mid-way is routed afresh)."""
        self._moments.load_state(state)
        self._rows = {}
        self._within = {}

    def merge(self, ranks: Collective) -> None:
        """Each fold's moments merged over the ranks (skn.statistics.statistic); `snapshot` then returns them, with this
        rank's fold mask (the caller knows the whole set's)."""
        if not ranks.active:
            return
        selection, confirmation = self._moments.snapshot()
        self._merged = FoldStats(merge_across(selection, ranks), merge_across(confirmation, ranks), self._confirm.clone())

    def snapshot(self) -> FoldStats:
        if self._merged is not None:
            return self._merged
        selection, confirmation = self._moments.snapshot()
        return FoldStats(selection, confirmation, self._confirm.clone())


def fold_moment_bytes(shape: PassShape) -> int:
    """The memory plan's share of both folds' moments: 8 float64 sums of L P m (skn.statistics.fold_sums'
    shifts and sums of both folds), and one layer's batch, B P m, in float64 and in fold order (b each)."""
    return 8 * shape.cells * 8 + shape.batch_cells * (8 + shape.element_bytes)

