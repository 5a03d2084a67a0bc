from __future__ import annotations

import pytest
import torch
from torch import nn

from skn.errors import ModelError
from skn.models.model import find_sites, load_model

from helpers import tiny_model


@pytest.mark.parametrize(
    "arch, name, width",
    [("qwen2", "model.layers.1.mlp.down_proj", 48), ("llama", "model.layers.2.mlp.down_proj", 40), ("gpt2", "transformer.h.1.mlp.c_proj", 128)],
)
def test_sites_found(arch: str, name: str, width: int) -> None:
    model = tiny_model(arch)
    sites = find_sites(model, model.config.model_type)
    assert sites.names[-1] == name and sites.width == width
    assert sites.gated == (arch != "gpt2")


def test_unknown_architecture_is_guessed_or_named() -> None:
    model = tiny_model("qwen2")
    assert find_sites(model, "mystery").names[0] == "model.layers.0.mlp.down_proj"  # guessed from module names

    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 4)) for _ in range(2)])

    with pytest.raises(ModelError, match="--neuron-module"):
        find_sites(Odd(), "odd")
    sites = find_sites(Odd(), "odd", "blocks.{i}.1")
    assert sites.num_layers == 2 and sites.width == 8


def test_gated_neuron_is_silu_gate_times_up() -> None:
    model = tiny_model("llama")
    mlp = model.model.layers[0].mlp
    seen: list[torch.Tensor] = []
    handle = mlp.down_proj.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    h = torch.randn(2, 3, 32)
    with torch.no_grad():
        mlp(h)
    handle.remove()
    torch.testing.assert_close(seen[0], torch.nn.functional.silu(mlp.gate_proj(h)) * mlp.up_proj(h))


def test_gemma3_neuron_is_gelu_tanh_gate_times_up_in_float64() -> None:
    """Gemma 3's GeGLU neuron, against its definition computed by hand in float64: gelu(gate h, tanh) * (up h)."""
    model = tiny_model("gemma3").to(torch.float64)
    sites = find_sites(model, model.config.model_type)
    assert sites.names[-1] == "model.layers.1.mlp.down_proj" and sites.width == 40 and sites.gated
    mlp = model.model.layers[1].mlp
    seen: list[torch.Tensor] = []
    handle = mlp.down_proj.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    h = torch.randn(2, 3, 32, dtype=torch.float64)
    with torch.no_grad():
        mlp(h)
        by_hand = torch.nn.functional.gelu(h @ mlp.gate_proj.weight.T, approximate="tanh") * (h @ mlp.up_proj.weight.T)
    handle.remove()
    torch.testing.assert_close(seen[0], by_hand, rtol=1e-13, atol=1e-13)


def test_load_stories(stories_path: object) -> None:
    loaded = load_model(str(stories_path), device="cpu")
    assert loaded.sites.num_layers == 5 and loaded.sites.width == 172
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_unreadable_model(tmp_path: object) -> None:
    with pytest.raises(ModelError, match="cannot load"):
        load_model(str(tmp_path), device="cpu")
