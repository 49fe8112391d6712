"""Lemma 1 (Section 3.2): where f = g, local Lipschitz constants, and the certificate for f from g.

Norm pairing: inputs are measured in L-inf, so the Lipschitz constant of a scalar margin function
``m(x) = h_y(x) - h_t(x)`` on a ball is ``sup ||grad m||_1`` over the ball (L1 is the dual norm of L-inf).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch

from .bounds import BoundMethod, compute_bounds
from .bounds.ibp import ibp_activation
from .bounds.pool import pool_gradient_interval
from .network import ReluNetwork

__all__ = [
    "delta_lower_bound",
    "pattern_preserved",
    "lipschitz_margin",
    "sampled_lipschitz",
    "LemmaCase",
    "Certificate",
    "certificate",
    "DeltaResult",
    "delta_exact",
    "margin_lower_bound",
]


def _check_eps(eps: float, name: str = "eps") -> float:
    eps = float(eps)
    if not eps > 0 or math.isnan(eps):
        raise ValueError(f"{name} must be > 0, got {eps}")
    return eps


def _replaced_states(f: ReluNetwork, g: ReluNetwork, x0: torch.Tensor):
    """For every layer: the replaced mask of g and the state (z0 > 0) of f at x0."""
    pre0, _ = f.forward_all(x0[None].to(torch.float64))
    return [(a.replaced, z[0] > 0) for a, z in zip(g.activations, pre0)]


def pattern_preserved(
    f: ReluNetwork,
    g: ReluNetwork,
    x0: torch.Tensor,
    radius: float,
    *,
    bounds: BoundMethod | str = BoundMethod.CROWN,
    domain: tuple[float, float] = (0.0, 1.0),
) -> bool:
    """True if bounds prove that every neuron replaced in the activation-pattern substitute ``g`` keeps
    its state at ``x0`` on ``B(x0, radius)``, hence ``f = g`` there (sound, possibly conservative).

    Valid for ``g`` made by the ``activation`` pruner (identity where z0 > 0, zero elsewhere).
    """
    x0 = f.check_input(torch.as_tensor(x0), batched=False).to(torch.float64)
    b = compute_bounds(f, x0, radius, method=bounds, domain=domain)
    for (mask, active), (lo, up) in zip(_replaced_states(f, g, x0), b.pre_activation):
        if bool((mask & active & (lo < 0)).any()) or bool((mask & ~active & (up > 0)).any()):
            return False
    return True


def delta_lower_bound(
    f: ReluNetwork,
    g: ReluNetwork,
    x0: torch.Tensor,
    *,
    r_max: float,
    bounds: BoundMethod | str = BoundMethod.CROWN,
    domain: tuple[float, float] = (0.0, 1.0),
    rel_tol: float = 1e-3,
    max_iter: int = 40,
) -> float:
    """A certified lower bound on delta, the radius on which f = g for an activation substitute:
    bisection on ``r`` in (0, r_max] of :func:`pattern_preserved`.  Returns 0.0 if no radius is proved."""
    r_max = _check_eps(r_max, "r_max")
    x0 = torch.as_tensor(x0, dtype=torch.float64)
    if pattern_preserved(f, g, x0, r_max, bounds=bounds, domain=domain):
        return r_max
    lo, hi = 0.0, r_max
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        if pattern_preserved(f, g, x0, mid, bounds=bounds, domain=domain):
            lo = mid
        else:
            hi = mid
        if hi - lo <= rel_tol * hi:
            break
    return lo


def lipschitz_margin(
    net: ReluNetwork,
    x0: torch.Tensor,
    eps: float,
    label: int,
    target: int,
    *,
    bounds: BoundMethod | str = BoundMethod.CROWN,
    domain: tuple[float, float] = (0.0, 1.0),
) -> float:
    """A sound upper bound on the L-inf -> |.| Lipschitz constant of ``net_label - net_target`` on
    ``B(x0, eps)``: interval bounds on the gradient ``c W_L D_{L-1} ... D_1 W_1`` where every ReLU
    derivative ``D`` ranges over {0}, {1} or [0, 1] according to the neuron's bounds, and replaced neurons
    have their fixed slope; a max pool passes the gradient to one of its window's candidates.  Returns
    ``max ||grad||_1`` over that interval set."""
    eps = _check_eps(eps)
    label, target = net.check_label(label), net.check_label(target)
    x0 = net.check_input(torch.as_tensor(x0), batched=False).to(torch.float64)
    b = compute_bounds(net, x0, eps, method=bounds, domain=domain)
    c = torch.zeros(net.num_classes, dtype=torch.float64)
    c[label], c[target] = 1.0, -1.0
    g_lo = g_hi = c @ net.stages[-1].weight  # gradient w.r.t. the last hidden layer's outputs
    for k in range(len(net.activations) - 1, -1, -1):
        act = net.activations[k]
        lo, up = b.pre_activation[k]
        if net.pools[k] is not None:  # through the max pooling after activation k
            g_lo, g_hi = pool_gradient_interval(net.pools[k], *ibp_activation(act, lo, up), g_lo, g_hi)
        d_lo = torch.where(lo >= 0, 1.0, 0.0).to(torch.float64)
        d_hi = torch.where(up > 0, 1.0, 0.0).to(torch.float64)
        d_lo = torch.where(act.replaced, act.slope, d_lo)
        d_hi = torch.where(act.replaced, act.slope, d_hi)
        cands = torch.stack([g_lo * d_lo, g_lo * d_hi, g_hi * d_lo, g_hi * d_hi])
        p_lo, p_hi = cands.min(0).values, cands.max(0).values
        w = net.stages[k].weight
        mid, rad = (p_hi + p_lo) / 2, (p_hi - p_lo) / 2
        g_mid, g_rad = mid @ w, rad @ w.abs()
        g_lo, g_hi = g_mid - g_rad, g_mid + g_rad
    return float(torch.maximum(g_lo.abs(), g_hi.abs()).sum())


def sampled_lipschitz(
    net: ReluNetwork,
    x0: torch.Tensor,
    eps: float,
    label: int,
    target: int,
    *,
    samples: int = 256,
    domain: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
) -> float:
    """``max ||grad m||_1`` over random points of the ball: a lower bound on the true Lipschitz constant,
    to show how loose :func:`lipschitz_margin` is."""
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.as_tensor(x0, dtype=torch.float64)
    noise = (torch.rand((samples,) + tuple(x0.shape), generator=gen, dtype=torch.float64) * 2 - 1) * eps
    x = (x0 + noise).clamp(domain[0], domain[1]).requires_grad_(True)
    logits = net.forward(x)
    (logits[:, label] - logits[:, target]).sum().backward()
    return float(x.grad.reshape(samples, -1).abs().sum(1).max())


class LemmaCase(enum.Enum):
    INSIDE = 1  # delta >= eps: V_g(eps) >= 0 suffices
    OUTSIDE = 2  # delta < eps: V_g(eps) >= 2 (L_f + L_g)(eps - delta) suffices


@dataclass(frozen=True)
class Certificate:
    case: LemmaCase
    holds: bool  # True: V_f(eps) >= 0 is proved
    eps: float
    delta: float
    v_g: float  # a lower bound on V_g(eps) (min margin of g on the ball)
    required: float  # what V_g must reach for the lemma to apply
    lipschitz_f: float
    lipschitz_g: float


def certificate(
    *,
    eps: float,
    delta: float,
    v_g: float,
    lipschitz_f: float = math.inf,
    lipschitz_g: float = math.inf,
    factor: float = 2.0,
) -> Certificate:
    """Lemma 1 for one target.  ``v_g`` must be a *lower* bound on ``V_g(eps)``; ``delta`` a certified
    radius on which f = g.  ``factor=2`` is the paper's constant for per-logit Lipschitz constants; with
    Lipschitz constants of the *margin* functions (as :func:`lipschitz_margin` returns) ``factor=1`` is
    already sound, and 2 stays sound but looser."""
    eps = _check_eps(eps)
    if delta < 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    if delta >= eps:
        return Certificate(LemmaCase.INSIDE, v_g >= 0, eps, delta, v_g, 0.0, lipschitz_f, lipschitz_g)
    required = factor * (lipschitz_f + lipschitz_g) * (eps - delta)
    return Certificate(LemmaCase.OUTSIDE, v_g >= required, eps, delta, v_g, required, lipschitz_f, lipschitz_g)


@dataclass(frozen=True)
class DeltaResult:
    """The exact delta by MILP: ``lower <= delta <= upper``; ``exact`` when no run hit its time limit."""

    lower: float
    upper: float
    exact: bool
    neuron: tuple[int, int] | None  # (layer, index) of the first neuron to change state
    num_milps: int
    time_s: float


def _truncated(f: ReluNetwork, layer: int) -> ReluNetwork:
    """The network whose outputs are the (flattened) pre-activations of ReLU layer ``layer``."""
    from .network import AffineStage, FlattenOp

    stage = f.stages[layer]
    if len(stage.out_shape) != 1:
        stage = AffineStage(stage.ops + (FlattenOp(stage.out_shape),))
    return ReluNetwork(f.stages[:layer] + (stage,), f.original().activations[:layer], f.pools[:layer])


def delta_exact(
    f: ReluNetwork,
    g: ReluNetwork,
    x0: torch.Tensor,
    *,
    r_max: float,
    time_limit: float = 60.0,
    domain: tuple[float, float] = (0.0, 1.0),
    threads: int = 1,
) -> DeltaResult:
    """delta exactly, by one distance MILP per replaced neuron that bounds cannot rule out:
    ``min ||x - x0||_inf`` such that the neuron's pre-activation reaches the other side of zero.

    This is as hard as verification itself (the paper's point): it is meant for small networks."""
    import time as _time

    import numpy as np

    from .bounds import compute_bounds_box
    from .milp import Objective, OutputSpec, SolverStatus, build_model, input_box, solve_model

    t_start = _time.perf_counter()
    r_max = _check_eps(r_max, "r_max")
    x0 = f.check_input(torch.as_tensor(x0), batched=False).to(torch.float64)
    x0f = x0.reshape(-1).numpy()
    best, lower_parts, exact, neuron, n_milps = r_max, [], True, None, 0
    for layer, (mask, active) in enumerate(_replaced_states(f, g, x0)):
        idx = torch.nonzero(mask).reshape(-1).tolist()
        if not idx:
            continue
        trunc = _truncated(f, layer)
        lo_box, hi_box = input_box(x0f, best, domain)
        b = compute_bounds_box(trunc, torch.from_numpy(lo_box).reshape(x0.shape),
                               torch.from_numpy(hi_box).reshape(x0.shape), method=BoundMethod.CROWN)
        out_lo, out_hi = b.output
        for i in idx:
            sign = 1.0 if bool(active[i]) else -1.0  # unsafe: sign * z_i <= 0
            if (sign > 0 and float(out_lo[i]) > 0) or (sign < 0 and float(out_hi[i]) < 0):
                continue  # cannot change state within the current best radius
            row = np.zeros((1, trunc.num_classes))
            row[0, i] = sign
            spec = OutputSpec(row, np.zeros(1), strict=False, name=f"neuron {layer}:{i}")
            model = build_model(trunc, lo_box, hi_box, b, spec=spec, objective=Objective.DISTANCE, x0=x0f,
                                radius=best)
            res = solve_model(model, time_limit=time_limit, threads=threads)
            n_milps += 1
            if res.status is SolverStatus.INFEASIBLE:
                continue
            if res.status is SolverStatus.OPTIMAL and res.objective is not None and res.x is not None:
                pt = torch.from_numpy(np.asarray(res.x, dtype=np.float64)).reshape(x0.shape)
                z = trunc.forward(pt[None])[0, i]
                d = float((pt - x0).abs().max())
                if sign * float(z) <= 1e-9 and d < best:
                    best, neuron = d, (layer, i)
                lower_parts.append(max(float(res.bound if res.bound is not None else 0.0), 0.0))
            else:
                exact = False
                lower_parts.append(max(float(res.bound or 0.0), 0.0))
    lower = min([best] + lower_parts)
    return DeltaResult(lower, best, exact, neuron, n_milps, _time.perf_counter() - t_start)


def margin_lower_bound(net: ReluNetwork, x0, label: int, eps: float, target: int, *, time_limit: float = 60.0,
                       domain=(0.0, 1.0)) -> float:
    """A sound lower bound on ``V_net(eps) = min over B(x0, eps) of f_label - f_target`` (the quantity Lemma 1
    is about): CROWN's bound on the margin, raised to the MILP's proven bound when a MILP runs and every
    one of its runs proves one (bounds alone may already decide the query)."""
    from .distance import verify

    x0 = torch.as_tensor(x0, dtype=torch.float64)
    spec = torch.zeros(1, net.num_classes, dtype=torch.float64)
    spec[0, label], spec[0, target] = 1.0, -1.0
    lb = float(compute_bounds(net, x0, eps, method=BoundMethod.CROWN, domain=domain, spec=spec).output[0][0])
    r = verify(net, x0, label, eps, target=target, verdict_only=False, time_limit=time_limit, domain=domain)
    proven = [run.bound for run in r.runs if run.bound is not None]
    return max([lb] + ([min(proven)] if proven and len(proven) == len(r.runs) else []))
