"""`--quantize 4bit|8bit`: the weights through bitsandbytes on CUDA (the optional extra `skn[quantize]`).

Only the linear weights shrink; the down projection's input is still computed in the model's dtype
(bitsandbytes dequantizes in the matmul), so it is still the neuron: hooks and statistics are unchanged.
Without CUDA, or without bitsandbytes (and accelerate, which transformers needs for it), skn stops with
one line naming what is missing, before anything loads.
"""

from __future__ import annotations

import importlib.util
from enum import Enum

import torch

from skn.errors import ModelError, UsageError
from skn.models.load_checks import loaded_with_info, read_config
from skn.models.model import DTypeLike, LoadedModel, pick_device, pick_dtype, wrap_loaded
from skn.models.tokenizer import Tokenizer


class Quantize(Enum):
    NONE = "none"
    BIT4 = "4bit"
    BIT8 = "8bit"

    @property
    def weight_bytes(self) -> float:
        """Bytes per quantized weight, scales included (bitsandbytes: a float32 absmax per block of 64)."""
        return {Quantize.NONE: 0.0, Quantize.BIT4: 0.5 + 4 / 64, Quantize.BIT8: 1.0 + 4 / 64}[self]


def missing_for(quantize: Quantize, device: torch.device) -> str:
    """What this machine lacks for `quantize` ("" when nothing)."""
    if quantize is Quantize.NONE:
        return ""
    missing = [name for name in ("bitsandbytes", "accelerate") if importlib.util.find_spec(name) is None]
    lacks: list[str] = []
    if device.type != "cuda":
        lacks.append(f"a CUDA device (the run is on {device})")
    if missing:
        lacks.append(f"the package{'s' if len(missing) > 1 else ''} {' and '.join(missing)} (pip install bitsandbytes accelerate)")
    if not lacks:
        return ""
    return f"--quantize {quantize.value} needs bitsandbytes on CUDA; missing: {'; '.join(lacks)}"


def require(quantize: Quantize, device: torch.device) -> None:
    text = missing_for(quantize, device)
    if text:
        raise UsageError(text)


def load_quantized(name: str, quantize: Quantize, dtype: torch.dtype, device: torch.device,
                   trust_remote_code: bool) -> tuple[torch.nn.Module, Tokenizer]:
    """The model in 4 or 8 bits on `device` (bitsandbytes places it: no `.to`), and its tokenizer."""
    require(quantize, device)
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    if quantize is Quantize.BIT4:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4")  # type: ignore[no-untyped-call]
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)  # type: ignore[no-untyped-call]
    read_config(name, trust_remote_code)  # an encoder, or no config at all, refused before bitsandbytes runs
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        result = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, quantization_config=config,
                                                      device_map={"": device.index or 0},
                                                      trust_remote_code=trust_remote_code, output_loading_info=True)
    except Exception as err:  # transformers raises OSError, ValueError, ImportError, ...
        raise ModelError(f"cannot load '{name}' in {quantize.value}: {err}") from None
    return loaded_with_info(result, name), tokenizer  # weights missing or left over: refused, named


def load_quantized_model(name: str, quantize: Quantize, dtype: DTypeLike, device: str, trust_remote_code: bool,
                         neuron_module: str = "") -> LoadedModel:
    """`skn.models.model.load_model` in 4 or 8 bits: frozen, with its tokenizer and neuron sites."""
    torch_device = pick_device(device)
    require(quantize, torch_device)
    module, tokenizer = load_quantized(name, quantize, pick_dtype(dtype, torch_device), torch_device, trust_remote_code)
    return wrap_loaded(name, module, tokenizer, torch_device, neuron_module)


__all__ = ["Quantize", "load_quantized", "load_quantized_model", "missing_for", "require"]
