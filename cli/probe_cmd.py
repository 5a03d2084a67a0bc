"""`skn probe`: train a prompt (unless given), correlate every neuron with the metric, rank, show."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from skn import api
from skn.backend import Backend
from skn.metrics import parse_metric
from skn.null import NullConfig
from skn.progress import RichProgress
from skn.rank import Reduce
from skn.report import write_report

from skn.cli import common
from skn.cli.options import DataArgs, ModelArgs, TrainArgs, data_options, model_options, train_options
from skn.cli.render import group_tables, print_run


@click.command("probe")
@model_options
@data_options
@train_options
@click.option("--prompt", "prompt_path", default="", metavar="FILE", help="Use this prompt.safetensors (or run directory) instead of training one.")
@click.option("--metric", default="",
              help="loss | confidence | correct | NAME | field:NAME | NAME==VALUE | python:MODULE:FUNCTION "
                   "[default: the task's, else loss]")
@click.option("--task", default="", metavar="NAME", help="A built-in task (see `skn tasks`): reads --data/--val-data in its format.")
@click.option("--train-size", type=int, default=None, help="Sample this many training examples (seeded; stratified for tasks).")
@click.option("--val-size", type=int, default=None, help="Sample this many validation examples (seeded; stratified for tasks).")
@click.option("--group-by", multiple=True, metavar="FIELD", help="Summarise top-neuron activations per value of this field [default: the task's].")
@click.option("--top-k", default=10, show_default=True, help="Neurons to keep.")
@click.option("--exemplars", "n_exemplars", default=5, show_default=True, help="Most and least activating examples per neuron.")
@click.option("--reduce", type=click.Choice([r.value for r in Reduce]), default="abs", show_default=True,
              help="abs: r at argmax_k |r| (sign kept); max: the paper's max_k r.")
@click.option("--backend", type=click.Choice([b.value for b in Backend]), default="auto", show_default=True,
              help="Statistics update: auto = Triton on CUDA, torch elsewhere.")
@click.option("--null", "null_permutations", default=100, show_default=True, metavar="R",
              help="Permutations of the metric for the family-wise null (p-values, threshold); 0 = off.")
@click.option("--alpha", default=0.05, show_default=True, help="Family-wise error rate of the null's threshold.")
@click.option("--report", is_flag=True, help="Also write RUN/report.html (figures and exemplars, one offline page).")
@click.option("--out", default="", metavar="RUN", help="Run directory to write.")
def probe_command(
    model: ModelArgs, data: DataArgs, train: TrainArgs, prompt_path: str, metric: str, task: str, train_size: int | None,
    val_size: int | None, group_by: tuple[str, ...], top_k: int, n_exemplars: int, reduce: str, backend: str, null_permutations: int,
    alpha: float, report: bool, out: str,
) -> None:
    """Find the neurons whose activation on the soft prompt correlates with a metric.

    With no arguments: the small model skn ships, on generated multiplication items, metric loss.

    \b
    Examples:
      skn probe
      skn probe --model ../shared/models/stories260K-hf --data train.jsonl --val-data val.jsonl \\
                --metric loss --out RUN
    """
    bundled = common.uses_bundled_model(model)
    common.set_threads(train.threads)
    chosen = common.examples_for(data, task, train_size, val_size, bundled)
    spec = parse_metric(metric or chosen.default_metric)
    run_dir = common.out_dir(out)
    split = chosen.split
    loaded = common.loaded_model(model)
    job = api.ProbeJob(
        loaded=loaded,
        split=split,
        metric=spec,
        out=run_dir,
        train_config=common.train_config(train, data.seed, len(split.train), bundled),
        probe_config=api.ProbeConfig(
            batch_size=train.batch_size, top_k=top_k, n_exemplars=n_exemplars, reduce=Reduce(reduce),
            backend=Backend(backend), template=data.template, null=NullConfig(null_permutations, alpha, data.seed),
        ),
        prompt_path=Path(prompt_path) if prompt_path else None,
        resume=train.resume,
        data_label=",".join(data.data) or chosen.summary,
        val_data_label=",".join(data.val_data) or chosen.val_label,
        group_by=tuple(group_by) or chosen.group_by,
        extra_info={"task": task, "data_summary": chosen.summary} if task else {},
    )
    outcome = api.run_probe_job(job, RichProgress())
    result = outcome.result
    console = Console()
    print_run(console, outcome.info, result.neurons, result.top_activations, result.examples, n_exemplars, result.null)
    if outcome.groups is not None:
        for table in group_tables(outcome.groups):
            console.print(table)
    if report:
        console.print(f"report: [bold]{write_report(run_dir, exemplar_count=n_exemplars)}[/]")
    console.print(f"run directory: [bold]{run_dir}[/]")
