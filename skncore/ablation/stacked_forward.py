"""One pass of stacked ablation sets over the items: what an ablation measures on (`AblationData`, built by
`prepare`), and each batch's forward with every set of the stack in it (`scored`): the items repeated once per
set along the batch, each copy rewritten with its own set's edits (`skn.ablation.intervention.intervened`).

Sets that edit only the prompt's slots leave the instruction as the unablated model computes it, so where the
model takes the split forward (skn.training.split_forward) each distinct instruction of a batch runs once for
every set and row that has it (`shares_instruction`), and only the prompt and completion run per set.
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
    split: bool = False  # the model takes the split forward: sets that edit only the prompt share each batch's instruction


def prepare(
    loaded: LoadedModel, prompt: Tensor, rows: Sequence[Encoded], examples: Sequence[Example], spec: MetricSpec,
    alt_rows: Sequence[Encoded], alt_owner: Sequence[int], has_alternatives: bool, batch_size: int = 16,
    split: bool = True,
) -> AblationData:
    """`split`: use the split forward where the model takes it (skn.training.split_forward's check on the first
    batch), so that the sets that edit only the prompt's slots run each batch's instruction once between them."""
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


def shares_instruction(data: AblationData, stack: Sequence[Intervention | None]) -> bool:
    """Whether the sets of `stack` run each batch's instruction once between them: the model takes the split
    forward and no set edits a position before the prompt (Where.PROMPT only), so the instruction's keys and
    values are the unablated model's in every set."""
    return data.split and all(i is None or i.where is Where.PROMPT for i in stack)


def _stacked_prefix(data: AblationData, chunk: Sequence[Encoded], sets: int) -> Prefix | None:
    """The chunk's instructions, each distinct one run once (an item's alternative answers share its
    instruction), their keys and values laid out for `sets` copies of the chunk (set s in rows s * n .. (s + 1) *
    n - 1, as `intervened` lays them out); None where the chunk cannot be split."""
    distinct: dict[tuple[int, ...], int] = {}
    firsts: list[Encoded] = []  # the first row of each distinct instruction, in the order of `distinct`
    for row in chunk:
        if row.instruction not in distinct:
            distinct[row.instruction] = len(firsts)
            firsts.append(row)
    prefix = prefix_of(data.loaded, make_batch(firsts, int(data.prompt.shape[0]), batch_pad_id(data.loaded)), data.prompt)
    if prefix is None:
        return None
    which = torch.tensor([distinct[row.instruction] for row in chunk], dtype=torch.int64)
    prefix.cache.batch_repeat_interleave(sets)  # type: ignore[attr-defined]  # distinct instruction u, set s: row u * sets + s
    order = (which.unsqueeze(0) * sets + torch.arange(sets).unsqueeze(1)).reshape(-1)  # row s * n + b: b's instruction, set s
    prefix.cache.batch_select_indices(order.to(prefix.mask.device))  # type: ignore[attr-defined]
    return replace(prefix, mask=prefix.mask[which.to(prefix.mask.device)].repeat(sets, 1), owned=True)  # made here: the suffix may extend it


def scored(data: AblationData, rows: Sequence[Encoded], stack: Sequence[Intervention | None],
            split: bool) -> Iterator[tuple[int, int, list[CompletionScores]]]:
    """Per batch of items (first index, count): each set's scores, all sets in one forward (the items
    repeated once per set along the batch); with `split`, the forward is the split one, the batch's
    instruction run once for all sets and the sets' edits applied in the suffix (prompt onward)."""
    pad = batch_pad_id(data.loaded)
    prompt_len = int(data.prompt.shape[0])
    sets = len(stack)
    for first in range(0, len(rows), data.batch_size):
        chunk = rows[first : first + data.batch_size]
        batch = make_batch(list(chunk) * sets, prompt_len, pad)
        prefix = _stacked_prefix(data, chunk, sets) if split else None
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


__all__ = ["AblationData", "prepare", "scored", "shares_instruction"]
