"""The HTML report: loaded in headless Chromium (screenshot + DOM), or parsed with html.parser where it is absent."""

from __future__ import annotations

import base64
import io
import warnings
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from fake_run import N, TOP_K, make_run
from helpers import chromium, run_chromium
from matplotlib.image import imread

from skn.cli.main import main
from skn.views.report import render_report, write_report
from skn.files.result import ProbeResult
from skn.files.probe_read import read_probe_run

FIGURES = 3 + TOP_K  # training curve, |r| histogram, |r| per layer, one per top neuron


@dataclass
class Dom(HTMLParser):
    """The few things the tests look at in a page: tags with attributes, the neuron table's rows, text."""

    tags: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    _table: str = ""
    _in_body: bool = False
    _cell: list[str] | None = None

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append((tag, values))
        if tag == "table":
            self._table = values.get("id", "")
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body and self._table == "neuron-table":
            self.rows.append([])
        elif tag == "td" and self._in_body and self._table == "neuron-table":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = ""
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.tags if name == tag]


def parse(page: str) -> Dom:
    dom = Dom()
    dom.feed(page)
    dom.close()
    return dom


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("report") / "run"
    make_run(directory, extra_info={"model": "org/<script>alert('x')</script>-model"})
    return directory


@pytest.fixture(scope="module")
def run(run_dir: Path) -> ProbeResult:
    return read_probe_run(run_dir)


@pytest.fixture(scope="module")
def page(run: ProbeResult) -> str:
    return render_report(run, "runs/x")


def check_page(dom: Dom, run: ProbeResult) -> None:
    """What must hold in the report's DOM, whether parsed from the file or dumped by a browser."""
    assert len(dom.rows) == TOP_K
    for row, neuron in zip(dom.rows, run.neurons, strict=True):
        assert row[:5] == [f"#{neuron.rank}", str(neuron.layer), str(neuron.index), str(neuron.position), f"{neuron.r:+.4f}"]
        assert len(row) == 5 + 3  # mean activation of each of the three heuristic groups
    images = dom.all("img")
    assert len(images) == FIGURES
    for image in images:
        prefix = "data:image/png;base64,"
        assert image["src"].startswith(prefix) and image["alt"]
        png = base64.b64decode(image["src"][len(prefix):], validate=True)
        assert imread(io.BytesIO(png), format="png").shape[1] >= 500  # the whole PNG decodes
    # self-contained: nothing fetched, no external script or style sheet
    assert not dom.all("link") and not dom.all("iframe")
    assert all("src" not in attrs for attrs in dom.all("script")) and len(dom.all("script")) == 1
    for tag, attrs in dom.tags:
        for name in ("src", "href"):
            assert not attrs.get(name, "").startswith(("http:", "https:", "//")), (tag, attrs)
    # user text is escaped: it shows as text, never becomes markup
    text = "".join(dom.text)
    assert "<b>doctor</b>" in text and not dom.all("b")
    assert "org/<script>alert('x')</script>-model" in text
    ids = {attrs.get("id", "") for _, attrs in dom.tags}
    assert {f"neuron-{n.rank}" for n in run.neurons} <= ids and {"summary", "overview", "neurons"} <= ids


def test_report_structure(run: ProbeResult, page: str) -> None:
    check_page(parse(page), run)


def test_report_shows_examples_and_summary(run: ProbeResult, page: str) -> None:
    text = "".join(parse(page).text)
    for label in ("validation data", "val.jsonl", "heuristic==lexical_overlap", f"N = {N}", "Most activating", "Least activating"):
        assert label in text
    values = run.top_activations[0].numpy()
    top, bottom = int(np.argmax(values)), int(np.argmin(values))
    assert f"Premise {top}: the" in text and f"Premise {bottom}: the" in text
    assert page.count("<h4>Most activating</h4>") == TOP_K


def test_report_without_training_history(tmp_path: Path) -> None:
    make_run(tmp_path / "r", extra_info={"train_history": []})
    page = render_report(read_probe_run(tmp_path / "r"))
    assert "No training history" in page and len(parse(page).all("img")) == FIGURES - 1


def test_write_report_and_cli(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert write_report(run_dir) == run_dir / "report.html" and (run_dir / "report.html").is_file()
    assert (run_dir / "report.html").stat().st_mode & 0o644 == 0o644  # readable by others, unlike mkstemp's 0600
    out = tmp_path / "deep" / "r.html"
    main(["report", str(run_dir), "--out", str(out), "--group-by", "label", "--exemplars", "2"])
    assert out.is_file() and "wrote" in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    assert page.count("<h4>Most activating</h4>") == TOP_K and "grouped by label" in page
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(run_dir), "--group-by", "nope"])
    assert exit_info.value.code == 2 and "--group-by nope" in capsys.readouterr().err


def test_report_in_headless_chromium(run: ProbeResult, run_dir: Path, tmp_path: Path) -> None:
    report = write_report(run_dir, tmp_path / "report.html")
    binary = chromium()
    if not binary:
        warnings.warn("chromium is not installed: the report was checked with html.parser only "
                      "(no screenshot, scripts not run); `apt-get install -y chromium` for the browser check",
                      stacklevel=1)
        check_page(parse(report.read_text(encoding="utf-8")), run)
        return
    url = report.resolve().as_uri()
    dumped = run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", url)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = parse(dumped.stdout)
    check_page(dom, run)
    body = dom.all("body")[0]
    assert body.get("data-images-ok") == str(FIGURES)  # the page's own check: every figure decoded
    assert not [a for a in dom.all("p") if a.get("class") == "warn"]

    # the table sorts: click the r header once (ascending) and the rank header twice (descending)
    clicks = ("<script>var h = document.querySelectorAll('#neuron-table th'); h[4].click();</script></body>",
              "<script>var h = document.querySelectorAll('#neuron-table th'); h[0].click(); h[0].click();</script></body>")
    for number, (click, order) in enumerate(zip(clicks, (sorted(run.neurons, key=lambda n: n.r), run.neurons[::-1]))):
        clicked = tmp_path / f"clicked{number}.html"
        clicked.write_text(report.read_text(encoding="utf-8").replace("</body>", click), encoding="utf-8")
        sorted_dom = run_chromium(binary, tmp_path / f"profile-sort{number}", "--dump-dom", clicked.resolve().as_uri())
        assert [row[0] for row in parse(sorted_dom.stdout).rows] == [f"#{n.rank}" for n in order]

    shot = tmp_path / "report.png"
    taken = run_chromium(binary, tmp_path / "profile-shot", "--window-size=1280,2400", f"--screenshot={shot}", url)
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    image = imread(str(shot))
    assert image.shape[:2] == (2400, 1280)
    assert float(image[..., :3].std()) > 0.05  # not a blank page
