"""Which neuron-slots can change the completion at all.

A neuron of the last layer writes only into its own position's output (no later layer reads it), and the
output of a prompt slot before the last predicts the next prompt slot, which is never scored: the last slot
predicts the completion's first token. So such a neuron-slot can track a metric but cannot change it, and
ablating it at the prompt has an effect of exactly 0. `skn probe` says so in its verdict
(skn.views.verdict.reach_line) and `skn ablate` before its passes (skn.ablation.ablate_test.inert_note).
"""

from __future__ import annotations


def reaches_completion(layer: int, slot: int, num_layers: int, prompt_len: int) -> bool:
    """False for layer `num_layers - 1` at a slot before `prompt_len - 1`; True everywhere else."""
    return not (layer == num_layers - 1 and slot < prompt_len - 1)


__all__ = ["reaches_completion"]
