"""Writing a probe run: `write_probe_run` writes a `ProbeResult` into a run directory (the contract is
skn.files.rundir's docstring), each feature's part (skn.features) and groups.json with it; skn.files.probe_read's
`read_probe_run` gives the same `ProbeResult` back, every file checked against the others.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from skn.features.feature import Cell, Feature
from skn.features.registry import FEATURES, checked
from skn.files.result import ProbeResult, info_to_json, new_run_id
from skn.files.rundir import (EXAMPLES_FILE, GROUPS_FILE, NEURON_COLUMNS, NEURONS_CSV, NEURONS_JSON, RUN_FILE, RUN_ID,
                              STATS_FILE, TOP_ACTIVATIONS_FILE, json_safe, moment_tensors, write_json, write_tensors, write_text)
from skn.inputs.data import Example
from skn.inputs.groups import GroupSummaries, groups_to_json
from skn.ranking.rank import Neuron
from skn.version import __version__


def _json_cell(value: Cell) -> object:
    return json_safe(value) if isinstance(value, float) else value


def _csv_cell(value: Cell) -> str:
    """A neuron's value in neurons.csv: a number as Python writes it (nan included), a yes/no in lower case,
    none as empty."""
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value).lower()


def _feature_cells(present: Sequence[tuple[Feature[Any], object]], row: int) -> list[tuple[str, Cell]]:
    """Row `row`'s values of every feature that ran, in column order."""
    cells: list[tuple[str, Cell]] = []
    for feature, section in present:
        cells.extend(zip(feature.columns, feature.cells(section, row), strict=True))
    return cells


def _neurons_csv(neurons: Sequence[Neuron], present: Sequence[tuple[Feature[Any], object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(NEURON_COLUMNS + tuple(c for feature, _ in present for c in feature.columns))
    for k, n in enumerate(neurons):
        writer.writerow([n.rank, n.layer, n.index, n.position, repr(n.r), *(_csv_cell(v) for _, v in _feature_cells(present, k))])
    return buffer.getvalue()


def _neuron_record(n: Neuron, present: Sequence[tuple[Feature[Any], object]], row: int) -> dict[str, object]:
    return {"rank": n.rank, "layer": n.layer, "neuron": n.index, "position": n.position, "r": json_safe(n.r),
            **{name: _json_cell(v) for name, v in _feature_cells(present, row)}}


def write_examples(path: Path, examples: Sequence[Example], metric: Tensor, run_id: str = "") -> None:
    """examples.jsonl: one record per example, each with the run id when there is one."""
    lines = []
    for index, (example, value) in enumerate(zip(examples, metric.tolist(), strict=True)):
        record = {
            "index": index,
            "instruction": example.instruction,
            "completion": example.completion,
            "meta": dict(example.meta),
            "source": example.source,
            "metric": json_safe(float(value)),
            **({RUN_ID: run_id} if run_id else {}),
        }
        lines.append(json.dumps(record, ensure_ascii=False))
    write_text(path, "\n".join(lines) + "\n")


def write_probe_run(directory: Path, run: ProbeResult, features: Sequence[Feature[Any]] = FEATURES) -> ProbeResult:
    """Write every probe file of the contract into `directory` (the prompt is written by training): the
    run's own, each feature's part of them and its own files (skn.features), and groups.json when the result
    has group summaries. Every file carries the run's id (a new one when `run.info` has none); returns the
    run with it."""
    directory = Path(directory)
    if not run.info.run_id:
        run = replace(run, info=replace(run.info, run_id=new_run_id()))
    info = run.info
    metadata = {"model": info.model, "metric": info.metric, "data": info.val_data, "skn_version": __version__,
                RUN_ID: info.run_id}
    present = [(feature, run.sections[feature.name]) for feature in checked(features) if feature.name in run.sections]
    tensors: dict[str, Tensor] = {
        "corr": run.corr.to(torch.float32),
        **moment_tensors("", run.stats),
    }
    for feature, section in present:
        tensors.update(feature.tensors(section))
    write_tensors(directory / STATS_FILE, tensors, metadata)
    write_json(directory / NEURONS_JSON, [_neuron_record(n, present, k) for k, n in enumerate(run.neurons)])
    write_text(directory / NEURONS_CSV, _neurons_csv(run.neurons, present))
    write_tensors(
        directory / TOP_ACTIVATIONS_FILE,
        {"activations": run.top_activations.to(torch.float32), "metric": run.metric.to(torch.float64)},
        metadata,
    )
    write_examples(directory / EXAMPLES_FILE, run.examples, run.metric, info.run_id)
    if run.groups is not None:
        write_groups(directory, run.groups, info.run_id)
    for feature, section in present:
        feature.write(directory, run, section, metadata)
    write_json(directory / RUN_FILE, info_to_json(info))
    return run


# ---------------------------------------------------------------- groups.json


def write_groups(directory: Path, summaries: GroupSummaries, run_id: str = "") -> Path:
    """Write `groups.json` into a run directory (atomically), with the run id when there is one."""
    path: Path = Path(directory) / GROUPS_FILE
    write_json(path, {**groups_to_json(summaries), **({RUN_ID: run_id} if run_id else {})})
    return path
