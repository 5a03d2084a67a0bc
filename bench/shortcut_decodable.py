"""Can any neuron of the bundled model read the last-digit shortcut at the prompt slots? (issue #32, the demo)

    python bench/shortcut_decodable.py            # about a minute on one core
    python bench/shortcut_decodable.py --model /tmp/aux   # another model over the same tokenizer

A planted neuron (skn.models.plant) reads one direction of its layer's FFN input at the soft-prompt slots,
so it can separate the shortcut items only as well as the best linear read of those inputs does. This fits
that read, a ridge regression of `last_digit_shortcut` on the FFN input of every layer (averaged over the
20 slots, and at the last slot), on 512 of the default items (generator seed 11, the placeholder prompt),
and scores it on 512 others (seed 12) by AUROC. Three ridge strengths (relative to the inputs' mean
variance). An AUROC near 0.5 on the held-out items means no neuron, planted or trained, of that layer can
separate the shortcut from these inputs: the model does not carry it there.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.stats import rankdata

from skn import zoo
from skn.engine.encoding import encode
from skn.inputs.data import Example
from skn.inputs.layout import Template
from skn.models.model import load_model
from skn.models.plant import slot_inputs
from skn.training.prompt import PromptInit, init_prompt

RIDGES = (0.01, 0.1, 1.0)


def auroc(score: NDArray[np.float64], label: NDArray[np.float64]) -> float:
    """P(a shortcut item scores above a no-shortcut item), ties counted half (the rank-sum form)."""
    ranks = rankdata(score)
    n1 = float(label.sum())
    n0 = float(label.size) - n1
    return float((ranks[label == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def shortcut(examples: tuple[Example, ...]) -> torch.Tensor:
    return torch.tensor([float(bool(e.meta["last_digit_shortcut"])) for e in examples], dtype=torch.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=512, help="Items to fit on, and as many to score on.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="", help="a model folder [default: the bundled model]")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model or str(zoo.verify_model()), "float32", "cpu")
    split = zoo.default_examples(args.items, args.items)
    prompt = init_prompt(loaded, 20, 0, PromptInit(zoo.PLACEHOLDER))
    rows_fit, rows_score = (encode(loaded, part, Template.AUTO, 20) for part in (split.train, split.val))
    y_fit, y_score = shortcut(split.train), shortcut(split.val)
    print(f"shortcut items: {y_fit.mean():.3f} of the fitted, {y_score.mean():.3f} of the scored\n")
    print("| layer | slots | " + " | ".join(f"ridge {r:g}: fitted / held out" for r in RIDGES) + " |")
    print("|---|---|" + "---|" * len(RIDGES))
    for layer in range(loaded.sites.num_layers):
        for slot in (-1, 18, 19):
            x_fit = slot_inputs(loaded, rows_fit, prompt, layer, slot=slot)
            x_score = slot_inputs(loaded, rows_score, prompt, layer, slot=slot)
            mean = x_fit.mean(dim=0)
            centred = x_fit - mean
            gram = centred.T @ centred
            cells = []
            for ridge in RIDGES:
                penalty = ridge * float(gram.diagonal().mean())
                w = torch.linalg.solve(gram + penalty * torch.eye(gram.shape[0], dtype=torch.float64),
                                       centred.T @ (y_fit - y_fit.mean()))
                fitted = auroc((centred @ w).numpy(), y_fit.numpy())
                held_out = auroc(((x_score - mean) @ w).numpy(), y_score.numpy())
                cells.append(f"{fitted:.3f} / **{held_out:.3f}**")
            print(f"| {layer} | {'mean of 20' if slot < 0 else slot} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
