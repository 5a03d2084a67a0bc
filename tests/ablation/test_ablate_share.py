"""Several ablation sets in one forward (`share`): each copy of the items gets its own set's edits and
measures what it measures in a forward of its own; several curves (value x where) in one call; the top K
from a `skn compare` consensus."""

from __future__ import annotations

import json
import random
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from skn.ablation.ablate import AblationConfig, Measures, measure, measure_many, measure_sets, passes, prepare
from skn.ablation.ablate_consensus import consensus_targets
from skn.ablation.ablate_curve import combinations, k_curves, scale_curves
from skn.ablation.ablate_files import curve_record
from skn.ablation.ablate_view import curve_figure, curve_html, curve_views
from skn.engine.api import encode
from skn.cli.ablate_render import curve_tables
from skn.ablation.curve_record import parse_curve
from skn.inputs.data import Example
from skn.errors import RunDirError, UsageError
from skn.ablation.intervention import Target, Value, ValueKind, Where, build_intervention, parse_values, parse_wheres
from skn.inputs.layout import Template
from skn.inputs.metrics import parse_metric
from skn.training.prompt import init_prompt

from fake_run import make_run
from helpers import plant_neuron, tiny_loaded

P = 3
# Stacked and single forwards run the same float32 operations on the same rows; only the batch size of the
# matrix products differs, which can change their blocking (and so the order of a dot product's partial
# sums). A per-item loss is a mean of log-softmax values of magnitude ~5: a reordered float32 sum moves it
# by a few ulps of 5 (~1e-6). 1e-5 absolute is ten times that, far below any effect the tests plant (> 1e-2).
ATOL = 1e-5  # (on this CPU the stacked measures came out bitwise equal)


def _examples(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    return [Example("".join(rng.choice("abcde ") for _ in range(rng.randint(1, 12))),
                    "".join(rng.choice("xyz") for _ in range(rng.randint(1, 4))), {"i": i}, f"t:{i}") for i in range(n)]


def _data(loaded: object, n: int = 7, metric: str = "confidence", batch_size: int = 3, split: bool = True) -> object:
    data = _examples(n, 0)
    prompt = init_prompt(loaded, P, seed=0)  # type: ignore[arg-type]
    rows = encode(loaded, data, Template.PLAIN, P)  # type: ignore[arg-type]
    alts = [Example(e.instruction, e.completion + "x", e.meta, e.source) for e in data]
    alt_rows = encode(loaded, alts, Template.PLAIN, P)  # type: ignore[arg-type]
    return prepare(loaded, prompt, rows, data, parse_metric(metric), alt_rows, list(range(n)), True, batch_size, split)  # type: ignore[arg-type]


def _same(a: Measures, b: Measures) -> None:
    for x, y in ((a.loss, b.loss), (a.metric, b.metric), (a.correct, b.correct)):
        assert x is not None and y is not None
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=0, atol=ATOL)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_stacked_sets_measure_what_each_measures_alone(arch: str) -> None:
    loaded = tiny_loaded(arch, seed=3, init_range=0.2)
    width, layers = loaded.sites.width, loaded.sites.num_layers
    data = _data(loaded)
    mean_x = torch.randn(layers, P, width, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    rng = np.random.default_rng(0)

    def some(n: int) -> tuple[Target, ...]:
        cells = rng.choice(layers * width * P, size=n, replace=False)
        return tuple(Target(int(c) // (width * P), int(c) % width, int(c) // width % P) for c in cells)

    # every kind of set in one stack: none, mean / zero / scale, at the prompt and everywhere, big and small
    stack = [None, build_intervention(some(5), Value(ValueKind.MEAN), Where.PROMPT, mean_x),
             build_intervention(some(30), Value(ValueKind.ZERO), Where.ALL, mean_x),
             build_intervention(some(8), Value(ValueKind.SCALE, 4.0), Where.PROMPT, mean_x),
             build_intervention(some(12), Value(ValueKind.SCALE, -2.0), Where.ALL, mean_x),
             build_intervention(some(40), Value(ValueKind.MEAN), Where.ALL, mean_x)]
    alone = [measure(data, i) for i in stack]  # type: ignore[arg-type]
    together = measure_sets(data, stack)  # type: ignore[arg-type]
    assert len(together) == len(stack)
    for a, t in zip(alone, together, strict=True):
        _same(a, t)
    # the sets really differ (a mix-up of rows could not pass the check above)
    assert all(float((a.loss - alone[0].loss).abs().max()) > 1e-3 for a in alone[1:])
    # in chunks of 4: the last chunk holds 2 sets
    chunked = measure_many(data, stack, share=4)  # type: ignore[arg-type]
    for a, t in zip(alone, chunked, strict=True):
        _same(a, t)
    assert passes(6, 4) == 2 and passes(6, 1) == 6 and passes(8, 4) == 2


def test_one_set_per_forward_is_the_original_pass_bitwise() -> None:
    loaded = tiny_loaded("qwen2", seed=4)
    data = _data(loaded, split=False)
    mean_x = torch.zeros(loaded.sites.num_layers, P, loaded.sites.width, dtype=torch.float64)
    one = build_intervention((Target(1, 3, 0), Target(0, 9, 2)), Value(ValueKind.ZERO), Where.PROMPT, mean_x)
    a, b = measure(data, one), measure_many(data, [one], share=1)[0]  # type: ignore[arg-type]
    assert torch.equal(a.loss, b.loss) and a.metric is not None and b.metric is not None and torch.equal(a.metric, b.metric)


def _with_answers(arch: str, model_seed: int, data_seed: int, batch: int, interleaved: bool) -> tuple[object, object, object, list[int]]:
    """A tiny model, 8 items with 3 alternative answers each (interleaved: two items' answers alternate), and
    their ablation data for the split and the full forward: (loaded, split, full, owners)."""
    loaded = tiny_loaded(arch, seed=model_seed, init_range=0.2, window=256)  # gemma3: sliding-window layers no row reaches
    items = _examples(8, data_seed)
    prompt = init_prompt(loaded, P, seed=data_seed)
    rows = encode(loaded, items, Template.PLAIN, P)
    owners = [i for k in range(0, 8, 2) for _ in range(3) for i in (k, k + 1)] if interleaved else [i for i in range(8) for _ in range(3)]
    answers = {i: iter(("x", "yy", "z")) for i in range(8)}  # 3 answers per item
    alts = [Example(items[i].instruction, items[i].completion + next(answers[i]), items[i].meta, items[i].source) for i in owners]
    alt_rows = encode(loaded, alts, Template.PLAIN, P)
    split, full = (prepare(loaded, prompt, rows, items, parse_metric("confidence"), alt_rows, owners, True, batch, way) for way in (True, False))
    assert split.split and not full.split
    return loaded, split, full, owners


def _count_prefixes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batch size of every instruction forward the split runs from now on."""
    import skn.ablation.stacked_forward as stacked

    calls: list[int] = []
    real = stacked.prefix_of
    monkeypatch.setattr(stacked, "prefix_of", lambda loaded, batch, prompt: calls.append(batch.size) or real(loaded, batch, prompt))
    return calls


def _same_alternatives(split: object, full: object, stack: list[object]) -> None:
    """The alternatives' own scores agree (accuracy alone would hide a wrong instruction: every item wins by a margin)."""
    import skn.ablation.stacked_forward as stacked

    with torch.no_grad():
        for (_, _, got), (_, _, want) in zip(stacked.scored(split, split.alt_rows, stack, True),  # type: ignore[arg-type, attr-defined]
                                             stacked.scored(full, full.alt_rows, stack, False), strict=True):  # type: ignore[arg-type, attr-defined]
            for g, w in zip(got, want, strict=True):
                np.testing.assert_allclose(g.loss.numpy(), w.loss.numpy(), rtol=0, atol=ATOL)


# batch 3: the items' instructions in batches of 3, 3, 2; their 24 alternatives in batches of 3 rows, one item's
# three answers each, so one instruction a batch (an item's answers share its instruction). batch 4: items 4, 4;
# alternatives in batches of 4 rows that hold two items' answers (3 + 1, 2 + 2, 1 + 3, ...), two instructions each
# interleaved: the answers of items 0 and 1, then 2 and 3, ... alternate (0, 1, 0 | 1, 0, 1 | 2, 3, 2 | ...)
@pytest.mark.parametrize("arch, batch, interleaved, prefixes", [
    ("qwen2", 3, False, [3, 3, 2] + [1] * 8), ("llama", 3, False, [3, 3, 2] + [1] * 8), ("llama", 4, False, [4, 4] + [2] * 6),
    ("llama", 3, True, [3, 3, 2] + [2] * 8), ("gemma3", 3, True, [3, 3, 2] + [2] * 8)])
def test_sets_at_the_prompt_share_the_instruction(arch: str, batch: int, interleaved: bool, prefixes: list[int],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With the split forward, a stack of sets that edit only the prompt runs each batch's instruction once for
    all of them, and measures what the full forward measures (float32 rounding); a stack with a set that edits
    everywhere runs the instructions once per set, each under its set's edits, and measures what the full
    forward measures too."""
    loaded, split, full, _ = _with_answers(arch, 6, 0, batch, interleaved)
    width, layers = loaded.sites.width, loaded.sites.num_layers  # type: ignore[attr-defined]
    mean_x = torch.randn(layers, P, width, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 3
    prompt_only = [None, build_intervention((Target(1, 3, 0), Target(0, 9, 2)), Value(ValueKind.ZERO), Where.PROMPT, mean_x),
                   build_intervention((Target(0, 1, 1),), Value(ValueKind.SCALE, 5.0), Where.PROMPT, mean_x),
                   build_intervention((Target(1, 7, 2), Target(1, 8, 2)), Value(ValueKind.MEAN), Where.PROMPT, mean_x)]
    calls = _count_prefixes(monkeypatch)
    measured = measure_many(split, prompt_only, share=4)  # type: ignore[arg-type]
    assert calls == prefixes  # the instructions run, per batch, for the 4 sets at once
    reference = measure_many(full, prompt_only, share=1)  # type: ignore[arg-type]
    for a, b in zip(measured, reference, strict=True):
        _same(a, b)
    _same_alternatives(split, full, prompt_only)
    assert all(float((m.loss - measured[0].loss).abs().max()) > 1e-3 for m in measured[1:])  # the edits took effect
    calls.clear()
    everywhere = [*prompt_only, build_intervention((Target(0, 2, 0), Target(1, 5, 1)), Value(ValueKind.SCALE, 4.0), Where.ALL, mean_x)]
    mixed = measure_many(split, everywhere, share=5)  # type: ignore[arg-type]
    assert calls == [5 * n for n in prefixes]  # one copy of the instructions per set: one set edits them
    for a, b in zip(mixed, measure_many(full, everywhere, share=1), strict=True):  # type: ignore[arg-type]
        _same(a, b)
    with pytest.raises(UsageError, match="split forward needs"):
        measure_sets(full, prompt_only, split=True)  # type: ignore[arg-type]


@pytest.mark.parametrize("arch, batch, interleaved", [("llama", 3, False), ("qwen2", 4, True), ("gemma3", 3, True)])
def test_sets_everywhere_run_their_own_instruction(arch: str, batch: int, interleaved: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With the split forward, a stack of sets that edit everywhere (Where.ALL) runs each batch's distinct
    instructions once per set under that set's edits (an item's answers share them within the set), and every
    set, the unablated one among them, measures what the full forward measures, the alternatives' scores too.
    Without the edits in the instruction's forward the measures would differ: the check can fail."""
    import skn.ablation.stacked_forward as stacked

    loaded, split, full, owners = _with_answers(arch, 7, 1, batch, interleaved)
    width, layers = loaded.sites.width, loaded.sites.num_layers  # type: ignore[attr-defined]
    mean_x = torch.randn(layers, P, width, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 3
    stack = [None, build_intervention((Target(0, 4, 0), Target(1, 2, 1)), Value(ValueKind.ZERO), Where.ALL, mean_x),
             build_intervention((Target(0, 6, 2), Target(1, 6, 2)), Value(ValueKind.SCALE, -3.0), Where.ALL, mean_x),
             build_intervention((Target(0, 1, 1), Target(0, 3, 2)), Value(ValueKind.MEAN), Where.ALL, mean_x)]
    # every set edits layer 0, which the later positions read through attention (a last-layer edit at the
    # instruction's positions reaches no scored token, so it could not tell the two prefixes apart)
    calls = _count_prefixes(monkeypatch)
    measured = measure_many(split, stack, share=4)  # type: ignore[arg-type]
    distinct = [len(set(owners[i : i + batch])) for i in range(0, len(owners), batch)]
    assert calls == [4 * min(batch, 8 - i) for i in range(0, 8, batch)] + [4 * d for d in distinct]  # the 8 items, then the answers
    reference = measure_many(full, stack, share=1)  # type: ignore[arg-type]
    for a, b in zip(measured, reference, strict=True):
        _same(a, b)
    _same_alternatives(split, full, stack)
    assert all(float((m.loss - measured[0].loss).abs().max()) > 1e-3 for m in measured[1:])  # the edits took effect
    monkeypatch.setattr(stacked, "instruction_edits", lambda stack: tuple(None for _ in stack))  # edits after the instruction only
    wrong = measure_many(split, stack, share=4)  # type: ignore[arg-type]
    assert all(float((w.loss - r.loss).abs().max()) > 1e-3 for w, r in zip(wrong[1:], reference[1:], strict=True))


def test_four_curves_in_one_call_share_the_controls(tmp_path: Path) -> None:
    loaded = tiny_loaded("qwen2", seed=5)
    width, layers = loaded.sites.width, loaded.sites.num_layers
    data = _data(loaded, n=5, metric="loss", batch_size=5)
    mean_x = torch.randn(layers, P, width, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ranked = [Target(l, i, (l + i) % P) for l in range(layers) for i in range(width)]
    config = AblationConfig(n_controls=3, seed=2)
    configs = combinations(config, parse_values("mean,zero"), parse_wheres("prompt,all"))
    assert [(c.value.text, c.where.value) for c in configs] == [("mean", "prompt"), ("mean", "all"), ("zero", "prompt"), ("zero", "all")]
    shared = k_curves(data, ranked, (1, 10), mean_x, [c.__class__(**{**c.__dict__, "share": 5}) for c in configs], range(5))  # type: ignore[arg-type]
    single = k_curves(data, ranked, (1, 10), mean_x, configs, range(5))  # type: ignore[arg-type]
    per_place = 1 + 2 * 2 * (1 + 3)  # the prompt's curves and everywhere's are measured apart, each with its unablated run
    sets = 2 * per_place
    assert shared[0].sets == single[0].sets == sets and single[0].forwards == sets and shared[0].forwards == 2 * passes(per_place, 5)
    for a, b in zip(shared, single, strict=True):
        for pa, pb in zip(a.points, b.points, strict=True):
            assert [t for t in pa.comparison.ablated.targets] == [t for t in pb.comparison.ablated.targets]
            assert pa.comparison.ablated.effect.loss == pytest.approx(pb.comparison.ablated.effect.loss, abs=ATOL)
            for ca, cb in zip(pa.comparison.controls, pb.comparison.controls, strict=True):
                assert ca.targets == cb.targets and ca.effect.loss == pytest.approx(cb.effect.loss, abs=ATOL)
    # the same control sets in every curve; the curves differ by value and place
    assert all(single[0].points[1].comparison.controls[c].targets == single[3].points[1].comparison.controls[c].targets for c in range(3))
    assert single[0].points[1].comparison.ablated.effect.loss != single[3].points[1].comparison.ablated.effect.loss

    written = json.loads(json.dumps(curve_record(single, "tiny").to_json()))
    assert [(c["config"]["value"], c["config"]["where"]) for c in written["curves"]] == [
        ("mean", "prompt"), ("mean", "all"), ("zero", "prompt"), ("zero", "all")]
    assert written["points"] == written["curves"][0]["points"] and written["config"]["value"] == "mean"
    record = parse_curve(Path("ablation_curve.json"), written)
    views = curve_views(record)
    assert len(views) == 4 and views[3].config.value == "zero" and views[3].config.where == "all"
    figure = curve_figure(record)
    panels = [ax for ax in figure.axes if ax.get_visible()]
    assert len(panels) == 4 and all({a.get_gid() for a in ax.lines} >= {"top", "median"} for ax in panels)
    assert [ax.get_title() for ax in panels][3] == "zero at all positions"
    plt.close(figure)
    assert len(curve_tables(record)) == 4 and curve_html(record).count("<table>") == 4
    # a file of one curve (or one written before there were several) is its own view
    old = parse_curve(Path("ablation_curve.json"),
                      {k: v for k, v in curve_record(single[0], "tiny").to_json().items() if k != "curves"})
    assert len(curve_views(old)) == 1 and len(curve_tables(old)) == 1


def test_consensus_targets_use_the_runs_own_best_slot(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    out = tmp_path / "cmp"
    out.mkdir()
    consensus = [{"rank": 1, "layer": 2, "neuron": 3}, {"rank": 2, "layer": 1, "neuron": 7}, {"rank": 3, "layer": 0, "neuron": 11}]
    (out / "compare.json").write_text(json.dumps({"runs": [{"name": "a", "model": run.info.model, "metric": "m"}], "consensus": consensus}))
    targets = consensus_targets(run, out)
    corr = run.corr.abs().nan_to_num(-1.0)
    assert [(t.layer, t.neuron) for t in targets] == [(2, 3), (1, 7), (0, 11)]
    assert [t.slot for t in targets] == [int(corr[l, :, i].argmax()) for l, i in ((2, 3), (1, 7), (0, 11))]
    assert [t.slot for t in targets] == [0, 2, 3]  # make_run plants these cells as the strong ones
    (out / "compare.json").write_text(json.dumps({"runs": [{"name": "a", "model": "other-model"}], "consensus": consensus}))
    with pytest.raises(UsageError, match="other-model"):
        consensus_targets(run, out)
    (out / "compare.json").write_text(json.dumps({"runs": [], "consensus": [{"layer": 9, "neuron": 0}]}))
    with pytest.raises(UsageError, match="outside"):
        consensus_targets(run, out)
    (out / "compare.json").write_text(json.dumps({"runs": [], "consensus": []}))
    with pytest.raises(RunDirError):
        consensus_targets(run, out)
    with pytest.raises(RunDirError, match="skn compare"):
        consensus_targets(run, tmp_path / "nowhere")


def test_planted_neuron_stands_out_at_k_one_in_shared_forwards() -> None:
    """The fast smoke of test_ablate_curve's planted-neuron test (which departs with 21 controls), here
    with 5 controls sharing forwards with the set: the top 1 moves the loss, the random 1s barely do."""
    loaded = tiny_loaded("qwen2", seed=1)
    plant_neuron(loaded)
    width, layers = loaded.sites.width, loaded.sites.num_layers
    data = _data(loaded, n=6, metric="loss", batch_size=6)
    ranked = [Target(0, 7, P - 1), *(Target(l, i, P - 1) for l in range(layers) for i in range(width) if (l, i) != (0, 7))]
    zero = torch.zeros(layers, P, width, dtype=torch.float64)
    config = AblationConfig(value=Value(ValueKind.ZERO), n_controls=5, seed=1, share=7)  # 7 sets: the unablated model, the top 1, 5 controls
    (curve,) = k_curves(data, ranked, (1,), zero, [config], range(6))  # type: ignore[arg-type]
    point = curve.points[0].comparison
    assert abs(point.ablated.effect.loss) > 10 * max(abs(c.effect.loss) for c in point.controls)
    assert point.summary["loss"].p_empirical == pytest.approx(1 / 6) and curve.forwards == 1
    assert point.summary["loss"].p == point.summary["loss"].p_t  # 5 controls: auto takes the log-t test


def test_steering_curves_at_both_places_share_their_sets() -> None:
    loaded = tiny_loaded("llama", seed=6, init_range=0.2)
    width, layers = loaded.sites.width, loaded.sites.num_layers
    data = _data(loaded, n=4, metric="loss", batch_size=4)
    targets = [Target(1, i, i % P) for i in range(0, 12, 3)]
    config = AblationConfig(n_controls=2, seed=4, share=3)
    zero = torch.zeros(layers, P, width, dtype=torch.float64)
    curves = scale_curves(data, targets, (1.0, 0.0), zero, combinations(config, (), parse_wheres("prompt,all")), range(4))  # type: ignore[arg-type]
    assert [c.config.where for c in curves] == [Where.PROMPT, Where.ALL] and curves[0].sets == 2 * (1 + 2 * 3)  # a base per place
    for curve in curves:
        assert curve.points[0].comparison.ablated.effect.loss == 0.0 or abs(curve.points[0].comparison.ablated.effect.loss) < ATOL
        assert [p.scale for p in curve.points] == [1.0, 0.0]
    # S = 0 is zero-ablation: the same as --value zero at that place
    zeroed = measure(data, build_intervention(targets, Value(ValueKind.ZERO), Where.ALL, zero))  # type: ignore[arg-type]
    base = measure(data, None)  # type: ignore[arg-type]
    assert curves[1].points[1].comparison.ablated.effect.loss == pytest.approx(float((zeroed.loss - base.loss).mean()), abs=ATOL)
    assert abs(curves[1].points[1].comparison.ablated.effect.loss) > 1e-3


def test_value_and_where_lists() -> None:
    assert [v.text for v in parse_values("mean, zero,scale:2")] == ["mean", "zero", "scale:2"]
    assert parse_wheres("prompt,all") == (Where.PROMPT, Where.ALL)
    for bad in ("mean,mean", "", "half"):
        with pytest.raises(UsageError):
            parse_values(bad)
    for bad in ("prompt,prompt", "everywhere", ""):
        with pytest.raises(UsageError):
            parse_wheres(bad)
    with pytest.raises(UsageError, match="--share"):
        AblationConfig(share=0)
