"""The device functions every statistics kernel is built from: load a block of running moments, merge one
chunk of rows into them, store them back.

For one prompt position and a block of neurons, a chunk holds nb rows x[r, :] (float64) with metric y[r].
Its centred moments and their merge into the running (n, mean_x, M2_x, C_xy, mean_y) are Chan's formula,
the same arithmetic as `skn.statistics.stats.update_layer_torch_`:

    mean_b = sum_r x_r / nb,   dx_r = x_r - mean_b,   dy_r = y_r - mean(y)
    M2_b = sum_r dx_r^2,       C_b = sum_r dx_r dy_r
    n' = n + nb,   w = n nb / n',   d_x = mean_b - mean_x,   d_y = mean(y) - mean_y
    mean_x' = mean_x + d_x nb / n'
    M2_x'   = M2_x + M2_b + d_x^2 w
    C_xy'   = C_xy + C_b + d_x d_y w

Merging a batch chunk by chunk gives, in exact arithmetic, what merging it at once gives; all in float64.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def merge_chunk(x, y, row_ok, n, mean_x, m2_x, c_xy, mean_y):  # type: ignore[no-untyped-def]
    """x [BLOCK_B, BLOCK_M] float64 and y [BLOCK_B] float64, both 0 where row_ok is False; returns the
    merged (n, mean_x, m2_x, c_xy, mean_y)."""
    nb = tl.sum(row_ok.to(tl.float64), axis=0)
    mean_xb = tl.sum(x, axis=0) / nb
    mean_yb = tl.sum(y, axis=0) / nb
    dx = tl.where(row_ok[:, None], x - mean_xb[None, :], 0.0)
    dy = tl.where(row_ok, y - mean_yb, 0.0)
    m2_b = tl.sum(dx * dx, axis=0)
    c_b = tl.sum(dx * dy[:, None], axis=0)
    n_new = n + nb
    weight = n * nb / n_new
    delta_x = mean_xb - mean_x
    delta_y = mean_yb - mean_y
    m2_x = m2_x + m2_b + delta_x * delta_x * weight
    c_xy = c_xy + c_b + delta_x * (delta_y * weight)
    mean_x = mean_x + delta_x * (nb / n_new)
    mean_y = mean_y + delta_y * (nb / n_new)
    return n_new, mean_x, m2_x, c_xy, mean_y


@triton.jit
def load_moments(mean_ptr, m2_ptr, c_ptr, state, col_ok):  # type: ignore[no-untyped-def]
    """The running (mean_x, m2_x, c_xy) at flat indices `state` (0 where col_ok is False)."""
    mean_x = tl.load(mean_ptr + state, mask=col_ok, other=0.0)
    m2_x = tl.load(m2_ptr + state, mask=col_ok, other=0.0)
    c_xy = tl.load(c_ptr + state, mask=col_ok, other=0.0)
    return mean_x, m2_x, c_xy


@triton.jit
def store_moments(mean_ptr, m2_ptr, c_ptr, state, col_ok, mean_x, m2_x, c_xy):  # type: ignore[no-untyped-def]
    """Write the merged moments back where `load_moments` read them."""
    tl.store(mean_ptr + state, mean_x, mask=col_ok)
    tl.store(m2_ptr + state, m2_x, mask=col_ok)
    tl.store(c_ptr + state, c_xy, mask=col_ok)
