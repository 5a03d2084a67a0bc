"""Data parallel probe: `python -m skn probe` as 1 process and as 2 gloo ranks (as torchrun starts them), side by side.

The stories260K model (../shared/models/stories260K-hf), N generated validation examples, a fixed random
prompt (--prompt, so no training), metric `mood==happy` (in-pass), the null on (R = 100), holdout off. Each
configuration runs --repeats times in turn; printed: the best wall time of the whole command (imports and
model loading included) and the best probe pass time from run.json (rank 0's shard under 2 ranks).

    1 process, 1 thread     the baseline
    1 process, 2 threads    torch's intra-op threads on both cores
    2 ranks, 1 thread each  the same two cores, one shard each

Usage: python bench/data_parallel.py [--n 2048] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT.parent / "shared" / "models" / "stories260K-hf"


def write_examples(path: Path, n: int) -> None:
    rng = random.Random(0)
    words = ["the", "cat", "dog", "sun", "ran", "saw", "big", "little", "happy", "sad", "tree", "ball"]
    with path.open("w") as f:
        for _ in range(n):
            text = "Once upon a time " + " ".join(rng.choice(words) for _ in range(rng.randint(4, 20)))
            f.write(json.dumps({"instruction": text, "completion": " The end.", "mood": rng.choice(["happy", "sad"])}) + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(args: list[str], world: int, threads: int, out: Path) -> tuple[float, float]:
    port = free_port()
    start = time.perf_counter()
    procs = []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        if world > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, "-m", "skn", "probe", *args, "--threads", str(threads),
                                       "--out", str(out), "--overwrite"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(err)
    wall = time.perf_counter() - start
    return wall, float(json.loads((out / "run.json").read_text())["timings"]["probe_pass_s"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import torch

    from skn.models.model import load_model
    from skn.training.prompt import init_prompt
    from skn.files.rundir import PromptFile, write_prompt

    work = Path(tempfile.mkdtemp(prefix="skn-dp-bench-"))
    write_examples(work / "val.jsonl", args.n)
    loaded = load_model(str(MODEL), device="cpu")
    write_prompt(work / "P", PromptFile(init_prompt(loaded, 20, seed=0), loaded.name, "plain"))
    probe = ["--model", str(MODEL), "--data", str(work / "val.jsonl"), "--val-data", str(work / "val.jsonl"),
             "--prompt", str(work / "P"), "--metric", "mood==happy", "--holdout", "0", "--null", "100",
             "--batch-size", "32", "--top-k", "10"]
    configs = [("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 1, 2), ("2 ranks, 1 thread each", 2, 1)]
    best = {name: (float("inf"), float("inf")) for name, _, _ in configs}
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, N={args.n}, P=20, batch 32, null R=100, "
          f"best of {args.repeats} rounds", flush=True)
    for _ in range(args.repeats):
        for name, world, threads in configs:
            wall, passed = run(probe, world, threads, work / "RUN")
            best[name] = (min(best[name][0], wall), min(best[name][1], passed))
    base = best[configs[0][0]]
    print(f"{'configuration':>24} {'wall s':>8} {'pass s':>8} {'wall ratio':>11} {'pass ratio':>11}")
    for name, _, _ in configs:
        wall, passed = best[name]
        print(f"{name:>24} {wall:8.2f} {passed:8.2f} {base[0] / wall:11.2f} {base[1] / passed:11.2f}")


if __name__ == "__main__":
    main()
