"""Post-pass mode: merge one layer's stored prompt activations acts [B, P, m] into the running moments.

Used when the metric is known only after the forward pass (loss, confidence, correct): the pass keeps the
batch's prompt-position activations, and once y is known this kernel does, for every (k, i),

    mean_x[k,i], M2_x[k,i], C_xy[k,i]  <-  Chan merge of  x[b,k,i] (b < B)  with metric y[b]

(formula in `skn.kernels.chan_merge`), exactly what `skn.statistics.stats.update_layer_torch_` computes. Inputs in
fp32/fp16/bf16 are converted exactly to float64 and every sum is float64. One program owns one position k
and block_m neurons; it reads its [B, block_m] activations once, chunk by chunk, and reads and writes its
slice of the three moment tensors once.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from skn.errors import InternalError
from skn.kernels.chan_merge import load_moments, merge_chunk, store_moments
from skn.kernels.launch import DEFAULT_CONFIG, LaunchConfig, launch_merge
from skn.statistics.stats import LayerMoments


@triton.jit(do_not_specialize=["count"])  # type: ignore[untyped-decorator]
def pearson_update_kernel(  # type: ignore[no-untyped-def]
    acts_ptr,
    y_ptr,
    mean_ptr,
    m2_ptr,
    c_ptr,
    count,
    batch,
    width,
    stride_ab,
    stride_ap,
    stride_am,
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
    col_offset = cols.to(tl.int64) * stride_am
    for start in range(0, batch, BLOCK_B):
        rows = start + tl.arange(0, BLOCK_B)
        row_ok = rows < batch
        row_offset = rows.to(tl.int64) * stride_ab + position * stride_ap
        ptrs = acts_ptr + row_offset[:, None] + col_offset[None, :]
        x = tl.load(ptrs, mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32).to(tl.float64)
        y = tl.load(y_ptr + rows, mask=row_ok, other=0.0)
        n, mean_x, m2_x, c_xy, mean_y = merge_chunk(x, y, row_ok, n, mean_x, m2_x, c_xy, mean_y)
    store_moments(mean_ptr, m2_ptr, c_ptr, state, col_ok, mean_x, m2_x, c_xy)


def update_layer_triton_(
    moments: LayerMoments,
    acts: Tensor,
    y: Tensor,
    *,
    config: LaunchConfig = DEFAULT_CONFIG,
) -> None:
    """The `skn.statistics.stats.LayerUpdate` contract on the GPU: acts [B, P, m] (fp32/fp16/bf16), y [B], state [P, m]
    float64 updated in place. No synchronisation with the device."""
    if acts.dim() == 3 and acts.shape[1] != moments.mean_x.shape[0]:
        raise InternalError(f"acts has {acts.shape[1]} positions but the statistics have {moments.mean_x.shape[0]}")
    launch_merge(pearson_update_kernel, [("acts", acts)], None, y, moments, config)
