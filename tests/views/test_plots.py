"""Figures of a run: their data checked against independent numpy/scipy computations, not only their files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_run import HEURISTICS, LAYERS, N, TOP_K, make_run
from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.lines import Line2D

from skn.cli.main import main
from skn.errors import UsageError
from skn.inputs.groups import GroupSource, Grouping, group_by_metric, metric_field
from skn.views.figures import (
    activation_figure,
    caption,
    gaussian_kde,
    histogram_figure,
    layer_figure,
    plain_text,
    scott_bandwidth,
)
from skn.views.plots import choose_grouping, neuron_figure, overview_figures, parse_neuron, plot_run
from skn.ranking.rank import Reduce, best_scores, top_k_threshold
from skn.files.result import ProbeResult, RunInfo
from skn.files.probe_read import read_probe_run

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    make_run(tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture()
def run(run_dir: Path) -> ProbeResult:
    return read_probe_run(run_dir)


def written(directory: Path, **options: object) -> ProbeResult:
    """A synthetic run written to `directory` and read back, as the viewers see it."""
    make_run(directory, **options)  # type: ignore[arg-type]
    return read_probe_run(directory)


def lines(figure: Figure, prefix: str) -> list[Line2D]:
    return [line for line in figure.axes[0].get_lines() if str(line.get_gid()).startswith(prefix)]


def kth_largest_abs_best(corr: np.ndarray, k: int) -> float:
    """Independent reference: |best r| = max over positions of |r| (NaN ignored); the K-th largest of those."""
    magnitude = np.abs(corr.astype(np.float64))
    defined = ~np.isnan(magnitude).all(axis=1)
    best = np.where(defined, np.nanmax(np.where(np.isnan(magnitude), -1.0, magnitude), axis=1), np.nan)
    finite = np.sort(best[np.isfinite(best)])[::-1]
    return float(finite[k - 1])


# ---------------------------------------------------------------- KDE


def test_kde_against_the_formula() -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(0.0, 1.0, 70), rng.normal(4.0, 0.3, 30)]) + 1e3
    grid = np.linspace(values.min() - 2, values.max() + 2, 301)
    n = values.size
    h = math.sqrt(sum((v - sum(values.tolist()) / n) ** 2 for v in values.tolist()) / (n - 1)) * n ** -0.2  # Scott's rule
    assert scott_bandwidth(values) == pytest.approx(h, rel=1e-12)
    reference = [sum(math.exp(-0.5 * ((g - v) / h) ** 2) for v in values.tolist()) / (n * h * math.sqrt(2 * math.pi))
                 for g in grid.tolist()]
    ours = gaussian_kde(values, grid)
    np.testing.assert_allclose(ours, reference, rtol=1e-10, atol=1e-14)
    assert np.trapezoid(ours, grid) == pytest.approx(1.0, abs=1e-3)


def test_bandwidth_of_degenerate_groups_is_zero() -> None:
    assert scott_bandwidth(np.array([2.5])) == 0.0
    assert scott_bandwidth(np.array([2.5, 2.5, 2.5])) == 0.0
    with pytest.raises(ValueError, match="without spread"):
        gaussian_kde(np.array([1.0]), np.linspace(0, 2, 5))
    with pytest.raises(ValueError, match="without spread"):
        gaussian_kde(np.array([2.5, 2.5, 2.5]), np.linspace(0, 2, 5))


# ---------------------------------------------------------------- grouping


def test_metric_field() -> None:
    assert metric_field("heuristic==lexical_overlap") == "heuristic"
    assert metric_field("field:loss") == "loss"
    assert metric_field("difficulty") == "difficulty"
    assert metric_field("loss") == metric_field("correct") == metric_field("python:m:f") == ""


def test_grouping_follows_the_metric_field_and_keeps_every_value(run: ProbeResult) -> None:
    grouping = choose_grouping(run)
    assert grouping.source is GroupSource.METRIC_FIELD and grouping.field == "heuristic"
    assert grouping.labels == tuple(sorted(HEURISTICS))  # all three, not only the metric's lexical_overlap
    for label, members in zip(grouping.labels, grouping.members, strict=True):
        assert {run.examples[i].meta["heuristic"] for i in members} == {label}
    assert sorted(i for m in grouping.members for i in m) == list(range(N))


def test_grouping_priority(tmp_path: Path) -> None:
    run = written(tmp_path / "a", extra_info={"group_by": ["label", "heuristic"]})
    assert choose_grouping(run).source is GroupSource.RUN
    assert choose_grouping(run).labels == ("0", "1")
    assert choose_grouping(run, "heuristic").source is GroupSource.OPTION
    with pytest.raises(UsageError, match="no example has this metadata field.*difficulty, heuristic, label"):
        choose_grouping(run, "nope")
    # a numeric field with many values is split at its median
    split = choose_grouping(run, "difficulty")
    assert [len(m) for m in split.members] == [30, 30] and split.labels[0].startswith("difficulty \u2264 29.5")


def test_grouping_falls_back_to_the_metric(tmp_path: Path) -> None:
    run = written(tmp_path / "b", metric="correct")
    grouping = choose_grouping(run)  # 0/1 metric: grouped by value
    assert grouping.source is GroupSource.METRIC_VALUE and grouping.labels == ("metric = 0", "metric = 1")
    continuous = group_by_metric([float(v) for v in np.linspace(0, 1, 21)], "metric")
    assert continuous.source is GroupSource.METRIC_MEDIAN
    assert [len(m) for m in continuous.members] == [11, 10]


# ---------------------------------------------------------------- figures


def test_activation_figure_draws_one_density_per_group(run: ProbeResult) -> None:
    grouping = choose_grouping(run)
    figure = neuron_figure(run, 0, grouping).figure
    ax = figure.axes[0]
    kde = lines(figure, "kde:")
    assert [str(line.get_gid()) for line in kde] == [f"kde:{label}" for label in grouping.labels]
    assert ax.get_xlabel() == f"activation at prompt position {run.neurons[0].position}"
    assert ax.get_ylabel().startswith("density")
    assert f"layer {run.neurons[0].layer}, neuron {run.neurons[0].index}" in ax.get_title()
    assert ax.get_legend().get_title().get_text() == "heuristic"
    values = run.top_activations[0].to(torch.float64).numpy()
    for line, members in zip(kde, grouping.members, strict=True):  # the drawn curve is scipy's KDE of the group
        x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        np.testing.assert_allclose(y, scipy_stats.gaussian_kde(values[list(members)])(x), rtol=1e-6, atol=1e-9)
    text = figure.get_supxlabel()
    assert "metric: heuristic==lexical_overlap" in text and f"N = {N}" in text and "stories260K" in text


def test_constant_group_is_a_marker_not_a_density(run: ProbeResult) -> None:
    figure = neuron_figure(run, 1, choose_grouping(run)).figure  # neuron row 1 is constant 0.25 on "subsequence"
    assert len(lines(figure, "kde:")) == 2
    (point,) = lines(figure, "point:")
    assert point.get_gid() == "point:subsequence" and list(point.get_xdata()) == pytest.approx([0.25, 0.25])
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert any("subsequence" in t and "all equal" in t and "no density" in t for t in legend)


def test_single_example_group() -> None:
    from skn.ranking.rank import Neuron

    grouping = Grouping("g", GroupSource.OPTION, ("a", "b"), ((0, 1, 2, 3), (4,)))
    figure = activation_figure(np.array([0.0, 1.0, 2.0, 0.5, 7.0]), grouping, Neuron(1, 0, 0, 0, 0.5), "cap")
    assert len(lines(figure, "kde:")) == 1
    (point,) = lines(figure, "point:")
    assert list(point.get_xdata()) == [7.0, 7.0]
    assert figure.axes[0].get_xlim()[1] > 7.0  # the marker is inside the view


@pytest.mark.parametrize("reduce", [Reduce.ABS, Reduce.MAX])
def test_histogram_threshold_is_the_kth_largest_abs_r(tmp_path: Path, reduce: Reduce) -> None:
    run = written(tmp_path / "h", extra_info={"probe_config": {"reduce": reduce.value, "top_k": TOP_K}})
    assert run.info.reduce is reduce
    figures = {f.name: f.figure for f in overview_figures(run)}
    assert set(figures) == {"training", "score_histogram", "layers"}
    figure = figures["score_histogram"]
    (threshold,) = lines(figure, "threshold")
    x = threshold.get_xdata()[0]  # type: ignore[index]
    assert x == pytest.approx(top_k_threshold(run.corr, TOP_K, reduce), abs=0)
    if reduce is Reduce.ABS:  # independent reference: the K-th largest max_k |r|
        assert x == pytest.approx(kth_largest_abs_best(run.corr.numpy(), TOP_K), abs=1e-7)
    assert threshold.get_color() == "red" and threshold.get_linestyle() == "--"
    assert f"{x:.3f}" in threshold.get_label()
    ax = figure.axes[0]
    heights = [patch.get_height() for patch in ax.patches]
    assert sum(heights) == LAYERS * 40 - LAYERS  # every neuron once, the 3 undefined ones left out
    assert ax.get_xlabel() == "best |r| over prompt positions" and ax.get_yscale() == "log"
    scores = best_scores(run.corr, reduce).score.numpy()
    assert int(np.sum(np.abs(scores[np.isfinite(scores)]) >= x)) == TOP_K  # right of the line: the top K


def test_layer_figure_bars_are_the_best_abs_r_per_layer(run: ProbeResult) -> None:
    figure = {f.name: f.figure for f in overview_figures(run)}["layers"]
    ax = figure.axes[0]
    heights = [patch.get_height() for patch in ax.patches]
    reference = np.nanmax(np.abs(run.corr.numpy().astype(np.float64)).reshape(LAYERS, -1), axis=1)
    np.testing.assert_allclose(heights, reference, rtol=1e-7)
    (threshold,) = lines(figure, "threshold")
    assert threshold.get_ydata()[0] == pytest.approx(kth_largest_abs_best(run.corr.numpy(), TOP_K), abs=1e-7)  # type: ignore[index]
    assert ax.get_xlabel() == "layer" and ax.get_ylabel() == "|r|"
    counts = sorted(t.get_text() for t in ax.texts)
    assert sum(int(t.split()[0]) for t in counts) == TOP_K


def test_training_figure_draws_the_history(run: ProbeResult) -> None:
    figure = {f.name: f.figure for f in overview_figures(run)}["training"]
    history = run.info.train_history
    assert history
    (train,) = lines(figure, "train")
    (val,) = lines(figure, "val")
    assert list(train.get_ydata()) == pytest.approx([h.train_loss for h in history])
    assert list(val.get_xdata()) == [h.step for h in history if h.val_loss is not None]
    assert figure.axes[0].get_xlabel() == "step"


def test_no_training_history_no_curve(tmp_path: Path) -> None:
    run = written(tmp_path / "n", extra_info={"train_history": []})
    assert [f.name for f in overview_figures(run)] == ["score_histogram", "layers"]


def test_figures_have_no_nan_scores() -> None:
    scores = np.array([0.2, math.nan, -0.9, 0.5])
    figure = histogram_figure(scores, 0.5, 2, caption(RunInfo(model="m", metric="loss", n_val=4, layers=1, width=4, top_k=2), 4))
    assert sum(p.get_height() for p in figure.axes[0].patches) == 3
    layer = layer_figure(np.array([[math.nan, math.nan], [0.1, -0.3]]), 0.3, (), "cap")
    assert [p.get_height() for p in layer.axes[0].patches] == pytest.approx([0.0, 0.3])


# ---------------------------------------------------------------- files and CLI


def test_plot_run_writes_readable_pngs(run_dir: Path, tmp_path: Path) -> None:
    paths = plot_run(run_dir, tmp_path / "out")
    names = [p.name for p in paths]
    assert names[:3] == ["training.png", "score_histogram.png", "layers.png"]
    assert len([n for n in names if n.startswith("neuron_")]) == TOP_K
    image = imread(str(paths[3]))
    assert image.shape[0] > 300 and image.shape[1] > 600 and float(image[..., :3].std()) > 0.05


def test_plot_one_neuron(run: ProbeResult, run_dir: Path) -> None:
    top = run.neurons[2]
    paths = plot_run(run_dir, neuron=(top.layer, top.index))
    assert [p.name for p in paths if p.name.startswith("neuron_")] == [f"neuron_03_L{top.layer}_N{top.index}.png"]
    assert paths[0].parent == run_dir / "plots"
    assert parse_neuron(" 12.345 ") == (12, 345)
    for bad in ("3", "a.b", "1.2.3", "-1.2"):
        with pytest.raises(UsageError, match="LAYER.INDEX"):
            parse_neuron(bad)


def test_cli_plot(run: ProbeResult, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    top = run.neurons[0]
    main(["plot", str(run_dir), "--neuron", f"{top.layer}.{top.index}", "--group-by", "label", "--out", str(tmp_path / "p")])
    assert (tmp_path / "p" / f"neuron_01_L{top.layer}_N{top.index}.png").is_file()
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", str(run_dir), "--neuron", "0.5"])  # not a top neuron: it needs the run's model, which is fake here
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "no such run directory" in capsys.readouterr().err


def test_histogram_log_ticks_are_plain_numbers(tmp_path: Path) -> None:
    """The log axis's tick labels survive plain_text (math text off): "10", never "$\\mathdefault{10^{1}}$"."""
    run = written(tmp_path / "t", extra_info={"probe_config": {"reduce": Reduce.ABS.value, "top_k": TOP_K}})
    figure = plain_text({f.name: f.figure for f in overview_figures(run)}["score_histogram"])
    figure.canvas.draw()
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels() if t.get_text()]
    assert labels and not any("$" in label for label in labels)
    assert "1" in labels or "10" in labels
