"""The book builds, every chapter executes, and a failing cell fails the build."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import BIN, ROOT, book_env, build

JUPYTER_BOOK = BIN / "jupyter-book"

# Sphinx warnings that mean a chapter silently did not run or the toc is broken.
# Other (benign) warnings do not fail the build.
FATAL_WARNINGS = [
    "Found an unexpected `code-cell`",  # text notebook without a jupytext header: never executed
    "Executing notebook failed",
    "toctree contains reference to nonexisting document",
    "[mystnb.glue]",  # a number the prose cites was never computed
    "[mystnb.unknown_mime_type]",
]

MYST_HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""


def toc_files(toc: dict) -> list[str]:
    """Every `file` entry of a jb-book _toc.yml (root first), without extension."""
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("sections", "chapters"):
                walk(entry.get(key))
            for part in entry.get("parts", []) or []:
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []) or []:
        walk(part.get("chapters"))
    return [re.sub(r"\.(md|ipynb)$", "", f) for f in files]


def chapter_source(stem: str, root: Path = ROOT) -> Path:
    for ext in (".md", ".ipynb"):
        if (root / (stem + ext)).exists():
            return root / (stem + ext)
    raise FileNotFoundError(f"{stem}: listed in _toc.yml but neither .md nor .ipynb exists")


def tiny_book(tmp: Path, chapter_name: str, chapter_text: str) -> Path:
    """A one-chapter book in `tmp` using the repository's _config.yml."""
    shutil.copy(ROOT / "_config.yml", tmp / "_config.yml")
    shutil.copytree(ROOT / "_ext", tmp / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp / "book").mkdir(exist_ok=True)
    shutil.copy(ROOT / "book" / "references.bib", tmp / "book" / "references.bib")
    (tmp / "_toc.yml").write_text(
        f"format: jb-book\nroot: intro\nchapters:\n  - file: {Path(chapter_name).stem}\n"
    )
    (tmp / "intro.md").write_text("# Intro\n\nA tiny book.\n")
    (tmp / chapter_name).write_text(chapter_text)
    return tmp


def ipynb(source: str) -> str:
    nb = {
        "cells": [{"cell_type": "markdown", "metadata": {}, "source": "# Chapter"},
                  {"cell_type": "code", "metadata": {}, "execution_count": None,
                   "outputs": [], "source": source}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                    "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    return json.dumps(nb)


# --- static checks (fast) ---------------------------------------------------------

def test_toc_chapters_exist_and_text_notebooks_execute():
    """Every toc entry exists; a .md chapter with code cells has a MyST-NB notebook header."""
    from myst_nb.core.read import is_myst_markdown_notebook

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert toc["format"] == "jb-book"
    for stem in toc_files(toc):
        src = chapter_source(stem)
        text = src.read_text()
        if src.suffix == ".md" and "```{code-cell}" in text:
            assert is_myst_markdown_notebook(text), (
                f"{src.relative_to(ROOT)} has code cells but no jupytext/MyST-NB header; "
                "its cells would never be executed"
            )


def test_config_fails_on_cell_errors():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["sphinx"]["local_extensions"] == {"book_checks": "_ext"}
    assert config["sphinx"]["config"]["nb_output_stderr"] == "warn"
    assert "-W" in (ROOT / "Makefile").read_text().split("jupyter-book build . --builder html", 1)[1].splitlines()[0]
    assert config["execute"]["execute_notebooks"] == "force"
    assert config["execute"]["allow_errors"] is False
    assert config["sphinx"]["config"]["nb_execution_raise_on_error"] is True
    assert config["only_build_toc_files"] is True


def test_toc_files_parser():
    toc = {"format": "jb-book", "root": "a",
           "parts": [{"chapters": [{"file": "b.md", "sections": [{"file": "c"}]},
                                   {"url": "https://example.org"}]}]}
    assert toc_files(toc) == ["a", "b", "c"]


# --- builds (slow) ----------------------------------------------------------------

@pytest.mark.book
def test_book_builds(built_book):
    pm = built_book.papermill
    assert pm.returncode == 0, (pm.stdout + pm.stderr)[-5000:]
    assert list((ROOT / "book" / "experiments" / "default").glob("*.ipynb"))
    log = built_book.log
    assert built_book.result.returncode == 0, "the build failed (with -W a warning fails it):\n" + log[-8000:]
    html = built_book.html
    assert (html / "index.html").exists()
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    for stem in toc_files(toc):
        assert (html / f"{stem}.html").exists(), f"no HTML page for chapter {stem}"
    for warning in FATAL_WARNINGS:
        assert warning not in log, f"build log contains {warning!r}:\n{log[-5000:]}"


@pytest.mark.book
@pytest.mark.parametrize("kind", ["md", "ipynb"])
def test_broken_chapter_fails_build(tmp_path, kind):
    code = 'raise RuntimeError("deliberately broken chapter")'
    if kind == "md":
        text = MYST_HEADER + "# Broken\n\n```{code-cell} python\n" + code + "\n```\n"
    else:
        text = ipynb(code)
    (tmp_path / "book").mkdir()
    book = tiny_book(tmp_path / "book", f"broken.{kind}", text)
    result = build(book, tmp_path / "out")
    log = result.stdout + result.stderr
    assert result.returncode != 0, "a chapter raising an error must fail the build:\n" + log[-3000:]
    assert "deliberately broken chapter" in log


@pytest.mark.book
def test_chapters_run_in_this_environment(tmp_path):
    """The `python3` kernel of the build is this interpreter's environment (the venv)."""
    marker = tmp_path / "prefix.txt"
    code = f"import sys, pathlib\npathlib.Path({str(marker)!r}).write_text(sys.prefix)"
    (tmp_path / "book").mkdir()
    book = tiny_book(tmp_path / "book", "where.md",
                     MYST_HEADER + "# Where\n\n```{code-cell} python\n" + code + "\n```\n")
    result = build(book, tmp_path / "out")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert Path(marker.read_text()).resolve() == Path(sys.prefix).resolve()


# --- no error, banner, repr or path reaches a page --------------------------------

def test_output_checks_find_each_problem():
    sys.path.insert(0, str(ROOT / "_ext"))
    from book_checks import machine_paths, problems_in

    paths = machine_paths(ROOT)
    assert problems_in("d_adv = 0.0312\nlayer sizes (32, 32)", paths) == []
    cases = {
        "Running HiGHS 1.16.0: Copyright (c) 2026 under MIT licence terms": "a licence banner",
        "<torch._C.Generator object at 0x7f3a2c1b9d50>": "an object repr",
        "<lsub_helpers.network.ReluNetwork object at 0x7f00aa>": "an object repr",
        "Traceback (most recent call last):\n  File ...\nValueError: bad": "a traceback",
        f"wrote {ROOT / 'x.lp'}": "the machine path",
    }
    for text, what in cases.items():
        found = problems_in(text, paths)
        assert any(f.startswith(what) for f in found), (text, found)


@pytest.mark.book
@pytest.mark.parametrize("code, expected", [
    # raised while the figure is drawn, after the cell ran: the case that used to pass silently
    ('import matplotlib.pyplot as plt\nplt.plot([0, 1])\nplt.xlabel(r"$\\underline a$")\nplt.show()',
     "error output"),
    ("import torch\ntorch.manual_seed(0)", "object repr"),
    ("import sys\nprint('careful', file=sys.stderr)", "stderr was found"),
])
def test_bad_output_fails_build(tmp_path, code, expected):
    (tmp_path / "book").mkdir()
    book = tiny_book(tmp_path / "book", "bad.md", MYST_HEADER + "# Bad\n\n```{code-cell} python\n" + code + "\n```\n")
    result = build(book, tmp_path / "out")
    log = result.stdout + result.stderr
    assert result.returncode != 0, f"an output with {expected!r} must fail the build:\n" + log[-3000:]
    assert expected in log, log[-3000:]


# --- the book's apparatus -----------------------------------------------------------

CHAPTERS = ["book/01_notation", "book/02_exact_distance", "book/03_local_substitutes", "book/04_lemma1"]


@pytest.mark.book
def test_built_book_has_its_apparatus(built_book):
    assert built_book.result.returncode == 0, built_book.log[-3000:]
    html = built_book.html
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = config["repository"]["url"].split("github.com/")[1]
    pages = {stem: (html / f"{stem}.html").read_text() for stem in CHAPTERS}
    for stem, page in pages.items():
        name = stem.split("/")[-1]
        assert f"_sources/{stem}.ipynb" in page, f"{stem}: no .ipynb download"
        assert f"_sources/{stem}.md" in page, f"{stem}: no .md download"
        assert f"mybinder.org/v2/gh/{repo}/" in page and f"{name}.md" in page, f"{stem}: no Binder button"
        assert f"colab.research.google.com/github/{repo}/" in page, f"{stem}: no Colab button"
        assert "hub/user-redirect/git-pull" in page, f"{stem}: no JupyterHub button"
        assert "btn-launch-thebe" in page and "text/x-thebe-config" in page, f"{stem}: no live-code button"
        assert f'href="{config["repository"]["url"]}"' in page, f"{stem}: no repository button"
        if "04_lemma1" not in stem:  # chapter 4 has no figure
            assert "<figcaption" in page and "Fig. " in page, f"{stem}: no numbered figure with a caption"
        assert "exercise" in page and "solution" in page, f"{stem}: no exercise/solution blocks"
        assert "_static/mathjax/tex-chtml.js" in page and "cdn.jsdelivr" not in page, f"{stem}: MathJax not local"
    assert "Fig. " in pages["book/03_local_substitutes"] and "caption" in pages["book/03_local_substitutes"]
    assert 'class="proof lemma' in pages["book/04_lemma1"] or "lemma-1" in pages["book/04_lemma1"]
    refs = (html / "book" / "references.html").read_text()
    for key in ["Tjeng", "MIPVerify", "Wong", "Madry", "Gowal", "Weng", "Zhang", "Huangfu", "Pyomo", "VNN-COMP",
                "Local Substitute Networks"]:
        assert key.lower() in refs.lower(), f"bibliography lacks {key}"
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    summary = (html / "book" / "experiments" / "summary.html").read_text()
    assert "<table" in summary


def _built_page(book: Path, out: Path, name: str) -> str:
    """Build ``book`` into ``out`` (the build must succeed) and return the HTML of page ``name``."""
    result = build(book, out)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return (out / "_build" / "html" / name).read_text()


@pytest.mark.book
def test_launch_buttons_follow_repository_url(tmp_path):
    """One repository.url drives the repository button and the Binder, JupyterHub and Colab buttons."""
    (tmp_path / "book").mkdir()
    book = tiny_book(tmp_path / "book", "nb.md", MYST_HEADER + "# Nb\n\n```{code-cell} python\n1 + 1\n```\n")
    config = yaml.safe_load((book / "_config.yml").read_text())
    config["repository"]["url"] = "https://github.com/some-org/some-book"
    (book / "_config.yml").write_text(yaml.safe_dump(config))
    page = _built_page(book, tmp_path / "out", "nb.html")
    assert "mybinder.org/v2/gh/some-org/some-book/main?urlpath=lab/tree/nb.md" in page
    assert "colab.research.google.com/github/some-org/some-book/blob/main/nb.md" in page
    # with the chapter's jupytext pair beside it (as book/0*.md have), every launch link opens the .ipynb,
    # which Colab can read; the pair itself is excluded from the build
    import jupytext

    jupytext.write(jupytext.read(book / "nb.md"), book / "nb.ipynb")
    config["exclude_patterns"] = list(config.get("exclude_patterns", [])) + ["nb.ipynb"]
    (book / "_config.yml").write_text(yaml.safe_dump(config))
    page = _built_page(book, tmp_path / "out2", "nb.html")
    assert "colab.research.google.com/github/some-org/some-book/blob/main/nb.ipynb" in page
    assert "urlpath=lab/tree/nb.ipynb" in page
    assert "repo=https%3A%2F%2Fgithub.com%2Fsome-org%2Fsome-book" in page or "some-org/some-book" in page
    assert 'href="https://github.com/some-org/some-book"' in page
    assert "OWNER" not in page


# --- the papermill command of the intro ---------------------------------------------

def intro_papermill_command() -> list[str]:
    text = (ROOT / "book" / "intro.md").read_text()
    lines = [line for line in re.findall(r"```bash\n(.*?)```", text, re.S)
             for line in line.splitlines() if line.startswith("papermill ")]
    assert len(lines) == 1, lines
    return lines[0].split()


@pytest.mark.book
def test_intro_papermill_command_runs(tmp_path):
    """The command shown in the intro, run as written from the root of a clone (here a copy of its notebooks)."""
    cmd = intro_papermill_command()
    (tmp_path / "notebooks").symlink_to(ROOT / "notebooks")
    result = subprocess.run([str(BIN / cmd[0]), *cmd[1:]], cwd=tmp_path, capture_output=True, text=True,
                            env=book_env(), timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    out = tmp_path / cmd[2]
    nb = json.loads(out.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    params = dict(zip(cmd[4::3], cmd[5::3]))
    assert (tmp_path / params["results"]).read_text().strip(), "no record written"




def test_chapter_pairs_are_in_sync():
    """book/0*.md are the sources; their jupytext .ipynb pairs (what the Colab button opens) hold the same cells,
    without outputs.  After editing a chapter: jupytext --sync book/NN_name.md"""
    import jupytext
    import nbformat

    chapters = sorted((ROOT / "book").glob("[0-9]*.md"))
    assert len(chapters) >= 4
    for md in chapters:
        text = jupytext.read(md)
        assert text.metadata.get("jupytext", {}).get("formats") == "ipynb,md:myst", md.name
        nb = nbformat.read(md.with_suffix(".ipynb"), as_version=4)
        assert [(c.cell_type, c.source) for c in text.cells] == [(c.cell_type, c.source) for c in nb.cells], md.name
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), md.name
