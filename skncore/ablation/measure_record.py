"""The parts that RUN/ablation.json and RUN/ablation_curve.json share, as frozen dataclasses written as JSON
and read back from a `JsonObject` (skn.files.json_record): one value per measure (`ByMeasure`, `Numbers`), the
controls' spread of one measure (`Spread`) and the file's "config" (`ConfigRecord`).

Fields that later versions of skn added are defaulted for older files: "p_empirical" and "p_t" (None),
"share" (1), "test" in "config" ("empirical": the only test there was).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from skn.ablation.ablate import MEASURES
from skn.ablation.ablate_test import DepartureTest
from skn.files.json_record import JsonObject

T = TypeVar("T")


@dataclass(frozen=True)
class ByMeasure(Generic[T]):
    """One value per measure: loss, metric, accuracy."""

    loss: T
    metric: T
    accuracy: T

    def get(self, measure: str) -> T:
        value: T = getattr(self, measure)
        return value

    def to_json(self, write: Callable[[T], object]) -> dict[str, object]:
        return {m: write(self.get(m)) for m in MEASURES}


Numbers = ByMeasure[float | None]


def numbers(loss: float | None = None, metric: float | None = None, accuracy: float | None = None) -> Numbers:
    return ByMeasure(loss, metric, accuracy)


def unchanged(value: T) -> T:
    """`value` itself: how `ByMeasure.to_json` writes plain numbers."""
    return value


def read_by_measure(parent: JsonObject, key: str, read: Callable[[JsonObject, str], T],
                    required: bool = True) -> ByMeasure[T]:
    """Each measure of `parent[key]`, read with `read(obj, measure)`; an absent measure reads as absent."""
    found = parent.obj(key, required)
    obj = found if found is not None else JsonObject(parent.path, {}, f"{parent.name(key)}.")
    return ByMeasure(read(obj, "loss"), read(obj, "metric"), read(obj, "accuracy"))


def read_numbers(parent: JsonObject, key: str, required: bool = True) -> Numbers:
    return read_by_measure(parent, key, lambda o, m: o.num(m), required)


@dataclass(frozen=True)
class Spread:
    """The controls of one measure: their mean and std; the set's p under the chosen test and each test."""

    mean: float | None
    std: float | None
    p: float | None
    p_empirical: float | None = None  # files before the log-t test hold p alone
    p_t: float | None = None

    def to_json(self) -> dict[str, object]:
        return {"mean": self.mean, "std": self.std, "p": self.p, "p_empirical": self.p_empirical, "p_t": self.p_t}


def read_spread(obj: JsonObject, measure: str) -> Spread | None:
    found = obj.obj(measure, required=False)
    if found is None:
        return None
    return Spread(found.num("mean"), found.num("std"), found.num("p"), found.num("p_empirical"), found.num("p_t"))


def spread_json(value: Spread | None) -> object:
    return None if value is None else value.to_json()


@dataclass(frozen=True)
class ConfigRecord:
    """The "config" of a file: how the sets were ablated and measured (`per_neuron` in ablation.json only)."""

    value: str
    where: str
    controls: int
    items: int
    seed: int
    batch_size: int
    share: int = 1
    test: DepartureTest = DepartureTest.EMPIRICAL  # files before the log-t test used the empirical p
    per_neuron: int | None = None

    def to_json(self) -> dict[str, object]:
        head: dict[str, object] = {"value": self.value, "where": self.where, "controls": self.controls}
        if self.per_neuron is not None:
            head["per_neuron"] = self.per_neuron
        return {**head, "items": self.items, "seed": self.seed, "batch_size": self.batch_size, "share": self.share,
                "test": self.test.value}


def read_config(obj: JsonObject) -> ConfigRecord:
    return ConfigRecord(obj.text("value"), obj.text("where"), obj.integer("controls"), obj.integer("items"),
                        obj.integer("seed"), obj.integer("batch_size"), obj.integer("share", 1),
                        obj.choice("test", DepartureTest, DepartureTest.EMPIRICAL) or DepartureTest.EMPIRICAL,
                        obj.opt_integer("per_neuron"))


__all__ = ["ByMeasure", "Numbers", "ConfigRecord", "Spread", "numbers", "read_by_measure", "read_config",
           "read_numbers", "read_spread", "spread_json", "unchanged"]
