"""One forward pass of the frozen model with the soft prompt, and per-example completion scores."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import Tensor

from skn.inputs.layout import Batch
from skn.models.model import LoadedModel, scoring_dtype
from skn.training.prompt import splice


@dataclass(frozen=True)
class CompletionScores:
    """Per-example scores over the completion tokens (EOS included), float64 on the CPU, and the
    mean NLL as a differentiable scalar for training."""

    loss: Tensor  # [B] mean NLL per example
    confidence: Tensor  # [B] mean over completion positions of the top next-token probability
    correct: Tensor  # [B] 1.0 when greedy argmax reproduces every completion token, else 0.0
    mean_loss: Tensor  # scalar, mean of the per-example losses, with grad where the prompt has it
    token_logprob: Tensor  # [B, K] log-probability of each completion token (0 where `token_mask` is False)
    token_mask: Tensor  # [B, K] bool


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def forward_logits(loaded: LoadedModel, batch: Batch, prompt: Tensor) -> tuple[Tensor, int]:
    """Logits for the tail of the batch that holds every scored position, and that tail's first index."""
    embeds = splice(loaded, batch, prompt)
    mask = batch.attention_mask.to(loaded.device)
    scored = (batch.targets != -100).any(dim=0).nonzero()
    first = int(scored[0]) if scored.numel() else batch.input_ids.shape[1] - 1
    keep = batch.input_ids.shape[1] - first
    kwargs: dict[str, object] = {"inputs_embeds": embeds, "attention_mask": mask, "use_cache": False}
    if _accepts_logits_to_keep(loaded.model):
        kwargs["logits_to_keep"] = keep
        logits = loaded.model(**kwargs).logits
        if logits.shape[1] != keep:  # some models ignore it; fall back to slicing
            logits = logits[:, -keep:]
    else:
        logits = loaded.model(**kwargs).logits[:, first:]
    return logits, first


def completion_scores(loaded: LoadedModel, batch: Batch, prompt: Tensor) -> CompletionScores:
    logits, first = forward_logits(loaded, batch, prompt)
    return scores_from_logits(logits, batch.targets[:, first:])


def scores_from_logits(logits: Tensor, targets: Tensor) -> CompletionScores:
    """Scores from logits [B, K, V] and the tokens they predict [B, K] (-100 where nothing is scored)."""
    targets = targets.to(logits.device)
    valid = targets != -100
    log_probs = torch.log_softmax(logits.to(scoring_dtype(logits.dtype)), dim=-1)
    safe = targets.clamp(min=0)
    token_lp = log_probs.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    counts = valid.sum(dim=1).clamp(min=1)
    nll = -(token_lp * valid).sum(dim=1) / counts
    with torch.no_grad():
        top_lp, argmax = log_probs.max(dim=-1)
        confidence = (top_lp.exp() * valid).sum(dim=1) / counts
        correct = ((argmax == safe) | ~valid).all(dim=1)
    return CompletionScores(
        loss=nll.detach().to("cpu", torch.float64),
        confidence=confidence.to("cpu", torch.float64),
        correct=correct.to("cpu", torch.float64),
        mean_loss=nll.mean(),
        token_logprob=(token_lp.detach() * valid).to("cpu", torch.float64),
        token_mask=valid.to("cpu"),
    )
