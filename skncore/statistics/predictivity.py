"""Wang et al. 2022's predictivity, for a binary metric (a label, `NAME==VALUE`).

For neuron i of layer l at prompt slot k, with a_t the activation on training example t and y_v in {0, 1}
the label of validation example v:

    baseline     b = mean_t a_t                                  (training set, streamed in float64)
    accuracy     acc = (1/N) sum_v [ (a_v > b) == (y_v == 1) ]   (validation set, from per-cell counts)
    predictivity max(acc, 1 - acc)                               (the better of the two directions)

Counts kept per cell on validation: above = #{a_v > b}, above_pos = #{a_v > b and y_v = 1}; with n and
n_pos = #{y_v = 1}, acc = (above_pos + (n - n_pos) - (above - above_pos)) / n. Both passes feed only the
instruction and the prompt (activations at prompt slots do not depend on what follows).

Ranking (`skn probe --score predictivity`): a neuron's score is its predictivity at its best slot (the
first slot reaching it); neurons rank by it, ties (frequent: predictivity takes N + 1 values) by |r| at
that slot, then (layer, neuron); the Pearson r kept with each neuron is r at that slot, so neurons.json
keeps its meaning.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from skn.errors import UsageError
from skn.inputs.layout import gather_prompt_rows
from skn.inputs.layout import Encoded, make_batch
from skn.models.model import LoadedModel, batch_pad_id
from skn.engine.probe import capture_activations
from skn.training.prompt import splice
from skn.ranking.rank import Neuron, rank_neurons



@dataclass(frozen=True)
class PredictivityCounts:
    train_mean: Tensor  # [L, P, m] float64
    n_train: int
    above: Tensor  # [L, P, m] int64: validation examples with activation > train_mean
    above_pos: Tensor  # [L, P, m] int64: of those, label 1
    n: int
    n_pos: int

    def accuracy(self) -> Tensor:
        """[L, P, m] float64: the share of validation examples where (a > b) == (y == 1)."""
        above_neg = self.above - self.above_pos
        return (self.above_pos + (self.n - self.n_pos) - above_neg).to(torch.float64) / self.n

    def predictivity(self) -> Tensor:
        acc = self.accuracy()
        return torch.maximum(acc, 1.0 - acc)


def binary_labels(values: Tensor) -> Tensor:
    """The metric as 0/1 labels; anything else is a usage error (predictivity needs a label)."""
    if values.numel() == 0 or not bool(((values == 0) | (values == 1)).all()):
        raise UsageError("--score predictivity needs a binary metric: a label NAME==VALUE (or a field that is 0 or 1)")
    return values.to(torch.int64)


def _prompt_passes(loaded: LoadedModel, prompt: Tensor, rows: Sequence[Encoded], batch_size: int) -> Iterator[tuple[int, Tensor]]:
    """Yields (first, batch, acts [L, B, P, m] as float64 on the model's device) per batch."""
    pad = batch_pad_id(loaded)
    prompt_len = int(prompt.shape[0])
    layers = list(range(loaded.sites.num_layers))
    for first in range(0, len(rows), batch_size):
        batch = make_batch(rows[first : first + batch_size], prompt_len, pad, with_completion=False)
        seen: dict[int, Tensor] = {}

        def keep(layer: int, x: Tensor) -> None:
            seen[layer] = gather_prompt_rows(x, batch.prompt_start, prompt_len).to(torch.float64)

        with capture_activations(loaded, layers, keep), torch.no_grad():
            loaded.model(inputs_embeds=splice(loaded, batch, prompt), attention_mask=batch.attention_mask.to(loaded.device), use_cache=False)
        yield first, torch.stack([seen[layer] for layer in layers])


def predictivity_counts(
    loaded: LoadedModel, prompt: Tensor, train_rows: Sequence[Encoded], val_rows: Sequence[Encoded], labels: Tensor,
    batch_size: int = 16,
) -> PredictivityCounts:
    """Two passes (training means, then validation counts), each over instruction + prompt only."""
    if not train_rows:
        raise UsageError("--score predictivity needs training examples for its baseline (the training-set mean)")
    if len(val_rows) != labels.numel():
        raise UsageError(f"{len(val_rows)} validation rows for {labels.numel()} labels")
    shape = (loaded.sites.num_layers, int(prompt.shape[0]), loaded.sites.width)
    total = torch.zeros(shape, dtype=torch.float64, device=loaded.device)
    for _, acts in _prompt_passes(loaded, prompt, train_rows, batch_size):
        total += acts.sum(dim=1)
    mean = total / len(train_rows)
    above = torch.zeros(shape, dtype=torch.int64, device=loaded.device)
    above_pos = torch.zeros_like(above)
    y = labels.to(loaded.device)
    for first, acts in _prompt_passes(loaded, prompt, val_rows, batch_size):
        over = acts > mean.unsqueeze(1)  # [L, B, P, m]
        above += over.sum(dim=1)
        above_pos += (over & (y[first : first + acts.shape[1]] == 1).view(1, -1, 1, 1)).sum(dim=1)
    return PredictivityCounts(mean.cpu(), len(train_rows), above.cpu(), above_pos.cpu(), int(labels.numel()), int(labels.sum()))


def rank_by_predictivity(counts: PredictivityCounts, corr: Tensor, top_k: int) -> tuple[Neuron, ...]:
    """The top_k neurons by predictivity at their best slot (the first such slot), ties broken by |r| at
    that slot (NaN last), then (layer, neuron); each keeps its Pearson r at that slot."""
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    pred = counts.predictivity()  # [L, P, m]
    best, position = pred.max(dim=1)  # first maximum over slots
    r = corr.to(torch.float64).gather(1, position.unsqueeze(1)).squeeze(1)
    layers, width = best.shape
    keys = sorted(((-float(best[l, i]), -(0.0 if math.isnan(float(r[l, i])) else abs(float(r[l, i]))), l, i)
                   for l in range(layers) for i in range(width)))[:top_k]
    return tuple(Neuron(rank, l, i, int(position[l, i]), float(r[l, i])) for rank, (_, _, l, i) in enumerate(keys, start=1))


def agreement(counts: PredictivityCounts, corr: Tensor, top_k: int) -> dict[str, object]:
    """How far the two rankings agree: the overlap of their top K, and Spearman's rho between every
    neuron's best |r| and its best predictivity (neurons with an undefined r left out)."""
    best_r = corr.abs().nan_to_num(nan=-1.0).amax(dim=1).flatten().to(torch.float64).numpy()
    best_p = counts.predictivity().amax(dim=1).flatten().numpy()
    keep = best_r >= 0
    rho = float(np.corrcoef(rankdata(best_r[keep]), rankdata(best_p[keep]))[0, 1]) if keep.sum() > 1 else math.nan
    by_r = {(n.layer, n.index) for n in rank_neurons(corr, top_k)}
    by_p = {(n.layer, n.index) for n in rank_by_predictivity(counts, corr, top_k)}
    return {"top_k": top_k, "top_k_overlap": len(by_r & by_p), "spearman_best_abs_r_vs_predictivity": None if math.isnan(rho) else rho}


def predictivity_record(counts: PredictivityCounts, corr: Tensor, neurons: Sequence[Neuron], score: str) -> dict[str, object]:
    """predictivity.json: both scores of the run's top neurons, and how far the rankings agree."""
    pred = counts.predictivity()
    rows = [{"rank": n.rank, "layer": n.layer, "neuron": n.index, "position": n.position,
             "r": None if math.isnan(n.r) else n.r, "predictivity": float(pred[n.layer, n.position, n.index])}
            for n in neurons]
    return {"ranked_by": score, "n_train": counts.n_train, "n_val": counts.n, "n_positive": counts.n_pos,
            "neurons": rows, "agreement": agreement(counts, corr, max(len(neurons), 1))}
