"""Rich rendering of results: the top-neuron table with its exemplars."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text
from torch import Tensor

from skn.data import Example
from skn.groups import GroupSummaries, Summary, value_label
from skn.rank import Neuron, exemplars
from skn.result import RunInfo


def _short(text: str, width: int = 48) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def neuron_table(
    neurons: Sequence[Neuron],
    activations: Tensor,
    examples: Sequence[Example],
    n_exemplars: int,
    title: str,
    text_width: int = 48,
) -> Table:
    """rank, layer, neuron, position, r, and the most/least activating examples (activation: text)."""
    table = Table(title=title, title_justify="left", show_lines=True)
    for name in ("rank", "layer", "neuron", "pos", "r"):
        table.add_column(name, justify="right", no_wrap=True, min_width=max(len(name), 6 if name == "r" else 0))
    for name in ("most activating", "least activating"):
        table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=text_width)
    for k, neuron in enumerate(neurons):
        chosen = exemplars(activations[k], n_exemplars)

        def lines(indices: Sequence[int]) -> str:
            return "\n".join(_short(f"{float(activations[k, i]):+.3g}  {examples[i].instruction}", text_width) for i in indices)

        r = "nan" if math.isnan(neuron.r) else f"{neuron.r:+.3f}"
        table.add_row(str(neuron.rank), str(neuron.layer), str(neuron.index), str(neuron.position), r,
                      lines(chosen.most), lines(chosen.least))
    return table


def summary_line(info: RunInfo) -> Text:
    """model, metric, N and the model's size; data and paths are shown as text, never as markup."""
    line = Text("model ")
    line.append(info.model, style="bold")
    line.append("  metric ")
    line.append(info.metric, style="bold")
    line.append(f"  N={info.n_val}  layers={info.layers} x {info.width} neurons")
    return line


def print_run(console: Console, info: RunInfo, neurons: Sequence[Neuron], activations: Tensor,
              examples: Sequence[Example], n_exemplars: int) -> None:
    console.print(summary_line(info))
    # the five number columns take about 40 characters; the two example columns share the rest
    text_width = max(16, (console.width - 40) // 2 - 3)
    console.print(neuron_table(neurons, activations, examples, n_exemplars, f"top {len(neurons)} neurons", text_width))


def _group_cell(s: Summary) -> str:
    if s.count == 0:
        return "-"
    std = f" ± {s.std:.3g}" if math.isfinite(s.std) else ""
    return f"{s.mean:.3g}{std}"


def group_tables(summaries: GroupSummaries) -> list[Table]:
    """One Rich table per field: a row per top neuron, a column per value (mean ± std; n in the header)."""
    tables = []
    for field in summaries.fields:
        table = Table(title=f"activation by {field}", title_justify="left")
        for name in ("rank", "layer", "neuron", "pos", "r"):
            table.add_column(name, justify="right")
        first = summaries.neurons[0].by_field[field] if summaries.neurons else ()
        for group in first:
            table.add_column(f"{value_label(group.value)} (n={group.stats.count})", justify="right", no_wrap=True)
        for g in summaries.neurons:
            n = g.neuron
            table.add_row(str(n.rank), str(n.layer), str(n.index), str(n.position), f"{n.r:+.3f}",
                          *(_group_cell(group.stats) for group in g.by_field[field]))
        tables.append(table)
    return tables
