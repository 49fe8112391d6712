"""Beyond the paper: the substitute's distance as an estimate *with* a sound interval for d_bnd(f).

``estimate_distance`` prunes ``f`` around ``x0`` (Algorithm 1), computes the exact distance of the small
substitute ``g`` (the estimate the paper reports) and brackets the true distance of ``f``:

* ``upper``: the smallest distance of a point re-checked (float64) to be misclassified by ``f``: the
  attack's ``x_adv``, or ``g``'s closest counterexample when ``f`` misclassifies it too;
* ``lower``: the largest radius proved robust for ``f`` by bound propagation, and for the
  ``activation`` substitute ``min(delta, lower(d_bnd(g)))`` (Lemma 1, case 1: f = g on ``B(x0, delta)``).
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass

import torch

from .attacks import AttackResult, min_distance_attack
from .bounds import BoundMethod, compute_bounds
from .distance import DistanceResult, DistanceStatus, boundary_distance
from .lemma import delta_lower_bound
from .network import ReluNetwork
from .options import keyword_options
from .pruning import PruneMethod, PruneOptions, Substitute, prune

__all__ = ["EstimateStatus", "DistanceEstimate", "estimate_distance", "certified_radius", "verified_upper_bound"]


class EstimateStatus(enum.Enum):
    OK = "ok"  # the substitute's distance was computed exactly
    TIMEOUT = "timeout"  # the substitute's MILP hit its time limit: no estimate, the interval still holds
    MISCLASSIFIED = "misclassified"
    NO_ADVERSARIAL = "no_adversarial"  # the attack found nothing: nothing to prune around


@dataclass(frozen=True)
class DistanceEstimate:
    status: EstimateStatus
    estimate: float | None  # d_bnd(g), the paper's estimate of d_bnd(f)
    lower: float  # certified: f is robust on B(x0, lower)
    upper: float  # certified: a point of another class at this distance exists
    d_adv: float | None
    delta: float | None  # activation substitute: certified radius on which f = g
    substitute: Substitute | None
    substitute_distance: DistanceResult | None
    timings: dict


def verified_upper_bound(net: ReluNetwork, x0, label: int, point) -> float | None:
    """The L-inf distance of ``point`` from ``x0`` if ``net`` (a float64 forward pass) does not classify it
    as ``label``: then a proven upper bound on ``net``'s distance to the boundary.  None otherwise, or when
    ``point`` is None.  A substitute's closest point need not be adversarial for the original network, so
    it is re-checked here before it bounds anything."""
    if point is None:
        return None
    x0 = torch.as_tensor(x0, dtype=torch.float64).reshape(net.input_shape)
    x = torch.as_tensor(point, dtype=torch.float64).reshape(net.input_shape)
    with torch.no_grad():
        if int(net.forward(x[None].to(torch.float64)).argmax(dim=1)[0]) == int(label):
            return None
    return float((x - x0).abs().max())


def certified_radius(
    net: ReluNetwork,
    x0: torch.Tensor,
    label: int,
    *,
    hi: float,
    bounds: BoundMethod | str = BoundMethod.CROWN,
    domain: tuple[float, float] = (0.0, 1.0),
    iters: int = 25,
) -> float:
    """The largest radius in [0, hi] (bisection) on which the output bounds prove ``label`` wins."""
    x0 = torch.as_tensor(x0, dtype=torch.float64)
    others = [k for k in range(net.num_classes) if k != label]
    spec = torch.zeros(len(others), net.num_classes, dtype=torch.float64)
    spec[:, label] = 1.0
    spec[torch.arange(len(others)), others] = -1.0

    def robust(r: float) -> bool:
        lo, _ = compute_bounds(net, x0, r, method=bounds, domain=domain, spec=spec).output
        return bool((lo > 0).all())

    lo, up = 0.0, float(hi)
    if hi > 0 and robust(hi):
        return float(hi)
    for _ in range(iters):
        mid = 0.5 * (lo + up)
        lo, up = (mid, up) if robust(mid) else (lo, mid)
    return lo


@keyword_options(PruneOptions)
def estimate_distance(
    net: ReluNetwork,
    x0: torch.Tensor,
    label: int,
    *,
    options: PruneOptions,
    distance_method: str = "direct",
    time_limit: float | None = 60.0,
    attack: AttackResult | None = None,
    threads: int = 1,
) -> DistanceEstimate:
    """Estimate ``d_bnd(f)`` by the exact distance of a local substitute, with a certified interval.

    The substitute is built by :func:`~lsub_helpers.pruning.prune` with ``options`` (a
    :class:`~lsub_helpers.pruning.PruneOptions`, or its fields ``method``, ``gamma``, ``gamma0``, ``bounds``,
    ``domain``, ``first_layer`` as keyword arguments); ``domain`` is also the domain of the distance."""
    method = PruneMethod(options.method)
    domain = options.domain
    label = net.check_label(label)
    x0 = net.check_input(torch.as_tensor(x0), batched=False).to(torch.float64)
    timings: dict[str, float] = {}
    if int(net.predict(x0[None])[0]) != label:
        return DistanceEstimate(EstimateStatus.MISCLASSIFIED, 0.0, 0.0, 0.0, 0.0, None, None, None, timings)
    t = time.perf_counter()
    adv = attack if attack is not None else min_distance_attack(net, x0, label, domain=domain)
    timings["attack_s"] = time.perf_counter() - t if attack is None else adv.time_s
    if not adv.success:
        hi = (max(x0.max().item() - domain[0], domain[1] - x0.min().item()))
        t = time.perf_counter()
        lower = certified_radius(net, x0, label, hi=hi, domain=domain)
        timings["lower_s"] = time.perf_counter() - t
        return DistanceEstimate(EstimateStatus.NO_ADVERSARIAL, None, lower, math.inf, None, None, None, None, timings)

    t = time.perf_counter()
    sub = prune(net, x0, label, options=options, attack=adv)
    timings["prune_s"] = time.perf_counter() - t

    t = time.perf_counter()
    dg = boundary_distance(sub.network, x0, label, method=distance_method, time_limit=time_limit,
                           domain=domain, threads=threads)
    timings["substitute_milp_s"] = time.perf_counter() - t

    upper = float(sub.d_adv)
    from_g = verified_upper_bound(net, x0, label, dg.counterexample)  # g's closest point, if f errs there too
    if from_g is not None:
        upper = min(upper, from_g)

    t = time.perf_counter()
    lower = certified_radius(net, x0, label, hi=upper, domain=domain)
    delta = None
    if method is PruneMethod.ACTIVATION:
        delta = delta_lower_bound(net, sub.network, x0, r_max=upper, domain=domain)
        lower = max(lower, min(delta, dg.lower))
    timings["lower_s"] = time.perf_counter() - t
    if lower > upper:  # cannot happen for sound parts; guard the invariant loudly
        raise AssertionError(f"certified lower bound {lower} exceeds the upper bound {upper}")

    ok = dg.status is DistanceStatus.EXACT
    return DistanceEstimate(
        status=EstimateStatus.OK if ok else EstimateStatus.TIMEOUT,
        estimate=dg.value if ok else None,
        lower=lower,
        upper=upper,
        d_adv=float(sub.d_adv),
        delta=delta,
        substitute=sub,
        substitute_distance=dg,
        timings=timings,
    )
