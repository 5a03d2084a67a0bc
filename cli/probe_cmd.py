"""`skn probe`: train a prompt (unless given), correlate every neuron with the metric, rank, show."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console

from skn.engine.probe_config import ProbeConfig, Score
from skn.statistics.backend import Backend
from skn.engine.probe_config import ExemplarsPass
from skn.statistics.null import NullConfig
from skn.engine.progress import RichProgress
from skn.ranking.rank import Reduce
from skn.views.report import write_report
from skn.views.compare_report import write_compare_report
from skn.views.console import plain
from skn.engine.distributed import from_environment
from skn.errors import UsageError
from skn.engine.request import DataRequest, ModelRequest, ProbeRequest, TrainRequest
from skn.engine.run import run_probe
from skn.files.run_out import run_directory
from skn.engine.run_plan import memory_plan
from skn.engine.seeds import check_seeds, parse_seeds, run_seeds, subrun_dir
from skn.views.verdict import next_line

from skn.cli.compare_cmd import print_comparison
from skn.cli.options import (ByteSize, Section, SectionedCommand, data_options, model_options, option, out_option,
                             section_option, threads_option, train_options)
from skn.cli.render import print_result, print_verdict


@click.command("probe", cls=SectionedCommand)
@model_options
@data_options
@train_options
@option("--prompt", ProbeRequest, "prompt", Section.TRAINING, metavar="FILE")
@option("--metric", ProbeRequest, "metric", Section.PROBE)
@option("--task", DataRequest, "task", metavar="NAME")
@option("--train-size", DataRequest, "train_size", type=int)
@option("--val-size", DataRequest, "val_size", type=int)
@option("--group-by", ProbeRequest, "group_by", Section.PROBE, metavar="FIELD")
@option("--top-k", ProbeConfig, "top_k")
@option("--exemplars", ProbeConfig, "n_exemplars")
@option("--reduce", ProbeConfig, "reduce", type=click.Choice([r.value for r in Reduce]))
@option("--backend", ProbeConfig, "backend", type=click.Choice([b.value for b in Backend]))
@option("--holdout", ProbeConfig, "holdout", Section.STATISTICS, type=float, metavar="F")
@option("--score", ProbeConfig, "score", type=click.Choice([sc.value for sc in Score]))
@section_option("--null", "null_permutations", section=Section.STATISTICS, default=NullConfig.permutations, show_default=True,
                metavar="R", help="Permutations of the metric for the family-wise null (p-values, threshold); 0 = off.")
@section_option("--alpha", section=Section.STATISTICS, default=NullConfig.alpha, show_default=True,
                help="Family-wise error rate of the null's threshold.")
@section_option("--seeds", section=Section.TRAINING, default="", metavar="S,S,...",
                help="Train and probe one prompt per seed (e.g. 0,1,2) into RUN/seed-S/, then compare them.")
@option("--fused-mlp", ProbeConfig, "fused_mlp")
@option("--checkpoint-every", ProbeConfig, "checkpoint_every", metavar="N")
@option("--exemplars-pass", ProbeConfig, "exemplars_pass", type=click.Choice([e.value for e in ExemplarsPass]))
@option("--exemplar-store", ProbeConfig, "exemplar_store", metavar="SIZE", type=ByteSize())
@option("--control", ProbeConfig, "control", Section.STATISTICS, metavar="NAME[,NAME...]")
@threads_option
@section_option("--dry-run", section=Section.OUTPUT, is_flag=True, help="Print the memory plan (no weight loads) and exit.")
@section_option("--json", "as_json", section=Section.OUTPUT, is_flag=True,
                help="With --dry-run: the plan as one JSON object (peak_bytes = the estimated peak).")
@option("--overwrite", ProbeRequest, "overwrite")
@option("--any-prompt-model", ProbeRequest, "any_prompt_model", Section.TRAINING)
@section_option("--report", section=Section.OUTPUT, is_flag=True,
                help="Also write RUN/report.html (figures and exemplars, one offline page).")
@out_option
def probe_command(
    model: ModelRequest, data: DataRequest, train: TrainRequest, prompt: str, metric: str, task: str,
    train_size: int | None, val_size: int | None, group_by: tuple[str, ...], top_k: int, n_exemplars: int,
    reduce: str, backend: str, holdout: float | None, score: str, null_permutations: int, alpha: float, seeds: str,
    fused_mlp: bool, checkpoint_every: int, exemplars_pass: str, exemplar_store: int, control: tuple[str, ...], threads: int, dry_run: bool, as_json: bool, overwrite: bool, any_prompt_model: bool, report: bool,
    out: str,
) -> None:
    """Find the neurons whose activation on the soft prompt correlates with a metric.

    With no arguments: the small model skn ships, on generated multiplication items, metric loss.

    \b
    Examples:
      skn probe
      skn probe --model ../shared/models/stories260K-hf --data train.jsonl --val-data val.jsonl \\
                --metric loss --out RUN
      skn probe --task arithmetic --metric loss --control instruction_tokens,digits
    """
    seed_list = parse_seeds(seeds) if seeds else ()
    check_seeds(train, seed_list)  # now, before any training (run_seeds checks again for library callers)
    request = ProbeRequest(
        model=model,
        data=replace(data, task=task, train_size=train_size, val_size=val_size),
        train=train,
        probe=ProbeConfig(top_k=top_k, n_exemplars=n_exemplars, reduce=Reduce(reduce),
                          backend=Backend(backend), template=data.template, holdout=holdout, score=Score(score),
                          null=NullConfig(null_permutations, alpha), fused_mlp=fused_mlp, checkpoint_every=checkpoint_every,
                          exemplars_pass=ExemplarsPass(exemplars_pass), exemplar_store=exemplar_store, control=tuple(control)),
        metric=metric,
        prompt=prompt,
        group_by=tuple(group_by),
        out=out,
        threads=threads,
        overwrite=overwrite,
        any_prompt_model=any_prompt_model,
    )
    if dry_run:
        plan = memory_plan(request)
        click.echo(plan.to_json() if as_json else plan.line())
        return
    if as_json:
        raise UsageError("--json goes with --dry-run")
    if not from_environment().leader:  # under torchrun: ranks other than 0 compute, print and write nothing
        run_probe(request)
        return
    if not out:  # claimed here so that the CLI can print it; run_probe writes into it
        request = replace(request, out=str(run_directory("")))
    run_dir = Path(request.out)
    console = Console()
    if seeds:
        _probe_seeds(console, request, seed_list, n_exemplars, report)
        return
    notices = Console(stderr=True)
    result = run_probe(request, RichProgress(), notify=lambda line: notices.print(plain(line, style="yellow"), soft_wrap=True))
    print_result(console, result, n_exemplars)
    page = str(write_report(run_dir, exemplar_count=n_exemplars)) if report else ""
    if page:
        console.print(plain("report: ") + plain(page, style="bold"))
    console.print(plain("run directory: ") + plain(str(run_dir), style="bold"))
    print_verdict(console, result, str(run_dir), page)


def _probe_seeds(console: Console, request: ProbeRequest, seeds: tuple[int, ...], n_exemplars: int, report: bool) -> None:
    done = run_seeds(request, seeds, RichProgress())
    out = Path(request.out)
    for seed, result in zip(done.seeds, done.outcomes, strict=True):
        console.print(plain(f"seed {seed}", style="bold"))
        print_result(console, result, n_exemplars)
        if report:
            console.print(plain(f"report: {write_report(subrun_dir(out, seed), exemplar_count=n_exemplars)}"))
        print_verdict(console, result)
    if done.comparison is not None:
        if report:
            console.print(plain(f"report: {write_compare_report(out, done.comparison)}"))
        print_comparison(console, done.comparison)
    console.print(plain(f"run directory: {out} (one seed-S/ per seed)"))
    if done.seeds:
        console.print(plain(next_line(str(subrun_dir(out, done.seeds[0])))))
