"""BIG-bench `arithmetic` as multiple choice (the paper's RQ3), its loader, and a generator of new items.

A BIG-bench arithmetic example is `{"input": "What is 56510 times 52373?", "target": "2959598230",
"target_scores": {"8256942891": 0.0, ..., "banana": 0.0, "house": 0.0, "2959598230": 1.0}}`. We keep the
choices in file order; `to_example` shuffles them with the seed.

The generator reproduces BIG-bench's distribution as measured on the 20 real subtask files (not from its
code): operands of exactly N digits (for N = 1 every pair 0..9, for division every pair a, b in 1..9
with b | a), and for an answer written with L characters (a minus sign counts) the distractors are, in
this order: two numbers of L digits, one of max(L - 2, 1) digits (absent when L = 1), one of L + 2
digits, each uniform over the numbers with that many digits (1..9 for one digit, never negative);
a distractor equal to the answer or to an earlier one is dropped; then "banana", "house", the answer.
Division (N >= 2): the divisor's digit count is uniform in 1..N, the divisor uniform among those
numbers, the quotient uniform among those giving an N-digit dividend. This matches BIG-bench's
last-digit-shortcut rate per subtask within a few points (see tests/inputs/test_tasks_arithmetic.py).

BIG-bench's canary forbids training on its examples; generated items are ours and carry no canary.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from skn.inputs.data import Example, read_text
from skn.errors import DataError, UsageError
from skn.inputs.strict_json import parse_json

WORDS = ("banana", "house")  # BIG-bench's two non-numeric choices, in every example
NUMERIC = re.compile(r"[-+]?\d+")
QUESTION = re.compile(r"What is (\d+) (plus|minus|times|divided by) (\d+)\?")
SUBTASK = re.compile(r"(\d+)_digit_(addition|subtraction|multiplication|division)")


class Operation(Enum):
    ADDITION = "addition"
    SUBTRACTION = "subtraction"
    MULTIPLICATION = "multiplication"
    DIVISION = "division"

    @property
    def word(self) -> str:
        return _WORDS[self]

    @staticmethod
    def parse(name: str) -> Operation:
        for op in Operation:
            if op.value == name:
                return op
        known = ", ".join(op.value for op in Operation)
        raise UsageError(f"unknown arithmetic operation '{name}' (known: {known})")

    def apply(self, a: int, b: int) -> int:
        if self is Operation.ADDITION:
            return a + b
        if self is Operation.SUBTRACTION:
            return a - b
        if self is Operation.MULTIPLICATION:
            return a * b
        return a // b


_WORDS = {
    Operation.ADDITION: "plus",
    Operation.SUBTRACTION: "minus",
    Operation.MULTIPLICATION: "times",
    Operation.DIVISION: "divided by",
}
_BY_WORD = {word: op for op, word in _WORDS.items()}


@dataclass(frozen=True)
class ArithmeticItem:
    """One multiple-choice item, in BIG-bench's own terms."""

    question: str  # "What is 56510 times 52373?"
    choices: tuple[str, ...]  # the target_scores keys, in file order
    answer: str  # the key scoring 1
    operation: str  # an Operation value
    digits: int  # digits of the operands (of the dividend for division)
    subtask: str  # "5_digit_multiplication"
    source: str = field(default="", compare=False)  # "FILE#examples[i]" or "generated:...#i"


# ---------------------------------------------------------------- the shortcut


def numeric_choices(item: ArithmeticItem) -> tuple[str, ...]:
    return tuple(c for c in item.choices if NUMERIC.fullmatch(c))


def numeric_distractors(item: ArithmeticItem) -> int:
    """How many numeric choices are wrong."""
    return sum(1 for c in numeric_choices(item) if c != item.answer)


def last_digit_shortcut(item: ArithmeticItem) -> bool:
    """True when the answer is the only numeric choice ending in the true result's last digit."""
    last = item.answer[-1]
    return all(c[-1] != last for c in numeric_choices(item) if c != item.answer)


# ---------------------------------------------------------------- loading


def _parse_question(question: str, where: str) -> tuple[int, Operation, int]:
    match = QUESTION.fullmatch(question.strip())
    if match is None:
        raise DataError(
            f"{where}: input {question!r} is not of the form 'What is A plus|minus|times|divided by B?'"
        )
    return int(match[1]), _BY_WORD[match[2]], int(match[3])


def _item(example: object, where: str) -> ArithmeticItem:
    if not isinstance(example, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(example).__name__}")
    for key in ("input", "target_scores"):
        if key not in example:
            raise DataError(f"{where}: missing field '{key}'")
    question, scores = example["input"], example["target_scores"]
    if not isinstance(question, str):
        raise DataError(f"{where}: field 'input' must be a string, got {type(question).__name__}")
    if not isinstance(scores, dict) or not scores:
        raise DataError(f"{where}: field 'target_scores' must be a non-empty object of choice: score")
    for choice, score in scores.items():
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise DataError(f"{where}: target_scores['{choice}'] must be a number, got {score!r}")
    correct = [c for c, s in scores.items() if s == 1]
    if len(correct) != 1:
        raise DataError(f"{where}: target_scores must give score 1 to exactly one choice, found {len(correct)}")
    answer = correct[0]
    a, op, b = _parse_question(question, where)
    if op is Operation.DIVISION and (b == 0 or a % b != 0):
        raise DataError(f"{where}: {a} divided by {b} is not a whole number")
    if str(op.apply(a, b)) != answer:
        raise DataError(f"{where}: the choice scoring 1 is {answer!r}, but {question.strip()} is {op.apply(a, b)}")
    target = example.get("target", answer)
    if target != answer:
        raise DataError(f"{where}: 'target' {target!r} differs from the choice scoring 1 ({answer!r})")
    digits = len(str(a))
    return ArithmeticItem(
        question=question.strip(),
        choices=tuple(scores),
        answer=answer,
        operation=op.value,
        digits=digits,
        subtask=f"{digits}_digit_{op.value}",
        source=where,
    )


def _read_task(path: Path) -> tuple[ArithmeticItem, ...]:
    try:
        text = read_text(path)  # UTF-8, or an error naming the line
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    task = parse_json(text, str(path))  # a syntax error, a duplicate key or a lone surrogate names its line
    if not isinstance(task, dict):
        raise DataError(f"{path}: expected a BIG-bench task object, got {type(task).__name__}")
    examples = task.get("examples")
    if not isinstance(examples, list) or not examples:
        raise DataError(f"{path}: no 'examples' list (a BIG-bench subtask file has one)")
    return tuple(_item(e, f"{path}#examples[{i}]") for i, e in enumerate(examples))


def _subtask_files(folder: Path) -> list[Path]:
    def key(p: Path) -> tuple[int, str]:
        match = SUBTASK.fullmatch(p.parent.name)
        return (int(match[1]), match[2]) if match else (10**9, p.parent.name)

    return sorted(folder.glob("*/task.json"), key=key)


def load_bigbench(path: Path) -> tuple[ArithmeticItem, ...]:
    """Items of one BIG-bench `task.json`, or of every `*/task.json` subtask under a folder.

    Subtasks come in the order 1_digit_addition, 1_digit_division, ..., 5_digit_subtraction (digits,
    then operation name); a folder's own `task.json` without examples (the parent task) is skipped.
    """
    path = Path(path)
    if path.is_dir():
        own = path / "task.json"
        files = _subtask_files(path)
        if not files:
            if own.is_file():
                return _read_task(own)
            raise DataError(f"{path}: no task.json and no */task.json subtasks in this folder")
        return tuple(item for file in files for item in _read_task(file))
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder")
    return _read_task(path)


# ---------------------------------------------------------------- generating


def _uniform_digits(rng: random.Random, digits: int) -> int:
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def distractors(answer: str, rng: random.Random) -> tuple[str, ...]:
    """BIG-bench-like numeric distractors for an answer (see the module docstring)."""
    length = len(answer)
    sizes = [length, length] + ([max(length - 2, 1)] if length >= 2 else []) + [length + 2]
    out: list[str] = []
    for size in sizes:
        value = str(_uniform_digits(rng, size))
        if value != answer and value not in out:
            out.append(value)
    return tuple(out)


def _one_digit_pairs(op: Operation) -> list[tuple[int, int]]:
    if op is Operation.DIVISION:
        return [(a, b) for a in range(1, 10) for b in range(1, 10) if a % b == 0]
    return [(a, b) for a in range(10) for b in range(10)]


def capped_count(op: Operation, digits: int, n: int) -> int:
    """n, or fewer where fewer distinct questions exist (1 digit: 100 pairs, 23 for division)."""
    return min(n, len(_one_digit_pairs(op))) if digits == 1 else n


def _random_pair(op: Operation, digits: int, rng: random.Random) -> tuple[int, int]:
    if op is not Operation.DIVISION:
        return _uniform_digits(rng, digits), _uniform_digits(rng, digits)
    low, high = 10 ** (digits - 1), 10**digits - 1
    divisor = _uniform_digits(rng, rng.randint(1, digits))
    quotient = rng.randint(-(-low // divisor), high // divisor)
    return quotient * divisor, divisor


def _pairs(op: Operation, digits: int, n: int, rng: random.Random) -> list[tuple[int, int]]:
    if digits == 1:
        every = _one_digit_pairs(op)
        if n > len(every):
            raise UsageError(f"only {len(every)} distinct 1-digit {op.value} questions exist, asked for {n}")
        chosen = set(rng.sample(range(len(every)), n))
        return [p for i, p in enumerate(every) if i in chosen]  # BIG-bench lists them in order
    seen: set[tuple[int, int]] = set()
    pairs: list[tuple[int, int]] = []
    for _ in range(100 * n + 1000):
        pair = _random_pair(op, digits, rng)
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
            if len(pairs) == n:
                return pairs
    raise UsageError(f"could not find {n} distinct {digits}-digit {op.value} questions; ask for fewer")


def generate_items(operation: str, digits: int, n: int, seed: int) -> tuple[ArithmeticItem, ...]:
    """n new items of one subtask, distinct questions, in BIG-bench's format and distribution."""
    op = Operation.parse(operation)
    if digits < 1:
        raise UsageError(f"digits must be at least 1, got {digits}")
    if n < 1:
        raise UsageError(f"the number of items must be at least 1, got {n}")
    subtask = f"{digits}_digit_{op.value}"
    rng = random.Random(f"skn-arithmetic|{seed}|{subtask}")
    items = []
    for index, (a, b) in enumerate(_pairs(op, digits, n, rng)):
        answer = str(op.apply(a, b))
        items.append(
            ArithmeticItem(
                question=f"What is {a} {op.word} {b}?",
                choices=(*distractors(answer, rng), *WORDS, answer),
                answer=answer,
                operation=op.value,
                digits=digits,
                subtask=subtask,
                source=f"generated:{subtask}:seed={seed}#{index}",
            )
        )
    return tuple(items)


# ---------------------------------------------------------------- writing


def _task_record(items: Sequence[ArithmeticItem], name: str) -> dict[str, object]:
    return {
        "name": name,
        "description": "Arithmetic questions generated by skn in BIG-bench's multiple-choice format.",
        "keywords": ["mathematics", "arithmetic", "numerical response"],
        "preferred_score": "multiple_choice_grade",
        "metrics": ["exact_str_match", "multiple_choice_grade"],
        "output_regex": NUMERIC.pattern,
        "examples": [
            {
                "input": item.question,
                "target": item.answer,
                "target_scores": {c: (1.0 if c == item.answer else 0.0) for c in item.choices},
            }
            for item in items
        ],
    }


def write_task_json(items: Sequence[ArithmeticItem], path: Path) -> None:
    """Write items as one BIG-bench `task.json` (named after their subtask when they share one)."""
    if not items:
        raise UsageError("no items to write")
    subtasks = {item.subtask for item in items}
    name = subtasks.pop() if len(subtasks) == 1 else "arithmetic_generated"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_task_record(items, name), indent=2) + "\n", encoding="utf-8")


def write_bigbench_folder(items: Sequence[ArithmeticItem], folder: Path) -> tuple[Path, ...]:
    """Write items as BIG-bench's layout: `folder/N_digit_op/task.json` per subtask."""
    by_subtask: dict[str, list[ArithmeticItem]] = {}
    for item in items:
        by_subtask.setdefault(item.subtask, []).append(item)
    paths = []
    for subtask, group in by_subtask.items():
        path = Path(folder) / subtask / "task.json"
        write_task_json(group, path)
        paths.append(path)
    return tuple(paths)


# ---------------------------------------------------------------- the example


def shuffled_choices(item: ArithmeticItem, seed: int) -> tuple[str, ...]:
    """The choices in the order the instruction shows them: a shuffle seeded by (seed, question)."""
    order = list(item.choices)
    random.Random(f"{seed}|{item.question}").shuffle(order)
    return tuple(order)


def instruction(item: ArithmeticItem, seed: int) -> str:
    return f"Question: {item.question}\nChoices: {', '.join(shuffled_choices(item, seed))}\nAnswer:"


def item_meta(item: ArithmeticItem) -> Mapping[str, object]:
    return {
        "operation": item.operation,
        "digits": item.digits,
        "subtask": item.subtask,
        "last_digit_shortcut": last_digit_shortcut(item),
        "numeric_distractors": numeric_distractors(item),
        "answer": item.answer,
    }


def to_example(item: ArithmeticItem, seed: int) -> Example:
    """The item as an instruction/completion pair; the completion is the answer after one space."""
    return Example(
        instruction=instruction(item, seed),
        completion=" " + item.answer,
        meta=item_meta(item),
        source=item.source or f"arithmetic:{item.subtask}",
    )


def iter_examples(items: Sequence[ArithmeticItem], seed: int) -> Iterator[Example]:
    return (to_example(item, seed) for item in items)
