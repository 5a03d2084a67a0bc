"""The HTML report: a whole run on one self-contained page (`skn report`, `skn probe --report`).

One file, readable offline in any browser: the figures are PNGs embedded as base64 data URIs, the style
sheet and the table-sorting script are inline, nothing is fetched. The page is the template
skn/views/templates/report.html.j2 (skn.views.templating: autoescaped, so every piece of text that came from
the user, model names, paths, examples, metadata, is escaped); this module gives it its values.

Sections: the run's summary (model, data, metric, N, the prompt's training curve, the full run.json), the
run-level figures (|r| histogram, |r| per layer), the sortable table of top neurons (with the mean
activation of each group, and with a holdout the held-out r, its 95% interval and the full-set r), and per
neuron its density figure (with a continuous metric also its activation against the metric, beside it) and its
most and least activating examples (skn.views.report_neurons). A table wider than its card scrolls sideways
inside it: no column is cut.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from markupsafe import Markup

from skn.ablation.ablate_files import ABLATION_FILE, CURVE_FILE, read_ablation, read_curve
from skn.ablation.ablate_record import AblationRecord
from skn.ablation.curve_record import CurveRecord
from skn.ablation.ablate_view import ablation_html, curve_html
from skn.inputs.groups import Grouping
from skn.views.cells import figure_image, number
from skn.views.plots import choose_grouping, overview_figures
from skn.views.report_neurons import neuron_heads, neuron_rows, neuron_view, ranked_on
from skn.views.templating import render
from skn.ranking.holdout import summary_from_info
from skn.statistics.partial import control_line
from skn.files.result import ProbeResult, info_to_json
from skn.files.rundir import write_bytes
from skn.files.probe_read import read_probe_run
from skn.version import __version__

REPORT_FILE = "report.html"
OVERVIEW = (("score_histogram", "histogram of every neuron's best |r|"), ("layers", "best |r| per layer"))  # name, alt

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


def _mapping_text(value: object) -> str:
    if isinstance(value, Mapping):
        parts = []
        for key, item in value.items():
            shown = number(float(item)) if isinstance(item, float) else str(item)
            parts.append(f"{key} {shown}")
        return "  \u00b7  ".join(parts)
    return str(value)


def summary_rows(run: ProbeResult, grouping: Grouping) -> tuple[tuple[str, str], ...]:
    """(label, text) pairs of the summary table, plain text (escaped when rendered)."""
    info = run.info
    metric = run.metric.to(torch.float64).numpy()
    finite = metric[np.isfinite(metric)]
    spread = (f"mean {number(float(finite.mean()))}, min {number(float(finite.min()))}, max {number(float(finite.max()))}"
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


def render_report(run: ProbeResult, source: str = "", group_by: str | None = None, exemplar_count: int = 5,
                  ablation: AblationRecord | None = None, curve: CurveRecord | None = None) -> str:
    """The report's HTML for `run`; `source` names the run directory in the page's header; `ablation`
    (RUN/ablation.json's record, see skn.ablation.ablate_files) and `curve` (RUN/ablation_curve.json's) add their sections."""
    grouping = choose_grouping(run, group_by)
    labels = grouping.label_of()
    overview = {named.name: named for named in overview_figures(run)}
    training = overview.get("training")
    title = f"skn report \u00b7 {run.info.model} \u00b7 {run.info.metric}"
    return render(  # the arguments are evaluated in order: the figures are drawn in the page's order
        "report.html.j2", title=title, style=Markup(STYLE), script=Markup(SCRIPT), source=source,
        n_examples=len(run.examples), version=__version__, summary=summary_rows(run, grouping),
        training=figure_image(training.figure, "soft-prompt training curve", "fig") if training is not None else None,
        run_json=json.dumps(info_to_json(run.info), indent=2, ensure_ascii=False, default=str),
        overview=tuple(figure_image(overview[name].figure, alt) for name, alt in OVERVIEW if name in overview),
        ablation=Markup(ablation_html(ablation)) if ablation is not None else None,
        curve=Markup(curve_html(curve)) if curve is not None else None,
        neuron_heads=neuron_heads(run, grouping), neuron_rows=neuron_rows(run, grouping), ranked_on=ranked_on(run),
        neurons=tuple(neuron_view(run, row, grouping, labels, exemplar_count) for row in range(len(run.neurons))))


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
