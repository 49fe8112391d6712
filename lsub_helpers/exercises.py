"""Automatic checks for the book's exercises, and the student version of the book.

A check never raises on a wrong answer: it returns a :class:`Feedback` that shows "Correct" or what is
still wrong (never the expected answer), and "not answered yet" for an unanswered exercise, so a
student's book (solutions removed) still builds.  Exercises and solutions are sphinx-exercise
directives (``exercise``; gated ``solution-start`` / ``solution-end`` around the solution's code cells);
``python -m lsub_helpers.exercises student SRC DST`` copies the book without the solutions.
"""

from __future__ import annotations

import html
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
    "check_interval_affine",
    "check_neuron_kind",
    "check_bisection_steps",
    "check_projection",
    "NOT_ANSWERED",
    "strip_solutions",
    "make_student_version",
]


NOT_ANSWERED = "not answered yet: write your code in the cell above, run it, then run this check again"


@dataclass(frozen=True)
class Feedback:
    """The outcome of a check: truthy when correct; ``message`` says what is right or what is still wrong,
    never what the expected answer is."""

    correct: bool
    message: str

    def __bool__(self) -> bool:
        return self.correct

    @property
    def answered(self) -> bool:
        return self.message != NOT_ANSWERED

    def __repr__(self) -> str:
        if not self.answered:
            return self.message[0].upper() + self.message[1:]
        return ("Correct! " if self.correct else "Not yet: ") + self.message

    def __str__(self) -> str:
        return repr(self)

    def _repr_html_(self) -> str:
        if not self.answered:
            color, mark, text = "#57606a", "&#9998; Not answered yet:", self.message.split(": ", 1)[1]
        elif self.correct:
            color, mark, text = "#1a7f37", "&#10004; Correct!", self.message
        else:
            color, mark, text = "#b35900", "&#10007; Not yet:", self.message
        return (f'<div class="lsub-feedback" style="border-left: 4px solid {color}; padding: 0.3em 0.8em;">'
                f'<strong style="color: {color}">{mark}</strong> {html.escape(text)}</div>')


def _call(fn: Callable, *args):
    """Call a student's function: (result, None), or (None, feedback text) if it is unanswered or raised."""
    if fn is None:
        return None, NOT_ANSWERED
    try:
        return fn(*args), None
    except NotImplementedError:
        return None, NOT_ANSWERED
    except Exception as exc:  # a student's bug is feedback, not a crash
        return None, f"calling it raised {type(exc).__name__}: {exc}"


def _relu(v: float) -> float:
    return max(v, 0.0)


def check_linear_substitute(fn: Callable[[float, float], tuple[float, float]]) -> Feedback:
    """``fn(z0, z_adv) -> (slope, offset)`` of the adversarial-preserving linear substitute.

    The feedback names the property that fails (the line misses a point it must pass through, or is not
    constant where it must be) at the first pre-activations where it fails, never the expected pair."""
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
            return Feedback(False, f"return a pair (slope, offset), got a {type(got).__name__}")
        ea, ec = (float(v[0]) for v in replacement("linear", torch.tensor([z0], dtype=torch.float64),
                                                      torch.tensor([za], dtype=torch.float64)))
        if math.isclose(a, ea, abs_tol=1e-9) and math.isclose(c, ec, abs_tol=1e-9):
            continue
        at = f"for z0={z0:.3f}, z_adv={za:.3f}"
        if z0 == za:
            return Feedback(False, f"{at} (equal pre-activations) the substitute must be the constant "
                                   "ReLU(z0): slope 0")
        if not math.isclose(a * z0 + c, _relu(z0), abs_tol=1e-9):
            return Feedback(False, f"{at} your line does not pass through (z0, ReLU(z0)): g would differ from f "
                                   "at the anchor")
        return Feedback(False, f"{at} your line does not pass through (z_adv, ReLU(z_adv)): the adversarial "
                               "point would not be preserved")
    return Feedback(True, f"your substitute matches on {len(cases)} neurons, including equal pre-activations")


def check_num_steps(fn: Callable[[float, float], int]) -> Feedback:
    """``fn(gamma, gamma0) -> k``: the number of steps of Algorithm 1 with the stopping rule as intended."""
    cases = [(0.9, 0.1), (0.99, 0.1), (0.99, 0.25), (0.5, 0.3), (0.9, 0.5), (0.999, 0.05)]
    for gamma, gamma0 in cases:
        got, err = _call(fn, gamma, gamma0)
        if err:
            return Feedback(False, err)
        want = num_steps(gamma, gamma0)
        if got == want:
            continue
        at = f"gamma={gamma}, gamma0={gamma0}"
        try:
            k = int(got)
        except Exception:
            return Feedback(False, f"{at}: return a whole number of steps, got a {type(got).__name__}")
        if k != got:
            return Feedback(False, f"{at}: return a whole number of steps (round up: a step is never split)")
        if (1 - gamma0) ** k > 1 - gamma + 1e-12:
            return Feedback(False, f"{at}: after {k} steps a share (1 - gamma0)^k = {(1 - gamma0) ** k:.4f} of the "
                                   f"ReLUs is left, more than 1 - gamma = {1 - gamma:.4f}: too few steps")
        return Feedback(False, f"{at}: {k} steps leave at most 1 - gamma, but fewer steps would already do: "
                               "the algorithm stops at the first such k")
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
            eps, delta = args[0], args[1]
            case = "case 1 (delta >= eps)" if delta >= eps else "case 2 (delta < eps)"
            border = " at the border delta = eps" if delta == eps else ""
            return Feedback(False, f"eps, delta, V_g, L_f, L_g = {args}: your answer is wrong in {case}{border}; "
                                   "re-read the condition the lemma puts on V_g there")
    return Feedback(True, "both cases of the lemma, including the borders")


def _count_unstable(bounds) -> int:
    return int(sum(int(((lo < 0) & (up > 0)).sum()) for lo, up in bounds.pre_activation))


def check_unstable_count(got, bounds) -> Feedback:
    """A student's count of unstable neurons (``lower < 0 < upper``) of ``bounds``: an int, or a function
    ``fn(bounds) -> int``.  The feedback says whether the count is too high or too low, not the count."""
    if callable(got):
        got, err = _call(got, bounds)
        if err:
            return Feedback(False, err)
    if got is None:
        return Feedback(False, NOT_ANSWERED)
    want = _count_unstable(bounds)
    try:
        n = int(got)
    except Exception:
        return Feedback(False, f"return a whole number, got a {type(got).__name__}")
    if n == want:
        return Feedback(True, f"{n} neurons have lower < 0 < upper")
    if n > want:
        return Feedback(False, "your count is too high: a neuron with lower >= 0 or upper <= 0 is stable "
                               "(strict inequalities), and only the ReLU layers count, not the logits")
    return Feedback(False, "your count is too low: count every ReLU layer of bounds.pre_activation, "
                           "with lower < 0 < upper for each neuron")


def check_interval_affine(fn: Callable) -> Feedback:
    """``fn(W, b, lower, upper) -> (lo, up)``: interval bounds of ``W @ x + b`` for ``lower <= x <= upper``
    (one IBP step).  Includes the hand-computed case of jax_verify: all-ones W, bias 2, x in [-1, 1]^3."""
    gen = torch.Generator().manual_seed(1)
    cases = [(torch.ones(2, 3, dtype=torch.float64), torch.full((2,), 2.0, dtype=torch.float64),
              -torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))]
    for _ in range(10):
        W = torch.randn(4, 3, generator=gen, dtype=torch.float64)
        b = torch.randn(4, generator=gen, dtype=torch.float64)
        lo = torch.rand(3, generator=gen, dtype=torch.float64) - 0.5
        cases.append((W, b, lo, lo + torch.rand(3, generator=gen, dtype=torch.float64)))
    for i, (W, b, lo, up) in enumerate(cases):
        got, err = _call(fn, W.clone(), b.clone(), lo.clone(), up.clone())
        if err:
            return Feedback(False, err)
        try:
            g_lo, g_up = (torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in got)
        except Exception:
            return Feedback(False, f"return a pair (lower, upper) of vectors, got a {type(got).__name__}")
        mid, rad = (up + lo) / 2, (up - lo) / 2
        e_lo, e_up = W @ mid + b - W.abs() @ rad, W @ mid + b + W.abs() @ rad
        if g_lo.shape != e_lo.shape or g_up.shape != e_up.shape:
            return Feedback(False, f"case {i + 1}: W has {W.shape[0]} rows, so each bound needs {W.shape[0]} entries")
        corners = torch.stack(torch.meshgrid(*[torch.stack([l, u]) for l, u in zip(lo, up)], indexing="ij"),
                              -1).reshape(-1, lo.numel())
        vals = corners @ W.T + b
        if bool((g_lo > vals.min(0).values + 1e-9).any() | (g_up < vals.max(0).values - 1e-9).any()):
            return Feedback(False, f"case {i + 1}: your bounds are not sound: a corner of the box maps outside "
                                   "them (a negative weight takes the input's *upper* end for the lower bound)")
        if not (torch.allclose(g_lo, e_lo, atol=1e-9) and torch.allclose(g_up, e_up, atol=1e-9)):
            return Feedback(False, f"case {i + 1}: your bounds are sound but looser than interval arithmetic "
                                   "gives: each bound should be reached at a corner of the box")
    return Feedback(True, f"exact interval bounds on {len(cases)} layers, including the all-ones one")


def check_neuron_kind(fn: Callable[[float, float], str]) -> Feedback:
    """``fn(lower, upper) -> "inactive" | "active" | "unstable"``: which MILP encoding a ReLU gets."""
    cases = [(-2.0, -0.5), (0.3, 1.2), (-0.4, 0.7), (-1.0, 0.0), (0.0, 2.0), (-1e-6, 1e-6), (0.0, 0.0)]
    for lo, up in cases:
        got, err = _call(fn, lo, up)
        if err:
            return Feedback(False, err)
        want = "inactive" if up <= 0 else "active" if lo >= 0 else "unstable"
        if got == want:
            continue
        if got not in ("inactive", "active", "unstable"):
            return Feedback(False, f'return one of "inactive", "active", "unstable"; got {got!r}')
        border = lo == 0 or up == 0
        hint = (" A bound equal to 0 decides the state: the ReLU is affine on the whole box." if border else
                " Ask: can the pre-activation be negative on the box? can it be positive?")
        return Feedback(False, f"bounds [{lo}, {up}]: {got!r} is not the right encoding.{hint}")
    return Feedback(True, "every neuron gets its encoding, the borders 0 included")


def check_bisection_steps(fn: Callable[[float, float], int]) -> Feedback:
    """``fn(d_adv, tol) -> k``: the number of midpoints bisection verifies to shrink [0, d_adv] below tol."""
    cases = [(0.1, 1e-4), (1.0, 0.25), (1.0, 0.3), (0.05, 1e-3), (0.3, 0.4), (2.0, 1e-5)]
    for d, tol in cases:
        got, err = _call(fn, d, tol)
        if err:
            return Feedback(False, err)
        want = 0 if d <= tol else math.ceil(math.log2(d / tol) - 1e-12)
        if got == want:
            continue
        try:
            k = int(got)
        except Exception:
            return Feedback(False, f"d_adv={d}, tol={tol}: return a whole number, got a {type(got).__name__}")
        width = d / 2 ** k
        if width > tol:
            return Feedback(False, f"d_adv={d}, tol={tol}: after {k} midpoints the interval is still "
                                   f"{width:.3g} wide, wider than tol: too few")
        return Feedback(False, f"d_adv={d}, tol={tol}: {k} midpoints reach the tolerance, but fewer already "
                               "do: bisection stops as soon as the interval is no wider than tol")
    return Feedback(True, "the smallest k with d_adv / 2^k <= tol, in every case")


def check_projection(fn: Callable) -> Feedback:
    """``fn(z, x0, eps, delta) -> z_tilde``: the point of B_delta(x0) used in case 2 of Lemma 1's proof."""
    gen = torch.Generator().manual_seed(2)
    for i in range(10):
        x0 = torch.rand(5, generator=gen, dtype=torch.float64) * 0.6 + 0.2
        eps = 0.05 + 0.1 * float(torch.rand(1, generator=gen))
        delta = eps * float(torch.rand(1, generator=gen)) * 0.9
        z = x0 + (torch.rand(5, generator=gen, dtype=torch.float64) * 2 - 1) * eps
        got, err = _call(fn, z.clone(), x0.clone(), eps, delta)
        if err:
            return Feedback(False, err)
        try:
            zt = torch.as_tensor(got, dtype=torch.float64).reshape(z.shape)
        except Exception:
            return Feedback(False, "return a vector of the shape of z")
        if float((zt - x0).abs().max()) > delta + 1e-12:
            return Feedback(False, f"case {i + 1}: your point is not in B_delta(x0): ||z~ - x0|| > delta")
        if float((zt - z).abs().max()) > eps - delta + 1e-12:
            return Feedback(False, f"case {i + 1}: your point is in B_delta(x0) but farther than eps - delta "
                                   "from z, so the chain of inequalities does not give (eps - delta)")
        if not torch.allclose(zt, x0 + (delta / eps) * (z - x0), atol=1e-12):
            return Feedback(False, f"case {i + 1}: your point satisfies both inequalities here but is not the "
                                   "scaling of z towards x0 that the proof uses")
    return Feedback(True, "in B_delta(x0), within eps - delta of z, on the segment from x0 to z")


def _fence(line: str) -> tuple[str, str, str] | None:
    """(marker, directive name, argument) of a MyST directive's opening fence, else None."""
    m = re.match(r"^(`{3,}|:{3,})\{([\w:-]+)\}\s*(.*?)\s*$", line)
    return (m.group(1), m.group(2), m.group(3)) if m else None


def _block_end(lines: list[str], i: int, marker: str) -> int:
    """Index of the line closing the fenced block opened at ``lines[i]`` (nested blocks use other markers)."""
    j = i + 1
    while j < len(lines) and lines[j].rstrip() != marker:
        j += 1
    return j


def _options(block: list[str], marker: str) -> list[str]:
    opts = []
    for opt in block[1:]:
        if not opt.startswith(":") or opt.startswith(marker):
            break
        opts.append(opt)
    if not opts and len(block) > 2 and block[1].strip() == "---":  # YAML options block
        for opt in block[2:]:
            if opt.strip() == "---":
                break
            opts.append(opt)
    return opts


def strip_solutions(text: str) -> str:
    """A MyST notebook without its solutions: every sphinx-exercise ``solution`` directive, every gated
    ``solution-start`` ... ``solution-end`` span (with the code cells inside it), every code cell tagged
    ``solution`` and every block whose class is ``solution``."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        fence = _fence(lines[i])
        if not fence:
            out.append(lines[i])
            i += 1
            continue
        marker, name, _ = fence
        j = _block_end(lines, i, marker)
        if name == "solution-start":
            k = j + 1
            while k < len(lines) and not ((f := _fence(lines[k])) and f[1] == "solution-end"):
                k += 1
            i = _block_end(lines, k, _fence(lines[k])[0]) + 1 if k < len(lines) else k
            continue
        block = lines[i : j + 1]
        opts = _options(block, marker)
        if name == "solution" or any(re.match(r"^\s*:?(tags|class):.*\bsolution\b", o) for o in opts):
            i = j + 1
            continue
        out.extend(block)
        i = j + 1
    return re.sub(r"\n{3,}", "\n\n", "".join(out))


def make_student_version(src: str | Path, dst: str | Path) -> list[Path]:
    """Copy a book (``_config.yml``, ``_toc.yml``, ``_ext/``, ``book/``) to ``dst`` with every solution
    removed from the chapters and ``hide_solutions: true`` in its configuration (sphinx-exercise then
    drops any solution left, e.g. in a notebook)."""
    src, dst = Path(src), Path(dst)
    written = []
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        if (src / name).exists():
            text = (src / name).read_text()
            if name == "_config.yml":
                text = re.sub(r"(?m)^(\s*)hide_solutions:\s*\S+", r"\1hide_solutions: true", text)
                if "hide_solutions:" not in text:
                    raise ValueError("_config.yml has no hide_solutions entry under sphinx.config")
            (dst / name).write_text(text)
            written.append(dst / name)
    for path in sorted([*(src / "book").rglob("*"), *(src / "_ext").glob("*.py")]):
        if path.is_dir() or "__pycache__" in path.parts or ".ipynb_checkpoints" in path.parts:
            continue
        out = dst / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".md":
            out.write_text(strip_solutions(path.read_text()))
        elif path.suffix == ".ipynb" and path.with_suffix(".md").exists():
            # a chapter's jupytext pair (for Colab): rewritten from the stripped text, never copied
            import jupytext

            nb = jupytext.reads(strip_solutions(path.with_suffix(".md").read_text()), fmt="md:myst")
            out.write_text(jupytext.writes(nb, fmt="ipynb"))
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
