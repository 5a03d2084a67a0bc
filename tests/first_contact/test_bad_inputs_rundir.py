"""Bad inputs around the run directory (issue #33): one run per directory at a time, one run's files per
directory, each run counted once by `skn compare`, and a killed run's directory that says what works.

Every test runs `skn` through `main()` and checks the exit code, that the message names the files at fault,
that no traceback is printed and that there is at most one `error:` line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fake_run import make_run
from helpers import ROOT, run_main, save_model, tiny_model, write_data
from skn.inputs.groups import group_summaries
from skn.files.probe_files import write_groups
from skn.files.probe_read import read_probe_run
from skn.files.rundir import CLAIM_FILE, PromptFile, write_prompt
from skn.files.run_claim import read_holder

FAST = ["--steps", "2", "--eval-every", "2", "--prompt-len", "2", "--batch-size", "8", "--top-k", "3", "--exemplars", "2"]


@dataclass(frozen=True)
class Tiny:
    model: Path
    train: Path
    val: Path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    base = tmp_path_factory.mktemp("tiny")
    model = save_model(tiny_model("qwen2"), base / "tiny-qwen2")
    return Tiny(model, write_data(base / "train.jsonl", 16, 0), write_data(base / "val.jsonl", 12, 1))


def probe(tiny: Tiny, out: Path, *extra: str) -> list[str]:
    return ["probe", "--model", str(tiny.model), "--data", str(tiny.train), "--val-data", str(tiny.val),
            "--out", str(out), *FAST, *extra]


def refused(args: list[str], capsys: pytest.CaptureFixture[str], *needles: str, code: int = 2) -> str:
    """`skn ARGS` fails with `code`, one error line naming every needle, no traceback."""
    got, output = run_main(args, capsys)
    assert got == code, output
    assert "Traceback" not in output and output.count("error:") <= 1, output
    flat = " ".join(output.split())
    for needle in needles:
        assert needle in flat, (needle, output)
    return flat


def succeeds(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code, output = run_main(args, capsys)
    assert code == 0, output
    return output


# ---------------------------------------------------------------- 1. one run per directory at a time

HOLDER = """
import sys, time
from pathlib import Path
from skn.files.run_claim import claim_run_directory
claim_run_directory(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(120)
"""


def test_a_claimed_out_is_refused_while_its_run_lives_and_taken_over_once_it_is_killed(
        tiny: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "R"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        message = refused(probe(tiny, out), capsys, f"--out {out}", "in use by another run", f"pid {holder.pid}", "started")
        assert "wait for it to end" in message
        assert sorted(p.name for p in out.iterdir()) == [CLAIM_FILE]  # the second run wrote nothing
    finally:
        holder.kill()  # kill -9: the claim file stays, its lock goes with the process
        holder.wait()
    stale = read_holder(out / CLAIM_FILE)
    assert stale is not None and stale.pid == holder.pid and not stale.alive()
    succeeds(probe(tiny, out), capsys)
    assert (out / "run.json").is_file() and not (out / CLAIM_FILE).exists()  # the claim ends with the run


def test_a_claim_in_this_process_refuses_a_second_run_and_train(tiny: Tiny, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from skn.files.run_claim import claim_run_directory

    out = tmp_path / "R"
    claim = claim_run_directory(out)
    try:
        refused(probe(tiny, out), capsys, f"pid {os.getpid()}", "in use by another run")
        refused(["train", "--model", str(tiny.model), "--data", str(tiny.train), "--out", str(out), "--steps", "1"],
                capsys, f"pid {os.getpid()}")
    finally:
        claim.release()
    assert not (out / CLAIM_FILE).exists()


def test_a_stale_claim_file_does_not_make_the_directory_look_taken(tmp_path: Path) -> None:
    from skn.files.rundir import prepare_run_directory
    from skn.files.run_claim import hold

    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "R"
    out.mkdir()
    (out / CLAIM_FILE).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": "then"}))
    with hold(out):
        assert prepare_run_directory(out) == out
        holder = read_holder(out / CLAIM_FILE)
        assert holder is not None and holder.pid == os.getpid()
    assert not (out / CLAIM_FILE).exists()


# ---------------------------------------------------------------- 2. one run's files per directory


def _with_groups(directory: Path, seed: int) -> Path:
    run = make_run(directory, seed=seed)
    write_groups(directory, group_summaries(run.top_activations, run.neurons, run.examples, ("heuristic",)), run.info.run_id)
    return directory


@pytest.fixture
def two_fake_runs(tmp_path: Path) -> tuple[Path, Path]:
    return _with_groups(tmp_path / "A", 0), _with_groups(tmp_path / "B", 1)


MIXED = ("neurons.json", "stats.safetensors", "top_activations.safetensors", "examples.jsonl", "groups.json")
VIEWERS = ("show", "plot", "report", "compare")


@pytest.mark.parametrize("viewer", VIEWERS)
@pytest.mark.parametrize("name", MIXED)
def test_a_file_of_another_run_is_refused_by_every_viewer(two_fake_runs: tuple[Path, Path], name: str, viewer: str,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = two_fake_runs
    shutil.copy(b / name, a / name)
    args = {"compare": ["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]}.get(viewer, [viewer, str(a)])
    message = refused(args, capsys, str(a / name), "not of one run" if name == "neurons.json" else "two runs")
    if name != "neurons.json":  # named beside run.json; neurons.json beside the stats its r contradicts
        assert str(a / "run.json") in message
    else:
        assert str(a / "stats.safetensors") in message
    assert not (a / "plots").exists() and not (a / "report.html").exists() and not (tmp_path / "cmp").exists()


def _rewrite_tensors(path: Path, change: dict[str, torch.Tensor] | None = None, drop_id: bool = False) -> None:
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
    tensors = load_file(str(path))
    tensors.update(change or {})
    if drop_id:
        metadata.pop("run_id", None)
    save_file(tensors, str(path), metadata=metadata)


def _as_older_skn(run: Path) -> None:
    """The run directory as an skn before run ids wrote it."""
    for name in ("stats.safetensors", "top_activations.safetensors"):
        _rewrite_tensors(run / name, drop_id=True)
    for name in ("run.json", "groups.json"):
        record = json.loads((run / name).read_text())
        record.pop("run_id")
        (run / name).write_text(json.dumps(record))
    lines = [json.loads(line) for line in (run / "examples.jsonl").read_text().splitlines()]
    (run / "examples.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "run_id"}) + "\n" for r in lines))


def test_a_run_of_an_older_skn_without_run_ids_still_shows(two_fake_runs: tuple[Path, Path],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    a, b = two_fake_runs
    _as_older_skn(a)
    assert "top 6 neurons" in " ".join(succeeds(["show", str(a)], capsys).split())
    shutil.copy(b / "groups.json", a / "groups.json")  # a file with an id among files without: two runs
    refused(["show", str(a)], capsys, str(a / "groups.json"), str(a / "run.json"), "run id none")


def test_an_older_runs_groups_of_another_run_are_refused_by_their_neurons(two_fake_runs: tuple[Path, Path],
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    a, b = two_fake_runs
    _as_older_skn(a)
    _as_older_skn(b)
    shutil.copy(b / "groups.json", a / "groups.json")  # no ids to compare: the neurons differ
    refused(["show", str(a)], capsys, str(a / "groups.json"), str(a / "neurons.json"), "not of one run")


def test_an_older_runs_examples_of_another_run_are_refused_by_their_metric(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    a = _with_groups(tmp_path / "A", 0)
    b = _with_groups(tmp_path / "B", 1)
    lines = [json.loads(line) for line in (b / "examples.jsonl").read_text().splitlines()]
    lines[4]["metric"] = 1.0 - lines[4]["metric"]  # another run's metric values
    (b / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    _as_older_skn(a)
    _as_older_skn(b)
    shutil.copy(b / "examples.jsonl", a / "examples.jsonl")
    refused(["show", str(a)], capsys, str(a / "examples.jsonl"), "example 4", str(a / "top_activations.safetensors"))


def test_run_json_sizes_and_the_stats_count_must_fit_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _with_groups(tmp_path / "A", 0)
    info = json.loads((a / "run.json").read_text())
    (a / "run.json").write_text(json.dumps({**info, "width": info["width"] + 1}))
    refused(["show", str(a)], capsys, str(a / "run.json"), "width 41", str(a / "stats.safetensors"))
    (a / "run.json").write_text(json.dumps(info))
    _rewrite_tensors(a / "stats.safetensors", {"count": torch.tensor(61)})
    refused(["show", str(a)], capsys, str(a / "stats.safetensors"), "'count' is 61", str(a / "examples.jsonl"), "60 examples")


def test_examples_of_two_runs_in_one_file_are_refused(two_fake_runs: tuple[Path, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    a, b = two_fake_runs
    mine, theirs = ((d / "examples.jsonl").read_text().splitlines() for d in (a, b))
    (a / "examples.jsonl").write_text("\n".join(mine[:30] + theirs[30:]) + "\n")
    refused(["show", str(a)], capsys, f"{a / 'examples.jsonl'}:31", "line 1", "two runs")


@pytest.fixture(scope="module")
def tiny_run(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skn.cli.main import main

    out = tmp_path_factory.mktemp("run") / "R"
    main(probe(tiny, out))
    return out


def test_ablate_refuses_a_prompt_of_another_model(tiny: Tiny, tiny_run: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "R"
    shutil.copytree(tiny_run, run)
    own = read_probe_run(run)
    assert own.info.prompt == "trained"
    prompt = load_file(str(run / "prompt.safetensors"))["prompt"]
    write_prompt(run, PromptFile(prompt, "some/other-model", "plain"))  # same shape: only its model differs
    ablate = ["ablate", str(run), "--controls", "2", "--per-neuron", "1", "--items", "4"]
    refused(ablate, capsys, str(run / "prompt.safetensors"), "some/other-model", str(run / "run.json"), str(tiny.model))
    assert not (run / "ablation.json").exists()


def test_ablate_refuses_files_of_two_runs_before_loading_the_model(two_fake_runs: tuple[Path, Path],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    a, b = two_fake_runs  # run.json names ../shared/models/stories260K-hf: the run is refused before it loads
    shutil.copy(b / "stats.safetensors", a / "stats.safetensors")
    refused(["ablate", str(a)], capsys, str(a / "stats.safetensors"), str(a / "run.json"), "two runs")


# ---------------------------------------------------------------- 3. each run counts once in `skn compare`


@pytest.fixture
def seeds_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "S"
    for seed in (0, 1, 2):
        make_run(folder / f"seed-{seed}", seed=seed)
    return folder


def test_compare_refuses_a_run_named_itself_and_through_its_seeds_folder(seeds_folder: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    sub = seeds_folder / "seed-2"
    refused(["compare", str(seeds_folder), str(sub), "--out", str(tmp_path / "cmp")], capsys,
            str(sub), f"from {seeds_folder}", "counts once")
    refused(["compare", str(seeds_folder), str(seeds_folder / ".." / "S"), "--out", str(tmp_path / "cmp")], capsys,
            "counts once")
    assert not (tmp_path / "cmp").exists()
    succeeds(["compare", str(seeds_folder), "--out", str(tmp_path / "cmp")], capsys)
    runs = json.loads((tmp_path / "cmp" / "compare.json").read_text())["runs"]
    assert [r["name"] for r in runs] == [str(seeds_folder / f"seed-{s}") for s in (0, 1, 2)]


def test_compare_refuses_two_copies_of_one_run(seeds_folder: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(seeds_folder / "seed-0", copy)
    refused(["compare", str(seeds_folder / "seed-0"), str(seeds_folder / "seed-1"), str(copy), "--out", str(tmp_path / "c")],
            capsys, str(copy), str(seeds_folder / "seed-0"), "copies of one run")


# ---------------------------------------------------------------- 4. after a kill during the write, what works


class Killed(BaseException):
    """Stands for a kill -9 between two writes (nothing of skn's handles it)."""


def _killed_while_writing(tiny: Tiny, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real probe whose process dies after examples.jsonl, before run.json (as test_bad_inputs' killed_run);
    the claim it leaves is stale (a dead pid)."""
    import skn.files.probe_files
    from skn.cli.main import main

    real = skn.files.probe_files.write_examples

    def dying(*args: object, **kwargs: object) -> None:
        real(*args, **kwargs)  # type: ignore[arg-type]
        raise Killed

    monkeypatch.setattr(skn.files.probe_files, "write_examples", dying)
    with pytest.raises(Killed):
        main(probe(tiny, out))
    monkeypatch.undo()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / CLAIM_FILE).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": "then"}))
    assert (out / "examples.jsonl").is_file() and (out / "checkpoint.safetensors").is_file()
    assert not (out / "run.json").exists()


def test_resume_after_a_kill_during_the_write_recomputes_the_run(tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "R"
    _killed_while_writing(tiny, out, monkeypatch)
    prompt = load_file(str(out / "prompt.safetensors"))["prompt"]
    message = refused(probe(tiny, out), capsys, "not empty", "--overwrite", "--resume")
    assert "--resume to continue it" in message  # the flag it names ...
    succeeds(probe(tiny, out, "--resume"), capsys)  # ... works
    assert torch.equal(load_file(str(out / "prompt.safetensors"))["prompt"], prompt)  # the training's prompt, kept
    run = read_probe_run(out)
    assert len(run.examples) == 12 and run.info.run_id and not (out / CLAIM_FILE).exists()
    succeeds(["show", str(out)], capsys)


def test_resume_where_there_is_nothing_to_resume_names_what_works(tiny: Tiny, tiny_run: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    killed = tmp_path / "K"  # files of a killed run, no checkpoint: --resume is neither offered nor taken
    make_run(killed)
    (killed / "run.json").unlink()
    message = refused(probe(tiny, killed), capsys, "not empty", "--overwrite")
    assert "--resume" not in message
    message = refused(probe(tiny, killed, "--resume"), capsys, "no checkpoint to resume from", "--overwrite")
    assert "--resume to continue" not in message
    finished = tmp_path / "F"  # a finished run keeps its training checkpoint, but there is nothing to resume
    shutil.copytree(tiny_run, finished)
    message = refused(probe(tiny, finished), capsys, "not empty", "--overwrite")
    assert "--resume" not in message
    message = refused(probe(tiny, finished, "--resume"), capsys, "finished run", "--overwrite")
    assert "--resume to continue" not in message
    assert (finished / "run.json").read_bytes() == (tiny_run / "run.json").read_bytes()  # nothing lost
