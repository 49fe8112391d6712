"""Automatic checks for the book's exercises, and the student version of the book.

A check never raises on a wrong answer: it returns a :class:`Feedback` that prints "Correct" or what is
still wrong, so a student's book (solutions removed) still builds.  Solution cells carry the tag
``solution``; ``python -m lsub_helpers.exercises student SRC DST`` copies the chapters without them.
"""

from __future__ import annotations

import math
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .pruning import num_steps, replacement

__all__ = [
    "Feedback",
    "check_linear_substitute",
    "check_num_steps",
    "check_lemma_condition",
    "check_unstable_count",
    "strip_solutions",
    "make_student_version",
]


@dataclass(frozen=True)
class Feedback:
    correct: bool
    message: str

    def __bool__(self) -> bool:
        return self.correct

    def __repr__(self) -> str:
        return ("Correct! " if self.correct else "Not yet: ") + self.message

    _repr_markdown_ = None

    def __str__(self) -> str:
        return repr(self)


def _call(fn: Callable, *args):
    try:
        return fn(*args), None
    except NotImplementedError:
        return None, "the function is not implemented yet"
    except Exception as exc:  # a student's bug is feedback, not a crash
        return None, f"calling it raised {type(exc).__name__}: {exc}"


def check_linear_substitute(fn: Callable[[float, float], tuple[float, float]]) -> Feedback:
    """``fn(z0, z_adv) -> (slope, offset)`` of the adversarial-preserving linear substitute."""
    gen = torch.Generator().manual_seed(0)
    cases = [(0.6, -0.5), (-0.3, 0.4), (0.2, 0.7), (-0.2, -0.9), (0.5, 0.5), (-0.4, -0.4)]
    cases += [tuple((torch.rand(2, generator=gen) * 2 - 1).tolist()) for _ in range(20)]
    for z0, za in cases:
        got, err = _call(fn, z0, za)
        if err:
            return Feedback(False, err)
        try:
            a, c = (float(v) for v in got)
        except Exception:
            return Feedback(False, f"return a pair (slope, offset), got {got!r}")
        z = torch.tensor([[z0], [za]], dtype=torch.float64)
        ea, ec = (float(v[0]) for v in replacement("linear", z[0], z[1]))
        if not (math.isclose(a, ea, abs_tol=1e-9) and math.isclose(c, ec, abs_tol=1e-9)):
            hint = " (equal pre-activations need a constant)" if z0 == za else ""
            return Feedback(False, f"for z0={z0:.3f}, z_adv={za:.3f} expected ({ea:.4f}, {ec:.4f}), got ({a:.4f}, {c:.4f}){hint}")
    return Feedback(True, f"your substitute matches on {len(cases)} neurons, including equal pre-activations")


def check_num_steps(fn: Callable[[float, float], int]) -> Feedback:
    """``fn(gamma, gamma0) -> k``: the number of steps of Algorithm 1 with the stopping rule as intended."""
    cases = [(0.9, 0.1), (0.99, 0.1), (0.99, 0.25), (0.5, 0.3), (0.9, 0.5), (0.999, 0.05)]
    for gamma, gamma0 in cases:
        got, err = _call(fn, gamma, gamma0)
        if err:
            return Feedback(False, err)
        want = num_steps(gamma, gamma0)
        if got != want:
            return Feedback(False, f"gamma={gamma}, gamma0={gamma0}: expected {want} steps, got {got}")
    return Feedback(True, "the smallest k with (1 - gamma0)^k <= 1 - gamma, in every case")


def check_lemma_condition(fn: Callable[[float, float, float, float, float], bool]) -> Feedback:
    """``fn(eps, delta, v_g, L_f, L_g) -> bool``: does Lemma 1 prove V_f(eps) >= 0?"""
    cases = [
        ((0.1, 0.2, 0.0, 5.0, 5.0), True),
        ((0.1, 0.2, -0.01, 5.0, 5.0), False),
        ((0.1, 0.1, 0.0, 5.0, 5.0), True),
        ((0.1, 0.08, 0.41, 5.0, 5.0), True),
        ((0.1, 0.08, 0.39, 5.0, 5.0), False),
        ((0.2, 0.0, 1.0, 1.0, 1.0), True),
        ((0.2, 0.0, 0.7, 1.0, 1.0), False),
    ]
    for args, want in cases:
        got, err = _call(fn, *args)
        if err:
            return Feedback(False, err)
        if bool(got) != want:
            return Feedback(False, f"eps, delta, V_g, L_f, L_g = {args}: expected {want}, got {bool(got)}")
    return Feedback(True, "both cases of the lemma, including the borders")


def check_unstable_count(got: int, bounds) -> Feedback:
    """Compare a student's count of unstable neurons with the bounds object's own count."""
    want = int(bounds.num_unstable)
    if int(got) == want:
        return Feedback(True, f"{want} neurons have lower < 0 < upper")
    return Feedback(False, f"expected {want}; count neurons with lower < 0 < upper (strictly) in every layer")


def strip_solutions(text: str) -> str:
    """Remove from a MyST notebook every code cell tagged ``solution`` and every ``:::`` block (directive)
    whose options contain ``solution`` (e.g. ``:class: dropdown solution``)."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^(`{3,}|:{3,})\{", line)
        if fence:
            marker = fence.group(1)
            j = i + 1
            while j < len(lines) and lines[j].rstrip() != marker:
                j += 1
            block = lines[i : j + 1]
            options = []
            for opt in block[1:]:
                if not opt.startswith(":") or opt.startswith(marker):
                    break
                options.append(opt)
            if any(re.match(r"^:(tags|class):.*\bsolution\b", o) for o in options):
                i = j + 1
                continue
            out.extend(block)
            i = j + 1
            continue
        out.append(line)
        i += 1
    return "".join(out)


def make_student_version(src: str | Path, dst: str | Path) -> list[Path]:
    """Copy a book (``_config.yml``, ``_toc.yml``, ``book/``) to ``dst`` with every solution removed."""
    src, dst = Path(src), Path(dst)
    written = []
    for name in ("_config.yml", "_toc.yml"):
        if (src / name).exists():
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, dst / name)
    for path in sorted((src / "book").rglob("*")):
        if path.is_dir():
            continue
        out = dst / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".md":
            out.write_text(strip_solutions(path.read_text()))
        else:
            shutil.copy2(path, out)
        written.append(out)
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] != "student":
        print("usage: python -m lsub_helpers.exercises student SRC_BOOK_ROOT DST_DIR", file=sys.stderr)
        return 2
    files = make_student_version(argv[1], argv[2])
    print(f"wrote {len(files)} files without solutions to {argv[2]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
