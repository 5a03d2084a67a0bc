"""Rich rendering of results: the top-neuron table with its exemplars."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text
from torch import Tensor

from skn.data import Example
from skn.groups import GroupSummaries, Summary, group_key
from skn.holdout import HeldOutR, HoldoutResult, summary_from_info
from skn.null import NullResult
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
    held_out: Sequence[HeldOutR] = (),
    caption: str = "",
    null: NullResult | None = None,
) -> Table:
    """rank, layer, neuron, position, r, (with a holdout: r held out [95% interval]), and the most/least
    activating examples (activation: text)."""
    table = Table(title=title, title_justify="left", show_lines=True, caption=Text(caption) if caption else None,
                  caption_justify="left")
    for name in ("rank", "layer", "neuron", "pos", "r") + (("p",) if null is not None else ()):
        table.add_column(name, justify="right", no_wrap=True, min_width=max(len(name), 6 if name in ("r", "p") else 0))
    if held_out:
        table.add_column("r held out", justify="right", no_wrap=True)
    for name in ("most activating", "least activating"):
        table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=text_width)
    for k, neuron in enumerate(neurons):
        chosen = exemplars(activations[k], n_exemplars)

        def lines(indices: Sequence[int]) -> str:
            return "\n".join(_short(f"{float(activations[k, i]):+.3g}  {examples[i].instruction}", text_width) for i in indices)

        r = "nan" if math.isnan(neuron.r) else f"{neuron.r:+.3f}"
        p = [] if null is None else [p_text(null.p_adjusted[k], null.significant[k])]
        extra = [held_out_cell(held_out[k])] if held_out else []
        table.add_row(str(neuron.rank), str(neuron.layer), str(neuron.index), str(neuron.position), r,
                      *p, *extra, lines(chosen.most), lines(chosen.least))
    return table


def p_text(p: float, significant: bool) -> str:
    """An adjusted p-value, starred when the neuron passes the family-wise threshold."""
    return "nan" if math.isnan(p) else f"{p:.3f}" + ("*" if significant else "")


def null_line(null: NullResult | None, top_k: int) -> str:
    """One plain-text line on the family-wise null (or that there is none)."""
    if null is None:
        return "no permutation null (--null 0): nothing says which of these |r| exceed noise"
    threshold = f"{null.threshold:.3f}" if math.isfinite(null.threshold) else "unreachable"
    return (f"{null.n_significant} of {top_k} pass the family-wise null: |r| > {threshold} at alpha {null.alpha:g} "
            f"({null.permutations} {null.mode.value} permutations; p = adjusted p-value, * = passes)")


def held_out_cell(h: HeldOutR) -> str:
    """+0.412 [+0.29, +0.52]: the confirmation fold's r and its 95% interval."""
    if math.isnan(h.r_held_out):
        return "nan"
    interval = "" if math.isnan(h.low) else f"\n[{h.low:+.2f}, {h.high:+.2f}]"
    return f"{h.r_held_out:+.3f}{interval}"


def holdout_caption(holdout: HoldoutResult | None, note: str) -> str:
    """The line under the table: which r is which, and the cross-fitted replication rate."""
    if holdout is None:
        return note
    rep = holdout.replication
    rate = "n/a" if math.isnan(rep.rate) else f"{rep.rate:.0%}"
    return (
        f"r: on the {holdout.n_selection} selection examples that ranked the neurons; r held out: on the other "
        f"{holdout.n_confirmation}, with its 95% interval (quote this one).\nreplication (top {rep.top_k}, same sign "
        f"and p < {rep.alpha:g} on the other fold, both ways): {rate}"
    )


def summary_line(info: RunInfo) -> Text:
    """model, metric, N and the model's size; data and paths are shown as text, never as markup."""
    line = Text("model ")
    line.append(info.model, style="bold")
    line.append("  metric ")
    line.append(info.metric, style="bold")
    line.append(f"  N={info.n_val}  layers={info.layers} x {info.width} neurons")
    if info.weights:
        line.append(f"\n{info.weights}", style="dim")
    return line


def print_run(console: Console, info: RunInfo, neurons: Sequence[Neuron], activations: Tensor,
              examples: Sequence[Example], n_exemplars: int, holdout: HoldoutResult | None = None,
              null: NullResult | None = None) -> None:
    console.print(summary_line(info))
    # the five number columns take about 40 characters (56 with the held-out r); the two example columns share the rest
    text_width = max(16, (console.width - (56 if holdout is not None else 40) - (8 if null is not None else 0)) // 2 - 3)
    note = str(summary_from_info(info.extra).get("note", ""))
    held_out = holdout.per_neuron if holdout is not None else ()
    console.print(neuron_table(neurons, activations, examples, n_exemplars, f"top {len(neurons)} neurons", text_width,
                               held_out, holdout_caption(holdout, note), null))
    console.print(null_line(null, len(neurons)), markup=False, highlight=False)


def _group_label(value: object) -> str:
    return value if isinstance(value, str) else group_key(value)


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
            table.add_column(f"{_group_label(group.value)} (n={group.stats.count})", justify="right", no_wrap=True)
        for g in summaries.neurons:
            n = g.neuron
            table.add_row(str(n.rank), str(n.layer), str(n.index), str(n.position), f"{n.r:+.3f}",
                          *(_group_cell(group.stats) for group in g.by_field[field]))
        tables.append(table)
    return tables
