"""The bundled model's second training target, `--auxiliary shortcut` of skn.zoo.train_arithmetic: from every
prompt slot but the last (whose next token is the completion's first), the token "Y" when the item's
last-digit shortcut holds (the answer is the only numeric choice ending in the product's last digit), else
"N". A model that meets it computes the shortcut at the slots, where skn's neurons are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import torch
from torch import Tensor, nn

from skn.inputs.data import Example
from skn.inputs.layout import Encoded, make_batch
from skn.models.tokenizer import Tokenizer, token_id

AUX_TOKENS = ("N", "Y")  # the auxiliary target: the shortcut does not hold / holds


class Auxiliary(Enum):
    NONE = "none"
    SHORTCUT = "shortcut"  # from slots 0..P-2: "Y" when the item's last-digit shortcut holds, else "N"


def aux_token_ids(tokenizer: Tokenizer) -> tuple[int, int]:
    """The ids of AUX_TOKENS ("N", "Y")."""
    return token_id(tokenizer, AUX_TOKENS[0]), token_id(tokenizer, AUX_TOKENS[1])


def aux_targets(starts: Tensor, width: int, labels: Sequence[bool], prompt_len: int, ids: tuple[int, int]) -> Tensor:
    """[B, width] targets: AUX_TOKENS[label] from slots 0..P-2 of each row (the slot before the completion
    predicts its first token), -100 elsewhere."""
    out = torch.full((len(labels), width), -100, dtype=torch.int64)
    for b, (start, label) in enumerate(zip(starts.tolist(), labels)):
        out[b, start : start + prompt_len - 1] = ids[int(label)]
    return out


def shortcut_labels(examples: Sequence[Example]) -> tuple[bool, ...]:
    return tuple(bool(e.meta["last_digit_shortcut"]) for e in examples)


def aux_accuracy(model: nn.Module, rows: Sequence[Encoded], labels: Sequence[bool], prompt_len: int,
                 placeholder: int, pad: int, ids: tuple[int, int]) -> float:
    """How often the slot before the last says the right one of AUX_TOKENS (the larger logit of the two)."""
    model.eval()
    right = 0
    with torch.no_grad():
        for lo in range(0, len(rows), 256):
            batch = make_batch(rows[lo : lo + 256], prompt_len, pad, slot_token=placeholder)
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            at = batch.prompt_start + prompt_len - 2
            pick = logits[torch.arange(len(at)), at][:, list(ids)].argmax(dim=1)
            right += sum(int(p) == int(l) for p, l in zip(pick.tolist(), labels[lo : lo + 256]))
    return right / max(len(rows), 1)
