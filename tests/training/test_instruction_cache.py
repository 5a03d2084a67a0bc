"""Each training item's instruction computed once (skn.training.instruction_cache): a step with kept keys and values
gives the full forward's losses and prompt gradient, in batches that mix kept and new items, within any
budget; and training with the cache ends at the prompt of training without it."""

from __future__ import annotations

import pytest
import torch

from skn.inputs.data import Example
from skn.training.instruction_cache import InstructionCache
from skn.inputs.layout import Encoded, make_batch
from skn.models.model import LoadedModel
from skn.training.prompt import init_prompt
from skn.training.scoring import completion_scores
from skn.training.split_forward import split_scores
from skn.training.trainer import TrainConfig, train_prompt

from helpers import tiny_loaded

P = 3


def float64(kind: str) -> LoadedModel:
    """The tiny model in float64: the cached step and the full forward agree to rounding of float64."""
    loaded = tiny_loaded(kind)
    loaded.model.to(torch.float64)
    return loaded


def items(n: int) -> list[Encoded]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        length = int(torch.randint(1, 9, (1,), generator=gen))
        instruction = tuple(int(t) for t in torch.randint(3, 60, (length,), generator=gen))
        out.append(Encoded(instruction, tuple(int(t) for t in torch.randint(3, 60, (2,), generator=gen)) + (2,)))
    return out


def check_steps(loaded: LoadedModel, cache: InstructionCache, checkpointed: bool = False) -> None:
    rows = items(10)
    prompt = init_prompt(loaded, P, seed=0).to(torch.float64).requires_grad_(True)
    for chosen in ([0, 1, 2, 3], [2, 5, 1, 7], [7, 0, 5, 2], [9, 8, 6, 4]):  # kept, new and repeated items mixed
        batch = make_batch([rows[i] for i in chosen], P, 0)
        full = completion_scores(loaded, batch, prompt)
        cached = split_scores(loaded, batch, prompt, checkpointed, cache.prefix(loaded, batch, chosen, prompt))
        (want,) = torch.autograd.grad(full.mean_loss, prompt)
        (got,) = torch.autograd.grad(cached.mean_loss, prompt)
        torch.testing.assert_close(cached.loss, full.loss, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_kept_instructions_give_the_full_forwards_losses_and_gradient(kind: str) -> None:
    loaded = float64(kind)
    cache = InstructionCache(1 << 30)
    check_steps(loaded, cache)
    assert cache.kept == 10 and cache.computed == 10  # each item's instruction ran once, over four steps


def test_a_budget_keeps_what_fits_and_recomputes_the_rest() -> None:
    loaded = float64("llama")
    probe = InstructionCache(1 << 30)
    rows = items(10)
    batch = make_batch(rows[:1], P, 0)
    probe.prefix(loaded, batch, [0], init_prompt(loaded, P, seed=0).to(torch.float64))
    one = probe.bytes  # item 0's keys and values
    nothing, some = InstructionCache(0), InstructionCache(4 * one)
    check_steps(loaded, nothing)
    check_steps(loaded, some)
    assert (nothing.kept, nothing.bytes, nothing.computed) == (0, 0, 16)  # every row of the four steps ran
    assert 0 < some.kept < 10 and some.bytes <= 4 * one and 10 < some.computed < 16


def test_gradient_checkpointing_recomputes_from_the_kept_instruction() -> None:
    """The checkpointed step runs the suffix twice; each run starts from the kept instruction, not the cache the
    first run appended to."""
    check_steps(float64("qwen2"), InstructionCache(1 << 30), checkpointed=True)


def test_a_batch_with_the_wrong_number_of_items_is_an_internal_error() -> None:
    loaded = float64("llama")
    rows = items(3)
    batch = make_batch(rows, P, 0)
    from skn.errors import InternalError

    with pytest.raises(InternalError, match="2 item numbers for a batch of 3"):
        InstructionCache(1 << 20).prefix(loaded, batch, [0, 1], init_prompt(loaded, P, seed=0).to(torch.float64))


def test_training_with_the_cache_ends_at_training_without_it() -> None:
    loaded = tiny_loaded("llama")
    examples = [Example(f"the {w} sat on the mat number {i}", f" {w}", {}, f"t:{i}")
                for i, w in enumerate(["cat", "dog", "bird", "fish"] * 4)]
    from skn.engine.api import encode
    from skn.inputs.layout import Template

    rows = encode(loaded, examples, Template.PLAIN, P)
    results = {}
    for budget in (0, 1 << 30):
        config = TrainConfig(prompt_len=P, steps=6, batch_size=4, eval_every=3, instruction_cache_bytes=budget)
        results[budget] = train_prompt(loaded, list(rows), list(rows[:8]), config)
    without, with_cache = results[0], results[1 << 30]
    assert with_cache.step_forward == without.step_forward == "split"
    assert without.instruction_cache is None and with_cache.instruction_cache is not None
    assert with_cache.instruction_cache.kept == 16 == with_cache.instruction_cache.computed  # each item once, 6 steps
    torch.testing.assert_close(with_cache.prompt, without.prompt, rtol=0, atol=1e-5)
    assert with_cache.best_val_loss == pytest.approx(without.best_val_loss, rel=1e-5)
    assert not torch.equal(with_cache.prompt, init_prompt(loaded, P, seed=0))  # it did train
