"""The CLI through Click's runner: whole runs on tiny and real models, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from skn.cli.main import cli, main
from skn.files.probe_read import read_probe_run

from helpers import FAST, run_main, write_data



@pytest.mark.slow  # over 8 s in `pytest --durations=15` (2 shared cores)
def test_probe_show_and_reuse_prompt(tmp_path: Path, saved_tiny_model: Path) -> None:
    train, val = write_data(tmp_path / "train.jsonl", 24, 0), write_data(tmp_path / "val.jsonl", 20, 1)
    out = tmp_path / "RUN"
    runner = CliRunner()
    result = runner.invoke(cli, ["probe", "--model", str(saved_tiny_model), "--data", str(train), "--val-data", str(val),
                                 "--metric", "loss", "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    assert "top 5 neurons" in result.output
    for name in ("prompt.safetensors", "stats.safetensors", "neurons.json", "neurons.csv", "top_activations.safetensors",
                 "examples.jsonl", "run.json"):
        assert (out / name).is_file(), name
    run = read_probe_run(out)
    assert run.corr.shape == (2, 4, 48) and run.top_activations.shape == (5, 20)
    assert [n.rank for n in run.neurons] == [1, 2, 3, 4, 5]
    assert run.examples[0].meta["animal"] in ("cat", "dog", "bird")
    info = json.loads((out / "run.json").read_text())
    assert info["metric"] == "loss" and info["n_val"] == 20 and len(info["train_history"]) == 3
    csv_lines = (out / "neurons.csv").read_text().splitlines()
    assert csv_lines[0] == "rank,layer,neuron,position,r,p_adjusted,p_cell,significant" and len(csv_lines) == 6
    records = json.loads((out / "neurons.json").read_text())
    assert all(0 < r["p_adjusted"] <= 1 and 0 < r["p_cell"] <= r["p_adjusted"] and isinstance(r["significant"], bool) for r in records)
    assert info["null"]["permutations"] == 100 and info["null"]["mode"] == "within-batch"
    assert run.null is not None and run.null.max_abs_r.shape == (100,)
    assert f"{run.null.n_significant} of 5 pass the family-wise null" in result.output

    shown = runner.invoke(cli, ["show", str(out)])
    assert shown.exit_code == 0 and "top 5 neurons" in shown.output
    assert f"{run.null.n_significant} of 5 pass the family-wise null: |r| > {run.null.threshold:.3f}" in " ".join(shown.output.split())

    again = runner.invoke(cli, ["probe", "--model", str(saved_tiny_model), "--data", str(train), "--val-data", str(val),
                                "--prompt", str(out / "prompt.safetensors"), "--metric", "animal==dog", "--group-by", "animal",
                                "--report", "--out", str(tmp_path / "R2"), *FAST])
    assert again.exit_code == 0, again.output
    info = json.loads((tmp_path / "R2" / "run.json").read_text())
    assert info["prompt"].endswith("prompt.safetensors") and "train_history" not in info and info["group_by"] == ["animal"]
    groups = json.loads((tmp_path / "R2" / "groups.json").read_text())
    assert "animal" in json.dumps(groups)
    assert "<table" in (tmp_path / "R2" / "report.html").read_text()
    assert info["null"]["mode"] == "whole-set" and "family-wise null" in (tmp_path / "R2" / "report.html").read_text()

    off = runner.invoke(cli, ["probe", "--model", str(saved_tiny_model), "--data", str(train), "--val-data", str(val),
                              "--prompt", str(out), "--metric", "animal==dog", "--null", "0", "--out", str(tmp_path / "R3"), *FAST])
    assert off.exit_code == 0, off.output
    assert "no permutation null (--null 0)" in off.output
    assert "p_adjusted" not in (tmp_path / "R3" / "neurons.json").read_text()
    assert json.loads((tmp_path / "R3" / "run.json").read_text())["null"] is None
    assert read_probe_run(tmp_path / "R3").null is None
    assert "no permutation null" in runner.invoke(cli, ["show", str(tmp_path / "R3")]).output


def test_train_only(tmp_path: Path, saved_tiny_model: Path) -> None:
    data = write_data(tmp_path / "d.jsonl", 30, 0)
    result = CliRunner().invoke(cli, ["train", "--model", str(saved_tiny_model), "--data", str(data), "--out", str(tmp_path / "T"),
                                      "--steps", "2", "--eval-every", "1", "--prompt-len", "2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "T" / "prompt.safetensors").is_file()


def test_stories_end_to_end(tmp_path: Path, stories_path: Path) -> None:
    train, val = write_data(tmp_path / "train.jsonl", 16, 0), write_data(tmp_path / "val.jsonl", 12, 1)
    result = CliRunner().invoke(cli, ["probe", "--model", str(stories_path), "--data", str(train), "--val-data", str(val),
                                      "--metric", "confidence", "--out", str(tmp_path / "S"), *FAST])
    assert result.exit_code == 0, result.output
    assert read_probe_run(tmp_path / "S").corr.shape == (5, 4, 172)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--metric", "animal==fish"], "constant"),
        (["--metric", "nosuchfield"], "lacks"),
        (["--metric", "animal"], "is not a number"),
        (["--top-k", "0"], "--top-k must be at least 1"),
    ],
)
def test_bad_metric_or_options_exit_2(tmp_path: Path, saved_tiny_model: Path, extra: list[str], message: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    train, val = write_data(tmp_path / "t.jsonl", 12, 0), write_data(tmp_path / "v.jsonl", 10, 1)
    args = ["probe", "--model", str(saved_tiny_model), "--data", str(train), "--val-data", str(val), "--out", str(tmp_path / "R"),
            *FAST, *extra]
    code, output = run_main(args, capsys)
    assert code == 2, output
    assert message in output and "Traceback" not in output
    # a metric or option known to be bad fails before any training time is spent
    assert not (tmp_path / "R" / "prompt.safetensors").exists()


def test_metric_found_constant_after_training_keeps_prompt_and_values(tmp_path: Path, saved_tiny_model: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    train, val = write_data(tmp_path / "t.jsonl", 12, 0), write_data(tmp_path / "v.jsonl", 10, 1)
    args = ["probe", "--model", str(saved_tiny_model), "--data", str(train), "--val-data", str(val), "--out", str(tmp_path / "R"),
            *FAST, "--metric", "correct"]  # a random model reproduces no completion: correct == 0 everywhere
    code, output = run_main(args, capsys)
    assert code == 2 and "constant (0)" in output
    assert (tmp_path / "R" / "prompt.safetensors").is_file()
    assert len((tmp_path / "R" / "examples.jsonl").read_text().splitlines()) == 10


def test_bad_data_and_model_exit_2(tmp_path: Path, saved_tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "completion": "b"}\n{"instruction": "c"}\n')
    code, output = run_main(["probe", "--model", str(saved_tiny_model), "--data", str(bad), "--out", str(tmp_path / "R")], capsys)
    assert code == 2 and "bad.jsonl:2: missing field 'completion'" in output
    good = write_data(tmp_path / "g.jsonl", 10, 0)
    code, output = run_main(["probe", "--model", str(tmp_path / "nomodel"), "--data", str(good), "--out", str(tmp_path / "R")], capsys)
    assert code == 2 and "no such folder" in output
    code, output = run_main(["show", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "no such run directory" in output


def test_help_has_examples() -> None:
    for command in ("probe", "train", "show"):
        result = CliRunner().invoke(cli, [command, "--help"])
        assert result.exit_code == 0 and "Example" in result.output


@pytest.mark.slow  # over 8 s in `pytest --durations=15` (2 shared cores)
def test_task_hans_end_to_end(tmp_path: Path, stories_path: Path) -> None:
    hans = stories_path.parents[1] / "data" / "hans"
    if not (hans / "heuristics_train_set.derived.tsv").is_file():
        pytest.skip("HANS files are absent")
    out = tmp_path / "H"
    result = CliRunner().invoke(cli, [
        "probe", "--task", "hans", "--data", str(hans / "heuristics_train_set.derived.tsv"),
        "--val-data", str(hans / "heuristics_evaluation_set.derived.tsv"), "--model", str(stories_path),
        "--train-size", "16", "--val-size", "24", "--out", str(out), *FAST,
    ])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "run.json").read_text())
    assert info["metric"] == "heuristic==lexical_overlap" and info["group_by"] == ["heuristic"] and info["n_val"] == 24
    groups = json.dumps(json.loads((out / "groups.json").read_text()))
    for heuristic in ("lexical_overlap", "subsequence", "constituent"):
        assert heuristic in groups  # groups the metric did not use are summarised too
    records = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert all({"heuristic", "subcase", "label"} <= set(r["meta"]) for r in records)


@pytest.mark.slow  # over 8 s in `pytest --durations=15` (2 shared cores)
def test_no_arguments_runs_the_bundled_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["probe", "--steps", "2", "--val-size", "40", "--train-size", "16", "--top-k", "3"])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()  # runs/YYYYMMDD-HHMMSS
    for name in ("prompt.safetensors", "stats.safetensors", "neurons.json", "neurons.csv", "top_activations.safetensors",
                 "examples.jsonl", "run.json", "groups.json"):
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert info["metric"] == "loss" and info["group_by"] == ["last_digit_shortcut", "digits"]
    assert info["train_config"]["init"] == "<soft>" and info["layers"] == 4 and info["width"] == 512
    assert read_probe_run(run).corr.shape == (4, 20, 512)
