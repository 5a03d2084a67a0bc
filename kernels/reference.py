"""The torch reference for the in-pass statistics updates (the CPU path, and what the kernels must equal).

In-pass mode reads one layer's FFN tensors [B, T, m] during the forward pass; the P soft-prompt rows of
example b start at `offsets[b]` (the instruction length differs per row), so only

    x[b, offsets[b] + k, :]    for k < P

are neuron activations. For a gated FFN the neuron is the input of the down projection, formed as
Hugging Face forms it, in the model dtype:

    act = SiLU(gate) * up      (F.silu rounds to the model dtype, then the product is rounded again)

Offsets are a precondition, not checked per call (a check on a CUDA tensor would stall the pass once
per layer): run `skn.inputs.layout.check_offsets` once per batch on the CPU copy before moving it to the device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from skn.inputs.layout import gather_prompt_rows
from skn.statistics.stats import LayerMoments, update_layer_torch_

GatheredUpdate = Callable[[LayerMoments, Tensor, Tensor, Tensor], None]
"""(moments, x [B,T,m], offsets [B], y [B]) -> None, updating the moments' tensors in place."""

GatedUpdate = Callable[[LayerMoments, Tensor, Tensor, Tensor, Tensor], None]
"""(moments, gate [B,T,m], up [B,T,m], offsets [B], y [B]) -> None, updating the moments' tensors in place."""


def gated_activation(gate: Tensor, up: Tensor) -> Tensor:
    """SiLU(gate) * up in the dtype of the inputs, exactly as Hugging Face's gated MLPs compute it."""
    return F.silu(gate) * up


def update_layer_gathered_torch_(moments: LayerMoments, x: Tensor, offsets: Tensor, y: Tensor) -> None:
    """`update_layer_torch_` on the prompt rows of x [B, T, m] (see the module docstring)."""
    acts = gather_prompt_rows(x, offsets, int(moments.mean_x.shape[0]))
    update_layer_torch_(moments, acts, y)


def update_layer_gated_torch_(moments: LayerMoments, gate: Tensor, up: Tensor, offsets: Tensor, y: Tensor) -> None:
    """`update_layer_torch_` on SiLU(gate) * up at the prompt rows of gate, up [B, T, m]."""
    positions = int(moments.mean_x.shape[0])
    acts = gated_activation(gather_prompt_rows(gate, offsets, positions), gather_prompt_rows(up, offsets, positions))
    update_layer_torch_(moments, acts, y)
