"""BIG-bench arithmetic: the loader on the real files, the shortcut flag, the template, the generator."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

from skn.errors import DataError, UsageError
from skn.tasks.arithmetic import (
    ArithmeticItem,
    generate_items,
    last_digit_shortcut,
    load_bigbench,
    numeric_distractors,
    shuffled_choices,
    to_example,
    write_bigbench_folder,
    write_task_json,
)

from helpers import SHARED  # noqa: E402
BIGBENCH = SHARED / "data" / "bigbench_arithmetic"
needs_bigbench = pytest.mark.skipif(not BIGBENCH.is_dir(), reason="../shared/data/bigbench_arithmetic is absent")


def item(question: str, choices: tuple[str, ...], answer: str) -> ArithmeticItem:
    return ArithmeticItem(question, choices, answer, "multiplication", 5, "5_digit_multiplication")


# ---------------------------------------------------------------- the shortcut flag, by hand


@pytest.mark.parametrize(
    ("choices", "answer", "expected"),
    [
        # 2959598230 ends in 0; the distractors end in 1, 8, 5, 9
        (("8256942891", "6856058598", "16619555", "204563610029", "banana", "house", "2959598230"), "2959598230", True),
        # 2939885984 ends in 4, and so does 3839424324
        (("9033448237", "3839424324", "18962582", "564059290599", "banana", "house", "2939885984"), "2939885984", False),
        # a negative answer: its last digit is 1; 29, 89, 4, 1152 end in 9, 9, 4, 2
        (("29", "89", "4", "1152", "banana", "house", "-1"), "-1", True),
        # the words never count, even with a digit-like ending
        (("12", "banana", "house", "7"), "7", True),
        (("17", "banana", "house", "7"), "7", False),
    ],
)
def test_last_digit_shortcut_by_hand(choices: tuple[str, ...], answer: str, expected: bool) -> None:
    assert last_digit_shortcut(item("What is 1 times 7?", choices, answer)) is expected


def test_numeric_distractors_excludes_words_and_answer() -> None:
    assert numeric_distractors(item("q", ("29", "89", "4", "1152", "banana", "house", "-1"), "-1")) == 4
    assert numeric_distractors(item("q", ("2", "banana", "house", "0"), "0")) == 1


# ---------------------------------------------------------------- the real files


@needs_bigbench
def test_five_digit_multiplication_real_file() -> None:
    items = load_bigbench(BIGBENCH / "5_digit_multiplication" / "task.json")
    assert len(items) == 1000
    paper = [i for i in items if i.question == "What is 56510 times 52373?"]
    assert len(paper) == 1
    assert paper[0].answer == "2959598230" == str(56510 * 52373)
    assert paper[0].choices == ("8256942891", "6856058598", "16619555", "204563610029", "banana", "house", "2959598230")
    assert last_digit_shortcut(paper[0])
    assert {i.operation for i in items} == {"multiplication"} and {i.digits for i in items} == {5}
    # an independent count: no numeric distractor shares the answer's last digit
    raw = json.loads((BIGBENCH / "5_digit_multiplication" / "task.json").read_text())["examples"]
    expected = sum(
        all(k[-1] != e["target"][-1] for k in e["target_scores"] if re.fullmatch(r"\d+", k) and k != e["target"])
        for e in raw
    )
    assert sum(map(last_digit_shortcut, items)) == expected == 637


@needs_bigbench
def test_whole_folder_loads_every_subtask() -> None:
    items = load_bigbench(BIGBENCH)
    counts: dict[str, int] = defaultdict(int)
    for i in items:
        counts[i.subtask] += 1
    assert len(counts) == 20
    assert counts["1_digit_division"] == 23 and counts["3_digit_division"] == 500 and counts["2_digit_division"] == 200
    assert counts["5_digit_multiplication"] == 1000 and counts["1_digit_addition"] == 100
    assert len(items) == 15023
    assert items[0].subtask == "1_digit_addition" and items[-1].subtask == "5_digit_subtraction"
    assert all(i.choices[-3:] == ("banana", "house", i.answer) for i in items)


# ---------------------------------------------------------------- the template


def test_template_is_stable() -> None:
    it = item("What is 56510 times 52373?",
              ("8256942891", "6856058598", "16619555", "204563610029", "banana", "house", "2959598230"), "2959598230")
    example = to_example(it, seed=0)
    order = shuffled_choices(it, 0)
    assert sorted(order) == sorted(it.choices)
    assert example.instruction == f"Question: What is 56510 times 52373?\nChoices: {', '.join(order)}\nAnswer:"
    assert example.completion == " 2959598230"
    assert dict(example.meta) == {
        "operation": "multiplication", "digits": 5, "subtask": "5_digit_multiplication",
        "last_digit_shortcut": True, "numeric_distractors": 4, "answer": "2959598230",
    }
    # pinned: a change of the shuffle would silently change every run's prompts
    assert order == shuffled_choices(it, 0)
    assert to_example(it, seed=0) == example
    orders = {shuffled_choices(it, s) for s in range(20)}
    assert len(orders) > 10  # the seed does move the choices


# ---------------------------------------------------------------- the generator


def test_generated_items_parse_back(tmp_path: Path) -> None:
    items = generate_items("multiplication", 3, 50, seed=7) + generate_items("subtraction", 2, 50, seed=7)
    paths = write_bigbench_folder(items, tmp_path)
    assert {p.parent.name for p in paths} == {"3_digit_multiplication", "2_digit_subtraction"}
    back = load_bigbench(tmp_path)
    assert sorted(back, key=lambda i: i.question) == sorted(items, key=lambda i: i.question)
    single = tmp_path / "one.json"
    write_task_json(items[:50], single)
    assert load_bigbench(single) == items[:50]


def test_generator_is_seeded_and_valid() -> None:
    a = generate_items("division", 4, 200, seed=3)
    assert a == generate_items("division", 4, 200, seed=3)
    assert a != generate_items("division", 4, 200, seed=4)
    assert len({i.question for i in a}) == 200
    for i in a:
        x, y = (int(t) for t in re.findall(r"\d+", i.question))
        assert len(str(x)) == 4 and x % y == 0 and i.answer == str(x // y)
        assert i.choices[-3:] == ("banana", "house", i.answer)
        assert len(set(i.choices)) == len(i.choices)
    ones = generate_items("addition", 1, 100, seed=0)
    assert [i.question for i in ones][:3] == ["What is 0 plus 0?", "What is 0 plus 1?", "What is 0 plus 2?"]
    assert len(generate_items("division", 1, 23, seed=0)) == 23
    with pytest.raises(UsageError, match="only 23"):
        generate_items("division", 1, 24, seed=0)
    with pytest.raises(UsageError, match="unknown arithmetic operation 'modulo'"):
        generate_items("modulo", 2, 5, seed=0)


def test_generator_distractor_lengths_follow_bigbench() -> None:
    # for an answer of L characters: L, L, max(L-2, 1) (absent for L = 1), L+2 digits
    for i in generate_items("multiplication", 4, 100, seed=1) + generate_items("subtraction", 3, 100, seed=1):
        L = len(i.answer)
        lengths = [len(c) for c in i.choices[:-3]]
        assert set(lengths) <= {L, max(L - 2, 1), L + 2}
        assert all(not c.startswith("-") for c in i.choices[:-3])


@needs_bigbench
@pytest.mark.parametrize("digits", [2, 3, 4, 5])
@pytest.mark.parametrize("operation", ["addition", "subtraction", "multiplication", "division"])
def test_generator_shortcut_rate_matches_bigbench(operation: str, digits: int) -> None:
    real = load_bigbench(BIGBENCH / f"{digits}_digit_{operation}" / "task.json")
    fake = generate_items(operation, digits, 2000 if operation != "division" or digits > 2 else 300, seed=0)
    real_rate = sum(map(last_digit_shortcut, real)) / len(real)
    fake_rate = sum(map(last_digit_shortcut, fake)) / len(fake)
    assert abs(real_rate - fake_rate) < 0.05, (real_rate, fake_rate)


# ---------------------------------------------------------------- malformed files


@pytest.mark.parametrize(
    ("example", "message"),
    [
        ({"target_scores": {"1": 1.0}}, r"examples\[1\]: missing field 'input'"),
        ({"input": "What is 1 plus 1?", "target_scores": {"2": 1.0, "3": 1.0}}, r"examples\[1\]: .*exactly one choice, found 2"),
        ({"input": "What is 1 plus 1?", "target_scores": {"2": "yes"}}, r"examples\[1\]: target_scores\['2'\] must be a number"),
        ({"input": "How much is 1 and 1?", "target_scores": {"2": 1.0}}, r"examples\[1\]: input .* is not of the form"),
        ({"input": "What is 1 plus 1?", "target_scores": {"3": 1.0}}, r"examples\[1\]: the choice scoring 1 is '3', but What is 1 plus 1\? is 2"),
        ({"input": "What is 1 plus 1?", "target": "3", "target_scores": {"2": 1.0}}, r"examples\[1\]: 'target' '3' differs"),
        ({"input": "What is 7 divided by 2?", "target_scores": {"3": 1.0}}, r"examples\[1\]: 7 divided by 2 is not a whole number"),
    ],
)
def test_malformed_example_names_file_row_and_problem(tmp_path: Path, example: dict[str, object], message: str) -> None:
    path = tmp_path / "task.json"
    good = {"input": "What is 1 plus 1?", "target": "2", "target_scores": {"3": 0.0, "banana": 0.0, "2": 1.0}}
    path.write_text(json.dumps({"name": "x", "examples": [good, example]}))
    with pytest.raises(DataError, match=re.escape(str(path)) + "#" + message):
        load_bigbench(path)


def test_broken_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "task.json"
    path.write_text('{"examples": [\n  {"input": "What is 1 plus 1?",\n   "target_scores": {"2": 1.0}\n  ,,]\n}')
    with pytest.raises(DataError, match=re.escape(f"{path}:4: not valid JSON")):
        load_bigbench(path)
    (tmp_path / "parent").mkdir()
    (tmp_path / "parent" / "task.json").write_text('{"name": "arithmetic"}')
    with pytest.raises(DataError, match="no 'examples' list"):
        load_bigbench(tmp_path / "parent")
    with pytest.raises(DataError, match="no such file or folder"):
        load_bigbench(tmp_path / "missing.json")
