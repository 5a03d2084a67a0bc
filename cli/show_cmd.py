"""`skn show RUN`: print a finished run's top neurons without recomputing anything."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from skn.ablate_run import ABLATION_FILE, CURVE_FILE, read_ablation, read_curve
from skn.probe_files import read_probe_run

from skn.cli.ablate_render import ablation_tables, curve_table
from skn.cli.render import print_groups, print_run


@click.command("show")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--exemplars", "n_exemplars", type=click.IntRange(min=0), default=5, show_default=True, help="Most and least activating examples per neuron.")
def show_command(run: Path, n_exemplars: int) -> None:
    """Print the top neurons of a run directory and their exemplars.

    \b
    Example:
      skn show RUN
    """
    result = read_probe_run(run)
    console = Console()
    print_run(console, result.info, result.neurons, result.top_activations, result.examples, n_exemplars, result.holdout, result.null, result.partial)
    if result.groups is not None:
        print_groups(console, result.groups)
    if (run / ABLATION_FILE).is_file():
        for table in ablation_tables(read_ablation(run)):
            console.print(table)
    if (run / CURVE_FILE).is_file():
        console.print(curve_table(read_curve(run)))
