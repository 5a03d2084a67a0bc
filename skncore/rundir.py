"""The run directory: the contract between computing (train, probe) and viewing (show, plot, report).

    prompt.safetensors          `prompt` [P, d] float32; metadata model, prompt_len, hidden_size, template
    stats.safetensors           `corr` [L, P, m] float32 (NaN where undefined), `count`, the moments; with the
                                permutation null also `null_max_abs_r` [R] float64, `null_threshold`, `null_alpha`
    neurons.json, neurons.csv   the top K: rank, layer, neuron, position, r (+ p_adjusted, p_cell, significant
                                with the null; absent with --null 0)
    top_activations.safetensors `activations` [K, N] float32 (neurons.json order), `metric` [N] float64
    examples.jsonl              the N validation examples in order: index, instruction, completion, meta, metric
    run.json                    configuration, seed, versions, timings, training history
    groups.json                 per-group activation summaries (tasks with metadata)

Every file is written to a temporary name and renamed, so a run directory never holds half a file.
Viewers read only what is here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from skn.data import Example
from skn.errors import RunDirError
from skn.null import NullResult, PermutationMode
from skn.rank import Neuron
from skn.stats import PearsonStats
from skn.version import __version__

PROMPT_FILE = "prompt.safetensors"
STATS_FILE = "stats.safetensors"
NEURONS_JSON = "neurons.json"
NEURONS_CSV = "neurons.csv"
TOP_ACTIVATIONS_FILE = "top_activations.safetensors"
EXAMPLES_FILE = "examples.jsonl"
RUN_FILE = "run.json"
GROUPS_FILE = "groups.json"
CHECKPOINT_FILE = "checkpoint.safetensors"

NEURON_COLUMNS = ("rank", "layer", "neuron", "position", "r")
NULL_COLUMNS = ("p_adjusted", "p_cell", "significant")


# ---------------------------------------------------------------- atomic writes


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; run files are for people to open and share
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    """Write a whole binary file (a PNG, an HTML page) atomically."""
    _atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: Path, text: str) -> None:
    """Write a whole text file atomically."""
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_tensors(path: Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> None:
    """Write a safetensors file atomically (contiguous CPU copies of the tensors)."""
    payload = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic_write(path, lambda tmp: save_file(payload, str(tmp), metadata=dict(metadata)))


def write_json(path: Path, value: object) -> None:
    write_text(path, json.dumps(value, indent=2, ensure_ascii=False, allow_nan=True) + "\n")


def _json_safe(value: float) -> float | None:
    return None if math.isnan(value) else value


# ---------------------------------------------------------------- prompt


@dataclass(frozen=True)
class PromptFile:
    """A trained soft prompt and what it was trained for."""

    prompt: Tensor  # [P, d] float32
    model: str
    template: str


def write_prompt(directory: Path, prompt: PromptFile) -> Path:
    path = Path(directory) / PROMPT_FILE
    tensor = prompt.prompt.detach().to("cpu", torch.float32)
    write_tensors(
        path,
        {"prompt": tensor},
        {
            "model": prompt.model,
            "prompt_len": str(tensor.shape[0]),
            "hidden_size": str(tensor.shape[1]),
            "template": prompt.template,
            "skn_version": __version__,
        },
    )
    return path


def read_prompt(path: Path) -> PromptFile:
    path = Path(path)
    if path.is_dir():
        path = path / PROMPT_FILE
    if not path.is_file():
        raise RunDirError(f"{path}: no such prompt file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if "prompt" not in handle.keys():
                raise RunDirError(f"{path}: no tensor named 'prompt' (found: {', '.join(handle.keys())})")
            tensor = handle.get_tensor("prompt")
    except RunDirError:
        raise
    except Exception as err:
        raise RunDirError(f"{path}: not a readable safetensors file ({err})") from None
    if tensor.dim() != 2:
        raise RunDirError(f"{path}: 'prompt' must be [P, d], got shape {tuple(tensor.shape)}")
    return PromptFile(prompt=tensor.to(torch.float32), model=metadata.get("model", ""), template=metadata.get("template", ""))


# ---------------------------------------------------------------- probe results


@dataclass(frozen=True)
class ProbeRun:
    """Everything a probe writes next to the prompt."""

    corr: Tensor  # [L, P, m] float32
    stats: PearsonStats
    neurons: tuple[Neuron, ...]
    top_activations: Tensor  # [K, N] float32
    metric: Tensor  # [N] float64
    examples: tuple[Example, ...]
    info: Mapping[str, object]  # the content of run.json
    null: NullResult | None = None  # the permutation null; None when the run had --null 0


def _null_cells(null: NullResult | None, row: int) -> dict[str, object]:
    if null is None:
        return {}
    return {"p_adjusted": _json_safe(null.p_adjusted[row]), "p_cell": _json_safe(null.p_cell[row]),
            "significant": null.significant[row]}


def _neurons_csv(neurons: Sequence[Neuron], null: NullResult | None = None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(NEURON_COLUMNS + (NULL_COLUMNS if null is not None else ()))
    for row, n in enumerate(neurons):
        extra = [("" if v is None else repr(v) if isinstance(v, float) else str(v).lower()) for v in _null_cells(null, row).values()]
        writer.writerow([n.rank, n.layer, n.neuron, n.position, repr(n.r), *extra])
    return buffer.getvalue()


def _neuron_record(n: Neuron, null: NullResult | None = None, row: int = 0) -> dict[str, object]:
    return {"rank": n.rank, "layer": n.layer, "neuron": n.neuron, "position": n.position, "r": _json_safe(n.r),
            **_null_cells(null, row)}


def write_examples(path: Path, examples: Sequence[Example], metric: Tensor) -> None:
    lines = []
    for index, (example, value) in enumerate(zip(examples, metric.tolist(), strict=True)):
        record = {
            "index": index,
            "instruction": example.instruction,
            "completion": example.completion,
            "meta": dict(example.meta),
            "source": example.source,
            "metric": _json_safe(float(value)),
        }
        lines.append(json.dumps(record, ensure_ascii=False))
    write_text(path, "\n".join(lines) + "\n")


def _null_tensors(null: NullResult | None) -> dict[str, Tensor]:
    if null is None:
        return {}
    return {
        "null_max_abs_r": null.max_abs_r.to(torch.float64),
        "null_threshold": torch.tensor(null.threshold, dtype=torch.float64),
        "null_alpha": torch.tensor(null.alpha, dtype=torch.float64),
    }


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


def write_probe_run(directory: Path, run: ProbeRun) -> None:
    """Write every probe file of the contract into `directory` (the prompt is written by training)."""
    directory = Path(directory)
    info = run.info
    metadata = {
        "model": str(info.get("model", "")),
        "metric": str(info.get("metric", "")),
        "data": str(info.get("val_data", "")),
        "skn_version": __version__,
    }
    stats = run.stats
    write_tensors(
        directory / STATS_FILE,
        {
            "corr": run.corr.to(torch.float32),
            "count": torch.tensor(stats.count, dtype=torch.int64),
            "mean_x": stats.mean_x,
            "m2_x": stats.m2_x,
            "c_xy": stats.c_xy,
            "mean_y": torch.tensor(stats.mean_y, dtype=torch.float64),
            "m2_y": torch.tensor(stats.m2_y, dtype=torch.float64),
            **_null_tensors(run.null),
        },
        metadata,
    )
    write_json(directory / NEURONS_JSON, [_neuron_record(n, run.null, row) for row, n in enumerate(run.neurons)])
    write_text(directory / NEURONS_CSV, _neurons_csv(run.neurons, run.null))
    write_tensors(
        directory / TOP_ACTIVATIONS_FILE,
        {"activations": run.top_activations.to(torch.float32), "metric": run.metric.to(torch.float64)},
        metadata,
    )
    write_examples(directory / EXAMPLES_FILE, run.examples, run.metric)
    write_json(directory / RUN_FILE, dict(info))


def _require(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise RunDirError(f"{directory}: missing {name} (is this the --out of a finished `skn probe`?)")
    return path


def _load(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except Exception as err:
        raise RunDirError(f"{path}: not a readable safetensors file ({err})") from None


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise RunDirError(f"{path}: not readable JSON ({err})") from None


def read_examples(path: Path) -> tuple[tuple[Example, ...], list[float]]:
    examples, metric = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            examples.append(Example(record["instruction"], record["completion"], record.get("meta", {}), record.get("source", "")))
            value = record.get("metric")
            metric.append(math.nan if value is None else float(value))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise RunDirError(f"{path}:{number}: not an example record ({err})") from None
    return tuple(examples), metric


def read_probe_run(directory: Path) -> ProbeRun:
    """Read a run directory written by `write_probe_run`, checking that its files agree."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RunDirError(f"{directory}: no such run directory")
    stats_t = _load(_require(directory, STATS_FILE))
    missing = {"corr", "count", "mean_x", "m2_x", "c_xy", "mean_y", "m2_y"} - set(stats_t)
    if missing:
        raise RunDirError(f"{directory / STATS_FILE}: missing tensors {', '.join(sorted(missing))}")
    stats = PearsonStats(
        count=int(stats_t["count"]),
        mean_x=stats_t["mean_x"],
        m2_x=stats_t["m2_x"],
        c_xy=stats_t["c_xy"],
        mean_y=float(stats_t["mean_y"]),
        m2_y=float(stats_t["m2_y"]),
    )
    raw_neurons = read_json(_require(directory, NEURONS_JSON))
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
    top = _load(_require(directory, TOP_ACTIVATIONS_FILE))
    if "activations" not in top or "metric" not in top:
        raise RunDirError(f"{directory / TOP_ACTIVATIONS_FILE}: needs tensors 'activations' and 'metric'")
    examples, _ = read_examples(_require(directory, EXAMPLES_FILE))
    info = read_json(_require(directory, RUN_FILE))
    if not isinstance(info, dict):
        raise RunDirError(f"{directory / RUN_FILE}: expected a JSON object")
    activations, metric = top["activations"], top["metric"]
    if activations.shape != (len(neurons), len(examples)) or metric.shape != (len(examples),):
        raise RunDirError(
            f"{directory}: top_activations {tuple(activations.shape)} and metric {tuple(metric.shape)} do not fit "
            f"{len(neurons)} neurons x {len(examples)} examples"
        )
    null = _read_null(directory, stats_t, raw_neurons, info)
    return ProbeRun(stats_t["corr"], stats, neurons, activations, metric, examples, info, null)
