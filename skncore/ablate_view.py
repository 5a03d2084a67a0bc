"""Views of RUN/ablation.json (and RUN/ablation_curve.json) for people: the figure (the ablated set's effect on the loss against its random
controls; each neuron of the set alone) and the report's HTML section. They read the record alone."""

from __future__ import annotations

import base64
import html
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from numpy.typing import NDArray

from skn.ablate_test import DepartureTest, cannot_depart, parse_test
from skn.plots import new_figure, png_bytes

NDArrayF = NDArray[np.float64]
MEASURE_LABELS = {"loss": "loss", "metric": "metric", "accuracy": "accuracy"}


def _map(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class EffectRow:
    """One line of the summary: a measure, the ablated effect, the controls' mean, std and p."""

    measure: str
    base: float | None
    effect: float | None
    control_mean: float | None
    control_std: float | None
    p: float | None


def effect_rows(record: Mapping[str, object]) -> tuple[EffectRow, ...]:
    """The measures that exist in this record (loss always; metric and accuracy where defined)."""
    rows = []
    for m in MEASURE_LABELS:
        effect = _float(_map(record.get("effect")).get(m))
        if effect is None:
            continue
        spread = _map(_map(record.get("controls_summary")).get(m))
        rows.append(EffectRow(m, _float(_map(record.get("base")).get(m)), effect, _float(spread.get("mean")),
                              _float(spread.get("std")), _float(spread.get("p"))))
    return tuple(rows)


def set_effects(record: Mapping[str, object], key: str, measure: str = "loss") -> tuple[tuple[str, float], ...]:
    """(label, effect) for each set under `key` ("controls" or "per_neuron") where the measure exists."""
    out = []
    sets = record.get(key)
    for s in sets if isinstance(sets, Sequence) else ():
        value = _float(_map(_map(s).get("effect")).get(measure))
        if value is not None:
            out.append((str(_map(s).get("label", "")), value))
    return tuple(out)


def describe(record: Mapping[str, object]) -> str:
    """One line: what was ablated, how, on how many items, at what cost."""
    config = _map(record.get("config"))
    neurons = record.get("neurons")
    count = len(neurons) if isinstance(neurons, Sequence) else 0
    return (f"{count} neuron-slot(s) set to {config.get('value', '?')} at {config.get('where', '?')} positions, "
            f"{record.get('n_items', '?')} items{_items_from(record)}, {config.get('controls', '?')} random controls "
            f"(seed {config.get('seed', '?')}), {record.get('forwards', '?')} passes")


def _items_from(record: Mapping[str, object]) -> str:
    """' (confirmation fold)' where the items did not choose the neurons; '' for the whole set or older files."""
    return " (confirmation fold)" if record.get("items_from") == "confirmation" else ""


def ablation_figure(record: Mapping[str, object]) -> Figure:
    """Left: the control sets' loss effects (dots and box) with the ablated set's (red line, gid "ablated").
    Right: the loss effect of each neuron alone (bars, gid "neuron:LABEL")."""
    figure = new_figure(10.0, 4.0)
    left, right = figure.subplots(1, 2, width_ratios=(1, 1.4))
    controls = np.array([v for _, v in set_effects(record, "controls")], dtype=np.float64)
    effect = _float(_map(record.get("effect")).get("loss"))
    if controls.size:
        jitter = np.random.default_rng(0).uniform(-0.12, 0.12, controls.size)
        left.boxplot(controls, positions=[0.0], widths=0.5, showfliers=False)
        left.plot(jitter, controls, "o", color="0.35", ms=4, alpha=0.7, gid="controls", label=f"{controls.size} random sets")
    if effect is not None:
        left.axhline(effect, color="red", lw=2.0, gid="ablated", label=f"ablated set: {effect:+.3g}")
    left.axhline(0.0, color="0.6", lw=0.8, ls=":")
    p = _float(_map(_map(record.get("controls_summary")).get("loss")).get("p"))
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
    text = f"model: {record.get('model', '?')}  \u00b7  {describe(record)}"
    figure.supxlabel("\n".join(textwrap.wrap(text, 150)), fontsize=7.5, color="0.35", x=0.01, ha="left")
    return figure


def _fmt(value: float | None) -> str:
    return "\u2013" if value is None else f"{value:+.4g}"


def ablation_html(record: Mapping[str, object]) -> str:
    """The report's section: summary table and the figure (text escaped)."""
    esc = html.escape
    head = "<tr><th>measure</th><th>unablated</th><th>ablated effect</th><th>controls mean \u00b1 std</th><th>p</th></tr>"
    body = "".join(
        f"<tr><td>{esc(r.measure)}</td><td class=\"num\">{'' if r.base is None else f'{r.base:.4g}'}</td>"
        f"<td class=\"num\">{_fmt(r.effect)}</td><td class=\"num\">{_fmt(r.control_mean)} \u00b1 "
        f"{'' if r.control_std is None else f'{r.control_std:.3g}'}</td>"
        f"<td class=\"num\">{'' if r.p is None else f'{r.p:.3g}'}</td></tr>"
        for r in effect_rows(record)
    )
    data = base64.b64encode(png_bytes(ablation_figure(record))).decode("ascii")
    return (f'<section class="card" id="ablation"><h2>Ablation</h2><p class="sub">{esc(describe(record))}</p>'
            f"<table>{head}{body}</table>"
            f'<div class="figs"><img src="data:image/png;base64,{data}" alt="ablation effect against random controls"></div>'
            f"</section>")


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


def curve_rows(record: Mapping[str, object], measure: str = "loss") -> tuple[CurveRow, ...]:
    axis = str(record.get("axis", "k"))
    rows = []
    points = record.get("points")
    for point in points if isinstance(points, Sequence) else ():
        pt = _map(point)
        band = _map(_map(pt.get("band")).get(measure))
        x = _float(pt.get("scale")) if axis == "scale" else _float(pt.get("k"))
        rows.append(CurveRow(x if x is not None else math.nan, _float(_map(pt.get("effect")).get(measure)),
                             _float(band.get("median")), _float(band.get("q05")), _float(band.get("q95")),
                             _float(_map(_map(pt.get("controls_summary")).get(measure)).get("p")),
                             _float(_map(pt.get("p_holm")).get(measure))))
    return tuple(rows)


def departure_text(record: Mapping[str, object], note: bool = True) -> str:
    """Where the curve departs from random (or that it never does, and, with `note`, why it could not)."""
    departure = _map(record.get("departure"))
    axis = "K" if record.get("axis") == "k" else "S"
    where = (f"departs from random at {axis} = {departure.get('k') if axis == 'K' else departure.get('scale')} "
             f"(loss effect {_fmt(_float(departure.get('effect_loss')))}, Holm p {departure.get('p_holm')})"
             if departure else "never departs from random (Holm, alpha 0.05)")
    return where + f"{test_text(record)}" + (power_note(record) if note else "")


def test_text(record: Mapping[str, object]) -> str:
    """"; p: the log-t test" (or empirical) where the file says which test gave p; "" for older files."""
    test = record.get("test")
    return f"; p from the {test} test" if isinstance(test, str) else ""


def power_note(record: Mapping[str, object]) -> str:
    """" (with C controls G points cannot depart: ...)" when the test can never reach alpha, else ""."""
    config = _map(record.get("config"))
    points = record.get("points")
    g = len(points) if isinstance(points, Sequence) else 0
    c = config.get("controls")
    test = record.get("test", DepartureTest.EMPIRICAL.value)  # files before the log-t test used the empirical p
    if not isinstance(c, int) or not g or not isinstance(test, str):
        return ""
    reason = cannot_depart(parse_test(test), c, g)
    return f" ({reason})" if reason else ""


def cost_text(record: Mapping[str, object]) -> str:
    """Random sets per point, items, passes (and sets per forward where they share one)."""
    config = _map(record.get("config"))
    share = config.get("share", 1)
    shared = f" ({record.get('sets', '?')} sets, {share} per forward)" if isinstance(share, int) and share > 1 else ""
    return (f"{config.get('controls', '?')} random sets per point, {record.get('n_items', '?')} items{_items_from(record)}, "
            f"{record.get('forwards', '?')} passes{shared}")


def describe_curve(record: Mapping[str, object]) -> str:
    config = _map(record.get("config"))
    value = "scale:S" if record.get("axis") == "scale" else config.get("value", "?")
    return f"{value} at {config.get('where', '?')} positions, {cost_text(record)}; {departure_text(record)}"


def curve_views(record: Mapping[str, object]) -> tuple[Mapping[str, object], ...]:
    """One record per curve (value x where): the file's fields with that curve's config, points and
    departure. A file with one curve (or written before several) is its own view."""
    curves = record.get("curves")
    if not isinstance(curves, Sequence) or not curves:
        return (record,)
    views = []
    for entry in curves:
        e = _map(entry)
        views.append({**record, "config": {**_map(record.get("config")), **_map(e.get("config"))},
                      "points": e.get("points"), "departure": e.get("departure"), "test": e.get("test", record.get("test"))})
    return tuple(views)


def curve_title(view: Mapping[str, object]) -> str:
    """"mean at the prompt", "zero at all positions", "scale:S at the prompt"."""
    config = _map(view.get("config"))
    value = "scale:S" if view.get("axis") == "scale" else str(config.get("value", "?"))
    return f"{value} at {'the prompt' if config.get('where') == 'prompt' else 'all positions'}"


def _curve_panel(ax: Axes, view: Mapping[str, object], legend: bool) -> None:
    rows = curve_rows(view)
    xs = np.array([r.x for r in rows], dtype=np.float64)

    def col(values: Sequence[float | None]) -> NDArrayF:
        return np.array([math.nan if v is None else v for v in values], dtype=np.float64)

    ax.fill_between(xs, col([r.q05 for r in rows]), col([r.q95 for r in rows]), color="0.7", alpha=0.5, gid="band",
                    label="random sets: 5-95%")
    ax.plot(xs, col([r.median for r in rows]), color="0.35", ls="--", lw=1.4, gid="median", label="random sets: median")
    axis_k = view.get("axis") == "k"
    ax.plot(xs, col([r.effect for r in rows]), "o-", color="red", lw=2.0, gid="top", label="top K" if axis_k else "the set")
    departure = _map(view.get("departure"))
    if departure:
        x = _float(departure.get("k") if axis_k else departure.get("scale"))
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


def curve_figure(record: Mapping[str, object]) -> Figure:
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
        text = f"model: {record.get('model', '?')}  \u00b7  {describe_curve(record)}"
    else:
        text = (f"model: {record.get('model', '?')}  \u00b7  {cost_text(record)}, all curves together  \u00b7  "
                + "; ".join(f"{curve_title(v)}: {departure_text(v, note=False)}" for v in views) + power_note(views[0]))
    figure.supxlabel("\n".join(textwrap.wrap(text, 120 if cols == 1 else 180)), fontsize=7, color="0.35", x=0.01, ha="left")
    return figure


def curve_html(record: Mapping[str, object]) -> str:
    esc = html.escape
    axis = "K" if record.get("axis") == "k" else "S"
    head = f"<tr><th>{axis}</th><th>set effect</th><th>random median</th><th>random 5-95%</th><th>p</th><th>Holm p</th></tr>"
    tables = []
    for view in curve_views(record):
        body = "".join(
            f"<tr><td class=\"num\">{r.x:g}</td><td class=\"num\">{_fmt(r.effect)}</td><td class=\"num\">{_fmt(r.median)}</td>"
            f"<td class=\"num\">{_fmt(r.q05)} .. {_fmt(r.q95)}</td><td class=\"num\">{'' if r.p is None else f'{r.p:.3g}'}</td>"
            f"<td class=\"num\">{'' if r.p_holm is None else f'{r.p_holm:.3g}'}</td></tr>"
            for r in curve_rows(view)
        )
        tables.append(f"<h3>{esc(curve_title(view))}</h3><p class=\"sub\">{esc(describe_curve(view))}</p><table>{head}{body}</table>")
    data = base64.b64encode(png_bytes(curve_figure(record))).decode("ascii")
    ranking = str(record.get("ranking", "this run's |r|"))
    return (f'<section class="card" id="ablation-curve"><h2>Ablation curve</h2><p class="sub">ranking: {esc(ranking)}</p>'
            + "".join(tables)
            + f'<div class="figs"><img src="data:image/png;base64,{data}" alt="effect against {axis} over random sets"></div></section>')
