"""What loading a model must not get wrong: a model skn cannot probe is refused before its weights load,
and a checkpoint that does not fit its config stops the run instead of being probed as a partly random
network (transformers fills missing weights with random ones and says so only in a log line)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from torch import nn

from skn.errors import ModelError


def non_causal_reason(config: object, registered: bool = False) -> str:
    """Why a model of this config is no decoder-only causal LM ("" when it is one): an encoder-decoder
    (T5, BART), an encoder (BERT, RoBERTa: transformers would build `BertLMHeadModel`, which attends both ways
    unless the config says `is_decoder`), or, with `registered`, a model_type with no causal LM class in
    transformers nor in the model's own code."""
    if config is None:
        return ""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    model_type = str(getattr(config, "model_type", ""))
    if getattr(config, "is_encoder_decoder", False):
        return f"model_type '{model_type}' is an encoder-decoder model"
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        return f"model_type '{model_type}' is an encoder-only (masked LM) model"
    auto_map = getattr(config, "auto_map", None)
    remote = isinstance(auto_map, Mapping) and "AutoModelForCausalLM" in auto_map
    if registered and model_type and model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not remote:
        return f"model_type '{model_type}' has no causal LM class (AutoModelForCausalLM) in transformers"
    return ""


def refuse_non_causal(name: str, config: object, registered: bool = False) -> None:
    """One line, before any weight loads where the config comes first, for a model skn cannot probe."""
    reason = non_causal_reason(config, registered)
    if reason:
        raise ModelError(f"--model {name}: {reason}; skn probes decoder-only causal language models "
                         "(*ForCausalLM), whose FFN neurons see only the tokens before them")


def read_config(name: str, trust_remote_code: bool, **extra: str) -> object:
    """The model's config (no weights), refused at once when it is no decoder-only causal LM."""
    from transformers import AutoConfig

    try:
        config: object = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, **extra)
    except Exception as err:  # transformers raises OSError, ValueError, ... for unreadable models
        raise ModelError(f"cannot load the config of '{name}': {err}") from None
    refuse_non_causal(name, config, registered=True)
    return config


_NAMES_SHOWN = 4


def _some(names: Iterable[str]) -> str:
    ordered = sorted(names)
    more = f", ... ({len(ordered) - _NAMES_SHOWN} more)" if len(ordered) > _NAMES_SHOWN else ""
    return ", ".join(ordered[:_NAMES_SHOWN]) + more


def _ignored(key: str, patterns: object) -> bool:
    return isinstance(patterns, (list, tuple, set)) and any(re.search(str(p), key) for p in patterns)


def real_missing(model: nn.Module, keys: Iterable[str]) -> list[str]:
    """The parameters of `model` the checkpoint did not hold, less what transformers fills legitimately: buffers
    (rotary `inv_freq`, causal masks: computed, not loaded), a parameter tied to one that was loaded (lm_head
    tied to the embeddings) and what the model class says to ignore."""
    missing = set(keys)
    owners: dict[int, list[str]] = {}
    for param_name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(param_name)
    tied = {n for names in owners.values() if any(n not in missing for n in names) for n in names}
    params = {n for names in owners.values() for n in names}
    ignore = getattr(model, "_keys_to_ignore_on_load_missing", None)
    return sorted(k for k in missing if k in params and k not in tied and not _ignored(k, ignore))


def real_unexpected(model: nn.Module, keys: Iterable[str]) -> list[str]:
    """The checkpoint's tensors the model has no place for, less the harmless: buffers the model makes itself
    (an old checkpoint's `rotary_emb.inv_freq` or `attn.bias`), state a quantized weight carries beside it
    (`X.weight.absmax`) and what the model class says to ignore."""
    buffers = {n for n, _ in model.named_buffers(remove_duplicate=False)}
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    ignore = getattr(model, "_keys_to_ignore_on_load_unexpected", None)

    def harmless(key: str) -> bool:
        return (key in buffers or key.endswith(".inv_freq") or _ignored(key, ignore)
                or any(key.startswith(f"{p}.") for p in params))

    return sorted(k for k in set(keys) if not harmless(k))


def check_loading_info(name: str, model: nn.Module, info: Mapping[str, object]) -> None:
    """A checkpoint that does not fit its config stops here (transformers would fill the gaps with random
    weights and skn would probe them): weights missing, left over or of another shape, named and counted."""

    def keys(field: str) -> list[str]:
        value = info.get(field)
        if not isinstance(value, (list, tuple, set)):
            return []
        return [str(k[0]) if isinstance(k, tuple) and k else str(k) for k in value]

    missing = real_missing(model, keys("missing_keys"))
    unexpected = real_unexpected(model, keys("unexpected_keys"))
    mismatched = keys("mismatched_keys")
    errors = keys("error_msgs")
    problems = []
    if missing:
        problems.append(f"{len(missing)} weight(s) missing from the checkpoint, which would be random ({_some(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} weight(s) of the checkpoint with no place in the model ({_some(unexpected)})")
    if mismatched:
        problems.append(f"{len(mismatched)} weight(s) of another shape than the config says ({_some(mismatched)})")
    if errors:
        problems.append(f"{len(errors)} loading error(s): {errors[0]}")
    if problems:
        raise ModelError(f"the weights of '{name}' do not fit its config: {'; '.join(problems)}. Check config.json "
                         "(model_type, num_hidden_layers, sizes) against the checkpoint")


def loaded_with_info(result: object, name: str) -> nn.Module:
    """`from_pretrained(..., output_loading_info=True)`'s (model, info), checked."""
    if not isinstance(result, tuple) or len(result) != 2 or not isinstance(result[1], Mapping):
        raise ModelError(f"cannot load the model '{name}': transformers gave no loading info")
    model, info = result
    if not isinstance(model, nn.Module):
        raise ModelError(f"cannot load the model '{name}': transformers gave a {type(model).__name__}")
    check_loading_info(name, model, info)
    return model


# Asked of from_pretrained: the loading info, and weights of the wrong shape reported there (then refused by
# check_loading_info, naming them) rather than raised as transformers' error that points at its own report.
LOADING_INFO: Mapping[str, bool] = MappingProxyType({"output_loading_info": True, "ignore_mismatched_sizes": True})


__all__ = ["LOADING_INFO", "check_loading_info", "loaded_with_info", "non_causal_reason", "read_config", "real_missing",
           "real_unexpected", "refuse_non_causal"]
