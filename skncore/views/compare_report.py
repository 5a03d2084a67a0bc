"""The comparison of several runs as one self-contained HTML page (`skn compare --report`, `skn probe --seeds
--report`): the runs, the pairwise overlap and rank correlation, the consensus table and the scatter figure
(one panel per pair).
Same style as skn.views.report; the templates compare.html.j2 and compare_section.html.j2 (skn.views.templating:
autoescaped); nothing is fetched."""

from __future__ import annotations

import math
from pathlib import Path

from markupsafe import Markup

from skn.ranking.compare import Comparison, passing_line, scatter_figure, scored_on_line
from skn.views.cells import Cell, figure_image, num_cell, r_cell
from skn.views.report import STYLE
from skn.views.templating import render
from skn.files.rundir import write_bytes
from skn.version import __version__

COMPARE_HTML = "compare.html"


def _fixed(value: float, digits: int) -> str:
    return "NaN" if math.isnan(value) else f"{value:.{digits}f}"


def compare_section(comparison: Comparison) -> str:
    """The comparison as one <section> (runs, pairs, consensus, figure)."""
    counts = comparison.passing or (None,) * len(comparison.runs)
    runs = tuple((Cell(str(i)), Cell(r.name), Cell(r.scored_on), Cell("-" if n is None else str(n)))
                 for i, (r, n) in enumerate(zip(comparison.runs, counts, strict=True)))
    pairs = tuple(
        (num_cell(float(p.a), str(p.a)), num_cell(float(p.b), str(p.b)), num_cell(float(p.overlap), str(p.overlap)),
         num_cell(p.overlap_chance, f"{p.overlap_chance:.3g}"), num_cell(p.jaccard, _fixed(p.jaccard, 3)),
         num_cell(p.jaccard_chance, f"{p.jaccard_chance:.2g}"), r_cell(p.spearman),
         num_cell(float(p.n_spearman), str(p.n_spearman)))
        for p in comparison.pairs
    )
    marked = comparison.passing_all is not None
    heads = ("rank", "layer", "neuron", "min (signs agree)", "mean", *(f"run {i} (pos)" for i in range(len(comparison.runs))),
             *(("passes in every run",) if marked else ()))
    rows = tuple(
        (num_cell(float(c.rank), str(c.rank)), num_cell(float(c.layer), str(c.layer)), num_cell(float(c.index), str(c.index)),
         r_cell(c.consensus_min), r_cell(c.consensus_mean),
         *(num_cell(s, f"{s:+.4f} ({p})") for s, p in zip(c.scores, c.positions, strict=True)),
         *((Cell("yes" if c.passes_all else "no"),) if marked else ()))
        for c in comparison.consensus
    )
    return render("compare_section.html.j2", top_k=comparison.top_k, neurons=comparison.neurons,
                  scored_on=scored_on_line(comparison), passing=passing_line(comparison), runs=runs, pairs=pairs,
                  consensus_heads=heads, consensus=rows,
                  scatter=figure_image(scatter_figure(comparison), "neuron scores of every pair of runs", "fig"))


def render_compare_report(comparison: Comparison) -> str:
    title = f"skn compare \u00b7 {comparison.runs[0].model} \u00b7 {comparison.runs[0].metric}"
    return render("compare.html.j2", title=title, style=Markup(STYLE), run_count=len(comparison.runs),
                  version=__version__, section=Markup(compare_section(comparison)))


def write_compare_report(out: Path, comparison: Comparison) -> Path:
    path = Path(out) / COMPARE_HTML
    write_bytes(path, render_compare_report(comparison).encode("utf-8"))
    return path
