"""Branch and bound on ReLU splits: proving one output specification over a box where one MILP is too big.

The box is split into subdomains by fixing unstable ReLUs (``z >= 0``: the neuron is the identity;
``z <= 0``: it is zero).  Each subdomain is bounded by CROWN with the pre-activation bounds of its parent
intersected layer by layer and the fixed neurons clipped (:func:`lsub_helpers.bounds.compute_bounds_box` with
``known``), which tightens the bounds of every later layer; the violation ``max_k (mat @ f(x) - rhs)_k`` of the
spec is then bounded from below by one back-substitution.  A subdomain whose bound shows the unsafe set
unreachable, or whose bounds are empty (no input satisfies its splits), is closed; the others are split again,
worst bound first, on the neuron whose upper-line intercept costs the bound most (the BaBSR score of Bunel et
al., 2020, read off the gradient of the bound).  The spec is proven when no subdomain is left open.

Everything is sound: every bound holds on its subdomain (float64, up to round-off), a child never reports a
worse bound than its parent.  Without the split constraints inside the back-substitution (beta-CROWN) the
bounds are weaker than alpha-beta-CROWN's, so more subdomains are needed for the same proof, and a subdomain
with every ReLU fixed need not be closed by its bound; so a subdomain with at most ``milp_leaf`` unstable ReLUs
left goes to the MILP of :mod:`lsub_helpers.milp` built on the subdomain's own bounds (at most ``milp_leaf``
binaries; the split signs are among its constraints), which decides it exactly.  A point the MILP finds is
re-checked in float64 (:func:`lsub_helpers.milp.interpret`) before :func:`bab_prove` reports it.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import time
from dataclasses import dataclass

import numpy as np
import torch

from .bounds import BoundMethod, compute_bounds_box
from .bounds.ibp import ibp_stage
from .bounds.linear import Relax, back_substitute, relax
from .milp import LayerBounds, OutputSpec, VerificationStatus, build_model, interpret, solve_model, unreachable
from .network import ReluNetwork

__all__ = ["BabOptions", "BabStatus", "BabResult", "bab_prove"]

Tensor = torch.Tensor
F64 = torch.float64


class BabStatus(enum.Enum):
    PROVEN = "proven"  # no input of the box reaches the unsafe set
    FALSIFIED = "falsified"  # a point of the box in the unsafe set, re-checked in float64 (``x``)
    OPEN = "open"  # time or subdomain limit reached with subdomains left open
    EXHAUSTED = "exhausted"  # an open subdomain that neither splitting nor its MILP could decide


@dataclass(frozen=True)
class BabOptions:
    """``batch`` subdomains are split at once (2 x batch children bounded together); at most ``max_domains``
    open subdomains are kept (each holds its layer bounds: about 24 bytes per neuron)."""

    batch: int = 8
    max_domains: int = 20_000
    milp_leaf: int = 12  # a subdomain with at most this many unstable ReLUs is decided by its MILP

    def __post_init__(self):
        if self.batch < 1 or self.max_domains < 1 or self.milp_leaf < 0:
            raise ValueError(f"BabOptions: batch and max_domains must be >= 1, got {self}")


@dataclass(frozen=True)
class BabResult:
    status: BabStatus
    lower: float  # a lower bound of the violation over the whole box (min over the open subdomains)
    root_lower: float  # CROWN's bound before any split
    domains: int  # subdomains bounded (the root included)
    open: int  # subdomains left open
    time_s: float
    milp_leaves: int = 0  # subdomains decided by their MILP
    x: np.ndarray | None = None  # FALSIFIED: the re-checked point (flat, float64)


@dataclass(frozen=True, eq=False)
class _Domain:
    pre: tuple[tuple[Tensor, Tensor], ...]  # pre-activation bounds per ReLU layer, (n_l,) each
    scores: tuple[Tensor, ...]  # branching score per neuron (0 where not unstable)
    lower: float  # lower bound of the violation on this subdomain


def bab_prove(net: ReluNetwork, lower, upper, spec: OutputSpec, *, time_limit: float | None = 60.0,
              options: BabOptions = BabOptions()) -> BabResult:
    """Try to prove that no input of ``lower <= x <= upper`` reaches ``spec``'s unsafe set, within ``time_limit`` s."""
    t0 = time.perf_counter()
    flat_lo = np.asarray(lower, dtype=np.float64).reshape(-1)
    flat_hi = np.asarray(upper, dtype=np.float64).reshape(-1)
    lo = torch.as_tensor(flat_lo).reshape((1,) + tuple(net.input_shape))
    hi = torch.as_tensor(flat_hi).reshape((1,) + tuple(net.input_shape))
    if (lo > hi).any():
        raise ValueError("bab_prove: empty box (lower > upper somewhere)")
    mat = torch.as_tensor(spec.mat, dtype=F64)
    rhs = torch.as_tensor(spec.rhs, dtype=F64)
    last = net.stages[-1]
    lam0 = (mat @ last.weight).unsqueeze(1)  # (K, 1, n)
    beta0 = (mat @ last.bias).unsqueeze(1)

    def bound(known, stale=None) -> list[_Domain | None]:
        b = len(known[0][0]) if known is not None else 1
        stacked = None if known is None else [(torch.stack(kl), torch.stack(ku)) for kl, ku in known]
        res = compute_bounds_box(net, lo.expand((b,) + lo.shape[1:]), hi.expand((b,) + hi.shape[1:]),
                                 method=BoundMethod.CROWN, intermediate="unstable", known=stacked,
                                 recompute=None if stale is None else [torch.stack(s) for s in stale])
        pre = [(l.reshape(b, -1), u.reshape(b, -1)) for l, u in res.pre_activation]
        empty = torch.zeros(b, dtype=torch.bool)
        for l, u in pre:  # an empty interval, beyond round-off: no input satisfies the subdomain's splits
            empty |= (l > u + 1e-9 * (1 + l.abs() + u.abs())).any(1)
        low, scores = _spec_bound(net, lo, hi, pre, lam0, beta0)
        viol = (low - rhs).max(1).values  # (b,)
        return [None if empty[i] else _Domain(tuple((l[i], u[i]) for l, u in pre), tuple(s[i] for s in scores),
                                               float(viol[i])) for i in range(b)]

    leaves = 0

    def finish(status, lowest, count, left, x=None) -> BabResult:
        return BabResult(status, lowest, root.lower, count, left, time.perf_counter() - t0, leaves, x)

    def leaf(d: _Domain) -> tuple[VerificationStatus, np.ndarray | None]:
        """Decide a subdomain with few unstable ReLUs by its MILP on its own bounds."""
        left = None if time_limit is None else time_limit - (time.perf_counter() - t0)
        if left is not None and left <= 0:
            return VerificationStatus.TIMEOUT, None
        sub = LayerBounds(tuple((l.numpy(), u.numpy()) for l, u in d.pre), "bab subdomain")
        model = build_model(net, flat_lo, flat_hi, sub, spec=spec)
        res = solve_model(model, time_limit=left, threads=1, objective_bound=0.0, objective_target=-1e-5)
        verdict, chk = interpret(net, model, res, threads=1, time_limit=None if left is None else max(left, 1e-3))
        return verdict, (None if chk is None or not chk.valid else np.asarray(chk.x, dtype=np.float64))

    (root,) = bound(None)
    if root is None or unreachable(root.lower, spec):
        return BabResult(BabStatus.PROVEN, np.inf if root is None else root.lower, np.inf if root is None else root.lower,
                         1, 0, time.perf_counter() - t0)
    tie = itertools.count()
    heap = [(root.lower, next(tie), root)]
    count = 1
    while heap:
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            return finish(BabStatus.OPEN, heap[0][0], count, len(heap))
        if len(heap) > options.max_domains:
            return finish(BabStatus.OPEN, heap[0][0], count, len(heap))
        parents = []
        while heap and len(parents) < options.batch:
            p = heapq.heappop(heap)[2]
            if _unstable(net, p) > options.milp_leaf:
                parents.append(p)
                continue
            verdict, x = leaf(p)
            leaves += 1
            if verdict is VerificationStatus.NOT_ROBUST:
                return finish(BabStatus.FALSIFIED, -np.inf, count, len(heap) + len(parents), x)
            if verdict is not VerificationStatus.ROBUST:
                heapq.heappush(heap, (p.lower, next(tie), p))
                status = BabStatus.OPEN if verdict is VerificationStatus.TIMEOUT else BabStatus.EXHAUSTED
                return finish(status, heap[0][0], count, len(heap) + len(parents))
        if not parents:
            continue
        children_known: list[list[Tensor]] = [[[], []] for _ in net.activations]
        children_stale: list[list[Tensor]] = [[] for _ in net.activations]
        child_parent = []
        for p in parents:
            where = _branch(net, p)
            if where is None:
                heapq.heappush(heap, (p.lower, next(tie), p))
                return finish(BabStatus.EXHAUSTED, heap[0][0], count, len(heap))
            layer, idx = where
            stale = _affected(net, layer, idx)
            for side in (0, 1):  # 0: inactive (upper = 0), 1: active (lower = 0)
                for j, (l, u) in enumerate(p.pre):
                    if j == layer:
                        l, u = l.clone(), u.clone()
                        if side:
                            l[idx] = 0.0
                        else:
                            u[idx] = 0.0
                    children_known[j][0].append(l)
                    children_known[j][1].append(u)
                    children_stale[j].append(stale[j])
                child_parent.append(p)
        kids = bound(children_known, children_stale)
        count += len(kids)
        for kid, p in zip(kids, child_parent):
            if kid is None:
                continue
            value = max(kid.lower, p.lower)  # the parent's bound holds on the child too
            if unreachable(value, spec):
                continue
            kid = _Domain(kid.pre, kid.scores, value)
            heapq.heappush(heap, (value, next(tie), kid))
    return finish(BabStatus.PROVEN, np.inf, count, 0)


def _affected(net: ReluNetwork, layer: int, idx: int) -> list[Tensor]:
    """Per ReLU layer, the neurons whose bounds can change when neuron ``idx`` of ``layer`` is fixed: none
    before and in ``layer`` (the fixed neuron's own bounds are clipped, not recomputed), then those that
    depend on it through the stages after it."""
    masks = [torch.zeros(a.size, dtype=torch.bool) for a in net.activations]
    dep = torch.zeros(1, net.activations[layer].size, dtype=F64)
    dep[0, idx] = 1.0
    for j in range(layer + 1, len(net.activations)):
        lo, hi = ibp_stage(net.stages[j], -dep, dep)  # |W| dep around the bias: wide exactly where W touches dep
        masks[j] = (hi - lo)[0] > 0
        dep = masks[j].to(F64).unsqueeze(0)
    return masks


def _unstable(net: ReluNetwork, d: _Domain) -> int:
    return sum(int(((l < 0) & (u > 0) & ~a.replaced).sum()) for (l, u), a in zip(d.pre, net.activations))


def _branch(net: ReluNetwork, d: _Domain) -> tuple[int, int] | None:
    """The (layer, neuron) with the largest score among the unstable ReLUs of ``d`` (None if none)."""
    best, where = -1.0, None
    for j, (s, (l, u), act) in enumerate(zip(d.scores, d.pre, net.activations)):
        unstable = (l < 0) & (u > 0) & ~act.replaced
        if not unstable.any():
            continue
        masked = torch.where(unstable, s, torch.full_like(s, -1.0))
        i = int(torch.argmax(masked))
        if float(masked[i]) > best:
            best, where = float(masked[i]), (j, i)
    return where


def _spec_bound(net: ReluNetwork, lo: Tensor, hi: Tensor, pre, lam0: Tensor, beta0: Tensor):
    """CROWN's lower bounds of the spec rows per subdomain, (b, K), and BaBSR scores per layer, (b, n_l):
    ``-d bound / d intercept * intercept`` of every unstable neuron's upper line, summed over the rows."""
    b, k = pre[0][0].shape[0], lam0.shape[0]
    rels, leaves = [], []
    for act, (l, u) in zip(net.activations, pre):
        r = relax(act, l, u, BoundMethod.CROWN)
        cu = r.cu.detach().clone().requires_grad_(True)
        leaves.append(cu)
        rels.append(_rows(r, cu, k))
    center = ((lo + hi) / 2).reshape(1, -1).expand(b * k, -1)
    radius = ((hi - lo) / 2).reshape(1, -1).expand(b * k, -1)
    lam = lam0.repeat(b, 1, 1)  # row r of subdomain i at i*k + r
    beta = beta0.repeat(b, 1)
    low, _ = back_substitute(net, len(net.stages) - 1, lam, beta, rels, center, radius, shared=False)
    low = low[:, 0]
    grads = torch.autograd.grad(low.sum(), leaves, allow_unused=True)
    scores = []
    for g, cu in zip(grads, leaves):
        scores.append(torch.zeros_like(cu) if g is None else (-g * cu).detach())
    return low.detach().reshape(b, k), scores


def _rows(r: Relax, cu: Tensor, k: int) -> Relax:
    """The relaxation of ``b`` subdomains repeated for ``k`` spec rows each (subdomain i at rows i*k..)."""
    rep = (lambda t: t.repeat_interleave(k, 0)) if k > 1 else (lambda t: t)
    al, cl, au, cuk = rep(r.al), rep(r.cl), rep(r.au), rep(cu)
    return Relax(al, cl, au, cuk, r.cols, (al - au)[:, r.cols], (cuk - cl)[:, r.cols], r.offset_cols)
