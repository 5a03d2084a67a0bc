"""`--fused-mlp`: skn's own forward of a SiLU-gated FFN, with the statistics read from gate and up.

Hugging Face's gated MLP (Llama, Qwen2, Mistral, ...) is `down_proj(act_fn(gate_proj(x)) * up_proj(x))`.
While a pass runs with `capture_gated`, each layer's MLP forward is replaced by the same operations
spelled out:

    g = gate_proj(x);  u = up_proj(x);  sink(layer, g, u);  return down_proj(act_fn(g) * u)

so the down projection's input is Hugging Face's own product, bit for bit, in the model's dtype (the same
torch ops on the same tensors), and the model's outputs do not change. The sink gets g and u [B, T, m]:
with a metric known before the pass, `skn.statistics.backend.gated_update` forms SiLU(g) * u at the prompt rows and
merges it into the float64 moments in one kernel on CUDA (`skn.kernels.pearson_gated`, bit-identical to
torch's CUDA SiLU there) and with the torch path elsewhere; with a metric known only after the pass, the
product at the prompt rows is kept as the plain path keeps the down projection's input.

Where the values can differ from the plain path: the Triton kernel under the interpreter (numpy's exp)
may round SiLU one unit of the model dtype apart from torch's CPU SiLU, rarely; the correlations then
agree to about 1e-6, not bitwise. With the torch path they are the same numbers.

Other FFNs fall back to the plain path (the down projection's input), with a reason: another activation
(GELU, ...), gate and up in one fused matrix (Phi-3), or an MLP without gate_proj / up_proj / down_proj.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from torch import Tensor, nn

from skn.models.model import LoadedModel

GatedSink = Callable[[int, Tensor, Tensor], None]
"""(layer, gate [B, T, m], up [B, T, m]) -> None."""

SILU_NAMES = ("silu", "swish")


def _mlp_of(loaded: LoadedModel, layer: int) -> nn.Module:
    name = loaded.sites.names[layer].rsplit(".", 1)[0]  # model.layers.{i}.mlp.down_proj -> model.layers.{i}.mlp
    module: nn.Module = loaded.model.get_submodule(name)
    return module


def unsupported_reason(loaded: LoadedModel) -> str:
    """"" where --fused-mlp applies to this model, else why it does not (the plain path is used)."""
    if not loaded.sites.gated:
        return "the FFN is not gated"
    if not loaded.sites.gate_modules or not loaded.sites.up_modules:
        return "gate and up are one fused projection (or unknown) here"
    config = getattr(loaded.model, "config", None)
    act = str(getattr(config, "hidden_act", "") or getattr(config, "hidden_activation", ""))
    if act not in SILU_NAMES:
        return f"the activation is {act or 'unknown'}, not SiLU"
    for layer in range(loaded.sites.num_layers):
        mlp = _mlp_of(loaded, layer)
        parts = [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
        if not all(isinstance(p, nn.Module) for p in parts) or not callable(getattr(mlp, "act_fn", None)):
            return f"layer {layer}'s MLP has no gate_proj / up_proj / down_proj / act_fn"
        if parts[0] is not loaded.sites.gate_modules[layer] or parts[2] is not loaded.sites.modules[layer]:
            return f"layer {layer}'s MLP is not the one whose down projection holds the neurons"
    return ""


def _fused_forward(mlp: nn.Module, layer: int, sink: GatedSink) -> Callable[[Tensor], Tensor]:
    gate_proj: Callable[[Tensor], Tensor] = getattr(mlp, "gate_proj")
    up_proj: Callable[[Tensor], Tensor] = getattr(mlp, "up_proj")
    down_proj: Callable[[Tensor], Tensor] = getattr(mlp, "down_proj")
    act_fn: Callable[[Tensor], Tensor] = getattr(mlp, "act_fn")

    def forward(x: Tensor) -> Tensor:
        g = gate_proj(x)
        u = up_proj(x)
        sink(layer, g, u)  # a sink may raise to stop the forward here, as the plain path's hooks do
        return down_proj(act_fn(g) * u)  # Hugging Face's own expression

    return forward


@contextmanager
def capture_gated(loaded: LoadedModel, layers: Sequence[int], sink: GatedSink) -> Iterator[None]:
    """While active, each listed layer's MLP runs skn's forward and hands gate and up to `sink`."""
    patched: list[nn.Module] = []
    try:
        for layer in layers:
            mlp = _mlp_of(loaded, layer)
            setattr(mlp, "forward", _fused_forward(mlp, layer, sink))
            patched.append(mlp)
        yield
    finally:
        for mlp in patched:
            del mlp.forward


__all__ = ["GatedSink", "capture_gated", "unsupported_reason"]
