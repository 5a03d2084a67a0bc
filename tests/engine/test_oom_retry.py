"""Out of CUDA memory (skn.engine.oom_retry): a batch that raises torch.cuda.OutOfMemoryError is rolled back and
retried at half the size; the statistics do not depend on where the batches split. The exception is
injected (on CPU) from a hook on the second layer, after the first layer has merged its rows."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from skn.engine.api import encode
from skn.inputs.data import Example
from skn.statistics.folds import assign_folds
from skn.inputs.layout import Template
from skn.inputs.metrics import parse_metric
from skn.models.model import NeuronSites
from skn.statistics.exemplar_store import ActivationStore
from skn.statistics.null import NullAccumulator, NullConfig
from skn.engine.oom_retry import run_batches
from skn.statistics.covariate_moments import CovariateAccumulator
from skn.engine.probe import PassResult, statistics_pass
from skn.ranking.rank import Neuron
from skn.statistics.statistic import Statistic
from skn.training.prompt import init_prompt
from skn.statistics.stats import correlation

from helpers import tiny_loaded

P = 3


def examples(n: int) -> list[Example]:
    rng = random.Random(1)
    return [Example("".join(rng.choice("abcde ") for _ in range(rng.randint(1, 12))), "xy"[: rng.randint(1, 2)],
                    {"score": rng.random()}, f"t:{i}") for i in range(n)]


class Notes:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def task(self, description: str, total: int):  # type: ignore[no-untyped-def]
        from contextlib import contextmanager

        @contextmanager
        def ctx():  # type: ignore[no-untyped-def]
            def advance(steps: int = 1, note: str = "") -> None:
                if note:
                    self.notes.append(note)
            yield advance
        return ctx()


def run(metric: str, batch_size: int, fail: object = None, holdout: bool = False, notes: Notes | None = None,
        others: Callable[[NeuronSites, list[Example]], list[Statistic]] = lambda sites, data: []) -> tuple[PassResult, Tensor]:
    """A pass with the null (and the statistics `others` makes) on the tiny model; the pass and the null's co-moments."""
    loaded = tiny_loaded("llama")
    data = examples(21)
    prompt = init_prompt(loaded, P, seed=0)
    rows = encode(loaded, data, Template.AUTO, P)
    sites = loaded.sites
    null = NullAccumulator(sites.num_layers, P, sites.width, NullConfig(9, 0.1, 0))
    handle = None
    if fail is not None:
        handle = sites.modules[1].register_forward_pre_hook(fail)  # type: ignore[arg-type]
    try:
        passed = statistics_pass(loaded, prompt, rows, data, parse_metric(metric), batch_size, statistics=[null, *others(sites, data)],
                                 confirm=assign_folds(data, 0.5, 0) if holdout else None, retry_oom=True,
                                 progress=notes or Notes())  # type: ignore[arg-type]
    finally:
        if handle is not None:
            handle.remove()
    return passed, null.snapshot().comoments


def too_big(limit: int):  # type: ignore[no-untyped-def]
    def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        if args[0].shape[0] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
    return hook


@pytest.mark.parametrize("metric", ["score", "loss"])
@pytest.mark.parametrize("holdout", [False, True])
def test_every_batch_too_big_shrinks_to_fit_and_matches_that_size(metric: str, holdout: bool) -> None:
    notes = Notes()
    shrunk, null_shrunk = run(metric, 8, too_big(2), holdout, notes)
    plain, null_plain = run(metric, 2, None, holdout)
    assert shrunk.batch_size == 2 and notes.notes == ["out of memory: batch size 4", "out of memory: batch size 2"]
    for name in ("mean_x", "m2_x", "c_xy"):  # the same batches (of 2): bitwise
        assert torch.equal(getattr(shrunk.stats, name), getattr(plain.stats, name)), name
    assert (shrunk.stats.count, shrunk.stats.m2_y) == (plain.stats.count, plain.stats.m2_y) == (21, plain.stats.m2_y)
    assert torch.equal(shrunk.metric, plain.metric)
    assert torch.equal(null_shrunk, null_plain)


def test_one_failure_mid_pass_changes_nothing_but_rounding() -> None:
    calls = [0]

    def once(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        calls[0] += 1
        if calls[0] == 3:  # the third batch, on its first try
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")

    split, null_split = run("score", 4, once)
    plain, null_plain = run("score", 4)
    assert split.batch_size == 2
    # the float32 forward of rows padded to other lengths differs in the last bits; the moments' merge does not add to it
    torch.testing.assert_close(correlation(split.stats), correlation(plain.stats), rtol=0, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(split.stats.mean_x, plain.stats.mean_x, rtol=1e-6, atol=1e-9)
    assert split.stats.count == 21 and split.stats.m2_y == pytest.approx(plain.stats.m2_y, rel=1e-14)
    assert torch.equal(split.metric, plain.metric)
    torch.testing.assert_close(null_split, null_plain, rtol=1e-5, atol=1e-5)  # whole-set null: the same permutations


def run_all(metric: str, batch_size: int, fail: object = None) -> tuple[PassResult, Tensor, Tensor, Tensor]:
    """A pass with every kind of statistic: the null, the covariates' co-moments and the activation store;
    returns the pass, the null's and the covariates' co-moments and every cell's stored activations."""
    made: dict[str, object] = {}

    def others(sites: NeuronSites, data: list[Example]) -> list[Statistic]:
        z = torch.tensor([[len(e.instruction), e.meta["score"]] for e in data], dtype=torch.float64)
        covariates = CovariateAccumulator(z, torch.zeros(len(data), dtype=torch.long), 1, sites.num_layers, P, sites.width)
        store = ActivationStore(sites.num_layers, P, sites.width, 1 << 30)
        made.update(covariates=covariates, store=store, sites=sites)
        return [covariates, store]

    try:
        passed, null = run(metric, batch_size, fail, others=others)
        sites, store, covariates = made["sites"], made["store"], made["covariates"]
        cells = [Neuron(0, layer, index, position, 0.0) for layer in range(sites.num_layers)  # type: ignore[attr-defined]
                 for position in range(P) for index in range(sites.width)]  # type: ignore[attr-defined]
        return passed, null, covariates.fold_xz(0), store.read(cells)  # type: ignore[attr-defined]
    finally:
        if "store" in made:
            made["store"].close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("metric", ["score", "loss"])
def test_every_statistic_is_rolled_back_the_activation_store_too(metric: str) -> None:
    """The retry treats every statistic alike: with the store on (the default, which once turned the retry off)
    a pass whose batches are too big ends as the pass of the size that fits, every statistic bitwise."""
    shrunk, null_shrunk, cov_shrunk, stored_shrunk = run_all(metric, 8, too_big(2))
    plain, null_plain, cov_plain, stored_plain = run_all(metric, 2)
    assert shrunk.batch_size == 2
    assert torch.equal(shrunk.stats.c_xy, plain.stats.c_xy) and torch.equal(shrunk.metric, plain.metric)
    assert torch.equal(null_shrunk, null_plain) and torch.equal(cov_shrunk, cov_plain)
    assert torch.equal(stored_shrunk, stored_plain) and bool(stored_plain.abs().sum() > 0)


def test_a_batch_of_one_that_fails_raises() -> None:
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run("score", 4, too_big(0))


def test_other_errors_are_not_retried() -> None:
    seen: list[tuple[int, int]] = []

    def one_batch(first: int, size: int) -> None:
        seen.append((first, size))
        raise ValueError("not memory")

    with pytest.raises(ValueError):
        run_batches(10, 0, 4, one_batch, lambda done: None, (), retry=True)
    assert seen == [(0, 4)]
