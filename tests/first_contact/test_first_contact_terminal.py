"""Issue #34, "First contact": what a newcomer meets in the terminal.

- at 80 columns and in a pipe (where Rich assumes 80 columns) the exemplars of `skn probe` / `skn show` are
  readable (whole instructions, wrapped, never cut to one word) and no number is ever cut (`+0.…`), in the
  top-neuron table, the group tables and `skn compare`'s tables;
- `skn probe` and `skn show` end with a short verdict in plain words (how many pass the null, the held-out r
  and replication, what the neurons track) and name `skn report`; the verdict hedges when the null is off,
  nothing passes or nothing was held out;
- `skn probe --help` lists its options under headings, and shows sizes for people (8 GiB).
"""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from rich.console import Console

from fake_run import make_run
from helpers import char_tokenizer, run_main, tiny_model
from skn.cli.main import main
from skn.files.result import with_section

FAST = ["--steps", "2", "--eval-every", "2", "--prompt-len", "2", "--batch-size", "8", "--top-k", "3", "--exemplars", "2"]
WIDTH = 80
WORDS = ("cat", "dog", "bird")


def instruction(i: int) -> str:
    """About 40 characters: a whole one fits the exemplar column at 80 columns; one word does not say much."""
    return f"what does the {WORDS[i % 3]} say when it is hungry {i:02d}?"


@dataclass(frozen=True)
class Probed:
    base: Path  # the working directory the run was made in
    output: str  # what `skn probe` printed on stdout, at 80 columns, into a pipe
    instructions: tuple[str, ...]


def _write(path: Path, n: int, offset: int) -> tuple[str, ...]:
    texts = tuple(instruction(offset + i) for i in range(n))
    with path.open("w") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"instruction": text, "completion": f" {WORDS[(offset + i) % 3]}",
                                "animal": WORDS[(offset + i) % 3]}) + "\n")
    return texts


def _narrow_pipe(monkeypatch: pytest.MonkeyPatch, base: Path) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    monkeypatch.chdir(base)


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> Probed:
    base = tmp_path_factory.mktemp("first-contact")
    tiny_model("qwen2").save_pretrained(base / "tiny")
    char_tokenizer().save_pretrained(base / "tiny")  # type: ignore[attr-defined]
    _write(base / "train.jsonl", 16, 0)
    instructions = _write(base / "val.jsonl", 24, 50)
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch:
        _narrow_pipe(monkeypatch, base)
        with redirect_stdout(stdout), redirect_stderr(io.StringIO()):
            main(["probe", "--model", "tiny", "--data", "train.jsonl", "--val-data", "val.jsonl", "--group-by", "animal",
                  "--holdout", "0.5", "--out", "R", *FAST])
    return Probed(base, stdout.getvalue(), instructions)


def _readable_at_80(output: str, instructions: tuple[str, ...]) -> None:
    lines = output.splitlines()
    assert max(len(line) for line in lines) <= WIDTH, output
    assert "…" not in output, output  # no number, and no exemplar, is cut
    whole = [text for text in instructions if any(text in line for line in lines)]
    assert len(whole) >= 2, output  # whole instructions of ~40 characters, each on one line


def _verdict(output: str) -> str:
    """The lines from 'Found:' to the end, which must be the end of the output."""
    lines = output.rstrip("\n").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Found: ")]
    assert len(starts) == 1, output
    tail = lines[starts[0]:]
    assert 2 <= len(tail) <= 10, output  # 3-4 sentences, wrapped at 80 columns
    return " ".join(" ".join(tail).split())


def test_probe_reads_at_80_columns_in_a_pipe(probed: Probed) -> None:
    _readable_at_80(probed.output, probed.instructions)
    assert re.search(r"r held out", probed.output) and re.search(r"\[[+-]\d\.\d\d, [+-]\d\.\d\d\]", probed.output)


def test_probe_ends_with_the_verdict(probed: Probed) -> None:
    verdict = _verdict(probed.output)
    assert re.match(r"Found: \d+ of 3 top neurons pass the family-wise null \(\|r\| > \d\.\d{3}, alpha 0\.05\)", verdict), verdict
    assert re.search(r"Held out: \|r\| \d\.\d\d( to \d\.\d\d)? \(same sign as chosen for \d of 3\) on the 12 examples", verdict)
    assert "replicate on the other fold" in verdict or "replication n/a" in verdict
    assert "What they track: 'animal' explains" in verdict
    assert verdict.endswith("Next: skn report R (figures, one HTML page); skn ablate R (do they matter?).")
    assert probed.output.index("run directory: R") < probed.output.index("Found: ")


def test_show_reads_at_80_columns_and_ends_with_the_verdict(probed: Probed, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    _narrow_pipe(monkeypatch, probed.base)
    code, output = run_main(["show", "R"], capsys)
    assert code == 0, output
    _readable_at_80(output, probed.instructions)
    assert _verdict(output) == _verdict(probed.output)


def test_the_verdict_says_how_sure(probed: Probed, tmp_path: Path) -> None:
    from skn.inputs.groups import group_summaries
    from skn.files.probe_read import read_probe_run
    from skn.views.verdict import next_line, verdict_lines

    held = read_probe_run(probed.base / "R")
    assert held.holdout is not None
    noisy = replace(held.holdout, replication=replace(held.holdout.replication, rate=0.2))
    assert "only 20% replicate on the other fold: most of this ranking is noise" in verdict_lines(with_section(held, "holdout", noisy))[1]

    run = make_run(tmp_path / "RUN", with_null=True)  # 2 of 6 pass; no holdout; activations split by heuristic
    run = replace(run, groups=group_summaries(run.top_activations, run.neurons, run.examples, ["heuristic", "label"]))
    assert run.null is not None and run.holdout is None
    found, sure, track, reach = verdict_lines(run)
    assert found.startswith("Found: 2 of 6 top neurons pass the family-wise null (|r| > 0.850, alpha 0.05);"), found
    assert sure.startswith("Not held out") and "chose the neurons" in sure
    assert track.startswith("What they track: 'heuristic' explains") and "the most of 2 grouping fields" in track, track
    null_off = verdict_lines(with_section(run, "null", None))[0]
    assert "null is off (--null 0)" in null_off and "nothing says" in null_off
    nothing = replace(run.null, significant=(False,) * 6)
    assert "none of the 6 top neurons passes" in verdict_lines(with_section(run, "null", nothing))[0]
    cut = [n for n in run.neurons if n.layer == 2 and n.position < 3]  # the fake run has 3 layers and 4 slots
    assert cut and len(cut) < len(run.neurons)
    assert reach.startswith(f"Reach: {len(cut)} of 6 top neurons ({cut[0].layer}.{cut[0].index}@{cut[0].position}"), reach
    assert "cannot change the completion" in reach
    reachable = tuple(n for n in run.neurons if n not in cut)
    assert len(verdict_lines(replace(run, groups=None, neurons=reachable))) == 2
    assert len(verdict_lines(replace(run, groups=None))) == 3
    assert next_line("R", report="R/report.html", ablated=True) == "Next: open R/report.html."


def test_compare_tables_keep_every_number_at_80_columns(tmp_path: Path) -> None:
    from skn.cli.compare_cmd import print_comparison
    from skn.ranking.compare import compare_runs

    runs = [tmp_path / f"seed-{seed}" for seed in range(3)]
    for seed, run in enumerate(runs):
        make_run(run, seed=seed, with_null=True)
    comparison = compare_runs(runs, 6)
    console = Console(file=io.StringIO(), width=WIDTH, color_system=None)
    print_comparison(console, comparison)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert max(len(line) for line in output.splitlines()) <= WIDTH and "…" not in output, output
    for c in comparison.consensus:
        assert f"{c.consensus_min:+.3f}" in output and f"{c.consensus_mean:+.3f}" in output
        for score, position in zip(c.scores, c.positions, strict=True):
            assert f"{score:+.3f} ({position})" in output
    assert "passes all" in output and "Spearman" in output


def test_probe_help_is_grouped_and_sizes_read_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_main(["probe", "--help"], capsys)
    assert code == 0
    headings = [line for line in output.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert headings == ["Model and device:", "Data:", "Prompt training:", "Probe:", "Statistics:", "Output:", "Other options:"]
    flat = " ".join(output.split())
    assert "--exemplar-store SIZE" in flat and "[default: 8 GiB]" in flat and "8589934592" not in flat
    sections = output.split("\n\n")
    assert any(s.startswith("Statistics:") and "--null" in s and "--holdout" in s for s in sections)


def test_sizes_are_read_with_units() -> None:
    import click

    from skn.cli.options import ByteSize, human_size

    size = ByteSize()
    assert [size.convert(v, None, None) for v in ("8GiB", "1.5 KiB", "500MB", "1000", 7)] == [8 * 2**30, 1536, 500 * 10**6, 1000, 7]
    assert human_size(8 * 2**30) == "8 GiB" and human_size(1000) == "1000 B"
    for bad in ("8Gx", "-1", "GiB", ""):
        with pytest.raises(click.BadParameter, match="not a size"):
            size.convert(bad, None, None)


def test_a_bad_size_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_main(["probe", "--exemplar-store", "8 gigs"], capsys)
    assert code == 2 and "--exemplar-store" in output and "'8 gigs' is not a size" in output and "Traceback" not in output
