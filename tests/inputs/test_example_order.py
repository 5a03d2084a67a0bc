"""The same examples in another file order give the same probe (issue #32): the pass's batches and the
holdout's folds follow the examples' text, never their place in the file or their metric."""

from __future__ import annotations

import random

import torch

from skn.engine.api import probe

from skn.engine.probe_config import ProbeConfig
from skn.inputs.data import Example
from skn.inputs.example_order import inverse, pass_order
from skn.statistics.folds import assign_folds
from skn.statistics.null import NullConfig
from skn.training.prompt import init_prompt

from helpers import examples, tiny_loaded

P = 3


def _reordered(data: list[Example], order: list[int]) -> list[Example]:
    """The file rewritten in another order: each example's FILE:LINE is its new line."""
    return [Example(data[i].instruction, data[i].completion, data[i].meta, f"val.jsonl:{j + 1}") for j, i in enumerate(order)]


def test_pass_order_is_a_seeded_permutation_of_the_text() -> None:
    data = examples(40, seed=1)
    order = pass_order(data, 0)
    assert sorted(order) == list(range(40)) and order != tuple(range(40)) and order != pass_order(data, 1)
    assert [inverse(order)[i] for i in order] == list(range(40))
    shuffle = list(range(40))
    random.Random(2).shuffle(shuffle)
    moved = _reordered(data, shuffle)
    assert [moved[i].instruction for i in pass_order(moved, 0)] == [data[i].instruction for i in order]
    changed = [Example(e.instruction, e.completion, {"score": -e.meta["score"]}, e.source) for e in data]  # type: ignore[operator]
    assert pass_order(changed, 0) == order  # never keyed on a field: it may be the metric


def test_folds_do_not_move_when_the_file_is_reordered() -> None:
    data = examples(60, seed=4)
    confirm = assign_folds(data, 0.5, seed=3)
    shuffle = list(range(60))
    random.Random(5).shuffle(shuffle)
    moved = assign_folds(_reordered(data, shuffle), 0.5, seed=3)
    assert [bool(moved[j]) for j in range(60)] == [bool(confirm[i]) for i in shuffle]


def test_a_reordered_file_gives_the_same_probe() -> None:
    """Loss metric (the within-batch null) and a holdout: the same corr, null, folds and held-out r, bitwise,
    with every per-example output following the examples to their new places."""
    loaded = tiny_loaded("llama")
    data = sorted(examples(48, seed=3), key=lambda e: len(e.instruction))  # a file sorted by a group
    prompt = init_prompt(loaded, P, seed=0)  # type: ignore[arg-type]
    config = ProbeConfig(top_k=5, batch_size=8, holdout=0.5, null=NullConfig(permutations=19, seed=2))
    first = probe(loaded, prompt, data, "loss", config)  # type: ignore[arg-type]
    shuffle = list(range(48))
    random.Random(7).shuffle(shuffle)
    second = probe(loaded, prompt, _reordered(data, shuffle), "loss", config)  # type: ignore[arg-type]
    assert torch.equal(torch.nan_to_num(first.corr, 9.0), torch.nan_to_num(second.corr, 9.0))
    assert first.neurons == second.neurons
    assert first.null is not None and second.null is not None
    assert torch.equal(first.null.max_abs_r, second.null.max_abs_r) and first.null.threshold == second.null.threshold
    assert torch.equal(second.metric, first.metric[shuffle])
    assert torch.equal(second.top_activations, first.top_activations[:, shuffle])
    assert first.holdout is not None and second.holdout is not None
    assert torch.equal(second.holdout.folds.confirm, first.holdout.folds.confirm[shuffle])
    assert first.holdout.per_neuron == second.holdout.per_neuron
    assert second.info.extra["pass_order"] == {"batches": "content-keyed shuffle", "seed": 2}
