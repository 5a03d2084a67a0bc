"""HANS: the TSV loader on the real files, the template, malformed rows."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from skn.errors import DataError
from skn.tasks.hans import HansItem, load_hans, to_example

from helpers import SHARED  # noqa: E402
HANS = SHARED / "data" / "hans"
EVAL = HANS / "heuristics_evaluation_set.derived.tsv"
TRAIN = HANS / "heuristics_train_set.derived.tsv"
needs_hans = pytest.mark.skipif(not EVAL.is_file(), reason="../shared/data/hans is absent")

ORIGINAL_HEADER = ("gold_label\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\t"
                   "sentence1\tsentence2\tpairID\theuristic\tsubcase\ttemplate")


@needs_hans
def test_evaluation_set_counts() -> None:
    items = load_hans(EVAL)
    assert len(items) == 30000
    assert Counter(i.heuristic for i in items) == {"lexical_overlap": 10000, "subsequence": 10000, "constituent": 10000}
    assert Counter(i.label for i in items) == {"entailment": 15000, "non-entailment": 15000}
    assert len({i.subcase for i in items}) == 30
    assert Counter(i.subcase for i in items)["ce_adverb"] == 1000
    assert items[0].source == f"{EVAL}:2"  # line 1 is the header
    pair = [i for i in items if i.premise == "The president advised the doctor ."]
    assert any(i.hypothesis == "The doctor advised the president ." and i.label == "non-entailment" for i in pair)


@needs_hans
def test_train_set_counts() -> None:
    items = load_hans(TRAIN)
    assert len(items) == 30000
    assert Counter(i.heuristic for i in items) == {"lexical_overlap": 10000, "subsequence": 10000, "constituent": 10000}


def test_template_is_stable() -> None:
    item = HansItem("The doctor saw the lawyer .", "The lawyer saw the doctor .", "non-entailment",
                    "lexical_overlap", "ln_subject/object_swap", "x.tsv:2")
    example = to_example(item)
    assert example.instruction == (
        "Premise: The doctor saw the lawyer .\n"
        "Hypothesis: The lawyer saw the doctor .\n"
        "Question: Does the premise entail the hypothesis? Answer entailment or non-entailment.\n"
        "Answer:"
    )
    assert example.completion == " non-entailment"
    assert dict(example.meta) == {"heuristic": "lexical_overlap", "subcase": "ln_subject/object_swap",
                                  "label": "non-entailment"}
    assert example.source == "x.tsv:2"


def test_original_format_with_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "heuristics_evaluation_set.txt"
    row = "\t".join(["entailment", "(a)", "(b)", "(A)", "(B)", "The cat slept .", "The cat slept .", "ex0",
                     "subsequence", "se_adjective", "temp1"])
    path.write_text(f"{ORIGINAL_HEADER}\n{row}\n\n")
    (item,) = load_hans(path)
    assert item == HansItem("The cat slept .", "The cat slept .", "entailment", "subsequence", "se_adjective",
                            f"{path}:2")


def test_missing_optional_subcase(tmp_path: Path) -> None:
    path = tmp_path / "mini.tsv"
    path.write_text("sentence1\tsentence2\tgold_label\theuristic\nA b .\tB a .\tnon-entailment\tconstituent\n")
    (item,) = load_hans(path)
    assert item.subcase == "unknown" and item.heuristic == "constituent" and item.premise == "A b ."


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sentence1\tsentence2\theuristic\na\tb\tc\n", r":1: the header lacks column\(s\) gold_label"),
        ("gold_label\tsentence1\tsentence2\theuristic\nentailment\ta\tb\tconstituent\nentailment\ta\tb\n",
         r":3: 3 tab-separated values, the header has 4"),
        ("gold_label\tsentence1\tsentence2\theuristic\ncontradiction\ta\tb\tconstituent\n",
         r":2: gold_label is 'contradiction', expected one of entailment, non-entailment"),
        ("gold_label\tsentence1\tsentence2\theuristic\nentailment\ta\t\tconstituent\n", r":2: column 'sentence2' is empty"),
        ("", r": empty file"),
    ],
)
def test_malformed_tsv_names_file_row_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    with pytest.raises(DataError, match=re.escape(str(path)) + message):
        load_hans(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_hans(tmp_path / "nope.tsv")
