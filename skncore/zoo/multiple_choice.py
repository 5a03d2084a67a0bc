"""The pretraining items scored as the bundled model sees them: the pretraining layout (skn.inputs.layout, the
prompt slots filled by the placeholder), per-token NLL, and multiple-choice accuracy split by the
last-digit shortcut. Used by `train_arithmetic` (its log) and `evaluate` (the model card's figures).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from skn.inputs.data import Example
from skn.errors import UsageError
from skn.inputs.layout import Encoded, Template, make_batch, pad_id
from skn.inputs.layout import encode as encode_example
from skn.models.model import scoring_dtype
from skn.models.tokenizer import Tokenizer, token_id
from skn.zoo import PLACEHOLDER


@dataclass(frozen=True)
class Scored:
    """An item scored as multiple choice: summed NLL of each choice (+ EOS) after the placeholders."""

    nll: tuple[float, ...]
    correct: int  # index of the right choice
    shortcut: bool

    @property
    def right(self) -> bool:
        best = min(range(len(self.nll)), key=lambda i: self.nll[i])
        return best == self.correct


@dataclass(frozen=True)
class McReport:
    """Multiple-choice accuracy, split by the last-digit shortcut."""

    n: int
    accuracy: float
    n_shortcut: int
    accuracy_shortcut: float
    n_no_shortcut: int
    accuracy_no_shortcut: float
    completion_loss: float  # mean NLL per completion token (EOS included) of the right choice

    def line(self) -> str:
        return (
            f"acc {self.accuracy:.3f} (shortcut {self.accuracy_shortcut:.3f} n={self.n_shortcut}, "
            f"no shortcut {self.accuracy_no_shortcut:.3f} n={self.n_no_shortcut}) loss {self.completion_loss:.3f}"
        )



def encode_pretraining(tokenizer: Tokenizer, example: Example) -> Encoded:
    """The probe's own layout (skn.inputs.layout): BOS + instruction, and completion + EOS."""
    return encode_example(tokenizer, example, Template.PLAIN)


def batch_tensors(rows: Sequence[Encoded], prompt_len: int, placeholder: int, pad: int) -> tuple[Tensor, Tensor, Tensor]:
    """input_ids (the prompt slots filled by the placeholder), attention_mask, targets: skn.inputs.layout.make_batch."""
    batch = make_batch(rows, prompt_len, pad, slot_token=placeholder)
    return batch.input_ids, batch.attention_mask, batch.targets


def token_nll(model: nn.Module, ids: Tensor, mask: Tensor, targets: Tensor) -> Tensor:
    """[B, T] NLL of each target token (0 where there is none), in float32 or the logits' wider precision."""
    logits = model(input_ids=ids, attention_mask=mask).logits
    flat = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).to(scoring_dtype(logits.dtype)),
        targets.reshape(-1),
        ignore_index=-100,
        reduction="none",
    )
    return flat.reshape(targets.shape)


def parse_choices(instruction: str) -> tuple[str, ...]:
    """The options of a "Question: ...\\nChoices: a, b, c\\nAnswer:" instruction, in order."""
    for line in instruction.splitlines():
        if line.startswith("Choices: "):
            return tuple(line[len("Choices: ") :].split(", "))
    raise UsageError(f"not a multiple-choice instruction (no 'Choices:' line): {instruction!r}")


def score_choices(
    model: nn.Module, tokenizer: Tokenizer, examples: Sequence[Example], prompt_len: int, batch_size: int = 256
) -> tuple[Scored, ...]:
    """Score every choice of every example by its summed NLL (+ EOS) in the pretraining layout."""
    placeholder = token_id(tokenizer, PLACEHOLDER)
    pad = pad_id(tokenizer)
    rows: list[Encoded] = []
    owners: list[tuple[int, int]] = []
    meta: list[tuple[int, bool]] = []
    for e, example in enumerate(examples):
        choices = parse_choices(example.instruction)
        answer = example.completion.strip()
        lead = example.completion[: len(example.completion) - len(example.completion.lstrip())]  # " " in skn's task
        if answer not in choices:
            raise UsageError(f"{example.source}: the completion {example.completion!r} is not one of the choices")
        meta.append((choices.index(answer), bool(example.meta.get("last_digit_shortcut", False))))
        for c, choice in enumerate(choices):
            rows.append(encode_pretraining(tokenizer, Example(example.instruction, lead + choice, {}, example.source)))
            owners.append((e, c))
    sums = [0.0] * len(rows)
    model.eval()
    with torch.no_grad():
        for lo in range(0, len(rows), batch_size):
            ids, mask, targets = batch_tensors(rows[lo : lo + batch_size], prompt_len, placeholder, pad)
            nll = token_nll(model, ids, mask, targets).sum(dim=1)
            for k, value in enumerate(nll.tolist()):
                sums[lo + k] = float(value)
    per: list[list[float]] = [[] for _ in examples]
    for (e, _c), value in zip(owners, sums):
        per[e].append(value)
    return tuple(Scored(tuple(per[e]), meta[e][0], meta[e][1]) for e in range(len(examples)))


def mc_report(scored: Sequence[Scored], completion_loss: float) -> McReport:
    def acc(rows: Sequence[Scored]) -> float:
        return sum(r.right for r in rows) / len(rows) if rows else float("nan")

    yes = [r for r in scored if r.shortcut]
    no = [r for r in scored if not r.shortcut]
    return McReport(len(scored), acc(scored), len(yes), acc(yes), len(no), acc(no), completion_loss)


def completion_loss(model: nn.Module, tokenizer: Tokenizer, examples: Sequence[Example], prompt_len: int) -> float:
    placeholder = token_id(tokenizer, PLACEHOLDER)
    pad = pad_id(tokenizer)
    rows = [encode_pretraining(tokenizer, e) for e in examples]
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for lo in range(0, len(rows), 256):
            ids, mask, targets = batch_tensors(rows[lo : lo + 256], prompt_len, placeholder, pad)
            total += float(token_nll(model, ids, mask, targets).sum())
            count += int((targets != -100).sum())
    return total / max(count, 1)


def evaluate(model: nn.Module, tokenizer: Tokenizer, examples: Sequence[Example], prompt_len: int) -> McReport:
    loss = completion_loss(model, tokenizer, examples, prompt_len)
    return mc_report(score_choices(model, tokenizer, examples, prompt_len), loss)
