"""Models bundled with skn: `arith_tiny`, the default of `skn probe`, and the examples it runs on.

`arith_tiny` is a 4-layer Llama over characters, trained from scratch by `python -m skn.zoo.train_arithmetic`
on skn's own generated multiple-choice multiplication items (never on BIG-bench's examples). Its
pretraining put a run of `PLACEHOLDER` tokens where skn's soft prompt goes, so a prompt initialised from
that token's embedding starts from the layout the model knows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from skn.inputs.data import Example, Split
from skn.errors import ModelError

BUNDLED_NAME = "skn:arith_tiny (bundled)"  # how runs on the bundled model name it in run.json and tables
PLACEHOLDER = "<soft>"  # the token at the soft-prompt slots during pretraining
DEFAULT_OPERATION = "multiplication"
DEFAULT_DIGITS = (2, 3)  # where the product is out of the model's reach but the last digit is not
DEFAULT_TRAIN_SEED = 11  # generator seeds of the default examples; the model's own training used others
DEFAULT_VAL_SEED = 12
CHECKSUM_FILE = "SHA256SUMS"


def default_model_path() -> Path:
    """The folder of the bundled model (config.json, model.safetensors, tokenizer.json, ...)."""
    return Path(__file__).resolve().parent / "arith_tiny"


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read 1 MiB at a time (the checksum SHA256SUMS holds)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_model(path: Path | None = None) -> Path:
    """Check every file listed in the folder's SHA256SUMS; return the folder or raise ModelError."""
    folder = default_model_path() if path is None else path
    sums = folder / CHECKSUM_FILE
    if not sums.is_file():
        raise ModelError(f"{sums}: missing; the bundled model is incomplete (reinstall skn)")
    for number, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        expected, _, name = line.partition("  ")
        target = folder / name
        if not target.is_file():
            raise ModelError(f"{sums}:{number}: {name} is missing from {folder}")
        digest = file_sha256(target)
        if digest != expected:
            raise ModelError(f"{target}: sha256 {digest} does not match {expected} recorded in {sums}:{number}")
    return folder


def default_examples(train_size: int = 256, val_size: int = 256) -> Split:
    """The examples `skn probe` uses without --data: generated 2- and 3-digit multiplication items in
    BIG-bench's multiple-choice format (skn.tasks.arithmetic), split evenly over the digit counts.
    Validation is generated too (BIG-bench's files may not be installed), from a different seed."""
    from skn.tasks.arithmetic import generate_items, to_example

    def make(total: int, seed: int) -> tuple[Example, ...]:
        out: list[Example] = []
        for i, digits in enumerate(DEFAULT_DIGITS):
            n = total // len(DEFAULT_DIGITS) + (1 if i < total % len(DEFAULT_DIGITS) else 0)
            if n > 0:
                items = generate_items(DEFAULT_OPERATION, digits, n, seed)
                out.extend(to_example(item, seed) for item in items)
        return tuple(out)

    return Split(train=make(train_size, DEFAULT_TRAIN_SEED), val=make(val_size, DEFAULT_VAL_SEED))


__all__ = [
    "BUNDLED_NAME",
    "CHECKSUM_FILE",
    "PLACEHOLDER",
    "default_examples",
    "default_model_path",
    "file_sha256",
    "verify_model",
]
