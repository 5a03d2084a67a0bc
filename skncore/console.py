"""What reaches the terminal: text from data, paths and options printed as text, never as Rich markup.

Rich reads `[...]` in a plain string as markup and `:name:` as an emoji code, so a validation example
in Llama-2 chat format (`[INST] ... [/INST]`), a path like `runs/x[/y]` or skn's own hint
`pip install 'skn[datasets]'` would crash the printer or lose text. Everything printed goes through a
`rich.text.Text` built here, so no byte of user text is ever parsed.

`quiet_transformers()` hides transformers' own progress bars ("Loading weights") for skn's own calls
and restores the caller's setting afterwards; transformers' warnings are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.text import Text


def text(*parts: str | Text, style: str = "") -> Text:
    """Plain strings and Texts joined into one Text; plain strings are never parsed as markup."""
    out = Text(style=style)
    for part in parts:
        out.append(part if isinstance(part, Text) else Text(str(part)))
    return out


def bold(value: object) -> Text:
    return Text(str(value), style="bold")


def say(console: Console, *parts: str | Text) -> None:
    """Print one line of text (no markup, no emoji codes, no highlighting, no hard wrapping)."""
    console.print(text(*parts), highlight=False, soft_wrap=True, emoji=False, markup=False)


def error_line(message: str, label: str = "error") -> Text:
    """The one red line of a failure: `error: MESSAGE`, the message as plain text."""
    return text(Text(f"{label}: ", style="bold red"), message)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' progress bars off inside the block, the caller's setting back after it."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


__all__ = ["bold", "error_line", "quiet_transformers", "say", "text"]
