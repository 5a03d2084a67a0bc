"""The task registry: names, defaults, and load_task's split and seeded stratified sampling."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from skn.inputs.data import Example
from skn.errors import DataError, UsageError
from skn.tasks import get_task, list_tasks, load_task, sample, stratified_indices

from helpers import SHARED  # noqa: E402
HANS = SHARED / "data" / "hans"
BIGBENCH = SHARED / "data" / "bigbench_arithmetic"


def test_registry() -> None:
    assert [t.name for t in list_tasks()] == ["hans", "arithmetic", "skillmix", "skillmix-pairs"]
    assert get_task("hans").default_metric == "heuristic==lexical_overlap"
    assert get_task("arithmetic").default_metric == "loss"
    assert get_task("skillmix").default_metric == "skill==spatial reasoning"
    assert get_task("skillmix-pairs").default_metric == "skill==spatial reasoning"
    assert get_task("arithmetic").group_by == ("last_digit_shortcut", "operation")
    with pytest.raises(UsageError, match=r"unknown task 'rq9' \(known tasks: hans, arithmetic, skillmix, skillmix-pairs\)"):
        get_task("rq9")


def _examples(groups: dict[str, int]) -> list[Example]:
    return [Example(f"q{g}{i}", "a", {"g": g}, f"mem:{g}{i}") for g, n in groups.items() for i in range(n)]


def test_stratified_sampling_is_proportional_seeded_and_ordered() -> None:
    pool = _examples({"a": 500, "b": 300, "c": 200})
    picked = sample(pool, 100, "g", seed=0, what="training")
    assert Counter(e.meta["g"] for e in picked) == {"a": 50, "b": 30, "c": 20}
    assert picked == sample(pool, 100, "g", seed=0, what="training")
    assert picked != sample(pool, 100, "g", seed=1, what="training")
    positions = [pool.index(e) for e in picked]
    assert positions == sorted(positions)
    # largest remainder: 10 of (5, 3, 2)/10 of 7 -> exact shares 7.14, 1.43, 0.71 + ... totals exactly n
    odd = _examples({"a": 50, "b": 10, "c": 5})
    for n in (1, 2, 7, 13, 64, 65):
        counts = Counter(odd[i].meta["g"] for i in stratified_indices(odd, n, "g", __import__("random").Random(0)))
        assert sum(counts.values()) == n
        for g, size in {"a": 50, "b": 10, "c": 5}.items():
            assert abs(counts[g] - n * size / 65) < 1
    assert sample(pool, None, "g", 0, "training") == tuple(pool)
    with pytest.raises(UsageError, match="asked for 2000 training examples but only 1000"):
        sample(pool, 2000, "g", 0, "training")
    with pytest.raises(DataError, match=r"mem:x0: missing field 'h'"):
        sample(_examples({"x": 3}), 2, "h", 0, "training")


def test_generators_without_data() -> None:
    data = load_task(get_task("skillmix"), [], [], 64, 96, seed=0)
    assert len(data.train) == 64 and len(data.val) == 96
    assert Counter(e.meta["skill"] for e in data.val) == {"spatial reasoning": 48, "metaphor": 48}
    assert not {e.instruction for e in data.train} & {e.instruction for e in data.val}
    arithmetic = load_task(get_task("arithmetic"), [], [], None, None, seed=0)
    assert len(arithmetic.train) + len(arithmetic.val) == 3523
    assert len({e.meta["subtask"] for e in arithmetic.val}) == 20
    with pytest.raises(UsageError, match="task hans needs its data"):
        load_task(get_task("hans"), [], [], None, None, seed=0)


@pytest.mark.skipif(not HANS.is_dir(), reason="../shared/data/hans is absent")
def test_hans_train_and_evaluation_sets() -> None:
    train, evaluation = HANS / "heuristics_train_set.derived.tsv", HANS / "heuristics_evaluation_set.derived.tsv"
    data = load_task(get_task("hans"), [train], [evaluation], 64, 96, seed=0)
    assert Counter(e.meta["heuristic"] for e in data.val) == {"lexical_overlap": 32, "subsequence": 32, "constituent": 32}
    assert all(e.source.startswith(str(evaluation)) for e in data.val)
    assert all(e.source.startswith(str(train)) for e in data.train)
    assert data == load_task(get_task("hans"), [train], [evaluation], 64, 96, seed=0)
    assert data.val != load_task(get_task("hans"), [train], [evaluation], 64, 96, seed=1).val
    # --data alone: a deterministic held-out split, disjoint from training
    alone = load_task(get_task("hans"), [evaluation], [], 64, 96, seed=0)
    assert len(alone.val) == 96 and not {e.source for e in alone.train} & {e.source for e in alone.val}
    assert alone == load_task(get_task("hans"), [evaluation], [], 64, 96, seed=0)


@pytest.mark.skipif(not BIGBENCH.is_dir(), reason="../shared/data/bigbench_arithmetic is absent")
def test_arithmetic_folder() -> None:
    data = load_task(get_task("arithmetic"), [BIGBENCH], [], 64, 96, seed=0)
    assert len(data.train) == 64 and len(data.val) == 96
    assert {"operation", "digits", "last_digit_shortcut", "numeric_distractors"} <= set(data.val[0].meta)
    one = load_task(get_task("arithmetic"), [BIGBENCH / "5_digit_multiplication" / "task.json"], [], None, 100, seed=0)
    assert len(one.train) == 900 and len(one.val) == 100
