"""The soft prompt: P trainable vectors spliced in after the instruction.

Initialisation (documented in docs/definitions.md): the embeddings of P vocabulary tokens drawn uniformly,
without replacement where the vocabulary allows, from the non-special tokens by a generator seeded
with `seed`; or P copies of one named token's embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from skn.errors import UsageError
from skn.inputs.layout import Batch
from skn.models.model import LoadedModel


@dataclass(frozen=True)
class PromptInit:
    """`token == ""`: random vocabulary tokens; otherwise copies of that token's embedding."""

    token: str = ""


def init_prompt(loaded: LoadedModel, prompt_len: int, seed: int, init: PromptInit = PromptInit()) -> Tensor:
    """A fresh [P, d] float32 prompt on the model's device."""
    if prompt_len < 1:
        raise UsageError(f"--prompt-len must be at least 1, got {prompt_len}")
    weight = loaded.input_embeddings.weight.detach()
    if init.token:
        token_id = loaded.tokenizer.convert_tokens_to_ids(init.token)
        unk = getattr(loaded.tokenizer, "unk_token_id", None)
        if not isinstance(token_id, int) or token_id < 0 or (token_id == unk and init.token != getattr(loaded.tokenizer, "unk_token", None)):
            raise UsageError(f"--prompt-init: '{init.token}' is not a token of this tokenizer")
        if token_id >= int(weight.shape[0]):  # a token the tokenizer added past the model's embeddings
            raise UsageError(f"--prompt-init: '{init.token}' is token {token_id}, but the model embeds only "
                             f"tokens 0 to {int(weight.shape[0]) - 1}; pick a token the model has an embedding for")
        rows = torch.full((prompt_len,), token_id, dtype=torch.int64)
    else:
        vocab = int(weight.shape[0])
        special = set(getattr(loaded.tokenizer, "all_special_ids", []) or [])
        candidates = torch.tensor([i for i in range(vocab) if i not in special] or list(range(vocab)))
        generator = torch.Generator().manual_seed(seed)
        if len(candidates) >= prompt_len:
            picks = torch.randperm(len(candidates), generator=generator)[:prompt_len]
        else:
            picks = torch.randint(len(candidates), (prompt_len,), generator=generator)
        rows = candidates[picks]
    return weight[rows.to(weight.device)].to(torch.float32).clone()


def splice(loaded: LoadedModel, batch: Batch, prompt: Tensor) -> Tensor:
    """inputs_embeds [B, T, d] in the model dtype, with the prompt at each row's slots (differentiable in `prompt`)."""
    device = loaded.device
    embeds = loaded.input_embeddings(batch.input_ids.to(device))
    rows = torch.arange(batch.size, device=device).unsqueeze(1)
    cols = batch.prompt_start.to(device).unsqueeze(1) + torch.arange(batch.prompt_len, device=device)
    values = prompt.to(device=device, dtype=embeds.dtype).unsqueeze(0).expand(batch.size, -1, -1)
    spliced: Tensor = embeds.index_put((rows, cols), values)
    return spliced
