"""Data parallel probe and train (skn.engine.distributed): two gloo processes, spawned here as torchrun would
(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), against one process; and the merge arithmetic in one process."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from skn.engine.api import encode

from skn.engine.probe_config import ProbeConfig
from skn.inputs.data import Example
from skn.engine.distributed import Ranks, ShardStatistic
from skn.statistics.folds import assign_folds
from skn.inputs.layout import Template
from skn.inputs.metrics import metric_before_pass, parse_metric
from skn.statistics.null import NullAccumulator, NullConfig, SelectedRows
from skn.engine.probe import statistics_pass
from skn.training.prompt import init_prompt
from skn.files.rundir import PromptFile, write_prompt
from skn.statistics.stats import STAT_DTYPE, merge_parts, recentred

from helpers import ROOT, tiny_loaded, write_data

P = 3


def examples(n: int) -> list[Example]:
    rng = random.Random(2)
    return [Example("".join(rng.choice("abcde ") for _ in range(rng.randint(1, 12))), "xyz"[: rng.randint(1, 3)],
                    {"score": rng.random() * 10 + 1e6, "i": i}, f"t:{i}") for i in range(n)]


@pytest.mark.parametrize("metric, holdout", [("score", True), ("loss", False)])
def test_shards_merged_in_rank_order_equal_one_pass(metric: str, holdout: bool) -> None:
    """Three ranks' shards, each passed on its own (ShardStatistic gives the null the global numbers), merged
    as skn.engine.distributed merges them: the moments within 1e-9 of one pass, the null's co-moments too."""
    loaded = tiny_loaded("qwen2")
    data = examples(27)
    prompt = init_prompt(loaded, P, seed=0)
    rows = encode(loaded, data, Template.AUTO, P)
    spec = parse_metric(metric)
    confirm = assign_folds(data, 0.5, 0) if holdout else None
    sites = loaded.sites

    def null() -> NullAccumulator:
        return NullAccumulator(sites.num_layers, P, sites.width, NullConfig(9, 0.1, 0))

    def observed(n: NullAccumulator) -> object:
        return SelectedRows(n, ~confirm) if confirm is not None else n

    whole_null = null()
    whole = statistics_pass(loaded, prompt, rows, data, spec, 4, confirm=confirm, statistics=[observed(whole_null)])  # type: ignore[list-item]
    known = metric_before_pass(spec, data) if spec.known_before_pass else None
    passes, states = [], []
    for rank in range(3):
        ranks = Ranks(rank, 3)
        part = ranks.shard(len(rows), 4)  # 8, 8, 11 examples: the batches of one pass
        n = null()
        passes.append(statistics_pass(loaded, prompt, rows[part], data[part], spec, 4,
                                      confirm=confirm[part] if confirm is not None else None,
                                      statistics=[ShardStatistic(observed(n), int(part.start), len(rows), known)]))  # type: ignore[arg-type]
        states.append(n.state())
    if holdout:
        assert whole.folds is not None
        merged = merge_parts([p.folds.selection for p in passes])  # type: ignore[union-attr]
        reference = whole.folds.selection
    else:
        merged = merge_parts([p.stats for p in passes])
        reference = whole.stats
    assert merged.count == reference.count
    for name in ("mean_x", "m2_x", "c_xy"):
        torch.testing.assert_close(getattr(merged, name), getattr(reference, name), rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(merged.c_xy / torch.sqrt(merged.m2_x * merged.m2_y),
                               reference.c_xy / torch.sqrt(reference.m2_x * reference.m2_y), rtol=0, atol=1e-9, equal_nan=True)
    assert merged.m2_y == pytest.approx(reference.m2_y, rel=1e-10)  # the metric sits at 1e6: float64 rounding of the merge
    assert torch.equal(torch.cat([p.metric for p in passes]), whole.metric)
    if spec.known_before_pass:  # the whole-set null: the same permutations, the co-moments re-centred on rank 0's shift
        scale = float(whole_null.snapshot().comoments.abs().max())
        torch.testing.assert_close(recentred_sum(states), whole_null.snapshot().comoments, rtol=0, atol=1e-5 * scale)


def recentred_sum(states: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """The null's whole-set co-moments from the ranks' states, as NullAccumulator.merge computes them across
    processes: each re-centred on rank 0's shift, then summed."""
    base = states[0]["shift"]
    total = recentred(states[0]["comoments"], states[0]["shift"], states[0]["used"], base)
    for state in states[1:]:
        total += recentred(state["comoments"], state["shift"], state["used"], base)
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(args: list[str], world: int, cwd: Path) -> list[subprocess.Popen[str]]:
    """`python -m skn ARGS` as `world` ranks of one gloo group (world 1: a plain process)."""
    return launch_script(["-m", "skn", *args], world, cwd)


def launch_script(args: list[str], world: int, cwd: Path) -> list[subprocess.Popen[str]]:
    """`python ARGS` as `world` ranks of one gloo group, as torchrun starts them."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(cwd)}
        if world > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, *args], env=env, cwd=cwd, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return procs


def finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        out.append((p.returncode, stdout + stderr))
    return out


def r64(run: Path) -> torch.Tensor:
    t = load_file(str(run / "stats.safetensors"))
    return t["c_xy"] / torch.sqrt(t["m2_x"] * t["m2_y"])


BOTH = """
import sys
from pathlib import Path
from skn.engine.request import DataRequest, ModelRequest, ProbeRequest, TrainRequest
from skn.engine.probe_config import ProbeConfig
from skn.statistics.null import NullConfig
from skn.engine.run import run_probe, run_train

model, train, val, tmp = sys.argv[1:5]
data = DataRequest(data=(train,), val_data=(val,))
run_train(ProbeRequest(model=ModelRequest(model), data=data, out=str(Path(tmp) / "trained"), threads=1,
                       train=TrainRequest(steps=3, eval_every=2, prompt_len=4, batch_size=4)))
run_probe(ProbeRequest(model=ModelRequest(model), data=data, prompt=str(Path(tmp) / "P"), any_prompt_model=True,
                       metric="animal==dog", out=str(Path(tmp) / "probed"), threads=1,
                       probe=ProbeConfig(batch_size=4, top_k=5, holdout=0.5, null=NullConfig(19, 0.05, 0))))
"""


@pytest.mark.slow  # two processes importing torch and transformers (a minute or more on 2 shared cores)
def test_two_gloo_ranks_probe_and_train_like_one_process(tmp_path: Path, saved_tiny_model: Path) -> None:
    train, val = write_data(tmp_path / "train.jsonl", 24, 0), write_data(tmp_path / "val.jsonl", 41, 1)
    loaded = tiny_loaded("qwen2")
    start = init_prompt(loaded, 4, seed=0)
    (tmp_path / "both.py").write_text(BOTH)
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        write_prompt(tmp_path / name / "P", PromptFile(start, "tiny", "plain"))
    procs = launch_script(["both.py", str(saved_tiny_model), str(train), str(val), str(tmp_path / "two")], 2, tmp_path)
    subprocess.run([sys.executable, "both.py", str(saved_tiny_model), str(train), str(val), str(tmp_path / "one")],
                   cwd=tmp_path, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    for code, text in finish(procs):
        assert code == 0, text
    one, two = tmp_path / "one" / "probed", tmp_path / "two" / "probed"
    torch.testing.assert_close(r64(two), r64(one), rtol=0, atol=1e-9, equal_nan=True)
    assert json.loads((two / "neurons.json").read_text()) == json.loads((one / "neurons.json").read_text())
    a, b = load_file(str(one / "top_activations.safetensors")), load_file(str(two / "top_activations.safetensors"))
    assert torch.equal(a["activations"], b["activations"]) and torch.equal(a["metric"], b["metric"])
    # the null's threshold is a float32 maximum of r over cells whose float64 co-moments were merged in another
    # order: equal to a few float32 ulps, the rest of the null's record exactly
    null_one, null_two = (json.loads((d / "run.json").read_text())["null"] for d in (one, two))
    assert null_two.pop("threshold") == pytest.approx(null_one.pop("threshold"), abs=1e-6)
    passing_one, passing_two = null_one.pop("passing", {}), null_two.pop("passing", {})
    assert passing_two.pop("threshold", 0.0) == pytest.approx(passing_one.pop("threshold", 0.0), abs=1e-6)
    assert null_two == null_one and passing_two == passing_one
    p1 = load_file(str(tmp_path / "one" / "trained" / "prompt.safetensors"))["prompt"]
    p2 = load_file(str(tmp_path / "two" / "trained" / "prompt.safetensors"))["prompt"]
    torch.testing.assert_close(p2, p1, rtol=0, atol=1e-5)
    assert not torch.equal(p1, start) and not torch.equal(p2, start)  # they did train


CONTROL = """
import sys
from pathlib import Path
from skn.engine.request import DataRequest, ModelRequest, ProbeRequest
from skn.engine.probe_config import ProbeConfig
from skn.statistics.null import NullConfig
from skn.engine.run import run_probe

model, val, tmp = sys.argv[1:4]
data = DataRequest(data=(val,), val_data=(val,))
for name, metric, control in (("field", "size", "animal==dog"), ("loss", "loss", "size,instruction_tokens")):
    run_probe(ProbeRequest(model=ModelRequest(model), data=data, prompt=str(Path(tmp) / "P"), any_prompt_model=True,
                           metric=metric, out=str(Path(tmp) / name), threads=1,
                           probe=ProbeConfig(batch_size=4, top_k=5, holdout=0.5, null=NullConfig(19, 0.05, 0),
                                             control=(control,))))
"""


@pytest.mark.slow  # two processes importing torch and transformers
def test_control_under_two_gloo_ranks_is_one_process_s(tmp_path: Path, saved_tiny_model: Path) -> None:
    """--control under torchrun (refused before #31): the covariate co-moments merged across ranks give one
    process's partial r and ranking, and with the whole-set null its threshold."""
    val = write_data(tmp_path / "val.jsonl", 45, 1)
    start = init_prompt(tiny_loaded("qwen2"), 4, seed=0)
    (tmp_path / "control.py").write_text(CONTROL)
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        write_prompt(tmp_path / name / "P", PromptFile(start, "tiny", "plain"))
    procs = launch_script(["control.py", str(saved_tiny_model), str(val), str(tmp_path / "two")], 2, tmp_path)
    subprocess.run([sys.executable, "control.py", str(saved_tiny_model), str(val), str(tmp_path / "one")],
                   cwd=tmp_path, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    for code, text in finish(procs):
        assert code == 0, text
    for name in ("field", "loss"):
        one, two = tmp_path / "one" / name, tmp_path / "two" / name
        n_one, n_two = (json.loads((d / "neurons.json").read_text()) for d in (one, two))
        assert [(n["layer"], n["position"], n["neuron"]) for n in n_two] == [(n["layer"], n["position"], n["neuron"]) for n in n_one]
        for a, b in zip(n_one, n_two, strict=True):
            assert b["r"] == pytest.approx(a["r"], abs=1e-6) and b["r_held_out"] == pytest.approx(a["r_held_out"], abs=1e-6)
        torch.testing.assert_close(r64(two), r64(one), rtol=0, atol=1e-9, equal_nan=True)
        null_one, null_two = (json.loads((d / "run.json").read_text())["null"] for d in (one, two))
        if name == "field":  # the whole-set permutations are one process's (a rank draws its own batches' within-batch)
            # float32 co-moments summed around other shifts, then partialled: equal to about 1e-5
            assert null_two["threshold"] == pytest.approx(null_one["threshold"], abs=1e-4)
        else:
            assert null_two["mode"] == null_one["mode"] == "within-batch" and 0 < null_two["threshold"] < 1
        control_one, control_two = (json.loads((d / "run.json").read_text())["control"] for d in (one, two))
        assert control_two.keys() == control_one.keys()


FAILING = '''
import os

def metric(example, scores):
    if os.environ.get("RANK") == "1":
        raise RuntimeError("rank one's metric broke")
    return float(len(example.completion))
'''


@pytest.mark.slow  # two processes importing torch and transformers
def test_a_failing_rank_fails_the_run_and_leaves_no_run_directory(tmp_path: Path, saved_tiny_model: Path) -> None:
    (tmp_path / "brittle.py").write_text(FAILING)
    val = write_data(tmp_path / "val.jsonl", 16, 1)
    loaded = tiny_loaded("qwen2")
    write_prompt(tmp_path / "P", PromptFile(init_prompt(loaded, 4, seed=0), "tiny", "plain"))
    out = tmp_path / "RUN"
    results = finish(launch(["probe", "--model", str(saved_tiny_model), "--val-data", str(val), "--data", str(val),
                             "--prompt", str(tmp_path / "P"), "--any-prompt-model", "--metric", "python:brittle:metric",
                             "--batch-size", "4", "--threads", "1", "--out", str(out)], 2, tmp_path))
    assert all(code != 0 for code, _ in results), results
    assert "rank 1 of 2 failed" in results[0][1] and "rank one's metric broke" in results[0][1], results[0][1]
    assert not out.exists() or not any(out.iterdir())
