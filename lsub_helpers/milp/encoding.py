"""The network as sparse matrices and the rows of its MILP encoding (used by :mod:`lsub_helpers.milp`).

Output specifications, input boxes, pre-activation bounds as float64 arrays, and the assembly of the
hidden layers' rows and columns: affine neurons composed away, unstable ReLUs with the big-M rows (4)-(6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from .. import bounds as bounds_mod
from ..bounds import BoundMethod
from ..network import ReluNetwork

_F64 = np.float64
_INF = math.inf
# bounds are widened by this (relative + absolute) before they enter the model, so that a bound that is
# tight up to float rounding never cuts off a true point
_BOUND_SLACK = 1e-9


BoundsMethod = BoundMethod  # the bound methods the MILP takes its big-M constants from (one enum: lsub_helpers.bounds')


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
class StageMatrices:
    """The network as sparse float64 matrices (computed once per top-level call)."""

    weights: tuple[sp.csr_matrix, ...]
    biases: tuple[np.ndarray, ...]
    replaced: tuple[np.ndarray, ...]
    slope: tuple[np.ndarray, ...]
    offset: tuple[np.ndarray, ...]
    pools: tuple = ()  # MaxPoolLayer or None per layer (() for none)

    def __post_init__(self):
        if not self.pools:
            object.__setattr__(self, "pools", (None,) * len(self.replaced))

    @staticmethod
    def of(net: ReluNetwork) -> "StageMatrices":
        ws, bs = zip(*(s.sparse_arrays for s in net.stages))
        rep = tuple(np.asarray(a.replaced, dtype=bool) for a in net.activations)
        slo = tuple(np.asarray(a.slope, dtype=_F64) for a in net.activations)
        off = tuple(np.asarray(a.offset, dtype=_F64) for a in net.activations)
        return StageMatrices(ws, bs, rep, slo, off, tuple(net.pools))

    def activation_range(self, k: int, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Range of the (possibly substituted) activation of layer ``k`` on ``[lo, hi]``."""
        rl, rh = np.maximum(lo, 0.0), np.maximum(hi, 0.0)
        a, c, m = self.slope[k], self.offset[k], self.replaced[k]
        sl = np.minimum(a * lo, a * hi) + c
        sh = np.maximum(a * lo, a * hi) + c
        return np.where(m, sl, rl), np.where(m, sh, rh)

    def output_range(self, k: int, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Range of the input of stage ``k + 1``: layer ``k``'s activation range, max pooled if it has a pool."""
        al, ah = self.activation_range(k, lo, hi)
        if self.pools[k] is None:
            return al, ah
        win = self.pools[k].windows
        return np.r_[al, -_INF][win].max(1), np.r_[ah, -_INF][win].max(1)


def _interval_step(w: sp.csr_matrix, b: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    mid, rad = (lo + hi) / 2, (hi - lo) / 2
    c = w @ mid + b
    r = abs(w) @ rad
    return c - r, c + r


def interval_bounds(net: ReluNetwork, lower, upper, *, _mats: StageMatrices | None = None) -> LayerBounds:
    """Interval arithmetic (IBP) on the box ``[lower, upper]``: the simplest valid bounds
    (:func:`lsub_helpers.bounds.ibp_box`, as float64 numpy)."""
    return compute_bounds(net, lower, upper, BoundMethod.IBP)


def compute_bounds(net: ReluNetwork, lower, upper, method: BoundMethod | str = BoundMethod.CROWN, *,
                   spec: np.ndarray | None = None) -> LayerBounds:
    """Pre-activation bounds on the box by ``method`` (:mod:`lsub_helpers.bounds`), as float64 numpy.

    The result is intersected with interval arithmetic, so it is never looser than IBP.  With ``spec``
    (a ``(k, num_classes)`` matrix), ``output`` holds bounds of ``spec @ f(x)`` by the same method.
    """
    method = BoundMethod(method)
    lower_t = torch.as_tensor(np.asarray(lower, dtype=_F64)).reshape(net.input_shape)
    upper_t = torch.as_tensor(np.asarray(upper, dtype=_F64)).reshape(net.input_shape)
    spec_t = None if spec is None else torch.as_tensor(np.atleast_2d(np.asarray(spec, dtype=_F64)))
    ibp = _as_numpy_bounds(bounds_mod.ibp_box(net, lower_t, upper_t))
    if method is BoundMethod.IBP and spec is None:
        return LayerBounds(ibp, method.value)
    fn = {BoundMethod.IBP: bounds_mod.ibp_box, BoundMethod.CROWN: bounds_mod.crown_box,
          BoundMethod.FASTLIN: bounds_mod.fastlin_box, BoundMethod.FASTLIN_IBP: bounds_mod.fastlin_ibp_box}[method]
    got = fn(net, lower_t, upper_t, spec=spec_t)
    pre = tuple((np.maximum(a, c), np.minimum(b, d)) for (a, b), (c, d) in zip(_as_numpy_bounds(got), ibp))
    out = None
    if spec is not None:
        out = tuple(np.asarray(t.detach().cpu().numpy(), dtype=_F64).reshape(-1) for t in got.output)
    return LayerBounds(pre, method.value, out)


def _split_layer(mats: StageMatrices, k: int, lo: np.ndarray, hi: np.ndarray):
    """(const, linear, relu) masks of layer ``k``: constant on the box (stable inactive, or replaced with
    slope 0), affine in its pre-activation (stable active, or replaced), or an unstable ReLU."""
    rep = mats.replaced[k]
    const = np.where(rep, mats.slope[k] == 0, hi <= 0)
    relu = ~rep & (lo < 0) & (hi > 0)
    linear = ~const & ~relu
    return const, linear, relu


def _split(bounds: Sequence[tuple[np.ndarray, np.ndarray]], mats: StageMatrices):
    return [_split_layer(mats, k, lo, hi) for k, (lo, hi) in enumerate(bounds)]


def unstable_counts(net_or_mats, bounds) -> tuple[int, ...]:
    """Unstable, not replaced neurons per layer (= binaries of the MILP)."""
    mats = net_or_mats if isinstance(net_or_mats, StageMatrices) else StageMatrices.of(net_or_mats)
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


def _encode_hidden(mats: StageMatrices, bounds, lower: np.ndarray, upper: np.ndarray, n_layers: int,
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
        pool_binaries = 0
        if mats.pools[k] is not None:  # max pooling of this layer's outputs
            zero = ~mats.replaced[k] & (hi <= 0)  # inactive ReLUs: exactly 0
            P, q, pool_binaries = _encode_pool(b, mats.pools[k].windows, P, q, *mats.activation_range(k, lo, hi),
                                               ~mats.replaced[k], zero, k)
        layers.append(dict(const=const, linear=linear, relu=relu, zcols=zmap, ycols=ymap, qcols=qcols, relu_idx=ri,
                           pool_binaries=pool_binaries))
    return _Hidden(b, P, q, xcols, tuple(layers))


def _encode_pool(b: _Builder, windows: np.ndarray, P: sp.csr_matrix, q: np.ndarray, xl: np.ndarray,
                 xu: np.ndarray, nonneg: np.ndarray, zero: np.ndarray, k: int) -> tuple[sp.csr_matrix, np.ndarray, int]:
    """Max pooling of ``h = P v + q`` (inputs in ``[xl, xu]``) as Tjeng et al. (2019, Sec. 3) and MIPVerify.

    In each window the *candidates* are the inputs whose upper bound reaches the largest lower bound of the
    window (the others are below the maximum everywhere on the box), except inputs that are exactly 0
    (``zero``: inactive ReLUs) in a window with another input that is a ReLU output (``nonneg``, >= 0
    exactly) and not exactly 0: that input is never below them.  One candidate: the output is that
    input (no variable).  Several: an output ``y`` in ``[max l, max u]``, a binary ``a_i`` per candidate
    and the rows ``y >= x_i``, ``y <= x_i + (max_{j != i} u_j - l_i)(1 - a_i)``, ``sum_i a_i = 1``.
    Returns the pooled outputs as ``(P, q)`` and the number of binaries.
    """
    n_in = xl.size
    xl, xu = _widen(xl, xu)
    lw = np.r_[xl, -_INF][windows]  # (n_out, kk); padded positions never win
    uw = np.r_[xu, -_INF][windows]
    lmax = lw.max(1)
    cand = uw >= lmax[:, None]  # the input with the largest lower bound is always one
    zw, nw = np.r_[zero, False][windows], np.r_[nonneg, False][windows]
    cand &= ~(zw & (nw & ~zw).any(1, keepdims=True))  # zeros below a ReLU output that is not exactly 0
    only_zeros = ~(cand & ~zw).any(1)  # the output is 0: keep one of the zeros
    cand[only_zeros] &= np.arange(cand.shape[1]) == cand[only_zeros].argmax(1)[:, None]
    single = cand.sum(1) == 1
    n_out = windows.shape[0]
    # single candidate: the output is that input
    o1 = np.flatnonzero(single)
    i1 = windows[o1, cand[o1].argmax(1)]
    # several: a variable, binaries, big-M rows
    om = np.flatnonzero(~single)
    po, pk = np.nonzero(cand[om])  # pairs (window om[po], position pk), window by window
    pi = windows[om[po], pk]
    u_c = np.where(cand, uw, -_INF)[om]
    top = u_c.argmax(1)
    first = u_c.max(1)
    second = np.where(np.arange(u_c.shape[1]) == top[:, None], -_INF, u_c).max(1)
    others = np.where(pk == top[po], second[po], first[po])  # max upper bound of the other candidates
    big_m = others - xl[pi]
    ycols = b.cols(f"pool{k}", om, lmax[om], first)
    acols = b.cols(f"pool_a{k}", np.arange(pi.size), 0.0, 1.0, integer=True)
    e = P[pi].tocoo()  # x_i = P_i v + q_i for every pair
    n_p = pi.size
    loc = np.arange(n_p)
    # y - x_i >= 0
    b.rows(f"pool_ge{k}", loc, np.r_[loc, e.row], np.r_[ycols[po], e.col], np.r_[np.ones(n_p), -e.data],
           q[pi], _INF)
    # y - x_i + M a_i <= M
    b.rows(f"pool_le{k}", loc, np.r_[loc, e.row, loc], np.r_[ycols[po], e.col, acols],
           np.r_[np.ones(n_p), -e.data, big_m], -_INF, big_m + q[pi])
    # sum_i a_i = 1
    b.rows(f"pool_one{k}", om, po, acols, np.ones(n_p), 1.0, 1.0)
    sel = sp.csr_matrix((np.ones(o1.size), (o1, i1)), shape=(n_out, n_in))
    p_new = sp.csr_matrix(sel @ P)
    p_new.resize(n_out, b.n_cols)
    p_new = p_new + sp.csr_matrix((np.ones(om.size), (om, ycols)), shape=(n_out, b.n_cols))
    q_new = np.zeros(n_out)
    q_new[o1] = q[i1]
    return sp.csr_matrix(p_new), q_new, int(n_p)


def _output_rows(mats: StageMatrices, hidden: _Hidden, stage: int, mat: np.ndarray | sp.spmatrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """``mat @ (W_stage (P v + q) + b_stage)`` as ``G v + g0``."""
    w, bias = mats.weights[stage], mats.biases[stage]
    mw = sp.csr_matrix(mat) @ w
    P = sp.csr_matrix(hidden.P, shape=(hidden.P.shape[0], hidden.builder.n_cols))
    g = sp.csr_matrix(mw @ P)
    g0 = np.asarray(mw @ (hidden.q), dtype=_F64).reshape(-1) + np.asarray(sp.csr_matrix(mat) @ bias).reshape(-1)
    return g, g0
