"""The paper's three experiments as built-in tasks: hans (RQ2), arithmetic (RQ3), skillmix (RQ1), and
skillmix-pairs (RQ1 in minimal pairs: the skill varies, the wording does not).

A task turns its original files into instruction/completion examples with metadata, and names the
paper's metric and the metadata fields to summarise activations by. `load_task` is what
`skn probe --task NAME --data ... --val-data ... --train-size N --val-size N` calls:

- with `--val-data`, training examples come from `--data` and validation examples from `--val-data`;
- with `--data` alone, a seeded split stratified by the task's field holds out `--val-size` examples
  (default: 20%) for validation;
- with neither, a task with a generator (arithmetic, skillmix, skillmix-pairs) generates its data; hans needs files.

`--train-size` / `--val-size` then draw that many examples with the seed, stratified by the task's
field (heuristic, subtask, skill): each group gets its share, rounded by largest remainder. Sampled
examples keep their file order (the trainer shuffles).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from skn.inputs.data import Example
from skn.errors import DataError, UsageError
from skn.tasks import arithmetic, hans, skillmix, skillmix_pairs

VAL_FRACTION = 0.2
Source = str | Path


@dataclass(frozen=True)
class TaskData:
    train: tuple[Example, ...]
    val: tuple[Example, ...]
    summary: str  # one line saying what was read and sampled, for the log and run.json


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    default_metric: str
    group_by: tuple[str, ...]  # default --group-by fields
    stratify_by: str  # metadata field that --train-size / --val-size sampling is stratified by
    data_help: str  # what --data / --val-data take
    read: Callable[[Sequence[Source], int], tuple[Example, ...]]  # (sources, seed) -> examples
    generate: Callable[[int], tuple[Example, ...]]  # seed -> examples when no --data (may raise UsageError)


# ---------------------------------------------------------------- the three tasks


def _read_hans(sources: Sequence[Source], seed: int) -> tuple[Example, ...]:
    return tuple(hans.to_example(item) for source in sources for item in hans.load_hans(source))


def _no_hans_data(seed: int) -> tuple[Example, ...]:
    raise UsageError(
        "task hans needs its data: --data heuristics_train_set.txt --val-data heuristics_evaluation_set.txt "
        "(HANS TSV files), or --data hf:hans:train --val-data hf:hans:validation with `datasets` installed"
    )


def _read_arithmetic(sources: Sequence[Source], seed: int) -> tuple[Example, ...]:
    items = [item for source in sources for item in arithmetic.load_bigbench(Path(source))]
    return tuple(arithmetic.to_example(item, seed) for item in items)


GENERATED_PER_SUBTASK = 200


def default_arithmetic_items(
    seed: int, per_subtask: int = GENERATED_PER_SUBTASK
) -> tuple[arithmetic.ArithmeticItem, ...]:
    """What `--task arithmetic` without --data probes: every subtask (1-5 digits, 4 operations), up to
    `per_subtask` (200) items each (at most all 100 pairs for 1 digit, all 23 for 1-digit division)."""
    items: list[arithmetic.ArithmeticItem] = []
    for digits in range(1, 6):
        for op in arithmetic.Operation:
            n = arithmetic.capped_count(op, digits, per_subtask)
            items.extend(arithmetic.generate_items(op.value, digits, n, seed))
    return tuple(items)


def _generate_arithmetic(seed: int) -> tuple[Example, ...]:
    return tuple(arithmetic.to_example(item, seed) for item in default_arithmetic_items(seed))


def _skillmix_files(sources: Sequence[Source], other: Callable[[Source], None]) -> tuple[list[skillmix.Skill], list[str]]:
    """Skill-Mix's skills.csv and topics.txt among `sources`, read in order; any other source goes to `other`."""
    skills: list[skillmix.Skill] = []
    topics: list[str] = []
    for source in sources:
        path = Path(source)
        if skillmix.is_skills_file(path):
            skills.extend(skillmix.load_skills(path))
        elif path.suffix.lower() == ".txt":
            topics.extend(skillmix.load_topics(path))
        else:
            other(source)
    return skills, topics


def _read_skillmix(sources: Sequence[Source], seed: int) -> tuple[Example, ...]:
    generations: list[Example] = []
    skills, topics = _skillmix_files(sources, lambda source: generations.extend(skillmix.load_generations(source)))
    if generations and (skills or topics):
        raise UsageError("give skillmix either generations (JSONL/CSV with a skill field) or skills.csv/topics.txt "
                         "for the generator, not both")
    if generations:
        return tuple(generations)
    generated: tuple[Example, ...] = skillmix.generate_examples(skillmix.PER_SKILL, seed, topics=topics, skills=skills)
    return generated


def _generate_skillmix(seed: int) -> tuple[Example, ...]:
    generated: tuple[Example, ...] = skillmix.generate_examples(skillmix.PER_SKILL, seed)
    return generated


def _read_skillmix_pairs(sources: Sequence[Source], seed: int) -> tuple[Example, ...]:
    """Skill-Mix's topics.txt adds scenes, its skills.csv names the two skills' categories; nothing else is read."""

    def refuse(source: Source) -> None:
        raise UsageError(f"{Path(source)}: skillmix-pairs generates its items; --data takes only Skill-Mix's skills.csv "
                         "and topics.txt (for your own items, use --task skillmix or plain --data)")

    skills, topics = _skillmix_files(sources, refuse)
    pairs: tuple[Example, ...] = skillmix_pairs.generate_pairs(skillmix_pairs.PAIRS, seed, topics, skills)
    return pairs


def _generate_skillmix_pairs(seed: int) -> tuple[Example, ...]:
    pairs: tuple[Example, ...] = skillmix_pairs.generate_pairs(skillmix_pairs.PAIRS, seed)
    return pairs


TASKS = (
    Task(
        name="hans",
        description="HANS NLI (RQ2): premise + hypothesis -> entailment / non-entailment",
        default_metric="heuristic==lexical_overlap",
        group_by=("heuristic",),
        stratify_by="heuristic",
        data_help="HANS TSV files (heuristics_train_set.txt / heuristics_evaluation_set.txt) or hf:hans:SPLIT",
        read=_read_hans,
        generate=_no_hans_data,
    ),
    Task(
        name="arithmetic",
        description="BIG-bench arithmetic (RQ3) as multiple choice; without --data, generated items",
        default_metric="loss",
        group_by=("last_digit_shortcut", "operation"),
        stratify_by="subtask",
        data_help="BIG-bench task.json files or the arithmetic folder with N_digit_op/task.json subtasks",
        read=_read_arithmetic,
        generate=_generate_arithmetic,
    ),
    Task(
        name="skillmix",
        description="Skill-Mix (RQ1): template-generated spatial-reasoning and metaphor QA, or your generations",
        default_metric="skill==spatial reasoning",
        group_by=("skill",),
        stratify_by="skill",
        data_help="nothing (built-in generator), Skill-Mix skills.csv / topics.txt, or JSONL/CSV with a skill field",
        read=_read_skillmix,
        generate=_generate_skillmix,
    ),
    Task(
        name="skillmix-pairs",
        description="Skill-Mix (RQ1) in minimal pairs: spatial and metaphor items on the same frame and word count",
        default_metric="skill==spatial reasoning",
        group_by=("skill",),
        stratify_by="skill",
        data_help="nothing (built-in generator), or Skill-Mix skills.csv / topics.txt",
        read=_read_skillmix_pairs,
        generate=_generate_skillmix_pairs,
    ),
)


def list_tasks() -> tuple[Task, ...]:
    return TASKS


def get_task(name: str) -> Task:
    for task in TASKS:
        if task.name == name:
            return task
    raise UsageError(f"unknown task '{name}' (known tasks: {', '.join(t.name for t in TASKS)})")


# ---------------------------------------------------------------- sampling


def _stratum(example: Example, field: str) -> str:
    if not field:  # no stratification: one group
        return ""
    if field not in example.meta:
        raise DataError(f"{example.source}: missing field '{field}' (needed to stratify the sample)")
    return str(example.meta[field])


def stratified_indices(examples: Sequence[Example], n: int, field: str, rng: random.Random) -> list[int]:
    """n indices, each group of `field` getting its proportional share (largest remainder), sorted."""
    groups: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        groups.setdefault(_stratum(example, field), []).append(index)
    total = len(examples)
    exact = {key: n * len(members) / total for key, members in groups.items()}
    quota = {key: int(share) for key, share in exact.items()}
    by_remainder = sorted(groups, key=lambda key: -(exact[key] - quota[key]))  # stable: ties keep group order
    for key in by_remainder[: n - sum(quota.values())]:
        quota[key] += 1
    chosen = [i for key, members in groups.items() for i in rng.sample(members, quota[key])]
    return sorted(chosen)


def sample(examples: Sequence[Example], n: int | None, field: str, seed: int, what: str) -> tuple[Example, ...]:
    """n examples stratified by `field` (all of them when n is None)."""
    if n is None:
        return tuple(examples)
    if n < 1:
        raise UsageError(f"{what} size must be at least 1, got {n}")
    if n > len(examples):
        raise UsageError(f"asked for {n} {what} examples but only {len(examples)} are available")
    rng = random.Random(f"skn-sample|{seed}|{what}")
    return tuple(examples[i] for i in stratified_indices(examples, n, field, rng))


def _carve(examples: Sequence[Example], n_val: int, field: str, seed: int) -> tuple[tuple[Example, ...], ...]:
    if not 1 <= n_val < len(examples):
        raise UsageError(f"cannot hold out {n_val} of {len(examples)} examples for validation")
    val_ids = set(stratified_indices(examples, n_val, field, random.Random(f"skn-split|{seed}")))
    return (tuple(e for i, e in enumerate(examples) if i not in val_ids),
            tuple(e for i, e in enumerate(examples) if i in val_ids))


def load_task(
    task: Task,
    data: Sequence[Source],
    val_data: Sequence[Source],
    train_size: int | None,
    val_size: int | None,
    seed: int,
) -> TaskData:
    """The task's training and validation examples (see the module docstring for the rules)."""
    pool = task.read(data, seed) if data else task.generate(seed)
    origin = ", ".join(str(s) for s in data) if data else "the built-in generator"
    if not pool:
        raise DataError(f"task {task.name}: no examples in {origin}")
    if val_data:
        train_pool = pool
        val_pool = task.read(val_data, seed)
        val_origin = ", ".join(str(s) for s in val_data)
    else:
        n_val = val_size if val_size is not None else max(1, round(len(pool) * VAL_FRACTION))
        train_pool, val_pool = _carve(pool, n_val, task.stratify_by, seed)
        val_origin = f"a split of {origin} (seed {seed})"
    train = sample(train_pool, train_size, task.stratify_by, seed, "training")
    val = sample(val_pool, val_size, task.stratify_by, seed, "validation")
    summary = (f"{task.name}: {len(train)} of {len(train_pool)} training examples from {origin}; "
               f"{len(val)} of {len(val_pool)} validation examples from {val_origin}; "
               f"stratified by {task.stratify_by}, seed {seed}")
    return TaskData(train=train, val=val, summary=summary)
