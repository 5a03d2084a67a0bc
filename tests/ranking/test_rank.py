from __future__ import annotations

import math

import pytest
import torch

from skn.errors import UsageError
from skn.ranking.rank import Reduce, best_scores, exemplars, rank_neurons, top_k_threshold

NAN = math.nan


def corr_fixture() -> torch.Tensor:
    # [L=2, P=3, m=3]
    return torch.tensor(
        [
            [[0.1, -0.9, NAN], [0.5, 0.2, NAN], [-0.2, 0.3, NAN]],
            [[0.4, 0.0, 0.05], [-0.7, 0.1, NAN], [0.6, 0.1, 0.02]],
        ]
    )


def test_best_position_keeps_sign_and_skips_nan() -> None:
    best = best_scores(corr_fixture(), Reduce.ABS)
    assert best.score[0].tolist()[:2] == pytest.approx([0.5, -0.9])
    assert best.position[0].tolist()[:2] == [1, 0]
    assert math.isnan(float(best.score[0, 2]))  # a neuron NaN at every position
    assert float(best.score[1, 2]) == pytest.approx(0.05)  # NaN at one position never wins


def test_reduce_max_is_the_literal_max() -> None:
    best = best_scores(corr_fixture(), Reduce.MAX)
    assert float(best.score[0, 1]) == pytest.approx(0.3)
    assert int(best.position[0, 1]) == 2


def test_rank_by_abs_nan_last() -> None:
    ranked = rank_neurons(corr_fixture(), top_k=6)
    assert [(n.layer, n.index) for n in ranked] == [(0, 1), (1, 0), (0, 0), (1, 1), (1, 2), (0, 2)]
    assert [n.rank for n in ranked] == [1, 2, 3, 4, 5, 6]
    assert ranked[1].r == pytest.approx(-0.7) and ranked[1].position == 1
    assert math.isnan(ranked[-1].r)
    assert top_k_threshold(corr_fixture(), 3) == pytest.approx(0.5)
    with pytest.raises(UsageError):
        rank_neurons(corr_fixture(), top_k=0)


def test_exemplars_order() -> None:
    chosen = exemplars(torch.tensor([0.3, -1.0, 2.0, 0.0, 2.0]), 2)
    assert chosen.most == (2, 4)
    assert chosen.least == (1, 3)
