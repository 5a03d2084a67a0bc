"""Fused statistics updates for the probe pass (Triton on CUDA) and their torch references.

    chan_merge      the device function all kernels share: Chan's merge of a chunk of rows (float64)
    pearson_update  post-pass mode: acts [B, P, m] -> moments          (`update_layer_triton_`)
    pearson_gather  in-pass mode: prompt rows of x [B, T, m]           (`update_layer_gathered_triton_`)
    pearson_gated   in-pass mode: SiLU(gate) * up at the prompt rows   (`update_layer_gated_triton_`)
    reference       the torch path for the in-pass modes (`gated_activation`, the gathered and gated updates)
    launch          shape/dtype/device checks and tile sizes shared by the launchers

Importing this package does not import triton; the kernel modules do (`skn.backend` picks them).
"""
