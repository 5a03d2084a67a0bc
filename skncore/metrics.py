"""The metric: one number per validation example, correlated with every neuron.

    loss                 mean NLL over the completion tokens (EOS included)
    confidence           mean over completion positions of the model's top next-token probability
    correct              1 when greedy argmax reproduces every completion token, else 0
    NAME, field:NAME     a numeric metadata field (the three words above win unless `field:` is written)
    NAME==VALUE          1 where the field equals VALUE (as text; JSON true/false as "true"/"false"), else 0
    python:MOD:FUNC      FUNC(example, outputs) -> float, per example; MOD is a module name or a .py path

Label and field metrics are known before the forward pass; the others only after it.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import torch
from torch import Tensor

from skn.data import Example
from skn.errors import DataError, MetricError, UsageError
from skn.scoring import CompletionScores


class MetricKind(Enum):
    LOSS = "loss"
    CONFIDENCE = "confidence"
    CORRECT = "correct"
    FIELD = "field"
    EQUALS = "equals"
    PYTHON = "python"


_RESERVED = {"loss": MetricKind.LOSS, "confidence": MetricKind.CONFIDENCE, "correct": MetricKind.CORRECT}


@dataclass(frozen=True)
class MetricSpec:
    kind: MetricKind
    text: str  # as the user wrote it
    field: str = ""
    value: str = ""
    module: str = ""
    function: str = ""

    @property
    def known_before_pass(self) -> bool:
        return self.kind in (MetricKind.FIELD, MetricKind.EQUALS)


@dataclass(frozen=True)
class ExampleOutputs:
    """What a `python:` metric sees of the model's outputs on one example."""

    loss: float
    confidence: float
    correct: bool
    token_logprobs: tuple[float, ...]  # one per completion token, EOS included


def parse_metric(text: str) -> MetricSpec:
    spec = text.strip()
    if not spec:
        raise UsageError("--metric is empty")
    if spec in _RESERVED:
        return MetricSpec(_RESERVED[spec], spec)
    if spec.startswith("python:"):
        parts = spec.split(":")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise UsageError(f"--metric {spec}: write python:MODULE:FUNCTION (MODULE a module name or a .py file)")
        return MetricSpec(MetricKind.PYTHON, spec, module=parts[1], function=parts[2])
    if "==" in spec:
        field, value = spec.split("==", 1)
        if not field.strip():
            raise UsageError(f"--metric {spec}: write NAME==VALUE")
        return MetricSpec(MetricKind.EQUALS, spec, field=field.strip(), value=value.strip())
    field = spec[len("field:") :] if spec.startswith("field:") else spec
    if not field:
        raise UsageError(f"--metric {spec}: write field:NAME")
    return MetricSpec(MetricKind.FIELD, spec, field=field)


def _field(example: Example, name: str) -> object:
    if name not in example.meta:
        present = ", ".join(sorted(example.meta)) or "none"
        raise DataError(f"{example.source}: the metric needs field '{name}', which this example lacks (fields: {present})")
    return example.meta[name]


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _as_number(value: object, example: Example, name: str) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise DataError(
        f"{example.source}: field '{name}' = {value!r} is not a number "
        f"(for a label write --metric '{name}==VALUE')"
    )


def metric_before_pass(spec: MetricSpec, examples: Sequence[Example]) -> Tensor:
    """Values [N] float64 of a label or field metric."""
    if spec.kind is MetricKind.EQUALS:
        values = [1.0 if _as_text(_field(e, spec.field)) == spec.value else 0.0 for e in examples]
    elif spec.kind is MetricKind.FIELD:
        values = [_as_number(_field(e, spec.field), e, spec.field) for e in examples]
    else:
        raise MetricError(f"metric '{spec.text}' is known only after the forward pass")
    return torch.tensor(values, dtype=torch.float64)


MetricFunction = Callable[[Example, ExampleOutputs], float]


def load_function(spec: MetricSpec) -> MetricFunction:
    """Import the user's metric function (only for the explicit python:MODULE:FUNCTION form)."""
    try:
        local = Path(f"{spec.module}.py")  # python:mod:fn with mod.py in the current folder
        if spec.module.endswith(".py") or ("." not in spec.module and local.is_file()):
            path = Path(spec.module) if spec.module.endswith(".py") else local
            if not path.is_file():
                raise MetricError(f"--metric {spec.text}: no such file {path}")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            if module_spec is None or module_spec.loader is None:
                raise MetricError(f"--metric {spec.text}: cannot import {path}")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(spec.module)
    except MetricError:
        raise
    except (Exception, SystemExit) as err:  # a module that calls sys.exit() must not end skn quietly
        raise MetricError(f"--metric {spec.text}: importing '{spec.module}' failed: {type(err).__name__}: {err}") from None
    function = getattr(module, spec.function, None)
    if not callable(function):
        raise MetricError(f"--metric {spec.text}: '{spec.module}' has no function '{spec.function}'")
    return function  # type: ignore[no-any-return]


def metric_after_pass(
    spec: MetricSpec, examples: Sequence[Example], scores: CompletionScores, function: MetricFunction | None
) -> Tensor:
    """Values [B] float64 for one batch, from the model's outputs."""
    if spec.kind is MetricKind.LOSS:
        return scores.loss
    if spec.kind is MetricKind.CONFIDENCE:
        return scores.confidence
    if spec.kind is MetricKind.CORRECT:
        return scores.correct
    if spec.kind is MetricKind.PYTHON and function is not None:
        values = []
        for b, example in enumerate(examples):
            outputs = ExampleOutputs(
                loss=float(scores.loss[b]),
                confidence=float(scores.confidence[b]),
                correct=bool(scores.correct[b]),
                token_logprobs=tuple(float(v) for v in scores.token_logprob[b][scores.token_mask[b]]),
            )
            try:
                value = function(example, outputs)
                values.append(float(value))
            except (Exception, SystemExit) as err:  # sys.exit(0) in a metric is a failure, not success
                raise MetricError(f"{example.source}: metric {spec.text} failed: {type(err).__name__}: {err}") from None
        return torch.tensor(values, dtype=torch.float64)
    return metric_before_pass(spec, examples)


def check_metric(spec: MetricSpec, values: Tensor, examples: Sequence[Example]) -> None:
    """A metric that is NaN anywhere, or constant over the validation set, is useless: say so."""
    bad = torch.nonzero(~torch.isfinite(values)).flatten().tolist()
    if bad:
        first = examples[bad[0]].source if bad[0] < len(examples) else f"example {bad[0]}"
        raise MetricError(f"metric '{spec.text}' is NaN or infinite on {len(bad)} validation examples (first: {first})")
    if values.numel() < 2:
        raise MetricError(f"metric '{spec.text}': need at least 2 validation examples, got {values.numel()}")
    if bool((values == values[0]).all()):
        raise MetricError(
            f"metric '{spec.text}' is constant ({float(values[0]):g}) over all {values.numel()} validation "
            "examples: there is nothing to correlate with"
        )
