"""Interventions on neurons: which neurons (targets), what value they take, where in the sequence, and
the hook that rewrites them during a forward.

The intervention is the probe's own hook (`skn.engine.probe.capture_activations`, a forward pre-hook on each layer's
neuron module, whose input x [B, T, m] is the activation): the sink rewrites the selected input features in
place before the down projection reads them,

    Where.PROMPT   x[b, prompt_start[b] + k_j, i_j] <- v_j      for every row b and target j = (i_j, k_j)
    Where.ALL      x[b, t, i_j]                   <- v_j      for every row b and every position t

with v_j = mean_x[l, k_j, i_j] (`Value.MEAN`: the neuron's validation mean at slot k_j, from the run's
stats.safetensors; under Where.ALL a neuron listed at several slots takes the mean of their means), 0
(`Value.ZERO`), or x * S (`Value.scale(S)`, steering: S = 0 is zero-ablation, S = 1 the identity). x is the
fresh product act(gate) * up (or the MLP's activation), read by nothing but the down projection, so the
in-place write touches nothing else. Causal attention keeps every position before the prompt bitwise
unchanged under Where.PROMPT.

`skn.ablation.ablate` measures what an intervention changes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from skn.errors import UsageError
from skn.models.model import LoadedModel
from skn.engine.probe import capture_activations


class Where(Enum):
    PROMPT = "prompt"  # the soft-prompt slots prompt_start[b] + k
    ALL = "all"  # every position of the sequence


class ValueKind(Enum):
    MEAN = "mean"
    ZERO = "zero"
    SCALE = "scale"


@dataclass(frozen=True)
class Value:
    """What a selected activation becomes: its validation mean, 0, or itself times `factor`."""

    kind: ValueKind
    factor: float = 1.0

    @property
    def text(self) -> str:
        return f"scale:{self.factor:g}" if self.kind is ValueKind.SCALE else self.kind.value


def parse_value(text: str) -> Value:
    """`mean`, `zero` or `scale:S`."""
    spec = text.strip()
    if spec in ("mean", "zero"):
        return Value(ValueKind(spec))
    if spec.startswith("scale:"):
        try:
            factor = float(spec[len("scale:") :])
        except ValueError:
            raise UsageError(f"--value {spec}: write scale:S with S a number, e.g. scale:0.5") from None
        if not math.isfinite(factor):
            raise UsageError(f"--value {spec}: the factor must be finite")
        return Value(ValueKind.SCALE, factor)
    raise UsageError(f"--value {spec}: write mean, zero or scale:S")


def parse_values(text: str) -> tuple[Value, ...]:
    """`mean`, `zero`, `scale:S` or several of them separated by commas (a curve measures each)."""
    values = tuple(parse_value(p) for p in text.split(",") if p.strip())
    if not values:
        raise UsageError("--value: give mean, zero or scale:S")
    if len(set(values)) != len(values):
        raise UsageError(f"--value {text}: a value is listed twice")
    return values


def parse_wheres(text: str) -> tuple[Where, ...]:
    """`prompt`, `all` or both, separated by commas."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    choices = {w.value: w for w in Where}
    bad = [p for p in parts if p not in choices]
    if bad or not parts:
        raise UsageError(f"--where {text}: write prompt, all or prompt,all")
    if len(set(parts)) != len(parts):
        raise UsageError(f"--where {text}: a place is listed twice")
    return tuple(choices[p] for p in parts)


@dataclass(frozen=True)
class Target:
    """Neuron `neuron` of layer `layer` at soft-prompt slot `slot`."""

    layer: int
    neuron: int
    slot: int

    @property
    def text(self) -> str:
        return f"{self.layer}.{self.neuron}@{self.slot}"


def parse_targets(text: str, num_layers: int, prompt_len: int, width: int) -> tuple[Target, ...]:
    """`L.I[@k],...`; without @k the neuron is taken at every slot 0..P-1."""
    targets: list[Target] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            head, _, slot_text = part.partition("@")
            layer_text, _, neuron_text = head.partition(".")
            layer, neuron = int(layer_text), int(neuron_text)
            slots = [int(slot_text)] if slot_text else list(range(prompt_len))
        except ValueError:
            raise UsageError(f"--neurons: '{part}' is not L.I or L.I@k (layer, neuron, prompt slot)") from None
        if not 0 <= layer < num_layers or not 0 <= neuron < width:
            raise UsageError(f"--neurons: '{part}' is outside the model's {num_layers} layers x {width} neurons")
        for slot in slots:
            if not 0 <= slot < prompt_len:
                raise UsageError(f"--neurons: '{part}': slot {slot} is outside the prompt's 0..{prompt_len - 1}")
            targets.append(Target(layer, neuron, slot))
    if not targets:
        raise UsageError("--neurons: no neuron given")
    if len(set(targets)) != len(targets):
        raise UsageError("--neurons: a neuron is listed twice at the same slot")
    return tuple(targets)


# ---------------------------------------------------------------- the intervention


@dataclass(frozen=True)
class LayerEdit:
    """The edits of one layer: features `neurons` [J] at slots `slots` [J] get `values` [J] (the factor
    under ValueKind.SCALE)."""

    neurons: Tensor  # int64
    slots: Tensor  # int64 (unused under Where.ALL)
    values: Tensor  # float64


@dataclass(frozen=True)
class Intervention:
    where: Where
    value: Value
    edits: Mapping[int, LayerEdit]  # by layer


def build_intervention(targets: Sequence[Target], value: Value, where: Where, mean_x: Tensor) -> Intervention:
    """The edits for `targets`; `mean_x` [L, P, m] float64 is the run's validation mean per cell."""
    by_layer: dict[int, list[Target]] = {}
    for t in targets:
        by_layer.setdefault(t.layer, []).append(t)
    edits = {}
    for layer, chosen in sorted(by_layer.items()):
        if where is Where.ALL:  # one value per neuron: a neuron at several slots takes the mean of their means
            groups: dict[int, list[int]] = {}
            for t in chosen:
                groups.setdefault(t.neuron, []).append(t.slot)
            neurons = list(groups)
            slots = [groups[n][0] for n in neurons]
            means = [float(mean_x[layer, groups[n], n].to(torch.float64).mean()) for n in neurons]
        else:
            neurons = [t.neuron for t in chosen]
            slots = [t.slot for t in chosen]
            means = [float(mean_x[layer, t.slot, t.neuron]) for t in chosen]
        if value.kind is ValueKind.MEAN:
            values = means
        elif value.kind is ValueKind.ZERO:
            values = [0.0] * len(neurons)
        else:
            values = [value.factor] * len(neurons)
        edits[layer] = LayerEdit(
            torch.tensor(neurons, dtype=torch.int64), torch.tensor(slots, dtype=torch.int64),
            torch.tensor(values, dtype=torch.float64),
        )
    return Intervention(where, value, edits)


@dataclass(frozen=True)
class _Group:
    """The edits of one layer that share a kind of write, over all the stacked sets: edit e belongs to set
    `owner[e]` and writes feature `neurons[e]` at slot `slots[e]` (every position under Where.ALL)."""

    where: Where
    scale: bool  # x * v, else x <- v
    owner: Tensor
    neurons: Tensor
    slots: Tensor
    values: Tensor


def _groups(interventions: Sequence[Intervention | None], device: torch.device) -> dict[int, tuple[_Group, ...]]:
    """Per layer, the stacked sets' edits gathered into one group per (where, write kind)."""
    gathered: dict[tuple[int, Where, bool], list[tuple[int, LayerEdit]]] = {}
    for owner, intervention in enumerate(interventions):
        if intervention is None:
            continue
        scale = intervention.value.kind is ValueKind.SCALE
        for layer, edit in intervention.edits.items():
            gathered.setdefault((layer, intervention.where, scale), []).append((owner, edit))
    out: dict[int, list[_Group]] = {}
    for (layer, where, scale), parts in sorted(gathered.items(), key=lambda kv: (kv[0][0], kv[0][1].value, kv[0][2])):
        owners = torch.cat([torch.full((len(e.neurons),), o, dtype=torch.int64) for o, e in parts])
        out.setdefault(layer, []).append(_Group(
            where, scale, owners.to(device), torch.cat([e.neurons for _, e in parts]).to(device),
            torch.cat([e.slots for _, e in parts]).to(device), torch.cat([e.values for _, e in parts]).to(device),
        ))
    return {layer: tuple(groups) for layer, groups in out.items()}


@contextmanager
def intervened(loaded: LoadedModel, intervention: Intervention | Sequence[Intervention | None], prompt_start: Tensor) -> Iterator[None]:
    """While active, every forward of `loaded.model` (a batch whose rows' prompts start at `prompt_start`
    [B]) sees the intervention's edits at its neuron modules.

    Several sets share one forward when `intervention` is a sequence of S of them (None: a set with no
    edits, the unablated model): the batch then holds the same items S times, set s's copy in rows
    s * B/S .. (s + 1) * B/S - 1, and each copy gets its own set's edits, written by one indexed write per
    layer and kind of edit: row r = owner * B/S + b of edit (owner, i, k) is rewritten at prompt_start[r] + k
    (or every position) and feature i. The rows of one set are computed as if the batch held that set
    alone (see `skn.ablation.ablate.measure_sets` for what that means for the last bit)."""
    stack: tuple[Intervention | None, ...] = (intervention,) if isinstance(intervention, Intervention) else tuple(intervention)
    if not stack:
        raise UsageError("no intervention to apply")
    device = loaded.device
    groups = _groups(stack, device)
    starts = prompt_start.to(device)
    sets = len(stack)
    if starts.shape[0] % sets:
        raise UsageError(f"a batch of {starts.shape[0]} rows cannot hold {sets} copies of the same items")
    per_set = starts.shape[0] // sets

    def rewrite(layer: int, x: Tensor) -> None:
        copy = torch.arange(per_set, device=device).unsqueeze(1)  # [b, 1]
        for g in groups[layer]:
            rows = g.owner.unsqueeze(0) * per_set + copy  # [b, E]
            feats = g.neurons.unsqueeze(0).expand_as(rows)
            vals = g.values.to(x.dtype)
            if g.where is Where.ALL:  # x[rows, :, feats] is [b, E, T]
                if g.scale:
                    x[rows, :, feats] = x[rows, :, feats] * vals[None, :, None]
                else:
                    x[rows, :, feats] = vals[None, :, None].expand(rows.shape[0], rows.shape[1], x.shape[1])
                continue
            cols = starts[rows] + g.slots.unsqueeze(0)  # [b, E]
            if g.scale:
                x[rows, cols, feats] = x[rows, cols, feats] * vals
            else:
                x[rows, cols, feats] = vals.expand_as(cols)

    with capture_activations(loaded, sorted(groups), rewrite):
        yield
