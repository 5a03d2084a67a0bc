"""--dtype float64 (reference-grade, CPU only). On Gemma 3 270M float32's rounding moves r by up to 0.19 in
nearly constant cells and skn's batched r differs from one item at a time by 1.7e-4 in float32; in float64 the
batched r equals a one-item-at-a-time float64 reference to 5e-14 (bench/gemma3_reference.py). Here: a float64
probe equals the unbatched float64 reference to 1e-12 whatever the batching, on Llama and on Gemma 3's layout
(GeGLU, a sliding window shorter than the rows)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from skn.engine.api import encode
from skn.errors import UsageError
from skn.inputs.layout import Template
from skn.inputs.metrics import parse_metric
from skn.models.model import DType, as_dtype, load_model, pick_dtype
from skn.engine.probe import statistics_pass
from skn.training.prompt import init_prompt

from helpers import examples, hooked_activations, reference_r, tiny_loaded


def r64(stats: object) -> np.ndarray:
    s = stats  # PearsonStats
    return (s.c_xy / torch.sqrt(s.m2_x * s.m2_y)).numpy()  # type: ignore[attr-defined, no-any-return]


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_float64_probe_equals_the_unbatched_float64_reference(arch: str) -> None:
    loaded = tiny_loaded(arch, init_range=0.5)
    loaded.model.to(torch.float64)
    data = examples(19)
    prompt = init_prompt(loaded, 3, seed=0).to(torch.float64)
    rows = list(encode(loaded, data, Template.PLAIN, 3))
    y = np.array([e.meta["score"] for e in data], dtype=np.float64)
    expected = reference_r(hooked_activations(loaded, prompt, rows, with_completion=False), y)
    for batch_size in (1, 7):
        got = r64(statistics_pass(loaded, prompt, rows, data, parse_metric("score"), batch_size).stats)
        assert np.array_equal(np.isnan(got), np.isnan(expected))
        assert np.nanmax(np.abs(got - expected)) <= 1e-12


def test_float64_is_named_and_cpu_only(saved_tiny_model: Path) -> None:
    assert as_dtype("fp64") is as_dtype(torch.float64) is as_dtype("double") is DType.FLOAT64
    assert pick_dtype("float64", torch.device("cpu")) is torch.float64
    with pytest.raises(UsageError, match="--dtype float64 runs on the CPU"):
        pick_dtype("float64", torch.device("cuda"))
    loaded = load_model(str(saved_tiny_model), dtype="float64", device="cpu")
    assert loaded.input_embeddings.weight.dtype == torch.float64
