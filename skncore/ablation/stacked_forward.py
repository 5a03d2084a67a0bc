"""One pass of stacked ablation sets over the items: what an ablation measures on (`AblationData`, built by
`prepare`), and each batch's forward with every set of the stack in it (`scored`): the items repeated once per
set along the batch, each copy rewritten with its own set's edits (`skn.ablation.intervention.intervened`).

Where the model takes the split forward (skn.training.split_forward), each distinct instruction of a batch runs
once for all the rows that have it (an item's alternative answers share its instruction), and only the prompt
and completion run per row (`_stacked_prefix`). Sets that edit only the prompt's slots leave the instruction as
the unablated model computes it, so a stack of them runs each instruction once between all its sets; a set
that edits everywhere (Where.ALL) runs the instructions once for itself, under its own edits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from skn.ablation.intervention import Intervention, Where, intervened
from skn.errors import UsageError
from skn.inputs.data import Example
from skn.inputs.layout import Encoded, make_batch
from skn.inputs.metrics import MetricSpec
from skn.models.model import LoadedModel, batch_pad_id
from skn.training.scoring import CompletionScores, completion_scores
from skn.training.split_forward import Prefix, StepForward, choose_forward, columns_needed, prefix_of, split_scores


@dataclass(frozen=True)
class AblationData:
    """The items of one ablation and everything needed to score them: built once, used by every set."""

    loaded: LoadedModel
    prompt: Tensor  # [P, d]
    rows: tuple[Encoded, ...]
    examples: tuple[Example, ...]
    spec: MetricSpec
    alt_rows: tuple[Encoded, ...]  # every item's alternatives, flattened
    alt_owner: tuple[int, ...]  # item index of each alternative row
    has_alternatives: bool
    batch_size: int = 16
    split: bool = False  # the model takes the split forward: each batch's distinct instructions run apart (`scored`)


def prepare(
    loaded: LoadedModel, prompt: Tensor, rows: Sequence[Encoded], examples: Sequence[Example], spec: MetricSpec,
    alt_rows: Sequence[Encoded], alt_owner: Sequence[int], has_alternatives: bool, batch_size: int = 16,
    split: bool = True,
) -> AblationData:
    """`split`: use the split forward where the model takes it (skn.training.split_forward's check on the first
    batch), so that each batch's distinct instructions run once per kind of instruction forward (`scored`)."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    columns = columns_needed([*rows, *alt_rows], int(prompt.shape[0]))
    splits = split and bool(rows) and choose_forward(loaded, list(rows[:batch_size]), prompt, batch_pad_id(loaded),
                                                     columns).forward is StepForward.SPLIT
    return AblationData(loaded, prompt, tuple(rows), tuple(examples), spec, tuple(alt_rows), tuple(alt_owner),
                        has_alternatives, batch_size, splits)


def _slice(scores: CompletionScores, lo: int, hi: int) -> CompletionScores:
    return CompletionScores(scores.loss[lo:hi], scores.confidence[lo:hi], scores.correct[lo:hi], scores.mean_loss,
                            scores.token_logprob[lo:hi], scores.token_mask[lo:hi])


def instruction_edits(stack: Sequence[Intervention | None]) -> tuple[Intervention | None, ...]:
    """What each set of `stack` changes in the instruction's forward: a set's edits everywhere (Where.ALL); a
    set at the prompt's slots, or the unablated model, nothing (causal attention: positions before the prompt
    never see the prompt)."""
    return tuple(i if i is not None and i.where is Where.ALL else None for i in stack)


def _stacked_prefix(data: AblationData, chunk: Sequence[Encoded], stack: Sequence[Intervention | None]) -> Prefix | None:
    """The chunk's instructions, each distinct one run once per kind of instruction forward (an item's
    alternative answers share its instruction), their keys and values laid out for one copy of the chunk per
    set (set s in rows s * n .. (s + 1) * n - 1, as `intervened` lays them out); None where the chunk cannot be
    split. When no set edits the instruction (`instruction_edits`), the distinct instructions run once for all
    the sets; else once per set, set s's copy under set s's edits everywhere."""
    distinct: dict[tuple[int, ...], int] = {}
    firsts: list[Encoded] = []  # the first row of each distinct instruction, in the order of `distinct`
    for row in chunk:
        if row.instruction not in distinct:
            distinct[row.instruction] = len(firsts)
            firsts.append(row)
    sets, unique = len(stack), len(firsts)
    edits = instruction_edits(stack)
    per_set = any(e is not None for e in edits)
    batch = make_batch(firsts * sets if per_set else firsts, int(data.prompt.shape[0]), batch_pad_id(data.loaded))
    with intervened(data.loaded, edits, batch.prompt_start) if per_set else nullcontext():
        prefix = prefix_of(data.loaded, batch, data.prompt)
    if prefix is None:
        return None
    which = torch.tensor([distinct[row.instruction] for row in chunk], dtype=torch.int64)
    copy = torch.arange(sets).unsqueeze(1)
    if per_set:  # distinct instruction u under set s's edits: prefix row s * unique + u
        order = (copy * unique + which.unsqueeze(0)).reshape(-1)  # row s * n + b: b's instruction, set s
    else:  # one prefix row per distinct instruction u, repeated: row u * sets + s
        prefix.cache.batch_repeat_interleave(sets)  # type: ignore[attr-defined]
        order = (which.unsqueeze(0) * sets + copy).reshape(-1)
    prefix.cache.batch_select_indices(order.to(prefix.mask.device))  # type: ignore[attr-defined]
    mask = prefix.mask[which.repeat(sets).to(prefix.mask.device)]  # row s * n + b: b's instruction's (every copy's alike)
    return replace(prefix, mask=mask, owned=True)  # made here: the suffix may extend it


def scored(data: AblationData, rows: Sequence[Encoded], stack: Sequence[Intervention | None],
            split: bool) -> Iterator[tuple[int, int, list[CompletionScores]]]:
    """Per batch of items (first index, count): each set's scores, all sets in one forward (the items
    repeated once per set along the batch); with `split`, the forward is the split one: the batch's distinct
    instructions run once for all sets that leave them as they are, and once per set that edits everywhere
    (`_stacked_prefix`), and the sets' edits apply in the suffix (prompt onward) too."""
    pad = batch_pad_id(data.loaded)
    prompt_len = int(data.prompt.shape[0])
    sets = len(stack)
    for first in range(0, len(rows), data.batch_size):
        chunk = rows[first : first + data.batch_size]
        batch = make_batch(list(chunk) * sets, prompt_len, pad)
        prefix = _stacked_prefix(data, chunk, stack) if split else None
        if prefix is not None:  # the suffix's columns start at the prompt: its slots are columns 0 .. P - 1
            with intervened(data.loaded, stack, torch.zeros_like(batch.prompt_start)) if any(i is not None for i in stack) else nullcontext():
                scores = split_scores(data.loaded, batch, data.prompt, prefix=prefix)
        elif all(i is None for i in stack):
            scores = completion_scores(data.loaded, batch, data.prompt)
        else:
            with intervened(data.loaded, stack, batch.prompt_start):
                scores = completion_scores(data.loaded, batch, data.prompt)
        n = len(chunk)
        yield first, n, [_slice(scores, s * n, (s + 1) * n) for s in range(sets)]


__all__ = ["AblationData", "instruction_edits", "prepare", "scored"]
