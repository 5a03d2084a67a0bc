"""The memory plan (skn.engine.memory): weights counted as a built model counts them, the plan's sums, the
dry run that loads no weight, the advice when a run does not fit, --quantize failing cleanly here,
and (slow) the estimate against the peak RSS of a real probe on a CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import skn.engine.run
from skn.cli.main import main
from skn.errors import UsageError
from skn.engine.memory import MemoryPlan, Workload, advice, check_fits, model_shape, plan
from skn.models.quantize import Quantize, missing_for

from helpers import tiny_model

WORK = Workload(batch_size=4, seq_len=50, scored_len=6, prompt_len=5, training=True, gradient_checkpointing=False,
                metric_after_pass=True)


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gpt2"])
def test_shape_counts_what_a_built_model_holds(arch: str) -> None:
    model = tiny_model(arch)
    shape = model_shape(model.config)
    unique = {id(p): p.numel() for p in model.parameters()}
    assert shape.parameters == sum(unique.values())
    assert shape.hidden == 32 and shape.layers == model.config.num_hidden_layers
    if arch != "gpt2":  # GPT-2's projections are Conv1D, not nn.Linear: nothing for bitsandbytes to shrink
        layers = model.model.layers
        linear = sum(m.weight.numel() for m in layers.modules() if isinstance(m, torch.nn.Linear))
        assert shape.linear_parameters == linear


def test_plan_sums_and_options() -> None:
    shape = model_shape(tiny_model("llama").config)
    cpu = torch.device("cpu")
    full = plan(shape, WORK, torch.float32, Quantize.NONE, cpu, None)
    assert full.weights_bytes == 4 * shape.parameters
    assert full.peak_bytes == full.weights_bytes + max(full.train_bytes, full.probe_bytes)
    assert full.train_checkpointed_bytes < full.train_plain_bytes == full.train_bytes
    assert full.stats_bytes == 3 * shape.layers * 5 * shape.width * 8 + 4 * 5 * shape.width * 8
    # the null adds its co-moments and reduction, and on a CPU its row buffer: 64 rows (the 64 MiB bound is
    # far), or as many as the examples
    row = shape.layers * 5 * shape.width
    for examples, rows in ((0, 64), (100, 64), (10, 10)):
        work = Workload(4, 50, 6, 5, True, False, True, null_permutations=9, probe_examples=examples)
        on_cpu = plan(shape, work, torch.float32, Quantize.NONE, cpu, None)
        on_gpu = plan(shape, work, torch.float32, Quantize.NONE, torch.device("cuda"), None)
        assert on_gpu.stats_bytes == full.stats_bytes + (4 * 10 + 24 * 9) * row
        assert on_cpu.stats_bytes == on_gpu.stats_bytes + rows * 4 * row
    half = plan(shape, WORK, torch.bfloat16, Quantize.NONE, cpu, None)
    assert half.weights_bytes == 2 * shape.parameters
    q8 = plan(shape, WORK, torch.bfloat16, Quantize.BIT8, cpu, None)
    q4 = plan(shape, WORK, torch.bfloat16, Quantize.BIT4, cpu, None)
    assert q4.weights_bytes < q8.weights_bytes < half.weights_bytes
    probe_only = plan(shape, Workload(4, 50, 6, 5, False, False, False), torch.float32, Quantize.NONE, cpu, None)
    assert probe_only.train_bytes == 0 and probe_only.peak_bytes == probe_only.weights_bytes + probe_only.probe_bytes
    record = json.loads(full.to_json())
    assert record["peak_bytes"] == full.peak_bytes and record["fits"] is True
    assert full.line().startswith("memory plan on cpu: peak ")


def test_folds_null_and_covariates_each_add_their_own_share() -> None:
    """With a holdout, the null and two covariates, the plan's statistics are each statistic's own share
    (skn.statistics: fold_moment_bytes, null_bytes, covariate_bytes), each pinned here to its formula."""
    shape = model_shape(tiny_model("llama").config)
    cells, rows = shape.layers * 5 * shape.width, 4 * 5 * shape.width  # L P m; B P m with B = 4, P = 5
    work = Workload(4, 50, 6, 5, True, False, True, null_permutations=9, folds=True, covariates=2, probe_examples=100)
    got = plan(shape, work, torch.float32, Quantize.NONE, torch.device("cuda"), None)
    folds = 8 * cells * 8 + rows * (8 + 4)  # both folds' sums; the batch in float64 and in fold order
    null = (4 * 10 + 24 * 9) * cells + 2 * 8 * min(cells * 9, 1 << 24) + 4 * 2 * 10 * cells  # + Freedman-Lane's rows
    covariates = 8 * 2 * cells * 2  # float64, q = 2, per fold
    assert got.null_bytes == null
    assert got.stats_bytes == folds + null + covariates


def test_advice_when_it_does_not_fit() -> None:
    shape = model_shape(tiny_model("llama").config)
    tight = plan(shape, WORK, torch.float32, Quantize.NONE, torch.device("cpu"), free_bytes=1000)
    assert not tight.fits
    text = advice(tight, WORK)
    assert "free" in text and "--batch-size" in text and "--dtype bfloat16" in text and "--quantize" in text
    check_fits(tight, WORK)  # on a CPU only a warning
    on_gpu = MemoryPlan(**{**tight.__dict__, "device": "cuda:0"})
    with pytest.raises(UsageError, match="try"):
        check_fits(on_gpu, WORK)
    roomy = plan(shape, WORK, torch.float32, Quantize.NONE, torch.device("cpu"), free_bytes=10**12)
    assert advice(roomy, WORK) == ""


def test_dry_run_prints_the_plan_and_loads_no_weight(saved_tiny_model: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dry run loaded the model")

    monkeypatch.setattr(skn.engine.run, "load_requested_model", refuse)
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", refuse)
    out = tmp_path / "run"
    base = ["probe", "--model", str(saved_tiny_model), "--train-size", "8", "--val-size", "8", "--out", str(out),
            "--dry-run"]
    main([*base, "--json"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1
    record = json.loads(printed[0])
    assert isinstance(record["peak_bytes"], int) and record["peak_bytes"] > record["weights_bytes"] > 0
    main(base)
    line = capsys.readouterr().out.strip()
    assert line.startswith("memory plan on cpu: peak ") and "\n" not in line
    assert not out.exists()


def test_quantize_fails_cleanly_without_cuda_or_bitsandbytes(saved_tiny_model: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert "CUDA" in missing_for(Quantize.BIT4, torch.device("cpu"))
    assert missing_for(Quantize.NONE, torch.device("cpu")) == ""
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", "--model", str(saved_tiny_model), "--quantize", "4bit", "--device", "cpu",
              "--train-size", "8", "--val-size", "8", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "--quantize 4bit needs bitsandbytes on CUDA; missing: a CUDA device" in errors[0]


# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child would report this process's peak
RSS_SCRIPT = """
import sys
from skn.cli.main import main
try:
    main(sys.argv[2:])
finally:
    hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
    open(sys.argv[1], "w").write(str(int(hwm.split()[1]) * 1024))
"""


def _peak_rss(tmp: Path, name: str, args: list[str]) -> tuple[int, str]:
    script = tmp / "rss.py"
    script.write_text(RSS_SCRIPT, encoding="utf-8")
    result = tmp / f"{name}.rss"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, str(script), str(result), *args], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return int(result.read_text()), done.stdout


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc/self/status (VmHWM)")
def test_plan_within_20_percent_of_measured_peak_rss(tmp_path: Path) -> None:
    """SmolLM2-135M's shape (576 hidden, 1536 neurons, 9 heads, 49152 vocabulary, tied embeddings) with
    4 of its 30 layers, random float32 weights and skn's test tokenizer (SmolLM2 itself ships here only as
    GGUF, which needs the gguf package): the peak RSS of a real probe minus that of `--dry-run` is within
    20% of the plan's peak_bytes."""
    from transformers import LlamaConfig, AutoModelForCausalLM

    from helpers import char_tokenizer

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=4,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                         rope_theta=100000.0, tie_word_embeddings=True, pad_token_id=0)
    folder = tmp_path / "smol-shape"
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)  # type: ignore[attr-defined]
    args = ["probe", "--model", str(folder), "--metric", "loss", "--steps", "1", "--batch-size", "2",
            "--train-size", "4", "--val-size", "8", "--eval-every", "1", "--threads", "2", "--out", str(tmp_path / "run")]
    dry, printed = _peak_rss(tmp_path, "dry", [*args, "--dry-run", "--json"])
    planned = json.loads(printed)["peak_bytes"]
    real, _ = _peak_rss(tmp_path, "real", args)
    assert abs((real - dry) - planned) <= 0.2 * planned, (real - dry, planned)
