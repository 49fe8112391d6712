"""Local substitutes (Section 3): the three ReLU replacements and Algorithm 1.

A substitute ``g`` of ``f`` around an anchor ``x0`` is the same :class:`~lsub_helpers.network.ReluNetwork`
in which chosen neurons compute an affine function ``a*z + c`` instead of ``ReLU(z)``.  Which neurons are
replaced is decided by Algorithm 1: the neurons whose pre-activation varies least on the ball
``B(x0, d_adv)`` (smallest bound gap ``upper - lower``), chosen iteratively with bounds recomputed on the
partly pruned network.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .attacks import AttackResult, AttackStatus, min_distance_attack
from .bounds import BoundMethod, compute_bounds
from .network import ReluNetwork
from .options import keyword_options

__all__ = [
    "PruneMethod",
    "PruningError",
    "PruneOptions",
    "Substitute",
    "PruningTimings",
    "replacement",
    "prune",
    "num_steps",
]


class PruneMethod(enum.Enum):
    """The three ReLU substitutes of Section 3.1 / Figure 2."""

    CONSTANT = "constant"  # a = 0, c = relu(z(x0)): g(x0) = f(x0)
    LINEAR = "linear"  # line through (z0, relu(z0)) and (z_adv, relu(z_adv)): also g(x_adv) = f(x_adv)
    ACTIVATION = "activation"  # identity if z0 > 0 else zero: g = f on a ball around x0


class PruningError(ValueError):
    """Pruning cannot produce a meaningful substitute (misclassified anchor, attack found nothing)."""


@dataclass(frozen=True)
class PruningTimings:
    attack_s: float
    bounds_s: float
    total_s: float


@dataclass(frozen=True)
class Substitute:
    """A local substitute g of f around ``x0`` and how it was made."""

    network: ReluNetwork
    pruned: tuple[torch.Tensor, ...]  # one bool mask per ReLU layer: True where the ReLU was replaced
    method: PruneMethod
    gamma: float
    gamma0: float
    d_adv: float
    x_adv: torch.Tensor
    timings: PruningTimings
    steps: int
    replaced_per_step: tuple[tuple[int, ...], ...] = field(default=())  # per step, count per layer

    @property
    def num_pruned(self) -> int:
        return int(sum(int(m.sum()) for m in self.pruned))

    @property
    def num_hidden(self) -> int:
        return int(sum(m.numel() for m in self.pruned))

    @property
    def pruned_per_layer(self) -> tuple[int, ...]:
        return tuple(int(m.sum()) for m in self.pruned)


def replacement(
    method: PruneMethod | str, z0: torch.Tensor, z_adv: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slope ``a`` and offset ``c`` of the substitute ``a*z + c`` for pre-activations ``z0`` at x0 (and
    ``z_adv`` at x_adv for the linear substitute)."""
    method = PruneMethod(method)
    z0 = torch.as_tensor(z0, dtype=torch.float64)
    if method is PruneMethod.CONSTANT:
        return torch.zeros_like(z0), torch.relu(z0)
    if method is PruneMethod.ACTIVATION:
        active = z0 > 0
        return active.to(torch.float64), torch.zeros_like(z0)
    if z_adv is None:
        raise ValueError("the linear substitute needs the pre-activations at x_adv")
    z_adv = torch.as_tensor(z_adv, dtype=torch.float64)
    dz = z_adv - z0
    same = dz.abs() <= 1e-12 * torch.maximum(z0.abs(), z_adv.abs()).clamp_min(1.0)
    slope = torch.where(same, torch.zeros_like(z0), (torch.relu(z_adv) - torch.relu(z0)) / torch.where(same, 1.0, dz))
    offset = torch.relu(z0) - slope * z0
    return slope, offset


def num_steps(gamma: float, gamma0: float) -> int:
    """Steps of Algorithm 1 read as intended: the smallest k with (1 - gamma0)^k <= 1 - gamma."""
    return max(1, math.ceil(math.log(1.0 - gamma) / math.log(1.0 - gamma0) - 1e-12))


def _check_fractions(gamma: float, gamma0: float) -> None:
    if not (isinstance(gamma, (int, float)) and 0.0 < gamma < 1.0):
        raise ValueError(f"gamma must lie in (0, 1), got {gamma!r}")
    if not (isinstance(gamma0, (int, float)) and 0.0 < gamma0 < 1.0):
        raise ValueError(f"gamma0 must lie in (0, 1), got {gamma0!r}")
    if gamma0 >= gamma:
        raise ValueError(f"gamma0 ({gamma0}) must be smaller than gamma ({gamma})")


@dataclass(frozen=True)
class PruneOptions:
    """How Algorithm 1 builds a substitute (each field also a keyword argument of :func:`prune` and
    :func:`lsub_helpers.estimate.estimate_distance`): the pruner ``method``, the share ``gamma`` of ReLUs
    replaced, the step share ``gamma0``, the ``bounds`` on ``B(x0, d_adv)``, the input ``domain`` and the
    first ReLU layer that may be pruned."""

    method: PruneMethod | str
    gamma: float
    gamma0: float = 0.25
    bounds: BoundMethod | str = BoundMethod.FASTLIN_IBP
    domain: tuple[float, float] = (0.0, 1.0)
    first_layer: int = 0


@keyword_options(PruneOptions)
def prune(
    net: ReluNetwork,
    x0: torch.Tensor,
    label: int,
    *,
    options: PruneOptions,
    attack: Callable[..., AttackResult] | AttackResult | None = None,
) -> Substitute:
    """Algorithm 1: replace ``ceil(gamma * N)`` of the ``N`` hidden ReLUs of ``net`` around ``x0``.

    Settings: ``options`` (a :class:`PruneOptions`) or its fields as keyword arguments (``method``,
    ``gamma``, ``gamma0``, ``bounds``, ``domain``, ``first_layer``).

    ``attack`` is a callable ``attack(net, x0, label, domain=...) -> AttackResult`` (default
    :func:`~lsub_helpers.attacks.min_distance_attack`) or an :class:`AttackResult` already computed for
    this anchor.  Each step replaces the ``gamma0``-share of the neurons that are still ReLUs, those with
    the smallest gap ``upper - lower`` of their bounds on ``B(x0, d_adv)``, then recomputes the bounds of
    the partly pruned network.  Every ReLU layer from ``first_layer`` (0-based) on is a candidate;
    ``first_layer=1`` reproduces the paper's literal layer range ``l = 2..L``.
    """
    t_start = time.perf_counter()
    gamma, gamma0, domain, first_layer = options.gamma, options.gamma0, options.domain, options.first_layer
    method = PruneMethod(options.method)
    bounds = BoundMethod(options.bounds)
    _check_fractions(gamma, gamma0)
    label = net.check_label(label)
    x0 = net.check_input(torch.as_tensor(x0), batched=False).to(torch.float64)
    if not 0 <= first_layer < len(net.activations):
        raise ValueError(f"first_layer must be in [0, {len(net.activations) - 1}]")
    if int(net.predict(x0[None])[0]) != label:
        raise PruningError(f"the anchor is misclassified (predicted {int(net.predict(x0[None])[0])}, label {label})")

    t0 = time.perf_counter()
    if isinstance(attack, AttackResult):
        result = attack
    else:
        result = (attack or min_distance_attack)(net, x0, label, domain=domain)
    attack_s = time.perf_counter() - t0 if not isinstance(attack, AttackResult) else result.time_s
    if result.status is AttackStatus.MISCLASSIFIED:
        raise PruningError("the anchor is misclassified")
    if not result.success or result.x_adv is None:
        raise PruningError("the attack found no adversarial example, so d_adv and x_adv are undefined")
    x_adv = result.x_adv.to(torch.float64)
    if int(net.predict(x_adv[None])[0]) == label:
        raise PruningError("the attack's point is not adversarial when re-checked")
    d_adv = float((x_adv - x0).abs().max())

    pre0, _ = net.forward_all(x0[None])
    pre_adv, _ = net.forward_all(x_adv[None])
    subs = [replacement(method, z0[0], za[0]) for z0, za in zip(pre0, pre_adv)]

    sizes = net.layer_sizes
    candidates = [torch.full((n,), k >= first_layer, dtype=torch.bool) for k, n in enumerate(sizes)]
    total = sum(sizes)
    n_candidates = int(sum(int(c.sum()) for c in candidates))
    target = min(math.ceil(gamma * total - 1e-9), n_candidates)
    pruned = [torch.zeros(n, dtype=torch.bool) for n in sizes]
    current = net
    bounds_s = 0.0
    history: list[tuple[int, ...]] = []
    n_done = 0
    while n_done < target:
        tb = time.perf_counter()
        b = compute_bounds(current, x0, d_adv, method=bounds, domain=domain)
        bounds_s += time.perf_counter() - tb
        remaining = total - n_done
        n_step = min(max(1, math.ceil(gamma0 * remaining - 1e-9)), target - n_done)
        gaps = torch.cat(
            [
                torch.where(cand & ~done, (u - l).to(torch.float64), torch.tensor(math.inf, dtype=torch.float64))
                for (l, u), cand, done in zip(b.pre_activation, candidates, pruned)
            ]
        )
        order = torch.argsort(gaps, stable=True)[:n_step]
        chosen = torch.zeros(total, dtype=torch.bool)
        chosen[order] = True
        new_masks = list(torch.split(chosen, list(sizes)))
        history.append(tuple(int(m.sum()) for m in new_masks))
        pruned = [p | m for p, m in zip(pruned, new_masks)]
        current = net.with_substitutes(pruned, [s[0] for s in subs], [s[1] for s in subs])
        n_done += n_step
    timings = PruningTimings(attack_s=attack_s, bounds_s=bounds_s, total_s=time.perf_counter() - t_start)
    return Substitute(
        network=current,
        pruned=tuple(pruned),
        method=method,
        gamma=float(gamma),
        gamma0=float(gamma0),
        d_adv=d_adv,
        x_adv=x_adv,
        timings=timings,
        steps=len(history),
        replaced_per_step=tuple(history),
    )
