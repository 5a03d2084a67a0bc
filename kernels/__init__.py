"""Fused statistics updates for the probe pass (Triton on CUDA) and their torch references.

    chan_merge      the device function all kernels share: Chan's merge of a chunk of rows (float64)
    pearson_update  post-pass mode: acts [B, P, m] -> moments          (`update_layer_triton_`)
    pearson_gather  in-pass mode: prompt rows of x [B, T, m]           (`update_layer_gathered_triton_`)
    pearson_gated   in-pass mode: SiLU(gate) * up at the prompt rows   (`update_layer_gated_triton_`)
    reference       the torch path for the in-pass modes (`gated_activation`, the gathered and gated updates)
    launch          shape/dtype/device checks and tile sizes shared by the launchers

Importing this package does not import triton; the kernel modules do (`skn.statistics.backend` picks them).
"""

if __name__ == "kernels":
    # This folder is skn.kernels. Where a checkout's root is first on sys.path (`python -m pytest`, `python -m skn`
    # or a notebook started there), `import kernels` finds it instead of Hugging Face's `kernels` package, which
    # transformers imports whenever that distribution is installed (recent transformers releases depend on it). Hand
    # the name over to the real package, found on the rest of sys.path; without one, fail as a missing import.
    import importlib.machinery as _machinery
    import importlib.util as _util
    import os as _os
    import sys as _sys

    _root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    _rest = [p for p in _sys.path if _os.path.abspath(p or _os.curdir) != _root]
    _spec = _machinery.PathFinder.find_spec("kernels", _rest)
    if _spec is None or _spec.loader is None:
        raise ModuleNotFoundError("No module named 'kernels' (skn's kernels/ folder is skn.kernels)", name="kernels")
    _real = _util.module_from_spec(_spec)
    _sys.modules["kernels"] = _real  # the import system returns what sys.modules holds once this file has run
    _spec.loader.exec_module(_real)
