"""Issue #34 "First contact", figures and report: legends that cover nothing and leave nothing out, every
text inside its figure, the holdout table whole in its card, every pair of runs in compare.png, and the
activation against a continuous metric (the figures drawn, then measured on the rendered canvas)."""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_run import HEURISTICS, N, TOP_K, make_run
from helpers import chromium, run_chromium
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from skn.ranking.compare import RunScores, compare_scores, scatter_figure
from skn.views.compare_report import render_compare_report
from skn.statistics.folds import FoldStats
from skn.ranking.holdout import HeldOutR, HoldoutResult
from skn.views.figures import plain_text
from skn.views.plots import choose_grouping, continuous_metric, neuron_figures, overview_figures, plot_run
from skn.files.probe_files import write_probe_run
from skn.files.probe_read import read_probe_run
from skn.files.result import with_section
from skn.ranking.replication import Replication
from skn.views.report import STYLE, render_report
from skn.files.result import ProbeResult

scipy_stats = pytest.importorskip("scipy.stats")


# ---------------------------------------------------------------- runs


def holdout_run(run: ProbeResult) -> ProbeResult:
    """`run` as a holdout run would read: ranked on half the examples, the top K's held-out r beside."""
    n = len(run.examples)
    confirm = torch.zeros(n, dtype=torch.bool)
    confirm[n // 2:] = True
    folds = FoldStats(replace(run.stats, count=n - n // 2), replace(run.stats, count=n // 2), confirm)
    held = tuple(HeldOutR(0.8 * x.r, 0.8 * x.r - 0.2, 0.8 * x.r + 0.2, x.r, 0.9 * x.r) for x in run.neurons)
    result = HoldoutResult(0.5, 0, folds, run.corr, run.corr, held, Replication(len(run.neurons), 0.5, 0.5, 0.5))
    return with_section(run, "holdout", result)


def continuous_run(directory: Path) -> ProbeResult:
    """The synthetic run with the metric `loss`: one value per example, continuous, tied to neuron row 0."""
    make_run(directory / "binary")
    run = read_probe_run(directory / "binary")
    rng = np.random.default_rng(3)
    loss = 1.5 + 0.4 * run.top_activations[0].to(torch.float64).numpy() + rng.normal(0.0, 0.3, size=N)
    changed = replace(run, metric=torch.tensor(loss, dtype=torch.float64), info=replace(run.info, metric="loss"))
    write_probe_run(directory / "continuous", changed)
    return read_probe_run(directory / "continuous")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ProbeResult]:
    root = tmp_path_factory.mktemp("first_contact")
    make_run(root / "null", with_null=True)
    null = read_probe_run(root / "null")
    return {"null": null, "holdout": holdout_run(null), "continuous": continuous_run(root)}


# ---------------------------------------------------------------- measuring a drawn figure


def drawn(figure: Figure) -> Bbox:
    """Draw `figure` as png_bytes does (math text off) and return its extent in display units."""
    plain_text(figure)
    figure.canvas.draw()
    return figure.bbox


def legends(figure: Figure) -> list[Legend]:
    found = list(figure.legends) + [ax.get_legend() for ax in figure.axes if ax.get_legend() is not None]
    return [legend for legend in found if legend.get_visible()]


def labelled_texts(figure: Figure) -> list[Text]:
    """Every text a reader must see whole: titles, axis labels, annotations, legends, the caption."""
    texts: list[Text] = [t for t in (figure._supxlabel, figure._suptitle) if t is not None]  # type: ignore[attr-defined]
    for ax in figure.axes:
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]  # type: ignore[attr-defined]
    for legend in legends(figure):
        texts += [legend.get_title(), *legend.get_texts()]
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def outside(figure: Figure) -> list[str]:
    """The texts of `figure` that stick out of it, once drawn (1 px of slack)."""
    box = drawn(figure)
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    out = []
    for text in labelled_texts(figure):
        extent = text.get_window_extent(renderer)
        if extent.x0 < box.x0 - 1 or extent.y0 < box.y0 - 1 or extent.x1 > box.x1 + 1 or extent.y1 > box.y1 + 1:
            out.append(f"{text.get_text()!r} at {extent.bounds}")
    return out


# ---------------------------------------------------------------- 1. the |r| histogram's legend


@pytest.mark.parametrize("kind", ["null", "holdout"])
@pytest.mark.parametrize("name", ["score_histogram", "layers"])
def test_legend_is_whole_and_covers_no_bar(runs: dict[str, ProbeResult], kind: str, name: str) -> None:
    figure = {f.name: f.figure for f in overview_figures(runs[kind])}[name]
    box = drawn(figure)
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    (legend,) = legends(figure)
    extent = legend.get_window_extent(renderer)
    assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1, (extent, box)
    ax = figure.axes[0]
    bars = [p for p in ax.patches if p.get_height() > 0]
    assert bars
    for bar in bars:
        assert not extent.overlaps(bar.get_window_extent(renderer)), bar
    assert not extent.overlaps(ax.get_window_extent(renderer))  # above the axes: no line or marker under it either
    texts = [t.get_text() for t in legend.get_texts()]
    assert any("threshold" in t for t in texts) and all(t.strip() for t in texts)
    if kind == "holdout" and name == "score_histogram":
        assert any("held out" in t for t in texts)
    assert outside(figure) == []


def test_every_run_figure_keeps_its_texts_inside(runs: dict[str, ProbeResult]) -> None:
    """The caption of a holdout run (long) and the threshold labels near the right edge included."""
    for kind in ("holdout", "continuous"):
        run = runs[kind]
        figures = [f.figure for f in overview_figures(run)] + [f.figure for f in neuron_figures(run, 0, choose_grouping(run))]
        for figure in figures:
            assert outside(figure) == []


# ---------------------------------------------------------------- 2. the holdout table in its card


def neuron_table_html(page: str) -> str:
    start = page.index('<section class="card" id="neurons">')
    return page[start: page.index("</section>", start)]


def test_holdout_table_has_every_column_and_scrolls_inside_its_card(runs: dict[str, ProbeResult]) -> None:
    run = runs["holdout"]
    page = render_report(run)
    table = neuron_table_html(page)
    # the table sits in a box that scrolls sideways, and the style sheet says so
    assert '<div class="scroll"><table class="sortable" id="neuron-table">' in table
    for rule in (r"\.scroll \{[^}]*overflow-x: auto", r"\.card \{[^}]*overflow-x: auto"):  # nothing spills out of a card
        assert re.search(rule, STYLE), rule
    heads = [html.unescape(h.replace("<wbr>", "")) for h in re.findall(r'<th scope="col">(.*?)</th>', table)]
    assert "lexical_<wbr>overlap" in table  # a long label may wrap: its column stays narrow
    expected = ["rank", "layer", "neuron", "position", "r (selection fold)", "p (adjusted)", "p (cell)", "r held out",
                "95% interval", "r (all examples)", *(f"mean act. | {g}" for g in sorted(HEURISTICS))]
    assert heads == expected
    body = table.split("<tbody>", 1)[1]
    assert body.count("<tr>") == TOP_K
    assert all(row.count("<td") == len(expected) for row in body.split("<tr>")[1:])


MEASURE = """<script>
(function () {
  var table = document.getElementById("neuron-table");
  var box = table.parentElement, card = box.parentElement;
  var cards = Array.prototype.map.call(document.querySelectorAll(".card"), function (c) {
    return c.scrollWidth - c.clientWidth; });
  var heads = table.tHead.rows[0].cells, last = heads[heads.length - 1].getBoundingClientRect();
  document.body.setAttribute("data-layout", JSON.stringify({
    page: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    cards: Math.max.apply(null, cards),
    box: box.className, table: table.getBoundingClientRect().right, card: card.getBoundingClientRect().right,
    lastRight: last.right, boxRight: box.getBoundingClientRect().right, scrolls: box.scrollWidth > box.clientWidth,
    columns: heads.length}));
})();
</script></body>"""


def layout(binary: str, page: str, width: int, folder: Path) -> dict[str, object]:
    measured = folder / f"measure_{width}.html"
    measured.write_text(page.replace("</body>", MEASURE), encoding="utf-8")
    dumped = run_chromium(binary, folder / f"profile-{width}", f"--window-size={width},1000", "--dump-dom",
                          measured.resolve().as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    attribute = dumped.stdout.split('data-layout="', 1)[1].split('"', 1)[0].replace("&quot;", '"')
    return dict(json.loads(attribute))


def test_holdout_table_in_headless_chromium(runs: dict[str, ProbeResult], tmp_path: Path) -> None:
    """At 1400 px every column shows inside the card; at 800 px the table scrolls inside it, and the page
    never scrolls sideways. Skipped without chromium (`apt-get install -y chromium`)."""
    binary = chromium()
    if not binary:
        pytest.skip("chromium is not installed: the layout was checked in the HTML and CSS only")
    page = render_report(runs["holdout"])
    wide = layout(binary, page, 1400, tmp_path)
    assert wide["columns"] == 10 + len(HEURISTICS) and wide["box"] == "scroll"
    assert wide["page"] == 0 and wide["cards"] == 0
    assert not wide["scrolls"] and float(wide["lastRight"]) <= float(wide["card"])  # type: ignore[arg-type]
    narrow = layout(binary, page, 800, tmp_path)
    assert narrow["page"] == 0 and narrow["cards"] == 0  # wider than the card: it scrolls in its box, nothing is cut
    assert float(narrow["boxRight"]) <= float(narrow["card"])  # type: ignore[arg-type]


# ---------------------------------------------------------------- 3. compare.png: every pair


def synthetic_comparison(runs: int, seed: int = 0) -> object:
    rng = np.random.default_rng(seed)
    shared = rng.uniform(-0.8, 0.8, size=(3, 50))
    scores = []
    for i in range(runs):
        score = np.clip(shared + rng.normal(0.0, 0.2, size=shared.shape), -0.99, 0.99)
        score[0, i] = math.nan  # a neuron undefined in one run
        scores.append(RunScores(f"runs/a-rather-long-directory-name/seed-{i}", "m", "loss", score,
                                np.zeros_like(score), run_id=f"id{i}"))
    return compare_scores(scores, 5)


@pytest.mark.parametrize("count", [2, 3, 4])
def test_compare_figure_draws_every_pair_inside_the_figure(count: int) -> None:
    comparison = synthetic_comparison(count)
    figure = scatter_figure(comparison)  # type: ignore[arg-type]
    panels = [ax for ax in figure.axes if ax.get_visible()]
    pairs = comparison.pairs  # type: ignore[attr-defined]
    assert len(panels) == len(pairs) == count * (count - 1) // 2
    width = 50
    for ax, pair in zip(panels, pairs, strict=True):
        assert ax.get_title().startswith(f"run {pair.a} against run {pair.b}: Spearman {pair.spearman:.3f}")
        (points,) = [c for c in ax.collections if c.get_gid() == "neurons"]
        x = comparison.runs[pair.a].score.reshape(-1)  # type: ignore[attr-defined]
        y = comparison.runs[pair.b].score.reshape(-1)  # type: ignore[attr-defined]
        keep = np.isfinite(x) & np.isfinite(y)
        np.testing.assert_allclose(np.asarray(points.get_offsets()), np.stack([x[keep], y[keep]], axis=1))
        (marked,) = [c for c in ax.collections if c.get_gid() == "consensus"]
        flat = [c.layer * width + c.index for c in comparison.consensus]  # type: ignore[attr-defined]
        np.testing.assert_allclose(np.asarray(marked.get_offsets()), np.stack([x[flat], y[flat]], axis=1))
    assert outside(figure) == []
    (legend,) = legends(figure)
    assert "pair by pair" in legend.get_title().get_text()
    caption = figure._supxlabel.get_text()  # type: ignore[attr-defined]
    assert all(f"run {i}:" in caption for i in range(count))


def test_compare_page_shows_every_pair() -> None:
    page = render_compare_report(synthetic_comparison(3))  # type: ignore[arg-type]
    assert "Every pair of runs" in page and "Run 0 against run 1" not in page
    assert page.count('<div class="scroll"><table>') == 3


# ---------------------------------------------------------------- 4. activation against a continuous metric


def test_continuous_metric_gets_the_activation_against_the_metric(runs: dict[str, ProbeResult]) -> None:
    run = runs["continuous"]
    metric = run.metric.to(torch.float64).numpy()
    assert continuous_metric(metric) and not continuous_metric(runs["null"].metric.numpy())
    grouping = choose_grouping(run)
    density, scatter = neuron_figures(run, 0, grouping)
    assert scatter.name == density.name + "_metric" and "against the metric" in scatter.what
    ax = scatter.figure.axes[0]
    values = run.top_activations[0].to(torch.float64).numpy()
    drawn_points = {}
    for label, members in zip(grouping.labels, grouping.members, strict=True):
        (points,) = [c for c in ax.collections if c.get_gid() == f"points:{label}"]
        offsets = np.asarray(points.get_offsets())
        np.testing.assert_allclose(offsets, np.stack([metric[list(members)], values[list(members)]], axis=1), rtol=1e-6)
        drawn_points[label] = len(offsets)
    assert sum(drawn_points.values()) == N
    (fit,) = [line for line in ax.get_lines() if line.get_gid() == "fit"]
    reference = scipy_stats.linregress(metric, values)
    xs, ys = np.asarray(fit.get_xdata()), np.asarray(fit.get_ydata())
    np.testing.assert_allclose(ys, reference.intercept + reference.slope * xs, rtol=1e-9, atol=1e-9)
    assert f"r = {reference.rvalue:+.3f} over these {N} examples" in str(fit.get_label())
    assert ax.get_xlabel() == "metric: loss" and ax.get_ylabel() == f"activation at prompt position {run.neurons[0].position}"
    assert outside(scatter.figure) == []


def test_plot_and_report_draw_the_scatter_for_a_continuous_metric_only(runs: dict[str, ProbeResult], tmp_path: Path) -> None:
    for kind, expected in (("continuous", True), ("null", False)):
        run = runs[kind]
        directory = tmp_path / kind
        write_probe_run(directory, run)
        top = run.neurons[1]
        names = [p.name for p in plot_run(directory, neuron=(top.layer, top.index))]
        stem = f"neuron_02_L{top.layer}_N{top.index}"
        assert [n for n in names if n.startswith("neuron_")] == [f"{stem}.png", *([f"{stem}_metric.png"] if expected else [])]
    # the report: beside each neuron's densities (a binary run's report keeps one figure per neuron: test_report)
    page = render_report(runs["continuous"])
    sections = page.split('<section class="card neuron"')[1:]
    assert len(sections) == TOP_K
    for section, neuron in zip(sections, runs["continuous"].neurons, strict=True):
        figures = section.split('<div class="figrow">', 1)[1].split("</div>", 1)[0]
        assert figures.count("<img") == 2
        assert f'alt="activation of neuron {neuron.layer}.{neuron.index} against the metric"' in figures
