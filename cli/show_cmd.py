"""`skn show RUN`: print a finished run's top neurons without recomputing anything; a `skn probe --seeds`
folder shows each seed's top neurons and their comparison."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from skn.ablation.ablate_files import ABLATION_FILE, CURVE_FILE, read_ablation_run
from skn.ranking.compare import compare_runs, seed_subruns
from skn.views.console import plain
from skn.engine.activations import run_activations, run_neurons, stored_activations
from skn.files.probe_read import read_probe_run
from skn.files.run_model import load_run_model
from skn.views.report import REPORT_FILE
from skn.views.verdict import next_line

from skn.cli.ablate_render import ablation_tables, curve_tables
from skn.cli.compare_cmd import print_comparison
from skn.cli.render import EXEMPLAR_NEURONS, exemplar_table, print_result, print_verdict, summary_line


def show_run(console: Console, run: Path, n_exemplars: int, next_steps: bool = True,
             exemplar_neurons: int = EXEMPLAR_NEURONS) -> None:
    """The run's tables, then its verdict and (with `next_steps`) what to run next on it."""
    result = read_probe_run(run)
    print_result(console, result, n_exemplars, exemplar_neurons=exemplar_neurons)
    ablated = (run / ABLATION_FILE).is_file() or (run / CURVE_FILE).is_file()
    found = read_ablation_run(run) if ablated else None  # the typed records, checked field by field
    if found is not None and found.ablation is not None:
        for table in ablation_tables(found.ablation):
            console.print(table)
    if found is not None and found.curve is not None:
        for table in curve_tables(found.curve):
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


def show_neurons(console: Console, run: Path, neurons: str, n_exemplars: int) -> None:
    """Named neurons' r, rank and exemplars on the run's items (skn.engine.activations: stored for top neurons, else one
    prompt-only pass of the run's model)."""
    result = read_probe_run(run)
    chosen = run_neurons(result, neurons)
    loaded = None if stored_activations(result, chosen) is not None else load_run_model(run)
    found = run_activations(loaded, run, chosen, result=result)
    console.print(summary_line(result.info))
    for n in found.neurons:
        console.print(plain(f"neuron {n.layer}.{n.index} at position {n.position}: r {n.r:+.3f}, rank {n.rank} of "
                            f"{result.corr.shape[0] * result.corr.shape[2]}"))
    if n_exemplars > 0:
        console.print(exemplar_table(found.neurons, found.values, found.examples, n_exemplars))


@click.command("show")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--exemplars", "n_exemplars", type=click.IntRange(min=0), default=5, show_default=True, help="Most and least activating examples per neuron.")
@click.option("--exemplar-neurons", type=click.IntRange(min=0), default=EXEMPLAR_NEURONS, show_default=True,
              help="Show the exemplars of this many top neurons (0 = all).")
@click.option("--neuron", "neurons", metavar="L.I[@k],...", default="",
              help="Show these neurons' exemplars instead, any neurons of the model (outside the top K: one prompt-only "
                   "pass of the run's model; without @k a neuron's best position on the run).")
def show_command(run: Path, n_exemplars: int, exemplar_neurons: int, neurons: str) -> None:
    """Print the top neurons of a run directory and their exemplars.

    A folder written by `skn probe --seeds` shows each seed's top neurons, then their comparison.

    \b
    Example:
      skn show RUN
    """
    console = Console()
    if neurons:
        show_neurons(console, run, neurons, n_exemplars)
        return
    subruns = seed_subruns(run)
    if subruns:
        show_seeds(console, subruns, n_exemplars, exemplar_neurons)
    else:
        show_run(console, run, n_exemplars, exemplar_neurons=exemplar_neurons)
