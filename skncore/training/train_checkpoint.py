"""The training's checkpoint (`--resume`): the prompt, the best one, AdamW's moments, the moving average, the
curve, and what a resumed run must share with the saved one (`training_identity`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from skn.errors import RunDirError, TrainingError, UsageError
from skn.files.rundir import CHECKPOINT_FILE, write_tensors
from skn.inputs.layout import Encoded
from skn.models.model import LoadedModel
from skn.training.train_config import HistoryPoint, LrSchedule, TrainConfig


def checkpoint_path(out: Path) -> Path:
    return Path(out) / CHECKPOINT_FILE


def save_checkpoint(
    out: Path, prompt: Tensor, best: Tensor, optimizer: torch.optim.AdamW, step: int, best_val: float, best_step: int,
    history: Sequence[HistoryPoint], config: TrainConfig, evals_without_gain: int = 0,
    identity: dict[str, str] | None = None, average: Tensor | None = None,
) -> None:
    state = optimizer.state[prompt]
    tensors = {"prompt": prompt.detach(), "best_prompt": best}
    if average is not None:
        tensors["prompt_average"] = average
    if state:
        tensors["exp_avg"] = state["exp_avg"]
        tensors["exp_avg_sq"] = state["exp_avg_sq"]
    meta = {
        "step": str(step),
        "best_val_loss": repr(best_val),
        "best_step": str(best_step),
        "history": json.dumps([h.__dict__ for h in history]),
        "config": json.dumps({"prompt_len": config.prompt_len, "lr": config.lr, "batch_size": config.batch_size,
                              "grad_accum": config.grad_accum, "seed": config.seed}),
        "evals_without_gain": str(evals_without_gain),
        "identity": json.dumps(identity or {}),
    }
    write_tensors(checkpoint_path(out), tensors, meta)


@dataclass(frozen=True)
class Resumed:
    prompt: Tensor
    best: Tensor
    exp_avg: Tensor | None
    exp_avg_sq: Tensor | None
    step: int
    best_val: float
    best_step: int
    history: tuple[HistoryPoint, ...]
    evals_without_gain: int = 0
    average: Tensor | None = None  # the prompt's moving average (--prompt-ema), None without


def rows_fingerprint(rows: Sequence[Encoded]) -> str:
    """sha256 of the token ids of the examples, in order: a resume must see the same data."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([list(row.instruction), list(row.completion)]).encode())
    return digest.hexdigest()[:16]


def training_identity(loaded: LoadedModel, train_rows: Sequence[Encoded], val_rows: Sequence[Encoded],
                      config: TrainConfig) -> dict[str, str]:
    """What a resumed training must share with the checkpointed one (all but the number of steps)."""
    return {
        "model": loaded.name,
        "hidden_size": str(loaded.hidden_size),
        "training data": rows_fingerprint(train_rows),
        "validation data": rows_fingerprint(val_rows),
        "lr": repr(config.lr),
        "lr_schedule": config.lr_schedule.value if config.lr_schedule is LrSchedule.CONSTANT
        else f"{config.lr_schedule.value} over {config.steps} steps",
        "weight_decay": repr(config.weight_decay),
        "eval_every": str(config.eval_every),
        "eval_examples": str(config.eval_examples),
        "patience": str(config.patience),
        "init": config.init.token or "random-vocab",
        "prompt_ema": repr(config.prompt_ema),
    }


def load_checkpoint(out: Path, config: TrainConfig, identity: dict[str, str] | None = None) -> Resumed:
    path = checkpoint_path(out)
    if not path.is_file():
        raise RunDirError(f"--resume: {path} does not exist (nothing to resume)")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        tensors = load_file(str(path))
        saved = json.loads(meta.get("config", "{}"))
        saved_identity = json.loads(meta.get("identity", "{}"))
        history = tuple(HistoryPoint(**h) for h in json.loads(meta.get("history", "[]")))
        resumed = Resumed(
            prompt=tensors["prompt"], best=tensors["best_prompt"], exp_avg=tensors.get("exp_avg"),
            exp_avg_sq=tensors.get("exp_avg_sq"), step=int(meta["step"]), best_val=float(meta["best_val_loss"]),
            best_step=int(meta["best_step"]), history=history,
            evals_without_gain=int(meta.get("evals_without_gain", "0")), average=tensors.get("prompt_average"),
        )
    except Exception as err:  # truncated or foreign file: safetensors, json and int() raise many kinds
        raise RunDirError(f"--resume: {path} is not a readable skn checkpoint ({type(err).__name__}: {err})") from None
    for key in ("prompt_len", "batch_size", "grad_accum", "seed"):
        if saved.get(key) != getattr(config, key):
            raise UsageError(f"--resume: the checkpoint was trained with {key}={saved.get(key)}, not {getattr(config, key)}")
    for key, value in (identity or {}).items():
        if key in saved_identity and saved_identity[key] != value:
            raise TrainingError(f"--resume: the checkpoint in {out} was trained with another {key} "
                                f"({saved_identity[key]}, now {value}); resume with the same settings or start afresh")
    if identity is not None and tuple(resumed.prompt.shape) != (config.prompt_len, int(identity["hidden_size"])):
        raise TrainingError(f"--resume: the checkpoint's prompt is {tuple(resumed.prompt.shape)}, this model needs "
                            f"[{config.prompt_len}, {identity['hidden_size']}]")
    return resumed


__all__ = ["Resumed", "checkpoint_path", "load_checkpoint", "rows_fingerprint", "save_checkpoint", "training_identity"]
