"""Group summaries against an independent float64 numpy computation; groups.json round trip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from skn.inputs.data import Example
from skn.errors import DataError, InternalError, RunDirError
from skn.cli.render import group_tables
from skn.inputs.groups import group_summaries, groups_to_json as to_json
from skn.files.probe_files import write_groups
from skn.files.probe_read import read_groups
from skn.ranking.rank import Neuron
from skn.files.rundir import GROUPS_FILE

HEURISTICS = ("lexical_overlap", "subsequence", "constituent")


def _examples(n: int, rng: np.random.Generator) -> list[Example]:
    return [
        Example(f"i{k}", "c", {"heuristic": HEURISTICS[int(rng.integers(3))], "shortcut": bool(rng.integers(2)),
                               "digits": int(rng.integers(1, 4))}, f"mem:{k}")
        for k in range(n)
    ]


def test_against_numpy() -> None:
    rng = np.random.default_rng(0)
    examples = _examples(97, rng)
    acts = rng.normal(1e4, 3.0, size=(4, 97)).astype(np.float32)  # an offset: float64 accumulation matters
    neurons = [Neuron(k + 1, k, 10 * k, k % 2, 0.5 - 0.1 * k) for k in range(4)]
    result = group_summaries(torch.from_numpy(acts), neurons, examples, ["heuristic", "shortcut", "digits"])
    assert result.fields == ("heuristic", "shortcut", "digits")
    for row, g in zip(acts.astype(np.float64), result.neurons):
        assert g.overall.count == 97 and math.isclose(g.overall.mean, row.mean(), rel_tol=0, abs_tol=1e-9)
        for field in result.fields:
            values = [e.meta[field] for e in examples]
            expected = sorted(set(values), key=lambda v: (not isinstance(v, bool), v))
            assert [grp.value for grp in g.by_field[field]] == expected
            for grp in g.by_field[field]:
                sel = row[[v == grp.value and type(v) is type(grp.value) for v in values]]
                assert grp.stats.count == len(sel)
                assert abs(grp.stats.mean - sel.mean()) < 1e-9
                assert abs(grp.stats.std - sel.std(ddof=1)) < 1e-9
    assert [grp.value for grp in result.neurons[0].by_field["shortcut"]] == [False, True]


def test_every_group_present_even_unused_by_metric(tmp_path: Path) -> None:
    examples = [Example("i", "c", {"heuristic": h}, f"m:{k}") for k, h in enumerate(HEURISTICS * 2)]
    acts = torch.arange(6, dtype=torch.float32).reshape(1, 6)
    result = group_summaries(acts, [Neuron(1, 0, 0, 0, 0.9)], examples, ["heuristic"])
    groups = result.neurons[0].by_field["heuristic"]
    assert [(g.value, g.stats.count, g.stats.mean) for g in groups] == [
        ("constituent", 2, 3.5), ("lexical_overlap", 2, 1.5), ("subsequence", 2, 2.5)]
    assert math.isclose(groups[0].stats.std, math.sqrt(4.5))
    path = write_groups(tmp_path, result)
    assert path == tmp_path / GROUPS_FILE
    written = json.loads(path.read_text())
    assert written == to_json(result)
    assert written["neurons"][0]["groups"]["heuristic"][0] == {
        "value": "constituent", "count": 2, "mean": 3.5, "std": pytest.approx(math.sqrt(4.5))}
    back = read_groups(tmp_path)
    assert back.fields == result.fields and back.neurons[0].neuron == result.neurons[0].neuron
    assert back.neurons[0].by_field == result.neurons[0].by_field
    console = Console(record=True, width=200)
    for table in group_tables(back):
        console.print(table)
    text = console.export_text()
    assert "lexical_overlap (n=2)" in text and "1.5 ± 2.12" in text


def test_singleton_group_has_null_std(tmp_path: Path) -> None:
    examples = [Example("i", "c", {"f": v}, f"m:{k}") for k, v in enumerate(["a", "a", "b"])]
    result = group_summaries(torch.tensor([[1.0, 2.0, 3.0]]), [Neuron(1, 0, 0, 0, float("nan"))], examples, ["f"])
    record = to_json(result)["neurons"][0]  # type: ignore[index]
    assert record["groups"]["f"][1] == {"value": "b", "count": 1, "mean": 3.0, "std": None}
    assert record["r"] is None
    write_groups(tmp_path, result)
    assert math.isnan(read_groups(tmp_path).neurons[0].by_field["f"][1].stats.std)


def test_errors(tmp_path: Path) -> None:
    examples = [Example("i", "c", {"a": 1}, "data.jsonl:7")]
    with pytest.raises(DataError, match=r"data.jsonl:7: no metadata field 'heuristic' to group by \(fields present: a\)"):
        group_summaries(torch.zeros(1, 1), [Neuron(1, 0, 0, 0, 0.1)], examples, ["heuristic"])
    with pytest.raises(InternalError, match="expected"):
        group_summaries(torch.zeros(2, 1), [Neuron(1, 0, 0, 0, 0.1)], examples, ["a"])
    with pytest.raises(RunDirError, match="no such file"):
        read_groups(tmp_path)
    (tmp_path / GROUPS_FILE).write_text('{"fields": ["a"], "neurons": [{"groups": {}}]}')
    with pytest.raises(RunDirError, match=r"neurons\[0\]: needs integer rank"):
        read_groups(tmp_path)


def test_one_partition_behind_the_summaries_and_the_figures_groups() -> None:
    from skn.inputs.groups import MAX_GROUPS, GroupSource, group_by_field, partition

    values: list[object] = [3, 1.0, "b", True, False, [1, 2], "a"] + [f"w{k}" for k in range(MAX_GROUPS)]
    examples = [Example("i", "c", {"f": v}, f"mem:{k}") for k, v in enumerate(values)]
    examples.append(Example("i", "c", {}, "mem:missing"))
    part = partition(examples, "f")
    assert part.values[:4] == (False, True, 1.0, 3) and part.missing == (len(values),)
    grouping = group_by_field(examples, "f", GroupSource.OPTION)
    assert len(grouping.labels) == MAX_GROUPS + 1  # MAX_GROUPS - 1 kept, "other", "(missing)"
    assert grouping.labels[-2].startswith("other (") and grouping.labels[-1] == "(missing)"
    assert sorted(i for m in grouping.members for i in m) == list(range(len(examples)))
    acts = torch.arange(len(examples), dtype=torch.float32)
    for label, members, s in zip(grouping.labels, grouping.members, grouping.summaries(acts), strict=True):
        chosen = acts.double().numpy()[list(members)]
        assert s.count == len(members) and s.mean == pytest.approx(chosen.mean(), rel=1e-12), label


def test_arithmetic_caps_live_in_one_place() -> None:
    from skn.tasks import default_arithmetic_items
    from skn.tasks.arithmetic import Operation, capped_count

    assert capped_count(Operation.DIVISION, 1, 500) == 23 and capped_count(Operation.ADDITION, 1, 500) == 100
    assert capped_count(Operation.ADDITION, 2, 500) == 500 and capped_count(Operation.DIVISION, 1, 5) == 5
    items = default_arithmetic_items(0, per_subtask=150)
    assert sum(1 for i in items if i.subtask == "1_digit_division") == 23
    assert sum(1 for i in items if i.subtask == "2_digit_addition") == 150
