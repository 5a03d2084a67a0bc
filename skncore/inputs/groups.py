"""Grouping: split the validation examples by a metadata field, and summarise activations per group.

The one home of this idea; its views are `groups.json` (`skn probe --group-by`), the density figures
(`skn plot`) and the report's group tables.

`partition` splits the examples by every value of a field (values sorted: false before true, numbers by
size, then text; lists and objects compared by their JSON). Two uses are built on it:

- `group_summaries`: for every top neuron (its activation at its best position, one value per validation
  example, as in `top_activations.safetensors`) and every `--group-by` field, the count, mean and standard
  deviation of the activation per value of the field, over every value present, whether or not the metric
  used it (a probe with `heuristic==lexical_overlap` still shows all three HANS heuristics). The standard
  deviation is the sample one (n - 1), null for a group of one. Saved as `groups.json`:

      {"fields": ["heuristic"],
       "neurons": [{"rank": 1, "layer": 3, "neuron": 17, "position": 4, "r": 0.61,
                    "all": {"count": 96, "mean": ..., "std": ...},
                    "groups": {"heuristic": [{"value": "constituent", "count": 32, "mean": ..., "std": ...}, ...]}}]}

- `Grouping`, a partition for people (figures and report): at most MAX_GROUPS groups, with labels.
  A numeric field with more distinct values is split at its median; other fields keep their
  MAX_GROUPS - 1 most frequent values and gather the rest as "other (k values)"; examples without the
  field form a "(missing)" group. `grouping_for` says which field: `--group-by FIELD` when given; else
  the first of run.json's `group_by`; else the field the metric reads (`NAME==VALUE`, `field:NAME`, or a
  bare `NAME` that is a metadata field, as `metrics.parse_metric` reads it), so every value of it is drawn,
  including those the metric did not single out; else the metric itself: by its value when it takes at
  most MAX_GROUPS values (e.g. `correct`), otherwise split at its median.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch
from torch import Tensor

from skn.inputs.data import Example
from skn.errors import DataError, InternalError, RunDirError, UsageError
from skn.inputs.metrics import MetricKind, parse_metric
from skn.ranking.rank import Neuron

MAX_GROUPS = 8  # more distinct values than this: numbers are split at the median, labels keep the most frequent
MISSING_LABEL = "(missing)"


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


def value_label(value: object) -> str:
    """How a value is named to people: text as it is, 3.0 as "3", anything else as its JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return group_key(value)


def _order(value: object) -> tuple[int, float, str]:
    if isinstance(value, bool):
        return (0, float(value), "")
    if isinstance(value, (int, float)):
        return (1, float(value), "")
    return (2, 0.0, value if isinstance(value, str) else group_key(value))


def summarize(values: Tensor) -> Summary:
    """Count, mean and sample std (n - 1) of `values`, in float64."""
    values = values.detach().to("cpu", torch.float64)
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


@dataclass(frozen=True)
class Partition:
    """The examples split by every value of one field: values[g] is shared by the examples members[g]."""

    field: str
    values: tuple[object, ...]  # sorted (see the module docstring)
    members: tuple[tuple[int, ...], ...]
    missing: tuple[int, ...]  # examples without the field


def partition(examples: Sequence[Example], field: str) -> Partition:
    """Split `examples` by the value of metadata field `field`; the one place examples are split by value."""
    buckets: dict[str, list[int]] = {}
    value_of: dict[str, object] = {}
    missing = []
    for i, example in enumerate(examples):
        if field not in example.meta:
            missing.append(i)
            continue
        key = group_key(example.meta[field])
        value_of[key] = example.meta[field]
        buckets.setdefault(key, []).append(i)
    keys = sorted(buckets, key=lambda k: _order(value_of[k]))
    return Partition(field, tuple(value_of[k] for k in keys), tuple(tuple(buckets[k]) for k in keys), tuple(missing))


def group_summaries(
    activations: Tensor, neurons: Sequence[Neuron], examples: Sequence[Example], fields: Sequence[str]
) -> GroupSummaries:
    """Per top neuron and field: count, mean, std of `activations` [K, N] per value of the field."""
    if activations.dim() != 2 or activations.shape != (len(neurons), len(examples)):
        raise InternalError(
            f"activations have shape {tuple(activations.shape)}, expected [{len(neurons)} neurons, {len(examples)} examples]"
        )
    for field in fields:
        field_values(examples, field)  # a missing field is an error here, not a group
    parts = [partition(examples, field) for field in fields]
    acts = activations.detach().to("cpu", torch.float64)
    out = []
    for row, neuron in zip(acts, neurons):
        by_field = {
            part.field: tuple(
                Group(value=value, stats=summarize(row[torch.tensor(ids, dtype=torch.long)]))
                for value, ids in zip(part.values, part.members, strict=True)
            )
            for part in parts
        }
        out.append(NeuronGroups(neuron=neuron, overall=summarize(row), by_field=by_field))
    return GroupSummaries(fields=tuple(fields), neurons=tuple(out))


# ---------------------------------------------------------------- groupings for figures and the report


class GroupSource(Enum):
    """Why the examples are grouped the way they are (said in the figures' captions)."""

    OPTION = "--group-by"
    RUN = "run.json group_by"
    METRIC_FIELD = "the metric's field"
    METRIC_VALUE = "the metric's values"
    METRIC_MEDIAN = "the metric, split at its median"


@dataclass(frozen=True)
class Grouping:
    """A partition of the validation examples: labels[g] names the examples members[g]."""

    field: str  # the metadata field (or "metric") the groups are values of
    source: GroupSource
    labels: tuple[str, ...]
    members: tuple[tuple[int, ...], ...]

    @property
    def note(self) -> str:
        return f"grouped by {self.field} ({self.source.value})"

    def label_of(self) -> tuple[str, ...]:
        """The group label of every example, in example order."""
        out = [""] * sum(len(m) for m in self.members)
        for label, members in zip(self.labels, self.members, strict=True):
            for index in members:
                out[index] = label
        return tuple(out)

    def summaries(self, values: Tensor) -> tuple[Summary, ...]:
        """`summarize` of `values` [N] over each group's members, in group order."""
        return tuple(summarize(values[torch.tensor(m, dtype=torch.long)]) for m in self.members)


def metric_field(metric: str) -> str:
    """The metadata field a metric spec reads (`metrics.parse_metric`), or "" for the others."""
    try:
        spec = parse_metric(metric)
    except UsageError:
        return ""
    return spec.field if spec.kind in (MetricKind.FIELD, MetricKind.EQUALS) else ""


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _median_split(values: Sequence[float], name: str, field: str, source: GroupSource) -> Grouping:
    finite = [v for v in values if math.isfinite(v)]
    median = float(np.median(finite)) if finite else math.nan
    low = tuple(i for i, v in enumerate(values) if v <= median)
    high = tuple(i for i, v in enumerate(values) if v > median)
    rest = tuple(i for i, v in enumerate(values) if not math.isfinite(v))
    groups = [(f"{name} \u2264 {median:.3g}", low), (f"{name} > {median:.3g}", high), (MISSING_LABEL, rest)]
    groups = [(label, members) for label, members in groups if members]
    return Grouping(field, source, tuple(g[0] for g in groups), tuple(g[1] for g in groups))


def group_by_field(examples: Sequence[Example], field: str, source: GroupSource) -> Grouping:
    """Group examples by the value of metadata field `field`, at most MAX_GROUPS groups (module docstring)."""
    part = partition(examples, field)
    numeric = bool(part.values) and all(_is_number(v) for v in part.values)
    labelled: dict[str, list[int]] = {}  # values with one label (3 and 3.0) are one group
    for value, members in zip(part.values, part.members, strict=True):
        labelled.setdefault(value_label(value), []).extend(members)
    if numeric and len(labelled) > MAX_GROUPS:
        numbers = [math.nan] * len(examples)
        for value, members in zip(part.values, part.members, strict=True):
            for i in members:
                numbers[i] = float(value) if isinstance(value, (int, float)) else math.nan
        return _median_split(numbers, field, field, source)
    groups = [(label, sorted(members)) for label, members in labelled.items()]
    if len(groups) > MAX_GROUPS:
        sizes = Counter({label: len(members) for label, members in groups})
        keep = {label for label, _ in sizes.most_common(MAX_GROUPS - 1)}
        other = sorted(i for label, members in groups if label not in keep for i in members)
        groups = [g for g in groups if g[0] in keep] + [(f"other ({len(groups) - len(keep)} values)", other)]
    if part.missing:
        groups.append((MISSING_LABEL, list(part.missing)))
    return Grouping(field, source, tuple(g[0] for g in groups), tuple(tuple(g[1]) for g in groups))


def group_by_metric(metric: Sequence[float], name: str) -> Grouping:
    """Group by the metric's value when it takes few values, else split at its median."""
    distinct = sorted({v for v in metric if math.isfinite(v)})
    if len(distinct) > MAX_GROUPS:
        return _median_split(metric, name, "metric", GroupSource.METRIC_MEDIAN)
    members = {v: tuple(i for i, x in enumerate(metric) if x == v) for v in distinct}
    labels = tuple(f"{name} = {v:.4g}" for v in distinct)
    groups = tuple(members[v] for v in distinct)
    rest = tuple(i for i, x in enumerate(metric) if not math.isfinite(x))
    if rest:
        labels, groups = labels + (MISSING_LABEL,), groups + (rest,)
    return Grouping("metric", GroupSource.METRIC_VALUE, labels, groups)


def meta_fields(examples: Sequence[Example]) -> tuple[str, ...]:
    """Every metadata field present in at least one example, sorted."""
    return tuple(sorted({field for ex in examples for field in ex.meta}))


def grouping_for(
    examples: Sequence[Example], metric: Sequence[float], metric_spec: str, run_group_by: Sequence[str],
    group_by: str | None = None,
) -> Grouping:
    """The grouping of a run's figures and report (the rule is in the module docstring)."""
    fields = meta_fields(examples)
    if group_by is not None:
        if group_by not in fields:
            known = ", ".join(fields) or "none"
            raise UsageError(f"--group-by {group_by}: no example has this metadata field (fields present: {known})")
        return group_by_field(examples, group_by, GroupSource.OPTION)
    if run_group_by and run_group_by[0] in fields:
        return group_by_field(examples, run_group_by[0], GroupSource.RUN)
    from_metric = metric_field(metric_spec)
    if from_metric in fields:
        return group_by_field(examples, from_metric, GroupSource.METRIC_FIELD)
    return group_by_metric(metric, "metric")


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
