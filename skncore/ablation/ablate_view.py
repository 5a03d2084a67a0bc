"""Views of RUN/ablation.json (and RUN/ablation_curve.json) for people: the figure (the ablated set's effect on the loss against its random
controls; each neuron of the set alone) and the report's HTML section (the templates ablation.html.j2 and
ablation_curve.html.j2, skn.views.templating). They read the record alone."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from numpy.typing import NDArray

from skn.ablation.ablate_curve import Axis
from skn.ablation.ablate_record import AblationRecord
from skn.ablation.ablate_test import cannot_depart
from skn.ablation.curve_record import CurveRecord
from skn.views.cells import Cell, figure_image
from skn.views.figures import new_figure
from skn.views.templating import render

NDArrayF = NDArray[np.float64]
MEASURE_LABELS = {"loss": "loss", "metric": "metric", "accuracy": "accuracy"}


@dataclass(frozen=True)
class EffectRow:
    """One line of the summary: a measure, the ablated effect, the controls' mean, std and p."""

    measure: str
    base: float | None
    effect: float | None
    control_mean: float | None
    control_std: float | None
    p: float | None


def effect_rows(record: AblationRecord) -> tuple[EffectRow, ...]:
    """The measures that exist in this record (loss always; metric and accuracy where defined)."""
    rows = []
    for m in MEASURE_LABELS:
        effect = record.effect.get(m)
        if effect is None:
            continue
        spread = record.controls_summary.get(m)
        rows.append(EffectRow(m, record.base.get(m), effect, None if spread is None else spread.mean,
                              None if spread is None else spread.std, None if spread is None else spread.p))
    return tuple(rows)


def set_effects(record: AblationRecord, key: str, measure: str = "loss") -> tuple[tuple[str, float], ...]:
    """(label, effect) for each set under `key` ("controls" or "per_neuron") where the measure exists."""
    sets = record.controls if key == "controls" else record.per_neuron
    return tuple((s.label, value) for s in sets if (value := s.effect.get(measure)) is not None)


def describe(record: AblationRecord) -> str:
    """One line: what was ablated, how, on how many items, at what cost."""
    config = record.config
    return (f"{len(record.neurons)} neuron-slot(s) set to {config.value} at {config.where} positions, "
            f"{record.n_items} items{_items_from(record.items_from)}, {config.controls} random controls "
            f"(seed {config.seed}), {record.forwards} passes")


def _items_from(items_from: str) -> str:
    """' (confirmation fold)' where the items did not choose the neurons; '' for the whole set or older files."""
    return " (confirmation fold)" if items_from == "confirmation" else ""


def ablation_figure(record: AblationRecord) -> Figure:
    """Left: the control sets' loss effects (dots and box) with the ablated set's (red line, gid "ablated").
    Right: the loss effect of each neuron alone (bars, gid "neuron:LABEL")."""
    figure = new_figure(10.0, 4.0)
    left, right = figure.subplots(1, 2, width_ratios=(1, 1.4))
    controls = np.array([v for _, v in set_effects(record, "controls")], dtype=np.float64)
    effect = record.effect.loss
    if controls.size:
        jitter = np.random.default_rng(0).uniform(-0.12, 0.12, controls.size)
        left.boxplot(controls, positions=[0.0], widths=0.5, showfliers=False)
        left.plot(jitter, controls, "o", color="0.35", ms=4, alpha=0.7, gid="controls", label=f"{controls.size} random sets")
    if effect is not None:
        left.axhline(effect, color="red", lw=2.0, gid="ablated", label=f"ablated set: {effect:+.3g}")
    left.axhline(0.0, color="0.6", lw=0.8, ls=":")
    spread = record.controls_summary.loss
    p = None if spread is None else spread.p
    left.set_title(f"effect on the mean loss (p = {p:.3g})" if p is not None else "effect on the mean loss", fontsize=10)
    left.set_xticks([])
    left.set_ylabel("mean loss change (ablated - unablated)")
    left.legend(fontsize=8, frameon=False, loc="best")
    singles = set_effects(record, "per_neuron")
    if singles:
        labels = [label for label, _ in singles]
        values = [v for _, v in singles]
        bars = right.bar(range(len(values)), values, color=["C3" if v > 0 else "C0" for v in values])
        for bar, label in zip(bars, labels, strict=True):
            bar.set_gid(f"neuron:{label}")
        right.set_xticks(range(len(values)), labels, rotation=45, ha="right", fontsize=8)
    right.axhline(0.0, color="0.6", lw=0.8)
    right.set_title("each neuron alone (layer.neuron@slot)", fontsize=10)
    right.set_ylabel("mean loss change")
    text = f"model: {record.model}  \u00b7  {describe(record)}"
    figure.supxlabel("\n".join(textwrap.wrap(text, 150)), fontsize=7.5, color="0.35", x=0.01, ha="left")
    return figure


def _fmt(value: float | None) -> str:
    return "\u2013" if value is None else f"{value:+.4g}"


def _p(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def ablation_html(record: AblationRecord) -> str:
    """The report's section (the template ablation.html.j2): summary table and the figure."""
    rows = tuple((Cell(r.measure), Cell("" if r.base is None else f"{r.base:.4g}", "num"), Cell(_fmt(r.effect), "num"),
                  Cell(f"{_fmt(r.control_mean)} \u00b1 {'' if r.control_std is None else f'{r.control_std:.3g}'}", "num"),
                  Cell(_p(r.p), "num"))
                 for r in effect_rows(record))
    return render("ablation.html.j2", description=describe(record), rows=rows,
                  figure=figure_image(ablation_figure(record), "ablation effect against random controls"))


# ---------------------------------------------------------------- the curve (ablation_curve.json)


@dataclass(frozen=True)
class CurveRow:
    x: float  # K, or the factor S
    effect: float | None
    median: float | None
    q05: float | None
    q95: float | None
    p: float | None
    p_holm: float | None


def curve_rows(record: CurveRecord, measure: str = "loss") -> tuple[CurveRow, ...]:
    rows = []
    for point in record.points:
        band = point.band.get(measure)
        spread = point.controls_summary.get(measure)
        x = point.x(record.axis)
        rows.append(CurveRow(x if x is not None else math.nan, point.effect.get(measure),
                             None if band is None else band.median, None if band is None else band.q05,
                             None if band is None else band.q95, None if spread is None else spread.p,
                             point.p_holm.get(measure)))
    return tuple(rows)


def _axis_letter(record: CurveRecord) -> str:
    return "K" if record.axis is Axis.K else "S"


def departure_text(record: CurveRecord, note: bool = True) -> str:
    """Where the curve departs from random (or that it never does, and, with `note`, why it could not)."""
    departure = record.departure
    where = (f"departs from random at {_axis_letter(record)} = {departure.x(record.axis):g} "
             f"(loss effect {_fmt(departure.effect_loss)}, Holm p {departure.p_holm})"
             if departure is not None and departure.x(record.axis) is not None else "never departs from random (Holm, alpha 0.05)")
    return where + f"{test_text(record)}" + (power_note(record) if note else "")


def test_text(record: CurveRecord) -> str:
    """"; p: the log-t test" (or empirical) where the file says which test gave p; "" for older files."""
    return "" if record.test is None else f"; p from the {record.test.value} test"


def power_note(record: CurveRecord) -> str:
    """" (with C controls G points cannot depart: ...)" when the test can never reach alpha, else ""."""
    g = len(record.points)
    if not g:
        return ""
    reason = cannot_depart(record.test or record.config.test, record.config.controls, g)
    return f" ({reason})" if reason else ""


def cost_text(record: CurveRecord) -> str:
    """Random sets per point, items, passes (and sets per forward where they share one)."""
    share = record.config.share
    shared = f" ({record.sets} sets, {share} per forward)" if share > 1 else ""
    return (f"{record.config.controls} random sets per point, {record.n_items} items{_items_from(record.items_from)}, "
            f"{record.forwards} passes{shared}")


def describe_curve(record: CurveRecord) -> str:
    value = "scale:S" if record.axis is Axis.SCALE else record.config.value
    return f"{value} at {record.config.where} positions, {cost_text(record)}; {departure_text(record)}"


def curve_views(record: CurveRecord) -> tuple[CurveRecord, ...]:
    """One record per curve (value x where): the file's fields with that curve's config, points and
    departure. A file with one curve (or written before several) is its own view."""
    if not record.curves:
        return (record,)
    return tuple(replace(record, config=replace(record.config, value=e.value, where=e.where), points=e.points,
                         departure=e.departure, test=e.test if e.test is not None else record.test, curves=())
                 for e in record.curves)


def curve_title(view: CurveRecord) -> str:
    """"mean at the prompt", "zero at all positions", "scale:S at the prompt"."""
    value = "scale:S" if view.axis is Axis.SCALE else view.config.value
    return f"{value} at {'the prompt' if view.config.where == 'prompt' else 'all positions'}"


def _curve_panel(ax: Axes, view: CurveRecord, legend: bool) -> None:
    rows = curve_rows(view)
    xs = np.array([r.x for r in rows], dtype=np.float64)

    def col(values: Sequence[float | None]) -> NDArrayF:
        return np.array([math.nan if v is None else v for v in values], dtype=np.float64)

    ax.fill_between(xs, col([r.q05 for r in rows]), col([r.q95 for r in rows]), color="0.7", alpha=0.5, gid="band",
                    label="random sets: 5-95%")
    ax.plot(xs, col([r.median for r in rows]), color="0.35", ls="--", lw=1.4, gid="median", label="random sets: median")
    axis_k = view.axis is Axis.K
    ax.plot(xs, col([r.effect for r in rows]), "o-", color="red", lw=2.0, gid="top", label="top K" if axis_k else "the set")
    if view.departure is not None:
        x = view.departure.x(view.axis)
        if x is not None:
            ax.axvline(x, color="red", ls=":", lw=1.2, gid="departure", label="first departure (Holm)")
    if axis_k and xs.size and float(np.nanmin(xs)) > 0:
        ax.set_xscale("log")
        # plain 1, 10, 100 (the default 10^k labels go through mathtext, which some installs print raw)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set_xlabel("K (neurons ablated)" if axis_k else "S (activation multiplied by)")
    ax.set_ylabel("mean loss change")
    ax.set_title(curve_title(view), fontsize=9)
    if legend:
        ax.legend(fontsize=7.5, frameon=False, loc="best")
    ax.grid(alpha=0.25)


def curve_figure(record: CurveRecord) -> Figure:
    """One panel per curve (value x where, in the file's order): the set's loss effect against K (log axis)
    or S, over the random sets' median (gid "median") and 5-95% band (gid "band"); the set's line has gid
    "top", the first departure "departure"."""
    views = curve_views(record)
    cols = min(len(views), 2)
    rows = -(-len(views) // cols)
    figure = new_figure(7.2 if cols == 1 else 11.0, 4.4 if rows == 1 else 3.6 * rows + 0.6)
    axes = figure.subplots(rows, cols, squeeze=False)
    for n, ax in enumerate(axes.flat):
        if n < len(views):
            _curve_panel(ax, views[n], legend=n == 0)
        else:
            ax.set_visible(False)
    if len(views) == 1:
        text = f"model: {record.model}  \u00b7  {describe_curve(record)}"
    else:
        text = (f"model: {record.model}  \u00b7  {cost_text(record)}, all curves together  \u00b7  "
                + "; ".join(f"{curve_title(v)}: {departure_text(v, note=False)}" for v in views) + power_note(views[0]))
    figure.supxlabel("\n".join(textwrap.wrap(text, 120 if cols == 1 else 180)), fontsize=7, color="0.35", x=0.01, ha="left")
    return figure


def curve_html(record: CurveRecord) -> str:
    """The report's section (the template ablation_curve.html.j2): a table per curve, the figure."""
    axis = _axis_letter(record)
    curves = tuple((curve_title(view), describe_curve(view),
                    tuple((Cell(f"{r.x:g}", "num"), Cell(_fmt(r.effect), "num"), Cell(_fmt(r.median), "num"),
                           Cell(f"{_fmt(r.q05)} .. {_fmt(r.q95)}", "num"), Cell(_p(r.p), "num"), Cell(_p(r.p_holm), "num"))
                          for r in curve_rows(view)))
                   for view in curve_views(record))
    return render("ablation_curve.html.j2", ranking=record.ranking, axis=axis, curves=curves,
                  figure=figure_image(curve_figure(record), f"effect against {axis} over random sets"))
