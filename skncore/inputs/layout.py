"""The sequence layout: instruction, then the P soft-prompt slots, then the completion and EOS.

    tokenizer(instruction)                  with the tokenizer's own special tokens (BOS where it adds one),
                                            or the chat template's user turn with the generation prompt
    P soft-prompt slots                     filled by the prompt vectors (see prompt.splice)
    tokenizer(completion, no special) + EOS EOS where the tokenizer has one

Rows are right-padded; positions run on continuously through the prompt. The per-example loss is
the mean NLL over the completion tokens, EOS included. Outside tools rely on this: keep docs/definitions.md
in step with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from skn.inputs.data import Example
from skn.errors import DataError, InternalError, UsageError
from skn.statistics.scratch import Scratch
from skn.models.tokenizer import Tokenizer


class Template(Enum):
    AUTO = "auto"  # chat when the tokenizer has a chat template, else plain
    PLAIN = "plain"
    CHAT = "chat"


@dataclass(frozen=True)
class Encoded:
    """One example as token ids: the instruction (special tokens included) and the completion (+ EOS)."""

    instruction: tuple[int, ...]
    completion: tuple[int, ...]


@dataclass(frozen=True)
class Batch:
    """A right-padded batch. Slot k of row b's prompt sits at `prompt_start[b] + k`."""

    input_ids: Tensor  # [B, T] int64; prompt slots and padding hold `pad_id`
    attention_mask: Tensor  # [B, T] int64
    prompt_start: Tensor  # [B] int64
    targets: Tensor  # [B, T] int64: the token predicted *from* position t, or -100
    prompt_len: int

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])


def resolve_template(template: Template, tokenizer: Tokenizer) -> Template:
    if template is not Template.AUTO:
        if template is Template.CHAT and not getattr(tokenizer, "chat_template", None):
            raise UsageError("--template chat: this tokenizer has no chat template")
        return template
    return Template.CHAT if getattr(tokenizer, "chat_template", None) else Template.PLAIN


def _ids(tokenizer: Tokenizer, text: str, special: bool) -> tuple[int, ...]:
    encoded = tokenizer(text, add_special_tokens=special)
    return tuple(int(i) for i in encoded["input_ids"])


def encode(tokenizer: Tokenizer, example: Example, template: Template) -> Encoded:
    """Token ids of one example under a resolved template (PLAIN or CHAT)."""
    if template is Template.CHAT:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": example.instruction}], tokenize=False, add_generation_prompt=True
        )
        instruction = _ids(tokenizer, str(text), special=False)
    else:
        instruction = _ids(tokenizer, example.instruction, special=True)
    completion = _ids(tokenizer, example.completion, special=False)
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        completion = completion + (eos,)
    if not completion:
        raise DataError(f"{example.source}: the completion is empty and the tokenizer has no EOS: nothing to score")
    return Encoded(instruction, completion)


def encode_all(tokenizer: Tokenizer, examples: Sequence[Example], template: Template, max_length: int, prompt_len: int) -> tuple[Encoded, ...]:
    """Encode every example; an example longer than the model's context is an error naming it."""
    resolved = resolve_template(template, tokenizer)
    out = []
    for example in examples:
        enc = encode(tokenizer, example, resolved)
        length = len(enc.instruction) + prompt_len + len(enc.completion)
        if max_length > 0 and length > max_length:
            raise DataError(f"{example.source}: {length} tokens with the prompt, more than the model's {max_length}")
        out.append(enc)
    return tuple(out)


def pad_id(tokenizer: Tokenizer) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def make_batch(
    rows: Sequence[Encoded], prompt_len: int, pad: int, with_completion: bool = True, slot_token: int | None = None
) -> Batch:
    """Lay out rows as instruction | P slots | completion, right-padded. Without the completion
    the batch ends at the prompt (activations at prompt positions do not depend on what follows).
    The slots hold `pad` (the soft prompt replaces their embeddings) unless `slot_token` is given, as
    when the bundled model is pretrained with a placeholder token in the slots."""
    lengths = [len(r.instruction) + prompt_len + (len(r.completion) if with_completion else 0) for r in rows]
    width = max(lengths)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.int64)
    attention = torch.zeros((len(rows), width), dtype=torch.int64)
    targets = torch.full((len(rows), width), -100, dtype=torch.int64)
    starts = torch.zeros(len(rows), dtype=torch.int64)
    for b, (row, length) in enumerate(zip(rows, lengths)):
        start = len(row.instruction)
        starts[b] = start
        input_ids[b, :start] = torch.tensor(row.instruction, dtype=torch.int64)
        if slot_token is not None:
            input_ids[b, start : start + prompt_len] = slot_token
        attention[b, :length] = 1
        if with_completion:
            first = start + prompt_len
            completion = torch.tensor(row.completion, dtype=torch.int64)
            input_ids[b, first:length] = completion
            # the token at position s is predicted from position s - 1
            targets[b, first - 1 : length - 1] = completion
    return Batch(input_ids, attention, starts, targets, prompt_len)


def check_offsets(offsets: Tensor, positions: int, length: int) -> None:
    """Raise InternalError unless offsets is [B] int64 with 0 <= offsets[b] and offsets[b] + positions <= length."""
    if offsets.dim() != 1 or offsets.dtype != torch.int64:
        raise InternalError(f"prompt offsets must be a [B] int64 tensor, got {tuple(offsets.shape)} {offsets.dtype}")
    if offsets.numel() == 0:
        return
    low, high = int(offsets.min()), int(offsets.max())
    if low < 0 or high + positions > length:
        raise InternalError(
            f"prompt offsets span [{low}, {high}] but {positions} prompt positions must fit in a sequence of {length}"
        )


def gather_prompt_rows(x: Tensor, offsets: Tensor, positions: int) -> Tensor:
    """x [B, T, m] -> [B, P, m]: row b keeps x[b, offsets[b] : offsets[b] + P]."""
    index = offsets.to(x.device)[:, None] + torch.arange(positions, device=x.device)
    return x[torch.arange(x.shape[0], device=x.device)[:, None], index]


class PromptRowBuffer:
    """`gather_prompt_rows` into one buffer kept between calls (skn.statistics.scratch): the result is valid until the next call."""

    def __init__(self) -> None:
        self._scratch = Scratch()

    def gather(self, x: Tensor, offsets: Tensor, positions: int) -> Tensor:
        """x [B, T, m] -> [B, P, m], the values of `gather_prompt_rows(x, offsets, positions)`."""
        batch, length, width = (int(v) for v in x.shape)
        starts = torch.arange(batch, device=x.device) * length + offsets.to(x.device)
        index = (starts[:, None] + torch.arange(positions, device=x.device)).reshape(-1)
        out = self._scratch.take((batch * positions, width), x.dtype, x.device)
        torch.index_select(x.reshape(batch * length, width), 0, index, out=out)
        return out.view(batch, positions, width)
