"""Exact verification D: the mixed-integer model of Tjeng et al. (Appendix A.2, eqs 3-6) in Pyomo.

A :class:`~lsub_helpers.network.ReluNetwork` (original or local substitute), an input box and valid
pre-activation bounds give one mixed-integer linear program (:func:`build_model`):

* one continuous variable ``x_i`` per input, inside the box;
* a neuron that is *affine on the box* gets no variable: always active by its bounds means ``h = z``, a
  *replaced* neuron of a local substitute computes ``h = a z + c``; its expression is substituted into the
  next layer (``compose_affine=True``, the default).  Always inactive (or replaced with ``a = 0``) means a
  constant: no variable, no row;
* only an *unstable* ReLU (``l < 0 < u``) gets its pre-activation ``z`` (one row ``z = W h + b`` in terms
  of the inputs and earlier ``y``), ``y``, a binary ``q`` and the big-M rows (4)-(6):
  ``y >= z``, ``y <= z - l (1 - q)``, ``y <= u q``, ``y >= 0``.

``compose_affine=False`` keeps a variable ``z`` with its sparse row for every non-constant neuron, as
MIPVerify does.  The prototype notes expected that layout to be faster; measured here on the WK17a CNNa it
is not: composing gives 3-25x fewer nonzeros and verdict-only solves 8-350x faster (image 9 at 1.02 d:
0.16 s against 56 s; a substitute at gamma 0.99: 0.02 s against 14 s), with the same verdicts
(``benchmarks/results/milp_compose.md``).

The objective is given by an :class:`OutputSpec`, the *unsafe* output set ``{y : C y <= d}``:
:attr:`Objective.VIOLATION` minimises ``max_k (C f(x) - d)_k`` over the box (problem (2) for the margin
``f_label - f_target``: negative iff a counterexample exists) and :attr:`Objective.DISTANCE` minimises
``t = ||x - x0||_inf`` subject to ``C f(x) <= d - margin_tol`` (problem (1), MIPVerify's ``closest``).

The model is assembled as sparse matrices (fast), then written as a Pyomo ``ConcreteModel`` with
``LinearExpression`` rows, which is the model that is inspected, written out (LP/MPS) and solved:
:func:`solve_model` compiles it with Pyomo's ``LinearStandardFormCompiler`` and hands the arrays to HiGHS
(``highspy``), or passes it to any other Pyomo solver by name.  Pyomo's persistent HiGHS interface
(``solver="highs_persistent"``) solves the same model but took 4.5-5 s to load a synthetic model of 600k
nonzeros where the compile path takes about 1 s; building the Pyomo components with the cyclic garbage
collector paused (as Pyomo's own writers do) is 3x faster than with it running.

Every point a solver returns is re-checked by a float64 forward pass (:func:`check_counterexample`); a
point that fails the check is never reported as a counterexample.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from .network import ReluNetwork

__all__ = [
    "BoundsMethod",
    "Objective",
    "SolverStatus",
    "VerificationStatus",
    "OutputSpec",
    "LayerBounds",
    "TighteningReport",
    "MilpModel",
    "SolveResult",
    "Check",
    "interval_bounds",
    "compute_bounds",
    "tighten_bounds_lp",
    "build_model",
    "solve_model",
    "check_counterexample",
    "interpret",
    "input_box",
    "spec_lower_bounds",
    "unstable_counts",
]

_F64 = np.float64
_INF = math.inf
# bounds are widened by this (relative + absolute) before they enter the model, so that a bound that is
# tight up to float rounding never cuts off a true point
_BOUND_SLACK = 1e-9


class BoundsMethod(enum.Enum):
    """Pre-activation bounds for the big-M constants (``lsub_helpers.bounds``)."""

    IBP = "ibp"
    CROWN = "crown"
    FASTLIN_IBP = "fastlin_ibp"


class Objective(enum.Enum):
    VIOLATION = "violation"  # min max_k (C f(x) - d)_k over the box: problem (2) for the margin
    DISTANCE = "distance"  # min ||x - x0||_inf s.t. C f(x) <= d - margin_tol: problem (1) per target


class SolverStatus(enum.Enum):
    """How one solver run ended."""

    OPTIMAL = "optimal"  # solved to the stated gap
    INFEASIBLE = "infeasible"  # no point at all, or none better than the objective bound (cut-off)
    TARGET = "target"  # stopped at a point better than the objective target (verdict-only)
    TIME_LIMIT = "time_limit"
    ERROR = "error"  # any other ending (numerical trouble, interrupted, unbounded, ...)


class VerificationStatus(enum.Enum):
    ROBUST = "robust"  # proven: no point of the box is in the unsafe set
    NOT_ROBUST = "not_robust"  # a counterexample that passed the float64 re-check
    TIMEOUT = "timeout"
    UNKNOWN = "unknown"  # e.g. the solver's point failed the re-check and nothing was proven


# ---------------------------------------------------------------------------------------------------
# Output specification
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class OutputSpec:
    """The unsafe output set ``{y : mat @ y <= rhs}`` (all rows: a conjunction).

    Its *violation* at logits ``y`` is ``max_k (mat @ y - rhs)_k``: the set is reached iff it is ``< 0``
    (``strict``, used for misclassification: a tie is not a counterexample) or ``<= 0`` (VNN-LIB).
    """

    mat: np.ndarray  # (k, num_classes) float64
    rhs: np.ndarray  # (k,)
    strict: bool = False
    name: str = ""

    def __post_init__(self):
        mat = np.atleast_2d(np.asarray(self.mat, dtype=_F64))
        rhs = np.asarray(self.rhs, dtype=_F64).reshape(-1)
        if mat.shape[0] != rhs.size or mat.shape[0] == 0:
            raise ValueError(f"OutputSpec: {mat.shape[0]} rows but {rhs.size} right-hand sides")
        if not (np.isfinite(mat).all() and np.isfinite(rhs).all()):
            raise ValueError("OutputSpec: non-finite coefficients")
        object.__setattr__(self, "mat", mat)
        object.__setattr__(self, "rhs", rhs)

    @classmethod
    def misclassified_as(cls, label: int, target: int, num_classes: int) -> "OutputSpec":
        """``f_target(x) > f_label(x)``: violation is the margin ``f_label - f_target``."""
        if label == target:
            raise ValueError("target must differ from label")
        row = np.zeros((1, num_classes))
        row[0, label], row[0, target] = 1.0, -1.0
        return cls(row, np.zeros(1), strict=True, name=f"target {target}")

    @property
    def num_rows(self) -> int:
        return self.mat.shape[0]

    def violation(self, logits) -> np.ndarray:
        """``max_k (mat y - rhs)_k`` for a batch of logits (B, num_classes)."""
        y = np.atleast_2d(np.asarray(logits, dtype=_F64))
        return (y @ self.mat.T - self.rhs).max(axis=1)

    def reached(self, logits) -> np.ndarray:
        v = self.violation(logits)
        return v < 0 if self.strict else v <= 0


def input_box(x0, eps: float, domain=(0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """The L-inf ball of radius ``eps`` around ``x0`` intersected with ``domain``, flattened."""
    x0 = np.asarray(torch.as_tensor(x0, dtype=torch.float64), dtype=_F64).reshape(-1)
    lo_d, hi_d = (-_INF, _INF) if domain is None else (float(domain[0]), float(domain[1]))
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    lower = np.maximum(x0 - eps, lo_d)
    upper = np.minimum(x0 + eps, hi_d)
    if np.any(lower > upper):
        raise ValueError("x0 lies outside the domain")
    return lower, upper


# ---------------------------------------------------------------------------------------------------
# Bounds
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerBounds:
    """Pre-activation bounds per ReLU layer (same attribute as ``lsub_helpers.bounds.Bounds``), and, if
    a spec matrix was given to :func:`compute_bounds`, bounds of its rows ``C f(x)`` in ``output``."""

    pre_activation: tuple[tuple[np.ndarray, np.ndarray], ...]
    method: str = ""
    output: tuple[np.ndarray, np.ndarray] | None = None


def _as_numpy_bounds(bounds) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    out = []
    for lo, hi in bounds.pre_activation:
        lo = np.asarray(torch.as_tensor(lo, dtype=torch.float64).cpu(), dtype=_F64).reshape(-1)
        hi = np.asarray(torch.as_tensor(hi, dtype=torch.float64).cpu(), dtype=_F64).reshape(-1)
        out.append((lo, hi))
    return tuple(out)


@dataclass(frozen=True, eq=False)
class _Mats:
    """The network as sparse float64 matrices (computed once per top-level call)."""

    weights: tuple[sp.csr_matrix, ...]
    biases: tuple[np.ndarray, ...]
    replaced: tuple[np.ndarray, ...]
    slope: tuple[np.ndarray, ...]
    offset: tuple[np.ndarray, ...]

    @staticmethod
    def of(net: ReluNetwork) -> "_Mats":
        ws = tuple(sp.csr_matrix(s.sparse_weight(), dtype=_F64) for s in net.stages)
        bs = tuple(np.asarray(s.bias, dtype=_F64).reshape(-1) for s in net.stages)
        rep = tuple(np.asarray(a.replaced, dtype=bool) for a in net.activations)
        slo = tuple(np.asarray(a.slope, dtype=_F64) for a in net.activations)
        off = tuple(np.asarray(a.offset, dtype=_F64) for a in net.activations)
        return _Mats(ws, bs, rep, slo, off)

    def activation_range(self, k: int, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Range of the (possibly substituted) activation of layer ``k`` on ``[lo, hi]``."""
        rl, rh = np.maximum(lo, 0.0), np.maximum(hi, 0.0)
        a, c, m = self.slope[k], self.offset[k], self.replaced[k]
        sl = np.minimum(a * lo, a * hi) + c
        sh = np.maximum(a * lo, a * hi) + c
        return np.where(m, sl, rl), np.where(m, sh, rh)


def _interval_step(w: sp.csr_matrix, b: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    mid, rad = (lo + hi) / 2, (hi - lo) / 2
    c = w @ mid + b
    r = abs(w) @ rad
    return c - r, c + r


def interval_bounds(net: ReluNetwork, lower, upper, *, _mats: _Mats | None = None) -> LayerBounds:
    """Interval arithmetic (IBP) on the box ``[lower, upper]``: the simplest valid bounds."""
    mats = _mats or _Mats.of(net)
    lo = np.asarray(lower, dtype=_F64).reshape(-1)
    hi = np.asarray(upper, dtype=_F64).reshape(-1)
    pre = []
    for k in range(len(mats.replaced)):
        zl, zh = _interval_step(mats.weights[k], mats.biases[k], lo, hi)
        pre.append((zl, zh))
        lo, hi = mats.activation_range(k, zl, zh)
    return LayerBounds(tuple(pre), "ibp")


def compute_bounds(net: ReluNetwork, lower, upper, method: BoundsMethod | str = BoundsMethod.CROWN, *,
                   spec: np.ndarray | None = None) -> LayerBounds:
    """Pre-activation bounds on the box by ``method`` (``lsub_helpers.bounds``), as float64 numpy.

    The result is intersected with interval arithmetic, so it is never looser than IBP.  With ``spec``
    (a ``(k, num_classes)`` matrix), ``output`` holds bounds of ``spec @ f(x)`` by the same method.
    """
    method = BoundsMethod(method)
    mats = _Mats.of(net)
    ibp = interval_bounds(net, lower, upper, _mats=mats)
    if method is BoundsMethod.IBP and spec is None:
        return ibp
    from . import bounds as bounds_mod

    fn = {BoundsMethod.IBP: bounds_mod.ibp_box, BoundsMethod.CROWN: bounds_mod.crown_box,
          BoundsMethod.FASTLIN_IBP: bounds_mod.fastlin_ibp_box}[method]
    lower_t = torch.as_tensor(np.asarray(lower, dtype=_F64)).reshape(net.input_shape)
    upper_t = torch.as_tensor(np.asarray(upper, dtype=_F64)).reshape(net.input_shape)
    spec_t = None if spec is None else torch.as_tensor(np.atleast_2d(np.asarray(spec, dtype=_F64)))
    got = fn(net, lower_t, upper_t, spec=spec_t)
    pre = tuple((np.maximum(a, c), np.minimum(b, d)) for (a, b), (c, d) in zip(_as_numpy_bounds(got), ibp.pre_activation))
    out = None
    if spec is not None:
        out = tuple(np.asarray(t.detach().cpu().numpy(), dtype=_F64).reshape(-1) for t in got.output)
    return LayerBounds(pre, method.value, out)


def _split_layer(mats: _Mats, k: int, lo: np.ndarray, hi: np.ndarray):
    """(const, linear, relu) masks of layer ``k``: constant on the box (stable inactive, or replaced with
    slope 0), affine in its pre-activation (stable active, or replaced), or an unstable ReLU."""
    rep = mats.replaced[k]
    const = np.where(rep, mats.slope[k] == 0, hi <= 0)
    relu = ~rep & (lo < 0) & (hi > 0)
    linear = ~const & ~relu
    return const, linear, relu


def _split(bounds: Sequence[tuple[np.ndarray, np.ndarray]], mats: _Mats):
    return [_split_layer(mats, k, lo, hi) for k, (lo, hi) in enumerate(bounds)]


def unstable_counts(net_or_mats, bounds) -> tuple[int, ...]:
    """Unstable, not replaced neurons per layer (= binaries of the MILP)."""
    mats = net_or_mats if isinstance(net_or_mats, _Mats) else _Mats.of(net_or_mats)
    pre = bounds if isinstance(bounds, tuple) and bounds and isinstance(bounds[0], tuple) else _as_numpy_bounds(bounds)
    return tuple(int(r.sum()) for _, _, r in _split(pre, mats))


# ---------------------------------------------------------------------------------------------------
# Assembly as sparse matrices
# ---------------------------------------------------------------------------------------------------

class _Builder:
    """Collects columns and rows of ``row_lo <= A v <= row_hi``, ``col_lo <= v <= col_hi``."""

    def __init__(self):
        self.col_lo: list[np.ndarray] = []
        self.col_hi: list[np.ndarray] = []
        self.col_int: list[np.ndarray] = []
        self.n_cols = 0
        self.blocks: list[sp.coo_matrix] = []
        self.row_lo: list[np.ndarray] = []
        self.row_hi: list[np.ndarray] = []
        self.n_rows = 0
        self.col_groups: list[tuple[str, int, int, np.ndarray]] = []  # name, start, stop, index labels
        self.row_groups: list[tuple[str, int, int, np.ndarray]] = []

    def cols(self, name: str, labels: np.ndarray, lo, hi, integer: bool = False) -> np.ndarray:
        n = len(labels)
        lo = np.broadcast_to(np.asarray(lo, dtype=_F64), (n,)).copy()
        hi = np.broadcast_to(np.asarray(hi, dtype=_F64), (n,)).copy()
        idx = np.arange(self.n_cols, self.n_cols + n)
        self.col_lo.append(lo)
        self.col_hi.append(hi)
        self.col_int.append(np.full(n, integer))
        self.col_groups.append((name, self.n_cols, self.n_cols + n, np.asarray(labels)))
        self.n_cols += n
        return idx

    def rows(self, name: str, labels: np.ndarray, rows, cols, vals, lo, hi) -> None:
        """Rows given as triplets with row numbers local to this block (0..len(labels)-1)."""
        n = len(labels)
        if n == 0:
            return
        rows = np.asarray(rows, dtype=np.int64) + self.n_rows
        self.blocks.append(sp.coo_matrix((np.asarray(vals, dtype=_F64), (rows, np.asarray(cols, dtype=np.int64)))))
        self.row_lo.append(np.broadcast_to(np.asarray(lo, dtype=_F64), (n,)).copy())
        self.row_hi.append(np.broadcast_to(np.asarray(hi, dtype=_F64), (n,)).copy())
        self.row_groups.append((name, self.n_rows, self.n_rows + n, np.asarray(labels)))
        self.n_rows += n

    def matrix(self) -> sp.csr_matrix:
        if not self.blocks:
            return sp.csr_matrix((0, self.n_cols))
        rows = np.concatenate([b.row for b in self.blocks])
        cols = np.concatenate([b.col for b in self.blocks])
        vals = np.concatenate([b.data for b in self.blocks])
        a = sp.csr_matrix((vals, (rows, cols)), shape=(self.n_rows, self.n_cols))
        a.sum_duplicates()
        a.eliminate_zeros()
        return a


def _widen(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return lo - _BOUND_SLACK * (1 + np.abs(lo)), hi + _BOUND_SLACK * (1 + np.abs(hi))


@dataclass(frozen=True, eq=False)
class _Hidden:
    """The hidden part of an encoding: last layer's activations as ``h = P v + q``."""

    builder: _Builder
    P: sp.csr_matrix
    q: np.ndarray
    input_cols: np.ndarray
    layers: tuple[dict, ...]  # per layer: const/linear/relu masks, z/y/q columns


def _encode_hidden(mats: _Mats, bounds, lower: np.ndarray, upper: np.ndarray, n_layers: int,
                   compose_affine: bool = True) -> _Hidden:
    """Rows and columns of the first ``n_layers`` layers.

    With ``compose_affine`` a neuron that is affine on the box (stable active, or replaced by a non-constant
    affine function) gets no variable of its own: its output is substituted into the next layer as an
    affine expression of earlier variables.  The feasible set is the same (its bound rows were implied);
    the model is smaller, which matters for substitutes where most neurons are affine.  Only unstable
    ReLUs keep a pre-activation variable ``z`` (with a defining row) and an output ``y``.
    """
    b = _Builder()
    n0 = lower.size
    xcols = b.cols("x", np.arange(n0), lower, upper)
    P = sp.csr_matrix((np.ones(n0), (np.arange(n0), xcols)), shape=(n0, b.n_cols))
    q = np.zeros(n0)
    layers = []
    for k in range(n_layers):
        w, bias = mats.weights[k], mats.biases[k]
        lo, hi = bounds[k]
        const, linear, relu = _split_layer(mats, k, lo, hi)
        nz = np.flatnonzero(relu if compose_affine else ~const)
        wl, wh = _widen(lo[nz], hi[nz])
        zcols = b.cols(f"z{k}", nz, wl, wh)
        # z - W[nz] (P v + q) = b[nz]
        e = (w[nz] @ P).tocoo()
        rhs = bias[nz] + w[nz] @ q
        rows = np.concatenate([np.arange(nz.size), e.row])
        cols = np.concatenate([zcols, e.col])
        vals = np.concatenate([np.ones(nz.size), -e.data])
        b.rows(f"affine{k}", nz, rows, cols, vals, rhs, rhs)
        ri = np.flatnonzero(relu)
        zmap = np.full(lo.size, -1)
        zmap[nz] = zcols
        zr = zmap[ri]
        rl, rh = _widen(lo[ri], hi[ri])
        ycols = b.cols(f"y{k}", ri, 0.0, rh)
        qcols = b.cols(f"q{k}", ri, 0.0, 1.0, integer=True)
        m = ri.size
        loc = np.arange(m)
        # (5) y - z >= 0
        b.rows(f"relu_ge{k}", ri, np.r_[loc, loc], np.r_[ycols, zr], np.r_[np.ones(m), -np.ones(m)], 0.0, _INF)
        # (4) y - z - l q <= -l
        b.rows(f"relu_le_z{k}", ri, np.r_[loc, loc, loc], np.r_[ycols, zr, qcols],
               np.r_[np.ones(m), -np.ones(m), -rl], -_INF, -rl)
        # (6) y - u q <= 0
        b.rows(f"relu_le_u{k}", ri, np.r_[loc, loc], np.r_[ycols, qcols], np.r_[np.ones(m), -rh], -_INF, 0.0)
        # activations of this layer as h = P v + q
        a = np.where(mats.replaced[k], mats.slope[k], 1.0)
        c = np.where(mats.replaced[k], mats.offset[k], 0.0)
        lin = np.flatnonzero(linear)
        ymap = np.full(lo.size, -1)
        ymap[ri] = ycols
        q_new = np.zeros(lo.size)
        q_new[const] = np.where(mats.replaced[k][const], mats.offset[k][const], 0.0)
        if compose_affine:  # h_lin = a * (W[lin] (P v + q) + b[lin]) + c
            p_lin = sp.csr_matrix(sp.diags(a[lin]) @ (w[lin] @ P))
            p_lin.resize(lin.size, b.n_cols)
            p_lin = p_lin.tocoo()
            prow = np.r_[lin[p_lin.row], ri]
            pcol = np.r_[p_lin.col, ymap[ri]]
            pval = np.r_[p_lin.data, np.ones(m)]
            q_new[lin] = a[lin] * (w[lin] @ q + bias[lin]) + c[lin]
        else:
            prow = np.r_[lin, ri]
            pcol = np.r_[zmap[lin], ymap[ri]]
            pval = np.r_[a[lin], np.ones(m)]
            q_new[lin] = c[lin]
        P = sp.csr_matrix((pval, (prow, pcol)), shape=(lo.size, b.n_cols))
        q = q_new
        layers.append(dict(const=const, linear=linear, relu=relu, zcols=zmap, ycols=ymap, qcols=qcols, relu_idx=ri))
    return _Hidden(b, P, q, xcols, tuple(layers))


def _output_rows(mats: _Mats, hidden: _Hidden, stage: int, mat: np.ndarray | sp.spmatrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """``mat @ (W_stage (P v + q) + b_stage)`` as ``G v + g0``."""
    w, bias = mats.weights[stage], mats.biases[stage]
    mw = sp.csr_matrix(mat) @ w
    P = sp.csr_matrix(hidden.P, shape=(hidden.P.shape[0], hidden.builder.n_cols))
    g = sp.csr_matrix(mw @ P)
    g0 = np.asarray(mw @ (hidden.q), dtype=_F64).reshape(-1) + np.asarray(sp.csr_matrix(mat) @ bias).reshape(-1)
    return g, g0


# ---------------------------------------------------------------------------------------------------
# LP-based tightening (MIPVerify's `lp` tightening)
# ---------------------------------------------------------------------------------------------------

def _highs(threads: int, time_limit: float | None = None):
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", int(threads))
    if time_limit is not None:
        h.setOptionValue("time_limit", float(max(time_limit, 1e-3)))
    return h


def _pass_lp(h, a: sp.csr_matrix, row_lo, row_hi, col_lo, col_hi, cost=None, integer=None, offset: float = 0.0):
    import highspy

    lp = highspy.HighsLp()
    n_rows, n_cols = a.shape
    lp.num_col_ = n_cols
    lp.num_row_ = n_rows
    lp.col_cost_ = np.zeros(n_cols) if cost is None else np.asarray(cost, dtype=_F64)
    lp.offset_ = float(offset)
    inf = highspy.kHighsInf
    lp.col_lower_ = np.where(np.isfinite(col_lo), col_lo, -inf)
    lp.col_upper_ = np.where(np.isfinite(col_hi), col_hi, inf)
    lp.row_lower_ = np.where(np.isfinite(row_lo), row_lo, -inf)
    lp.row_upper_ = np.where(np.isfinite(row_hi), row_hi, inf)
    csc = sp.csc_matrix(a)
    csc.sort_indices()
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = csc.indptr.astype(np.int32)
    lp.a_matrix_.index_ = csc.indices.astype(np.int32)
    lp.a_matrix_.value_ = csc.data.astype(_F64)
    lp.a_matrix_.num_col_ = n_cols
    lp.a_matrix_.num_row_ = n_rows
    if integer is not None and np.any(integer):
        lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous for i in integer]
    h.passModel(lp)


class _RowLP:
    """The LP relaxation of an encoding plus extra rows ``G v + g0``; minimise / maximise each row."""

    def __init__(self, hidden: _Hidden, g: sp.csr_matrix, g0: np.ndarray, threads: int, max_of_rows: bool = False):
        import highspy

        b = hidden.builder
        a = b.matrix()
        row_lo = np.concatenate(b.row_lo) if b.row_lo else np.zeros(0)
        row_hi = np.concatenate(b.row_hi) if b.row_hi else np.zeros(0)
        col_lo, col_hi = np.concatenate(b.col_lo), np.concatenate(b.col_hi)
        g = sp.csr_matrix(g, shape=(g.shape[0], b.n_cols))
        if max_of_rows:  # one objective row: s >= g_k v + g0_k for all k
            k = g.shape[0]
            a = sp.vstack([sp.hstack([a, sp.csr_matrix((a.shape[0], 1))]), sp.hstack([g, -np.ones((k, 1))])]).tocsr()
            row_lo, row_hi = np.r_[row_lo, np.full(k, -_INF)], np.r_[row_hi, -g0]
            col_lo, col_hi = np.r_[col_lo, -_INF], np.r_[col_hi, _INF]
            g = sp.csr_matrix(([1.0], ([0], [b.n_cols])), shape=(1, b.n_cols + 1))
            g0 = np.zeros(1)
        self.g, self.g0 = g, g0
        self.h = _highs(threads)
        _pass_lp(self.h, a, row_lo, row_hi, col_lo, col_hi)
        self._kOptimal = highspy.HighsModelStatus.kOptimal
        self.n = g.shape[1]
        self.all_idx = np.arange(self.n, dtype=np.int32)

    def extreme(self, i: int, sense: int, time_limit: float) -> float | None:
        """``min`` (sense=+1) or ``-max`` ... returns the optimum of ``sense * (g_i v + g0_i)`` or None."""
        row = self.g.getrow(i)
        cost = np.zeros(self.n)
        cost[row.indices] = sense * row.data
        self.h.changeColsCost(self.n, self.all_idx, cost)
        self.h.setOptionValue("time_limit", float(max(time_limit, 1e-3)))
        self.h.run()
        if self.h.getModelStatus() != self._kOptimal:
            return None
        return self.h.getInfo().objective_function_value + sense * self.g0[i]


@dataclass(frozen=True)
class TighteningReport:
    unstable_before: tuple[int, ...]
    unstable_after: tuple[int, ...]
    lps_solved: int
    time_s: float
    complete: bool  # False if the time budget ran out before every unstable neuron was tightened


def tighten_bounds_lp(net: ReluNetwork, lower, upper, bounds, *, time_limit: float = 60.0, threads: int = 1,
                      _mats: _Mats | None = None) -> tuple[LayerBounds, TighteningReport]:
    """Tighten the bounds of every unstable neuron by two LPs (min and max of its pre-activation over the
    LP relaxation of the layers before it, which already use the tightened bounds), layer by layer.

    The first layer is affine in the input, so its interval bounds are already exact and are kept.
    Stops when ``time_limit`` seconds are used (the remaining neurons keep their bounds).  An LP bound is
    loosened by ``1e-7 (1 + |b|)`` against the LP solver's tolerances before it is used.
    """
    t0 = time.perf_counter()
    mats = _mats or _Mats.of(net)
    lower = np.asarray(lower, dtype=_F64).reshape(-1)
    upper = np.asarray(upper, dtype=_F64).reshape(-1)
    pre = [(lo.copy(), hi.copy()) for lo, hi in _as_numpy_bounds(bounds)]
    before = unstable_counts(mats, tuple(pre))
    solved, complete = 0, True
    for k in range(1, len(pre)):
        lo, hi = pre[k]
        cand = np.flatnonzero(~mats.replaced[k] & (lo < 0) & (hi > 0))
        if cand.size == 0:
            continue
        left = time_limit - (time.perf_counter() - t0)
        if left <= 0:
            complete = False
            break
        hidden = _encode_hidden(mats, pre, lower, upper, k)
        sel = sp.csr_matrix((np.ones(cand.size), (np.arange(cand.size), cand)), shape=(cand.size, lo.size))
        g, g0 = _output_rows(mats, hidden, k, sel)
        lp = _RowLP(hidden, g, g0, threads)
        for j, i in enumerate(cand):
            for sense in (1, -1):
                left = time_limit - (time.perf_counter() - t0)
                if left <= 0:
                    complete = False
                    break
                v = lp.extreme(j, sense, left)
                solved += 1
                if v is None:
                    continue
                v = sense * v
                pad = 1e-7 * (1 + abs(v))
                if sense == 1:
                    lo[i] = max(lo[i], v - pad)
                else:
                    hi[i] = min(hi[i], v + pad)
                if lo[i] >= 0 or hi[i] <= 0:
                    break  # stable now: the other side is not needed
            if not complete:
                break
        if not complete:
            break
    after = unstable_counts(mats, tuple(pre))
    method = (getattr(bounds, "method", "") or "bounds") + "+lp"
    rep = TighteningReport(before, after, solved, time.perf_counter() - t0, complete)
    return LayerBounds(tuple(pre), method), rep


def spec_lower_bounds(net: ReluNetwork, lower, upper, bounds, specs: Sequence[OutputSpec], *, screen: str = "lp",
                      row_lower: np.ndarray | None = None, threads: int = 1, time_limit: float = 30.0,
                      _mats: _Mats | None = None) -> np.ndarray:
    """A lower bound on the violation ``min_x max_k (C f(x) - d)_k`` of each spec over the box.

    Interval arithmetic on the last affine layer first; where that cannot show the spec unreachable, the LP
    relaxation of the whole model (the MILP without integrality) for the spec's rows (``screen="lp"``;
    ``"interval"``: only the first; ``"none"``: all ``-inf``).  ``row_lower``: known lower bounds of the rows
    ``mat @ y - rhs`` of all specs, stacked in order (e.g. CROWN's ``LayerBounds.output[0]`` minus ``rhs``).  A spec whose bound is ``> 0`` (``>= 0`` if
    strict) needs no MILP.  ``-inf`` where an LP failed.
    """
    if screen not in ("lp", "interval", "none"):
        raise ValueError(f"screen must be 'lp', 'interval' or 'none', got {screen!r}")
    if screen == "none":
        return np.full(len(specs), -_INF)
    mats = _mats or _Mats.of(net)
    pre = _as_numpy_bounds(bounds)
    lower = np.asarray(lower, dtype=_F64).reshape(-1)
    upper = np.asarray(upper, dtype=_F64).reshape(-1)
    if pre:
        hl, hh = mats.activation_range(len(pre) - 1, *pre[-1])
    else:
        hl, hh = lower, upper
    out = np.empty(len(specs))
    for j, spec in enumerate(specs):
        lo, _ = _interval_step(sp.csr_matrix(spec.mat @ mats.weights[-1]), spec.mat @ mats.biases[-1] - spec.rhs, hl, hh)
        out[j] = lo.max()
    if row_lower is not None:
        start = 0
        for j, spec in enumerate(specs):
            out[j] = max(out[j], float(np.max(row_lower[start:start + spec.num_rows])))
            start += spec.num_rows
    need = [j for j, s in enumerate(specs) if not _unreachable(out[j], s)]
    if screen == "lp" and need:
        t0 = time.perf_counter()
        hidden = _encode_hidden(mats, pre, lower, upper, len(pre))
        single = [j for j in need if specs[j].num_rows == 1]
        jobs = []  # (spec index, LP, row)
        if single:  # one LP, one objective row per spec
            g, g0 = _output_rows(mats, hidden, len(pre), np.vstack([specs[j].mat for j in single]))
            g0 = g0 - np.array([specs[j].rhs[0] for j in single])
            lp_all = _RowLP(hidden, g, g0, threads)
            jobs += [(j, lp_all, r) for r, j in enumerate(single)]
        for j in need:
            if specs[j].num_rows > 1:  # min s with rows <= s: s is an extra column
                g, g0 = _output_rows(mats, hidden, len(pre), specs[j].mat)
                jobs.append((j, _RowLP(hidden, g, g0 - specs[j].rhs, threads, max_of_rows=True), 0))
        for j, lp_j, r in jobs:
            left = time_limit - (time.perf_counter() - t0)
            if left <= 0:
                break
            v = lp_j.extreme(r, 1, left)
            if v is None:
                out[j] = -_INF
            else:
                out[j] = max(out[j], v - 1e-7 * (1 + abs(v)))
    return out


def _unreachable(lower_bound: float, spec: OutputSpec) -> bool:
    return lower_bound > 0 or (spec.strict and lower_bound >= 0)


# ---------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class MilpModel:
    """A built verification MILP: the Pyomo model plus what is needed to solve and re-check it.

    ``pyomo`` has the variables ``x`` (inputs, indexed by flat input index), ``z{k}`` (pre-activations of
    ReLU layer ``k`` that are not constant, indexed by neuron), ``y{k}`` and binary ``q{k}`` (unstable
    neurons only), ``t`` (distance objective) or ``s`` (violation of a multi-row spec); the constraint
    blocks ``affine{k}`` (``z = W h + b``), ``relu_ge{k}``, ``relu_le_z{k}``, ``relu_le_u{k}`` (eqs 4-6),
    ``spec`` and ``dist_le``/``dist_ge`` (``|x - x0| <= t``), and the objective ``objective``.
    """

    pyomo: object  # pyomo.environ.ConcreteModel
    objective: Objective
    spec: OutputSpec
    lower: np.ndarray  # input box, flat
    upper: np.ndarray
    x0: np.ndarray | None
    radius: float | None  # DISTANCE: upper bound on t
    margin_tol: float
    num_binaries: int
    num_continuous: int
    num_rows: int
    num_nonzeros: int
    unstable: tuple[int, ...]  # binaries per ReLU layer
    replaced: tuple[int, ...]  # substituted neurons per layer
    stable_active: tuple[int, ...]
    stable_inactive: tuple[int, ...]
    assemble_time_s: float  # sparse matrices
    pyomo_time_s: float  # Pyomo components
    input_shape: tuple[int, ...]
    _columns: tuple  # VarData per column, in matrix order
    _input_cols: np.ndarray
    _pre_bounds: tuple  # the bounds used (numpy), for re-checks and polishing

    @property
    def build_time_s(self) -> float:
        return self.assemble_time_s + self.pyomo_time_s

    @property
    def counts(self) -> dict:
        return dict(binaries=self.num_binaries, continuous=self.num_continuous, rows=self.num_rows,
                    nonzeros=self.num_nonzeros, unstable=self.unstable)

    def write(self, path) -> None:
        """Write the model in a format Pyomo knows by the suffix (``.lp``, ``.mps``, ``.nl``, ...)."""
        self.pyomo.write(str(path), io_options={"symbolic_solver_labels": True})

    def __repr__(self) -> str:
        return (f"MilpModel({self.objective.value}, {self.spec.name or 'spec'}: {self.num_binaries} binaries, "
                f"{self.num_continuous} continuous, {self.num_rows} rows, {self.num_nonzeros} nonzeros)")


def _spec_for(net: ReluNetwork, spec, label, target) -> OutputSpec:
    if spec is not None:
        if label is not None or target is not None:
            raise ValueError("give either spec or label/target")
        if spec.mat.shape[1] != net.num_classes:
            raise ValueError(f"spec has {spec.mat.shape[1]} columns, the network {net.num_classes} outputs")
        return spec
    if label is None or target is None:
        raise ValueError("need spec, or label and target")
    return OutputSpec.misclassified_as(net.check_label(label), net.check_label(target), net.num_classes)


def build_model(
    net: ReluNetwork,
    lower,
    upper,
    bounds,
    *,
    label: int | None = None,
    target: int | None = None,
    spec: OutputSpec | None = None,
    objective: Objective | str = Objective.VIOLATION,
    x0=None,
    radius: float | None = None,
    margin_tol: float = 0.0,
    compose_affine: bool = True,
    _mats: _Mats | None = None,
) -> MilpModel:
    """The MILP of Appendix A.2 on the input box ``[lower, upper]`` with pre-activation ``bounds``.

    ``bounds`` must be valid on the box (an object with ``pre_activation``, e.g. from
    :func:`compute_bounds`).  The unsafe set is ``spec`` or "``target`` beats ``label``".
    ``Objective.VIOLATION`` minimises ``max_k (C f(x) - d)_k`` (the margin ``f_label - f_target``);
    ``Objective.DISTANCE`` minimises ``t >= ||x - x0||_inf``, ``t <= radius``, subject to
    ``C f(x) <= d - margin_tol``.  With the default ``margin_tol = 0`` the optimum is the exact distance
    (its bound is a sound lower bound) and the solver's point lies on the boundary, where the float64
    re-check may reject it; :func:`interpret` then takes the best point of its linear region with a small
    slack.  ``compose_affine=False`` keeps a variable for every non-constant neuron (MIPVerify's layout).
    """
    t0 = time.perf_counter()
    objective = Objective(objective)
    spec = _spec_for(net, spec, label, target)
    mats = _mats or _Mats.of(net)
    lower = np.asarray(lower, dtype=_F64).reshape(-1).copy()
    upper = np.asarray(upper, dtype=_F64).reshape(-1).copy()
    if lower.size != net.input_size or upper.size != net.input_size or np.any(lower > upper):
        raise ValueError("lower/upper must be flat boxes of the input size with lower <= upper")
    pre = _as_numpy_bounds(bounds)
    if len(pre) != len(net.activations) or any(lo.size != a.size for (lo, _), a in zip(pre, net.activations)):
        raise ValueError("bounds do not match the network's ReLU layers")
    hidden = _encode_hidden(mats, pre, lower, upper, len(pre), compose_affine)
    b = hidden.builder
    g, g0 = _output_rows(mats, hidden, len(pre), spec.mat)
    g0 = g0 - spec.rhs  # the spec's rows as  G v + g0 <= 0
    n_spec = spec.num_rows
    cost = None
    cost0 = 0.0
    x0f = None
    if objective is Objective.VIOLATION:
        if n_spec == 1:
            cost_g, cost0 = g, float(g0[0])
        else:
            scol = b.cols("s", np.array([0]), -_INF, _INF)
            gc = g.tocoo()
            b.rows("spec", np.arange(n_spec), np.r_[gc.row, np.arange(n_spec)], np.r_[gc.col, np.full(n_spec, scol[0])],
                   np.r_[gc.data, -np.ones(n_spec)], -_INF, -g0)
            cost_g = sp.csr_matrix(([1.0], ([0], scol)), shape=(1, b.n_cols))
    else:
        if x0 is None or radius is None:
            raise ValueError("Objective.DISTANCE needs x0 and radius")
        x0f = np.asarray(torch.as_tensor(x0, dtype=torch.float64), dtype=_F64).reshape(-1)
        tcol = b.cols("t", np.array([0]), 0.0, float(radius))
        gc = g.tocoo()
        b.rows("spec", np.arange(n_spec), gc.row, gc.col, gc.data, -_INF, -g0 - margin_tol)
        n0 = lower.size
        loc = np.arange(n0)
        xc = hidden.input_cols
        b.rows("dist_le", loc, np.r_[loc, loc], np.r_[xc, np.full(n0, tcol[0])], np.r_[np.ones(n0), -np.ones(n0)], -_INF, x0f)
        b.rows("dist_ge", loc, np.r_[loc, loc], np.r_[xc, np.full(n0, tcol[0])], np.r_[np.ones(n0), np.ones(n0)], x0f, _INF)
        cost_g = sp.csr_matrix(([1.0], ([0], tcol)), shape=(1, b.n_cols))
    cost = np.zeros(b.n_cols)
    cg = sp.csr_matrix(cost_g, shape=(1, b.n_cols)) if cost_g.shape[1] != b.n_cols else sp.csr_matrix(cost_g)
    cost[cg.indices] = cg.data
    a = b.matrix()
    t1 = time.perf_counter()
    from pyomo.common.gc_manager import PauseGC

    with PauseGC():  # the cyclic GC otherwise rescans the growing heap while ~1e5 terms are created
        model, columns = _to_pyomo(b, a, cost, cost0, name=f"verify_{objective.value}")
    t2 = time.perf_counter()
    col_int = np.concatenate(b.col_int)
    lay = hidden.layers
    return MilpModel(
        pyomo=model,
        objective=objective,
        spec=spec,
        lower=lower,
        upper=upper,
        x0=x0f,
        radius=None if radius is None else float(radius),
        margin_tol=float(margin_tol),
        num_binaries=int(col_int.sum()),
        num_continuous=int((~col_int).sum()),
        num_rows=int(a.shape[0]),
        num_nonzeros=int(a.nnz),
        unstable=tuple(int(d["relu"].sum()) for d in lay),
        replaced=tuple(int(m.sum()) for m in mats.replaced),
        stable_active=tuple(int((d["linear"] & ~r).sum()) for d, r in zip(lay, mats.replaced)),
        stable_inactive=tuple(int((d["const"] & ~r).sum()) for d, r in zip(lay, mats.replaced)),
        assemble_time_s=t1 - t0,
        pyomo_time_s=t2 - t1,
        input_shape=tuple(net.input_shape),
        _columns=tuple(columns),
        _input_cols=hidden.input_cols,
        _pre_bounds=pre,
    )


def _to_pyomo(b: _Builder, a: sp.csr_matrix, cost: np.ndarray, cost0: float, name: str):
    """Pyomo components from the assembled arrays (one ``LinearExpression`` per row)."""
    import pyomo.environ as pyo
    from pyomo.core.expr.numeric_expr import LinearExpression
    from pyomo.core.expr.relational_expr import EqualityExpression, InequalityExpression, RangedExpression

    m = pyo.ConcreteModel(name=name)
    col_lo, col_hi, col_int = np.concatenate(b.col_lo), np.concatenate(b.col_hi), np.concatenate(b.col_int)
    columns: list = [None] * b.n_cols
    for gname, start, stop, labels in b.col_groups:
        domain = pyo.Binary if stop > start and col_int[start] else pyo.Reals
        if gname in ("t", "s"):
            var = pyo.Var(domain=domain)
            m.add_component(gname, var)
            datas = [var]
        else:
            var = pyo.Var(labels.tolist(), domain=domain, dense=True)
            m.add_component(gname, var)
            datas = list(var.values())
        for j, vd in enumerate(datas):
            lo, hi = col_lo[start + j], col_hi[start + j]
            if domain is pyo.Reals:
                vd.setlb(float(lo) if np.isfinite(lo) else None)
                vd.setub(float(hi) if np.isfinite(hi) else None)
            columns[start + j] = vd
    indptr, ind, dat = a.indptr, a.indices.tolist(), a.data.tolist()
    row_lo = np.concatenate(b.row_lo) if b.row_lo else np.zeros(0)
    row_hi = np.concatenate(b.row_hi) if b.row_hi else np.zeros(0)

    def relation(r: int):
        s, e = indptr[r], indptr[r + 1]
        expr = LinearExpression(linear_coefs=dat[s:e], linear_vars=[columns[j] for j in ind[s:e]])
        lo, hi = float(row_lo[r]), float(row_hi[r])
        if lo == hi:
            return EqualityExpression((expr, hi))
        if lo == -_INF:
            return InequalityExpression((expr, hi), False)
        if hi == _INF:
            return InequalityExpression((lo, expr), False)
        return RangedExpression((lo, expr, hi), (False, False))

    for gname, start, stop, labels in b.row_groups:
        pos = {lab: start + j for j, lab in enumerate(labels.tolist())}
        m.add_component(gname, pyo.Constraint(list(pos), rule=lambda _m, i, pos=pos: relation(pos[i])))
    nzc = np.flatnonzero(cost)
    m.objective = pyo.Objective(
        expr=LinearExpression(constant=float(cost0), linear_coefs=cost[nzc].tolist(), linear_vars=[columns[j] for j in nzc]),
        sense=pyo.minimize,
    )
    return m, columns


# ---------------------------------------------------------------------------------------------------
# Solving
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SolveResult:
    """One solver run.  ``objective`` is the incumbent (None without a point), ``bound`` the proven
    lower bound on the optimum (dual bound; None if unknown), ``x`` the solver's input point (flat)."""

    status: SolverStatus
    objective: float | None
    bound: float | None
    x: np.ndarray | None
    time_s: float  # solver wall time (HiGHS run)
    load_time_s: float  # Pyomo compile + hand-over to the solver
    solver: str
    nodes: int | None = None
    message: str = ""
    cutoff: float | None = None  # the objective_bound the run was given (INFEASIBLE = nothing below it)


def solve_model(
    model: MilpModel,
    *,
    solver: str = "highs",
    time_limit: float | None = None,
    threads: int = 1,
    mip_rel_gap: float | None = None,
    objective_bound: float | None = None,
    objective_target: float | None = None,
    options: dict | None = None,
    tee: bool = False,
) -> SolveResult:
    """Solve a built model.

    ``solver="highs"``: Pyomo compiles the model (``LinearStandardFormCompiler``) and HiGHS (``highspy``)
    solves the arrays; ``"highs_persistent"``: Pyomo's own HiGHS interface
    (``pyomo.contrib.solver.solvers.highs``, slower to load); any other name goes to
    ``pyomo.environ.SolverFactory`` (``time_limit``/``threads`` are passed where the option name is known).
    ``objective_bound`` (prune everything not better than it) and ``objective_target`` (stop at the first
    point better than it) are HiGHS's options for verdict-only solves; other options by ``options``.
    """
    if solver == "highs":
        return _solve_highs(model, time_limit, threads, mip_rel_gap, objective_bound, objective_target, options, tee)
    if solver == "highs_persistent":
        return _solve_highs_persistent(model, time_limit, threads, mip_rel_gap, objective_bound, objective_target,
                                       options, tee)
    return _solve_factory(model, solver, time_limit, threads, mip_rel_gap, options, tee)


def _highs_status(h, objective_bound) -> SolverStatus:
    import highspy

    S = highspy.HighsModelStatus
    st = h.getModelStatus()
    if st == S.kOptimal:
        return SolverStatus.OPTIMAL
    if st in (S.kInfeasible,):
        return SolverStatus.INFEASIBLE
    if st == S.kObjectiveBound and objective_bound is not None:
        return SolverStatus.INFEASIBLE
    if st == S.kObjectiveTarget:
        return SolverStatus.TARGET
    if st == S.kTimeLimit:
        return SolverStatus.TIME_LIMIT
    return SolverStatus.ERROR


def _apply_highs_options(h, time_limit, threads, mip_rel_gap, objective_bound, objective_target, options, tee):
    h.setOptionValue("output_flag", bool(tee))
    h.setOptionValue("threads", int(threads))
    if time_limit is not None:
        h.setOptionValue("time_limit", float(max(time_limit, 1e-3)))
    if mip_rel_gap is not None:
        h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
    if objective_bound is not None:
        h.setOptionValue("objective_bound", float(objective_bound))
    if objective_target is not None:
        h.setOptionValue("objective_target", float(objective_target))
    for k, v in (options or {}).items():
        h.setOptionValue(k, v)


def _solve_highs(model, time_limit, threads, mip_rel_gap, objective_bound, objective_target, options, tee):
    import highspy
    from pyomo.repn.plugins.standard_form import LinearStandardFormCompiler

    t0 = time.perf_counter()
    info = LinearStandardFormCompiler().write(model.pyomo, mixed_form=True, set_sense=None)
    cols = info.columns
    n = len(cols)
    kind = np.array([r.bound_type for r in info.rows], dtype=np.int8)
    rhs = np.asarray(info.rhs, dtype=_F64)
    row_lo = np.where(kind <= 0, rhs, -_INF)
    row_hi = np.where(kind >= 0, rhs, _INF)
    col_lo = np.array([-_INF if v.lb is None else v.lb for v in cols], dtype=_F64)
    col_hi = np.array([_INF if v.ub is None else v.ub for v in cols], dtype=_F64)
    integer = np.array([v.is_integer() or v.is_binary() for v in cols], dtype=bool)
    c = np.asarray(info.c.toarray()).reshape(-1) if n else np.zeros(0)
    h = highspy.Highs()
    _apply_highs_options(h, time_limit, threads, mip_rel_gap, objective_bound, objective_target, options, tee)
    _pass_lp(h, sp.csr_matrix(info.A), row_lo, row_hi, col_lo, col_hi, cost=c, integer=integer,
             offset=float(info.c_offset[0]) if len(info.c_offset) else 0.0)
    t1 = time.perf_counter()
    h.run()
    t2 = time.perf_counter()
    status = _highs_status(h, objective_bound)
    hinfo = h.getInfo()
    has_point = hinfo.primal_solution_status == 2
    x = None
    obj = None
    if has_point:
        vals = np.asarray(h.getSolution().col_value, dtype=_F64)
        for vd, val in zip(cols, vals.tolist()):
            vd.set_value(val, skip_validation=True)
        x = _input_values(model)
        obj = float(hinfo.objective_function_value)
    bound = None
    if status in (SolverStatus.OPTIMAL, SolverStatus.TIME_LIMIT, SolverStatus.TARGET):
        db = float(hinfo.mip_dual_bound) if hinfo.mip_node_count >= 0 else (obj if status is SolverStatus.OPTIMAL else None)
        bound = db if db is not None and math.isfinite(db) else None
    return SolveResult(status, obj, bound, x, t2 - t1, t1 - t0, "highs", int(hinfo.mip_node_count),
                       str(h.getModelStatus()), objective_bound)


def _input_values(model: MilpModel) -> np.ndarray:
    mid = np.clip(model.x0, model.lower, model.upper) if model.x0 is not None else (model.lower + model.upper) / 2
    out = np.empty(model.lower.size)
    for i, j in enumerate(model._input_cols):
        v = model._columns[j].value
        out[i] = mid[i] if v is None else v
    return out


def _solve_highs_persistent(model, time_limit, threads, mip_rel_gap, objective_bound, objective_target, options, tee):
    from pyomo.contrib.solver.common.results import SolutionStatus, TerminationCondition
    from pyomo.contrib.solver.solvers.highs import Highs

    t0 = time.perf_counter()
    opt = Highs()
    opt.config.load_solutions = False
    opt.config.raise_exception_on_nonoptimal_result = False
    opt.set_instance(model.pyomo)
    t1 = time.perf_counter()
    extra = dict(options or {})
    if objective_bound is not None:
        extra["objective_bound"] = float(objective_bound)
    if objective_target is not None:
        extra["objective_target"] = float(objective_target)
    res = opt.solve(model.pyomo, time_limit=time_limit, threads=threads, rel_gap=mip_rel_gap, solver_options=extra,
                    tee=tee, load_solutions=False, raise_exception_on_nonoptimal_result=False)
    t2 = time.perf_counter()
    tc = res.termination_condition
    status = {
        TerminationCondition.convergenceCriteriaSatisfied: SolverStatus.OPTIMAL,
        TerminationCondition.provenInfeasible: SolverStatus.INFEASIBLE,
        TerminationCondition.maxTimeLimit: SolverStatus.TIME_LIMIT,
    }.get(tc, SolverStatus.ERROR)
    if tc == TerminationCondition.objectiveLimit:
        status = SolverStatus.TARGET if res.solution_status != SolutionStatus.noSolution else SolverStatus.INFEASIBLE
    x = obj = None
    if res.solution_status in (SolutionStatus.optimal, SolutionStatus.feasible):
        res.solution_loader.load_vars()
        x = _input_values(model)
        obj = res.incumbent_objective
    bound = res.objective_bound if res.objective_bound is not None and math.isfinite(res.objective_bound) else None
    return SolveResult(status, obj, bound, x, t2 - t1, t1 - t0, "highs_persistent", None, str(tc), objective_bound)


_TIME_OPTION = {"cbc": "sec", "glpk": "tmlim", "gurobi": "TimeLimit", "cplex": "timelimit", "scip": "limits/time",
                "appsi_highs": "time_limit", "gurobi_direct": "TimeLimit", "gurobi_persistent": "TimeLimit"}
_THREADS_OPTION = {"cbc": "threads", "gurobi": "Threads", "cplex": "threads", "appsi_highs": "threads",
                   "gurobi_direct": "Threads", "gurobi_persistent": "Threads"}
_GAP_OPTION = {"cbc": "ratioGap", "glpk": "mipgap", "gurobi": "MIPGap", "cplex": "mipgap", "scip": "limits/gap",
               "appsi_highs": "mip_rel_gap", "gurobi_direct": "MIPGap", "gurobi_persistent": "MIPGap"}


def _solve_factory(model, solver, time_limit, threads, mip_rel_gap, options, tee):
    import pyomo.environ as pyo
    from pyomo.opt import SolutionStatus as SS, TerminationCondition as TC

    opt = pyo.SolverFactory(solver)
    if opt is None or not opt.available(exception_flag=False):
        raise ValueError(f"Pyomo solver {solver!r} is not available")
    if time_limit is not None and solver in _TIME_OPTION:
        opt.options[_TIME_OPTION[solver]] = float(time_limit)
    if solver in _THREADS_OPTION:
        opt.options[_THREADS_OPTION[solver]] = int(threads)
    if mip_rel_gap is not None and solver in _GAP_OPTION:
        opt.options[_GAP_OPTION[solver]] = float(mip_rel_gap)
    for k, v in (options or {}).items():
        opt.options[k] = v
    t0 = time.perf_counter()
    res = opt.solve(model.pyomo, tee=tee, load_solutions=False)
    t1 = time.perf_counter()
    tc = res.solver.termination_condition
    status = {TC.optimal: SolverStatus.OPTIMAL, TC.infeasible: SolverStatus.INFEASIBLE,
              TC.maxTimeLimit: SolverStatus.TIME_LIMIT}.get(tc, SolverStatus.ERROR)
    x = obj = bound = None
    if len(res.solution) and res.solution(0).status in (SS.optimal, SS.feasible, SS.stoppedByLimit, SS.other):
        model.pyomo.solutions.load_from(res)
        x = _input_values(model)
        obj = float(pyo.value(model.pyomo.objective))
    try:
        lb = res.problem.lower_bound
        bound = float(lb) if lb is not None and math.isfinite(float(lb)) else None
    except (TypeError, ValueError, AttributeError):
        bound = None
    if status is SolverStatus.OPTIMAL and bound is None:
        bound = obj
    return SolveResult(status, obj, bound, x, t1 - t0, 0.0, solver, None, str(tc))


# ---------------------------------------------------------------------------------------------------
# Re-checking the solver's point
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """A float64 re-evaluation of a candidate counterexample.

    ``x`` is the candidate clipped into the input box (the solver may overstep a bound by its feasibility
    tolerance; the clipped point is the one evaluated and returned), ``violation`` the spec's violation at
    ``x`` by a float64 forward pass, ``valid`` whether ``x`` reaches the unsafe set.
    """

    valid: bool
    x: np.ndarray  # flat, float64
    violation: float
    distance: float | None  # ||x - x0||_inf when the model has an anchor
    clipped_by: float  # how far the solver's point was outside the box
    polished: bool = False  # found by the region LP after the solver's own point failed


def check_counterexample(net: ReluNetwork, x, lower, upper, spec: OutputSpec, *, x0=None) -> Check:
    """Clip ``x`` into ``[lower, upper]`` and decide by a float64 forward pass whether it is in the unsafe set."""
    x = np.asarray(x, dtype=_F64).reshape(-1)
    lower = np.asarray(lower, dtype=_F64).reshape(-1)
    upper = np.asarray(upper, dtype=_F64).reshape(-1)
    xc = np.minimum(np.maximum(x, lower), upper)
    clipped = float(np.abs(xc - x).max()) if x.size else 0.0
    with torch.no_grad():
        logits = net.forward(torch.from_numpy(xc).reshape((1,) + tuple(net.input_shape)).to(torch.float64))
    logits = logits.numpy()
    viol = float(spec.violation(logits)[0])
    valid = bool(spec.reached(logits)[0]) and bool(np.isfinite(viol))
    dist = None if x0 is None else float(np.abs(xc - np.asarray(x0, dtype=_F64).reshape(-1)).max())
    return Check(valid, xc, viol, dist, clipped)


def _region_lp(net: ReluNetwork, model: MilpModel, x: np.ndarray, *, margin: float = 1e-8, threads: int = 1,
               time_limit: float = 10.0) -> np.ndarray | None:
    """The best point of the linear region of ``x`` for the model's objective, or None.

    With the activation pattern of ``x`` fixed for every neuron that is unstable on the box, the network is
    affine, ``z_k(x') = Z_k x' + c_k``, and the model's objective over the region (box, sign conditions of
    the unstable neurons) is an LP.  Used when the MILP solver's point fails the float64 re-check: it
    contains ``x``, so its optimum is at least as good, and it is solved without big-M constants.  For a
    DISTANCE model the spec must hold with slack ``margin`` so that the float64 re-check accepts the point
    (this moves the distance by about ``margin / ||grad||_1``).
    """
    mats = _Mats.of(net)
    lower, upper = model.lower, model.upper
    x = np.minimum(np.maximum(np.asarray(x, dtype=_F64).reshape(-1), lower), upper)
    n0 = x.size
    H = sp.identity(n0, format="csr", dtype=_F64)
    g = np.zeros(n0)
    rows, rhs = [], []
    for k in range(len(mats.replaced)):
        w, b = mats.weights[k], mats.biases[k]
        Z = np.asarray((w @ H).todense()) if sp.issparse(H) else w @ H
        zc = w @ g + b
        zx = Z @ x + zc
        lo_b, hi_b = model._pre_bounds[k]
        rep = mats.replaced[k]
        on = zx > 0
        unstable = np.flatnonzero(~rep & (lo_b < 0) & (hi_b > 0))
        sgn = np.where(on[unstable], -1.0, 1.0)  # active: -z <= 0, inactive: z <= 0
        rows.append(sgn[:, None] * Z[unstable])
        rhs.append(-sgn * zc[unstable])
        a = np.where(rep, mats.slope[k], on.astype(_F64))
        c = np.where(rep, mats.offset[k], 0.0)
        H = a[:, None] * Z
        g = a * zc + c
    wl, bl = mats.weights[-1], mats.biases[-1]
    G = model.spec.mat @ (wl @ H)
    g0 = model.spec.mat @ (wl @ g + bl) - model.spec.rhs
    A = np.vstack(rows) if rows else np.zeros((0, n0))
    rhs = np.concatenate(rhs) if rhs else np.zeros(0)
    k_spec = G.shape[0]
    col_lo, col_hi = lower.copy(), upper.copy()
    if model.objective is Objective.VIOLATION:
        if k_spec == 1:
            cost, offset = G[0], float(g0[0])
            a_all, lo_all, hi_all = A, np.full(A.shape[0], -_INF), rhs
        else:
            cost = np.r_[np.zeros(n0), 1.0]
            offset = 0.0
            a_all = np.vstack([np.hstack([A, np.zeros((A.shape[0], 1))]), np.hstack([G, -np.ones((k_spec, 1))])])
            lo_all = np.full(a_all.shape[0], -_INF)
            hi_all = np.r_[rhs, -g0]
            col_lo, col_hi = np.r_[col_lo, -_INF], np.r_[col_hi, _INF]
    else:
        x0 = model.x0
        eye = np.eye(n0)
        one = np.ones((n0, 1))
        a_all = np.vstack([np.hstack([A, np.zeros((A.shape[0], 1))]), np.hstack([G, np.zeros((k_spec, 1))]),
                           np.hstack([eye, -one]), np.hstack([eye, one])])
        lo_all = np.r_[np.full(A.shape[0] + k_spec, -_INF), np.full(n0, -_INF), x0]
        hi_all = np.r_[rhs, -g0 - max(model.margin_tol, margin), x0, np.full(n0, _INF)]
        cost, offset = np.r_[np.zeros(n0), 1.0], 0.0
        col_lo, col_hi = np.r_[col_lo, 0.0], np.r_[col_hi, model.radius]
    import highspy

    h = _highs(threads, time_limit)
    h.setOptionValue("primal_feasibility_tolerance", 1e-10)
    _pass_lp(h, sp.csr_matrix(a_all), lo_all, hi_all, col_lo, col_hi, cost=cost, offset=offset)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    return np.asarray(h.getSolution().col_value, dtype=_F64)[:n0]


def interpret(net: ReluNetwork, model: MilpModel, result: SolveResult, *, polish: bool = True,
              polish_margin: float = 1e-8, threads: int = 1) -> tuple[VerificationStatus, Check | None]:
    """The verdict of a VIOLATION solve, never trusting the solver's point.

    ``NOT_ROBUST`` only with a point that passes :func:`check_counterexample` (the solver's point, or, if
    it fails and ``polish``, the optimum of its linear region, for a DISTANCE model with the spec's slack
    ``polish_margin``, grown 100-fold up to three times until the re-check accepts); ``ROBUST`` only if
    the solver proved that no point is better than 0 (cut off by ``objective_bound <= 0``, or optimal
    with dual bound >= 0, > 0 for a non-strict spec; for a DISTANCE model: infeasible, i.e. no unsafe
    point within the cap on t); ``TIMEOUT`` on the time limit; ``UNKNOWN`` otherwise.
    """
    chk = None
    if result.x is not None:
        chk = check_counterexample(net, result.x, model.lower, model.upper, model.spec, x0=model.x0)
        margin = polish_margin
        for _ in range(4 if polish and not chk.valid else 0):  # growing slack until the re-check accepts
            xp = _region_lp(net, model, result.x, margin=margin, threads=threads)
            if xp is None:
                break
            chk2 = check_counterexample(net, xp, model.lower, model.upper, model.spec, x0=model.x0)
            if chk2.valid:
                chk = replace(chk2, polished=True)
                break
            margin *= 100
        if chk.valid:
            return VerificationStatus.NOT_ROBUST, chk
    if model.objective is Objective.VIOLATION:
        # the box always holds a feasible point, so "infeasible" only means "nothing below the cut-off"
        if result.status is SolverStatus.INFEASIBLE and result.cutoff is not None and result.cutoff <= 0:
            return VerificationStatus.ROBUST, chk
        if result.status is SolverStatus.OPTIMAL and result.bound is not None:
            if result.bound > 0 or (model.spec.strict and result.bound >= 0):
                return VerificationStatus.ROBUST, chk
    elif result.status is SolverStatus.INFEASIBLE:  # DISTANCE: no point of the unsafe set within the cap
        return VerificationStatus.ROBUST, chk
    if result.status is SolverStatus.TIME_LIMIT:
        return VerificationStatus.TIMEOUT, chk
    return VerificationStatus.UNKNOWN, chk
