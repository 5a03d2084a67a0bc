"""Rich tables of RUN/ablation.json: the ablated set against its controls, and each neuron alone.

ablation.json is read back from disk, so every string from it (its description, measures, labels) is
shown through `skn.views.console.plain`: never markup, control characters as escapes."""

from __future__ import annotations

from rich.table import Table

from skn.ablation.ablate_curve import Axis
from skn.ablation.ablate_record import AblationRecord
from skn.ablation.ablate_view import curve_rows, curve_views, describe, describe_curve, effect_rows, set_effects
from skn.views.console import plain
from skn.ablation.curve_record import CurveRecord


def _fmt(value: float | None, signed: bool = True) -> str:
    return "-" if value is None else (f"{value:+.4g}" if signed else f"{value:.4g}")


def ablation_tables(record: AblationRecord) -> list[Table]:
    summary = Table(title=plain(f"ablation: {describe(record)}"), title_justify="left")
    for name in ("measure", "unablated", "ablated effect", "controls mean", "controls std", "p"):
        summary.add_column(name, justify="left" if name == "measure" else "right", no_wrap=True)
    for r in effect_rows(record):
        summary.add_row(plain(r.measure), _fmt(r.base, False), _fmt(r.effect), _fmt(r.control_mean),
                        _fmt(r.control_std, False), _fmt(r.p, False))
    tables = [summary]
    singles = set_effects(record, "per_neuron")
    if singles:
        per = Table(title="each neuron alone: mean loss change", title_justify="left")
        per.add_column("neuron (layer.index@slot)", justify="right")
        per.add_column("loss effect", justify="right")
        for label, value in singles:
            per.add_row(plain(label), _fmt(value))
        tables.append(per)
    return tables


def curve_table(record: CurveRecord) -> Table:
    """One row per grid point: the set's loss effect, the random sets' median and 5-95%, p and Holm's p."""
    axis = "K" if record.axis is Axis.K else "S"
    table = Table(title=plain(f"ablation curve: {describe_curve(record)}"), title_justify="left")
    for name in (axis, "set effect", "random median", "random 5%", "random 95%", "p", "Holm p"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in curve_rows(record):
        table.add_row(f"{r.x:g}", _fmt(r.effect), _fmt(r.median), _fmt(r.q05), _fmt(r.q95), _fmt(r.p, False), _fmt(r.p_holm, False))
    return table


def curve_tables(record: CurveRecord) -> list[Table]:
    """`curve_table` for each curve of the file (value x where)."""
    return [curve_table(view) for view in curve_views(record)]
