"""What skn needs of a tokenizer: the `Tokenizer` protocol (a Hugging Face tokenizer satisfies it).

The optional attributes (`pad_token_id`, `eos_token_id`, `unk_token_id`, `chat_template`, ...) may be
missing or None on a given tokenizer, so they are read with `getattr(tokenizer, name, None)`, never assumed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class Tokenizer(Protocol):
    """tokenizer(text, add_special_tokens=...)["input_ids"], token -> id, and the chat template."""

    def __call__(self, text: str, *, add_special_tokens: bool) -> Mapping[str, Any]: ...

    def convert_tokens_to_ids(self, tokens: str) -> int | list[int]: ...

    def apply_chat_template(
        self, conversation: list[dict[str, str]], *, tokenize: bool, add_generation_prompt: bool
    ) -> object: ...


def token_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of one token (-1 where the tokenizer gives something else)."""
    value = tokenizer.convert_tokens_to_ids(token)
    return value if isinstance(value, int) else -1
