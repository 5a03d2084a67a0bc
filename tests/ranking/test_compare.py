"""skn compare: the overlap maths against scipy and enumeration, and every figure against a brute-force
recomputation from two runs' stats.safetensors (a holdout run is compared on its selection fold's r, the one
it ranked by; a run without one on all examples), the passing counts included."""

from __future__ import annotations

from dataclasses import replace

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from skn.files.probe_files import write_probe_run
from skn.engine.api import probe
from skn.engine.probe_config import ProbeConfig
from skn.ranking.compare import compare_runs, scatter_figure, write_comparison
from skn.errors import UsageError
from skn.ranking.overlap import chance_jaccard, chance_overlap_pmf, consensus_min, spearman, top_k_flat
from skn.training.prompt import init_prompt

from helpers import length_examples as examples, tiny_loaded


def test_chance_jaccard_by_enumeration() -> None:
    m, k = 7, 3
    subsets = list(itertools.combinations(range(m), k))
    expected = np.mean([len(set(a) & set(b)) / len(set(a) | set(b)) for a in subsets for b in subsets])
    assert chance_jaccard(k, m) == pytest.approx(expected, rel=1e-12)
    counts = np.bincount([len(set(a) & set(b)) for a in subsets for b in subsets], minlength=k + 1)
    np.testing.assert_allclose(chance_overlap_pmf(k, m), counts / len(subsets) ** 2, rtol=1e-12)
    assert chance_overlap_pmf(0, 5).tolist() == [1.0]
    with pytest.raises(ValueError, match="between 0 and"):
        chance_overlap_pmf(6, 5)
    assert chance_jaccard(4, 4) == pytest.approx(1.0)


def _brute_spearman(x: list[float], y: list[float]) -> float:
    """Pearson r of average ranks, each rank counted by comparisons (float64 loops)."""
    def ranks(v: list[float]) -> list[float]:
        return [sum(1.0 for w in v if w < u) + (sum(1.0 for w in v if w == u) + 1.0) / 2.0 for u in v]
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return sxy / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def test_spearman_against_a_brute_force_reference_with_ties_and_nan() -> None:
    rng = np.random.default_rng(0)
    a = np.round(rng.normal(size=(3, 40)), 1)  # ties
    b = a + rng.normal(size=(3, 40))
    a[0, 3], b[2, 7] = math.nan, math.nan
    rho, n = spearman(a, b)
    keep = np.isfinite(a) & np.isfinite(b)
    assert n == int(keep.sum()) == 118
    assert rho == pytest.approx(_brute_spearman(a[keep].tolist(), b[keep].tolist()), abs=1e-12)
    assert math.isnan(spearman(np.array([1.0, 2.0]), np.array([2.0, 1.0]))[0])  # below 3 entries
    assert math.isnan(spearman(np.ones(5), np.arange(5.0))[0])  # a constant side


def test_consensus_min_needs_agreeing_signs() -> None:
    a = np.array([[0.5, -0.4, 0.3, math.nan]])
    b = np.array([[0.2, -0.6, -0.9, 0.8]])
    assert consensus_min([a, b]).tolist() == [[0.2, -0.4, 0.0, 0.0]]
    assert top_k_flat(np.array([[0.1, math.nan], [-0.3, 0.3]]), 4).tolist() == [2, 3, 0, 1]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Run 0 with a holdout (12 select, 12 confirm), run 1 on all 24 examples; both with the null."""
    loaded = tiny_loaded("qwen2")
    data = examples(24, seed=9)  # some neurons pass the null in both runs, fewer than in either (the batches follow the text since #32)
    paths = []
    for seed in (0, 1):
        out = tmp_path_factory.mktemp(f"seed{seed}")
        prompt = init_prompt(loaded, 3 + seed, seed=seed)  # type: ignore[arg-type]
        config = ProbeConfig(top_k=5, holdout=0.5 if seed == 0 else 0.0)
        result = probe(loaded, prompt, data, "length", config)  # type: ignore[arg-type]
        write_probe_run(out, replace(result, info=replace(result.info, model="tiny", seed=seed)))
        paths.append(out)
    return paths[0], paths[1]


def brute_scores(run: Path) -> dict[tuple[int, int], float]:
    """Each neuron's best-position r on the fold the run ranked by: the selection fold's where there is one."""
    tensors = load_file(str(run / "stats.safetensors"))
    corr = tensors["corr_selection" if "corr_selection" in tensors else "corr"].double().numpy()
    out = {}
    for layer in range(corr.shape[0]):
        for neuron in range(corr.shape[2]):
            values = [corr[layer, p, neuron] for p in range(corr.shape[1]) if not math.isnan(corr[layer, p, neuron])]
            out[(layer, neuron)] = max(values, key=abs) if values else math.nan
    return out


def brute_passing(run: Path, scores: dict[tuple[int, int], float]) -> set[tuple[int, int]]:
    """The neurons whose |score| exceeds the run's family-wise threshold (float32, the null's precision)."""
    threshold = np.float32(float(load_file(str(run / "stats.safetensors"))["null_threshold"]))
    return {key for key, s in scores.items() if not math.isnan(s) and np.float32(abs(s)) > threshold}


def test_every_figure_equals_brute_force(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    k = 6
    comparison = compare_runs(list(two_runs), k)
    scores = [brute_scores(p) for p in two_runs]
    keys = sorted(scores[0])
    tops = [set(sorted(keys, key=lambda key: -1.0 if math.isnan(s[key]) else -abs(s[key]))[:k]) for s in scores]
    pair = comparison.pairs[0]
    assert pair.overlap == len(tops[0] & tops[1])
    assert pair.jaccard == pytest.approx(len(tops[0] & tops[1]) / len(tops[0] | tops[1]))
    both = [key for key in keys if not (math.isnan(scores[0][key]) or math.isnan(scores[1][key]))]
    rho = _brute_spearman([scores[0][key] for key in both], [scores[1][key] for key in both])
    assert pair.spearman == pytest.approx(rho, abs=1e-9) and pair.n_spearman == len(both)
    m = len(keys)
    assert pair.jaccard_chance == pytest.approx(
        sum(math.comb(k, j) * math.comb(m - k, k - j) / math.comb(m, k) * j / (2 * k - j) for j in range(k + 1)), rel=1e-9)

    def consensus(key: tuple[int, int]) -> float:
        a, b = scores[0][key], scores[1][key]
        if math.isnan(a) or math.isnan(b) or a * b <= 0:
            return 0.0
        return math.copysign(min(abs(a), abs(b)), a)

    expected = sorted(keys, key=lambda key: (-abs(consensus(key)), -abs((scores[0][key] + scores[1][key]) / 2)))[:k]
    assert [(c.layer, c.index) for c in comparison.consensus] == expected
    passing = [brute_passing(p, s) for p, s in zip(two_runs, scores)]
    both = {key for key in passing[0] & passing[1] if scores[0][key] * scores[1][key] > 0}
    assert comparison.passing == (len(passing[0]), len(passing[1])) and comparison.passing_all == len(both)
    assert 0 < len(both) < min(len(passing[0]), len(passing[1]))  # the counts say something here
    for c in comparison.consensus:
        assert c.consensus_min == pytest.approx(consensus((c.layer, c.index)), abs=1e-7)
        assert c.scores == pytest.approx((scores[0][(c.layer, c.index)], scores[1][(c.layer, c.index)]), abs=1e-7)
        assert c.passes_all == ((c.layer, c.index) in both)
    assert comparison.runs[0].scored_on == "selection fold (12 examples)" and comparison.runs[1].scored_on == "24 examples (all)"
    paths = write_comparison(tmp_path / "cmp", comparison)
    written = json.loads(paths[0].read_text())
    assert written["pairs"][0]["overlap"] == pair.overlap and len(written["consensus"]) == k
    assert written["passing_all"] == len(both) and [r["n_passing"] for r in written["runs"]] == [len(p) for p in passing]
    assert [c["passes_all"] for c in written["consensus"]] == [c.passes_all for c in comparison.consensus]
    rows = list(csv.DictReader(paths[1].open()))
    assert [(int(r["layer"]), int(r["neuron"])) for r in rows] == expected
    assert paths[2].read_bytes()[:4] == b"\x89PNG"
    marked = [c for c in scatter_figure(comparison).axes[0].collections if c.get_gid() == "consensus"]
    assert len(marked) == 1 and len(marked[0].get_offsets()) == k


def test_a_run_against_itself(two_runs: tuple[Path, Path]) -> None:
    comparison = compare_runs([two_runs[0], two_runs[0]], 5)
    assert comparison.pairs[0].jaccard == 1.0 and comparison.pairs[0].spearman == pytest.approx(1.0)
    own = json.loads((two_runs[0] / "neurons.json").read_text())
    assert [(c.layer, c.index) for c in comparison.consensus] == [(n["layer"], n["neuron"]) for n in own]
    for c, n in zip(comparison.consensus, own):
        assert c.consensus_min == pytest.approx(n["r"]) and c.positions == (n["position"], n["position"])


def test_runs_of_other_models_or_metrics_are_refused(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    info = json.loads((two_runs[1] / "run.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    for f in two_runs[1].iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    (other / "run.json").write_text(json.dumps({**info, "metric": "loss"}))
    with pytest.raises(UsageError, match="metric"):
        compare_runs([two_runs[0], other])
    with pytest.raises(UsageError, match="at least two"):
        compare_runs([two_runs[0]])


def test_cli_compare(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from skn.cli.main import cli

    result = CliRunner().invoke(cli, ["compare", str(two_runs[0]), str(two_runs[1]), "--top-k", "4", "--report", "--out", str(tmp_path / "c")],
                                env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "consensus top 4" in result.output and "Jaccard" in result.output
    assert "(r on its selection fold (12 examples))" in result.output and "in every run with one sign" in result.output
    assert "passes in every run" in (tmp_path / "c" / "compare.html").read_text()
    assert {p.name for p in (tmp_path / "c").iterdir()} == {"compare.json", "compare.csv", "compare.png", "compare.html"}
    page = (tmp_path / "c" / "compare.html").read_text()
    assert "Consensus" in page and "data:image/png;base64," in page and str(two_runs[0]) in page
