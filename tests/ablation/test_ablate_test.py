"""The test of an ablated set against its controls (skn.ablation.ablate_test): the log-t test holds its level on
null draws, a strong planted neuron departs at K = 1 with 10 controls (the empirical test cannot), a
neuron that writes nothing is never called causal, and a configuration that cannot say yes is named (too few
controls; neurons of the last layer at slots whose output nothing reads)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from skn.ablation.ablate import AblationConfig
from skn.ablation.ablate_curve import k_curve
from skn.ablation.ablate_run import AblationRequest, ablate_run
from skn.ablation.ablate_test import DepartureTest, cannot_depart, empirical_p, inert_note, log_t_p, parse_test, resolve_test
from skn.errors import UsageError
from skn.ablation.intervention import Target, Value, ValueKind, Where

from helpers import ABLATION_P as P, ablation_data, plant_neuron, probed_tiny_run, tiny_loaded


def test_log_t_matches_a_float64_prediction_interval() -> None:
    effect, controls = -0.37, [0.02, -0.11, 0.005, 0.3, -0.04, 0.0007, 0.09]
    logs = np.log(np.abs(controls))
    t = (math.log(0.37) - logs.mean()) / (logs.std(ddof=1) * math.sqrt(1 + 1 / len(logs)))
    assert log_t_p(effect, controls) == pytest.approx(stats.t.sf(t, len(logs) - 1), rel=1e-9)
    assert log_t_p(0.0, controls) == 1.0  # a set that changes nothing is never called causal
    assert log_t_p(0.5, [0.1]) is None and log_t_p(None, controls) is None
    assert log_t_p(0.2, [0.1, 0.1, 0.1]) == 0.0 and log_t_p(0.1, [0.1, 0.1]) == 1.0


@pytest.mark.parametrize("controls", [5, 10, 40])
def test_log_t_holds_its_level_on_null_draws(controls: int) -> None:
    """Under the null the set is one more random set: skewed (log-normal) |effects| reject about 5% of the time."""
    rng = np.random.default_rng(controls)
    reps = 4000
    draws = rng.lognormal(mean=-4.0, sigma=1.7, size=(reps, controls + 1)) * rng.choice([-1, 1], size=(reps, controls + 1))
    rejected = sum(1 for d in draws if (log_t_p(float(d[0]), [float(v) for v in d[1:]]) or 1.0) < 0.05)
    assert 0.035 <= rejected / reps <= 0.065, rejected / reps


def test_auto_picks_the_test_that_can_say_yes() -> None:
    assert resolve_test(DepartureTest.AUTO, 20, 1) is DepartureTest.EMPIRICAL  # floor 1/21 < 0.05
    assert resolve_test(DepartureTest.AUTO, 20, 7) is DepartureTest.LOG_T  # Holm's floor 7/21
    assert resolve_test(DepartureTest.AUTO, 10, 1) is DepartureTest.LOG_T
    assert resolve_test(DepartureTest.EMPIRICAL, 10, 1) is DepartureTest.EMPIRICAL
    assert cannot_depart(DepartureTest.AUTO, 20, 7) == "" and cannot_depart(DepartureTest.AUTO, 10, 1) == ""
    assert "140 or more" in cannot_depart(DepartureTest.EMPIRICAL, 20, 7)
    assert "2 or more" in cannot_depart(DepartureTest.LOG_T, 1, 1)
    assert cannot_depart(DepartureTest.AUTO, 0, 1) != ""
    with pytest.raises(UsageError, match="--test"):
        parse_test("bonferroni")


def _ranked(first: Target, width: int, layers: int) -> list[Target]:
    rest = [Target(l, i, P - 1) for l in range(layers) for i in range(width) if (l, i) != (first.layer, first.neuron)]
    return [first, *rest]


def test_a_strong_planted_neuron_departs_at_k_one_with_ten_controls() -> None:
    loaded = tiny_loaded("qwen2", seed=1)
    plant_neuron(loaded)
    data, _ = ablation_data(loaded, n=6)
    zero = torch.zeros(2, P, 48, dtype=torch.float64)
    ranked = _ranked(Target(0, 7, P - 1), 48, 2)
    curve = k_curve(data, ranked, (1, 3), zero, AblationConfig(value=Value(ValueKind.ZERO), n_controls=10, seed=1), range(6))  # type: ignore[arg-type]
    assert curve.departure == 0, [p.p_holm for p in curve.points]
    summary = curve.points[0].comparison.summary["loss"]
    assert summary.p == summary.p_t and summary.p_empirical == pytest.approx(1 / 11)  # the rank test's floor
    # the same neuron writing nothing: its effect is exactly 0 and it is never called causal
    with torch.no_grad():
        loaded.model.model.layers[0].mlp.down_proj.weight[:, 7] = 0.0  # type: ignore[attr-defined]
    mute = k_curve(data, ranked, (1,), zero, AblationConfig(value=Value(ValueKind.ZERO), n_controls=10, seed=1), range(6))  # type: ignore[arg-type]
    assert mute.points[0].comparison.ablated.effect.loss == 0.0 and mute.departure is None
    assert mute.points[0].comparison.summary["loss"].p == 1.0
    assert empirical_p(0.0, [0.0, 0.1]) == 1.0


def test_a_last_layer_neuron_before_the_last_slot_is_named_inert() -> None:
    last, P4 = 1, 4  # two layers, four slots
    assert "every neuron-slot of the set" in inert_note([Target(last, 3, 0), Target(last, 5, 2)], 2, P4, [Where.PROMPT])
    assert "1 of the set's 2 neuron-slots" in inert_note([Target(last, 3, 0), Target(0, 5, 0)], 2, P4, [Where.PROMPT])
    assert inert_note([Target(last, 3, P4 - 1)], 2, P4, [Where.PROMPT]) == ""  # the last slot predicts the completion
    assert inert_note([Target(0, 3, 0)], 2, P4, [Where.PROMPT]) == ""
    assert inert_note([Target(last, 3, 0)], 2, P4, [Where.ALL]) == ""  # everywhere it reaches the completion


def test_the_inert_note_is_true_and_said_before_the_passes(tmp_path: Path) -> None:
    """What the note says, measured: a last-layer neuron at slot 0 changes nothing at the prompt (effect exactly
    0), the same neuron at the last slot does, and only the first is named."""
    run = probed_tiny_run(tmp_path)  # tiny Qwen2: 2 layers, --prompt-len 4
    config = AblationConfig(value=Value(ValueKind.SCALE, 50.0), n_controls=2, per_neuron=0, items=6, batch_size=6)
    heard: list[str] = []
    inert = ablate_run(AblationRequest(run, config, neurons="1.0@0,1.1@0,1.2@0"), notify=heard.append).ablation
    assert inert is not None and inert.effect.loss == 0.0
    assert len([h for h in heard if "exactly 0" in h]) == 1
    heard.clear()
    live = ablate_run(AblationRequest(run, config, neurons="1.0@3,1.1@3,1.2@3"), notify=heard.append).ablation
    assert live is not None and abs(live.effect.loss) > 1e-6
    assert not any("last layer" in h for h in heard)
