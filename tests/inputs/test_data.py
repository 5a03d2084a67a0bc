from __future__ import annotations

from pathlib import Path

import pytest

from skn.inputs.data import FieldNames, load_examples, load_split, split_validation
from skn.errors import DataError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_keeps_other_fields_as_meta(tmp_path: Path) -> None:
    f = write(tmp_path / "d.jsonl", '{"instruction": "a", "completion": "b", "heuristic": "x", "n": 3}\n\n{"instruction": "c", "completion": 4}\n')
    examples = load_examples(f)
    assert [e.instruction for e in examples] == ["a", "c"]
    assert examples[0].meta == {"heuristic": "x", "n": 3}
    assert examples[1].completion == "4"
    assert examples[1].source == f"{f}:3"


def test_csv_and_renamed_fields(tmp_path: Path) -> None:
    f = write(tmp_path / "d.csv", "q,a,label\nhello,world,1\n")
    (e,) = load_examples(f, FieldNames("q", "a"))
    assert (e.instruction, e.completion, e.meta) == ("hello", "world", {"label": "1"})


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"instruction": "a", "completion": "b"}\n{"instruction": "a"\n', ":2: not valid JSON"),
        ('{"instruction": "a"}\n', ":1: missing field 'completion'"),
        ('[1, 2]\n', ":1: expected a JSON object"),
        ('{"instruction": ["a"], "completion": "b"}\n', "field 'instruction' must be a string"),
        ("\n", "no examples"),
    ],
)
def test_bad_jsonl_names_file_line_field(tmp_path: Path, text: str, message: str) -> None:
    f = write(tmp_path / "bad.jsonl", text)
    with pytest.raises(DataError, match=message.replace("[", r"\[")) as err:
        load_examples(f)
    assert "bad.jsonl" in str(err.value)


def test_bad_csv_row(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.csv", "instruction,completion\na,b\nc,d,e\n")
    with pytest.raises(DataError, match=r"bad.csv:3: more values"):
        load_examples(f)


def test_missing_file_and_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_examples(tmp_path / "none.jsonl")
    with pytest.raises(DataError, match="unknown data format"):
        load_examples(write(tmp_path / "x.txt", "hi"))


def test_seeded_split(tmp_path: Path) -> None:
    lines = "".join(f'{{"instruction": "i{i}", "completion": "c"}}\n' for i in range(50))
    examples = load_examples(write(tmp_path / "d.jsonl", lines))
    a, b, c = split_validation(examples, 0.2, 1), split_validation(examples, 0.2, 1), split_validation(examples, 0.2, 2)
    assert len(a.val) == 10 and len(a.train) == 40
    assert a == b and a.val != c.val
    assert not {e.instruction for e in a.val} & {e.instruction for e in a.train}
    with pytest.raises(DataError, match="too few"):
        split_validation(examples[:2], 0.2, 0)
    with pytest.raises(DataError, match="no data"):
        load_split((), (), 0.2, 0)
