"""The book builds, every chapter executes, and a failing cell fails the build."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
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


def build(source: Path, out: Path) -> subprocess.CompletedProcess:
    """`jupyter-book build` with this interpreter's environment first on PATH."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.setdefault("MPLBACKEND", "Agg")
    return subprocess.run(
        [str(JUPYTER_BOOK), "build", str(source), "--path-output", str(out), "--builder", "html"],
        capture_output=True, text=True, env=env, timeout=3600,
    )


def tiny_book(tmp: Path, chapter_name: str, chapter_text: str) -> Path:
    """A one-chapter book in `tmp` using the repository's _config.yml."""
    shutil.copy(ROOT / "_config.yml", tmp / "_config.yml")
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
def test_book_builds(tmp_path):
    # the experiment chapters are papermill runs on embedded data, made before the build (as `make book` does)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", MPLBACKEND="Agg")
    pm = subprocess.run([sys.executable, str(ROOT / "notebooks" / "run_experiments.py"), "--set", "default",
                         "--results-dir", str(tmp_path / "results")],
                        capture_output=True, text=True, env=env, timeout=3600)
    assert pm.returncode == 0, (pm.stdout + pm.stderr)[-5000:]
    assert list((ROOT / "book" / "experiments" / "default").glob("*.ipynb"))
    result = build(ROOT, tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    html = tmp_path / "_build" / "html"
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
