"""`skn ablate`'s files: a result made into its record (`ablation_record`, `curve_record`), written as
RUN/ablation.json / RUN/ablation_curve.json (strict JSON: null where a number is undefined), read back field
by field (`read_ablation`, `read_curve`, `read_ablation_run`), and their figures under RUN/plots.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skn.ablation.ablate import MEASURES, AblationConfig, AblationResult, ControlComparison, Effect, Measures, SetEffect
from skn.ablation.ablate_curve import Curve
from skn.ablation.ablate_record import AblationRecord, ExampleRecord, SetRecord, parse_ablation
from skn.ablation.ablate_test import DepartureTest, resolve_test
from skn.ablation.curve_record import CurveEntry, CurvePoint, CurveRecord, Departure, Quantiles, parse_curve
from skn.errors import RunDirError
from skn.views.figures import png_bytes
from skn.ablation.measure_record import ByMeasure, Numbers, ConfigRecord, Spread, numbers
from skn.views.plots import PLOTS_DIR
from skn.files.rundir import read_json, write_bytes, write_json
from skn.version import __version__

ABLATION_FILE = "ablation.json"
CURVE_FILE = "ablation_curve.json"
ABLATION_FIGURE = "ablation.png"  # under RUN/plots
CURVE_FIGURE = "ablation_curve.png"


@dataclass(frozen=True)
class Provenance:
    """Which r ranked the set and which items the ablation measured on (recorded in the JSON files)."""

    ranked_on: str  # "selection" (the holdout's selection fold) or "all"
    items_from: str  # "confirmation" (items that did not choose the neurons) or "all"


WHOLE_SET = Provenance("all", "all")


# ---------------------------------------------------------------- ablation.json


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _effect(effect: Effect) -> Numbers:
    return numbers(*(_num(effect.get(m)) for m in MEASURES))


def _set(s: SetEffect) -> SetRecord:
    return SetRecord(s.label, tuple(t.text for t in s.targets), _effect(s.effect))


def _means(m: Measures) -> Numbers:
    return numbers(_num(float(m.loss.mean())), None if m.metric is None else _num(float(m.metric.mean())),
                   None if m.correct is None else _num(float(m.correct.mean())))


def _summaries(comp: ControlComparison) -> ByMeasure[Spread | None]:
    """Per measure: the controls' mean and std, the set's p under the chosen test and under each test."""
    spreads = {m: Spread(_num(v.mean), _num(v.std), _num(v.p), _num(v.p_empirical), _num(v.p_t))
               for m, v in comp.summary.items()}
    return ByMeasure(*(spreads.get(m) for m in MEASURES))


def _config(c: AblationConfig, per_neuron: bool) -> ConfigRecord:
    return ConfigRecord(c.value.text, c.where.value, c.n_controls, c.items, c.seed, c.batch_size, c.share, c.test,
                        c.per_neuron if per_neuron else None)


def ablation_record(result: AblationResult, model: str, alternative_rows: int,
                    provenance: Provenance = WHOLE_SET) -> AblationRecord:
    """What ablation.json holds."""
    c = result.config
    comp = result.comparison
    base, ablated = result.base, comp.measures
    per_example = []
    for j, index in enumerate(result.items):
        both_metric = base.metric is not None and ablated.metric is not None
        both_correct = base.correct is not None and ablated.correct is not None
        per_example.append(ExampleRecord(
            index, _num(float(base.loss[j])), _num(float(ablated.loss[j])),
            _num(float(base.metric[j])) if both_metric and base.metric is not None else None,
            _num(float(ablated.metric[j])) if both_metric and ablated.metric is not None else None,
            bool(base.correct[j]) if both_correct and base.correct is not None else None,
            bool(ablated.correct[j]) if both_correct and ablated.correct is not None else None))
    return AblationRecord(
        model=model, metric=result.metric, config=_config(c, per_neuron=True), n_items=len(result.items),
        forwards=result.forwards, neurons=tuple(t.text for t in comp.ablated.targets), base=_means(base),
        ablated=_means(ablated), effect=_effect(comp.ablated.effect), controls_summary=_summaries(comp),
        controls=tuple(_set(s) for s in comp.controls), per_neuron=tuple(_set(s) for s in result.per_neuron),
        per_example=tuple(per_example), test=resolve_test(c.test, c.n_controls, 1), sets=result.sets,
        ranked_on=provenance.ranked_on, items_from=provenance.items_from, alternative_rows=alternative_rows,
        seconds=_num(result.seconds), skn_version=__version__,
    )


def write_ablation(run_dir: Path, result: AblationResult, model: str, alternative_rows: int,
                   provenance: Provenance = WHOLE_SET) -> Path:
    path = Path(run_dir) / ABLATION_FILE
    write_json(path, ablation_record(result, model, alternative_rows, provenance).to_json())
    return path


def _read_file(run_dir: Path, name: str, command: str) -> tuple[Path, object]:
    """A JSON file of the run directory; missing is a RunDirError saying which command writes it."""
    path = Path(run_dir) / name
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no {name} (run `{command}` first)")
    return path, read_json(path)


def read_ablation(run_dir: Path) -> AblationRecord:
    """RUN/ablation.json as written by `write_ablation` (skn.ablation.ablate_record.parse_ablation checks each field)."""
    return parse_ablation(*_read_file(run_dir, ABLATION_FILE, f"skn ablate {run_dir}"))


# ---------------------------------------------------------------- ablation_curve.json


def _curve_test(curve: Curve) -> DepartureTest:
    """The test that gave the curve's p (skn.ablation.ablate_test): its config's, resolved over its grid."""
    return resolve_test(curve.config.test, curve.config.n_controls, len(curve.points))


def _quantiles(values: Sequence[float | None]) -> Quantiles | None:
    finite = sorted(v for v in values if v is not None)
    if not finite:
        return None
    q05, median, q95 = (_num(float(np.quantile(finite, f))) for f in (0.05, 0.5, 0.95))
    return Quantiles(q05, median, q95)


def _curve_points(curve: Curve) -> tuple[tuple[CurvePoint, ...], Departure | None]:
    points = []
    for point in curve.points:
        comp = point.comparison
        controls = ByMeasure(*(tuple(_num(s.effect.get(m)) for s in comp.controls) for m in MEASURES))
        points.append(CurvePoint(
            point.k, point.scale, _effect(comp.ablated.effect), _means(comp.measures), _summaries(comp),
            numbers(*(_num(point.p_holm.get(m)) for m in MEASURES)),
            ByMeasure(*(_quantiles(controls.get(m)) for m in MEASURES)), controls))
    departure = None
    if curve.departure is not None:
        hit = curve.points[curve.departure]
        departure = Departure(hit.k, hit.scale, _num(hit.comparison.ablated.effect.loss), _num(hit.p_holm["loss"]))
    return tuple(points), departure


def curve_record(curves: Curve | Sequence[Curve], model: str, consensus: str = "",
                 provenance: Provenance = WHOLE_SET) -> CurveRecord:
    """What ablation_curve.json holds: under "curves", one entry per (value, where) with its own config,
    points and departure; per point the set's effect, every control's, their median and 5-95% band, p and
    Holm's p (over that curve's grid); the departure point (loss). The top-level "config", "points" and
    "departure" repeat the first curve's (the file's layout before several curves)."""
    group = (curves,) if isinstance(curves, Curve) else tuple(curves)
    first = group[0]
    entries = []
    for curve in group:
        points, departure = _curve_points(curve)
        entries.append(CurveEntry(curve.config.value.text, curve.config.where.value, _curve_test(curve), points, departure))
    return CurveRecord(
        model=model, metric=first.metric, axis=first.axis, config=_config(first.config, per_neuron=False),
        n_items=len(first.items), forwards=first.forwards, base=_means(first.base), points=entries[0].points,
        departure=entries[0].departure, curves=tuple(entries), test=_curve_test(first),
        ranking=f"consensus of {consensus} (each neuron at this run's best slot)" if consensus else "this run's |r|",
        ranked_on="consensus" if consensus else provenance.ranked_on, items_from=provenance.items_from,
        sets=first.sets, seconds=_num(first.seconds), skn_version=__version__,
    )


def write_curve(run_dir: Path, curves: Curve | Sequence[Curve], model: str, consensus: str = "",
                provenance: Provenance = WHOLE_SET) -> Path:
    path = Path(run_dir) / CURVE_FILE
    write_json(path, curve_record(curves, model, consensus, provenance).to_json())
    return path


def read_curve(run_dir: Path) -> CurveRecord:
    """RUN/ablation_curve.json as written by `write_curve` (skn.ablation.curve_record.parse_curve checks each field)."""
    return parse_curve(*_read_file(run_dir, CURVE_FILE, f"skn ablate {run_dir} --curve"))


# ---------------------------------------------------------------- the whole run: files, figures, typed result


@dataclass(frozen=True)
class AblationRun:
    """A run directory's ablation results: ablation.json and ablation_curve.json as typed records (None
    where the file is not there) and, from `ablate_run`, the files it wrote."""

    run_dir: Path
    ablation: AblationRecord | None = None
    curve: CurveRecord | None = None
    written: tuple[Path, ...] = ()


def read_ablation_run(run_dir: Path) -> AblationRun:
    """The twin of `read_probe_run` for `skn ablate`'s files: each of ablation.json and ablation_curve.json
    that is there, checked field by field (RunDirError naming the file and field); neither there is a
    RunDirError."""
    run_dir = Path(run_dir)
    ablation = read_ablation(run_dir) if (run_dir / ABLATION_FILE).is_file() else None
    curve = read_curve(run_dir) if (run_dir / CURVE_FILE).is_file() else None
    if ablation is None and curve is None:
        raise RunDirError(f"{run_dir}: no {ABLATION_FILE} or {CURVE_FILE} (run `skn ablate {run_dir}` first)")
    return AblationRun(run_dir, ablation, curve)


def write_ablation_figures(run_dir: Path, found: AblationRun, folder: Path | None = None) -> tuple[Path, ...]:
    """The figures of `found`'s records: FOLDER/ablation.png, FOLDER/ablation_curve.png (FOLDER: RUN/plots)."""
    from skn.ablation.ablate_view import ablation_figure, curve_figure

    where = Path(folder) if folder is not None else Path(run_dir) / PLOTS_DIR
    paths = []
    if found.ablation is not None:
        paths.append(where / ABLATION_FIGURE)
        write_bytes(paths[-1], png_bytes(ablation_figure(found.ablation)))
    if found.curve is not None:
        paths.append(where / CURVE_FIGURE)
        write_bytes(paths[-1], png_bytes(curve_figure(found.curve)))
    return tuple(paths)


__all__ = ["ABLATION_FIGURE", "ABLATION_FILE", "CURVE_FIGURE", "CURVE_FILE", "WHOLE_SET", "AblationRun", "Provenance",
           "ablation_record", "curve_record", "read_ablation", "read_ablation_run", "read_curve", "write_ablation",
           "write_ablation_figures", "write_curve"]
