"""The values of the HTML pages' tables and figures, as the templates take them (skn.views.templating): a table
cell (`Cell`: its text, class, sort key, tooltip) and a figure as an embedded PNG (`Image`), with the number
formats the report, the comparison and the ablation sections share."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass

from matplotlib.figure import Figure

from skn.views.figures import png_bytes

TEXT_CHARS = 280  # longer instructions are cut in the tables (the full text is in the cell's tooltip)


@dataclass(frozen=True)
class Cell:
    """One <td>: its text (escaped when written), and where not empty its class, sort key (data-v: the number a
    sortable table sorts by) and tooltip (title)."""

    text: str
    classes: str = ""
    key: str = ""
    title: str = ""


@dataclass(frozen=True)
class Image:
    """A figure embedded in the page: its PNG as a base64 data URI, its alt text and class."""

    src: str
    alt: str
    css: str = ""


def number(value: float, digits: int = 4) -> str:
    return "NaN" if math.isnan(value) else f"{value:.{digits}g}"


def num_cell(value: float, text: str = "", css: str = "") -> Cell:
    """A number, right-aligned, sorted by its value (NaN last in both orders: data-v "NaN" sorts as -Infinity)."""
    return Cell(text or number(value), "num" + (f" {css}" if css else ""), "NaN" if math.isnan(value) else repr(value))


def r_cell(r: float) -> Cell:
    """A correlation, signed to four decimals and coloured by its sign."""
    return num_cell(r, "NaN" if math.isnan(r) else f"{r:+.4f}", "pos" if r > 0 else "neg" if r < 0 else "")


def text_cell(text: str) -> Cell:
    """An example's text, cut at TEXT_CHARS (then whole in the tooltip)."""
    if len(text) <= TEXT_CHARS:
        return Cell(text, "text")
    return Cell(text[: TEXT_CHARS - 1] + "\u2026", "text", title=text)


def figure_image(figure: Figure, alt: str, css: str = "") -> Image:
    return Image("data:image/png;base64," + base64.b64encode(png_bytes(figure)).decode("ascii"), alt, css)
