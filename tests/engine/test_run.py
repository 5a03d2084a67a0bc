"""The library owns the run: `skn.run_probe` and `skn probe` with the same options write the same run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import skn
from skn.cli.main import cli
from skn.errors import UsageError
from skn.engine.request import DataRequest, ModelRequest, ProbeRequest, TrainRequest
from skn.engine.run import run_probe

from helpers import write_data


def _records(path: Path) -> list[object]:
    """A JSON or JSON Lines file's records, each without its run id (every run draws its own)."""
    text = path.read_text()
    records = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" else [json.loads(text)]
    for record in records:
        if isinstance(record, dict):
            record.pop("run_id", None)
    return records


def same_run_directory(a: Path, b: Path) -> None:
    """Tensors bitwise (NaN where NaN), JSON equal apart from the timings and the run id, other files byte for byte."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        if name.endswith(".safetensors"):
            x, y = load_file(str(a / name)), load_file(str(b / name))
            assert set(x) == set(y), name
            for key in x:
                assert torch.equal(torch.nan_to_num(x[key], nan=-7.0), torch.nan_to_num(y[key], nan=-7.0)), (name, key)
        elif name == "run.json":
            first, second = json.loads((a / name).read_text()), json.loads((b / name).read_text())
            first.pop("timings"), second.pop("timings")
            first.pop("run_id"), second.pop("run_id")
            assert first == second
        elif name in ("examples.jsonl", "groups.json"):
            assert _records(a / name) == _records(b / name), name
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.slow  # over 8 s in `pytest --durations=15` (2 shared cores)
def test_bundled_default_python_equals_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    options = ["--steps", "2", "--train-size", "16", "--val-size", "24", "--top-k", "4"]
    result = runner.invoke(cli, ["probe", *options, "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    request = ProbeRequest(data=DataRequest(train_size=16, val_size=24), train=TrainRequest(steps=2),
                           probe=skn.ProbeConfig(top_k=4), out=str(tmp_path / "py"))
    run_probe(request)
    same_run_directory(tmp_path / "cli", tmp_path / "py")


def test_files_python_equals_cli(tmp_path: Path, saved_tiny_model: Path) -> None:
    data = write_data(tmp_path / "data.jsonl", 30, 0)
    runner = CliRunner()
    result = runner.invoke(cli, ["probe", "--model", str(saved_tiny_model), "--data", str(data), "--metric", "size",
                                 "--steps", "2", "--prompt-len", "3", "--lr", "0.01", "--top-k", "3", "--group-by", "animal",
                                 "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    request = skn.ProbeRequest(
        model=ModelRequest(str(saved_tiny_model)), data=DataRequest(data=(str(data),)),
        train=TrainRequest(steps=2, prompt_len=3, lr=0.01), probe=skn.ProbeConfig(top_k=3), metric="size",
        group_by=("animal",), out=str(tmp_path / "py"),
    )
    result_py = run_probe(request)
    same_run_directory(tmp_path / "cli", tmp_path / "py")
    back = skn.read_probe_run(tmp_path / "py")
    assert type(back) is type(result_py) and back.neurons == result_py.neurons and back.info.metric == "size"
    assert back.groups is not None and back.groups.fields == ("animal",)


def test_cli_defaults_are_the_library_defaults() -> None:
    params = {p.name: p for p in cli.commands["probe"].params}  # type: ignore[attr-defined]
    assert params["batch_size"].default == skn.ProbeConfig().batch_size == skn.TrainConfig().batch_size
    assert params["lr"].default == skn.TrainConfig().lr and params["prompt_len"].default == skn.TrainConfig().prompt_len
    assert params["top_k"].default == skn.ProbeConfig().top_k and params["n_exemplars"].default == skn.ProbeConfig().n_exemplars


def test_config_checks_where_made() -> None:
    with pytest.raises(UsageError, match="--top-k"):
        skn.ProbeConfig(top_k=0)


def test_config_checks_name_the_flag() -> None:
    from skn.errors import UsageError
    from skn.training.trainer import TrainConfig

    for make, flag in (
        (lambda: TrainConfig(steps=0), "--steps"), (lambda: TrainConfig(lr=float("nan")), "--lr"),
        (lambda: TrainRequest(batch_size=0), "--batch-size"), (lambda: TrainRequest(epochs=-1.0), "--epochs"),
        (lambda: TrainRequest(steps=0), "--steps"), (lambda: DataRequest(val_fraction=1.0), "--val-fraction"),
        (lambda: DataRequest(val_size=0), "--val-size"), (lambda: ProbeRequest(threads=-1), "--threads"),
    ):
        with pytest.raises(UsageError, match=flag):
            make()
    assert TrainRequest(steps=None).steps is None and DataRequest(train_size=None).train_size is None
