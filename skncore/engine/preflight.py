"""Checks made before anything expensive: what can be known wrong before the prompt is trained fails
at once, naming the flag, instead of after minutes of training.

    check_validation_size   at least MIN_VAL_EXAMPLES validation examples (any metric)
    check_python_metric     a python:MODULE:FUNCTION metric imports and names a function
    check_backend           --backend triton needs CUDA (or TRITON_INTERPRET=1, as the tests run it)
    check_model_path        a --model that looks like a path must be a folder, or a .gguf file (skn.models.gguf)
                            ("no such folder" at once, not a 49 s hub lookup); a hub id neither cached nor
                            reachable fails in seconds (skn.models.hub), not after 26 s of retries
    check_prompt_model      a --prompt file trained on other weights is refused unless asked for
                            (compared by fingerprint, skn.models.fingerprint, else by name)
    check_before_training   the examples, the metric, --holdout, --score predictivity and --group-by of a
                            run, before its prompt is trained
    check_controls_early    --control's covariates (and the metric against them, when known before the
                            pass): fields at once, token counts once the model's tokenizer is loaded

(--lr, --steps and the other training numbers are checked where they are made: TrainRequest.__post_init__.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from skn.features.control import control_values
from skn.statistics.backend import Backend
from skn.statistics.covariates import parse_controls
from skn.inputs.data import Example
from skn.errors import MetricError, ModelError, UsageError
from skn.statistics.folds import plan_holdout
from skn.models.gguf import SUFFIX as GGUF_SUFFIX
from skn.inputs.groups import field_values
from skn.models.hub import check_hub_model, check_revision
from skn.inputs.metrics import MetricKind, MetricSpec, check_metric, load_function, metric_before_pass
from skn.models.model import LoadedModel
from skn.statistics.partial import check_metric_residual
from skn.statistics.predictivity import binary_labels
from skn.engine.probe_config import ProbeConfig, Score

# With N = 2 every Pearson r is exactly +1 or -1 (two points always lie on a line); 3 is the least N
# at which r says anything, and a real probe wants far more.
MIN_VAL_EXAMPLES = 3


def check_validation_size(examples: Sequence[Example]) -> None:
    if len(examples) < MIN_VAL_EXAMPLES:
        raise UsageError(
            f"--val-data: {len(examples)} validation example(s); the probe needs at least {MIN_VAL_EXAMPLES} "
            "(with N = 2 every correlation is exactly +1 or -1)"
        )


def check_python_metric(spec: MetricSpec) -> None:
    if spec.kind is MetricKind.PYTHON:
        load_function(spec)  # raises MetricError naming the module or function


def check_backend(backend: Backend, device: str) -> None:
    if backend is not Backend.TRITON:
        return
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not on_cuda and os.environ.get("TRITON_INTERPRET", "") != "1":
        raise UsageError(f"--backend triton needs a CUDA device (--device {device} is not); use --backend torch or auto")


def looks_like_path(name: str) -> bool:
    """A hub id is NAME or OWNER/NAME; anything else with a slash, or starting with . / ~, is a path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/") or "\\" in name


def check_model_path(name: str, revision: str = "", source: str = "--model") -> None:
    """A model named as a path must exist; a hub model neither cached nor reachable fails in seconds
    (skn.models.hub). `source` is where the name came from, for the message: the flag, or a run's run.json."""
    check_revision(name, revision)
    if not name:
        return
    if looks_like_path(name):
        path = Path(name).expanduser()
        if path.suffix.lower() == GGUF_SUFFIX:
            if not path.is_file():
                raise ModelError(f"{source} {name}: no such GGUF file")
        elif not path.is_dir():
            raise ModelError(f"{source} {name}: no such folder")
        return
    check_hub_model(name, revision, source)


def same_model(a: str, b: str, fingerprint_a: str = "", fingerprint_b: str = "") -> bool:
    """The same weights (skn.models.fingerprint; both known and equal), or the same name: one hub id, or two
    spellings of one local folder or GGUF file (relative and absolute)."""
    if fingerprint_a and fingerprint_a == fingerprint_b:
        return True
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def check_prompt_model(prompt_model: str, model: str, prompt_path: str, allowed: bool, prompt_fingerprint: str = "",
                       model_fingerprint: str = "") -> None:
    """A --prompt trained on other weights is refused unless `allowed`: the same fingerprint (a copied or moved
    folder) or the same name passes; a prompt file of an older skn, with no fingerprint, is judged by name."""
    if prompt_model and not allowed and not same_model(prompt_model, model, prompt_fingerprint, model_fingerprint):
        also = " (other weights: their fingerprints differ)" if prompt_fingerprint and model_fingerprint else ""
        raise UsageError(
            f"--prompt {prompt_path}: trained on model '{prompt_model}', not '{model}'{also}; pass "
            "--any-prompt-model to use it anyway"
        )


def check_controls_early(loaded: LoadedModel | None, examples: tuple[Example, ...], spec: MetricSpec,
                         config: ProbeConfig, prompt_len: int) -> None:
    """--control's covariates (and the metric against them, when it is known before the pass) checked
    before training: fields at once, token counts once the model's tokenizer is loaded."""
    z = control_values(loaded, examples, config, prompt_len)
    if z is not None and spec.known_before_pass:
        check_metric_residual(spec.text, [c.text for c in parse_controls(config.control)], z,
                              metric_before_pass(spec, examples))


def check_before_training(
    examples: tuple[Example, ...], spec: MetricSpec, group_by: tuple[str, ...], holdout: float | None,
    score: Score, train_examples: tuple[Example, ...],
) -> None:
    """What can fail before a prompt is trained fails now, not after."""
    if not examples:
        raise UsageError("no validation examples to probe")
    check_validation_size(examples)
    check_python_metric(spec)
    if spec.known_before_pass:
        check_metric(spec, metric_before_pass(spec, examples), examples)
    plan_holdout(holdout, len(examples))  # a bad --holdout fails now
    if score is Score.PREDICTIVITY:  # a label and training examples
        if not spec.known_before_pass:
            raise UsageError(f"--score predictivity needs a binary metric (NAME==VALUE), not '{spec.text}'")
        binary_labels(metric_before_pass(spec, examples))
        if not train_examples:
            raise UsageError("--score predictivity needs training examples (--data) for its baseline")
    for name in group_by:
        field_values(examples, name)  # a missing group-by field fails now, naming the example


__all__ = [
    "MIN_VAL_EXAMPLES",
    "MetricError",
    "check_backend",
    "check_before_training",
    "check_controls_early",
    "check_model_path",
    "check_prompt_model",
    "check_python_metric",
    "check_validation_size",
    "looks_like_path",
    "same_model",
]
