"""The completion's scores keep the logits' precision: half precision is scored in float32, float64 in float64
(a float64 model's loss once went through float32, 1e-7 off, which `--dtype float64` runs are meant not to be)."""

from __future__ import annotations

import torch

from skn.training.scoring import scores_from_logits
from helpers import reference_token_nll


def _reference_nll(logits: list[list[float]], targets: list[int]) -> float:
    """Mean negative log-probability of the targets, in float64."""
    return sum(reference_token_nll(row, target) for row, target in zip(logits, targets)) / len(targets)


def test_float64_logits_are_scored_in_float64_and_half_in_float32() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = 1000.0 + torch.randn(1, 3, 7, generator=gen, dtype=torch.float64) * 1e-3  # float32 keeps ~4 digits of these
    targets = torch.tensor([[2, 5, 0]])
    want = _reference_nll(logits[0].tolist(), targets[0].tolist())
    got = scores_from_logits(logits, targets)
    assert got.mean_loss.dtype == torch.float64
    assert abs(float(got.loss[0]) - want) < 1e-12
    in_float32 = scores_from_logits(logits.float(), targets)  # what float64 logits were scored as before
    assert abs(float(in_float32.loss[0]) - want) > 1e-6  # the test can tell the two apart
    half = scores_from_logits(logits.to(torch.bfloat16), targets)
    assert half.mean_loss.dtype == torch.float32
