"""`skn ablate` end to end on a tiny saved model: the file, the table, `skn show`, the report, the figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from skn.ablate_view import ablation_figure, effect_rows
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
    assert [r.measure for r in effect_rows(record)] == ["loss", "metric", "accuracy"]
    assert record["alternative_rows"] == 20 and len(record["per_example"]) == 10
    assert (out / "plots" / "ablation.png").is_file()
    gids = {a.get_gid() for ax in ablation_figure(record).axes for a in (*ax.lines, *ax.patches)}
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
