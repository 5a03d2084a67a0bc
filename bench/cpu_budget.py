"""Science on two CPU cores (issue #35): a SmolLM2 prompt trained to convergence on HANS, then a probe of
1,000 items with the null and the holdout, as one `skn probe`, timed.

    python bench/cpu_budget.py --out bench/results/cpu_budget          # about 15-30 minutes on 2 cores

The command it runs (SmolLM2-135M-Instruct from ../shared, float32 on the CPU, HANS's lexical-overlap label):

    skn probe --model ../shared/models/smollm2-135m-instruct --task hans --data TRAIN --val-data EVAL
              --metric heuristic==lexical_overlap --train-size 400 --val-size 1000 --steps 200 --eval-every 20
              --lr-schedule linear --prompt-ema 0.0 --instruction-cache 4GiB --null 100 --out RUN

(`--lr-schedule constant`, the paper's, kept the validation loss moving by 1.7% over its last three checks at
300 steps: see bench/README.md.)

Convergence, as the issue defines it: at 200 or more steps, the validation loss changes by less than 1% over
its last three checks (max/min - 1 of the last three). The script writes RUN/ (the run directory, without its
large tensors: stats and top activations are left in a scratch folder) and OUT/README.md with the wall time,
where the time went (run.json's timings), the training curve and the verdict on convergence. Figures depend on
the machine and on what else runs: take them on a quiet machine (`uptime`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODEL = SHARED / "models" / "smollm2-135m-instruct"
HANS = SHARED / "data" / "hans"
KEEP = ("run.json", "neurons.json", "neurons.csv", "groups.json")


def command(run: Path, steps: int, train: int, val: int, schedule: str, ema: float) -> list[str]:
    return [sys.executable, "-m", "skn", "probe", "--model", str(MODEL), "--task", "hans",
            "--data", str(HANS / "heuristics_train_set.derived.tsv"), "--val-data", str(HANS / "heuristics_evaluation_set.derived.tsv"),
            "--metric", "heuristic==lexical_overlap", "--train-size", str(train), "--val-size", str(val),
            "--steps", str(steps), "--eval-every", "20", "--lr-schedule", schedule, "--prompt-ema", repr(ema), "--instruction-cache", "4GiB", "--null", "100",
            "--out", str(run)]


def converged(losses: list[float], steps: int) -> tuple[bool, float]:
    last = losses[-3:]
    change = max(last) / min(last) - 1.0 if len(last) == 3 and min(last) > 0 else float("inf")
    return steps >= 200 and change < 0.01, change


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr-schedule", choices=("constant", "linear"), default="linear")
    parser.add_argument("--prompt-ema", type=float, default=0.0, help="skn's --prompt-ema (0 = off).")
    parser.add_argument("--train-size", type=int, default=400)
    parser.add_argument("--val-size", type=int, default=1000)
    args = parser.parse_args()
    if not MODEL.exists() or not HANS.exists():
        print(f"needs {MODEL} and {HANS} (../shared)", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="skn-budget-"))
    run = scratch / "run"
    argv = command(run, args.steps, args.train_size, args.val_size, args.lr_schedule, args.prompt_ema)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
        return done.returncode
    info = json.loads((run / "run.json").read_text())
    history = info.get("train_history", [])
    losses = [float(h["val_loss"]) for h in history if h.get("val_loss") is not None]
    steps = max((int(h["step"]) for h in history), default=0)
    ok, change = converged(losses, steps)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "run").mkdir(exist_ok=True)
    for name in KEEP:
        if (run / name).exists():
            shutil.copy(run / name, args.out / "run" / name)
    timings = info.get("timings", {})
    shown = " ".join(a if a == sys.executable else a.replace(str(ROOT.parent), "..") for a in argv[1:]).replace(str(run), "RUN")
    lines = ["# A converged SmolLM2 prompt and a 1,000-item probe on 2 CPU cores (issue #35)", "", "Made by", "",
             f"    python bench/cpu_budget.py --out {args.out} --steps {args.steps} --train-size {args.train_size} "
             f"--val-size {args.val_size} --lr-schedule {args.lr_schedule} --prompt-ema {args.prompt_ema:g}", "", "which runs", "", f"    python {shown}", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load:.2f} at the start; "
             f"torch {info.get('versions', {}).get('torch', '?')}, dtype {info.get('dtype')}.", "",
             f"**Wall time: {wall:.0f} s ({wall / 60:.1f} min)** for the whole command (loading, training, the probe "
             "pass with the null and the holdout, exemplars, writing).", "",
             "| where | seconds |", "|---|---|"]
    lines += [f"| {name} | {float(value):.1f} |" for name, value in timings.items()]
    extra = info.get("extra", info)
    cache = extra.get("train_instruction_cache") or info.get("train_instruction_cache")
    lines += ["", f"Training step forward: {extra.get('train_step_forward', info.get('train_step_forward'))}; "
              f"instruction cache: {json.dumps(cache)}.", "",
              "Validation loss at each check: " + ", ".join(f"{h['step']}: {float(h['val_loss']):.4f}" for h in history
                                                             if h.get("val_loss") is not None), "",
              f"Converged (>= 200 steps, last three checks within 1%): **{'yes' if ok else 'no'}** "
              f"(max/min - 1 over the last three = {change:.2%}).", ""]
    null = info.get("null") or {}
    lines += [f"Null: threshold {null.get('threshold')}, {null.get('n_significant')} of the top {null.get('top_k')} pass; "
              f"passing in all: {(null.get('passing') or {}).get('total')}.", ""]
    (args.out / "README.md").write_text("\n".join(lines))
    print("\n".join(lines))
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
