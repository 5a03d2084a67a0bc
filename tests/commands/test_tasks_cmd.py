"""`skn tasks` through the real entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from skn.cli.main import main
from skn.tasks.arithmetic import load_bigbench


def test_lists_tasks(capsys: pytest.CaptureFixture[str]) -> None:
    main(["tasks"])
    out = capsys.readouterr().out
    for text in ("hans", "arithmetic", "skillmix", "heuristic==lexical_overlap", "loss"):
        assert text in out


def test_shows_examples_and_writes_arithmetic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["tasks", "skillmix", "--show", "2"])
    out = capsys.readouterr().out
    assert "Question: " in out and "skill" in out
    main(["tasks", "--write-arithmetic", str(tmp_path), "--per-subtask", "3", "--seed", "2"])
    assert len(load_bigbench(tmp_path)) == 20 * 3


def test_unknown_task_is_one_red_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["tasks", "rq9"])
    assert exit_info.value.code == 2
    assert "unknown task 'rq9'" in capsys.readouterr().err
