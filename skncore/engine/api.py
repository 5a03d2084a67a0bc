"""The Python API: the stages of a run as functions over values, for notebooks and scripts.

    loaded = load_model("Qwen/Qwen1.5-1.8B-Chat")
    split = Split(load_examples("train.jsonl"), load_examples("val.jsonl"))
    trained = train(loaded, split.train, split.val, TrainConfig(steps=300), out=Path("RUN"))
    result = probe(loaded, trained.prompt, split.val, "loss", ProbeConfig(top_k=10))

`skn.engine.run.run_probe` strings these together exactly as `skn probe` does and writes the run directory.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import Tensor

from skn.engine.distributed import Ranks
from skn.engine.encoding import encode
from skn.engine.pass_checkpoint import PassCheckpoint, pass_checkpoint
from skn.engine.probe import statistics_pass
from skn.engine.probe_config import ExemplarsPass, ProbeConfig, Score, holdout_plan
from skn.engine.progress import ProgressSink, SilentProgress
from skn.engine.rank_pass import MetricFailure, rank_pass
from skn.engine.run_info import probe_info
from skn.errors import MetricError, UsageError
from skn.features.control import CONTROL, check_residuals, control_values, covariates_after_pass
from skn.features.feature import Controls, Feature, PassSetup
from skn.features.registry import FEATURES, checked
from skn.files.result import ProbeResult
from skn.files.rundir import PromptFile, write_prompt
from skn.inputs.data import Example
from skn.inputs.example_order import ORDER_NAME, inverse, pass_order
from skn.inputs.layout import Template, resolve_template
from skn.inputs.metrics import MetricSpec, check_metric, for_statistics, metric_before_pass, parse_metric, unscaled
from skn.models.model import LoadedModel
from skn.statistics.covariates import parse_controls
from skn.statistics.exemplar_store import ActivationStore, top_activations
from skn.statistics.folds import assign_folds
from skn.statistics.partial import check_metric_residual
from skn.statistics.statistic import Statistic
from skn.statistics.stats import STAT_DTYPE
from skn.training.trainer import TrainConfig, TrainResult, train_prompt


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
    features: Sequence[Feature[Any]] = FEATURES,
) -> ProbeResult:
    """Correlate every neuron with the metric over `examples`, rank, and read the top neurons' activations.

    With `config.score` PREDICTIVITY the neurons are ranked by Wang et al.'s predictivity instead, whose
    baseline is the mean activation over `train_examples` (two extra prompt-only passes), on all examples.

    A metric found useless after the pass (constant, NaN) raises `MetricFailure`, which keeps its values.

    With `out` (a run directory) the pass is checkpointed there every `config.checkpoint_every` batches,
    and with `resume` it continues from the checkpoint found there (skn.engine.pass_checkpoint).

    With `ranks` of several processes (skn.engine.distributed) each rank passes over its shard of `examples`;
    the moments, the null, the metric and the exemplars are merged, so every rank returns the whole result.

    `features` (skn.features): the optional parts of the probe that may run (each stays off unless `config` asks
    for it); `result.sections` holds what each concluded.

    The pass takes the examples in a seeded order that follows their content (skn.inputs.example_order), so the
    batches, and with them the within-batch null, do not depend on the file's order; every output is in
    `examples`' order.
    """
    examples, features = tuple(examples), checked(features)
    # a field metric spread less than skn.inputs.metrics.SMALL_SPREAD is scaled by a power of two for the statistics
    spec = for_statistics(parse_metric(metric) if isinstance(metric, str) else metric, examples)
    order = pass_order(examples, config.null.seed)
    back = list(inverse(order))
    try:
        result = _probe_in_pass_order(loaded, prompt, tuple(examples[i] for i in order), spec, config, progress,
                                      train_examples, out, resume, ranks, features)
    except MetricFailure as failure:
        raise MetricFailure(failure, unscaled(spec, failure.values[back])) from None
    return in_file_order(replace(result, metric=unscaled(spec, result.metric)), examples, back, config.null.seed,
                         features)


def in_file_order(result: ProbeResult, examples: tuple[Example, ...], back: Sequence[int], seed: int,
                  features: Sequence[Feature[Any]] = FEATURES) -> ProbeResult:
    """A result computed in pass order, with every per-example output back in `examples`' order
    (`back[i]`: where example i sat in the pass), each feature's section by the feature."""
    sections = {feature.name: feature.in_file_order(result.sections[feature.name], back)
                for feature in features if feature.name in result.sections}
    info = replace(result.info, extra={**result.info.extra, "pass_order": {"batches": ORDER_NAME, "seed": seed}})
    return replace(result, examples=examples, metric=result.metric[back], top_activations=result.top_activations[:, back],
                   sections=sections, info=info)



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
    features: tuple[Feature[Any], ...],
) -> ProbeResult:
    """`probe` on examples already in pass order."""
    if prompt.dim() != 2 or prompt.shape[1] != loaded.hidden_size:
        raise UsageError(f"the prompt is {tuple(prompt.shape)}, but this model needs [P, {loaded.hidden_size}]")
    prompt_len = int(prompt.shape[0])
    rows = encode(loaded, examples, config.template, prompt_len)
    plan = holdout_plan(config, len(examples))
    confirm = assign_folds(examples, plan.fraction, config.holdout_seed) if plan.on else None
    z = control_values(loaded, examples, config, prompt_len, rows)
    names = tuple(c.text for c in parse_controls(config.control))
    known = metric_before_pass(spec, examples) if spec.known_before_pass else None  # the one time it is computed
    if known is not None:
        check_metric(spec, known, examples)
        if z is not None:
            check_metric_residual(spec.text, names, z, known)
    setup = PassSetup(loaded, prompt, examples, rows, spec, config, plan, confirm, Controls(names, z), known)
    fed = {feature.name: feature.statistics(setup) for feature in features}
    checkpoint = pass_checkpoint(loaded, config, out, resume)
    if ranks.active and (checkpoint is not None or config.score is Score.PREDICTIVITY):
        raise UsageError("under torchrun --checkpoint-every, --resume and --score predictivity are not available "
                         "(one process only)")
    # the one pass's activation store (skn.statistics.exemplar_store); a checkpointed or sharded pass reads the top activations
    # in a second pass instead (the store's scratch file survives neither a restart nor another rank)
    one_pass = config.exemplars_pass is ExemplarsPass.AUTO and checkpoint is None and not ranks.active
    store = ActivationStore(loaded.sites.num_layers, prompt_len, loaded.sites.width, config.exemplar_store) if one_pass else None
    try:
        return _probe_with(setup, progress, train_examples, features, fed, store, checkpoint, ranks)
    finally:
        if store is not None:
            store.close()  # the scratch file goes


def _probe_with(
    setup: PassSetup, progress: ProgressSink, train_examples: Sequence[Example], features: tuple[Feature[Any], ...],
    fed: dict[str, tuple[Statistic, ...]], store: ActivationStore | None, checkpoint: PassCheckpoint | None, ranks: Ranks,
) -> ProbeResult:
    """The pass, the ranking, each feature's section and summary, and the top neurons' activations."""
    loaded, prompt, examples, rows, spec, config, confirm = (setup.loaded, setup.prompt, setup.examples, setup.rows,
                                                             setup.spec, setup.config, setup.confirm)
    statistics = [statistic for feature in features for statistic in fed[feature.name]]
    part = ranks.shard(len(rows), config.batch_size)
    known = setup.known
    passed = statistics_pass(loaded, prompt, rows[part], examples[part], spec, config.batch_size, config.backend, progress,
                             confirm[part] if confirm is not None else None,
                             ranks.shard_statistics(statistics, len(rows), known, config.batch_size)
                             + ([store] if store is not None else []),
                             fused_mlp=config.fused_mlp, checkpoint=checkpoint, ranks=ranks,
                             known=known[part] if known is not None else None)
    if ranks.active:  # the statistics are the whole set's; the metric and the fold mask are gathered here
        metric = ranks.gather_rows(passed.metric.to(STAT_DTYPE), len(rows), config.batch_size)
        passed = replace(passed, metric=metric, folds=None if passed.folds is None or confirm is None
                         else replace(passed.folds, confirm=confirm))
    try:
        check_metric(spec, passed.metric, examples)
        check_residuals(setup, passed.metric)
    except MetricError as err:
        raise MetricFailure(err, passed.metric) from None
    timings: dict[str, float] = {"probe_pass_s": passed.seconds}
    start = time.perf_counter()
    covariates = covariates_after_pass(setup, fed.get(CONTROL, ()), passed.metric, passed.folds)
    ranked = rank_pass(setup, passed, covariates, train_examples)
    if config.score is Score.PREDICTIVITY:
        timings["predictivity_s"] = time.perf_counter() - start
    start = time.perf_counter()
    sections = {feature.name: section for feature in features
                if (section := feature.conclude(setup, ranked, fed[feature.name])) is not None}
    summaries = dict(entry for feature in features for entry in feature.summary(setup, ranked, sections.get(feature.name)))
    timings["null_s"] = time.perf_counter() - start
    local, source = top_activations(store, loaded, prompt, rows[part], ranked.neurons, config.batch_size, progress)
    activations = ranks.gather_rows(local, len(rows), config.batch_size)
    timings["exemplar_pass_s"] = source.second_pass_s
    timings["store_read_s"] = source.read_s
    info = probe_info(loaded, spec, config, len(examples), len(ranked.neurons), timings)
    return ProbeResult(
        neurons=ranked.neurons,
        corr=ranked.corr,
        stats=passed.stats,
        top_activations=activations,
        metric=passed.metric,
        examples=examples,
        info=replace(info, extra={
            **loaded.identity(),  # the weights' fingerprint and hub revision (skn.models.model.LoadedModel.identity)
            **summaries, "exemplars": source.summary(),
            **({"probe_batch_size_after_oom": passed.batch_size} if 0 < passed.batch_size < config.batch_size else {})}),
        sections=sections,
    )


__all__ = ["MetricFailure", "control_values", "encode", "in_file_order", "probe", "train"]
