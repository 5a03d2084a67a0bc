"""Training the soft prompt on the frozen model: AdamW on P vectors, mean NLL over the completion.

Defaults are the paper's: P = 20, AdamW, lr 3e-3. The data order is a seeded shuffle per epoch,
so a resumed run sees the same batches as an uninterrupted one. Validation loss is measured every
`eval_every` optimiser steps on at most `eval_examples` validation examples; the best prompt is kept,
and `patience` evaluations without improvement stop early (0 = never). The learning rate is constant (the
paper's), or with `LrSchedule.LINEAR` falls linearly to 0 at the last step (smaller steps at the end; it does not remove
swings that come from which items a batch holds). With `prompt_ema` > 0 the prompt that is evaluated and kept
is the exponential moving average of the prompts over the steps (Polyak averaging), which averages out
step-to-step noise (on HANS it left the slower swings: bench/README.md).
The configuration is skn.training.train_config's, the checkpoint skn.training.train_checkpoint's.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from skn.engine.distributed import Ranks
from skn.errors import TrainingError, UsageError
from skn.training.scoring import completion_scores
from skn.training.instruction_cache import CacheUse, InstructionCache
from skn.training.split_forward import (ForwardChoice, PrefixCache, StepForward, choose_forward, columns_needed, splittable,
                                       step_scores)
from skn.inputs.layout import Encoded, make_batch
from skn.models.model import LoadedModel, batch_pad_id
from skn.engine.progress import ProgressSink, SilentProgress
from skn.training.prompt import init_prompt
from skn.training.train_checkpoint import load_checkpoint, save_checkpoint, training_identity
from skn.training.train_config import HistoryPoint, LrSchedule, TrainConfig


@dataclass(frozen=True)
class TrainResult:
    prompt: Tensor  # [P, d] float32, the best by validation loss
    best_val_loss: float
    best_step: int
    steps_done: int
    history: tuple[HistoryPoint, ...]
    seconds: float
    step_forward: str = "full"  # "split" or "full": the forward the training steps used
    step_forward_note: str = ""  # why the full forward, where the split was wanted but not possible
    instruction_cache: CacheUse | None = None  # with the split and a budget: what the instruction cache kept


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


class BatchStream:
    """Micro-batches of example indices, epoch after epoch, reproducible from (seed, position)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self._n, self._size, self._seed = n, batch_size, seed
        self._epoch, self._order = -1, [[0]]

    def micro_batch(self, index: int) -> list[int]:
        per_epoch = math.ceil(self._n / self._size)
        epoch, within = divmod(index, per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, _batches(self._n, self._size, self._seed, epoch)
        return self._order[within]


def validation_loss(loaded: LoadedModel, prompt: Tensor, rows: Sequence[Encoded], batch_size: int,
                    prefixes: PrefixCache | None = None, ranks: Ranks = Ranks()) -> float:
    """Mean over examples of the per-example completion loss (over several ranks: each its shard, summed);
    with `prefixes` (the split forward), each batch's instruction is computed once over all evaluations of
    these rows (skn.training.split_forward.PrefixCache)."""
    pad = batch_pad_id(loaded)
    total, count = 0.0, 0
    rows = rows[ranks.shard(len(rows))]
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            batch = make_batch(rows[i : i + batch_size], prompt.shape[0], pad)
            if prefixes is None:
                scores = completion_scores(loaded, batch, prompt)
            else:
                scores = prefixes.scores(loaded, i // batch_size, batch, prompt)
            total += float(scores.loss.sum())
            count += batch.size
    if ranks.active:
        sums = torch.tensor([total, float(count)], dtype=torch.float64)
        ranks.sum_(sums)
        total, count = float(sums[0]), int(sums[1])
    return total / max(count, 1)


def check_finite_loss(value: float, step: int, what: str, config: TrainConfig) -> None:
    """A NaN or infinite loss means training has diverged: stop with an error instead of keeping the
    untrained prompt and calling it trained."""
    if not math.isfinite(value):
        raise TrainingError(
            f"training diverged: the {what} loss is {value} at step {step} (--lr {config.lr:g}); "
            "lower --lr, or check the data"
        )


def _enable_checkpointing(loaded: LoadedModel) -> None:
    """Gradient checkpointing without dropout: HF checkpoints a layer only while `layer.training` is
    set, so set that flag on the layers alone (not recursively) and leave everything else in eval."""
    newer = getattr(loaded.model, "activation_checkpointing_enable", None)  # transformers >= 5 names it so
    older = getattr(loaded.model, "gradient_checkpointing_enable", None)
    if callable(newer):
        newer(activation_checkpointing_kwargs={"use_reentrant": False})
    elif callable(older):
        older(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        raise UsageError(f"--gradient-checkpointing: {loaded.name} does not support it")
    layers = [m for m in loaded.model.modules() if getattr(m, "gradient_checkpointing", False)]
    if not layers:
        raise UsageError(f"--gradient-checkpointing: {loaded.name} has no checkpointable layers")
    for module in layers:
        module.training = True


def train_prompt(
    loaded: LoadedModel,
    train_rows: Sequence[Encoded],
    val_rows: Sequence[Encoded],
    config: TrainConfig = TrainConfig(),
    out: Path | None = None,
    resume: bool = False,
    progress: ProgressSink = SilentProgress(),
    ranks: Ranks = Ranks(),
) -> TrainResult:
    """Train a soft prompt; with `out`, checkpoint there at every evaluation (for --resume). With `ranks` of
    several processes (skn.engine.distributed) each micro-batch is split over them and the gradient summed."""
    if not train_rows:
        raise UsageError("no training examples")
    if config.steps < 1 or config.batch_size < 1 or config.grad_accum < 1 or config.eval_every < 1:
        raise UsageError("--steps, --batch-size, --grad-accum and --eval-every must be at least 1")
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise UsageError(f"--lr must be a positive finite number, got {config.lr}")
    start_time = time.perf_counter()
    torch.manual_seed(config.seed)
    prompt = init_prompt(loaded, config.prompt_len, config.seed, config.init).requires_grad_(True)
    optimizer = torch.optim.AdamW([prompt], lr=config.lr, weight_decay=config.weight_decay)
    eval_rows = list(val_rows[: config.eval_examples]) or list(train_rows[: config.eval_examples])
    step, best_val, best_step = 0, math.inf, 0
    best = prompt.detach().clone()
    # with --prompt-ema the moving average is what is evaluated and kept (TrainConfig.average)
    average = prompt.detach().clone() if config.prompt_ema > 0 else None
    history: list[HistoryPoint] = []
    evals_without_gain = 0
    if resume:
        if out is None:
            raise UsageError("--resume needs --out (the run directory to resume)")
        saved = load_checkpoint(out, config, training_identity(loaded, train_rows, val_rows, config))
        with torch.no_grad():
            prompt.copy_(saved.prompt.to(prompt.device))
        if saved.exp_avg is not None and saved.exp_avg_sq is not None:
            optimizer.state[prompt] = {
                "step": torch.tensor(float(saved.step)),
                "exp_avg": saved.exp_avg.to(prompt.device),
                "exp_avg_sq": saved.exp_avg_sq.to(prompt.device),
            }
        step, best_val, best_step = saved.step, saved.best_val, saved.best_step
        best = saved.best.to(prompt.device)
        history = list(saved.history)
        evals_without_gain = saved.evals_without_gain
        if average is not None:
            average = (saved.average if saved.average is not None else saved.prompt).to(prompt.device).clone()
    pad = batch_pad_id(loaded)
    choice = ForwardChoice(StepForward.FULL, "split_forward=False")
    if config.split_forward:
        choice = choose_forward(loaded, list(train_rows[: config.batch_size]), prompt.detach(), pad,
                                columns_needed([*train_rows, *val_rows], config.prompt_len))
    split = choice.forward is StepForward.SPLIT
    if config.gradient_checkpointing and not split:  # the split checkpoints its whole step itself
        _enable_checkpointing(loaded)
    stream = BatchStream(len(train_rows), config.batch_size, config.seed)
    eval_prefixes = PrefixCache(config.eval_cache_bytes) if split and config.eval_cache_bytes > 0 else None
    instructions = InstructionCache(config.instruction_cache_bytes) if split and config.instruction_cache_bytes > 0 else None
    identity = training_identity(loaded, train_rows, val_rows, config) if out is not None else None
    with progress.task("training prompt", config.steps) as advance:
        advance(step)
        while step < config.steps and not (config.patience > 0 and evals_without_gain >= config.patience):
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for micro in range(config.grad_accum):
                indices = stream.micro_batch(step * config.grad_accum + micro)
                mine = indices[ranks.shard(len(indices))]  # all of them in one process
                if not mine:
                    continue
                batch = make_batch([train_rows[i] for i in mine], config.prompt_len, pad)
                share = len(mine) / len(indices)  # this rank's part of the batch mean (1.0 in one process)
                prefix = instructions.prefix(loaded, batch, mine, prompt) if instructions is not None and splittable(batch) else None
                scores = step_scores(loaded, batch, prompt, choice, config.gradient_checkpointing, prefix)
                loss = scores.mean_loss * share / config.grad_accum
                torch.autograd.backward(loss)
                step_loss += float(loss.detach())
            if ranks.active:  # the gradient of the global batch mean: every rank takes the same step
                if prompt.grad is None:
                    prompt.grad = torch.zeros_like(prompt)
                ranks.sum_(prompt.grad)
                total = torch.tensor([step_loss], dtype=torch.float64)
                ranks.sum_(total)
                step_loss = float(total[0])
            check_finite_loss(step_loss, step + 1, "training", config)
            for group in optimizer.param_groups:  # a function of the step, so a resumed run continues it exactly
                group["lr"] = config.lr * config.lr_schedule.factor(step, config.steps)
            optimizer.step()
            if average is not None:
                config.average(average, prompt)
            step += 1
            val_loss: float | None = None
            if step % config.eval_every == 0 or step == config.steps:
                evaluated = average if average is not None else prompt.detach()
                val_loss = validation_loss(loaded, evaluated, eval_rows, config.batch_size, eval_prefixes, ranks)
                check_finite_loss(val_loss, step, "validation", config)
                if val_loss < best_val:
                    best_val, best_step, best = val_loss, step, evaluated.clone()
                    evals_without_gain = 0
                else:
                    evals_without_gain += 1
            history.append(HistoryPoint(step, step_loss, val_loss))
            if val_loss is not None and out is not None:
                save_checkpoint(out, prompt, best, optimizer, step, best_val, best_step, history, config,
                                evals_without_gain, identity, average)
            note = f"loss {step_loss:.4f}" + (f"  val {best_val:.4f}" if math.isfinite(best_val) else "")
            advance(1, note)
            if config.patience > 0 and evals_without_gain >= config.patience:
                break
    loaded.model.eval()
    return TrainResult(
        prompt=best.detach().to("cpu", torch.float32),
        best_val_loss=best_val,
        best_step=best_step,
        steps_done=step,
        history=tuple(history),
        seconds=time.perf_counter() - start_time,
        step_forward=choice.forward.value,
        step_forward_note=choice.reason,
        instruction_cache=instructions.use() if instructions is not None else None,
    )


def with_steps_from_epochs(config: TrainConfig, epochs: float, n_train: int) -> TrainConfig:
    """The number of optimiser steps that covers `epochs` passes over `n_train` examples."""
    per_step = config.batch_size * config.grad_accum
    steps = epochs * n_train / per_step
    if not math.isfinite(steps):  # --epochs is finite (TrainRequest), but its product can overflow
        raise UsageError(f"--epochs {epochs} over {n_train} training examples is more steps than can be counted")
    return replace(config, steps=max(1, math.ceil(steps)))


__all__ = ["BatchStream", "HistoryPoint", "LrSchedule", "TrainConfig", "TrainResult", "check_finite_loss", "train_prompt",
           "validation_loss", "with_steps_from_epochs"]
