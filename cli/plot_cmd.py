"""`skn plot RUN`: draw a run's figures as PNG files, from the run directory alone."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from skn.ablate_run import ABLATION_FILE, CURVE_FILE, read_ablation, read_curve
from skn.ablate_view import ablation_figure, curve_figure
from skn.activations import run_activations
from skn.plots import PLOTS_DIR, is_top_neuron, parse_neuron, plot_run, png_bytes
from skn.probe_files import read_probe_run
from skn.request import ModelRequest
from skn.run import load_requested_model
from skn.cli.ablate_cmd import _model_request
from skn.console import say
from skn.rundir import write_bytes


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
        request, _ = _model_request(ModelRequest(), run)
        extra = run_activations(load_requested_model(request), run, f"{chosen[0]}.{chosen[1]}")
    paths = plot_run(run, out, neuron=chosen, group_by=group_by, extra=extra)
    if (run / ABLATION_FILE).is_file():  # written by `skn ablate`
        figure = (out if out is not None else run / PLOTS_DIR) / "ablation.png"
        write_bytes(figure, png_bytes(ablation_figure(read_ablation(run))))
        paths = (*paths, figure)
    if (run / CURVE_FILE).is_file():  # written by `skn ablate --curve` or `--scales`
        figure = (out if out is not None else run / PLOTS_DIR) / "ablation_curve.png"
        write_bytes(figure, png_bytes(curve_figure(read_curve(run))))
        paths = (*paths, figure)
    console = Console()
    for path in paths:
        say(console, "wrote ", str(path))
