"""Each training item's instruction keys and values, computed once and reused by every step and epoch.

The model is frozen and the prompt sits after the instruction, so under causal attention an item's
instruction keys and values never change: not from step to step, not from epoch to epoch, not with the
batch the item lands in. The split forward (skn.training.split_forward) already keeps the instruction out of the
backward; this cache keeps it out of the forward too. A training step then runs only the prompt and the
completion (on HANS-shaped rows 24 of about 84 positions), attending to the kept instruction.

    InstructionCache(budget).prefix(loaded, batch, items, prompt)

returns the batch's `Prefix` (the key/value cache of its instruction columns and their mask), assembled
from each item's kept keys and values. Items not kept yet are run once, together, through the no-grad
prefix forward, and their rows are kept while the cache's bytes stay within `budget`; past it, an item's
instruction is run afresh at every step (bounded memory; nothing is spilled to disk). Rows are stored
unpadded ([kv heads, instruction length, head dim] per layer) and padded again to the batch's longest
instruction: the padding columns are masked, so their values do not matter.

Exactness: an item's keys and values come from a forward over the items missing in that step's batch,
not over the batch itself; under causal attention with right padding they are the same numbers up to the
order of float additions in batched products (the split's own check, `choose_forward`, bounds the loss
difference at 1e-3 relative in float32). The prompt's gradient is unchanged: the instruction was a
constant of the step before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from skn.errors import InternalError
from skn.inputs.layout import Batch
from skn.models.model import LoadedModel
from skn.training.prompt import splice
from skn.training.split_forward import Prefix, run_prefix


@dataclass(frozen=True)
class ItemPrefix:
    """One item's instruction keys and values: per layer [kv heads, length, head dim]."""

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]

    @property
    def length(self) -> int:
        return int(self.keys[0].shape[1]) if self.keys else 0

    @property
    def bytes(self) -> int:
        return sum(int(t.numel()) * t.element_size() for t in (*self.keys, *self.values))


def _layers(cache: object) -> list[tuple[Tensor, Tensor]]:
    """(keys, values) [B, H, T, D] of every layer of a transformers key/value cache."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise InternalError(f"a key/value cache of type {type(cache).__name__} without layers")
    out = []
    for layer in layers:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not isinstance(keys, Tensor) or not isinstance(values, Tensor):
            raise InternalError(f"a key/value cache layer of type {type(layer).__name__} without keys and values")
        out.append((keys, values))
    return out


def _new_cache(loaded: LoadedModel, layers: Sequence[tuple[Tensor, Tensor]]) -> object:
    from transformers import DynamicCache

    cache = DynamicCache(config=getattr(loaded.model, "config", None))
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


@dataclass(frozen=True)
class CacheUse:
    """What a training run's instruction cache did (run.json's `train_instruction_cache`)."""

    kept: int  # items whose keys and values were kept
    computed: int  # instructions run through the prefix forward, over all steps (once per kept item)
    bytes: int  # what the kept items take

    def to_json(self) -> dict[str, int]:
        return {"items_kept": self.kept, "instructions_computed": self.computed, "bytes": self.bytes}


class InstructionCache:
    """The kept instruction keys and values of a fixed list of training items (see the module docstring)."""

    def __init__(self, budget: int) -> None:
        if budget < 0:
            raise InternalError(f"an instruction cache of {budget} bytes")
        self._budget = budget
        self._kept: dict[int, ItemPrefix] = {}
        self._bytes = 0
        self.computed = 0  # items run through the prefix forward, over all steps (a kept item counts once)

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def kept(self) -> int:
        return len(self._kept)

    def use(self) -> CacheUse:
        return CacheUse(self.kept, self.computed, self._bytes)

    def prefix(self, loaded: LoadedModel, batch: Batch, items: Sequence[int], prompt: Tensor) -> Prefix:
        """The prefix of `batch`, whose row b is training item `items[b]`; the cache is the caller's own."""
        if len(items) != batch.size:
            raise InternalError(f"{len(items)} item numbers for a batch of {batch.size}")
        rows = dict(self._run_missing(loaded, batch, items, prompt))
        rows.update({b: self._kept[i] for b, i in enumerate(items) if b not in rows})
        device = loaded.device
        starts = batch.prompt_start.to(device)
        split_at = int(starts.max())
        for b in range(batch.size):
            if rows[b].length != int(starts[b]):
                raise InternalError(f"item {items[b]}: {rows[b].length} cached instruction columns, the batch has {int(starts[b])}")
        first = rows[0]
        layers = []
        for layer in range(len(first.keys)):
            heads, _, dim = first.keys[layer].shape
            keys = first.keys[layer].new_zeros(batch.size, heads, split_at, dim)
            values = first.values[layer].new_zeros(batch.size, heads, split_at, first.values[layer].shape[-1])
            for b in range(batch.size):
                length = rows[b].length
                keys[b, :, :length] = rows[b].keys[layer]
                values[b, :, :length] = rows[b].values[layer]
            layers.append((keys, values))
        mask = (torch.arange(split_at, device=device).unsqueeze(0) < starts.unsqueeze(1)).to(torch.int64)
        return Prefix(_new_cache(loaded, layers), mask, split_at, owned=True)

    def _run_missing(self, loaded: LoadedModel, batch: Batch, items: Sequence[int], prompt: Tensor) -> list[tuple[int, ItemPrefix]]:
        """(row, prefix) of the rows whose item is not kept: run together once, kept within the budget."""
        missing = [b for b, item in enumerate(items) if item not in self._kept]
        if not missing:
            return []
        index = torch.tensor(missing)
        sub = Batch(input_ids=batch.input_ids[index], attention_mask=batch.attention_mask[index],
                    targets=batch.targets[index], prompt_start=batch.prompt_start[index], prompt_len=batch.prompt_len)
        computed = run_prefix(loaded, sub, splice(loaded, sub, prompt.detach()))
        layers = _layers(computed.cache)
        out = []
        for k, b in enumerate(missing):
            length = int(sub.prompt_start[k])
            row = ItemPrefix(tuple(keys[k, :, :length].clone() for keys, _ in layers),
                             tuple(values[k, :, :length].clone() for _, values in layers))
            self.computed += 1
            if self._bytes + row.bytes <= self._budget:
                self._kept[items[b]] = row
                self._bytes += row.bytes
            out.append((b, row))
        return out
