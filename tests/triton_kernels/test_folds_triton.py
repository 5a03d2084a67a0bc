"""The folds on the Triton backend (interpreted on the CPU) equal the torch path: single-row and one-fold batches included."""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

triton = pytest.importorskip("triton")

from skn.statistics.backend import Backend, layer_update  # noqa: E402
from skn.statistics.folds import FoldAccumulator  # noqa: E402


def test_fold_accumulator_on_triton_equals_torch() -> None:
    gen = torch.Generator().manual_seed(0)
    n, layers, positions, width = 19, 2, 3, 10
    acts = (torch.randn(n, layers, positions, width, generator=gen) * 3 + 50).to(torch.bfloat16)
    y = torch.randn(n, generator=gen, dtype=torch.float64)
    confirm = torch.zeros(n, dtype=torch.bool)
    confirm[[0, 4, 5, 6, 7, 12]] = True  # batch 4..7 is all confirmation; batch 0..3 holds one confirmation row
    result = {}
    for backend in (Backend.TORCH, Backend.TRITON):
        folds = FoldAccumulator(confirm, layers, positions, width, update_layer=layer_update(backend, torch.device("cpu")))
        for first in range(0, n, 4):
            size = min(4, n - first)
            folds.begin_batch(first, size)
            for layer in range(layers):
                folds.add_layer(layer, first, acts[first : first + size, layer], y[first : first + size])
            folds.finish_batch(first, y[first : first + size])
        result[backend] = folds.snapshot()
    for part in ("selection", "confirmation"):
        a, b = getattr(result[Backend.TORCH], part), getattr(result[Backend.TRITON], part)
        assert a.count == b.count
        for name in ("mean_x", "m2_x", "c_xy"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-9)


def test_probe_with_holdout_on_triton_equals_torch() -> None:
    """The in-pass route (prompt rows gathered, then routed by fold); the post-pass route is the test above."""
    metric = "score"
    from helpers import tiny_loaded
    from helpers import examples

    from skn.engine.api import probe

    from skn.engine.probe_config import ProbeConfig
    from skn.training.prompt import init_prompt

    loaded = tiny_loaded("qwen2")
    data = examples(13, seed=5)
    prompt = init_prompt(loaded, 3, seed=0)  # type: ignore[arg-type]
    out = {}
    for backend in (Backend.TORCH, Backend.TRITON):
        out[backend] = probe(loaded, prompt, data, metric, ProbeConfig(batch_size=4, top_k=3, backend=backend, holdout=0.4)).holdout  # type: ignore[arg-type]
    a, b = out[Backend.TORCH], out[Backend.TRITON]
    assert a is not None and b is not None
    for name in ("corr_selection", "corr_confirmation"):
        diff = (getattr(a, name) - getattr(b, name)).nan_to_num().abs().max()
        assert float(diff) <= 1e-5
