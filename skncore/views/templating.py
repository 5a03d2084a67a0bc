"""The Jinja2 environment of skn's HTML: the report, the comparison page and the ablation sections.

The pages' structure is in the templates of skn/views/templates/; Python hands them plain values (text, the
cells of skn.views.cells). A well-kept template engine does the markup and its escaping rather than f-strings
(issue #31). Autoescaping is on: every `{{ value }}` is escaped, user text included (model names, paths,
examples). `finalize` escapes it as html.escape(quote=True) does, with &quot; and &#x27; where markupsafe would
write &#34; and &#39;, so that the pages kept their bytes when they moved to templates; Markup (a macro's
output, `breakable`'s) passes as it is, never escaped twice. A name a template uses but was not given raises
(StrictUndefined): a misspelt field is an error, not an empty cell.
"""

from __future__ import annotations

import functools
import html
import re

import jinja2
from markupsafe import Markup

from skn.errors import InternalError

PACKAGE, FOLDER = "skn.views", "templates"


def escaped(value: object) -> Markup:
    """What a template writes for `{{ value }}`: Markup as it is, anything else its text, escaped."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def breakable(text: str) -> Markup:
    """`text` escaped, with a line-break opportunity (<wbr>) after each _ / . - inside words, so that a
    header like `mean act. | lexical_overlap` can wrap and its column stay narrow (the filter `breakable`)."""
    return Markup(re.sub(r"([_/.\-])(?=\w)", r"\1<wbr>", html.escape(text, quote=True)))


@functools.cache
def environment() -> jinja2.Environment:
    """The one environment (built once): the package's templates, autoescaped, strict about undefined names.
    trim_blocks and lstrip_blocks let a {% tag %} stand on its own line without adding to the page."""
    env = jinja2.Environment(loader=jinja2.PackageLoader(PACKAGE, FOLDER), autoescape=True,
                             undefined=jinja2.StrictUndefined, finalize=escaped, trim_blocks=True, lstrip_blocks=True)
    env.filters["breakable"] = breakable
    return env


def render(template: str, **values: object) -> str:
    """`template` (a file of skn/views/templates/) filled with `values`."""
    try:
        found = environment().get_template(template)
    except (jinja2.TemplateNotFound, ValueError) as missing:  # ValueError: PackageLoader found no folder
        raise InternalError(f"skn's HTML template {template} is not installed with skn (package data of "
                            f"{PACKAGE}: {missing}): reinstall skn") from missing
    return found.render(**values)
