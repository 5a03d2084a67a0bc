"""Resumable ablations: every forward's measured sets are kept in RUN/ablation_checkpoint.safetensors, so a
`skn ablate` killed at any moment (a curve takes hours on a CPU) loses only the forward under way.

    RUN/ablation_checkpoint.safetensors
        CHUNK.I.loss / .metric / .correct    [N] float64: set I of the forward CHUNK (metric and correct only
                                             where they exist)
        metadata   fingerprint (what every set is measured on), chunks (a JSON list of [CHUNK, sets, has
                   metric, has correct]), skn_version

CHUNK is the sha256 of one forward's stack of sets (`chunk_digest`: the split forward or not, and per set its
place, value and every edit, the values in float64), so a chunk is reused only by a forward of exactly
those sets: the same arithmetic, so a rerun of the same command ends bitwise equal to an uninterrupted one.
The fingerprint covers what all the sets are measured on: the model, its dtype and device, the prompt, the
items' token ids and their alternatives, the metric, the batch size and skn's version. A checkpoint of
other data is replaced at the first forward (the caller hears so). The file is written through
skn.files.rundir's atomic write after every forward, and removed once ablation.json or ablation_curve.json
is written (skn.ablation.ablate_run).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from skn.ablation.ablate import Measures
from skn.ablation.intervention import Intervention
from skn.ablation.stacked_forward import AblationData
from skn.errors import RunDirError
from skn.files.rundir import ABLATION_CHECKPOINT_FILE, load_tensors, read_metadata, write_tensors
from skn.version import __version__


def data_fingerprint(data: AblationData) -> str:
    """sha256 over what every set's measures depend on besides the set itself."""
    digest = hashlib.sha256()
    loaded = data.loaded
    digest.update(repr((loaded.name, str(loaded.dtype), loaded.device.type, data.spec.text, data.batch_size,
                        data.has_alternatives, data.alt_owner, __version__)).encode())
    digest.update(data.prompt.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    for row in (*data.rows, *data.alt_rows):
        digest.update(repr((row.instruction, row.completion)).encode())
    return digest.hexdigest()


def chunk_digest(chunk: Sequence[Intervention | None], split: bool) -> str:
    """sha256 of one forward's sets, in order (None: the unablated model)."""
    digest = hashlib.sha256(repr(("split", split, len(chunk))).encode())
    for intervention in chunk:
        if intervention is None:
            digest.update(b"none;")
            continue
        digest.update(repr((intervention.where.value, intervention.value.kind.value, intervention.value.factor)).encode())
        for layer, edit in sorted(intervention.edits.items()):
            digest.update(repr(("layer", layer)).encode())
            for tensor, dtype in ((edit.neurons, torch.int64), (edit.slots, torch.int64), (edit.values, torch.float64)):
                digest.update(tensor.detach().to("cpu", dtype).contiguous().numpy().tobytes())
        digest.update(b";")
    return digest.hexdigest()


def _no_notice(line: str) -> None:
    """Where a caller gives no `notify`, notices are not shown."""


@dataclass(frozen=True)
class AblationCheckpoint:
    """The measured chunks of one ablation, in memory and in `path` (skn.ablation.ablate.SetStore)."""

    path: Path
    fingerprint: str
    chunks: dict[str, tuple[Measures, ...]] = field(default_factory=dict)  # grows as forwards finish

    def known(self, chunk: Sequence[Intervention | None], split: bool) -> tuple[Measures, ...]:
        """The measures of this forward's sets if a run before measured them; () if not."""
        return self.chunks.get(chunk_digest(chunk, split), ())

    def keep(self, chunk: Sequence[Intervention | None], split: bool, measures: Sequence[Measures]) -> None:
        """Add one forward's measures and write the file again (atomically)."""
        self.chunks[chunk_digest(chunk, split)] = tuple(measures)
        tensors: dict[str, Tensor] = {}
        listing: list[list[object]] = []
        for name, sets in self.chunks.items():
            listing.append([name, len(sets), sets[0].metric is not None, sets[0].correct is not None])
            for i, m in enumerate(sets):
                tensors[f"{name}.{i}.loss"] = m.loss
                if m.metric is not None:
                    tensors[f"{name}.{i}.metric"] = m.metric
                if m.correct is not None:
                    tensors[f"{name}.{i}.correct"] = m.correct
        write_tensors(self.path, tensors, {"fingerprint": self.fingerprint, "chunks": json.dumps(listing),
                                           "skn_version": __version__})

    @property
    def sets(self) -> int:
        """Sets measured so far (counted once per forward they were measured in)."""
        return sum(len(sets) for sets in self.chunks.values())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _read_chunks(path: Path) -> dict[str, tuple[Measures, ...]]:
    tensors = load_tensors(path)
    try:
        listing = json.loads(read_metadata(path)["chunks"])
        return {str(name): tuple(Measures(tensors[f"{name}.{i}.loss"],
                                          tensors[f"{name}.{i}.metric"] if has_metric else None,
                                          tensors[f"{name}.{i}.correct"] if has_correct else None)
                                 for i in range(int(count)))
                for name, count, has_metric, has_correct in listing}
    except (KeyError, TypeError, ValueError) as err:
        raise RunDirError(f"{path}: not an ablation checkpoint skn can read ({err!r}); remove it to start afresh") from None


def open_checkpoint(run_dir: Path, data: AblationData, notify: Callable[[str], None] = _no_notice) -> AblationCheckpoint:
    """RUN's ablation checkpoint for `data`: the chunks an earlier run measured on the same data, or none
    (a checkpoint of other data is replaced at the first forward; `notify` hears either)."""
    path = Path(run_dir) / ABLATION_CHECKPOINT_FILE
    fingerprint = data_fingerprint(data)
    if not path.is_file():
        return AblationCheckpoint(path, fingerprint)
    if read_metadata(path).get("fingerprint") != fingerprint:
        notify(f"note: {path} is an unfinished ablation of other items, prompt, model or batch size; it is replaced")
        return AblationCheckpoint(path, fingerprint)
    checkpoint = AblationCheckpoint(path, fingerprint, _read_chunks(path))
    notify(f"resuming: {checkpoint.sets} sets measured before on these items are kept in {path}; "
           "the forwards this ablation shares with them are not run again")
    return checkpoint
