"""In-pass mode, any FFN: merge the prompt rows of one layer's down-projection input into the moments.

When the metric is known before the pass (a label or a field), a forward pre-hook on the down projection
hands this kernel the whole input x [B, T, m] (GPT-2 `c_proj`, GPT-NeoX `dense_4h_to_h`, OPT `fc2`, or the
SiLU(gate) * up that a gated FFN feeds its `down_proj`). The prompt of row b starts at offsets[b], so

    acts[b, k, i] = x[b, offsets[b] + k, i]        (k < P)

and the moments are merged as in `skn.kernels.pearson_update` (Chan, float64), reading those B*P rows in
place: no [B, P, m] slab is ever written. Addresses are int64 (B*T*m may pass 2^31).
Precondition, not checked here: 0 <= offsets[b] and offsets[b] + P <= T (`skn.inputs.layout.check_offsets`).
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from skn.kernels.chan_merge import load_moments, merge_chunk, store_moments
from skn.kernels.launch import DEFAULT_CONFIG, LaunchConfig, launch_merge
from skn.statistics.stats import LayerMoments


@triton.jit(do_not_specialize=["count"])  # type: ignore[untyped-decorator]
def pearson_gather_kernel(  # type: ignore[no-untyped-def]
    x_ptr,
    offsets_ptr,
    y_ptr,
    mean_ptr,
    m2_ptr,
    c_ptr,
    count,
    batch,
    width,
    stride_xb,
    stride_xt,
    stride_xm,
    BLOCK_B: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    position = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    col_ok = cols < width
    state = position * width + cols
    mean_x, m2_x, c_xy = load_moments(mean_ptr, m2_ptr, c_ptr, state, col_ok)
    n = count.to(tl.float64)
    mean_y = n * 0.0  # y arrives relative to the running metric mean
    col_offset = cols.to(tl.int64) * stride_xm
    for start in range(0, batch, BLOCK_B):
        rows = start + tl.arange(0, BLOCK_B)
        row_ok = rows < batch
        token = tl.load(offsets_ptr + rows, mask=row_ok, other=0) + position
        row_offset = rows.to(tl.int64) * stride_xb + token * stride_xt
        ptrs = x_ptr + row_offset[:, None] + col_offset[None, :]
        x = tl.load(ptrs, mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32).to(tl.float64)
        y = tl.load(y_ptr + rows, mask=row_ok, other=0.0)
        n, mean_x, m2_x, c_xy, mean_y = merge_chunk(x, y, row_ok, n, mean_x, m2_x, c_xy, mean_y)
    store_moments(mean_ptr, m2_ptr, c_ptr, state, col_ok, mean_x, m2_x, c_xy)


def update_layer_gathered_triton_(
    moments: LayerMoments,
    x: Tensor,
    offsets: Tensor,
    y: Tensor,
    *,
    config: LaunchConfig = DEFAULT_CONFIG,
) -> None:
    """Merge x[b, offsets[b] + k, :] (k < P) into the state [P, m] float64 in place; x [B, T, m] fp32/fp16/bf16,
    offsets [B] int64 and y [B] on the state's device. No synchronisation with the device."""
    launch_merge(pearson_gather_kernel, [("x", x)], offsets, y, moments, config)
