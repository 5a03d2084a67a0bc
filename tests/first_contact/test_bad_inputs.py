"""The bad-input matrix (issue #16): a row per case a hostile new user brings.

Every row runs `skn` through `main()` and checks the exit code, that the message names the file, line,
field or flag at fault, that no traceback is printed and that there is at most one `error:` line;
rows that touch run directories also check that nothing already computed is lost and that what
`show` prints belongs to one run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from helpers import VOCAB, animal_data, model_folders
from fake_run import make_run
from helpers import run_main
from skn.cli.main import main

FAST = ["--steps", "2", "--eval-every", "2", "--prompt-len", "2", "--batch-size", "8", "--top-k", "3", "--exemplars", "2"]
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Ctx:
    model: Path
    pad_model: Path
    train: Path
    val: Path
    run: Path  # a finished probe run of `model` (group-by animal, with report and plots)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    base = tmp_path_factory.mktemp("matrix")
    model, pad_model = model_folders(base)
    train, val = animal_data(base / "train.jsonl", 16, 0), animal_data(base / "val.jsonl", 12, 1)
    run = base / "RUN"
    main(["probe", "--model", str(model), "--data", str(train), "--val-data", str(val), "--group-by", "animal",
          "--report", "--out", str(run), *FAST])
    main_plot = subprocess.run([sys.executable, "-c", "from skn.cli.main import main; main()", "plot", str(run)],
                               capture_output=True, text=True)
    assert main_plot.returncode == 0, main_plot.stderr
    return Ctx(model, pad_model, train, val, run)


Args = Callable[[Ctx, Path], list[str]]
Hook = Callable[[Ctx, Path], None]
Check = Callable[[Ctx, Path, str], None]


@dataclass(frozen=True)
class Case:
    name: str
    args: Args
    code: int
    needles: tuple[str, ...] = ()
    prepare: Hook | None = None
    check: Check | None = None
    env: dict[str, str] = field(default_factory=dict)


def probe(ctx: Ctx, tmp: Path, *extra: str, val: Path | None = None, out: str = "R") -> list[str]:
    return ["probe", "--model", str(ctx.model), "--data", str(ctx.train), "--val-data", str(val or ctx.val),
            "--out", str(tmp / out), *FAST, *extra]


def copy_run(ctx: Ctx, tmp: Path) -> None:
    shutil.copytree(ctx.run, tmp / "R")


def fake(tmp: Path, **kwargs: object) -> Path:
    make_run(tmp / "F", **kwargs)  # type: ignore[arg-type]
    return tmp / "F"


def data_file(name: str, content: bytes) -> Hook:
    def hook(ctx: Ctx, tmp: Path) -> None:
        (tmp / name).write_bytes(content)
    return hook


def damage(name: str, change: Callable[[Path], None]) -> Hook:
    def hook(ctx: Ctx, tmp: Path) -> None:
        change(fake(tmp) / name)
    return hook


def tensors_edit(edit: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        from safetensors.torch import load_file, save_file
        tensors = load_file(str(path))
        edit(tensors)
        save_file(tensors, str(path))
    return change


def unchanged_run(ctx: Ctx, tmp: Path, output: str) -> None:
    """Nothing the finished run computed is lost, and `show` prints that one run."""
    for name in ("run.json", "neurons.json", "examples.jsonl", "prompt.safetensors", "groups.json"):
        assert (tmp / "R" / name).read_bytes() == (ctx.run / name).read_bytes(), name


def shows(ctx: Ctx, tmp: Path, *needles: str) -> str:
    done = subprocess.run([sys.executable, "-c", "from skn.cli.main import main; main()", "show", str(tmp / "R")],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    for needle in needles:
        assert needle in done.stdout + done.stderr, (needle, done.stdout + done.stderr)
    assert "Traceback" not in done.stderr
    return done.stdout + done.stderr


def no_prompt_trained(ctx: Ctx, tmp: Path, output: str) -> None:
    assert not (tmp / "R" / "prompt.safetensors").exists(), "failed after training instead of before"


def write_metric_module(body: str) -> Hook:
    def hook(ctx: Ctx, tmp: Path) -> None:
        (tmp / "mymetric.py").write_text(body)
        os.chdir(tmp)
    return hook


def checkpointed(ctx: Ctx, tmp: Path) -> None:
    main(["train", "--model", str(ctx.model), "--data", str(ctx.train), "--val-data", str(ctx.val),
          "--out", str(tmp / "R"), "--steps", "2", "--eval-every", "1", "--prompt-len", "2"])
    assert (tmp / "R" / "checkpoint.safetensors").is_file()


def resume(ctx: Ctx, tmp: Path, *extra: str, model: Path | None = None, data: Path | None = None) -> list[str]:
    return ["train", "--model", str(model or ctx.model), "--data", str(data or ctx.train), "--val-data", str(ctx.val),
            "--out", str(tmp / "R"), "--steps", "4", "--eval-every", "1", "--prompt-len", "2", "--resume", *extra]


def other_data(ctx: Ctx, tmp: Path) -> None:
    checkpointed(ctx, tmp)
    animal_data(tmp / "other.jsonl", 16, 2)


def foreign_prompt(ctx: Ctx, tmp: Path) -> None:
    from skn.files.rundir import PromptFile, write_prompt
    (tmp / "P").mkdir()
    write_prompt(tmp / "P", PromptFile(torch.zeros(2, 32), "some/other-model", "plain"))


def narrow_prompt(ctx: Ctx, tmp: Path) -> None:
    from skn.files.rundir import PromptFile, write_prompt
    (tmp / "P").mkdir()
    write_prompt(tmp / "P", PromptFile(torch.zeros(2, 16), str(ctx.model), "plain"))


def killed_run(ctx: Ctx, tmp: Path) -> None:
    """A real kill -9 between two writes of a probe run (after the stats, before run.json)."""
    script = (
        "import os, signal, sys; sys.path.insert(0, 'tests')\n"
        "import skn.files.probe_files as rd\n"
        "from fake_run import make_run\n"
        "real = rd.write_examples\n"
        "def dying(*a, **k):\n"
        "    real(*a, **k); os.kill(os.getpid(), signal.SIGKILL)\n"
        "rd.write_examples = dying\n"
        f"make_run(__import__('pathlib').Path({str(tmp / 'R')!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert (tmp / "R" / "stats.safetensors").is_file() and not (tmp / "R" / "run.json").exists()


def stage_bug(ctx: Ctx, tmp: Path) -> None:
    import skn.engine.run
    def broken(*args: object, **kwargs: object) -> object:
        raise ZeroDivisionError("a bug in the pass")
    pytest.MonkeyPatch().setattr(skn.engine.run, "probe", broken)  # undone by the autouse fixture below


def error_log_written(ctx: Ctx, tmp: Path, output: str) -> None:
    log = (tmp / "R" / "error.log").read_text()
    assert "ZeroDivisionError" in log and "Traceback" in log


CASES = [
    # 1. user text is never Rich markup
    Case("inst-chat-data", lambda c, t: probe(c, t, val=t / "inst.jsonl"), 0, ("[INST]", "[/INST]"),
         prepare=data_file("inst.jsonl", "".join(json.dumps({"instruction": f"[INST] hi [b]{i}[/b] [/INST]", "completion": " ok"})
                                                 + "\n" for i in range(12)).encode()),
         check=lambda c, t, o: (shows(c, t, "[INST]", "[/INST]", "[b]") and None),
         env={"COLUMNS": "200"}),
    Case("markup-in-error", lambda c, t: probe(c, t, "--metric", "python:[/x]:f"), 2, ("python:[/x]:f",)),
    Case("markup-in-out-path", lambda c, t: probe(c, t, out="R[/y]"), 0, ("R[/y]",)),
    Case("hf-emoji-spec", lambda c, t: ["probe", "--model", str(c.model), "--data", "hf:x:", "--out", str(t / "R")], 2, ("hf:x:",)),
    Case("metric-label-brackets", lambda c, t: probe(c, t, "--metric", "label==[b]", val=t / "lab.jsonl"), 2, ("label==[b]",),
         prepare=lambda c, t: (animal_data(t / "lab.jsonl", 12, 1, lambda i: {"label": "x"}) and None)),
    # 2. a pad id beyond the vocabulary
    Case("pad-beyond-vocab-train", lambda c, t: [*probe(c, t)[:2], str(c.pad_model), *probe(c, t)[3:]], 0, ("top 3 neurons",)),
    Case("pad-beyond-vocab-prompt-label", lambda c, t: [*probe(c, t)[:2], str(c.pad_model), *probe(c, t)[3:],
                                                        "--prompt", str(c.run), "--metric", "animal==dog", "--batch-size", "1",
                                                        "--any-prompt-model"], 0, ("top 3 neurons",)),
    # 3. one run per directory
    Case("reuse-out-refused", lambda c, t: probe(c, t), 2, ("not empty", "--overwrite"), prepare=copy_run, check=unchanged_run),
    Case("overwrite-clears-stale", lambda c, t: probe(c, t, "--overwrite"), 0, ("top 3 neurons",), prepare=copy_run,
         check=lambda c, t, o: [not (t / "R" / n).exists() or pytest.fail(n) for n in ("groups.json", "report.html", "plots")] and None),
    Case("failing-probe-in-used-dir", lambda c, t: probe(c, t, "--metric", "nofield==1"), 2, ("nofield",), prepare=copy_run,
         check=unchanged_run),
    Case("kill-9-then-show", lambda c, t: ["show", str(t / "R")], 2, ("missing run.json",), prepare=killed_run),
    Case("kill-9-then-reuse", lambda c, t: probe(c, t), 2, ("not empty",), prepare=killed_run),
    Case("kill-9-then-overwrite", lambda c, t: probe(c, t, "--overwrite"), 0, ("top 3 neurons",), prepare=killed_run,
         check=lambda c, t, o: (not list((t / "R").glob(".*.tmp")) or pytest.fail("tmp left")) and None),
    Case("out-is-a-file", lambda c, t: probe(c, t, out="afile"), 2, ("afile", "not a directory"),
         prepare=data_file("afile", b"x")),
    Case("out-under-a-file", lambda c, t: probe(c, t, out="afile/R"), 2, ("afile/R",), prepare=data_file("afile", b"x")),
    Case("out-in-proc", lambda c, t: ["probe", "--model", str(c.model), "--data", str(c.train), "--val-data", str(c.val),
                                      "--out", "/proc/skn-run", *FAST], 2, ("/proc/skn-run",)),
    # 4. diverged training and useless correlations
    Case("nan-training", lambda c, t: probe(c, t, "--lr", "1e20", "--steps", "4", "--eval-every", "1"), 2, ("training diverged", "--lr"),
         check=lambda c, t, o: (not (t / "R" / "run.json").exists() or pytest.fail("reported as a run")) and None),
    Case("metric-overflow", lambda c, t: probe(c, t, "--metric", "big", val=t / "big.jsonl"), 2, ("overflows",),
         prepare=lambda c, t: (animal_data(t / "big.jsonl", 12, 1, lambda i: {"big": (1 + i) * 1e200}) and None),
         check=lambda c, t, o: (json.loads((t / "R" / "examples.jsonl").read_text().splitlines()[0])["metric"] and None)),
    # 5. found before training
    Case("python-metric-missing-module", lambda c, t: probe(c, t, "--metric", "python:nosuchmod:f"), 2, ("nosuchmod",),
         check=no_prompt_trained),
    Case("python-metric-missing-function", lambda c, t: probe(c, t, "--metric", "python:mymetric:nofn"), 2, ("nofn",),
         prepare=write_metric_module("def f(example, outputs):\n    return outputs.loss\n"), check=no_prompt_trained),
    Case("python-metric-sys-exit", lambda c, t: probe(c, t, "--metric", "python:mymetric:f"), 2, ("SystemExit",),
         prepare=write_metric_module("import sys\ndef f(example, outputs):\n    sys.exit(0)\n")),
    Case("python-metric-import-exit", lambda c, t: probe(c, t, "--metric", "python:mymetric:f"), 2, ("mymetric",),
         prepare=write_metric_module("import sys\nsys.exit(0)\n"), check=no_prompt_trained),
    # every example fails; the one named is the first of the pass's order (skn.inputs.example_order), not of the file
    Case("python-metric-returns-text", lambda c, t: probe(c, t, "--metric", "python:mymetric:f"), 2,
         ("val.jsonl:", "python:mymetric:f failed"),
         prepare=write_metric_module("def f(example, outputs):\n    return 'high'\n")),
    Case("two-val-examples", lambda c, t: probe(c, t, val=t / "two.jsonl"), 2, ("--val-data", "at least 3"),
         prepare=lambda c, t: (animal_data(t / "two.jsonl", 2, 1) and None), check=no_prompt_trained),
    Case("triton-without-cuda", lambda c, t: probe(c, t, "--backend", "triton", "--device", "cpu"), 2, ("--backend triton",),
         env={"TRITON_INTERPRET": "0"}, check=no_prompt_trained),
    Case("lr-negative", lambda c, t: probe(c, t, "--lr", "-1"), 2, ("--lr",)),
    Case("lr-nan", lambda c, t: probe(c, t, "--lr", "nan"), 2, ("--lr",)),
    Case("epochs-negative", lambda c, t: probe(c, t, "--epochs", "-1"), 2, ("--epochs",)),
    Case("steps-zero", lambda c, t: probe(c, t, "--steps", "0"), 2, ("--steps",)),
    Case("threads-negative", lambda c, t: probe(c, t, "--threads", "-1"), 2, ("--threads",)),
    Case("top-k-zero", lambda c, t: probe(c, t, "--top-k", "0"), 2, ("--top-k",)),
    Case("group-by-missing", lambda c, t: probe(c, t, "--group-by", "colour"), 2, ("colour",), check=no_prompt_trained),
    Case("metric-field-missing", lambda c, t: probe(c, t, "--metric", "colour==red"), 2, ("val.jsonl:1", "colour"),
         check=no_prompt_trained),
    Case("metric-not-a-number", lambda c, t: probe(c, t, "--metric", "animal"), 2, ("val.jsonl:1", "animal")),
    Case("metric-constant", lambda c, t: probe(c, t, "--metric", "animal==fish"), 2, ("constant",)),
    Case("metric-python-bad-form", lambda c, t: probe(c, t, "--metric", "python:x"), 2, ("python:MODULE:FUNCTION",)),
    # 6. resume
    Case("resume-other-lr", lambda c, t: resume(c, t, "--lr", "0.1"), 2, ("another lr",), prepare=checkpointed),
    Case("resume-other-data", lambda c, t: resume(c, t, data=t / "other.jsonl"), 2, ("another training data",), prepare=other_data),
    Case("resume-other-model", lambda c, t: resume(c, t, model=c.pad_model), 2, ("another model",), prepare=checkpointed),
    Case("resume-other-prompt-len", lambda c, t: [*resume(c, t)[:-1], "--prompt-len", "3", "--resume"], 2, ("prompt_len",),
         prepare=checkpointed),
    Case("resume-truncated", lambda c, t: resume(c, t), 2, ("checkpoint.safetensors", "not a readable"),
         prepare=lambda c, t: (checkpointed(c, t), (t / "R" / "checkpoint.safetensors").write_bytes(
             (t / "R" / "checkpoint.safetensors").read_bytes()[:100])) and None),
    Case("resume-nothing", lambda c, t: resume(c, t), 2, ("nothing to resume",)),
    Case("resume-ok", lambda c, t: resume(c, t), 0, ("best validation loss",), prepare=checkpointed),
    # 7. unreadable input, damaged runs, view commands
    Case("utf16-data", lambda c, t: probe(c, t, val=t / "u16.jsonl"), 2, ("u16.jsonl:1", "UTF-16"),
         prepare=data_file("u16.jsonl", '{"instruction": "a", "completion": "b"}\n'.encode("utf-16"))),
    Case("latin1-data-line-3", lambda c, t: probe(c, t, val=t / "l1.jsonl"), 2, ("l1.jsonl:3", "UTF-8"),
         prepare=data_file("l1.jsonl", b'{"instruction": "a", "completion": "b"}\n' * 2 + b'{"instruction": "caf\xe9", "completion": "b"}\n')),
    Case("csv-with-bom", lambda c, t: probe(c, t, val=t / "bom.csv"), 0, ("top 3 neurons",),
         prepare=data_file("bom.csv", b"\xef\xbb\xbfinstruction,completion\n" + b"".join(b"the cat %d,ok\n" % i for i in range(12)))),
    Case("json-column", lambda c, t: probe(c, t, val=t / "col.jsonl"), 2, ("col.jsonl:2", "column 48"),
         prepare=data_file("col.jsonl", b'{"instruction": "a", "completion": "b"}\n{"instruction": "a", "completion": "b", "x": "p\rq"}\n')),
    Case("jsonl-missing-field", lambda c, t: probe(c, t, val=t / "mf.jsonl"), 2, ("mf.jsonl:2", "completion"),
         prepare=data_file("mf.jsonl", b'{"instruction": "a", "completion": "b"}\n{"instruction": "c"}\n')),
    Case("data-missing-file", lambda c, t: probe(c, t, val=t / "none.jsonl"), 2, ("none.jsonl", "no such file")),
    Case("data-unknown-format", lambda c, t: probe(c, t, val=t / "v.txt"), 2, ("v.txt", "unknown data format"),
         prepare=data_file("v.txt", b"hello\n")),
    Case("val-fraction-bad", lambda c, t: ["probe", "--model", str(c.model), "--data", str(c.train), "--val-fraction", "1.5",
                                           "--out", str(t / "R"), *FAST], 2, ("--val-fraction",)),
    Case("model-relative-missing", lambda c, t: ["probe", "--model", "./no/such/model", "--data", str(c.train),
                                                 "--out", str(t / "R")], 2, ("./no/such/model", "no such folder")),
    Case("prompt-missing", lambda c, t: probe(c, t, "--prompt", str(t / "nope.safetensors")), 2, ("nope.safetensors",)),
    Case("prompt-other-model", lambda c, t: probe(c, t, "--prompt", str(t / "P")), 2, ("some/other-model", "--any-prompt-model"),
         prepare=foreign_prompt),
    Case("prompt-other-model-allowed", lambda c, t: probe(c, t, "--prompt", str(t / "P"), "--any-prompt-model"), 0,
         ("top 3 neurons",), prepare=foreign_prompt),
    Case("prompt-wrong-width", lambda c, t: probe(c, t, "--prompt", str(t / "P")), 2, ("the prompt is (2, 16)",),
         prepare=narrow_prompt),
    Case("show-missing", lambda c, t: ["show", str(t / "none")], 2, ("none", "no such run directory")),
    Case("show-negative-exemplars", lambda c, t: ["show", str(c.run), "--exemplars", "-2"], 2, ("--exemplars",)),
    Case("show-run-json-not-utf8", lambda c, t: ["show", str(t / "F")], 2, ("run.json",),
         prepare=damage("run.json", lambda p: p.write_bytes(b"\xff\xfe{")),),
    Case("show-run-json-not-json", lambda c, t: ["show", str(t / "F")], 2, ("run.json:1",),
         prepare=damage("run.json", lambda p: p.write_text("{oops"))),
    Case("show-examples-not-utf8", lambda c, t: ["show", str(t / "F")], 2, ("examples.jsonl",),
         prepare=damage("examples.jsonl", lambda p: p.write_bytes(b"\xff" + p.read_bytes()))),
    Case("show-groups-not-utf8", lambda c, t: ["show", str(t / "F")], 2, ("groups.json",),
         prepare=damage("groups.json", lambda p: p.write_bytes(b"\xff\xfe"))),
    Case("show-meta-not-object", lambda c, t: ["show", str(t / "F")], 2, ("examples.jsonl:1", "meta"),
         prepare=damage("examples.jsonl", lambda p: p.write_text(p.read_text().replace('"meta": {', '"meta": [{', 1)
                                                                   .replace("}, \"source\"", "}], \"source\"", 1)))),
    Case("show-count-not-scalar", lambda c, t: ["show", str(t / "F")], 2, ("stats.safetensors", "'count' must be a scalar"),
         prepare=damage("stats.safetensors", tensors_edit(lambda d: d.update(count=torch.tensor([60, 60]))))),
    Case("show-corr-wrong-rank", lambda c, t: ["show", str(t / "F")], 2, ("stats.safetensors", "'corr' must be"),
         prepare=damage("stats.safetensors", tensors_edit(lambda d: d.update(corr=d["corr"].flatten())))),
    Case("show-impossible-neuron", lambda c, t: ["show", str(t / "F")], 2, ("neurons.json", "outside"),
         prepare=damage("neurons.json", lambda p: p.write_text(p.read_text().replace('"layer": ', '"layer": 9', 1)))),
    Case("report-out-dir", lambda c, t: ["report", str(t / "F"), "--out", str(t)], 0, ("report.html",),
         prepare=lambda c, t: (fake(t) and None), check=lambda c, t, o: ((t / "report.html").is_file() or pytest.fail("no report")) and None),
    Case("plot-into-blocked-folder", lambda c, t: ["plot", str(t / "F")], 2, ("plots",),
         prepare=damage("plots", lambda p: p.write_text("not a folder"))),
    Case("plot-math-text-labels", lambda c, t: ["plot", str(t / "F"), "--group-by", "cost"], 0, ("wrote",),
         prepare=lambda c, t: _math_run(t)),
    Case("report-math-text-labels", lambda c, t: ["report", str(t / "F"), "--group-by", "cost"], 0, ("wrote",),
         prepare=lambda c, t: _math_run(t)),
    Case("unexpected-bug-in-a-stage", lambda c, t: probe(c, t), 1, ("while probing", "ZeroDivisionError", "error.log"),
         prepare=stage_bug, check=error_log_written),
]


def _math_run(tmp: Path) -> None:
    run = fake(tmp)
    lines = (run / "examples.jsonl").read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        record = json.loads(line)
        record["meta"]["cost"] = ["costs $x^$", "100$ and $5", "plain"][i % 3]
        out.append(json.dumps(record))
    (run / "examples.jsonl").write_text("\n".join(out) + "\n")


@pytest.fixture(autouse=True)
def _undo_patches() -> object:
    import skn.engine.run
    real = skn.engine.run.probe
    cwd = os.getcwd()
    yield
    skn.engine.run.probe = real
    os.chdir(cwd)


def test_matrix_has_the_rows_the_issue_asks_for() -> None:
    assert len(CASES) >= 60 and len({c.name for c in CASES}) == len(CASES)


# rows that spawn a second Python (a real kill -9, `show` in a fresh process) or draw figures: seconds each
SLOW = {"inst-chat-data", "kill-9-then-show", "kill-9-then-reuse", "kill-9-then-overwrite", "resume-other-data",
        "resume-other-model", "report-out-dir", "plot-math-text-labels", "report-math-text-labels"}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.name in SLOW else []) for c in CASES])
def test_bad_input(case: Case, ctx: Ctx, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                   monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    if case.prepare is not None:
        case.prepare(ctx, tmp_path)
    capsys.readouterr()
    code, output = run_main(case.args(ctx, tmp_path), capsys)
    assert code == case.code, output
    assert "Traceback" not in output, output
    assert output.count("error:") <= 1, output
    if case.code != 0:
        assert output.strip().splitlines()[-1].startswith(("error:", "Error:", "Usage:")) or "Error" in output, output
    flat = " ".join(output.split())
    for needle in case.needles:
        assert needle in output or needle in flat, (needle, output)
    if case.check is not None:
        case.check(ctx, tmp_path, output)


def test_debug_prints_the_traceback(ctx: Ctx, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stage_bug(ctx, tmp_path)
    code, output = run_main(["--debug", *probe(ctx, tmp_path)], capsys)
    assert code == 1 and "Traceback" in output and "ZeroDivisionError: a bug in the pass" in output


def test_two_runs_in_the_same_second_get_two_directories(tmp_path: Path) -> None:
    from skn.files.rundir import fresh_run_directory
    first, second = fresh_run_directory(tmp_path, "20260101-000000"), fresh_run_directory(tmp_path, "20260101-000000")
    assert first != second and first.is_dir() and second.is_dir() and second.name == "20260101-000000-2"


def test_run_json_is_strict(ctx: Ctx) -> None:
    def reject(name: str) -> object:
        raise AssertionError(f"{name} in run.json")
    json.loads((ctx.run / "run.json").read_text(), parse_constant=reject)


def test_transformers_progress_setting_is_restored(ctx: Ctx) -> None:
    from transformers.utils import logging as hf_logging

    from skn.engine.request import ModelRequest
    from skn.engine.run import load_requested_model
    hf_logging.enable_progress_bar()
    load_requested_model(ModelRequest(str(ctx.model)))
    assert hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    load_requested_model(ModelRequest(str(ctx.model)))
    assert not hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()


def test_python_metric_module_in_the_current_folder(tmp_path: Path) -> None:
    from skn.inputs.metrics import load_function, parse_metric
    (tmp_path / "localmetric.py").write_text("def f(example, outputs):\n    return 1.5\n")
    os.chdir(tmp_path)  # restored by _undo_patches
    function = load_function(parse_metric("python:localmetric:f"))
    assert function(None, None) == 1.5  # type: ignore[arg-type]


def test_pad_id_beyond_the_embeddings_falls_back_in_range() -> None:
    from helpers import tiny_loaded
    from skn.models.model import batch_pad_id
    loaded = tiny_loaded("qwen2")
    assert batch_pad_id(loaded) == 0  # type: ignore[arg-type]  # <pad> is in range: kept
    loaded.tokenizer.add_special_tokens({"pad_token": "[PAD]"})  # type: ignore[attr-defined]
    assert loaded.tokenizer.pad_token_id == VOCAB  # type: ignore[attr-defined]
    assert batch_pad_id(loaded) == loaded.tokenizer.eos_token_id  # type: ignore[arg-type, attr-defined]


def test_overwrite_keeps_files_that_are_not_skns(tmp_path: Path) -> None:
    from skn.errors import RunDirError
    from skn.files.rundir import prepare_run_directory
    (tmp_path / "R" / "plots").mkdir(parents=True)
    for name in ("run.json", "notes.txt", ".stats.safetensors.abc.tmp"):
        (tmp_path / "R" / name).write_text("x")
    with pytest.raises(RunDirError, match=r"not empty \(holds notes.txt, plots, run.json\)"):
        prepare_run_directory(tmp_path / "R")
    assert not (tmp_path / "R" / ".stats.safetensors.abc.tmp").exists()  # a killed run's leftover goes at once
    prepare_run_directory(tmp_path / "R", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "R").iterdir()) == ["notes.txt"]
