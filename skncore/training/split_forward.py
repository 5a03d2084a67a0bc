"""The split training forward: the instruction once without gradients, then the prompt and completion.

With the prompt after the instruction and causal attention, the instruction's hidden states and
keys/values do not depend on the prompt, so they need no gradient. A step therefore runs

    prefix  columns [0, L) of the batch, L = max instruction length, under torch.no_grad(),
            use_cache=True: the model's key/value cache (transformers' DynamicCache) and nothing else
            (logits_to_keep=1 where the model takes it, so the LM head is not applied to the prefix)
    suffix  per row b the S columns prompt_start[b] + j, j in [0, S) (the P slots, the completion and
            its EOS, then padding), with gradients, attending to the cache

and only the suffix is back-propagated: on rows of 60 instruction tokens, P = 20 and 3 completion
tokens the backward covers 24 of 84 positions.

Ragged instructions. The prefix keeps the batch's right padding: row b's instruction is at columns
[0, l_b) with positions 0..l_b-1 (as in the full forward), its remaining prefix columns are masked.
The suffix sits at cache columns [L, L + S) with explicit `position_ids` l_b + j, so positions run
on continuously through the prompt exactly as in the full forward. The attention mask passed with
the suffix covers past + current columns, [prefix mask | suffix mask], [B, L + S]. transformers builds
the causal part from cache columns (a query at column L + j sees columns <= L + j) and takes rotary /
learned position embeddings from `position_ids`, so the masked gap between a short instruction and
its prompt changes nothing but the order of float additions. Right rather than left padding of the
prefix: a left-padded pad query would see no unmasked key at all (a fully masked softmax row), which
some attention kernels turn into NaN keys and values in the cache.

Sliding-window layers count cache columns, which are not positions here; but where no batch can reach the
window (the longest instruction + P + the longest completion, `columns_needed`, below the window) no key is
ever outside it, in the split or the full forward, and the window changes nothing (Gemma 3's 512 against
rows of about a hundred tokens). Where it does not apply (see `split_support`): models whose forward takes
no cache or position ids, sliding windows that a batch can reach, other layer types (chunked, recurrent),
encoder-decoders, a batch with an empty instruction. The trainer then uses the full forward
(`skn.training.scoring.completion_scores`) and reports which one it used.

Gradient checkpointing: transformers drops the cache inside a checkpointed layer, so the split
does not use transformers' per-layer checkpointing; it checkpoints the whole step instead
(torch.utils.checkpoint around prefix + suffix): only the prompt and the logits are kept, and the
backward pass recomputes the no-grad prefix and the suffix once more.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from skn.training.scoring import CompletionScores, completion_scores, scores_from_logits
from skn.inputs.layout import Batch, Encoded, make_batch
from skn.models.model import LoadedModel
from skn.training.prompt import splice


class StepForward(Enum):
    SPLIT = "split"  # instruction under no_grad into the KV cache, prompt + completion with gradients
    FULL = "full"  # the whole sequence with gradients (skn.training.scoring.completion_scores)


@dataclass(frozen=True)
class ForwardChoice:
    """Which forward a training step uses, and why (empty `reason` for the split)."""

    forward: StepForward
    reason: str = ""


def _parameters(model: torch.nn.Module) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


def _cache_kwarg(model: torch.nn.Module) -> str:
    """transformers >= 5 names the cache argument `cache`; earlier versions `past_key_values`."""
    return "cache" if "cache" in _parameters(model) else "past_key_values"


def columns_needed(rows: Sequence[Encoded], prompt_len: int) -> int:
    """The most key/value cache columns a split batch of these rows can take: the longest instruction (the
    prefix's width) plus the prompt and the longest completion (the suffix's)."""
    if not rows:
        return prompt_len
    return max(len(r.instruction) for r in rows) + prompt_len + max(len(r.completion) for r in rows)


def split_support(loaded: LoadedModel, columns: int) -> ForwardChoice:
    """The split where the model's forward and attention layout allow it for batches of at most `columns`
    cache columns (`columns_needed`), else FULL with the reason."""
    model, name = loaded.model, loaded.name
    params = _parameters(model)
    config = getattr(model, "config", None)
    if not ({"cache", "past_key_values"} & params) or "position_ids" not in params or "inputs_embeds" not in params:
        return ForwardChoice(StepForward.FULL, f"{name}: forward() takes no cache, position_ids or inputs_embeds")
    if getattr(config, "is_encoder_decoder", False):
        return ForwardChoice(StepForward.FULL, f"{name}: an encoder-decoder")
    layer_types = {str(t) for t in getattr(config, "layer_types", None) or ()}
    other = sorted(layer_types - {"full_attention", "sliding_attention"})
    if other:
        return ForwardChoice(StepForward.FULL, f"{name}: layers of type {', '.join(other)} (the cache columns are not positions)")
    window = getattr(config, "sliding_window", None)
    size = window if isinstance(window, int) and window > 0 else 0
    windowed = "sliding_attention" in layer_types or (not layer_types and size > 0 and getattr(config, "use_sliding_window", True))
    if windowed and size == 0:
        return ForwardChoice(StepForward.FULL, f"{name}: sliding-attention layers without a window size")
    if windowed and columns >= size:
        return ForwardChoice(StepForward.FULL, f"{name}: a sliding attention window of {window} columns, and a batch "
                                               f"can take {columns} (the cache columns are not positions)")
    return ForwardChoice(StepForward.SPLIT)


def choose_forward(loaded: LoadedModel, rows: list[Encoded], prompt: Tensor, pad: int, columns: int) -> ForwardChoice:
    """`split_support` for batches of at most `columns` cache columns (`columns_needed` over every row the
    choice will serve), then a check on a few real rows (`rows`): the split's per-example losses must match
    the full forward's (relative 1e-3 in float32, 3e-2 in half precision), or the full forward is used."""
    choice = split_support(loaded, columns)
    if choice.forward is StepForward.FULL or not rows:
        return choice
    batch = make_batch(rows, int(prompt.shape[0]), pad)
    try:
        with torch.no_grad():
            full = completion_scores(loaded, batch, prompt).loss
            split = split_scores(loaded, batch, prompt).loss
    except Exception as error:  # any model that cannot run the split falls back, with the reason
        return ForwardChoice(StepForward.FULL, f"{loaded.name}: the split forward failed ({type(error).__name__}: {error})")
    tol = 1e-3 if loaded.input_embeddings.weight.dtype in (torch.float32, torch.float64) else 3e-2
    worst = float(((split - full).abs() / (1.0 + full.abs())).max())
    if not worst <= tol:
        return ForwardChoice(StepForward.FULL, f"{loaded.name}: the split's losses differ from the full forward's by {worst:.2g}")
    return choice


@dataclass(frozen=True)
class Prefix:
    """A batch's instruction columns [0, split_at), run once without gradients: the model's key/value cache
    and the prefix mask. It does not depend on the prompt (the prompt's slots in it are masked), so one
    prefix serves every evaluation of a fixed batch (`prefix_cache` in the trainer)."""

    cache: object  # a transformers Cache (DynamicCache); copied before each use unless `owned`
    mask: Tensor  # [B, split_at] int64: 1 on each row's instruction columns
    split_at: int
    owned: bool = False  # made for one step (skn.training.instruction_cache): the suffix may append to it, uncopied

    @property
    def bytes(self) -> int:
        layers = getattr(self.cache, "layers", ())
        return sum(int(t.numel()) * t.element_size() for layer in layers
                   for t in (getattr(layer, "keys", None), getattr(layer, "values", None)) if isinstance(t, Tensor))


def run_prefix(loaded: LoadedModel, batch: Batch, embeds: Tensor) -> Prefix:
    """The no-grad prefix of the split (see the module doc) from the batch's spliced embeddings."""
    model, device = loaded.model, loaded.device
    starts = batch.prompt_start.to(device)
    split_at = int(starts.max())
    prefix_mask = (torch.arange(split_at, device=device).unsqueeze(0) < starts.unsqueeze(1)).to(torch.int64)
    with torch.no_grad():
        kwargs: dict[str, object] = {
            "inputs_embeds": embeds[:, :split_at].detach(),
            "attention_mask": prefix_mask,
            "position_ids": torch.arange(split_at, device=device).unsqueeze(0).expand(batch.size, -1),
            "use_cache": True,
        }
        if "logits_to_keep" in _parameters(model):
            kwargs["logits_to_keep"] = 1
        out = model(**kwargs)
    cache = getattr(out, "cache", None) if _cache_kwarg(model) == "cache" else None
    if cache is None:
        cache = getattr(out, "past_key_values", None)
    if cache is None:
        raise TypeError("the model returned no key/value cache")
    return Prefix(cache, prefix_mask, split_at)


def _split_logits(loaded: LoadedModel, batch: Batch, prompt: Tensor, prefix: Prefix | None = None,
                  copy_cache: bool = True) -> tuple[Tensor, Tensor]:
    """Logits for suffix columns [P - 1, S) and the tokens they predict ([B, K], -100 where none).
    `prefix`: the batch's prefix computed before (a copy of its cache is used, unless it is `owned` and
    `copy_cache` is off), else computed here."""
    model, device = loaded.model, loaded.device
    width = int(batch.input_ids.shape[1])
    starts = batch.prompt_start.to(device)
    lengths = batch.attention_mask.to(device).sum(dim=1)
    suffix_len = int((lengths - starts).max())
    keep = suffix_len - (batch.prompt_len - 1)
    embeds = splice(loaded, batch, prompt)  # [B, T, d]; only the slots depend on the prompt
    if prefix is None:
        prefix = run_prefix(loaded, batch, embeds)
    elif copy_cache or not prefix.owned:
        prefix = replace(prefix, cache=copy.deepcopy(prefix.cache))
    cols = starts.unsqueeze(1) + torch.arange(suffix_len, device=device).unsqueeze(0)  # [B, S]
    suffix_mask = (cols < lengths.unsqueeze(1)).to(torch.int64)
    cols = cols.clamp(max=width - 1)  # padding columns past the batch: masked, any position will do
    suffix_embeds = embeds.gather(1, cols.unsqueeze(-1).expand(-1, -1, embeds.shape[-1]))
    kwargs: dict[str, object] = {
        "inputs_embeds": suffix_embeds,
        "attention_mask": torch.cat([prefix.mask, suffix_mask], dim=1),
        "position_ids": cols,
        _cache_kwarg(model): prefix.cache,
        "use_cache": True,
    }
    if "logits_to_keep" in _parameters(model):
        kwargs["logits_to_keep"] = keep
    logits: Tensor = model(**kwargs).logits
    if logits.shape[1] != keep:  # a model that ignores logits_to_keep
        logits = logits[:, -keep:]
    targets = batch.targets.to(device).gather(1, cols).masked_fill(suffix_mask == 0, -100)
    return logits, targets[:, batch.prompt_len - 1 :]


def split_scores(loaded: LoadedModel, batch: Batch, prompt: Tensor, checkpointed: bool = False,
                 prefix: Prefix | None = None) -> CompletionScores:
    """The same scores as `skn.training.scoring.completion_scores`, from the split forward (see the module doc).
    `checkpointed`: keep only the prompt and the logits, recompute the rest in the backward pass.
    `prefix`: this batch's prefix, computed before (`prefix_of`), so only the suffix is run."""
    if not splittable(batch):
        return completion_scores(loaded, batch, prompt)  # an empty instruction has nothing to cache
    if checkpointed and torch.is_grad_enabled() and prompt.requires_grad:  # the recomputation needs the cache as it was
        logits, targets = checkpoint(lambda p: _split_logits(loaded, batch, p, prefix), prompt, use_reentrant=False)
    else:
        logits, targets = _split_logits(loaded, batch, prompt, prefix, copy_cache=False)
    return scores_from_logits(logits, targets)


def splittable(batch: Batch) -> bool:
    """Whether a batch has an instruction to cache in every row."""
    return batch.size > 0 and int(batch.prompt_start.min()) >= 1


def prefix_of(loaded: LoadedModel, batch: Batch, prompt: Tensor) -> Prefix | None:
    """The batch's prefix, to reuse across evaluations; None where the batch cannot be split."""
    if not splittable(batch):
        return None
    return run_prefix(loaded, batch, splice(loaded, batch, prompt.detach()))


def step_scores(loaded: LoadedModel, batch: Batch, prompt: Tensor, choice: ForwardChoice, checkpointed: bool = False,
                prefix: Prefix | None = None) -> CompletionScores:
    """A training step's scores with the chosen forward (the full one is checkpointed by transformers); with the
    split, `prefix` is the batch's instruction computed before (skn.training.instruction_cache), else it is run here."""
    if choice.forward is StepForward.SPLIT:
        return split_scores(loaded, batch, prompt, checkpointed, prefix)
    return completion_scores(loaded, batch, prompt)


class PrefixCache:
    """The prefixes of a fixed list of batches (the validation set's, evaluated every --eval-every steps),
    each computed on its first use and kept while their bytes stay within `budget`; a batch past the
    budget is split afresh each time. A kept prefix turns a later evaluation of its batch into the suffix
    alone (on HANS-shaped rows 23 of 83 positions)."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._prefixes: dict[int, Prefix] = {}
        self._bytes = 0
        self._full = False

    @property
    def bytes(self) -> int:
        return self._bytes

    def scores(self, loaded: LoadedModel, index: int, batch: Batch, prompt: Tensor) -> CompletionScores:
        """Batch number `index` of the fixed list, scored with the split forward and its kept prefix."""
        prefix = self._prefixes.get(index)
        if prefix is None and not self._full:
            prefix = prefix_of(loaded, batch, prompt)
            if prefix is not None:
                if self._bytes + prefix.bytes <= self._budget:
                    self._prefixes[index] = prefix
                    self._bytes += prefix.bytes
                else:
                    self._full = True
        return split_scores(loaded, batch, prompt, prefix=prefix)

