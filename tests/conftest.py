"""Shared fixtures (the helpers themselves live in helpers.py): TRITON_INTERPRET, torch state restored after
each test, the stories model (skipped where ../shared lacks it), a saved tiny model."""

from __future__ import annotations

import os

# Triton chooses interpreter or compiled mode when it is first imported: set this before any test
# module imports it, so the kernels run on the CPU here whatever the collection order.
os.environ.setdefault("TRITON_INTERPRET", "1")

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import (  # noqa: E402,F401  (re-exported: tests may still import them from conftest)
    CHARS,
    ROOT,
    SHARED,
    SPECIALS,
    STORIES,
    VOCAB,
    char_tokenizer,
    tiny_loaded,
    tiny_model,
)


@pytest.fixture(autouse=True)
def _restore_torch_state() -> Iterator[None]:
    dtype = torch.get_default_dtype()
    state = torch.random.get_rng_state()
    yield
    torch.set_default_dtype(dtype)
    torch.random.set_rng_state(state)


@pytest.fixture
def stories_path() -> Path:
    if not (STORIES / "config.json").is_file():
        pytest.skip(f"{STORIES} is absent")
    return STORIES


@pytest.fixture
def saved_tiny_model(tmp_path: Path) -> Path:
    """A tiny Qwen2 model and its tokenizer saved as a local Hugging Face folder."""
    folder = tmp_path / "tiny-qwen2"
    tiny_model("qwen2").save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)  # type: ignore[attr-defined]
    return folder


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test (thousands of tiny matmuls: on a shared machine a second BLAS thread
    only spins, 100x slower); a module asks for it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
