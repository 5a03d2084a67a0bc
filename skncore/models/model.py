"""Loading a causal LM and finding its FFN neurons.

A neuron is one input feature of a layer's FFN down projection: for gated FFNs (Llama, Qwen2,
Mistral, Gemma) act(gate_proj(h)) * up_proj(h), for plain MLPs the activation after the
nonlinearity (GPT-2 `mlp.c_proj` input, GPT-NeoX `dense_4h_to_h` input, OPT `fc2` input), in the
model's dtype exactly as Hugging Face computes it. Where those modules sit is data: one record per
`config.model_type`, and a pattern (`--neuron-module`) for anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import Enum
from typing import Union

import torch
from torch import nn

from skn.errors import ModelError, UsageError
from skn.models.fingerprint import FINGERPRINT_KEY, model_fingerprint
from skn.models.hub import check_revision, recorded_name
from skn.models.load_checks import LOADING_INFO, loaded_with_info, read_config, refuse_non_causal
from skn.models.gguf import GgufFile, describe, find_gguf, require_gguf_support
from skn.models.placement import Placement, from_pretrained_kwargs, statistics_device
from skn.models.tokenizer import Tokenizer


@dataclass(frozen=True)
class Adapter:
    """Where one architecture keeps its FFN neurons. `{i}` stands for the layer index."""

    neuron_module: str  # the module whose *input* is the neuron activation
    gated: bool
    gate_module: str = ""  # gated FFNs: the projections the activation is made of (for fused kernels)
    up_module: str = ""


_LLAMA_LIKE = Adapter("model.layers.{i}.mlp.down_proj", True, "model.layers.{i}.mlp.gate_proj", "model.layers.{i}.mlp.up_proj")

ADAPTERS: dict[str, Adapter] = {
    "llama": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "olmo": _LLAMA_LIKE,
    "olmo2": _LLAMA_LIKE,
    "granite": _LLAMA_LIKE,
    "phi3": Adapter("model.layers.{i}.mlp.down_proj", True),  # gate and up are one fused matrix
    "gpt2": Adapter("transformer.h.{i}.mlp.c_proj", False),
    "gpt_neox": Adapter("gpt_neox.layers.{i}.mlp.dense_4h_to_h", False),
    "opt": Adapter("model.decoder.layers.{i}.fc2", False),
    "gptj": Adapter("transformer.h.{i}.mlp.fc_out", False),
    "falcon": Adapter("transformer.h.{i}.mlp.dense_4h_to_h", False),
}

# Names tried, in order, for a model_type without a record: the last part of a module path.
_KNOWN_SUFFIXES = ("mlp.down_proj", "mlp.c_proj", "mlp.dense_4h_to_h", "mlp.fc2", "fc2", "mlp.fc_out", "feed_forward.w2")


REVISION_KEY = "revision"  # the hub revision's name in run.json


class DType(Enum):
    AUTO = "auto"  # float32 on CPU, bfloat16 on a GPU that supports it, else float16
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT64 = "float64"  # reference-grade, CPU only: where float32's rounding reaches the fifth digit of r (Gemma 3)


# What a caller may pass as a dtype: the enum, a name transformers takes ("bf16", "torch.float16", ...) or a torch dtype.
DTypeLike = Union[DType, str, torch.dtype]

_DTYPE_NAMES = {
    "auto": DType.AUTO,
    "float32": DType.FLOAT32, "fp32": DType.FLOAT32, "float": DType.FLOAT32,
    "float16": DType.FLOAT16, "fp16": DType.FLOAT16, "half": DType.FLOAT16,
    "bfloat16": DType.BFLOAT16, "bf16": DType.BFLOAT16,
    "float64": DType.FLOAT64, "fp64": DType.FLOAT64, "double": DType.FLOAT64,
}
_TORCH_DTYPES = {torch.float32: DType.FLOAT32, torch.float16: DType.FLOAT16, torch.bfloat16: DType.BFLOAT16,
                 torch.float64: DType.FLOAT64}


def as_dtype(value: DTypeLike) -> DType:
    """The DType of `value`: a DType, a name ("bfloat16", "bf16", "torch.float16", "fp32", "auto", ...) or
    torch.float32 / float16 / bfloat16; anything else is refused by name."""
    if isinstance(value, DType):
        return value
    if isinstance(value, torch.dtype):
        found = _TORCH_DTYPES.get(value)
    elif isinstance(value, str):
        found = _DTYPE_NAMES.get(value.strip().lower().removeprefix("torch."))
    else:
        found = None
    if found is None:
        raise UsageError(f"dtype {value!r}: expected auto, float32 (fp32), float16 (fp16), bfloat16 (bf16), "
                         "float64 (fp64) or the torch dtype of one of them")
    return found


@dataclass(frozen=True)
class NeuronSites:
    """The modules whose inputs are the neurons, one per layer, and what they are called."""

    names: tuple[str, ...]
    modules: tuple[nn.Module, ...]
    width: int
    gated: bool
    gate_modules: tuple[nn.Module, ...]  # empty unless gated with separate gate/up projections
    up_modules: tuple[nn.Module, ...]

    @property
    def num_layers(self) -> int:
        return len(self.modules)


@dataclass(frozen=True)
class LoadedModel:
    """A frozen causal LM, its tokenizer, and its neuron sites."""

    name: str
    model: nn.Module
    tokenizer: Tokenizer  # a transformers tokenizer
    sites: NeuronSites
    device: torch.device
    dtype: torch.dtype
    weights: str = ""  # how the weights were made, where that is not plain (a dequantized GGUF file)
    revision: str = ""  # the hub revision asked for ("" = the hub's default, or a local model)

    @property
    def fingerprint(self) -> str:
        """Which weights these are, wherever they were loaded from (skn.models.fingerprint), as they are now."""
        return model_fingerprint(self.model)

    def identity(self) -> dict[str, str]:
        """What run.json records of the weights beside the model's name: their fingerprint and
        the hub revision asked for (each only when there is one)."""
        record = {FINGERPRINT_KEY: self.fingerprint, REVISION_KEY: self.revision}
        return {key: value for key, value in record.items() if value}

    @property
    def hidden_size(self) -> int:
        return int(self.input_embeddings.weight.shape[1])

    @property
    def input_embeddings(self) -> nn.Embedding:
        embeddings = self.model.get_input_embeddings()  # type: ignore[operator]
        if not isinstance(embeddings, nn.Embedding):
            raise ModelError(f"{self.name}: input embeddings are {type(embeddings).__name__}, not nn.Embedding")
        return embeddings


def pick_device(name: str) -> torch.device:
    """`auto` = CUDA when available, else Apple MPS, else CPU; otherwise the torch device named."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"--device: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    return device


def pick_dtype(choice: DTypeLike, device: torch.device) -> torch.dtype:
    dtype = as_dtype(choice)
    if dtype is DType.FLOAT32:
        return torch.float32
    if dtype is DType.FLOAT16:
        return torch.float16
    if dtype is DType.BFLOAT16:
        return torch.bfloat16
    if dtype is DType.FLOAT64:
        if device.type != "cpu":
            raise UsageError(f"--dtype float64 runs on the CPU (a reference-grade run), not on {device}; use float32 there")
        return torch.float64
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def scoring_dtype(logits_dtype: torch.dtype) -> torch.dtype:
    """The precision logits are scored in: half precision goes up to float32, float64 (--dtype float64) stays."""
    return torch.promote_types(logits_dtype, torch.float32)


def _module_width(module: nn.Module, name: str) -> int:
    if isinstance(module, nn.Linear):
        return int(module.in_features)
    nx = getattr(module, "nx", None)  # transformers' Conv1D (GPT-2) stores [in, out]
    if isinstance(nx, int):
        return nx
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return int(weight.shape[1])
    raise ModelError(f"{name}: cannot tell the number of input features of a {type(module).__name__}")


def _expand(pattern: str, modules: dict[str, nn.Module]) -> list[str]:
    if "{i}" not in pattern:
        raise UsageError(f"--neuron-module '{pattern}' must contain {{i}} where the layer index goes")
    regex = re.compile("^" + re.escape(pattern).replace(re.escape("{i}"), r"(\d+)") + "$")
    found = sorted(((int(m.group(1)), name) for name in modules if (m := regex.match(name))), key=lambda t: t[0])
    if [i for i, _ in found] != list(range(len(found))):
        raise ModelError(f"--neuron-module '{pattern}' matches layers {[i for i, _ in found]}, not 0..L-1")
    return [name for _, name in found]


def _guess_pattern(modules: dict[str, nn.Module]) -> str:
    for suffix in _KNOWN_SUFFIXES:
        regex = re.compile(r"^(.*)\.(\d+)\." + re.escape(suffix) + "$")
        prefixes = {m.group(1) for name in modules if (m := regex.match(name))}
        if len(prefixes) == 1:
            return f"{prefixes.pop()}.{{i}}.{suffix}"
    return ""


def find_sites(model: nn.Module, model_type: str, neuron_module: str = "") -> NeuronSites:
    """Locate every layer's neuron module: the record for `model_type`, the pattern given, or a guess."""
    modules = dict(model.named_modules())
    adapter = ADAPTERS.get(model_type)
    if neuron_module:
        adapter = Adapter(neuron_module, gated=False)
    elif adapter is None or not _expand(adapter.neuron_module, modules):
        guessed = _guess_pattern(modules)
        if not guessed:
            linear = [n for n, m in modules.items() if isinstance(m, nn.Linear) and ".0." in n]
            raise ModelError(
                f"cannot find the FFN neurons of model_type '{model_type}' (known: {', '.join(sorted(ADAPTERS))}). "
                f"Linear modules of its first layer: {', '.join(linear[:12]) or 'none'}. "
                "Point skn at the module whose input is the neuron activation with "
                "--neuron-module, e.g. --neuron-module 'model.layers.{i}.mlp.down_proj'"
            )
        adapter = Adapter(guessed, gated=False)
    names = _expand(adapter.neuron_module, modules)
    if not names:
        raise ModelError(f"--neuron-module '{adapter.neuron_module}' matches no module of this model")
    sites = tuple(modules[n] for n in names)
    widths = {_module_width(m, n) for m, n in zip(sites, names)}
    if len(widths) != 1:
        raise ModelError(f"layers have different FFN widths {sorted(widths)}; skn needs one width")
    gates: tuple[nn.Module, ...] = ()
    ups: tuple[nn.Module, ...] = ()
    if adapter.gate_module and adapter.up_module:
        gate_names = _expand(adapter.gate_module, modules)
        up_names = _expand(adapter.up_module, modules)
        if len(gate_names) == len(up_names) == len(names):
            gates = tuple(modules[n] for n in gate_names)
            ups = tuple(modules[n] for n in up_names)
    return NeuronSites(tuple(names), sites, widths.pop(), adapter.gated, gates, ups)


def freeze(model: nn.Module) -> nn.Module:
    """No weight of the model is trained: only the soft prompt is."""
    model.requires_grad_(False)
    model.eval()
    return model


def batch_pad_id(loaded: LoadedModel) -> int:
    """The id that fills padded positions and prompt slots: the tokenizer's pad (else EOS, UNK) when it
    is a row of the input embeddings, else 0. Padded positions are masked and prompt slots replaced, so
    any in-range id serves; an out-of-range one (a `[PAD]` added without resizing the embeddings, or
    AutoTokenizer giving a 512-token model pad id 512) would crash the embedding lookup."""
    rows = int(loaded.input_embeddings.weight.shape[0])
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(loaded.tokenizer, attr, None)
        if isinstance(value, int) and 0 <= value < rows:
            return value
    return 0


def model_device(model: nn.Module) -> torch.device:
    """Where a built model's statistics live: the first placed layer's device of a model spread by a device
    map (skn.models.placement), else the device of its weights."""
    device_map = getattr(model, "hf_device_map", None)
    if isinstance(device_map, dict) and device_map:
        return statistics_device(device_map)
    first = next(iter(model.parameters()), None)
    if first is None:
        raise ModelError(f"{type(model).__name__} has no parameters: not a language model")
    return first.device


def wrap_loaded(
    name: str, model: nn.Module, tokenizer: Tokenizer, device: torch.device | str | None = None, neuron_module: str = ""
) -> LoadedModel:
    """Freeze a model already in memory (a notebook's, a test's) and find its neurons:

        model = AutoModelForCausalLM.from_pretrained("Qwen/Qwen2.5-0.5B")
        loaded = skn.wrap_loaded("Qwen/Qwen2.5-0.5B", model, AutoTokenizer.from_pretrained("Qwen/Qwen2.5-0.5B"))

    `name` is what run.json records as the model; `device` is where the statistics live (None: where the
    model's weights are, see `model_device`); the model is not moved."""
    config = getattr(model, "config", None)
    model_type = str(getattr(config, "model_type", ""))
    refuse_non_causal(name, config)
    where = model_device(model) if device is None else device if isinstance(device, torch.device) else pick_device(device)
    freeze(model)
    sites = find_sites(model, model_type, neuron_module)
    dtype = next(model.parameters()).dtype
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, sites=sites, device=where, dtype=dtype)


def load_model(
    name: str,
    dtype: DTypeLike = DType.AUTO,
    device: str = "auto",
    trust_remote_code: bool = False,
    neuron_module: str = "",
    placement: Placement = Placement(),
    revision: str = "",
) -> LoadedModel:
    """Load a causal LM by hub id (at `revision`, a branch, tag or commit; "" = the hub's default) or local
    path, frozen, with its tokenizer and neuron sites; with a device map, its layers spread over devices (and
    offloaded) by accelerate (see skn.models.placement). A local path is named resolved (skn.models.hub.recorded_name)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_revision(name, revision)
    name = recorded_name(name)
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    gguf = find_gguf(name)
    if gguf is not None:
        return _load_gguf(name, gguf, torch_dtype, torch_device, neuron_module)
    at_revision = {"revision": revision} if revision else {}
    config = read_config(name, trust_remote_code, **at_revision)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, **at_revision)
    except Exception as err:  # transformers raises OSError, ValueError, ... for unreadable models
        raise ModelError(f"cannot load the tokenizer of '{name}': {err}") from None
    try:
        result = AutoModelForCausalLM.from_pretrained(
            name, config=config, dtype=torch_dtype, trust_remote_code=trust_remote_code,
            **from_pretrained_kwargs(placement), **LOADING_INFO, **at_revision,
        )
    except Exception as err:
        raise ModelError(f"cannot load the model '{name}': {err}") from None
    module = loaded_with_info(result, name)
    if placement.spread:
        torch_device = statistics_device(dict(getattr(module, "hf_device_map", {})))
    else:
        module.to(torch_device)
    return replace(wrap_loaded(name, module, tokenizer, torch_device, neuron_module), revision=revision)


def _load_gguf(name: str, gguf: GgufFile, dtype: torch.dtype, device: torch.device, neuron_module: str) -> LoadedModel:
    """A GGUF file through transformers' GGUF support: dequantized to float32, then cast to `dtype`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    require_gguf_support()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.folder), gguf_file=gguf.name)
    except Exception as err:
        raise ModelError(f"cannot read the tokenizer of {gguf.path}: {err}") from None
    try:
        result = AutoModelForCausalLM.from_pretrained(str(gguf.folder), gguf_file=gguf.name, dtype=torch.float32,
                                                      **LOADING_INFO)
    except Exception as err:
        raise ModelError(f"cannot load the GGUF model {gguf.path}: {err}") from None
    module = loaded_with_info(result, str(gguf.path))
    module.to(device=device, dtype=dtype)
    loaded = wrap_loaded(name, module, tokenizer, device, neuron_module)
    return replace(loaded, weights=describe(gguf))
