"""`skn compare RUN_A RUN_B [...]`: top-K overlap, rank correlation and consensus of several runs' neurons."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from skn.ranking.compare import Comparison, compare_runs, passing_line, write_comparison
from skn.views.compare_report import write_compare_report
from skn.views.console import plain

from skn.cli.render import number_tables


def pair_tables(comparison: Comparison, width: int | None = None) -> list[Table]:
    """A row per pair of runs: overlap and Jaccard of their top K (each beside its value by chance) and the
    Spearman rank correlation; split over several tables (run a and run b in each) when wider than `width`."""
    names = ("run a", "run b", "overlap", "by chance", "Jaccard", "by chance", "Spearman")
    rows = [(str(p.a), str(p.b), str(p.overlap), f"{p.overlap_chance:.3g}", f"{p.jaccard:.3f}", f"{p.jaccard_chance:.2g}",
             f"{p.spearman:+.3f}") for p in comparison.pairs]
    return number_tables(f"top-{comparison.top_k} overlap of {comparison.neurons} neurons, and rank correlation", names, rows,
                         2, width)


def consensus_tables(comparison: Comparison, width: int | None = None) -> list[Table]:
    """A row per consensus neuron: min and mean score, (with the null) whether it passes in every run, and
    each run's score at its own best position; split over several tables (rank, layer, neuron in each) when
    wider than `width`."""
    marked = comparison.passing_all is not None
    names = ("rank", "layer", "neuron", "min", "mean", *(("passes all",) if marked else ()),
             *(f"run {i} (pos)" for i in range(len(comparison.runs))))
    rows = [(str(c.rank), str(c.layer), str(c.index), f"{c.consensus_min:+.3f}", f"{c.consensus_mean:+.3f}",
             *(("yes" if c.passes_all else "no",) if marked else ()),
             *(f"{s:+.3f} ({p})" for s, p in zip(c.scores, c.positions, strict=True))) for c in comparison.consensus]
    return number_tables(f"consensus top {comparison.top_k} (min |score| with signs agreeing; mean)", names, rows, 3, width)


def print_comparison(console: Console, comparison: Comparison) -> None:
    """The runs (with the r each is compared on), the pair table, the consensus table, the passing counts."""
    for i, run in enumerate(comparison.runs):
        console.print(plain(f"run {i}: {run.name} (r on its {run.scored_on})"))
    for table in (*pair_tables(comparison, console.width), *consensus_tables(comparison, console.width)):
        console.print(table)
    console.print(plain(passing_line(comparison)))
    console.print(plain(f"mean Jaccard {comparison.mean_jaccard:.3f} against {comparison.pairs[0].jaccard_chance:.2g} by chance"))


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", default=10, show_default=True, help="Size of each run's top set and of the consensus.")
@click.option("--report", is_flag=True, help="Also write DIR/compare.html (one offline page).")
@click.option("--out", default="", metavar="DIR", help="Folder for compare.json, compare.csv, compare.png [default: runs/compare-TIME].")
def compare_command(runs: tuple[Path, ...], top_k: int, report: bool, out: str) -> None:
    """Compare the neurons several runs of one model and metric single out (e.g. prompts of different seeds).

    A folder written by `skn probe --seeds` stands for its seed-N sub-runs.

    \b
    Examples:
      skn compare runs/seed0 runs/seed1 --out runs/cmp
      skn compare RUN_WITH_SEEDS
    """
    comparison = compare_runs(runs, top_k)
    folder = Path(out) if out else Path("runs") / time.strftime("compare-%Y%m%d-%H%M%S")
    paths = write_comparison(folder, comparison)
    if report:
        paths = (*paths, write_compare_report(folder, comparison))
    console = Console()
    print_comparison(console, comparison)
    console.print(plain("wrote " + ", ".join(str(p) for p in paths)))
