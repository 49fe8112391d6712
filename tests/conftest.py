"""Test-wide settings and the one full book build that the slow tests share.

torch uses one thread (the networks in tests are small; threads only add overhead).  ``built_book`` runs the
papermill experiments and ``jupyter-book build -W`` once per session; tests/test_book_build.py checks the
build and tests/test_browser.py opens its pages in a browser, so the book is built only once per run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def book_env() -> dict:
    """The environment of a build: this interpreter's environment first on PATH.  MPLBACKEND is removed:
    set (e.g. to Agg) it would replace the kernel's inline backend and no figure would reach a page."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("MPLBACKEND", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def build(source: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """`jupyter-book build -W --keep-going` (a Sphinx warning fails the build, all are reported)."""
    return subprocess.run(
        [str(BIN / "jupyter-book"), "build", str(source), "--path-output", str(out), "--builder", "html",
         "-W", "--keep-going", *extra],
        capture_output=True, text=True, env=book_env(), timeout=3600,
    )


@dataclass(frozen=True)
class BuiltBook:
    papermill: subprocess.CompletedProcess
    result: subprocess.CompletedProcess
    html: Path

    @property
    def log(self) -> str:
        return self.result.stdout + self.result.stderr


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> BuiltBook:
    """The whole book, built once: the experiment chapters by papermill (as `make book` does), then HTML."""
    tmp = tmp_path_factory.mktemp("book")
    pm = subprocess.run([sys.executable, str(ROOT / "notebooks" / "run_experiments.py"), "--set", "default",
                         "--results-dir", str(tmp / "results")],
                        capture_output=True, text=True, env=book_env(), timeout=3600)
    if pm.returncode != 0:
        return BuiltBook(pm, pm, tmp / "_build" / "html")
    result = build(ROOT, tmp)
    return BuiltBook(pm, result, tmp / "_build" / "html")
