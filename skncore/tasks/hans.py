"""HANS (McCoy et al., 2019) as instruction/completion pairs: the paper's RQ2.

Reads the HANS TSV format (`heuristics_evaluation_set.txt`, `heuristics_train_set.txt`: a header row,
then tab-separated rows with at least `gold_label, sentence1, sentence2, heuristic`; `subcase`,
`pairID`, `template` and the parse columns are optional, and columns we do not know are ignored),
and the Hugging Face `hans` dataset (`hf:hans:validation`) where the optional `datasets` package is
installed.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from skn.inputs.data import Example, check_header, open_hf_dataset, read_text
from skn.errors import DataError

LABELS = ("entailment", "non-entailment")
HEURISTICS = ("lexical_overlap", "subsequence", "constituent")
REQUIRED = ("gold_label", "sentence1", "sentence2", "heuristic")
NO_SUBCASE = "unknown"

QUESTION = "Does the premise entail the hypothesis? Answer entailment or non-entailment."


@dataclass(frozen=True)
class HansItem:
    premise: str
    hypothesis: str
    label: str  # "entailment" | "non-entailment"
    heuristic: str  # lexical_overlap | subsequence | constituent
    subcase: str  # e.g. "ln_subject/object_swap"; NO_SUBCASE where the source has none
    source: str  # "FILE:LINE" or "hf:hans:SPLIT#i"


def instruction(item: HansItem) -> str:
    return f"Premise: {item.premise}\nHypothesis: {item.hypothesis}\nQuestion: {QUESTION}\nAnswer:"


def to_example(item: HansItem) -> Example:
    """Premise, hypothesis and question; the completion is the label after one space."""
    return Example(
        instruction=instruction(item),
        completion=" " + item.label,
        meta={"heuristic": item.heuristic, "subcase": item.subcase, "label": item.label},
        source=item.source,
    )


def _item(row: Mapping[str, str], where: str) -> HansItem:
    label = row["gold_label"].strip()
    if label not in LABELS:
        raise DataError(f"{where}: gold_label is {label!r}, expected one of {', '.join(LABELS)}")
    for column in ("sentence1", "sentence2", "heuristic"):
        if not row[column].strip():
            raise DataError(f"{where}: column '{column}' is empty")
    subcase = row.get("subcase", "").strip()
    return HansItem(
        premise=row["sentence1"].strip(),
        hypothesis=row["sentence2"].strip(),
        label=label,
        heuristic=row["heuristic"].strip(),
        subcase=subcase or NO_SUBCASE,
        source=where,
    )


def _tsv_rows(path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    try:
        handle = io.StringIO(read_text(path), newline="")  # UTF-8, or an error naming the line
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    with handle:
        header: list[str] = []
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cells = line.split("\t")
            if not header:
                header = [c.strip() for c in cells]
                check_header(header, f"{path}:{number}")
                missing = [c for c in REQUIRED if c not in header]
                if missing:
                    raise DataError(
                        f"{path}:{number}: the header lacks column(s) {', '.join(missing)} "
                        f"(found: {', '.join(header)}); is this a HANS tab-separated file?"
                    )
                continue
            if len(cells) != len(header):
                raise DataError(f"{path}:{number}: {len(cells)} tab-separated values, the header has {len(header)}")
            yield f"{path}:{number}", dict(zip(header, cells))
        if not header:
            raise DataError(f"{path}: empty file")


def _dataset_rows(spec: str) -> Iterator[tuple[str, dict[str, str]]]:
    """`hf:hans[:SPLIT]` (default split: validation, which is HANS's evaluation set)."""
    parts = spec.split(":")
    name = parts[1] if len(parts) > 1 and parts[1] else "hans"
    split = parts[2] if len(parts) > 2 else "validation"
    table = open_hf_dataset(spec, name, split)
    label_names = list(getattr(table.features.get("label"), "names", LABELS))
    for index, record in enumerate(table):
        where = f"{spec}#{index}"
        label = record.get("label")
        if not isinstance(label, int) or not 0 <= label < len(label_names):
            raise DataError(f"{where}: label {label!r} is not an index into {label_names}")
        yield where, {
            "gold_label": str(label_names[label]),
            "sentence1": str(record.get("premise", record.get("sentence1", ""))),
            "sentence2": str(record.get("hypothesis", record.get("sentence2", ""))),
            "heuristic": str(record.get("heuristic", "")),
            "subcase": str(record.get("subcase", "")),
        }


def load_hans(source: str | Path) -> tuple[HansItem, ...]:
    """Every row of a HANS TSV file, or of `hf:hans[:SPLIT]`."""
    text = str(source)
    if text.startswith("hf:"):
        rows = _dataset_rows(text)
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        rows = _tsv_rows(path)
    items = tuple(_item(row, where) for where, row in rows)
    if not items:
        raise DataError(f"{text}: no HANS rows")
    return items
