"""`skn probe --seeds 0,1,2`: one prompt per seed, each probed, all in one run directory.

    RUN/seed-0/   a whole run directory (prompt.safetensors, stats.safetensors, neurons.json, ...)
    RUN/seed-1/
    RUN/seeds.json            the seeds and their sub-runs, written after each one finishes
    RUN/compare.json, .csv, .png  skn.ranking.compare over the sub-runs (when there are at least two)

The seed changes the prompt's initialisation and batch order only: the data split, the sampled examples
and the holdout folds come from the job as given, so every prompt is read on the same validation set.
Seeds run one after another; when one fails, the sub-runs already finished stay on disk and the error
names the seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from skn.ranking.compare import SUBRUN_PREFIX, Comparison, compare_runs, write_comparison
from skn.checks import seed_value
from skn.errors import InternalError, SknError, UsageError
from skn.engine.progress import ProgressSink, SilentProgress
from skn.files.result import ProbeResult
from skn.engine.request import ProbeRequest, TrainRequest
from skn.engine.run import run_probe
from skn.engine.stage import storage_error
from skn.files.rundir import write_json

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


def check_seeds(train: TrainRequest, seeds: Sequence[int]) -> None:
    """--seeds' checks, before any work: not given with --prompt-seed (both set the prompt's seed), and each
    one a seed."""
    if seeds and train.prompt_seed is not None:
        raise UsageError("--prompt-seed and --seeds both set the prompt's seed: give one of them")
    for each in seeds:
        seed_value("--seeds", each)


def subrun_dir(out: Path, seed: int) -> Path:
    return Path(out) / f"{SUBRUN_PREFIX}{seed}"


@dataclass(frozen=True)
class SeedsOutcome:
    seeds: tuple[int, ...]
    outcomes: tuple[ProbeResult, ...]  # seeds order
    comparison: Comparison | None  # None for a single seed


def run_seeds(request: ProbeRequest, seeds: Sequence[int], progress: ProgressSink = SilentProgress()) -> SeedsOutcome:
    """`skn.engine.run.run_probe` once per prompt seed into request.out/seed-N, then compare the sub-runs."""
    if not seeds:
        raise UsageError("--seeds needs at least one seed")
    check_seeds(request.train, seeds)
    if request.prompt:
        raise UsageError("--seeds trains one prompt per seed; it cannot be combined with --prompt")
    if not request.out:
        raise InternalError("run_seeds needs the run directory named (request.out)")
    out = Path(request.out)
    outcomes: list[ProbeResult] = []
    done: list[dict[str, object]] = []
    for seed in seeds:
        sub = subrun_dir(out, seed)
        seeded = replace(request, out=str(sub), train=replace(request.train, prompt_seed=seed))
        try:
            outcomes.append(run_probe(seeded, progress))
        except Exception as err:
            known = err if isinstance(err, SknError) else storage_error(err, sub)
            if known is None:
                raise InternalError(f"seed {seed} ({sub}): {type(err).__name__}: {err}{_kept(done)}") from err
            raise _reworded(known, f"seed {seed} ({sub}): {known}{_kept(done)}") from err
        done.append({"seed": seed, "run": sub.name})
        write_json(out / SEEDS_FILE, {"seeds": list(seeds), "done": done})
    comparison = None
    if len(seeds) > 1:
        comparison = compare_runs([subrun_dir(out, s) for s in seeds], request.probe.top_k)
        write_comparison(out, comparison)
    return SeedsOutcome(tuple(seeds), tuple(outcomes), comparison)


def _reworded(err: SknError, message: str) -> SknError:
    """`err` with another message: the same class (so its exit code and what callers catch), the same
    attributes (a StageFailure's stage and log, a MetricFailure's values), without calling its __init__,
    whose arguments differ from class to class."""
    cls = type(err)
    new = cls.__new__(cls, message)
    new.__dict__.update(err.__dict__)
    return new


def _kept(done: Sequence[dict[str, object]]) -> str:
    if not done:
        return ""
    return " (finished seeds kept: " + ", ".join(str(d["run"]) for d in done) + ")"
