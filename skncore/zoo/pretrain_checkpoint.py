"""Checkpoints of skn.zoo.train_arithmetic's pretraining: the weights, AdamW's moments, the step and the
log, as safetensors + JSON (no pickle), so `--resume` continues a run exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from skn.files.rundir import write_json, write_tensors

STATE_FILE = "state.json"  # the step, the log and the names of the step's tensor files


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
    """Weights, AdamW moments and the step, as safetensors + JSON (no pickle). The step's tensors go to files of
    their own (weights-STEP.safetensors, optimizer-STEP.safetensors), each written atomically, and state.json,
    written atomically last, names them: a kill at any moment leaves state.json naming complete files of one
    step, the previous one or this one. Older steps' files are removed after."""
    path.mkdir(parents=True, exist_ok=True)
    names = {id(p): n for n, p in model.named_parameters()}
    files = {"weights": f"weights-{step}.safetensors", "optimizer": f"optimizer-{step}.safetensors"}
    write_tensors(path / files["weights"], {n: p.detach().clone() for n, p in model.named_parameters()}, {})
    write_tensors(path / files["optimizer"], _optimizer_tensors(optimizer, names), {})
    write_json(path / STATE_FILE, {"step": step, "history": history.rows, "files": files})
    for child in path.glob("*.safetensors"):
        if child.name not in files.values():
            child.unlink()


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, History]:
    info = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    files = info.get("files", {"weights": "weights.safetensors", "optimizer": "optimizer.safetensors"})  # before the step's names
    weights = load_file(str(path / files["weights"]))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    moments = load_file(str(path / files["optimizer"]))
    for name, param in params.items():
        state = {key.split("::", 1)[1]: value for key, value in moments.items() if key.split("::", 1)[0] == name}
        if state:
            optimizer.state[param] = state
    return int(info["step"]), History(list(info["history"]))
