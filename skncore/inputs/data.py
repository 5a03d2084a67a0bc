"""Examples: reading JSONL / CSV (or a Hugging Face dataset) into instruction/completion pairs.

Every field other than the instruction and the completion is kept, untouched, as metadata: tasks,
metrics (`NAME`, `NAME==VALUE`) and group-by views read it from there.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skn.errors import DataError
from skn.inputs.strict_json import parse_json

JSONValue = object  # what json.loads can return; kept opaque on purpose


@dataclass(frozen=True)
class Example:
    """One instruction/completion pair and everything else its source said about it."""

    instruction: str
    completion: str
    meta: Mapping[str, JSONValue]
    source: str  # "FILE:LINE" (or "task:NAME#i"), for error messages


@dataclass(frozen=True)
class FieldNames:
    """Which fields of a record hold the instruction and the completion."""

    instruction: str = "instruction"
    completion: str = "completion"


@dataclass(frozen=True)
class Split:
    """Training and validation examples."""

    train: tuple[Example, ...]
    val: tuple[Example, ...]


def _text(value: JSONValue, where: str, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise DataError(f"{where}: field '{field}' must be a string, got {type(value).__name__}")


def example_from_record(record: Mapping[str, JSONValue], where: str, names: FieldNames) -> Example:
    """Build an Example from one record (a JSON object or a CSV row); `where` is "FILE:LINE"."""
    for field in (names.instruction, names.completion):
        if field not in record:
            present = ", ".join(sorted(record)) or "none"
            raise DataError(f"{where}: missing field '{field}' (fields present: {present})")
    meta = {k: v for k, v in record.items() if k not in (names.instruction, names.completion)}
    return Example(
        instruction=_text(record[names.instruction], where, names.instruction),
        completion=_text(record[names.completion], where, names.completion),
        meta=meta,
        source=where,
    )


def read_text(path: Path) -> str:
    """A UTF-8 text file (a BOM is dropped); other encodings fail naming the file and the line."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        hint = " (it looks like UTF-16)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise DataError(f"{path}:{line}: not UTF-8 text{hint}; save the file as UTF-8") from None
    return text


def _jsonl_records(path: Path) -> Iterator[tuple[str, Mapping[str, JSONValue]]]:
    # split on "\n" only: a bare "\r" or U+2028 inside a line is not a line break in JSONL
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        where = f"{path}:{number}"
        if not line.strip():
            continue
        record = parse_json(line, str(path), number)  # a duplicate key or a lone surrogate fails here
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        yield where, record


def _csv_records(path: Path) -> Iterator[tuple[str, Mapping[str, JSONValue]]]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    if reader.fieldnames is None:
        return
    check_header(reader.fieldnames, f"{path}:{reader.line_num}")
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if None in row:
            raise DataError(f"{where}: more values than the {len(reader.fieldnames)} columns of the header")
        missing = [k for k, v in row.items() if v is None]
        if missing:
            raise DataError(f"{where}: fewer values than columns (no value for {', '.join(missing)})")
        yield where, {k: v for k, v in row.items()}


def check_header(columns: Sequence[str], where: str) -> None:
    """A CSV/TSV header that names a column twice would keep only the last one's values: refuse it."""
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise DataError(f"{where}: the header names column '{column}' twice; give each column its own name")
        seen.add(column)


HF_FORMS = "hf:NAME, hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT"
DEFAULT_HF_SPLIT = "train"


@dataclass(frozen=True)
class HfDataset:
    """One split of a Hugging Face dataset, as `hf:NAME[:SPLIT]` or `hf:NAME:CONFIG:SPLIT` names it."""

    name: str
    split: str
    config: str = ""  # the dataset's configuration (subset), "" = its default


def parse_hf_spec(spec: str, default_split: str = DEFAULT_HF_SPLIT) -> HfDataset:
    """`hf:NAME` (the default split), `hf:NAME:SPLIT`, or `hf:NAME:CONFIG:SPLIT` (an empty part takes its default:
    `hf:NAME:CONFIG:` is the default split of CONFIG)."""
    parts = spec.split(":")
    if len(parts) > 4 or not parts[1:] or not parts[1]:
        raise DataError(f"{spec}: write a Hugging Face dataset as {HF_FORMS}")
    name = parts[1]
    config = parts[2] if len(parts) == 4 else ""
    split = parts[-1] if len(parts) > 2 else ""
    return HfDataset(name, split or default_split, config)


def open_hf_dataset(spec: str, name: str, split: str, config: str = "") -> Any:
    """One split of a Hugging Face dataset (needs the optional `datasets` package); `spec` names it in errors."""
    try:
        import datasets  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise DataError(f"{spec}: reading Hugging Face datasets needs `pip install 'skn[datasets]'`") from None
    at = f"'{name}' configuration '{config}'" if config else f"'{name}'"
    try:
        return datasets.load_dataset(name, config or None, split=split)
    except Exception as err:  # the datasets library raises many kinds; report any of them
        raise DataError(f"{spec}: could not load dataset {at} split '{split}': {err}") from None


def _dataset_records(spec: str) -> Iterator[tuple[str, Mapping[str, JSONValue]]]:
    """`hf:NAME[:SPLIT]` or `hf:NAME:CONFIG:SPLIT`: a Hugging Face dataset, where the optional `datasets`
    package is installed."""
    wanted = parse_hf_spec(spec)
    table = open_hf_dataset(spec, wanted.name, wanted.split, wanted.config)
    for index, record in enumerate(table):
        yield f"{spec}#{index}", dict(record)


def load_examples(source: str | Path, names: FieldNames = FieldNames()) -> tuple[Example, ...]:
    """Read every example of a `.jsonl` / `.json` (one object per line) or `.csv` file, or a Hugging Face dataset
    (`hf:NAME[:SPLIT]`, `hf:NAME:CONFIG:SPLIT`)."""
    text = str(source)
    if text.startswith("hf:"):
        records: Iterator[tuple[str, Mapping[str, JSONValue]]] = _dataset_records(text)
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json", ".ndjson"):
            records = _jsonl_records(path)
        elif suffix == ".csv":
            records = _csv_records(path)
        else:
            raise DataError(f"{path}: unknown data format '{suffix}' (use .jsonl or .csv, or hf:NAME)")
    examples = tuple(example_from_record(record, where, names) for where, record in records)
    if not examples:
        raise DataError(f"{text}: no examples")
    return examples


def split_validation(examples: Sequence[Example], fraction: float, seed: int) -> Split:
    """Hold out `fraction` of the examples for validation, chosen by a seeded shuffle (order kept)."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"--val-fraction must lie strictly between 0 and 1, got {fraction}")
    n_val = round(len(examples) * fraction)
    if n_val < 2 or len(examples) - n_val < 1:
        raise DataError(
            f"{len(examples)} examples are too few to hold out {fraction:.0%} for validation "
            "(need at least 2 validation and 1 training example); pass --val-data instead"
        )
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    val_ids = set(order[:n_val])
    return Split(
        train=tuple(e for i, e in enumerate(examples) if i not in val_ids),
        val=tuple(e for i, e in enumerate(examples) if i in val_ids),
    )


def load_split(
    data: Sequence[str | Path],
    val_data: Sequence[str | Path],
    val_fraction: float,
    seed: int,
    names: FieldNames = FieldNames(),
) -> Split:
    """Training examples from `data`, validation from `val_data` or a seeded `val_fraction` of `data`."""
    if not data and not val_data:
        raise DataError("no data: pass --data FILE (and optionally --val-data FILE)")
    train = tuple(e for source in data for e in load_examples(source, names))
    if val_data:
        val = tuple(e for source in val_data for e in load_examples(source, names))
        return Split(train=train, val=val)
    return split_validation(train, val_fraction, seed)
