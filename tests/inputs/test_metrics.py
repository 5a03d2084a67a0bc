from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skn.inputs.data import Example
from skn.errors import DataError, MetricError, UsageError
from skn.inputs.metrics import MetricKind, check_metric, load_function, metric_before_pass, parse_metric


def ex(**meta: object) -> Example:
    return Example("i", "c", meta, "f.jsonl:1")


def test_parse_reserved_words_win_unless_field() -> None:
    assert parse_metric("loss").kind is MetricKind.LOSS
    assert parse_metric("field:loss").kind is MetricKind.FIELD and parse_metric("field:loss").field == "loss"
    spec = parse_metric("heuristic==lexical_overlap")
    assert (spec.kind, spec.field, spec.value) == (MetricKind.EQUALS, "heuristic", "lexical_overlap")
    assert parse_metric("python:mod:fn").function == "fn"
    assert parse_metric("score").kind is MetricKind.FIELD
    assert parse_metric("loss").known_before_pass is False and spec.known_before_pass is True
    for bad in ("", "python:mod", "==x", "field:"):
        with pytest.raises(UsageError):
            parse_metric(bad)


def test_label_and_field_values() -> None:
    examples = [ex(h="lexical_overlap", s="1.5", b=True), ex(h="subsequence", s=2, b=False)]
    assert metric_before_pass(parse_metric("h==lexical_overlap"), examples).tolist() == [1.0, 0.0]
    assert metric_before_pass(parse_metric("s"), examples).tolist() == [1.5, 2.0]
    assert metric_before_pass(parse_metric("b==true"), examples).tolist() == [1.0, 0.0]
    with pytest.raises(DataError, match="f.jsonl:1: the metric needs field 'zz'"):
        metric_before_pass(parse_metric("zz"), examples)
    with pytest.raises(DataError, match="is not a number"):
        metric_before_pass(parse_metric("h"), examples)


def test_constant_or_nan_metric_is_an_error() -> None:
    examples = [ex(), ex(), ex()]
    with pytest.raises(MetricError, match="constant"):
        check_metric(parse_metric("loss"), torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64), examples)
    with pytest.raises(MetricError, match="NaN"):
        check_metric(parse_metric("loss"), torch.tensor([1.0, float("nan"), 2.0], dtype=torch.float64), examples)
    check_metric(parse_metric("loss"), torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64), examples)


def test_python_metric_from_file(tmp_path: Path) -> None:
    f = tmp_path / "mymetric.py"
    f.write_text("def length(example, outputs):\n    return len(example.instruction) + outputs.loss\n")
    function = load_function(parse_metric(f"python:{f}:length"))
    from skn.inputs.metrics import ExampleOutputs

    assert function(ex(), ExampleOutputs(0.5, 0.1, False, (-0.5,))) == 1.5
    with pytest.raises(MetricError, match="has no function"):
        load_function(parse_metric(f"python:{f}:nope"))
