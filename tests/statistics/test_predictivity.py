"""Wang et al.'s predictivity against brute force in numpy: synthetic counts, and the two passes on a tiny model."""

from __future__ import annotations

from dataclasses import replace

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from skn.engine.api import encode, probe

from skn.engine.probe_config import ProbeConfig, Score
from skn.files.probe_files import write_probe_run
from skn.inputs.data import Example
from skn.errors import UsageError
from skn.inputs.layout import Template
from skn.files.rundir import PREDICTIVITY_JSON
from skn.statistics.predictivity import PredictivityCounts, binary_labels, predictivity_counts, rank_by_predictivity
from skn.training.prompt import init_prompt

from helpers import tiny_loaded
from helpers import run_main, write_data
from helpers import examples, hooked_activations

P = 3


def brute(train: np.ndarray, val: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[N, L, P, m] activations: the better direction's accuracy of (a > training mean) for y."""
    mean = train.mean(axis=0)
    guess = val > mean[None]
    acc = (guess == (y[:, None, None, None] == 1)).mean(axis=0)
    return np.maximum(acc, 1 - acc)


def test_counts_formula_on_synthetic_data() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(1e3, 1.0, size=(31, 2, 3, 17))
    val = rng.normal(1e3, 1.0, size=(23, 2, 3, 17))
    y = rng.integers(0, 2, size=23)
    val[y == 1, 1, 2, 5] += 3.0  # one predictive cell
    mean = train.mean(axis=0)
    over = val > mean[None]
    counts = PredictivityCounts(torch.tensor(mean), 31, torch.tensor(over.sum(axis=0)),
                                torch.tensor((over & (y == 1)[:, None, None, None]).sum(axis=0)), 23, int(y.sum()))
    np.testing.assert_allclose(counts.predictivity().numpy(), brute(train, val, y), rtol=0, atol=1e-15)
    corr = torch.zeros(2, 3, 17)
    top = rank_by_predictivity(counts, corr, 1)[0]
    assert (top.layer, top.index, top.position) == (1, 5, 2)
    # ties in predictivity go to the larger |r|
    tied = PredictivityCounts(counts.train_mean, 31, torch.zeros(2, 3, 17, dtype=torch.int64), torch.zeros(2, 3, 17, dtype=torch.int64), 23, 11)
    corr[0, 0, 9] = -0.7
    assert [(n.layer, n.index, n.position, n.r) for n in rank_by_predictivity(tied, corr, 2)] == [(0, 9, 0, pytest.approx(-0.7)), (0, 0, 0, 0.0)]


def test_passes_match_brute_force_on_a_tiny_model() -> None:
    loaded = tiny_loaded("llama", seed=1, init_range=0.3)
    train, val = examples(13, seed=4), examples(11, seed=5)
    prompt = init_prompt(loaded, P, seed=0)  # type: ignore[arg-type]
    train_rows = list(encode(loaded, train, Template.PLAIN, P))  # type: ignore[arg-type]
    val_rows = list(encode(loaded, val, Template.PLAIN, P))  # type: ignore[arg-type]
    y = np.array([i % 2 for i in range(11)])
    counts = predictivity_counts(loaded, prompt, train_rows, val_rows, torch.tensor(y), batch_size=4)  # type: ignore[arg-type]
    a_train = hooked_activations(loaded, prompt, train_rows, with_completion=False)
    a_val = hooked_activations(loaded, prompt, val_rows, with_completion=False)
    np.testing.assert_allclose(counts.train_mean.numpy(), a_train.mean(axis=0), rtol=1e-5, atol=1e-5)
    expected = brute(a_train, a_val, y)
    got = counts.predictivity().numpy()
    # a value within float32 noise of the mean can fall either side: allow those cells alone to differ
    close = np.abs(a_val - a_train.mean(axis=0)[None]).min(axis=0) < 1e-4 * np.abs(a_val).max()
    assert np.array_equal(got[~close], expected[~close]) and (~close).mean() > 0.95


def test_probe_ranks_by_predictivity_and_checks_the_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loaded = tiny_loaded("qwen2", seed=0)
    train, val = examples(10, seed=1), examples(12, seed=2)
    val = [Example(e.instruction, e.completion, {**e.meta, "lab": "a" if i % 3 else "b"}, e.source) for i, e in enumerate(val)]
    prompt = init_prompt(loaded, P, seed=0)  # type: ignore[arg-type]
    config = ProbeConfig(batch_size=5, top_k=6, score=Score.PREDICTIVITY)
    result = probe(loaded, prompt, val, "lab==a", config, train_examples=train)  # type: ignore[arg-type]
    assert result.predictivity is not None
    pred = result.predictivity.predictivity()
    scores = [float(pred[n.layer, n.position, n.index]) for n in result.neurons]
    assert scores == sorted(scores, reverse=True) and scores[0] == float(pred.amax())
    assert all(n.r == pytest.approx(float(result.corr[n.layer, n.position, n.index])) for n in result.neurons)
    write_probe_run(tmp_path, replace(result, info=replace(result.info, model="tiny")))
    record = json.loads((tmp_path / PREDICTIVITY_JSON).read_text())
    assert [n["predictivity"] for n in record["neurons"]] == pytest.approx(scores)
    assert record["n_positive"] == 8 and 0 <= record["agreement"]["top_k_overlap"] <= 6
    with pytest.raises(UsageError):
        probe(loaded, prompt, val, "score", config, train_examples=train)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        probe(loaded, prompt, val, "lab==a", config)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        binary_labels(torch.tensor([0.0, 2.0]))


def test_cli_rejects_a_non_binary_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_data(tmp_path / "d.jsonl", 30, 0)
    code, text = run_main(["probe", "--data", str(data), "--metric", "size", "--score", "predictivity", "--out", str(tmp_path / "R")], capsys)
    assert code == 2 and "predictivity" in text

