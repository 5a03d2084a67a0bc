"""How many neurons pass the family-wise threshold (skn.statistics.passing): counted by brute force from a run's
stats.safetensors (the ranked fold's corr and the null's threshold), in run.json, the table's caption,
`skn show` and the HTML report."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from skn.engine.api import probe

from skn.engine.probe_config import ProbeConfig
from skn.statistics.null import PermutationMode
from skn.statistics.null_verdict import NullResult
from skn.statistics.passing import ALL, SELECTION, count_passing, passing_mask
from skn.files.probe_files import write_probe_run
from skn.files.result import with_section
from skn.files.probe_read import read_probe_run
from skn.training.prompt import init_prompt
from skn.ranking.rank import Reduce
from skn.views.plots import choose_grouping
from skn.views.report import summary_rows

from helpers import length_examples, tiny_loaded


def brute_counts(corr: np.ndarray, threshold: float, reduce: Reduce) -> list[int]:
    """Per layer, the neurons whose best-position score passes, by loops in numpy (float32 comparison)."""
    counts = []
    for layer in range(corr.shape[0]):
        count = 0
        for neuron in range(corr.shape[2]):
            values = [v for v in corr[layer, :, neuron] if not math.isnan(v)]
            if not values:
                continue
            score = max(values, key=abs) if reduce is Reduce.ABS else max(values)
            count += bool(np.float32(abs(score)) > np.float32(threshold))
        counts.append(count)
    return counts


def null_with(threshold: float) -> NullResult:
    return NullResult(PermutationMode.WHOLE_SET, 0.05, torch.zeros(99, dtype=torch.float64), threshold, (), (), ())


@pytest.mark.parametrize("reduce", [Reduce.ABS, Reduce.MAX])
def test_mask_against_loops_with_nan(reduce: Reduce) -> None:
    rng = np.random.default_rng(3)
    corr = rng.uniform(-1, 1, size=(3, 4, 25)).astype(np.float32)
    corr[0, :, 2] = np.nan  # an undefined neuron never passes
    corr[1, 1:, 5] = np.nan
    corr[2, 0, 7] = 0.5  # exactly at the threshold: not above it
    corr[2, 1:, 7] = 0.1
    threshold = 0.5
    counts = count_passing(torch.from_numpy(corr), reduce, null_with(threshold), ALL, 30)
    assert list(counts.per_layer) == brute_counts(corr, threshold, reduce)
    assert 0 < counts.total < 75 and counts.neurons == 75
    assert not bool(passing_mask(torch.from_numpy(corr), reduce, threshold)[2, 7])
    assert count_passing(torch.from_numpy(corr), reduce, null_with(math.inf), ALL, 30).total == 0
    assert counts.to_json()["total"] == counts.total
    assert json.dumps(count_passing(torch.from_numpy(corr), reduce, null_with(math.inf), ALL, 30).to_json(), allow_nan=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two runs of a tiny model on the `length` metric: one with a holdout (12 + 12), one without."""
    loaded = tiny_loaded("qwen2")
    data = length_examples(24, seed=4)
    out = {}
    for name, holdout in (("holdout", 0.5), ("all", 0.0)):
        folder = tmp_path_factory.mktemp(name)
        prompt = init_prompt(loaded, 3, seed=0)  # type: ignore[arg-type]
        result = probe(loaded, prompt, data, "length", ProbeConfig(top_k=40, holdout=holdout))  # type: ignore[arg-type]
        write_probe_run(folder, replace(result, info=replace(result.info, model="tiny")))
        out[name] = folder
    return out


@pytest.mark.parametrize("name", ["holdout", "all"])
def test_counts_equal_brute_force_from_the_files(runs: dict[str, Path], name: str) -> None:
    tensors = {k: v.double().numpy() for k, v in load_file(str(runs[name] / "stats.safetensors")).items()}
    corr = tensors["corr_selection" if name == "holdout" else "corr"]  # the null is the selection fold's
    threshold = float(tensors["null_threshold"])
    expected = brute_counts(corr.astype(np.float32), threshold, Reduce.ABS)
    recorded = json.loads((runs[name] / "run.json").read_text())["null"]["passing"]
    assert recorded["per_layer"] == expected and recorded["total"] == sum(expected)
    assert recorded["scored_on"] == (SELECTION if name == "holdout" else ALL)
    assert recorded["n_examples"] == (12 if name == "holdout" else 24) and recorded["neurons"] == corr.shape[0] * corr.shape[2]
    back = read_probe_run(runs[name])
    assert back.passing is not None and list(back.passing.per_layer) == expected
    # the top K's flags are the same rule: here fewer neurons pass than the 40 shown, so exactly `total` of them
    assert back.null is not None and 0 < sum(expected) < 40
    assert back.null.n_significant == sum(expected)
    assert all(flag == (np.float32(abs(n.r)) > np.float32(threshold)) for n, flag in zip(back.neurons, back.null.significant))


def test_the_views_show_the_count(runs: dict[str, Path]) -> None:
    from skn.cli.main import cli

    back = read_probe_run(runs["holdout"])
    assert back.passing is not None
    line = f"{back.passing.total} of {back.passing.neurons} neurons pass"
    shown = CliRunner().invoke(cli, ["show", str(runs["holdout"]), "--exemplars", "0"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert f"passing the null: {line}" in shown.output and "12 selection examples" in shown.output
    rows = dict(summary_rows(back, choose_grouping(back, None)))  # the report's summary table (rendering 40 figures is slow)
    assert line in rows["neurons passing the null"]


def test_no_null_no_count(runs: dict[str, Path]) -> None:
    back = read_probe_run(runs["all"])
    off = with_section(back, "null", None)
    assert off.passing is None
    assert "not counted" in dict(summary_rows(off, choose_grouping(off, None)))["neurons passing the null"]
