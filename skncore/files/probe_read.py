"""Reading a probe run back: `read_probe_run` gives the `ProbeResult` that skn.files.probe_files' `write_probe_run`
wrote (the contract is skn.files.rundir's docstring), every file checked against the others; the examples, the
groups, and the prompt and chat template a run used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from skn.inputs.data import Example
from skn.errors import RunDirError
from skn.statistics.folds import FoldStats
from skn.inputs.groups import GroupSummaries, groups_from_json
from skn.ranking.holdout import HeldOutR, HoldoutResult
from skn.inputs.layout import Template
from skn.statistics.null import PermutationMode
from skn.statistics.null_verdict import NullResult
from skn.ranking.rank import Neuron
from skn.ranking.replication import ALPHA, Replication
from skn.models.fingerprint import FINGERPRINT_KEY
from skn.engine.preflight import same_model
from skn.files.result import ProbeResult, info_from_json
from skn.files.run_integrity import check_group_neurons, check_metric_files, check_ranked_r, check_sizes
from skn.statistics.partial import PartialResult
from skn.files.rundir import (EXAMPLES_FILE, FOLD_NAMES, GROUPS_FILE, HOLDOUT_COLUMNS, MOMENTS, NEURONS_JSON, PROMPT_FILE, RUN_FILE,
                              RUN_ID, STATS_FILE, TOP_ACTIVATIONS_FILE, PromptFile, check_one_run, load_tensors, read_json,
                              read_metadata, read_prompt, require_file)
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
    return PearsonStats(
        count=int(tensors["count"].reshape(())),
        mean_x=tensors["mean_x"],
        m2_x=tensors["m2_x"],
        c_xy=tensors["c_xy"],
        mean_y=float(tensors["mean_y"].reshape(())),
        m2_y=float(tensors["m2_y"].reshape(())),
    )


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


def read_probe_run(directory: Path) -> ProbeResult:
    """Read a run directory written by `write_probe_run`, checking that its files are of one run and agree."""
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
    holdout = _read_holdout(directory, stats_t, raw_neurons, info.extra) if "confirm" in stats_t else None
    null = _read_null(directory, stats_t, raw_neurons, info.extra)
    partial = _read_partial(directory, stats_t, raw_neurons, info.extra) if "corr_raw" in stats_t else None
    run = ProbeResult(neurons, stats_t["corr"], stats, activations, metric, examples, info, groups, holdout, null=null,
                      partial=partial)
    check_ranked_r(directory, run)
    if groups is not None:
        check_group_neurons(directory, groups, neurons)
    return run


def _read_partial(directory: Path, tensors: Mapping[str, Tensor], raw_neurons: list[object],
                  info: Mapping[str, object]) -> PartialResult:
    """--control's part of a run: `corr_raw` (stats.safetensors), each neuron's r_raw, run.json's `control`."""
    control = info.get("control")
    entries = control.get("covariates") if isinstance(control, Mapping) else None
    try:
        if not isinstance(entries, list):
            raise TypeError("run.json has no 'control' covariates")
        names = tuple(str(e["name"]) for e in entries)
        metric_r = tuple(_number_or_nan(e.get("r_metric")) for e in entries)
        raw_r = tuple(math.nan if n["r_raw"] is None else float(n["r_raw"]) for n in raw_neurons)  # type: ignore[index]
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise RunDirError(f"{directory}: corr_raw without the covariates in run.json or r_raw in neurons.json ({err})") from None
    if tuple(tensors["corr_raw"].shape) != tuple(tensors["corr"].shape):
        raise RunDirError(f"{directory / STATS_FILE}: 'corr_raw' is {tuple(tensors['corr_raw'].shape)}, 'corr' is {tuple(tensors['corr'].shape)}")
    return PartialResult(names, metric_r, tensors["corr_raw"], raw_r)


def _fold_stats_from(tensors: Mapping[str, Tensor], prefix: str) -> PearsonStats:
    return PearsonStats(
        count=int(tensors[f"{prefix}count"]),
        mean_x=tensors[f"{prefix}mean_x"],
        m2_x=tensors[f"{prefix}m2_x"],
        c_xy=tensors[f"{prefix}c_xy"],
        mean_y=float(tensors[f"{prefix}mean_y"]),
        m2_y=float(tensors[f"{prefix}m2_y"]),
    )


def _number_or_nan(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _read_holdout(directory: Path, tensors: Mapping[str, Tensor], raw_neurons: list[object], info: Mapping[str, object]) -> HoldoutResult:
    """The holdout of a run (stats.safetensors' fold tensors, neurons.json's held-out fields, run.json's summary)."""
    needed = {f"{fold}_{name}" for fold in FOLD_NAMES for name in MOMENTS} | {"corr_selection", "corr_confirmation"}
    missing = needed - set(tensors)
    if missing:
        raise RunDirError(f"{directory / STATS_FILE}: has a fold mask but lacks {', '.join(sorted(missing))}")
    try:
        per_neuron = tuple(
            HeldOutR(*(math.nan if n[name] is None else float(n[name]) for name in HOLDOUT_COLUMNS))  # type: ignore[index]
            for n in raw_neurons
        )
    except (KeyError, TypeError, ValueError) as err:
        raise RunDirError(f"{directory / NEURONS_JSON}: a run with a holdout needs {', '.join(HOLDOUT_COLUMNS)} ({err})") from None
    summary = info.get("holdout")
    summary = summary if isinstance(summary, Mapping) else {}
    rep = summary.get("replication")
    rep = rep if isinstance(rep, Mapping) else {}
    replication = Replication(
        top_k if isinstance(top_k := rep.get("top_k"), int) else len(per_neuron),
        _number_or_nan(rep.get("selection_to_confirmation")),
        _number_or_nan(rep.get("confirmation_to_selection")),
        _number_or_nan(rep.get("rate")),
        _number_or_nan(rep.get("alpha")) if "alpha" in rep else ALPHA,
    )
    folds = FoldStats(_fold_stats_from(tensors, "selection_"), _fold_stats_from(tensors, "confirmation_"), tensors["confirm"].to(torch.bool))
    return HoldoutResult(
        fraction=_number_or_nan(summary.get("fraction")),
        seed=int(summary["seed"]) if isinstance(summary.get("seed"), int) else 0,
        folds=folds,
        corr_selection=tensors["corr_selection"],
        corr_confirmation=tensors["corr_confirmation"],
        per_neuron=per_neuron,
        replication=replication,
    )


def _read_null(directory: Path, tensors: Mapping[str, Tensor], records: list[object], info: Mapping[str, object]) -> NullResult | None:
    """The null as written by `write_probe_run`: maxima and threshold from stats.safetensors, the
    per-neuron p-values from neurons.json, the scheme from run.json."""
    if "null_max_abs_r" not in tensors:
        return None
    if "null_threshold" not in tensors or "null_alpha" not in tensors:
        raise RunDirError(f"{directory / STATS_FILE}: null_max_abs_r without null_threshold and null_alpha")
    summary = info.get("null")
    mode_text = summary.get("mode") if isinstance(summary, Mapping) else None
    try:
        mode = PermutationMode(mode_text) if mode_text is not None else PermutationMode.WHOLE_SET
        p_adjusted, p_cell, significant = [], [], []
        for record in records:
            if not isinstance(record, Mapping):
                raise TypeError("not an object")
            p_adjusted.append(math.nan if record["p_adjusted"] is None else float(record["p_adjusted"]))
            p_cell.append(math.nan if record["p_cell"] is None else float(record["p_cell"]))
            significant.append(bool(record["significant"]))
    except (KeyError, TypeError, ValueError) as err:
        raise RunDirError(f"{directory / NEURONS_JSON}: the run has a null but a neuron record lacks its p-values ({err})") from None
    return NullResult(mode, float(tensors["null_alpha"]), tensors["null_max_abs_r"].to(torch.float64),
                      float(tensors["null_threshold"]), tuple(p_adjusted), tuple(p_cell), tuple(significant))


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
