"""The metric: one number per validation example, correlated with every neuron.

    loss                 mean NLL over the completion tokens (EOS included)
    confidence           mean over completion positions of the model's top next-token probability
    correct              1 when greedy argmax reproduces every completion token, else 0
    NAME, field:NAME     a numeric metadata field (the three words above win unless `field:` is written)
    NAME==VALUE          1 where the field equals VALUE (as text; JSON true/false as "true"/"false"), else 0
    python:MOD:FUNC      FUNC(example, outputs) -> float, per example; MOD is a module name or a .py path

Label and field metrics are known before the forward pass; the others only after it.

A value must be a finite float64: a field of NaN, inf or an integer beyond 1.8e308 is an error naming the
example's FILE:LINE. A metric whose values spread less than SMALL_SPREAD (say 1e-170 apart) would lose
its variance in the streamed float64 moments (and the null's float32 products): the probe multiplies
such a field metric by a power of two (`MetricSpec.scale`, exact, so every r is what the unscaled values
give), and refuses such a metric from the outputs (python:) with a line that says to rescale it. The
moments written to stats.safetensors are those of the scaled metric; examples.jsonl holds the values.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

import torch
from torch import Tensor

from skn.inputs.data import Example
from skn.errors import DataError, MetricError, UsageError
from skn.training.scoring import CompletionScores


class MetricKind(Enum):
    LOSS = "loss"
    CONFIDENCE = "confidence"
    CORRECT = "correct"
    FIELD = "field"
    EQUALS = "equals"
    PYTHON = "python"


_RESERVED = {"loss": MetricKind.LOSS, "confidence": MetricKind.CONFIDENCE, "correct": MetricKind.CORRECT}

SMALL_SPREAD = 2.0**-64  # about 5e-20: below it the metric's squared spread and its float32 products with
# activations in the null fall towards the bottom of their formats; such a metric is scaled (or refused)
MAX_SCALE_EXPONENT = 1000  # 2^1000 is the largest scale used (a finite float64)


@dataclass(frozen=True)
class MetricSpec:
    kind: MetricKind
    text: str  # as the user wrote it
    field: str = ""
    value: str = ""
    module: str = ""
    function: str = ""
    scale: float = 1.0  # a power of two the statistics multiply the values by (`for_statistics`); 1.0 = as read

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


def _shown(value: object) -> str:
    """A field value for a message: an integer of many digits by its length, long text cut short."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"a {len(str(abs(value)))}-digit integer"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:50]}... ({len(text)} characters)"


def _as_number(value: object, example: Example, name: str) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    number = math.nan
    if isinstance(value, int):
        number = float(value) if abs(value) < 2**1024 else math.inf  # float() of a larger int raises OverflowError
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise DataError(
                f"{example.source}: field '{name}' = {_shown(value)} is not a number "
                f"(for a label write --metric '{name}==VALUE')"
            ) from None
    else:
        raise DataError(
            f"{example.source}: field '{name}' = {_shown(value)} is not a number "
            f"(for a label write --metric '{name}==VALUE')"
        )
    if not math.isfinite(number):
        raise DataError(f"{example.source}: field '{name}' = {_shown(value)} is not a finite float64 number "
                        "(|x| up to 1.8e308; no NaN or infinity): a metric needs one on every example")
    return number


def metric_before_pass(spec: MetricSpec, examples: Sequence[Example]) -> Tensor:
    """Values [N] float64 of a label or field metric."""
    if spec.kind is MetricKind.EQUALS:
        values = [1.0 if _as_text(_field(e, spec.field)) == spec.value else 0.0 for e in examples]
    elif spec.kind is MetricKind.FIELD:
        values = [_as_number(_field(e, spec.field), e, spec.field) for e in examples]
    else:
        raise MetricError(f"metric '{spec.text}' is known only after the forward pass")
    return _scaled(spec, torch.tensor(values, dtype=torch.float64))


def _returned(value: object, example: Example, spec: MetricSpec) -> float:
    """A python: metric's value as a float (non-finite ones are refused after the pass, by check_metric)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (Exception, SystemExit) as err:
        if isinstance(value, int) and isinstance(err, OverflowError):
            raise MetricError(f"{example.source}: metric {spec.text} returned {_shown(value)}, which does not "
                              "fit a float64 (|x| up to 1.8e308)") from None
        raise MetricError(f"{example.source}: metric {spec.text} failed: {type(err).__name__}: {err}") from None


def _scaled(spec: MetricSpec, values: Tensor) -> Tensor:
    return values if spec.scale == 1.0 else values * spec.scale


def unscaled(spec: MetricSpec, values: Tensor) -> Tensor:
    """The metric's own values from the scaled ones the statistics saw (exact: the scale is a power of two)."""
    return values if spec.scale == 1.0 else values / spec.scale


def for_statistics(spec: MetricSpec, examples: Sequence[Example]) -> MetricSpec:
    """`spec` with the power of two that brings a field metric spread less than SMALL_SPREAD to a spread in
    [0.5, 1); every other metric unchanged (its statistics bitwise as before). Exact: r is scale-free."""
    if not spec.known_before_pass or spec.scale != 1.0:
        return spec
    values = metric_before_pass(spec, examples)
    finite = values[torch.isfinite(values)]
    scale = _scale_for(float(finite.max() - finite.min()) if finite.numel() >= 2 else 0.0)
    return spec if scale is None else replace(spec, scale=scale)


def _scale_for(spread: float) -> float | None:
    """The power of two that brings a spread in (0, SMALL_SPREAD) to [0.5, 1); None for any other spread,
    and for one below 2^-MAX_SCALE_EXPONENT (1e-301: refused by check_metric)."""
    if not 0.0 < spread < SMALL_SPREAD:
        return None
    exponent = -math.frexp(spread)[1]  # spread = m 2^e with 0.5 <= m < 1
    return math.ldexp(1.0, exponent) if exponent <= MAX_SCALE_EXPONENT else None


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
            except (Exception, SystemExit) as err:  # sys.exit(0) in a metric is a failure, not success
                raise MetricError(f"{example.source}: metric {spec.text} failed: {type(err).__name__}: {err}") from None
            values.append(_returned(value, example, spec))
        return _scaled(spec, torch.tensor(values, dtype=torch.float64))
    return metric_before_pass(spec, examples)


def check_metric(spec: MetricSpec, values: Tensor, examples: Sequence[Example]) -> None:
    """A metric that is NaN anywhere, or constant over the validation set, is useless: say so."""
    bad = torch.nonzero(~torch.isfinite(values)).flatten().tolist()
    if bad:
        first = examples[bad[0]].source if bad[0] < len(examples) else f"example {bad[0]}"
        raise MetricError(f"metric '{spec.text}' is NaN or infinite on {len(bad)} validation examples (first: {first})")
    if values.numel() < 2:
        raise MetricError(f"metric '{spec.text}': need at least 2 validation examples, got {values.numel()}")
    if bool((values == values[0]).all()):  # exactly equal: a metric of any scale that varies at all is not constant
        raise MetricError(
            f"metric '{spec.text}' is constant ({float(unscaled(spec, values[:1])[0]):g}) over all {values.numel()} "
            "validation examples: there is nothing to correlate with"
        )
    spread = float(values.max() - values.min())
    scalable = spec.known_before_pass and _scale_for(spread) is not None  # the probe scales it (for_statistics)
    if spread < SMALL_SPREAD and not scalable:
        fix = " (multiply it by a power of ten, e.g. 1e20, in the function)" if spec.kind is MetricKind.PYTHON else ""
        shown = spread / spec.scale  # the metric's own spread, as `unscaled` gives its values
        raise MetricError(
            f"metric '{spec.text}' varies by only {shown:.3g} over the {values.numel()} validation examples, "
            f"too little for the float64 statistics{fix}"
        )
