"""ablation.json and ablation_curve.json as typed records (skn.ablation.ablate_record): written and read back as the
same type, a bad field one RunDirError naming the file and field, older files read with defaults; the
library's `ablate_run` writes what `skn ablate` writes; `skn ablate`'s options come from the config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import pytest

from helpers import probed_tiny_run, run_main
from skn.ablation.ablate import AblationConfig
from skn.ablation.ablate_files import ABLATION_FILE, CURVE_FILE, read_ablation_run
from skn.ablation.ablate_record import parse_ablation
from skn.ablation.ablate_run import AblationRequest, ablate_run
from skn.ablation.ablate_test import DepartureTest
from skn.ablation.ablate_view import ablation_html, curve_html, describe, describe_curve
from skn.cli.ablate_cmd import ablate_command
from skn.ablation.curve_record import parse_curve
from skn.errors import RunDirError
from skn.engine.request import ModelRequest, default_of, help_of

SMALL = AblationConfig(n_controls=2, per_neuron=1, items=4, batch_size=4)
SMALL_FLAGS = ["--controls", "2", "--per-neuron", "1", "--items", "4", "--batch-size", "4"]


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A probe run of a tiny saved model (its run.json names the model, so `ablate_run` loads it)."""
    return probed_tiny_run(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def ablated(probed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run after one notebook call of `ablate_run` (one set) and one of a K curve."""
    run = tmp_path_factory.mktemp("ablated") / "R"
    shutil.copytree(probed, run)
    ablate_run(AblationRequest(run, SMALL))
    ablate_run(AblationRequest(run, SMALL, curve=True, k_grid="1,3"))
    return run


def test_the_records_are_written_and_read_back_as_the_same_type(ablated: Path) -> None:
    found = read_ablation_run(ablated)
    assert found.ablation is not None and found.curve is not None
    # the file is the record's JSON, unchanged; parsed again it is the same record
    on_disk = json.loads((ablated / ABLATION_FILE).read_text())
    assert found.ablation.to_json() == on_disk
    assert parse_ablation(ablated / ABLATION_FILE, json.loads(json.dumps(found.ablation.to_json()))) == found.ablation
    curve_disk = json.loads((ablated / CURVE_FILE).read_text())
    assert found.curve.to_json() == curve_disk
    assert parse_curve(ablated / CURVE_FILE, json.loads(json.dumps(found.curve.to_json()))) == found.curve
    assert found.ablation.config.test is DepartureTest.AUTO and found.ablation.test is not None
    assert len(found.ablation.controls) == 2 and [p.k for p in found.curve.points] == [1, 3]


def test_a_notebook_call_writes_what_the_cli_writes(probed: Path, ablated: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cli_run = tmp_path / "R"
    shutil.copytree(probed, cli_run)
    code, out = run_main(["ablate", str(cli_run), *SMALL_FLAGS], capsys)
    assert code == 0, out
    code, out = run_main(["ablate", str(cli_run), *SMALL_FLAGS, "--curve", "--k", "1,3"], capsys)
    assert code == 0, out
    for name in (ABLATION_FILE, CURVE_FILE):
        ours, theirs = (json.loads((d / name).read_text()) for d in (ablated, cli_run))
        assert {k: v for k, v in ours.items() if k != "seconds"} == {k: v for k, v in theirs.items() if k != "seconds"}
    for figure in ("ablation.png", "ablation_curve.png"):
        assert (ablated / "plots" / figure).is_file() and (cli_run / "plots" / figure).is_file()
    code, out = run_main(["plot", str(cli_run), "--out", str(tmp_path / "figs")], capsys)  # the same figures, elsewhere
    assert code == 0 and (tmp_path / "figs" / "ablation.png").is_file() and (tmp_path / "figs" / "ablation_curve.png").is_file()
    done = ablate_run(AblationRequest(cli_run, SMALL, model=ModelRequest()))
    assert done.written == (cli_run / ABLATION_FILE, cli_run / "plots" / "ablation.png") and done.ablation is not None


def _mutated(ablated: Path, tmp_path: Path, name: str, change: object) -> Path:
    run = tmp_path / "R"
    run.mkdir()
    content = json.loads((ablated / name).read_text())
    change(content)  # type: ignore[operator]
    (run / name).write_text(json.dumps(content))
    return run


def _drop(key: str) -> object:
    return lambda c: c.pop(key)


@pytest.mark.parametrize(("name", "change", "field"), [
    (ABLATION_FILE, _drop("effect"), "'effect' is missing"),
    (ABLATION_FILE, lambda c: c["controls_summary"]["loss"].update(p="small"), "'controls_summary.loss.p' must be a number"),
    (ABLATION_FILE, lambda c: c["controls"][1].update(label=3), "'controls[1].label' must be a string"),
    (ABLATION_FILE, lambda c: c["config"].update(controls="20"), "'config.controls' must be an integer"),
    (ABLATION_FILE, lambda c: c.update(test="t"), "'test' must be one of auto, empirical, log-t"),
    (CURVE_FILE, lambda c: c.update(axis="q"), "'axis' must be one of k, scale"),
    (CURVE_FILE, lambda c: c["points"][0]["band"]["loss"].update(median=[1]), "'points[0].band.loss.median' must be"),
])
def test_a_bad_field_is_one_error_naming_the_file_and_field(ablated: Path, tmp_path: Path, name: str, change: object,
                                                           field: str, capsys: pytest.CaptureFixture[str]) -> None:
    run = _mutated(ablated, tmp_path, name, change)
    with pytest.raises(RunDirError, match="field " + field.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")) as error:
        read_ablation_run(run)
    assert str(run / name) in str(error.value)


def test_a_bad_field_stops_skn_report_with_one_line(ablated: Path, probed: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "R"
    shutil.copytree(probed, run)
    content = json.loads((ablated / ABLATION_FILE).read_text())
    content["per_example"][0]["loss"] = "high"
    (run / ABLATION_FILE).write_text(json.dumps(content))
    code, out = run_main(["report", str(run)], capsys)
    lines = [line for line in out.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in out and len(lines) == 1, out
    assert "ablation.json" in out and "'per_example[0].loss'" in out


def test_an_older_file_reads_with_defaults(ablated: Path, tmp_path: Path) -> None:
    """Files from before the log-t test, --share and the holdout: no "test", "p_empirical", "p_t", "share",
    "sets", "ranked_on", "items_from", "curves"."""
    def strip(c: dict[str, object]) -> None:
        for key in ("test", "sets", "ranked_on", "items_from", "curves", "skn_version"):
            c.pop(key, None)
        c["config"].pop("test")  # type: ignore[attr-defined]
        c["config"].pop("share")  # type: ignore[attr-defined]
        points = c.get("points", [c])
        for p in points:  # type: ignore[attr-defined]
            for spread in p["controls_summary"].values():
                spread.pop("p_empirical")
                spread.pop("p_t")

    old = _mutated(ablated, tmp_path, ABLATION_FILE, strip)
    shutil.copy(ablated / CURVE_FILE, old / CURVE_FILE)
    curve = json.loads((old / CURVE_FILE).read_text())
    strip(curve)
    (old / CURVE_FILE).write_text(json.dumps(curve))
    found = read_ablation_run(old)
    assert found.ablation is not None and found.curve is not None
    record = found.ablation
    assert record.test is None and record.config.test is DepartureTest.EMPIRICAL and record.config.share == 1
    assert record.items_from == "all" and record.controls_summary.loss is not None
    assert record.controls_summary.loss.p_t is None and record.controls_summary.loss.p is not None
    assert "random controls" in describe(record) and 'id="ablation"' in ablation_html(record)
    assert found.curve.curves == () and "p from the" not in describe_curve(found.curve)
    assert curve_html(found.curve).count("<table>") == 1


def test_no_ablation_file_is_one_error(probed: Path) -> None:
    with pytest.raises(RunDirError, match="no ablation.json or ablation_curve.json"):
        read_ablation_run(probed)


FROM_CONFIG = {"top_k": (AblationRequest, "top_k"), "where": (AblationConfig, "where"), "n_controls": (AblationConfig, "n_controls"),
               "test": (AblationConfig, "test"), "per_neuron": (AblationConfig, "per_neuron"), "items": (AblationConfig, "items"),
               "seed": (AblationConfig, "seed"), "batch_size": (AblationConfig, "batch_size"), "share": (AblationConfig, "share"),
               "neurons": (AblationRequest, "neurons"), "consensus": (AblationRequest, "consensus"),
               "curve": (AblationRequest, "curve"), "k_grid": (AblationRequest, "k_grid"), "value": (AblationConfig, "value")}


def test_skn_ablate_help_shows_each_default_once_from_the_config(capsys: pytest.CaptureFixture[str]) -> None:
    params = {p.name: p for p in ablate_command.params if isinstance(p, click.Option)}
    for name, (cls, field_name) in FROM_CONFIG.items():
        option, default, text = params[name], default_of(cls, field_name), help_of(cls, field_name)
        assert text and option.help == text, name
        shown = getattr(default, "text", getattr(default, "value", default))
        assert option.is_flag if isinstance(default, bool) else option.default == shown, name
    code, out = run_main(["ablate", "--help"], capsys)
    assert code == 0
    flat = " ".join(out.split())
    for flag, shown in (("--controls", "20"), ("--per-neuron", "10"), ("--batch-size", "16"), ("--value", "mean"),
                        ("--where", "prompt"), ("--test", "auto"), ("--share", "1"), ("--top-k", "0")):
        after = flat[flat.index(f" {flag} ", flat.index("Options:")):]
        assert f"[default: {shown}]" in after[: after.index("[default:") + 40], flag
    for name, (cls, field_name) in FROM_CONFIG.items():
        assert flat.count(help_of(cls, field_name)[:30]) == 1, name
