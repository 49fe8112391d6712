"""Sphinx extension: no error, licence banner, object repr or machine path reaches a page.

Cell errors that do not fail a cell (an exception raised while IPython *displays* a result, e.g. a
matplotlib figure whose mathtext cannot be parsed) arrive as an ``error`` output after a successful
execution; myst-nb renders them as a traceback.  This extension reads every cell output of every page
and logs a Sphinx warning for each such output, so `jupyter-book build -W` fails and names the page.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from docutils import nodes
from sphinx.util import logging

logger = logging.getLogger(__name__)

# (what, pattern) pairs searched in the text of every cell output
PATTERNS: list[tuple[str, re.Pattern]] = [
    ("a traceback", re.compile(r"Traceback \(most recent call last\)|^\w+(Error|Exception): ", re.M)),
    ("a licence banner", re.compile(r"licen[cs]e terms|Copyright \(c\)|THIRD_PARTY_NOTICES", re.I)),
    ("an object repr", re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>|<torch\._C\.\w+")),
]


def machine_paths(srcdir: str | Path) -> list[str]:
    """Absolute paths of this machine that must not show in an output."""
    paths = {str(Path(srcdir).resolve()), sys.prefix, str(Path.home()), "/tmp/"}
    return sorted(p for p in paths if p and p != "/")


def problems_in(text: str, paths: list[str]) -> list[str]:
    """What is wrong with one output's text (empty list: nothing)."""
    found = [what for what, pat in PATTERNS if pat.search(text)]
    for p in paths:
        if p in text:
            found.append(f"the machine path {p!r}")
    return found


def check_outputs(app, doctree: nodes.document) -> None:
    docname = app.env.docname
    paths = machine_paths(app.srcdir)
    for output in doctree.findall(nodes.container):
        if "cell_output" not in output.get("classes", []):
            continue
        tracebacks = [n for n in output.findall(nodes.Element) if "traceback" in n.get("classes", [])]
        if tracebacks:
            logger.warning(f"{docname}: a cell shows an error output (an exception raised while its result "
                           f"was displayed): {tracebacks[0].astext()[-300:]!r}",
                           location=output, type="lsub", subtype="error_output")
            continue
        text = output.astext()
        for node in output.findall(nodes.raw):
            text += "\n" + node.astext()
        for what in problems_in(text, paths):
            logger.warning(f"{docname}: a cell output shows {what}", location=output,
                           type="lsub", subtype="output_content")


def dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    """Drop repeated identical <script> entries.  sphinx-thebe 0.3.1 registers its inline configuration
    (``const THEBE_JS_URL = ...``) twice under Sphinx 7.4, and the second copy is a SyntaxError in the
    reader's console ("Identifier 'THEBE_JS_URL' has already been declared")."""
    seen, kept = set(), []
    for script in context.get("script_files", []):
        name = getattr(script, "filename", script) or ""  # the copies differ only by None vs ""
        key = (str(name), tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"][:] = kept


def setup(app):
    app.connect("doctree-read", check_outputs)
    app.connect("html-page-context", dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
