"""`skn plot RUN`: draw a run's figures as PNG files, from the run directory alone."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from skn.console import say

from skn.plots import PLOTS_DIR, parse_neuron, plot_run


@click.command("plot")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--neuron", metavar="L.I", default=None,
              help="Only this top neuron's density figure (layer L, neuron I), e.g. 3.117.")
@click.option("--group-by", "group_by", metavar="FIELD", default=None,
              help="Metadata field whose values split the densities (default: run.json's group_by, else the "
                   "metric's field, else the metric itself).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help=f"Folder for the PNGs [default: RUN/{PLOTS_DIR}].")
def plot_command(run: Path, neuron: str | None, group_by: str | None, out: Path | None) -> None:
    """Draw the figures of a probe run: per top neuron, the density of its activation per group; the
    histogram of every neuron's best |r| with the top-K threshold; the best |r| per layer; the prompt's
    training curve.

    \b
    Example:
      skn plot runs/hans --group-by heuristic --out figures/
    """
    chosen = parse_neuron(neuron) if neuron is not None else None
    paths = plot_run(run, out, neuron=chosen, group_by=group_by)
    console = Console()
    for path in paths:
        say(console, "wrote ", str(path))
