"""The permutation null's verdict on a run's ranking: each permutation's largest |score| over all neurons, the
family-wise threshold, and each top neuron's adjusted and per-cell p (Westfall & Young's max-statistic method;
the arithmetic and its exactness are described in skn.statistics.null, which streams the co-moments this reads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from skn.errors import InternalError
from skn.statistics.null import NULL_DTYPE, NullState, PermutationMode, exceedances_allowed
from skn.statistics.partial import CovariateStats, permuted_partial, residuals
from skn.ranking.rank import Neuron, Reduce, best_scores
from skn.statistics.stats import STAT_DTYPE, PearsonStats


@dataclass(frozen=True)
class NullResult:
    """The null's verdict on one run's ranking (per-neuron tuples in the ranking's order)."""

    mode: PermutationMode
    alpha: float
    max_abs_r: Tensor  # [R] float64: each permutation's largest |score| over all neurons
    threshold: float  # a neuron is significant when its |score| exceeds this
    p_adjusted: tuple[float, ...]  # Westfall-Young max-statistic p; NaN for an undefined score
    p_cell: tuple[float, ...]  # the neuron's own cell's permutation p (uncorrected)
    significant: tuple[bool, ...]

    @property
    def permutations(self) -> int:
        return int(self.max_abs_r.numel())

    @property
    def n_significant(self) -> int:
        return sum(self.significant)


CHUNK_ELEMENTS = 1 << 24  # permutations are reduced a chunk at a time: at most this many r values (64 MB) live at once


def _permuted_partial(state: NullState, stats: PearsonStats, cov: CovariateStats, start: int, stop: int) -> Tensor:
    """Freedman-Lane: the permuted partial r of permutations start..stop (the module docstring)."""
    layers = stats.shape[0]
    gamma = residuals(stats, cov).gamma
    device = state.comoments.device
    if state.mode is PermutationMode.WHOLE_SET:
        c_perm = state.comoments[:, start:stop].to(STAT_DTYPE)
    else:
        rows = state.permutations + 1
        comoments = state.comoments
        s_xz = cov.xz.to(device, STAT_DTYPE).reshape(layers, cov.q, -1)
        base = stats.c_xy.to(device, STAT_DTYPE).reshape(layers, -1) - torch.einsum("lqc,q->lc", s_xz, gamma.to(device))
        c_perm = base.unsqueeze(1) + (comoments[:, start + 1 : stop + 1] - comoments[:, :1]).to(STAT_DTYPE)
        for j in range(cov.q):
            block = comoments[:, (j + 1) * rows : (j + 2) * rows]
            c_perm -= float(gamma[j]) * (block[:, start + 1 : stop + 1] - block[:, :1]).to(STAT_DTYPE)
    # Y_0 = s_zy exactly (the covariates' two-pass moments), so u_r = (Y_r - Y_0) + s_zy - G_r^T gamma
    u = state.perm_y[start:stop] + cov.zy.to("cpu") - torch.einsum("rqk,q->rk", state.perm_z[start:stop], gamma.to("cpu"))
    return permuted_partial(c_perm, u, stats, cov)


def permuted_correlations(state: NullState, stats: PearsonStats, start: int = 0, stop: int = -1,
                          covariates: CovariateStats | None = None) -> Tensor:
    """[R', L, P, m] float32: the r of permutations start..stop (all by default) in every cell, NaN where
    the real r is undefined (constant activation); with covariates (a Freedman-Lane state) the partial r."""
    stop = state.permutations if stop < 0 else stop
    if state.covariates:
        if covariates is None or covariates.q != state.covariates:
            raise InternalError("a Freedman-Lane null needs the covariates' moments of the examples it permuted")
        return _permuted_partial(state, stats, covariates, start, stop)
    layers, positions, width = stats.shape
    device = state.comoments.device
    m2_x = stats.m2_x.detach().to(device, STAT_DTYPE).reshape(layers, -1)
    if stats.count < 2 or not stats.m2_y > 0.0:
        inverse = torch.full(tuple(m2_x.shape), math.nan, dtype=NULL_DTYPE, device=device)
    else:
        inverse = torch.where(m2_x > 0, torch.rsqrt(m2_x * stats.m2_y), torch.full_like(m2_x, math.nan)).to(NULL_DTYPE)
    if state.mode is PermutationMode.WHOLE_SET:
        c = state.comoments[:, start:stop]
    else:
        c_xy = stats.c_xy.detach().to(device, NULL_DTYPE).reshape(layers, 1, -1)
        c = c_xy + (state.comoments[:, start + 1 : stop + 1] - state.comoments[:, :1])
    r = (c * inverse.unsqueeze(1)).clamp(-1.0, 1.0)  # [L, R', P*m]
    return r.transpose(0, 1).reshape(stop - start, layers, positions, width)


def null_result(state: NullState, stats: PearsonStats, neurons: tuple[Neuron, ...], reduce: Reduce, alpha: float,
                covariates: CovariateStats | None = None) -> NullResult:
    """The R null maxima (reduced like the ranking), the threshold, and each ranked neuron's p-values."""
    layers, positions, width = stats.shape
    if (state.positions, state.width) != (positions, width) or state.comoments.shape[0] != layers:
        raise InternalError(f"null co-moments {tuple(state.comoments.shape)} do not fit statistics {stats.shape}")
    device = state.comoments.device
    layer = torch.tensor([n.layer for n in neurons], dtype=torch.long, device=device)
    position = torch.tensor([n.position for n in neurons], dtype=torch.long, device=device)
    index = torch.tensor([n.index for n in neurons], dtype=torch.long, device=device)
    observed = torch.tensor([abs(n.r) for n in neurons], dtype=NULL_DTYPE, device=device)
    cell_hits = torch.zeros(len(neurons), dtype=torch.long, device=device)
    maxima = []
    step = max(1, CHUNK_ELEMENTS // max(1, layers * positions * width))
    for start in range(0, state.permutations, step):
        stop = min(state.permutations, start + step)
        corr = permuted_correlations(state, stats, start, stop, covariates)  # [c, L, P, m]
        # best_scores reduces dim 1 of [L, P, m]: the chunk's permutations stack as extra "layers"
        score = best_scores(corr.reshape(-1, positions, width), reduce).score.abs().reshape(stop - start, -1)
        maxima.append(torch.nan_to_num(score, nan=0.0).amax(dim=1))
        cell_hits += (corr[:, layer, position, index].abs() >= observed).long().sum(dim=0)
    max_abs_r = torch.cat(maxima).to("cpu", STAT_DTYPE) if maxima else torch.zeros(0, dtype=STAT_DTYPE)
    return verdict(state.mode, alpha, max_abs_r, neurons, tuple(int(h) for h in cell_hits.tolist()))


def verdict(mode: PermutationMode, alpha: float, max_abs_r: Tensor, neurons: tuple[Neuron, ...], cell_hits: tuple[int, ...]) -> NullResult:
    """Threshold, adjusted p and significance from the null maxima (`cell_hits`: per-cell exceedances)."""
    total = int(max_abs_r.numel())
    allowed = exceedances_allowed(total, alpha)
    descending = torch.sort(max_abs_r.to(STAT_DTYPE), descending=True).values
    threshold = float(descending[allowed]) if 0 <= allowed < total else math.inf
    # compared in float32, the precision of the null's r (an observed r equal to a null maximum counts as reached)
    maxima32 = max_abs_r.to(NULL_DTYPE)
    p_adjusted, p_cell, significant = [], [], []
    for n, hits in zip(neurons, cell_hits, strict=True):
        if math.isnan(n.r):
            p_adjusted.append(math.nan)
            p_cell.append(math.nan)
            significant.append(False)
            continue
        reached = int((maxima32 >= torch.tensor(abs(n.r), dtype=NULL_DTYPE)).sum())
        p_adjusted.append((1 + reached) / (total + 1))
        p_cell.append((1 + hits) / (total + 1))
        significant.append(reached <= allowed)
    return NullResult(mode, alpha, max_abs_r.to(STAT_DTYPE), threshold, tuple(p_adjusted), tuple(p_cell), tuple(significant))
