"""In-pass mode, gated FFN: form SiLU(gate) * up at the prompt rows and merge it into the moments.

A forward hook on `gate_proj` and one on `up_proj` hand this kernel their outputs gate, up [B, T, m] in the
model dtype. At the prompt rows t = offsets[b] + k (k < P) it forms the neuron activation as Hugging Face
does (`act_fn(gate_proj(h)) * up_proj(h)`, torch's CUDA SiLU computing in float32):

    s   = round_dtype( g / (1 + exp(-g)) )                      g = float32(gate)
    act = round_dtype( float32(s) * float32(up) )               (exact in float32 for fp16/bf16, then rounded)

with an IEEE exp (libdevice) and an IEEE division, so act is bit-identical to torch on CUDA; then merges act
as `skn.kernels.pearson_update` does (Chan, float64). Under the interpreter, exp is numpy's, which may differ
from torch's CPU SiLU in the last float32 bit (so by one unit of the model dtype, rarely, for fp16/fp32).
It reads 2*B*P*m elements; the down projection's input (`skn.kernels.pearson_gather`) holds the same
activations in B*P*m, so prefer that hook unless the gate/up outputs are what the pass already has.
Precondition, not checked here: 0 <= offsets[b] and offsets[b] + P <= T.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.language.extra import libdevice

from skn.errors import InternalError
from skn.kernels.chan_merge import load_moments, merge_chunk, store_moments
from skn.kernels.launch import DEFAULT_CONFIG, LaunchConfig, launch_merge
from skn.statistics.stats import LayerMoments


@triton.jit  # type: ignore[untyped-decorator]
def round_to_dtype(v, dtype: tl.constexpr, IS_BF16: tl.constexpr):  # type: ignore[no-untyped-def]
    """float32 -> dtype, rounding to nearest even. Spelled out in bits for bf16 because Triton's interpreter
    truncates there; on the GPU it is the same rounding as cvt.rn.bf16.f32 (NaN payloads aside)."""
    if IS_BF16:
        bits = v.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return v.to(dtype)


@triton.jit  # type: ignore[untyped-decorator]
def silu_times_up(gate, up, IS_BF16: tl.constexpr, IEEE_EXP: tl.constexpr):  # type: ignore[no-untyped-def]
    """SiLU(gate) * up rounded where Hugging Face rounds: after the SiLU and after the product."""
    g = gate.to(tl.float32)
    if IEEE_EXP:
        e = libdevice.exp(-g)
    else:  # the interpreter has no libdevice
        e = tl.exp(-g)
    s = round_to_dtype(tl.math.div_rn(g, 1.0 + e), gate.dtype, IS_BF16)
    return round_to_dtype(s.to(tl.float32) * up.to(tl.float32), gate.dtype, IS_BF16)


@triton.jit(do_not_specialize=["count"])  # type: ignore[untyped-decorator]
def pearson_gated_kernel(  # type: ignore[no-untyped-def]
    gate_ptr,
    up_ptr,
    offsets_ptr,
    y_ptr,
    mean_ptr,
    m2_ptr,
    c_ptr,
    count,
    batch,
    width,
    stride_gb,
    stride_gt,
    stride_gm,
    stride_ub,
    stride_ut,
    stride_um,
    BLOCK_B: tl.constexpr,
    BLOCK_M: tl.constexpr,
    IS_BF16: tl.constexpr,
    IEEE_EXP: tl.constexpr,
):
    position = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    col_ok = cols < width
    state = position * width + cols
    mean_x, m2_x, c_xy = load_moments(mean_ptr, m2_ptr, c_ptr, state, col_ok)
    n = count.to(tl.float64)
    mean_y = n * 0.0  # y arrives relative to the running metric mean
    cols64 = cols.to(tl.int64)
    for start in range(0, batch, BLOCK_B):
        rows = start + tl.arange(0, BLOCK_B)
        row_ok = rows < batch
        tile_ok = row_ok[:, None] & col_ok[None, :]
        token = tl.load(offsets_ptr + rows, mask=row_ok, other=0) + position
        rows64 = rows.to(tl.int64)
        g_ptrs = gate_ptr + (rows64 * stride_gb + token * stride_gt)[:, None] + (cols64 * stride_gm)[None, :]
        u_ptrs = up_ptr + (rows64 * stride_ub + token * stride_ut)[:, None] + (cols64 * stride_um)[None, :]
        gate = tl.load(g_ptrs, mask=tile_ok, other=0.0)
        up = tl.load(u_ptrs, mask=tile_ok, other=0.0)
        x = silu_times_up(gate, up, IS_BF16, IEEE_EXP).to(tl.float32).to(tl.float64)
        y = tl.load(y_ptr + rows, mask=row_ok, other=0.0)
        n, mean_x, m2_x, c_xy, mean_y = merge_chunk(x, y, row_ok, n, mean_x, m2_x, c_xy, mean_y)
    store_moments(mean_ptr, m2_ptr, c_ptr, state, col_ok, mean_x, m2_x, c_xy)


def update_layer_gated_triton_(
    moments: LayerMoments,
    gate: Tensor,
    up: Tensor,
    offsets: Tensor,
    y: Tensor,
    *,
    config: LaunchConfig = DEFAULT_CONFIG,
) -> None:
    """Merge SiLU(gate) * up at rows offsets[b] + k (k < P) into the state [P, m] float64 in place; gate and up
    [B, T, m] in one dtype (fp32/fp16/bf16), offsets [B] int64, y [B]. No synchronisation with the device."""
    from triton.runtime.interpreter import InterpretedFunction

    if up.shape != gate.shape or up.dtype != gate.dtype:
        raise InternalError(f"gate {tuple(gate.shape)} {gate.dtype} and up {tuple(up.shape)} {up.dtype} differ")
    launch_merge(
        pearson_gated_kernel, [("gate", gate), ("up", up)], offsets, y, moments, config,
        IS_BF16=gate.dtype == torch.bfloat16, IEEE_EXP=not isinstance(pearson_gated_kernel, InterpretedFunction),
    )
