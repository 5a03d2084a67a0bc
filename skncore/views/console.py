"""What reaches the terminal: text from data, paths and options printed as text, never as Rich markup.

Rich reads `[...]` in a plain string as markup and `:name:` as an emoji code, so a validation example
in Llama-2 chat format (`[INST] ... [/INST]`), a path like `runs/x[/y]` or skn's own hint
`pip install 'skn[datasets]'` would crash the printer or lose text. Everything printed goes through a
`rich.text.Text` built here, so no byte of user text is ever parsed.

Text from data can also hold terminal control sequences: a window title (`ESC ] 0 ; ... BEL`), a
hyperlink, a colour or a cursor move (`ESC [ ...`) in an instruction, a field name or a path would act on
the user's terminal. `visible()` shows every control character as a `\\xNN` escape instead (C0 but newline
and tab, DEL, C1), so what was there is seen and nothing reaches the terminal; `text`, `bold`, `plain`
and `error_line` apply it to every plain string they are given.

`quiet_transformers()` hides third-party progress bars (transformers' "Loading weights", huggingface_hub's
downloads, the GGUF dequantization bar) for skn's own calls and restores the caller's settings afterwards;
transformers' warnings are left as they are.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from rich.console import Console
from rich.text import Text


_CONTROLS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]
_KEPT = (ord("\n"), ord("\t"))  # layout: cells and messages of several lines
_VISIBLE = {code: f"\\x{code:02x}" for code in _CONTROLS if code not in _KEPT}


def visible(value: str) -> str:
    """`value` with each control character but newline and tab written as `\\xNN` (ESC as `\\x1b`, BEL as
    `\\x07`), so that it is seen and never acts on the terminal."""
    return value.translate(_VISIBLE)


def plain(value: object, style: str = "") -> Text:
    """One piece of text from data or the user (a cell, a title, a path): never markup, no control characters."""
    return Text(visible(str(value)), style=style)


def text(*parts: str | Text, style: str = "") -> Text:
    """Plain strings and Texts joined into one Text; plain strings are never parsed as markup and their
    control characters are shown as escapes (a Text given is taken as it is)."""
    out = Text(style=style)
    for part in parts:
        out.append(part if isinstance(part, Text) else plain(part))
    return out


def bold(value: object) -> Text:
    return plain(value, style="bold")


def say(console: Console, *parts: str | Text) -> None:
    """Print one line of text (no markup, no emoji codes, no highlighting, no hard wrapping)."""
    console.print(text(*parts), highlight=False, soft_wrap=True, emoji=False, markup=False)


def error_line(message: str, label: str = "error") -> Text:
    """The one red line of a failure: `error: MESSAGE`, the message as plain text."""
    return text(Text(f"{label}: ", style="bold red"), message)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Third-party progress bars off inside the block, each caller's setting back after it: transformers' own
    ("Loading weights"), huggingface_hub's (downloads) and the tqdm bar of transformers' GGUF dequantization,
    which neither switch reaches (it is made hidden by `disable=True` for the block)."""
    try:
        from huggingface_hub.utils import (  # type: ignore[attr-defined]  # re-exported without __all__
            are_progress_bars_disabled, disable_progress_bars, enable_progress_bars)
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hub_was_disabled = are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # also huggingface_hub's
    gguf_module, gguf_bar = _gguf_progress()
    if gguf_module is not None:
        setattr(gguf_module, "tqdm", functools.partial(gguf_bar, disable=True))
    try:
        yield
    finally:
        if gguf_module is not None:
            setattr(gguf_module, "tqdm", gguf_bar)
        if was_enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
        if hub_was_disabled:
            disable_progress_bars()
        else:
            enable_progress_bars()


def _gguf_progress() -> tuple[ModuleType | None, Any]:
    """transformers' GGUF loader and the tqdm it draws its dequantization bar with (None where it has none)."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_module
    except ImportError:  # pragma: no cover - an older transformers without GGUF support
        return None, None
    bar = getattr(gguf_module, "tqdm", None)
    if bar is None or isinstance(bar, functools.partial):  # none, or already hidden by an enclosing block
        return None, None
    return gguf_module, bar


__all__ = ["bold", "error_line", "plain", "quiet_transformers", "say", "text", "visible"]
