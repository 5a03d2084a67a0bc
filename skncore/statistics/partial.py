"""Confounds: the partial correlation of every cell with the metric given q covariates (`--control`).

A neuron can track the metric only because both track something simpler (the instruction's length, the
number of digits). With covariates z_1 .. z_q, the partial r of an activation x and the metric y is the
Pearson r of their residuals after a least-squares fit on [1, z_1 .. z_q]. From centred moments over the
examples (sums of products of deviations from the means):

    S_zz [q, q] = sum (z - zbar)(z - zbar)^T     s_zy [q] = sum (z - zbar)(y - ybar)
    s_xz [q]    = sum (x - xbar)(z - zbar)       m2_x, c_xy, m2_y as in skn.statistics.stats

    e_xx = m2_x - s_xz^T S_zz^-1 s_xz            (the residual sums of squares and cross products)
    e_yy = m2_y - s_zy^T S_zz^-1 s_zy
    e_xy = c_xy - s_xz^T S_zz^-1 s_zy
    partial r = e_xy / sqrt(e_xx e_yy)

computed through the Cholesky factor of the covariates' correlation matrix, S_zz = D R D with
D = diag(sqrt(S_zz)), R = C C^T: with w = C^-1 D^-1 s_xz and v = C^-1 D^-1 s_zy (triangular solves),
e_xx = m2_x - |w|^2, e_xy = c_xy - w.v, e_yy = m2_y - |v|^2 (q <= ~8, so the q x q algebra is free).

The covariates themselves (`--control`'s names, their values on the examples, the checks that none is
constant or collinear) are skn.statistics.covariates'; the co-moments s_xz of every cell with them are streamed by
skn.statistics.covariate_moments' `CovariateAccumulator`.

The permutation null (skn.statistics.null) respects the covariates by Freedman and Lane's scheme: the metric's
residual on the covariates, e = (y - ybar) - (z - zbar) gamma, gamma = S_zz^-1 s_zy, is permuted, and each
permutation's partial r is that of x with zhat + P e. Since the permutations enter the co-moments
linearly this only changes the permuted rows (`freedman_lane_rows`); `permuted_partial` turns the streamed
co-moments into partial r.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from skn.statistics.covariates import COLLINEAR
from skn.errors import InternalError, MetricError
from skn.statistics.stats import STAT_DTYPE, PearsonStats


def _factor(zz: Tensor) -> tuple[Tensor, Tensor]:
    """(d, C): d = sqrt(diag S_zz) and the Cholesky factor C of the correlation matrix S_zz / (d d^T)."""
    d = torch.sqrt(torch.diagonal(zz))
    corr = zz / torch.outer(d, d)
    return d, torch.linalg.cholesky(corr)


@dataclass(frozen=True)
class CovariateStats:
    """The covariates' moments over one set of examples, and every cell's co-moments with them."""

    names: tuple[str, ...]
    count: int
    mean_z: Tensor  # [q] float64
    zz: Tensor  # [q, q] centred sums of products
    zy: Tensor  # [q] centred co-moments with the metric
    xz: Tensor  # [L, q, P, m] float64: sum (x - xbar)(z - zbar) per cell

    @property
    def q(self) -> int:
        return len(self.names)


def covariate_stats(names: Sequence[str], z: Tensor, y: Tensor, xz: Tensor) -> CovariateStats:
    """The moments of covariates z [n, q] and metric y [n] (exact, two-pass) beside the streamed xz."""
    z = z.to("cpu", STAT_DTYPE)
    y = y.to("cpu", STAT_DTYPE)
    mean = z.mean(dim=0)
    zc = z - mean
    return CovariateStats(tuple(names), int(z.shape[0]), mean, zc.T @ zc, zc.T @ (y - y.mean()), xz)


def merge_covariates(a: CovariateStats, b: CovariateStats, xa: PearsonStats, xb: PearsonStats, z: Tensor,
                     y: Tensor) -> CovariateStats:
    """The union of two disjoint sets: z's moments from all rows (z [n_a + n_b, q], y alike), xz by Chan's merge."""
    n = a.count + b.count
    delta_x = (xb.mean_x - xa.mean_x.to(xb.mean_x.device)).to(a.xz.device)  # [L, P, m]
    delta_z = (b.mean_z - a.mean_z).to(a.xz.device)  # [q]
    xz = a.xz + b.xz + (a.count * b.count / n) * delta_x.unsqueeze(1) * delta_z.reshape(1, -1, 1, 1)
    return covariate_stats(a.names, z, y, xz)


@dataclass(frozen=True)
class FoldCovariates:
    """The covariates' moments of a holdout's two folds and of the whole set (skn.ranking.holdout)."""

    selection: CovariateStats
    confirmation: CovariateStats
    full: CovariateStats


@dataclass(frozen=True)
class Residuals:
    """The residual moments of the module docstring, per cell flattened to [L, P m]."""

    e_xx: Tensor
    e_xy: Tensor
    e_yy: float
    w: Tensor  # [L, q, P m]: C^-1 D^-1 s_xz
    d: Tensor  # [q]
    chol: Tensor  # [q, q]
    gamma: Tensor  # [q]: the metric's regression coefficients on the covariates, S_zz^-1 s_zy
    valid: Tensor  # [L, P m] bool: the cell's residual is not (numerically) zero


def residuals(stats: PearsonStats, cov: CovariateStats) -> Residuals:
    if stats.count != cov.count:
        raise InternalError(f"moments of {stats.count} examples with covariates of {cov.count}")
    layers, positions, width = stats.shape
    device = cov.xz.device
    d, chol = _factor(cov.zz.to(device))
    xz = cov.xz.reshape(layers, cov.q, positions * width) / d.reshape(1, -1, 1)
    w = torch.linalg.solve_triangular(chol.expand(layers, -1, -1), xz, upper=False)
    v = torch.linalg.solve_triangular(chol, (cov.zy.to(device) / d).unsqueeze(1), upper=False).squeeze(1)
    m2_x = stats.m2_x.to(device, STAT_DTYPE).reshape(layers, -1)
    e_xx = m2_x - (w * w).sum(dim=1)
    e_xy = stats.c_xy.to(device, STAT_DTYPE).reshape(layers, -1) - (w * v.reshape(1, -1, 1)).sum(dim=1)
    e_yy = stats.m2_y - float((v * v).sum())
    gamma = torch.cholesky_solve((cov.zy.to(device) / d).unsqueeze(1), chol).squeeze(1) / d
    valid = (m2_x > 0) & (e_xx > COLLINEAR * m2_x)
    return Residuals(e_xx, e_xy, e_yy, w, d, chol, gamma, valid)


def partial_correlation(stats: PearsonStats, cov: CovariateStats) -> Tensor:
    """Partial r [L, P, m] float32 on the CPU given the covariates; NaN where undefined (constant activation,
    or one that is itself a linear function of the covariates)."""
    layers, positions, width = stats.shape
    if stats.count < cov.q + 3 or not stats.m2_y > 0.0:
        return torch.full((layers, positions, width), math.nan, dtype=torch.float32)
    res = residuals(stats, cov)
    if not res.e_yy > COLLINEAR * stats.m2_y:
        return torch.full((layers, positions, width), math.nan, dtype=torch.float32)
    r = torch.where(res.valid, res.e_xy / torch.sqrt(res.e_xx.clamp(min=0.0) * res.e_yy), torch.full_like(res.e_xy, math.nan))
    return r.clamp(-1.0, 1.0).reshape(layers, positions, width).to("cpu", torch.float32)


def covariate_r(cov: CovariateStats, m2_y: float) -> tuple[float, ...]:
    """Each covariate's Pearson r with the metric (run.json's `control`)."""
    return tuple(float(cov.zy[j]) / math.sqrt(float(cov.zz[j, j]) * m2_y) if m2_y > 0 else math.nan for j in range(cov.q))


# ---------------------------------------------------------------- Freedman-Lane (used by skn.statistics.null)


def regression(z: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(zc [n, q], e [n]): the centred covariates and the metric's least-squares residual on [1, z], float64."""
    z = z.to("cpu", STAT_DTYPE)
    y = y.to("cpu", STAT_DTYPE)
    zc = z - z.mean(dim=0)
    yc = y - y.mean()
    gamma = torch.linalg.lstsq(zc, yc.unsqueeze(1)).solution.squeeze(1)
    return zc, yc - zc @ gamma


def permuted_partial(c_perm: Tensor, u: Tensor, stats: PearsonStats, cov: CovariateStats) -> Tensor:
    """[R', L, P, m] float32: permuted partial r. c_perm [L, R', P m]: sum_i (x_i - xbar) e(pi_r(i)) for each
    permutation; u [R', q] float64: z_c^T P_r e. The permuted metric is zhat + P_r e, so its residual on z is
    (I - H) P_r e: numerator x_res . P_r e = c_perm - s_xz^T S_zz^-1 u_r, and |(I - H) P_r e|^2 = e_yy - u_r^T S_zz^-1 u_r."""
    layers, positions, width = stats.shape
    res = residuals(stats, cov)
    device = c_perm.device
    u_t = torch.linalg.solve_triangular(res.chol, (u.to(res.chol.device) / res.d).T, upper=False)  # [q, R']
    num = c_perm.to(STAT_DTYPE) - torch.einsum("lqc,qr->lrc", res.w, u_t.to(res.w.device)).to(device)
    left = (res.e_yy - (u_t * u_t).sum(dim=0)).clamp(min=0.0).to(device)  # [R']
    denom = torch.sqrt(res.e_xx.clamp(min=0.0).to(device).unsqueeze(1) * left.reshape(1, -1, 1))
    r = torch.where(res.valid.to(device).unsqueeze(1), num / denom, torch.full_like(num, math.nan))
    return r.clamp(-1.0, 1.0).to(torch.float32).transpose(0, 1).reshape(-1, layers, positions, width)


__all__ = [
    "CovariateStats",
    "FoldCovariates",
    "PartialResult",
    "check_metric_residual",
    "control_line",
    "covariate_r",
    "covariate_stats",
    "merge_covariates",
    "partial_correlation",
    "permuted_partial",
    "regression",
    "residuals",
]


# ---------------------------------------------------------------- checks and the result


def check_metric_residual(metric: str, names: Sequence[str], z: Tensor, y: Tensor, where: str = "") -> None:
    """The metric must keep some variance once the covariates are partialled out (one line naming them)."""
    if not names:
        return
    yc = y.to("cpu", STAT_DTYPE) - y.to("cpu", STAT_DTYPE).mean()
    total = float((yc * yc).sum())
    if not total > 0:
        return
    zc, e = regression(z, y)
    left = float((e * e).sum()) / total
    if left < COLLINEAR:
        place = f" on the {where}" if where else ""
        raise MetricError(f"metric '{metric}' is collinear with --control {', '.join(names)} (R^2 = {1 - left:.10f}){place}: "
                          "nothing is left to correlate once they are partialled out; drop the covariate")


@dataclass(frozen=True)
class PartialResult:
    """What `--control` adds to a probe: the covariates, each one's r with the metric (all examples), and
    the raw (not partial) r on the examples that ranked: every cell's, and each top neuron's at its cell."""

    names: tuple[str, ...]
    metric_r: tuple[float, ...]
    raw_corr: Tensor  # [L, P, m] float32
    raw_r: tuple[float, ...]  # neurons order

    def summary(self) -> dict[str, object]:
        """run.json's `control` (strict JSON: NaN becomes null)."""
        return {
            "covariates": [{"name": n, "r_metric": None if math.isnan(r) else r} for n, r in zip(self.names, self.metric_r, strict=True)],
            "ranked_by": "partial r given the covariates",
            "null": "Freedman-Lane (the metric's residual on the covariates is permuted)",
        }


def control_line(result: PartialResult) -> str:
    """One plain line for the views: which covariates, and their r with the metric."""
    each = ", ".join(f"{n} (r with the metric {r:+.3f})" for n, r in zip(result.names, result.metric_r, strict=True))
    return (f"r: partial r given {each}; raw r: the plain Pearson r on the same examples; the null permutes the "
            "metric's residual on the covariates (Freedman-Lane)")
