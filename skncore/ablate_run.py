"""`skn ablate RUN` as one call: read a probe run, ablate its neurons against random controls, write
RUN/ablation.json (strict JSON: null where a number is undefined).

The model comes from the caller (the CLI loads run.json's `model` unless --model is given), the prompt from
RUN/prompt.safetensors, the items from RUN/examples.jsonl, the means from RUN/stats.safetensors (`mean_x`),
the ranking from its corr with run.json's reduce, so a set larger than neurons.json can be ablated too.

With a holdout (the default for >= 200 validation items) the ranking is the selection fold's r, as in
neurons.json, and the items come from the confirmation fold only: the effect of the top neurons is measured
on items that did not choose them. ablation.json and ablation_curve.json record both ("ranked_on",
"items_from").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from skn.ablate import (
    MEASURES,
    AblationConfig,
    AblationData,
    AblationResult,
    Comparison,
    Effect,
    Measures,
    SetEffect,
    alternatives,
    ablate,
    prepare,
    sample_items,
)
from skn.intervention import Target, Value, Where, parse_targets
from skn.ablate_consensus import consensus_targets
from skn.ablate_record import (
    AblationRecord,
    ByMeasure,
    CurveEntry,
    CurvePoint,
    CurveRecord,
    Departure,
    ExampleRecord,
    Numbers,
    Quantiles,
    RecordConfig,
    SetRecord,
    Spread,
    numbers,
    parse_ablation,
    parse_curve,
)
from skn.ablate_test import DepartureTest, cannot_depart, resolve_test
from skn.ablate_curve import Curve, combinations, default_grid, k_curves, parse_grid, scale_curves
from skn.data import Example
from skn.errors import RunDirError, UsageError
from skn.layout import Encoded, Template
from skn.metrics import parse_metric
from skn.model import LoadedModel
from skn.plots import PLOTS_DIR, png_bytes
from skn.progress import ProgressSink, SilentProgress
from skn.request import ModelRequest
from skn.rank import rank_neurons
from skn.result import ProbeResult
from skn.rundir import read_json, write_bytes, write_json
from skn.run_model import load_run_model
from skn.probe_files import read_probe_run, run_prompt, run_template
from skn.version import __version__

ABLATION_FILE = "ablation.json"
ABLATION_FIGURE = "ablation.png"  # under RUN/plots
CURVE_FIGURE = "ablation_curve.png"


@dataclass(frozen=True)
class AblationRequest:
    run_dir: Path
    config: AblationConfig = AblationConfig()
    neurons: str = field(default="", metadata={  # "L.I[@k],..."; empty: the run's top `top_k` at their best slots
        "help": "Neurons to ablate (layer.index, @k = prompt slot; no @k = every slot) [default: the run's top K]."})
    top_k: int = field(default=0, metadata={
        "help": "Ablate the run's top K neurons at their best slots (0 = as many as neurons.json)."})
    consensus: str = field(default="", metadata={  # rank by its consensus (skn.ablate_consensus), not the run's r
        "help": "Rank by the consensus of a `skn compare` folder (its compare.json) instead of the run's r; each neuron "
                "at this run's best slot for it."})
    curve: bool = field(default=False, metadata={
        "help": "A dose-response curve: the top K against random sets of K over a grid of K."})
    k_grid: str = field(default="", metadata={  # empty: 1, 3, 10, ... up to every ranked neuron
        "help": "The curve's K grid [default: 1,3,10,30,... up to every neuron]."})
    scales: tuple[float, ...] = ()  # a curve over S instead: the set steered by scale:S for each S
    values: tuple[Value, ...] = ()  # a curve: one per value (x where); empty: the config's own
    wheres: tuple[Where, ...] = ()  # a curve: one per place (x value); empty: the config's own
    model: ModelRequest = ModelRequest()  # `ablate_run`: --model; the default, run.json's model (skn.run_model)

    def __post_init__(self) -> None:
        if self.neurons and self.consensus:
            raise UsageError("--neurons and --consensus both choose the set: give one")
        if self.k_grid and not self.curve:
            raise UsageError("--k sets the grid of --curve; add --curve")
        if self.curve and self.scales:
            raise UsageError("--curve (over K) and --scales (over S) are two curves: give one")
        if not (self.curve or self.scales) and (len(self.values) > 1 or len(self.wheres) > 1):
            raise UsageError("several --value or --where measure one curve each: add --curve (or --scales for --where)")


def run_targets(run: ProbeResult, neurons: str, top_k: int, prompt_len: int, consensus: str = "") -> tuple[Target, ...]:
    """The set to ablate: --neurons as given, else the top K of the consensus (with --consensus: `top_k`,
    0 = the whole consensus list) or of the run, ranked as neurons.json was: on the selection fold's r
    where the run has a holdout (`ProbeResult.ranked_corr`), else on the whole set's."""
    layers, _, width = (int(s) for s in run.corr.shape)
    if neurons:
        return parse_targets(neurons, layers, prompt_len, width)
    if top_k < 0:
        raise UsageError(f"--top-k must not be negative, got {top_k}")
    if consensus:
        agreed = consensus_targets(run, Path(consensus))
        return agreed[: top_k or len(agreed)]
    reduce = run.info.reduce
    ranked = rank_neurons(run.ranked_corr, top_k or len(run.neurons), reduce) if (top_k or run.neurons) else ()
    return tuple(Target(n.layer, n.index, n.position) for n in ranked)


def _encode(loaded: LoadedModel, examples: Sequence[Example], template: Template, prompt_len: int) -> tuple[Encoded, ...]:
    from skn.api import encode

    return encode(loaded, examples, template, prompt_len)


@dataclass(frozen=True)
class Provenance:
    """Which r ranked the set and which items the ablation measured on (recorded in the JSON files)."""

    ranked_on: str  # "selection" (the holdout's selection fold) or "all"
    items_from: str  # "confirmation" (items that did not choose the neurons) or "all"


WHOLE_SET = Provenance("all", "all")


def item_pool(run: ProbeResult) -> tuple[tuple[int, ...], Provenance]:
    """The validation items an ablation draws from: with a holdout, the confirmation fold only, so the
    effect of the top neurons is measured on items that played no part in choosing them; else all."""
    if run.holdout is None:
        return tuple(range(len(run.examples))), WHOLE_SET
    confirm = run.holdout.folds.confirm
    return tuple(int(i) for i in torch.nonzero(confirm).flatten().tolist()), Provenance("selection", "confirmation")


@dataclass(frozen=True)
class _Setup:
    run: ProbeResult
    data: AblationData
    items: tuple[int, ...]
    prompt_len: int
    alternative_rows: int
    provenance: Provenance


def _setup(loaded: LoadedModel, request: AblationRequest) -> _Setup:
    run_dir = Path(request.run_dir)
    run = read_probe_run(run_dir)
    prompt = run_prompt(run_dir, run).prompt
    prompt_len = int(prompt.shape[0])
    if prompt.shape[1] != loaded.hidden_size:
        raise UsageError(f"{run_dir}: the prompt is [P, {prompt.shape[1]}], but {loaded.name} needs [P, {loaded.hidden_size}]")
    if tuple(run.stats.mean_x.shape) != (loaded.sites.num_layers, prompt_len, loaded.sites.width):
        raise RunDirError(f"{run_dir}: stats are {tuple(run.stats.mean_x.shape)}, the model has "
                          f"{loaded.sites.num_layers} layers x {loaded.sites.width} neurons and the prompt {prompt_len} slots")
    config = request.config
    pool, provenance = item_pool(run)
    items = tuple(pool[i] for i in sample_items(len(pool), config.items, config.seed))
    examples = tuple(run.examples[i] for i in items)
    template = run_template(run)
    rows = _encode(loaded, examples, template, prompt_len)
    others = alternatives(examples, run.examples)
    alt_examples = [Example(e.instruction, alt, e.meta, e.source) for e, alts in zip(examples, others or ()) for alt in alts]
    owner = [i for i, alts in enumerate(others or ()) for _ in alts]
    alt_rows = _encode(loaded, alt_examples, template, prompt_len)
    spec = parse_metric(run.info.metric or "loss")
    data = prepare(loaded, prompt, rows, examples, spec, alt_rows, owner, others is not None, config.batch_size)
    return _Setup(run, data, items, prompt_len, len(alt_rows), provenance)


def _no_notice(line: str) -> None:
    """Where a caller gives no `notify`, notices are not shown."""


def _warn_if_powerless(config: AblationConfig, family: int, notify: Callable[[str], None]) -> None:
    """Say before any pass when no p can reach alpha (skn.ablate_test.cannot_depart)."""
    reason = cannot_depart(config.test, config.n_controls, family)
    if reason:
        notify(f"note: {reason}; the p-values are still measured and written, but none can say yes")


def run_ablation(loaded: LoadedModel, request: AblationRequest, progress: ProgressSink = SilentProgress(),
                 notify: Callable[[str], None] = _no_notice) -> AblationResult:
    """Ablate and write RUN/ablation.json; returns the result. `notify` hears, before any pass, when the
    configuration cannot give p < alpha."""
    setup = _setup(loaded, request)
    targets = run_targets(setup.run, request.neurons, request.top_k, setup.prompt_len, request.consensus)
    _warn_if_powerless(request.config, 1, notify)
    result = ablate(setup.data, targets, setup.run.stats.mean_x, request.config, setup.items, progress)
    write_ablation(Path(request.run_dir), result, loaded.name, setup.alternative_rows, setup.provenance)
    return result


def run_curve(
    loaded: LoadedModel, request: AblationRequest, k_grid: str = "", scales: Sequence[float] = (),
    progress: ProgressSink = SilentProgress(), values: Sequence[Value] = (), wheres: Sequence[Where] = (),
    notify: Callable[[str], None] = _no_notice,
) -> tuple[Curve, ...]:
    """With `scales`: the chosen set (as for `run_ablation`) steered by each S; else the top K (of the run,
    or of --consensus) over a grid of K (`k_grid` "1,10,..." or the default grid up to every ranked
    neuron). One curve per (value, where) of `values` x `wheres` (empty: the config's own). Writes
    RUN/ablation_curve.json."""
    setup = _setup(loaded, request)
    run, mean_x = setup.run, setup.run.stats.mean_x
    if scales:
        if values:
            raise UsageError("--scales sets the value (scale:S): leave --value out")
        targets = run_targets(run, request.neurons, request.top_k, setup.prompt_len, request.consensus)
        configs = combinations(request.config, (), wheres)
        _warn_if_powerless(request.config, len(scales), notify)
        curves = scale_curves(setup.data, targets, scales, mean_x, configs, setup.items, progress)
    else:
        if request.neurons:
            raise UsageError("--curve ranks the run's own neurons: --neurons goes with --scales, not with a K curve")
        if request.consensus:
            ranked = consensus_targets(run, Path(request.consensus), request.run_dir)
        else:
            ranked = run_targets(run, "", int(run.corr.shape[0] * run.corr.shape[2]), setup.prompt_len)
        total = len(ranked)
        grid = parse_grid(k_grid, total) if k_grid else default_grid(total)
        configs = combinations(request.config, values, wheres)
        _warn_if_powerless(request.config, len(grid), notify)
        curves = k_curves(setup.data, ranked, grid, mean_x, configs, setup.items, progress)
    write_curve(Path(request.run_dir), curves, loaded.name, request.consensus, setup.provenance)
    return curves


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


def _summaries(comp: Comparison) -> ByMeasure[Spread | None]:
    """Per measure: the controls' mean and std, the set's p under the chosen test and under each test."""
    spreads = {m: Spread(_num(v.mean), _num(v.std), _num(v.p), _num(v.p_empirical), _num(v.p_t))
               for m, v in comp.summary.items()}
    return ByMeasure(*(spreads.get(m) for m in MEASURES))


def _config(c: AblationConfig, per_neuron: bool) -> RecordConfig:
    return RecordConfig(c.value.text, c.where.value, c.n_controls, c.items, c.seed, c.batch_size, c.share, c.test,
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
    """RUN/ablation.json as written by `write_ablation` (skn.ablate_record.parse_ablation checks each field)."""
    return parse_ablation(*_read_file(run_dir, ABLATION_FILE, f"skn ablate {run_dir}"))


# ---------------------------------------------------------------- ablation_curve.json


def _curve_test(curve: Curve) -> DepartureTest:
    """The test that gave the curve's p (skn.ablate_test): its config's, resolved over its grid."""
    return resolve_test(curve.config.test, curve.config.n_controls, len(curve.points))

CURVE_FILE = "ablation_curve.json"


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
    """RUN/ablation_curve.json as written by `write_curve` (skn.ablate_record.parse_curve checks each field)."""
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
    from skn.ablate_view import ablation_figure, curve_figure

    where = Path(folder) if folder is not None else Path(run_dir) / PLOTS_DIR
    paths = []
    if found.ablation is not None:
        paths.append(where / ABLATION_FIGURE)
        write_bytes(paths[-1], png_bytes(ablation_figure(found.ablation)))
    if found.curve is not None:
        paths.append(where / CURVE_FIGURE)
        write_bytes(paths[-1], png_bytes(curve_figure(found.curve)))
    return tuple(paths)


def ablate_run(request: AblationRequest, progress: ProgressSink = SilentProgress(),
               notify: Callable[[str], None] = _no_notice) -> AblationRun:
    """`skn ablate` as one call: load the run's model (`request.model`, by default run.json's), ablate (one
    set, or a curve with `request.curve` / `request.scales`), write RUN/ablation.json (or
    RUN/ablation_curve.json) and its figure under RUN/plots, and return the record read back."""
    run_dir = Path(request.run_dir)
    read_probe_run(run_dir)  # a missing run, or files of two runs, fail before the model loads
    loaded = load_run_model(run_dir, request.model)
    if request.curve or request.scales:
        run_curve(loaded, request, request.k_grid, request.scales, progress, request.values, request.wheres, notify)
        found = AblationRun(run_dir, curve=read_curve(run_dir))
        data = run_dir / CURVE_FILE
    else:
        run_ablation(loaded, request, progress, notify)
        found = AblationRun(run_dir, ablation=read_ablation(run_dir))
        data = run_dir / ABLATION_FILE
    return AblationRun(run_dir, found.ablation, found.curve, (data, *write_ablation_figures(run_dir, found)))
