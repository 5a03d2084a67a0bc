"""`skn ablate` end to end on a tiny saved model: the file, the table, `skn show`, the report, the figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from skn.ablation.ablate_files import read_ablation
from skn.ablation.ablate_view import ablation_figure, effect_rows
from skn.cli.main import cli

from helpers import FAST, run_main, write_data


@pytest.mark.slow  # about 10 s: a probe, an ablation, a report
def test_ablate_show_report_plot(tmp_path: Path, saved_tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train, val = write_data(tmp_path / "train.jsonl", 16, 0), write_data(tmp_path / "val.jsonl", 14, 1)
    out = tmp_path / "RUN"
    runner = CliRunner()
    probed = runner.invoke(cli, ["probe", "--model", str(saved_tiny_model), "--data", str(train), "--val-data", str(val),
                                 "--metric", "confidence", "--out", str(out), *FAST])
    assert probed.exit_code == 0, probed.output
    result = runner.invoke(cli, ["ablate", str(out), "--controls", "3", "--per-neuron", "2", "--items", "10", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "ablation:" in result.output and "each neuron alone" in result.output
    record = json.loads((out / "ablation.json").read_text())
    assert record["model"] == str(saved_tiny_model) and record["n_items"] == 10 and len(record["neurons"]) == 5
    # the completions " a cat" / " a dog" / " a bird" are labels: accuracy is measured; confidence is an output metric
    typed = read_ablation(out)
    assert [r.measure for r in effect_rows(typed)] == ["loss", "metric", "accuracy"]
    assert record["alternative_rows"] == 20 and len(record["per_example"]) == 10
    assert (out / "plots" / "ablation.png").is_file()
    gids = {a.get_gid() for ax in ablation_figure(typed).axes for a in (*ax.lines, *ax.patches)}
    assert "ablated" in gids and any(str(g).startswith("neuron:") for g in gids)

    shown = runner.invoke(cli, ["show", str(out), "--exemplars", "0"])
    assert shown.exit_code == 0 and "ablation:" in shown.output
    reported = runner.invoke(cli, ["report", str(out)])
    assert reported.exit_code == 0 and 'id="ablation"' in (out / "report.html").read_text()

    code, text = run_main(["ablate", str(out), "--neurons", "7.1"], capsys)
    assert code == 2 and "--neurons" in text
    code, text = run_main(["ablate", str(out), "--value", "half"], capsys)
    assert code == 2 and "--value" in text
    code, text = run_main(["ablate", str(tmp_path / "nothing")], capsys)
    assert code == 2


@pytest.mark.slow  # about 15 s: a probe and two curves
def test_four_curves_and_a_consensus_from_the_cli(tmp_path: Path, saved_tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train, val = write_data(tmp_path / "train.jsonl", 16, 0), write_data(tmp_path / "val.jsonl", 10, 1)
    out = tmp_path / "RUN"
    runner = CliRunner()
    probed = runner.invoke(cli, ["probe", "--model", str(saved_tiny_model), "--data", str(train), "--val-data", str(val),
                                 "--metric", "loss", "--out", str(out), *FAST])
    assert probed.exit_code == 0, probed.output
    args = ["ablate", str(out), "--curve", "--k", "1,3", "--controls", "2", "--items", "6", "--batch-size", "3"]
    result = runner.invoke(cli, [*args, "--value", "mean,zero", "--where", "prompt,all", "--share", "4"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "ablation_curve.json").read_text())
    assert [(c["config"]["value"], c["config"]["where"]) for c in record["curves"]] == [
        ("mean", "prompt"), ("mean", "all"), ("zero", "prompt"), ("zero", "all")]
    per_place = 1 + 2 * 2 * 3  # the prompt's two curves and everywhere's are measured apart, each with its unablated run
    assert record["sets"] == 2 * per_place and record["forwards"] == 2 * -(-per_place // 4) and record["config"]["share"] == 4
    assert result.output.count("ablation curve:") == 4 and (out / "plots" / "ablation_curve.png").is_file()
    shown = runner.invoke(cli, ["show", str(out), "--exemplars", "0"])
    assert shown.exit_code == 0 and shown.output.count("ablation curve:") == 4
    reported = runner.invoke(cli, ["report", str(out)])
    assert reported.exit_code == 0 and (out / "report.html").read_text().count("<h3>") >= 4

    # the consensus of a `skn compare` folder: its neurons, at this run's best slots
    info = json.loads((out / "run.json").read_text())
    agreed = [{"rank": 1, "layer": 1, "neuron": 2}, {"rank": 2, "layer": 0, "neuron": 5}, {"rank": 3, "layer": 1, "neuron": 0}]
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "compare.json").write_text(json.dumps({"runs": [{"name": "x", "model": info["model"]}], "consensus": agreed}))
    result = runner.invoke(cli, [*args, "--consensus", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "ablation_curve.json").read_text())
    assert "consensus" in record["ranking"] and [p["k"] for p in record["points"]] == [1, 3]
    single = runner.invoke(cli, ["ablate", str(out), "--consensus", str(tmp_path / "cmp"), "--controls", "2", "--items", "4",
                                 "--per-neuron", "0"])
    assert single.exit_code == 0, single.output
    neurons = json.loads((out / "ablation.json").read_text())["neurons"]
    assert [n.split("@")[0] for n in neurons] == ["1.2", "0.5", "1.0"]
    code, text = run_main(["ablate", str(out), "--value", "mean,zero"], capsys)
    assert code == 2 and "--curve" in text
    code, text = run_main(["ablate", str(out), "--neurons", "0.1", "--consensus", str(tmp_path / "cmp")], capsys)
    assert code == 2 and "--consensus" in text
