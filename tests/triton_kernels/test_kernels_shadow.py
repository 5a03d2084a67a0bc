"""The checkout's kernels/ folder (installed as skn.kernels) must not stand in for Hugging Face's `kernels` package
where the checkout's root is first on sys.path: `python -m pytest` and `python -m skn` run there, and
transformers imports `kernels` whenever that distribution is installed."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest

from helpers import ROOT

WHICH = """
import json, sys
try:
    import kernels
    out = {"file": kernels.__file__, "error": ""}
except ImportError as error:
    out = {"file": "", "error": type(error).__name__}
import skn.kernels
out["skn"] = skn.kernels.__name__
out["first"] = sys.path[0]
print(json.dumps(out))
"""


def which_kernels() -> dict[str, str]:
    # `-c` puts the working directory first on sys.path, as `python -m` does
    done = subprocess.run([sys.executable, "-c", WHICH], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, str] = json.loads(done.stdout)
    return result


def hf_kernels_installed() -> bool:
    try:
        importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_import_kernels_from_the_checkout_root_is_not_ours() -> None:
    got = which_kernels()
    assert got["first"] in ("", str(ROOT))  # the root really is first: the case this guards
    assert got["skn"] == "skn.kernels"
    ours = str(ROOT / "kernels")
    if hf_kernels_installed():
        assert got["file"] and not got["file"].startswith(ours), got
    else:
        assert got["error"] == "ModuleNotFoundError", got


@pytest.mark.skipif(not hf_kernels_installed(), reason="Hugging Face's kernels package is not installed")
def test_transformers_builds_a_model_from_the_checkout_root() -> None:
    code = ("from transformers import LlamaConfig, LlamaForCausalLM\n"
            "LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,"
            " num_attention_heads=2, vocab_size=20))\nprint('built')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "built" in done.stdout, done.stderr[-2000:]
