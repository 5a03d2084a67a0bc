"""The probe pass against an independent reference: one unpadded forward per example, a plain
forward pre-hook on the down projection, and numpy float64 Pearson r."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from skn.engine.api import encode, probe

from skn.engine.probe_config import ProbeConfig
from skn.inputs.data import Example
from skn.inputs.layout import Template
from skn.inputs.metrics import parse_metric
from skn.engine.probe import exemplar_pass, statistics_pass
from skn.training.prompt import PromptInit, init_prompt
from skn.ranking.rank import Neuron
from skn.statistics.stats import correlation

from helpers import examples, hooked_activations, reference_metrics, reference_r, tiny_loaded

P = 3


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gpt2"])
@pytest.mark.parametrize("metric", ["loss", "confidence", "correct", "score"])
def test_pass_matches_independent_reference(arch: str, metric: str) -> None:
    loaded = tiny_loaded(arch, init_range=0.5)  # a sharper model: confidence and correct vary between examples
    data = examples(23)
    prompt = init_prompt(loaded, P, seed=0)
    rows = list(encode(loaded, data, Template.PLAIN, P))
    result = statistics_pass(loaded, prompt, rows, data, parse_metric(metric), batch_size=7)
    acts = hooked_activations(loaded, prompt, rows, with_completion=True)
    if metric == "score":
        y = np.array([e.meta["score"] for e in data], dtype=np.float64)
    else:
        y = reference_metrics(loaded, prompt, rows)[metric]  # float64, computed without skn's scoring
    np.testing.assert_allclose(result.metric.numpy(), y, rtol=1e-5, atol=1e-6)
    expected = reference_r(acts, y)
    got = correlation(result.stats).numpy()
    assert result.stats.count == 23
    assert np.array_equal(np.isnan(expected), np.isnan(got))
    if not np.isnan(expected).all():
        assert np.nanmax(np.abs(got - expected)) <= 1e-5


def test_reference_metrics_can_fail() -> None:
    """The reference is not skn's own numbers: a prompt changed by a little moves the loss it gives."""
    loaded = tiny_loaded("qwen2", init_range=0.5)
    data = examples(5)
    prompt = init_prompt(loaded, P, seed=0)
    rows = list(encode(loaded, data, Template.PLAIN, P))
    result = statistics_pass(loaded, prompt, rows, data, parse_metric("loss"), batch_size=5)
    moved = reference_metrics(loaded, prompt + 0.05, rows)["loss"]
    assert np.abs(result.metric.numpy() - moved).max() > 1e-4


def test_exemplar_pass_reads_the_right_neurons() -> None:
    loaded = tiny_loaded("llama")
    data = examples(11, seed=1)
    prompt = init_prompt(loaded, P, seed=1)  # type: ignore[arg-type]
    rows = list(encode(loaded, data, Template.PLAIN, P))  # type: ignore[arg-type]
    neurons = [Neuron(1, 2, 5, 1, 0.0), Neuron(2, 0, 39, 2, 0.0), Neuron(3, 2, 0, 0, 0.0)]
    got = exemplar_pass(loaded, prompt, rows, neurons, batch_size=4)  # type: ignore[arg-type]
    acts = hooked_activations(loaded, prompt, rows, with_completion=True)
    for k, n in enumerate(neurons):
        np.testing.assert_allclose(got[k].numpy(), acts[:, n.layer, n.position, n.index], rtol=1e-5, atol=1e-6)


def planted_model() -> tuple[object, list[Example]]:
    """Qwen2 whose neuron 7 of layer 0 counts the 'q' characters of the instruction, seen from the prompt.

    Dimension 0 of the residual stream carries only the marker: every embedding is 0 there but the
    marker's; layer 0's attention is uniform (q, k = 0) and keeps dimension 0 apart from the others,
    so at a prompt position dimension 0 holds the marker's share of the prefix; only neuron 7 reads
    it directly, the others see a random mixture of the instruction's letters.
    """
    loaded = tiny_loaded("qwen2", seed=3)
    model = loaded.model  # type: ignore[attr-defined]
    tok = loaded.tokenizer  # type: ignore[attr-defined]
    marker = tok.convert_tokens_to_ids("q")
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))  # residual rms ~ 1
        emb[:, 0] = 0.0
        letters = tok.convert_tokens_to_ids(list("abcdefgh"))
        emb[marker] = emb[letters].mean(dim=0)  # replacing letters by markers moves no other dimension on average
        emb[marker, 0] = 0.5
        for index, layer in enumerate(model.model.layers):
            attn, mlp = layer.self_attn, layer.mlp
            if index == 0:
                for proj in (attn.q_proj, attn.k_proj):
                    proj.weight.zero_()
                    proj.bias.zero_()
                # value channel 0 carries residual dimension 0 alone and o_proj returns it to dimension 0
                # alone; every other channel mixes the other dimensions at random, so the prompt
                # positions see the instruction's letters too
                for weight in (attn.v_proj.weight, attn.o_proj.weight):
                    weight.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(1))
                    weight[0, :] = 0.0
                    weight[:, 0] = 0.0
                    weight[0, 0] = 1.0
                attn.v_proj.bias[0] = 0.0
            else:
                attn.v_proj.weight[:, 0] = 0.0
            mlp.gate_proj.weight[:, 0] = 0.0
            mlp.up_proj.weight[:, 0] = 0.0
        mlp0 = model.model.layers[0].mlp
        mlp0.gate_proj.weight[7].zero_()
        mlp0.up_proj.weight[7].zero_()
        mlp0.gate_proj.weight[7, 0] = 3.0
        mlp0.up_proj.weight[7, 0] = 3.0
    rng = random.Random(0)
    data = []
    for i in range(200):
        count = rng.randint(0, 5)
        letters = [rng.choice("abcdefgh") for _ in range(10)]
        for j in rng.sample(range(10), count):
            letters[j] = "q"
        metric = count + rng.gauss(0.0, 1.5)
        data.append(Example("".join(letters), "ok", {"noisy_count": metric}, f"planted:{i}"))
    return loaded, data


def test_planted_neuron_ranks_first() -> None:
    loaded, data = planted_model()
    prompt = init_prompt(loaded, 4, seed=0, init=PromptInit())  # type: ignore[arg-type]
    with torch.no_grad():
        prompt[:, 0] = 0.0
    result = probe(loaded, prompt, data, "noisy_count", ProbeConfig(batch_size=32, top_k=5))  # type: ignore[arg-type]
    top = result.neurons[0]
    assert (top.layer, top.index) == (0, 7), result.neurons
    assert top.r > 0.5
    # the exemplars of the planted neuron are the examples with the most markers
    counts = [e.instruction.count("q") for e in data]
    assert min(counts[i] for i in result.exemplars(5)[0].most) >= max(counts[i] for i in result.exemplars(5)[0].least)
