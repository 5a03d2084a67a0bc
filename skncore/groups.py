"""Group summaries: how each top neuron's activation differs between groups of a metadata field.

For every top neuron (its activation at its best position, one value per validation example, as in
`top_activations.safetensors`) and every `--group-by` field, the count, mean and standard deviation of
the activation per value of the field, over every value present, whether or not the metric used it
(a probe with `heuristic==lexical_overlap` still shows all three HANS heuristics). The standard
deviation is the sample one (n - 1), null for a group of one. Saved as `groups.json`:

    {"fields": ["heuristic"],
     "neurons": [{"rank": 1, "layer": 3, "neuron": 17, "position": 4, "r": 0.61,
                  "all": {"count": 96, "mean": ..., "std": ...},
                  "groups": {"heuristic": [{"value": "constituent", "count": 32, "mean": ..., "std": ...}, ...]}}]}

Values are sorted: false before true, numbers by size, then text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from skn.data import Example
from skn.errors import DataError, InternalError, RunDirError
from skn.rank import Neuron


@dataclass(frozen=True)
class Summary:
    """Count, mean and sample standard deviation (NaN for fewer than two values)."""

    count: int
    mean: float
    std: float


@dataclass(frozen=True)
class Group:
    value: object  # the field's value as in the examples' metadata (JSON-ready)
    stats: Summary


@dataclass(frozen=True)
class NeuronGroups:
    neuron: Neuron
    overall: Summary
    by_field: Mapping[str, tuple[Group, ...]]  # field -> its groups, sorted by value


@dataclass(frozen=True)
class GroupSummaries:
    fields: tuple[str, ...]
    neurons: tuple[NeuronGroups, ...]


def group_key(value: object) -> str:
    """A hashable, JSON-faithful identity for a metadata value (lists and objects included)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _order(value: object) -> tuple[int, float, str]:
    if isinstance(value, bool):
        return (0, float(value), "")
    if isinstance(value, (int, float)):
        return (1, float(value), "")
    return (2, 0.0, value if isinstance(value, str) else group_key(value))


def _summary(values: Tensor) -> Summary:
    count = int(values.numel())
    mean = float(values.mean()) if count else math.nan
    std = float(values.std(correction=1)) if count > 1 else math.nan
    return Summary(count=count, mean=mean, std=std)


def field_values(examples: Sequence[Example], field: str) -> list[object]:
    """Each example's value of `field`; a missing field is a DataError naming it and the example."""
    values = []
    for example in examples:
        if field not in example.meta:
            present = ", ".join(sorted(example.meta)) or "none"
            raise DataError(f"{example.source}: no metadata field '{field}' to group by (fields present: {present})")
        values.append(example.meta[field])
    return values


def group_summaries(
    activations: Tensor, neurons: Sequence[Neuron], examples: Sequence[Example], fields: Sequence[str]
) -> GroupSummaries:
    """Per top neuron and field: count, mean, std of `activations` [K, N] per value of the field."""
    if activations.dim() != 2 or activations.shape != (len(neurons), len(examples)):
        raise InternalError(
            f"activations have shape {tuple(activations.shape)}, expected [{len(neurons)} neurons, {len(examples)} examples]"
        )
    acts = activations.detach().to("cpu", torch.float64)
    index_of: dict[str, dict[str, list[int]]] = {}
    value_of: dict[str, object] = {}
    for field in fields:
        buckets: dict[str, list[int]] = {}
        for i, value in enumerate(field_values(examples, field)):
            key = group_key(value)
            value_of[key] = value
            buckets.setdefault(key, []).append(i)
        index_of[field] = dict(sorted(buckets.items(), key=lambda kv: _order(value_of[kv[0]])))
    out = []
    for row, neuron in zip(acts, neurons):
        by_field = {
            field: tuple(
                Group(value=value_of[key], stats=_summary(row[torch.tensor(ids, dtype=torch.long)]))
                for key, ids in index_of[field].items()
            )
            for field in fields
        }
        out.append(NeuronGroups(neuron=neuron, overall=_summary(row), by_field=by_field))
    return GroupSummaries(fields=tuple(fields), neurons=tuple(out))


# ---------------------------------------------------------------- JSON


def _number(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _summary_json(s: Summary) -> dict[str, object]:
    return {"count": s.count, "mean": _number(s.mean), "std": _number(s.std)}


def groups_to_json(summaries: GroupSummaries) -> dict[str, object]:
    return {
        "fields": list(summaries.fields),
        "neurons": [
            {
                "rank": g.neuron.rank,
                "layer": g.neuron.layer,
                "neuron": g.neuron.index,
                "position": g.neuron.position,
                "r": _number(g.neuron.r),
                "all": _summary_json(g.overall),
                "groups": {
                    field: [{"value": group.value, **_summary_json(group.stats)} for group in groups]
                    for field, groups in g.by_field.items()
                },
            }
            for g in summaries.neurons
        ],
    }


def _float(value: object, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise RunDirError(f"{where}: expected a number or null, got {value!r}")


def _summary_from(record: object, where: str) -> Summary:
    if not isinstance(record, dict) or not isinstance(record.get("count"), int):
        raise RunDirError(f"{where}: expected {{count, mean, std}}")
    return Summary(int(record["count"]), _float(record.get("mean"), where), _float(record.get("std"), where))


def groups_from_json(value: object, where: str = "groups.json") -> GroupSummaries:
    """Read back what `groups_to_json` wrote (for `skn show`); a malformed file is a RunDirError."""
    if not isinstance(value, dict) or not isinstance(value.get("fields"), list) or not isinstance(
        value.get("neurons"), list
    ):
        raise RunDirError(f"{where}: expected an object with 'fields' and 'neurons' lists")
    fields = tuple(str(f) for f in value["fields"])
    neurons = []
    for i, record in enumerate(value["neurons"]):
        at = f"{where}: neurons[{i}]"
        if not isinstance(record, dict) or not isinstance(record.get("groups"), dict):
            raise RunDirError(f"{at}: expected an object with 'groups'")
        try:
            neuron = Neuron(int(record["rank"]), int(record["layer"]), int(record["neuron"]),
                            int(record["position"]), _float(record.get("r"), at))
        except (KeyError, TypeError, ValueError):
            raise RunDirError(f"{at}: needs integer rank, layer, neuron, position") from None
        by_field = {}
        for field in fields:
            groups = record["groups"].get(field)
            if not isinstance(groups, list):
                raise RunDirError(f"{at}: no groups for field '{field}'")
            by_field[field] = tuple(
                Group(g.get("value") if isinstance(g, dict) else None, _summary_from(g, f"{at}.{field}"))
                for g in groups
            )
        neurons.append(NeuronGroups(neuron, _summary_from(record.get("all"), f"{at}.all"), by_field))
    return GroupSummaries(fields=fields, neurons=tuple(neurons))
