"""skn probe --seeds: one sub-run per seed in one run directory, compared; a failing seed keeps the others."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from skn.engine import seeds
from skn.files.result import ProbeResult
from skn.engine.request import ProbeRequest, TrainRequest
from skn.cli.main import cli
from skn.errors import MetricError, UsageError
from skn.files.probe_read import read_probe_run

from helpers import FAST, write_data


def test_parse_seeds() -> None:
    assert seeds.parse_seeds("0,1, 2") == (0, 1, 2)
    for bad in ("0,a", "1,1", ""):
        with pytest.raises(UsageError, match="--seeds"):
            seeds.parse_seeds(bad)


def test_probe_with_seeds(tmp_path: Path, saved_tiny_model: Path) -> None:
    train, val = write_data(tmp_path / "train.jsonl", 16, 0), write_data(tmp_path / "val.jsonl", 20, 1)
    out = tmp_path / "RUN"
    result = CliRunner().invoke(cli, ["probe", "--model", str(saved_tiny_model), "--data", str(train), "--val-data", str(val),
                                      "--metric", "size", "--seeds", "3,5", "--out", str(out), *FAST], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "seed 3" in result.output and "seed 5" in result.output and "consensus top 5" in result.output
    first, second = read_probe_run(out / "seed-3"), read_probe_run(out / "seed-5")
    assert first.info.seed == 3 and second.info.seed == 5
    assert first.examples == second.examples  # one validation set, two prompts
    assert not (out / "seed-3" / "prompt.safetensors").read_bytes() == (out / "seed-5" / "prompt.safetensors").read_bytes()
    compared = json.loads((out / "compare.json").read_text())
    assert [r["name"] for r in compared["runs"]] == [str(out / "seed-3"), str(out / "seed-5")]
    assert json.loads((out / "seeds.json").read_text())["done"] == [{"seed": 3, "run": "seed-3"}, {"seed": 5, "run": "seed-5"}]
    shown = CliRunner().invoke(cli, ["compare", str(out), "--out", str(tmp_path / "cmp")])
    assert shown.exit_code == 0 and (tmp_path / "cmp" / "compare.csv").is_file()
    # `skn show` on the --seeds folder: each seed's top neurons, then the comparison
    shown = CliRunner().invoke(cli, ["show", str(out), "--exemplars", "0"], env={"COLUMNS": "160"})
    assert shown.exit_code == 0, shown.output
    text = shown.output
    assert text.index("seed-3") < text.index("seed-5") < text.index("comparison of the 2 seeds") < text.index("consensus top 5")
    assert text.count("top 5 neurons") == 2 and text.count("neurons passing each run's family-wise threshold") == 1


def test_a_failing_seed_keeps_the_runs_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_run(request: ProbeRequest, progress: object) -> ProbeResult:
        assert request.train.prompt_seed is not None
        calls.append(request.train.prompt_seed)
        if request.train.prompt_seed == 2:
            raise MetricError("metric constant over the validation set")
        Path(request.out).mkdir(parents=True)
        (Path(request.out) / "done").write_text("ok")
        return None  # type: ignore[return-value]

    monkeypatch.setattr(seeds, "run_probe", fake_run)
    request = ProbeRequest(out=str(tmp_path / "RUN"))
    with pytest.raises(MetricError, match=r"seed 2 .*seed-2.*metric constant.*kept: seed-0, seed-1"):
        seeds.run_seeds(request, (0, 1, 2, 3))
    assert calls == [0, 1, 2]
    assert (tmp_path / "RUN" / "seed-0" / "done").is_file() and (tmp_path / "RUN" / "seed-1" / "done").is_file()
    assert json.loads((tmp_path / "RUN" / "seeds.json").read_text())["done"][-1] == {"seed": 1, "run": "seed-1"}
    with pytest.raises(UsageError, match="--prompt"):
        seeds.run_seeds(ProbeRequest(prompt=str(tmp_path), out=str(tmp_path / "X")), (0, 1))


def test_prompt_seed_changes_the_prompt_and_keeps_the_items(tmp_path: Path, saved_tiny_model: Path) -> None:
    """--prompt-seed S: the prompt of seed S on --seed's items (what one seed of --seeds does, in its own run
    directory); --seed S alone draws other items too."""
    train, val = write_data(tmp_path / "train.jsonl", 16, 0), write_data(tmp_path / "val.jsonl", 30, 1)
    runs: dict[str, Path] = {}
    for name, extra in (("base", []), ("prompt5", ["--prompt-seed", "5"]), ("seed5", ["--seed", "5"])):
        runs[name] = tmp_path / name
        result = CliRunner().invoke(cli, ["probe", "--model", str(saved_tiny_model), "--data", str(train), "--val-data", str(val),
                                          "--val-size", "12", "--metric", "size", *extra, "--out", str(runs[name]), *FAST])
        assert result.exit_code == 0, result.output
    base, prompt5, seed5 = (read_probe_run(runs[n]) for n in ("base", "prompt5", "seed5"))
    assert (base.info.seed, prompt5.info.seed, seed5.info.seed) == (0, 5, 5)
    assert prompt5.examples == base.examples and seed5.examples != base.examples
    prompt = {n: (runs[n] / "prompt.safetensors").read_bytes() for n in runs}
    assert prompt["prompt5"] != prompt["base"]
    both = CliRunner().invoke(cli, ["probe", "--seeds", "1,2", "--prompt-seed", "3", "--out", str(tmp_path / "both")])
    assert isinstance(both.exception, UsageError) and "--prompt-seed and --seeds both set the prompt's seed" in str(both.exception)
    with pytest.raises(UsageError, match="--prompt-seed and --seeds both set the prompt's seed"):  # from Python too
        seeds.run_seeds(ProbeRequest(train=TrainRequest(prompt_seed=3), out=str(tmp_path / "lib")), (1, 2))
    assert not (tmp_path / "lib").exists()
    bad = CliRunner().invoke(cli, ["probe", "--prompt-seed", "-1", "--out", str(tmp_path / "bad")])
    assert isinstance(bad.exception, UsageError) and "--prompt-seed must be a whole number" in str(bad.exception)
