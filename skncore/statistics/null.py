"""A family-wise permutation null, streamed beside the statistics: which top neurons are more than noise.

skn ranks the largest |r| among hundreds of thousands of (layer, position, neuron) cells over a few hundred
examples, so even a metric unrelated to the network has a large top |r|. The null answers "how large":
the metric is permuted R times (seeded), each permutation's co-moment with every cell is streamed in the
same pass as the real statistics, and at the end each permutation's maximum score over all neurons
(reduced exactly as the ranking reduces: `skn.ranking.rank.best_scores` with the run's Reduce, i.e. the best
position per neuron, then the maximum over neurons of |score|) gives R draws of the largest |r| that noise
produces. From them (Westfall & Young's max-statistic method):

    p_adjusted(neuron) = (1 + #{r : M_r >= |score|}) / (R + 1)       M_r = max |score| of permutation r
    threshold          = M_(k+1), the (k+1)-th largest M_r,  k = floor(alpha (R + 1)) - 1
    significant        = |score| > threshold   <=>   p_adjusted <= alpha

so the family-wise error rate is at most alpha (k + 1 <= alpha (R + 1) of the R + 1 exchangeable maxima,
the real one among them, can lie at or above the threshold). The per-cell p-value of a top neuron uses its
own cell's null instead of the maximum: p_cell = (1 + #{r : |r_r[l, k, i]| >= |score|}) / (R + 1), read at
the neuron's ranked position (it is not corrected for the number of cells).

Two permutation schemes, chosen by when the metric is known:

- whole set (label, field: the metric is known before the pass). Permutation pi_r of all N examples.
  With ybar the full-set mean, the permuted centred metric u_r(i) = y(pi_r(i)) - ybar sums to zero, so
  for any per-cell shift s
      C_r = sum_i (x_i - mean_x)(y(pi_r(i)) - ybar) = sum_i (x_i - s) u_r(i).
  s is the first batch's mean of each cell (close to mean_x, so large offsets such as 1e6 cost nothing).
- within batch (loss, confidence, correct, python:: the metric is known only after each batch). Each
  batch's metric is permuted among its own rows. Batch means are permutation-invariant, so every Chan
  cross term equals the unpermuted one and only the within-batch centred product changes:
      C_r = c_xy + sum_b sum_{i in b} (x_i - s)(v_r(i) - v_0(i)),   v(i) = y(pi_b(i)) - ybar_b,
  v_0 the identity permutation (row 0 of the product, so float32 rounding hits both alike). This
  restricted permutation test is exact under the null of independence when the examples' order (and so
  their grouping into batches) does not depend on the metric; the validation order is the data's own or
  the seeded split's.

Either way the cost is one [R(+1), B] x [B, P*m] float32 matmul per layer and batch (a tensor-core
product on a GPU, one BLAS call on a CPU; no loop over permutations) and the state is float32 co-moments
[L, R(+1), P*m]: 4 R L P m bytes, 6.9 MB for the stories model (17,200 cells, R = 100), 369 MB for
SmolLM2-135M (921,600 cells). m2_x and m2_y are those of the main float64 statistics (the permuted
metric has the same moments), so r_r = C_r / sqrt(m2_x m2_y). float32 sums over N terms carry a relative
error of about 1e-7 sqrt(N) of sqrt(m2_x m2_y), i.e. |r_r| is exact to ~1e-5 or better at N <= 10^4,
far below the spread of the null maxima (tests/statistics/test_null.py checks 1e-5 against a float64 brute force).

Permutations come from a torch.Generator seeded from the run seed, so a run is reproducible.

With covariates (`--control`, skn.statistics.partial) the null is Freedman and Lane's: the metric's residual on the
covariates, e = (y - ybar) - z_c gamma, is permuted instead of the metric. Whole set: e is known before the
pass, so the permuted rows are e(pi_r(i)) and C_r = sum_i (x_i - s) e(pi_r(i)). Within batch: gamma is known
only after the pass, but the permutations enter linearly, so the rows are the batch-centred metric and each
batch-centred covariate, each permuted alike ((1 + q)(R + 1) rows, 4 (1 + q)(R + 1) L P m bytes), and
    C_r = (c_xy - s_xz . gamma) + (Cy_r - Cy_0) - sum_j gamma_j (Cz_j,r - Cz_j,0).
Either way u_r = z_c^T P_r e = Y_r - G_r^T gamma comes from Y_r = sum_i z_c(i) y(pi_r(i)) and
G_r = sum_i z_c(pi_r(i)) z_c(i)^T, streamed in float64 ([R, q] and [R, q, q]; Y_r as Y_r - Y_0 from the
metric centred within the permuted rows, Y_0 = s_zy coming exactly from skn.statistics.partial), and skn.statistics.partial's
`permuted_partial` turns C_r and u_r into each permutation's partial r.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from skn.errors import InternalError, UsageError
from skn.statistics.partial import regression
from skn.statistics.scratch import ROW_BUFFER_BYTES, rows_within
from skn.statistics.statistic import Collective, PassShape
from skn.statistics.stats import STAT_DTYPE, sum_recentred

NULL_DTYPE = torch.float32
SEED_SALT = 0x5EED_9  # keeps the null's stream apart from the split's and the prompt's, which use the same seed


class PermutationMode(Enum):
    WHOLE_SET = "whole-set"  # metric known before the pass: permute all N examples
    WITHIN_BATCH = "within-batch"  # metric known after each batch: permute within each batch


@dataclass(frozen=True)
class NullConfig:
    permutations: int = 100  # R; 0 turns the null off
    alpha: float = 0.05
    seed: int = 0  # the permutations and the pass order; skn.run_probe sets it from the data's seed (--seed)


def exceedances_allowed(permutations: int, alpha: float) -> int:
    """k = floor(alpha (R + 1)) - 1: a neuron is significant when at most k null maxima reach its |score|."""
    return math.floor(alpha * (permutations + 1) + 1e-9) - 1


def check_null_config(config: NullConfig) -> None:
    if config.permutations < 0:
        raise UsageError(f"--null must not be negative, got {config.permutations}")
    if not 0.0 < config.alpha < 1.0:
        raise UsageError(f"--alpha must lie strictly between 0 and 1, got {config.alpha}")
    if config.permutations > 0 and exceedances_allowed(config.permutations, config.alpha) < 0:
        need = math.ceil(1.0 / config.alpha - 1.0 - 1e-9)
        raise UsageError(
            f"--null {config.permutations} permutations cannot reach --alpha {config.alpha}: "
            f"the smallest p-value is 1/{config.permutations + 1}; use --null {need} or more"
        )


def buffer_rows(buffer_bytes: int, layers: int, cells: int) -> int:
    """How many rows per layer the null buffers before one product (skn.statistics.scratch.rows_within): the
    [R(+1), B] x [B, P*m] product of a batch reads and writes the whole [R(+1), P*m] co-moment block to add B
    rows, so on a CPU the pass collects up to 64 rows first (a float32 copy of each, within `buffer_bytes`
    for all layers together); 0 = each batch's rows go in at once (what a GPU does: its memory is fast)."""
    return rows_within(buffer_bytes, 4 * layers * cells)


@dataclass(frozen=True)
class NullState:
    """What the pass streamed: float32 co-moments [L, R(+1), P*m] (row 0 is the identity when within batch)."""

    mode: PermutationMode
    comoments: Tensor
    positions: int
    width: int
    covariates: int = 0  # q of a Freedman-Lane null (skn.statistics.partial); 0 = the metric itself is permuted
    perm_y: Tensor = torch.zeros(0)  # [R, q] float64: Y_r - Y_0, Y_r = sum_i z_c(i) y(pi_r(i)), Y_0 = z_c^T y
    perm_z: Tensor = torch.zeros(0)  # [R, q, q] float64: G_r = sum_i z_c(pi_r(i)) z_c(i)^T

    @property
    def permutations(self) -> int:
        rows = int(self.comoments.shape[1]) // (1 + self.covariates if self.mode is PermutationMode.WITHIN_BATCH else 1)
        return rows - 1 if self.mode is PermutationMode.WITHIN_BATCH else rows


class NullAccumulator:
    """Streams the permuted co-moments; fed the same per-layer batches as the StatsAccumulator.

    The probe pass calls `begin(count, known)` once (known: the metric [N] when it is known before the
    pass, else None), then for every batch `add_layer(layer, first, acts [B, P, m], y [B])` for each layer
    and `finish_batch(first, y)`.
    """

    def __init__(self, layers: int, positions: int, width: int, config: NullConfig, device: torch.device | str = "cpu",
                 covariates: Tensor | None = None, buffer_bytes: int = 0) -> None:
        """`covariates` [n, q] (in this accumulator's numbering of the examples): permute the metric's residual
        on them (Freedman-Lane) instead of the metric. `buffer_bytes`: the row buffer's size (0 = none; see
        `buffer_rows`)."""
        if config.permutations < 1:
            raise InternalError("a NullAccumulator needs at least one permutation")
        self._layers, self._positions, self._width = layers, positions, width
        self._config = config
        self._device = torch.device(device)
        self._generator = torch.Generator().manual_seed(config.seed + SEED_SALT)
        self._mode: PermutationMode | None = None
        self._comoments = torch.empty(0)
        self._used = torch.empty(0)
        self._shift = torch.zeros(layers, positions * width, dtype=STAT_DTYPE, device=self._device)
        self._shift32 = self._shift.to(NULL_DTYPE)  # the same, rounded once, for float32 and narrower inputs
        self._shifted = [False] * layers
        self._whole: Tensor = torch.empty(0)  # [R, N] permuted centred metric (whole-set mode)
        self._batch_first = -1
        self._batch_weights: Tensor = torch.empty(0)
        self._orders: list[Tensor] = []  # the permutations drawn, in order (whole set: one [R, N]; else [R, B] per batch)
        q = 0 if covariates is None else int(covariates.shape[1])
        self._q = q
        self._zc = torch.zeros(0, 0, dtype=STAT_DTYPE)
        if covariates is not None and q:
            z = covariates.detach().to("cpu", STAT_DTYPE)
            self._zc = z - z.mean(dim=0)
        self._perm_y = torch.zeros(config.permutations, q, dtype=STAT_DTYPE)
        self._perm_z = torch.zeros(config.permutations, q, q, dtype=STAT_DTYPE)
        self._buffer_rows = buffer_rows(buffer_bytes, layers, positions * width)
        self._rows_buffer = torch.empty(0)  # [L, rows, P*m] float32: centred rows not yet in the co-moments
        self._weights_buffer = torch.empty(0)  # [L, R(+1), rows] float32: their weights
        self._filled = [0] * layers

    def _project(self, first: int, order: Tensor, centred: Tensor) -> None:
        """Advance Y_r - Y_0 and G_r (the module docstring) by the rows first .. first + B - 1 under `order`
        [R, B]; `centred`: their metric less its mean over the same rows (a permutation within them leaves
        that mean alone; without it an offset such as 1e6 would swamp Y_r's float64 sum)."""
        if not self._q:
            return
        zc = self._zc[first : first + int(order.shape[1])]
        self._perm_y += (centred[order] - centred.unsqueeze(0)) @ zc
        self._perm_z += torch.einsum("rbq,bk->rqk", zc[order], zc)

    def begin(self, count: int, known: Tensor | None) -> None:
        r = self._config.permutations
        if known is not None:
            self._mode = PermutationMode.WHOLE_SET
            y = known.detach().to("cpu", STAT_DTYPE)
            if int(y.numel()) != count:
                raise InternalError(f"{y.numel()} metric values for {count} examples")
            order = torch.argsort(torch.rand(r, count, generator=self._generator), dim=1)
            self._orders.append(order)
            if self._q:
                if int(self._zc.shape[0]) != count:
                    raise InternalError(f"covariates of {self._zc.shape[0]} examples for {count}")
                _, residual = regression(self._zc, y)  # Freedman-Lane: permute the metric's residual
                self._whole = residual[order].to(self._device, NULL_DTYPE)
                self._project(0, order, y - y.mean())
            else:
                self._whole = (y[order] - y.mean()).to(self._device, NULL_DTYPE)
            rows = r
        else:
            self._mode = PermutationMode.WITHIN_BATCH
            rows = (r + 1) * (1 + self._q)
        self._comoments = torch.zeros(self._layers, rows, self._positions * self._width, dtype=NULL_DTYPE, device=self._device)
        # the weights applied so far, summed per layer (skn.engine.distributed re-centres a rank's co-moments with them)
        self._used = torch.zeros(self._layers, rows, dtype=STAT_DTYPE, device=self._device)
        cells = self._positions * self._width
        self._rows_buffer = torch.empty(self._layers, self._buffer_rows, cells, dtype=NULL_DTYPE, device=self._device)
        self._weights_buffer = torch.empty(self._layers, rows, self._buffer_rows, dtype=NULL_DTYPE, device=self._device)
        self._filled = [0] * self._layers

    def _weights(self, first: int, y: Tensor) -> Tensor:
        """[R(+1), B]: the centred permuted metric of this batch's rows."""
        size = int(y.shape[0])
        if self._mode is PermutationMode.WHOLE_SET:
            return self._whole[:, first : first + size]
        if self._batch_first != first:
            values = y.detach().to("cpu", STAT_DTYPE)
            centred = values - values.mean()
            order = torch.argsort(torch.rand(self._config.permutations, size, generator=self._generator), dim=1)
            self._orders.append(order)
            blocks = [torch.cat([centred.unsqueeze(0), centred[order]])]
            if self._q:
                self._project(first, order, centred)
                zb = self._zc[first : first + size]
                for j in range(self._q):
                    column = zb[:, j] - zb[:, j].mean()
                    blocks.append(torch.cat([column.unsqueeze(0), column[order]]))
            rows = torch.cat(blocks)
            self._batch_weights = rows.to(self._device, NULL_DTYPE)
            self._batch_first = first
        return self._batch_weights

    def add_layer(self, layer: int, first: int, acts: Tensor, y: Tensor) -> None:
        self.add_rows(layer, first, acts, torch.arange(int(acts.shape[0]), device=acts.device), y)

    def add_rows(self, layer: int, first: int, acts: Tensor, rows: Tensor, y: Tensor) -> None:
        """The rows `rows` [b] of a batch's acts [B, P, m], with their metric y [b]; they are this accumulator's
        examples first .. first + b - 1 (skn.statistics.null.SelectedRows passes one fold's rows so, without a copy)."""
        if self._mode is None:
            raise InternalError("NullAccumulator.begin was not called")
        count = int(rows.numel())
        flat = acts.detach().reshape(int(acts.shape[0]), -1).to(self._device)
        rows = rows.to(flat.device)
        if not self._shifted[layer]:
            self._shift[layer] = flat.index_select(0, rows).to(STAT_DTYPE).mean(dim=0)
            self._shift32[layer] = self._shift[layer]
            self._shifted[layer] = True
        weights = self._weights(first, y)
        self._used[layer] += weights.to(STAT_DTYPE).sum(dim=1)
        if count > self._buffer_rows:
            self._flush(layer)
            self._comoments[layer].addmm_(weights, self._centred(layer, flat, rows, torch.empty(count, flat.shape[1],
                                                                                             dtype=NULL_DTYPE, device=flat.device)))
            return
        if self._filled[layer] + count > self._buffer_rows:
            self._flush(layer)
        start = self._filled[layer]
        self._centred(layer, flat, rows, self._rows_buffer[layer, start : start + count])
        self._weights_buffer[layer, :, start : start + count] = weights
        self._filled[layer] = start + count

    def _centred(self, layer: int, flat: Tensor, rows: Tensor, out: Tensor) -> Tensor:
        """The rows of flat [B, P*m] less the layer's shift, in float32, written into out [b, P*m]. The shift is
        subtracted before rounding to float32 when the input is float64 (a 1e6 offset would otherwise swamp the
        signal); model activations are float32 or narrower, exact in float32 anyway."""
        if flat.dtype == STAT_DTYPE:
            return torch.sub(flat.index_select(0, rows), self._shift[layer], out=out)
        if flat.dtype == NULL_DTYPE:
            torch.index_select(flat, 0, rows, out=out)
        else:
            out.copy_(flat.index_select(0, rows))
        return out.sub_(self._shift32[layer])

    def _flush(self, layer: int) -> None:
        """Add the buffered rows of `layer` to its co-moments: one product of [R(+1), rows] x [rows, P*m]."""
        filled = self._filled[layer]
        if filled:
            self._comoments[layer].addmm_(self._weights_buffer[layer, :, :filled], self._rows_buffer[layer, :filled])
            self._filled[layer] = 0

    def flush(self) -> None:
        """Every buffered row into the co-moments (before they are read)."""
        for layer in range(self._layers):
            self._flush(layer)

    def finish_batch(self, first: int, y: Tensor) -> None:
        """Nothing is left to do per batch: the weights of the next batch are drawn when it comes."""

    def orders(self) -> tuple[Tensor, ...]:
        """The permutations drawn so far (int64 row indices into the whole set, or into each batch)."""
        return tuple(self._orders)

    def state(self) -> dict[str, Tensor]:
        """What a resumed pass needs (skn.engine.pass_checkpoint): the co-moments, the shifts, the generator's
        state and the permutations drawn so far (concatenated along the examples, with their sizes)."""
        if self._mode is None:
            raise InternalError("NullAccumulator.begin was not called")
        self.flush()
        orders = torch.cat(self._orders, dim=1) if self._orders else torch.zeros(self._config.permutations, 0, dtype=torch.long)
        return {
            "mode": torch.tensor(0 if self._mode is PermutationMode.WHOLE_SET else 1, dtype=torch.int64),
            "comoments": self._comoments.clone(),
            "shift": self._shift.clone(),
            "used": self._used.clone(),
            "shifted": torch.tensor(self._shifted, dtype=torch.bool),
            "generator": self._generator.get_state(),
            "orders": orders,
            "order_sizes": torch.tensor([int(o.shape[1]) for o in self._orders], dtype=torch.int64),
        }

    def load_state(self, state: Mapping[str, Tensor]) -> None:
        """Continue from `state()`'s value; `begin` must have been called with the same pass's arguments."""
        if self._mode is None:
            raise InternalError("NullAccumulator.begin was not called")
        mode = PermutationMode.WHOLE_SET if int(state["mode"]) == 0 else PermutationMode.WITHIN_BATCH
        if mode is not self._mode or tuple(state["comoments"].shape) != tuple(self._comoments.shape):
            raise InternalError(f"saved null state ({mode.value}, {tuple(state['comoments'].shape)}) does not fit this pass "
                                f"({self._mode.value}, {tuple(self._comoments.shape)})")
        self._comoments.copy_(state["comoments"])
        self._filled = [0] * self._layers  # rows buffered after the state was taken are dropped with it
        self._shift.copy_(state["shift"])
        self._shift32.copy_(self._shift)
        self._used.copy_(state["used"])
        self._shifted = [bool(v) for v in state["shifted"].tolist()]
        self._generator.set_state(state["generator"].to(torch.uint8))
        sizes = [int(v) for v in state["order_sizes"].tolist()]
        self._orders = list(torch.split(state["orders"], sizes, dim=1)) if sizes else []
        self._batch_first = -1

    def merge(self, ranks: Collective) -> None:
        """The whole set's co-moments from every rank's (skn.statistics.statistic): each re-centred on rank 0's shift (every
        rank's are relative to its own), then summed; with covariates in the within-batch mode the projections
        Y_r - Y_0 and G_r of each rank's batches are summed too (the whole-set mode's are every rank's alike).
        Afterwards the accumulator is only read (`snapshot`)."""
        if not ranks.active:
            return
        if self._mode is None:
            raise InternalError("NullAccumulator.begin was not called")
        self.flush()
        self._comoments, base = sum_recentred(ranks, self._comoments, self._shift, self._used)
        self._shift.copy_(base)
        self._shift32.copy_(base)
        if self._q and self._mode is PermutationMode.WITHIN_BATCH:
            ranks.sum_(self._perm_y)
            ranks.sum_(self._perm_z)

    def snapshot(self) -> NullState:
        if self._mode is None:
            raise InternalError("NullAccumulator.begin was not called")
        self.flush()
        return NullState(self._mode, self._comoments.clone(), self._positions, self._width, self._q,
                         self._perm_y.clone(), self._perm_z.clone())


class SelectedRows:
    """A `NullAccumulator` fed only the examples where `keep` is True, renumbered 0..n-1, so that the null is
    that of the selection fold when the neurons are ranked on it (skn.statistics.folds): the family-wise threshold must
    come from the examples that did the choosing. Batches holding none of them are skipped."""

    def __init__(self, inner: NullAccumulator, keep: Tensor) -> None:
        self.inner = inner
        self._keep = keep.to(torch.bool).cpu()
        self._before = torch.cat([torch.zeros(1, dtype=torch.long), self._keep.long().cumsum(0)])  # kept before i

    def begin(self, count: int, known: Tensor | None) -> None:
        if count != self._keep.numel():
            raise InternalError(f"fold mask of {self._keep.numel()} examples for a pass over {count}")
        self.inner.begin(int(self._keep.sum()), None if known is None else known[self._keep.to(known.device)])

    def _rows(self, first: int, size: int) -> Tensor:
        return self._keep[first : first + size].nonzero().flatten()

    def add_layer(self, layer: int, first: int, acts: Tensor, y: Tensor) -> None:
        rows = self._rows(first, acts.shape[0])
        if rows.numel():
            self.inner.add_rows(layer, int(self._before[first]), acts, rows, y.index_select(0, rows.to(y.device)))

    def state(self) -> dict[str, Tensor]:
        return self.inner.state()

    def load_state(self, state: Mapping[str, Tensor]) -> None:
        self.inner.load_state(state)

    def finish_batch(self, first: int, y: Tensor) -> None:
        rows = self._rows(first, y.shape[0])
        if rows.numel():
            self.inner.finish_batch(int(self._before[first]), y.index_select(0, rows.to(y.device)))

    def merge(self, ranks: Collective) -> None:
        self.inner.merge(ranks)


def null_bytes(shape: PassShape, permutations: int, covariates: int = 0, metric_after_pass: bool = False) -> int:
    """The memory plan's share of the null with R `permutations` (0: off): float32 co-moments, 4 (R + 1) L P m,
    and the reduction at the end, about three float64 copies of R L P m; on a CPU the row buffer
    (`buffer_rows`: float32 rows of L P m, up to 64 within 64 MiB, never more than the N examples); with q
    `covariates` the float64 partial r of one chunk of permutations (at most 2^24 cells), and with a metric
    known after the pass the Freedman-Lane null's q more blocks of permuted rows, 4 q (R + 1) L P m."""
    if not permutations:
        return 0
    cells = shape.cells
    total = (4 * (permutations + 1) + 24 * permutations) * cells
    if shape.cpu:
        rows = buffer_rows(ROW_BUFFER_BYTES, shape.layers, shape.positions * shape.width)  # what the pass buffers
        total += (min(rows, shape.examples) if shape.examples else rows) * 4 * cells
    if covariates:
        total += 2 * 8 * min(cells * permutations, 1 << 24)
        if metric_after_pass:
            total += 4 * covariates * (permutations + 1) * cells
    return total

