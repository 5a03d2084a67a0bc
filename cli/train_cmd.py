"""`skn train`: train a soft prompt only."""

from __future__ import annotations

import click
from rich.console import Console

from skn.engine.progress import RichProgress
from skn.files.rundir import PROMPT_FILE
from skn.engine.request import DataRequest, ModelRequest, ProbeRequest, TrainRequest
from skn.engine.distributed import from_environment
from skn.engine.run import run_train
from skn.views.console import plain

from skn.cli.options import SectionedCommand, data_options, model_options, option, out_option, threads_option, train_options


@click.command("train", cls=SectionedCommand)
@model_options
@data_options
@train_options
@threads_option
@option("--overwrite", ProbeRequest, "overwrite")
@out_option
def train_command(model: ModelRequest, data: DataRequest, train: TrainRequest, threads: int, overwrite: bool, out: str) -> None:
    """Train a soft prompt on a frozen model and save it to RUN/prompt.safetensors.

    \b
    Example:
      skn train --model ../shared/models/stories260K-hf --data train.jsonl --val-data val.jsonl --out RUN
    """
    notices = Console(stderr=True)
    result, run_dir = run_train(ProbeRequest(model=model, data=data, train=train, out=out, threads=threads,
                                                overwrite=overwrite), RichProgress(),
                                notify=lambda line: notices.print(plain(line, style="yellow"), soft_wrap=True))
    if not from_environment().leader:  # under torchrun only rank 0 prints
        return
    Console().print(plain(
        f"best validation loss {result.best_val_loss:.4f} at step {result.best_step} "
        f"({result.steps_done} steps, {result.seconds:.1f} s) -> {run_dir / PROMPT_FILE}"
    ))
