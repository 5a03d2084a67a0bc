"""The comparison of several runs as one self-contained HTML page (`skn compare --report`, `skn probe --seeds
--report`): the runs, the pairwise overlap and rank correlation, the consensus table and the scatter figure
(one panel per pair).
Same style and escaping as skn.views.report; nothing is fetched."""

from __future__ import annotations

import math
from pathlib import Path

from skn.ranking.compare import Comparison, passing_line, scatter_figure, scored_on_line
from skn.views.report import STYLE, _img, _num_cell, _r_cell, esc, scrolling
from skn.files.rundir import write_bytes
from skn.version import __version__

COMPARE_HTML = "compare.html"


def _fixed(value: float, digits: int) -> str:
    return "NaN" if math.isnan(value) else f"{value:.{digits}f}"


def compare_section(comparison: Comparison) -> str:
    """The comparison as one <section> (runs, pairs, consensus, figure)."""
    counts = comparison.passing or (None,) * len(comparison.runs)
    runs = "".join(f"<tr><td>{i}</td><td>{esc(r.name)}</td><td>{esc(r.scored_on)}</td><td>{'-' if n is None else n}</td></tr>"
                   for i, (r, n) in enumerate(zip(comparison.runs, counts, strict=True)))
    pair_heads = ("run a", "run b", "overlap", "by chance", "Jaccard", "by chance", "Spearman", "neurons")
    pairs = "".join(
        "<tr>" + _num_cell(float(p.a), str(p.a)) + _num_cell(float(p.b), str(p.b)) + _num_cell(float(p.overlap), str(p.overlap))
        + _num_cell(p.overlap_chance, f"{p.overlap_chance:.3g}") + _num_cell(p.jaccard, _fixed(p.jaccard, 3))
        + _num_cell(p.jaccard_chance, f"{p.jaccard_chance:.2g}") + _r_cell(p.spearman) + _num_cell(float(p.n_spearman), str(p.n_spearman))
        + "</tr>"
        for p in comparison.pairs
    )
    marked = comparison.passing_all is not None
    heads = ["rank", "layer", "neuron", "min (signs agree)", "mean", *(f"run {i} (pos)" for i in range(len(comparison.runs))),
             *(["passes in every run"] if marked else [])]
    rows = "".join(
        "<tr>" + _num_cell(float(c.rank), str(c.rank)) + _num_cell(float(c.layer), str(c.layer))
        + _num_cell(float(c.index), str(c.index)) + _r_cell(c.consensus_min) + _r_cell(c.consensus_mean)
        + "".join(_num_cell(s, f"{s:+.4f} ({p})") for s, p in zip(c.scores, c.positions, strict=True))
        + (f"<td>{'yes' if c.passes_all else 'no'}</td>" if marked else "") + "</tr>"
        for c in comparison.consensus
    )

    def table(names: tuple[str, ...] | list[str], body: str) -> str:
        head = "".join(f"<th>{esc(h)}</th>" for h in names)
        return scrolling(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    return (
        f'<section class="card" id="compare"><h2>Across runs: top-{comparison.top_k} overlap and consensus</h2>'
        f'<p class="sub">Each neuron (layer, index) at each run\'s own best position; chance: two random top-'
        f"{comparison.top_k} sets of {comparison.neurons} neurons.</p>"
        f'<p class="sub">{esc(scored_on_line(comparison))}. {esc(passing_line(comparison))}.</p>'
        f"{table(('run', 'directory', 'r compared', 'neurons passing'), runs)}"
        f"<h4>Pairs</h4>{table(pair_heads, pairs)}"
        f"<h4>Consensus</h4>{table(heads, rows)}"
        f"<h4>Every pair of runs</h4>{_img(scatter_figure(comparison), 'neuron scores of every pair of runs', 'fig')}</section>"
    )


def render_compare_report(comparison: Comparison) -> str:
    title = f"skn compare \u00b7 {comparison.runs[0].model} \u00b7 {comparison.runs[0].metric}"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body><main>",
        f"<header><h1>{esc(title)}</h1><p class=\"sub\">{len(comparison.runs)} runs \u00b7 skn {esc(__version__)}</p></header>",
        compare_section(comparison),
        "</main></body></html>\n",
    ])


def write_compare_report(out: Path, comparison: Comparison) -> Path:
    path = Path(out) / COMPARE_HTML
    write_bytes(path, render_compare_report(comparison).encode("utf-8"))
    return path
