"""A model's fingerprint: which weights a prompt was trained on, whatever path they were loaded from.

sha256 over the config's architecture fields and a sample of every parameter (the first `SAMPLE_ROWS` rows
of each matrix, each vector whole), in the model's parameter order, after loading, in float32 rounded to
bfloat16, so that one checkpoint loaded in float32 or bfloat16, on any device, gives the same fingerprint.
A copied or moved folder, or a relative and an absolute path to one, match; other weights do not, and a GGUF
file is not the float folder it was made from (its weights are dequantized from 4 or 8 bits: other numbers).
Weights left on the meta device (offloaded by accelerate) cannot be read: such a model has no fingerprint ("").
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

SAMPLE_ROWS = 2
FINGERPRINT_KEY = "model_fingerprint"  # its name in run.json and in prompt.safetensors' metadata

# The config fields that fix a model's shape, under the names the architectures give them.
ARCHITECTURE_FIELDS = (
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "n_embd", "n_layer", "n_head", "n_inner", "ffn_dim", "d_model",
)


def _architecture(config: object) -> str:
    fields = {name: getattr(config, name) for name in ARCHITECTURE_FIELDS
              if isinstance(getattr(config, name, None), (str, int, float))}
    return json.dumps(fields, sort_keys=True)


def model_fingerprint(model: nn.Module) -> str:
    """The fingerprint of a loaded model (64 hex digits), "" when a weight is not in memory (meta device)."""
    digest = hashlib.sha256(_architecture(getattr(model, "config", None)).encode())
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.is_meta:
                return ""
            sample = param.detach()[:SAMPLE_ROWS] if param.dim() > 1 else param.detach()
            values = sample.to(torch.float32).to(torch.bfloat16).to("cpu", torch.float32).contiguous()
            digest.update(f"{name}:{tuple(param.shape)}".encode())
            digest.update(values.numpy().tobytes())
    return digest.hexdigest()


__all__ = ["ARCHITECTURE_FIELDS", "FINGERPRINT_KEY", "SAMPLE_ROWS", "model_fingerprint"]
