"""`skn show RUN`: print a finished run's top neurons without recomputing anything; a `skn probe --seeds`
folder shows each seed's top neurons and their comparison."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from skn.ablate_run import ABLATION_FILE, CURVE_FILE, read_ablation, read_curve
from skn.compare import compare_runs, seed_subruns
from skn.console import plain
from skn.probe_files import read_probe_run
from skn.report import REPORT_FILE
from skn.verdict import next_line

from skn.cli.ablate_render import ablation_tables, curve_tables
from skn.cli.compare_cmd import print_comparison
from skn.cli.render import EXEMPLAR_NEURONS, print_result, print_verdict


def show_run(console: Console, run: Path, n_exemplars: int, next_steps: bool = True,
             exemplar_neurons: int = EXEMPLAR_NEURONS) -> None:
    """The run's tables, then its verdict and (with `next_steps`) what to run next on it."""
    result = read_probe_run(run)
    print_result(console, result, n_exemplars, exemplar_neurons=exemplar_neurons)
    ablated = (run / ABLATION_FILE).is_file() or (run / CURVE_FILE).is_file()
    if (run / ABLATION_FILE).is_file():
        for table in ablation_tables(read_ablation(run)):
            console.print(table)
    if (run / CURVE_FILE).is_file():
        for table in curve_tables(read_curve(run)):
            console.print(table)
    report = run / REPORT_FILE
    print_verdict(console, result, str(run) if next_steps else "", str(report) if report.is_file() else "", ablated)


def show_seeds(console: Console, subruns: tuple[Path, ...], n_exemplars: int, exemplar_neurons: int = EXEMPLAR_NEURONS) -> None:
    """Each seed's run (its top neurons, the holdout and the null), then the comparison of the seeds (recomputed
    from the sub-runs' files: the same figures as RUN/compare.json, with the runs' own top K)."""
    for sub in subruns:
        console.print(plain(f"{sub.name} ({sub})", style="bold"))
        show_run(console, sub, n_exemplars, next_steps=len(subruns) == 1, exemplar_neurons=exemplar_neurons)
    if len(subruns) > 1:
        top_k = len(read_probe_run(subruns[0]).neurons)
        console.print(plain(f"comparison of the {len(subruns)} seeds", style="bold"))
        print_comparison(console, compare_runs(subruns, top_k))
        console.print(plain(next_line(str(subruns[0]))))


@click.command("show")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--exemplars", "n_exemplars", type=click.IntRange(min=0), default=5, show_default=True, help="Most and least activating examples per neuron.")
@click.option("--exemplar-neurons", type=click.IntRange(min=0), default=EXEMPLAR_NEURONS, show_default=True,
              help="Show the exemplars of this many top neurons (0 = all).")
def show_command(run: Path, n_exemplars: int, exemplar_neurons: int) -> None:
    """Print the top neurons of a run directory and their exemplars.

    A folder written by `skn probe --seeds` shows each seed's top neurons, then their comparison.

    \b
    Example:
      skn show RUN
    """
    console = Console()
    subruns = seed_subruns(run)
    if subruns:
        show_seeds(console, subruns, n_exemplars, exemplar_neurons)
    else:
        show_run(console, run, n_exemplars, exemplar_neurons=exemplar_neurons)
