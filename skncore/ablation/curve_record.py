"""What RUN/ablation_curve.json holds, as frozen dataclasses written and read back as the same type:
`CurveRecord.to_json()` is the file's content, `parse_curve(path, content)` its twin.

Reading checks every field it uses: a missing required field, or one of the wrong kind, is one RunDirError
naming the file and the field ("ablation_curve.json: field 'points[0].effect.loss' must be a number or null").
Fields that later versions of skn added are defaulted for older files: "test" (None at the top: the file
does not say; "empirical" in "config": the only test there was), "p_empirical" and "p_t" (None), "share" (1),
"sets" (0), "ranked_on" / "items_from" ("all"), "curves" (none: the file is one curve).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from skn.ablation.ablate_curve import Axis
from skn.ablation.ablate_test import DepartureTest
from skn.errors import RunDirError
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
class Quantiles:
    """The random sets' 5%, median and 95% of one measure's effect."""

    q05: float | None
    median: float | None
    q95: float | None

    def to_json(self) -> dict[str, object]:
        return {"q05": self.q05, "median": self.median, "q95": self.q95}


def _quantiles(obj: JsonObject, measure: str) -> Quantiles | None:
    found = obj.obj(measure, required=False)
    return None if found is None else Quantiles(found.num("q05"), found.num("median"), found.num("q95"))


def _quantiles_json(value: Quantiles | None) -> object:
    return None if value is None else value.to_json()


@dataclass(frozen=True)
class CurvePoint:
    """One grid point: K (or the factor S), the set's effect, every control's, their band, p and Holm's p."""

    k: int | None
    scale: float | None
    effect: Numbers
    ablated: Numbers
    controls_summary: ByMeasure[Spread | None]
    p_holm: Numbers
    band: ByMeasure[Quantiles | None]
    controls: ByMeasure[tuple[float | None, ...]]

    def x(self, axis: Axis) -> float | None:
        value = self.scale if axis is Axis.SCALE else self.k
        return None if value is None else float(value)

    def to_json(self) -> dict[str, object]:
        return {"k": self.k, "scale": self.scale, "effect": self.effect.to_json(unchanged),
                "ablated": self.ablated.to_json(unchanged),
                "controls_summary": self.controls_summary.to_json(spread_json),
                "p_holm": self.p_holm.to_json(unchanged), "band": self.band.to_json(_quantiles_json),
                "controls": self.controls.to_json(list)}


def _point(obj: JsonObject) -> CurvePoint:
    return CurvePoint(obj.opt_integer("k"), obj.num("scale"), read_numbers(obj, "effect"),
                      read_numbers(obj, "ablated", False), read_by_measure(obj, "controls_summary", read_spread),
                      read_numbers(obj, "p_holm", False), read_by_measure(obj, "band", _quantiles, False),
                      read_by_measure(obj, "controls", JsonObject.nums, False))


@dataclass(frozen=True)
class Departure:
    """The first grid point where the set departs from random (loss, Holm)."""

    k: int | None
    scale: float | None
    effect_loss: float | None
    p_holm: float | None

    def x(self, axis: Axis) -> float | None:
        value = self.scale if axis is Axis.SCALE else self.k
        return None if value is None else float(value)

    def to_json(self) -> dict[str, object]:
        return {"k": self.k, "scale": self.scale, "effect_loss": self.effect_loss, "p_holm": self.p_holm}


def _departure(parent: JsonObject) -> Departure | None:
    obj = parent.obj("departure", required=False)
    return None if obj is None else Departure(obj.opt_integer("k"), obj.num("scale"), obj.num("effect_loss"), obj.num("p_holm"))


@dataclass(frozen=True)
class CurveEntry:
    """One curve of the file (a value x where): its value and place, test, points and departure."""

    value: str
    where: str
    test: DepartureTest | None
    points: tuple[CurvePoint, ...]
    departure: Departure | None

    def to_json(self) -> dict[str, object]:
        return {"config": {"value": self.value, "where": self.where}, "test": None if self.test is None else self.test.value,
                "points": [p.to_json() for p in self.points],
                "departure": None if self.departure is None else self.departure.to_json()}


def _entry(obj: JsonObject) -> CurveEntry:
    config = obj.need("config")
    return CurveEntry(config.text("value"), config.text("where"), obj.choice("test", DepartureTest),
                      tuple(_point(p) for p in obj.objs("points")), _departure(obj))


@dataclass(frozen=True)
class CurveRecord:
    """RUN/ablation_curve.json. The top-level config, points and departure are the first curve's (the file's
    layout before several curves); `curves` holds each (empty in a file from before)."""

    model: str
    metric: str
    axis: Axis
    config: ConfigRecord
    n_items: int
    forwards: int
    base: Numbers
    points: tuple[CurvePoint, ...]
    departure: Departure | None
    curves: tuple[CurveEntry, ...] = ()
    test: DepartureTest | None = None
    ranking: str = "this run's |r|"
    ranked_on: str = "all"
    items_from: str = "all"
    correction: str = "holm"
    correction_family: str = "each curve's grid"
    alpha: float = 0.05
    sets: int = 0
    seconds: float | None = None
    skn_version: str = ""

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "skn_version": self.skn_version, "model": self.model, "metric": self.metric, "axis": self.axis.value,
            "config": self.config.to_json(), "test": None if self.test is None else self.test.value,
            "ranking": self.ranking, "ranked_on": self.ranked_on, "items_from": self.items_from,
            "correction": self.correction, "correction_family": self.correction_family, "alpha": self.alpha,
            "n_items": self.n_items, "forwards": self.forwards, "sets": self.sets, "seconds": self.seconds,
            "base": self.base.to_json(unchanged), "points": [p.to_json() for p in self.points],
            "departure": None if self.departure is None else self.departure.to_json(),
        }
        if self.curves:
            out["curves"] = [c.to_json() for c in self.curves]
        return out


def parse_curve(path: Path, content: object) -> CurveRecord:
    """The record of ablation_curve.json's `content` (read from `path`, named in errors)."""
    r = root_object(path, content)
    axis = r.choice("axis", Axis)
    if axis is None:
        raise RunDirError(f"{path}: field 'axis' is missing")
    return CurveRecord(
        model=r.text("model"), metric=r.text("metric", ""), axis=axis, config=read_config(r.need("config")),
        n_items=r.integer("n_items"), forwards=r.integer("forwards"), base=read_numbers(r, "base", False),
        points=tuple(_point(p) for p in r.objs("points")), departure=_departure(r),
        curves=tuple(_entry(c) for c in r.objs("curves", required=False)), test=r.choice("test", DepartureTest),
        ranking=r.text("ranking", "this run's |r|"), ranked_on=r.text("ranked_on", "all"),
        items_from=r.text("items_from", "all"), correction=r.text("correction", "holm"),
        correction_family=r.text("correction_family", "each curve's grid"), alpha=r.num("alpha") or 0.05,
        sets=r.integer("sets", 0), seconds=r.num("seconds"), skn_version=r.text("skn_version", ""),
    )


__all__ = ["CurveEntry", "CurvePoint", "CurveRecord", "Departure", "Quantiles", "parse_curve"]
