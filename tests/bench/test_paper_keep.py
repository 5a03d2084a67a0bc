"""bench/paper_keep.py: what the paper runs keep in the repository comes back on a fresh machine as far as it
was kept, never an earlier state over a later one, and a finished probe given back from its training checkpoint
alone is the same run (the statistics bitwise, the training curve)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import FAST, bench_script, run_main, write_data


def _checkpoint(run: Path, step: int) -> None:
    run.mkdir(parents=True, exist_ok=True)
    save_file({"prompt": torch.full((2, 3), float(step))}, str(run / "checkpoint.safetensors"), metadata={"step": str(step)})


def _step(path: Path) -> int:
    return int(load_file(str(path))["prompt"][0, 0])


def test_keep_and_restore_move_only_what_is_further(tmp_path: Path) -> None:
    keep = bench_script("paper_keep")
    runs, kept = tmp_path / "runs", tmp_path / "kept"
    run = runs / "gemma3-rq3" / "seed-1-800steps"
    _checkpoint(run, 40)
    assert keep.keep(run, kept) == ["checkpoint.safetensors"]
    at = kept / "gemma3-rq3" / "seed-1-800steps" / "checkpoint.safetensors"
    assert _step(at) == 40 and keep.training_step(at) == 40
    assert keep.keep(run, kept) == []  # nothing further
    _checkpoint(run, 80)
    assert keep.keep_all(runs, kept) == [f"kept checkpoint.safetensors of {run} (training step 80)"]
    assert _step(at) == 80

    shutil.rmtree(runs)  # the machine is gone: the run comes back from its kept state
    assert keep.restore(run, kept) == ["checkpoint.safetensors"] and _step(run / "checkpoint.safetensors") == 80
    _checkpoint(run, 120)  # the run went further here than it was kept: nothing earlier comes back over it
    assert keep.restore(run, kept) == [] and _step(run / "checkpoint.safetensors") == 120

    (run / "ablation_checkpoint.safetensors").write_bytes(b"x" * 10)  # a curve in flight, then finished
    assert keep.keep(run, kept) == ["checkpoint.safetensors", "ablation_checkpoint.safetensors"]
    (run / "ablation_checkpoint.safetensors").write_bytes(b"x" * 5)  # a smaller one is an earlier state
    assert keep.keep(run, kept) == []
    (run / "ablation_checkpoint.safetensors").unlink()
    (run / "ablation_curve.json").write_text("{}")
    (run / "run.json").write_text("{}")
    assert keep.keep(run, kept) == ["ablation_curve.json"]
    assert not (kept / "gemma3-rq3" / "seed-1-800steps" / "ablation_checkpoint.safetensors").exists()

    fresh = tmp_path / "fresh" / "gemma3-rq3" / "seed-1-800steps"  # a finished probe takes back only its curve
    fresh.mkdir(parents=True)
    (fresh / "run.json").write_text("{}")
    assert keep.restore(fresh, kept) == ["ablation_curve.json"] and not (fresh / "checkpoint.safetensors").exists()
    assert not list(fresh.glob("*.tmp"))


def test_a_probe_given_back_from_its_training_checkpoint_is_the_same_run(tmp_path: Path, saved_tiny_model: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    keep = bench_script("paper_keep")
    train, val = write_data(tmp_path / "train.jsonl", 16, 0), write_data(tmp_path / "val.jsonl", 20, 1)
    argv = ["probe", "--model", str(saved_tiny_model), "--data", str(train), "--val-data", str(val), "--metric", "loss",
            "--null", "19", "--lr-schedule", "linear", *FAST]
    first, again, kept = tmp_path / "runs" / "x" / "seed-0", tmp_path / "again" / "x" / "seed-0", tmp_path / "kept"
    code, text = run_main([*argv, "--out", str(first)], capsys)
    assert code == 0, text
    assert keep.keep(first, kept) == ["checkpoint.safetensors"]
    assert keep.restore(again, kept) == ["checkpoint.safetensors"]
    assert [p.name for p in again.iterdir()] == ["checkpoint.safetensors"]
    code, text = run_main([*argv, "--out", str(again), "--resume"], capsys)
    assert code == 0, text
    a, b = load_file(str(first / "stats.safetensors")), load_file(str(again / "stats.safetensors"))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(load_file(str(first / "prompt.safetensors"))["prompt"], load_file(str(again / "prompt.safetensors"))["prompt"])
    history = [json.loads((run / "run.json").read_text())["train_history"] for run in (first, again)]
    assert history[0] == history[1] and len(history[0]) == 3
