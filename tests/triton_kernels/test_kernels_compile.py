"""The kernels compile for a CUDA target (sm_90) on a machine without a GPU: Triton's typing and lowering,
which the interpreter-mode tests do not exercise. In a subprocess, because the interpreter choice is made
when a kernel is decorated and tests/triton_kernels/test_kernels.py sets TRITON_INTERPRET=1 for this process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

# not imported here: importing triton in this process before TRITON_INTERPRET=1 is set would fix compiled mode
pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


@pytest.mark.slow  # over 8 s in `pytest --durations=15` (2 shared cores)
def test_every_kernel_compiles_for_sm90() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-m", "skn.kernels.compile_check"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    compiled = [line for line in done.stdout.splitlines() if line.startswith("compiled ")]
    assert len(compiled) == 9, done.stdout
