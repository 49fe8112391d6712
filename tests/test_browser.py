"""Every page of the built book, as a reader sees it: opened in headless Chromium with the network cut off.

The book is the session's one build (``built_book`` in conftest.py), served from 127.0.0.1; every request to
any other address is blocked, so a page that needs a CDN shows it here.  Per page: no console error, every
image loaded, every formula typeset by MathJax, tables as ``<table>``, no traceback or error text, widgets
rendered, solutions collapsed.  A full-page screenshot of every page goes to ``_build/screenshots/``.
On the experiment pages no table or printed output is wider than the column it sits in, at a 1280 px window.

The browser is Debian's ``chromium`` driven by playwright (``executable_path``: playwright's own browser
download cannot work here).  .ci/run installs chromium in CI; elsewhere, without it, the test skips.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from test_book_build import toc_files

SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_or_skip() -> str:
    """The chromium executable; skip (outside CI) or fail (in CI) with the reason when there is none."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[test]')"
    path = chromium_path()
    if reason is None and path is None:
        reason = "no chromium on PATH: apt-get install chromium (.ci/run does this in CI)"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@contextlib.contextmanager
def book_in_browser(html: Path, executable: str, blocked: list[str]):
    """A browser context on ``html`` served from 127.0.0.1, a 1280x900 window, and the book's base URL;
    every request to any other address is aborted and appended to ``blocked``."""
    from playwright.sync_api import sync_playwright

    server, base = serve(html)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1280, "height": 900})

            def route(r):
                if r.request.url.startswith(base):
                    r.continue_()
                else:
                    blocked.append(r.request.url)
                    r.abort()

            context.route("**/*", route)
            yield context, base
            browser.close()
    finally:
        server.shutdown()


# Run in the page after MathJax finished: what a reader would see that is wrong.
PAGE_CHECKS = r"""
() => {
  const problems = [];
  const article = document.querySelector('article') || document.body;
  // images
  for (const img of document.querySelectorAll('img')) {
    if (!img.complete || img.naturalWidth === 0) problems.push('image not loaded: ' + (img.getAttribute('src') || '').slice(0, 80));
  }
  // math: every formula typeset, none with a TeX error, no raw delimiters left
  const maths = article.querySelectorAll('.math');
  for (const m of maths) {
    if (!m.querySelector('mjx-container')) { problems.push('formula not typeset: ' + m.textContent.slice(0, 60)); break; }
  }
  if (article.querySelector('mjx-merror')) problems.push('MathJax error: ' + article.querySelector('mjx-merror').textContent.slice(0, 80));
  // prose text (code blocks and cell sources removed), the navigation included
  const clone = document.body.cloneNode(true);
  for (const el of clone.querySelectorAll('pre, code, .cell_input, mjx-container, script, style')) el.remove();
  const text = clone.innerText;
  if (/\\\(|\\\[/.test(text)) problems.push('raw TeX delimiters in the text');
  // tables: a markdown table left as text
  const raw = text.split('\n').filter(l => /^\s*\|.*\|\s*$/.test(l) && /\|\s*:?-{3,}/.test(l));
  if (raw.length) problems.push('markdown table shown as text: ' + raw[0].slice(0, 80));
  // errors
  if (article.querySelector('.traceback, .output.stderr, .output.error'))
    problems.push('an error/stderr output is shown: ' + article.querySelector('.traceback, .output.stderr, .output.error').innerText.slice(0, 120));
  const fullText = article.innerText;
  for (const pat of ['Traceback (most recent call last)', 'Loading widget', 'licence terms', ' object at 0x', '<torch._C.']) {
    if (fullText.includes(pat)) problems.push('page shows ' + JSON.stringify(pat));
  }
  // widgets: a widget view must be rendered (not left as its JSON script)
  for (const s of article.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')) {
    const shown = s.parentElement && s.parentElement.querySelector('.jupyter-widgets, .widget-interact, .lm-Widget');
    if (!shown) problems.push('widget not rendered');
  }
  for (const w of article.querySelectorAll('.lsub-widget-static')) {
    const img = w.querySelector('img');
    if (!img || img.naturalWidth === 0) problems.push('static view of a widget has no figure');
  }
  // solutions collapsed: the body of every solution is hidden
  for (const sol of article.querySelectorAll('.solution')) {
    const body = [...sol.children].filter(c => !c.classList.contains('admonition-title') && c.tagName !== 'BUTTON');
    const visible = body.filter(c => c.offsetParent !== null && c.getBoundingClientRect().height > 0);
    if (visible.length) { problems.push('a solution is shown expanded: ' + (sol.id || sol.className)); break; }
  }
  return {problems, tables: article.querySelectorAll('table').length, maths: maths.length,
          images: document.querySelectorAll('img').length, solutions: article.querySelectorAll('.solution').length};
}
"""


def check_page(page, url: str) -> tuple[list[str], dict]:
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text[:200]}")
            if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"page error: {str(exc)[:200]}"))
    page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")
    typeset = page.evaluate("""async () => {
        if (!window.MathJax) return 'no MathJax';
        if (!MathJax.startup || !MathJax.startup.promise) return 'MathJax not started';
        await MathJax.startup.promise; return 'ok'; }""")
    result = page.evaluate(PAGE_CHECKS)
    problems = errors + result.pop("problems")
    if typeset != "ok" and result["maths"]:
        problems.append(f"math not typeset: {typeset}")
    return problems, result


@pytest.mark.book
def test_every_page_in_a_browser(built_book):
    executable = browser_or_skip()
    # with -W --keep-going a warning fails the build but every page is still written: test_book_builds
    # reports the warnings, this test what a reader sees on each page
    assert (built_book.html / "index.html").exists(), "the book did not build:\n" + built_book.log[-3000:]
    # every page of the book: the toc's files and the pages its globs bring in (the experiment runs)
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    stems = sorted(str(p.relative_to(built_book.html).with_suffix("")) for p in (built_book.html / "book").rglob("*.html"))
    assert set(toc_files(toc)) <= set(stems), set(toc_files(toc)) - set(stems)
    assert any("/experiments/default/" in s for s in stems), "no experiment run page"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    blocked: list[str] = []
    report: dict[str, list[str]] = {}
    stats: dict[str, dict] = {}
    with book_in_browser(built_book.html, executable, blocked) as (context, base):
        for stem in stems:
            page = context.new_page()
            n_blocked = len(blocked)
            problems, stats[stem] = check_page(page, f"{base}/{stem}.html")
            problems += [f"request outside the book blocked: {u[:100]}" for u in blocked[n_blocked:]]
            page.screenshot(path=str(SCREENSHOTS / (stem.replace("/", "__") + ".png")), full_page=True)
            if problems:
                report[stem] = problems
            page.close()
    lines = [f"{stem}: {msg}" for stem, msgs in report.items() for msg in msgs]
    assert not lines, f"{len(lines)} problems on {len(report)} of {len(stems)} pages:\n" + "\n".join(lines)
    # the pages that must carry them do
    assert stats["book/experiments/summary"]["tables"] > 0
    assert all(stats[s]["maths"] > 0 for s in ["book/01_notation", "book/04_lemma1"])
    assert all(stats[s]["solutions"] >= 2 for s in ["book/01_notation", "book/02_exact_distance",
                                                     "book/03_local_substitutes", "book/04_lemma1"])
    assert len(list(SCREENSHOTS.glob("*.png"))) >= len(stems)


# Every table (and printed output) of the article that a reader could not see whole: wider than the box it sits
# in (the theme wraps tables in a horizontally scrolling box) or reaching past the article's column.
WIDE_TABLES = r"""
() => {
  const article = document.querySelector('article') || document.body;
  const right = article.getBoundingClientRect().right;
  const wide = [];
  article.querySelectorAll('table').forEach((t, i) => {
    const box = t.parentElement;
    const edge = box.getBoundingClientRect().right;
    if (t.scrollWidth > box.clientWidth + 1 || edge > right + 1)
      wide.push(`table ${i + 1} (${t.rows[0] ? t.rows[0].cells.length : 0} columns: ` +
                `${(t.rows[0] ? t.rows[0].innerText : '').replace(/\s+/g, ' ').slice(0, 60)}...) is ` +
                `${t.scrollWidth} px wide in a box of ${box.clientWidth} px`);
  });
  // printed text (a stream output) does not wrap: a line wider than the column is cut off the same way
  article.querySelectorAll('.cell_output pre').forEach((p, i) => {
    const box = p.closest('.cell_output');
    if (p.scrollWidth > box.clientWidth + 1)
      wide.push(`printed output ${i + 1} ("${p.innerText.split('\n')[0].slice(0, 60)}...") is ` +
                `${p.scrollWidth} px wide in a box of ${box.clientWidth} px`);
  });
  return {wide, tables: article.querySelectorAll('table').length};
}
"""
# the summary of Table 1 and a network's page (the one with the most records) carry the widest tables; the
# test measures them and every other experiment run page (default, paper, supplementary)
TABLE_PAGES = ["book/experiments/summary", "book/experiments/paper/mnist-clean"]


def wide_tables(context, base: str, stems: list[str]) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Per page, the tables wider than their box, and how many tables the page has."""
    wide, counts = {}, {}
    for stem in stems:
        page = context.new_page()
        page.goto(f"{base}/{stem}.html", wait_until="load")
        page.wait_for_load_state("networkidle")
        result = page.evaluate(WIDE_TABLES)
        wide[stem], counts[stem] = result["wide"], result["tables"]
        page.close()
    return wide, counts


@pytest.mark.book
def test_experiment_tables_fit_the_page(built_book):
    """At 1280 px a reader sees every column of the Table 1 pages, and every printed line, without scrolling
    sideways."""
    executable = browser_or_skip()
    assert (built_book.html / "index.html").exists(), "the book did not build:\n" + built_book.log[-3000:]
    runs = sorted(str(p.relative_to(built_book.html).with_suffix(""))
                  for p in (built_book.html / "book" / "experiments").glob("*/*.html"))
    with book_in_browser(built_book.html, executable, []) as (context, base):
        wide, counts = wide_tables(context, base, TABLE_PAGES + [s for s in runs if s not in TABLE_PAGES])
    assert all(counts[stem] >= 2 for stem in TABLE_PAGES), counts  # the tables are there to measure
    lines = [f"{stem}: {msg}" for stem, msgs in wide.items() for msg in msgs]
    assert not lines, f"{len(lines)} tables or outputs wider than the page:\n" + "\n".join(lines)


def test_without_chromium_the_test_skips_and_says_why(monkeypatch):
    import _pytest.outcomes

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(_pytest.outcomes.Skipped, match="no chromium on PATH: apt-get install chromium"):
        browser_or_skip()
    monkeypatch.setenv("CI", "true")  # in CI a missing browser is a failure, not a skip
    with pytest.raises(_pytest.outcomes.Failed, match="cannot run in CI"):
        browser_or_skip()
