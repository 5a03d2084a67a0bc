"""`skn activations RUN --neuron L.I[@k],...`: any neuron's activations on the run's items or on new texts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from skn.engine.activations import Item, RunActivations, run_activations, run_neurons, stored_activations
from skn.checks import thread_count
from skn.views.console import plain, say, text
from skn.inputs.data import load_examples
from skn.errors import UsageError
from skn.files.probe_read import read_probe_run
from skn.engine.progress import AutoProgress
from skn.ranking.rank import Neuron, exemplars
from skn.engine.request import ModelRequest
from skn.files.rundir import write_json
from skn.engine.run import set_threads
from skn.files.run_model import load_run_model

from skn.cli.options import model_options, threads_option

TEXT_COLUMN = 60  # characters of an item's text shown in a table


def _label(n: Neuron) -> str:
    return f"{n.layer}.{n.index}@{n.position}"


def _heading(n: Neuron) -> str:
    return f"neuron {_label(n)}: rank {n.rank}, r {n.r:+.3f} on the run's ranking" if n.rank else f"neuron {_label(n)}"


def _cell(value: float) -> str:
    return f"{value:+.4g}"


def items_table(found: RunActivations) -> Table:
    """Every item (a row) with each neuron's activation (a column)."""
    table = Table()
    table.add_column("text", overflow="ellipsis", no_wrap=True, max_width=TEXT_COLUMN)
    for n in found.neurons:
        table.add_column(plain(_label(n)), justify="right", no_wrap=True)
    for i, example in enumerate(found.examples):
        table.add_row(plain(" ".join(example.instruction.split())), *(plain(_cell(float(found.values[k, i])))
                                                                      for k in range(len(found.neurons))))
    return table


def exemplar_tables(found: RunActivations, count: int) -> list[tuple[str, Table]]:
    """Per neuron: a heading and its `count` most and least activating items, strongest first."""
    tables = []
    for k, n in enumerate(found.neurons):
        chosen = exemplars(found.values[k], count)
        values = found.values[k]
        table = Table()
        table.add_column("", no_wrap=True)
        table.add_column("activation", justify="right", no_wrap=True)
        table.add_column("text", overflow="ellipsis", no_wrap=True, max_width=TEXT_COLUMN)
        for side, indices in (("most", chosen.most), ("least", chosen.least)):
            for i in indices:
                table.add_row(plain(side), plain(_cell(float(values[i]))), plain(" ".join(found.examples[i].instruction.split())))
        tables.append((_heading(n), table))
    return tables


@click.command("activations")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--neuron", "neurons", multiple=True, required=True, metavar="L.I[@k],...",
              help="Neurons to read (layer.index; @k = prompt position, else the neuron's best position on the "
                   "run's r); comma-separated or repeated. Any neuron, not only the top K.")
@click.option("--text", "texts", multiple=True, metavar="TEXT", help="Read the neurons on this text (repeat for several).")
@click.option("--data", "data", default="", metavar="FILE",
              help="Read the neurons on the instructions of this .jsonl/.csv file [default: the run's own items].")
@click.option("--exemplars", "n_exemplars", type=click.IntRange(min=1), default=5, show_default=True,
              help="On the run's items or --data: the most and least activating items shown per neuron.")
@click.option("--json", "json_out", default="", metavar="PATH",
              help="Write every activation as JSON to PATH ('-': print the JSON instead of the tables).")
@click.option("--batch-size", default=16, show_default=True, help="Items per forward.")
@model_options
@threads_option
def activations_command(run: Path, neurons: tuple[str, ...], texts: tuple[str, ...], data: str, n_exemplars: int,
                        json_out: str, batch_size: int, model: ModelRequest, threads: int) -> None:
    """Read any neuron's activation at a prompt position, on the run's validation items or on new texts:
    one prompt-only pass with the run's model and prompt (no pass at all for a top neuron at its ranked
    position on the run's items: those are stored).

    \b
    Example:
      skn activations runs/stories --neuron 0.5                 # its most and least activating items
      skn activations runs/stories --neuron 0.5,1.7@3 --text "Once upon a time" --text "The end"
      skn activations runs/stories --neuron 1.7 --data more.jsonl --json acts.json
    """
    thread_count("--threads", threads)
    set_threads(threads)
    if texts and data:
        raise UsageError("--text and --data both give the items: give one")
    result = read_probe_run(run)  # a missing or damaged run fails before the model loads
    chosen = run_neurons(result, ",".join(neurons))
    items: tuple[Item, ...] = tuple(texts) if texts else load_examples(data) if data else ()
    needs_pass = bool(items) or stored_activations(result, chosen) is None
    loaded = load_run_model(run, model) if needs_pass else None
    found = run_activations(loaded, run, chosen, items, batch_size, AutoProgress(), result)
    console = Console()
    if json_out == "-":
        sys.stdout.write(json.dumps(found.to_json(), ensure_ascii=False, allow_nan=False) + "\n")
        return
    if texts:
        say(console, f"activations on {len(found.examples)} texts (each neuron as layer.index@position)")
        console.print(items_table(found))
    else:
        for heading, table in exemplar_tables(found, n_exemplars):
            say(console, heading)
            console.print(table)
    if json_out:
        write_json(Path(json_out), found.to_json())
        say(console, text("wrote ", json_out))
