"""Both holdout folds' moments from shifted sums: one set of tensor operations per layer and batch (the torch path).

For fold f, layer l and cell c (a prompt position and a neuron) the pass adds up, in float64,

    n,   S_x = sum d,   S_xx = sum d^2,   S_xy = sum d e,   S_y = sum e,      d = x - K,   e = y - k

where the shifts K [c] and k are the values of the fold's first example (fixed once the fold has rows), and
the moments are read off when asked for (`snapshot`):

    mean_x = K + S_x / n,   M2_x = S_xx - S_x^2 / n,   C_xy = S_xy - S_x S_y / n.

The metric's own mean and M2 are merged per batch as in skn.statistics.stats (`merge_metric`).

Why: a batch of both folds then costs, per layer, one copy of its rows in fold order (none when they are in
order already), one subtraction of each fold's shift into a float64 workspace, and two matrix products that add
to running sums in place: [4, B] x [B, P m] for S_x and S_xy of both folds, [2, B] x [B, P m] for S_xx. Chan's
merge per fold (skn.statistics.stats, kept for the Triton backend) selects each fold's rows, converts them, takes their
mean, centres, multiplies, squares, sums and merges five [P m] vectors, per fold: about twice the time on a
CPU, where these passes over memory are what the statistics cost (bench/README.md, issue #11).

Accuracy: K is one of the fold's own values, so |mean - K| <= max_i |x_i - mean| <= sqrt(M2), S_xx <= (n + 1) M2,
and the cancellation in S_xx - S_x^2 / n costs at most a factor of n + 1 over float64's eps: about 2e-11 relative
at n = 100,000, the order of summing n numbers at all (the same bound holds for C_xy against sqrt(M2_x M2_y)).
A cell constant on a fold has d = 0 exactly, so its M2 is exactly 0 and its r NaN, as with Chan's merge.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from skn.errors import InternalError, RunDirError
from skn.statistics.scratch import Scratch
from skn.statistics.stats import STAT_DTYPE, PearsonStats, empty_stats, merge_metric

FOLD_NAMES = ("selection", "confirmation")  # fold 0, fold 1: skn.statistics.folds.Fold's values, in its order
FOLDS = len(FOLD_NAMES)
STATE_NAMES = ("count", "shift_x", "sum_x", "sum_xx", "sum_xy", "shift_y", "sum_y", "mean_y", "m2_y")


class FoldSums:
    """The shifted sums of both folds over one pass. Per batch: `begin_batch(rows of each fold)`, then
    `add_layer(layer, acts [B, P, m], y [B])` for every layer, then `finish_batch(y)`."""

    def __init__(self, layers: int, positions: int, width: int, device: torch.device | str = "cpu") -> None:
        self._shape = (layers, positions, width)
        self._device = torch.device(device)
        cells = positions * width
        self._shift_x = torch.zeros(layers, FOLDS, cells, dtype=STAT_DTYPE, device=self._device)
        # per layer: S_x and S_xy of the selection fold, then of the confirmation fold (the rows of one product)
        self._sums = torch.zeros(layers, 2 * FOLDS, cells, dtype=STAT_DTYPE, device=self._device)
        self._squares = torch.zeros(layers, FOLDS, cells, dtype=STAT_DTYPE, device=self._device)
        self._count = [0] * FOLDS
        self._shift_y = [0.0] * FOLDS
        self._sum_y = [0.0] * FOLDS
        self._mean_y = [0.0] * FOLDS
        self._m2_y = [0.0] * FOLDS
        self._order = torch.empty(0, dtype=torch.int64)  # both folds' rows, selection first
        self._in_order = True  # the batch's rows are in fold order already: no copy
        self._spans: tuple[tuple[int, int], ...] = ()  # each fold's rows within the fold-ordered batch
        self._weights: tuple[Tensor, Tensor] | None = None  # [4, B] and [2, B], built from the batch's metric
        self._ordered = Scratch()  # the batch's rows in fold order
        self._work = Scratch()  # the float64 differences d

    def begin_batch(self, selection: Tensor, confirmation: Tensor) -> None:
        """The current batch's rows (int64 indices into its B rows, ascending) of each fold."""
        b_sel, b_conf = int(selection.numel()), int(confirmation.numel())
        self._spans = ((0, b_sel), (b_sel, b_sel + b_conf))
        order = torch.cat([selection.to("cpu"), confirmation.to("cpu")])
        self._in_order = bool(torch.equal(order, torch.arange(b_sel + b_conf)))
        self._order = order.to(self._device)
        self._weights = None

    def add_layer(self, layer: int, acts: Tensor, y: Tensor) -> None:
        """One layer's prompt activations [B, P, m] of the current batch (any float dtype), y [B] its metric."""
        batch = int(acts.shape[0])
        if not self._spans or self._spans[-1][1] != batch:
            raise InternalError(f"fold sums: {batch} rows, but begin_batch announced {self._spans[-1][1] if self._spans else 0}")
        flat = acts.detach().reshape(batch, -1)
        if not self._in_order:
            flat = torch.index_select(flat, 0, self._order.to(flat.device),
                                      out=self._ordered.take(tuple(flat.shape), flat.dtype, flat.device))
        weights, masks = self._batch_weights(y)
        d = self._work.take(tuple(flat.shape), STAT_DTYPE, flat.device)
        for fold, (low, high) in enumerate(self._spans):
            if high == low:
                continue
            shift = self._shift_x[layer, fold]
            if self._count[fold] == 0:  # the fold's first example is its shift
                shift.copy_(flat[low])
            torch.sub(flat[low:high], shift, out=d[low:high])
        self._sums[layer].addmm_(weights, d)
        self._squares[layer].addmm_(masks, d.square_())

    def _batch_weights(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """[4, B] (ones, then e, on each fold's rows) and [2, B] (ones on each fold's rows), once per batch."""
        if self._weights is not None:
            return self._weights
        values = y.detach().to(self._device, STAT_DTYPE).index_select(0, self._order)
        batch = int(values.numel())
        weights = torch.zeros(2 * FOLDS, batch, dtype=STAT_DTYPE, device=self._device)
        masks = torch.zeros(FOLDS, batch, dtype=STAT_DTYPE, device=self._device)
        for fold, (low, high) in enumerate(self._spans):
            if high == low:
                continue
            if self._count[fold] == 0:
                self._shift_y[fold] = float(values[low])
            weights[2 * fold, low:high] = 1.0
            weights[2 * fold + 1, low:high] = values[low:high] - self._shift_y[fold]
            masks[fold, low:high] = 1.0
        self._weights = (weights, masks)
        return self._weights

    def finish_batch(self, y: Tensor) -> None:
        """After every layer's `add_layer` (which took the metric's shift of a fold's first batch)."""
        values = y.detach().to(self._device, STAT_DTYPE).index_select(0, self._order)
        for fold, (low, high) in enumerate(self._spans):
            if high == low:
                continue
            mine = values[low:high]
            self._sum_y[fold] += float((mine - self._shift_y[fold]).sum())
            self._count[fold], self._mean_y[fold], self._m2_y[fold] = merge_metric(
                self._count[fold], self._mean_y[fold], self._m2_y[fold], mine)
        self._spans, self._weights = (), None

    def snapshot(self) -> tuple[PearsonStats, PearsonStats]:
        """(selection, confirmation): each fold's moments read off its sums (new tensors)."""
        return self._fold_stats(0), self._fold_stats(1)

    def _fold_stats(self, fold: int) -> PearsonStats:
        n = self._count[fold]
        if n == 0:
            return empty_stats(*self._shape, device=self._device)
        s_x = self._sums[:, 2 * fold]
        mean_x = self._shift_x[:, fold] + s_x / n
        m2_x = self._squares[:, fold] - s_x.square() / n
        c_xy = self._sums[:, 2 * fold + 1] - s_x * (self._sum_y[fold] / n)
        return PearsonStats(n, mean_x.reshape(self._shape), m2_x.reshape(self._shape), c_xy.reshape(self._shape),
                            self._mean_y[fold], self._m2_y[fold])

    def state(self) -> dict[str, Tensor]:
        """The running sums, exactly (skn.engine.pass_checkpoint), keyed `selection.NAME`, `confirmation.NAME`."""
        out: dict[str, Tensor] = {}
        for fold, prefix in enumerate(FOLD_NAMES):
            out[f"{prefix}.count"] = torch.tensor(self._count[fold], dtype=torch.int64)
            for name, tensor in self._fold_tensors(fold):
                out[f"{prefix}.{name}"] = tensor.clone()
            for name, values in self._fold_scalars():
                out[f"{prefix}.{name}"] = torch.tensor(values[fold], dtype=STAT_DTYPE)
        return out

    def load_state(self, state: Mapping[str, Tensor]) -> None:
        """Continue from `state()`'s value. A state of another layout (an older skn's checkpoint) is refused."""
        missing = [f"{prefix}.{name}" for prefix in FOLD_NAMES for name in STATE_NAMES if f"{prefix}.{name}" not in state]
        if missing:
            raise RunDirError(f"--resume: the checkpoint's holdout moments lack {missing[0]} (written by another "
                              "version of skn?); --overwrite to start afresh")
        for fold, prefix in enumerate(FOLD_NAMES):
            for name, target in self._fold_tensors(fold):
                source = state[f"{prefix}.{name}"]
                if tuple(source.shape) != tuple(target.shape):
                    raise RunDirError(f"--resume: the checkpoint's {prefix}.{name} has shape {tuple(source.shape)}, "
                                      f"this pass needs {tuple(target.shape)}; --overwrite to start afresh")
                target.copy_(source)
            self._count[fold] = int(state[f"{prefix}.count"])
            for name, values in self._fold_scalars():
                values[fold] = float(state[f"{prefix}.{name}"])

    def _fold_tensors(self, fold: int) -> tuple[tuple[str, Tensor], ...]:
        """A fold's [L, P m] running tensors by name (views: loading writes through them)."""
        return (("shift_x", self._shift_x[:, fold]), ("sum_x", self._sums[:, 2 * fold]),
                ("sum_xx", self._squares[:, fold]), ("sum_xy", self._sums[:, 2 * fold + 1]))

    def _fold_scalars(self) -> tuple[tuple[str, list[float]], ...]:
        return (("shift_y", self._shift_y), ("sum_y", self._sum_y), ("mean_y", self._mean_y), ("m2_y", self._m2_y))
