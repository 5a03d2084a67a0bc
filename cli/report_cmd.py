"""`skn report RUN`: the whole run on one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from skn.views.console import say

from skn.views.report import REPORT_FILE, write_report


@click.command("report")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help=f"HTML file to write [default: RUN/{REPORT_FILE}].")
@click.option("--group-by", "group_by", metavar="FIELD", default=None,
              help="Metadata field whose values split the densities (default as in `skn plot`).")
@click.option("--exemplars", "examples", type=click.IntRange(min=1), default=5, show_default=True,
              help="Most and least activating examples shown per neuron.")
def report_command(run: Path, out: Path | None, group_by: str | None, examples: int) -> None:
    """Write one HTML file with the run's summary, training curve, figures, the sortable table of top
    neurons, and each neuron's figures (densities per group; against the metric when it is continuous) and
    most and least activating examples. Figures are embedded; it needs no network and works offline in any
    browser.

    \b
    Example:
      skn report runs/hans --out hans.html
    """
    path = write_report(run, out, group_by=group_by, exemplar_count=examples)
    say(Console(), "wrote ", str(path))
