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
from dataclasses import dataclass
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
from skn.ablate_test import cannot_depart, resolve_test
from skn.ablate_curve import Curve, combinations, default_grid, k_curves, parse_grid, scale_curves
from skn.data import Example
from skn.errors import RunDirError, UsageError
from skn.layout import Encoded, Template
from skn.metrics import parse_metric
from skn.model import LoadedModel
from skn.progress import ProgressSink, SilentProgress
from skn.rank import rank_neurons
from skn.result import ProbeResult
from skn.rundir import read_json, write_json
from skn.probe_files import read_probe_run, run_prompt, run_template
from skn.version import __version__

ABLATION_FILE = "ablation.json"


@dataclass(frozen=True)
class AblationRequest:
    run_dir: Path
    config: AblationConfig = AblationConfig()
    neurons: str = ""  # "L.I[@k],..."; empty: the run's top `top_k` at their best slots
    top_k: int = 0  # 0: as many as neurons.json holds
    consensus: str = ""  # a `skn compare` folder: rank by its consensus (skn.ablate_consensus), not the run's r

    def __post_init__(self) -> None:
        if self.neurons and self.consensus:
            raise UsageError("--neurons and --consensus both choose the set: give one")


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


def _effect(effect: Effect) -> dict[str, float | None]:
    return {m: _num(effect.get(m)) for m in MEASURES}


def _set(s: SetEffect) -> dict[str, object]:
    return {"label": s.label, "neurons": [t.text for t in s.targets], "effect": _effect(s.effect)}


def _means(m: Measures) -> dict[str, float | None]:
    return {
        "loss": _num(float(m.loss.mean())),
        "metric": None if m.metric is None else _num(float(m.metric.mean())),
        "accuracy": None if m.correct is None else _num(float(m.correct.mean())),
    }


def _summaries(comp: Comparison) -> dict[str, dict[str, float | None]]:
    """Per measure: the controls' mean and std, the set's p under the chosen test and under each test."""
    return {m: {"mean": _num(v.mean), "std": _num(v.std), "p": _num(v.p), "p_empirical": _num(v.p_empirical),
                "p_t": _num(v.p_t)} for m, v in comp.summary.items()}


def ablation_record(result: AblationResult, model: str, alternative_rows: int,
                    provenance: Provenance = WHOLE_SET) -> dict[str, object]:
    """The content of ablation.json."""
    c = result.config
    comp = result.comparison
    base, ablated = result.base, comp.measures
    per_example = []
    for j, index in enumerate(result.items):
        row: dict[str, object] = {"index": index, "loss": _num(float(base.loss[j])), "loss_ablated": _num(float(ablated.loss[j]))}
        if base.metric is not None and ablated.metric is not None:
            row["metric"], row["metric_ablated"] = _num(float(base.metric[j])), _num(float(ablated.metric[j]))
        if base.correct is not None and ablated.correct is not None:
            row["correct"], row["correct_ablated"] = bool(base.correct[j]), bool(ablated.correct[j])
        per_example.append(row)
    return {
        "skn_version": __version__,
        "model": model,
        "metric": result.metric,
        "config": {"value": c.value.text, "where": c.where.value, "controls": c.n_controls, "per_neuron": c.per_neuron,
                   "items": c.items, "seed": c.seed, "batch_size": c.batch_size, "share": c.share, "test": c.test.value},
        "test": resolve_test(c.test, c.n_controls, 1).value,
        "n_items": len(result.items), "sets": result.sets,
        "ranked_on": provenance.ranked_on, "items_from": provenance.items_from,
        "alternative_rows": alternative_rows,
        "forwards": result.forwards,
        "seconds": _num(result.seconds),
        "neurons": [t.text for t in comp.ablated.targets],
        "base": _means(base),
        "ablated": _means(ablated),
        "effect": _effect(comp.ablated.effect),
        "controls_summary": _summaries(comp),
        "controls": [_set(s) for s in comp.controls],
        "per_neuron": [_set(s) for s in result.per_neuron],
        "per_example": per_example,
    }


def write_ablation(run_dir: Path, result: AblationResult, model: str, alternative_rows: int,
                   provenance: Provenance = WHOLE_SET) -> Path:
    path = Path(run_dir) / ABLATION_FILE
    write_json(path, ablation_record(result, model, alternative_rows, provenance))
    return path


def _read_record(run_dir: Path, name: str, keys: set[str], what: str, command: str) -> dict[str, object]:
    """A JSON record of the run directory that must hold `keys`; missing or malformed is a RunDirError."""
    path = Path(run_dir) / name
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no {name} (run `{command}` first)")
    record = read_json(path)
    if not isinstance(record, dict) or not keys <= set(record):
        raise RunDirError(f"{path}: not an {what}")
    return record


def read_ablation(run_dir: Path) -> dict[str, object]:
    """RUN/ablation.json as written by `write_ablation`."""
    return _read_record(run_dir, ABLATION_FILE, {"effect", "controls", "per_neuron", "config"}, "ablation record",
                        f"skn ablate {run_dir}")


# ---------------------------------------------------------------- ablation_curve.json


def _curve_test(curve: Curve) -> str:
    """The test that gave the curve's p (skn.ablate_test): its config's, resolved over its grid."""
    return resolve_test(curve.config.test, curve.config.n_controls, len(curve.points)).value

CURVE_FILE = "ablation_curve.json"


def _curve_points(curve: Curve) -> tuple[list[dict[str, object]], dict[str, object] | None]:
    points: list[dict[str, object]] = []
    for point in curve.points:
        comp = point.comparison
        controls = {m: [_num(s.effect.get(m)) for s in comp.controls] for m in MEASURES}
        band: dict[str, object] = {}
        for m, values in controls.items():
            finite = sorted(v for v in values if v is not None)
            band[m] = None if not finite else {q: _num(float(np.quantile(finite, f))) for q, f in (("q05", 0.05), ("median", 0.5), ("q95", 0.95))}
        points.append({
            "k": point.k, "scale": point.scale, "effect": _effect(comp.ablated.effect),
            "ablated": _means(comp.measures),
            "controls_summary": _summaries(comp),
            "p_holm": {m: _num(v) for m, v in point.p_holm.items()},
            "band": band, "controls": controls,
        })
    departure: dict[str, object] | None = None
    if curve.departure is not None:
        hit = curve.points[curve.departure]
        departure = {"k": hit.k, "scale": hit.scale, "effect_loss": _num(hit.comparison.ablated.effect.loss),
                     "p_holm": _num(hit.p_holm["loss"])}
    return points, departure


def curve_record(curves: Curve | Sequence[Curve], model: str, consensus: str = "",
                 provenance: Provenance = WHOLE_SET) -> dict[str, object]:
    """The content of ablation_curve.json: under "curves", one entry per (value, where) with its own config,
    points and departure; per point the set's effect, every control's, their median and 5-95% band, p and
    Holm's p (over that curve's grid); the departure point (loss). The top-level "config", "points" and
    "departure" repeat the first curve's (the file's layout before several curves)."""
    group = (curves,) if isinstance(curves, Curve) else tuple(curves)
    first = group[0]
    entries = []
    for curve in group:
        points, departure = _curve_points(curve)
        entries.append({"config": {"value": curve.config.value.text, "where": curve.config.where.value},
                        "test": _curve_test(curve), "points": points, "departure": departure})
    c = first.config
    return {
        "skn_version": __version__, "model": model, "metric": first.metric, "axis": first.axis.value,
        "config": {"value": c.value.text, "where": c.where.value, "controls": c.n_controls, "items": c.items,
                   "seed": c.seed, "batch_size": c.batch_size, "share": c.share, "test": c.test.value},
        "test": _curve_test(first),
        "ranking": f"consensus of {consensus} (each neuron at this run's best slot)" if consensus else "this run's |r|",
        "ranked_on": "consensus" if consensus else provenance.ranked_on, "items_from": provenance.items_from,
        "correction": "holm", "correction_family": "each curve's grid", "alpha": 0.05, "n_items": len(first.items),
        "forwards": first.forwards, "sets": first.sets,
        "seconds": _num(first.seconds), "base": _means(first.base), "points": entries[0]["points"],
        "departure": entries[0]["departure"], "curves": entries,
    }


def write_curve(run_dir: Path, curves: Curve | Sequence[Curve], model: str, consensus: str = "",
                provenance: Provenance = WHOLE_SET) -> Path:
    path = Path(run_dir) / CURVE_FILE
    write_json(path, curve_record(curves, model, consensus, provenance))
    return path


def read_curve(run_dir: Path) -> dict[str, object]:
    """RUN/ablation_curve.json as written by `write_curve`."""
    return _read_record(run_dir, CURVE_FILE, {"points", "axis", "config"}, "ablation curve record",
                        f"skn ablate {run_dir} --curve")
