"""How the soft prompt is trained: `TrainConfig` (every field checked where it is made), the learning rate's
schedule, and one point of the training curve. The trainer (skn.training.trainer) and its checkpoint
(skn.training.train_checkpoint) import this module; it imports neither."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from torch import Tensor

from skn.checks import at_least, positive
from skn.errors import UsageError
from skn.training.prompt import PromptInit


class LrSchedule(Enum):
    """How the learning rate moves over the steps."""

    CONSTANT = "constant"  # the paper's
    LINEAR = "linear"  # from lr at the first step to 0 after the last (HF Trainer's default decay, no warmup)

    def factor(self, step: int, steps: int) -> float:
        """The multiple of lr for optimiser step `step` (0-based) of `steps`."""
        return 1.0 if self is LrSchedule.CONSTANT else max(0.0, 1.0 - step / steps)


def check_prompt_ema(decay: float) -> None:
    """--prompt-ema: a decay in [0, 1), 0 = off."""
    at_least("--prompt-ema", decay, 0.0)
    if not decay < 1.0:
        raise UsageError(f"--prompt-ema must be below 1 (0 = off), got {decay}")


@dataclass(frozen=True)
class TrainConfig:
    prompt_len: int = 20
    lr: float = 3e-3
    lr_schedule: LrSchedule = LrSchedule.CONSTANT
    weight_decay: float = 0.01
    steps: int = 200
    batch_size: int = 8
    grad_accum: int = 1
    eval_every: int = 20
    eval_examples: int = 256
    patience: int = 0
    seed: int = 0
    init: PromptInit = field(default_factory=PromptInit)
    gradient_checkpointing: bool = False
    split_forward: bool = True  # the split step (skn.training.split_forward) where the model supports it
    eval_cache_bytes: int = 1 << 30  # with the split: keep the validation batches' instruction caches up to this
    instruction_cache_bytes: int = 1 << 30  # with the split: keep each training item's instruction keys/values up to this
    # > 0: evaluate and keep an exponential moving average of the prompt over the steps (Polyak averaging), this decay
    prompt_ema: float = 0.0

    def __post_init__(self) -> None:
        for flag, value in (("--prompt-len", self.prompt_len), ("--steps", self.steps), ("--batch-size", self.batch_size),
                            ("--grad-accum", self.grad_accum), ("--eval-every", self.eval_every),
                            ("TrainConfig.eval_examples", self.eval_examples)):
            at_least(flag, value, 1)
        at_least("--patience", self.patience, 0)
        at_least("TrainConfig.eval_cache_bytes", self.eval_cache_bytes, 0)
        at_least("TrainConfig.instruction_cache_bytes", self.instruction_cache_bytes, 0)
        at_least("TrainConfig.weight_decay", self.weight_decay, 0.0)
        positive("--lr", self.lr)
        check_prompt_ema(self.prompt_ema)

    def average(self, average: Tensor, prompt: Tensor) -> None:
        """One step of the prompt's moving average, in place: average <- d average + (1 - d) prompt."""
        average.mul_(self.prompt_ema).add_(prompt.detach(), alpha=1.0 - self.prompt_ema)


@dataclass(frozen=True)
class HistoryPoint:
    step: int
    train_loss: float
    val_loss: float | None  # None between evaluations


__all__ = ["HistoryPoint", "LrSchedule", "TrainConfig", "check_prompt_ema"]
