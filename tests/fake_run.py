"""A small synthetic run directory for the viewer tests (plots, report): written with skn.files.rundir, no model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from skn.inputs.data import Example
from skn.statistics.null import PermutationMode
from skn.statistics.null_verdict import verdict
from skn.ranking.rank import rank_neurons
from skn.files.result import ProbeResult, info_from_json
from skn.files.probe_files import write_probe_run
from skn.statistics.stats import PearsonStats

HEURISTICS = ("lexical_overlap", "subsequence", "constituent")
LAYERS, POSITIONS, WIDTH, N, TOP_K = 3, 4, 40, 60, 6


def make_run(directory: Path, *, metric: str = "heuristic==lexical_overlap", extra_info: dict[str, object] | None = None,
             seed: int = 0, with_null: bool = False) -> ProbeResult:
    """Write a run with random corr (NaNs included), 3 heuristic groups, and a training history; with
    `with_null`, a permutation null whose threshold (0.85) two of the top neurons pass."""
    rng = np.random.default_rng(seed)
    corr = rng.uniform(-0.45, 0.45, size=(LAYERS, POSITIONS, WIDTH))
    corr[1, 2, 7] = 0.93  # a few clearly strong neurons
    corr[2, 0, 3] = -0.88
    corr[0, 3, 11] = 0.81
    corr[:, :, 5] = math.nan  # a constant neuron: undefined at every position
    corr[2, 1, 20] = math.nan  # and scattered undefined entries
    corr[0, 0, 0] = math.nan
    corr_t = torch.tensor(corr, dtype=torch.float32)
    neurons = rank_neurons(corr_t, TOP_K)

    examples = []
    for i in range(N):
        heuristic = HEURISTICS[i % 3]
        text = f"Premise {i}: the <b>doctor</b> & the \"lawyer\" saw the actor. Hypothesis: {heuristic}?"
        examples.append(Example(text, " entailment" if i % 2 else " non-entailment",
                                {"heuristic": heuristic, "label": i % 2, "difficulty": float(i)}, f"val.jsonl:{i + 1}"))
    group = np.array([i % 3 for i in range(N)])
    activations = rng.normal(size=(TOP_K, N)) + 2.0 * (group == 0)[None, :] - 1.0 * (group == 2)[None, :]
    activations[1, group == 1] = 0.25  # one neuron is constant within one group: no density there
    metric_values = torch.tensor((group == 0).astype(np.float64))

    zeros = torch.zeros(LAYERS, POSITIONS, WIDTH, dtype=torch.float64)
    stats = PearsonStats(N, zeros, zeros.clone(), zeros.clone(), float(metric_values.mean()), 1.0)
    history = [{"step": s, "train_loss": 3.0 * math.exp(-s / 40) + 0.5, "val_loss": (3.1 * math.exp(-s / 45) + 0.6) if s % 20 == 0 else None}
               for s in range(0, 201, 5)]
    info: dict[str, object] = {
        "model": "../shared/models/stories260K-hf", "metric": metric, "data": "train.jsonl", "val_data": "val.jsonl",
        "n_val": N, "layers": LAYERS, "width": WIDTH, "prompt_len": POSITIONS, "top_k": TOP_K, "seed": seed,
        "versions": {"skn": "0.1.0", "torch": torch.__version__}, "timings": {"train_s": 12.5, "probe_s": 1.25},
        "train_history": history,
    }
    info.update(extra_info or {})
    null = None
    if with_null:
        maxima = torch.tensor(np.concatenate([[0.9, 0.87, 0.86, 0.86, 0.85], rng.uniform(0.5, 0.84, size=94)]))
        null = verdict(PermutationMode.WHOLE_SET, 0.05, maxima, neurons, tuple(range(len(neurons))))
        info["null"] = {"permutations": 99, "mode": "whole-set", "alpha": 0.05, "threshold": null.threshold,
                        "n_significant": null.n_significant, "top_k": len(neurons)}
    run = ProbeResult(neurons, corr_t, stats, torch.tensor(activations, dtype=torch.float32), metric_values, tuple(examples),
                      info_from_json(info, "fake run.json"), sections={"null": null} if null is not None else {})
    return write_probe_run(directory, run)  # with the run id its files carry
