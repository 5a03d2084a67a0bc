"""Models over several devices: a device map with layers offloaded to disk gives the plain model's numbers, bitwise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skn.engine.api import probe

from skn.engine.probe_config import ProbeConfig
from skn.inputs.data import Example
from skn.errors import UsageError
from skn.models.model import load_model
from skn.models.placement import Placement, max_memory_of


def test_placement_checks_its_options() -> None:
    assert max_memory_of(Placement("auto", ("0=20GiB", "cpu=60GiB"))) == {0: "20GiB", "cpu": "60GiB"}
    with pytest.raises(UsageError, match="--device-map everywhere"):
        Placement("everywhere")
    with pytest.raises(UsageError, match="DEVICE=SIZE"):
        Placement("auto", ("20GiB",))
    with pytest.raises(UsageError, match="need --device-map"):
        Placement("", ("cpu=1GiB",))


def test_offloaded_layers_give_the_plain_numbers(saved_tiny_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    plain = load_model(str(saved_tiny_model), device="cpu")
    offloaded = load_model(str(saved_tiny_model), device="cpu",
                           placement=Placement("auto", ("cpu=60KB",), str(tmp_path / "offload")))
    where = set(getattr(offloaded.model, "hf_device_map", {}).values())
    assert "disk" in where, where  # some layers really live on disk and are loaded per forward
    examples = [Example(f"item {i} {'x' * (i % 5)}", f" {i % 3}", {"size": float(i % 7)}, f"gen:{i}") for i in range(12)]
    prompt = torch.randn(3, plain.hidden_size, generator=torch.Generator().manual_seed(1)) * 0.1
    for metric in ("size", "loss"):
        first = probe(plain, prompt, examples, metric, ProbeConfig(batch_size=5, top_k=4))
        second = probe(offloaded, prompt, examples, metric, ProbeConfig(batch_size=5, top_k=4))
        torch.testing.assert_close(second.corr, first.corr, rtol=0, atol=0, equal_nan=True)
        assert second.neurons == first.neurons
        torch.testing.assert_close(second.top_activations, first.top_activations, rtol=0, atol=0)
