"""Streaming Pearson statistics between every neuron activation and the metric.

For each layer l, prompt position k and neuron i we keep, over the examples seen so far,

    count              n
    mean_x[l,k,i]      mean of the activation x
    m2_x[l,k,i]        sum (x - mean_x)^2
    c_xy[l,k,i]        sum (x - mean_x)(y - mean_y)
    mean_y, m2_y       the same for the metric y (shared by every neuron)

A batch is reduced to its own centred moments and merged with Chan, Golub & LeVeque's formula

    n = n_a + n_b,  d = mean_b - mean_a,  mean = mean_a + d * n_b / n
    M2 = M2_a + M2_b + d^2 * n_a n_b / n,  C = C_a + C_b + d_x d_y * n_a n_b / n

in float64, so a large offset (activations around 1e6) costs no accuracy. Only one batch of
activations is ever held; `merge` combines two partial results (resume, several processes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from skn.errors import InternalError
from skn.statistics.scratch import Scratch
from skn.statistics.statistic import Collective, PassShape

STAT_DTYPE = torch.float64


@dataclass(frozen=True)
class PearsonStats:
    """Moments of activations [L, P, m] against one metric. Tensors are float64 and never mutated."""

    count: int
    mean_x: Tensor
    m2_x: Tensor
    c_xy: Tensor
    mean_y: float
    m2_y: float

    @property
    def shape(self) -> tuple[int, int, int]:
        layers, positions, width = self.mean_x.shape
        return int(layers), int(positions), int(width)


def empty_stats(layers: int, positions: int, width: int, device: torch.device | str = "cpu") -> PearsonStats:
    zeros = torch.zeros(layers, positions, width, dtype=STAT_DTYPE, device=device)
    return PearsonStats(0, zeros, zeros.clone(), zeros.clone(), 0.0, 0.0)


def merge_parts(parts: list[PearsonStats]) -> PearsonStats:
    """`merge` over several sets' moments, in order."""
    merged = parts[0]
    for part in parts[1:]:
        merged = merge(merged, part)
    return merged


def merge_across(stats: PearsonStats, ranks: Collective) -> PearsonStats:
    """Chan's merge of every rank's moments, in rank order (the same result on every rank)."""
    if not ranks.active:
        return stats
    scalars = torch.tensor([float(stats.count), stats.mean_y, stats.m2_y], dtype=STAT_DTYPE)
    gathered = [ranks.all_gather(t) for t in (scalars, stats.mean_x, stats.m2_x, stats.c_xy)]
    return merge_parts([
        PearsonStats(int(gathered[0][k][0]), gathered[1][k], gathered[2][k], gathered[3][k],
                     float(gathered[0][k][1]), float(gathered[0][k][2]))
        for k in range(len(gathered[0]))
    ])


def recentred(comoments: Tensor, shift: Tensor, used: Tensor, base: Tensor) -> Tensor:
    """Shifted co-moments [L, W, C] (sum over rows of w (x - s), per layer) moved to the shift `base` [L, C]: they
    summed (x - s) w, so sum (x - base) w = C + (s - base) U, U [L, W] the sum of the weights applied. Computed
    in float64 a layer at a time, returned in the co-moments' dtype (the null's and the covariates' merge)."""
    out = torch.empty_like(comoments)
    for layer in range(int(comoments.shape[0])):
        delta = (shift[layer].to(STAT_DTYPE) - base[layer].to(STAT_DTYPE)).unsqueeze(0)
        out[layer] = (comoments[layer].to(STAT_DTYPE) + used[layer].to(STAT_DTYPE).unsqueeze(1) * delta).to(comoments.dtype)
    return out


def sum_recentred(ranks: Collective, comoments: Tensor, shift: Tensor, used: Tensor) -> tuple[Tensor, Tensor]:
    """Every rank's shifted co-moments (see `recentred`) moved to rank 0's shift and summed: (the sum, that shift).
    Re-centred here, then summed by one all-reduce: a rank never holds more than one set of co-moments."""
    base = shift.to(STAT_DTYPE, copy=True)  # a copy: the broadcast overwrites it
    ranks.broadcast_(base, 0)
    local = recentred(comoments, shift, used, base)
    ranks.sum_(local)
    return local, base


def merge(a: PearsonStats, b: PearsonStats) -> PearsonStats:
    """Chan's parallel merge of the statistics of two disjoint sets of examples."""
    if a.shape != b.shape:
        raise InternalError(f"cannot merge statistics of shapes {a.shape} and {b.shape}")
    if a.count == 0:
        return b
    if b.count == 0:
        return a
    n = a.count + b.count
    weight = a.count * b.count / n
    delta_x = b.mean_x.to(a.mean_x.device) - a.mean_x
    delta_y = b.mean_y - a.mean_y
    return PearsonStats(
        count=n,
        mean_x=a.mean_x + delta_x * (b.count / n),
        m2_x=a.m2_x + b.m2_x.to(a.m2_x.device) + delta_x.square() * weight,
        c_xy=a.c_xy + b.c_xy.to(a.c_xy.device) + delta_x * (delta_y * weight),
        mean_y=a.mean_y + delta_y * b.count / n,
        m2_y=a.m2_y + b.m2_y + delta_y * delta_y * weight,
    )


@dataclass(frozen=True)
class LayerMoments:
    """What a statistics update merges one layer's batch into: the running moments mean_x, m2_x, c_xy
    ([P, m] float64 views, updated in place) of the `count` examples seen before this batch, whose metric
    mean is `mean_y` (the metric moments are advanced once per batch, by `merge_metric`)."""

    mean_x: Tensor
    m2_x: Tensor
    c_xy: Tensor
    count: int
    mean_y: float


def update_layer_torch_(moments: LayerMoments, acts: Tensor, y: Tensor) -> None:
    """Merge one batch of one layer into its running moments, in place (the torch reference).
    acts: [B, P, m] in any float dtype; y: [B] float64."""
    _merge_centred_(moments, acts.to(STAT_DTYPE, copy=True), y)


def _merge_centred_(moments: LayerMoments, x: Tensor, y: Tensor) -> None:
    """The arithmetic of `update_layer_torch_` on x, a float64 copy of the batch that it overwrites."""
    batch = x.shape[0]
    mean_b = x.mean(dim=0)
    y = y.to(device=x.device, dtype=STAT_DTYPE)
    mean_yb = y.mean()
    dy = y - mean_yb
    # centred before the product: sum_b dy_b x_b would lose |x| * |sum_b dy_b| to cancellation
    # (tests/statistics/test_stats.py::test_large_offset_keeps_accuracy fails that way)
    dx = x.sub_(mean_b).reshape(batch, -1)
    mean_x, m2_x, c_xy, count, mean_y = moments.mean_x, moments.m2_x, moments.c_xy, moments.count, moments.mean_y
    n = count + batch
    weight = count * batch / n
    delta_x = mean_b - mean_x
    delta_y = float(mean_yb) - mean_y  # a scalar (on a GPU this waits for y's mean: the torch path only)
    # Chan's merge in place, with delta_x the one temporary
    c_xy.add_((dy @ dx).reshape(c_xy.shape)).add_(delta_x, alpha=delta_y * weight)
    m2_x.add_(dx.square_().sum(dim=0).reshape(m2_x.shape)).addcmul_(delta_x, delta_x, value=weight)
    mean_x.add_(delta_x, alpha=batch / n)


class TorchLayerUpdate:
    """`update_layer_torch_` with one float64 workspace kept between calls (skn.statistics.scratch)."""

    def __init__(self) -> None:
        self._work = Scratch()

    def __call__(self, moments: LayerMoments, acts: Tensor, y: Tensor) -> None:
        x = self._work.take(tuple(acts.shape), STAT_DTYPE, acts.device).copy_(acts)
        _merge_centred_(moments, x, y)


def merge_metric(count: int, mean_y: float, m2_y: float, y: Tensor) -> tuple[int, float, float]:
    """Advance (count, mean_y, m2_y) by one batch of metric values."""
    values = y.detach().to("cpu", STAT_DTYPE)
    batch = int(values.numel())
    mean_b = float(values.mean())
    m2_b = float((values - mean_b).square().sum())
    n = count + batch
    delta = mean_b - mean_y
    return n, mean_y + delta * batch / n, m2_y + m2_b + delta * delta * count * batch / n


LayerUpdate = Callable[[LayerMoments, Tensor, Tensor], None]
"""(moments, acts [B,P,m], y [B]) -> None, updating the moments' tensors in place."""


class StatsAccumulator:
    """The mutable running statistics of one probe pass (a skn.statistics.statistic.Statistic); `snapshot()` returns the value.

    `update_layer` is the backend: the torch path (`TorchLayerUpdate`, any device) or the
    Triton launcher from `skn.kernels`. Both see the same state and must give the same numbers.
    """

    def __init__(
        self,
        layers: int,
        positions: int,
        width: int,
        device: torch.device | str = "cpu",
        update_layer: LayerUpdate | None = None,  # None: the torch path (a TorchLayerUpdate of its own)
    ) -> None:
        start = empty_stats(layers, positions, width, device)
        self._mean_x = start.mean_x
        self._m2_x = start.m2_x
        self._c_xy = start.c_xy
        self._count = 0
        self._mean_y = 0.0
        self._m2_y = 0.0
        self._update_layer = update_layer if update_layer is not None else TorchLayerUpdate()

    @property
    def count(self) -> int:
        return self._count

    def begin(self, count: int, known: Tensor | None) -> None:
        """Nothing to prepare: the moments start empty."""

    def add_layer(self, layer: int, first: int, acts: Tensor, y: Tensor) -> None:
        """Merge one layer's activations [B, P, m] of the current batch; call `finish_batch` after all layers."""
        self._update_layer(self.moments(layer), acts, y)

    def moments(self, layer: int) -> LayerMoments:
        """One layer's running moments before the current batch, for an update to merge into in place
        (the in-pass updates read the prompt rows straight from a [B, T, m] tensor)."""
        return LayerMoments(self._mean_x[layer], self._m2_x[layer], self._c_xy[layer], self._count, self._mean_y)

    def finish_batch(self, first: int, y: Tensor) -> None:
        self._count, self._mean_y, self._m2_y = merge_metric(self._count, self._mean_y, self._m2_y, y)

    def add_batch(self, acts: Tensor, y: Tensor) -> None:
        """Merge a whole batch: acts [L, B, P, m], y [B]."""
        if acts.shape[0] != self._mean_x.shape[0] or acts.shape[2:] != self._mean_x.shape[1:]:
            raise InternalError(f"activations of shape {tuple(acts.shape)} do not fit statistics {tuple(self._mean_x.shape)}")
        if acts.shape[1] != y.shape[0]:
            raise InternalError(f"{acts.shape[1]} activations rows but {y.shape[0]} metric values")
        for layer in range(acts.shape[0]):
            self.add_layer(layer, self._count, acts[layer], y)
        self.finish_batch(self._count, y)

    def snapshot(self) -> PearsonStats:
        return PearsonStats(
            self._count, self._mean_x.clone(), self._m2_x.clone(), self._c_xy.clone(), self._mean_y, self._m2_y
        )

    def state(self) -> dict[str, Tensor]:
        """The running moments as tensors (skn.engine.pass_checkpoint): exact, the scalars as 0-d float64/int64."""
        return {
            "count": torch.tensor(self._count, dtype=torch.int64),
            "mean_x": self._mean_x.clone(),
            "m2_x": self._m2_x.clone(),
            "c_xy": self._c_xy.clone(),
            "mean_y": torch.tensor(self._mean_y, dtype=STAT_DTYPE),
            "m2_y": torch.tensor(self._m2_y, dtype=STAT_DTYPE),
        }

    def load_state(self, state: Mapping[str, Tensor]) -> None:
        """Continue from `state()`'s value (the shapes must be this accumulator's)."""
        for name, target in (("mean_x", self._mean_x), ("m2_x", self._m2_x), ("c_xy", self._c_xy)):
            source = state[name]
            if tuple(source.shape) != tuple(target.shape):
                raise InternalError(f"saved {name} of shape {tuple(source.shape)} for statistics {tuple(target.shape)}")
            target.copy_(source)
        self._count = int(state["count"])
        self._mean_y = float(state["mean_y"])
        self._m2_y = float(state["m2_y"])

    def merge(self, ranks: Collective) -> None:
        """Become the merge of every rank's moments (skn.statistics.statistic)."""
        if not ranks.active:
            return
        merged = merge_across(self.snapshot(), ranks)
        self.load_state({"count": torch.tensor(merged.count, dtype=torch.int64), "mean_x": merged.mean_x,
                         "m2_x": merged.m2_x, "c_xy": merged.c_xy, "mean_y": torch.tensor(merged.mean_y, dtype=STAT_DTYPE),
                         "m2_y": torch.tensor(merged.m2_y, dtype=STAT_DTYPE)})


def correlation(stats: PearsonStats) -> Tensor:
    """Pearson r [L, P, m] float32 on the CPU; NaN where undefined (constant activation, fewer than 2 examples)."""
    m2_x = stats.m2_x.detach().to("cpu", STAT_DTYPE)
    c_xy = stats.c_xy.detach().to("cpu", STAT_DTYPE)
    if stats.count < 2 or not stats.m2_y > 0.0:
        return torch.full(tuple(m2_x.shape), math.nan, dtype=torch.float32)
    denom = torch.sqrt(m2_x * stats.m2_y)
    r = torch.where(m2_x > 0, c_xy / denom, torch.full_like(c_xy, math.nan))
    return r.clamp(-1.0, 1.0).to(torch.float32)


def moment_bytes(shape: PassShape) -> int:
    """The memory plan's share of the moments: 3 float64 sums of L P m, and the float64 workspace of one
    layer's batch, B P m."""
    return 3 * shape.cells * 8 + shape.batch_cells * 8

