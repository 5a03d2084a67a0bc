"""The holdout through the real pass: fold moments against numpy, --holdout 0 as today, the run directory."""

from __future__ import annotations

from dataclasses import replace

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from skn.files.probe_files import write_probe_run
from skn.inputs.example_order import pass_order
from skn.engine.api import encode, probe
from skn.engine.probe_config import ProbeConfig
from skn.statistics.folds import assign_folds
from skn.inputs.layout import Template
from skn.inputs.metrics import parse_metric
from skn.engine.probe import statistics_pass
from skn.training.prompt import init_prompt
from skn.files.probe_read import read_probe_run
from skn.statistics.stats import correlation

from helpers import examples, hooked_activations, reference_r, tiny_loaded

P = 3


@pytest.mark.parametrize("metric", ["loss", "score"])  # post-pass slabs, in-pass rows
def test_fold_moments_match_numpy(metric: str) -> None:
    loaded = tiny_loaded("qwen2")
    data = examples(23)
    prompt = init_prompt(loaded, P, seed=0)  # type: ignore[arg-type]
    rows = list(encode(loaded, data, Template.PLAIN, P))  # type: ignore[arg-type]
    confirm = assign_folds(data, 0.4, seed=1)
    result = statistics_pass(loaded, prompt, rows, data, parse_metric(metric), batch_size=5, confirm=confirm)  # type: ignore[arg-type]
    assert result.folds is not None
    acts = hooked_activations(loaded, prompt, rows, with_completion=True)
    y = result.metric.numpy()
    for part, mask in ((result.folds.selection, ~confirm.numpy()), (result.folds.confirmation, confirm.numpy())):
        assert part.count == int(mask.sum())
        expected = reference_r(acts[mask], y[mask])
        got = correlation(part).numpy()
        assert np.array_equal(np.isnan(expected), np.isnan(got))
        assert np.nanmax(np.abs(got - expected)) <= 1e-5
    plain = statistics_pass(loaded, prompt, rows, data, parse_metric(metric), batch_size=5)  # type: ignore[arg-type]
    for name in ("mean_x", "m2_x", "c_xy"):
        torch.testing.assert_close(getattr(result.stats, name), getattr(plain.stats, name), rtol=1e-12, atol=1e-12)


def test_holdout_zero_is_todays_corr_exactly() -> None:
    loaded = tiny_loaded("llama")
    data = examples(30, seed=2)
    prompt = init_prompt(loaded, P, seed=0)  # type: ignore[arg-type]
    in_pass = [data[i] for i in pass_order(data, 0)]  # the probe's batches follow the examples' content keys
    rows = list(encode(loaded, in_pass, Template.AUTO, P))  # type: ignore[arg-type]
    today = correlation(statistics_pass(loaded, prompt, rows, in_pass, parse_metric("score"), batch_size=16).stats)  # type: ignore[arg-type]
    for holdout in (0.0, None):  # None: the default, off below 100 examples per fold
        result = probe(loaded, prompt, data, "score", ProbeConfig(top_k=4, holdout=holdout, batch_size=16))  # type: ignore[arg-type]
        assert result.holdout is None and "holdout off" in result.holdout_note
        assert torch.equal(torch.nan_to_num(result.corr, 9.0), torch.nan_to_num(today, 9.0))


def test_run_directory_carries_the_held_out_r(tmp_path: Path) -> None:
    loaded = tiny_loaded("qwen2")
    data = examples(40, seed=3)
    prompt = init_prompt(loaded, P, seed=0)  # type: ignore[arg-type]
    result = probe(loaded, prompt, data, "score", ProbeConfig(top_k=4, holdout=0.5, holdout_seed=7))  # type: ignore[arg-type]
    assert result.holdout is not None and result.holdout.n_confirmation == 20
    write_probe_run(tmp_path, replace(result, info=replace(result.info, model="tiny")))
    records = json.loads((tmp_path / "neurons.json").read_text())
    assert set(records[0]) >= {"r", "r_held_out", "r_held_out_low", "r_held_out_high", "r_selection", "r_full"}
    assert (tmp_path / "neurons.csv").read_text().splitlines()[0] == (
        "rank,layer,neuron,position,r,p_adjusted,p_cell,significant,r_held_out,r_held_out_low,r_held_out_high,r_selection,r_full")
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["holdout"]["n_confirmation"] == 20 and info["holdout"]["seed"] == 7
    run = read_probe_run(tmp_path)
    assert run.holdout is not None
    assert torch.equal(run.holdout.folds.confirm, result.holdout.folds.confirm)
    assert run.holdout.per_neuron == result.holdout.per_neuron or all(
        (math.isnan(a.r_held_out) and math.isnan(b.r_held_out)) or a == b
        for a, b in zip(run.holdout.per_neuron, result.holdout.per_neuron))
    assert run.holdout.replication.rate == result.holdout.replication.rate or math.isnan(result.holdout.replication.rate)
    for k, n in enumerate(run.neurons):
        h = run.holdout.per_neuron[k]
        assert h.r_held_out == pytest.approx(float(run.holdout.corr_confirmation[n.layer, n.position, n.index]))
        assert h.low <= h.r_held_out <= h.high


def test_every_view_shows_the_held_out_r(tmp_path: Path, saved_tiny_model: Path) -> None:
    from click.testing import CliRunner

    from skn.cli.main import cli
    from skn.views.plots import overview_figures
    from helpers import FAST, write_data

    train, val = write_data(tmp_path / "train.jsonl", 16, 0), write_data(tmp_path / "val.jsonl", 24, 1)
    out = tmp_path / "RUN"
    runner = CliRunner()
    args = ["probe", "--model", str(saved_tiny_model), "--data", str(train), "--val-data", str(val), "--metric", "size",
            "--out", str(out), *FAST]
    result = runner.invoke(cli, [*args, "--holdout", "0.5"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "r held out" in result.output and "replication" in result.output
    shown = runner.invoke(cli, ["show", str(out)], env={"COLUMNS": "160"})
    assert shown.exit_code == 0 and "r held out" in shown.output
    from skn.views.report import render_report

    assert "r held out" in render_report(read_probe_run(out))
    run = read_probe_run(out)
    figure = {f.name: f.figure for f in overview_figures(run)}["score_histogram"]
    marks = [line for line in figure.axes[0].get_lines() if line.get_gid() == "held_out"]
    assert run.holdout is not None and len(marks) == 1
    expected = sorted(abs(h.r_held_out) for h in run.holdout.per_neuron if not math.isnan(h.r_held_out))
    assert sorted(marks[0].get_xdata()) == pytest.approx(expected)
    # the default on 24 examples: off, and the output says so
    off = runner.invoke(cli, [*args, "--prompt", str(out), "--overwrite"], env={"COLUMNS": "160"})
    assert off.exit_code == 0 and "holdout off" in off.output and "r held out" not in off.output
    bad = runner.invoke(cli, [*args, "--holdout", "1.5"])
    assert bad.exit_code != 0 and "--holdout must be in [0, 1)" in str(bad.exception)
