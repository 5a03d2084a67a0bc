"""What bench/paper_runs.py keeps in the repository, so that a fresh machine continues its runs instead of
training them again (the run folders live outside the repository and did not survive the 2026-12-07 restart).

A probe's training is most of its cost (Gemma 3 RQ3: ~2 h of 2 cores for 800 steps, ~9 min for the pass), and its
whole state is one small file, `RUN/checkpoint.safetensors` (the prompt, the best prompt, AdamW's moments and the
validation curve; ~200 KB). Kept, it gives back a finished run exactly: `skn probe ... --resume` on a folder
holding only that file finds the training complete and runs the pass, which is deterministic (the statistics
bitwise equal, the same curve in run.json), and it continues an unfinished training from its last check.
An ablation curve keeps its result (`ablation_curve.json`) and, while it runs, the forwards it finished
(`ablation_checkpoint.safetensors`). The comparisons take seconds and are made again. The log of commands and
wall times lives here too (KEPT/commands.jsonl), since the wall times cannot be measured again.

    KEPT/EXPERIMENT/RUN/checkpoint.safetensors       e.g. kept/gemma3-rq3/seed-1-800steps/
"""

from __future__ import annotations

from pathlib import Path

from skn.ablation.ablate_files import CURVE_FILE as CURVE
from skn.files.rundir import ABLATION_CHECKPOINT_FILE as CURVE_CHECKPOINT
from skn.files.rundir import CHECKPOINT_FILE as CHECKPOINT
from skn.files.rundir import read_metadata, write_bytes

LOG = "commands.jsonl"


def kept_folder(kept: Path, run: Path) -> Path:
    """Where RUN (RUNS/EXPERIMENT/RUN) is kept: KEPT/EXPERIMENT/RUN."""
    return kept / run.parent.name / run.name


def training_step(checkpoint: Path) -> int:
    """The step a training checkpoint was saved at; -1 where there is none."""
    return int(read_metadata(checkpoint).get("step", "-1")) if checkpoint.is_file() else -1


def _newer(source: Path, target: Path) -> bool:
    """Whether SOURCE holds more than TARGET: a training checkpoint at a later step, an ablation's checkpoint
    that is larger (it only grows), a curve where there is none. Never an earlier state over a later one."""
    if not source.is_file():
        return False
    if source.name == CHECKPOINT:
        return training_step(source) > training_step(target)
    if source.name == CURVE_CHECKPOINT:
        return not target.is_file() or source.stat().st_size > target.stat().st_size
    return not target.is_file()


ALL = (CHECKPOINT, CURVE, CURVE_CHECKPOINT)


def _move(source_dir: Path, target_dir: Path, names: tuple[str, ...] = ALL) -> list[str]:
    moved = []
    for name in names:
        if _newer(source_dir / name, target_dir / name):
            write_bytes(target_dir / name, (source_dir / name).read_bytes())  # atomic: a kill never leaves half a file
            moved.append(name)
    if (target_dir / CURVE).is_file() and (target_dir / CURVE_CHECKPOINT).is_file():
        (target_dir / CURVE_CHECKPOINT).unlink()  # the curve is written: its forwards are in it
    return moved


def keep(run: Path, kept: Path) -> list[str]:
    """Copy what RUN holds beyond its kept state into KEPT; the names of the files copied."""
    return _move(run, kept_folder(kept, run))


def restore(run: Path, kept: Path) -> list[str]:
    """Copy into RUN what KEPT holds beyond it: a run folder lost with its machine comes back as far as it was
    kept, to be finished with --resume (a finished probe, with its run.json, takes back only its curve); the
    names of the files copied."""
    names = (CURVE, CURVE_CHECKPOINT) if (run / "run.json").is_file() else ALL
    return _move(kept_folder(kept, run), run, names)


def keep_all(runs: Path, kept: Path) -> list[str]:
    """keep() for every run folder under RUNS (RUNS/EXPERIMENT/seed-*), e.g. before a session ends with a run
    in flight; one line per run that had something new."""
    lines = []
    for run in sorted(runs.glob("*/seed-*")):
        if run.is_dir() and (moved := keep(run, kept)):
            lines.append(f"kept {', '.join(moved)} of {run} (training step {training_step(run / CHECKPOINT)})")
    return lines
