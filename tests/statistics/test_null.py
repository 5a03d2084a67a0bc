"""The permutation null (skn.statistics.null) against a float64 brute force, and its calibration and power."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fake_run import make_run
from scipy import stats as scipy_stats

from skn.cli.main import cli
from skn.views.plots import overview_figures
from skn.views.report import render_report
from skn.files.probe_read import read_probe_run

from skn.errors import UsageError
from skn.statistics.null import NullAccumulator, NullConfig, PermutationMode, SelectedRows, buffer_rows, check_null_config
from skn.statistics.null_verdict import NullResult, null_result, verdict
from skn.ranking.rank import Neuron, Reduce, rank_neurons
from skn.statistics.stats import StatsAccumulator, correlation


pytestmark = pytest.mark.usefixtures("one_thread")


def batches(n: int, size: int) -> Iterator[slice]:
    for first in range(0, n, size):
        yield slice(first, min(n, first + size))


def stream(acts: torch.Tensor, y: torch.Tensor, size: int, known: bool, permutations: int = 99, seed: int = 0,
           reduce: Reduce = Reduce.ABS, top_k: int = 5, alpha: float = 0.05,
           buffer_bytes: int = 0) -> tuple[NullResult, tuple[Neuron, ...], NullAccumulator]:
    """Drive the statistics API as the probe pass does: acts [N, L, P, m], y [N] float64."""
    n, layers, positions, width = acts.shape
    main = StatsAccumulator(layers, positions, width)
    null = NullAccumulator(layers, positions, width, NullConfig(permutations, alpha, seed), buffer_bytes=buffer_bytes)
    null.begin(n, y if known else None)
    for chunk in batches(n, size):
        for layer in range(layers):
            main.add_layer(layer, chunk.start, acts[chunk, layer], y[chunk])
            null.add_layer(layer, chunk.start, acts[chunk, layer], y[chunk])
        main.finish_batch(chunk.start, y[chunk])
        null.finish_batch(chunk.start, y[chunk])
    stats = main.snapshot()
    neurons = rank_neurons(correlation(stats), top_k, reduce)
    return null_result(null.snapshot(), stats, neurons, reduce, alpha), neurons, null


def brute_force_r(acts: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[L, P, m] float64 Pearson r from stored activations [N, L, P, m]."""
    x = acts - acts.mean(axis=0)
    yc = y - y.mean()
    return np.einsum("nlpm,n->lpm", x, yc) / np.sqrt((x * x).sum(axis=0) * (yc * yc).sum())


def reduced_max(r: np.ndarray, reduce: Reduce) -> float:
    """max over neurons of |score|, score = r at argmax_p |r| (ABS) or max_p r (MAX)."""
    if reduce is Reduce.ABS:
        score = np.take_along_axis(r, np.abs(r).argmax(axis=1)[:, None, :], axis=1)[:, 0]
    else:
        score = r.max(axis=1)
    return float(np.abs(score).max())


@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize("reduce", [Reduce.ABS, Reduce.MAX])
@pytest.mark.parametrize("buffer_bytes", [0, 2400, 1 << 20])  # no row buffer; 20 rows (flushed mid-pass); 64
def test_maxima_equal_a_brute_force_recomputation(known: bool, reduce: Reduce, buffer_bytes: int) -> None:
    gen = torch.Generator().manual_seed(1)
    n, layers, positions, width, size = 37, 2, 3, 5, 8  # ragged: the last batch holds 5
    acts = torch.randn(n, layers, positions, width, generator=gen, dtype=torch.float64) * 3.0 + 1e6
    acts[:, 1, 2] += torch.linspace(0, 2, n, dtype=torch.float64)[:, None]  # a cell with real signal
    y = torch.distributions.Exponential(1.0).sample((n,)).to(torch.float64) + 5.0
    result, neurons, null = stream(acts, y, size, known, permutations=20, reduce=reduce, top_k=4, alpha=0.2,
                                   buffer_bytes=buffer_bytes)
    assert buffer_rows(buffer_bytes, layers, positions * width) == {0: 0, 2400: 20, 1 << 20: 64}[buffer_bytes]
    orders = null.orders()
    a, yv = acts.numpy(), y.numpy()
    expected, cells = [], []
    for r in range(20):
        if known:
            permuted = yv[orders[0][r].numpy()]
        else:
            permuted = np.concatenate([yv[chunk][order[r].numpy()] for chunk, order in zip(batches(n, size), orders, strict=True)])
        corr = brute_force_r(a, permuted)
        expected.append(reduced_max(corr, reduce))
        cells.append([abs(corr[nr.layer, nr.position, nr.index]) for nr in neurons])
    assert result.mode is (PermutationMode.WHOLE_SET if known else PermutationMode.WITHIN_BATCH)
    np.testing.assert_allclose(result.max_abs_r.numpy(), expected, atol=1e-5)
    observed = np.abs([nr.r for nr in neurons])
    hits = (np.array(cells) >= observed).sum(axis=0)
    np.testing.assert_allclose(result.p_cell, (1 + hits) / 21)
    reached = (np.array(expected)[:, None] >= observed).sum(axis=0)
    np.testing.assert_allclose(result.p_adjusted, (1 + reached) / 21)
    assert result.threshold == pytest.approx(sorted(expected, reverse=True)[math.floor(0.2 * 21) - 1], abs=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("known", [True, False])
def test_row_buffer_gives_the_unbuffered_comoments(dtype: torch.dtype, known: bool) -> None:
    """Model dtypes through the buffer (a float32 copy, or a conversion), one fold's rows picked by SelectedRows
    without a copy, and a rollback to a state saved mid-pass, as after an out-of-memory batch (state() flushes;
    load_state drops what was buffered since)."""
    gen = torch.Generator().manual_seed(11)
    n, layers, positions, width, size = 45, 2, 3, 4, 7
    acts = (torch.randn(n, layers, positions, width, generator=gen) * 2 + 50).to(dtype)
    y = torch.randn(n, generator=gen, dtype=torch.float64)
    keep = torch.rand(n, generator=gen) < 0.6

    def run(buffer_bytes: int, rollback_at: int) -> torch.Tensor:
        observer = SelectedRows(NullAccumulator(layers, positions, width, NullConfig(9, 0.1, 0), buffer_bytes=buffer_bytes), keep)
        observer.begin(n, y if known else None)
        chunks = list(batches(n, size))
        if rollback_at >= 0:  # two batches fed (and buffered) after a saved state, then rolled back and fed again
            chunks = chunks[:rollback_at + 2] + chunks[rollback_at:]
        saved, replayed = observer.state(), False
        for step, chunk in enumerate(chunks):
            if rollback_at >= 0 and step == rollback_at:
                saved = observer.state()
            if rollback_at >= 0 and step == rollback_at + 2 and not replayed:
                observer.load_state(saved)
                replayed = True
            for layer in range(layers):
                observer.add_layer(layer, chunk.start, acts[chunk, layer], y[chunk])
            observer.finish_batch(chunk.start, y[chunk])
        return observer.inner.snapshot().comoments

    plain = run(0, -1)
    assert plain.abs().max() > 0
    for buffer_bytes in (4 * layers * positions * width * 10, 1 << 20):
        for rollback_at in (-1, 3):
            torch.testing.assert_close(run(buffer_bytes, rollback_at), plain, rtol=1e-5, atol=1e-4)


def test_permutations_are_seeded() -> None:
    gen = torch.Generator().manual_seed(2)
    acts = torch.randn(30, 1, 2, 4, generator=gen)
    y = torch.randn(30, generator=gen, dtype=torch.float64)
    a, _, _ = stream(acts, y, 8, known=False, seed=3)
    b, _, _ = stream(acts, y, 8, known=False, seed=3)
    c, _, _ = stream(acts, y, 8, known=False, seed=4)
    assert torch.equal(a.max_abs_r, b.max_abs_r)
    assert not torch.equal(a.max_abs_r, c.max_abs_r)


def test_within_batch_permutations_stay_in_their_batch() -> None:
    acts = torch.randn(23, 1, 1, 3, generator=torch.Generator().manual_seed(5))
    y = torch.arange(23, dtype=torch.float64)
    _, _, null = stream(acts, y, 10, known=False, permutations=7)
    sizes = [order.shape for order in null.orders()]
    assert sizes == [(7, 10), (7, 10), (7, 3)]
    for order in null.orders():
        assert torch.equal(order.sort(dim=1).values, torch.arange(order.shape[1]).expand_as(order))


def test_verdict_threshold_and_significance_agree() -> None:
    maxima = torch.tensor([0.5, 0.9, 0.3, 0.7, 0.6, 0.4, 0.8, 0.2, 0.1], dtype=torch.float64)  # R = 9
    neurons = tuple(Neuron(k + 1, 0, k, 0, r) for k, r in enumerate([0.95, -0.85, 0.8, 0.75, math.nan]))
    result = verdict(PermutationMode.WHOLE_SET, 0.2, maxima, neurons, (0, 0, 0, 0, 0))
    # k = floor(0.2 * 10) - 1 = 1: significant when at most one maximum reaches |r|; threshold = 2nd largest
    assert result.threshold == 0.8
    assert result.p_adjusted[:4] == (0.1, 0.2, 0.3, 0.3)
    assert math.isnan(result.p_adjusted[4])
    assert result.significant == (True, True, False, False, False)
    assert result.n_significant == 2
    assert all((abs(n.r) > result.threshold) == s for n, s in zip(neurons[:4], result.significant[:4], strict=True))


def test_config_errors() -> None:
    check_null_config(NullConfig(0))
    check_null_config(NullConfig(19, 0.05))
    with pytest.raises(UsageError, match="--null 19 or more"):
        check_null_config(NullConfig(10, 0.05))
    with pytest.raises(UsageError, match="--alpha"):
        check_null_config(NullConfig(100, 1.5))
    with pytest.raises(UsageError, match="--null must not be negative"):
        check_null_config(NullConfig(-1))


def binomial_99(repetitions: int, rate: float) -> tuple[float, float]:
    low, high = scipy_stats.binom.interval(0.99, repetitions, rate)
    return float(low), float(high)


def family_wise_errors(known: bool, repetitions: int) -> int:
    """Repetitions in which some neuron passes the null although the metric is independent of every cell."""
    errors = 0
    for rep in range(repetitions):
        gen = torch.Generator().manual_seed(1000 + rep)
        n = 60
        acts = torch.randn(n, 2, 4, 50, generator=gen)
        acts[:, 0, :, :10] = acts[:, 0, :1, :10]  # correlated cells, as real neurons are
        if known:
            y = (torch.rand(n, generator=gen) < 0.3).to(torch.float64)  # a label
        else:
            y = torch.exp(1.5 * torch.randn(n, generator=gen, dtype=torch.float64))  # skewed, loss-like
        size = 16 if known else 7  # ragged batches: 60 = 3 * 16 + 12 = 8 * 7 + 4
        result, _, _ = stream(acts, y, size, known, permutations=99, seed=rep, top_k=1)
        errors += result.n_significant > 0
    return errors


@pytest.mark.parametrize("known", [True, False])
def test_family_wise_error_rate_is_calibrated(known: bool) -> None:
    repetitions = 200
    low, high = binomial_99(repetitions, 0.05)
    errors = family_wise_errors(known, repetitions)
    assert low <= errors <= high, f"{errors} of {repetitions} false positives (99% interval {low:.0f}..{high:.0f})"


def planted_run(rep: int, plant: bool, n: int = 500, cells: int = 100_000, r_true: float = 0.3) -> NullResult:
    """One layer, 10 positions x 10,000 neurons of noise; with `plant`, cell (0, 3, 12) has true r = r_true."""
    gen = torch.Generator().manual_seed(77 + rep)
    y = torch.randn(n, generator=gen, dtype=torch.float64)
    positions, width = 10, cells // 10  # the planted cell is neuron 12 of position 3
    main = StatsAccumulator(1, positions, width)
    null = NullAccumulator(1, positions, width, NullConfig(99, 0.05, rep))
    null.begin(n, y)
    for chunk in batches(n, 100):
        acts = torch.randn(chunk.stop - chunk.start, positions, width, generator=gen)
        if plant:
            signal = y[chunk].to(torch.float32)
            acts[:, 3, 12] = r_true * signal + math.sqrt(1 - r_true**2) * acts[:, 3, 12]
        main.add_layer(0, chunk.start, acts, y[chunk])
        null.add_layer(0, chunk.start, acts, y[chunk])
        main.finish_batch(chunk.start, y[chunk])
        null.finish_batch(chunk.start, y[chunk])
    stats = main.snapshot()
    neurons = rank_neurons(correlation(stats), 1)
    return null_result(null.snapshot(), stats, neurons, Reduce.ABS, 0.05)


@pytest.mark.slow
def test_power_planted_cell_is_found_and_noise_is_not() -> None:
    found = sum(planted_run(rep, plant=True).n_significant > 0 for rep in range(10))
    assert found >= 7, f"the planted r = 0.3 cell passed in {found} of 10"
    false = sum(planted_run(100 + rep, plant=False).n_significant > 0 for rep in range(20))
    assert false <= 3, f"pure noise passed in {false} of 20"


def test_power_small() -> None:
    """The power check at CI size: N = 200, 4,000 cells, a planted r = 0.45 (null 95% quantile ~0.3)."""
    found = sum(planted_run(rep, plant=True, n=200, cells=4_000, r_true=0.45).n_significant > 0 for rep in range(10))
    assert found >= 8
    false = sum(planted_run(100 + rep, plant=False, n=200, cells=4_000).n_significant > 0 for rep in range(20))
    assert false <= 3


def test_views_carry_the_null(tmp_path: Path) -> None:
    """Written and read back whole; the histogram draws the threshold; the report and show state it."""
    written = make_run(tmp_path / "RUN", with_null=True)
    assert written.null is not None and written.null.threshold == 0.85 and written.null.n_significant == 2
    back = read_probe_run(tmp_path / "RUN")
    assert back.null is not None
    assert torch.equal(back.null.max_abs_r, written.null.max_abs_r)
    assert (back.null.mode, back.null.alpha, back.null.threshold) == (PermutationMode.WHOLE_SET, 0.05, 0.85)
    assert back.null.p_adjusted == written.null.p_adjusted and back.null.significant == (True, True, False, False, False, False)
    csv_rows = (tmp_path / "RUN" / "neurons.csv").read_text().splitlines()
    assert csv_rows[1].endswith(f",{written.null.p_adjusted[0]!r},{written.null.p_cell[0]!r},true")
    figures = {named.name: named.figure for named in overview_figures(back)}
    lines = [line for line in figures["score_histogram"].axes[0].get_lines() if line.get_gid() == "null_threshold"]
    assert len(lines) == 1 and list(lines[0].get_xdata()) == pytest.approx([0.85, 0.85])
    html = render_report(back)
    assert "2 of 6 top neurons pass: |r| &gt; 0.8500 at family-wise alpha 0.05 (99 whole-set permutations" in html
    assert "p (adjusted)" in html
    shown = CliRunner().invoke(cli, ["show", str(tmp_path / "RUN")])
    assert shown.exit_code == 0, shown.output
    flat = " ".join(shown.output.split())  # Rich wraps at the terminal's width
    assert "2 of 6 pass the family-wise null: |r| > 0.850 at alpha 0.05 (99 whole-set permutations" in flat
    assert f"{written.null.p_adjusted[0]:.3f}*" in shown.output


def test_views_without_a_null_say_so(tmp_path: Path) -> None:
    make_run(tmp_path / "RUN")
    back = read_probe_run(tmp_path / "RUN")
    assert back.null is None and "p_adjusted" not in (tmp_path / "RUN" / "neurons.csv").read_text()
    figures = {named.name: named.figure for named in overview_figures(back)}
    assert not [line for line in figures["score_histogram"].axes[0].get_lines() if line.get_gid() == "null_threshold"]
    assert "none (--null 0)" in render_report(back)


def test_with_a_holdout_the_null_is_the_selection_folds() -> None:
    """Ranked on the selection fold, the family-wise null must come from those examples alone: the null of a
    holdout run equals that of a run on the selection examples only (same seed, whole-set permutations)."""
    from helpers import char_tokenizer, tiny_model

    from skn.engine.api import probe

    from skn.engine.probe_config import ProbeConfig
    from skn.inputs.data import Example
    from skn.statistics.folds import assign_folds
    from skn.models.model import wrap_loaded
    from skn.statistics.null import NullConfig
    from skn.training.prompt import init_prompt

    loaded = wrap_loaded("tiny", tiny_model("qwen2"), char_tokenizer(), torch.device("cpu"))
    data = tuple(Example(f"item {i} {'ab' * (i % 4)}", " x", {"label": i % 3 == 0}, f"gen:{i}") for i in range(40))
    prompt = init_prompt(loaded, 2, seed=0)
    null = NullConfig(50, 0.05, 3)
    held = probe(loaded, prompt, data, "label==true", ProbeConfig(top_k=3, holdout=0.5, holdout_seed=1, null=null))
    assert held.holdout is not None and held.null is not None
    selection = tuple(e for e, c in zip(data, assign_folds(data, 0.5, 1).tolist()) if not c)
    alone = probe(loaded, prompt, selection, "label==true", ProbeConfig(top_k=3, holdout=0.0, null=null))
    assert alone.null is not None
    assert [(n.layer, n.index, n.position) for n in held.neurons] == [(n.layer, n.index, n.position) for n in alone.neurons]
    np.testing.assert_allclose(held.null.max_abs_r.numpy(), alone.null.max_abs_r.numpy(), rtol=0, atol=1e-5)
