"""The Python API: the stages of a run as functions over values, for notebooks and scripts.

    loaded = load_model("Qwen/Qwen1.5-1.8B-Chat")
    split = Split(load_examples("train.jsonl"), load_examples("val.jsonl"))
    trained = train(loaded, split.train, split.val, TrainConfig(steps=300), out=Path("RUN"))
    result = probe(loaded, trained.prompt, split.val, "loss", ProbeConfig(top_k=10))

`skn.engine.run.run_probe` strings these together exactly as `skn probe` does and writes the run directory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from skn.inputs.data import Example
from skn.inputs.example_order import ORDER_NAME, inverse, pass_order
from skn.errors import MetricError, UsageError
from skn.statistics.exemplar_store import ActivationStore, top_activations
from skn.statistics.folds import HoldoutPlan, assign_folds
from skn.ranking.holdout import HoldoutResult, rank_with_holdout
from skn.inputs.layout import Encoded, Template, encode_all, resolve_template
from skn.inputs.metrics import MetricSpec, check_metric, for_statistics, metric_before_pass, parse_metric, unscaled
from skn.models.model import LoadedModel
from skn.engine.distributed import Ranks
from skn.engine.pass_checkpoint import PassCheckpoint, pass_checkpoint
from skn.statistics.null import NullAccumulator, SelectedRows
from skn.statistics.null_verdict import null_result
from skn.statistics.covariate_moments import CovariateAccumulator
from skn.statistics.covariates import check_controls, covariate_values, parse_controls
from skn.statistics.partial import (CovariateStats, FoldCovariates, PartialResult, check_metric_residual, covariate_r, covariate_stats,
                                    merge_covariates, partial_correlation)
from skn.statistics.predictivity import PredictivityCounts, binary_labels, predictivity_counts, rank_by_predictivity
from skn.engine.probe import statistics_pass
from skn.engine.probe_config import ExemplarsPass, ProbeConfig, Score, holdout_plan
from skn.engine.progress import ProgressSink, SilentProgress
from skn.ranking.rank import rank_neurons
from skn.files.result import ProbeResult
from skn.files.rundir import PromptFile, write_prompt
from skn.engine.run_info import null_summary, probe_info, with_passing
from skn.statistics.scratch import ROW_BUFFER_BYTES
from skn.statistics.statistic import Statistic
from skn.statistics.stats import STAT_DTYPE, correlation
from skn.training.trainer import TrainConfig, TrainResult, train_prompt


class MetricFailure(MetricError):
    """A metric found useless after the pass (constant, NaN); `values` keeps what was computed."""

    def __init__(self, error: MetricError, values: Tensor) -> None:
        super().__init__(str(error))
        self.values = values


def _max_length(loaded: LoadedModel) -> int:
    config = getattr(loaded.model, "config", None)
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 0


def encode(loaded: LoadedModel, examples: Sequence[Example], template: Template, prompt_len: int) -> tuple[Encoded, ...]:
    """Token ids of the examples under the sequence layout (see skn.inputs.layout)."""
    return encode_all(loaded.tokenizer, examples, template, _max_length(loaded), prompt_len)


def train(
    loaded: LoadedModel,
    train_examples: Sequence[Example],
    val_examples: Sequence[Example],
    config: TrainConfig = TrainConfig(),
    template: Template = Template.AUTO,
    out: Path | None = None,
    resume: bool = False,
    progress: ProgressSink = SilentProgress(),
    ranks: Ranks = Ranks(),
) -> TrainResult:
    """Train a soft prompt; with `out`, write `prompt.safetensors` there (and checkpoints for --resume).
    With `ranks` of several processes each batch is split over them (skn.engine.distributed)."""
    train_rows = encode(loaded, train_examples, template, config.prompt_len)
    val_rows = encode(loaded, val_examples, template, config.prompt_len)
    result = train_prompt(loaded, train_rows, val_rows, config, out, resume, progress, ranks)
    if out is not None:
        write_prompt(out, PromptFile(result.prompt, loaded.name, resolve_template(template, loaded.tokenizer).value,
                                     loaded.fingerprint))
    return result


def control_values(loaded: LoadedModel | None, examples: Sequence[Example], config: ProbeConfig, prompt_len: int,
                   rows: Sequence[Encoded] | None = None) -> Tensor | None:
    """[N, q] the covariates of `config.control` on `examples` (None without), checked: none constant, none
    collinear with the others, on all examples and on each holdout fold. The token counts need the model's
    tokenizer (`loaded`) or the encoded `rows`."""
    covariates = parse_controls(config.control)
    if not covariates:
        return None
    if rows is None and any(c.needs_tokens for c in covariates):
        if loaded is None:
            return None  # checked again once the model is loaded
        rows = encode(loaded, examples, config.template, prompt_len)
    z = covariate_values(covariates, examples, rows)
    plan = holdout_plan(config, len(examples))
    check_controls([c.text for c in covariates], z, assign_folds(examples, plan.fraction, config.holdout_seed) if plan.on else None)
    return z


def probe(
    loaded: LoadedModel,
    prompt: Tensor,
    examples: Sequence[Example],
    metric: str | MetricSpec,
    config: ProbeConfig = ProbeConfig(),
    progress: ProgressSink = SilentProgress(),
    train_examples: Sequence[Example] = (),
    out: Path | None = None,
    resume: bool = False,
    ranks: Ranks = Ranks(),
) -> ProbeResult:
    """Correlate every neuron with the metric over `examples`, rank, and read the top neurons' activations.

    With `config.score` PREDICTIVITY the neurons are ranked by Wang et al.'s predictivity instead, whose
    baseline is the mean activation over `train_examples` (two extra prompt-only passes), on all examples.

    A metric found useless after the pass (constant, NaN) raises `MetricFailure`, which keeps its values.

    With `out` (a run directory) the pass is checkpointed there every `config.checkpoint_every` batches,
    and with `resume` it continues from the checkpoint found there (skn.engine.pass_checkpoint).

    With `ranks` of several processes (skn.engine.distributed) each rank passes over its shard of `examples`;
    the moments, the null, the metric and the exemplars are merged, so every rank returns the whole result.

    The pass takes the examples in a seeded order that follows their content (skn.inputs.example_order), so the
    batches, and with them the within-batch null, do not depend on the file's order; every output is in
    `examples`' order.
    """
    examples = tuple(examples)
    # a field metric spread less than skn.inputs.metrics.SMALL_SPREAD is scaled by a power of two for the statistics
    spec = for_statistics(parse_metric(metric) if isinstance(metric, str) else metric, examples)
    order = pass_order(examples, config.null.seed)
    back = list(inverse(order))
    try:
        result = _probe_in_pass_order(loaded, prompt, tuple(examples[i] for i in order), spec, config, progress,
                                      train_examples, out, resume, ranks)
    except MetricFailure as failure:
        raise MetricFailure(failure, unscaled(spec, failure.values[back])) from None
    return in_file_order(replace(result, metric=unscaled(spec, result.metric)), examples, back, config.null.seed)


def in_file_order(result: ProbeResult, examples: tuple[Example, ...], back: Sequence[int], seed: int) -> ProbeResult:
    """A result computed in pass order, with every per-example output back in `examples`' order
    (`back[i]`: where example i sat in the pass)."""
    holdout = result.holdout
    if holdout is not None:
        folds = replace(holdout.folds, confirm=holdout.folds.confirm[back])
        holdout = replace(holdout, folds=folds)
    info = replace(result.info, extra={**result.info.extra, "pass_order": {"batches": ORDER_NAME, "seed": seed}})
    return replace(result, examples=examples, metric=result.metric[back], top_activations=result.top_activations[:, back],
                   holdout=holdout, info=info)


def _probe_in_pass_order(
    loaded: LoadedModel,
    prompt: Tensor,
    examples: tuple[Example, ...],
    spec: MetricSpec,
    config: ProbeConfig,
    progress: ProgressSink,
    train_examples: Sequence[Example],
    out: Path | None,
    resume: bool,
    ranks: Ranks,
) -> ProbeResult:
    """`probe` on examples already in pass order."""
    if prompt.dim() != 2 or prompt.shape[1] != loaded.hidden_size:
        raise UsageError(f"the prompt is {tuple(prompt.shape)}, but this model needs [P, {loaded.hidden_size}]")
    prompt_len = int(prompt.shape[0])
    rows = encode(loaded, examples, config.template, prompt_len)
    plan = holdout_plan(config, len(examples))
    confirm = assign_folds(examples, plan.fraction, config.holdout_seed) if plan.on else None
    sites = loaded.sites
    z = control_values(loaded, examples, config, prompt_len, rows)
    names = tuple(c.text for c in parse_controls(config.control))
    if z is not None and spec.known_before_pass:
        check_metric_residual(spec.text, names, z, metric_before_pass(spec, examples))
    ranked_z = z if z is None or confirm is None else z[~confirm]
    # on a CPU the null collects rows before each product (skn.statistics.null.buffer_rows); a GPU's memory needs no buffer
    null_buffer = ROW_BUFFER_BYTES if loaded.device.type == "cpu" else 0
    nulls = ([NullAccumulator(sites.num_layers, prompt_len, sites.width, config.null, loaded.device, ranked_z, null_buffer)]
             if config.null.permutations > 0 else [])
    # with a holdout the null is that of the selection fold, which ranks the neurons
    statistics: list[Statistic] = [SelectedRows(n, ~confirm) for n in nulls] if confirm is not None else list(nulls)
    comoments = (CovariateAccumulator(z, confirm.long() if confirm is not None else torch.zeros(len(examples), dtype=torch.long),
                                      2 if confirm is not None else 1, sites.num_layers, prompt_len, sites.width, loaded.device)
                 if z is not None else None)
    if comoments is not None:
        statistics.append(comoments)
    checkpoint = pass_checkpoint(loaded, config, out, resume)
    if ranks.active and (checkpoint is not None or config.score is Score.PREDICTIVITY):
        raise UsageError("under torchrun --checkpoint-every, --resume and --score predictivity are not available "
                         "(one process only)")
    # the one pass's activation store (skn.statistics.exemplar_store); a checkpointed or sharded pass reads the top activations
    # in a second pass instead (the store's scratch file survives neither a restart nor another rank)
    one_pass = config.exemplars_pass is ExemplarsPass.AUTO and checkpoint is None and not ranks.active
    store = ActivationStore(sites.num_layers, prompt_len, sites.width, config.exemplar_store) if one_pass else None
    try:
        return _probe_with(loaded, prompt, examples, rows, spec, config, progress, train_examples, confirm, plan,
                           nulls, statistics, store, checkpoint, ranks, Controls(names, z, comoments))
    finally:
        if store is not None:
            store.close()  # the scratch file goes


@dataclass(frozen=True)
class Controls:
    """The covariates of --control: their names, values [N, q] and the pass's co-moments with them (None without)."""

    names: tuple[str, ...]
    values: Tensor | None
    comoments: CovariateAccumulator | None


def _probe_with(
    loaded: LoadedModel, prompt: Tensor, examples: tuple[Example, ...], rows: tuple[Encoded, ...], spec: MetricSpec,
    config: ProbeConfig, progress: ProgressSink, train_examples: Sequence[Example], confirm: Tensor | None,
    plan: HoldoutPlan, nulls: list[NullAccumulator], statistics: list[Statistic], store: ActivationStore | None,
    checkpoint: PassCheckpoint | None, ranks: Ranks, controls: Controls,
) -> ProbeResult:
    prompt_len = int(prompt.shape[0])
    names, z, comoments = controls.names, controls.values, controls.comoments
    part = ranks.shard(len(rows), config.batch_size)
    known_all = metric_before_pass(spec, examples) if spec.known_before_pass and ranks.active else None
    passed = statistics_pass(loaded, prompt, rows[part], examples[part], spec, config.batch_size, config.backend, progress,
                             confirm[part] if confirm is not None else None,
                             ranks.shard_statistics(statistics, len(rows), known_all, config.batch_size)
                             + ([store] if store is not None else []),
                             fused_mlp=config.fused_mlp, checkpoint=checkpoint, ranks=ranks)
    if ranks.active:  # the statistics are the whole set's; the metric and the fold mask are gathered here
        metric = ranks.gather_rows(passed.metric.to(STAT_DTYPE), len(rows), config.batch_size)
        passed = replace(passed, metric=metric, folds=None if passed.folds is None or confirm is None
                         else replace(passed.folds, confirm=confirm))
    try:
        check_metric(spec, passed.metric, examples)
        if z is not None:
            check_metric_residual(spec.text, names, z, passed.metric)
            if confirm is not None:
                check_metric_residual(spec.text, names, z[~confirm], passed.metric[~confirm], "selection fold")
                check_metric_residual(spec.text, names, z[confirm], passed.metric[confirm], "confirmation fold")
    except MetricError as err:
        raise MetricFailure(err, passed.metric) from None
    ranked_cov: CovariateStats | None = None
    fold_cov: FoldCovariates | None = None
    full_cov: CovariateStats | None = None
    if z is not None and comoments is not None:
        y = passed.metric
        if confirm is not None and passed.folds is not None:
            selection = covariate_stats(names, z[~confirm], y[~confirm], comoments.fold_xz(0))
            confirmation = covariate_stats(names, z[confirm], y[confirm], comoments.fold_xz(1))
            full_cov = merge_covariates(selection, confirmation, passed.folds.selection, passed.folds.confirmation, z, y)
            fold_cov, ranked_cov = FoldCovariates(selection, confirmation, full_cov), selection
        else:
            full_cov = ranked_cov = covariate_stats(names, z, y, comoments.fold_xz(0))
    holdout: HoldoutResult | None = None
    counts: PredictivityCounts | None = None
    timings: dict[str, float] = {"probe_pass_s": passed.seconds}
    if config.score is Score.PREDICTIVITY:
        start = time.perf_counter()
        labels = binary_labels(passed.metric)
        train_rows = encode(loaded, tuple(train_examples), config.template, prompt_len)
        counts = predictivity_counts(loaded, prompt, train_rows, rows, labels, config.batch_size)
        corr = correlation(passed.stats)
        neurons = rank_by_predictivity(counts, corr, config.top_k)
        timings["predictivity_s"] = time.perf_counter() - start
    elif passed.folds is not None:
        ranked = rank_with_holdout(passed.folds, config.top_k, config.reduce, plan.fraction, config.holdout_seed, fold_cov)
        corr, neurons, holdout = ranked.corr, ranked.neurons, ranked.holdout
    else:
        corr = correlation(passed.stats) if full_cov is None else partial_correlation(passed.stats, full_cov)
        neurons = rank_neurons(corr, config.top_k, config.reduce)
    check_some_finite(corr, passed.stats.m2_y, passed.metric)
    start = time.perf_counter()
    ranked_stats = passed.folds.selection if passed.folds is not None and counts is None else passed.stats
    null_state = nulls[0].snapshot() if nulls else None
    null = (null_result(null_state, ranked_stats, neurons, config.reduce, config.null.alpha, ranked_cov)
            if null_state is not None else None)
    partial: PartialResult | None = None
    if full_cov is not None:
        raw = correlation(ranked_stats)
        partial = PartialResult(names, covariate_r(full_cov, passed.stats.m2_y), raw,
                                tuple(float(raw[n.layer, n.position, n.index]) for n in neurons))
    timings["null_s"] = time.perf_counter() - start
    local, source = top_activations(store, loaded, prompt, rows[part], neurons, config.batch_size, progress)
    activations = ranks.gather_rows(local, len(rows), config.batch_size)
    timings["exemplar_pass_s"] = source.second_pass_s
    timings["store_read_s"] = source.read_s
    return with_passing(ProbeResult(
        neurons=neurons,
        corr=corr,
        stats=passed.stats,
        top_activations=activations,
        metric=passed.metric,
        examples=examples,
        info=replace(
            probe_info(loaded, spec, config, len(examples), len(neurons), timings),
            extra={**loaded.identity(),  # the weights' fingerprint and hub revision (skn.models.model.LoadedModel.identity)
                   "holdout": {**holdout.summary(), "note": plan.note} if holdout is not None
                   else {"fraction": 0.0, "note": plan.note},
                   "null": null_summary(null), "exemplars": source.summary(),
                   **({"probe_batch_size_after_oom": passed.batch_size} if 0 < passed.batch_size < config.batch_size else {}),
                   **({"control": partial.summary()} if partial is not None else {})},
        ),
        holdout=holdout,
        predictivity=counts,
        null=null,
        partial=partial,
    ))


def check_some_finite(corr: Tensor, m2_y: float, metric: Tensor) -> None:
    """A probe in which no correlation is a number has found nothing: say why instead of ranking NaNs."""
    if bool(torch.isfinite(corr).any()):
        return
    if not math.isfinite(m2_y):
        why = (f"the metric's spread overflows float64 (|values| up to {float(metric.abs().max()):.3g}); "
               "rescale the metric (e.g. a log or z-score)")
    else:
        why = "every neuron is constant or non-finite over the validation examples"
    raise MetricFailure(MetricError(f"no neuron has a finite correlation with the metric: {why}"), metric)
