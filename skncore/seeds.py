"""`skn probe --seeds 0,1,2`: one prompt per seed, each probed, all in one run directory.

    RUN/seed-0/   a whole run directory (prompt.safetensors, stats.safetensors, neurons.json, ...)
    RUN/seed-1/
    RUN/seeds.json            the seeds and their sub-runs, written after each one finishes
    RUN/compare.json, .csv, .png  skn.compare over the sub-runs (when there are at least two)

The seed changes the prompt's initialisation and batch order only: the data split, the sampled examples
and the holdout folds come from the job as given, so every prompt is read on the same validation set.
Seeds run one after another; when one fails, the sub-runs already finished stay on disk and the error
names the seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from skn import api
from skn.compare import SUBRUN_PREFIX, Comparison, compare_runs, write_comparison
from skn.errors import InternalError, SknError, UsageError
from skn.progress import ProgressSink, SilentProgress
from skn.rundir import write_json

SEEDS_FILE = "seeds.json"


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2); distinct integers, at least one."""
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--seeds {text}: expected comma-separated integers, e.g. 0,1,2") from None
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text}: a seed is repeated")
    return seeds


def subrun_dir(out: Path, seed: int) -> Path:
    return Path(out) / f"{SUBRUN_PREFIX}{seed}"


@dataclass(frozen=True)
class SeedsOutcome:
    seeds: tuple[int, ...]
    outcomes: tuple[api.ProbeOutcome, ...]  # seeds order
    comparison: Comparison | None  # None for a single seed


def run_seeds(job: api.ProbeJob, seeds: Sequence[int], top_k: int = 10, progress: ProgressSink = SilentProgress()) -> SeedsOutcome:
    """`api.run_probe_job` once per seed into job.out/seed-N, then compare the sub-runs."""
    if not seeds:
        raise UsageError("--seeds needs at least one seed")
    if job.prompt_path is not None:
        raise UsageError("--seeds trains one prompt per seed; it cannot be combined with --prompt")
    outcomes: list[api.ProbeOutcome] = []
    done: list[dict[str, object]] = []
    for seed in seeds:
        sub = subrun_dir(job.out, seed)
        seeded = replace(job, out=sub, train_config=replace(job.train_config, seed=seed))
        try:
            outcomes.append(api.run_probe_job(seeded, progress))
        except SknError as err:
            raise type(err)(f"seed {seed} ({sub}): {err}{_kept(done)}") from err
        except Exception as err:
            raise InternalError(f"seed {seed} ({sub}): {type(err).__name__}: {err}{_kept(done)}") from err
        done.append({"seed": seed, "run": sub.name})
        write_json(Path(job.out) / SEEDS_FILE, {"seeds": list(seeds), "done": done})
    comparison = None
    if len(seeds) > 1:
        comparison = compare_runs([subrun_dir(job.out, s) for s in seeds], top_k)
        write_comparison(job.out, comparison)
    return SeedsOutcome(tuple(seeds), tuple(outcomes), comparison)


def _kept(done: Sequence[dict[str, object]]) -> str:
    if not done:
        return ""
    return " (finished seeds kept: " + ", ".join(str(d["run"]) for d in done) + ")"
