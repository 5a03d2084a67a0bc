"""Null overhead: the probe pass with the permutation null (--null 100) against --null 0, side by side.

The bench model of probe_overhead.py (a random Qwen2: 8 layers, hidden 512, 1376 neurons, P = 20, batch 16,
random token rows). For each metric mode the two configurations are timed in turn, whole passes over the
N examples, best of --repeats rounds each, so machine noise hits both alike:

    loss        the post-pass mode: within-batch permutations
    grp==a      a label known before the pass: the in-pass mode, whole-set permutations (the prompt rows
                are gathered for the null, which the in-pass statistics alone never do)

`null 100` is `skn.engine.probe.statistics_pass` with a `skn.statistics.null.NullAccumulator` observer plus `null_result`
(the R maxima, the threshold and the top-10 p-values); `null 0` is the pass alone. Also printed: the
co-moments' memory, 4 (R + 1) L P m bytes. Usage: python bench/null_overhead.py [--n 256] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe_overhead import build  # noqa: E402


def main() -> None:
    from skn.inputs.data import Example
    from skn.inputs.metrics import parse_metric
    from skn.statistics.null import NullAccumulator, NullConfig
    from skn.statistics.null_verdict import null_result
    from skn.engine.probe import statistics_pass
    from skn.ranking.rank import Reduce, rank_neurons
    from skn.statistics.stats import correlation

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--permutations", type=int, default=100)
    args = parser.parse_args()
    loaded, rows, examples, prompt = build(args.n)
    examples = [Example(e.instruction, e.completion, {"grp": "a" if i % 3 == 0 else "b"}, e.source) for i, e in enumerate(examples)]
    sites = loaded.sites
    config = NullConfig(args.permutations, 0.05, 0)
    rows_out = config.permutations + 1
    megabytes = 4 * rows_out * sites.num_layers * 20 * sites.width / 1e6
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, N={args.n}, best of {args.repeats} rounds; "
          f"null co-moments: {megabytes:.1f} MB ({rows_out} x {sites.num_layers} x 20 x {sites.width} float32)", flush=True)
    print(f"{'metric':>8} {'null 0 s':>9} {'null %d s' % config.permutations:>11} {'ratio':>7} {'of which null_result s':>23}", flush=True)
    for text in ("loss", "grp==a"):
        spec = parse_metric(text)
        best = {"off": float("inf"), "on": float("inf"), "final": float("inf")}
        statistics_pass(loaded, prompt, rows[:16], examples[:16], spec, 16)  # warm-up
        for _ in range(args.repeats):
            start = time.perf_counter()
            statistics_pass(loaded, prompt, rows, examples, spec, 16)
            best["off"] = min(best["off"], time.perf_counter() - start)
            start = time.perf_counter()
            null = NullAccumulator(sites.num_layers, 20, sites.width, config)
            passed = statistics_pass(loaded, prompt, rows, examples, spec, 16, statistics=[null])
            final = time.perf_counter()
            neurons = rank_neurons(correlation(passed.stats), 10, Reduce.ABS)
            null_result(null.snapshot(), passed.stats, neurons, Reduce.ABS, config.alpha)
            end = time.perf_counter()
            best["on"] = min(best["on"], end - start)
            best["final"] = min(best["final"], end - final)
        print(f"{text:>8} {best['off']:>9.2f} {best['on']:>11.2f} {best['on'] / best['off']:>7.3f} {best['final']:>23.2f}", flush=True)


if __name__ == "__main__":
    main()
