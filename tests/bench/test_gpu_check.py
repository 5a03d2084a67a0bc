"""`bench/gpu_check.py --dry-run` runs the GPU check's own code paths on the CPU (tiny shapes, Triton's
interpreter) and writes its JSON and markdown table: what the GPU run will do is exercised in CI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from helpers import bench_script


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_gpu_check_dry_run(tmp_path: Path) -> None:
    module = bench_script("gpu_check")
    assert module.main(["--out", str(tmp_path), "--dry-run"]) == 0
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["dry_run"] is True and summary["ok"] is True
    records = summary["records"]
    kernels = {(r["name"], r["dtype"]) for r in records if r["section"] == "kernel"}
    assert kernels == {(m, d) for m in ("post-pass", "gathered", "gated") for d in ("fp32", "bf16", "fp16")}
    assert all(r["max_rel_diff"] <= r["bound"] for r in records if r["section"] == "kernel")
    assert {r["section"] for r in records} == {"kernel", "model", "memory", "quantize"}
    fused = [r for r in records if r["name"].startswith("--fused-mlp")]
    assert len(fused) == 2 and all(r["max_corr_diff"] <= 1e-6 for r in fused)
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.count("\n| kernel |") == 9 and "| memory |" in table
