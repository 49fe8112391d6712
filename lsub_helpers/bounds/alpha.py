"""Optimised lower slopes (alpha-CROWN, Xu et al., 2021) for the bounds of output rows ``spec @ f(x)``.

CROWN bounds an unstable ReLU ``l < 0 < u`` from below by ``alpha * z`` with ``alpha`` 0 or 1.  Every
``alpha`` in ``[0, 1]`` gives a sound lower line, so the lower bound of a row ``c @ f(x)`` obtained by
back-substitution is sound for any choice of the slopes, and it can be maximised over them by gradient
ascent.  As auto_LiRPA does for the last layer, every row gets its own slopes (the rows are bounded as a
batch of copies of the box); the pre-activation bounds of the hidden layers stay those of ``base`` (CROWN by
default), which fix the upper lines.

The result keeps, per row, the best bound seen over the iterations (each one is sound) and never falls
below ``base``'s own bound of the row.  All arithmetic is float64.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..network import ReluNetwork
from .linear import back_substitute, relax, with_lower_slopes
from .propagate import check_box, compute_bounds_box
from .result import BoundMethod, Bounds

__all__ = ["AlphaOptions", "AlphaResult", "ProjectedAscent", "alpha_crown_spec"]

Tensor = torch.Tensor
F64 = torch.float64


@dataclass(frozen=True)
class AlphaOptions:
    """Gradient ascent on the lower slopes: ``iterations`` Adam steps of size ``lr``, stopped early when a
    step improves no row by more than ``tol`` (absolute) or when ``time_limit`` seconds have passed."""

    iterations: int = 20
    lr: float = 0.2
    tol: float = 1e-4
    time_limit: float | None = None

    def __post_init__(self):
        if self.iterations < 0 or self.lr <= 0 or self.tol < 0:
            raise ValueError(f"AlphaOptions: need iterations >= 0, lr > 0, tol >= 0, got {self}")


@dataclass(frozen=True, eq=False)
class AlphaResult:
    """Lower bounds of ``spec @ f(x)`` over the box, per row: ``lower`` (optimised) and ``base_lower``."""

    lower: Tensor  # (K,) float64
    base_lower: Tensor  # (K,)
    iterations: int
    time_s: float


class ProjectedAscent:
    """Adam steps that increase an objective, each tensor kept in its interval ``[low, high]`` (None: open).

    Written out rather than ``torch.optim.Adam``, whose first use in a process imports ``torch._dynamo``
    (seconds, more than a whole bound computation).  ``groups``: ``(tensors, lr, low, high)``."""

    def __init__(self, groups, betas=(0.9, 0.999), eps=1e-8):
        self.groups = [(list(ts), lr, low, high) for ts, lr, low, high in groups]
        self.b1, self.b2, self.eps = betas[0], betas[1], eps
        self.t = 0
        self.m = [[torch.zeros_like(x) for x in ts] for ts, *_ in self.groups]
        self.v = [[torch.zeros_like(x) for x in ts] for ts, *_ in self.groups]

    @property
    def tensors(self) -> list[Tensor]:
        return [x for ts, *_ in self.groups for x in ts]

    def step(self, objective: Tensor) -> None:
        """One step along the gradient of ``objective`` (a scalar computed from :attr:`tensors`)."""
        grads = iter(torch.autograd.grad(objective, self.tensors, allow_unused=True))
        self.t += 1
        c1, c2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        with torch.no_grad():
            for (ts, lr, low, high), ms, vs in zip(self.groups, self.m, self.v):
                for x, m, v in zip(ts, ms, vs):
                    g = next(grads)
                    if g is None:
                        continue
                    m.mul_(self.b1).add_(g, alpha=1 - self.b1)
                    v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
                    x.add_(lr * (m / c1) / ((v / c2).sqrt() + self.eps))
                    if low is not None or high is not None:
                        x.clamp_(low, high)


def alpha_crown_spec(net: ReluNetwork, lower, upper, spec, *, base: Bounds | None = None,
                     options: AlphaOptions = AlphaOptions()) -> AlphaResult:
    """Lower bounds of the rows of ``spec`` (K, num_classes) times the logits over ``lower <= x <= upper``.

    ``base``: bounds of the same box (any method with pre-activation bounds; computed by CROWN if None);
    its hidden-layer bounds are kept and its relaxation is the starting point.
    """
    t0 = time.perf_counter()
    if any(pool is not None for pool in net.pools):
        raise ValueError("alpha_crown_spec does not handle max pooling layers yet: use crown_box(..., spec=...)")
    lo, hi, batched = check_box(net, lower, upper)
    if batched:
        raise ValueError("alpha_crown_spec bounds one box (shape net.input_shape), not a batch")
    spec = torch.as_tensor(spec, dtype=F64)
    if spec.dim() != 2 or spec.shape[1] != net.num_classes:
        raise ValueError(f"spec must have shape (K, {net.num_classes}), got {tuple(spec.shape)}")
    if base is None:
        base = compute_bounds_box(net, lo[0], hi[0], method=BoundMethod.CROWN, spec=spec)
    last = len(net.stages) - 1
    k = spec.shape[0]
    center = ((lo + hi) / 2).reshape(1, -1).expand(k, -1)
    radius = ((hi - lo) / 2).reshape(1, -1).expand(k, -1)
    stage = net.stages[last]
    lam0 = (spec @ stage.weight).unsqueeze(1)  # (K, 1, n): one row per copy of the box
    beta0 = (spec @ stage.bias).unsqueeze(1)
    start = [relax(act, l.reshape(1, -1), u.reshape(1, -1), BoundMethod.CROWN)
             for act, (l, u) in zip(net.activations, base.pre_activation)]

    def bound(alphas) -> Tensor:
        rels = [with_lower_slopes(r, a, lambda v: v.expand(k, -1)) for r, a in zip(start, alphas)]
        low, _ = back_substitute(net, last, lam0, beta0, rels, center, radius, shared=False)
        return low[:, 0]

    with torch.no_grad():
        best = bound([r.al[:, r.cols].expand(k, -1).clone() for r in start])
    base_out = getattr(base, "output", None)
    base_lower = best.clone()
    if base_out is not None and base_out[0].reshape(-1).shape[0] == k:
        base_lower = torch.maximum(base_lower, torch.as_tensor(base_out[0], dtype=F64).reshape(-1))
    best = torch.maximum(best, base_lower)
    alphas = [r.al[:, r.cols].expand(k, -1).clone().requires_grad_(True) for r in start]
    done = 0
    if options.iterations and any(a.numel() for a in alphas):
        ascent = ProjectedAscent([([a for a in alphas if a.numel()], options.lr, 0.0, 1.0)])
        for done in range(1, options.iterations + 1):
            low = bound(alphas)
            gain = (low.detach() - best).max()
            best = torch.maximum(best, low.detach())
            ascent.step(low.sum())
            if (done > 1 and gain <= options.tol) or (
                    options.time_limit is not None and time.perf_counter() - t0 > options.time_limit):
                break
        with torch.no_grad():  # the last step's slopes
            best = torch.maximum(best, bound(alphas))
    return AlphaResult(best.detach(), base_lower.detach(), done, time.perf_counter() - t0)
