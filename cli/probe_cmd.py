"""`skn probe`: train a prompt (unless given), correlate every neuron with the metric, rank, show."""

from __future__ import annotations

from dataclasses import replace

import click
from rich.console import Console
from rich.text import Text

from skn.api import ProbeConfig
from skn.backend import Backend
from skn.progress import RichProgress
from skn.rank import Reduce
from skn.report import write_report
from skn.errors import UsageError
from skn.run import DataRequest, ModelRequest, ProbeRequest, TrainSettings, memory_plan, run_directory, run_probe

from skn.cli.options import data_options, model_options, option, out_option, threads_option, train_options
from skn.cli.render import group_tables, print_run


@click.command("probe")
@model_options
@data_options
@train_options
@option("--prompt", ProbeRequest, "prompt", metavar="FILE")
@option("--metric", ProbeRequest, "metric")
@option("--task", DataRequest, "task", metavar="NAME")
@option("--train-size", DataRequest, "train_size", type=int)
@option("--val-size", DataRequest, "val_size", type=int)
@option("--group-by", ProbeRequest, "group_by", metavar="FIELD")
@option("--top-k", ProbeConfig, "top_k")
@option("--exemplars", ProbeConfig, "n_exemplars")
@option("--reduce", ProbeConfig, "reduce", type=click.Choice([r.value for r in Reduce]))
@option("--backend", ProbeConfig, "backend", type=click.Choice([b.value for b in Backend]))
@option("--fused-mlp", ProbeConfig, "fused_mlp")
@threads_option
@click.option("--dry-run", is_flag=True, help="Print the memory plan (no weight loads) and exit.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: the plan as one JSON object (peak_bytes = the estimated peak).")
@click.option("--report", is_flag=True, help="Also write RUN/report.html (figures and exemplars, one offline page).")
@out_option
def probe_command(
    model: ModelRequest, data: DataRequest, train: TrainSettings, prompt: str, metric: str, task: str,
    train_size: int | None, val_size: int | None, group_by: tuple[str, ...], top_k: int, n_exemplars: int,
    reduce: str, backend: str, fused_mlp: bool, threads: int, dry_run: bool, as_json: bool, report: bool, out: str,
) -> None:
    """Find the neurons whose activation on the soft prompt correlates with a metric.

    With no arguments: the small model skn ships, on generated multiplication items, metric loss.

    \b
    Examples:
      skn probe
      skn probe --model ../shared/models/stories260K-hf --data train.jsonl --val-data val.jsonl \\
                --metric loss --out RUN
    """
    request = ProbeRequest(
        model=model,
        data=replace(data, task=task, train_size=train_size, val_size=val_size),
        train=train,
        probe=ProbeConfig(batch_size=train.batch_size, top_k=top_k, n_exemplars=n_exemplars, reduce=Reduce(reduce),
                          backend=Backend(backend), template=data.template, fused_mlp=fused_mlp),
        metric=metric,
        prompt=prompt,
        group_by=tuple(group_by),
        out=out,
        threads=threads,
    )
    if dry_run:
        plan = memory_plan(request)
        click.echo(plan.to_json() if as_json else plan.line())
        return
    if as_json:
        raise UsageError("--json goes with --dry-run")
    run_dir = run_directory(out)  # named here so that the CLI can print it; run_probe writes into it
    request = replace(request, out=str(run_dir))
    console = Console()
    notices = Console(stderr=True)
    result = run_probe(request, RichProgress(), notify=lambda line: notices.print(Text(line, style="yellow"), soft_wrap=True))
    print_run(console, result.info, result.neurons, result.top_activations, result.examples, n_exemplars)
    if result.groups is not None:
        for table in group_tables(result.groups):
            console.print(table)
    if report:
        console.print(Text("report: ") + Text(str(write_report(run_dir, exemplar_count=n_exemplars)), style="bold"))
    console.print(Text("run directory: ") + Text(str(run_dir), style="bold"))
