"""The HTML report: a whole run on one self-contained page (`skn report`, `skn probe --report`).

One file, readable offline in any browser: the figures are PNGs embedded as base64 data URIs, the style
sheet and the table-sorting script are inline, nothing is fetched. Every piece of text that came from the
user (model names, paths, examples, metadata) goes through `html.escape`.

Sections: the run's summary (model, data, metric, N, the prompt's training curve, the full run.json), the
run-level figures (|r| histogram, |r| per layer), the sortable table of top neurons (with the mean
activation of each group, and with a holdout the held-out r, its 95% interval and the full-set r), and per
neuron its density figure (with a continuous metric also its activation against the metric, beside it) and its
most and least activating examples. A table wider than its card scrolls sideways inside it: no column is cut.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from skn.ablation.ablate_files import ABLATION_FILE, CURVE_FILE, read_ablation, read_curve
from skn.ablation.ablate_record import AblationRecord
from skn.ablation.curve_record import CurveRecord
from skn.ablation.ablate_view import ablation_html, curve_html
from skn.views.figures import neuron_title, png_bytes
from skn.inputs.groups import Grouping
from skn.views.plots import (
    NamedFigure,
    choose_grouping,
    neuron_figures,
    overview_figures,
)
from skn.ranking.holdout import summary_from_info
from skn.statistics.null_verdict import NullResult
from skn.statistics.partial import control_line
from skn.ranking.rank import exemplars
from skn.files.result import ProbeResult, info_to_json
from skn.files.rundir import write_bytes
from skn.files.probe_read import read_probe_run
from skn.version import __version__

REPORT_FILE = "report.html"
DOT = " \u00b7 "
TEXT_CHARS = 280  # longer instructions are cut in the tables (the full text is in the cell's tooltip)

STYLE = """
:root { --fg: #1d2330; --muted: #5b6474; --line: #e3e6eb; --bg: #f5f6f8; --pos: #b42318; --neg: #1849a9; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
       font: 14.5px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", "DejaVu Sans", sans-serif; }
main { max-width: 1320px; margin: 0 auto; padding: 20px 24px 48px; }
h1 { font-size: 24px; margin: 8px 0 2px; } h2 { font-size: 19px; margin: 0 0 10px; }
h3 { font-size: 16px; margin: 0 0 8px; } h4 { font-size: 14px; margin: 12px 0 4px; color: var(--muted); }
.sub { color: var(--muted); margin: 0 0 12px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px; margin: 16px 0;
        overflow-x: auto; }
.scroll { overflow-x: auto; max-width: 100%; }
nav a { margin-right: 14px; }
a { color: #1849a9; text-decoration: none; } a:hover { text-decoration: underline; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
th, td { padding: 5px 9px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; white-space: nowrap; }
table.sortable th { cursor: pointer; user-select: none; white-space: normal; vertical-align: bottom; font-size: 12.5px;
                   padding: 5px 6px; }
table.sortable th::after { content: "\\00a0\\2195"; color: #a0a7b4; font-weight: 400; }
table.sortable th[aria-sort="ascending"]::after { content: "\\00a0\\25B2"; color: var(--fg); }
table.sortable th[aria-sort="descending"]::after { content: "\\00a0\\25BC"; color: var(--fg); }
tbody tr:hover { background: #f7f9fc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; padding-left: 6px; padding-right: 6px; }
td.text { min-width: 12em; max-width: 560px; white-space: pre-wrap; overflow-wrap: anywhere; }
.pos { color: var(--pos); } .neg { color: var(--neg); } .pass { font-weight: 600; }
.summary th { width: 180px; background: none; color: var(--muted); font-weight: 500; }
.figs { display: flex; flex-wrap: wrap; gap: 14px; }
.figs img, img.fig { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; background: #fff; }
.figs img { flex: 1 1 520px; min-width: 0; }
.pair { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.figrow { display: flex; gap: 14px; flex: 0 1 auto; min-width: 0; align-items: flex-start; }
.figrow img { flex: 0 1 auto; min-width: 0; }
@media (max-width: 900px) { .figrow { flex-wrap: wrap; } }
.pair table { width: auto; flex: 0 1 auto; }
details pre { background: #f6f8fa; padding: 10px; overflow: auto; font-size: 12px; max-height: 420px; }
.warn { background: #fff4e5; border: 1px solid #f5c27a; padding: 8px 12px; border-radius: 6px; }
footer { color: var(--muted); font-size: 12.5px; margin-top: 24px; }
"""

# Sorts a table by the clicked column (numbers by their data-v), and flags figures that fail to decode.
SCRIPT = """
(function () {
  function key(cell) {
    var v = cell.getAttribute("data-v");
    if (v === null) { return cell.textContent.trim().toLowerCase(); }
    var f = parseFloat(v);
    return isNaN(f) ? -Infinity : f;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
  window.addEventListener("load", function () {
    var bad = 0;
    Array.prototype.forEach.call(document.images, function (img) {
      if (!img.complete || img.naturalWidth === 0) { bad += 1; }
    });
    document.body.setAttribute("data-images-ok", String(document.images.length - bad));
    if (bad > 0) {
      var note = document.createElement("p");
      note.className = "warn";
      note.textContent = bad + " figure(s) could not be displayed.";
      document.querySelector("main").prepend(note);
    }
  });
})();
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _number(value: float, digits: int = 4) -> str:
    return "NaN" if math.isnan(value) else f"{value:.{digits}g}"


def _num_cell(value: float, text: str = "", css: str = "") -> str:
    sort_key = "NaN" if math.isnan(value) else repr(value)
    classes = "num" + (f" {css}" if css else "")
    return f'<td class="{classes}" data-v="{sort_key}">{esc(text or _number(value))}</td>'


def _r_cell(r: float) -> str:
    return _num_cell(r, "NaN" if math.isnan(r) else f"{r:+.4f}", "pos" if r > 0 else "neg" if r < 0 else "")


def _img(figure: Figure, alt: str, css: str = "") -> str:
    data = base64.b64encode(png_bytes(figure)).decode("ascii")
    cls = f' class="{css}"' if css else ""
    return f'<img{cls} src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def breakable(text: str) -> str:
    """`text` escaped, with a line-break opportunity (<wbr>) after each _ / . - inside words, so that a
    header like `mean act. | lexical_overlap` can wrap and its column stay narrow."""
    return re.sub(r"([_/.\-])(?=\w)", r"\1<wbr>", esc(text))


def scrolling(table: str) -> str:
    """`table` in a box that scrolls sideways when the table is wider than its card (no column is ever cut)."""
    return f'<div class="scroll">{table}</div>'


def _short(text: str) -> str:
    cut = text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "\u2026"
    return f'<td class="text" title="{esc(text)}">{esc(cut)}</td>' if cut != text else f'<td class="text">{esc(text)}</td>'


def _mapping_text(value: object) -> str:
    if isinstance(value, Mapping):
        parts = []
        for key, item in value.items():
            shown = _number(float(item)) if isinstance(item, float) else str(item)
            parts.append(f"{key} {shown}")
        return "  \u00b7  ".join(parts)
    return str(value)


def summary_rows(run: ProbeResult, grouping: Grouping) -> tuple[tuple[str, str], ...]:
    """(label, text) pairs of the summary table, plain text (escaped when rendered)."""
    info = run.info
    metric = run.metric.to(torch.float64).numpy()
    finite = metric[np.isfinite(metric)]
    spread = (f"mean {_number(float(finite.mean()))}, min {_number(float(finite.min()))}, max {_number(float(finite.max()))}"
              if finite.size else "no finite values")
    groups = ", ".join(f"{label} ({len(members)})" for label, members in zip(grouping.labels, grouping.members, strict=True))
    rows = [
        ("model", info.model),
        ("training data", info.data or "?"),
        ("validation data", info.val_data or "(split from the training data)"),
        ("metric", f"{info.metric}  ({spread})"),
        ("N (validation examples)", str(len(run.examples))),
        ("soft prompt length", str(run.corr.shape[1])),
        ("neurons probed", f"{run.corr.shape[0]} layers \u00d7 {run.corr.shape[2]} neurons \u00d7 {run.corr.shape[1]} positions"),
        ("top K", str(len(run.neurons))),
        ("family-wise null", null_text(run)),
        ("neurons passing the null", passing_text(run)),
        *((("covariates (--control)", control_line(run.partial)),) if run.partial is not None else ()),
        ("groups", f"{grouping.note}: {groups}"),
        ("seed", str(info.seed)),
        ("holdout", holdout_text(run)),
    ]
    if info.timings:
        rows.append(("timings", _mapping_text(dict(info.timings))))
    if info.versions:
        rows.append(("versions", _mapping_text(dict(info.versions))))
    return tuple(rows)


def holdout_text(run: ProbeResult) -> str:
    """The holdout in one line: the folds and the cross-fitted replication rate, or why it is off."""
    summary = summary_from_info(run.info.extra)
    note = str(summary.get("note", "")) if summary else ""
    if run.holdout is None:
        return note or "none (ranked on all examples)"
    rep = run.holdout.replication
    rate = "n/a" if math.isnan(rep.rate) else f"{rep.rate:.0%}"
    return (f"ranked on {run.holdout.n_selection} selection examples, r held out on the other {run.holdout.n_confirmation} "
            f"(seed {run.holdout.seed}); replication of the top {rep.top_k} (same sign, p < {rep.alpha:g} on the other "
            f"fold, both ways): {rate}")


def null_text(run: ProbeResult) -> str:
    """The permutation null's threshold and how many top neurons pass it, in words."""
    null = run.null
    if null is None:
        return "none (--null 0): nothing here says which |r| exceed what noise gives"
    threshold = f"{null.threshold:.4f}" if math.isfinite(null.threshold) else "unreachable"
    return (f"{null.n_significant} of {len(run.neurons)} top neurons pass: |r| > {threshold} at family-wise alpha "
            f"{null.alpha:g} ({null.permutations} {null.mode.value} permutations of the metric; Westfall-Young "
            f"max-statistic p-values in the table)")


def passing_text(run: ProbeResult) -> str:
    """How many neurons of the whole model pass the threshold, per layer (skn.statistics.passing), in words."""
    passing = run.passing
    return passing.line() if passing is not None else "not counted: the null is off (--null 0)"


def _p_cells(null: NullResult | None, row: int) -> list[str]:
    if null is None:
        return []
    adjusted = null.p_adjusted[row]
    mark = " *" if null.significant[row] else ""
    return [_num_cell(adjusted, _number(adjusted, 3) + mark, "pass" if null.significant[row] else ""),
            _num_cell(null.p_cell[row], _number(null.p_cell[row], 3))]


def _summary(run: ProbeResult, grouping: Grouping, training: NamedFigure | None) -> str:
    rows = "".join(f"<tr><th>{esc(label)}</th><td>{esc(text)}</td></tr>" for label, text in summary_rows(run, grouping))
    curve = (_img(training.figure, "soft-prompt training curve", "fig") if training is not None
             else '<p class="sub">No training history in run.json (the prompt was given, not trained here).</p>')
    full = esc(json.dumps(info_to_json(run.info), indent=2, ensure_ascii=False, default=str))
    return (f'<section class="card" id="summary"><h2>Summary</h2><table class="summary">{rows}</table>'
            f"<h4>Prompt training</h4>{curve}"
            f"<details><summary>Full configuration (run.json)</summary><pre>{full}</pre></details></section>")


def _neuron_table(run: ProbeResult, grouping: Grouping) -> str:
    held = run.holdout.per_neuron if run.holdout is not None else ()
    r_head = "r (selection fold)" if held else "r"
    extra_heads = ["r held out", "95% interval", "r (all examples)"] if held else []
    p_heads = ["p (adjusted)", "p (cell)"] if run.null is not None else []
    raw_r = run.partial.raw_r if run.partial is not None else ()
    if raw_r:
        r_head = "partial " + r_head
    raw_heads = ["raw r"] if raw_r else []
    heads = ["rank", "layer", "neuron", "position", r_head, *raw_heads, *p_heads, *extra_heads] + [f"mean act. | {label}" for label in grouping.labels]
    head = "".join(f'<th scope="col">{breakable(h)}</th>' for h in heads)
    rows = []
    for row, n in enumerate(run.neurons):
        cells = [
            f'<td class="num" data-v="{n.rank}"><a href="#neuron-{n.rank}">#{n.rank}</a></td>',
            _num_cell(float(n.layer), str(n.layer)),
            _num_cell(float(n.index), str(n.index)),
            _num_cell(float(n.position), str(n.position)),
            _r_cell(n.r),
        ] + ([_r_cell(raw_r[row])] if raw_r else []) + _p_cells(run.null, row) + ([_r_cell(held[row].r_held_out), _num_cell(held[row].low, _interval(held[row].low, held[row].high)),
              _r_cell(held[row].r_full)] if held else []) + [_num_cell(g.mean, _number(g.mean, 3)) for g in grouping.summaries(run.top_activations[row])]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<section class="card" id="neurons"><h2>Top {len(run.neurons)} neurons</h2>'
            f'<p class="sub">Ranked by |r| at each neuron\'s best prompt position{esc(_ranked_on(run))}. Click a header to '
            f"sort; click a rank to see the neuron.</p>"
            + scrolling(f'<table class="sortable" id="neuron-table"><thead><tr>{head}</tr></thead>'
                        f"<tbody>{''.join(rows)}</tbody></table>") + "</section>")


def _interval(low: float, high: float) -> str:
    return "NaN" if math.isnan(low) else f"[{low:+.3f}, {high:+.3f}]"


def _ranked_on(run: ProbeResult) -> str:
    if run.holdout is None:
        return ""
    return (f", on the {run.holdout.n_selection} selection examples; r held out is measured on the other "
            f"{run.holdout.n_confirmation}, which played no part in choosing the neuron: quote that one")


def _examples_table(run: ProbeResult, indices: Sequence[int], values: np.ndarray, labels: Sequence[str], field: str) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in ("example", "activation", "metric", field, "instruction", "completion"))
    rows = []
    metric = run.metric.to(torch.float64).tolist()
    for index in indices:
        example = run.examples[index]
        rows.append(
            "<tr>" + _num_cell(float(index), f"{index}") + _num_cell(float(values[index]), _number(float(values[index]), 4))
            + _num_cell(float(metric[index])) + f"<td>{esc(labels[index])}</td>"
            + _short(example.instruction) + _short(example.completion) + "</tr>"
        )
    return scrolling(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _group_table(values: Tensor, grouping: Grouping) -> str:
    rows = []
    for label, g in zip(grouping.labels, grouping.summaries(values), strict=True):
        rows.append(f"<tr><td>{esc(label)}</td>{_num_cell(float(g.count), str(g.count))}"
                    f"{_num_cell(g.mean, _number(g.mean, 3))}{_num_cell(g.std, _number(g.std, 3))}</tr>")
    head = "".join(f"<th>{esc(h)}</th>" for h in (grouping.field, "n", "mean", "sd"))
    return f'<table class="groups"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _neuron_section(run: ProbeResult, row: int, grouping: Grouping, labels: Sequence[str], count: int) -> str:
    neuron = run.neurons[row]
    values = run.top_activations[row].to(torch.float64).numpy()
    chosen = exemplars(run.top_activations[row], count)
    figures = "".join(_img(named.figure, named.what, "fig") for named in neuron_figures(run, row, grouping))
    held = ""
    if run.holdout is not None:
        h = run.holdout.per_neuron[row]
        held = (f'<p class="sub">r held out {esc(_number(h.r_held_out))} {esc(_interval(h.low, h.high))} on '
                f"{run.holdout.n_confirmation} examples; r on the selection fold {esc(_number(h.r_selection))}; "
                f"on all examples {esc(_number(h.r_full))}</p>")
    return (f'<section class="card neuron" id="neuron-{neuron.rank}"><h3>{esc(neuron_title(neuron))}</h3>{held}'
            f'<div class="pair"><div class="figrow">{figures}</div>'
            f"{_group_table(run.top_activations[row], grouping)}</div>"
            f"<h4>Most activating</h4>{_examples_table(run, chosen.most, values, labels, grouping.field)}"
            f"<h4>Least activating</h4>{_examples_table(run, chosen.least, values, labels, grouping.field)}"
            f'<p class="sub"><a href="#neurons">back to the table</a></p></section>')


def render_report(run: ProbeResult, source: str = "", group_by: str | None = None, exemplar_count: int = 5,
                  ablation: AblationRecord | None = None, curve: CurveRecord | None = None) -> str:
    """The report's HTML for `run`; `source` names the run directory in the page's header; `ablation`
    (RUN/ablation.json's record, see skn.ablation.ablate_files) and `curve` (RUN/ablation_curve.json's) add their sections."""
    grouping = choose_grouping(run, group_by)
    labels = grouping.label_of()
    overview = {named.name: named for named in overview_figures(run)}
    title = f"skn report \u00b7 {run.info.model} \u00b7 {run.info.metric}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body><main>",
        f"<header><h1>{esc(title)}</h1>",
        f'<p class="sub">{esc(source) + DOT if source else ""}N = {len(run.examples)} validation examples'
        f"{DOT}skn {esc(__version__)}</p>",
        '<nav><a href="#summary">Summary</a><a href="#overview">Where the skill sits</a>'
        '<a href="#neurons">Top neurons</a>' + ('<a href="#ablation">Ablation</a>' if ablation is not None else "")
        + ('<a href="#ablation-curve">Ablation curve</a>' if curve is not None else "")
        + "</nav></header>",
        _summary(run, grouping, overview.get("training")),
    ]
    figs = "".join(_img(overview[name].figure, alt) for name, alt in
                   (("score_histogram", "histogram of every neuron's best |r|"), ("layers", "best |r| per layer"))
                   if name in overview)
    parts.append(f'<section class="card" id="overview"><h2>Where the skill sits</h2><div class="figs">{figs}</div></section>')
    if ablation is not None:
        parts.append(ablation_html(ablation))
    if curve is not None:
        parts.append(curve_html(curve))
    parts.append(_neuron_table(run, grouping))
    parts.extend(_neuron_section(run, row, grouping, labels, exemplar_count) for row in range(len(run.neurons)))
    parts.append(f"<footer>Written by skn {esc(__version__)} from the run directory alone; self-contained, works offline.</footer>")
    parts.append(f"</main><script>{SCRIPT}</script></body></html>\n")
    return "\n".join(parts)


def write_report(run_dir: Path, out: Path | None = None, group_by: str | None = None, exemplar_count: int = 5) -> Path:
    """Read the run directory and write its report (default RUN/report.html); returns the path."""
    run_dir = Path(run_dir)
    run = read_probe_run(run_dir)
    path = Path(out) if out is not None else run_dir / REPORT_FILE
    if path.is_dir():  # `--out DIR`: the report goes into it
        path = path / REPORT_FILE
    ablation = read_ablation(run_dir) if (run_dir / ABLATION_FILE).is_file() else None
    curve = read_curve(run_dir) if (run_dir / CURVE_FILE).is_file() else None
    write_bytes(path, render_report(run, str(run_dir), group_by, exemplar_count, ablation, curve).encode("utf-8"))
    return path
