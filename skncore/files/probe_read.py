"""Reading a probe run back: `read_probe_run` gives the `ProbeResult` that skn.files.probe_files' `write_probe_run`
wrote (the contract is skn.files.rundir's docstring), every file checked against the others; the examples, the
groups, and the prompt and chat template a run used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from skn.engine.preflight import same_model
from skn.errors import RunDirError
from skn.features.feature import Feature, RunFiles
from skn.features.registry import FEATURES, checked
from skn.files.result import ProbeResult, info_from_json
from skn.files.run_integrity import check_group_neurons, check_metric_files, check_ranked_r, check_sizes
from skn.files.rundir import (EXAMPLES_FILE, GROUPS_FILE, NEURONS_JSON, PROMPT_FILE, RUN_FILE, RUN_ID, STATS_FILE,
                              TOP_ACTIVATIONS_FILE, PromptFile, check_one_run, load_tensors, read_json, read_metadata,
                              read_moments, read_prompt, require_file)
from skn.inputs.data import Example
from skn.inputs.groups import GroupSummaries, groups_from_json
from skn.inputs.layout import Template
from skn.models.fingerprint import FINGERPRINT_KEY
from skn.ranking.rank import Neuron
from skn.statistics.stats import PearsonStats


def read_examples(path: Path) -> tuple[tuple[Example, ...], list[float]]:
    examples, metric, _ = read_examples_file(path)
    return examples, metric


def read_examples_file(path: Path) -> tuple[tuple[Example, ...], list[float], str]:
    """examples.jsonl: the examples, their metric values and the run id the records carry ("" for none)."""
    examples, metric = [], []
    run_id: tuple[int, str] | None = None  # the first record's line and id
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path}: not readable UTF-8 text ({err})") from None
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            meta = record.get("meta", {})
            if not isinstance(meta, dict):
                raise TypeError(f"'meta' must be an object, got {type(meta).__name__}")
            if not isinstance(record["instruction"], str) or not isinstance(record["completion"], str):
                raise TypeError("'instruction' and 'completion' must be strings")
            examples.append(Example(record["instruction"], record["completion"], meta, str(record.get("source", ""))))
            value = record.get("metric")
            metric.append(math.nan if value is None else float(value))
            mine = record.get(RUN_ID, "")
            if not isinstance(mine, str):
                raise TypeError(f"'{RUN_ID}' must be text")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
            raise RunDirError(f"{path}:{number}: not an example record ({type(err).__name__}: {err})") from None
        if run_id is None:
            run_id = (number, mine)
        elif mine != run_id[1]:
            raise RunDirError(f"{path}:{number}: run id {mine or 'none'}, but line {run_id[0]} has "
                              f"{run_id[1] or 'none'}: examples of two runs")
    return tuple(examples), metric, run_id[1] if run_id is not None else ""


def _stats_from(tensors: Mapping[str, Tensor], path: Path) -> PearsonStats:
    """The moments of stats.safetensors, their ranks and shapes checked (a damaged file is a RunDirError)."""
    corr = tensors["corr"]
    if corr.dim() != 3:
        raise RunDirError(f"{path}: 'corr' must be [layers, positions, neurons], got shape {tuple(corr.shape)}")
    for name in ("count", "mean_y", "m2_y"):
        if tensors[name].numel() != 1:
            raise RunDirError(f"{path}: '{name}' must be a scalar, got shape {tuple(tensors[name].shape)}")
    for name in ("mean_x", "m2_x", "c_xy"):
        if tuple(tensors[name].shape) != tuple(corr.shape):
            raise RunDirError(f"{path}: '{name}' is {tuple(tensors[name].shape)}, 'corr' is {tuple(corr.shape)}")
    return read_moments(tensors, "")


def _check_neurons(neurons: Sequence[Neuron], corr: Tensor, path: Path) -> None:
    """Every listed neuron must exist in `corr` [L, P, m]: a damaged neurons.json is refused, not shown."""
    layers, positions, width = corr.shape
    for n in neurons:
        if not (0 <= n.layer < layers and 0 <= n.position < positions and 0 <= n.index < width):
            raise RunDirError(
                f"{path}: rank {n.rank} names layer {n.layer}, position {n.position}, neuron {n.index}, "
                f"outside the run's {layers} x {positions} x {width}"
            )


def run_prompt(directory: Path, run: ProbeResult) -> PromptFile:
    """The prompt a probe run used: its own prompt.safetensors when it trained one, else the --prompt file
    or run directory that run.json names (a path as the probe was given it, so relative to where it ran).
    A prompt the run trained must name the run's model (a prompt.safetensors copied in from another run is
    refused); one given with --prompt was checked by the probe, which --any-prompt-model let through."""
    directory = Path(directory)
    if (directory / PROMPT_FILE).is_file() or run.info.prompt in ("", "trained"):
        prompt = read_prompt(directory)
        run_fingerprint = str(run.info.extra.get(FINGERPRINT_KEY, ""))
        if (run.info.prompt in ("", "trained") and prompt.model
                and not same_model(prompt.model, run.info.model, prompt.fingerprint, run_fingerprint)):
            raise RunDirError(f"{directory / PROMPT_FILE}: a prompt for model '{prompt.model}', but {directory / RUN_FILE} "
                              f"names '{run.info.model}': the prompt of another run")
        return prompt
    named = Path(run.info.prompt)
    if not (named.is_file() or (named / PROMPT_FILE).is_file()):
        raise RunDirError(f"{directory}: no {PROMPT_FILE}, and the prompt its run.json names ({named}) is not "
                          f"readable from here")
    return read_prompt(named)


def run_template(run: ProbeResult) -> Template:
    """The chat template the run laid its examples out with (run.json's probe_config), else auto."""
    settings = run.info.probe_config
    return Template(settings.template if settings is not None and settings.template else "auto")


def read_probe_run(directory: Path, features: Sequence[Feature[Any]] = FEATURES) -> ProbeResult:
    """Read a run directory written by `write_probe_run`, checking that its files are of one run and agree;
    each of `features` reads its own section back (skn.features)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RunDirError(f"{directory}: no such run directory")
    stats_path = require_file(directory, STATS_FILE)
    stats_t = load_tensors(stats_path)
    missing = {"corr", "count", "mean_x", "m2_x", "c_xy", "mean_y", "m2_y"} - set(stats_t)
    if missing:
        raise RunDirError(f"{stats_path}: missing tensors {', '.join(sorted(missing))}")
    stats = _stats_from(stats_t, stats_path)
    raw_neurons = read_json(require_file(directory, NEURONS_JSON))
    if not isinstance(raw_neurons, list):
        raise RunDirError(f"{directory / NEURONS_JSON}: expected a JSON list")
    try:
        neurons = tuple(
            Neuron(int(n["rank"]), int(n["layer"]), int(n["neuron"]), int(n["position"]),
                   math.nan if n["r"] is None else float(n["r"]))
            for n in raw_neurons
        )
    except (KeyError, TypeError, ValueError) as err:
        raise RunDirError(f"{directory / NEURONS_JSON}: malformed neuron record ({err})") from None
    top_path = require_file(directory, TOP_ACTIVATIONS_FILE)
    top = load_tensors(top_path)
    if "activations" not in top or "metric" not in top:
        raise RunDirError(f"{top_path}: needs tensors 'activations' and 'metric'")
    examples_path = require_file(directory, EXAMPLES_FILE)
    examples, example_metric, examples_id = read_examples_file(examples_path)
    run_path = require_file(directory, RUN_FILE)
    info = info_from_json(read_json(run_path), str(run_path))
    groups, groups_id = _read_groups_file(directory) if (directory / GROUPS_FILE).is_file() else (None, "")
    check_one_run(run_path, info.run_id, [
        (stats_path, read_metadata(stats_path).get(RUN_ID, "")), (top_path, read_metadata(top_path).get(RUN_ID, "")),
        (examples_path, examples_id), *([(directory / GROUPS_FILE, groups_id)] if groups is not None else []),
    ])
    activations, metric = top["activations"], top["metric"]
    if activations.shape != (len(neurons), len(examples)) or metric.shape != (len(examples),):
        raise RunDirError(
            f"{directory}: top_activations {tuple(activations.shape)} and metric {tuple(metric.shape)} do not fit "
            f"{len(neurons)} neurons x {len(examples)} examples"
        )
    _check_neurons(neurons, stats_t["corr"], directory / NEURONS_JSON)
    check_sizes(directory, info, stats_t["corr"], stats.count, len(examples))
    check_metric_files(examples_path, example_metric, top_path, metric)
    files = RunFiles(directory, stats_t, raw_neurons, info.extra)
    sections = {feature.name: section for feature in checked(features) if (section := feature.read(files)) is not None}
    run = ProbeResult(neurons, stats_t["corr"], stats, activations, metric, examples, info, groups, sections)
    check_ranked_r(directory, run)
    if groups is not None:
        check_group_neurons(directory, groups, neurons)
    return run


# ---------------------------------------------------------------- groups.json


def read_groups(directory: Path) -> GroupSummaries:
    return _read_groups_file(directory)[0]


def _read_groups_file(directory: Path) -> tuple[GroupSummaries, str]:
    """groups.json: the summaries and the run id it carries ("" for none)."""
    path: Path = Path(directory) / GROUPS_FILE
    if not path.is_file():
        raise RunDirError(f"{path}: no such file (the probe writes it when --group-by fields are set)")
    try:
        value: object = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path}: not readable ({err})") from None
    summaries = groups_from_json(value, str(path))
    run_id = value.get(RUN_ID, "") if isinstance(value, dict) else ""
    if not isinstance(run_id, str):
        raise RunDirError(f"{path}: '{RUN_ID}' should be text, got {run_id!r}")
    return summaries, run_id
