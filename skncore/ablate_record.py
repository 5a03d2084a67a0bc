"""What RUN/ablation.json and RUN/ablation_curve.json hold, as frozen dataclasses written and read back as
the same type: `AblationRecord.to_json()` is the file's content, `parse_ablation(path, content)` its twin
(likewise `CurveRecord` / `parse_curve`).

Reading checks every field it uses: a missing required field, or one of the wrong kind, is one RunDirError
naming the file and the field ("ablation.json: field 'controls_summary.loss.p' must be a number or null").
Fields that later versions of skn added are defaulted for older files: "test" (None at the top: the file
does not say; "empirical" in "config": the only test there was), "p_empirical" and "p_t" (None), "share" (1),
"sets" (0), "ranked_on" / "items_from" ("all"), "curves" (none: the file is one curve).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Generic, TypeVar

from skn.ablate import MEASURES
from skn.ablate_curve import Axis
from skn.ablate_test import DepartureTest
from skn.errors import RunDirError

T = TypeVar("T")
E = TypeVar("E", bound=Enum)
_MISSING = object()


# ---------------------------------------------------------------- reading fields, each error naming its field


@dataclass(frozen=True)
class _Obj:
    """A JSON object of the file at `prefix` (for messages), read field by field."""

    path: Path
    data: Mapping[str, object]
    prefix: str = ""

    def name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def bad(self, key: str, want: str) -> RunDirError:
        return RunDirError(f"{self.path}: field '{self.name(key)}' must be {want}")

    def raw(self, key: str, default: object = _MISSING) -> object:
        if key not in self.data:
            if default is _MISSING:
                raise RunDirError(f"{self.path}: field '{self.name(key)}' is missing")
            return default
        return self.data[key]

    def num(self, key: str, required: bool = False) -> float | None:
        value = self.raw(key) if required else self.raw(key, None)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.bad(key, "a number or null")
        return float(value)

    def integer(self, key: str, default: int | None = None) -> int:
        value = self.raw(key) if default is None else self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.bad(key, "an integer")
        return value

    def opt_integer(self, key: str) -> int | None:
        value = self.raw(key, None)
        return None if value is None else self.integer(key)

    def text(self, key: str, default: str | None = None) -> str:
        value = self.raw(key) if default is None else self.raw(key, default)
        if not isinstance(value, str):
            raise self.bad(key, "a string")
        return value

    def boolean(self, key: str) -> bool | None:
        value = self.raw(key, None)
        if value is not None and not isinstance(value, bool):
            raise self.bad(key, "true, false or null")
        return value

    def choice(self, key: str, kind: type[E], default: E | None = None) -> E | None:
        value = self.raw(key, None)
        if value is None:
            return default
        try:
            return kind(value)
        except ValueError:
            raise self.bad(key, "one of " + ", ".join(str(m.value) for m in kind)) from None

    def obj(self, key: str, required: bool = True) -> _Obj | None:
        value = self.raw(key) if required else self.raw(key, None)
        if value is None and not required:
            return None
        if not isinstance(value, Mapping):
            raise self.bad(key, "an object")
        return _Obj(self.path, value, f"{self.name(key)}.")

    def need(self, key: str) -> _Obj:
        found = self.obj(key)
        assert found is not None  # required: obj raised otherwise
        return found

    def items(self, key: str, required: bool = True) -> tuple[object, ...]:
        value = self.raw(key) if required else self.raw(key, None)
        if value is None and not required:
            return ()
        if not isinstance(value, list):
            raise self.bad(key, "a list")
        return tuple(value)

    def objs(self, key: str, required: bool = True) -> tuple[_Obj, ...]:
        out = []
        for n, value in enumerate(self.items(key, required)):
            if not isinstance(value, Mapping):
                raise self.bad(f"{key}[{n}]", "an object")
            out.append(_Obj(self.path, value, f"{self.name(key)}[{n}]."))
        return tuple(out)

    def texts(self, key: str) -> tuple[str, ...]:
        values = self.items(key)
        for n, value in enumerate(values):
            if not isinstance(value, str):
                raise self.bad(f"{key}[{n}]", "a string")
        return tuple(str(v) for v in values)

    def nums(self, key: str) -> tuple[float | None, ...]:
        values = self.items(key, required=False)
        holder = _Obj(self.path, {f"{key}[{n}]": v for n, v in enumerate(values)}, self.prefix)
        return tuple(holder.num(f"{key}[{n}]") for n in range(len(values)))


def _root(path: Path, content: object) -> _Obj:
    if not isinstance(content, Mapping):
        raise RunDirError(f"{path}: not a JSON object")
    return _Obj(path, content)


# ---------------------------------------------------------------- per measure


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


def _same(value: T) -> T:
    return value


def _by_measure(parent: _Obj, key: str, read: Callable[[_Obj, str], T], required: bool = True) -> ByMeasure[T]:
    """Each measure of `parent[key]`, read with `read(obj, measure)`; an absent measure reads as absent."""
    found = parent.obj(key, required)
    obj = found if found is not None else _Obj(parent.path, {}, f"{parent.name(key)}.")
    return ByMeasure(read(obj, "loss"), read(obj, "metric"), read(obj, "accuracy"))


def _numbers(parent: _Obj, key: str, required: bool = True) -> Numbers:
    return _by_measure(parent, key, lambda o, m: o.num(m), required)


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


def _spread(obj: _Obj, measure: str) -> Spread | None:
    found = obj.obj(measure, required=False)
    if found is None:
        return None
    return Spread(found.num("mean"), found.num("std"), found.num("p"), found.num("p_empirical"), found.num("p_t"))


def _spread_json(value: Spread | None) -> object:
    return None if value is None else value.to_json()


@dataclass(frozen=True)
class RecordConfig:
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


def _config(obj: _Obj) -> RecordConfig:
    return RecordConfig(obj.text("value"), obj.text("where"), obj.integer("controls"), obj.integer("items"),
                        obj.integer("seed"), obj.integer("batch_size"), obj.integer("share", 1),
                        obj.choice("test", DepartureTest, DepartureTest.EMPIRICAL) or DepartureTest.EMPIRICAL,
                        obj.opt_integer("per_neuron"))


# ---------------------------------------------------------------- ablation.json


@dataclass(frozen=True)
class SetRecord:
    """One ablated set (a control, or one neuron alone): its label, neurons and effect."""

    label: str
    neurons: tuple[str, ...]
    effect: Numbers

    def to_json(self) -> dict[str, object]:
        return {"label": self.label, "neurons": list(self.neurons), "effect": self.effect.to_json(_same)}


def _set(obj: _Obj) -> SetRecord:
    return SetRecord(obj.text("label"), obj.texts("neurons"), _numbers(obj, "effect"))


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


def _example(obj: _Obj) -> ExampleRecord:
    return ExampleRecord(obj.integer("index"), obj.num("loss"), obj.num("loss_ablated"), obj.num("metric"),
                         obj.num("metric_ablated"), obj.boolean("correct"), obj.boolean("correct_ablated"))


@dataclass(frozen=True)
class AblationRecord:
    """RUN/ablation.json: the set, its effect against its controls, each neuron alone, each item."""

    model: str
    metric: str
    config: RecordConfig
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
            "neurons": list(self.neurons), "base": self.base.to_json(_same), "ablated": self.ablated.to_json(_same),
            "effect": self.effect.to_json(_same), "controls_summary": self.controls_summary.to_json(_spread_json),
            "controls": [s.to_json() for s in self.controls], "per_neuron": [s.to_json() for s in self.per_neuron],
            "per_example": [e.to_json() for e in self.per_example],
        }


def parse_ablation(path: Path, content: object) -> AblationRecord:
    """The record of ablation.json's `content` (read from `path`, named in errors)."""
    r = _root(path, content)
    return AblationRecord(
        model=r.text("model"), metric=r.text("metric", ""), config=_config(r.need("config")), n_items=r.integer("n_items"),
        forwards=r.integer("forwards"), neurons=r.texts("neurons"), base=_numbers(r, "base"),
        ablated=_numbers(r, "ablated"), effect=_numbers(r, "effect"),
        controls_summary=_by_measure(r, "controls_summary", _spread),
        controls=tuple(_set(o) for o in r.objs("controls")), per_neuron=tuple(_set(o) for o in r.objs("per_neuron")),
        per_example=tuple(_example(o) for o in r.objs("per_example")), test=r.choice("test", DepartureTest),
        sets=r.integer("sets", 0), ranked_on=r.text("ranked_on", "all"), items_from=r.text("items_from", "all"),
        alternative_rows=r.integer("alternative_rows", 0), seconds=r.num("seconds"), skn_version=r.text("skn_version", ""),
    )


# ---------------------------------------------------------------- ablation_curve.json


@dataclass(frozen=True)
class Quantiles:
    """The random sets' 5%, median and 95% of one measure's effect."""

    q05: float | None
    median: float | None
    q95: float | None

    def to_json(self) -> dict[str, object]:
        return {"q05": self.q05, "median": self.median, "q95": self.q95}


def _quantiles(obj: _Obj, measure: str) -> Quantiles | None:
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
        return {"k": self.k, "scale": self.scale, "effect": self.effect.to_json(_same),
                "ablated": self.ablated.to_json(_same), "controls_summary": self.controls_summary.to_json(_spread_json),
                "p_holm": self.p_holm.to_json(_same), "band": self.band.to_json(_quantiles_json),
                "controls": self.controls.to_json(list)}


def _point(obj: _Obj) -> CurvePoint:
    return CurvePoint(obj.opt_integer("k"), obj.num("scale"), _numbers(obj, "effect"), _numbers(obj, "ablated", False),
                      _by_measure(obj, "controls_summary", _spread), _numbers(obj, "p_holm", False),
                      _by_measure(obj, "band", _quantiles, False), _by_measure(obj, "controls", _Obj.nums, False))


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


def _departure(parent: _Obj) -> Departure | None:
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


def _entry(obj: _Obj) -> CurveEntry:
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
    config: RecordConfig
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
            "base": self.base.to_json(_same), "points": [p.to_json() for p in self.points],
            "departure": None if self.departure is None else self.departure.to_json(),
        }
        if self.curves:
            out["curves"] = [c.to_json() for c in self.curves]
        return out


def parse_curve(path: Path, content: object) -> CurveRecord:
    """The record of ablation_curve.json's `content` (read from `path`, named in errors)."""
    r = _root(path, content)
    axis = r.choice("axis", Axis)
    if axis is None:
        raise RunDirError(f"{path}: field 'axis' is missing")
    return CurveRecord(
        model=r.text("model"), metric=r.text("metric", ""), axis=axis, config=_config(r.need("config")),
        n_items=r.integer("n_items"), forwards=r.integer("forwards"), base=_numbers(r, "base", False),
        points=tuple(_point(p) for p in r.objs("points")), departure=_departure(r),
        curves=tuple(_entry(c) for c in r.objs("curves", required=False)), test=r.choice("test", DepartureTest),
        ranking=r.text("ranking", "this run's |r|"), ranked_on=r.text("ranked_on", "all"),
        items_from=r.text("items_from", "all"), correction=r.text("correction", "holm"),
        correction_family=r.text("correction_family", "each curve's grid"), alpha=r.num("alpha") or 0.05,
        sets=r.integer("sets", 0), seconds=r.num("seconds"), skn_version=r.text("skn_version", ""),
    )
