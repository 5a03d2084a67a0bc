"""Which implementation updates the statistics: the torch reference or the fused Triton kernels.

Three update shapes, each with a torch path and a Triton path that give the same numbers:
`layer_update` (post-pass: acts [B, P, m]), `gathered_update` (in-pass: the prompt rows of a down-projection
input [B, T, m]) and `gated_update` (in-pass: SiLU(gate) * up at the prompt rows of gate, up [B, T, m]).
"""

from __future__ import annotations

from enum import Enum

import torch

from skn.errors import UsageError
from skn.kernels.reference import (
    GatedUpdate,
    GatheredUpdate,
    update_layer_gated_torch_,
    update_layer_gathered_torch_,
)
from skn.statistics.stats import LayerUpdate, TorchLayerUpdate


class Backend(Enum):
    AUTO = "auto"  # Triton on CUDA, torch elsewhere
    TORCH = "torch"
    TRITON = "triton"


def resolve_backend(backend: Backend, device: torch.device) -> Backend:
    """AUTO becomes TRITON on CUDA (where Triton imports) and TORCH elsewhere."""
    if backend is Backend.AUTO:
        return Backend.TRITON if device.type == "cuda" and _triton_available() else Backend.TORCH
    return backend


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _require_triton() -> None:
    if not _triton_available():
        raise UsageError("--backend triton needs the triton package (Linux x86_64 wheels); use --backend torch")


def layer_update(backend: Backend, device: torch.device) -> LayerUpdate:
    """The post-pass statistics update (acts [B, P, m]) for a backend."""
    if resolve_backend(backend, device) is Backend.TORCH:
        return TorchLayerUpdate()
    _require_triton()
    from skn.kernels.pearson_update import update_layer_triton_

    return update_layer_triton_


def fold_update(backend: Backend, device: torch.device) -> LayerUpdate | None:
    """The holdout folds' update: None on the torch path, whose folds add shifted sums (skn.statistics.fold_sums), else
    the Triton post-pass update merging each fold's rows."""
    if resolve_backend(backend, device) is Backend.TORCH:
        return None
    return layer_update(backend, device)


def gathered_update(backend: Backend, device: torch.device) -> GatheredUpdate:
    """The in-pass update reading the prompt rows of x [B, T, m] at per-row offsets, for a backend."""
    if resolve_backend(backend, device) is Backend.TORCH:
        return update_layer_gathered_torch_
    _require_triton()
    from skn.kernels.pearson_gather import update_layer_gathered_triton_

    return update_layer_gathered_triton_


def gated_update(backend: Backend, device: torch.device) -> GatedUpdate:
    """The in-pass update forming SiLU(gate) * up at the prompt rows of gate, up [B, T, m], for a backend."""
    if resolve_backend(backend, device) is Backend.TORCH:
        return update_layer_gated_torch_
    _require_triton()
    from skn.kernels.pearson_gated import update_layer_gated_triton_

    return update_layer_gated_triton_
