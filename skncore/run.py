"""A whole run, owned by the library: a request in, a run directory and a `ProbeResult` out.

    request = ProbeRequest(model=ModelRequest("../shared/models/stories260K-hf"),
                           data=DataRequest(data=("examples/stories.jsonl",)), metric="mood==happy",
                           train=TrainSettings(steps=60), out="runs/stories")
    result = run_probe(request)          # exactly what `skn probe` with those options does

The policy of a run lives here and nowhere else: which examples (a task, files, or the bundled items),
the bundled model's defaults (fewer prompt steps, the placeholder initialisation), the run directory's
name, the number of threads. The CLI builds a request from its options, whose defaults and help texts
it reads from these dataclasses (`default_of`, `help_of`), and calls `run_probe` / `run_train`.
"""

from __future__ import annotations

import time
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from skn import zoo
from skn.api import MetricFailure, ProbeConfig, probe, train
from skn.checks import at_least, between, positive
from skn.data import Example, FieldNames, Split, load_split
from skn.errors import UsageError
from skn.groups import field_values, group_summaries
from skn.layout import Template
from skn.metrics import MetricSpec, check_metric, metric_before_pass, parse_metric
from skn.model import DType, LoadedModel, load_model
from skn.progress import ProgressSink, SilentProgress
from skn.prompt import PromptInit
from skn.result import ProbeResult, TrainPoint
from skn.rundir import EXAMPLES_FILE, read_prompt, write_examples, write_probe_run
from skn.tasks import get_task, load_task, sample
from skn.trainer import TrainConfig, TrainResult, with_steps_from_epochs

BUNDLED_STEPS = 50  # prompt steps on the bundled model: the whole run in well under a minute on 2 CPU cores
BUNDLED_TRAIN_SIZE = 256
BUNDLED_VAL_SIZE = 256


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class ModelRequest:
    """Which model, and how to load it. An empty name is the bundled model (skn.zoo)."""

    name: str = field(default="", metadata=_help("Hugging Face hub id or local folder of a causal LM [default: the small model skn ships]."))
    dtype: DType = field(default=DType.AUTO, metadata=_help("auto: float32 on CPU, bfloat16 (or float16) on GPU."))
    device: str = field(default="auto", metadata=_help("auto, cpu, cuda, cuda:1, mps ..."))
    trust_remote_code: bool = field(default=False, metadata=_help("Run the model repository's own code (off unless asked)."))
    neuron_module: str = field(default="", metadata=_help(
        "Module whose input is the neuron activation, {i} = layer, e.g. 'model.layers.{i}.mlp.down_proj'."))

    @property
    def bundled(self) -> bool:
        return not self.name


@dataclass(frozen=True)
class DataRequest:
    """Which examples: a built-in task, JSONL/CSV files, or (no files, bundled model) the bundled items."""

    data: tuple[str, ...] = field(default=(), metadata=_help("Training examples: .jsonl, .csv or hf:NAME[:SPLIT] (repeatable)."))
    val_data: tuple[str, ...] = field(default=(), metadata=_help("Validation examples (default: a --val-fraction of --data)."))
    val_fraction: float = field(default=0.2, metadata=_help("Share of --data held out when no --val-data is given."))
    instruction_field: str = field(default="instruction", metadata=_help("The field holding the instruction."))
    completion_field: str = field(default="completion", metadata=_help("The field holding the completion."))
    template: Template = field(default=Template.AUTO, metadata=_help("auto = the chat template when the tokenizer has one."))
    seed: int = field(default=0, metadata=_help("Seeds the split, the prompt initialisation and the batch order."))
    task: str = field(default="", metadata=_help("A built-in task (see `skn tasks`): reads --data/--val-data in its format."))
    train_size: int | None = field(default=None, metadata=_help("Sample this many training examples (seeded; stratified for tasks)."))
    val_size: int | None = field(default=None, metadata=_help("Sample this many validation examples (seeded; stratified for tasks)."))

    def __post_init__(self) -> None:
        between("--val-fraction", self.val_fraction, 0.0, 1.0)
        for flag, size in (("--train-size", self.train_size), ("--val-size", self.val_size)):
            if size is not None:
                at_least(flag, size, 1)


@dataclass(frozen=True)
class TrainSettings:
    """The prompt training a run asks for; `steps` and `prompt_init` left as None take the model's
    defaults (200 steps from random vocabulary tokens; 50 from the placeholder on the bundled model)."""

    prompt_len: int = field(default=TrainConfig.prompt_len, metadata=_help("Number of soft-prompt vectors P."))
    steps: int | None = field(default=None, metadata=_help(
        f"Optimiser steps (ignored with --epochs) [default: {TrainConfig.steps}; {BUNDLED_STEPS} on the bundled model]."))
    epochs: float = field(default=0.0, metadata=_help("Train for this many passes over the data instead of --steps."))
    lr: float = field(default=TrainConfig.lr, metadata=_help("AdamW learning rate."))
    batch_size: int = field(default=TrainConfig.batch_size, metadata=_help("Examples per batch (training and probing)."))
    grad_accum: int = field(default=TrainConfig.grad_accum, metadata=_help("Micro-batches per optimiser step."))
    eval_every: int = field(default=TrainConfig.eval_every, metadata=_help("Steps between validation-loss checks."))
    patience: int = field(default=TrainConfig.patience, metadata=_help("Stop after this many checks without gain (0 = never)."))
    prompt_init: str | None = field(default=None, metadata=_help(
        "Start every vector from this token's embedding [default: random vocabulary tokens; the placeholder on the bundled model]."))
    gradient_checkpointing: bool = field(default=False, metadata=_help("Trade compute for memory on small GPUs."))
    resume: bool = field(default=False, metadata=_help("Continue the training checkpointed in --out."))

    def __post_init__(self) -> None:
        for flag, value in (("--prompt-len", self.prompt_len), ("--batch-size", self.batch_size),
                            ("--grad-accum", self.grad_accum), ("--eval-every", self.eval_every)):
            at_least(flag, value, 1)
        if self.steps is not None:
            at_least("--steps", self.steps, 1)
        at_least("--epochs", self.epochs, 0.0)
        at_least("--patience", self.patience, 0)
        positive("--lr", self.lr)


@dataclass(frozen=True)
class ProbeRequest:
    """Everything `skn probe` is asked to do."""

    model: ModelRequest = ModelRequest()
    data: DataRequest = DataRequest()
    train: TrainSettings = TrainSettings()
    probe: ProbeConfig = ProbeConfig()
    metric: str = field(default="", metadata=_help(
        "loss | confidence | correct | NAME | field:NAME | NAME==VALUE | python:MODULE:FUNCTION [default: the task's, else loss]"))
    prompt: str = field(default="", metadata=_help("Use this prompt.safetensors (or run directory) instead of training one."))
    group_by: tuple[str, ...] = field(default=(), metadata=_help("Summarise top-neuron activations per value of this field [default: the task's]."))
    out: str = field(default="", metadata=_help("Run directory to write [default: runs/YYYYMMDD-HHMMSS]."))
    threads: int = field(default=0, metadata=_help("CPU threads for torch (0 = torch's default: every core)."))

    def __post_init__(self) -> None:
        at_least("--threads", self.threads, 0)


def default_of(cls: type, name: str) -> object:
    """The default of a request field: the CLI's option defaults come from here."""
    for f in fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            raise UsageError(f"{cls.__name__}.{name} has no plain default")
    raise UsageError(f"{cls.__name__} has no field {name}")


def help_of(cls: type, name: str) -> str:
    """The help text of a request field (its `help` metadata)."""
    for f in fields(cls):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    raise UsageError(f"{cls.__name__} has no field {name}")


# ---------------------------------------------------------------- the steps of a run


def set_threads(threads: int) -> None:
    """torch's intra-op CPU threads for this process (0 = torch's default, all cores)."""
    if threads < 0:
        raise UsageError(f"--threads must not be negative, got {threads}")
    if threads:
        torch.set_num_threads(threads)


def load_requested_model(request: ModelRequest) -> LoadedModel:
    """The model of a request: the bundled one (checksums checked) unless a name is given."""
    if request.bundled:
        folder = zoo.verify_model()
        loaded = load_model(str(folder), request.dtype, request.device, False, request.neuron_module)
        return replace(loaded, name=zoo.BUNDLED_NAME)
    return load_model(request.name, request.dtype, request.device, request.trust_remote_code, request.neuron_module)


@dataclass(frozen=True)
class ChosenExamples:
    """The examples of a run and the defaults that come with them."""

    split: Split
    default_metric: str
    group_by: tuple[str, ...]
    data_label: str  # run.json's `data`
    val_label: str  # run.json's `val_data`
    summary: str  # one line for a task's run.json `data_summary` ("" for files)


def choose_examples(request: DataRequest, bundled_model: bool) -> ChosenExamples:
    """--task NAME reads --data/--val-data in the task's format; otherwise JSONL/CSV files; with neither,
    on the bundled model, the bundled default: generated 2- and 3-digit multiplication items."""
    if not request.task and not request.data and not request.val_data and bundled_model:
        split = zoo.default_examples(request.train_size or BUNDLED_TRAIN_SIZE, request.val_size or BUNDLED_VAL_SIZE)
        label = "generated 2-3 digit multiplication (skn.zoo.default_examples)"
        return ChosenExamples(split, "loss", ("last_digit_shortcut", "digits"), label, label, "")
    if request.task:
        task = get_task(request.task)
        loaded = load_task(task, request.data, request.val_data, request.train_size, request.val_size, request.seed)
        return ChosenExamples(Split(loaded.train, loaded.val), task.default_metric, task.group_by,
                              ",".join(request.data) or loaded.summary, ",".join(request.val_data) or loaded.summary,
                              loaded.summary)
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
        prompt_len=settings.prompt_len, lr=settings.lr, steps=steps, batch_size=settings.batch_size,
        grad_accum=settings.grad_accum, eval_every=settings.eval_every, patience=settings.patience, seed=seed,
        init=PromptInit(init), gradient_checkpointing=settings.gradient_checkpointing,
    )
    return with_steps_from_epochs(config, settings.epochs, n_train) if settings.epochs > 0 else config


def run_directory(out: str) -> Path:
    """The run directory: `out`, or runs/YYYYMMDD-HHMMSS when none is given."""
    path = Path(out) if out else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path}: exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _train_record(config: TrainConfig) -> dict[str, object]:
    record = asdict(config)
    record["init"] = config.init.token or "random-vocab"
    return record


def _history(trained: TrainResult) -> tuple[TrainPoint, ...]:
    return tuple(TrainPoint(h.step, h.train_loss, h.val_loss) for h in trained.history)


def _check_before_training(examples: tuple[Example, ...], spec: MetricSpec, group_by: tuple[str, ...]) -> None:
    """What can fail before a prompt is trained fails now, not after."""
    if not examples:
        raise UsageError("no validation examples to probe")
    if spec.known_before_pass:
        check_metric(spec, metric_before_pass(spec, examples), examples)
    for name in group_by:
        field_values(examples, name)  # a missing group-by field fails now, naming the example


def run_probe(request: ProbeRequest, progress: ProgressSink = SilentProgress()) -> ProbeResult:
    """`skn probe` as one call: choose the examples, load the model, train a prompt unless one is given,
    probe, and write the run directory (files land as soon as each step ends)."""
    start = time.perf_counter()
    set_threads(request.threads)
    bundled = request.model.bundled
    chosen = choose_examples(request.data, bundled)
    spec = parse_metric(request.metric or chosen.default_metric)
    group_by = request.group_by or chosen.group_by
    probe_config = replace(request.probe, template=request.data.template)
    _check_before_training(chosen.split.val, spec, group_by)
    out = run_directory(request.out)
    loaded = load_requested_model(request.model)
    trained: TrainResult | None = None
    train_config = train_config_for(request.train, request.data.seed, len(chosen.split.train), bundled)
    if request.prompt:
        prompt = read_prompt(Path(request.prompt)).prompt
        prompt_source = request.prompt
    else:
        trained = train(loaded, chosen.split.train, chosen.split.val, train_config, probe_config.template, out,
                        request.train.resume, progress)
        prompt = trained.prompt
        prompt_source = "trained"
    try:
        result = probe(loaded, prompt, chosen.split.val, spec, probe_config, progress)
    except MetricFailure as failure:
        write_examples(out / EXAMPLES_FILE, chosen.split.val, failure.values)
        raise
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
        seed=request.data.seed,
        train_config=_train_record(train_config) if trained is not None else None,
        train_history=_history(trained) if trained is not None else (),
        train_best_val_loss=trained.best_val_loss if trained is not None else None,
        train_best_step=trained.best_step if trained is not None else None,
        task=request.data.task,
        data_summary=chosen.summary if request.data.task else "",
        group_by=group_by,
        timings=timings,
    )
    groups = group_summaries(result.top_activations, result.neurons, result.examples, group_by) if group_by else None
    result = replace(result, info=info, groups=groups)
    write_probe_run(out, result)
    return result


def run_train(request: ProbeRequest, progress: ProgressSink = SilentProgress()) -> tuple[TrainResult, Path]:
    """`skn train` as one call: the prompt only, written to the run directory."""
    set_threads(request.threads)
    bundled = request.model.bundled
    chosen = choose_examples(request.data, bundled)
    out = run_directory(request.out)
    loaded = load_requested_model(request.model)
    config = train_config_for(request.train, request.data.seed, len(chosen.split.train), bundled)
    trained = train(loaded, chosen.split.train, chosen.split.val, config, request.data.template, out,
                    request.train.resume, progress)
    return trained, out


__all__ = [
    "BUNDLED_STEPS",
    "ChosenExamples",
    "DataRequest",
    "ModelRequest",
    "ProbeRequest",
    "TrainSettings",
    "choose_examples",
    "default_of",
    "help_of",
    "load_requested_model",
    "run_directory",
    "run_probe",
    "run_train",
    "set_threads",
    "train_config_for",
]
