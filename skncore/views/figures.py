"""Figure kinds drawn from arrays, knowing nothing of run directories: the primitives and the plots they make.

The primitives: `new_figure` (a figure with its own Agg canvas), `caption` and `set_caption` (the wrapped line
under a figure), `legend_above` (a legend above the axes), `plain_text` and `png_bytes` (math text off, the PNG).
The kinds: `activation_figure` (a Gaussian KDE of one neuron's activation per group), `metric_figure` (its
activation against the metric), `histogram_figure` (every neuron's best |r|), `layer_figure` (the best |r| of each
layer) and `training_figure` (the prompt's training curve). skn.views.plots draws a run's figures with them.

The legends of the run-level figures stand above their axes (`legend_above`), never over the bars, and
constrained layout keeps every text inside the figure.

Matplotlib is used through its object API (`Figure` + `FigureCanvasAgg`) and never through pyplot, so no
global state is touched and no display is needed. The density estimate is scipy's Gaussian KDE with Scott's
bandwidth. A group with one example, or whose activations are all
equal, has no density: it is drawn as a vertical dotted line at its value, and its legend entry says so.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter
from numpy.typing import NDArray
from scipy import stats

from skn.inputs.groups import Grouping
from skn.statistics.null_verdict import NullResult
from skn.ranking.rank import Neuron
from skn.files.result import RunInfo

Array = NDArray[np.float64]

KDE_POINTS = 400
RUG_MAX = 400  # draw a rug of the individual values only for runs this small
DPI = 110
SMALL = (5.2, 4.6)  # the run-level figures, two side by side in the report
LEGEND_CHARS = 64  # legend labels wrap at this many characters (a SMALL figure's width at fontsize 8)


# ---------------------------------------------------------------- kernel density


def scott_bandwidth(values: Array) -> float:
    """Scott's rule for one dimension: sample std (ddof=1) * n^(-1/5). 0.0 for n < 2 or equal values."""
    n = int(values.size)
    if n < 2:
        return 0.0
    return float(np.std(values, ddof=1)) * math.pow(n, -0.2)


def gaussian_kde(values: Array, grid: Array) -> Array:
    """The Gaussian kernel density of `values` on `grid` with Scott's bandwidth (`scott_bandwidth`), by
    scipy.stats.gaussian_kde; values with no spread have no density (a ValueError)."""
    if not scott_bandwidth(values) > 0.0:
        raise ValueError(f"no density for {values.size} value(s) without spread")
    density: Array = np.asarray(stats.gaussian_kde(values)(grid), dtype=np.float64)
    return density


# ---------------------------------------------------------------- figures


def new_figure(width: float = 7.2, height: float = 4.4) -> Figure:
    """A figure with its own Agg canvas: no pyplot, no global state."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def caption(info: RunInfo, n: int, extra: str = "") -> str:
    """The one-line caption: model, metric and N (and `extra`); `set_caption` wraps it to the figure's width."""
    text = f"model: {info.model}  \u00b7  metric: {info.metric}  \u00b7  N = {n}"
    if extra:
        text += f"  \u00b7  {extra}"
    return text


CAPTION_POINTS_PER_CHAR = 4.2  # a generous mean character width of the 7.5 pt caption font


def set_caption(figure: Figure, text: str) -> None:
    """`text` under the figure, each of its lines wrapped to the figure's width (so none is cut)."""
    chars = max(20, int(figure.get_figwidth() * 72.0 / CAPTION_POINTS_PER_CHAR))
    wrapped = "\n".join(piece for line in text.split("\n") for piece in (textwrap.wrap(line, chars) or [""]))
    figure.supxlabel(wrapped, fontsize=7.5, color="0.35", x=0.01, ha="left")


def legend_above(figure: Figure, ax: Axes, chars: int = LEGEND_CHARS, ncols: int = 1, title: str = "",
                 title_size: float = 8.5) -> Legend:
    """The legend of `ax`'s labelled artists as a figure legend above the axes (and their title): constrained
    layout makes room for it, so it neither covers the data nor leaves the figure. Long labels are wrapped."""
    handles, labels = ax.get_legend_handles_labels()
    wrapped = ["\n".join(textwrap.wrap(label, chars)) or label for label in labels]
    # (a figure legend "outside upper center" and a suptitle overlap: give the figure's title as `title`)
    return figure.legend(handles, wrapped, loc="outside upper center", fontsize=8, frameon=False, ncols=ncols,
                         title=title or None, title_fontsize=title_size)


def neuron_title(neuron: Neuron) -> str:
    return f"#{neuron.rank}  layer {neuron.layer}, neuron {neuron.index} (prompt position {neuron.position}): r = {neuron.r:+.3f}"


def activation_figure(activations: Array, grouping: Grouping, neuron: Neuron, caption_text: str) -> Figure:
    """KDE of one neuron's activation per group. Lines carry gid "kde:LABEL" or "point:LABEL"."""
    figure = new_figure(6.6, 4.4)
    ax = figure.add_subplot()
    finite = activations[np.isfinite(activations)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    bandwidths = [scott_bandwidth(activations[list(m)]) for m in grouping.members]
    pad = max([0.05 * (high - low)] + [3.0 * b for b in bandwidths if math.isfinite(b)])
    if pad <= 0.0:
        pad = max(abs(low) * 0.1, 1.0)
    grid = np.linspace(low - pad, high + pad, KDE_POINTS)
    colors = [f"C{i % 10}" for i in range(len(grouping.labels))]
    show_rug = activations.size <= RUG_MAX
    for label, members, bandwidth, color in zip(grouping.labels, grouping.members, bandwidths, colors, strict=True):
        values = activations[list(members)]
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        if bandwidth > 0.0 and math.isfinite(bandwidth):
            density = gaussian_kde(values, grid)
            ax.plot(grid, density, color=color, lw=1.8, label=f"{label} (n={values.size})", gid=f"kde:{label}")
            ax.fill_between(grid, density, color=color, alpha=0.12, lw=0)
        else:
            why = "one example" if values.size == 1 else "all equal"
            ax.axvline(float(values[0]), color=color, ls=":", lw=2.0, gid=f"point:{label}",
                       label=f"{label} (n={values.size}, {why}: {values[0]:.3g}, no density)")
        if show_rug:
            ax.plot(values, np.zeros_like(values), "|", color=color, ms=9, alpha=0.6, gid=f"rug:{label}")
    ax.set_xlim(float(grid[0]), float(grid[-1]))
    ax.set_ylim(bottom=0.0)
    ax.set_title(neuron_title(neuron), fontsize=10.5)
    ax.set_xlabel(f"activation at prompt position {neuron.position}")
    ax.set_ylabel("density (Gaussian KDE)")
    ax.legend(title=grouping.field, fontsize=8, title_fontsize=8.5, loc="best", frameon=False)
    ax.grid(alpha=0.25)
    set_caption(figure, caption_text)
    return figure


def metric_figure(activations: Array, metric: Array, grouping: Grouping, neuron: Neuron, metric_name: str,
                  caption_text: str) -> Figure:
    """One neuron's activation against the metric, one point per example coloured as its group in the
    density figure (gid "points:LABEL"), and the least-squares line (gid "fit") with the r of the points drawn."""
    figure = new_figure(5.0, 4.4)
    ax = figure.add_subplot()
    keep = np.isfinite(activations) & np.isfinite(metric)
    size = 14.0 if keep.sum() <= 500 else 6.0 if keep.sum() <= 5000 else 2.0
    for number, (label, members) in enumerate(zip(grouping.labels, grouping.members, strict=True)):
        rows = np.asarray(members, dtype=np.int64)
        rows = rows[keep[rows]]
        ax.scatter(metric[rows], activations[rows], s=size, color=f"C{number % 10}", alpha=0.6, linewidths=0,
                   gid=f"points:{label}", label=f"{label} (n={rows.size})")
    x, y = metric[keep], activations[keep]
    if x.size > 2 and float(np.ptp(x)) > 0.0 and float(np.ptp(y)) > 0.0:
        r = float(np.corrcoef(x, y)[0, 1])
        slope, intercept = np.polyfit(x, y, 1)
        ends = np.array([float(x.min()), float(x.max())])
        ax.plot(ends, slope * ends + intercept, color="0.15", ls="--", lw=1.4, gid="fit",
                label=f"least squares: r = {r:+.3f} over these {x.size} examples")
    title = f"#{neuron.rank}  layer {neuron.layer}, neuron {neuron.index}: activation against the metric"
    ax.set_title("\n".join(textwrap.wrap(title, 56)), fontsize=10)
    ax.set_xlabel(f"metric: {metric_name}")
    ax.set_ylabel(f"activation at prompt position {neuron.position}")
    ax.grid(alpha=0.25)
    legend_above(figure, ax, chars=60, ncols=2 if len(grouping.labels) > 3 else 1, title=grouping.field)
    set_caption(figure, caption_text)
    return figure


def _mark_line(ax: Axes, text: str, x: float, height: float, color: str, right_end: float) -> None:
    """`text` beside the vertical line at `x`, at `height` (axes fraction): on its right, or on its left when
    the line stands in the last fifth of the axis (the label then stays inside the axes)."""
    left = x > 0.8 * right_end
    ax.annotate(text, xy=(x, height), xycoords=("data", "axes fraction"), xytext=(-5 if left else 5, 0),
                textcoords="offset points", ha="right" if left else "left", va="center", color=color, fontsize=9,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85})


def histogram_figure(scores: Array, threshold: float, top_k: int, caption_text: str, held_out: Array | None = None,
                     null: NullResult | None = None, raw: Array | None = None) -> Figure:
    """Histogram of every neuron's best |r| (log count axis) with the top-K threshold (gid "threshold");
    `held_out`: the top K's held-out r, drawn as triangles at their |r| (gid "held_out"); with a permutation
    null, its family-wise threshold (gid "null_threshold"); `raw` (with --control, where `scores` are partial
    r): every neuron's best raw |r|, drawn as an outline beside them (gid "raw_hist")."""
    figure = new_figure(*SMALL)
    ax = figure.add_subplot()
    magnitudes = np.abs(scores[np.isfinite(scores)])
    undefined = int(scores.size - magnitudes.size)
    top = float(magnitudes.max()) if magnitudes.size else 1.0
    noise = null.threshold if null is not None and math.isfinite(null.threshold) else None
    raw_magnitudes = np.abs(raw[np.isfinite(raw)]) if raw is not None else np.zeros(0)
    top = max(top, float(raw_magnitudes.max()) if raw_magnitudes.size else 0.0)
    bins = np.linspace(0.0, max(top, threshold, noise or 0.0) * 1.02 + 1e-12, 61)
    kind = "partial r" if raw is not None else "r"
    label = f"{magnitudes.size} neurons" + (" (partial r)" if raw is not None else "")
    ax.hist(magnitudes, bins=bins.tolist(), color="0.45", gid="hist", label=label)
    if raw is not None:
        ax.hist(raw_magnitudes, bins=bins.tolist(), histtype="step", color="C0", lw=1.4, gid="raw_hist",
                label="raw r (no covariates)")
    ax.axvline(threshold, color="red", ls="--", lw=1.6, gid="threshold", label=f"top-{top_k} threshold |r| = {threshold:.3f}")
    _mark_line(ax, f"|r| = {threshold:.3f}", threshold, 0.5, "red", float(bins[-1]))
    if null is not None and noise is not None:
        label = (f"null: family-wise threshold |r| = {noise:.3f} (alpha {null.alpha:g}, {null.permutations} permutations; "
                 f"{null.n_significant} of {top_k} pass)")
        ax.axvline(noise, color="C2", ls="-.", lw=1.6, gid="null_threshold", label=label)
        _mark_line(ax, f"null |r| = {noise:.3f}", noise, 0.75, "C2", float(bins[-1]))
    if held_out is not None:
        shown = np.abs(held_out[np.isfinite(held_out)])
        ax.plot(shown, np.full(shown.size, 0.7), "v", color="C1", ms=7, alpha=0.8, gid="held_out",
                label=f"top {top_k}: |r| held out (median {float(np.median(shown)) if shown.size else math.nan:.3f})")
    ax.set_yscale("log")
    # plain tick labels ("100", not matplotlib's math text "$10^{2}$", which plain_text would print raw)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    ax.set_ylim(bottom=0.5)  # a bin holding a single neuron stays visible
    ax.set_title(f"Best |r| of every neuron (the top {top_k} lie right of the red line)", fontsize=10)
    ax.set_xlabel(f"best |{kind}| over prompt positions" + (" (selection fold)" if held_out is not None else ""))
    ax.set_ylabel("neurons (log scale)")
    legend_above(figure, ax)
    ax.grid(alpha=0.25)
    extra = f"{undefined} neurons with undefined r (constant activation) not shown" if undefined else ""
    set_caption(figure, caption_text + (f"\n{extra}" if extra else ""))
    return figure


def layer_figure(scores: Array, threshold: float, neurons: Sequence[Neuron], caption_text: str) -> Figure:
    """Bars of the best |r| of each layer (gid "layers"), its median |r| as dots, the threshold dashed."""
    figure = new_figure(*SMALL)
    ax = figure.add_subplot()
    layers = scores.shape[0]
    magnitudes = np.abs(scores)
    best = np.array([np.nanmax(row) if np.isfinite(row).any() else 0.0 for row in magnitudes])
    median = np.array([np.nanmedian(row) if np.isfinite(row).any() else np.nan for row in magnitudes])
    x = np.arange(layers)
    bars = ax.bar(x, best, color="C0", alpha=0.85, label="best |r| in the layer", gid="layers")
    ax.plot(x, median, "o", color="0.3", ms=4, label="median |r| in the layer", gid="median")
    ax.axhline(threshold, color="red", ls="--", lw=1.4, gid="threshold", label=f"top-{len(neurons)} threshold |r| = {threshold:.3f}")
    per_layer = Counter(n.layer for n in neurons)
    for layer, bar in enumerate(bars):
        if per_layer[layer]:
            ax.annotate(f"{per_layer[layer]} in top {len(neurons)}", xy=(bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7.5)
    ax.set_xticks(x if layers <= 40 else x[:: max(1, layers // 20)])
    ax.set_ylim(0.0, max(float(best.max()) if best.size else 0.0, threshold) * 1.15 + 1e-12)
    ax.set_title("Where the skill sits: best |r| in each layer", fontsize=10)
    ax.set_xlabel("layer")
    ax.set_ylabel("|r|")
    legend_above(figure, ax)
    ax.grid(alpha=0.25, axis="y")
    set_caption(figure, caption_text)
    return figure


def training_figure(history: Sequence[Mapping[str, object]], caption_text: str) -> Figure:
    """The prompt's training curve: train loss (gid "train") and validation loss (gid "val") per step."""
    figure = new_figure(7.2, 3.6)
    ax = figure.add_subplot()

    def series(key: str) -> tuple[list[float], list[float]]:
        points = [(float(h["step"]), float(h[key])) for h in history  # type: ignore[arg-type]
                  if isinstance(h.get(key), (int, float)) and isinstance(h.get("step"), (int, float))]
        return [p[0] for p in points], [p[1] for p in points]

    steps, train = series("train_loss")
    ax.plot(steps, train, color="C0", lw=1.2, label="train loss", gid="train")
    val_steps, val = series("val_loss")
    if val:
        ax.plot(val_steps, val, "o-", color="C3", ms=3.5, lw=1.4, label="validation loss", gid="val")
        best = int(np.argmin(val))
        late = val_steps[best] > (min(val_steps) + max(val_steps)) / 2  # keep the label inside the axes
        ax.annotate(f"best {val[best]:.4g} @ step {val_steps[best]:g}", xy=(val_steps[best], val[best]),
                    xytext=(-6 if late else 6, -8), textcoords="offset points", ha="right" if late else "left",
                    va="top", fontsize=8, color="C3", bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none"})
        ax.margins(y=0.12)  # room for the label under the lowest point
    ax.set_title("Soft-prompt training", fontsize=10.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (mean NLL per completion token)")
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    set_caption(figure, caption_text)
    return figure


# ---------------------------------------------------------------- to PNG


def plain_text(figure: Figure) -> Figure:
    """Turn off matplotlib's math text on every text of the figure: group labels and field names are
    data (`costs $x^$` must print as written, not crash the renderer)."""
    for artist in figure.findobj(Text):
        artist.set_parse_math(False)
    return figure


def png_bytes(figure: Figure) -> bytes:
    plain_text(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
