"""Raw against partial ranking, from finished run directories (bench/results/partial/README.md).

    python bench/partial_summary.py RAW_RUN CONTROLLED_RUN [CONTROLLED_RUN ...] --shortcut last_digit_shortcut

For each run: the covariates and their r with the metric, the top-10 |r| (the ranking's own r: partial with
--control), the top neuron's raw r, the family-wise threshold and how many neurons (of all L x m, at each
neuron's best position on the fold that ranked) exceed it, the top neuron's held-out r, the replication, and
the top neuron's AUROC for the shortcut field (P(activation on a shortcut item > on a no-shortcut item),
ties half; 0.5 = no separation, the sign of the neuron's r decides which side is "high").
Reads only the run directories (skn.read_probe_run); no model is loaded.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from skn.files.probe_read import read_probe_run
from skn.ranking.rank import best_scores


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    pos, neg = scores[positive], scores[~positive]
    if pos.numel() == 0 or neg.numel() == 0:
        return math.nan
    greater = (pos.unsqueeze(1) > neg.unsqueeze(0)).double().mean()
    ties = (pos.unsqueeze(1) == neg.unsqueeze(0)).double().mean()
    return float(greater + 0.5 * ties)


def flag(value: object, expected: str) -> bool:
    text = str(value).lower()
    return text == expected.lower()


def summarise(run_dir: Path, shortcut: str, value: str) -> dict[str, object]:
    run = read_probe_run(run_dir)
    ranked = run.holdout.corr_selection if run.holdout is not None else run.corr
    scores = best_scores(ranked, run.info.reduce).score
    null = run.null
    over = int((scores.abs() > null.threshold).sum()) if null is not None else -1
    positive = torch.tensor([flag(e.meta.get(shortcut), value) for e in run.examples])
    top = run.neurons[0]
    control = run.info.extra.get("control")
    covariates = ", ".join(f"{c['name']} (r {c['r_metric']:+.2f})" for c in control["covariates"]) if isinstance(control, dict) else "none"
    held = run.holdout.per_neuron[0].r_held_out if run.holdout is not None else math.nan
    rate = run.holdout.replication.rate if run.holdout is not None else math.nan
    return {
        "run": run_dir.name, "covariates": covariates,
        "top10": f"{abs(run.neurons[-1].r):.3f}-{abs(top.r):.3f}",
        "top": f"L{top.layer}.{top.index}@{top.position}", "r": f"{top.r:+.3f}",
        "raw_r": f"{run.partial.raw_r[0]:+.3f}" if run.partial is not None else f"{top.r:+.3f}",
        "held_out": f"{held:+.3f}", "replication": f"{rate:.0%}" if not math.isnan(rate) else "n/a",
        "threshold": f"{null.threshold:.3f}" if null is not None else "n/a",
        "over_null": f"{over} of {scores.numel()}",
        "auroc": f"{auroc(run.top_activations[0].double(), positive):.3f} (n+ {int(positive.sum())}, n- {int((~positive).sum())})",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--shortcut", default="last_digit_shortcut", help="the field that marks a shortcut item")
    parser.add_argument("--value", default="true", help="its value on shortcut items")
    args = parser.parse_args()
    rows = [summarise(r, args.shortcut, args.value) for r in args.runs]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
