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
is not: composing gives 7-100x fewer nonzeros and verdict-only solves 15-290x faster (image 9 at 1.02 d:
1.3 s against 74 s; substitutes at gamma 0.99: 0.01-0.02 s against 1.6-4.7 s), with the same verdicts
(``benchmarks/results/milp_compose.md``).  Both layouts are solved with ``SAFE_HIGHS_OPTIONS``: with
HiGHS's presolve on, the composed model of image 493 at 1.00003 x its exact distance was declared robust.

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
import time
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
import torch

from .encoding import _F64, _INF, OutputSpec, StageMatrices, _as_numpy_bounds, _Builder, _encode_hidden, _output_rows
from .lp import _highs, _pass_lp
from .solve import SolveResult, SolverStatus
from ..network import ReluNetwork

__all__ = ["Objective", "VerificationStatus", "MilpModel", "Check", "build_model", "check_counterexample", "interpret"]


class Objective(enum.Enum):
    VIOLATION = "violation"  # min max_k (C f(x) - d)_k over the box: problem (2) for the margin
    DISTANCE = "distance"  # min ||x - x0||_inf s.t. C f(x) <= d - margin_tol: problem (1) per target


class VerificationStatus(enum.Enum):
    ROBUST = "robust"  # proven: no point of the box is in the unsafe set
    NOT_ROBUST = "not_robust"  # a counterexample that passed the float64 re-check
    TIMEOUT = "timeout"
    UNKNOWN = "unknown"  # e.g. the solver's point failed the re-check and nothing was proven


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
    _mats: StageMatrices | None = None,
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
    mats = _mats or StageMatrices.of(net)
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

    With the activation pattern of ``x`` fixed for every neuron that is unstable on the box, and the input
    that is the maximum of every max pooling window fixed, the network is affine, ``z_k(x') = Z_k x' + c_k``, and the model's objective over the region (box, sign conditions of
    the unstable neurons) is an LP.  Used when the MILP solver's point fails the float64 re-check: it
    contains ``x``, so its optimum is at least as good, and it is solved without big-M constants.  For a
    DISTANCE model the spec must hold with slack ``margin`` so that the float64 re-check accepts the point
    (this moves the distance by about ``margin / ||grad||_1``).
    """
    mats = StageMatrices.of(net)
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
        if mats.pools[k] is not None:  # fix every window's maximum: h_win >= h_j for the window's inputs j
            win = mats.pools[k].windows
            hx = np.r_[H @ x + g, -_INF]
            best = win[np.arange(win.shape[0]), hx[win].argmax(1)]
            o, j = np.nonzero(win < H.shape[0])
            j = win[o, j]
            rows.append(H[j] - H[best[o]])  # h_j - h_best <= 0
            rhs.append(g[best[o]] - g[j])
            H, g = H[best], g[best]
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
              polish_margin: float = 1e-8, threads: int = 1,
              time_limit: float | None = 10.0) -> tuple[VerificationStatus, Check | None]:
    """The verdict of a VIOLATION solve, never trusting the solver's point.

    ``NOT_ROBUST`` only with a point that passes :func:`check_counterexample` (the solver's point, or, if
    it fails and ``polish``, the optimum of its linear region, for a DISTANCE model with the spec's slack
    ``polish_margin``, grown 100-fold up to three times until the re-check accepts; each polishing LP gets
    ``time_limit`` seconds, none if it is <= 0); ``ROBUST`` only if
    the solver proved that no point is better than 0 (cut off by ``objective_bound <= 0``, or optimal
    with dual bound >= 0, > 0 for a non-strict spec; for a DISTANCE model: infeasible, i.e. no unsafe
    point within the cap on t); ``TIMEOUT`` on the time limit; ``UNKNOWN`` otherwise.
    """
    chk = None
    if result.x is not None:
        chk = check_counterexample(net, result.x, model.lower, model.upper, model.spec, x0=model.x0)
        margin = polish_margin
        # polish only a point the model itself calls a counterexample (any feasible point of a DISTANCE
        # model; a negative violation otherwise): the optimum of a robust query is no candidate
        candidate = model.objective is Objective.DISTANCE or (result.objective is not None and result.objective <= 0)
        for _ in range(4 if polish and candidate and not chk.valid else 0):  # growing slack until accepted
            if time_limit is not None and time_limit <= 0:
                break  # the caller's budget is spent: no polishing LP
            xp = _region_lp(net, model, result.x, margin=margin, threads=threads,
                            time_limit=10.0 if time_limit is None else time_limit)
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
