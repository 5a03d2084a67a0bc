"""How every statistics kernel is launched: the checks (shapes, dtypes, devices, and that Triton can run
there), the grid and the call, in `launch_merge`; each kernel file keeps only its kernel body and a thin
wrapper naming its inputs.

Every kernel takes, in this order: its activation-side inputs, the prompt offsets (in-pass kernels only),
y relative to the running metric mean, the three moment tensors, count, batch, width, the three strides of
each input, then BLOCK_B, BLOCK_M and the kernel's own constexprs. The grid is one program per
(prompt position, block of block_m neurons).

Nothing here synchronises with the device: these are checks on shapes and dtypes only, so a launcher can be
called from a forward hook once per layer without stalling the pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from skn.errors import InternalError, UsageError
from skn.statistics.stats import LayerMoments

INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
STATE_DTYPE = torch.float64


@dataclass(frozen=True)
class LaunchConfig:
    """Tile sizes. block_m neurons per program (any power of two); rows merged per chunk at most block_b."""

    block_m: int = 128
    block_b: int = 16
    num_warps: int = 4

    def __post_init__(self) -> None:
        for name, value in (("block_m", self.block_m), ("block_b", self.block_b), ("num_warps", self.num_warps)):
            if value < 1 or value & (value - 1) or (name == "block_b" and value < 2):
                raise InternalError(f"LaunchConfig.{name} must be a power of two (block_b at least 2), got {value}")

    def rows_per_chunk(self, batch: int) -> int:
        """The chunk height: the batch rounded up to a power of two, between 2 and block_b (masked rows are free)."""
        return max(2, min(self.block_b, 1 << max(batch - 1, 0).bit_length()))


DEFAULT_CONFIG = LaunchConfig()


def check_state(moments: LayerMoments) -> tuple[int, int]:
    """The running moments: three contiguous float64 [P, m] tensors on one device. Returns (P, m)."""
    mean_x, m2_x, c_xy, count = moments.mean_x, moments.m2_x, moments.c_xy, moments.count
    if mean_x.dim() != 2:
        raise InternalError(f"statistics state must be [P, m], got {tuple(mean_x.shape)}")
    for name, tensor in (("mean_x", mean_x), ("m2_x", m2_x), ("c_xy", c_xy)):
        if tensor.shape != mean_x.shape or tensor.dtype != STATE_DTYPE or tensor.device != mean_x.device:
            raise InternalError(
                f"{name} is {tuple(tensor.shape)} {tensor.dtype} on {tensor.device}; "
                f"expected {tuple(mean_x.shape)} {STATE_DTYPE} on {mean_x.device}"
            )
        if not tensor.is_contiguous():
            raise InternalError(f"{name} must be contiguous for the Triton statistics kernels")
    if count < 0:
        raise InternalError(f"negative example count {count}")
    return int(mean_x.shape[0]), int(mean_x.shape[1])


def check_input(name: str, x: Tensor, batch: int, width: int, device: torch.device) -> None:
    """An activation-side tensor [B, *, m] in a supported dtype on the state's device."""
    if x.dim() != 3 or x.shape[0] != batch or x.shape[2] != width:
        raise InternalError(f"{name} must be [{batch}, *, {width}], got {tuple(x.shape)}")
    if x.dtype not in INPUT_DTYPES:
        raise InternalError(f"{name} has dtype {x.dtype}; the kernels read {', '.join(map(str, INPUT_DTYPES))}")
    if x.device != device:
        raise InternalError(f"{name} is on {x.device} but the statistics are on {device}")


def check_offsets_tensor(offsets: Tensor, batch: int, device: torch.device) -> None:
    """Shape, dtype and device only: the bounds are checked once per batch by `check_offsets`."""
    if offsets.shape != (batch,) or offsets.dtype != torch.int64 or offsets.device != device:
        raise InternalError(
            f"prompt offsets must be [{batch}] int64 on {device}, got {tuple(offsets.shape)} {offsets.dtype} "
            f"on {offsets.device}"
        )


def metric_relative(y: Tensor, mean_y: float, batch: int, device: torch.device) -> Tensor:
    """y - mean_y in float64 on the device: the kernels take the metric relative to its running mean, because
    a Python float reaches a Triton kernel as float32."""
    if y.shape != (batch,):
        raise InternalError(f"{batch} activation rows but metric of shape {tuple(y.shape)}")
    return y.to(device=device, dtype=STATE_DTYPE) - mean_y


def require_runnable(kernel: object, device: torch.device) -> None:
    """A compiled kernel needs CUDA tensors; on the CPU only the interpreter (TRITON_INTERPRET=1) runs it."""
    from triton.runtime.interpreter import InterpretedFunction

    if device.type != "cuda" and not isinstance(kernel, InterpretedFunction):
        raise UsageError(
            f"--backend triton needs a CUDA device (the statistics are on {device}); use --backend torch, "
            "or set TRITON_INTERPRET=1 before starting to run the kernels in Triton's (slow) interpreter"
        )


def batch_of(x: Tensor) -> int:
    batch = int(x.shape[0]) if x.dim() > 0 else 0
    if batch < 1:
        raise InternalError("an empty batch cannot update the statistics")
    return batch


def launch_merge(
    kernel: Any,  # a @triton.jit function (untyped)
    inputs: Sequence[tuple[str, Tensor]],
    offsets: Tensor | None,
    y: Tensor,
    moments: LayerMoments,
    config: LaunchConfig,
    **constexprs: bool,
) -> None:
    """Check, then launch `kernel` to merge one layer's batch into `moments` (mean_x, m2_x, c_xy) in place.

    `inputs` are the (name, [B, *, m] tensor) pairs the kernel reads, in its argument order; `offsets` [B]
    int64 for the in-pass kernels, None for the post-pass one. No synchronisation with the device.
    """
    mean_x, m2_x, c_xy, count = moments.mean_x, moments.m2_x, moments.c_xy, moments.count
    positions, width = check_state(moments)
    batch = batch_of(inputs[0][1])
    for name, tensor in inputs:
        check_input(name, tensor, batch, width, mean_x.device)
    if offsets is not None:
        check_offsets_tensor(offsets, batch, mean_x.device)
    require_runnable(kernel, mean_x.device)
    y_rel = metric_relative(y, moments.mean_y, batch, mean_x.device)
    grid = (positions, -(-width // config.block_m))
    pointers = [tensor for _, tensor in inputs] + ([offsets] if offsets is not None else [])
    strides = [tensor.stride(d) for _, tensor in inputs for d in range(3)]
    kernel[grid](
        *pointers, y_rel, mean_x, m2_x, c_xy, count, batch, width, *strides,
        BLOCK_B=config.rows_per_chunk(batch), BLOCK_M=config.block_m, num_warps=config.num_warps, **constexprs,
    )
