"""Issue #33, "Nothing wrong with exit 0": what data can do to the terminal, and failures that are not skn's.

- control sequences in an instruction, a field name or a value (a window title, a colour) are shown as
  escapes by `skn probe`, `skn show`, the error line and click's own messages, never sent to the terminal;
- a full disk, `ulimit -f` or a full TMPDIR is one line naming the file or folder, exit 2, not a bug;
- `--seeds` keeps a failing seed's own error (its class, exit code and message) and names the seed;
- a pad id one past the embeddings works in `skn ablate` and `--score predictivity` as in the probe;
- `--score predictivity` refuses `--holdout F` and says what ran when the holdout is left to its default.

Each case runs `skn` through `main()` (or a fresh process) and checks the exit code, the message, that no
traceback is printed and that there is at most one `error:` line.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from helpers import ROOT, animal_data, animal_word, model_folders, run_main
from skn.engine import seeds
from skn.engine.api import MetricFailure
from skn.errors import MetricError, StorageError
from skn.engine.request import ProbeRequest
from skn.engine.stage import StageFailure, storage_error

FAST = ["--steps", "2", "--eval-every", "2", "--prompt-len", "2", "--batch-size", "8", "--top-k", "3", "--exemplars", "2"]
TITLE = "\x1b]0;pwned\x07"  # OSC: sets the terminal's window title
RED = "\x1b[31m"  # CSI: colours what follows
FIELD = f"{TITLE}kind{RED}"


@dataclass(frozen=True)
class Ctx:
    model: Path
    pad_model: Path
    train: Path
    val: Path
    hostile_val: Path  # instructions, a field name and its values holding terminal control sequences


def _hostile(seed: int) -> Callable[[int], dict[str, object]]:
    """An instruction, a field name and its values holding terminal control sequences."""
    return lambda i: {"instruction": f"{TITLE}the {RED}{animal_word(i, seed)} is\x9b2J",
                      FIELD: f"{RED}{animal_word(i, seed)}{TITLE}"}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    base = tmp_path_factory.mktemp("terminal")
    model, pad_model = model_folders(base)
    return Ctx(model, pad_model, animal_data(base / "train.jsonl", 16, 0), animal_data(base / "val.jsonl", 12, 1),
               animal_data(base / "hostile.jsonl", 12, 1, _hostile(1)))


def probe(ctx: Ctx, out: Path, *extra: str, model: Path | None = None, val: Path | None = None) -> list[str]:
    return ["probe", "--model", str(model or ctx.model), "--data", str(ctx.train), "--val-data", str(val or ctx.val),
            "--out", str(out), *FAST, *extra]


def one_failure(output: str) -> None:
    assert "Traceback" not in output, output
    assert output.count("error:") == 1, output
    assert output.strip().splitlines()[-1].startswith("error:"), output


@pytest.fixture(autouse=True)
def _plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output to a file, wide: Rich writes no escape of its own, so any ESC seen came from the data."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")


def no_controls(output: str) -> None:
    for byte in ("\x1b", "\x07", "\x9b"):
        assert byte not in output, (byte, output)


# ---------------------------------------------------------------- 1. terminal escapes from data


def test_escapes_in_data_are_shown_not_sent(ctx: Ctx, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_main(probe(ctx, tmp_path / "R", "--group-by", FIELD, val=ctx.hostile_val), capsys)
    assert code == 0, output
    no_controls(output)
    assert "\\x1b]0;pwned\\x07the \\x1b[31mdog is\\x9b2J" in output  # the exemplar cells: seen, escaped
    assert "activation by \\x1b]0;pwned\\x07kind\\x1b[31m" in output  # the group table's title
    assert "\\x1b[31mcat\\x1b]0;pwned\\x07" in output  # a group's header
    code, output = run_main(["show", str(tmp_path / "R")], capsys)
    assert code == 0, output
    no_controls(output)
    assert "\\x1b]0;pwned\\x07the" in output and "activation by \\x1b]0;pwned\\x07kind" in output


def test_escapes_in_an_error_line(ctx: Ctx, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_main(probe(ctx, tmp_path / "R", "--metric", f"{FIELD}==x"), capsys)  # no such field
    assert code == 2, output
    one_failure(output)
    no_controls(output)
    assert "\\x1b]0;pwned\\x07kind\\x1b[31m" in output and "val.jsonl:1" in output
    code, output = run_main(probe(ctx, tmp_path / "R", "--group-by", FIELD), capsys)  # in the hostile file only
    assert code == 2 and "\\x1b]0;pwned\\x07kind" in output, output
    no_controls(output)
    code, output = run_main(probe(ctx, tmp_path / "R", "--score", TITLE), capsys)  # click's own message
    assert code == 2 and "\\x1b]0;pwned\\x07" in output, output
    no_controls(output)


def test_visible_escapes_every_control_character() -> None:
    from skn.views.console import error_line, visible
    assert visible("a\tb\nc") == "a\tb\nc"  # the layout's own
    assert visible("\x00\x1b\x7f\x85\x9f\r") == "\\x00\\x1b\\x7f\\x85\\x9f\\x0d"
    assert visible("ü ✓ [b]") == "ü ✓ [b]"
    assert "\x1b" not in error_line(f"bad {TITLE}").plain


# ---------------------------------------------------------------- 2. the machine refuses a write


def _refuse(filename: str | None) -> object:
    def write(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *((filename,) if filename else ()))
    return write


@pytest.mark.parametrize("filename", ["stats.safetensors", None], ids=["file-named", "folder-named"])
def test_a_full_disk_is_not_a_bug(ctx: Ctx, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch, filename: str | None) -> None:
    import skn.engine.run
    out = tmp_path / "R"
    monkeypatch.setattr(skn.engine.run, "write_probe_run", _refuse(str(out / filename) if filename else None))
    code, output = run_main(probe(ctx, out), capsys)
    assert code == 2, output
    one_failure(output)
    where = str(out / filename) if filename else str(out)
    assert f"cannot write {where}: No space left on device (while writing the run directory)" in " ".join(output.split())
    assert (out / "prompt.safetensors").is_file()  # what was computed before stays
    assert not (out / "error.log").exists()  # not a bug: no traceback to report


def test_storage_error_reads_oserrors_and_safetensors() -> None:
    from safetensors import SafetensorError
    refused = storage_error(OSError(errno.EDQUOT, "Disk quota exceeded", "R/x.json"), "R", "probing")
    assert isinstance(refused, StorageError) and refused.exit_code == 2
    assert str(refused) == "cannot write R/x.json: Disk quota exceeded (while probing)"
    rust = SafetensorError("Error while serializing: I/O error: File too large (os error 27)")
    assert str(storage_error(rust, "R")) == "cannot write R: File too large"
    assert str(storage_error(PermissionError(errno.EACCES, "Permission denied", "R/y"))) == "cannot access R/y: Permission denied"
    assert storage_error(FileNotFoundError(errno.ENOENT, "No such file or directory", "x")) is None  # may be a bug
    assert storage_error(SafetensorError("header too large")) is None
    assert storage_error(ValueError("no")) is None


def _limited(limit: int) -> None:
    """In the child: SIGXFSZ ignored, so a write past the limit fails with EFBIG instead of killing it."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow  # two fresh Pythons that import torch: ~10-20 s on a busy machine
@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="no file size limit signal here")
def test_a_real_file_size_limit(ctx: Ctx, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    for extra, needle in (((), f"cannot write the activation store's scratch file in {scratch}: File too large"),
                          (("--exemplars-pass", "always"), f"cannot write {tmp_path / 'R2'}: File too large")):
        out = tmp_path / ("R1" if not extra else "R2")
        done = subprocess.run([sys.executable, "-c", "from skn.cli.main import main; main()", *probe(ctx, out, *extra)],
                              cwd=ROOT, env=env, capture_output=True, text=True, preexec_fn=lambda: _limited(3000))
        output = done.stdout + done.stderr
        assert done.returncode == 2, output
        one_failure(output)
        assert needle in " ".join(output.split()), output


# ---------------------------------------------------------------- 3. --seeds keeps the seed's own error


@pytest.mark.parametrize("error", [
    MetricFailure(MetricError("metric constant over the validation set"), torch.zeros(3)),
    StageFailure("probing", ZeroDivisionError("a bug in the pass"), "R/seed-1/error.log"),
    StorageError("cannot write R/seed-1: No space left on device"),
], ids=["metric-failure", "stage-failure", "storage"])
def test_seeds_keep_the_failing_seeds_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def fake_run(request: ProbeRequest, progress: object) -> object:
        if request.train.prompt_seed == 1:
            raise error
        Path(request.out).mkdir(parents=True)
        return None

    monkeypatch.setattr(seeds, "run_probe", fake_run)
    with pytest.raises(type(error)) as raised:
        seeds.run_seeds(ProbeRequest(out=str(tmp_path / "R")), (0, 1, 2))
    assert str(raised.value).startswith(f"seed 1 ({tmp_path / 'R' / 'seed-1'}): {error}")
    assert "kept: seed-0" in str(raised.value)
    assert raised.value.exit_code == error.exit_code  # type: ignore[attr-defined]
    assert raised.value.__dict__.keys() >= error.__dict__.keys()  # a StageFailure's stage and log, a MetricFailure's values


def test_seeds_name_the_seed_of_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(request: ProbeRequest, progress: object) -> object:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(seeds, "run_probe", fake_run)
    with pytest.raises(StorageError, match=r"seed 0 .*seed-0\): cannot write .*seed-0: No space left on device"):
        seeds.run_seeds(ProbeRequest(out=str(tmp_path / "R")), (0, 1))


def test_seeds_failure_through_the_cli(ctx: Ctx, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(request: ProbeRequest, progress: object) -> object:
        raise MetricFailure(MetricError("metric constant over the validation set"), torch.zeros(3))

    monkeypatch.setattr(seeds, "run_probe", fake_run)
    code, output = run_main(probe(ctx, tmp_path / "R", "--seeds", "4,5"), capsys)
    assert code == 2, output
    one_failure(output)
    assert "seed 4" in output and "metric constant" in output and "TypeError" not in output


# ---------------------------------------------------------------- 4 and 5. a pad id past the embeddings; predictivity


def test_predictivity_with_a_pad_id_past_the_embeddings(ctx: Ctx, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_main(probe(ctx, tmp_path / "R", "--score", "predictivity", "--metric", "animal==cat",
                                  model=ctx.pad_model), capsys)
    assert code == 0, output
    assert "top 3 neurons" in output and (tmp_path / "R" / "predictivity.json").is_file()
    # the default holdout with predictivity: what ran is said, on the terminal and in run.json
    line = "holdout off: --score predictivity ranks the neurons on all 12 validation examples"
    assert line in " ".join(output.split())
    assert json.loads((tmp_path / "R" / "run.json").read_text())["holdout"] == {"fraction": 0.0, "note": line}


def test_ablate_with_a_pad_id_past_the_embeddings(ctx: Ctx, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_main(probe(ctx, tmp_path / "R", model=ctx.pad_model), capsys)
    assert code == 0, output
    code, output = run_main(["ablate", str(tmp_path / "R"), "--controls", "2", "--items", "6", "--batch-size", "3"], capsys)
    assert code == 0, output
    assert "ablation:" in output and (tmp_path / "R" / "ablation.json").is_file()


@pytest.mark.parametrize("holdout", ["0.5", "0.25"])
def test_predictivity_refuses_a_holdout(ctx: Ctx, tmp_path: Path, capsys: pytest.CaptureFixture[str], holdout: str) -> None:
    code, output = run_main(probe(ctx, tmp_path / "R", "--score", "predictivity", "--metric", "animal==cat",
                                  "--holdout", holdout), capsys)
    assert code == 2, output
    one_failure(output)
    assert f"--holdout {holdout}" in output and "--score predictivity" in output
    assert not (tmp_path / "R" / "prompt.safetensors").exists()  # refused before any training


def test_predictivity_with_holdout_zero_is_allowed() -> None:
    from skn.engine.probe_config import ProbeConfig, Score
    assert ProbeConfig(score=Score.PREDICTIVITY, holdout=0.0).holdout == 0.0
