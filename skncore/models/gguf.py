"""GGUF models: one `.gguf` file (or a folder holding exactly one), loaded through transformers' own GGUF
support (`from_pretrained(folder, gguf_file=name)`).

transformers dequantizes every GGUF tensor on load, so the model skn probes is the *dequantized* one, in
float32 (or the dtype asked for, cast after dequantizing): its neurons are those of that float model, not of
the integer kernels llama.cpp would run. The tokenizer and its chat template come from the file. Reading a
GGUF file needs the `gguf` and `accelerate` packages: `pip install 'skn[gguf]'`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from skn.errors import ModelError

SUFFIX = ".gguf"
EXTRA = "pip install 'skn[gguf]'"


@dataclass(frozen=True)
class GgufFile:
    """Where a GGUF model lives: its folder and the file's name in it."""

    folder: Path
    name: str

    @property
    def path(self) -> Path:
        return self.folder / self.name


def find_gguf(name: str) -> GgufFile | None:
    """The GGUF file `name` points to: a `.gguf` path, or a folder with exactly one `.gguf` and no
    Hugging Face `config.json`. None when `name` is no GGUF model (a hub id, a plain model folder)."""
    path = Path(name).expanduser()
    if path.suffix.lower() == SUFFIX:
        if not path.is_file():
            raise ModelError(f"{path}: no such GGUF file")
        return GgufFile(path.parent, path.name)
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    found = sorted(p.name for p in path.iterdir() if p.suffix.lower() == SUFFIX and p.is_file())
    if not found:
        return None
    if len(found) > 1:
        raise ModelError(f"{path}: holds {len(found)} GGUF files ({', '.join(found)}); pass one of them as --model")
    return GgufFile(path, found[0])


def require_gguf_support() -> None:
    """One clear error, naming the extra, when the packages transformers needs for GGUF are missing."""
    missing = [package for package in ("gguf", "accelerate") if importlib.util.find_spec(package) is None]
    if missing:
        raise ModelError(f"reading a GGUF model needs the package{'s' if len(missing) > 1 else ''} "
                         f"{' and '.join(missing)}: {EXTRA}")


def describe(gguf: GgufFile) -> str:
    """What run.json and the summary line say of the weights."""
    return f"GGUF {gguf.name}, dequantized on load: the neurons are those of the dequantized model"
