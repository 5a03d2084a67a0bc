"""bench/replicate_paper.py --smoke: the paper's three experiments end to end on a handful of items (the
stories model stands in for SmolLM2 so it runs in seconds); skipped where ../shared is absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SHARED
from helpers import bench_script

STORIES = SHARED / "models" / "stories260K-hf"
NEEDED = (STORIES, SHARED / "data" / "hans", SHARED / "data" / "bigbench_arithmetic", SHARED / "data" / "skillmix")


def test_auroc_against_brute_force() -> None:
    import numpy as np

    script = bench_script("replicate_paper")
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 5, size=rng.integers(1, 12)).astype(float)  # ties on purpose
        b = rng.integers(0, 5, size=rng.integers(1, 12)).astype(float)
        brute = np.mean([(x > y) + 0.5 * (x == y) for x in a for y in b])
        assert abs(script.auroc(a, b) - brute) < 1e-12  # type: ignore[attr-defined]


def test_skips_cleanly_without_shared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = bench_script("replicate_paper")
    assert script.main(["--smoke", "--model", str(tmp_path / "absent"), "--runs", str(tmp_path / "runs"),  # type: ignore[attr-defined]
                        "--results", str(tmp_path / "results")]) == 0
    assert "skipped" in capsys.readouterr().out and not (tmp_path / "runs").exists()


@pytest.mark.slow  # 14 skn commands (about a minute idle; far more on a loaded machine)
@pytest.mark.skipif(not all(p.is_dir() for p in NEEDED), reason="../shared (stories model, HANS, BIG-bench, Skill-Mix) is absent")
def test_replicate_paper_smoke(tmp_path: Path) -> None:
    script = bench_script("replicate_paper")
    results = tmp_path / "results"
    model = Path("..") / "shared" / "models" / "stories260K-hf"
    assert script.main(["--smoke", "--model", str(model), "--runs", str(tmp_path / "runs"),  # type: ignore[attr-defined]
                        "--results", str(results)]) == 0
    for key in ("rq1", "rq2", "rq3"):
        text = (results / f"{key}.md").read_text(encoding="utf-8")
        assert "top-10" in text and "null threshold" in text and "AUROC" in text
    assert "Last-digit shortcut" in (results / "rq3.md").read_text(encoding="utf-8")
    assert (tmp_path / "runs" / "rq3-all" / "ablation_curve.json").is_file()
    assert any(p.name.endswith("score_histogram.png") for p in results.iterdir())
    commands = json.loads((results / "commands.json").read_text(encoding="utf-8"))
    assert commands and all(c["wall_s"] >= 0 for c in commands)
