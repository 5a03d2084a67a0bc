"""Click options shared by several commands, defined once, with the library's defaults and help texts.

Each decorator adds its options and hands the command one typed library record instead of loose
keywords: `model_options` -> `model: ModelRequest`, `data_options` -> `data: DataRequest`,
`train_options` -> `train: TrainRequest`. Defaults and help come from those dataclasses
(`skn.engine.request.default_of` / `help_of`), so each default is written once, in the library.

`--help` lists the options in sections (model, data, training, probe, statistics, output): each option
made here carries its `Section` (by default the one of the dataclass its field belongs to), and a command
made with `cls=SectionedCommand` writes one heading per section. Sizes in bytes are read as `ByteSize`
(8GiB, 500MB or a plain number of bytes) and their defaults shown for people (8 GiB).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

import click

from skn.engine.probe_config import ProbeConfig
from skn.inputs.layout import Template
from skn.training.trainer import LrSchedule
from skn.models.model import DType
from skn.models.quantize import Quantize
from skn.engine.request import DataRequest, ModelRequest, ProbeRequest, TrainRequest, default_of, help_of

F = TypeVar("F", bound=Callable[..., Any])


class Section(Enum):
    """The headings of `--help`, in the order they are printed."""

    MODEL = "Model and device"
    DATA = "Data"
    TRAINING = "Prompt training"
    PROBE = "Probe"
    STATISTICS = "Statistics"
    OUTPUT = "Output"
    OTHER = "Other options"


SECTION_OF: dict[type, Section] = {ModelRequest: Section.MODEL, DataRequest: Section.DATA, TrainRequest: Section.TRAINING,
                                   ProbeConfig: Section.PROBE, ProbeRequest: Section.OUTPUT}


class SectionOption(click.Option):
    """A Click option that knows its `--help` section."""

    def __init__(self, *args: Any, section: Section = Section.OTHER, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.section = section


class SectionedCommand(click.Command):
    """A command whose `--help` lists its options under one heading per `Section` (OTHER last: --help)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records: dict[Section, list[tuple[str, str]]] = {section: [] for section in Section}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and not isinstance(param, click.Argument):
                records[param.section if isinstance(param, SectionOption) else Section.OTHER].append(record)
        for section, rows in records.items():
            if rows:
                with formatter.section(section.value):
                    formatter.write_dl(rows)


def section_option(*decls: str, section: Section, **kwargs: Any) -> Callable[[F], F]:
    """`click.option` for an option of no library dataclass, in `section` of `--help`."""
    decorator: Callable[[F], F] = click.option(*decls, cls=SectionOption, section=section, **kwargs)
    return decorator


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", re.IGNORECASE)


def human_size(n: int) -> str:
    """Bytes for people: 8589934592 -> '8 GiB', 1536 -> '1.5 KiB', 1000 -> '1000 B'."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = _UNITS[unit.lower()]
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


if TYPE_CHECKING:
    _IntParamType = click.ParamType[int]  # generic from click 8.2 on; skn accepts 8.1
else:
    _IntParamType = click.ParamType


class ByteSize(_IntParamType):
    """A size in bytes: a plain number of bytes, or with a unit (8GiB, 1.5 GiB, 500MB; KiB = 1024, KB = 1000)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = _SIZE.fullmatch(str(value))
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _UNITS:
            self.fail(f"{value!r} is not a size: write bytes, or a number with a unit, e.g. 8GiB, 500MB, 1073741824",
                      param, ctx)
        return int(float(match.group(1)) * _UNITS[unit])


def option(flag: str, cls: type, name: str, section: Section | None = None, **extra: Any) -> Callable[[F], F]:
    """A Click option for field `name` of the library dataclass `cls`: its default and help text, in `section`
    of `--help` (by default the section of `cls`). A ByteSize option's default is shown for people (8 GiB)."""
    default = default_of(cls, name)
    if isinstance(default, Enum):
        default = default.value
    show = default not in (None, "", ()) and not isinstance(default, bool)
    if isinstance(extra.get("type"), ByteSize) and isinstance(default, int):
        shown = human_size(default)
        default = shown if ByteSize().convert(shown, None, None) == default else default  # only if read back the same
    kwargs: dict[str, Any] = {"help": help_of(cls, name), "show_default": show}
    if isinstance(default, bool):
        kwargs["is_flag"] = True
    elif isinstance(default, tuple):
        kwargs["multiple"] = True
    else:
        kwargs["default"] = default
    kwargs.update(extra)
    where = section or SECTION_OF.get(cls, Section.OTHER)
    decorator: Callable[[F], F] = click.option(flag, name, cls=SectionOption, section=where, **kwargs)
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
        option("--revision", ModelRequest, "revision", metavar="REV"),
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
    lambda name, revision, dtype, device, trust_remote_code, neuron_module, device_map, max_memory, offload_folder, quantize:
    ModelRequest(
        name, DType(dtype), device, trust_remote_code, neuron_module, device_map, tuple(max_memory), offload_folder,
        Quantize(quantize), revision=revision,
    ),
    ("name", "revision", "dtype", "device", "trust_remote_code", "neuron_module", "device_map", "max_memory",
     "offload_folder", "quantize"),
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

_TRAIN_KEYS = ("prompt_len", "steps", "epochs", "lr", "lr_schedule", "prompt_ema", "batch_size", "grad_accum", "eval_every", "patience",
               "prompt_init", "gradient_checkpointing", "instruction_cache", "resume", "prompt_seed")

train_options = _packed(
    [
        option("--prompt-len", TrainRequest, "prompt_len"),
        option("--steps", TrainRequest, "steps", type=int, default=None),
        option("--epochs", TrainRequest, "epochs"),
        option("--lr", TrainRequest, "lr"),
        option("--lr-schedule", TrainRequest, "lr_schedule", type=click.Choice([s.value for s in LrSchedule])),
        option("--prompt-ema", TrainRequest, "prompt_ema", metavar="DECAY"),
        option("--batch-size", TrainRequest, "batch_size"),
        option("--grad-accum", TrainRequest, "grad_accum"),
        option("--eval-every", TrainRequest, "eval_every"),
        option("--patience", TrainRequest, "patience"),
        option("--prompt-init", TrainRequest, "prompt_init", type=str, default=None, metavar="TOKEN"),
        option("--gradient-checkpointing", TrainRequest, "gradient_checkpointing"),
        option("--instruction-cache", TrainRequest, "instruction_cache", metavar="SIZE", type=ByteSize()),
        option("--resume", TrainRequest, "resume"),
        option("--prompt-seed", TrainRequest, "prompt_seed", type=int, default=None, metavar="S"),
    ],
    "train",
    lambda lr_schedule, **rest: TrainRequest(lr_schedule=LrSchedule(lr_schedule), **rest),
    _TRAIN_KEYS,
)

threads_option = option("--threads", ProbeRequest, "threads", Section.MODEL)
out_option = option("--out", ProbeRequest, "out", metavar="RUN")
