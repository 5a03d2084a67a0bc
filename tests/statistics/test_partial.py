"""Confounds (skn.statistics.partial): the streamed partial r against a numpy residualise-then-correlate reference, the
Freedman-Lane null, the holdout on partial r, the bad covariates, and `skn probe --control` on a tiny model."""

from __future__ import annotations

import json
import math
from dataclasses import replace as dc
from pathlib import Path

import numpy as np
import pytest
import torch

from skn.errors import MetricError, UsageError
from skn.statistics.folds import FoldAccumulator
from skn.ranking.holdout import rank_with_holdout
from skn.statistics.null import NullAccumulator, NullConfig, SelectedRows
from skn.statistics.null_verdict import null_result, permuted_correlations
from skn.statistics.covariate_moments import CovariateAccumulator
from skn.statistics.covariates import check_controls, covariate_values, parse_controls
from skn.statistics.partial import FoldCovariates, check_metric_residual, covariate_r, covariate_stats, merge_covariates, partial_correlation
from skn.ranking.rank import Reduce, rank_neurons
from skn.statistics.stats import StatsAccumulator, correlation

from helpers import FAST, run_main, write_data


pytestmark = pytest.mark.usefixtures("one_thread")


def reference_partial(acts: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """[L, P, m] float64: residualise x and y on [1, z] by least squares, then correlate the residuals."""
    n = acts.shape[0]
    design = np.column_stack([np.ones(n), z])
    x = acts.reshape(n, -1)
    rx = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
    ry = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    r = (rx * ry[:, None]).sum(0) / np.sqrt((rx * rx).sum(0) * (ry * ry).sum(0))
    return r.reshape(acts.shape[1:])


def stream(acts: torch.Tensor, y: torch.Tensor, z: torch.Tensor, size: int, known: bool, permutations: int = 0,
           seed: int = 0, confirm: torch.Tensor | None = None) -> dict[str, object]:
    """Drive the statistics API as the probe pass does: acts [N, L, P, m] float64, y [N], z [N, q]."""
    n, layers, positions, width = acts.shape
    names = tuple(f"z{j}" for j in range(z.shape[1]))
    main: StatsAccumulator | FoldAccumulator = (StatsAccumulator(layers, positions, width) if confirm is None
                                                else FoldAccumulator(confirm, layers, positions, width))
    folds = confirm.long() if confirm is not None else torch.zeros(n, dtype=torch.long)
    cov = CovariateAccumulator(z, folds, 2 if confirm is not None else 1, layers, positions, width)
    observers: list = [cov]
    null = None
    if permutations:
        null = NullAccumulator(layers, positions, width, NullConfig(permutations, 0.05, seed),
                               covariates=z if confirm is None else z[~confirm])
        observers.append(null if confirm is None else SelectedRows(null, ~confirm))
    for o in observers:
        o.begin(n, y if known else None)
    for first in range(0, n, size):
        chunk = slice(first, min(n, first + size))
        for layer in range(layers):
            main.add_layer(layer, first, acts[chunk, layer], y[chunk])
            for o in observers:
                o.add_layer(layer, first, acts[chunk, layer], y[chunk])
        main.finish_batch(first, y[chunk])
        for o in observers:
            o.finish_batch(first, y[chunk])
    out: dict[str, object] = {"names": names, "cov": cov, "null": null, "main": main.snapshot()}
    return out


def synthetic(n: int, q: int, seed: int, offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = np.random.default_rng(seed)
    z = g.normal(size=(n, q)) * (1 + np.arange(q)) + offset
    acts = g.normal(size=(n, 2, 3, 5)) + 0.5 * z[:, :1, None, None] + offset
    y = z @ g.normal(size=q) + 0.3 * acts[:, 0, 1, 2] + g.normal(size=n) + offset
    return torch.from_numpy(acts), torch.from_numpy(y), torch.from_numpy(z)


@pytest.mark.parametrize("q", [1, 2, 3])
@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_streamed_partial_r_equals_residualised_reference(q: int, offset: float) -> None:
    acts, y, z = synthetic(203, q, seed=q, offset=offset)
    run = stream(acts, y, z, size=16, known=False)
    stats, acc = run["main"], run["cov"]
    cov = covariate_stats(run["names"], z, y, acc.fold_xz(0))
    got = partial_correlation(stats, cov).double().numpy()
    # the statistics are float64; the returned r is float32 like skn.statistics.stats.correlation, so compare the float64 path
    from skn.statistics.partial import residuals
    res = residuals(stats, cov)
    exact = (res.e_xy / torch.sqrt(res.e_xx * res.e_yy)).reshape(acts.shape[1:]).numpy()
    want = reference_partial(acts.numpy() - offset, y.numpy() - offset, z.numpy() - offset)
    assert np.abs(exact - want).max() < 1e-9
    assert np.abs(got - want).max() < 1e-6


def test_folds_merge_to_the_full_set() -> None:
    acts, y, z = synthetic(150, 2, seed=7, offset=1e6)
    confirm = torch.zeros(150, dtype=torch.bool)
    confirm[torch.randperm(150, generator=torch.Generator().manual_seed(0))[:60]] = True
    run = stream(acts, y, z, size=8, known=False, confirm=confirm)
    folds, acc = run["main"], run["cov"]
    sel = covariate_stats(run["names"], z[~confirm], y[~confirm], acc.fold_xz(0))
    conf = covariate_stats(run["names"], z[confirm], y[confirm], acc.fold_xz(1))
    full = merge_covariates(sel, conf, folds.selection, folds.confirmation, z, y)
    a = acts.numpy() - 1e6
    for stats, cov, mask in ((folds.selection, sel, ~confirm), (folds.confirmation, conf, confirm), (folds.full, full, None)):
        rows = slice(None) if mask is None else mask.numpy()
        want = reference_partial(a[rows], y.numpy()[rows] - 1e6, z.numpy()[rows] - 1e6)
        assert np.abs(partial_correlation(stats, cov).double().numpy() - want).max() < 1e-6
    ranked = rank_with_holdout(folds, 5, Reduce.ABS, 0.4, 0, FoldCovariates(sel, conf, full))
    assert torch.equal(ranked.corr, partial_correlation(folds.full, full))


def reference_freedman_lane(acts: np.ndarray, y: np.ndarray, z: np.ndarray, orders: list[np.ndarray],
                            batches: list[slice] | None) -> np.ndarray:
    """[R, L, P, m]: partial r of x with zhat + P e, e the metric's residual on [1, z], brute force."""
    n = len(y)
    design = np.column_stack([np.ones(n), z])
    fitted = design @ np.linalg.lstsq(design, y, rcond=None)[0]
    e = y - fitted
    out = []
    for r in range(orders[0].shape[0]):
        if batches is None:
            pe = e[orders[0][r]]
        else:
            pe = np.concatenate([e[b][o[r]] for b, o in zip(batches, orders)])
        out.append(reference_partial(acts, fitted + pe, z))
    return np.stack(out)


@pytest.mark.parametrize("known", [True, False])
def test_freedman_lane_null_equals_brute_force(known: bool) -> None:
    acts, y, z = synthetic(96, 2, seed=3, offset=1e6)
    run = stream(acts, y, z, size=16, known=known, permutations=19)
    stats, acc, null = run["main"], run["cov"], run["null"]
    cov = covariate_stats(run["names"], z, y, acc.fold_xz(0))
    got = permuted_correlations(null.snapshot(), stats, covariates=cov).double().numpy()
    orders = [o.numpy() for o in null.orders()]
    batches = None if known else [slice(f, min(96, f + 16)) for f in range(0, 96, 16)]
    want = reference_freedman_lane(acts.numpy() - 1e6, y.numpy() - 1e6, z.numpy() - 1e6, orders, batches)
    assert np.abs(got - want).max() < 1e-5  # the null's co-moments are float32


@pytest.mark.parametrize("known", [True, False])
def test_a_covariate_explained_metric_is_not_a_finding(known: bool) -> None:
    """metric = covariate + small noise, a cell that tracks the covariate: raw r near 1, partial r at noise,
    and the partial null (whole set, or within batches of 30) passes nothing in about 95% of seeded repetitions."""
    n, reps, hits = 120, 40, 0
    for seed in range(reps):
        g = np.random.default_rng(100 + seed)
        z = g.normal(size=(n, 1))
        acts = g.normal(size=(n, 1, 2, 20))
        acts[:, 0, 0, 0] = z[:, 0] + 0.05 * g.normal(size=n)
        y = z[:, 0] + 0.1 * g.normal(size=n)
        a, yt, zt = torch.from_numpy(acts), torch.from_numpy(y), torch.from_numpy(z)
        run = stream(a, yt, zt, size=n if known else 30, known=known, permutations=39, seed=seed)
        stats, cov = run["main"], covariate_stats(run["names"], zt, yt, run["cov"].fold_xz(0))
        raw, part = correlation(stats), partial_correlation(stats, cov)
        assert float(raw[0, 0, 0]) > 0.97
        assert abs(float(part[0, 0, 0])) < 4 / math.sqrt(n)
        neurons = rank_neurons(part, 5, Reduce.ABS)
        result = null_result(run["null"].snapshot(), stats, neurons, Reduce.ABS, 0.05, cov)
        hits += result.n_significant > 0
    assert hits <= 6  # 5% of 40 is 2; binomial(40, 0.05) exceeds 6 with probability < 0.2%


def test_a_covariate_independent_of_the_signal_leaves_r_alone() -> None:
    g = np.random.default_rng(5)
    n = 400
    z = g.normal(size=(n, 2))
    acts = g.normal(size=(n, 1, 1, 4))
    y = acts[:, 0, 0, 0] + g.normal(size=n)
    a, yt, zt = torch.from_numpy(acts), torch.from_numpy(y), torch.from_numpy(z)
    run = stream(a, yt, zt, size=32, known=False, permutations=19)
    stats, cov = run["main"], covariate_stats(run["names"], zt, yt, run["cov"].fold_xz(0))
    raw, part = float(correlation(stats)[0, 0, 0]), float(partial_correlation(stats, cov)[0, 0, 0])
    assert raw > 0.6
    assert abs(part - raw) < 2 * (1 - raw**2) / math.sqrt(n)  # well within the sampling error of r
    neurons = rank_neurons(partial_correlation(stats, cov), 2, Reduce.ABS)
    assert (neurons[0].layer, neurons[0].position, neurons[0].index) == (0, 0, 0)
    assert null_result(run["null"].snapshot(), stats, neurons, Reduce.ABS, 0.05, cov).significant[0]
    assert abs(covariate_r(cov, stats.m2_y)[0]) < 0.2


def test_bad_covariates_name_themselves() -> None:
    g = np.random.default_rng(0)
    a = torch.from_numpy(g.normal(size=30))
    with pytest.raises(UsageError, match="--control c is constant"):
        check_controls(["a", "c"], torch.stack([a, torch.full((30,), 2.0, dtype=torch.float64)], 1), None)
    with pytest.raises(UsageError, match="--control b is collinear with a"):
        check_controls(["a", "b"], torch.stack([a, 3 * a + 1], 1), None)
    binary = torch.tensor([0.0, 1.0] * 15, dtype=torch.float64)
    confirm = binary.bool()
    with pytest.raises(UsageError, match="constant .* on the selection fold"):
        check_controls(["flag"], binary.unsqueeze(1), confirm)
    with pytest.raises(MetricError, match="metric 'loss' is collinear with --control a"):
        check_metric_residual("loss", ["a"], a.unsqueeze(1), 2 * a - 1)
    with pytest.raises(UsageError, match="a covariate is a numeric field"):
        parse_controls(["loss"])
    assert [c.text for c in parse_controls(["instruction_tokens,digits", "op==add"])] == ["instruction_tokens", "digits", "op==add"]


def test_covariate_values_read_fields_and_token_counts() -> None:
    from skn.inputs.data import Example
    from skn.inputs.layout import Encoded

    examples = [Example("q", "a", {"d": 3, "op": "add"}, "f:1"), Example("q", "a", {"d": "5", "op": "mul"}, "f:2")]
    rows = [Encoded((1, 2, 3), (4, 5)), Encoded((1,), (4, 5, 6, 7))]
    z = covariate_values(parse_controls(["d,op==mul,instruction_tokens,completion_tokens"]), examples, rows)
    assert z.tolist() == [[3.0, 0.0, 3.0, 2.0], [5.0, 1.0, 1.0, 4.0]]


def test_api_probe_with_control_smoke(tmp_path: Path) -> None:
    """skn.engine.probe with ProbeConfig(control=...) on a tiny Llama: ranked by partial r, the raw r beside it."""
    import skn
    from skn.inputs.data import load_examples

    from helpers import tiny_loaded

    loaded = tiny_loaded("llama")
    examples = load_examples(str(write_data(tmp_path / "d.jsonl", 24, seed=2)))
    prompt = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    config = skn.ProbeConfig(top_k=4, n_exemplars=1, null=NullConfig(19), control=("instruction_tokens",))
    result = skn.probe(loaded, prompt, examples, "size", config)
    assert result.partial is not None and result.null is not None
    assert result.partial.names == ("instruction_tokens",)
    raw = correlation(result.stats)
    for n, r_raw in zip(result.neurons, result.partial.raw_r, strict=True):
        assert r_raw == pytest.approx(float(raw[n.layer, n.position, n.index]))
        assert n.r == pytest.approx(float(result.corr[n.layer, n.position, n.index]))
    assert not torch.equal(result.corr, raw)
    # the run directory keeps both r, and every view shows them
    from dataclasses import replace as dc_replace

    from skn.views.plots import overview_figures
    from skn.files.probe_files import write_probe_run
    from skn.files.probe_read import read_probe_run
    from skn.views.report import render_report

    out = tmp_path / "run"
    out.mkdir()
    write_probe_run(out, result)
    back = read_probe_run(out)
    assert back.partial is not None and back.partial.raw_r == pytest.approx(result.partial.raw_r, nan_ok=True)
    assert back.partial.names == ("instruction_tokens",) and torch.equal(back.corr, result.corr)
    assert back.partial.metric_r == pytest.approx(result.partial.metric_r)
    figures = {f.name: f.figure for f in overview_figures(back)}
    gids = {str(p.get_gid()) for p in figures["score_histogram"].axes[0].patches}
    assert {"hist", "raw_hist"} <= gids
    page = render_report(dc_replace(back))
    assert "raw r" in page and "partial r given instruction_tokens" in page


def test_memory_plan_counts_the_covariate_moments() -> None:
    from skn.engine.memory import Workload, plan
    from skn.models.quantize import Quantize

    from helpers import tiny_model
    from skn.engine.memory import model_shape

    shape = model_shape(tiny_model("llama").config)
    base = Workload(4, 50, 6, 5, False, False, True, null_permutations=99, folds=True)
    cells = shape.layers * 5 * shape.width
    plain = plan(shape, base, torch.float32, Quantize.NONE, torch.device("cpu"), None)
    two = plan(shape, dc(base, covariates=2), torch.float32, Quantize.NONE, torch.device("cpu"), None)
    assert two.stats_bytes - plain.stats_bytes == 8 * 2 * cells * 2 + 2 * 8 * cells * 99 + 4 * 2 * 100 * cells


@pytest.mark.slow
def test_probe_control_on_a_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`skn probe --control` end to end on the bundled model: ranking by partial r, both r in every view."""
    data = write_data(tmp_path / "d.jsonl", 120, seed=2)  # both folds hold a three-letter and a four-letter animal
    out = tmp_path / "run"
    code, text = run_main(["probe", "--data", str(data), *FAST, "--null", "19", "--holdout", "0.5",
                           "--control", "instruction_tokens", "--out", str(out)], capsys)
    assert code == 0, text
    assert "raw r" in text and "partial r given instruction_tokens" in text
    info = json.loads((out / "run.json").read_text())
    assert info["control"]["covariates"][0]["name"] == "instruction_tokens"
    neurons = json.loads((out / "neurons.json").read_text())
    assert "r_raw" in neurons[0] and "r_raw" in (out / "neurons.csv").read_text().splitlines()[0]
    code, shown = run_main(["show", str(out)], capsys)
    assert code == 0 and "raw r" in shown
    code, text = run_main(["probe", "--data", str(data), "--steps", "2", "--control", "loss", "--out", str(tmp_path / "bad")], capsys)
    assert code == 2 and "a covariate is a numeric field" in text
