"""`skn show RUN`: print a finished run's top neurons without recomputing anything."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from skn.groups import read_groups
from skn.rundir import GROUPS_FILE, read_probe_run

from skn.cli.render import group_tables, print_run


@click.command("show")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--exemplars", "n_exemplars", default=5, show_default=True, help="Most and least activating examples per neuron.")
def show_command(run: Path, n_exemplars: int) -> None:
    """Print the top neurons of a run directory and their exemplars.

    \b
    Example:
      skn show RUN
    """
    probe_run = read_probe_run(run)
    info = dict(probe_run.info) | {"n_val": len(probe_run.examples)}
    console = Console()
    print_run(console, info, probe_run.neurons, probe_run.top_activations, probe_run.examples, n_exemplars, probe_run.null)
    if (run / GROUPS_FILE).is_file():
        for table in group_tables(read_groups(run)):
            console.print(table)
