"""Rich rendering of results: the top-neuron table, its exemplars, the group tables and the verdict.

Every cell is a `rich.text.Text` made by `skn.views.console.plain` (data is never read as markup, and its control
characters are shown as escapes). Laid out for the console's width (80 when output goes to a pipe or a
file, or $COLUMNS), so that everything reads at 60, 80 or 200 columns and in a log file alike:

- number cells (rank, layer, neuron, pos, r, p, r held out, group means) never wrap, shrink or get cut:
  each column is as wide as its widest value; a table whose number columns do not fit the console is split
  into several tables over the same rows, the identifying columns (rank, layer, neuron, pos, r) in each;
- text wraps instead of being cut: the exemplars are a table of their own, one row per example (rank,
  most/least, activation, instruction), the instruction taking the rest of the width over as many lines as
  it needs (an instruction over EXEMPLAR_CHARS characters is cut there, with "…");
- the notes on a table (holdout, passing counts, covariates) are printed below it as plain lines;
- a run's output ends with its verdict (skn.views.verdict) and what to run next.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text
from torch import Tensor

from skn.views.console import bold, plain, text, visible
from skn.inputs.data import Example
from skn.inputs.groups import GroupSummaries, Summary, value_label
from skn.ranking.holdout import HeldOutR, HoldoutResult, summary_from_info
from skn.statistics.null_verdict import NullResult
from skn.statistics.passing import PassingCounts
from skn.statistics.partial import PartialResult, control_line
from skn.ranking.rank import Neuron, exemplars
from skn.files.result import ProbeResult, RunInfo
from skn.views.verdict import next_line, verdict_lines

NUMBER_COLUMNS = ("rank", "layer", "neuron", "pos", "r")
EXEMPLAR_CHARS = 240  # an exemplar's instruction is shown up to this many characters (a few lines at 80 columns)
EXEMPLAR_NEURONS = 3  # the terminal shows the exemplars of this many top neurons (the files and the report: all)
MIN_TEXT = 16  # the instruction column never gets narrower than this


def _short(value: str, width: int = EXEMPLAR_CHARS) -> str:
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
        table.add_column(plain(name), justify="right", no_wrap=True, width=width, min_width=width)


def fit_chunks(fixed: Sequence[int], widths: Sequence[int], console_width: int | None) -> list[list[int]]:
    """The indices of the columns `widths`, split into runs that each fit `console_width` beside the `fixed`
    columns (one column at least per run, so a column wider than the console still gets a table)."""
    chunks: list[list[int]] = [[]]
    for j, w in enumerate(widths):
        used = table_width([*fixed, *(widths[i] for i in chunks[-1]), w])
        if chunks[-1] and console_width is not None and used > console_width:
            chunks.append([])
        chunks[-1].append(j)
    return chunks


def number_tables(title: str | Text, names: Sequence[str], rows: Sequence[Sequence[str]], fixed: int,
                  console_width: int | None, show_lines: bool = False) -> list[Table]:
    """Tables of right-aligned cells that never wrap, shrink or get cut: the first `fixed` columns in every
    table, the others split over as many tables as it takes to fit `console_width` (titled "(1/2)", ...)."""
    widths = _widths(names, rows)
    chunks = fit_chunks(widths[:fixed], widths[fixed:], console_width) if len(names) > fixed else [[]]
    tables = []
    for part, chunk in enumerate(chunks):
        columns = [*range(fixed), *(fixed + j for j in chunk)]
        suffix = f" ({part + 1}/{len(chunks)})" if len(chunks) > 1 else ""
        table = Table(title=text(title, suffix), title_justify="left", show_lines=show_lines)
        _add_number_columns(table, [widths[i] for i in columns], [names[i] for i in columns])
        for row in rows:
            table.add_row(*(plain(row[i]) for i in columns))
        tables.append(table)
    return tables


def neuron_tables(neurons: Sequence[Neuron], title: str, console_width: int | None = None, null: NullResult | None = None,
                  held_out: Sequence[HeldOutR] = (), raw_r: Sequence[float] = ()) -> list[Table]:
    """rank, layer, neuron, position, r, (with --control) raw r, (with the null) the adjusted p and (with a
    holdout) r held out with its 95% interval: one table, or on too narrow a console several over the same rows."""
    names, rows = number_columns(neurons, null, held_out, raw_r)
    return number_tables(title, names, rows, len(NUMBER_COLUMNS), console_width, show_lines=bool(held_out))


def exemplar_table(neurons: Sequence[Neuron], activations: Tensor, examples: Sequence[Example], n_exemplars: int) -> Table:
    """Each top neuron's most and least activating examples, one row each: the neuron's rank, most/least, the
    activation (never cut) and the instruction, which wraps over as many lines as it needs."""
    rows: list[list[tuple[str, str, str, str]]] = []
    for k, neuron in enumerate(neurons):
        chosen = exemplars(activations[k], n_exemplars)
        block: list[tuple[str, str, str, str]] = []
        for label, indices in (("most", chosen.most), ("least", chosen.least)):
            for j, i in enumerate(indices):
                block.append(("" if block else str(neuron.rank), "" if j else label, f"{float(activations[k, i]):+.3g}",
                              _short(examples[i].instruction)))
        rows.append(block)
    cells = [row for block in rows for row in block]
    widths = _widths(("rank", "", "activation"), cells)
    table = Table(title=plain("most and least activating examples of each neuron"),
                  title_justify="left", expand=True)
    table.add_column("rank", justify="right", no_wrap=True, min_width=widths[0])
    table.add_column("", no_wrap=True, min_width=widths[1])
    table.add_column("activation", justify="right", no_wrap=True, min_width=widths[2])
    table.add_column("instruction", overflow="fold", min_width=MIN_TEXT, ratio=1)
    for block in rows:
        for j, row in enumerate(block):
            table.add_row(*(plain(c) for c in row), end_section=j == len(block) - 1)
    return table


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
    """The lines under the table: which r is which, and the cross-fitted replication rate."""
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
    """The summary line, the top-neuron table and the notes under it, the null's line, then the exemplars."""
    console.print(summary_line(info))
    held_out = holdout.per_neuron if holdout is not None else ()
    raw_r = partial.raw_r if partial is not None else ()
    note = str(summary_from_info(info.extra).get("note", ""))
    for table in neuron_tables(neurons, title or f"top {len(neurons)} neurons", console.width, null, held_out, raw_r):
        console.print(table)
    caption = table_caption(holdout, note, passing)
    if partial is not None:
        caption = control_line(partial) + ("\n" + caption if caption else "")
    if caption:
        console.print(plain(caption))
    console.print(plain(null_line(null, len(neurons))))
    if n_exemplars > 0 and neurons:
        console.print(exemplar_table(neurons, activations, examples, n_exemplars))


def print_result(console: Console, result: ProbeResult, n_exemplars: int, title: str = "",
                 exemplar_neurons: int = EXEMPLAR_NEURONS) -> None:
    """A run's summary line, its top-neuron table (holdout and passing counts below it), the null's line, the
    group tables (the numbers together), then the exemplars of the first `exemplar_neurons` neurons (0: all)."""
    print_run(console, result.info, result.neurons, result.top_activations, result.examples, 0, result.holdout,
              result.null, result.passing, result.partial, title)
    if result.groups is not None:
        print_groups(console, result.groups)
    if n_exemplars > 0 and result.neurons:
        shown = len(result.neurons) if exemplar_neurons <= 0 else min(exemplar_neurons, len(result.neurons))
        console.print(exemplar_table(result.neurons[:shown], result.top_activations[:shown], result.examples, n_exemplars))
        if shown < len(result.neurons):
            console.print(plain(f"(exemplars of the top {shown} shown; all {len(result.neurons)}: skn show RUN "
                                "--exemplar-neurons 0, or the report)"))


def print_verdict(console: Console, result: ProbeResult, run: str = "", report: str = "", ablated: bool = False) -> None:
    """The run's verdict in plain words (skn.views.verdict) and, given its directory `run`, what to run next."""
    lines = verdict_lines(result) + ((next_line(run, report, ablated),) if run else ())
    console.print(plain("\n".join(lines)))


def _group_cell(s: Summary) -> str:
    if s.count == 0:
        return "-"
    std = f" ± {s.std:.3g}" if math.isfinite(s.std) else ""
    return f"{s.mean:.3g}{std}"


def group_tables(summaries: GroupSummaries, width: int | None = None) -> list[Table]:
    """Per field, Rich tables with a row per top neuron and a column per value (mean ± std; n in the
    header). With `width`, the value columns are split over as many tables as it takes to fit."""
    tables = []
    for field in summaries.fields:
        first = summaries.neurons[0].by_field[field] if summaries.neurons else ()
        headers = [_short(f"{value_label(group.value)} (n={group.stats.count})", 40) for group in first]
        rows = [_number_cells(g.neuron) + tuple(_group_cell(group.stats) for group in g.by_field[field])
                for g in summaries.neurons]
        tables += number_tables(text(f"activation by {field}"), (*NUMBER_COLUMNS, *headers), rows, len(NUMBER_COLUMNS), width)
    return tables


def print_groups(console: Console, summaries: GroupSummaries) -> None:
    for table in group_tables(summaries, console.width):
        console.print(table)
