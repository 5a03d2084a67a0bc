"""The split training forward (instruction under no_grad into the KV cache, prompt + completion with
gradients) is the same computation as the full forward.

Tolerance (float32): per-example losses and per-token log-probabilities within 2e-5 absolute (the
observed gap is ~1e-6: only the order of float additions differs), the prompt's gradient within
1e-4 of its largest entry (observed ~1e-6). `correct` must agree exactly."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from skn.training.scoring import CompletionScores, completion_scores
from skn.inputs.layout import Encoded, make_batch
from skn.models.model import LoadedModel
from skn.training.split_forward import ForwardChoice, StepForward, choose_forward, columns_needed, split_scores, split_support

from helpers import tiny_loaded

LOSS_ATOL = 2e-5
GRAD_REL = 1e-4


def random_rows(shape: list[tuple[int, int]], vocab: int, seed: int, eos: int) -> list[Encoded]:
    gen = torch.Generator().manual_seed(seed)
    return [
        Encoded(tuple(torch.randint(5, vocab, (n,), generator=gen).tolist()),
                tuple(torch.randint(5, vocab, (k,), generator=gen).tolist()) + (eos,))
        for n, k in shape
    ]


def scores_and_grad(fn: object, loaded: LoadedModel, rows: list[Encoded], prompt: torch.Tensor, **kw: bool) -> tuple[CompletionScores, torch.Tensor]:
    prompt = prompt.clone().requires_grad_(True)
    scores = fn(loaded, make_batch(rows, prompt.shape[0], 0), prompt, **kw)  # type: ignore[operator]
    (grad,) = torch.autograd.grad(scores.mean_loss, prompt)
    return scores, grad


def assert_same(loaded: LoadedModel, rows: list[Encoded], prompt_len: int, seed: int = 0, checkpointed: bool = False) -> None:
    d = int(loaded.input_embeddings.weight.shape[1])
    prompt = torch.randn(prompt_len, d, generator=torch.Generator().manual_seed(seed)) * 0.3
    full, g_full = scores_and_grad(completion_scores, loaded, rows, prompt)
    split, g_split = scores_and_grad(split_scores, loaded, rows, prompt, checkpointed=checkpointed)
    torch.testing.assert_close(split.loss, full.loss, rtol=0, atol=LOSS_ATOL)
    torch.testing.assert_close(split.confidence, full.confidence, rtol=0, atol=LOSS_ATOL)
    assert torch.equal(split.correct, full.correct)
    # the token columns start at the first scored column of each layout: compare row-major token lists
    torch.testing.assert_close(split.token_logprob[split.token_mask], full.token_logprob[full.token_mask], rtol=0, atol=LOSS_ATOL)
    assert float(g_full.abs().max()) > 0
    assert float((g_split - g_full).abs().max()) <= GRAD_REL * float(g_full.abs().max())


# very different instruction lengths (1 to 40 tokens), a row without a completion beyond EOS
RAGGED = [(1, 3), (40, 1), (7, 6), (23, 0)]


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gpt2"])
@pytest.mark.parametrize("prompt_len", [1, 5])
def test_split_equals_full_on_ragged_batches(arch: str, prompt_len: int) -> None:
    loaded = tiny_loaded(arch, init_range=0.3)  # large weights: every position matters
    assert split_support(loaded, 100) == ForwardChoice(StepForward.SPLIT)  # type: ignore[arg-type]
    assert_same(loaded, random_rows(RAGGED, 80, 1, 2), prompt_len)  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_split_equals_full_for_batch_size_one(arch: str) -> None:
    loaded = tiny_loaded(arch, init_range=0.3)
    assert_same(loaded, random_rows([(9, 4)], 80, 2, 2), 1)  # type: ignore[arg-type]
    assert_same(loaded, random_rows([(30, 2)], 80, 3, 2), 4)  # type: ignore[arg-type]


def test_checkpointed_split_equals_full() -> None:
    loaded = tiny_loaded("llama", init_range=0.3)
    assert_same(loaded, random_rows(RAGGED, 80, 4, 2), 3, checkpointed=True)  # type: ignore[arg-type]


def test_split_needs_continued_positions() -> None:
    """The check can fail: the suffix without explicit positions (restarting from the cache length,
    which for a short row is not its own length) gives different losses."""
    from skn.training import split_forward
    loaded = tiny_loaded("qwen2", init_range=0.3)
    rows = random_rows([(2, 3), (30, 3)], 80, 5, 2)
    prompt = torch.randn(3, 32, generator=torch.Generator().manual_seed(0)) * 0.3
    batch = make_batch(rows, 3, 0)
    with torch.no_grad():
        full = completion_scores(loaded, batch, prompt).loss  # type: ignore[arg-type]
        model = loaded.model  # type: ignore[attr-defined]
        original = model.forward

        @functools.wraps(original)
        def no_positions(*args: object, **kwargs: object) -> object:
            if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
                kwargs.pop("position_ids", None)
            return original(*args, **kwargs)

        model.forward = no_positions
        try:
            broken = split_forward.split_scores(loaded, batch, prompt).loss  # type: ignore[arg-type]
        finally:
            del model.forward
    assert float((broken - full).abs()[0]) > 1e-3  # the short row moved
    assert float((broken - full).abs()[1]) < LOSS_ATOL  # the longest row is unaffected


def test_stories_split_equals_full(stories_path: Path) -> None:
    from skn.models.model import load_model

    loaded = load_model(str(stories_path), device="cpu")
    rows = random_rows([(3, 2), (50, 1), (17, 5)], 500, 6, 2)
    assert split_support(loaded, 100).forward is StepForward.SPLIT
    assert_same(loaded, rows, 1)
    assert_same(loaded, rows, 20)


def test_empty_instruction_uses_the_full_forward() -> None:
    loaded = tiny_loaded("qwen2", init_range=0.3)
    rows = [Encoded((), (7, 8, 2)), Encoded((9, 10), (11, 2))]
    assert_same(loaded, rows, 2)  # type: ignore[arg-type]


@pytest.mark.parametrize("prompt_len", [1, 5])
def test_sliding_window_layers_split_where_no_batch_reaches_the_window(prompt_len: int) -> None:
    """Gemma 3's layout: sliding-window layers beside full ones. Rows of at most 40 + P + 7 columns, a window of
    64: no key is ever outside the window, so the split equals the full forward. With a window of 8 the rows
    reach it (the cache columns are not positions) and the full forward is used, with the reason."""
    rows = random_rows(RAGGED, 80, 1, 2)
    assert columns_needed(rows, prompt_len) == 40 + prompt_len + 7  # the longest instruction + P + the longest completion
    wide = tiny_loaded("gemma3", init_range=0.3, window=64)
    assert split_support(wide, columns_needed(rows, prompt_len)) == ForwardChoice(StepForward.SPLIT)
    assert_same(wide, rows, prompt_len)  # type: ignore[arg-type]
    narrow = tiny_loaded("gemma3", init_range=0.3, window=8)
    choice = split_support(narrow, columns_needed(rows, prompt_len))
    assert choice.forward is StepForward.FULL and "window of 8 columns" in choice.reason
    prompt = torch.randn(prompt_len, 32, generator=torch.Generator().manual_seed(3)) * 0.3
    batch = make_batch(rows, prompt_len, 0)
    with torch.no_grad():  # why: forced on the narrow window, the split's losses are not the full forward's
        gap = (split_scores(narrow, batch, prompt).loss - completion_scores(narrow, batch, prompt).loss).abs().max()
    assert float(gap) > 1e-2
    assert split_support(wide, 64).forward is StepForward.FULL  # a batch of 64 columns reaches a window of 64
    assert split_support(wide, 63).forward is StepForward.SPLIT


def test_unsupported_models_fall_back_with_a_reason() -> None:
    loaded = tiny_loaded("qwen2")
    config = loaded.model.config  # type: ignore[attr-defined]
    config.layer_types = ["full_attention", "chunked_attention"]
    choice = split_support(loaded, 100)  # type: ignore[arg-type]
    assert choice.forward is StepForward.FULL and "chunked_attention" in choice.reason

    class NoCache(torch.nn.Module):
        def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> None:
            raise AssertionError("not called")

    plain = tiny_loaded("llama")
    object.__setattr__(plain, "model", NoCache())
    choice = split_support(plain, 100)  # type: ignore[arg-type]
    assert choice.forward is StepForward.FULL and "takes no cache" in choice.reason


def test_choose_forward_checks_on_real_rows() -> None:
    loaded = tiny_loaded("gpt2", init_range=0.3)
    rows = random_rows([(4, 2), (12, 3)], 80, 7, 2)
    prompt = torch.zeros(3, 32)
    assert choose_forward(loaded, rows, prompt, 0, 100).forward is StepForward.SPLIT  # type: ignore[arg-type]
    model = loaded.model  # type: ignore[attr-defined]
    original = model.forward

    @functools.wraps(original)
    def forgets_the_cache(*args: object, **kwargs: object) -> object:
        kwargs.pop("cache", None)
        kwargs.pop("past_key_values", None)
        if kwargs.get("attention_mask") is not None:
            kwargs["attention_mask"] = kwargs["attention_mask"][:, -kwargs["inputs_embeds"].shape[1]:]  # type: ignore[index,union-attr]
        return original(*args, **kwargs)

    model.forward = forgets_the_cache
    try:
        choice = choose_forward(loaded, rows, prompt, 0, 100)  # type: ignore[arg-type]
    finally:
        del model.forward
    assert choice.forward is StepForward.FULL and "differ" in choice.reason


def _toy_rows(loaded: LoadedModel, n: int, seed: int) -> list[Encoded]:
    import random

    from skn.engine.api import encode
    from skn.inputs.data import Example
    from skn.inputs.layout import Template

    rng = random.Random(seed)
    examples = [Example("".join(rng.choice("abc") for _ in range(rng.randint(1, 25))), "xyz", {}, f"toy:{i}") for i in range(n)]
    return list(encode(loaded, examples, Template.PLAIN, 3))


def test_split_training_matches_full_training_and_resumes(tmp_path: Path) -> None:
    from skn.training.trainer import TrainConfig, train_prompt

    loaded = tiny_loaded("llama", init_range=0.3)
    rows, val = _toy_rows(loaded, 24, 0), _toy_rows(loaded, 8, 1)  # type: ignore[arg-type]
    config = TrainConfig(prompt_len=3, steps=8, eval_every=4, batch_size=4, lr=0.05)
    split = train_prompt(loaded, rows, val, config, out=tmp_path / "a")  # type: ignore[arg-type]
    full = train_prompt(loaded, rows, val, TrainConfig(**{**config.__dict__, "split_forward": False}))  # type: ignore[arg-type]
    assert (split.step_forward, full.step_forward) == ("split", "full") and split.step_forward_note == ""
    assert split.best_val_loss == pytest.approx(full.best_val_loss, rel=1e-4)
    torch.testing.assert_close(split.prompt, full.prompt, rtol=1e-3, atol=1e-4)
    # interrupted after 4 steps, then resumed: the same as the uninterrupted split run
    short = TrainConfig(**{**config.__dict__, "steps": 4})
    train_prompt(loaded, rows, val, short, out=tmp_path / "b")  # type: ignore[arg-type]
    resumed = train_prompt(loaded, rows, val, config, out=tmp_path / "b", resume=True)  # type: ignore[arg-type]
    assert resumed.step_forward == "split"
    torch.testing.assert_close(resumed.prompt, split.prompt, rtol=1e-5, atol=1e-6)
    assert resumed.best_val_loss == pytest.approx(split.best_val_loss, rel=1e-6)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_kept_prefixes_give_the_fresh_split_for_any_prompt(arch: str) -> None:
    """A validation batch's prefix kept from an evaluation under one prompt scores the batch under another
    prompt exactly as a fresh split does (the prompt's slots in the prefix are masked), and as the full forward
    within the stated tolerance; a budget too small for one prefix keeps nothing and still scores the same."""
    from skn.training.split_forward import PrefixCache

    loaded = tiny_loaded(arch, init_range=0.3)  # large weights: every position matters
    d = int(loaded.input_embeddings.weight.shape[1])
    rows = random_rows(RAGGED, 40, 3, 2)
    batch = make_batch(rows, 4, 0)
    first, second = (torch.randn(4, d, generator=torch.Generator().manual_seed(s)) * 0.3 for s in (1, 2))
    kept, starved = PrefixCache(1 << 30), PrefixCache(1)
    with torch.no_grad():
        kept.scores(loaded, 0, batch, first)
        starved.scores(loaded, 0, batch, first)
        assert kept.bytes > 0 and starved.bytes == 0
        again = kept.scores(loaded, 0, batch, second)
        fresh = split_scores(loaded, batch, second)
        full = completion_scores(loaded, batch, second)
        assert torch.equal(again.loss, fresh.loss) and torch.equal(again.token_logprob, fresh.token_logprob)
        assert torch.equal(starved.scores(loaded, 0, batch, second).loss, fresh.loss)
        torch.testing.assert_close(again.loss, full.loss, rtol=0, atol=LOSS_ATOL)
        assert kept.scores(loaded, 0, batch, second).loss.equal(again.loss)  # the kept cache is not consumed
