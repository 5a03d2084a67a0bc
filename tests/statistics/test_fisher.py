"""Fisher z interval and p-value against scipy in float64; replication on hand-made correlations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from skn.statistics.fisher import correlation_p, fisher_interval
from skn.ranking.rank import Neuron
from skn.ranking.replication import cross_fit, replicates


@pytest.mark.parametrize("r,n", [(0.4, 200), (-0.83, 25), (0.0, 4), (0.999, 1000), (-0.05, 12)])
def test_interval_and_p_match_scipy(r: float, n: int) -> None:
    se = 1.0 / math.sqrt(n - 3)
    z = np.arctanh(r)
    q = sps.norm.ppf(0.975)
    low, high = fisher_interval(r, n)
    assert low == pytest.approx(np.tanh(z - q * se), abs=1e-12)
    assert high == pytest.approx(np.tanh(z + q * se), abs=1e-12)
    assert correlation_p(r, n) == pytest.approx(2 * sps.norm.sf(abs(z) / se), rel=1e-9, abs=1e-300)
    # the two agree: p < 0.05 exactly when the interval excludes 0
    assert (correlation_p(r, n) < 0.05) == (low > 0 or high < 0)


def test_undefined_and_degenerate() -> None:
    assert all(math.isnan(v) for v in fisher_interval(0.5, 3))
    assert all(math.isnan(v) for v in fisher_interval(math.nan, 100))
    assert math.isnan(correlation_p(0.2, 2))
    assert fisher_interval(1.0, 10) == (1.0, 1.0)
    assert correlation_p(-1.0, 10) == 0.0
    lo90, hi90 = fisher_interval(0.3, 50, 0.90)
    lo95, hi95 = fisher_interval(0.3, 50)
    assert lo95 < lo90 < 0.3 < hi90 < hi95


def test_replication_needs_sign_and_significance() -> None:
    assert replicates(0.5, 0.3, 100)  # p ~ 0.002
    assert not replicates(0.5, -0.3, 100)  # sign flipped
    assert not replicates(0.5, 0.1, 100)  # p ~ 0.32
    assert not replicates(0.5, math.nan, 100)
    corr_a = torch.zeros(1, 2, 3)
    corr_b = torch.zeros(1, 2, 3)
    corr_b[0, 1, 0], corr_b[0, 0, 2] = 0.5, -0.5
    corr_a[0, 1, 0], corr_a[0, 0, 1] = 0.6, 0.05
    chosen_a = [Neuron(1, 0, 0, 1, 0.6), Neuron(2, 0, 1, 0, 0.05)]  # the first replicates on b, the second not
    chosen_b = [Neuron(1, 0, 0, 1, 0.5), Neuron(2, 0, 2, 0, -0.5)]  # the first replicates on a, the second (0 there) not
    rep = cross_fit(chosen_a, chosen_b, corr_a, corr_b, 50, 50)
    assert (rep.selection_to_confirmation, rep.confirmation_to_selection, rep.rate) == (0.5, 0.5, 0.5)
