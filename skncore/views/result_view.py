"""How a `ProbeResult` shows itself where people look at it: a short `repr`, an HTML table for Jupyter, and a
pandas DataFrame of the top neurons with their exemplars as texts (`ProbeResult.__repr__`, `_repr_html_`,
`to_frame` call these).

pandas is an optional extra (`pip install 'skn[notebook]'`), imported only by `neuron_frame`.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

from skn.errors import UsageError

if TYPE_CHECKING:
    from skn.files.result import ProbeResult

HTML_ROWS = 10  # top neurons in the HTML table
HTML_EXEMPLARS = 3  # exemplar texts per side in the HTML table
TEXT_CHARS = 80  # an exemplar text or a name is cut to this many characters


def _cut(text: str, limit: int = TEXT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _signed(value: float) -> str:
    return f"{value:+.3f}" if math.isfinite(value) else "nan"


def _shape(result: ProbeResult) -> str:
    layers, positions, width = (int(s) for s in result.corr.shape)
    return f"{layers} layers x {positions} positions x {width} neurons"


def _null_part(result: ProbeResult) -> str:
    passing = result.passing
    if passing is None or result.null is None:
        return "null off"
    threshold = f"{passing.threshold:.3f}" if math.isfinite(passing.threshold) else "unreachable"
    return f"null |r| > {threshold}: {passing.total} of {passing.neurons} pass"


def _held_out_part(result: ProbeResult) -> str:
    if result.holdout is None or not result.holdout.per_neuron:
        return ""
    top = result.holdout.per_neuron[0]
    return f"held-out r {_signed(top.r_held_out)} [{_signed(top.low)}, {_signed(top.high)}]"


def _top_part(result: ProbeResult) -> str:
    if not result.neurons:
        return "no neurons ranked"
    n = result.neurons[0]
    return f"top {n.layer}.{n.index}@{n.position} r {_signed(n.r)} (of {len(result.neurons)} kept)"


def summary_parts(result: ProbeResult) -> list[str]:
    """The facts of the short repr, each a short text."""
    info = result.info
    parts = [f"model {_cut(info.model, 60)!r}", f"metric {_cut(info.metric, 60)!r}", f"N={len(result.examples)}",
             _shape(result), _top_part(result), _held_out_part(result), _null_part(result)]
    if info.run_id:
        parts.append(f"run {info.run_id[:12]}")
    return [p for p in parts if p]


def short_repr(result: ProbeResult) -> str:
    """`<ProbeResult model 'M', metric 'loss', N=600, ...>`: a few hundred characters whatever the run's size."""
    return "<ProbeResult " + ", ".join(summary_parts(result)) + ">"


def exemplar_texts(result: ProbeResult, n: int) -> list[tuple[list[str], list[str]]]:
    """Per top neuron (neurons order): the instructions of its n most and n least activating examples."""
    return [([result.examples[i].instruction for i in chosen.most], [result.examples[i].instruction for i in chosen.least])
            for chosen in result.exemplars(n)]


def _texts_cell(texts: list[str]) -> str:
    return "<br>".join(html.escape(_cut(t)) for t in texts)


def html_table(result: ProbeResult) -> str:
    """A summary line and a table of the first HTML_ROWS top neurons with their exemplar texts."""
    shown = result.neurons[:HTML_ROWS]
    texts = exemplar_texts(result, HTML_EXEMPLARS)
    held = result.holdout.per_neuron if result.holdout is not None else ()
    null = result.null
    head = ["rank", "layer.neuron@position", "r", *(["r held out"] if held else []), *(["p (adjusted)"] if null else []),
            "most activating", "least activating"]
    rows = []
    for k, n in enumerate(shown):
        cells = [str(n.rank), f"{n.layer}.{n.index}@{n.position}", _signed(n.r)]
        if held:
            cells.append(_signed(held[k].r_held_out))
        if null is not None:
            cells.append(f"{null.p_adjusted[k]:.3g}" + (" *" if null.significant[k] else ""))
        plain = [html.escape(c) for c in cells]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in plain)
                    + f"<td style='text-align:left'>{_texts_cell(texts[k][0])}</td>"
                    + f"<td style='text-align:left'>{_texts_cell(texts[k][1])}</td></tr>")
    more = len(result.neurons) - len(shown)
    caption = html.escape("ProbeResult: " + ", ".join(summary_parts(result))
                          + (f"; {more} more neurons in result.to_frame()" if more > 0 else ""))
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return (f"<table><caption style='text-align:left'>{caption}</caption><thead><tr>{header}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def neuron_frame(result: ProbeResult, exemplars: int = 3) -> Any:
    """A pandas DataFrame, one row per top neuron: rank, layer, neuron, position, r, p (the null's adjusted p;
    NaN without a null), significant (None without a null), r_held_out (NaN without a holdout), most and least
    (lists of the `exemplars` most and least activating examples' instruction texts)."""
    if exemplars < 0:
        raise UsageError(f"to_frame: exemplars must not be negative, got {exemplars}")
    try:
        import pandas
    except ImportError:
        raise UsageError("ProbeResult.to_frame needs pandas: pip install 'skn[notebook]'") from None
    texts = exemplar_texts(result, exemplars)
    held = result.holdout.per_neuron if result.holdout is not None else ()
    null = result.null
    records = [{
        "rank": n.rank, "layer": n.layer, "neuron": n.index, "position": n.position, "r": n.r,
        "p": null.p_adjusted[k] if null is not None else math.nan,
        "significant": null.significant[k] if null is not None else None,
        "r_held_out": held[k].r_held_out if held else math.nan,
        "most": texts[k][0], "least": texts[k][1],
    } for k, n in enumerate(result.neurons)]
    columns = ["rank", "layer", "neuron", "position", "r", "p", "significant", "r_held_out", "most", "least"]
    return pandas.DataFrame.from_records(records, columns=columns)
