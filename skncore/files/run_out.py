"""The run directory of a request: named (--out, else a fresh runs/YYYYMMDD-HHMMSS), claimed for as long
as the run lives (skn.files.run_claim), and prepared (skn.files.rundir), keeping the files an earlier run left that
this one continues from."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from skn.files import run_claim
from skn.engine.distributed import Ranks
from skn.engine.request import ProbeRequest
from skn.files.rundir import PASS_CHECKPOINT_FILE, PROMPT_FILE, TRAINING_NAMES, fresh_run_directory, prepare_run_directory


def run_directory(out: str, overwrite: bool = False, keep: tuple[str, ...] = (), resume: bool = False) -> Path:
    """The run directory: `out` (empty, or emptied by `overwrite`, or an unfinished run's with `resume`; see
    skn.files.rundir), or a fresh runs/YYYYMMDD-HHMMSS when none is given."""
    if not out:
        return fresh_run_directory(Path("runs"), time.strftime("%Y%m%d-%H%M%S"))
    return prepare_run_directory(Path(out), overwrite, keep, resume)


@contextmanager
def claimed_run_directory(request: ProbeRequest, ranks: Ranks) -> Iterator[Path | None]:
    """Rank 0's run directory (`run_directory`), claimed before it is checked and for as long as the run
    lives (skn.files.run_claim): a second run on the same --out is refused; None on the other ranks."""
    if not ranks.leader:
        yield None
        return
    target = Path(request.out) if request.out else run_directory("")
    with run_claim.hold(target):
        yield run_directory(str(target), request.overwrite, kept_files(request), request.train.resume)


def kept_files(request: ProbeRequest) -> tuple[str, ...]:
    """The skn files a new run may find in its --out: the training's own, when it resumes that training
    or probes with that directory's prompt, and the probe pass's checkpoint when it resumes."""
    if not request.out:
        return ()
    out = Path(request.out).resolve()
    prompt = Path(request.prompt).resolve() if request.prompt else None
    uses_own_prompt = prompt is not None and prompt in (out, out / PROMPT_FILE)
    if request.train.resume:
        return (*TRAINING_NAMES, PASS_CHECKPOINT_FILE)
    return TRAINING_NAMES if uses_own_prompt else ()


__all__ = ["claimed_run_directory", "kept_files", "run_directory"]
