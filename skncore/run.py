"""A whole run, owned by the library: a request in, a run directory and a `ProbeResult` out.

    request = ProbeRequest(model=ModelRequest("../shared/models/stories260K-hf"),
                           data=DataRequest(data=("examples/stories.jsonl",)), metric="mood==happy",
                           train=TrainSettings(steps=60), out="runs/stories")
    result = run_probe(request)          # exactly what `skn probe` with those options does

The policy of a run lives here and nowhere else: which examples (a task, files, or the bundled items),
the bundled model's defaults (fewer prompt steps, the placeholder initialisation), the run directory's
name, the number of threads. The CLI builds a request (skn.request, whose dataclasses hold each option's
default and help text) from its options and calls `run_probe` / `run_train`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch

from skn import zoo
from skn.api import MetricFailure, control_values, probe, train
from skn.probe_config import ProbeConfig, Score, holdout_plan
from skn.data import Example, FieldNames, Split, load_split
from skn.errors import UsageError
from skn.exemplar_store import exemplar_line
from skn.folds import plan_holdout
from skn.fused_mlp import unsupported_reason
from skn.groups import field_values, group_summaries
from skn.memory import MemoryPlan, PlanUnavailable, Workload, advice, check_fits, plan_from_config
from skn.metrics import MetricSpec, check_metric, metric_before_pass, parse_metric
from skn.partial import check_metric_residual, parse_controls
from skn.model import LoadedModel, load_model
from skn.predictivity import binary_labels
from skn.progress import AutoProgress, ProgressSink, SilentProgress
from skn.prompt import PromptInit
from skn.quantize import Quantize, load_quantized_model
from skn.request import BUNDLED_STEPS, BUNDLED_TRAIN_SIZE, BUNDLED_VAL_SIZE, DataRequest, ModelRequest, ProbeRequest, TrainSettings
from skn.result import ProbeResult, TrainPoint
from skn.console import quiet_transformers
from skn.hub import offline_unless_reachable, recorded_name
from skn.preflight import (check_backend, check_model_path, check_prompt_model, check_python_metric,
                           check_validation_size)
from skn.rundir import (
    SKN_NAMES,
    EXAMPLES_FILE,
    PASS_CHECKPOINT_FILE,
    PROMPT_FILE,
    RUN_ID,
    TRAINING_NAMES,
    fresh_run_directory,
    prepare_run_directory,
    read_prompt,
)
from skn.distributed import Ranks, check_supported, discard_run, from_environment, rank_device
from skn.pass_checkpoint import remove_checkpoint
from skn.probe_files import write_examples, write_predictivity, write_probe_run
from skn import run_claim
from skn.stage import stage
from skn.tasks import get_task, load_task, sample
from skn.trainer import TrainConfig, TrainResult, with_steps_from_epochs
from skn.version import __version__

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
    skn.hub); third-party progress bars hidden for this call only. `source` names where the name came from."""
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


@dataclass(frozen=True)
class ChosenExamples:
    """The examples of a run and the defaults that come with them."""

    split: Split
    default_metric: str
    group_by: tuple[str, ...]
    data_label: str  # run.json's `data`
    val_label: str  # run.json's `val_data`
    summary: str  # one line for a task's run.json `data_summary` ("" for files)
    task: str = ""  # the built-in task the examples come from ("" for files and the bundled default)
    notice: str = ""  # one line to tell the user before the run starts ("" when nothing needs saying)


NO_DATA_TASK = "arithmetic"  # the paper's label-free experiment (RQ3), run when a model comes with no data


def no_data_notice(n_items: int) -> str:
    return (f"no data given: running the built-in {NO_DATA_TASK} task on {n_items} generated items; "
            "pass --data or --task for your own")


def choose_examples(request: DataRequest, bundled_model: bool) -> ChosenExamples:
    """--task NAME reads --data/--val-data in the task's format; otherwise JSONL/CSV files; with neither,
    on the bundled model, the bundled default: generated 2- and 3-digit multiplication items; with
    neither on any other model, the paper's RQ3: the arithmetic task's own generated items (1-5 digits,
    the four operations, BIG-bench's multiple-choice format, never BIG-bench's examples), with a notice."""
    no_data = not request.task and not request.data and not request.val_data
    if no_data and bundled_model:
        split = zoo.default_examples(request.train_size or BUNDLED_TRAIN_SIZE, request.val_size or BUNDLED_VAL_SIZE)
        label = "generated 2-3 digit multiplication (skn.zoo.default_examples)"
        return ChosenExamples(split, "loss", ("last_digit_shortcut", "digits"), label, label, "")
    if no_data or request.task:
        task = get_task(request.task or NO_DATA_TASK)
        loaded = load_task(task, request.data, request.val_data, request.train_size, request.val_size, request.seed)
        notice = no_data_notice(len(loaded.train) + len(loaded.val)) if no_data else ""
        return ChosenExamples(Split(loaded.train, loaded.val), task.default_metric, task.group_by,
                              ",".join(request.data) or loaded.summary, ",".join(request.val_data) or loaded.summary,
                              loaded.summary, task.name, notice)
    split = load_split(request.data, request.val_data, request.val_fraction, request.seed,
                       FieldNames(request.instruction_field, request.completion_field))
    split = Split(sample(split.train, request.train_size, "", request.seed, "training"),
                  sample(split.val, request.val_size, "", request.seed, "validation"))
    val_label = ",".join(request.val_data) or f"{request.val_fraction:g} of data (seed {request.seed})"
    return ChosenExamples(split, "loss", (), ",".join(request.data), val_label, "")


def train_config_for(settings: TrainSettings, seed: int, n_train: int, bundled_model: bool) -> TrainConfig:
    """The trainer's configuration: the bundled model trains for fewer steps, from its placeholder."""
    steps = settings.steps if settings.steps is not None else (BUNDLED_STEPS if bundled_model else TrainConfig.steps)
    init = settings.prompt_init if settings.prompt_init is not None else (zoo.PLACEHOLDER if bundled_model else "")
    config = TrainConfig(
        prompt_len=settings.prompt_len, lr=settings.lr, lr_schedule=settings.lr_schedule, steps=steps, batch_size=settings.batch_size,
        grad_accum=settings.grad_accum, eval_every=settings.eval_every, patience=settings.patience,
        seed=settings.seed if settings.seed is not None else seed,
        init=PromptInit(init), gradient_checkpointing=settings.gradient_checkpointing,
        instruction_cache_bytes=settings.instruction_cache,
    )
    return with_steps_from_epochs(config, settings.epochs, n_train) if settings.epochs > 0 else config


def plan_memory(request: ProbeRequest, chosen: ChosenExamples) -> tuple[MemoryPlan, Workload]:
    """The memory plan of a run (skn.memory) from the config and the tokenized examples; no weight loads."""
    model = request.model
    spec = parse_metric(request.metric or chosen.default_metric)
    with offline_unless_reachable(model.name):  # a cached hub model read at once when the hub cannot be reached
        return plan_from_config(
            str(zoo.default_model_path()) if model.bundled else model.name, model.trust_remote_code and not model.bundled,
            model.device, model.dtype, model.quantize, chosen.split.train + chosen.split.val, request.data.template,
            request.train.prompt_len, request.train.batch_size, training=not request.prompt,
            gradient_checkpointing=request.train.gradient_checkpointing, instruction_cache=request.train.instruction_cache,
            metric_after_pass=not spec.known_before_pass,
            null_permutations=request.probe.null.permutations,
            folds=holdout_plan(request.probe, len(chosen.split.val)).on,
            covariates=len(parse_controls(request.probe.control)), probe_examples=len(chosen.split.val),
            train_examples=len(chosen.split.train), neuron_module=model.neuron_module, revision=model.revision)


def memory_plan(request: ProbeRequest) -> MemoryPlan:
    """`skn probe --dry-run`: the plan of the run the request asks for, without loading a weight."""
    check_model_path(request.model.name, request.model.revision)
    return plan_memory(request, choose_examples(request.data, request.model.bundled))[0]


def _announce_plan(request: ProbeRequest, chosen: ChosenExamples, notify: Callable[[str], None]) -> None:
    try:
        memory, work = plan_memory(request, chosen)
    except PlanUnavailable as unavailable:  # a model built by its own code, not on the meta device
        notify(str(unavailable))
        return
    notify(memory.line())
    check_fits(memory, work)  # a run that will not fit (on CUDA, or far from it on a CPU) stops here
    text = advice(memory, work)
    if text:
        notify(text)


def run_directory(out: str, overwrite: bool = False, keep: tuple[str, ...] = (), resume: bool = False) -> Path:
    """The run directory: `out` (empty, or emptied by `overwrite`, or an unfinished run's with `resume`; see
    skn.rundir), or a fresh runs/YYYYMMDD-HHMMSS when none is given."""
    if not out:
        return fresh_run_directory(Path("runs"), time.strftime("%Y%m%d-%H%M%S"))
    return prepare_run_directory(Path(out), overwrite, keep, resume)


@contextmanager
def claimed_run_directory(request: ProbeRequest, ranks: Ranks) -> Iterator[Path | None]:
    """Rank 0's run directory (`run_directory`), claimed before it is checked and for as long as the run
    lives (skn.run_claim): a second run on the same --out is refused; None on the other ranks."""
    if not ranks.leader:
        yield None
        return
    target = Path(request.out) if request.out else run_directory("")
    with run_claim.hold(target):
        yield run_directory(str(target), request.overwrite, kept_files(request), request.train.resume)


def kept_files(request: ProbeRequest) -> tuple[str, ...]:
    """The skn files a new run may find in its --out: the training's own, when it resumes that training
    or probes with that directory's prompt, and the probe pass's checkpoint when it resumes."""
    if not request.out:
        return ()
    out = Path(request.out).resolve()
    prompt = Path(request.prompt).resolve() if request.prompt else None
    uses_own_prompt = prompt is not None and prompt in (out, out / PROMPT_FILE)
    if request.train.resume:
        return (*TRAINING_NAMES, PASS_CHECKPOINT_FILE)
    return TRAINING_NAMES if uses_own_prompt else ()


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


def check_controls_early(loaded: LoadedModel | None, examples: tuple[Example, ...], spec: MetricSpec,
                         config: ProbeConfig, prompt_len: int) -> None:
    """--control's covariates (and the metric against them, when it is known before the pass) checked
    before training: fields at once, token counts once the model's tokenizer is loaded."""
    z = control_values(loaded, examples, config, prompt_len)
    if z is not None and spec.known_before_pass:
        check_metric_residual(spec.text, [c.text for c in parse_controls(config.control)], z,
                              metric_before_pass(spec, examples))


def _check_before_training(
    examples: tuple[Example, ...], spec: MetricSpec, group_by: tuple[str, ...], holdout: float | None,
    score: Score, train_examples: tuple[Example, ...],
) -> None:
    """What can fail before a prompt is trained fails now, not after."""
    if not examples:
        raise UsageError("no validation examples to probe")
    check_validation_size(examples)
    check_python_metric(spec)
    if spec.known_before_pass:
        check_metric(spec, metric_before_pass(spec, examples), examples)
    plan_holdout(holdout, len(examples))  # a bad --holdout fails now
    if score is Score.PREDICTIVITY:  # a label and training examples
        if not spec.known_before_pass:
            raise UsageError(f"--score predictivity needs a binary metric (NAME==VALUE), not '{spec.text}'")
        binary_labels(metric_before_pass(spec, examples))
        if not train_examples:
            raise UsageError("--score predictivity needs training examples (--data) for its baseline")
    for name in group_by:
        field_values(examples, name)  # a missing group-by field fails now, naming the example


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
    shows Rich bars in a terminal or a notebook and nothing elsewhere (skn.progress.AutoProgress);
    `SilentProgress()` silences them.

    Under torchrun (skn.distributed) every rank runs this; rank 0 alone shows progress and notices and
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
    _check_before_training(chosen.split.val, spec, group_by, probe_config.holdout, probe_config.score, chosen.split.train)
    check_controls_early(None, chosen.split.val, spec, probe_config, request.train.prompt_len)
    _announce_plan(request, chosen, notify)
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
            result = write_run(out, result)
        remove_checkpoint(out)  # the run is complete: nothing left to resume
        return result


def write_run(out: Path, result: ProbeResult) -> ProbeResult:
    """Every file of a probe's result: the run directory's (skn.rundir) and, with --score predictivity, its own;
    returns the result with the run id its files carry."""
    result = write_probe_run(out, result)
    if result.predictivity is not None:
        metadata = {"model": result.info.model, "metric": result.info.metric, "skn_version": __version__,
                    RUN_ID: result.info.run_id}
        write_predictivity(out, result.predictivity, result.corr, result.neurons, Score.PREDICTIVITY.value, metadata)
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
    "ChosenExamples",
    "NO_DATA_TASK",
    "choose_examples",
    "claimed_run_directory",
    "kept_files",
    "load_requested_model",
    "memory_plan",
    "plan_memory",
    "no_data_notice",
    "run_directory",
    "run_probe",
    "run_train",
    "set_threads",
    "train_config_for",
    "write_run",
]
