"""Click options shared by several commands, defined once, with the library's defaults and help texts.

Each decorator adds its options and hands the command one typed library record instead of loose
keywords: `model_options` -> `model: ModelRequest`, `data_options` -> `data: DataRequest`,
`train_options` -> `train: TrainSettings`. Defaults and help come from those dataclasses
(`skn.request.default_of` / `help_of`), so each default is written once, in the library.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

import click

from skn.layout import Template
from skn.model import DType
from skn.quantize import Quantize
from skn.request import DataRequest, ModelRequest, ProbeRequest, TrainSettings, default_of, help_of

F = TypeVar("F", bound=Callable[..., Any])


def option(flag: str, cls: type, name: str, **extra: Any) -> Callable[[F], F]:
    """A Click option for field `name` of the library dataclass `cls`: its default and help text."""
    default = default_of(cls, name)
    if isinstance(default, Enum):
        default = default.value
    show = default not in (None, "", ()) and not isinstance(default, bool)
    kwargs: dict[str, Any] = {"help": help_of(cls, name), "show_default": show}
    if isinstance(default, bool):
        kwargs["is_flag"] = True
    elif isinstance(default, tuple):
        kwargs["multiple"] = True
    else:
        kwargs["default"] = default
    kwargs.update(extra)
    decorator: Callable[[F], F] = click.option(flag, name, **kwargs)
    return decorator


def _packed(options: list[Callable[[F], F]], target: str, build: Callable[..., object], keys: tuple[str, ...]) -> Callable[[F], F]:
    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[target] = build(**{k: kwargs.pop(k) for k in keys})
            return function(*args, **kwargs)

        decorated: F = wrapper  # type: ignore[assignment]
        for opt in reversed(options):
            decorated = opt(decorated)
        return decorated

    return decorate


model_options = _packed(
    [
        option("--model", ModelRequest, "name", metavar="ID|PATH"),
        option("--dtype", ModelRequest, "dtype", type=click.Choice([d.value for d in DType])),
        option("--device", ModelRequest, "device"),
        option("--trust-remote-code", ModelRequest, "trust_remote_code"),
        option("--neuron-module", ModelRequest, "neuron_module", metavar="PATTERN"),
        option("--device-map", ModelRequest, "device_map", metavar="MAP"),
        option("--max-memory", ModelRequest, "max_memory", metavar="DEVICE=SIZE"),
        option("--offload-folder", ModelRequest, "offload_folder", metavar="DIR"),
        option("--quantize", ModelRequest, "quantize", type=click.Choice([q.value for q in Quantize])),
    ],
    "model",
    lambda name, dtype, device, trust_remote_code, neuron_module, device_map, max_memory, offload_folder, quantize: ModelRequest(
        name, DType(dtype), device, trust_remote_code, neuron_module, device_map, tuple(max_memory), offload_folder,
        Quantize(quantize),
    ),
    ("name", "dtype", "device", "trust_remote_code", "neuron_module", "device_map", "max_memory", "offload_folder",
     "quantize"),
)

_DATA_KEYS = ("data", "val_data", "val_fraction", "instruction_field", "completion_field", "template", "seed")

data_options = _packed(
    [
        option("--data", DataRequest, "data", metavar="FILE"),
        option("--val-data", DataRequest, "val_data", metavar="FILE"),
        option("--val-fraction", DataRequest, "val_fraction"),
        option("--instruction-field", DataRequest, "instruction_field"),
        option("--completion-field", DataRequest, "completion_field"),
        option("--template", DataRequest, "template", type=click.Choice([t.value for t in Template])),
        option("--seed", DataRequest, "seed"),
    ],
    "data",
    lambda data, val_data, val_fraction, instruction_field, completion_field, template, seed: DataRequest(
        tuple(data), tuple(val_data), val_fraction, instruction_field, completion_field, Template(template), seed
    ),
    _DATA_KEYS,
)

_TRAIN_KEYS = ("prompt_len", "steps", "epochs", "lr", "batch_size", "grad_accum", "eval_every", "patience",
               "prompt_init", "gradient_checkpointing", "resume")

train_options = _packed(
    [
        option("--prompt-len", TrainSettings, "prompt_len"),
        option("--steps", TrainSettings, "steps", type=int, default=None),
        option("--epochs", TrainSettings, "epochs"),
        option("--lr", TrainSettings, "lr"),
        option("--batch-size", TrainSettings, "batch_size"),
        option("--grad-accum", TrainSettings, "grad_accum"),
        option("--eval-every", TrainSettings, "eval_every"),
        option("--patience", TrainSettings, "patience"),
        option("--prompt-init", TrainSettings, "prompt_init", type=str, default=None, metavar="TOKEN"),
        option("--gradient-checkpointing", TrainSettings, "gradient_checkpointing"),
        option("--resume", TrainSettings, "resume"),
    ],
    "train",
    TrainSettings,
    _TRAIN_KEYS,
)

threads_option = option("--threads", ProbeRequest, "threads")
out_option = option("--out", ProbeRequest, "out", metavar="RUN")
