"""The paper's experiments at a size that can carry a conclusion (issue #36): converged prompts, 1,000
validation items, three prompt seeds, two model families.

    python bench/paper_runs.py --runs runs/paper                 # many hours on 2 CPU cores; resumable
    python bench/paper_runs.py --runs runs/paper --only smollm2-rq3
    python bench/paper_runs.py --runs runs/paper --keep-now        # before a session ends: keep the runs in flight
    python bench/paper_runs.py --runs /tmp/smoke --smoke          # minutes: every step on a few items

Run directories are RUNS/EXPERIMENT/seed-S-{steps}steps (e.g. runs/paper/smollm2-rq3/seed-0-400steps).

Each step is one `skn` command (printed, timed, appended to KEPT/commands.jsonl). A step whose output exists
is skipped, a probe killed mid-way resumes its training from the checkpoint (`--resume`), and an ablation curve
keeps every forward it finished (RUN/ablation_checkpoint.safetensors), so the script can be stopped and started
again at any point. What a fresh machine needs to continue (each run's training checkpoint, each curve) is kept
in the repository, in KEPT (bench/results/paper/kept; bench/paper_keep.py): after each step, and for the runs in
flight with --keep-now before a session ends. The order puts what other steps need first:

    for each experiment, on SmolLM2-135M-Instruct and then on Gemma 3 270M (when --gemma names its GGUF file)
    before the next experiment (RQ3: BIG-bench arithmetic, all 20 subtasks, metric loss, --control on the instruction's
    length in tokens and the digit count; RQ2: HANS, metric heuristic==lexical_overlap; RQ1, SmolLM2 only:
    Skill-Mix's two skills in minimal pairs (--task skillmix-pairs: the skill varies, the wording does not),
    metric skill==spatial reasoning, --control on the instruction's length in tokens):
        three prompts (prompt seeds 0, 1, 2 on the items of --seed 0), each trained with the linear lr schedule
        in steps of 16 items, 400 steps on SmolLM2 and 800 on Gemma 3 (checked every 20 and every 40 steps:
        Gemma 3's first 400-step prompt was still falling, its curve's exponential fit 6% above its plateau,
        bench/paper_tables.py), then probed on the same 1,000 validation items with the null and the holdout
        skn compare over the three (overlap and consensus)
        skn ablate --curve on seed 0 (zero ablation at the prompt and everywhere; --test auto, 10 controls,
        64 items), which can depart with that many controls (docs/ablation.md)
    then, once every experiment is done, the shorter prompts where an experiment has them, and their comparisons
    (they were made once and lost with their machine on 2026-12-07; their tables are in bench/results/paper/first-runs/,
    so the new evidence comes first):
        SmolLM2 RQ3 ran first at 200 steps (two of its three prompts were not flat by the 1% rule): the
        200-step prompts (seed-S-200steps, made with --seed S: each read other items; with their own
        comparison), and skn compare of seed 0 at 200 and at 400 steps (compare-steps)
        Gemma 3 RQ3 ran first at 400 steps: seed 0's 400-step prompt (the same items and prompt seed)
        and skn compare of seed 0 at 400 and at 800 steps (compare-steps)

`bench/paper_tables.py` reads the run directories into tables under bench/results/paper/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import paper_keep

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = Path("../shared/models/smollm2-135m-instruct")
HANS = Path("../shared/data/hans")
ARITH = Path("../shared/data/bigbench_arithmetic")
SEEDS = (0, 1, 2)
KEPT = ROOT / "bench/results/paper/kept"  # --kept's default (a --smoke run keeps into RUNS/kept)


@dataclass(frozen=True)
class Sizes:
    train: int
    val: int
    batch: int  # 16, not the default 8: HANS's validation loss swings with the label mix of batches of 8
    steps: int
    eval_every: int
    null: int
    curve_items: int
    curve_controls: int
    curve_k: str
    shorter: int  # the steps of SmolLM2 RQ3's first prompts


FULL = Sizes(train=480, val=1000, batch=16, steps=400, eval_every=20, null=100, curve_items=64, curve_controls=10, curve_k="1,10,100",
             shorter=200)
SMOKE = Sizes(train=16, val=24, batch=8, steps=8, eval_every=2, null=19, curve_items=6, curve_controls=2, curve_k="1,3", shorter=4)


class Shorter(Enum):
    """Prompts of an experiment trained fewer steps than its own, compared with them."""

    NONE = "none"
    OTHER_ITEMS = "every seed at Sizes.shorter steps, made with --seed S (other items too)"  # SmolLM2 RQ3's first
    SEED0_AT_BASE = "seed 0 at Sizes.steps, on the same items"  # Gemma 3 RQ3's first prompt, before it went to 800


@dataclass(frozen=True)
class Experiment:
    key: str  # e.g. smollm2-rq3
    model: str
    args: tuple[str, ...]  # task, data, metric and control options
    length: int = 1  # its prompts train length x Sizes.steps steps, checked every length x Sizes.eval_every
    shorter: Shorter = Shorter.NONE

    def steps(self, sizes: Sizes) -> int:
        return sizes.steps * self.length

    def shorter_runs(self, sizes: Sizes) -> tuple[int, tuple[int, ...], bool]:
        """The shorter prompts: their steps, seeds and whether they read --seed 0's items (none: no seeds)."""
        if self.shorter is Shorter.OTHER_ITEMS:
            return sizes.shorter, SEEDS, False
        if self.shorter is Shorter.SEED0_AT_BASE:
            return sizes.steps, (0,), True
        return 0, (), True


def experiments(gemma: str) -> list[Experiment]:
    rq3 = ("--task", "arithmetic", "--data", str(ARITH), "--metric", "loss", "--control", "instruction_tokens,digits")
    rq2 = ("--task", "hans", "--data", str(HANS / "heuristics_train_set.derived.tsv"),
           "--val-data", str(HANS / "heuristics_evaluation_set.derived.tsv"), "--metric", "heuristic==lexical_overlap")
    rq1 = ("--task", "skillmix-pairs", "--metric", "skill==spatial reasoning", "--control", "instruction_tokens")
    tasks = (("rq3", rq3), ("rq2", rq2), ("rq1", rq1))
    smollm2 = {rq: Experiment(f"smollm2-{rq}", str(SMOLLM2), args, shorter=Shorter.OTHER_ITEMS if rq == "rq3" else Shorter.NONE)
               for rq, args in tasks}
    gemma3 = {rq: Experiment(f"gemma3-{rq}", gemma, args, length=2, shorter=Shorter.SEED0_AT_BASE if rq == "rq3" else Shorter.NONE)
              for rq, args in (("rq3", rq3), ("rq2", rq2))} if gemma else {}
    # each task on both models before the next task: the two families can be compared as early as possible
    return [e for rq in ("rq3", "rq2", "rq1") for e in (smollm2.get(rq), gemma3.get(rq)) if e is not None]


def skn() -> str:
    script = Path(sys.executable).with_name("skn")
    return str(script) if script.exists() else "skn"


def run(argv: list[str], done: Path, kept: Path, resumed: bool = False) -> None:
    """`skn ARGV` unless `done` exists; its wall time goes to KEPT/commands.jsonl (one JSON line per command),
    with `resumed` where it continues a killed command (whose earlier parts logged nothing)."""
    line = " ".join(["skn", *argv])
    if done.exists():
        print(f"[reused] {line}", flush=True)
        return
    print(f"[run] {line}", flush=True)
    start = time.perf_counter()
    subprocess.run([skn(), *argv], check=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    kept.mkdir(parents=True, exist_ok=True)
    with (kept / paper_keep.LOG).open("a", encoding="utf-8") as f:
        f.write(json.dumps({"command": line, "wall_s": round(seconds, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                            "resumed": resumed}) + "\n")
    print(f"[done] {seconds:.0f} s", flush=True)


def run_dir(exp: Experiment, seed: int, steps: int, runs: Path) -> Path:
    return runs / exp.key / f"seed-{seed}-{steps}steps"


def probe(exp: Experiment, seed: int, steps: int, runs: Path, sizes: Sizes, kept: Path, same_items: bool = True) -> Path:
    """Seed `seed`'s probe, its prompt trained `steps` steps, into RUNS/EXPERIMENT/seed-S-{steps}steps. With
    `same_items` the seed is the prompt's alone (--prompt-seed; every seed reads --seed 0's items); without, as
    RQ3's 200-step prompts were made, --seed S, which draws other items too. A run kept in KEPT comes back from
    its training checkpoint (a finished training is not repeated; the pass is, in minutes)."""
    out = run_dir(exp, seed, steps, runs)
    paper_keep.restore(out, kept)
    every = sizes.eval_every * max(1, steps // sizes.steps)  # 20 checks at the experiment's steps, as at Sizes.steps
    argv = ["probe", "--model", exp.model, *exp.args, "--train-size", str(sizes.train), "--val-size", str(sizes.val),
            "--batch-size", str(sizes.batch), "--steps", str(steps), "--eval-every", str(every), "--lr-schedule", "linear",
            "--null", str(sizes.null), *(["--seed", "0", "--prompt-seed", str(seed)] if same_items else ["--seed", str(seed)]),
            "--threads", "2", "--out", str(out),
            "--instruction-cache", "3GiB"]  # every training item's instruction kept (SmolLM2: 1 GiB kept 270 of 480)
    if not (out / "run.json").exists() and out.exists():
        # killed earlier: continue its training and pass from their checkpoints, or start afresh without one
        argv.append("--resume" if (out / "checkpoint.safetensors").exists() else "--overwrite")
    run(argv, out / "run.json", kept, resumed="--resume" in argv)
    paper_keep.keep(out, kept)
    return out


def compare(outs: list[Path], folder: Path, kept: Path) -> None:
    run(["compare", *map(str, outs), "--out", str(folder)], folder / "compare.json", kept)


def curve(out: Path, sizes: Sizes, kept: Path) -> None:
    """The ablation curve of one run; resumes after a kill (RUN/ablation_checkpoint.safetensors, kept)."""
    paper_keep.restore(out, kept)
    run(["ablate", str(out), "--curve", "--k", sizes.curve_k, "--value", "zero", "--where", "prompt,all",
         "--items", str(sizes.curve_items), "--controls", str(sizes.curve_controls), "--share", "4",
         "--threads", "2"], out / "ablation_curve.json", kept, resumed=(out / "ablation_checkpoint.safetensors").exists())
    paper_keep.keep(out, kept)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, required=True, help="folder of the run directories")
    parser.add_argument("--gemma", default="", help="Gemma 3 270M's GGUF file (bench/gemma3_reference.py says how to get it)")
    parser.add_argument("--only", default="", help="comma-separated experiment keys, e.g. smollm2-rq3")
    parser.add_argument("--smoke", action="store_true", help="every step on a few items, to check the script")
    parser.add_argument("--kept", type=Path, default=KEPT,
                        help=f"what a fresh machine needs to continue, kept in the repository (default {KEPT.relative_to(ROOT)})")
    parser.add_argument("--keep-now", action="store_true", help="keep what the runs hold now (a run in flight) and stop")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    kept = args.runs / "kept" if args.smoke and args.kept == KEPT else args.kept  # a smoke run never writes the repository
    if args.keep_now:
        print("\n".join(paper_keep.keep_all(args.runs, kept)) or f"nothing new to keep under {args.runs}")
        return 0
    args.runs.mkdir(parents=True, exist_ok=True)
    chosen = [e for e in experiments(args.gemma) if not args.only or e.key in args.only.split(",")]
    for exp in chosen:  # one experiment done whole (probes, comparison, curve) before the next begins
        outs = [probe(exp, seed, exp.steps(sizes), args.runs, sizes, kept) for seed in SEEDS]  # resumable: first
        compare(outs, args.runs / exp.key / "compare", kept)
        curve(outs[0], sizes, kept)  # SmolLM2 RQ3: 7,183 s on 2 cores with the everywhere half in the full forward, before it took the split
    for exp in chosen:  # then the shorter prompts
        steps, seeds, same_items = exp.shorter_runs(sizes)
        short = [probe(exp, seed, steps, args.runs, sizes, kept, same_items=same_items) for seed in seeds]
        if len(short) > 1:
            compare(short, args.runs / exp.key / f"compare-{steps}steps", kept)
        if short:
            compare([short[0], run_dir(exp, 0, exp.steps(sizes), args.runs)], args.runs / exp.key / "compare-steps", kept)
    return 0


if __name__ == "__main__":
    sys.exit(main())
