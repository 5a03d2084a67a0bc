"""`skn tasks`: list the built-in tasks, show a task's examples, or write generated arithmetic items."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from skn.tasks import default_arithmetic_items, get_task, list_tasks, load_task
from skn.tasks.arithmetic import write_bigbench_folder


def _print_tasks(console: Console) -> None:
    console.print("built-in tasks (skn probe --task NAME):", highlight=False)
    for task in list_tasks():
        console.print(
            f"[bold]{task.name}[/]  metric {task.default_metric}  group by {', '.join(task.group_by)}\n"
            f"    {task.description}\n    --data: {task.data_help}",
            highlight=False, soft_wrap=True,
        )


@click.command("tasks")
@click.argument("name", required=False, default=None)
@click.option("--data", multiple=True, help="Data for NAME, as `skn probe --task NAME --data` takes it.")
@click.option("--val-data", "val_data", multiple=True, help="Validation data for NAME.")
@click.option("--show", "show", type=int, default=3, show_default=True, help="How many examples of NAME to print.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for splitting, sampling and choice order.")
@click.option("--write-arithmetic", "write_arithmetic", type=click.Path(path_type=Path), default=None,
              help="Write generated arithmetic items into this folder as BIG-bench N_digit_op/task.json files.")
@click.option("--per-subtask", "per_subtask", type=int, default=0,
              help="With --write-arithmetic: items per subtask (default: up to 200, as `--task arithmetic` uses).")
def tasks_command(
    name: str | None, data: tuple[str, ...], val_data: tuple[str, ...], show: int, seed: int,
    write_arithmetic: Path | None, per_subtask: int,
) -> None:
    """List the paper's experiments as built-in tasks; with NAME, print its first examples exactly as the
    model sees them.

    \b
    Examples:
      skn tasks
      skn tasks hans --data heuristics_evaluation_set.txt --show 2
      skn tasks --write-arithmetic generated/ --per-subtask 500 --seed 1
    """
    console = Console()
    if write_arithmetic is not None:
        items = default_arithmetic_items(seed, per_subtask) if per_subtask > 0 else default_arithmetic_items(seed)
        paths = write_bigbench_folder(items, write_arithmetic)
        console.print(f"wrote {len(items)} items in {len(paths)} subtasks under {write_arithmetic}", highlight=False)
        return
    if name is None:
        _print_tasks(console)
        return
    task = get_task(name)
    loaded = load_task(task, data, val_data, None, None, seed)
    console.print(loaded.summary, highlight=False, soft_wrap=True)
    for example in loaded.val[: max(show, 0)]:
        console.rule(example.source, style="dim")
        console.print(repr(example.instruction), "->", repr(example.completion), highlight=False, soft_wrap=True)
        console.print(dict(example.meta), highlight=False, soft_wrap=True)

