"""`skn show RUN`: print a finished run's top neurons without recomputing anything."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from skn.rundir import read_probe_run

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
    print_run(console, result.info, result.neurons, result.top_activations, result.examples, n_exemplars)
    if result.groups is not None:
        print_groups(console, result.groups)
