"""Known-answer models (skn.models.plant, issue #32) on a tiny model: a planted reader is found, ranked first and
passes the null; the same model with nothing planted and shuffled labels rarely passes; a reader that writes
nothing is never called causal and one that writes is; a planted folder loads like any other."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from skn.ablation.ablate import AblationConfig, ablate, prepare
from skn.engine.api import encode, probe
from skn.engine.probe_config import ProbeConfig
from skn.inputs.data import Example
from skn.errors import UsageError
from skn.ablation.intervention import Target, Value, ValueKind, Where
from skn.inputs.layout import Template
from skn.inputs.metrics import parse_metric
from skn.models.model import load_model
from skn.statistics.null import NullConfig
from skn.models.plant import PLANTED_FILE, Plant, planted, read_direction, read_planted, slot_inputs, write_planted
from skn.training.prompt import init_prompt
from skn.ranking.rank import best_scores

from helpers import examples, tiny_loaded

P = 3
LAYER, NEURON = 1, 5


def _labelled(data: list[Example]) -> list[Example]:
    return [Example(e.instruction, e.completion, {**e.meta, "has_e": "e" in e.instruction}, e.source) for e in data]


@pytest.fixture(scope="module")
def setting() -> tuple[object, torch.Tensor, list[Example], object]:
    loaded = tiny_loaded("llama")
    train, val = _labelled(examples(300, seed=1)), _labelled(examples(120, seed=2))
    prompt = init_prompt(loaded, P, seed=0)  # type: ignore[arg-type]
    inputs = slot_inputs(loaded, encode(loaded, train, Template.AUTO, P), prompt, LAYER)  # type: ignore[arg-type]
    direction = read_direction(inputs, torch.tensor([float(e.meta["has_e"]) for e in train]))  # type: ignore[arg-type]
    return loaded, prompt, val, direction


def _standing(result: object) -> tuple[int, float]:
    best = best_scores(result.corr)  # type: ignore[attr-defined]
    score = best.score.abs().nan_to_num(-1.0)
    return int((score > score[LAYER, NEURON]).sum()) + 1, float(best.score[LAYER, NEURON])


def test_a_planted_reader_is_ranked_first_and_passes_the_null(setting: tuple[object, torch.Tensor, list[Example], object]) -> None:
    loaded, prompt, val, direction = setting
    config = ProbeConfig(top_k=5, holdout=0.0, null=NullConfig(99, seed=0))
    before = probe(loaded, prompt, val, "has_e==true", config)  # type: ignore[arg-type]
    with planted(loaded, Plant(LAYER, NEURON, "has_e", 1.0, 0.0), direction):  # type: ignore[arg-type]
        after = probe(loaded, prompt, val, "has_e==true", config)  # type: ignore[arg-type]
    rank_before, _ = _standing(before)
    rank, r = _standing(after)
    assert rank_before > 10 and rank == 1 and abs(r) > 0.7
    assert after.null is not None and after.null.significant[0] and abs(r) > after.null.threshold
    assert (after.neurons[0].layer, after.neurons[0].index) == (LAYER, NEURON)


def test_the_plant_leaves_the_weights_as_they_were(setting: tuple[object, torch.Tensor, list[Example], object]) -> None:
    loaded, _, _, direction = setting
    mlp = loaded.model.model.layers[LAYER].mlp  # type: ignore[attr-defined]
    weights = [m.weight.clone() for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj)]
    with planted(loaded, Plant(LAYER, NEURON, "has_e", 1.0, 2.0, write_token=7), direction):  # type: ignore[arg-type]
        assert not torch.equal(mlp.down_proj.weight, weights[2])
        assert torch.equal(mlp.gate_proj.weight[NEURON + 1], weights[0][NEURON + 1])  # one neuron only
    for module, weight in zip((mlp.gate_proj, mlp.up_proj, mlp.down_proj), weights):
        assert torch.equal(module.weight, weight)
    with pytest.raises(UsageError, match="read strength"):
        Plant(LAYER, NEURON, "has_e", 1.5, 0.0)
    with pytest.raises(UsageError, match="write token"):
        Plant(LAYER, NEURON, "has_e", 1.0, 1.0)


def test_nothing_planted_and_shuffled_labels_rarely_pass(setting: tuple[object, torch.Tensor, list[Example], object]) -> None:
    """The family-wise null on a label of shuffled values: at alpha 0.05, 40 runs expect 2 with a pass; a
    broken null (one that passes the top neuron anyway, or never) is far from that."""
    loaded, prompt, val, _ = setting
    labels = [bool(e.meta["has_e"]) for e in val]
    hits = 0
    for rep in range(40):
        shuffled = labels[:]
        random.Random(rep).shuffle(shuffled)
        data = [Example(e.instruction, e.completion, {"y": v}, e.source) for e, v in zip(val, shuffled)]
        result = probe(loaded, prompt, data, "y==true", ProbeConfig(top_k=1, n_exemplars=0, holdout=0.0,  # type: ignore[arg-type]
                                                                    null=NullConfig(39, seed=rep)))
        assert result.null is not None
        hits += any(result.null.significant)
    assert hits <= 7, hits  # P(>= 8 of 40 | rate 0.05) < 0.001


def _ablate_planted(loaded: object, prompt: torch.Tensor, val: list[Example]) -> tuple[float | None, float | None]:
    rows = encode(loaded, val[:24], Template.AUTO, P)  # type: ignore[arg-type]
    data = prepare(loaded, prompt, rows, val[:24], parse_metric("loss"), (), (), False, batch_size=8)  # type: ignore[arg-type]
    mean_x = torch.zeros(3, P, 40, dtype=torch.float64)
    config = AblationConfig(value=Value(ValueKind.ZERO), where=Where.ALL, n_controls=10, per_neuron=0, seed=1)
    result = ablate(data, [Target(LAYER, NEURON, k) for k in range(P)], mean_x, config, range(24))
    return result.comparison.ablated.effect.loss, result.comparison.summary["loss"].p


def test_a_read_only_plant_is_never_causal_and_a_writing_one_is(setting: tuple[object, torch.Tensor, list[Example], object]) -> None:
    loaded, prompt, val, direction = setting
    with planted(loaded, Plant(LAYER, NEURON, "has_e", 1.0, 0.0), direction):  # type: ignore[arg-type]
        effect, p = _ablate_planted(loaded, prompt, val)
    assert effect == 0.0 and p == 1.0
    token = int(loaded.tokenizer(val[0].completion, add_special_tokens=False)["input_ids"][0])  # type: ignore[attr-defined]
    with planted(loaded, Plant(LAYER, NEURON, "has_e", 1.0, 10.0, write_token=token), direction):  # type: ignore[arg-type]
        effect, p = _ablate_planted(loaded, prompt, val)
    assert effect is not None and abs(effect) > 0.01 and p is not None and p < 0.05, (effect, p)


def test_a_planted_folder_loads_like_any_other(setting: tuple[object, torch.Tensor, list[Example], object], tmp_path: Path) -> None:
    loaded, _, _, direction = setting
    spec = Plant(LAYER, NEURON, "has_e", 1.0, 0.0)
    with planted(loaded, spec, direction):  # type: ignore[arg-type]
        row = loaded.model.model.layers[LAYER].mlp.gate_proj.weight[NEURON].clone()  # type: ignore[attr-defined]
        write_planted(loaded, tmp_path / "m", [spec], {"note": "test"})  # type: ignore[arg-type]
    again = load_model(str(tmp_path / "m"), device="cpu")
    assert torch.equal(again.model.model.layers[LAYER].mlp.gate_proj.weight[NEURON], row)  # type: ignore[attr-defined, union-attr, index]
    assert read_planted(tmp_path / "m") == (spec,)
    assert json.loads((tmp_path / "m" / PLANTED_FILE).read_text())["note"] == "test"
