"""--fused-mlp (skn.engine.fused_mlp): skn's own gated-MLP forward leaves the model's numbers alone (the down
projection's input bit for bit, the logits bit for bit) and gives the plain path's correlations, on
tiny Qwen2 and Llama models and the stories model; other FFNs fall back with a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from skn.engine.api import encode
from skn.statistics.backend import Backend
from skn.engine.fused_mlp import capture_gated, unsupported_reason
from skn.inputs.layout import Template, make_batch, pad_id
from skn.inputs.metrics import parse_metric
from skn.models.model import load_model
from skn.engine.probe import statistics_pass
from skn.training.prompt import init_prompt, splice
from skn.statistics.stats import correlation

from helpers import tiny_loaded
from helpers import examples

P = 3


def down_inputs(loaded: object, prompt: torch.Tensor, rows: list, fused: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each layer's down-projection input and the logits, from one padded batch."""
    batch = make_batch(rows, P, pad_id(loaded.tokenizer))  # type: ignore[attr-defined]
    seen: dict[int, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, l=l: seen.__setitem__(l, args[0].clone()))
               for l, m in enumerate(loaded.sites.modules)]  # type: ignore[attr-defined]
    layers = list(range(len(handles)))
    try:
        with torch.no_grad():
            if fused:
                with capture_gated(loaded, layers, lambda layer, g, u: None):  # type: ignore[arg-type]
                    out = loaded.model(inputs_embeds=splice(loaded, batch, prompt), attention_mask=batch.attention_mask)  # type: ignore[attr-defined, arg-type]
            else:
                out = loaded.model(inputs_embeds=splice(loaded, batch, prompt), attention_mask=batch.attention_mask)  # type: ignore[attr-defined, arg-type]
    finally:
        for h in handles:
            h.remove()
    return [seen[l] for l in layers], out.logits


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_down_projection_input_and_logits_bitwise(arch: str, dtype: torch.dtype) -> None:
    loaded = tiny_loaded(arch, init_range=0.3)
    loaded.model.to(dtype)  # type: ignore[attr-defined]
    data = examples(9)
    prompt = init_prompt(loaded, P, seed=0).to(dtype)  # type: ignore[arg-type]
    rows = list(encode(loaded, data, Template.PLAIN, P))  # type: ignore[arg-type]
    plain, plain_logits = down_inputs(loaded, prompt, rows, fused=False)
    fused, fused_logits = down_inputs(loaded, prompt, rows, fused=True)
    assert all(a.dtype == dtype and torch.equal(a, b) for a, b in zip(plain, fused))
    assert torch.equal(plain_logits, fused_logits)
    assert all("forward" not in vars(layer.mlp)  # the class forward is back
               for layer in loaded.model.model.layers)  # type: ignore[attr-defined]


def same_corr(loaded: object, metric: str, backend: Backend = Backend.TORCH, n: int = 23) -> float:
    data = examples(n)
    prompt = init_prompt(loaded, P, seed=0)  # type: ignore[arg-type]
    rows = list(encode(loaded, data, Template.PLAIN, P))  # type: ignore[arg-type]
    spec = parse_metric(metric)
    plain = statistics_pass(loaded, prompt, rows, data, spec, batch_size=7, backend=Backend.TORCH)  # type: ignore[arg-type]
    fused = statistics_pass(loaded, prompt, rows, data, spec, batch_size=7, backend=backend, fused_mlp=True)  # type: ignore[arg-type]
    assert torch.equal(plain.metric, fused.metric)
    a, b = correlation(plain.stats).numpy(), correlation(fused.stats).numpy()
    assert np.array_equal(np.isnan(a), np.isnan(b))
    return float(np.nanmax(np.abs(a - b)))


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("metric", ["loss", "score"])  # after the pass (slab) and before it (in-pass)
def test_corr_equals_the_plain_path(arch: str, metric: str) -> None:
    assert same_corr(tiny_loaded(arch), metric) <= 1e-6


def test_corr_with_the_gated_kernel_in_the_interpreter() -> None:
    pytest.importorskip("triton")
    assert same_corr(tiny_loaded("llama"), "score", Backend.TRITON, n=9) <= 1e-6


def test_corr_on_the_stories_model(stories_path: Path) -> None:
    loaded = load_model(str(stories_path), device="cpu")
    assert unsupported_reason(loaded) == ""
    assert same_corr(loaded, "score") <= 1e-6 and same_corr(loaded, "loss") <= 1e-6


def test_other_ffns_fall_back_with_a_reason() -> None:
    gpt2 = tiny_loaded("gpt2")
    assert unsupported_reason(gpt2) == "the FFN is not gated"
    assert same_corr(gpt2, "score") == 0.0  # the plain path, silently, in the library
    llama = tiny_loaded("llama")
    llama.model.config.hidden_act = "gelu"  # type: ignore[attr-defined]
    assert unsupported_reason(llama) == "the activation is gelu, not SiLU"
    assert unsupported_reason(tiny_loaded("qwen2")) == ""


def test_run_says_when_it_falls_back(tmp_path: Path) -> None:
    from skn.engine.probe_config import ProbeConfig
    from skn.engine.request import DataRequest, ModelRequest, ProbeRequest, TrainRequest
    from skn.engine.run import run_probe

    from helpers import char_tokenizer, tiny_model

    folder = tmp_path / "tiny-gpt2"
    tiny_model("gpt2").save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)  # type: ignore[attr-defined]
    lines: list[str] = []
    request = ProbeRequest(model=ModelRequest(str(folder), device="cpu"), data=DataRequest(train_size=4, val_size=6),
                           train=TrainRequest(steps=1, prompt_len=2), probe=ProbeConfig(fused_mlp=True),
                           metric="loss", out=str(tmp_path / "run"))
    run_probe(request, notify=lines.append)
    assert lines[0].startswith("no data given: running the built-in arithmetic task on 10 generated items")
    assert lines[1].startswith("memory plan on cpu: peak ")
    assert lines[2] == "--fused-mlp: the FFN is not gated; using the plain path (the down projection's input)"
