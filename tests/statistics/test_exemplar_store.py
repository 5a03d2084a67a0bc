"""The activation store (skn.statistics.exemplar_store): the top activations from the one statistics pass equal those of
the second pass (skn.engine.probe.exemplar_pass), on the tiny models and the stories model, for loss and label
metrics: bitwise in the in-pass mode (label, field: both passes feed the same batches); in the post-pass
mode (loss, ...) the statistics pass also feeds the completion, the longer batches round differently, and
the values agree to POST_PASS_RTOL of the largest |activation| (measured: 2e-7 on the tiny models, 9e-6 on
the 5-layer stories model: the rounding grows with depth), with the same neurons and the same exemplars. A budget too small for every layer falls back to the second pass
for just the neurons it misses, exactly; the scratch file never exceeds its budget."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from skn.engine.api import encode, probe

from skn.engine.probe_config import ProbeConfig
from skn.inputs.data import Example
from skn.statistics.exemplar_store import ActivationStore, top_activations
from skn.engine.probe_config import ExemplarsPass
from skn.inputs.layout import Template
from skn.inputs.metrics import parse_metric
from skn.statistics.null import NullConfig
from skn.engine.probe import exemplar_pass, statistics_pass
from skn.training.prompt import init_prompt
from skn.ranking.rank import Neuron, exemplars

from helpers import FAST, STORIES, run_main, tiny_loaded, write_data

P = 3
POST_PASS_RTOL = 1e-4
METRICS = ["loss", "confidence", "pet==cat", "score"]  # two post-pass, a label and a field (in-pass)


def examples(n: int, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        instruction = "".join(rng.choice("abcde ") for _ in range(rng.randint(1, 12)))  # ragged lengths
        completion = "".join(rng.choice("xyz") for _ in range(rng.randint(1, 4)))
        pet = "cat" if i % 3 == 0 else "dog"
        out.append(Example(instruction, completion, {"score": rng.random(), "pet": pet}, f"t:{i}"))
    return out


def every_cell(layers: int, width: int, seed: int = 0, count: int = 40) -> list[Neuron]:
    """Random cells over every layer and position, the first and last neuron of the last layer included."""
    gen = random.Random(seed)
    cells = [Neuron(1, layers - 1, 0, 0, 0.0), Neuron(2, layers - 1, width - 1, P - 1, 0.0)]
    cells += [Neuron(k + 3, gen.randrange(layers), gen.randrange(width), gen.randrange(P), 0.0) for k in range(count)]
    return cells


def assert_same(got: torch.Tensor, want: torch.Tensor, metric: str) -> None:
    """Bitwise in the in-pass mode; to POST_PASS_RTOL of the largest |activation| after it."""
    if parse_metric(metric).known_before_pass:
        assert torch.equal(got, want)
        return
    tol = POST_PASS_RTOL * float(want.abs().max())
    assert bool(((got - want).abs() <= tol).all())


def stored(loaded: object, prompt: torch.Tensor, rows: list, data: list[Example], metric: str, budget: int,
           batch_size: int = 4) -> ActivationStore:
    sites = loaded.sites  # type: ignore[attr-defined]
    store = ActivationStore(sites.num_layers, P, sites.width, budget)
    statistics_pass(loaded, prompt, rows, data, parse_metric(metric), batch_size, statistics=[store])  # type: ignore[arg-type]
    return store


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gpt2"])
@pytest.mark.parametrize("metric", METRICS)
def test_store_equals_the_second_pass_bitwise(arch: str, metric: str) -> None:
    loaded = tiny_loaded(arch)
    data = examples(13, seed=2)
    prompt = init_prompt(loaded, P, seed=2)  # type: ignore[arg-type]
    rows = list(encode(loaded, data, Template.PLAIN, P))  # type: ignore[arg-type]
    store = stored(loaded, prompt, rows, data, metric, budget=1 << 30)
    try:
        assert store.kept == tuple(range(loaded.sites.num_layers))
        cells = every_cell(loaded.sites.num_layers, loaded.sites.width)
        got = store.read(cells)
        want = exemplar_pass(loaded, prompt, rows, cells, batch_size=4)  # type: ignore[arg-type]
        assert_same(got, want, metric)
        assert store.file_bytes() == store.bytes_written == len(rows) * loaded.sites.num_layers * P * loaded.sites.width * 4
    finally:
        store.close()


def test_store_can_fail_on_a_wrong_cell() -> None:
    """The equality above is not vacuous: a neighbouring cell differs."""
    loaded = tiny_loaded("llama")
    data = examples(9, seed=3)
    prompt = init_prompt(loaded, P, seed=3)  # type: ignore[arg-type]
    rows = list(encode(loaded, data, Template.PLAIN, P))  # type: ignore[arg-type]
    store = stored(loaded, prompt, rows, data, "loss", budget=1 << 30)
    try:
        got = store.read([Neuron(1, 1, 5, 2, 0.0)])
        want = exemplar_pass(loaded, prompt, rows, [Neuron(1, 1, 6, 2, 0.0)], batch_size=4)  # type: ignore[arg-type]
        assert not torch.equal(got, want)
    finally:
        store.close()


@pytest.mark.parametrize("metric", ["loss", "pet==cat"])
def test_budget_keeps_the_deepest_layers_and_falls_back(metric: str) -> None:
    loaded = tiny_loaded("llama")  # 3 layers of 40 neurons
    data = examples(10, seed=4)
    prompt = init_prompt(loaded, P, seed=4)  # type: ignore[arg-type]
    rows = list(encode(loaded, data, Template.PLAIN, P))  # type: ignore[arg-type]
    per_layer = len(rows) * P * loaded.sites.width * 4
    cells = every_cell(3, loaded.sites.width, seed=5)
    want = exemplar_pass(loaded, prompt, rows, cells, batch_size=4)  # type: ignore[arg-type]
    for budget, kept in ((2 * per_layer + 7, (1, 2)), (per_layer, (2,)), (per_layer - 1, ())):
        store = stored(loaded, prompt, rows, data, metric, budget)
        try:
            assert store.kept == kept
            assert store.file_bytes() <= budget and store.bytes_written <= budget
            got, source = top_activations(store, loaded, prompt, rows, cells, 4)  # type: ignore[arg-type]
            assert_same(got, want, metric)
            missing = sum(n.layer not in kept for n in cells)
            assert source.second_pass == (missing > 0) and source.second_pass_neurons == missing
            assert source.store_bytes == len(kept) * per_layer
        finally:
            store.close()


def test_always_runs_the_second_pass_for_every_neuron() -> None:
    loaded = tiny_loaded("qwen2")
    data = examples(8, seed=6)
    prompt = init_prompt(loaded, P, seed=6)  # type: ignore[arg-type]
    rows = list(encode(loaded, data, Template.PLAIN, P))  # type: ignore[arg-type]
    cells = every_cell(2, loaded.sites.width, count=5)
    got, source = top_activations(None, loaded, prompt, rows, cells, 4)  # type: ignore[arg-type]
    assert torch.equal(got, exemplar_pass(loaded, prompt, rows, cells, batch_size=4))  # type: ignore[arg-type]
    assert source.mode is ExemplarsPass.ALWAYS and source.second_pass_neurons == len(cells)


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
@pytest.mark.parametrize("metric", ["loss", "pet==cat"])
def test_probe_one_pass_equals_always(arch: str, metric: str) -> None:
    """The whole probe: same neurons, bitwise the same top activations, hence the same exemplars."""
    loaded = tiny_loaded(arch)
    data = examples(24, seed=7)
    prompt = init_prompt(loaded, P, seed=7)  # type: ignore[arg-type]
    results = {}
    for mode in ExemplarsPass:
        config = ProbeConfig(batch_size=5, top_k=6, null=NullConfig(9, 0.1), exemplars_pass=mode, template=Template.PLAIN)
        results[mode] = probe(loaded, prompt, data, metric, config)  # type: ignore[arg-type]
    one, two = results[ExemplarsPass.AUTO], results[ExemplarsPass.ALWAYS]
    assert one.neurons == two.neurons
    assert_same(one.top_activations, two.top_activations, metric)
    assert one.exemplars(3) == two.exemplars(3)
    assert one.info.extra["exemplars"]["second_pass"] is False  # type: ignore[index]
    assert two.info.extra["exemplars"]["second_pass_neurons"] == 6  # type: ignore[index]


def _cli_probe(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, extra: list[str],
               model: list[str]) -> dict[str, object]:
    out = tmp_path / name
    code, text = run_main(["probe", *model, "--data", str(write_data(tmp_path / "d.jsonl", 40, 1)), *FAST,
                           "--null", "9", "--alpha", "0.1", "--out", str(out), *extra], capsys)
    assert code == 0, text
    run = json.loads((out / "run.json").read_text())
    run["_activations"] = load_file(str(out / "top_activations.safetensors"))["activations"]
    run["_neurons"] = (out / "neurons.json").read_text()
    run["_text"] = text
    return dict(run)


def _exemplars(activations: object) -> list[object]:
    assert isinstance(activations, torch.Tensor)
    return [exemplars(row, 5) for row in activations]


def assert_same_exemplars(got: torch.Tensor, want: torch.Tensor) -> None:
    """The exemplars chosen from `got` are as extreme in `want` as `want`'s own, to POST_PASS_RTOL: the data
    repeat three texts, whose rows tie up to float rounding, so which of the tied items is shown may differ
    with the batches' padding."""
    tol = POST_PASS_RTOL * float(want.abs().max())
    for k in range(want.shape[0]):
        mine, best = exemplars(got[k], 5), exemplars(want[k], 5)
        for picked, right in ((mine.most, best.most), (mine.least, best.least)):
            assert bool(((want[k][list(picked)] - want[k][list(right)]).abs() <= tol).all()), (k, picked, right)


def test_cli_tiny_store_says_it_took_the_second_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _cli_probe(tmp_path, capsys, "tiny", ["--exemplar-store", "1000"], [])
    summary = run["exemplars"]
    assert isinstance(summary, dict)
    assert summary["mode"] == "auto" and summary["store_budget_bytes"] == 1000 and summary["store_bytes"] == 0
    assert summary["second_pass"] is True and summary["second_pass_neurons"] == 5 and summary["store_layers"] is None
    assert "a second pass read 5 top neuron" in str(run["_text"])


@pytest.mark.slow  # three whole CLI runs
def test_cli_fallback_is_exact_and_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny --exemplar-store takes the second pass, says so, and writes what --exemplars-pass always writes."""
    model: list[str] = []  # the bundled model, metric loss
    auto = _cli_probe(tmp_path, capsys, "auto", [], model)
    tiny = _cli_probe(tmp_path, capsys, "tiny", ["--exemplar-store", "1000"], model)
    always = _cli_probe(tmp_path, capsys, "always", ["--exemplars-pass", "always"], model)
    assert auto["exemplars"]["second_pass"] is False and auto["exemplars"]["store_bytes"] > 0  # type: ignore[index]
    assert tiny["exemplars"]["second_pass"] is True and tiny["exemplars"]["store_bytes"] == 0  # type: ignore[index]
    assert tiny["exemplars"]["second_pass_neurons"] == 5  # type: ignore[index]
    assert "a second pass read 5 top neuron" in str(tiny["_text"])
    assert always["exemplars"]["mode"] == "always"  # type: ignore[index]
    assert tiny["_neurons"] == auto["_neurons"] == always["_neurons"]
    assert torch.equal(tiny["_activations"], always["_activations"])  # type: ignore[arg-type]
    assert_same(auto["_activations"], always["_activations"], "loss")  # type: ignore[arg-type]
    assert _exemplars(auto["_activations"]) == _exemplars(always["_activations"])


@pytest.mark.slow  # two whole CLI runs on the stories model
@pytest.mark.skipif(not STORIES.exists(), reason="needs ../shared/models/stories260K-hf")
@pytest.mark.parametrize("metric", ["loss", "animal==cat"])
def test_stories_model_one_pass_equals_always(tmp_path: Path, capsys: pytest.CaptureFixture[str], metric: str) -> None:
    model = ["--model", str(STORIES)]
    auto = _cli_probe(tmp_path, capsys, "auto", ["--metric", metric], model)
    always = _cli_probe(tmp_path, capsys, "always", ["--metric", metric, "--exemplars-pass", "always"], model)
    assert auto["exemplars"]["second_pass"] is False  # type: ignore[index]
    assert auto["_neurons"] == always["_neurons"]
    assert_same(auto["_activations"], always["_activations"], metric)  # type: ignore[arg-type]
    assert_same_exemplars(auto["_activations"], always["_activations"])  # type: ignore[arg-type]


def test_a_negative_budget_is_refused() -> None:
    from skn.errors import UsageError

    with pytest.raises(UsageError, match="--exemplar-store"):
        ProbeConfig(exemplar_store=-1)
    with pytest.raises(UsageError, match="--exemplar-store"):
        ActivationStore(2, P, 8, -5)
