"""LP relaxations of the MILP encoding: bound tightening (MIPVerify's ``lp``) and target screening."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from .encoding import (_F64, _INF, LayerBounds, OutputSpec, _as_numpy_bounds, _encode_hidden, _Hidden,
                            _interval_step, StageMatrices,
                            _output_rows, unstable_counts)
from ..network import ReluNetwork


# ---------------------------------------------------------------------------------------------------
# LP-based tightening (MIPVerify's `lp` tightening)
# ---------------------------------------------------------------------------------------------------

def new_highs():
    """A ``highspy.Highs`` that prints nothing: HiGHS writes its licence banner to the process's standard
    output (file descriptor 1, below Python) when it makes its first instance, so that is silenced here."""
    import ctypes

    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            h = highspy.Highs()
            ctypes.CDLL(None).fflush(None)  # what C's stdio still buffers goes to /dev/null too
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    h.setOptionValue("output_flag", False)
    return h


def _highs(threads: int, time_limit: float | None = None):
    h = new_highs()
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
                      _mats: StageMatrices | None = None) -> tuple[LayerBounds, TighteningReport]:
    """Tighten the bounds of every unstable neuron by two LPs (min and max of its pre-activation over the
    LP relaxation of the layers before it, which already use the tightened bounds), layer by layer.

    The first layer is affine in the input, so its interval bounds are already exact and are kept.
    Stops when ``time_limit`` seconds are used (the remaining neurons keep their bounds).  An LP bound is
    loosened by ``1e-7 (1 + |b|)`` against the LP solver's tolerances before it is used.
    """
    t0 = time.perf_counter()
    mats = _mats or StageMatrices.of(net)
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
                      _mats: StageMatrices | None = None) -> np.ndarray:
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
    mats = _mats or StageMatrices.of(net)
    pre = _as_numpy_bounds(bounds)
    lower = np.asarray(lower, dtype=_F64).reshape(-1)
    upper = np.asarray(upper, dtype=_F64).reshape(-1)
    if pre:
        hl, hh = mats.output_range(len(pre) - 1, *pre[-1])
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
    need = [j for j, s in enumerate(specs) if not unreachable(out[j], s)]
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


def unreachable(lower_bound: float, spec: OutputSpec) -> bool:
    return lower_bound > 0 or (spec.strict and lower_bound >= 0)
