from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from skn.engine.api import encode, train
from skn.inputs.data import Example
from skn.errors import RunDirError, TrainingError
from skn.inputs.layout import Template
from skn.files.rundir import read_prompt
from skn.training.trainer import TrainConfig, train_prompt, validation_loss

from helpers import tiny_loaded


class Killed(Exception):
    pass


class KillAfter:
    """A progress sink that raises `Killed` once `step` training steps are done (after that step's checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step, self.done = step, 0

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[object]:
        def advance(steps: int = 1, note: str = "") -> None:
            self.done += steps
            if self.done >= self.step:
                raise Killed

        yield advance


def toy(n: int, seed: int) -> list[Example]:
    """A learnable task for a random model: the completion is always the same short string."""
    rng = random.Random(seed)
    return [Example("".join(rng.choice("abc") for _ in range(5)), "xyz", {}, f"toy:{i}") for i in range(n)]


@pytest.mark.slow  # over 8 s in `pytest --durations=15` (2 shared cores)
def test_training_lowers_validation_loss(tmp_path: Path) -> None:
    loaded = tiny_loaded("qwen2", init_range=0.5)  # large weights: the output depends on the input
    config = TrainConfig(prompt_len=4, steps=30, batch_size=8, eval_every=10, lr=0.1)
    before_rows = encode(loaded, toy(16, 1), Template.PLAIN, 4)  # type: ignore[arg-type]
    from skn.training.prompt import init_prompt

    before = validation_loss(loaded, init_prompt(loaded, 4, 0), before_rows, 8)  # type: ignore[arg-type]
    result = train(loaded, toy(64, 0), toy(16, 1), config, Template.PLAIN, out=tmp_path)  # type: ignore[arg-type]
    assert result.best_val_loss < 0.8 * before
    assert [h.step for h in result.history] == list(range(1, 31))
    assert [h.step for h in result.history if h.val_loss is not None] == [10, 20, 30]
    saved = read_prompt(tmp_path)
    assert torch.equal(saved.prompt, result.prompt) and saved.prompt.shape == (4, 32)
    assert not any(p.requires_grad for p in loaded.model.parameters())  # type: ignore[attr-defined]


def test_resume_continues_where_it_stopped(tmp_path: Path) -> None:
    loaded = tiny_loaded("llama")
    rows = encode(loaded, toy(40, 0), Template.PLAIN, 3)  # type: ignore[arg-type]
    val = encode(loaded, toy(8, 1), Template.PLAIN, 3)  # type: ignore[arg-type]
    full = train_prompt(loaded, rows, val, TrainConfig(prompt_len=3, steps=12, eval_every=4), out=tmp_path / "a")  # type: ignore[arg-type]
    train_prompt(loaded, rows, val, TrainConfig(prompt_len=3, steps=8, eval_every=4), out=tmp_path / "b")  # type: ignore[arg-type]
    resumed = train_prompt(loaded, rows, val, TrainConfig(prompt_len=3, steps=12, eval_every=4), out=tmp_path / "b", resume=True)  # type: ignore[arg-type]
    assert resumed.steps_done == 12 and len(resumed.history) == 12
    torch.testing.assert_close(resumed.prompt, full.prompt, rtol=1e-5, atol=1e-6)
    assert resumed.best_val_loss == pytest.approx(full.best_val_loss, rel=1e-5)
    with pytest.raises(RunDirError, match="nothing to resume"):
        train_prompt(loaded, rows, val, TrainConfig(prompt_len=3, steps=2), out=tmp_path / "c", resume=True)  # type: ignore[arg-type]


def test_gradient_checkpointing_gives_the_same_prompt() -> None:
    prompts = []
    for checkpointing in (False, True):
        loaded = tiny_loaded("llama", init_range=0.3)
        rows = encode(loaded, toy(16, 0), Template.PLAIN, 3)  # type: ignore[arg-type]
        config = TrainConfig(prompt_len=3, steps=3, eval_every=3, gradient_checkpointing=checkpointing)
        prompts.append(train_prompt(loaded, rows, rows, config).prompt)  # type: ignore[arg-type]
        assert not loaded.model.training  # type: ignore[attr-defined]
    torch.testing.assert_close(prompts[0], prompts[1], rtol=1e-5, atol=1e-6)
    assert not torch.equal(prompts[0], tiny_prompt_start())


def tiny_prompt_start() -> torch.Tensor:
    from skn.training.prompt import init_prompt

    return init_prompt(tiny_loaded("llama", init_range=0.3), 3, 0).cpu()  # type: ignore[arg-type]


@pytest.mark.parametrize("lr", [0.3, 1.0])
def test_resume_with_patience_stops_where_the_whole_run_stops(tmp_path: Path, lr: float) -> None:
    from skn.inputs.data import Example as E
    """The patience counter is checkpointed: an interrupted and resumed run stops at the same step with
    the same prompt as an uninterrupted one (it used to stop later)."""
    loaded = tiny_loaded("llama")
    rows = encode(loaded, toy(8, 0), Template.PLAIN, 2)  # type: ignore[arg-type]
    # validation text unlike the training task, so that its loss stalls and patience ends the run
    val = encode(loaded, [E("xq", " " + w, {}, "v") for w in ("zzq", "qqz", "xzx", "zqx")], Template.PLAIN, 2)  # type: ignore[arg-type]
    config = TrainConfig(prompt_len=2, steps=12, eval_every=1, patience=2, lr=lr, batch_size=4)
    full = train_prompt(loaded, rows, val, config, out=tmp_path / "a")  # type: ignore[arg-type]
    assert 2 < full.steps_done < 12, "patience never triggered: the test would prove nothing"
    for stop in (full.steps_done - 1, full.steps_done - 2):
        out = tmp_path / f"b{stop}"
        train_prompt(loaded, rows, val, TrainConfig(**{**config.__dict__, "steps": stop}), out=out)  # type: ignore[arg-type]
        resumed = train_prompt(loaded, rows, val, config, out=out, resume=True)  # type: ignore[arg-type]
        assert resumed.steps_done == full.steps_done and resumed.best_step == full.best_step
        torch.testing.assert_close(resumed.prompt, full.prompt, rtol=0, atol=0)


def test_non_finite_loss_stops_training() -> None:
    from skn.errors import TrainingError

    loaded = tiny_loaded("llama")
    rows = encode(loaded, toy(8, 0), Template.PLAIN, 3)  # type: ignore[arg-type]
    with pytest.raises(TrainingError, match=r"training diverged: the (training|validation) loss is nan at step \d+ \(--lr 1e\+20\)"):
        train_prompt(loaded, rows, rows, TrainConfig(prompt_len=3, steps=6, eval_every=1, lr=1e20))  # type: ignore[arg-type]
def test_gradient_checkpointing_recomputes_each_layer_in_backward() -> None:
    """A checkpointed layer runs its forward again during backward: once more per micro-batch. With
    checkpointing silently off the two counts would be equal. The hook sits on the layer's first
    projection: torch's non-reentrant checkpoint stops recomputing once it has every saved tensor, and
    with frozen weights the down projection's input is never saved, so a hook there would not see it."""
    calls = {}
    for checkpointing in (False, True):
        loaded = tiny_loaded("llama", init_range=0.3)
        rows = encode(loaded, toy(8, 0), Template.PLAIN, 3)
        seen = {"grad": 0, "all": 0}

        def count(module: torch.nn.Module, args: object, output: object) -> None:
            seen["all"] += 1
            seen["grad"] += int(torch.is_grad_enabled())

        handle = loaded.model.model.layers[1].self_attn.q_proj.register_forward_hook(count)
        # the full forward: transformers' per-layer checkpointing (the split step checkpoints its whole step)
        config = TrainConfig(prompt_len=3, steps=2, grad_accum=2, batch_size=4, eval_every=2, eval_examples=8,
                             split_forward=False)
        train_prompt(loaded, rows, rows, replace(config, gradient_checkpointing=checkpointing))
        handle.remove()
        calls[checkpointing] = seen
    micro_batches = 2 * 2  # steps x grad_accum: each backward recomputes the layer once
    assert calls[True]["all"] - calls[False]["all"] == micro_batches
    assert calls[True]["grad"] - calls[False]["grad"] == micro_batches


def test_linear_schedule_factors() -> None:
    from skn.training.trainer import LrSchedule

    assert [LrSchedule.LINEAR.factor(s, 4) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert [LrSchedule.CONSTANT.factor(s, 4) for s in range(4)] == [1.0] * 4


def test_linear_schedule_sets_each_steps_lr(monkeypatch: pytest.MonkeyPatch) -> None:
    """The optimiser steps with lr x (1 - s / steps) at step s, as read from the optimiser at each step."""
    from skn.training.trainer import LrSchedule

    seen: list[float] = []
    original = torch.optim.AdamW.step

    def spy(self: torch.optim.AdamW, *args: object, **kwargs: object) -> object:
        seen.append(float(self.param_groups[0]["lr"]))
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    loaded = tiny_loaded("llama")
    rows = encode(loaded, toy(16, 0), Template.PLAIN, 3)  # type: ignore[arg-type]
    for schedule, expected in ((LrSchedule.LINEAR, [0.1 * (1 - s / 5) for s in range(5)]), (LrSchedule.CONSTANT, [0.1] * 5)):
        seen.clear()
        train_prompt(loaded, rows, rows, TrainConfig(prompt_len=3, steps=5, eval_every=5, lr=0.1, lr_schedule=schedule))  # type: ignore[arg-type]
        assert seen == pytest.approx(expected, rel=1e-12)


def test_linear_schedule_resumes_exactly_and_refuses_other_steps(tmp_path: Path) -> None:
    """A run killed after its step-8 checkpoint and resumed gives the uninterrupted run's prompt; resuming
    it with another number of steps would change the schedule's slope, so it is refused."""
    from skn.training.trainer import LrSchedule

    loaded = tiny_loaded("llama")
    rows = encode(loaded, toy(40, 0), Template.PLAIN, 3)  # type: ignore[arg-type]
    val = encode(loaded, toy(8, 1), Template.PLAIN, 3)  # type: ignore[arg-type]
    config = TrainConfig(prompt_len=3, steps=12, eval_every=4, lr=0.05, lr_schedule=LrSchedule.LINEAR)
    full = train_prompt(loaded, rows, val, config, out=tmp_path / "a")  # type: ignore[arg-type]
    constant = train_prompt(loaded, rows, val, replace(config, lr_schedule=LrSchedule.CONSTANT))  # type: ignore[arg-type]
    assert not torch.equal(full.prompt, constant.prompt)
    with pytest.raises(Killed):
        train_prompt(loaded, rows, val, config, out=tmp_path / "b", progress=KillAfter(8))  # type: ignore[arg-type]
    with pytest.raises(TrainingError, match="lr_schedule .linear over 12 steps, now linear over 16"):
        train_prompt(loaded, rows, val, replace(config, steps=16), out=tmp_path / "b", resume=True)  # type: ignore[arg-type]
    resumed = train_prompt(loaded, rows, val, config, out=tmp_path / "b", resume=True)  # type: ignore[arg-type]
    assert resumed.steps_done == 12
    torch.testing.assert_close(resumed.prompt, full.prompt, rtol=0, atol=0)


def test_prompt_ema_keeps_the_moving_average_of_the_prompts() -> None:
    """With --prompt-ema d the prompt kept is d^N p_0 + sum_k (1 - d) d^(N-k) p_k over the raw prompts p_k after
    each step k, which training without the average reaches alone (the optimiser never sees the average): each
    p_k is a run of k steps, evaluated only at its end (so the prompt it returns is its last)."""
    from skn.training.prompt import init_prompt

    loaded = tiny_loaded("llama")
    rows = encode(loaded, toy(24, 0), Template.PLAIN, 3)  # type: ignore[arg-type]
    base = TrainConfig(prompt_len=3, steps=1, eval_every=100, lr=0.05, batch_size=4)
    raw = [init_prompt(loaded, 3, base.seed, base.init).to(torch.float64)]  # type: ignore[arg-type]
    for k in range(1, 6):
        raw.append(train_prompt(loaded, rows, rows, replace(base, steps=k)).prompt.to(torch.float64))  # type: ignore[arg-type]
    decay = 0.6
    expected = raw[0].clone()
    for p in raw[1:]:
        expected = decay * expected + (1 - decay) * p
    averaged = train_prompt(loaded, rows, rows, replace(base, steps=5, prompt_ema=decay))  # type: ignore[arg-type]
    torch.testing.assert_close(averaged.prompt.to(torch.float64), expected, rtol=0, atol=1e-6)
    assert not torch.allclose(averaged.prompt.to(torch.float64), raw[-1], atol=1e-4)  # it is not the last prompt


def test_prompt_ema_is_checked_where_the_config_is_made() -> None:
    from skn.errors import UsageError

    with pytest.raises(UsageError, match="--prompt-ema must be below 1"):
        TrainConfig(prompt_ema=1.0)
    with pytest.raises(UsageError, match="--prompt-ema must be at least 0"):
        TrainConfig(prompt_ema=-0.1)


def test_prompt_ema_resume_gives_the_uninterrupted_average(tmp_path: Path) -> None:
    """Killed after its step-4 checkpoint and resumed, a run with the average ends with the uninterrupted one's
    prompt (the average is checkpointed); resuming it without the average is refused."""
    loaded = tiny_loaded("llama")
    rows = encode(loaded, toy(40, 0), Template.PLAIN, 3)  # type: ignore[arg-type]
    val = encode(loaded, toy(8, 1), Template.PLAIN, 3)  # type: ignore[arg-type]
    config = TrainConfig(prompt_len=3, steps=10, eval_every=4, lr=0.05, prompt_ema=0.8)
    full = train_prompt(loaded, rows, val, config, out=tmp_path / "a")  # type: ignore[arg-type]
    with pytest.raises(Killed):
        train_prompt(loaded, rows, val, config, out=tmp_path / "b", progress=KillAfter(6))  # type: ignore[arg-type]
    with pytest.raises(TrainingError, match="prompt_ema"):
        train_prompt(loaded, rows, val, replace(config, prompt_ema=0.0), out=tmp_path / "b", resume=True)  # type: ignore[arg-type]
    resumed = train_prompt(loaded, rows, val, config, out=tmp_path / "b", resume=True)  # type: ignore[arg-type]
    assert (resumed.steps_done, resumed.best_step) == (10, full.best_step)
    torch.testing.assert_close(resumed.prompt, full.prompt, rtol=0, atol=0)
