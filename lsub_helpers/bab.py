"""Branch and bound on ReLU splits: proving one output specification over a box where one MILP is too big.

The box is split into subdomains by fixing unstable ReLUs (``z >= 0``: the neuron is the identity; ``z <= 0``:
it is zero). A subdomain keeps the pre-activation bounds of its parent with the fixed neuron's clipped, and the
violation ``max_k (mat @ f(x) - rhs)_k`` of the spec is bounded from below on it by one back-substitution in
which the split constraints enter through their multipliers (below), as beta-CROWN does by default.  With
``BabOptions(recompute=True)`` the intermediate bounds of every child are recomputed by CROWN first
(:func:`lsub_helpers.bounds.compute_bounds_box` with ``known``: the parent's bounds intersected layer by layer),
which tightens the bounds of every later layer but costs about six times as much per subdomain; measured side
by side on every Table 1 network (``benchmarks/bench_bab_schedule.py``, ``hard-all``: eps-verifications at 0.5
and 0.9 times the attack distance), the parent's bounds decided the same queries, those at 0.5 d 2.7 times
faster in total.  A subdomain whose bound shows the unsafe set unreachable, or
whose bounds are empty (no input satisfies its splits), is closed; the others are split again, worst bound
first, on the neuron whose upper-line intercept costs the bound most (the BaBSR score of Bunel et al., 2020,
read off the gradient of the bound). The spec is proven when no subdomain is left open.

Everything is sound: every bound holds on its subdomain (float64, up to round-off), a child never reports a
worse bound than its parent. The intermediate bounds of a subdomain ignore its split constraints (except the
split neurons' own; alpha-beta-CROWN can also optimise those), so more subdomains are needed for the same
proof than there, and a subdomain with every ReLU fixed need not be closed by its bound. So a subdomain with at most
``milp_leaf`` unstable ReLUs left goes to the MILP of :mod:`lsub_helpers.milp` built on the subdomain's own
bounds (at most ``milp_leaf`` binaries; the split signs are among its constraints), which decides it exactly.
Each bound comes with the point of the box that minimises its linear function; these points are evaluated, and
one that reaches the unsafe set is a counterexample. Every point :func:`bab_prove` reports (from there or from
a MILP) has passed the float64 re-check (:func:`lsub_helpers.milp.check_counterexample`).

The bound of a subdomain is CROWN's back-substitution with the lower slopes of the unstable ReLUs optimised
(alpha-CROWN, Xu et al., 2021) and the split constraints ``s * z >= 0`` added with multipliers ``beta >= 0``
(beta-CROWN, Wang et al., 2021), a few projected Adam steps per batch, warm-started from the parent.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import itertools
import time
from dataclasses import dataclass

import numpy as np
import torch

from .bounds import BoundMethod, compute_bounds_box
from .bounds.alpha import ProjectedAscent
from .bounds.ibp import ibp_stage
from .bounds.linear import back_substitute, relax, with_lower_slopes
from .milp import (LayerBounds, OutputSpec, VerificationStatus, build_model, check_counterexample, interpret,
                   solve_model, unreachable)
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

    # batch and iterations measured on mnist-cnna-adv2 3577 at 0.9 d, its worst target, 60 s: (8, 4) 7,743
    # subdomains, bound -3.0; (32, 2) 11,199, -2.7; (32, 8) 7,167, -3.0; (64, 2) 17,663, -2.6 (with recompute:
    # (8, 4) 1,311 subdomains, -3.9)
    batch: int = 64
    max_domains: int = 10_000
    milp_leaf: int = 12  # a subdomain with at most this many unstable ReLUs is decided by its MILP
    iterations: int = 2  # Adam steps on the slopes and split multipliers per batch of subdomains (0: CROWN)
    root_iterations: int = 30
    lr_alpha: float = 0.2  # measured on mnist-cnna-clean at 0.5 d (benchmarks/results/hard.md): 4 steps at
    lr_beta: float = 0.1  # these rates closed the gap fastest per second among 0-16 steps and 0.05-0.2
    recompute: bool = False  # children's intermediate bounds recomputed by CROWN (False: the parent's, clipped)

    def __post_init__(self):
        if (self.batch < 1 or self.max_domains < 1 or self.milp_leaf < 0 or self.iterations < 0
                or self.root_iterations < 0 or self.lr_alpha <= 0 or self.lr_beta <= 0):
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
    splits: tuple[Tensor, ...]  # per layer (n_l,): +1 fixed active (z >= 0), -1 fixed inactive (z <= 0), 0 free
    alpha: tuple[Tensor, ...]  # per layer (K, n_l): the optimised lower slopes (warm start of the children)
    mult: tuple[Tensor, ...]  # per layer (K, n_l): the multipliers of the split constraints


def bab_prove(net: ReluNetwork, lower, upper, spec: OutputSpec, *, time_limit: float | None = 60.0,
              options: BabOptions = BabOptions()) -> BabResult:
    """Try to prove that no input of ``lower <= x <= upper`` reaches ``spec``'s unsafe set, within ``time_limit`` s."""
    t0 = time.perf_counter()
    if any(pool is not None for pool in net.pools):
        raise ValueError("bab_prove does not handle max pooling layers yet: use the MILP (bab=0) for this network")
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

    def bound(known, stale=None, splits=None, alpha0=None, mult0=None, iterations=0) -> list[_Domain | None]:
        b = len(known[0][0]) if known is not None else 1
        stacked = None if known is None else [(torch.stack(kl), torch.stack(ku)) for kl, ku in known]
        if stacked is not None and not options.recompute:
            pre = [(l.reshape(b, -1), u.reshape(b, -1)) for l, u in stacked]
        else:
            res = compute_bounds_box(net, lo.expand((b,) + lo.shape[1:]), hi.expand((b,) + hi.shape[1:]),
                                     method=BoundMethod.CROWN, intermediate="unstable", known=stacked,
                                     recompute=None if stale is None else [torch.stack(s) for s in stale])
            pre = [(l.reshape(b, -1), u.reshape(b, -1)) for l, u in res.pre_activation]
        empty = torch.zeros(b, dtype=torch.bool)
        for l, u in pre:  # an empty interval, beyond round-off: no input satisfies the subdomain's splits
            empty |= (l > u + 1e-9 * (1 + l.abs() + u.abs())).any(1)
        if splits is None:
            splits = [torch.zeros(1, a.size, dtype=torch.int8) for a in net.activations]
        low, scores, alpha, mult, points = _spec_bound(net, lo, hi, pre, lam0, beta0, splits, alpha0, mult0,
                                                       iterations, options)
        found.append(_candidate(net, points, flat_lo, flat_hi, spec))
        viol = (low - rhs).max(1).values  # (b,)
        return [None if empty[i] else _Domain(tuple((l[i], u[i]) for l, u in pre), tuple(s[i] for s in scores),
                                               float(viol[i]), tuple(s[i] for s in splits),
                                               tuple(a[i] for a in alpha), tuple(m[i] for m in mult))
                for i in range(b)]

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

    found: list[np.ndarray | None] = []  # a point that passed the re-check, per bounding (the last is the newest)
    (root,) = bound(None, iterations=options.root_iterations)
    if found[-1] is not None:
        return BabResult(BabStatus.FALSIFIED, -np.inf, root.lower, 1, 0, time.perf_counter() - t0, 0, found[-1])
    if root is None or unreachable(root.lower, spec):
        value = np.inf if root is None else root.lower
        return BabResult(BabStatus.PROVEN, value, value, 1, 0, time.perf_counter() - t0)
    tie = itertools.count()
    heap = [(root.lower, next(tie), root)]
    count = 1
    last_batch = 0.0  # seconds the last batch took: a batch that would end past the time limit is not started
    while heap:
        if time_limit is not None and time.perf_counter() - t0 + last_batch > time_limit:
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
        children_stale = [[] for _ in net.activations] if options.recompute else None
        children_splits: list[list[Tensor]] = [[] for _ in net.activations]
        children_alpha: list[list[Tensor]] = [[] for _ in net.activations]
        children_mult: list[list[Tensor]] = [[] for _ in net.activations]
        child_parent = []
        for p in parents:
            where = _branch(net, p)
            if where is None:
                heapq.heappush(heap, (p.lower, next(tie), p))
                return finish(BabStatus.EXHAUSTED, heap[0][0], count, len(heap))
            layer, idx = where
            stale = _affected(net, layer, idx) if options.recompute else None
            for side in (0, 1):  # 0: inactive (upper = 0), 1: active (lower = 0)
                for j, (l, u) in enumerate(p.pre):
                    s = p.splits[j]
                    if j == layer:
                        l, u, s = l.clone(), u.clone(), s.clone()
                        if side:
                            l[idx] = 0.0
                        else:
                            u[idx] = 0.0
                        s[idx] = 1 if side else -1
                    children_known[j][0].append(l)
                    children_known[j][1].append(u)
                    if stale is not None:
                        children_stale[j].append(stale[j])
                    children_splits[j].append(s)
                    children_alpha[j].append(p.alpha[j])
                    children_mult[j].append(p.mult[j])
                child_parent.append(p)
        stack = (lambda lists: [torch.stack(v) for v in lists])
        tb = time.perf_counter()
        kids = bound(children_known, children_stale, stack(children_splits), stack(children_alpha),
                     stack(children_mult), options.iterations)
        last_batch = time.perf_counter() - tb
        count += len(kids)
        if found[-1] is not None:
            return finish(BabStatus.FALSIFIED, -np.inf, count, len(heap) + len(kids), found[-1])
        for kid, p in zip(kids, child_parent):
            if kid is None:
                continue
            value = max(kid.lower, p.lower)  # the parent's bound holds on the child too
            if unreachable(value, spec):
                continue
            kid = dataclasses.replace(kid, lower=value)
            heapq.heappush(heap, (value, next(tie), kid))
    return finish(BabStatus.PROVEN, np.inf, count, 0)


def _candidate(net: ReluNetwork, points: Tensor, lower: np.ndarray, upper: np.ndarray, spec: OutputSpec):
    """The minimisers of the subdomains' linear bounds over the box, evaluated: the first that reaches the
    unsafe set and passes the float64 re-check (:func:`lsub_helpers.milp.check_counterexample`), or None."""
    with torch.no_grad():
        y = net.forward(points.reshape((-1,) + tuple(net.input_shape)))
    viol = (y @ torch.as_tensor(spec.mat).T - torch.as_tensor(spec.rhs)).max(1).values
    for i in torch.argsort(viol)[:3].tolist():
        if viol[i] > 0 or (spec.strict and viol[i] >= 0):
            break
        chk = check_counterexample(net, points[i].numpy(), lower, upper, spec)
        if chk.valid:
            return np.asarray(chk.x, dtype=np.float64)
    return None


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


def _spec_bound(net: ReluNetwork, lo: Tensor, hi: Tensor, pre, lam0: Tensor, beta0: Tensor, splits, alpha0, mult0,
                iterations: int, options: "BabOptions"):
    """Lower bounds of the spec rows per subdomain, (b, K), by back-substitution with optimised lower slopes
    (alpha) and multipliers ``beta >= 0`` of the split constraints ``s * z >= 0`` (beta-CROWN's Lagrangian
    ``c.f(x) - sum beta s z(x)``, which is below ``c.f(x)`` on the subdomain), ``iterations`` Adam steps
    from ``alpha0`` / ``mult0`` ((b, K, n_l) each; None: CROWN's slopes and zero multipliers).  Every step's
    bound is sound; the best per row is kept.  Also the BaBSR scores per layer, (b, n_l) (``-d bound /
    d intercept * intercept`` of every unstable neuron's upper line, summed over the rows), and the final
    slopes and multipliers for the children."""
    b, k = pre[0][0].shape[0], lam0.shape[0]
    rows = b * k
    rep = (lambda v: v.repeat_interleave(k, 0)) if k > 1 else (lambda v: v)
    base = [relax(act, l, u, BoundMethod.CROWN) for act, (l, u) in zip(net.activations, pre)]
    alphas, mults, signs = [], [], []
    for j, r in enumerate(base):
        start = rep(r.al) if alpha0 is None else alpha0[j].reshape(rows, -1)
        alphas.append(start[:, r.cols].detach().clone().requires_grad_(True))
        s = rep(splits[j].to(F64))
        signs.append(s if (s != 0).any() else None)
        m = torch.zeros(rows, r.al.shape[1], dtype=F64) if mult0 is None else mult0[j].reshape(rows, -1)
        mults.append(m.detach().clone().requires_grad_(True) if signs[j] is not None else None)
    center = ((lo + hi) / 2).reshape(1, -1).expand(rows, -1)
    radius = ((hi - lo) / 2).reshape(1, -1).expand(rows, -1)
    lam = lam0.repeat(b, 1, 1)  # row r of subdomain i at i*k + r
    beta = beta0.repeat(b, 1)
    last = len(net.stages) - 1

    def evaluate(cus=None) -> Tensor:
        rels = [with_lower_slopes(r, alphas[j], rep, None if cus is None else cus[j]) for j, r in enumerate(base)]
        z_terms = [None if s is None else -m * s for s, m in zip(signs, mults)]
        low, coef = back_substitute(net, last, lam, beta, rels, center, radius, shared=False, z_terms=z_terms,
                                    lower_only=True)
        points.append(center - radius * torch.sign(coef[:, 0].detach()))
        return low[:, 0]

    points: list[Tensor] = []

    params = [a for a in alphas if a.numel()] + [m for m in mults if m is not None]
    with torch.no_grad():
        best = evaluate()
    if iterations and params:
        ascent = ProjectedAscent([([a for a in alphas if a.numel()], options.lr_alpha, 0.0, 1.0),
                                  ([m for m in mults if m is not None], options.lr_beta, 0.0, None)])
        for _ in range(iterations):
            low = evaluate()
            best = torch.maximum(best, low.detach())
            ascent.step(low.sum())
    cus = [r.cu.detach().clone().requires_grad_(True) for r in base]
    low = evaluate(cus)
    best = torch.maximum(best, low.detach())
    grads = torch.autograd.grad(low.sum(), cus, allow_unused=True)
    scores = [torch.zeros_like(cu) if g is None else (-g * cu).detach() for g, cu in zip(grads, cus)]
    n = [r.al.shape[1] for r in base]
    alpha_out, mult_out = [], []
    for j, r in enumerate(base):
        full = rep(r.al).detach().clone()
        if r.cols.numel():
            full[:, r.cols] = alphas[j].detach()
        alpha_out.append(full.reshape(b, k, n[j]))
        m = torch.zeros(rows, n[j], dtype=F64) if mults[j] is None else mults[j].detach()
        mult_out.append(m.reshape(b, k, n[j]))
    return best.reshape(b, k), scores, alpha_out, mult_out, points[-1]
