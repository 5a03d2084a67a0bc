"""skn.views.templating: the one Jinja2 environment of the HTML pages. Text is escaped once, as html.escape
escapes it (the pages kept their bytes when they moved to templates); Markup passes as it is; an undefined
name and a missing template are errors; every template is installed and compiles."""

from __future__ import annotations

import html

import jinja2
import pytest
from markupsafe import Markup

from skn.errors import InternalError
from skn.views.templating import breakable, environment, escaped, render

TEMPLATES = {"ablation.html.j2", "ablation_curve.html.j2", "cells.html.j2", "compare.html.j2", "compare_section.html.j2",
             "report.html.j2"}


def test_text_is_escaped_once_as_html_escape_does_and_markup_passes() -> None:
    text = "org/<script>alert('x')</script> & \"quoted\""
    page = environment().from_string('<p title="{{ text }}">{{ text }}</p>{{ markup }}').render(
        text=text, markup=Markup("<b>&amp;</b>"))
    assert page == f'<p title="{html.escape(text)}">{html.escape(text)}</p><b>&amp;</b>'
    assert "&#34;" not in page and "&#39;" not in page and "&amp;amp;" not in page
    assert escaped(Markup("<i>")) == "<i>" and escaped(3) == "3" and isinstance(escaped("<"), Markup)


def test_breakable_escapes_and_lets_names_wrap() -> None:
    assert breakable("mean act. | lexical_overlap") == "mean act. | lexical_<wbr>overlap"
    assert breakable("x/y<z>_") == "x/<wbr>y&lt;z&gt;_"
    page = environment().from_string("{{ name|breakable }}").render(name="a.b & c")
    assert page == "a.<wbr>b &amp; c"


def test_one_environment_strict_about_undefined_names() -> None:
    assert environment() is environment() and environment().autoescape is True
    with pytest.raises(jinja2.UndefinedError):
        environment().from_string("{{ missing }}").render()
    with pytest.raises(jinja2.UndefinedError):
        render("ablation.html.j2", description="d", rows=())  # no figure


def test_every_template_is_installed_and_compiles() -> None:
    assert TEMPLATES <= set(environment().list_templates())
    for name in TEMPLATES:
        environment().get_template(name)
    with pytest.raises(InternalError, match="nope.html.j2 is not installed"):
        render("nope.html.j2")
