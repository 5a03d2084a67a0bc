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

Where it does not apply (see `split_support`): models whose forward takes no cache or position ids,
sliding-window or non-attention layers (their window counts cache columns, which are not positions
here), encoder-decoders, a batch with an empty instruction. The trainer then uses the full forward
(`skn.scoring.completion_scores`) and reports which one it used.

Gradient checkpointing: transformers drops the cache inside a checkpointed layer, so the split
does not use transformers' per-layer checkpointing; it checkpoints the whole step instead
(torch.utils.checkpoint around prefix + suffix): only the prompt and the logits are kept, and the
backward pass recomputes the no-grad prefix and the suffix once more.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from skn.scoring import CompletionScores, completion_scores, scores_from_logits
from skn.layout import Batch, Encoded, make_batch
from skn.model import LoadedModel
from skn.prompt import splice


class StepForward(Enum):
    SPLIT = "split"  # instruction under no_grad into the KV cache, prompt + completion with gradients
    FULL = "full"  # the whole sequence with gradients (skn.scoring.completion_scores)


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


def split_support(loaded: LoadedModel) -> ForwardChoice:
    """The split where the model's forward and attention layout allow it, else FULL with the reason."""
    model, name = loaded.model, loaded.name
    params = _parameters(model)
    config = getattr(model, "config", None)
    if not ({"cache", "past_key_values"} & params) or "position_ids" not in params or "inputs_embeds" not in params:
        return ForwardChoice(StepForward.FULL, f"{name}: forward() takes no cache, position_ids or inputs_embeds")
    if getattr(config, "is_encoder_decoder", False):
        return ForwardChoice(StepForward.FULL, f"{name}: an encoder-decoder")
    layer_types = getattr(config, "layer_types", None) or ()
    other = sorted({str(t) for t in layer_types} - {"full_attention"})
    if other:
        return ForwardChoice(StepForward.FULL, f"{name}: layers of type {', '.join(other)} (the cache columns are not positions)")
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and window > 0 and getattr(config, "use_sliding_window", True):
        return ForwardChoice(StepForward.FULL, f"{name}: a sliding attention window (the cache columns are not positions)")
    return ForwardChoice(StepForward.SPLIT)


def choose_forward(loaded: LoadedModel, rows: list[Encoded], prompt: Tensor, pad: int) -> ForwardChoice:
    """`split_support`, then a check on a few real rows: the split's per-example losses must match
    the full forward's (relative 1e-3 in float32, 3e-2 in half precision), or the full forward is used."""
    choice = split_support(loaded)
    if choice.forward is StepForward.FULL or not rows:
        return choice
    batch = make_batch(rows, int(prompt.shape[0]), pad)
    try:
        with torch.no_grad():
            full = completion_scores(loaded, batch, prompt).loss
            split = split_scores(loaded, batch, prompt).loss
    except Exception as error:  # any model that cannot run the split falls back, with the reason
        return ForwardChoice(StepForward.FULL, f"{loaded.name}: the split forward failed ({type(error).__name__}: {error})")
    tol = 1e-3 if loaded.input_embeddings.weight.dtype == torch.float32 else 3e-2
    worst = float(((split - full).abs() / (1.0 + full.abs())).max())
    if not worst <= tol:
        return ForwardChoice(StepForward.FULL, f"{loaded.name}: the split's losses differ from the full forward's by {worst:.2g}")
    return choice


def _split_logits(loaded: LoadedModel, batch: Batch, prompt: Tensor) -> tuple[Tensor, Tensor]:
    """Logits for suffix columns [P - 1, S) and the tokens they predict ([B, K], -100 where none)."""
    model, device = loaded.model, loaded.device
    width = int(batch.input_ids.shape[1])
    starts = batch.prompt_start.to(device)
    lengths = batch.attention_mask.to(device).sum(dim=1)
    split_at = int(starts.max())
    suffix_len = int((lengths - starts).max())
    keep = suffix_len - (batch.prompt_len - 1)
    embeds = splice(loaded, batch, prompt)  # [B, T, d]; only the slots depend on the prompt
    prefix_mask = (torch.arange(split_at, device=device).unsqueeze(0) < starts.unsqueeze(1)).to(torch.int64)
    cols = starts.unsqueeze(1) + torch.arange(suffix_len, device=device).unsqueeze(0)  # [B, S]
    suffix_mask = (cols < lengths.unsqueeze(1)).to(torch.int64)
    cols = cols.clamp(max=width - 1)  # padding columns past the batch: masked, any position will do
    cache_kwarg = _cache_kwarg(model)
    takes_keep = "logits_to_keep" in _parameters(model)
    with torch.no_grad():
        prefix_kwargs: dict[str, object] = {
            "inputs_embeds": embeds[:, :split_at].detach(),
            "attention_mask": prefix_mask,
            "position_ids": torch.arange(split_at, device=device).unsqueeze(0).expand(batch.size, -1),
            "use_cache": True,
        }
        if takes_keep:
            prefix_kwargs["logits_to_keep"] = 1
        out = model(**prefix_kwargs)
    cache = getattr(out, "cache", None) if cache_kwarg == "cache" else None
    if cache is None:
        cache = getattr(out, "past_key_values", None)
    if cache is None:
        raise TypeError("the model returned no key/value cache")
    suffix_embeds = embeds.gather(1, cols.unsqueeze(-1).expand(-1, -1, embeds.shape[-1]))
    kwargs: dict[str, object] = {
        "inputs_embeds": suffix_embeds,
        "attention_mask": torch.cat([prefix_mask, suffix_mask], dim=1),
        "position_ids": cols,
        cache_kwarg: cache,
        "use_cache": True,
    }
    if takes_keep:
        kwargs["logits_to_keep"] = keep
    logits: Tensor = model(**kwargs).logits
    if logits.shape[1] != keep:  # a model that ignores logits_to_keep
        logits = logits[:, -keep:]
    targets = batch.targets.to(device).gather(1, cols).masked_fill(suffix_mask == 0, -100)
    return logits, targets[:, batch.prompt_len - 1 :]


def split_scores(loaded: LoadedModel, batch: Batch, prompt: Tensor, checkpointed: bool = False) -> CompletionScores:
    """The same scores as `skn.scoring.completion_scores`, from the split forward (see the module doc).
    `checkpointed`: keep only the prompt and the logits, recompute the rest in the backward pass."""
    if batch.size == 0 or int(batch.prompt_start.min()) < 1:
        return completion_scores(loaded, batch, prompt)  # an empty instruction has nothing to cache
    if checkpointed and torch.is_grad_enabled() and prompt.requires_grad:
        logits, targets = checkpoint(lambda p: _split_logits(loaded, batch, p), prompt, use_reentrant=False)
    else:
        logits, targets = _split_logits(loaded, batch, prompt)
    return scores_from_logits(logits, targets)


def step_scores(loaded: LoadedModel, batch: Batch, prompt: Tensor, choice: ForwardChoice, checkpointed: bool = False) -> CompletionScores:
    """A training step's scores with the chosen forward (the full one is checkpointed by transformers)."""
    if choice.forward is StepForward.SPLIT:
        return split_scores(loaded, batch, prompt, checkpointed)
    return completion_scores(loaded, batch, prompt)
