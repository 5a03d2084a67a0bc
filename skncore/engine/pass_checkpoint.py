"""Resumable probe passes: the statistics pass saves its state every `--checkpoint-every` batches.

    RUN/pass_checkpoint.safetensors
        part.K.NAME      the state of the pass's K-th statistic (skn.statistics.statistic; 0: the moments, StatsAccumulator
                         or FoldAccumulator; 1..: the others, e.g. skn.statistics.null's NullAccumulator)
        metric           [done] float64, the metric values of the examples done so far
        metadata         done (examples merged), fingerprint (what the pass is over), skn_version

Every statistic has `state() -> dict[str, Tensor]` and `load_state(mapping)` (skn.statistics.statistic.Statistic); an
object handed to the pass without them makes --checkpoint-every refuse before the first batch, naming it. The file is written through skn.files.rundir's atomic write (a temporary name,
fsync, rename), so a kill -9 at any moment leaves the previous checkpoint or the new one.

`skn probe --resume` restores every part after the pass has been set up (every statistic's `begin` has
run) and continues with example `done`; the result equals an uninterrupted run's, bitwise when the
batches are the same (the moments are float64 and saved exactly, the null's generator state with them).
A checkpoint of another pass (other examples, prompt, metric, holdout, null) is refused: the fingerprint
covers them. The checkpoint is removed once the run directory is complete (skn.engine.run).

`pass_checkpoint(loaded, config, out, resume)` is a probe's `PassCheckpoint` (None: it neither writes nor resumes one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from skn.errors import RunDirError, UsageError
from skn.inputs.layout import Encoded
from skn.models.model import LoadedModel
from skn.engine.probe_config import ProbeConfig
from skn.files.rundir import PASS_CHECKPOINT_FILE as PASS_CHECKPOINT_FILE  # the name lives with the others
from skn.files.rundir import load_tensors, write_tensors
from skn.statistics.statistic import Statistic
from skn.version import __version__



@dataclass(frozen=True)
class PassCheckpoint:
    """Where and how often to checkpoint a pass. `every` batches (0: never write, only resume);
    `resume`: continue from the file when there is one; `identity`: text that must match for a resume
    (the caller's settings the pass cannot see, e.g. the model and the null's seed)."""

    directory: Path
    every: int = 0
    resume: bool = False
    identity: str = ""

    def __post_init__(self) -> None:
        if self.every < 0:
            raise UsageError(f"--checkpoint-every must not be negative, got {self.every}")

    @property
    def path(self) -> Path:
        return Path(self.directory) / PASS_CHECKPOINT_FILE


def pass_checkpoint(loaded: LoadedModel, config: ProbeConfig, out: Path | None, resume: bool) -> PassCheckpoint | None:
    """The pass's checkpoint settings: None when it neither writes nor resumes one (no `out`: nowhere to write)."""
    if out is None:
        if resume:
            raise UsageError("--resume needs a run directory (--out)")
        return None
    if not config.checkpoint_every and not resume:
        return None
    identity = f"{loaded.name}|{loaded.dtype}|{config.null}|{config.holdout}|{config.holdout_seed}|{config.score.value}"
    return PassCheckpoint(out, config.checkpoint_every, resume, identity)


def fingerprint(prompt: Tensor, rows: Sequence[Encoded], metric: str, confirm: Tensor | None, identity: str) -> str:
    """sha256 over what decides the pass's numbers: the prompt, the token ids in order, the metric, the folds."""
    digest = hashlib.sha256()
    digest.update(prompt.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    for row in rows:
        digest.update(repr((row.instruction, row.completion)).encode())
    digest.update(metric.encode())
    if confirm is not None:
        digest.update(confirm.to("cpu", torch.uint8).numpy().tobytes())
    digest.update(identity.encode())
    return digest.hexdigest()


def _name(part: object) -> str:
    return type(part).__name__


def check_checkpointable(parts: Sequence[object]) -> list[Statistic]:
    missing = [_name(p) for p in parts if not isinstance(p, Statistic)]
    if missing:
        raise UsageError(
            f"--checkpoint-every: {', '.join(missing)} cannot be checkpointed (no state()/load_state()); "
            "run without --checkpoint-every or without that statistic"
        )
    return [p for p in parts if isinstance(p, Statistic)]


class PassSaver:
    """The statistics pass's side of a checkpoint: `start()` before the first batch, `after_batch` after each."""

    def __init__(self, checkpoint: PassCheckpoint, parts: Sequence[object], count: int, print_: str) -> None:
        self._checkpoint = checkpoint
        self._parts = check_checkpointable(parts)
        self._count = count
        self._fingerprint = print_
        self._batches = 0

    def start(self) -> tuple[int, list[Tensor]]:
        """(examples already done, their metric values): (0, []) unless resuming from a checkpoint."""
        path = self._checkpoint.path
        if not self._checkpoint.resume or not path.is_file():
            return 0, []
        tensors = load_tensors(path)
        metadata = _metadata(path)
        if metadata.get("fingerprint") != self._fingerprint:
            raise RunDirError(
                f"--resume: {path} is the checkpoint of another pass (other examples, prompt, metric, holdout "
                "or null); resume with the same settings, or --overwrite to start afresh"
            )
        done = int(metadata.get("done", "-1"))
        if not 0 <= done <= self._count or "metric" not in tensors or int(tensors["metric"].numel()) != done:
            raise RunDirError(f"--resume: {path} is inconsistent (done={metadata.get('done')}); --overwrite to start afresh")
        for k, part in enumerate(self._parts):
            prefix = f"part.{k}."
            part.load_state({name[len(prefix):]: value for name, value in tensors.items() if name.startswith(prefix)})
        return done, [tensors["metric"]]

    def after_batch(self, done: int, values: Sequence[Tensor]) -> None:
        """Called once a batch is merged everywhere; writes the checkpoint every `every` batches."""
        self._batches += 1
        if self._checkpoint.every == 0 or (self._batches % self._checkpoint.every and done < self._count):
            return

        tensors = {f"part.{k}.{name}": value for k, part in enumerate(self._parts) for name, value in part.state().items()}
        tensors["metric"] = torch.cat([v.detach().to("cpu", torch.float64) for v in values]) if values else torch.zeros(0, dtype=torch.float64)
        write_tensors(self._checkpoint.path, tensors,
                      {"done": str(done), "fingerprint": self._fingerprint, "skn_version": __version__})


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as err:
        raise RunDirError(f"{path}: not a readable safetensors file ({err})") from None


def remove_checkpoint(directory: Path) -> None:
    """The run is complete: its pass checkpoint has done its job."""
    (Path(directory) / PASS_CHECKPOINT_FILE).unlink(missing_ok=True)
