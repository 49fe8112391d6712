"""Exercise checks say right or wrong (never crash), and the student version has no solutions."""

from __future__ import annotations

import math
from pathlib import Path

from lsub_helpers import exercises

ROOT = Path(__file__).resolve().parents[1]


def good_linear(z0, za):
    r = lambda v: max(v, 0.0)  # noqa: E731
    if z0 == za:
        return 0.0, r(z0)
    s = (r(za) - r(z0)) / (za - z0)
    return s, r(z0) - s * z0


def test_linear_substitute_check():
    assert exercises.check_linear_substitute(good_linear)
    wrong = lambda z0, za: ((max(za, 0) - max(z0, 0)) / (za - z0), 0.0)  # noqa: E731  (offset forgotten)
    fb = exercises.check_linear_substitute(wrong)
    assert not fb and "expected" in fb.message
    fb = exercises.check_linear_substitute(lambda z0, za: (_ for _ in ()).throw(NotImplementedError()))
    assert not fb and "not implemented" in fb.message


def test_num_steps_check():
    assert exercises.check_num_steps(lambda g, g0: max(1, math.ceil(math.log(1 - g) / math.log(1 - g0) - 1e-12)))
    # the paper's literal stopping rule stops after one step
    assert not exercises.check_num_steps(lambda g, g0: 1)


def test_lemma_check():
    def lemma(eps, delta, v, lf, lg):
        return v >= 0 if delta >= eps else v >= 2 * (lf + lg) * (eps - delta)

    assert exercises.check_lemma_condition(lemma)
    assert not exercises.check_lemma_condition(lambda eps, delta, v, lf, lg: v >= 0)
    assert "raised ZeroDivisionError" in exercises.check_lemma_condition(lambda *a: 1 / 0).message


def test_student_version_drops_every_solution(tmp_path):
    written = exercises.make_student_version(ROOT, tmp_path)
    chapters = [p for p in written if p.suffix == ".md"]
    assert chapters
    n_solutions = 0
    for p in chapters:
        original = (ROOT / p.relative_to(tmp_path)).read_text()
        n_solutions += original.count("solution]")
        student = p.read_text()
        assert "solution]" not in student and ":class: dropdown solution" not in student
        # everything else is kept: exercise and check cells stay
        assert student.count("exercises.check_") == original.count("exercises.check_")
    assert n_solutions >= 3
    assert (tmp_path / "_toc.yml").exists() and (tmp_path / "_config.yml").exists()
