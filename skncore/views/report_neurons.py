"""The report's neurons as its template takes them (skn/views/templates/report.html.j2): the sortable table of the
top K (rank, layer, neuron, position, r; the raw r beside a partial r; the null's p-values; with a holdout the
held-out r, its 95% interval and the full-set r; the mean activation of each group) and, per neuron, its
section: figures, the groups' table, its most and least activating examples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from skn.files.result import ProbeResult
from skn.inputs.groups import Grouping
from skn.ranking.rank import exemplars
from skn.statistics.null_verdict import NullResult
from skn.views.cells import Cell, Image, figure_image, num_cell, number, r_cell, text_cell
from skn.views.figures import neuron_title
from skn.views.plots import neuron_figures

Row = tuple[Cell, ...]


@dataclass(frozen=True)
class NeuronView:
    """One neuron's section of the report."""

    rank: int
    title: str
    held_out: str  # its held-out r in words; "" without a holdout
    figures: tuple[Image, ...]
    group_heads: tuple[str, ...]
    groups: tuple[Row, ...]  # per group: label, n, mean, sd of the neuron's activation
    example_heads: tuple[str, ...]
    most: tuple[Row, ...]  # its most activating examples
    least: tuple[Row, ...]


def neuron_heads(run: ProbeResult, grouping: Grouping) -> tuple[str, ...]:
    """The neuron table's column names (plain text; the template lets them wrap after _ / . -)."""
    held = run.holdout is not None and bool(run.holdout.per_neuron)
    r_head = "r (selection fold)" if held else "r"
    if _raw_r(run):
        r_head = "partial " + r_head
    return ("rank", "layer", "neuron", "position", r_head, *(("raw r",) if _raw_r(run) else ()),
            *(("p (adjusted)", "p (cell)") if run.null is not None else ()),
            *(("r held out", "95% interval", "r (all examples)") if held else ()),
            *(f"mean act. | {label}" for label in grouping.labels))


def neuron_rows(run: ProbeResult, grouping: Grouping) -> tuple[tuple[int, Row], ...]:
    """Per top neuron its rank (the table links it to the neuron's section) and the cells after the rank's."""
    held = run.holdout.per_neuron if run.holdout is not None else ()
    raw_r = _raw_r(run)
    rows = []
    for row, n in enumerate(run.neurons):
        cells = [num_cell(float(n.layer), str(n.layer)), num_cell(float(n.index), str(n.index)),
                 num_cell(float(n.position), str(n.position)), r_cell(n.r)]
        cells += [r_cell(raw_r[row])] if raw_r else []
        cells += _p_cells(run.null, row)
        if held:
            h = held[row]
            cells += [r_cell(h.r_held_out), num_cell(h.low, interval(h.low, h.high)), r_cell(h.r_full)]
        cells += [num_cell(g.mean, number(g.mean, 3)) for g in grouping.summaries(run.top_activations[row])]
        rows.append((n.rank, tuple(cells)))
    return tuple(rows)


def _raw_r(run: ProbeResult) -> tuple[float, ...]:
    return run.partial.raw_r if run.partial is not None else ()


def _p_cells(null: NullResult | None, row: int) -> list[Cell]:
    if null is None:
        return []
    adjusted = null.p_adjusted[row]
    mark = " *" if null.significant[row] else ""
    return [num_cell(adjusted, number(adjusted, 3) + mark, "pass" if null.significant[row] else ""),
            num_cell(null.p_cell[row], number(null.p_cell[row], 3))]


def interval(low: float, high: float) -> str:
    return "NaN" if math.isnan(low) else f"[{low:+.3f}, {high:+.3f}]"


def ranked_on(run: ProbeResult) -> str:
    """What the table's r was ranked on, to follow "Ranked by |r| at each neuron's best prompt position"."""
    if run.holdout is None:
        return ""
    return (f", on the {run.holdout.n_selection} selection examples; r held out is measured on the other "
            f"{run.holdout.n_confirmation}, which played no part in choosing the neuron: quote that one")


def neuron_view(run: ProbeResult, row: int, grouping: Grouping, labels: Sequence[str], count: int) -> NeuronView:
    """The section of the neuron in row `row`, with `count` most and least activating examples."""
    neuron = run.neurons[row]
    values = run.top_activations[row].to(torch.float64).numpy()
    chosen = exemplars(run.top_activations[row], count)
    figures = tuple(figure_image(named.figure, named.what, "fig") for named in neuron_figures(run, row, grouping))
    metric = run.metric.to(torch.float64).tolist()
    return NeuronView(neuron.rank, neuron_title(neuron), _held_out(run, row), figures,
                      (grouping.field, "n", "mean", "sd"), _group_rows(run.top_activations[row], grouping),
                      ("example", "activation", "metric", grouping.field, "instruction", "completion"),
                      _example_rows(run, chosen.most, values, metric, labels),
                      _example_rows(run, chosen.least, values, metric, labels))


def _held_out(run: ProbeResult, row: int) -> str:
    if run.holdout is None:
        return ""
    h = run.holdout.per_neuron[row]
    return (f"r held out {number(h.r_held_out)} {interval(h.low, h.high)} on {run.holdout.n_confirmation} examples; "
            f"r on the selection fold {number(h.r_selection)}; on all examples {number(h.r_full)}")


def _example_rows(run: ProbeResult, indices: Sequence[int], values: NDArray[np.float64], metric: Sequence[float],
                  labels: Sequence[str]) -> tuple[Row, ...]:
    return tuple((num_cell(float(index), f"{index}"), num_cell(float(values[index]), number(float(values[index]), 4)),
                  num_cell(float(metric[index])), Cell(labels[index]),
                  text_cell(run.examples[index].instruction), text_cell(run.examples[index].completion))
                 for index in indices)


def _group_rows(values: Tensor, grouping: Grouping) -> tuple[Row, ...]:
    return tuple((Cell(label), num_cell(float(g.count), str(g.count)), num_cell(g.mean, number(g.mean, 3)),
                  num_cell(g.std, number(g.std, 3)))
                 for label, g in zip(grouping.labels, grouping.summaries(values), strict=True))
