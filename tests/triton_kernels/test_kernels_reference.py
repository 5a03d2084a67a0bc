"""The torch reference of the in-pass updates (skn.kernels.reference): no Triton needed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from skn.statistics.stats import LayerMoments
from skn.errors import InternalError
from skn.kernels.reference import gated_activation, update_layer_gated_torch_, update_layer_gathered_torch_
from skn.inputs.layout import check_offsets, gather_prompt_rows

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def test_gather_prompt_rows_matches_a_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 11, 6, generator=gen)
    offsets = torch.tensor([0, 8, 3, 5])
    got = gather_prompt_rows(x, offsets, 3)
    want = np.stack([x[b, int(offsets[b]) : int(offsets[b]) + 3].numpy() for b in range(4)])
    assert got.shape == (4, 3, 6)
    np.testing.assert_array_equal(got.numpy(), want)
    # a different offset in one row changes that row only
    moved = gather_prompt_rows(x, torch.tensor([0, 7, 3, 5]), 3)
    assert not torch.equal(moved[1], got[1]) and torch.equal(moved[[0, 2, 3]], got[[0, 2, 3]])


def test_check_offsets() -> None:
    check_offsets(torch.tensor([0, 9]), 3, 12)
    for bad in (torch.tensor([0, 10]), torch.tensor([-1, 0])):
        with pytest.raises(InternalError, match="prompt offsets span"):
            check_offsets(bad, 3, 12)
    with pytest.raises(InternalError, match="int64"):
        check_offsets(torch.tensor([0, 1], dtype=torch.int32), 3, 12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_gated_activation_is_what_hugging_face_feeds_down_proj(family: str, dtype: torch.dtype) -> None:
    """Bit for bit, in every dtype: the tensors a down_proj pre-hook sees."""
    torch.manual_seed(1)
    mlp: torch.nn.Module
    if family == "qwen2":
        from transformers import Qwen2Config
        from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP

        qwen = Qwen2Config(hidden_size=16, intermediate_size=40, num_attention_heads=2, num_key_value_heads=1)
        mlp = Qwen2MLP(qwen)  # type: ignore[no-untyped-call]
    else:
        from transformers import LlamaConfig
        from transformers.models.llama.modeling_llama import LlamaMLP

        llama = LlamaConfig(hidden_size=16, intermediate_size=40, num_attention_heads=2, num_key_value_heads=1)
        mlp = LlamaMLP(llama)  # type: ignore[no-untyped-call]
    mlp = mlp.to(dtype)
    seen: dict[str, Tensor] = {}
    mlp.gate_proj.register_forward_hook(lambda m, a, out: seen.__setitem__("gate", out))
    mlp.up_proj.register_forward_hook(lambda m, a, out: seen.__setitem__("up", out))
    mlp.down_proj.register_forward_pre_hook(lambda m, args: seen.__setitem__("act", args[0]))
    with torch.no_grad():
        mlp(torch.randn(2, 7, 16).to(dtype) * 3)
    act = gated_activation(seen["gate"], seen["up"])
    assert act.dtype == dtype
    assert torch.equal(act, seen["act"])
    if dtype != torch.float32:  # the data can tell HF's two roundings from one fused rounding
        fused = (F.silu(seen["gate"].float()) * seen["up"].float()).to(dtype)
        assert not torch.equal(fused, seen["act"])


def _moments(acts: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Independent float64 numpy moments of acts [N, P, m] against y [N]."""
    x = acts.double().numpy()
    yv = y.double().numpy()
    mean = x.mean(axis=0)
    dx = x - mean
    return (
        torch.from_numpy(mean),
        torch.from_numpy((dx**2).sum(axis=0)),
        torch.from_numpy(np.einsum("n,npm->pm", yv - yv.mean(), dx)),
    )


@pytest.mark.parametrize("gated", [False, True])
def test_in_pass_torch_updates_against_numpy(gated: bool) -> None:
    """Ragged batches (sizes 3, 1, 4), per-row offsets, running merge == one numpy pass over all rows."""
    gen = torch.Generator().manual_seed(2)
    positions, width, length = 2, 5, 9
    state = [torch.zeros(positions, width, dtype=torch.float64) for _ in range(3)]
    count, mean_y = 0, 0.0
    rows: list[Tensor] = []
    ys: list[Tensor] = []
    for batch in (3, 1, 4):
        gate = torch.randn(batch, length, width, generator=gen).to(torch.bfloat16)
        up = torch.randn(batch, length, width, generator=gen).to(torch.bfloat16)
        offsets = torch.randint(0, length - positions + 1, (batch,), generator=gen)
        y = torch.randn(batch, generator=gen, dtype=torch.float64)
        if gated:
            update_layer_gated_torch_(LayerMoments(*state, count, mean_y), gate, up, offsets, y)
            act = gated_activation(gate, up)
        else:
            update_layer_gathered_torch_(LayerMoments(*state, count, mean_y), gate, offsets, y)
            act = gate
        rows.append(torch.stack([act[b, int(offsets[b]) : int(offsets[b]) + positions] for b in range(batch)]))
        ys.append(y)
        mean_y = (mean_y * count + float(y.sum())) / (count + batch)
        count += batch
    for got, want in zip(state, _moments(torch.cat(rows), torch.cat(ys))):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
