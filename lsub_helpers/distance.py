"""Problems (1) and (2) of the paper, solved exactly with the MILP of :mod:`lsub_helpers.milp`.

* :func:`verify` is the eps-verification problem (2): is every point of the L-inf ball of radius ``eps``
  (intersected with the input domain) classified as ``label``?  One MILP per target label that the bounds
  cannot rule out; a verdict-only solve stops as soon as the sign of the optimum is known.
* :func:`boundary_distance` is problem (1), the L-inf distance to the decision boundary, by the paper's
  ``bisection`` over eps (every optimisation run recorded) or by ``direct`` minimisation of
  ``t = ||x - x0||_inf`` per target label (MIPVerify's ``closest`` objective).

Every reported counterexample passed a float64 forward pass; a time limit is reported as a timeout with
the interval known so far, never as a value.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .bab import BabOptions, BabResult
from . import milp
from .milp import BoundsMethod, Objective, OutputSpec, SolverStatus, VerificationStatus
from .network import ReluNetwork
from .verification import (POLISH_LP_S, BoundOptions, Budget, ScreenMethod, SolveOptions, decide, prepare_bounds,
                           screen)

__all__ = [
    "DistanceMethod",
    "OptimizationRun",
    "VerificationResult",
    "DistanceStatus",
    "DistanceResult",
    "BisectionStep",
    "verify",
    "boundary_distance",
    "prepare_bounds",  # lives in lsub_helpers.verification; importable here as chapters use it
]

_F64 = np.float64


@dataclass(frozen=True)
class OptimizationRun:
    """One MILP solve: the unit the paper's runtime figures count."""

    eps: float  # radius of the ball the model lives on (DISTANCE: the cap on t)
    target: int | None
    objective: str  # "violation" (problem 2) or "distance" (problem 1)
    solver_status: SolverStatus
    verdict: VerificationStatus  # what the run showed (DISTANCE: NOT_ROBUST if it gave a checked point)
    time_s: float  # solver
    build_time_s: float  # sparse assembly + Pyomo model
    load_time_s: float  # Pyomo compile + hand-over to the solver
    num_binaries: int
    num_continuous: int
    num_constraints: int
    objective_value: float | None  # incumbent
    bound: float | None  # proven lower bound on the optimum


@dataclass(frozen=True)
class VerificationResult:
    status: VerificationStatus
    counterexample: torch.Tensor | None = field(repr=False)  # input shape, float64; passed the re-check
    target: int | None  # class of the counterexample
    eps: float
    runs: tuple[OptimizationRun, ...] = field(repr=False)
    milp_targets: tuple[int, ...]  # targets the bounds could not rule out
    bounds: str
    unstable: tuple[int, ...]  # unstable neurons per layer after bounds (and tightening)
    bounds_time_s: float
    time_s: float
    bab_runs: tuple[tuple[int, BabResult], ...] = field(default=(), repr=False)  # (target, result) per BaB run


class DistanceMethod(enum.Enum):
    """How problem (1) is solved."""

    DIRECT = "direct"  # one MILP per target minimising t = ||x - x0||_inf (MIPVerify's `closest`)
    BISECTION = "bisection"  # the paper's binary search over eps with problem (2)


class DistanceStatus(enum.Enum):
    EXACT = "exact"  # value is the distance within the stated tolerance
    TIMEOUT = "timeout"  # a time limit was hit: only the interval [lower, upper] is known
    UNKNOWN = "unknown"  # a solver failure: only the interval is known
    MISCLASSIFIED = "misclassified"  # the anchor is not classified as `label`: distance 0


@dataclass(frozen=True)
class DistanceResult:
    """``lower <= d_bnd <= upper``; ``value`` (= ``upper``) only when ``status`` is EXACT or MISCLASSIFIED.

    ``upper`` is the distance of ``counterexample`` (always ``<= d_adv``); ``lower`` is proven by the
    solver.  ``tolerance`` states what "exact" means: HiGHS's ``mip_rel_gap`` (direct), the bisection
    ``tol`` (absolute width of the final interval) and ``margin_tol`` (direct: the counterexample is
    required to beat the label by this much).
    """

    status: DistanceStatus
    value: float | None
    lower: float
    upper: float
    counterexample: torch.Tensor | None = field(repr=False)
    target: int | None
    d_adv: float | None
    method: str
    runs: tuple[OptimizationRun, ...] = field(repr=False)
    tolerance: dict
    bounds: str
    unstable: tuple[int, ...] | None  # direct: unstable neurons on the d_adv ball
    time_s: float
    attack_time_s: float = 0.0
    bounds_time_s: float = 0.0
    steps: tuple["BisectionStep", ...] = field(default=(), repr=False)  # bisection: every eps decided


@dataclass(frozen=True)
class BisectionStep:
    """One eps of the bisection: its verdict, and how many MILPs it took (0: the bounds decided it)."""

    eps: float
    status: VerificationStatus
    milp_runs: int
    time_s: float


# ---------------------------------------------------------------------------------------------------

def _flat(x0, net: ReluNetwork) -> np.ndarray:
    """``x0`` in the input shape (or already flat) as a flat float64 array."""
    x = torch.as_tensor(x0, dtype=torch.float64)
    if x.dim() == 1 and x.numel() == net.input_size:
        x = x.reshape(net.input_shape)
    x = net.check_input(x, batched=False)
    return np.asarray(x, dtype=_F64).reshape(-1)


def _as_input(x: np.ndarray | None, net: ReluNetwork) -> torch.Tensor | None:
    return None if x is None else torch.from_numpy(np.array(x, dtype=_F64)).reshape(net.input_shape)


def _run_record(eps, target, model, res, verdict, built: bool = True) -> OptimizationRun:
    return OptimizationRun(
        eps=float(eps), target=target, objective=model.objective.value, solver_status=res.status, verdict=verdict,
        time_s=res.time_s, build_time_s=model.build_time_s if built else 0.0, load_time_s=res.load_time_s,
        num_binaries=model.num_binaries, num_continuous=model.num_continuous, num_constraints=model.num_rows,
        objective_value=res.objective, bound=res.bound,
    )


def verify(
    net: ReluNetwork,
    x0,
    label: int,
    eps: float,
    *,
    target: int | None = None,
    time_limit: float | None = 60.0,
    total_time_limit: float | None = None,
    bounds="crown",
    tighten_lp: float = 0.0,
    domain=(0.0, 1.0),
    verdict_only: bool = True,
    verdict_target: float = -1e-5,
    threads: int = 1,
    solver: str = "highs",
    mip_rel_gap: float | None = None,
    screen: ScreenMethod | str = "lp",
    polish: bool = True,
    bab: float = 0.0,
    bab_first: float = 2.0,
    bab_first_small: float = 0.5,
    milp_probe: float = 10.0,
    milp_first_below: int = 1000,
    bab_options: BabOptions = BabOptions(),
) -> VerificationResult:
    """Problem (2): is ``f_label > f_t`` on the whole ball of radius ``eps`` (within ``domain``) for the
    ``target`` ``t`` (all other classes if None)?

    Bounds (``"ibp" | "crown" | "fastlin_ibp"``, optionally LP-tightened for ``tighten_lp`` seconds) rule
    out the targets they can (``screen="lp"``: interval arithmetic on the last layer, the bound method's
    own bound on ``f_label - f_t``, then the LP relaxation of the model; ``"interval"``: the first two;
    ``"none"``).  Each remaining target gets one MILP minimising ``f_label - f_t``, stopped early in
    ``verdict_only`` mode (HiGHS ``objective_bound = 0``: prune everything that cannot go below 0;
    ``objective_target = verdict_target``: stop at the first point below it).  Stops at the first checked
    counterexample.  ``time_limit`` is per optimisation run, ``total_time_limit`` for the whole call: every
    LP (tightening, screening, polishing) and MILP draws on it.  ``bab`` > 0 (verdict-only): an attack on the
    ball first, then branch and bound on ReLU splits per target (:mod:`lsub_helpers.bab`) and the MILP: a
    first turn of branch and bound of at most ``bab_first`` s (``bab_first_small`` s if the MILP has at most
    ``milp_first_below`` binaries, and then a MILP probe of at most ``milp_probe`` s), a second turn of up to
    ``bab`` s and the MILP with the rest of ``time_limit`` (see :func:`lsub_helpers.verification.decide`),
    branch and bound with ``bab_options``;
    the targets it proves need no MILP (they appear in ``bab_runs``, not in ``runs``).
    """
    opts = SolveOptions(solver=solver, threads=threads, time_limit=time_limit, mip_rel_gap=mip_rel_gap, polish=polish,
                        bab=bab, bab_first=bab_first, bab_first_small=bab_first_small,
                        milp_probe=milp_probe, milp_first_below=milp_first_below, bab_options=bab_options)
    bopts = BoundOptions(bounds=bounds, tighten_lp=tighten_lp, screen=ScreenMethod(screen), domain=domain)
    return _verify(net, _flat(x0, net), net.check_label(label), float(eps), target, opts, bopts,
                   Budget(total_time_limit), verdict_only=verdict_only, verdict_target=verdict_target)


def _verify(net: ReluNetwork, x0f: np.ndarray, label: int, eps: float, target: int | None, opts: SolveOptions,
            bopts: BoundOptions, budget: Budget, *, verdict_only: bool = True,
            verdict_target: float = -1e-5) -> VerificationResult:
    lower, upper = milp.input_box(x0f, eps, bopts.domain)
    targets = [t for t in range(net.num_classes) if t != label] if target is None else [net.check_label(target)]
    if label in targets:
        raise ValueError("target must differ from label")
    specs = [OutputSpec.misclassified_as(label, t, net.num_classes) for t in targets]
    d = decide(net, lower, upper, specs, opts=opts, bopts=bopts, budget=budget, verdict_only=verdict_only,
               verdict_target=verdict_target)
    runs = tuple(_run_record(eps, targets[r.spec], r.model, r.result, r.verdict, r.built) for r in d.runs)
    return VerificationResult(d.status, _as_input(d.x, net), None if d.spec is None else targets[d.spec], eps, runs,
                              tuple(targets[i] for i in d.order), getattr(d.bounds, "method", str(bopts.bounds)),
                              d.unstable, d.bounds_time_s, budget.elapsed(),
                              tuple((targets[j], br) for j, br in d.bab))


# ---------------------------------------------------------------------------------------------------

def _domain_radius(x0f: np.ndarray, domain) -> float:
    if domain is None:
        return math.inf
    return float(np.maximum(x0f - domain[0], domain[1] - x0f).max())


@dataclass(frozen=True)
class _AttackPoint:
    """The attack's point as this network sees it (re-checked in float64), or nothing."""

    x: np.ndarray | None = None  # flat, float64
    distance: float | None = None
    target: int | None = None
    time_s: float = 0.0


def _attack(net, x0, label, domain, attack) -> _AttackPoint:
    t0 = time.perf_counter()
    if attack is False or attack is None:
        return _AttackPoint()
    if attack is True:
        from .attacks import min_distance_attack

        attack = min_distance_attack(net, torch.as_tensor(x0, dtype=torch.float64).reshape(net.input_shape), label,
                                     domain=domain)
    if not getattr(attack, "success", False) or getattr(attack, "x_adv", None) is None:
        return _AttackPoint(time_s=time.perf_counter() - t0)
    # success is recomputed on this network in float64, never trusted: an attack result computed on f may
    # be handed to a substitute g, where its point need not be adversarial
    xa = np.asarray(torch.as_tensor(attack.x_adv, dtype=torch.float64), dtype=_F64).reshape(-1)
    if xa.size != x0.size:
        raise ValueError(f"attack point has {xa.size} values, the input has {x0.size}")
    if domain is not None:
        xa = np.clip(xa, domain[0], domain[1])
    with torch.no_grad():
        pred = int(net.forward(torch.from_numpy(xa).reshape((1,) + tuple(net.input_shape)))[0].argmax())
    if pred == label:
        return _AttackPoint(time_s=time.perf_counter() - t0)
    return _AttackPoint(xa, float(np.abs(xa - x0).max()), pred, time.perf_counter() - t0)


@dataclass(frozen=True)
class _Outcome:
    """What a distance procedure found: ``lower <= d_bnd <= upper`` and the best checked point."""

    status: DistanceStatus
    lower: float
    upper: float
    x: np.ndarray | None
    target: int | None
    runs: tuple[OptimizationRun, ...]
    unstable: tuple[int, ...] | None = None
    bounds_time_s: float = 0.0
    steps: tuple["BisectionStep", ...] = ()


def boundary_distance(
    net: ReluNetwork,
    x0,
    label: int,
    *,
    method: DistanceMethod | str = "direct",
    time_limit: float | None = 60.0,
    total_time_limit: float | None = None,
    tol: float = 1e-5,
    open_tol: float = 0.0,
    bounds="crown",
    tighten_lp: float = 0.0,
    domain=(0.0, 1.0),
    attack=True,
    threads: int = 1,
    solver: str = "highs",
    mip_rel_gap: float = 1e-4,
    margin_tol: float = 1e-8,
    exact_abs_tol: float = 1e-6,
    screen: ScreenMethod | str = "lp",
    polish: bool = True,
    bab: float = 0.0,
    bab_first: float = 2.0,
    bab_first_small: float = 0.5,
    milp_probe: float = 10.0,
    milp_first_below: int = 1000,
    bab_options: BabOptions = BabOptions(),
) -> DistanceResult:
    """Problem (1): the L-inf distance from ``x0`` to the decision boundary of ``label``.

    ``attack`` gives the upper bound ``d_adv`` and its point: True runs
    :func:`lsub_helpers.attacks.min_distance_attack`, an ``AttackResult`` is used as given, False skips it
    (the cap is then the radius at which the ball covers the domain).  The result never exceeds ``d_adv``.

    ``method="direct"``: bounds on the ball of radius ``d_adv``; for every target those bounds cannot rule
    out (the attack's class first), one MILP minimising ``t = ||x - x0||_inf`` with ``t <=`` the best
    distance so far, solved to HiGHS's ``mip_rel_gap``.  ``method="bisection"``: the paper's procedure,
    binary search over eps with :func:`verify` (verdict-only, bounds recomputed per eps) until the
    interval is narrower than ``tol``; a radius it cannot decide in time leaves the result open (TIMEOUT),
    and the search goes on below it, raising the proven lower bound: until the lowest such radius r is within
    ``max(tol, open_tol * r)`` of it (``open_tol`` > 0 stops refining a bound that can no longer close, since
    only a counterexample below r could close the interval).  ``time_limit`` is per optimisation run,
    ``total_time_limit`` for the call (every LP and MILP draws on it).  ``bab`` > 0 (bisection): each eps gets
    an attack and branch and bound before its MILPs (see :func:`verify`, also for ``bab_first``,
    ``bab_first_small``, ``milp_probe``, ``milp_first_below`` and ``bab_options``), all within ``time_limit``.
    """
    try:
        method = DistanceMethod(method)
    except ValueError:
        raise ValueError(f"method must be 'direct' or 'bisection', got {method!r}") from None
    if not 0.0 <= open_tol < 1.0:
        raise ValueError(f"open_tol must lie in [0, 1), got {open_tol!r}")
    budget = Budget(total_time_limit)
    label = net.check_label(label)
    x0f = _flat(x0, net)
    direct = method is DistanceMethod.DIRECT
    opts = SolveOptions(solver=solver, threads=threads, time_limit=time_limit,
                        mip_rel_gap=mip_rel_gap if direct else None, polish=polish, margin_tol=margin_tol,
                        exact_abs_tol=exact_abs_tol, bab=bab, bab_first=bab_first, bab_first_small=bab_first_small,
                        milp_probe=milp_probe, milp_first_below=milp_first_below, bab_options=bab_options)
    bopts = BoundOptions(bounds=bounds, tighten_lp=tighten_lp, screen=ScreenMethod(screen), domain=domain)
    tolerance = dict(mip_rel_gap=mip_rel_gap if direct else None, bisection_tol=None if direct else tol,
                     open_tol=None if direct else open_tol,
                     margin_tol=margin_tol if direct else None, exact_abs_tol=exact_abs_tol if direct else None)
    bname = bounds.value if isinstance(bounds, BoundsMethod) else str(bounds)
    with torch.no_grad():
        pred = int(net.forward(torch.from_numpy(x0f).reshape((1,) + tuple(net.input_shape)))[0].argmax())
    if pred != label:
        return DistanceResult(DistanceStatus.MISCLASSIFIED, 0.0, 0.0, 0.0, _as_input(x0f, net), pred, 0.0,
                              method.value, (), tolerance, bname, None, budget.elapsed())
    adv = _attack(net, x0f, label, domain, attack)
    if direct:
        out = _direct(net, x0f, label, adv, budget, opts, bopts)
    else:
        out = _bisection(net, x0f, label, adv, budget, float(tol), float(open_tol), opts, bopts)
    value = out.upper if out.status is DistanceStatus.EXACT else None
    return DistanceResult(out.status, value, out.lower, out.upper, _as_input(out.x, net), out.target, adv.distance,
                          method.value, out.runs, tolerance, bname, out.unstable, budget.elapsed(), adv.time_s,
                          out.bounds_time_s, out.steps)


def _direct(net, x0f, label, adv: _AttackPoint, budget: Budget, opts: SolveOptions, bopts: BoundOptions) -> _Outcome:
    radius = _domain_radius(x0f, bopts.domain)
    cap0 = min(adv.distance, radius) if adv.distance is not None else radius
    lower, upper = milp.input_box(x0f, cap0, bopts.domain)
    mats = milp.StageMatrices.of(net)
    targets = [t for t in range(net.num_classes) if t != label]
    specs = [OutputSpec.misclassified_as(label, t, net.num_classes) for t in targets]
    b, cand, bounds_time = screen(net, lower, upper, specs, bopts, opts.threads, budget, mats)
    if adv.target is not None and adv.target in targets and targets.index(adv.target) in cand:
        cand.remove(targets.index(adv.target))
        cand.insert(0, targets.index(adv.target))
    best, x_best, t_best = (adv.distance, adv.x, adv.target) if adv.distance is not None else (math.inf, None, None)
    lowers = []  # proven lower bound per candidate target
    runs, timeout, unknown = [], False, False
    unchecked = False  # a solver point that failed the float64 re-check: no proof that none exists
    for j in cand:
        t = targets[j]
        cap = min(best, radius)
        lim = budget.limit(opts.time_limit)
        if lim is not None and lim <= 0:
            timeout = True
            lowers.append(0.0)
            continue
        blo, bhi = milp.input_box(x0f, cap, bopts.domain)
        model = milp.build_model(net, blo, bhi, b, spec=specs[j], objective=Objective.DISTANCE, x0=x0f, radius=cap,
                                 _mats=mats)
        res = milp.solve_model(model, solver=opts.solver, time_limit=lim, threads=opts.threads,
                               mip_rel_gap=opts.mip_rel_gap)
        verdict, chk = milp.interpret(net, model, res, polish=opts.polish, polish_margin=opts.margin_tol,
                                      threads=opts.threads, time_limit=budget.limit(POLISH_LP_S))
        runs.append(_run_record(cap, t, model, res, verdict))
        if chk is not None and chk.valid and chk.distance < best:
            best, x_best, t_best = chk.distance, chk.x, t
        if res.status is SolverStatus.OPTIMAL and not (chk is not None and chk.valid):
            unchecked = True
        if res.status is SolverStatus.INFEASIBLE:
            lowers.append(cap)  # no point of this class within the cap
        elif res.status is SolverStatus.OPTIMAL and res.bound is not None:
            lowers.append(min(max(res.bound, 0.0), cap))
        else:
            lowers.append(max(res.bound or 0.0, 0.0))
            timeout |= res.status is SolverStatus.TIME_LIMIT
            unknown |= res.status is not SolverStatus.TIME_LIMIT
    lower = min(lowers + [radius])
    # Without a checked point, "no adversarial point at all" needs every target proven empty: a solver
    # point that failed the re-check keeps the solver's finite bound as the lower end and the result UNKNOWN.
    unknown |= unchecked and x_best is None
    if x_best is None and not (timeout or unknown):  # the ball covers the domain: no adversarial point at all
        best = lower = math.inf
    upper = best if x_best is not None or not (timeout or unknown) else math.inf
    lower = min(lower, upper)
    status = DistanceStatus.TIMEOUT if timeout else DistanceStatus.UNKNOWN if unknown else DistanceStatus.EXACT
    if status is DistanceStatus.EXACT and math.isfinite(upper) and upper - lower > opts.mip_rel_gap * upper + opts.exact_abs_tol:
        status = DistanceStatus.UNKNOWN  # e.g. no checked point reached the proven bound
    return _Outcome(status, lower, upper, x_best, t_best, tuple(runs), milp.unstable_counts(mats, b), bounds_time)


def _bisection(net, x0f, label, adv: _AttackPoint, budget: Budget, tol: float, open_tol: float,
               opts: SolveOptions, bopts: BoundOptions) -> _Outcome:
    radius = adv.distance if adv.distance is not None else _domain_radius(x0f, bopts.domain)
    lo, hi = 0.0, radius
    x_best, t_best = adv.x, adv.target
    runs: list[OptimizationRun] = []
    steps: list[BisectionStep] = []
    bounds_time = 0.0

    def decide(eps: float) -> VerificationResult:
        nonlocal bounds_time
        # with branch and bound, one eps-verification (all its targets) gets at most ``time_limit``, the
        # paper's unit (one solve per eps); the plain MILP gets ``time_limit`` per target, as before
        left = budget.left()
        if opts.bab > 0 and opts.time_limit is not None:
            left = min(left, opts.time_limit)
        r = _verify(net, x0f, label, eps, None, opts, bopts, Budget(left))
        runs.extend(r.runs)
        steps.append(BisectionStep(eps, r.status, len(r.runs), r.time_s))
        bounds_time += r.bounds_time_s
        return r

    def done(status, lower, upper, x=None, t=None) -> _Outcome:
        return _Outcome(status, lower, upper, x, t, tuple(runs), None, bounds_time, tuple(steps))

    def undecided(r: VerificationResult) -> DistanceStatus:
        return DistanceStatus.TIMEOUT if r.status is VerificationStatus.TIMEOUT else DistanceStatus.UNKNOWN

    if x_best is None:  # no attack point: first decide the whole capped domain
        r = decide(radius)
        if r.status is VerificationStatus.ROBUST:
            return done(DistanceStatus.EXACT, math.inf, math.inf)
        if r.status is not VerificationStatus.NOT_ROBUST:
            return done(undecided(r), 0.0, math.inf)
        x_best, t_best = np.asarray(r.counterexample, dtype=_F64).reshape(-1), r.target
        hi = float(np.abs(x_best - x0f).max())
    # ``ceiling``: the search stays below a radius that could not be decided (it is no upper bound on d_bnd:
    # ``hi`` is, from a checked point), so that the rest of the budget still raises the proven lower bound
    ceiling = hi
    open_status = None  # why a radius stayed undecided, if one did
    while ceiling - lo > (tol if ceiling >= hi else max(tol, open_tol * ceiling)):
        if budget.left() <= 0:
            open_status = open_status or DistanceStatus.TIMEOUT
            break
        eps = (lo + ceiling) / 2
        r = decide(eps)
        if r.status is VerificationStatus.ROBUST:
            lo = eps
        elif r.status is VerificationStatus.NOT_ROBUST:
            xc = np.asarray(r.counterexample, dtype=_F64).reshape(-1)
            d = float(np.abs(xc - x0f).max())
            if d >= hi:  # cannot happen (the point lies in the eps-ball): guard against an endless loop
                return done(DistanceStatus.UNKNOWN, lo, hi, x_best, t_best)
            hi, x_best, t_best = d, xc, r.target
            ceiling = min(ceiling, hi)
        else:
            open_status = undecided(r)
            ceiling = eps
    status = DistanceStatus.EXACT if hi - lo <= tol else (open_status or DistanceStatus.TIMEOUT)
    return done(status, lo, hi, x_best, t_best)
