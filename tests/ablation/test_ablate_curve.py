"""The dose-response curve: a planted neuron departs at K = 1, a dead neuron stays exactly flat, Holm's
correction holds its level on null effects, and the curve file is written and shown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from skn.ablation.ablate import AblationConfig, empirical_p
from skn.ablation.intervention import Target, Value, ValueKind, Where
from skn.ablation.ablate_curve import default_grid, first_departure, holm, k_curve, parse_grid, parse_scales, scale_curve
from skn.ablation.ablate_view import curve_figure, curve_rows
from skn.ablation.ablate_files import curve_record
from skn.errors import UsageError

from helpers import tiny_loaded
from helpers import ABLATION_P as P, ablation_data as _data, plant_neuron as _plant
from helpers import run_main


def _ranked(first: Target, width: int, layers: int) -> list[Target]:
    rest = [Target(l, i, P - 1) for l in range(layers) for i in range(width) if (l, i) != (first.layer, first.neuron)]
    return [first, *rest]


@pytest.mark.slow  # about 50 passes of a tiny model
def test_planted_neuron_departs_at_k_one_and_the_band_stays_flat() -> None:
    loaded = tiny_loaded("qwen2", seed=1)
    _plant(loaded)
    data, _ = _data(loaded, n=6)
    ranked = _ranked(Target(0, 7, P - 1), 48, 2)
    zero = torch.zeros(2, P, 48, dtype=torch.float64)
    config = AblationConfig(value=Value(ValueKind.ZERO), n_controls=21, seed=1)
    curve = k_curve(data, ranked, (1,), zero, config, range(6))  # type: ignore[arg-type]
    assert curve.departure == 0 and curve.points[0].p_holm["loss"] == pytest.approx(1 / 22)
    # the band: random sets of 1 and 8 (never the planted neuron) barely move; at K = all 96 they are the top set
    wide = k_curve(data, ranked, (1, 8, 96), zero, AblationConfig(value=Value(ValueKind.ZERO), n_controls=3), range(6))  # type: ignore[arg-type]
    record = curve_record(wide, "tiny")
    rows = curve_rows(record)
    assert all(abs(r.median or 0.0) < 0.1 * abs(rows[0].effect or 1.0) for r in rows[:2])
    assert rows[2].median == rows[2].effect and rows[2].p == 1.0
    assert {a.get_gid() for a in curve_figure(curve_record(curve, "tiny")).axes[0].lines} >= {"top", "median", "departure"}


def test_dead_neuron_gives_an_exactly_flat_curve() -> None:
    loaded = tiny_loaded("llama", seed=2)
    with torch.no_grad():
        loaded.model.model.layers[1].mlp.down_proj.weight[:, 11] = 0.0  # type: ignore[attr-defined]
    data, _ = _data(loaded, n=6)
    targets = [Target(1, 11, k) for k in range(P)]
    mean_x = torch.randn(3, P, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for where in Where:
        curve = scale_curve(data, targets, (0.0, 1.0, 3.0), mean_x, AblationConfig(n_controls=2, where=where), range(6))  # type: ignore[arg-type]
        assert [p.comparison.ablated.effect.loss for p in curve.points] == [0.0, 0.0, 0.0]
        assert all(c.effect.loss == 0.0 for c in curve.points[1].comparison.controls)  # scale 1: nothing changes
        assert curve.departure is None


def test_holm_holds_its_level_on_null_effects() -> None:
    rng = np.random.default_rng(0)
    grid, controls, reps = 4, 99, 200
    corrected = uncorrected = 0
    for _ in range(reps):
        draws = rng.normal(size=(grid, controls + 1))  # under the null the set is one more random set
        p = [empirical_p(float(d[0]), [float(v) for v in d[1:]]) for d in draws]
        corrected += first_departure(holm(p)) is not None
        uncorrected += any(v is not None and v < 0.05 for v in p)
    assert 0.01 <= corrected / reps <= 0.10, corrected
    assert uncorrected > corrected  # the uncorrected grid departs far more often (about 1 - 0.95^4)


def test_grids_and_holm() -> None:
    assert default_grid(860) == (1, 3, 10, 30, 100, 300, 860)
    assert default_grid(1) == (1,) and default_grid(10) == (1, 3, 10)
    assert parse_grid("10, 1,10", 50) == (1, 10)
    for bad in ("0", "x", "51"):
        with pytest.raises(UsageError):
            parse_grid(bad, 50)
    assert parse_scales("0,0.5,2") == (0.0, 0.5, 2.0)
    with pytest.raises(UsageError):
        parse_scales("nan")
    assert holm([0.01, None, 0.04, 0.03]) == pytest.approx((0.03, None, 0.06, 0.06))
    assert first_departure(holm([0.2, 0.01, 0.001])) == 1


def test_curve_cli_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run_main(["ablate", str(tmp_path), "--k", "1,2"], capsys)
    assert code == 2 and "--curve" in text
    code, text = run_main(["ablate", str(tmp_path), "--curve", "--scales", "0,2"], capsys)
    assert code == 2 and "--scales" in text
