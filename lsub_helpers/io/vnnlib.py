"""VNN-LIB 1.0 files: reading properties and writing results in the VNN-COMP format.

A VNN-LIB file states the *unsafe* set: input constraints (a box) and output constraints; the property is
``sat`` (not robust) iff some input of the box reaches the unsafe output set.  :func:`read_vnnlib` turns
the assertions into disjunctive normal form and returns, like nnenum's ``read_vnnlib_simple``,
``[(box, [(mat, rhs), ...]), ...]``: for every input box (``box[i] = (lo, hi)`` of input ``X_i``), a
disjunction of conjunctions ``mat @ Y <= rhs``.  Supported: ``declare-const``, ``assert`` with ``and``,
``or``, ``<=``, ``>=`` (``<``/``>`` are read as non-strict), ``=`` and linear terms (``+``, ``-``, ``*`` by a
constant); an atom mixes no ``X`` and ``Y``, and an input atom bounds one variable.
:func:`write_result` writes an answer in the VNN-COMP format.  Deciding a property is
:func:`lsub_helpers.vnnlib.verify_vnnlib`.
"""

from __future__ import annotations

import gzip
import itertools
import math
import re
from pathlib import Path

import numpy as np
import torch

__all__ = ["VnnlibError", "read_vnnlib", "write_result", "format_counterexample", "check_output_activation",
           "apply_output_activation"]


class VnnlibError(ValueError):
    """A VNN-LIB file outside the supported fragment."""


# ---------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\(|\)|[^\s()]+")


def _tokens(text: str) -> list[str]:
    text = "\n".join(line.split(";", 1)[0] for line in text.splitlines())
    return _TOKEN.findall(text)


def _sexprs(tokens: list[str]) -> list:
    stack = [[]]
    for tok in tokens:
        if tok == "(":
            stack.append([])
        elif tok == ")":
            if len(stack) == 1:
                raise VnnlibError("unbalanced ')'")
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(tok)
    if len(stack) != 1:
        raise VnnlibError("unbalanced '('")
    return stack[0]


_VAR = re.compile(r"^([XY])_(\d+)$")


def _linear(term, declared: set[str]) -> tuple[dict[str, float], float]:
    """A term as ({var: coef}, const)."""
    if isinstance(term, str):
        if term in declared or _VAR.match(term):
            if term not in declared:
                raise VnnlibError(f"undeclared variable {term}")
            return {term: 1.0}, 0.0
        try:
            return {}, float(term)
        except ValueError:
            raise VnnlibError(f"unknown symbol {term!r}") from None
    if not term:
        raise VnnlibError("empty term")
    op, args = term[0], [_linear(a, declared) for a in term[1:]]
    if op == "+":
        coefs, const = {}, 0.0
        for c, k in args:
            for v, a in c.items():
                coefs[v] = coefs.get(v, 0.0) + a
            const += k
        return coefs, const
    if op == "-":
        if len(args) == 1:
            c, k = args[0]
            return {v: -a for v, a in c.items()}, -k
        (c0, k0), rest = args[0], args[1:]
        coefs = dict(c0)
        for c, k in rest:
            for v, a in c.items():
                coefs[v] = coefs.get(v, 0.0) - a
            k0 -= k
        return coefs, k0
    if op == "*":
        with_vars = [p for p in args if p[0]]
        if len(with_vars) > 1:
            raise VnnlibError("product of two variables is not linear")
        scale = math.prod(k for c, k in args if not c)
        if not with_vars:
            return {}, scale
        c, k = with_vars[0]
        return {v: a * scale for v, a in c.items()}, k * scale
    raise VnnlibError(f"unsupported operator {op!r}")


def _atoms(formula, declared) -> list[list[tuple[dict, float, bool]]]:
    """DNF of a formula: a list of conjunctions of atoms ``coefs . v + const <= 0`` (bool: is equality)."""
    if isinstance(formula, str) or not formula:
        raise VnnlibError(f"not a formula: {formula!r}")
    op = formula[0]
    if op == "and":
        parts = [_atoms(f, declared) for f in formula[1:]]
        return [sum(combo, []) for combo in itertools.product(*parts)]
    if op == "or":
        return [conj for f in formula[1:] for conj in _atoms(f, declared)]
    if op in ("<=", ">=", "<", ">", "="):
        if len(formula) != 3:
            raise VnnlibError(f"{op} needs two arguments")
        (ca, ka), (cb, kb) = _linear(formula[1], declared), _linear(formula[2], declared)
        diff = dict(ca)
        for v, a in cb.items():
            diff[v] = diff.get(v, 0.0) - a
        const = ka - kb  # lhs - rhs = diff . v + const
        if op in (">=", ">"):
            diff, const = {v: -a for v, a in diff.items()}, -const
        return [[(diff, const, op == "=")]]
    raise VnnlibError(f"unsupported connective {op!r}")


def read_vnnlib(path_or_text) -> list[tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]]:
    """``[(box, [(mat, rhs), ...]), ...]``: the unsafe set is the union over the list of
    ``{X in box, mat @ Y <= rhs}`` for any of the pairs.  ``box`` has shape (num_inputs, 2)."""
    if _is_path(path_or_text):
        path = Path(path_or_text)
        text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    else:
        text = str(path_or_text)
    declared: set[str] = set()
    asserts = []
    for expr in _sexprs(_tokens(text)):
        if not isinstance(expr, list) or not expr:
            raise VnnlibError(f"unexpected top-level token {expr!r}")
        if expr[0] == "declare-const":
            if len(expr) != 3 or expr[2] != "Real" or not _VAR.match(expr[1]):
                raise VnnlibError(f"unsupported declaration {expr!r}")
            declared.add(expr[1])
        elif expr[0] == "assert":
            asserts.append(expr[1])
        else:
            raise VnnlibError(f"unsupported command {expr[0]!r}")
    n_in = _count(declared, "X")
    n_out = _count(declared, "Y")
    conjs = [[]]
    for a in asserts:
        conjs = [c + d for c in conjs for d in _atoms(a, declared)]
    grouped: dict[bytes, tuple[np.ndarray, list]] = {}
    for conj in conjs:
        box = np.tile([-math.inf, math.inf], (n_in, 1))
        rows, rhs = [], []
        feasible = True
        for coefs, const, eq in conj:
            kinds = {_VAR.match(v).group(1) for v in coefs if coefs[v] != 0}
            if kinds == {"X"}:
                if len(coefs) != 1:
                    raise VnnlibError("only bounds on single inputs are supported, not general input constraints")
                (v, a), = coefs.items()
                i = int(_VAR.match(v).group(2))
                val = -const / a
                if eq or a > 0:
                    box[i, 1] = min(box[i, 1], val)
                if eq or a < 0:
                    box[i, 0] = max(box[i, 0], val)
            elif kinds == {"Y"}:
                row = np.zeros(n_out)
                for v, a in coefs.items():
                    row[int(_VAR.match(v).group(2))] += a
                rows.append(row)
                rhs.append(-const)
                if eq:
                    rows.append(-row)
                    rhs.append(const)
            elif not kinds:
                feasible &= const <= 0 if not eq else const == 0
            else:
                raise VnnlibError("an atom mixes inputs and outputs")
        if not feasible or np.any(box[:, 0] > box[:, 1]):
            continue
        if not rows:
            raise VnnlibError("a disjunct has no output constraint (the whole box would be unsafe)")
        key = box.tobytes()
        grouped.setdefault(key, (box, []))[1].append((np.array(rows), np.array(rhs)))
    return list(grouped.values())


def _is_path(x) -> bool:
    if isinstance(x, Path):
        return True
    return isinstance(x, str) and "\n" not in x and "(" not in x


def _count(declared: set[str], kind: str) -> int:
    idx = sorted(int(m.group(2)) for v in declared if (m := _VAR.match(v)) and m.group(1) == kind)
    if idx != list(range(len(idx))):
        raise VnnlibError(f"{kind} variables must be {kind}_0 .. {kind}_n without gaps")
    return len(idx)


# ---------------------------------------------------------------------------------------------------
# A final Softmax / LogSoftmax left out of the network
# ---------------------------------------------------------------------------------------------------

def check_output_activation(prop, dropped) -> None:
    """Raise :class:`VnnlibError` unless the property means the same on the logits as on the outputs of
    the dropped final activation (an :class:`~lsub_helpers.network.OutputActivation` or None).

    LogSoftmax subtracts one number from every output, so a row whose coefficients sum to zero has the same
    value on both.  Softmax keeps only the order of the outputs: a row ``a (Y_i - Y_j) <= 0`` (``a > 0``)
    is the same statement on both; anything else (a threshold on a probability, ...) is refused.
    """
    from ..network import OutputActivation

    if dropped is None:
        return
    if not isinstance(prop, list):
        prop = read_vnnlib(prop)
    for _, disjuncts in prop:
        for mat, rhs in disjuncts:
            for row, r in zip(mat, rhs):
                if dropped is OutputActivation.LOG_SOFTMAX:
                    ok = abs(row.sum()) <= 1e-12 * max(1.0, np.abs(row).max())
                else:
                    nz = row[row != 0]
                    ok = r == 0 and nz.size == 2 and nz.max() == -nz.min()
                if not ok:
                    raise VnnlibError(
                        f"the network ends with {dropped.value}, which was left out to verify the logits, but the "
                        f"property constrains its raw output values (row {row.tolist()} <= {r}); only comparisons "
                        "between outputs are kept by it. Export the network without the final activation and "
                        "state the property on the logits"
                    )


def apply_output_activation(y: np.ndarray, dropped) -> np.ndarray:
    """The outputs of the original network from its logits (float64)."""
    from ..network import OutputActivation

    if dropped is None:
        return y
    t = torch.as_tensor(np.asarray(y, dtype=np.float64)).reshape(1, -1)
    out = torch.softmax(t, 1) if dropped is OutputActivation.SOFTMAX else torch.log_softmax(t, 1)
    return out.numpy().reshape(np.shape(y))



def format_counterexample(x: np.ndarray, y: np.ndarray) -> str:
    """``((X_0 v)\\n (X_1 v)\\n ... (Y_0 v) ...)`` as VNN-COMP expects after the ``sat`` line."""
    parts = [f"(X_{i} {float(v) + 0.0!r})" for i, v in enumerate(np.asarray(x).reshape(-1))]
    parts += [f"(Y_{i} {float(v) + 0.0!r})" for i, v in enumerate(np.asarray(y).reshape(-1))]
    return "(" + "\n ".join(parts) + ")"


def write_result(path, result: str, x=None, y=None) -> None:
    text = result + "\n"
    if result == "sat" and x is not None:
        text += format_counterexample(x, y) + "\n"
    Path(path).write_text(text)
