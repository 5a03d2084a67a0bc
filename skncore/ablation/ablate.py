"""Ablation: does a neuron matter to the model's behaviour? Rewrite it in the forward pass, measure, and
compare with random neurons at the same layers and positions.

The intervention (which neurons, what value, where, and the hook) is `skn.ablation.intervention`'s.

Measures, per item (a validation example), from one forward with the completion
(`skn.training.scoring.completion_scores`) plus one per alternative answer where the task has them:

    loss      the per-example loss (mean NLL over the completion tokens, EOS included)
    metric    the run's metric recomputed from the outputs (loss, confidence, correct, python:); a label or
              field metric does not depend on the forward, so it has no effect to measure (None)
    correct   1 when the completion has a higher total log-probability (EOS included) than every
              alternative answer: the "Choices:" line's entries when every item has one naming its
              completion, else the distinct completions of the run when there are 2..MAX_LABELS of them
              and at most half as many as examples (a label task); None otherwise

An effect is mean(ablated) - mean(unablated) over the items. Controls: C random sets drawn with
`numpy.random.default_rng(seed)`, each with, for every layer of the ablated set, as many distinct neurons
of that layer as the set has there, drawn uniformly from those outside the set, at the set's slots. Empirical p for a measure:
(1 + #{controls with |effect| >= |ablated effect|}) / (C + 1).

Cost: one pass over the items (and their alternatives) for the unablated run, one per set: 1 + 1 + C +
(per-neuron count) sets. `items` bounds the items; `share` S measures S sets in each forward (the batch
holds the items once per set), so the sets take ceil(sets / S) passes of S-times-larger forwards: fewer,
larger forwards, the same arithmetic (`measure_sets`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from skn.inputs.data import Example
from skn.errors import UsageError
from skn.inputs.metrics import MetricKind, load_function, metric_after_pass
from skn.ablation.ablate_test import DepartureTest, empirical_p, log_t_p, resolve_test  # noqa: F401  (empirical_p: re-exported)
from skn.ablation.intervention import Intervention, Target, Value, ValueKind, Where, build_intervention
from skn.ablation.stacked_forward import AblationData, scored
from skn.ablation.stacked_forward import prepare as prepare  # re-exported: callers build the data and ablate in one import
from skn.engine.progress import Advance, ProgressSink, SilentProgress

MAX_LABELS = 8  # more distinct completions than this: not a label task, no accuracy
CHOICES_PREFIX = "Choices:"




# ---------------------------------------------------------------- what is measured


@dataclass(frozen=True)
class Measures:
    """Per item: loss, the metric (None where it does not depend on the forward), correct (None without
    alternatives). Tensors [N] float64."""

    loss: Tensor
    metric: Tensor | None
    correct: Tensor | None


@dataclass(frozen=True)
class Effect:
    """mean(ablated) - mean(unablated) over the items, per measure."""

    loss: float
    metric: float | None
    accuracy: float | None

    def get(self, name: str) -> float | None:
        value: float | None = getattr(self, name)
        return value


MEASURES = ("loss", "metric", "accuracy")


def effect_of(base: Measures, ablated: Measures) -> Effect:
    def diff(a: Tensor | None, b: Tensor | None) -> float | None:
        return None if a is None or b is None else float((b - a).mean())

    return Effect(float((ablated.loss - base.loss).mean()), diff(base.metric, ablated.metric), diff(base.correct, ablated.correct))


def choices_of(instruction: str) -> tuple[str, ...]:
    """The entries of the instruction's last "Choices:" line, split on commas."""
    lines = [line for line in instruction.splitlines() if line.strip().startswith(CHOICES_PREFIX)]
    if not lines:
        return ()
    body = lines[-1].strip()[len(CHOICES_PREFIX) :]
    return tuple(c.strip() for c in body.split(",") if c.strip())


def alternatives(examples: Sequence[Example], population: Sequence[Example] = ()) -> tuple[tuple[str, ...], ...] | None:
    """Per item, the other answers the completion competes with (see the module docstring), or None.
    Labels are the distinct completions of `population` (default: the items), a label task when there are
    2..MAX_LABELS of them and at most half as many as examples."""
    per_item = []
    for e in examples:
        choices = choices_of(e.instruction)
        if e.completion.strip() not in choices:
            break
        lead = e.completion[: len(e.completion) - len(e.completion.lstrip())]
        per_item.append(tuple(lead + c for c in choices if c != e.completion.strip()))
    else:
        if examples:
            return tuple(per_item)
    pool = population or examples
    labels = sorted({e.completion for e in pool})
    if 2 <= len(labels) <= MAX_LABELS and 2 * len(labels) <= len(pool) and all(e.completion in labels for e in examples):
        return tuple(tuple(c for c in labels if c != e.completion) for e in examples)
    return None


def measure_sets(data: AblationData, stack: Sequence[Intervention | None], split: bool = False) -> tuple[Measures, ...]:
    """Every item's measures under each intervention of `stack` (None: the unablated model), all of them in
    one pass over the items: each forward holds a batch of items once per intervention.

    The items of one set see the same padding and the same arithmetic as in a forward of their own, but a
    larger batch may make the matrix products take other blocking paths (CPU BLAS, cuBLAS heuristics), so
    a stacked set's measures equal the set-by-set ones to float32 rounding (tests/ablation/test_ablate_share.py),
    not always to the last bit. With one set per forward (`share` = 1) the pass is the original one.

    `split` (where the model takes it, `data.split`): the split forward, each batch's distinct instructions run
    once for the sets that edit only the prompt and once for each set that edits everywhere
    (`skn.ablation.stacked_forward.scored`); equal to the full forward's measures to float32 rounding. Measures
    that are compared with each other must come from the same forward, so `measure_many` decides it once for its
    whole stack."""
    if split and not data.split:
        raise UsageError("the split forward needs a model that takes it (skn.training.split_forward)")
    if not stack:
        return ()
    output_metric = not data.spec.known_before_pass
    function = load_function(data.spec) if data.spec.kind is MetricKind.PYTHON else None
    sets = len(stack)
    losses: list[list[Tensor]] = [[] for _ in range(sets)]
    metrics: list[list[Tensor]] = [[] for _ in range(sets)]
    totals: list[list[Tensor]] = [[] for _ in range(sets)]
    with torch.no_grad():
        for first, n, per_set in scored(data, data.rows, stack, split):
            for s, scores in enumerate(per_set):
                losses[s].append(scores.loss)
                totals[s].append(scores.token_logprob.sum(dim=1))
                if output_metric:
                    metrics[s].append(metric_after_pass(data.spec, data.examples[first : first + n], scores, function))
        correct: list[Tensor | None] = [None] * sets
        if data.has_alternatives:
            best_other = [torch.full((len(data.rows),), -math.inf, dtype=torch.float64) for _ in range(sets)]
            owner = torch.tensor(data.alt_owner, dtype=torch.int64)
            for first, n, per_set in scored(data, data.alt_rows, stack, split):
                for s, scores in enumerate(per_set):
                    best_other[s].scatter_reduce_(0, owner[first : first + n], scores.token_logprob.sum(dim=1), reduce="amax")
            correct = [(torch.cat(totals[s]) > best_other[s]).to(torch.float64) for s in range(sets)]
    return tuple(Measures(torch.cat(losses[s]), torch.cat(metrics[s]) if output_metric else None, correct[s]) for s in range(sets))


def measure(data: AblationData, intervention: Intervention | None) -> Measures:
    """Every item's measures with the intervention in place (None: the unablated model)."""
    return measure_sets(data, (intervention,))[0]


class SetStore(Protocol):
    """Where the measures of each forward's sets are kept, so that a rerun measures only what is missing
    (skn.ablation.ablate_checkpoint's file; `NoStore` keeps nothing)."""

    def known(self, chunk: Sequence[Intervention | None], split: bool) -> tuple[Measures, ...]:
        """The measures of exactly these sets in one forward, if kept; () if not."""
        ...

    def keep(self, chunk: Sequence[Intervention | None], split: bool, measures: Sequence[Measures]) -> None: ...


@dataclass(frozen=True)
class NoStore:
    """Keeps nothing: every set is measured."""

    def known(self, chunk: Sequence[Intervention | None], split: bool) -> tuple[Measures, ...]:
        return ()

    def keep(self, chunk: Sequence[Intervention | None], split: bool, measures: Sequence[Measures]) -> None:
        """Nothing to keep."""


def measure_many(data: AblationData, stack: Sequence[Intervention | None], share: int = 1,
                 advance: Advance | None = None, store: SetStore = NoStore()) -> tuple[Measures, ...]:
    """`measure` for each intervention, `share` of them per pass over the items (ceil(len / share) passes); with
    the split forward where the model takes it (`data.split`), for the whole stack (so every set, the
    unablated model included, is measured by the same forward). A forward whose sets `store` already holds is not run
    again (the same sets in the same forward: the same numbers), and each one run is handed to `store`."""
    if share < 1:
        raise UsageError(f"--share must be at least 1, got {share}")
    split = data.split
    out: list[Measures] = []
    for lo in range(0, len(stack), share):
        part = stack[lo : lo + share]
        measured = store.known(part, split)
        if not measured:
            measured = measure_sets(data, part, split)
            store.keep(part, split, measured)
        out.extend(measured)
        if advance is not None:
            advance(len(part))
    return tuple(out)


def passes(sets: int, share: int) -> int:
    """Passes over the items that `sets` measured sets take, `share` per pass."""
    return -(-sets // share)


# ---------------------------------------------------------------- controls and comparison


def draw_controls(
    targets: Sequence[Target], width: int, count: int, seed: int, fallback: bool = False
) -> tuple[tuple[Target, ...], ...]:
    """`count` random sets like `targets`: per layer, as many distinct neurons as the set has there, drawn
    uniformly from those of the layer not in the set, each given the slots of one of the set's neurons (a
    neuron listed at every slot is one neuron, and so is each of its controls). A layer with too few
    neurons outside the set is an error, or with `fallback` (a curve up to every neuron) drawn from every
    neuron of the layer."""
    rng = np.random.default_rng(seed)
    slots: dict[int, dict[int, list[int]]] = {}  # layer -> neuron -> its slots
    for t in targets:
        slots.setdefault(t.layer, {}).setdefault(t.neuron, []).append(t.slot)
    # per layer, the set's neurons' slot lists in a fixed order (by slots): control neuron j takes list j
    shapes = {layer: sorted(sorted(s) for s in by_neuron.values()) for layer, by_neuron in slots.items()}
    pools = {}
    for layer, by_neuron in sorted(slots.items()):
        used = set(by_neuron)
        if fallback and width - len(used) < len(used):
            used = set()
        pools[layer] = np.array(sorted(set(range(width)) - used), dtype=np.int64)
        if len(pools[layer]) < len(by_neuron):
            raise UsageError(f"layer {layer} has {len(pools[layer])} neurons outside the set, fewer than the "
                             f"{len(by_neuron)} a control needs")
    sets = []
    for _ in range(count):
        drawn: list[Target] = []
        for layer, lists in sorted(shapes.items()):
            picks = rng.choice(pools[layer], size=len(lists), replace=False).tolist()
            drawn.extend(Target(layer, int(i), slot) for i, slot_list in zip(picks, lists) for slot in slot_list)
        sets.append(tuple(drawn))
    return tuple(sets)


@dataclass(frozen=True)
class Spread:
    mean: float | None
    std: float | None  # sample std (n-1); None for fewer than 2 controls
    p: float | None  # the chosen test's (skn.ablation.ablate_test)
    p_empirical: float | None = None
    p_t: float | None = None  # the log-t test's


def spread(effect: float | None, controls: Sequence[float | None], test: DepartureTest = DepartureTest.EMPIRICAL) -> Spread:
    """The controls' mean and spread, and the set's p under both tests (`p` under `test`, resolved)."""
    values = [c for c in controls if c is not None]
    if not values:
        return Spread(None, None, None)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    empirical, t = empirical_p(effect, values), log_t_p(effect, values)
    return Spread(float(np.mean(values)), std, t if test is DepartureTest.LOG_T else empirical, empirical, t)


@dataclass(frozen=True)
class SetEffect:
    """One ablated set and its effect."""

    label: str
    targets: tuple[Target, ...]
    effect: Effect


@dataclass(frozen=True)
class ControlComparison:
    """A set against its random controls: one point of a curve over K (or over a steering factor)."""

    ablated: SetEffect
    measures: Measures  # per item, with the set ablated
    controls: tuple[SetEffect, ...]
    summary: Mapping[str, Spread]  # by measure: loss, metric, accuracy


def comparison_of(base: Measures, label: str, sets: Sequence[Sequence[Target]], measures: Sequence[Measures],
                  test: DepartureTest = DepartureTest.EMPIRICAL) -> ControlComparison:
    """The first set (the one under test) against the others (its controls), from their measures; `p` under `test`."""
    ablated = SetEffect(label, tuple(sets[0]), effect_of(base, measures[0]))
    controls = tuple(SetEffect(f"control {c}", tuple(t), effect_of(base, m)) for c, (t, m) in enumerate(zip(sets[1:], measures[1:], strict=True), start=1))
    summary = {m: spread(ablated.effect.get(m), [s.effect.get(m) for s in controls], test) for m in MEASURES}
    return ControlComparison(ablated, measures[0], controls, summary)


# ---------------------------------------------------------------- the whole ablation


@dataclass(frozen=True)
class AblationConfig:
    """How `ablate` measures a set; each field's `help` is its `skn ablate` option's (skn.cli.ablate_cmd)."""

    value: Value = field(default=Value(ValueKind.MEAN), metadata={
        "help": "mean (the neuron's validation mean at the slot), zero, or scale:S; with --curve several, e.g. mean,zero "
                "(one curve each)."})
    where: Where = field(default=Where.PROMPT, metadata={
        "help": "prompt: the soft-prompt slots; all: every position of the sequence; with --curve or --scales both: "
                "prompt,all."})
    n_controls: int = field(default=20, metadata={"help": "Random sets of the same size, layers and slots."})
    per_neuron: int = field(default=10, metadata={"help": "Ablate this many neurons of the set one at a time."})
    items: int = field(default=0, metadata={"help": "Sample this many validation items (seeded; 0 = all)."})
    seed: int = field(default=0, metadata={"help": "Seeds the item sample and the controls."})
    batch_size: int = field(default=16, metadata={"help": "Items per forward (per set)."})
    share: int = field(default=1, metadata={
        "help": "Sets measured together in one forward (the items repeated once per set): ceil(sets / share) passes, "
                "each forward share x --batch-size rows."})
    test: DepartureTest = field(default=DepartureTest.AUTO, metadata={  # skn.ablation.ablate_test
        "help": "The set against its controls: empirical (rank; needs C >= G / 0.05 - 1 over G points), log-t (a "
                "prediction-interval t test on log |effect|; ~10 controls suffice), auto = empirical where it can "
                "reach 0.05, else log-t."})

    def __post_init__(self) -> None:
        if self.n_controls < 0:
            raise UsageError(f"--controls must not be negative, got {self.n_controls}")
        if self.per_neuron < 0:
            raise UsageError(f"--per-neuron must not be negative, got {self.per_neuron}")
        if self.items < 0:
            raise UsageError(f"--items must not be negative, got {self.items}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.share < 1:
            raise UsageError(f"--share must be at least 1, got {self.share}")


@dataclass(frozen=True)
class AblationResult:
    config: AblationConfig
    metric: str
    items: tuple[int, ...]  # indices into the run's examples.jsonl
    base: Measures
    comparison: ControlComparison
    per_neuron: tuple[SetEffect, ...]
    forwards: int  # passes over the items: ceil(sets / share)
    seconds: float
    info: Mapping[str, object] = field(default_factory=dict)
    sets: int = 0  # sets measured, the unablated model included


def sample_items(n_examples: int, items: int, seed: int) -> tuple[int, ...]:
    """Every index, or a seeded sample of `items` of them in file order."""
    if items == 0 or items >= n_examples:
        return tuple(range(n_examples))
    return tuple(sorted(random.Random(seed).sample(range(n_examples), items)))


def ablate(
    data: AblationData, targets: Sequence[Target], mean_x: Tensor, config: AblationConfig, items: Sequence[int],
    progress: ProgressSink = SilentProgress(), store: SetStore = NoStore(),
) -> AblationResult:
    """Unablated pass, the ablated set, its controls, and the first `per_neuron` neurons one at a time (the
    forwards `store` holds are not run again)."""
    start = time.perf_counter()
    if not targets:
        raise UsageError("nothing to ablate: the set is empty")
    by_neuron: dict[tuple[int, int], list[Target]] = {}
    for t in targets:
        by_neuron.setdefault((t.layer, t.neuron), []).append(t)
    singles = list(by_neuron.values())[: config.per_neuron]
    sets = (tuple(targets), *draw_controls(targets, data.loaded.sites.width, config.n_controls, config.seed), *map(tuple, singles))
    total = 1 + len(sets)
    with progress.task("ablating", total) as advance:
        stack = [None, *(build_intervention(t, config.value, config.where, mean_x) for t in sets)]
        measured = measure_many(data, stack, config.share, advance, store)
    base = measured[0]
    comparison = comparison_of(base, "ablated", sets[: 1 + config.n_controls], measured[1 : 2 + config.n_controls],
                               resolve_test(config.test, config.n_controls, 1))
    per_neuron = []
    for group, measures in zip(singles, measured[2 + config.n_controls :], strict=True):
        label = group[0].text if len(group) == 1 else f"{group[0].layer}.{group[0].neuron}@{len(group)} slots"
        per_neuron.append(SetEffect(label, tuple(group), effect_of(base, measures)))
    return AblationResult(config, data.spec.text, tuple(items), base, comparison, tuple(per_neuron),
                          passes(total, config.share), time.perf_counter() - start, sets=total)
