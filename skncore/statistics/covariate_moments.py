"""The co-moments s_xz of every cell with `--control`'s covariates, streamed over the pass, and their bytes;
skn.statistics.partial (whose docstring defines s_xz) turns them into the partial r.

Streaming (`CovariateAccumulator`, a skn.statistics.statistic.Statistic): the covariates are known before the pass
(metadata fields or token counts), so their means over every fold are too, and the co-moments of every
cell with each covariate need no running mean of z:

    s_xz = sum_i (x_i - s)(z_i - zbar)      for any per-cell shift s, since sum_i (z_i - zbar) = 0

s is the first batch's mean of each cell (a 1e6 offset costs nothing), and each layer's batch adds one
float64 [F q, B] x [B, P m] product (F folds: 1, or 2 with a holdout, each fold's rows weighted by its own
centred covariates, zero elsewhere). The full set's s_xz is the folds' Chan merge,
s_xz = s_a + s_b + (n_a n_b / n)(xbar_b - xbar_a)(zbar_b - zbar_a). Memory: 8 F q L P m bytes.
The covariates' own moments (S_zz, s_zy) are exact two-pass float64 sums once the metric is known.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from skn.errors import InternalError
from skn.statistics.statistic import Collective
from skn.statistics.stats import STAT_DTYPE, sum_recentred


class CovariateAccumulator:
    """Streams s_xz for every fold (see the module docstring); a skn.statistics.statistic.Statistic.

    z: [N, q] the covariates of the pass's examples; folds: [N] int64 fold number (0 .. F-1) of each."""

    def __init__(self, z: Tensor, folds: Tensor, n_folds: int, layers: int, positions: int, width: int,
                 device: torch.device | str = "cpu") -> None:
        self._device = torch.device(device)
        z = z.to("cpu", STAT_DTYPE)
        self._q = int(z.shape[1])
        self._n_folds = n_folds
        weights = torch.zeros(n_folds, self._q, int(z.shape[0]), dtype=STAT_DTYPE)
        for f in range(n_folds):
            member = folds == f
            if bool(member.any()):
                weights[f][:, member] = (z[member] - z[member].mean(dim=0)).T
        self._weights = weights.reshape(n_folds * self._q, -1).to(self._device)
        self._xz = torch.zeros(layers, n_folds * self._q, positions * width, dtype=STAT_DTYPE, device=self._device)
        self._shift = torch.zeros(layers, positions * width, dtype=STAT_DTYPE, device=self._device)
        self._shifted = [False] * layers
        # the weights applied so far, summed per layer (`merge` re-centres a rank's co-moments with them)
        self._used = torch.zeros(layers, n_folds * self._q, dtype=STAT_DTYPE, device=self._device)
        self._shape = (layers, positions, width)

    def begin(self, count: int, known: Tensor | None) -> None:
        if count != int(self._weights.shape[1]):
            raise InternalError(f"covariates of {self._weights.shape[1]} examples for a pass over {count}")

    def add_layer(self, layer: int, first: int, acts: Tensor, y: Tensor) -> None:
        batch = int(acts.shape[0])
        x = acts.detach().reshape(batch, -1).to(self._device, STAT_DTYPE)
        if not self._shifted[layer]:
            self._shift[layer] = x.mean(dim=0)
            self._shifted[layer] = True
        weights = self._weights[:, first : first + batch]
        self._xz[layer].addmm_(weights, x - self._shift[layer])
        self._used[layer] += weights.sum(dim=1)

    def finish_batch(self, first: int, y: Tensor) -> None:
        """Nothing to do per batch: the covariates' own moments are exact sums once the pass ends."""

    def state(self) -> dict[str, Tensor]:
        """The running co-moments, shifts and applied weights, exactly (skn.engine.pass_checkpoint, skn.engine.oom_retry)."""
        return {"xz": self._xz.clone(), "shift": self._shift.clone(), "used": self._used.clone(),
                "shifted": torch.tensor(self._shifted, dtype=torch.bool)}

    def load_state(self, state: Mapping[str, Tensor]) -> None:
        if tuple(state["xz"].shape) != tuple(self._xz.shape):
            raise InternalError(f"saved covariate co-moments of shape {tuple(state['xz'].shape)} for {tuple(self._xz.shape)}")
        self._xz.copy_(state["xz"])
        self._shift.copy_(state["shift"])
        self._used.copy_(state["used"])
        self._shifted = [bool(v) for v in state["shifted"].tolist()]

    def merge(self, ranks: Collective) -> None:
        """The whole set's co-moments from every rank's (skn.statistics.statistic), re-centred on rank 0's shifts and summed
        (each rank saw other examples, so the weights it applied do not sum to zero); afterwards only read."""
        if not ranks.active:
            return
        self._xz, base = sum_recentred(ranks, self._xz, self._shift, self._used)
        self._shift.copy_(base)

    def fold_xz(self, fold: int) -> Tensor:
        """[L, q, P, m] float64: fold `fold`'s co-moments."""
        layers, positions, width = self._shape
        part = self._xz[:, fold * self._q : (fold + 1) * self._q]
        return part.reshape(layers, self._q, positions, width).clone()


def covariate_bytes(covariates: int, cells: int, folds: bool) -> int:
    """skn.engine.memory's share: the float64 co-moments of every cell with each covariate (per fold)."""
    return 8 * covariates * cells * (2 if folds else 1)


__all__ = [
    "CovariateAccumulator",
    "covariate_bytes",
]
