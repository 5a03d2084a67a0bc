"""Figures of a probe run, drawn from the run directory alone (`skn plot`, and the report's pictures).

Three kinds, after the paper's figures:

1. per top neuron, a kernel density estimate of its activation (at its best prompt position) for each value
   of a metadata field: do the groups separate? With a continuous metric (more than two distinct values, e.g.
   loss) also its activation against the metric, one point per example: groups cut from a continuous metric
   hide how the activation follows it;
2. the histogram of every neuron's best |r| with the top-K threshold as a dashed red line; with a holdout, the
   |r| are the selection fold's (the ones that ranked) and the top K's held-out |r| are drawn beside them as
   orange triangles: how far each falls once measured on examples that did not choose it;
3. the best |r| of each layer: where in the network the skill sits.

How each kind is drawn from arrays (and turned into PNG bytes) is skn.views.figures'; this module picks a run's values
for them, names the files and writes them.

Which field the KDEs are grouped by (`choose_grouping`) is `groups.grouping_for`'s rule.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib.figure import Figure

from skn.errors import UsageError
from skn.views.figures import (
    Array,
    activation_figure,
    caption,
    histogram_figure,
    layer_figure,
    metric_figure,
    png_bytes,
    training_figure,
)
from skn.inputs.groups import Grouping, grouping_for
from skn.ranking.rank import Neuron, best_scores, top_k_threshold
from skn.files.result import ProbeResult, RunInfo
from skn.files.rundir import write_bytes
from skn.files.probe_read import read_probe_run

if TYPE_CHECKING:  # skn.engine.activations runs the model; the figures only take its values
    from skn.engine.activations import RunActivations

PLOTS_DIR = "plots"


# ---------------------------------------------------------------- grouping


def choose_grouping(run: ProbeResult, group_by: str | None = None) -> Grouping:
    """The grouping of the run's density figures (and report): `groups.grouping_for` on the run."""
    metric = [float(v) for v in run.metric.tolist()]
    return grouping_for(run.examples, metric, run.info.metric, run.info.group_by, group_by)


# ---------------------------------------------------------------- a run's figures


def continuous_metric(metric: Array) -> bool:
    """True when the metric takes more than two distinct finite values (loss, confidence, a numeric field):
    then its groups are cuts of a scale, and the activation is also drawn against the metric itself. A 0/1
    metric's scatter would be two columns, which the groups' densities already show."""
    return int(np.unique(metric[np.isfinite(metric)]).size) > 2


def training_history(info: RunInfo) -> tuple[Mapping[str, object], ...]:
    return tuple({"step": h.step, "train_loss": h.train_loss, "val_loss": h.val_loss} for h in info.train_history)


def parse_neuron(text: str) -> tuple[int, int]:
    """`L.I` (layer L, neuron I) as two ints."""
    parts = text.strip().split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise UsageError(f"--neuron {text}: expected LAYER.INDEX, e.g. 3.117")
    return int(parts[0]), int(parts[1])


def select_neurons(run: ProbeResult, neuron: tuple[int, int] | None) -> tuple[int, ...]:
    """Rows of the run's top neurons to draw: all, or the one `neuron` names (a top neuron; any other is drawn
    from `plot_run`'s `extra`)."""
    if neuron is None:
        return tuple(range(len(run.neurons)))
    for row, n in enumerate(run.neurons):
        if (n.layer, n.index) == neuron:
            return (row,)
    top = ", ".join(f"{n.layer}.{n.index}" for n in run.neurons[:12])
    raise UsageError(
        f"--neuron {neuron[0]}.{neuron[1]} is not a top neuron of this run; activations are stored only for the "
        f"top {len(run.neurons)} ({top}{', ...' if len(run.neurons) > 12 else ''})"
    )


@dataclass(frozen=True)
class NamedFigure:
    """A figure and the file stem it is saved under."""

    name: str
    figure: Figure
    what: str = ""  # what it shows, in words (the report's alt text)


def overview_figures(run: ProbeResult) -> Iterator[NamedFigure]:
    """The run-level figures: training curve (when run.json has one), |r| histogram, |r| per layer."""
    n = len(run.examples)
    text = caption(run.info, n)
    history = training_history(run.info)
    if history:
        yield NamedFigure("training", training_figure(history, text))
    # with a holdout the neurons were ranked on the selection fold: its scores are the ones the threshold cuts
    ranked_corr = run.holdout.corr_selection if run.holdout is not None else run.corr
    scores = best_scores(ranked_corr, run.info.reduce).score.to(torch.float64).numpy()
    top_k = len(run.neurons)
    if top_k == 0:
        return
    threshold = top_k_threshold(ranked_corr, top_k, run.info.reduce)
    held_out = None
    if run.holdout is not None:
        held_out = np.array([h.r_held_out for h in run.holdout.per_neuron], dtype=np.float64)
        text = caption(run.info, n, f"ranked on the {run.holdout.n_selection} selection examples; "
                                    f"held out: the other {run.holdout.n_confirmation}")
    raw = (best_scores(run.partial.raw_corr, run.info.reduce).score.to(torch.float64).numpy().ravel()
           if run.partial is not None else None)
    yield NamedFigure("score_histogram", histogram_figure(scores.ravel(), threshold, top_k, text, held_out, run.null, raw))
    yield NamedFigure("layers", layer_figure(scores, threshold, run.neurons, text))


def _neuron_stem(neuron: Neuron) -> str:
    return f"neuron_{neuron.rank:02d}_L{neuron.layer}_N{neuron.index}"


def neuron_figure(run: ProbeResult, row: int, grouping: Grouping) -> NamedFigure:
    """The KDE figure of the run's top neuron in row `row` of neurons.json."""
    neuron = run.neurons[row]
    values = run.top_activations[row].to(torch.float64).numpy()
    figure = activation_figure(values, grouping, neuron, caption(run.info, len(run.examples), grouping.note))
    return NamedFigure(_neuron_stem(neuron), figure, f"activation density of neuron {neuron.layer}.{neuron.index}")


def metric_scatter(run: ProbeResult, row: int, grouping: Grouping) -> NamedFigure:
    """The activation of the top neuron in row `row` against the metric (stem: the KDE figure's + "_metric")."""
    neuron = run.neurons[row]
    values = run.top_activations[row].to(torch.float64).numpy()
    metric = run.metric.to(torch.float64).numpy()
    figure = metric_figure(values, metric, grouping, neuron, run.info.metric,
                           caption(run.info, len(run.examples), grouping.note))
    return NamedFigure(f"{_neuron_stem(neuron)}_metric", figure,
                       f"activation of neuron {neuron.layer}.{neuron.index} against the metric")


def neuron_figures(run: ProbeResult, row: int, grouping: Grouping) -> tuple[NamedFigure, ...]:
    """The figures of one top neuron: its densities per group, and with a continuous metric its activation
    against the metric (`continuous_metric`)."""
    density = neuron_figure(run, row, grouping)
    if not continuous_metric(run.metric.to(torch.float64).numpy()):
        return (density,)
    return density, metric_scatter(run, row, grouping)


def is_top_neuron(run: ProbeResult, neuron: tuple[int, int]) -> bool:
    return any((n.layer, n.index) == neuron for n in run.neurons)


def plot_run(
    run_dir: Path, out_dir: Path | None = None, neuron: tuple[int, int] | None = None, group_by: str | None = None,
    extra: RunActivations | None = None,
) -> tuple[Path, ...]:
    """Draw a run's figures as PNG files into `out_dir` (default RUN/plots); returns the paths written.

    `neuron` (layer, index) limits the per-neuron figures to that top neuron; the run-level figures are
    always drawn. Per top neuron: its densities, and with a continuous metric its activation against the
    metric (`neuron_figures`). `extra` (skn.engine.activations.run_activations on the run's items) draws those
    neurons instead, any neuron of the model.
    """
    run = read_probe_run(Path(run_dir))
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / PLOTS_DIR
    if extra is not None:
        if not extra.on_run_items:
            raise UsageError("skn plot draws a neuron on the run's own items (its metric and groups)")
        run = replace(run, neurons=extra.neurons, top_activations=extra.values, groups=None)
        neuron = None
    rows = select_neurons(run, neuron)
    grouping = choose_grouping(run, group_by)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    figures: Iterator[NamedFigure] = overview_figures(run)
    for named in figures:
        written.append(_save(named, out))
    for row in rows:
        written.extend(_save(named, out) for named in neuron_figures(run, row, grouping))
    return tuple(written)


def _save(named: NamedFigure, out: Path) -> Path:
    path = out / f"{named.name}.png"
    write_bytes(path, png_bytes(named.figure))
    return path
