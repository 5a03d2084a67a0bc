"""`skn ablate RUN` as one call: read a probe run, ablate its neurons against random controls, write
RUN/ablation.json (or a curve's RUN/ablation_curve.json) and its figure; skn.ablation.ablate_files writes and reads them.

The model comes from the caller (the CLI loads run.json's `model` unless --model is given), the prompt from
RUN/prompt.safetensors, the items from RUN/examples.jsonl, the means from RUN/stats.safetensors (`mean_x`),
the ranking from its corr with run.json's reduce, so a set larger than neurons.json can be ablated too.

Every forward's measures are kept in RUN/ablation_checkpoint.safetensors (skn.ablation.ablate_checkpoint) until
the result is written: the same command run again after a kill measures only the sets that were not done,
and ends with the numbers of an uninterrupted run.

With a holdout (the default for >= 200 validation items) the ranking is the selection fold's r, as in
neurons.json, and the items come from the confirmation fold only: the effect of the top neurons is measured
on items that did not choose them. ablation.json and ablation_curve.json record both ("ranked_on",
"items_from").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from skn.ablation.ablate import AblationConfig, AblationResult, alternatives, ablate, sample_items
from skn.ablation.stacked_forward import AblationData, prepare
from skn.ablation.intervention import Target, Value, Where, parse_targets
from skn.ablation.ablate_consensus import consensus_targets
from skn.ablation.ablate_files import (
    ABLATION_FILE,
    CURVE_FILE,
    WHOLE_SET,
    AblationRun,
    Provenance,
    read_ablation,
    read_curve,
    write_ablation,
    write_ablation_figures,
    write_curve,
)
from skn.ablation.ablate_test import cannot_depart, inert_note
from skn.ablation.ablate_checkpoint import open_checkpoint
from skn.ablation.ablate_curve import Curve, combinations, default_grid, k_curves, parse_grid, scale_curves
from skn.inputs.data import Example
from skn.errors import RunDirError, UsageError
from skn.inputs.layout import Encoded, Template
from skn.inputs.metrics import parse_metric
from skn.models.model import LoadedModel
from skn.engine.progress import ProgressSink, SilentProgress
from skn.engine.request import ModelRequest
from skn.ranking.rank import rank_neurons
from skn.files.result import ProbeResult
from skn.files.run_model import load_run_model
from skn.files.probe_read import read_probe_run, run_prompt, run_template


@dataclass(frozen=True)
class AblationRequest:
    run_dir: Path
    config: AblationConfig = AblationConfig()
    neurons: str = field(default="", metadata={  # "L.I[@k],..."; empty: the run's top `top_k` at their best slots
        "help": "Neurons to ablate (layer.index, @k = prompt slot; no @k = every slot) [default: the run's top K]."})
    top_k: int = field(default=0, metadata={
        "help": "Ablate the run's top K neurons at their best slots (0 = as many as neurons.json)."})
    consensus: str = field(default="", metadata={  # rank by its consensus (skn.ablation.ablate_consensus), not the run's r
        "help": "Rank by the consensus of a `skn compare` folder (its compare.json) instead of the run's r; each neuron "
                "at this run's best slot for it."})
    curve: bool = field(default=False, metadata={
        "help": "A dose-response curve: the top K against random sets of K over a grid of K."})
    k_grid: str = field(default="", metadata={  # empty: 1, 3, 10, ... up to every ranked neuron
        "help": "The curve's K grid [default: 1,3,10,30,... up to every neuron]."})
    scales: tuple[float, ...] = ()  # a curve over S instead: the set steered by scale:S for each S
    values: tuple[Value, ...] = ()  # a curve: one per value (x where); empty: the config's own
    wheres: tuple[Where, ...] = ()  # a curve: one per place (x value); empty: the config's own
    model: ModelRequest = ModelRequest()  # `ablate_run`: --model; the default, run.json's model (skn.files.run_model)

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
    from skn.engine.api import encode

    return encode(loaded, examples, template, prompt_len)


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
    """Say before any pass when no p can reach alpha (skn.ablation.ablate_test.cannot_depart)."""
    reason = cannot_depart(config.test, config.n_controls, family)
    if reason:
        notify(f"note: {reason}; the p-values are still measured and written, but none can say yes")


def _warn_if_inert(targets: Sequence[Target], loaded: LoadedModel, prompt_len: int, wheres: Sequence[Where],
                   notify: Callable[[str], None], label: str = "") -> None:
    """Say before any pass when neurons of the set cannot change the completion at the prompt
    (skn.ablation.ablate_test.inert_note)."""
    reason = inert_note(targets, loaded.sites.num_layers, prompt_len, wheres)
    if reason:
        notify(f"note: {label}{reason}")


def run_ablation(loaded: LoadedModel, request: AblationRequest, progress: ProgressSink = SilentProgress(),
                 notify: Callable[[str], None] = _no_notice) -> AblationResult:
    """Ablate and write RUN/ablation.json; returns the result. `notify` hears, before any pass, when the
    configuration cannot give p < alpha."""
    setup = _setup(loaded, request)
    targets = run_targets(setup.run, request.neurons, request.top_k, setup.prompt_len, request.consensus)
    _warn_if_powerless(request.config, 1, notify)
    _warn_if_inert(targets, loaded, setup.prompt_len, (request.config.where,), notify)
    checkpoint = open_checkpoint(Path(request.run_dir), setup.data, notify)
    result = ablate(setup.data, targets, setup.run.stats.mean_x, request.config, setup.items, progress, checkpoint)
    write_ablation(Path(request.run_dir), result, loaded.name, setup.alternative_rows, setup.provenance)
    checkpoint.remove()
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
        _warn_if_inert(targets, loaded, setup.prompt_len, wheres or (request.config.where,), notify)
        measure = partial(scale_curves, setup.data, targets, scales, mean_x, configs, setup.items, progress)
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
        _warn_if_inert(ranked[: grid[0]], loaded, setup.prompt_len, [c.where for c in configs], notify, f"at K = {grid[0]}, ")
        measure = partial(k_curves, setup.data, ranked, grid, mean_x, configs, setup.items, progress)
    checkpoint = open_checkpoint(Path(request.run_dir), setup.data, notify)
    curves = measure(checkpoint)
    write_curve(Path(request.run_dir), curves, loaded.name, request.consensus, setup.provenance)
    checkpoint.remove()
    return curves


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
