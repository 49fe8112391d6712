"""Attack A: L-inf adversarial attacks that give the upper bound ``d_adv`` on the robust distance.

Two kinds of attack, as in foolbox 3:

* :func:`pgd` is a *fixed-epsilon* attack: projected gradient descent with sign steps inside the
  L-inf ball of radius ``eps`` around ``x0`` intersected with the input domain.
* :func:`min_distance_attack` is a *minimisation* attack: it returns the smallest perturbation it can
  find, ``d_adv``.  It brackets the distance with PGD, then refines the best adversarial point by
  boundary searches and warm-started, targeted PGD rounds at slightly smaller budgets.

Both work on any :class:`~lsub_helpers.network.ReluNetwork` (original or local substitute) through
``net.forward`` only.  The inner loops run in float32; every returned point is projected onto the
ball and the domain in float64 and its success is recomputed by a float64 forward pass
(``f_label(x_adv) < max_{j != label} f_j(x_adv)``, strictly).  A point that fails this check is not
reported as a success, whatever the float32 loop said.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .network import ReluNetwork
from .options import keyword_options

__all__ = ["AttackStatus", "Loss", "AttackResult", "AttackOptions", "pgd_step", "pgd", "min_distance_attack",
           "bisection_pgd_attack"]

_F64 = torch.float64
_WORK = torch.float32  # dtype of the inner loops


class AttackStatus(enum.Enum):
    SUCCESS = "success"  # x_adv is a verified adversarial example
    FAILED = "failed"  # no adversarial example found within the budget
    MISCLASSIFIED = "misclassified"  # the anchor itself is not classified as `label`; not attacked


class Loss(enum.Enum):
    MARGIN = "margin"  # f_label - max_{j != label} f_j (or - f_target), minimised
    CE = "ce"  # cross-entropy of the label, maximised


@dataclass(frozen=True)
class AttackResult:
    """Outcome of one attack on one anchor ``(x0, label)``.

    ``x_adv`` (float64, the network's input shape, no batch dimension) lies in the domain and in the
    L-inf ball of radius ``eps`` around ``x0``; ``distance = ||x_adv - x0||_inf`` is computed from
    ``x_adv``.  ``margin`` is ``f_label - max_{j != label} f_j`` in float64 at ``x_adv`` (negative for a
    success); for a failure it is the smallest margin seen (float32 loop), for a misclassified anchor the
    margin at ``x0``.  ``eps`` is the budget: the one asked for (:func:`pgd`) or the smallest budget at
    which a PGD round succeeded (:func:`min_distance_attack`).
    """

    status: AttackStatus
    x_adv: torch.Tensor | None
    distance: float | None
    label: int
    adv_label: int | None
    eps: float | None
    margin: float | None
    method: str
    num_forward: int  # forward passes (each on a batch)
    num_gradient: int  # backward passes (each on a batch)
    num_samples: int  # total number of inputs evaluated (batch rows summed)
    time_s: float

    @property
    def success(self) -> bool:
        return self.status is AttackStatus.SUCCESS


# ---------------------------------------------------------------------------------------------------
# Problem set-up and validation
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Tally:
    """Work counters of one attack call (local, mutable)."""

    forward: int = 0
    gradient: int = 0
    samples: int = 0
    start: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True, eq=False)
class _Problem:
    net: ReluNetwork
    x0: torch.Tensor  # float64, input shape
    label: int
    lo: torch.Tensor  # float64, input shape (domain)
    hi: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x0.shape)

    def box(self, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Ball of radius eps intersected with the domain, float64."""
        return torch.maximum(self.lo, self.x0 - eps), torch.minimum(self.hi, self.x0 + eps)

    def box_work(self, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The same box in the work dtype, rounded inwards so that every work point lies in the float64 box."""
        lo64, hi64 = self.box(eps)
        lo, hi = lo64.to(_WORK), hi64.to(_WORK)
        inf = torch.full_like(lo, math.inf)
        lo = torch.where(lo.to(_F64) < lo64, torch.nextafter(lo, inf), lo)
        hi = torch.where(hi.to(_F64) > hi64, torch.nextafter(hi, -inf), hi)
        bad = lo > hi  # box thinner than a float32 ulp: the float64 projection at the end fixes it
        if bad.any():
            mid = ((lo64 + hi64) / 2).to(_WORK)
            lo, hi = torch.where(bad, mid, lo), torch.where(bad, mid, hi)
        return lo, hi

    @property
    def eps_domain(self) -> float:
        """The radius beyond which the ball contains the whole domain."""
        return float(torch.maximum(self.x0 - self.lo, self.hi - self.x0).max())


def _check_eps(eps, name: str = "eps") -> float:
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {eps!r}") from None
    if math.isnan(value) or value <= 0 or math.isinf(value):
        raise ValueError(f"{name} must be a finite number > 0, got {eps!r}")
    return value


def _setup(net: ReluNetwork, x0, label, domain) -> _Problem:
    if not isinstance(net, ReluNetwork):
        raise TypeError(f"net must be a ReluNetwork, got {type(net).__name__}")
    x0 = torch.as_tensor(x0)
    if x0.dim() == len(net.input_shape) + 1 and x0.shape[0] == 1 and tuple(x0.shape[1:]) == net.input_shape:
        raise ValueError(
            f"wrong input shape {tuple(x0.shape)}: x0 is one input of shape {net.input_shape}, "
            "without a batch dimension"
        )
    x0 = net.check_input(x0, batched=False).detach().to(_F64)
    if torch.isinf(x0).any():
        raise ValueError("x0 contains inf")
    label = net.check_label(label)
    try:
        lo_v, hi_v = domain
    except (TypeError, ValueError):
        raise ValueError(f"domain must be a pair (lower, upper), got {domain!r}") from None
    try:
        lo = torch.as_tensor(lo_v, dtype=_F64).expand(x0.shape).clone()
        hi = torch.as_tensor(hi_v, dtype=_F64).expand(x0.shape).clone()
    except RuntimeError:
        raise ValueError(f"domain bounds must be scalars or broadcast to the input shape {tuple(x0.shape)}") from None
    if torch.isnan(lo).any() or torch.isnan(hi).any():
        raise ValueError("domain contains NaN")
    if (lo > hi).any():
        raise ValueError(f"empty domain: lower bound > upper bound ({domain!r})")
    if (x0 < lo).any() or (x0 > hi).any():
        raise ValueError(f"x0 lies outside the domain {domain!r}")
    return _Problem(net, x0, label, lo, hi)


def _resolve_loss(loss) -> Loss:
    if isinstance(loss, Loss):
        return loss
    try:
        return Loss(str(loss).lower())
    except ValueError:
        raise ValueError(f"unknown loss {loss!r}: choose one of {[m.value for m in Loss]}") from None


# ---------------------------------------------------------------------------------------------------
# Margins, verification, search along rays
# ---------------------------------------------------------------------------------------------------


def _margins(logits: torch.Tensor, label: int) -> torch.Tensor:
    """Untargeted margin ``f_label - max_{j != label} f_j`` per row (negative = misclassified)."""
    other = logits.clone()
    other[:, label] = -math.inf
    return logits[:, label] - other.max(dim=1).values


def _objective(logits: torch.Tensor, label: int, targets: torch.Tensor, loss: Loss) -> torch.Tensor:
    """Per-row quantity that the attack minimises. ``targets[i] < 0`` means untargeted."""
    targeted = targets >= 0
    if loss is Loss.CE:
        untargeted = -torch.nn.functional.cross_entropy(
            logits, torch.full_like(targets, label), reduction="none"
        )
        towards = torch.nn.functional.cross_entropy(logits, targets.clamp(min=0), reduction="none")
        return torch.where(targeted, towards, untargeted)
    other = logits.clone()
    other[:, label] = -math.inf
    competitor = torch.where(targeted, logits.gather(1, targets.clamp(min=0)[:, None])[:, 0], other.max(1).values)
    return logits[:, label] - competitor


@dataclass(frozen=True)
class _Checked:
    x: torch.Tensor  # (B, *shape) float64, projected
    margin: torch.Tensor  # (B,) float64
    pred: torch.Tensor  # (B,)
    distance: torch.Tensor  # (B,) float64

    @property
    def adversarial(self) -> torch.Tensor:
        return self.margin < 0


def _verify(prob: _Problem, tally: _Tally, xs: torch.Tensor, eps: float | None) -> _Checked:
    """Project a batch onto domain (and ball if eps is given) in float64, then forward in float64."""
    xs = xs.detach().to(_F64)
    lo, hi = prob.box(eps) if eps is not None else (prob.lo, prob.hi)
    xs = torch.minimum(torch.maximum(xs, lo), hi)
    with torch.no_grad():
        logits = prob.net.forward(xs)
    tally.forward += 1
    tally.samples += xs.shape[0]
    dist = (xs - prob.x0).abs().reshape(xs.shape[0], -1).amax(dim=1)
    return _Checked(xs, _margins(logits, prob.label), logits.argmax(dim=1), dist)


def _ray_search(
    prob: _Problem,
    tally: _Tally,
    x: torch.Tensor,
    make: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    grid: int = 16,
    rounds: int = 4,
) -> torch.Tensor:
    """Smallest parameter ``t`` in (0, 1] such that ``make(delta, t)`` is (verified) adversarial.

    ``make(delta, t)`` maps the perturbation ``delta = x - x0`` of the adversarial point ``x`` and a
    vector of parameters to a batch of candidates; ``t = 1`` must give ``x`` back.  A grid search that
    zooms in ``rounds`` times; it returns the best verified candidate (float64, input shape).
    """
    delta = x.to(_F64) - prob.x0
    lo_t, hi_t, best = 0.0, 1.0, x.to(_F64)
    for _ in range(rounds):
        ts = torch.linspace(lo_t, hi_t, grid + 2, dtype=_F64)[1:-1]
        checked = _verify(prob, tally, make(delta, ts), None)
        adv = checked.adversarial.nonzero()
        if len(adv) == 0:
            lo_t = float(ts[-1])
            continue
        j = int(adv[0])
        best, hi_t = checked.x[j], float(ts[j])
        lo_t = float(ts[j - 1]) if j > 0 else lo_t
    return best


def _shrink(prob: _Problem, tally: _Tally, x: torch.Tensor) -> torch.Tensor:
    """Boundary searches that shrink an adversarial perturbation: clip it to a smaller L-inf radius, and
    scale it towards ``x0``; alternated while they help.  Returns a verified adversarial point."""
    x = x.to(_F64)
    view = (-1,) + (1,) * len(prob.shape)
    for _ in range(3):
        d = float((x - prob.x0).abs().max())
        if d == 0:
            break
        def clip(delta: torch.Tensor, ts: torch.Tensor, d: float = d) -> torch.Tensor:
            radius = ts.reshape(view) * d
            return prob.x0 + torch.maximum(torch.minimum(delta, radius), -radius)

        clipped = _ray_search(prob, tally, x, clip)
        scaled = _ray_search(prob, tally, clipped, lambda delta, ts: prob.x0 + ts.reshape(view) * delta)
        d_new = float((scaled - prob.x0).abs().max())
        x = scaled
        if d_new > d * (1 - 1e-4):
            break
    return x


# ---------------------------------------------------------------------------------------------------
# The PGD engine (float32, one batch of starts, per-row targets)
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PGDOutcome:
    found: _Checked | None  # verified adversarial rows (float64), None if none
    best_margin: float  # smallest untargeted margin seen (work dtype)
    rows: tuple[int, ...] = ()  # which starts gave the rows of `found`
    steps: int = 0  # steps taken


def _cosine(step_size: float, steps: int, floor: float = 0.02) -> torch.Tensor:
    k = torch.arange(steps, dtype=_F64)
    return step_size * (floor + (1 - floor) * 0.5 * (1 + torch.cos(math.pi * k / max(steps, 1))))


def pgd_step(x: torch.Tensor, grad: torch.Tensor, step_size, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """One L-inf PGD step: ``x + step_size * sign(grad)``, projected onto the box ``[lo, hi]`` (the ball
    intersected with the domain).  Ascent on the objective whose gradient is ``grad`` (pass ``-grad`` to
    descend).  The one step every PGD of the package takes: the attacks here, adversarial training and
    robust accuracy (:mod:`lsub_helpers.training`)."""
    return torch.minimum(torch.maximum(x + step_size * grad.sign(), lo), hi)


def _run_pgd(
    prob: _Problem,
    tally: _Tally,
    starts: torch.Tensor,
    eps: float,
    targets: torch.Tensor,
    step_sizes: torch.Tensor,
    loss: Loss,
    *,
    noise: torch.Tensor | None = None,
    samples: int = 1,
    gen: torch.Generator | None = None,
    patience: int | None = None,
) -> _PGDOutcome:
    """Sign-gradient PGD from a batch of starts; stops at the first step with a verified success.

    With ``noise`` (one standard deviation per step) the gradient is the sum of the gradients at
    ``samples`` Gaussian perturbations of every iterate (a smoothed loss): it steers the iterates out
    of the many poor local optima of a piecewise-linear margin.  The iterates themselves stay in the box.
    With ``patience``, the run also stops when the smallest margin has not improved (by more than
    1e-6 relative) for that many steps.
    """
    lo, hi = prob.box_work(eps)
    x = torch.minimum(torch.maximum(starts.to(_WORK), lo), hi)
    batch = x.shape[0]
    best_margin, last_improved = math.inf, 0
    steps = len(step_sizes)
    smooth = noise is not None and samples >= 1
    for k in range(steps + 1):
        fused = not smooth and k < steps  # one forward pass gives the margins and the gradient
        x.requires_grad_(fused)
        with torch.set_grad_enabled(fused):
            logits = prob.net.forward(x)
        margins = _margins(logits.detach(), prob.label)
        tally.forward += 1
        tally.samples += batch
        current = float(margins.min())
        if current < best_margin - 1e-6 * abs(best_margin):
            last_improved = k
        best_margin = min(best_margin, current)
        candidates = (margins < 0).nonzero()[:, 0]
        if len(candidates):
            checked = _verify(prob, tally, x.detach()[candidates], eps)
            if checked.adversarial.any():
                keep = checked.adversarial.nonzero()[:, 0]
                return _PGDOutcome(
                    _Checked(checked.x[keep], checked.margin[keep], checked.pred[keep], checked.distance[keep]),
                    best_margin,
                    tuple(int(i) for i in candidates[keep]),
                    k,
                )
        if k == steps or (patience is not None and k - last_improved > patience):
            break
        if fused:
            xs, obj = x, _objective(logits, prob.label, targets, loss)
        else:
            xs = x.detach().repeat((samples,) + (1,) * len(prob.shape))
            xs = xs + float(noise[k]) * torch.randn(xs.shape, generator=gen, dtype=_WORK)
            xs.requires_grad_(True)
            obj = _objective(prob.net.forward(xs), prob.label, targets.repeat(samples), loss)
            tally.forward += 1
            tally.samples += xs.shape[0]
        (grad,) = torch.autograd.grad(obj.sum(), xs)
        tally.gradient += 1
        if not fused:
            grad = grad.reshape((samples, batch) + prob.shape).sum(0)
        with torch.no_grad():
            x = pgd_step(x.detach(), -grad, float(step_sizes[k]), lo, hi)
    return _PGDOutcome(None, best_margin, (), k)


def _random_starts(prob: _Problem, eps: float, n: int, gen: torch.Generator) -> torch.Tensor:
    lo, hi = prob.box(eps)
    u = torch.rand((n,) + prob.shape, generator=gen, dtype=_F64)
    return lo + u * (hi - lo)


def _anchor(prob: _Problem, tally: _Tally) -> _Checked:
    return _verify(prob, tally, prob.x0[None], None)


def _result(
    prob: _Problem,
    tally: _Tally,
    status: AttackStatus,
    method: str,
    *,
    x: torch.Tensor | None = None,
    eps: float | None = None,
    margin: float | None = None,
    adv_label: int | None = None,
) -> AttackResult:
    distance = None
    if x is not None:
        checked = _verify(prob, tally, x[None], eps)  # the final, authoritative float64 check
        x = checked.x[0]
        if not bool(checked.adversarial[0]):  # pragma: no cover - guarded by the callers' checks
            status, x = AttackStatus.FAILED, None
        else:
            distance = float(checked.distance[0])
        margin, adv_label = float(checked.margin[0]), int(checked.pred[0])
    return AttackResult(
        status=status,
        x_adv=x,
        distance=distance,
        label=prob.label,
        adv_label=adv_label if x is not None or status is AttackStatus.MISCLASSIFIED else None,
        eps=eps,
        margin=margin,
        method=method,
        num_forward=tally.forward,
        num_gradient=tally.gradient,
        num_samples=tally.samples,
        time_s=time.perf_counter() - tally.start,
    )


def _misclassified(prob: _Problem, tally: _Tally, method: str, eps: float | None) -> AttackResult | None:
    a = _anchor(prob, tally)
    if bool(a.margin[0] <= 0):
        margin, pred = float(a.margin[0]), int(a.pred[0])
        return _result(prob, tally, AttackStatus.MISCLASSIFIED, method, eps=eps, margin=margin, adv_label=pred)
    return None


# ---------------------------------------------------------------------------------------------------
# Public attacks
# ---------------------------------------------------------------------------------------------------


def pgd(
    net: ReluNetwork,
    x0: torch.Tensor,
    label: int,
    eps: float,
    *,
    steps: int = 100,
    step_size: float | None = None,
    restarts: int = 1,
    domain=(0.0, 1.0),
    seed: int = 0,
    loss: str | Loss = "margin",
) -> AttackResult:
    """L-inf PGD at a fixed budget ``eps`` (a fixed-epsilon attack).

    Every restart starts at a uniformly random point of ``ball(x0, eps) ∩ domain`` and takes ``steps``
    sign-gradient steps on ``loss`` (``"margin"``: ``f_label - max_{j != label} f_j``; ``"ce"``:
    cross-entropy), each followed by the projection onto ``ball ∩ domain``.  The restarts run as one
    batch; the attack stops at the first step where some restart is adversarial.  ``step_size=None``
    uses a cosine-decaying step from ``eps / 4``; a number gives a constant step.  ``domain`` is a pair
    of bounds (scalars or tensors of the input shape).
    """
    tally = _Tally()
    prob = _setup(net, x0, label, domain)
    eps = _check_eps(eps)
    loss = _resolve_loss(loss)
    if int(steps) < 0 or int(restarts) < 1:
        raise ValueError(f"need steps >= 0 and restarts >= 1, got steps={steps}, restarts={restarts}")
    if step_size is not None:
        step_size = _check_eps(step_size, "step_size")
    if (early := _misclassified(prob, tally, "pgd", eps)) is not None:
        return early
    gen = torch.Generator().manual_seed(int(seed))
    starts = _random_starts(prob, eps, int(restarts), gen)
    if step_size is None:
        schedule = _cosine(eps / 4, int(steps))
    else:
        schedule = torch.full((int(steps),), step_size, dtype=_F64)
    targets = torch.full((int(restarts),), -1, dtype=torch.long)
    out = _run_pgd(prob, tally, starts, eps, targets, schedule, loss)
    if out.found is None:
        return _result(prob, tally, AttackStatus.FAILED, "pgd", eps=eps, margin=out.best_margin)
    j = int(out.found.distance.argmin())
    return _result(prob, tally, AttackStatus.SUCCESS, "pgd", x=out.found.x[j], eps=eps)


def bisection_pgd_attack(
    net: ReluNetwork,
    x0: torch.Tensor,
    label: int,
    *,
    domain=(0.0, 1.0),
    eps_max: float | None = None,
    steps: int = 100,
    restarts: int = 1,
    tol: float = 1e-4,
    seed: int = 0,
) -> AttackResult:
    """The paper's plain attack A: fixed-step :func:`pgd` and a bisection on its budget (a minimisation attack).

    ``[lo, hi]`` starts at ``[0, eps_max]`` (default: the radius at which the ball covers the domain); each
    round runs ``pgd(eps=(lo + hi) / 2, steps, restarts)`` with the cosine step schedule and keeps the
    half that holds the boundary as PGD sees it, until ``hi - lo < tol``.  ``distance`` is that of the
    best verified point (float64), which may lie below the budget at which it was found.  No smoothing,
    no targets, no warm starts: it is the baseline the stronger :func:`min_distance_attack` is measured
    against.
    """
    t0 = time.perf_counter()
    prob = _setup(net, x0, label, domain)
    tol = _check_eps(tol, "tol")
    cap = prob.eps_domain if eps_max is None else _check_eps(eps_max, "eps_max")
    if not math.isfinite(cap) or cap <= 0:
        raise ValueError("eps_max is required when the domain is unbounded or a single point")
    tally = _Tally()
    if (early := _misclassified(prob, tally, "pgd_bisection", None)) is not None:
        return early
    counts = [0, 0, 0]

    def attack(eps: float, k: int) -> AttackResult:
        r = pgd(net, x0, label, eps, steps=steps, restarts=restarts, domain=domain, seed=int(seed) + k)
        counts[0] += r.num_forward
        counts[1] += r.num_gradient
        counts[2] += r.num_samples
        return r

    best = attack(cap, 0)
    lo, hi, k = 0.0, cap, 1
    if best.success:
        hi = best.distance
        while hi - lo >= tol:
            mid = (lo + hi) / 2
            r = attack(mid, k)
            k += 1
            if r.success:
                best, hi = r, min(mid, r.distance)
            else:
                lo = mid
    tally.forward += counts[0]
    tally.gradient += counts[1]
    tally.samples += counts[2]
    tally.start = t0
    if not best.success:
        return _result(prob, tally, AttackStatus.FAILED, "pgd_bisection", eps=cap, margin=best.margin)
    return _result(prob, tally, AttackStatus.SUCCESS, "pgd_bisection", x=best.x_adv, eps=hi)


def _targets(prob: _Problem, n_targets: int | None) -> list[int]:
    """The ``n_targets`` classes with the largest logits at x0 (all other classes if None)."""
    with torch.no_grad():
        logits = prob.net.forward(prob.x0[None])[0]
    order = [int(j) for j in logits.argsort(descending=True) if int(j) != prob.label]
    return order if n_targets is None else order[: max(0, int(n_targets))]


def _linear_estimate(prob: _Problem, tally: _Tally, classes: list[int]) -> float:
    """DeepFool-style first guess ``min_t g_t(x0) / ||grad g_t(x0)||_1`` of the L-inf distance."""
    x = prob.x0.to(_WORK)[None].expand((len(classes),) + prob.shape).clone().requires_grad_(True)
    logits = prob.net.forward(x)
    t = torch.tensor(classes)
    g = logits[:, prob.label] - logits.gather(1, t[:, None])[:, 0]
    (grad,) = torch.autograd.grad(g.sum(), x)
    tally.forward += 1
    tally.gradient += 1
    tally.samples += len(classes)
    dual = grad.abs().reshape(len(classes), -1).sum(1).clamp(min=1e-12)
    return float((g.detach() / dual).min())


@dataclass(frozen=True)
class AttackOptions:
    """The settings of :func:`min_distance_attack` (each also accepted there as a keyword argument).

    ``domain`` is a pair of bounds (scalars or tensors of the input shape); ``eps_max`` caps the budget
    (default: the radius at which the ball covers the domain); ``steps`` and ``restarts`` are per PGD round;
    ``targets`` is the number of most likely other classes attacked with a targeted loss (None: all);
    ``smoothing`` / ``smoothing_samples`` the smoothed gradient; ``patience`` ends stalled rounds early;
    ``tol`` and ``max_rounds`` end the refinement; ``seed`` makes the attack reproducible.
    """

    domain: tuple = (0.0, 1.0)
    eps_max: float | None = None
    steps: int = 100
    restarts: int = 1
    targets: int | None = 3
    smoothing: float = 0.5
    smoothing_samples: int = 4
    patience: int | None = None
    tol: float = 1e-4
    max_rounds: int = 30
    seed: int = 0


@keyword_options(AttackOptions)
def min_distance_attack(net: ReluNetwork, x0: torch.Tensor, label: int, *, options: AttackOptions) -> AttackResult:
    """The smallest L-inf perturbation this attack can find (a minimisation attack): ``d_adv``.

    Settings: ``options`` (an :class:`AttackOptions`) or its fields as keyword arguments (``domain``,
    ``eps_max``, ``steps``, ``restarts``, ``targets``, ``smoothing``, ``smoothing_samples``, ``patience``,
    ``tol``, ``max_rounds``, ``seed``); keywords given beside ``options`` replace its fields.

    1. *Bracket*: PGD rounds from random starts at budgets growing geometrically from a linear
       (DeepFool) estimate of the distance, up to ``eps_max`` (default: the radius at which the ball
       covers the whole domain), until one succeeds.
    2. *Refine*: after every success, boundary searches shrink the perturbation (clip it to a smaller
       radius, then scale it towards ``x0``).  Then a PGD round at ``eps = d (1 - r)`` (``d`` the best
       distance so far) starts from the best point projected onto the smaller ball, once per target
       (targeted margin loss for the ``targets`` most likely other classes, ``None`` for all) and once
       untargeted, plus ``restarts`` random starts.  Its gradient is smoothed: the sum of the gradients at
       ``smoothing_samples`` Gaussian perturbations of standard deviation ``smoothing * eps`` (decaying
       like the cosine step size), which escapes the poor local optima where plain PGD stalls.
       ``r`` (initially 0.1) halves after a failed round; the refinement stops when ``d * r < tol``
       or after ``max_rounds`` rounds.  ``patience`` (steps without progress) ends hopeless rounds
       early: cheaper, but it also ends some rounds that would have succeeded late.

    Every success is recomputed in float64; ``distance`` is ``||x_adv - x0||_inf`` of the returned point
    and ``eps`` the smallest budget at which a PGD round succeeded.  A misclassified anchor is returned
    with status ``MISCLASSIFIED`` without attacking it.
    """
    o = options
    tally = _Tally()
    prob = _setup(net, x0, label, o.domain)
    tol = _check_eps(o.tol, "tol")
    steps, restarts, samples = int(o.steps), int(o.restarts), int(o.smoothing_samples)
    if steps < 1 or restarts < 0 or samples < 1:
        raise ValueError(
            f"need steps >= 1, restarts >= 0, smoothing_samples >= 1; got {steps}, {restarts}, {samples}"
        )
    smoothing = o.smoothing
    if math.isnan(float(smoothing)) or float(smoothing) < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing!r}")
    cap = prob.eps_domain if o.eps_max is None else _check_eps(o.eps_max, "eps_max")
    if not math.isfinite(cap) or cap <= 0:
        raise ValueError("eps_max is required when the domain is unbounded or a single point")
    method = "min_distance"
    if (early := _misclassified(prob, tally, method, None)) is not None:
        return early
    gen = torch.Generator().manual_seed(int(o.seed))
    classes = _targets(prob, o.targets)
    if not classes:  # a one-class network cannot be fooled
        return _result(prob, tally, AttackStatus.FAILED, method, eps=cap)

    def run(eps: float, starts: list[torch.Tensor], tgts: list[int], smooth: bool) -> _PGDOutcome:
        schedule = _cosine(eps / 4, steps)
        noise = schedule * (4 * float(smoothing)) if smooth and smoothing > 0 else None
        out = _run_pgd(
            prob, tally, torch.cat(starts), eps, torch.tensor(tgts, dtype=torch.long), schedule, Loss.MARGIN,
            noise=noise, samples=samples, gen=gen, patience=o.patience,
        )
        return out

    def best_of(checked: _Checked) -> torch.Tensor:
        shrunk = [_shrink(prob, tally, checked.x[j]) for j in range(len(checked.x))]
        return min(shrunk, key=lambda z: float((z - prob.x0).abs().max()))

    # 1. bracket: random starts, untargeted and targeted, at growing budgets
    guess = _linear_estimate(prob, tally, classes)
    eps = min(cap, max(guess if math.isfinite(guess) and guess > 0 else 0.01 * cap, tol))
    tgts = [-1] * max(restarts, 1) + classes
    best_margin = math.inf
    while True:
        out = run(eps, [_random_starts(prob, eps, len(tgts), gen)], tgts, False)
        best_margin = min(best_margin, out.best_margin)
        if out.found is not None or eps >= cap:
            break
        eps = min(cap, 1.5 * eps)
    if out.found is None:
        return _result(prob, tally, AttackStatus.FAILED, method, eps=eps, margin=best_margin)
    found = out.found
    best = best_of(found)
    d, eps_ok = float((best - prob.x0).abs().max()), eps

    # 2. refine: warm-started, smoothed PGD just below the best distance
    r = 0.1
    tgts = classes + [-1] + [-1] * restarts
    for _ in range(int(o.max_rounds)):
        if d * r < tol:
            break
        eps = d * (1 - r)
        lo, hi = prob.box(eps)
        warm = torch.minimum(torch.maximum(best, lo), hi)[None].expand((len(classes) + 1,) + prob.shape)
        starts = [warm] + ([_random_starts(prob, eps, restarts, gen)] if restarts else [])
        found = run(eps, starts, tgts, True).found
        if found is None:
            r /= 2
            continue
        eps_ok = eps
        cand = best_of(found)
        d_c = float((cand - prob.x0).abs().max())
        if d_c < d:
            best, d = cand, d_c
    return _result(prob, tally, AttackStatus.SUCCESS, method, x=best, eps=max(eps_ok, d))
