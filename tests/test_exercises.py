"""Exercise checks say right or wrong (never crash, never give the answer away), every chapter has at least
two exercises, and the student version has no solutions and builds."""

from __future__ import annotations

import math
import re
import shutil

import pytest
import torch
import yaml

from conftest import ROOT, build
from lsub_helpers import exercises
from lsub_helpers.bounds import crown
from lsub_helpers.pruning import num_steps

CHAPTERS = ["01_notation", "02_exact_distance", "03_local_substitutes", "04_lemma1"]


def good_linear(z0, za):
    r = lambda v: max(v, 0.0)  # noqa: E731
    if z0 == za:
        return 0.0, r(z0)
    s = (r(za) - r(z0)) / (za - z0)
    return s, r(z0) - s * z0


def unanswered(*args):
    raise NotImplementedError


def assert_not_answered(fb):
    assert not fb and not fb.answered
    assert "Not answered yet" in repr(fb) and "Not answered yet" in fb._repr_html_()


def test_linear_substitute_check():
    assert exercises.check_linear_substitute(good_linear)
    wrong = lambda z0, za: ((max(za, 0) - max(z0, 0)) / (za - z0), 0.0)  # noqa: E731  (offset forgotten)
    fb = exercises.check_linear_substitute(wrong)
    assert not fb and "does not pass through" in fb.message
    # the expected (slope, offset) of the failing case is not in the message
    a, c = good_linear(0.6, -0.5)
    assert f"{a:.4f}" not in fb.message and f"{c:.4f}" not in fb.message
    equal_wrong = lambda z0, za: good_linear(z0, za) if z0 != za else (1.0, 0.0)  # noqa: E731
    assert "equal pre-activations" in exercises.check_linear_substitute(equal_wrong).message
    assert_not_answered(exercises.check_linear_substitute(unanswered))


def test_num_steps_check():
    assert exercises.check_num_steps(lambda g, g0: num_steps(g, g0))
    fb = exercises.check_num_steps(lambda g, g0: 1)  # the paper's literal stopping rule stops after one step
    assert not fb and "too few" in fb.message and f"expected {num_steps(0.9, 0.1)}" not in fb.message
    fb = exercises.check_num_steps(lambda g, g0: num_steps(g, g0) + 1)
    assert not fb and "fewer steps would already do" in fb.message
    assert_not_answered(exercises.check_num_steps(unanswered))


def test_lemma_check():
    def lemma(eps, delta, v, lf, lg):
        return v >= 0 if delta >= eps else v >= 2 * (lf + lg) * (eps - delta)

    assert exercises.check_lemma_condition(lemma)
    fb = exercises.check_lemma_condition(lambda eps, delta, v, lf, lg: v >= 0)
    assert not fb and "case 2" in fb.message and "expected" not in fb.message
    assert "raised ZeroDivisionError" in exercises.check_lemma_condition(lambda *a: 1 / 0).message
    assert_not_answered(exercises.check_lemma_condition(unanswered))


def test_interval_affine_check():
    def ibp(W, b, lo, up):
        mid, rad = (up + lo) / 2, (up - lo) / 2
        return W @ mid + b - W.abs() @ rad, W @ mid + b + W.abs() @ rad

    assert exercises.check_interval_affine(ibp)
    naive = lambda W, b, lo, up: (W @ lo + b, W @ up + b)  # noqa: E731  (ignores negative weights)
    fb = exercises.check_interval_affine(naive)
    assert not fb and "not sound" in fb.message
    loose = lambda W, b, lo, up: tuple(v + s for v, s in zip(ibp(W, b, lo, up), (-1, 1)))  # noqa: E731
    fb = exercises.check_interval_affine(loose)
    assert not fb and "looser" in fb.message and "-1" not in fb.message and "5" not in fb.message
    assert_not_answered(exercises.check_interval_affine(unanswered))


def test_unstable_count_check():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    from lsub_helpers.network import ReluNetwork

    f = ReluNetwork.from_torch(net, input_shape=(2,))
    b = crown(f, torch.tensor([0.5, 0.5], dtype=torch.float64), 0.3)
    n = int(b.num_unstable)
    assert 0 < n < 16
    assert exercises.check_unstable_count(n, b)
    assert exercises.check_unstable_count(lambda bounds: bounds.num_unstable, b)
    for wrong, word in [(n + 1, "too high"), (n - 1, "too low")]:
        fb = exercises.check_unstable_count(wrong, b)
        assert not fb and word in fb.message and str(n) not in fb.message
    assert_not_answered(exercises.check_unstable_count(None, b))
    assert_not_answered(exercises.check_unstable_count(unanswered, b))


def test_neuron_kind_check():
    kind = lambda lo, up: "inactive" if up <= 0 else "active" if lo >= 0 else "unstable"  # noqa: E731
    assert exercises.check_neuron_kind(kind)
    strict = lambda lo, up: "inactive" if up < 0 else "active" if lo > 0 else "unstable"  # noqa: E731
    fb = exercises.check_neuron_kind(strict)
    assert not fb and "equal to 0" in fb.message and "'inactive'" not in fb.message.split("is not")[1]
    assert_not_answered(exercises.check_neuron_kind(unanswered))


def test_bisection_steps_check():
    good = lambda d, tol: max(0, math.ceil(math.log2(d / tol) - 1e-12))  # noqa: E731
    assert exercises.check_bisection_steps(good)
    fb = exercises.check_bisection_steps(lambda d, tol: good(d, tol) - 1)
    assert not fb and "too few" in fb.message
    fb = exercises.check_bisection_steps(lambda d, tol: math.floor(math.log2(d / tol)) + 1)
    assert not fb and "fewer already do" in fb.message
    assert_not_answered(exercises.check_bisection_steps(unanswered))


def test_projection_check():
    assert exercises.check_projection(lambda z, x0, eps, delta: x0 + (delta / eps) * (z - x0))
    fb = exercises.check_projection(lambda z, x0, eps, delta: (eps / delta) * z)  # the paper's slip
    assert not fb and "not in B_delta" in fb.message
    clip = lambda z, x0, eps, delta: torch.clamp(z, x0 - delta, x0 + delta)  # noqa: E731  (also valid points)
    fb = exercises.check_projection(clip)
    assert not fb and "scaling of z towards x0" in fb.message
    assert_not_answered(exercises.check_projection(unanswered))


# --- chapters and the student version -------------------------------------------------

def test_every_chapter_has_two_checked_exercises():
    for name in CHAPTERS:
        text = (ROOT / "book" / f"{name}.md").read_text()
        labels = re.findall(r"```\{exercise\}.*\n:label: (\S+)", text)
        assert len(labels) >= 2, f"{name}: {len(labels)} exercises"
        for label in labels:
            assert f"```{{solution-start}} {label}\n:class: dropdown" in text, f"{name}: {label} has no dropdown solution"
        assert text.count("exercises.check_") >= len(labels), f"{name}: an exercise without a check cell"


def test_student_version_drops_every_solution(tmp_path):
    written = exercises.make_student_version(ROOT, tmp_path)
    for name in CHAPTERS:
        original = (ROOT / "book" / f"{name}.md").read_text()
        student = (tmp_path / "book" / f"{name}.md").read_text()
        assert "solution-start" in original
        assert not re.search(r"\{solution|:class:.*solution|tags:.*solution", student), name
        # the solutions' code is gone, the exercises, stubs and checks stay
        assert student.count("raise NotImplementedError") == original.count("raise NotImplementedError")
        assert student.count("exercises.check_") == original.count("exercises.check_")
        assert student.count("{exercise}") == original.count("{exercise}")
        assert student.count("```{code-cell}") < original.count("```{code-cell}")
        # the chapter's jupytext pair (what Colab opens) is the stripped text as a notebook, never the original
        import jupytext

        pair = tmp_path / "book" / f"{name}.ipynb"
        assert pair.exists() and "solution-start" not in pair.read_text()
        assert [c.source for c in jupytext.read(pair).cells] == [c.source for c in jupytext.reads(student, fmt="md:myst").cells]
    config = yaml.safe_load((tmp_path / "_config.yml").read_text())
    assert config["sphinx"]["config"]["hide_solutions"] is True
    assert (tmp_path / "_toc.yml").exists() and (tmp_path / "_ext" / "book_checks.py").exists()
    assert (tmp_path / "book" / "references.bib") in written


def test_strip_solutions_forms():
    text = ("a\n```{solution-start} ex\n:class: dropdown\n```\nprose\n```{code-cell} python\nx = 1\n```\n"
            "```{solution-end}\n```\nb\n```{solution} ex2\n:class: dropdown\nsecret\n```\nc\n"
            "```{code-cell} python\n:tags: [hide-cell, solution]\ny = 2\n```\nd\n")
    out = exercises.strip_solutions(text)
    assert [line for line in out.splitlines() if line] == ["a", "b", "c", "d"]


@pytest.mark.book
def test_student_book_builds(tmp_path):
    """The student copy builds with -W; an unanswered exercise says so, without an error output.  (Chapters 1
    and 3 here, to keep the test short; `make student` builds them all.)"""
    exercises.make_student_version(ROOT, tmp_path / "student")
    toc = {"format": "jb-book", "root": "book/intro",
           "chapters": [{"file": "book/01_notation"}, {"file": "book/03_local_substitutes"},
                        {"file": "book/instructors"}, {"file": "book/references"}]}
    (tmp_path / "student" / "_toc.yml").write_text(yaml.safe_dump(toc))
    result = build(tmp_path / "student", tmp_path / "out")
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    for name, n in [("01_notation", 2), ("03_local_substitutes", 2)]:
        page = (tmp_path / "out" / "_build" / "html" / "book" / f"{name}.html").read_text()
        assert page.count("Not answered yet") == n, name
        assert "Correct!" not in page and "solution-start" not in page and 'class="solution' not in page
        assert "Traceback" not in page
