"""Any neuron, on any text: the activations of named neurons on a run's items or on new texts.

A probe keeps the activations of its top K neurons only (top_activations.safetensors). For any other neuron,
or for texts the run never saw, one prompt-only pass reads them (`skn.engine.probe.exemplar_pass`: instruction and soft
prompt fed, the forward stopped at the deepest layer asked for; what follows the prompt cannot change an
activation at a prompt position):

    loaded = skn.load_model(...)                                   # or skn.wrap_loaded(name, model, tokenizer)
    acts = skn.neuron_activations(loaded, prompt, ["some text", example], [(0, 5), (1, 7, 3)], run=result)
    acts                                                           # [K, N] float32: neuron k on item n

A neuron is (layer, index) or (layer, index, position); one without a position is read at its best position
on the run's ranked r (as neurons.json places the top K: `skn.ranking.rank.best_scores` with the run's reduce).
`run_activations` does the same from a run directory (its prompt, template, items and r), as `skn activations`
and the figures do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
from torch import Tensor

from skn.engine.api import encode
from skn.inputs.data import Example
from skn.errors import RunDirError, UsageError
from skn.inputs.layout import Template
from skn.models.model import LoadedModel
from skn.engine.probe import exemplar_pass
from skn.files.probe_read import read_probe_run, run_prompt, run_template
from skn.engine.progress import AutoProgress, ProgressSink
from skn.ranking.rank import Neuron, Reduce, best_scores
from skn.files.result import ProbeResult
from skn.files.rundir import json_safe


@dataclass(frozen=True)
class NeuronRef:
    """A neuron by name: FFN neuron `index` of layer `layer` at prompt position `position` (None: its best
    position on a run's ranked r)."""

    layer: int
    index: int
    position: int | None = None

    @property
    def text(self) -> str:
        return f"{self.layer}.{self.index}" + (f"@{self.position}" if self.position is not None else "")


NeuronLike = Union[NeuronRef, Neuron, tuple[int, int], tuple[int, int, int]]
"""What names a neuron: a NeuronRef, a ranked Neuron (its position kept), (layer, index) or (layer, index, position)."""

Item = Union[str, Example]
"""A text (fed as the instruction) or an example (its instruction is fed; the completion is not needed)."""


def parse_neurons(text: str, flag: str = "--neuron") -> tuple[NeuronRef, ...]:
    """`L.I[@k],...` (layer, neuron, prompt position; no @k: the best position on the run's r)."""
    refs = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        head, at, position_text = part.partition("@")
        layer_text, dot, index_text = head.partition(".")
        try:
            if not dot or (at and not position_text):
                raise ValueError(part)
            refs.append(NeuronRef(int(layer_text), int(index_text), int(position_text) if at else None))
        except ValueError:
            raise UsageError(f"{flag}: '{part}' is not L.I or L.I@k (layer, neuron, prompt position), e.g. 3.117@2") from None
    if not refs:
        raise UsageError(f"{flag}: no neuron given (write L.I or L.I@k, e.g. 3.117)")
    return tuple(refs)


def as_ref(neuron: NeuronLike) -> NeuronRef:
    if isinstance(neuron, NeuronRef):
        return neuron
    if isinstance(neuron, Neuron):
        return NeuronRef(neuron.layer, neuron.index, neuron.position)
    if isinstance(neuron, tuple) and len(neuron) in (2, 3) and all(isinstance(v, int) and not isinstance(v, bool) for v in neuron):
        return NeuronRef(*neuron)
    raise UsageError(f"neuron {neuron!r}: name it (layer, index) or (layer, index, position)")


def rank_of(corr: Tensor, layer: int, index: int, reduce: Reduce) -> int:
    """The rank (1 = best) the neuron would have in `skn.ranking.rank.rank_neurons(corr, L * m, reduce)`: by |score| at
    its best position, ties in (layer, neuron) order, undefined scores last."""
    score = best_scores(corr, reduce).score.flatten().to(torch.float64)
    key = torch.where(torch.isnan(score), torch.full_like(score, -1.0), score.abs())
    flat = layer * int(corr.shape[2]) + index
    mine = key[flat]
    return int((key > mine).sum()) + int((key[:flat] == mine).sum()) + 1


def resolve(neurons: Sequence[NeuronLike], layers: int, positions: int, width: int, run: ProbeResult | None) -> tuple[Neuron, ...]:
    """Each neuron checked against the model's layers x prompt positions x width, placed (a neuron without a
    position at its best on the run's ranked r) and, with a run, given its r there and its rank; without a
    run, r is NaN and the rank 0."""
    refs = [as_ref(n) for n in neurons]
    if not refs:
        raise UsageError("no neuron given")
    best = best_scores(run.ranked_corr, run.info.reduce) if run is not None else None
    out = []
    for ref in refs:
        if not (0 <= ref.layer < layers and 0 <= ref.index < width):
            raise UsageError(f"neuron {ref.text} is outside the model's {layers} layers x {width} neurons")
        if ref.position is not None and not 0 <= ref.position < positions:
            raise UsageError(f"neuron {ref.text}: position {ref.position} is outside the prompt's 0..{positions - 1}")
        if ref.position is not None:
            position = ref.position
        elif best is not None:
            position = int(best.position[ref.layer, ref.index])
        else:
            raise UsageError(f"neuron {ref.text} has no position: give (layer, index, position), or run= a probe "
                             "result to take its best position")
        if run is None:
            out.append(Neuron(0, ref.layer, ref.index, position, math.nan))
            continue
        r = float(run.ranked_corr[ref.layer, position, ref.index])
        out.append(Neuron(rank_of(run.ranked_corr, ref.layer, ref.index, run.info.reduce), ref.layer, ref.index, position, r))
    return tuple(out)


def as_examples(items: str | Sequence[Item]) -> tuple[Example, ...]:
    """Texts become examples with no completion (a text alone is one item, not a sequence of characters)."""
    chosen = (items,) if isinstance(items, str) else tuple(items)
    out = []
    for i, item in enumerate(chosen):
        if isinstance(item, Example):
            out.append(item)
        elif isinstance(item, str):
            out.append(Example(item, "", {}, f"text {i + 1}"))
        else:
            raise UsageError(f"item {i + 1}: expected a text or an skn.Example, got {type(item).__name__}")
    if not out:
        raise UsageError("no texts to read the neurons on")
    return tuple(out)


def _check_prompt(loaded: LoadedModel, prompt: Tensor) -> None:
    if prompt.dim() != 2 or prompt.shape[1] != loaded.hidden_size:
        raise UsageError(f"the prompt is {tuple(prompt.shape)}, but {loaded.name} needs [P, {loaded.hidden_size}]")


def _read(loaded: LoadedModel, prompt: Tensor, examples: tuple[Example, ...], neurons: tuple[Neuron, ...],
          template: Template, batch_size: int, progress: ProgressSink) -> Tensor:
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    rows = encode(loaded, examples, template, int(prompt.shape[0]))
    return exemplar_pass(loaded, prompt, rows, neurons, batch_size, progress)


def neuron_activations(
    loaded: LoadedModel,
    prompt: Tensor,
    items: str | Sequence[Item],
    neurons: Sequence[NeuronLike],
    run: ProbeResult | None = None,
    template: Template | None = None,
    batch_size: int = 16,
    progress: ProgressSink = AutoProgress(),
) -> Tensor:
    """[K, N] float32: neuron k (at its position) on item n, from one prompt-only pass.

    `prompt` is the soft prompt [P, d] (a TrainResult's `prompt`, or skn.files.rundir.read_prompt(RUN).prompt);
    `run` (the probe's result) places a neuron given without a position at its best one and sets the template;
    `template` (None: the run's, else auto) lays out the items as the probe did."""
    _check_prompt(loaded, prompt)
    chosen = resolve(neurons, loaded.sites.num_layers, int(prompt.shape[0]), loaded.sites.width, run)
    layout = template if template is not None else run_template(run) if run is not None else Template.AUTO
    return _read(loaded, prompt, as_examples(items), chosen, layout, batch_size, progress)


@dataclass(frozen=True)
class RunActivations:
    """Named neurons' activations on a run's items or on new texts."""

    neurons: tuple[Neuron, ...]  # each at its position, with its r on the run's ranked r and its rank among all
    values: Tensor  # [K, N] float32, neurons x examples
    examples: tuple[Example, ...]
    on_run_items: bool  # the run's own validation items (else texts or a data file)
    run_dir: str
    run_id: str
    model: str

    def to_json(self) -> dict[str, object]:
        """Strict JSON (a NaN is null): the run, each neuron with its activation on every item, the items."""
        return {
            "run": self.run_dir,
            "run_id": self.run_id,
            "model": self.model,
            "items": "run" if self.on_run_items else "given",
            "neurons": [{"layer": n.layer, "neuron": n.index, "position": n.position, "rank": n.rank, "r": json_safe(n.r),
                         "activations": [json_safe(float(v)) for v in self.values[k].tolist()]}
                        for k, n in enumerate(self.neurons)],
            "examples": [{"index": i, "instruction": e.instruction, "source": e.source} for i, e in enumerate(self.examples)],
        }


def stored_activations(run: ProbeResult, neurons: tuple[Neuron, ...]) -> Tensor | None:
    """[K, N] from the run's top_activations when every neuron is a top neuron at its ranked position, else None
    (then they need a pass)."""
    rows = {(n.layer, n.index, n.position): k for k, n in enumerate(run.neurons)}
    found = [rows.get((n.layer, n.index, n.position)) for n in neurons]
    if any(k is None for k in found):
        return None
    return run.top_activations[[k for k in found if k is not None]].to(torch.float32)


def run_neurons(run: ProbeResult, neurons: str | Sequence[NeuronLike]) -> tuple[Neuron, ...]:
    """The neurons named (`L.I[@k],...` or a sequence) placed on the run: checked against its r's shape."""
    refs = parse_neurons(neurons) if isinstance(neurons, str) else neurons
    layers, positions, width = (int(s) for s in run.corr.shape)
    return resolve(refs, layers, positions, width, run)


def run_activations(
    loaded: LoadedModel | None,
    run_dir: Path,
    neurons: str | Sequence[NeuronLike],
    items: str | Sequence[Item] = (),
    batch_size: int = 16,
    progress: ProgressSink = AutoProgress(),
    result: ProbeResult | None = None,
) -> RunActivations:
    """`skn activations RUN`: the neurons named (`L.I[@k],...` or a sequence) on the run's items (`items`
    empty) or on `items`, with the run's prompt and template. `loaded` is the run's model; None is enough when
    every neuron is a top neuron of the run at its ranked position and the items are the run's (the stored
    activations are returned), else a UsageError says a model is needed. `result`: the run already read
    (None: read from `run_dir`)."""
    run_dir = Path(run_dir)
    run = result if result is not None else read_probe_run(run_dir)
    chosen = run_neurons(run, neurons)
    on_run = not isinstance(items, str) and len(items) == 0
    examples = run.examples if on_run else as_examples(items)
    stored = stored_activations(run, chosen) if on_run else None
    if stored is None:
        if loaded is None:
            raise UsageError("these neurons' activations are not stored in the run: a model is needed for a pass")
        prompt = run_prompt(run_dir, run).prompt
        _check_prompt(loaded, prompt)
        if tuple(run.corr.shape) != (loaded.sites.num_layers, int(prompt.shape[0]), loaded.sites.width):
            raise RunDirError(f"{run_dir}: its r is {tuple(run.corr.shape)}, but {loaded.name} has {loaded.sites.num_layers} "
                              f"layers x {loaded.sites.width} neurons and the prompt {int(prompt.shape[0])} positions")
        stored = _read(loaded, prompt, examples, chosen, run_template(run), batch_size, progress)
    return RunActivations(chosen, stored, examples, on_run, str(run_dir), run.info.run_id, run.info.model)


__all__ = [
    "Item",
    "NeuronLike",
    "NeuronRef",
    "RunActivations",
    "as_examples",
    "neuron_activations",
    "parse_neurons",
    "rank_of",
    "resolve",
    "run_activations",
    "run_neurons",
    "stored_activations",
]
