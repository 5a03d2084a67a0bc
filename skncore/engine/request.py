"""What a run is asked to do: the request dataclasses of `skn probe` / `skn train`, with the defaults and
help texts the CLI reads from them (`default_of`, `help_of`), so each default is written once.

    ProbeRequest(model=ModelRequest(...), data=DataRequest(...), train=TrainRequest(...), probe=ProbeConfig(...))

`skn.engine.run` turns a request into a run.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields

from skn.engine.probe_config import ProbeConfig
from skn.checks import SEED_MAX, THREADS_PER_CORE, at_least, between, count, finite, positive, seed_value, thread_count
from skn.errors import UsageError
from skn.inputs.layout import Template
from skn.models.model import DType
from skn.models.placement import Placement
from skn.models.quantize import Quantize
from skn.training.train_config import LrSchedule, TrainConfig, check_prompt_ema

BUNDLED_STEPS = 50  # prompt steps on the bundled model: the whole run in well under a minute on 2 CPU cores
BUNDLED_TRAIN_SIZE = 256
BUNDLED_VAL_SIZE = 256


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class ModelRequest:
    """Which model, and how to load it. An empty name is the bundled model (skn.zoo)."""

    name: str = field(default="", metadata=_help("Hugging Face hub id or local folder of a causal LM [default: the small model skn ships]."))
    revision: str = field(default="", metadata=_help(
        "A hub model's branch, tag or commit hash [default: the hub's default branch]."), kw_only=True)
    dtype: DType = field(default=DType.AUTO, metadata=_help(
        "auto: float32 on CPU, bfloat16 (or float16) on GPU; float64: reference-grade, CPU only."))
    device: str = field(default="auto", metadata=_help("auto, cpu, cuda, cuda:1, mps ..."))
    trust_remote_code: bool = field(default=False, metadata=_help("Run the model repository's own code (off unless asked)."))
    neuron_module: str = field(default="", metadata=_help(
        "Module whose input is the neuron activation, {i} = layer, e.g. 'model.layers.{i}.mlp.down_proj'."))
    device_map: str = field(default="", metadata=_help(
        "Spread the layers over devices with accelerate: auto, balanced, balanced_low_0, sequential [default: one device]."))
    max_memory: tuple[str, ...] = field(default=(), metadata=_help("With --device-map: DEVICE=SIZE caps, e.g. 0=20GiB (repeatable)."))
    offload_folder: str = field(default="", metadata=_help("With --device-map: offload what does not fit to this folder."))

    quantize: Quantize = field(default=Quantize.NONE, metadata=_help(
        "Load the weights in 4 or 8 bits through bitsandbytes (CUDA, pip install 'skn[quantize]')."))

    @property
    def placement(self) -> Placement:
        return Placement(self.device_map, self.max_memory, self.offload_folder)

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
    seed: int = field(default=0, metadata=_help(
        f"Seeds the split, the sampled examples, the folds and the null, and (unless --prompt-seed is given) the "
        f"prompt's initialisation and batch order (0 to {SEED_MAX})."))
    task: str = field(default="", metadata=_help("A built-in task (see `skn tasks`): reads --data/--val-data in its format."))
    train_size: int | None = field(default=None, metadata=_help("Sample this many training examples (seeded; stratified for tasks)."))
    val_size: int | None = field(default=None, metadata=_help("Sample this many validation examples (seeded; stratified for tasks)."))

    def __post_init__(self) -> None:
        between("--val-fraction", self.val_fraction, 0.0, 1.0)
        seed_value("--seed", self.seed)
        for flag, size in (("--train-size", self.train_size), ("--val-size", self.val_size)):
            if size is not None:
                count(flag, size, 1)


@dataclass(frozen=True)
class TrainRequest:
    """The prompt training a run asks for; `steps` and `prompt_init` left as None take the model's
    defaults (200 steps from random vocabulary tokens; 50 from the placeholder on the bundled model)."""

    prompt_len: int = field(default=TrainConfig.prompt_len, metadata=_help("Number of soft-prompt vectors P."))
    steps: int | None = field(default=None, metadata=_help(
        f"Optimiser steps (ignored with --epochs) [default: {TrainConfig.steps}; {BUNDLED_STEPS} on the bundled model]."))
    epochs: float = field(default=0.0, metadata=_help(
        "Train for this many passes over the data instead of --steps (0 = use --steps)."))
    lr: float = field(default=TrainConfig.lr, metadata=_help("AdamW learning rate."))
    lr_schedule: LrSchedule = field(default=TrainConfig.lr_schedule, metadata=_help(
        "constant (the paper's) or linear (falls to 0 at the last step)."))
    prompt_ema: float = field(default=TrainConfig.prompt_ema, metadata=_help(
        "Evaluate and keep the moving average of the prompt over the steps, with this decay, e.g. 0.9 (0 = off, the paper's)."))
    batch_size: int = field(default=TrainConfig.batch_size, metadata=_help("Examples per batch (training and probing)."))
    grad_accum: int = field(default=TrainConfig.grad_accum, metadata=_help("Micro-batches per optimiser step."))
    eval_every: int = field(default=TrainConfig.eval_every, metadata=_help("Steps between validation-loss checks."))
    patience: int = field(default=TrainConfig.patience, metadata=_help("Stop after this many checks without gain (0 = never)."))
    prompt_init: str | None = field(default=None, metadata=_help(
        "Start every vector from this token's embedding [default: random vocabulary tokens; the placeholder on the bundled model]."))
    gradient_checkpointing: bool = field(default=False, metadata=_help("Trade compute for memory on small GPUs."))
    instruction_cache: int = field(default=TrainConfig.instruction_cache_bytes, metadata=_help(
        "Memory for the training items' instruction keys and values, kept across steps (0 = recompute them each step)."))
    resume: bool = field(default=False, metadata=_help("Continue the training (and, for probe, the pass) checkpointed in --out."))
    prompt_seed: int | None = field(default=None, metadata=_help(
        "Seed of the prompt alone (initialisation, batch order): the split, the folds and the null keep --seed's, so "
        "prompts of different seeds are read on the same validation items [default: --seed]."))

    def __post_init__(self) -> None:
        for flag, value in (("--prompt-len", self.prompt_len), ("--batch-size", self.batch_size),
                            ("--grad-accum", self.grad_accum), ("--eval-every", self.eval_every)):
            count(flag, value, 1)
        if self.steps is not None:
            count("--steps", self.steps, 1)
        finite("--epochs", self.epochs)
        at_least("--epochs", self.epochs, 0.0)
        count("--patience", self.patience, 0)
        count("--instruction-cache", self.instruction_cache, 0)
        positive("--lr", self.lr)
        check_prompt_ema(self.prompt_ema)
        if self.prompt_seed is not None:
            seed_value("--prompt-seed", self.prompt_seed)  # or one of --seeds (skn.engine.seeds)


@dataclass(frozen=True)
class ProbeRequest:
    """Everything `skn probe` is asked to do."""

    model: ModelRequest = ModelRequest()
    data: DataRequest = DataRequest()
    train: TrainRequest = TrainRequest()
    probe: ProbeConfig = ProbeConfig()
    metric: str = field(default="", metadata=_help(
        "loss | confidence | correct | NAME | field:NAME | NAME==VALUE | python:MODULE:FUNCTION [default: the task's, else loss]"))
    prompt: str = field(default="", metadata=_help("Use this prompt.safetensors (or run directory) instead of training one."))
    group_by: tuple[str, ...] = field(default=(), metadata=_help("Summarise top-neuron activations per value of this field [default: the task's]."))
    out: str = field(default="", metadata=_help("Run directory to write [default: runs/YYYYMMDD-HHMMSS]."))
    threads: int = field(default=0, metadata=_help(
        f"CPU threads for torch (0 = torch's default: every core; at most {THREADS_PER_CORE} per core)."))
    overwrite: bool = field(default=False, metadata=_help("Replace the run in a non-empty --out (removes the files skn wrote there)."))
    any_prompt_model: bool = field(default=False, metadata=_help("Accept a --prompt file trained on another model."))

    def __post_init__(self) -> None:
        thread_count("--threads", self.threads)


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


__all__ = [
    "BUNDLED_STEPS",
    "BUNDLED_TRAIN_SIZE",
    "BUNDLED_VAL_SIZE",
    "DataRequest",
    "ModelRequest",
    "ProbeRequest",
    "TrainRequest",
    "default_of",
    "help_of",
]
