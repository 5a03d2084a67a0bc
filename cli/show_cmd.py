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

from skn.cli.ablate_render import ablation_tables, curve_tables
from skn.cli.compare_cmd import print_comparison
from skn.cli.render import print_groups, print_result


def show_run(console: Console, run: Path, n_exemplars: int) -> None:
    result = read_probe_run(run)
    print_result(console, result, n_exemplars)
    if result.groups is not None:
        print_groups(console, result.groups)
    if (run / ABLATION_FILE).is_file():
        for table in ablation_tables(read_ablation(run)):
            console.print(table)
    if (run / CURVE_FILE).is_file():
        for table in curve_tables(read_curve(run)):
            console.print(table)


def show_seeds(console: Console, subruns: tuple[Path, ...], n_exemplars: int) -> None:
    """Each seed's run (its top neurons, the holdout and the null), then the comparison of the seeds (recomputed
    from the sub-runs' files: the same figures as RUN/compare.json, with the runs' own top K)."""
    for sub in subruns:
        console.print(plain(f"{sub.name} ({sub})", style="bold"))
        show_run(console, sub, n_exemplars)
    if len(subruns) > 1:
        top_k = len(read_probe_run(subruns[0]).neurons)
        console.print(plain(f"comparison of the {len(subruns)} seeds", style="bold"))
        print_comparison(console, compare_runs(subruns, top_k))


@click.command("show")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--exemplars", "n_exemplars", type=click.IntRange(min=0), default=5, show_default=True, help="Most and least activating examples per neuron.")
def show_command(run: Path, n_exemplars: int) -> None:
    """Print the top neurons of a run directory and their exemplars.

    A folder written by `skn probe --seeds` shows each seed's top neurons, then their comparison.

    \b
    Example:
      skn show RUN
    """
    console = Console()
    subruns = seed_subruns(run)
    if subruns:
        show_seeds(console, subruns, n_exemplars)
    else:
        show_run(console, run, n_exemplars)
