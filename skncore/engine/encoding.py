"""Examples as token ids for a loaded model: the sequence layout (skn.inputs.layout) within the model's context."""

from __future__ import annotations

from collections.abc import Sequence

from skn.inputs.data import Example
from skn.inputs.layout import Encoded, Template, encode_all
from skn.models.model import LoadedModel


def max_length(loaded: LoadedModel) -> int:
    """The model's context length from its config (0 = unknown)."""
    config = getattr(loaded.model, "config", None)
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 0


def encode(loaded: LoadedModel, examples: Sequence[Example], template: Template, prompt_len: int) -> tuple[Encoded, ...]:
    """Token ids of the examples under the sequence layout (see skn.inputs.layout)."""
    return encode_all(loaded.tokenizer, examples, template, max_length(loaded), prompt_len)


__all__ = ["encode", "max_length"]
