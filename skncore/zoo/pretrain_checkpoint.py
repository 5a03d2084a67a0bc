"""Checkpoints of skn.zoo.train_arithmetic's pretraining: the weights, AdamW's moments, the step and the
log, as safetensors + JSON (no pickle), so `--resume` continues a run exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn


@dataclass
class History:
    rows: list[dict[str, object]] = field(default_factory=list)


def _optimizer_tensors(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state[param].items():
                out[f"{names[id(param)]}::{key}"] = torch.as_tensor(value).clone()
    return out


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int, history: History) -> None:
    """Weights, AdamW moments and the step, as safetensors + JSON (no pickle); written then renamed."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    names = {id(p): n for n, p in model.named_parameters()}
    save_file({n: p.detach().clone() for n, p in model.named_parameters()}, str(tmp / "weights.safetensors"))
    save_file(_optimizer_tensors(optimizer, names), str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, "history": history.rows}) + "\n", encoding="utf-8")
    if path.exists():
        for child in path.iterdir():
            child.unlink()
        path.rmdir()
    tmp.rename(path)


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, History]:
    weights = load_file(str(path / "weights.safetensors"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    moments = load_file(str(path / "optimizer.safetensors"))
    for name, param in params.items():
        state = {key.split("::", 1)[1]: value for key, value in moments.items() if key.split("::", 1)[0] == name}
        if state:
            optimizer.state[param] = state
    info = json.loads((path / "state.json").read_text(encoding="utf-8"))
    return int(info["step"]), History(list(info["history"]))
