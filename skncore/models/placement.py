"""Where a model's layers live: one device (the default), or spread over devices and offloaded by accelerate.

`--device-map auto|balanced|balanced_low_0|sequential` is passed to `from_pretrained` (accelerate places
each layer; `--max-memory 0=20GiB,cpu=60GiB` caps each device, `--offload-folder DIR` takes what is left
to disk). The hooks then see each layer's activations on the device where that layer runs; the pass
moves them once per layer and batch to the statistics' device (`LoadedModel.device`, the device of the
first layer that is not offloaded), so the moments stay in one place and the merge needs no gather.
Moving [B, T, m] once per layer is small against the layer's own matmuls, and it keeps one code path.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

from skn.errors import ModelError, UsageError

DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass(frozen=True)
class Placement:
    """How to place a model's layers; the default (no device map) puts the whole model on one device."""

    device_map: str = ""  # "" = the whole model on --device
    max_memory: tuple[str, ...] = ()  # "DEVICE=SIZE", e.g. "0=20GiB", "cpu=60GiB"
    offload_folder: str = ""  # where offloaded weights go ("disk" in the device map)

    def __post_init__(self) -> None:
        if self.device_map and self.device_map not in DEVICE_MAPS:
            raise UsageError(f"--device-map {self.device_map}: expected one of {', '.join(DEVICE_MAPS)}")
        if (self.max_memory or self.offload_folder) and not self.device_map:
            raise UsageError("--max-memory and --offload-folder need --device-map")
        max_memory_of(self)  # parse now: a malformed entry fails where it is given

    @property
    def spread(self) -> bool:
        return bool(self.device_map)


def max_memory_of(placement: Placement) -> dict[int | str, str]:
    """--max-memory entries as accelerate takes them: {0: "20GiB", "cpu": "60GiB"}."""
    out: dict[int | str, str] = {}
    for entry in placement.max_memory:
        device, sep, size = entry.partition("=")
        device, size = device.strip(), size.strip()
        if not sep or not device or not size:
            raise UsageError(f"--max-memory {entry}: expected DEVICE=SIZE, e.g. 0=20GiB or cpu=60GiB")
        out[int(device) if device.isdigit() else device] = size
    return out


def from_pretrained_kwargs(placement: Placement) -> dict[str, object]:
    """The keyword arguments `from_pretrained` takes for this placement (none without a device map)."""
    if not placement.spread:
        return {}
    if importlib.util.find_spec("accelerate") is None:
        raise ModelError("--device-map needs the package accelerate: pip install 'skn[gguf]' or pip install accelerate")
    kwargs: dict[str, object] = {"device_map": placement.device_map}
    if placement.max_memory:
        kwargs["max_memory"] = max_memory_of(placement)
    if placement.offload_folder:
        kwargs["offload_folder"] = placement.offload_folder
    return kwargs


def statistics_device(device_map: dict[str, object]) -> torch.device:
    """The device the statistics live on: the first placed layer's device that is not offloaded."""
    for where in device_map.values():
        if isinstance(where, int):
            return torch.device("cuda", where)
        if isinstance(where, str) and where not in ("cpu", "disk", "meta"):
            return torch.device(where)
    return torch.device("cpu")
