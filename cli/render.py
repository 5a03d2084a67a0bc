"""Rich rendering of results: the top-neuron table with its exemplars, and the group tables.

Every cell is a `rich.text.Text` made by `skn.console.plain` (data is never read as markup, and its control
characters are shown as escapes). The number columns (rank, layer, neuron, pos, r) are as wide as their
widest value and never shrink; the text columns take what is left of the console's width (80 when output
goes to a file, or $COLUMNS), so the tables read at 60, 80 or 200 columns and in a log file alike. Group tables that would not fit are split into several
tables over the same neurons, a slice of the groups each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text
from torch import Tensor

from skn.console import bold, plain, text, visible
from skn.data import Example
from skn.groups import GroupSummaries, Summary, value_label
from skn.holdout import HeldOutR, HoldoutResult, summary_from_info
from skn.null import NullResult
from skn.passing import PassingCounts
from skn.partial import PartialResult, control_line
from skn.rank import Neuron, exemplars
from skn.result import ProbeResult, RunInfo

NUMBER_COLUMNS = ("rank", "layer", "neuron", "pos", "r")
MIN_TEXT = 12  # below this per text column, most and least activating share one column


def _short(value: str, width: int = 48) -> str:
    flat = visible(" ".join(value.split()))
    return flat if len(flat) <= width else flat[: max(width - 1, 0)] + "…"


def _r_text(r: float) -> str:
    return "nan" if math.isnan(r) else f"{r:+.3f}"


def _number_cells(n: Neuron) -> tuple[str, ...]:
    return str(n.rank), str(n.layer), str(n.index), str(n.position), _r_text(n.r)


def p_text(p: float, significant: bool) -> str:
    """An adjusted p-value, starred when the neuron passes the family-wise threshold."""
    return "nan" if math.isnan(p) else f"{p:.3f}" + ("*" if significant else "")


def held_out_cell(h: HeldOutR) -> str:
    """+0.412 and [+0.29, +0.52] below: the confirmation fold's r and its 95% interval."""
    if math.isnan(h.r_held_out):
        return "nan"
    interval = "" if math.isnan(h.low) else f"\n[{h.low:+.2f}, {h.high:+.2f}]"
    return f"{h.r_held_out:+.3f}{interval}"


def number_columns(
    neurons: Sequence[Neuron], null: NullResult | None = None, held_out: Sequence[HeldOutR] = (), raw_r: Sequence[float] = ()
) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The names and cells of the columns that never shrink: rank, layer, neuron, pos, r, raw r (with
    --control, where r is the partial r), p (with the null) and r held out (with a holdout)."""
    names = (NUMBER_COLUMNS + (("raw r",) if raw_r else ()) + (("p",) if null is not None else ())
             + (("r held out",) if held_out else ()))
    rows = []
    for k, n in enumerate(neurons):
        raw = (_r_text(raw_r[k]),) if raw_r else ()
        p = (p_text(null.p_adjusted[k], null.significant[k]),) if null is not None else ()
        h = (held_out_cell(held_out[k]),) if held_out else ()
        rows.append(_number_cells(n) + raw + p + h)
    return names, rows


def _widths(names: Sequence[str], rows: Sequence[Sequence[str]]) -> tuple[int, ...]:
    return tuple(max([len(name), *(len(line) for row in rows for line in row[i].split("\n"))]) for i, name in enumerate(names))


def number_widths(neurons: Sequence[Neuron], null: NullResult | None = None, held_out: Sequence[HeldOutR] = ()) -> tuple[int, ...]:
    """The width of each number column: its widest value or header."""
    return _widths(*number_columns(neurons, null, held_out))


def table_width(widths: Sequence[int]) -> int:
    """Characters a boxed table with these column widths takes: padding 1+1 per column, one rule between."""
    return sum(w + 2 for w in widths) + len(widths) + 1


def _add_number_columns(table: Table, widths: Sequence[int], names: Sequence[str] = NUMBER_COLUMNS) -> None:
    for name, width in zip(names, widths, strict=True):
        table.add_column(name, justify="right", no_wrap=True, width=width, min_width=width)


def neuron_table(
    neurons: Sequence[Neuron],
    activations: Tensor,
    examples: Sequence[Example],
    n_exemplars: int,
    title: str,
    text_width: int = 48,
    combined: bool = False,
    null: NullResult | None = None,
    held_out: Sequence[HeldOutR] = (),
    caption: str = "",
    raw_r: Sequence[float] = (),
) -> Table:
    """rank, layer, neuron, position, r, (with the null) the adjusted p, (with a holdout) r held out with its
    95% interval, and the most/least activating examples (activation: text); `combined` puts both lists in
    one column (most first, then least) for narrow consoles."""
    table = Table(title=plain(title), title_justify="left", show_lines=True, caption=plain(caption) if caption else None,
                  caption_justify="left")
    names, number_rows = number_columns(neurons, null, held_out, raw_r)
    _add_number_columns(table, _widths(names, number_rows), names)
    headers = ("most / least activating",) if combined else ("most activating", "least activating")
    for name in headers:
        table.add_column(name, no_wrap=True, overflow="ellipsis", width=text_width, min_width=text_width)
    for k, neuron in enumerate(neurons):
        chosen = exemplars(activations[k], n_exemplars)

        def lines(indices: Sequence[int], sign: str = "") -> list[str]:
            return [_short(f"{sign}{float(activations[k, i]):+.3g}  {examples[i].instruction}", text_width) for i in indices]

        cells = [plain(c) for c in number_rows[k]]
        if combined:
            cells.append(plain("\n".join(lines(chosen.most) + lines(chosen.least))))
        else:
            cells += [plain("\n".join(lines(chosen.most))), plain("\n".join(lines(chosen.least)))]
        table.add_row(*cells)
    return table


def text_layout(console_width: int, neurons: Sequence[Neuron], null: NullResult | None = None,
                held_out: Sequence[HeldOutR] = (), raw_r: Sequence[float] = ()) -> tuple[int, bool]:
    """(width of each text column, combined?) so that the whole table fits `console_width`."""
    fixed = table_width(_widths(*number_columns(neurons, null, held_out, raw_r)))  # includes the rule after the last number column
    two = (console_width - fixed) // 2 - 3  # each text column adds padding 2 and one rule
    if two >= MIN_TEXT:
        return min(two, 72), False
    return max(console_width - fixed - 3, 4), True


def summary_line(info: RunInfo) -> Text:
    """model, metric, N and the model's size; data and paths are shown as text, never as markup."""
    line = text("model ", bold(info.model), "  metric ", bold(info.metric),
                f"  N={info.n_val}  layers={info.layers} x {info.width} neurons")
    if info.weights:
        line.append(plain(f"\n{info.weights}", style="dim"))
    return line


def null_line(null: NullResult | None, top_k: int) -> str:
    """One plain-text line on the family-wise null (or that there is none)."""
    if null is None:
        return "no permutation null (--null 0): nothing says which of these |r| exceed noise"
    threshold = f"{null.threshold:.3f}" if math.isfinite(null.threshold) else "unreachable"
    return (f"{null.n_significant} of {top_k} pass the family-wise null: |r| > {threshold} at alpha {null.alpha:g} "
            f"({null.permutations} {null.mode.value} permutations; p = adjusted p-value, * = passes)")


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


def table_caption(holdout: HoldoutResult | None, note: str, passing: PassingCounts | None) -> str:
    """The holdout's lines and, with the null, how many neurons in all pass its threshold."""
    lines = [holdout_caption(holdout, note)] + ([f"passing the null: {passing.line()}"] if passing is not None else [])
    return "\n".join(line for line in lines if line)


def print_run(console: Console, info: RunInfo, neurons: Sequence[Neuron], activations: Tensor,
              examples: Sequence[Example], n_exemplars: int, holdout: HoldoutResult | None = None,
              null: NullResult | None = None, passing: PassingCounts | None = None, partial: PartialResult | None = None,
              title: str = "") -> None:
    console.print(summary_line(info))
    held_out = holdout.per_neuron if holdout is not None else ()
    raw_r = partial.raw_r if partial is not None else ()
    note = str(summary_from_info(info.extra).get("note", ""))
    width, combined = text_layout(console.width, neurons, null, held_out, raw_r)
    caption = table_caption(holdout, note, passing)
    if partial is not None:
        caption = control_line(partial) + ("\n" + caption if caption else "")
    console.print(neuron_table(neurons, activations, examples, n_exemplars, title or f"top {len(neurons)} neurons", width,
                               combined, null, held_out, caption, raw_r))
    console.print(plain(null_line(null, len(neurons))))


def print_result(console: Console, result: ProbeResult, n_exemplars: int, title: str = "") -> None:
    """A run's summary line, its top-neuron table (holdout and passing counts in the caption) and the null's line."""
    print_run(console, result.info, result.neurons, result.top_activations, result.examples, n_exemplars, result.holdout,
              result.null, result.passing, result.partial, title)


def _group_cell(s: Summary) -> str:
    if s.count == 0:
        return "-"
    std = f" ± {s.std:.3g}" if math.isfinite(s.std) else ""
    return f"{s.mean:.3g}{std}"


def group_tables(summaries: GroupSummaries, width: int | None = None) -> list[Table]:
    """Per field, Rich tables with a row per top neuron and a column per value (mean ± std; n in the
    header). With `width`, the value columns are split over as many tables as it takes to fit."""
    tables = []
    neurons = [g.neuron for g in summaries.neurons]
    fixed = number_widths(neurons)
    for field in summaries.fields:
        first = summaries.neurons[0].by_field[field] if summaries.neurons else ()
        headers = [_short(f"{value_label(group.value)} (n={group.stats.count})", 40) for group in first]
        cells = [[_group_cell(group.stats) for group in g.by_field[field]] for g in summaries.neurons]
        col_widths = [max([len(h), *(len(row[j]) for row in cells)]) for j, h in enumerate(headers)]
        chunks: list[list[int]] = [[]]
        for j, w in enumerate(col_widths):
            used = table_width([*fixed, *(col_widths[i] for i in chunks[-1]), w])
            if chunks[-1] and width is not None and used > width:
                chunks.append([])
            chunks[-1].append(j)
        for part, chunk in enumerate(chunks):
            suffix = f" ({part + 1}/{len(chunks)})" if len(chunks) > 1 else ""
            table = Table(title=text(f"activation by {field}{suffix}"), title_justify="left")
            _add_number_columns(table, fixed)
            for j in chunk:
                table.add_column(plain(headers[j]), justify="right", no_wrap=True, width=col_widths[j], min_width=col_widths[j])
            for g, row in zip(summaries.neurons, cells, strict=True):
                table.add_row(*(plain(c) for c in _number_cells(g.neuron)), *(plain(row[j]) for j in chunk))
            tables.append(table)
    return tables


def print_groups(console: Console, summaries: GroupSummaries) -> None:
    for table in group_tables(summaries, console.width):
        console.print(table)
