"""Ablation: the hook rewrites exactly what it should, a neuron that drives the output beats random
controls, a neuron with no downstream path changes nothing, and the means are the run's own."""

from __future__ import annotations

from dataclasses import replace

from pathlib import Path

import numpy as np
import pytest
import torch

from skn.ablation.ablate import (
    AblationConfig,
    ablate,
    alternatives,
    choices_of,
    draw_controls,
    empirical_p,
    measure,
    prepare,
    sample_items,
)
from skn.ablation.intervention import Target, Value, ValueKind, Where, build_intervention, intervened, parse_targets, parse_value
from skn.ablation.ablate_view import ablation_html, describe, effect_rows
from skn.ablation.ablate_files import ABLATION_FILE, read_ablation
from skn.ablation.ablate_run import AblationRequest, run_ablation
from skn.engine.api import encode, probe
from skn.engine.probe_config import ProbeConfig
from skn.files.probe_files import write_probe_run
from skn.inputs.data import Example
from skn.errors import RunDirError, UsageError
from skn.inputs.layout import Template, make_batch, pad_id
from skn.inputs.metrics import parse_metric
from skn.training.prompt import init_prompt, splice
from skn.files.rundir import PromptFile, write_prompt
from skn.files.probe_read import read_probe_run, run_prompt

from helpers import ABLATION_P, ablation_data, examples, hooked_activations, plant_neuron, tiny_loaded

P = ABLATION_P


def test_planted_neuron_beats_every_control() -> None:
    loaded = tiny_loaded("qwen2", seed=1)
    plant_neuron(loaded)
    data, _ = ablation_data(loaded)
    mean_x = torch.zeros(2, P, 48, dtype=torch.float64)
    targets = tuple(Target(0, 7, k) for k in range(P))
    config = AblationConfig(value=Value(ValueKind.ZERO), n_controls=9, per_neuron=1, seed=3)
    result = ablate(data, targets, mean_x, config, range(12))  # type: ignore[arg-type]
    effect = result.comparison.ablated.effect.loss
    controls = [abs(c.effect.loss) for c in result.comparison.controls]
    assert abs(effect) > 10 * max(controls), (effect, controls)
    summary = result.comparison.summary["loss"]
    assert summary.p_empirical == pytest.approx(1 / 10)  # the rank test's floor with 9 controls: it cannot say yes
    assert summary.p == summary.p_t and summary.p_t is not None and summary.p_t < 0.01  # auto: the log-t test can
    assert result.per_neuron[0].effect.loss == pytest.approx(effect)
    # controls keep the layers and slots, never the ablated neuron
    for c in result.comparison.controls:
        assert sorted((t.layer, t.slot) for t in c.targets) == sorted((t.layer, t.slot) for t in targets)
        assert all(t.neuron != 7 for t in c.targets)


@pytest.mark.parametrize("where", [Where.PROMPT, Where.ALL])
@pytest.mark.parametrize("value", ["mean", "zero", "scale:3"])
def test_zeroed_down_projection_column_changes_nothing(where: Where, value: str) -> None:
    loaded = tiny_loaded("llama", seed=2)
    with torch.no_grad():
        loaded.model.model.layers[1].mlp.down_proj.weight[:, 11] = 0.0  # type: ignore[attr-defined]
    data, _ = ablation_data(loaded)
    mean_x = torch.randn(3, P, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 5
    base = measure(data, None)  # type: ignore[arg-type]
    edited = measure(data, build_intervention([Target(1, 11, k) for k in range(P)], parse_value(value), where, mean_x))  # type: ignore[arg-type]
    assert torch.equal(base.loss, edited.loss)
    # and a live neuron at the same place does change it (the test can fail)
    live = measure(data, build_intervention([Target(1, 12, k) for k in range(P)], parse_value(value), where, mean_x))  # type: ignore[arg-type]
    assert not torch.equal(base.loss, live.loss)


def _logits(loaded: object, batch: object, prompt: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return loaded.model(inputs_embeds=splice(loaded, batch, prompt), attention_mask=batch.attention_mask).logits  # type: ignore[attr-defined, arg-type]


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_prompt_ablation_leaves_the_instruction_bitwise_equal(arch: str) -> None:
    loaded = tiny_loaded(arch, seed=4)
    data = examples(9, seed=2)
    prompt = init_prompt(loaded, P, seed=1)  # type: ignore[arg-type]
    rows = encode(loaded, data, Template.PLAIN, P)  # type: ignore[arg-type]
    batch = make_batch(rows, P, pad_id(loaded.tokenizer))  # type: ignore[attr-defined]
    width = loaded.sites.width  # type: ignore[attr-defined]
    targets = [Target(layer, i, k) for layer in range(2) for i in range(0, width, 3) for k in range(P)]
    intervention = build_intervention(targets, Value(ValueKind.ZERO), Where.PROMPT, torch.zeros(2, P, width, dtype=torch.float64))
    plain = _logits(loaded, batch, prompt)
    with intervened(loaded, intervention, batch.prompt_start):  # type: ignore[arg-type]
        edited = _logits(loaded, batch, prompt)
    for b in range(batch.size):
        start = int(batch.prompt_start[b])
        assert torch.equal(plain[b, :start], edited[b, :start])
        assert not torch.equal(plain[b, start:], edited[b, start:])


def test_mean_value_is_the_runs_own_validation_mean(tmp_path: Path) -> None:
    loaded = tiny_loaded("qwen2", seed=0)
    data = examples(17, seed=3)
    prompt = init_prompt(loaded, P, seed=2)  # type: ignore[arg-type]
    result = probe(loaded, prompt, data, "loss", ProbeConfig(batch_size=6, top_k=4))  # type: ignore[arg-type]
    write_probe_run(tmp_path, replace(result, info=replace(result.info, model="tiny")))
    write_prompt(tmp_path, PromptFile(prompt, "tiny", "plain"))
    run = read_probe_run(tmp_path)
    rows = list(encode(loaded, data, Template.PLAIN, P))  # type: ignore[arg-type]
    expected = hooked_activations(loaded, prompt, rows, with_completion=True).mean(axis=0)  # [L, P, m] float64
    targets = [Target(1, 5, 2), Target(0, 17, 0), Target(1, 40, 1)]
    intervention = build_intervention(targets, Value(ValueKind.MEAN), Where.PROMPT, run.stats.mean_x)
    batch = make_batch(rows[:5], P, pad_id(loaded.tokenizer))  # type: ignore[attr-defined]
    seen: dict[int, torch.Tensor] = {}
    with intervened(loaded, intervention, batch.prompt_start):  # type: ignore[arg-type]
        handles = [loaded.sites.modules[l].register_forward_pre_hook(  # type: ignore[attr-defined]
            lambda m, a, l=l: seen.__setitem__(l, a[0].detach().clone())) for l in (0, 1)]
        _logits(loaded, batch, prompt)
        for h in handles:
            h.remove()
    for t in targets:
        for b in range(batch.size):
            got = float(seen[t.layer][b, int(batch.prompt_start[b]) + t.slot, t.neuron])
            assert got == pytest.approx(expected[t.layer, t.slot, t.neuron], rel=1e-5, abs=1e-7)
    # the whole command on the same run: ablation.json with one record per set
    out = run_ablation(loaded, AblationRequest(tmp_path, AblationConfig(n_controls=3, per_neuron=2, items=8, batch_size=4)))  # type: ignore[arg-type]
    record = read_ablation(tmp_path)
    assert (tmp_path / ABLATION_FILE).is_file() and out.forwards == 1 + 1 + 3 + 2
    assert record.n_items == 8 and len(record.controls) == 3 and len(record.per_neuron) == 2
    assert list(record.neurons) == [f"{n.layer}.{n.index}@{n.position}" for n in run.neurons]
    assert "NaN" not in (tmp_path / ABLATION_FILE).read_text()
    assert [r.measure for r in effect_rows(record)] == ["loss", "metric"]  # no choices, no labels: no accuracy
    assert 'id="ablation"' in ablation_html(record) and "<script" not in ablation_html(record)


def test_scale_one_changes_nothing_bitwise() -> None:
    loaded = tiny_loaded("gpt2", seed=1)
    data, _ = ablation_data(loaded)
    width = loaded.sites.width  # type: ignore[attr-defined]
    targets = [Target(0, i, k) for i in range(0, width, 2) for k in range(P)]
    for where in Where:
        edited = measure(data, build_intervention(targets, parse_value("scale:1"), where, torch.zeros(2, P, width, dtype=torch.float64)))  # type: ignore[arg-type]
        assert torch.equal(edited.loss, measure(data, None).loss)  # type: ignore[arg-type]
        # and a factor one step away does change it (the test can fail)
        nudged = measure(data, build_intervention(targets, parse_value("scale:1.01"), where, torch.zeros(2, P, width, dtype=torch.float64)))  # type: ignore[arg-type]
        assert not torch.equal(nudged.loss, edited.loss)


def test_accuracy_against_the_choices() -> None:
    loaded = tiny_loaded("qwen2", seed=0)
    data = [Example(f"Question: {i}?\nChoices: ab, cd, {'x' * (i % 3 + 1)}\nAnswer:", " " + "x" * (i % 3 + 1), {}, f"t:{i}") for i in range(6)]
    others = alternatives(data)
    assert others is not None and others[0] == (" ab", " cd")
    prompt = init_prompt(loaded, P, seed=0)  # type: ignore[arg-type]
    alt = [Example(e.instruction, a, e.meta, e.source) for e, alts in zip(data, others) for a in alts]
    owner = [i for i, alts in enumerate(others) for _ in alts]
    d = prepare(loaded, prompt, encode(loaded, data, Template.PLAIN, P), data, parse_metric("confidence"),  # type: ignore[arg-type]
                encode(loaded, alt, Template.PLAIN, P), owner, True, batch_size=4)  # type: ignore[arg-type]
    m = measure(d, None)
    assert m.correct is not None and m.metric is not None
    # brute force: total log-probability of each answer, one example at a time
    from skn.training.scoring import completion_scores

    for i, e in enumerate(data):
        totals = []
        for answer in (e.completion, *others[i]):
            rows = encode(loaded, [Example(e.instruction, answer, {}, "")], Template.PLAIN, P)  # type: ignore[arg-type]
            with torch.no_grad():
                s = completion_scores(loaded, make_batch(rows, P, pad_id(loaded.tokenizer)), prompt)  # type: ignore[arg-type, attr-defined]
            totals.append(float(s.token_logprob.sum()))
        assert bool(m.correct[i]) == (totals[0] > max(totals[1:]))


def test_parsing_and_helpers() -> None:
    assert parse_targets("1.5@2, 0.3", 2, 3, 10) == (Target(1, 5, 2), Target(0, 3, 0), Target(0, 3, 1), Target(0, 3, 2))
    for bad in ("2.1", "0.10", "0.1@3", "x", "0.1@0,0.1@0", ""):
        with pytest.raises(UsageError):
            parse_targets(bad, 2, 3, 10)
    assert parse_value("scale:0.5") == Value(ValueKind.SCALE, 0.5)
    for bad in ("half", "scale:x", "scale:inf"):
        with pytest.raises(UsageError):
            parse_value(bad)
    assert choices_of("Q\nChoices: 1, banana, 23\nAnswer:") == ("1", "banana", "23")
    yes_no = [Example("a", " yes", {}, ""), Example("b", " no", {}, "")]
    assert alternatives(yes_no, yes_no * 2) == ((" no",), (" yes",))
    assert alternatives(yes_no) is None  # two examples, two completions: nothing says they are labels
    assert alternatives([Example("a", f" {i}", {}, "") for i in range(12)]) is None
    assert empirical_p(0.5, [0.1, -0.6, 0.2, None]) == pytest.approx(2 / 4)
    assert empirical_p(None, [0.1]) is None
    a = draw_controls([Target(0, 1, 0), Target(0, 2, 0), Target(1, 1, 2)], 5, 4, seed=9)
    assert a == draw_controls([Target(0, 1, 0), Target(0, 2, 0), Target(1, 1, 2)], 5, 4, seed=9)
    for s in a:
        layer0 = [t.neuron for t in s if t.layer == 0]
        assert len(set(layer0)) == 2 and not {1, 2} & set(layer0)
    with pytest.raises(UsageError):
        draw_controls([Target(0, i, 0) for i in range(3)], 5, 1, seed=0)
    assert sample_items(10, 4, 0) == sample_items(10, 4, 0) and len(sample_items(10, 4, 0)) == 4
    assert sample_items(5, 0, 0) == tuple(range(5))
    with pytest.raises(UsageError):
        AblationConfig(n_controls=-1)


def test_holdout_run_ranks_on_selection_and_ablates_confirmation_items(tmp_path: Path) -> None:
    """With a holdout, the ablated set is neurons.json's (ranked on the selection fold, not the whole set)
    and every ablated item comes from the confirmation fold: items that did not choose the neurons."""
    loaded = tiny_loaded("qwen2", seed=0)
    data = examples(24, seed=5)
    prompt = init_prompt(loaded, P, seed=2)  # type: ignore[arg-type]
    result = probe(loaded, prompt, data, "loss", ProbeConfig(batch_size=6, top_k=5, holdout=0.5))  # type: ignore[arg-type]
    write_probe_run(tmp_path, replace(result, info=replace(result.info, model="tiny")))
    write_prompt(tmp_path, PromptFile(prompt, "tiny", "plain"))
    run = read_probe_run(tmp_path)
    assert run.holdout is not None
    confirmation = {int(i) for i in torch.nonzero(run.holdout.folds.confirm).flatten()}
    run_ablation(loaded, AblationRequest(tmp_path, AblationConfig(n_controls=2, per_neuron=0, items=6, batch_size=4)))  # type: ignore[arg-type]
    record = read_ablation(tmp_path)
    assert record.ranked_on == "selection" and record.items_from == "confirmation"
    assert list(record.neurons) == [f"{n.layer}.{n.index}@{n.position}" for n in run.neurons]
    indices = {row.index for row in record.per_example}
    assert len(indices) == 6 and indices <= confirmation
    assert "items (confirmation fold)" in describe(record)


def test_a_run_that_reused_a_prompt_is_ablated_with_that_prompt(tmp_path: Path) -> None:
    """A run probed with --prompt holds no prompt.safetensors; run.json names the prompt, and skn ablate
    reads it from there (skn.files.probe_read.run_prompt); gone from there, one RunDirError saying so."""
    loaded = tiny_loaded("qwen2", seed=0)
    data = examples(12, seed=5)
    prompt = init_prompt(loaded, P, seed=2)  # type: ignore[arg-type]
    given = write_prompt(tmp_path / "given", PromptFile(prompt, "tiny", "plain"))
    result = probe(loaded, prompt, data, "loss", ProbeConfig(batch_size=6, top_k=3))  # type: ignore[arg-type]
    run_dir = tmp_path / "run"
    write_probe_run(run_dir, replace(result, info=replace(result.info, model="tiny", prompt=str(tmp_path / "given"))))
    run = read_probe_run(run_dir)
    assert not (run_dir / "prompt.safetensors").exists()
    assert torch.equal(run_prompt(run_dir, run).prompt, prompt)
    run_ablation(loaded, AblationRequest(run_dir, AblationConfig(n_controls=2, per_neuron=0, items=4, batch_size=4)))  # type: ignore[arg-type]
    assert read_ablation(run_dir).n_items == 4
    given.unlink()
    with pytest.raises(RunDirError, match="not readable from here"):
        run_prompt(run_dir, run)


def test_controls_match_a_neuron_given_at_every_slot() -> None:
    """`--neurons 2.11` stands at every slot: one neuron, so each control is one other neuron at every slot
    (before issue #32 each control was 20 different neurons, one per slot)."""
    every_slot = [Target(2, 11, k) for k in range(20)]
    controls = draw_controls(every_slot, 172, 30, seed=3)
    for control in controls:
        assert len({(t.layer, t.neuron) for t in control}) == 1
        assert sorted(t.slot for t in control) == list(range(20))
        assert control[0].neuron != 11
    assert len({c[0].neuron for c in controls}) > 1  # drawn, not fixed


def test_controls_keep_each_neurons_slot_structure() -> None:
    """Two neurons of a layer, one at slots 0-2 and one at slot 5: each control has two distinct neurons of
    that layer, one at 0-2 and one at 5; a set of one slot per neuron draws as it always did."""
    targets = [Target(1, 4, 0), Target(1, 4, 1), Target(1, 4, 2), Target(1, 9, 5)]
    for control in draw_controls(targets, 40, 20, seed=1):
        by_neuron: dict[int, list[int]] = {}
        for t in control:
            assert t.layer == 1
            by_neuron.setdefault(t.neuron, []).append(t.slot)
        assert sorted(sorted(s) for s in by_neuron.values()) == [[0, 1, 2], [5]]
        assert not {4, 9} & set(by_neuron)
    single = [Target(0, 1, 3), Target(0, 2, 0), Target(1, 1, 2)]
    rng = np.random.default_rng(9)
    first = draw_controls(single, 5, 1, seed=9)[0]
    expected_layer0 = rng.choice(np.array([0, 3, 4]), size=2, replace=False).tolist()
    assert [t.neuron for t in first if t.layer == 0] == expected_layer0
    assert [t.slot for t in first if t.layer == 0] == [0, 3]
