"""The held-out r and the seed consensus on the TinyStories model, at the default holdout (N = 400).

Writes seeded validation-size data (a filler sentence of 3-18 words, then an animal or a colour word; the
metric `filler_words` is the filler's length, `shuffled` the same values shuffled across items, a null
with no relation to the text), runs `skn probe --seeds` on both metrics and prints per seed the top-10 r on
the selection fold, the held-out r and the replication rate, then the cross-seed overlap against chance.

    python bench/holdout_stories.py --out /tmp/holdout_stories      # about a minute on one CPU thread
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
from pathlib import Path

FILLER = ("once upon a time there was a little girl who liked to play in the big green park with her best "
          "friend every sunny day").split()
WORDS = ["cat", "dog", "bird", "fish", "frog", "red", "blue", "green", "yellow", "pink"]
MODEL = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K-hf"


def write_data(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = rng.randint(3, 18)
        word = rng.choice(WORDS)
        filler = " ".join(FILLER[:k]).capitalize() + "."
        rows.append({"instruction": f"{filler} Then she saw the {word}.", "completion": f" It was {word}.", "filler_words": k,
                     "item": i})
    values = [r["filler_words"] for r in rows]
    rng.shuffle(values)
    for row, value in zip(rows, values):
        row["shuffled"] = value
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def summarise(run: Path) -> str:
    neurons = json.loads((run / "neurons.json").read_text())
    holdout = json.loads((run / "run.json").read_text())["holdout"]
    selection = [abs(n["r"]) for n in neurons]
    held = [n["r_held_out"] * (1 if n["r"] > 0 else -1) for n in neurons if n["r_held_out"] is not None]
    rep = holdout["replication"]
    return (f"{run.name}: top-10 |r| selection {min(selection):.3f}-{max(selection):.3f}; held out (sign-aligned) "
            f"{min(held):+.3f}..{max(held):+.3f}, median {statistics.median(held):+.3f}; replication {rep['rate']:.0%} "
            f"({rep['selection_to_confirmation']:.0%} / {rep['confirmation_to_selection']:.0%}); "
            f"n {holdout['n_selection']} + {holdout['n_confirmation']}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/holdout_stories"))
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    train, val = args.out / "train.jsonl", args.out / "val.jsonl"
    write_data(train, 100, 1)
    write_data(val, 400, 2)
    for metric in ("filler_words", "shuffled"):
        run = args.out / metric
        command = ["skn", "probe", "--model", str(MODEL), "--data", str(train), "--val-data", str(val), "--metric", metric,
                   "--steps", "60", "--seeds", args.seeds, "--threads", "1", "--exemplars", "0", "--out", str(run)]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        for sub in sorted(run.glob("seed-*")):
            print("  ", metric, summarise(sub))
        compared = json.loads((run / "compare.json").read_text())
        for pair in compared["pairs"]:
            print(f"   {metric} seeds {pair['a']}-{pair['b']}: top-10 overlap {pair['overlap']} (chance {pair['overlap_chance']:.2f}), "
                  f"Jaccard {pair['jaccard']:.3f} (chance {pair['jaccard_chance']:.4f}), Spearman {pair['spearman']:+.3f}")
        top = compared["consensus"][:3]
        print(f"   {metric} consensus top 3: " + ", ".join(f"{c['layer']}.{c['neuron']} min {c['consensus_min']:+.3f}" for c in top))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
