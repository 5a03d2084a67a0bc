"""What RUN/ablation.json holds, as frozen dataclasses written and read back as the same type:
`AblationRecord.to_json()` is the file's content, `parse_ablation(path, content)` its twin (the curve's file
is skn.ablation.curve_record's; the parts both share, skn.ablation.measure_record's).

Reading checks every field it uses: a missing required field, or one of the wrong kind, is one RunDirError
naming the file and the field ("ablation.json: field 'controls_summary.loss.p' must be a number or null").
Fields that later versions of skn added are defaulted for older files: "test" (None at the top: the file
does not say; "empirical" in "config": the only test there was), "p_empirical" and "p_t" (None), "share" (1),
"sets" (0), "ranked_on" / "items_from" ("all").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from skn.ablation.ablate_test import DepartureTest
from skn.files.json_record import JsonObject, root_object
from skn.ablation.measure_record import (
    ByMeasure,
    Numbers,
    ConfigRecord,
    Spread,
    read_by_measure,
    read_config,
    read_numbers,
    read_spread,
    spread_json,
    unchanged,
)


@dataclass(frozen=True)
class SetRecord:
    """One ablated set (a control, or one neuron alone): its label, neurons and effect."""

    label: str
    neurons: tuple[str, ...]
    effect: Numbers

    def to_json(self) -> dict[str, object]:
        return {"label": self.label, "neurons": list(self.neurons), "effect": self.effect.to_json(unchanged)}


def _set(obj: JsonObject) -> SetRecord:
    return SetRecord(obj.text("label"), obj.texts("neurons"), read_numbers(obj, "effect"))


@dataclass(frozen=True)
class ExampleRecord:
    """One item: its loss (and metric, correct where measured) unablated and with the set ablated."""

    index: int
    loss: float | None
    loss_ablated: float | None
    metric: float | None = None
    metric_ablated: float | None = None
    correct: bool | None = None
    correct_ablated: bool | None = None

    def to_json(self) -> dict[str, object]:
        row: dict[str, object] = {"index": self.index, "loss": self.loss, "loss_ablated": self.loss_ablated}
        if self.metric is not None or self.metric_ablated is not None:
            row["metric"], row["metric_ablated"] = self.metric, self.metric_ablated
        if self.correct is not None or self.correct_ablated is not None:
            row["correct"], row["correct_ablated"] = self.correct, self.correct_ablated
        return row


def _example(obj: JsonObject) -> ExampleRecord:
    return ExampleRecord(obj.integer("index"), obj.num("loss"), obj.num("loss_ablated"), obj.num("metric"),
                         obj.num("metric_ablated"), obj.boolean("correct"), obj.boolean("correct_ablated"))


@dataclass(frozen=True)
class AblationRecord:
    """RUN/ablation.json: the set, its effect against its controls, each neuron alone, each item."""

    model: str
    metric: str
    config: ConfigRecord
    n_items: int
    forwards: int
    neurons: tuple[str, ...]
    base: Numbers
    ablated: Numbers
    effect: Numbers
    controls_summary: ByMeasure[Spread | None]
    controls: tuple[SetRecord, ...]
    per_neuron: tuple[SetRecord, ...]
    per_example: tuple[ExampleRecord, ...]
    test: DepartureTest | None = None  # the test that gave p (None: a file from before the log-t test)
    sets: int = 0
    ranked_on: str = "all"
    items_from: str = "all"
    alternative_rows: int = 0
    seconds: float | None = None
    skn_version: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "skn_version": self.skn_version, "model": self.model, "metric": self.metric, "config": self.config.to_json(),
            "test": None if self.test is None else self.test.value,
            "n_items": self.n_items, "sets": self.sets, "ranked_on": self.ranked_on, "items_from": self.items_from,
            "alternative_rows": self.alternative_rows, "forwards": self.forwards, "seconds": self.seconds,
            "neurons": list(self.neurons), "base": self.base.to_json(unchanged),
            "ablated": self.ablated.to_json(unchanged),
            "effect": self.effect.to_json(unchanged), "controls_summary": self.controls_summary.to_json(spread_json),
            "controls": [s.to_json() for s in self.controls], "per_neuron": [s.to_json() for s in self.per_neuron],
            "per_example": [e.to_json() for e in self.per_example],
        }


def parse_ablation(path: Path, content: object) -> AblationRecord:
    """The record of ablation.json's `content` (read from `path`, named in errors)."""
    r = root_object(path, content)
    return AblationRecord(
        model=r.text("model"), metric=r.text("metric", ""), config=read_config(r.need("config")),
        n_items=r.integer("n_items"), forwards=r.integer("forwards"), neurons=r.texts("neurons"),
        base=read_numbers(r, "base"), ablated=read_numbers(r, "ablated"), effect=read_numbers(r, "effect"),
        controls_summary=read_by_measure(r, "controls_summary", read_spread),
        controls=tuple(_set(o) for o in r.objs("controls")), per_neuron=tuple(_set(o) for o in r.objs("per_neuron")),
        per_example=tuple(_example(o) for o in r.objs("per_example")), test=r.choice("test", DepartureTest),
        sets=r.integer("sets", 0), ranked_on=r.text("ranked_on", "all"), items_from=r.text("items_from", "all"),
        alternative_rows=r.integer("alternative_rows", 0), seconds=r.num("seconds"), skn_version=r.text("skn_version", ""),
    )


__all__ = ["AblationRecord", "ExampleRecord", "SetRecord", "parse_ablation"]
