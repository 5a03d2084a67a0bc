"""Resumable probe passes (skn.engine.pass_checkpoint): an interrupted pass resumed from its checkpoint ends with
the numbers of an uninterrupted one, bitwise (same batches); a kill -9 leaves a readable checkpoint."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import Tensor

from skn.engine.api import encode, probe

from skn.engine.probe_config import ProbeConfig
from skn.inputs.data import Example
from skn.errors import RunDirError, UsageError
from skn.inputs.metrics import parse_metric
from skn.statistics.null import NullConfig
from skn.engine.pass_checkpoint import PASS_CHECKPOINT_FILE, PassCheckpoint
from skn.engine.probe import statistics_pass
from skn.training.prompt import init_prompt
from skn.files.result import ProbeResult

from helpers import ROOT, Interrupted, StopAfter, tiny_loaded

P = 3


def examples(n: int, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    return [Example("".join(rng.choice("abcde ") for _ in range(rng.randint(1, 12))),
                    "".join(rng.choice("xyz") for _ in range(rng.randint(1, 4))),
                    {"score": rng.random() * 1e3 + 1e6, "i": i}, f"t:{i}") for i in range(n)]


def same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and bool(torch.equal(torch.nan_to_num(a, nan=7.0), torch.nan_to_num(b, nan=7.0)))


def assert_same_result(a: ProbeResult, b: ProbeResult) -> None:
    assert same(a.corr, b.corr)
    assert same(a.metric, b.metric)
    for name in ("mean_x", "m2_x", "c_xy"):
        assert torch.equal(getattr(a.stats, name), getattr(b.stats, name)), name
    assert (a.stats.count, a.stats.mean_y, a.stats.m2_y) == (b.stats.count, b.stats.mean_y, b.stats.m2_y)
    assert a.neurons == b.neurons
    assert same(a.top_activations, b.top_activations)
    assert (a.null is None) == (b.null is None)
    if a.null is not None and b.null is not None:
        assert torch.equal(a.null.max_abs_r, b.null.max_abs_r)
        assert a.null.p_adjusted == b.null.p_adjusted
    if a.holdout is not None and b.holdout is not None:
        assert a.holdout.summary() == b.holdout.summary()


@pytest.mark.parametrize("metric, holdout", [("score", 0.5), ("loss", 0.0), ("loss", 0.5)])
def test_interrupted_pass_resumes_bitwise(tmp_path: Path, metric: str, holdout: float) -> None:
    loaded = tiny_loaded("qwen2")
    data = examples(30)
    prompt = init_prompt(loaded, P, seed=0)
    config = ProbeConfig(batch_size=4, top_k=5, holdout=holdout, null=NullConfig(19, 0.05, 3), checkpoint_every=2)
    (tmp_path / "whole").mkdir()  # the same command uninterrupted (checkpointed too: its exemplars then come
    whole = probe(loaded, prompt, data, metric, config, out=tmp_path / "whole")  # from a second pass, as a resumed run's)
    with pytest.raises(Interrupted):  # in batch 5 (examples 16..19): the checkpoint after batch 4 holds 16
        probe(loaded, prompt, data, metric, config, StopAfter(18), out=tmp_path)  # type: ignore[arg-type]
    assert (tmp_path / PASS_CHECKPOINT_FILE).is_file()
    resumed = probe(loaded, prompt, data, metric, config, out=tmp_path, resume=True)
    assert_same_result(whole, resumed)


def test_resume_of_another_pass_is_refused(tmp_path: Path) -> None:
    loaded = tiny_loaded("qwen2")
    data = examples(12)
    prompt = init_prompt(loaded, P, seed=0)
    config = ProbeConfig(batch_size=4, null=NullConfig(0), holdout=0.0, checkpoint_every=1)
    with pytest.raises(Interrupted):
        probe(loaded, prompt, data, "loss", config, StopAfter(9), out=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(RunDirError, match="checkpoint of another pass"):
        probe(loaded, prompt, data, "confidence", config, out=tmp_path, resume=True)


def test_observer_without_state_is_refused(tmp_path: Path) -> None:
    class Plain:
        def begin(self, count: int, known: Tensor | None) -> None: ...

        def add_layer(self, layer: int, first: int, acts: Tensor, y: Tensor) -> None: ...

        def finish_batch(self, first: int, y: Tensor) -> None: ...

    loaded = tiny_loaded("qwen2")
    data = examples(8)
    prompt = init_prompt(loaded, P, seed=0)
    rows = encode(loaded, data, ProbeConfig().template, P)
    with pytest.raises(UsageError, match="Plain cannot be checkpointed"):
        statistics_pass(loaded, prompt, rows, data, parse_metric("loss"), 4, statistics=[Plain()],
                        checkpoint=PassCheckpoint(tmp_path, 1))


KILLER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import skn.files.rundir
    from helpers import tiny_loaded
    from skn.engine.api import probe
    from skn.engine.probe_config import ProbeConfig
    from skn.statistics.null import NullConfig
    from skn.training.prompt import init_prompt
    from test_data_for_kill import data
    calls = [0]
    real_replace = os.replace

    def dying_replace(src, dst):  # the third checkpoint: killed after its temporary file, before the rename
        if str(dst).endswith({name!r}):
            calls[0] += 1
            if calls[0] == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)

    skn.files.rundir.os.replace = dying_replace
    loaded = tiny_loaded("qwen2")
    config = ProbeConfig(batch_size=4, top_k=5, holdout=0.0, null=NullConfig(19, 0.05, 3), checkpoint_every=1)
    probe(loaded, init_prompt(loaded, 3, seed=0), data(), "loss", config, out=__import__("pathlib").Path(sys.argv[1]))
""")


@pytest.mark.slow  # a subprocess importing torch and transformers (~5 s on 2 shared cores)
def test_kill_9_mid_write_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    helper = tmp_path / "test_data_for_kill.py"
    helper.write_text(f"import sys\nsys.path.insert(0, {str(ROOT / 'tests' / 'engine')!r})\n"
                      "from test_pass_checkpoint import examples\n\ndef data():\n    return examples(30)\n")
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(tests=str(ROOT / "tests"), name=PASS_CHECKPOINT_FILE))
    out = tmp_path / "RUN"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT / 'tests'}"}
    done = subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr
    assert (out / PASS_CHECKPOINT_FILE).is_file()
    assert any(p.name.endswith(".tmp") for p in out.iterdir())  # the third one never got its name
    loaded = tiny_loaded("qwen2")
    prompt = init_prompt(loaded, 3, seed=0)
    config = ProbeConfig(batch_size=4, top_k=5, holdout=0.0, null=NullConfig(19, 0.05, 3), checkpoint_every=1)
    resumed = probe(loaded, prompt, examples(30), "loss", config, out=out, resume=True)
    (tmp_path / "whole").mkdir()  # uninterrupted, checkpointed too (its exemplars from a second pass, as the resumed run's)
    assert_same_result(probe(loaded, prompt, examples(30), "loss", config, out=tmp_path / "whole"), resumed)


@pytest.mark.slow  # two CLI runs with training (~20 s on 2 shared cores)
def test_cli_checkpoint_every_leaves_a_complete_run(tmp_path: Path, saved_tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from helpers import FAST, run_main, write_data

    train, val = write_data(tmp_path / "train.jsonl", 16, 0), write_data(tmp_path / "val.jsonl", 12, 1)
    out = tmp_path / "RUN"
    code, text = run_main(["probe", "--model", str(saved_tiny_model), "--data", str(train), "--val-data", str(val),
                           "--metric", "animal==dog", "--null", "19", "--checkpoint-every", "1", "--out", str(out), *FAST], capsys)
    assert code == 0, text
    assert (out / "run.json").is_file()
    assert not (out / PASS_CHECKPOINT_FILE).exists()  # the run is complete: nothing to resume
    code, text = run_main(["probe", "--model", str(saved_tiny_model), "--data", str(train), "--val-data", str(val),
                           "--checkpoint-every", "-1", "--out", str(tmp_path / "R2"), *FAST], capsys)
    assert code != 0 and "--checkpoint-every must not be negative" in text


@pytest.mark.slow  # three runs with training on the tiny model
def test_run_probe_resume_continues_the_pass_after_the_training(tmp_path: Path, saved_tiny_model: Path) -> None:
    """skn probe --resume through the library's run: the training is found complete, the pass continues."""
    from dataclasses import replace

    from safetensors.torch import load_file

    from skn.engine.request import DataRequest, ModelRequest, ProbeRequest, TrainRequest
    from skn.engine.run import run_probe

    from helpers import write_data

    train, val = write_data(tmp_path / "train.jsonl", 16, 0), write_data(tmp_path / "val.jsonl", 20, 1)
    request = ProbeRequest(model=ModelRequest(str(saved_tiny_model)), data=DataRequest(data=(str(train),), val_data=(str(val),)),
                           train=TrainRequest(steps=2, eval_every=2, prompt_len=3, batch_size=4), metric="loss",
                           probe=ProbeConfig(batch_size=4, top_k=5, null=NullConfig(19, 0.05, 0), checkpoint_every=1))
    whole = run_probe(replace(request, out=str(tmp_path / "A")))
    with pytest.raises(Interrupted):
        run_probe(replace(request, out=str(tmp_path / "B")), StopAfter(14))  # type: ignore[arg-type]
    assert (tmp_path / "B" / PASS_CHECKPOINT_FILE).is_file() and not (tmp_path / "B" / "run.json").exists()
    resumed = run_probe(replace(request, out=str(tmp_path / "B"), train=replace(request.train, resume=True)))
    assert_same_result(whole, resumed)
    assert not (tmp_path / "B" / PASS_CHECKPOINT_FILE).exists()
    a, b = load_file(str(tmp_path / "A" / "stats.safetensors")), load_file(str(tmp_path / "B" / "stats.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in ("mean_x", "m2_x", "c_xy"))
