"""The result tables at 60, 80 and 200 columns and written to a file: the number columns never shrink,
the text columns take what is left, nothing is read as markup."""

from __future__ import annotations

import io
import re

import pytest
import torch
from rich.console import Console

from skn.cli.render import group_tables, print_groups, print_run
from skn.inputs.data import Example
from skn.inputs.groups import group_summaries
from skn.ranking.rank import Neuron
from skn.files.result import RunInfo

NEURONS = (Neuron(1, 47, 123456, 19, -0.9123), Neuron(2, 3, 7, 0, 0.5), Neuron(10, 12, 8191, 5, float("nan")))
EXAMPLES = tuple(Example(f"[INST] question {i} [b]bold[/b] :smile: " + "long text " * 12 + "[/INST]", " answer",
                         {"group": f"value-{i % 9}-[x]"}, f"val.jsonl:{i + 1}") for i in range(18))


def _info() -> RunInfo:
    from skn.files.result import info_from_json
    return info_from_json({"model": "org/model[/x]", "metric": "label==[b]", "n_val": 18, "layers": 48, "width": 200000,
                           "top_k": 3}, "run.json")


def _render(console: Console) -> str:
    activations = torch.linspace(-3, 3, len(NEURONS) * len(EXAMPLES)).reshape(len(NEURONS), len(EXAMPLES))
    print_run(console, _info(), NEURONS, activations, EXAMPLES, 3)
    print_groups(console, group_summaries(activations, NEURONS, EXAMPLES, ["group"]))
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


@pytest.mark.parametrize("width", [60, 80, 200, None])
def test_tables_fit_and_keep_every_number(width: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    # None: output redirected to a file, as in a log of a real run (Rich then assumes 80 columns)
    console = Console(file=io.StringIO(), width=width, force_terminal=False, color_system=None)
    out = _render(console)
    limit = width or 80
    assert max(len(line) for line in out.splitlines()) <= limit
    header_lines = [line for line in out.splitlines() if "rank" in line]
    number_headers = [h for h in header_lines if "activation ┃" not in h]  # the exemplar table has its own header
    assert len(number_headers) >= 2 and len(header_lines) == len(number_headers) + 1
    assert all(re.search(r"rank\s*┃\s*layer\s*┃\s*neuron\s*┃\s*pos\s*┃\s*r", h) for h in number_headers)
    for n in NEURONS:
        r = "nan" if n.r != n.r else f"{n.r:+.3f}"
        assert re.search(rf"\b{n.rank}\s*│\s*{n.layer}\s*│\s*{n.index}\s*│\s*{n.position}\s*│\s*{re.escape(r)}", out), (n, out)
    assert "org/model[/x]" in out and "label==[b]" in out and "value-0-[x]" in out
    # the exemplars wrap instead of being cut, at any width: every word is there, no markup, no emoji codes
    words = " ".join(line.strip("│ ") for line in out.splitlines() if line.startswith("│")).split()
    assert all(w in words for w in ("[INST]", "question", "[b]bold[/b]", ":smile:", "[/INST]")), out
    assert "…" not in out


def test_group_tables_split_to_fit_a_narrow_console() -> None:
    activations = torch.arange(len(NEURONS) * len(EXAMPLES), dtype=torch.float32).reshape(len(NEURONS), len(EXAMPLES))
    summaries = group_summaries(activations, NEURONS, EXAMPLES, ["group"])
    assert len(group_tables(summaries)) == 1
    tables = group_tables(summaries, 60)
    assert len(tables) > 1
    console = Console(file=io.StringIO(), width=60, color_system=None)
    for table in tables:
        console.print(table)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert all(f"value-{k}-[x] (n=2)" in text for k in range(9))
