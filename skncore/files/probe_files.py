"""Writing a probe run: `write_probe_run` writes a `ProbeResult` into a run directory (the contract is
skn.files.rundir's docstring), and groups.json and the predictivity files beside it; skn.files.probe_read's
`read_probe_run` gives the same `ProbeResult` back, every file checked against the others.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from skn.inputs.data import Example
from skn.inputs.groups import GroupSummaries, groups_to_json
from skn.ranking.holdout import HeldOutR, HoldoutResult
from skn.statistics.null_verdict import NullResult
from skn.statistics.predictivity import PredictivityCounts, predictivity_record
from skn.ranking.rank import Neuron
from skn.files.result import ProbeResult, info_to_json, new_run_id
from skn.files.rundir import (CONTROL_COLUMNS, EXAMPLES_FILE, PREDICTIVITY_FILE, PREDICTIVITY_JSON, GROUPS_FILE, HOLDOUT_COLUMNS, NEURON_COLUMNS, NEURONS_CSV,
                              NEURONS_JSON, NULL_COLUMNS, RUN_FILE, RUN_ID, STATS_FILE, TOP_ACTIVATIONS_FILE,
                              write_json, write_tensors, write_text, json_safe)
from skn.statistics.stats import PearsonStats
from skn.version import __version__


def _held_out_values(h: HeldOutR) -> tuple[float, ...]:
    return (h.r_held_out, h.low, h.high, h.r_selection, h.r_full)


def _null_cells(null: NullResult | None, row: int) -> dict[str, object]:
    if null is None:
        return {}
    return {"p_adjusted": json_safe(null.p_adjusted[row]), "p_cell": json_safe(null.p_cell[row]),
            "significant": null.significant[row]}


def _neurons_csv(neurons: Sequence[Neuron], held_out: Sequence[HeldOutR] = (), null: NullResult | None = None,
                 raw_r: Sequence[float] = ()) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(NEURON_COLUMNS + (CONTROL_COLUMNS if raw_r else ()) + (NULL_COLUMNS if null is not None else ())
                    + (HOLDOUT_COLUMNS if held_out else ()))
    for k, n in enumerate(neurons):
        nulls = [("" if v is None else repr(v) if isinstance(v, float) else str(v).lower()) for v in _null_cells(null, k).values()]
        extra = [repr(v) for v in _held_out_values(held_out[k])] if held_out else []
        raw = [repr(raw_r[k])] if raw_r else []
        writer.writerow([n.rank, n.layer, n.index, n.position, repr(n.r), *raw, *nulls, *extra])
    return buffer.getvalue()


def _neuron_record(n: Neuron, held_out: HeldOutR | None = None, null: NullResult | None = None, row: int = 0,
                   raw_r: Sequence[float] = ()) -> dict[str, object]:
    record: dict[str, object] = {"rank": n.rank, "layer": n.layer, "neuron": n.index, "position": n.position, "r": json_safe(n.r),
                                 **({"r_raw": json_safe(raw_r[row])} if raw_r else {}), **_null_cells(null, row)}
    if held_out is not None:
        record.update({name: json_safe(v) for name, v in zip(HOLDOUT_COLUMNS, _held_out_values(held_out), strict=True)})
    return record


def _null_tensors(null: NullResult | None) -> dict[str, Tensor]:
    if null is None:
        return {}
    return {
        "null_max_abs_r": null.max_abs_r.to(torch.float64),
        "null_threshold": torch.tensor(null.threshold, dtype=torch.float64),
        "null_alpha": torch.tensor(null.alpha, dtype=torch.float64),
    }


def _moment_tensors(prefix: str, stats: PearsonStats) -> dict[str, Tensor]:
    return {
        f"{prefix}count": torch.tensor(stats.count, dtype=torch.int64),
        f"{prefix}mean_x": stats.mean_x,
        f"{prefix}m2_x": stats.m2_x,
        f"{prefix}c_xy": stats.c_xy,
        f"{prefix}mean_y": torch.tensor(stats.mean_y, dtype=torch.float64),
        f"{prefix}m2_y": torch.tensor(stats.m2_y, dtype=torch.float64),
    }


def _holdout_tensors(holdout: HoldoutResult) -> dict[str, Tensor]:
    """The folds in stats.safetensors: `confirm` [N] uint8 (1 = confirmation fold), each fold's moments under
    `selection_` / `confirmation_`, and each fold's corr (`corr_selection`, `corr_confirmation`)."""
    tensors = {"confirm": holdout.folds.confirm.to(torch.uint8)}
    tensors.update(_moment_tensors("selection_", holdout.folds.selection))
    tensors.update(_moment_tensors("confirmation_", holdout.folds.confirmation))
    tensors["corr_selection"] = holdout.corr_selection.to(torch.float32)
    tensors["corr_confirmation"] = holdout.corr_confirmation.to(torch.float32)
    return tensors


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


def write_probe_run(directory: Path, run: ProbeResult) -> ProbeResult:
    """Write every probe file of the contract into `directory` (the prompt is written by training);
    groups.json too when the result has group summaries. Every file carries the run's id (a new one when
    `run.info` has none); returns the run with it."""
    directory = Path(directory)
    if not run.info.run_id:
        run = replace(run, info=replace(run.info, run_id=new_run_id()))
    info = run.info
    metadata = {"model": info.model, "metric": info.metric, "data": info.val_data, "skn_version": __version__,
                RUN_ID: info.run_id}
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
            **(_holdout_tensors(run.holdout) if run.holdout is not None else {}),
            **_null_tensors(run.null),
            **({"corr_raw": run.partial.raw_corr.to(torch.float32)} if run.partial is not None else {}),
        },
        metadata,
    )
    held_out = run.holdout.per_neuron if run.holdout is not None else ()
    raw_r = run.partial.raw_r if run.partial is not None else ()
    write_json(directory / NEURONS_JSON, [_neuron_record(n, held_out[k] if held_out else None, run.null, k, raw_r)
                                          for k, n in enumerate(run.neurons)])
    write_text(directory / NEURONS_CSV, _neurons_csv(run.neurons, held_out, run.null, raw_r))
    write_tensors(
        directory / TOP_ACTIVATIONS_FILE,
        {"activations": run.top_activations.to(torch.float32), "metric": run.metric.to(torch.float64)},
        metadata,
    )
    write_examples(directory / EXAMPLES_FILE, run.examples, run.metric, info.run_id)
    if run.groups is not None:
        write_groups(directory, run.groups, info.run_id)
    write_json(directory / RUN_FILE, info_to_json(info))
    return run


# ---------------------------------------------------------------- groups.json


def write_groups(directory: Path, summaries: GroupSummaries, run_id: str = "") -> Path:
    """Write `groups.json` into a run directory (atomically), with the run id when there is one."""
    path: Path = Path(directory) / GROUPS_FILE
    write_json(path, {**groups_to_json(summaries), **({RUN_ID: run_id} if run_id else {})})
    return path


# ---------------------------------------------------------------- predictivity (--score predictivity)


def write_predictivity(directory: Path, counts: PredictivityCounts, corr: Tensor, neurons: Sequence[Neuron],
                       score: str, metadata: Mapping[str, str]) -> None:
    """RUN/predictivity.safetensors (`predictivity` [L, P, m] float32, `train_mean` float64, `above`,
    `above_pos` int64) and RUN/predictivity.json (both scores of the top neurons, the rankings' agreement)."""
    directory = Path(directory)
    write_tensors(directory / PREDICTIVITY_FILE, {"predictivity": counts.predictivity().to(torch.float32),
                  "train_mean": counts.train_mean, "above": counts.above, "above_pos": counts.above_pos}, metadata)
    write_json(directory / PREDICTIVITY_JSON, predictivity_record(counts, corr, neurons, score))
