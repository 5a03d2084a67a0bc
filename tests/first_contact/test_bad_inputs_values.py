"""Bad values (issue #33, "nothing wrong with exit 0"): numeric options out of range, metric values that
do not fit a float64, lone surrogates, duplicate keys and columns, and a metric of a tiny scale.

Every CLI row runs `skn` through `main()` and checks the exit code, that the one `error:` line names the
flag, or the file:line and field, at fault, and that no traceback is printed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import VOCAB, model_folders, run_main
from skn.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--steps", "2", "--eval-every", "2", "--prompt-len", "2", "--batch-size", "8", "--top-k", "3", "--exemplars", "2"]
WORDS = ["cat", "dog", "bird"]


@dataclass(frozen=True)
class Ctx:
    model: Path
    pad_model: Path  # its tokenizer's [PAD] is token VOCAB, one past the embeddings
    train: Path
    val: Path


def record(i: int, seed: int) -> dict[str, object]:
    word = WORDS[(i * 7 + seed) % 3]
    unit = (i * 37 % 11) / 11  # spread 10/11, in [0.5, 1)
    return {"instruction": f"the {word} is {'very ' * (i % 4)}", "completion": f" a {word}", "animal": word,
            "unit": unit, "mid": math.ldexp(unit, -133), "tiny": math.ldexp(unit, -600)}


def write_records(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    base = tmp_path_factory.mktemp("values")
    model, pad_model = model_folders(base)
    train = write_records(base / "train.jsonl", [record(i, 0) for i in range(16)])
    val = write_records(base / "val.jsonl", [record(i, 1) for i in range(12)])
    return Ctx(model, pad_model, train, val)


Args = Callable[[Ctx, Path], list[str]]
Hook = Callable[[Ctx, Path], None]


@dataclass(frozen=True)
class Case:
    name: str
    args: Args
    code: int
    needles: tuple[str, ...] = ()
    prepare: Hook | None = None
    trains: bool = False  # False: the error comes before any prompt is trained (RUN/prompt.safetensors absent)


def probe(ctx: Ctx, tmp: Path, *extra: str, val: str = "", command: str = "probe") -> list[str]:
    fast = FAST if command == "probe" else FAST[:6]
    return [command, "--model", str(ctx.model), "--data", str(ctx.train), "--val-data", val and str(tmp / val) or str(ctx.val),
            "--out", str(tmp / "R"), *fast, *extra]


def train(ctx: Ctx, tmp: Path, *extra: str) -> list[str]:
    return probe(ctx, tmp, *extra, command="train")


def lines(name: str, *records: dict[str, object], raw: str = "") -> Hook:
    """A data file of 12 good records, with `records` in place of the first ones (and `raw` lines after)."""
    def hook(ctx: Ctx, tmp: Path) -> None:
        good = [json.dumps(record(i, 1)) for i in range(12)]
        for i, r in enumerate(records):
            good[i] = json.dumps(r)
        (tmp / name).write_text("\n".join(good) + "\n" + raw)
    return hook


def text(name: str, content: str) -> Hook:
    def hook(ctx: Ctx, tmp: Path) -> None:
        (tmp / name).write_text(content, encoding="utf-8")
    return hook


def jsonl(name: str, line: Callable[[int], str]) -> Hook:
    """12 lines, line i (0-based) written by `line(i)`."""
    return text(name, "".join(line(i) + "\n" for i in range(12)))


def with_v(i: int, bad: int, value: str) -> str:
    """Record i with field v = i, or `value` written as is (JSON text) when i == bad."""
    return json.dumps(record(i, 1))[:-1] + f', "v": {value if i == bad else i}}}'


def csv_rows(bad: int, value: str) -> str:
    return "instruction,completion,v\n" + "".join(f"the {WORDS[i % 3]} is {i},ok,{value if i == bad else i / 7}\n"
                                                  for i in range(12))


def metric_module(body: str) -> Hook:
    def hook(ctx: Ctx, tmp: Path) -> None:
        (tmp / "valuemetric.py").write_text(body)
    return hook


def with_field(**fields: object) -> dict[str, object]:
    return {**record(0, 1), **fields}


def nested_duplicate(i: int) -> str:
    line = json.dumps(record(i, 1))
    return line[:-1] + ', "extra": {"a": 1, "a": 2}}' if i == 6 else line


CASES = [
    # 1. numeric options: one line naming the flag and the value, exit 2, before any model loads
    Case("seed-float-text", lambda c, t: probe(c, t, "--seed", "1e23"), 2, ("--seed", "1e23")),
    Case("seed-too-large", lambda c, t: probe(c, t, "--seed", str(10**23)), 2, ("--seed", str(10**23))),
    Case("seed-past-32-bits", lambda c, t: probe(c, t, "--seed", str(2**32)), 2, ("--seed", str(2**32))),
    Case("seed-negative", lambda c, t: train(c, t, "--seed", "-1"), 2, ("--seed", "-1")),
    Case("seeds-past-32-bits", lambda c, t: probe(c, t, "--seeds", f"0,{2**32}"), 2, ("--seeds", str(2**32))),
    Case("epochs-inf", lambda c, t: probe(c, t, "--epochs", "inf"), 2, ("--epochs", "inf")),
    Case("epochs-nan", lambda c, t: train(c, t, "--epochs", "nan"), 2, ("--epochs", "nan")),
    Case("epochs-minus-inf", lambda c, t: probe(c, t, "--epochs", "-inf"), 2, ("--epochs", "-inf")),
    Case("epochs-overflowing-steps", lambda c, t: probe(c, t, "--epochs", "1e308"), 2, ("--epochs", "1e+308")),
    Case("threads-100000", lambda c, t: probe(c, t, "--threads", "100000"), 2, ("--threads", "100000")),
    Case("threads-train", lambda c, t: train(c, t, "--threads", "100000"), 2, ("--threads", "100000")),
    Case("grad-accum-past-int64", lambda c, t: probe(c, t, "--grad-accum", str(10**23)), 2, ("--grad-accum", str(10**23))),
    Case("ablate-seed-negative", lambda c, t: ["ablate", str(t / "no-run"), "--seed", "-1"], 2, ("--seed", "-1")),
    Case("ablate-seed-too-large", lambda c, t: ["ablate", str(t / "no-run"), "--seed", str(10**23)], 2, ("--seed",)),
    Case("ablate-threads-100000", lambda c, t: ["ablate", str(t / "no-run"), "--threads", "100000"], 2, ("--threads", "100000")),
    # the token must exist in the embeddings: checked once the model is loaded, before the first step
    Case("prompt-init-beyond-embeddings", lambda c, t: [*train(c, t, "--prompt-init", "[PAD]")[:2], str(c.pad_model),
                                                        *train(c, t, "--prompt-init", "[PAD]")[3:]],
         2, ("--prompt-init", "[PAD]", f"token {VOCAB}")),
    # 2. metric values that are not finite float64, and text that is not text: FILE:LINE and the field
    Case("metric-401-digit-int", lambda c, t: probe(c, t, "--metric", "big", val="big.jsonl"), 2,
         ("big.jsonl:3", "'big'", "401-digit"),
         prepare=lines("big.jsonl", with_field(big=1), with_field(big=2), with_field(big=int("9" * 401)))),
    Case("metric-json-nan", lambda c, t: probe(c, t, "--metric", "v", val="nan.jsonl"), 2, ("nan.jsonl:2", "'v'", "NaN", "finite float64"),
         prepare=jsonl("nan.jsonl", lambda i: with_v(i, 1, "NaN"))),
    Case("metric-json-1e400", lambda c, t: probe(c, t, "--metric", "v", val="inf.jsonl"), 2, ("inf.jsonl:6", "'v'", "inf", "finite float64"),
         prepare=jsonl("inf.jsonl", lambda i: with_v(i, 5, "1e400"))),
    Case("metric-csv-1e400", lambda c, t: probe(c, t, "--metric", "v", val="inf.csv"), 2, ("inf.csv:4", "'v'", "'1e400'"),
         prepare=text("inf.csv", csv_rows(2, "1e400"))),
    Case("metric-csv-nan", lambda c, t: probe(c, t, "--metric", "v", val="nan.csv"), 2, ("nan.csv:13", "'v'", "'nan'"),
         prepare=text("nan.csv", csv_rows(11, "nan"))),
    Case("metric-python-returns-401-digits", lambda c, t: probe(c, t, "--metric", "python:valuemetric:big"), 2,
         ("val.jsonl:", "402-digit"), prepare=metric_module("def big(example, outputs):\n    return 10**401\n"), trains=True),
    Case("metric-python-returns-inf", lambda c, t: probe(c, t, "--metric", "python:valuemetric:inf"), 2,
         ("val.jsonl:", "infinite"), prepare=metric_module("def inf(example, outputs):\n    return float('inf')\n"), trains=True),
    Case("integer-past-python-digits", lambda c, t: probe(c, t, val="long.jsonl"), 2, ("long.jsonl:13", "'n'", "digits"),
         prepare=lines("long.jsonl", raw='{"instruction": "a", "completion": "b", "n": ' + "1" * 5000 + "}\n")),
    Case("lone-surrogate-instruction", lambda c, t: probe(c, t, val="sur.jsonl"), 2,
         ("sur.jsonl:5", "'instruction'", "\\ud800", "surrogate"),
         prepare=text("sur.jsonl", "".join(json.dumps(with_field(instruction="the cat\ud800" if i == 4 else f"the {i}"))
                                           + "\n" for i in range(12)))),
    Case("lone-surrogate-meta-field", lambda c, t: probe(c, t, val="surm.jsonl"), 2, ("surm.jsonl:2", "'note'", "\\udc00"),
         prepare=lines("surm.jsonl", with_field(), with_field(note=["ok", "x\udc00"]))),
    # 4. a key or a column twice
    Case("json-duplicate-key", lambda c, t: probe(c, t, "--metric", "v", val="dup.jsonl"), 2,
         ("dup.jsonl:1", "duplicate key 'v'"), prepare=jsonl("dup.jsonl", lambda i: with_v(i, -1, "")[:-1] + ', "v": 1}')),
    Case("json-duplicate-nested-key", lambda c, t: probe(c, t, val="dupn.jsonl"), 2, ("dupn.jsonl:7", "duplicate key 'a'"),
         prepare=jsonl("dupn.jsonl", nested_duplicate)),
    Case("json-file-duplicate-key", lambda c, t: probe(c, t, val="dup.json"), 2, ("dup.json:3", "duplicate key 'animal'"),
         prepare=jsonl("dup.json", lambda i: with_v(i, -1, "")[:-1] + ', "animal": "x"}' if i == 2 else with_v(i, -1, ""))),
    Case("csv-encoded-surrogate", lambda c, t: probe(c, t, val="sur.csv"), 2, ("sur.csv:3", "UTF-8"),
         prepare=lambda c, t: (t / "sur.csv").write_bytes(csv_rows(1, "1").encode().replace(b"is 1,", b"is \xed\xa0\x80,"))),
    Case("csv-duplicate-column", lambda c, t: probe(c, t, "--metric", "v", val="dup.csv"), 2,
         ("dup.csv:1", "'v'", "twice"),
         prepare=text("dup.csv", "instruction,completion,v,v\n" + "".join(f"the {i},ok,{i},1\n" for i in range(12)))),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_bad_value(case: Case, ctx: Ctx, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # python:valuemetric:... is imported from the current folder
    if case.prepare is not None:
        case.prepare(ctx, tmp_path)
    capsys.readouterr()
    code, output = run_main(case.args(ctx, tmp_path), capsys)
    assert code == case.code, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith(("error:", "Error:"))]
    assert len(errors) == 1, output
    flat = " ".join(output.split())
    for needle in case.needles:
        assert needle in errors[0] or needle in flat, (needle, output)
    if not case.trains:
        assert not (tmp_path / "R" / "prompt.safetensors").exists(), "failed after training instead of before"
        assert not list(tmp_path.glob("R/seed-*")), "trained a seed before refusing another"


def test_help_documents_the_limits(capsys: pytest.CaptureFixture[str]) -> None:
    from skn.checks import SEED_MAX, THREADS_PER_CORE
    code, output = run_main(["probe", "--help"], capsys)
    flat = " ".join(output.split())
    assert code == 0 and f"0 to {SEED_MAX}" in flat and f"at most {THREADS_PER_CORE} per core" in flat
    assert "0 = use --steps" in flat


def test_threads_up_to_the_limit_are_accepted() -> None:
    from skn.checks import max_threads
    from skn.errors import UsageError
    from skn.engine.request import ProbeRequest
    assert ProbeRequest(threads=max_threads()).threads == max_threads()
    with pytest.raises(UsageError, match="--threads"):
        ProbeRequest(threads=max_threads() + 1)


# ---------------------------------------------------------------- 3. a metric of a tiny scale


def stats_of(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "stats.safetensors"))


def test_tiny_metric_gives_the_unit_metrics_results(ctx: Ctx, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same metric times 2^-133 (1e-40) or 2^-600 (1e-181): the same r, neurons and null threshold,
    bitwise (the statistics scale it back by a power of two), and examples.jsonl keeps the values."""
    runs = {}
    for name in ("unit", "mid", "tiny"):
        code, output = run_main(["probe", "--model", str(ctx.model), "--data", str(ctx.train), "--val-data", str(ctx.val),
                                 "--metric", name, "--out", str(tmp_path / name), *FAST], capsys)
        assert code == 0, output
        runs[name] = tmp_path / name
    unit = stats_of(runs["unit"])
    assert bool(torch.isfinite(unit["corr"]).any()) and float(unit["null_threshold"]) < 1.0
    for name in ("mid", "tiny"):
        stats = stats_of(runs[name])
        for key in ("corr", "null_threshold", "null_max_abs_r", "m2_x", "mean_x"):
            assert torch.equal(stats[key], unit[key]), (name, key)
        assert (runs[name] / "neurons.json").read_text() == (runs["unit"] / "neurons.json").read_text()
        shift = {"mid": -133, "tiny": -600}[name]
        metric = [json.loads(line)["metric"] for line in (runs[name] / "examples.jsonl").read_text().splitlines()]
        expected = [json.loads(line)["meta"][name] for line in (runs[name] / "examples.jsonl").read_text().splitlines()]
        assert metric == expected and all(m == math.ldexp(r["unit"], shift) for m, r in  # type: ignore[arg-type]
                                          zip(metric, [record(i, 1) for i in range(12)]))


def test_ordinary_metric_is_not_scaled() -> None:
    from helpers import examples
    from skn.inputs.metrics import for_statistics, metric_before_pass, parse_metric
    data = examples(12)
    spec = parse_metric("score")
    assert for_statistics(spec, data) is spec  # bitwise the statistics of before
    tiny = [type(e)(e.instruction, e.completion, {**e.meta, "score": e.meta["score"] * 1e-170}, e.source) for e in data]
    scaled = for_statistics(spec, tiny)
    assert scaled.scale == math.ldexp(1.0, round(math.log2(scaled.scale)))  # a power of two
    values = metric_before_pass(scaled, tiny)
    assert 0.5 <= float(values.max() - values.min()) < 1.0


def test_constant_means_exactly_equal() -> None:
    from skn.errors import MetricError
    from skn.inputs.metrics import check_metric, parse_metric
    spec = parse_metric("x")
    check_metric(spec, torch.tensor([1e-300, 0.0, 1e-300], dtype=torch.float64), [])  # varies: not constant
    with pytest.raises(MetricError, match="constant"):
        check_metric(spec, torch.tensor([1e-300] * 3, dtype=torch.float64), [])


def test_tiny_python_metric_is_refused(ctx: Ctx, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A metric from the outputs cannot be scaled before the pass: one line saying to rescale it, exit 2."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "valuemetric.py").write_text("def tiny(example, outputs):\n    return outputs.loss * 1e-170\n")
    code, output = run_main(probe(ctx, tmp_path, "--metric", "python:valuemetric:tiny"), capsys)
    assert code == 2 and "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "varies by only" in errors[0] and "power of ten" in " ".join(output.split()), output
    metric = [json.loads(line)["metric"] for line in (tmp_path / "R" / "examples.jsonl").read_text().splitlines()]
    assert len(metric) == 12 and 0 < max(metric) < 1e-160  # what was computed is kept


# ---------------------------------------------------------------- the readers behind the rows


def test_strict_json_names_the_line_of_a_multi_line_document() -> None:
    from skn.inputs.strict_json import parse_json
    doc = '{\n  "examples": [\n    {"input": "a",\n     "input": "b"}\n  ]\n}'
    with pytest.raises(DataError, match=r"^task.json:4: duplicate key 'input'"):
        parse_json(doc, "task.json")
    with pytest.raises(DataError, match=r"^f:3: field 'y' holds a lone surrogate \(\\udc00\)"):
        parse_json('{"x": {"y": ["ok", "bad\\udc00"]}}', "f", 3)
    with pytest.raises(DataError, match=r"^f:1: key 'k\\ud800' holds a lone surrogate"):
        parse_json('{"k\\ud800": 1}', "f")
    assert parse_json('{"x": "\\ud83d\\ude00", "y": "\\\\ud800"}', "f") == {"x": "\U0001F600", "y": "\\ud800"}


def test_bigbench_task_duplicate_key_and_surrogate(tmp_path: Path) -> None:
    from skn.tasks.arithmetic import load_bigbench
    example = '    {"input": "What is 1 plus 2?", "target_scores": {"3": 1, "4": 0}}'
    good = '{\n  "examples": [\n' + example + "\n  ]\n}\n"
    (tmp_path / "task.json").write_text(good)
    assert len(load_bigbench(tmp_path / "task.json")) == 1
    (tmp_path / "task.json").write_text(good.replace('"4": 0', '"4": 0, "3": 0'))
    with pytest.raises(DataError, match=r"task.json:3: duplicate key '3'"):
        load_bigbench(tmp_path / "task.json")
    (tmp_path / "task.json").write_text(good.replace("plus", "plus\\ud800"))
    with pytest.raises(DataError, match=r"task.json:3: field 'input' holds a lone surrogate"):
        load_bigbench(tmp_path / "task.json")


def test_hans_and_skills_duplicate_columns(tmp_path: Path) -> None:
    from skn.tasks.hans import load_hans
    from skn.tasks.skillmix import load_skills
    (tmp_path / "hans.tsv").write_text("gold_label\tsentence1\tsentence2\theuristic\theuristic\n"
                                       "entailment\ta b\tb\tlexical_overlap\tx\n")
    with pytest.raises(DataError, match=r"hans.tsv:1: the header names column 'heuristic' twice"):
        load_hans(tmp_path / "hans.tsv")
    (tmp_path / "skills.csv").write_text("category,skill,definition,example,skill\nc,s,d,e,t\n")
    with pytest.raises(DataError, match=r"skills.csv:1: the header names column 'skill' twice"):
        load_skills(tmp_path / "skills.csv")
