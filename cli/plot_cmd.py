"""`skn plot RUN`: draw a run's figures as PNG files, from the run directory alone."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from skn.ablation.ablate_files import ABLATION_FILE, CURVE_FILE, read_ablation_run, write_ablation_figures
from skn.engine.activations import run_activations
from skn.views.plots import PLOTS_DIR, is_top_neuron, parse_neuron, plot_run
from skn.files.probe_read import read_probe_run
from skn.files.run_model import load_run_model
from skn.views.console import say


@click.command("plot")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--neuron", metavar="L.I", default=None,
              help="Only this neuron's figures (layer L, neuron I), e.g. 3.117; a neuron outside the top K is read in one "
                   "prompt-only pass of the run's model (skn activations).")
@click.option("--group-by", "group_by", metavar="FIELD", default=None,
              help="Metadata field whose values split the densities (default: run.json's group_by, else the "
                   "metric's field, else the metric itself).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help=f"Folder for the PNGs [default: RUN/{PLOTS_DIR}].")
def plot_command(run: Path, neuron: str | None, group_by: str | None, out: Path | None) -> None:
    """Draw the figures of a probe run: per top neuron, the density of its activation per group (and, when
    the metric is continuous, its activation against the metric, NAME_metric.png); the histogram of every
    neuron's best |r| with the top-K threshold; the best |r| per layer; the prompt's training curve.

    \b
    Example:
      skn plot runs/hans --group-by heuristic --out figures/
    """
    chosen = parse_neuron(neuron) if neuron is not None else None
    extra = None
    if chosen is not None and not is_top_neuron(read_probe_run(run), chosen):
        extra = run_activations(load_run_model(run), run, f"{chosen[0]}.{chosen[1]}")
    paths = plot_run(run, out, neuron=chosen, group_by=group_by, extra=extra)
    if (run / ABLATION_FILE).is_file() or (run / CURVE_FILE).is_file():  # written by `skn ablate` (--curve, --scales)
        paths = (*paths, *write_ablation_figures(run, read_ablation_run(run), out))
    console = Console()
    for path in paths:
        say(console, "wrote ", str(path))
