"""Which examples a run probes (a task, files, or generated items) and the defaults that come with them.

    --task NAME      the task's own loader reads --data/--val-data (skn.tasks)
    --data FILES     JSONL/CSV files, split and sampled (skn.inputs.data)
    neither          on the bundled model its generated multiplication items (skn.zoo); on any other
                     model the paper's RQ3, the arithmetic task's generated items, with a notice

This is the policy `skn.engine.run` applies to every run (and `skn.engine.run_plan` to a dry run's plan).
"""

from __future__ import annotations

from dataclasses import dataclass

from skn import zoo
from skn.inputs.data import FieldNames, Split, load_split
from skn.engine.request import BUNDLED_TRAIN_SIZE, BUNDLED_VAL_SIZE, DataRequest
from skn.tasks import get_task, load_task, sample


@dataclass(frozen=True)
class ChosenExamples:
    """The examples of a run and the defaults that come with them."""

    split: Split
    default_metric: str
    group_by: tuple[str, ...]
    data_label: str  # run.json's `data`
    val_label: str  # run.json's `val_data`
    summary: str  # one line for a task's run.json `data_summary` ("" for files)
    task: str = ""  # the built-in task the examples come from ("" for files and the bundled default)
    notice: str = ""  # one line to tell the user before the run starts ("" when nothing needs saying)


NO_DATA_TASK = "arithmetic"  # the paper's label-free experiment (RQ3), run when a model comes with no data


def no_data_notice(n_items: int) -> str:
    return (f"no data given: running the built-in {NO_DATA_TASK} task on {n_items} generated items; "
            "pass --data or --task for your own")


def choose_examples(request: DataRequest, bundled_model: bool) -> ChosenExamples:
    """--task NAME reads --data/--val-data in the task's format; otherwise JSONL/CSV files; with neither,
    on the bundled model, the bundled default: generated 2- and 3-digit multiplication items; with
    neither on any other model, the paper's RQ3: the arithmetic task's own generated items (1-5 digits,
    the four operations, BIG-bench's multiple-choice format, never BIG-bench's examples), with a notice."""
    no_data = not request.task and not request.data and not request.val_data
    if no_data and bundled_model:
        split = zoo.default_examples(request.train_size or BUNDLED_TRAIN_SIZE, request.val_size or BUNDLED_VAL_SIZE)
        label = "generated 2-3 digit multiplication (skn.zoo.default_examples)"
        return ChosenExamples(split, "loss", ("last_digit_shortcut", "digits"), label, label, "")
    if no_data or request.task:
        task = get_task(request.task or NO_DATA_TASK)
        loaded = load_task(task, request.data, request.val_data, request.train_size, request.val_size, request.seed)
        notice = no_data_notice(len(loaded.train) + len(loaded.val)) if no_data else ""
        return ChosenExamples(Split(loaded.train, loaded.val), task.default_metric, task.group_by,
                              ",".join(request.data) or loaded.summary, ",".join(request.val_data) or loaded.summary,
                              loaded.summary, task.name, notice)
    split = load_split(request.data, request.val_data, request.val_fraction, request.seed,
                       FieldNames(request.instruction_field, request.completion_field))
    split = Split(sample(split.train, request.train_size, "", request.seed, "training"),
                  sample(split.val, request.val_size, "", request.seed, "validation"))
    val_label = ",".join(request.val_data) or f"{request.val_fraction:g} of data (seed {request.seed})"
    return ChosenExamples(split, "loss", (), ",".join(request.data), val_label, "")


__all__ = ["ChosenExamples", "NO_DATA_TASK", "choose_examples", "no_data_notice"]
