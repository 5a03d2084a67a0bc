"""Fisher's z for one Pearson r: its confidence interval and its per-cell two-sided p-value.

For r measured on n examples (bivariate normal, true correlation rho),

    z = atanh(r) is about normal with mean atanh(rho) and standard error 1 / sqrt(n - 3),

so the level-q interval is tanh(z -+ Phi^-1((1 + q) / 2) / sqrt(n - 3)), and the two-sided p-value of
rho = 0 is erfc(|z| sqrt(n - 3) / sqrt(2)). The two agree: p < 1 - q exactly when the interval excludes 0.
Undefined (NaN) for n <= 3 or a NaN r; r = +-1 gives the degenerate interval [r, r] and p = 0.
"""

from __future__ import annotations

import math
from statistics import NormalDist


def _z(r: float) -> float:
    return math.copysign(math.inf, r) if abs(r) >= 1.0 else math.atanh(r)


def fisher_interval(r: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The level-`level` confidence interval of the correlation behind r on n examples; (NaN, NaN) when undefined."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n <= 3 or math.isnan(r):
        return math.nan, math.nan
    if abs(r) >= 1.0:
        return r, r
    half = NormalDist().inv_cdf(0.5 + level / 2.0) / math.sqrt(n - 3)
    z = math.atanh(r)
    return math.tanh(z - half), math.tanh(z + half)


def correlation_p(r: float, n: int) -> float:
    """Two-sided p-value of r on n examples against no correlation (Fisher z); NaN when undefined."""
    if n <= 3 or math.isnan(r):
        return math.nan
    return math.erfc(abs(_z(r)) * math.sqrt(n - 3) / math.sqrt(2.0))
