"""A whole run, owned by the library: a request in, a run directory and a `ProbeResult` out.

    request = ProbeRequest(model=ModelRequest("../shared/models/stories260K-hf"),
                           data=DataRequest(data=("examples/stories.jsonl",)), metric="mood==happy",
                           train=TrainRequest(steps=60), out="runs/stories")
    result = run_probe(request)          # exactly what `skn probe` with those options does

The policy of a run lives here and in the modules it calls: which examples (a task, files, or the bundled
items: skn.inputs.examples_choice), the bundled model's defaults (fewer prompt steps, the placeholder initialisation),
the run directory's name (skn.files.run_out), the number of threads. The CLI builds a request (skn.engine.request,
whose dataclasses hold each option's default and help text) from its options and calls `run_probe` /
`run_train`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from skn import zoo
from skn.engine.api import MetricFailure, probe, train
from skn.engine.probe_config import ProbeConfig
from skn.errors import UsageError
from skn.inputs.examples_choice import choose_examples
from skn.statistics.exemplar_store import exemplar_line
from skn.engine.fused_mlp import unsupported_reason
from skn.inputs.groups import group_summaries
from skn.inputs.metrics import parse_metric
from skn.statistics.covariates import parse_controls
from skn.models.model import LoadedModel, load_model
from skn.engine.progress import AutoProgress, ProgressSink, SilentProgress
from skn.training.prompt import PromptInit
from skn.models.quantize import Quantize, load_quantized_model
from skn.engine.request import BUNDLED_STEPS, ModelRequest, ProbeRequest, TrainRequest
from skn.files.result import ProbeResult, TrainPoint
from skn.views.console import quiet_transformers
from skn.models.hub import offline_unless_reachable, recorded_name
from skn.engine.preflight import (check_backend, check_before_training, check_controls_early, check_model_path,
                                  check_prompt_model)
from skn.files.rundir import (
    SKN_NAMES,
    EXAMPLES_FILE,
    read_prompt,
)
from skn.engine.distributed import Ranks, check_supported, discard_run, from_environment, rank_device
from skn.engine.pass_checkpoint import remove_checkpoint
from skn.files.probe_files import write_examples, write_probe_run
from skn.files.run_out import claimed_run_directory
from skn.engine.run_plan import announce_plan
from skn.engine.stage import stage
from skn.training.trainer import TrainConfig, TrainResult, with_steps_from_epochs

# ---------------------------------------------------------------- the steps of a run


def set_threads(threads: int) -> None:
    """torch's intra-op CPU threads for this process (0 = torch's default, all cores)."""
    if threads < 0:
        raise UsageError(f"--threads must not be negative, got {threads}")
    if threads:
        torch.set_num_threads(threads)


def load_requested_model(request: ModelRequest, source: str = "--model") -> LoadedModel:
    """The model of a request: the bundled one (checksums checked) unless a name is given (a local path
    named resolved in what the run writes; a cached hub model read offline when the hub cannot be reached,
    skn.models.hub); third-party progress bars hidden for this call only. `source` names where the name came from."""
    check_model_path(request.name, request.revision, source)
    with quiet_transformers(), offline_unless_reachable(request.name):
        return _load_requested_model(request)


def _load_requested_model(request: ModelRequest) -> LoadedModel:
    if request.quantize is not Quantize.NONE:
        if request.revision:
            raise UsageError(f"--revision {request.revision} with --quantize {request.quantize.value}: not supported; "
                             "download that revision and pass its folder as --model")
        name = str(zoo.verify_model()) if request.bundled else recorded_name(request.name)
        loaded = load_quantized_model(name, request.quantize, request.dtype, request.device,
                                      request.trust_remote_code and not request.bundled, request.neuron_module)
        return replace(loaded, name=zoo.BUNDLED_NAME) if request.bundled else loaded
    if request.bundled:
        folder = zoo.verify_model()
        loaded = load_model(str(folder), request.dtype, request.device, False, request.neuron_module, request.placement)
        return replace(loaded, name=zoo.BUNDLED_NAME)
    return load_model(request.name, request.dtype, request.device, request.trust_remote_code, request.neuron_module,
                      request.placement, request.revision)


def train_config_for(settings: TrainRequest, seed: int, n_train: int, bundled_model: bool) -> TrainConfig:
    """The trainer's configuration: the bundled model trains for fewer steps, from its placeholder."""
    steps = settings.steps if settings.steps is not None else (BUNDLED_STEPS if bundled_model else TrainConfig.steps)
    init = settings.prompt_init if settings.prompt_init is not None else (zoo.PLACEHOLDER if bundled_model else "")
    config = TrainConfig(
        prompt_len=settings.prompt_len, lr=settings.lr, lr_schedule=settings.lr_schedule, prompt_ema=settings.prompt_ema, steps=steps, batch_size=settings.batch_size,
        grad_accum=settings.grad_accum, eval_every=settings.eval_every, patience=settings.patience,
        seed=settings.prompt_seed if settings.prompt_seed is not None else seed,
        init=PromptInit(init), gradient_checkpointing=settings.gradient_checkpointing,
        instruction_cache_bytes=settings.instruction_cache,
    )
    return with_steps_from_epochs(config, settings.epochs, n_train) if settings.epochs > 0 else config


def _train_record(config: TrainConfig) -> dict[str, object]:
    record = asdict(config)
    record["init"] = config.init.token or "random-vocab"
    record["lr_schedule"] = config.lr_schedule.value
    return record


def _training_extra(trained: TrainResult) -> dict[str, object]:
    """run.json's record of how the prompt was trained: the step's forward, and the instruction cache's use."""
    extra: dict[str, object] = {"train_step_forward": trained.step_forward, "train_step_forward_note": trained.step_forward_note}
    if trained.instruction_cache is not None:
        extra["train_instruction_cache"] = trained.instruction_cache.to_json()
    return extra


def _history(trained: TrainResult) -> tuple[TrainPoint, ...]:
    return tuple(TrainPoint(h.step, h.train_loss, h.val_loss) for h in trained.history)


def _quiet(line: str) -> None:
    return None


Result = TypeVar("Result")


def _on_ranks(run: Callable[[ProbeRequest, ProgressSink, Callable[[str], None], Ranks, list[Path]], Result],
              request: ProbeRequest, progress: ProgressSink, notify: Callable[[str], None]) -> Result:
    """`run` in this process, or under torchrun on every rank: rank 0 alone shows progress and notices, and
    when any rank fails, every rank raises and the run directories rank 0 claimed are removed."""
    ranks = from_environment()
    if not ranks.active:
        return run(request, progress, notify, ranks, [])
    claimed: list[Path] = []
    try:
        return run(request, progress if ranks.leader else SilentProgress(), notify if ranks.leader else _quiet, ranks, claimed)
    except BaseException as err:
        ranks.fail(err)
        for out in claimed:
            discard_run(out, SKN_NAMES)
        raise


def run_probe(request: ProbeRequest, progress: ProgressSink = AutoProgress(),
              notify: Callable[[str], None] = _quiet) -> ProbeResult:
    """`skn probe` as one call: choose the examples, load the model, train a prompt unless one is given,
    probe, and write the run directory (files land as soon as each step ends). `notify` gets the
    one-line notices a person should see before the run starts (the CLI prints them). `progress` by default
    shows Rich bars in a terminal or a notebook and nothing elsewhere (skn.engine.progress.AutoProgress);
    `SilentProgress()` silences them.

    Under torchrun (skn.engine.distributed) every rank runs this; rank 0 alone shows progress and notices and
    writes the run directory, which it removes again when any rank fails."""
    return _on_ranks(_run_probe, request, progress, notify)


def probe_config_for(request: ProbeRequest) -> ProbeConfig:
    """The probe's configuration as a run resolves it: the data's template, its seed for the folds, the null
    and the pass order, and the training batch size (one --batch-size for both), so a notebook's
    `run_probe(request)` and `skn probe` with the same options are the same run."""
    probe = request.probe
    return replace(probe, template=request.data.template, holdout_seed=request.data.seed, batch_size=request.train.batch_size,
                   null=replace(probe.null, seed=request.data.seed))


def _run_probe(request: ProbeRequest, progress: ProgressSink, notify: Callable[[str], None], ranks: Ranks,
               claimed: list[Path]) -> ProbeResult:
    start = time.perf_counter()
    check_supported(ranks, request.train.resume)
    request = replace(request, model=replace(request.model, device=rank_device(ranks, request.model.device)))
    set_threads(request.threads)
    bundled = request.model.bundled
    check_backend(request.probe.backend, request.model.device)
    check_model_path(request.model.name, request.model.revision)
    with stage("reading the data"):
        chosen = choose_examples(request.data, bundled)
    if chosen.notice:
        notify(chosen.notice)
    spec = parse_metric(request.metric or chosen.default_metric)
    group_by = request.group_by or chosen.group_by
    probe_config = probe_config_for(request)
    check_before_training(chosen.split.val, spec, group_by, probe_config.holdout, probe_config.score, chosen.split.train)
    check_controls_early(None, chosen.split.val, spec, probe_config, request.train.prompt_len)
    announce_plan(request, chosen, notify)
    train_config = train_config_for(request.train, request.data.seed, len(chosen.split.train), bundled)
    given = read_prompt(Path(request.prompt)) if request.prompt else None
    with claimed_run_directory(request, ranks) as out:
        if out is not None and ranks.active:
            claimed.append(out)
        with stage("loading the model", out):
            loaded = load_requested_model(request.model)
        if any(c.needs_tokens for c in parse_controls(probe_config.control)):
            check_controls_early(loaded, chosen.split.val, spec, probe_config, request.train.prompt_len)
        if probe_config.fused_mlp and unsupported_reason(loaded):
            notify(f"--fused-mlp: {unsupported_reason(loaded)}; using the plain path (the down projection's input)")
        trained: TrainResult | None = None
        if given is not None:
            check_prompt_model(given.model, loaded.name, request.prompt, request.any_prompt_model, given.fingerprint,
                               loaded.fingerprint)
            prompt = given.prompt
            prompt_source = request.prompt
        else:
            with stage("training the prompt", out):
                trained = train(loaded, chosen.split.train, chosen.split.val, train_config, probe_config.template, out,
                                request.train.resume, progress, ranks)
            prompt = trained.prompt
            prompt_source = "trained"
        try:
            with stage("probing", out):
                result = probe(loaded, prompt, chosen.split.val, spec, probe_config, progress, chosen.split.train, out,
                               request.train.resume, ranks)
        except MetricFailure as failure:
            if out is not None and not ranks.active:  # several ranks: nothing of a failed run is kept
                write_examples(out / EXAMPLES_FILE, chosen.split.val, failure.values)
            raise
        exemplars_line = exemplar_line(result.info.extra.get("exemplars"), result.info.timings.get("exemplar_pass_s", 0.0))
        if exemplars_line:
            notify(exemplars_line)
        timings = dict(result.info.timings)
        timings["total_s"] = time.perf_counter() - start
        if trained is not None:
            timings["train_s"] = trained.seconds
        info = replace(
            result.info,
            data=chosen.data_label,
            val_data=chosen.val_label,
            n_train=len(chosen.split.train),
            prompt=prompt_source,
            seed=train_config.seed,
            train_config=_train_record(train_config) if trained is not None else None,
            train_history=_history(trained) if trained is not None else (),
            train_best_val_loss=trained.best_val_loss if trained is not None else None,
            train_best_step=trained.best_step if trained is not None else None,
            task=chosen.task,
            data_summary=chosen.summary if chosen.task else "",
            group_by=group_by,
            timings=timings,
            extra={**result.info.extra, **(_training_extra(trained) if trained is not None else {})},
        )
        groups = group_summaries(result.top_activations, result.neurons, result.examples, group_by) if group_by else None
        result = replace(result, info=info, groups=groups)
        if out is None:  # a rank other than 0: the result, no files
            return result
        with stage("writing the run directory", out):
            result = write_probe_run(out, result)
        remove_checkpoint(out)  # the run is complete: nothing left to resume
        return result


def run_train(request: ProbeRequest, progress: ProgressSink = AutoProgress(),
              notify: Callable[[str], None] = _quiet) -> tuple[TrainResult, Path]:
    """`skn train` as one call: the prompt only, written to the run directory (under torchrun by rank 0,
    the batch split over the ranks; the path returned on other ranks is the one rank 0 writes)."""
    return _on_ranks(_run_train, request, progress, notify)


def _run_train(request: ProbeRequest, progress: ProgressSink, notify: Callable[[str], None], ranks: Ranks,
               claimed: list[Path]) -> tuple[TrainResult, Path]:
    check_supported(ranks, request.train.resume)
    request = replace(request, model=replace(request.model, device=rank_device(ranks, request.model.device)))
    set_threads(request.threads)
    bundled = request.model.bundled
    check_model_path(request.model.name, request.model.revision)
    with stage("reading the data"):
        chosen = choose_examples(request.data, bundled)
    if chosen.notice:
        notify(chosen.notice)
    config = train_config_for(request.train, request.data.seed, len(chosen.split.train), bundled)
    with claimed_run_directory(request, ranks) as out:
        if out is not None and ranks.active:
            claimed.append(out)
        with stage("loading the model", out):
            loaded = load_requested_model(request.model)
        with stage("training the prompt", out):
            trained = train(loaded, chosen.split.train, chosen.split.val, config, request.data.template, out,
                            request.train.resume, progress, ranks)
    return trained, out if out is not None else Path(request.out)


__all__ = [
    "load_requested_model",
    "run_probe",
    "run_train",
    "set_threads",
    "train_config_for",
]
