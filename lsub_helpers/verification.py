"""Problem (2) as one loop: decide output specifications on an input box, exactly.

:func:`decide` is what every eps-verification of the package runs (``distance.verify`` for "is the ball
classified as the label", the VNN-LIB runner for a property's disjuncts): bounds on the box rule out the
specifications they can (:func:`screen`), then one MILP per specification that is left, verdict-only (stopped
as soon as the sign of the optimum is known), and it stops at the first counterexample that passes the float64
re-check. With ``SolveOptions.bab > 0`` a projected-gradient attack on the box (:func:`falsify`) runs first,
and each specification gets up to ``bab`` seconds of branch and bound on ReLU splits (:mod:`lsub_helpers.bab`)
before its MILP, which then gets what is left of its time. Every LP and MILP of the call draws on one
:class:`Budget`. Options are frozen dataclasses, statuses enums.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

import torch

from . import milp
from .attacks import pgd_step
from .bab import BabOptions, BabResult, BabStatus, bab_prove
from .milp import BoundsMethod, OutputSpec, VerificationStatus
from .network import ReluNetwork

__all__ = ["ScreenMethod", "SolveOptions", "BoundOptions", "Budget", "SpecRun", "Decision", "prepare_bounds", "falsify",
           "screen", "decide"]

_F64 = np.float64
SCREEN_LP_S = 30.0  # at most this long for the screening LPs of one call (less if the budget is smaller)
POLISH_LP_S = 10.0  # at most this long for one polishing LP
_HIGHS = ("highs", "highs_persistent")  # solvers that take HiGHS's objective_bound / objective_target
_PRECEDENCE = (VerificationStatus.NOT_ROBUST, VerificationStatus.TIMEOUT, VerificationStatus.UNKNOWN,
               VerificationStatus.ROBUST)


class ScreenMethod(enum.Enum):
    """How targets are ruled out before any MILP (see :func:`verify`)."""

    LP = "lp"  # interval arithmetic, the bound method's own output bound, then the LP relaxation
    INTERVAL = "interval"  # the first two only
    NONE = "none"  # every target gets a MILP


@dataclass(frozen=True)
class SolveOptions:
    """What every MILP of one call is given: the solver, its threads and gap, and how its points are treated."""

    solver: str = "highs"
    threads: int = 1
    time_limit: float | None = 60.0  # per optimisation run
    mip_rel_gap: float | None = 1e-4
    polish: bool = True  # a point failing the re-check gets the region LP (see milp.interpret)
    margin_tol: float = 1e-8  # direct: slack a polished counterexample must have
    exact_abs_tol: float = 1e-6  # direct: absolute gap still called exact
    bab: float = 0.0  # seconds of branch and bound per spec before its MILP (0: off; verdict-only calls only)
    bab_options: BabOptions = BabOptions()
    falsify_steps: int = 50  # with bab > 0: steps of the attack on the box that runs first
    # with bab > 0, the schedule per spec (see :func:`decide`): a first turn of branch and bound (most specs
    # are proven in moments) of at most ``bab_first`` s, or ``bab_first_small`` s if the MILP has at most
    # ``milp_first_below`` binaries (certified networks, substitutes); such a small MILP then gets a probe
    # of at most ``milp_probe`` s, since it decides in moments where branch and bound could spend its whole
    # turn; then a second turn of branch and bound of up to ``bab`` s, and the MILP with the rest
    bab_first: float = 2.0
    bab_first_small: float = 0.5
    milp_probe: float = 10.0
    milp_first_below: int = 1000


@dataclass(frozen=True)
class BoundOptions:
    """How the bounds the MILP starts from are obtained."""

    bounds: object = "crown"  # a BoundsMethod name, or precomputed bounds
    tighten_lp: float = 0.0  # seconds of LP tightening (0: off)
    screen: ScreenMethod = ScreenMethod.LP
    domain: tuple | None = (0.0, 1.0)


class Budget:
    """The time one call may spend, drawn on by every LP and MILP it runs (a total of None: unlimited)."""

    def __init__(self, total: float | None):
        self.t0 = time.perf_counter()
        self.total = total

    def left(self) -> float:
        return math.inf if self.total is None else self.total - (time.perf_counter() - self.t0)

    def limit(self, per_run: float | None) -> float | None:
        """The time limit for the next run: ``per_run`` capped by what is left (None: unlimited)."""
        lim = min(per_run if per_run is not None else math.inf, self.left())
        return None if math.isinf(lim) else max(lim, 0.0)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def prepare_bounds(net: ReluNetwork, lower, upper, *, bounds="crown", tighten_lp: float = 0.0, threads: int = 1,
                   specs=None, _mats=None):
    """Bounds on the box by ``bounds`` (a :class:`BoundsMethod` or an object with ``pre_activation``),
    then LP tightening with a budget of ``tighten_lp`` seconds (0: off).  With ``specs``, the bounds of
    their stacked rows are computed by the same method (``output``).  Returns (bounds, report|None)."""
    if isinstance(bounds, (str, BoundsMethod)):
        stacked = None if not specs else np.vstack([s.mat for s in specs])
        b = milp.compute_bounds(net, lower, upper, BoundsMethod(bounds), spec=stacked)
    else:
        b = bounds
    report = None
    if tighten_lp and tighten_lp > 0:
        b, report = milp.tighten_bounds_lp(net, lower, upper, b, time_limit=float(tighten_lp), threads=threads,
                                           _mats=_mats)
    return b, report


def _row_lower(b, specs):
    out = getattr(b, "output", None)
    if out is None or not specs or np.asarray(out[0]).size != sum(s.num_rows for s in specs):
        return None
    return np.asarray(out[0], dtype=_F64).reshape(-1) - np.concatenate([s.rhs for s in specs])


def screen(net: ReluNetwork, lower, upper, specs: Sequence[OutputSpec], bopts: "BoundOptions", threads: int,
           budget: "Budget", mats=None):
    """Bounds on the box and the specs they cannot rule out, most promising first:
    ``(bounds, order of spec indices, seconds)``.  LP tightening and screening LPs draw on ``budget``."""
    tb = time.perf_counter()
    mats = mats or milp.StageMatrices.of(net)
    how = ScreenMethod(bopts.screen)
    tighten = min(bopts.tighten_lp, max(budget.left(), 0.0)) if bopts.tighten_lp else 0.0
    b, _ = prepare_bounds(net, lower, upper, bounds=bopts.bounds, tighten_lp=tighten, threads=threads,
                          specs=list(specs) if how is not ScreenMethod.NONE else None, _mats=mats)
    lbs = milp.spec_lower_bounds(net, lower, upper, b, list(specs), screen=how.value, row_lower=_row_lower(b, specs),
                                 threads=threads, time_limit=max(min(SCREEN_LP_S, budget.left()), 1e-3), _mats=mats)
    order = [int(j) for j in np.argsort(lbs, kind="stable") if not milp.unreachable(lbs[j], specs[j])]
    return b, order, time.perf_counter() - tb


@dataclass(frozen=True)
class SpecRun:
    """One optimisation run of :func:`decide`: the spec it was for, the model, the solver's result, the verdict."""

    spec: int
    model: "milp.MilpModel"
    result: "milp.SolveResult"
    verdict: VerificationStatus
    built: bool = True  # False: the model of an earlier run of the same spec, solved again (no build time)


@dataclass(frozen=True)
class Decision:
    """What :func:`decide` found: NOT_ROBUST (with a re-checked point ``x`` violating spec ``spec``), ROBUST
    (every spec proven unreachable), TIMEOUT or UNKNOWN."""

    status: VerificationStatus
    x: np.ndarray | None  # flat, float64, passed the float64 re-check
    spec: int | None
    runs: tuple[SpecRun, ...]
    order: tuple[int, ...]  # specs the bounds could not rule out, in the order tried
    bounds: object
    unstable: tuple[int, ...]
    bounds_time_s: float
    time_s: float
    bab: tuple[tuple[int, BabResult], ...] = ()  # (spec, result) of every branch and bound run
    falsify_s: float = 0.0  # the attack on the box that ran first (bab > 0)


def decide(net: ReluNetwork, lower, upper, specs: Sequence[OutputSpec], *, opts: "SolveOptions",
           bopts: "BoundOptions", budget: "Budget", verdict_only: bool = True, verdict_target: float = -1e-5,
           mats=None) -> Decision:
    """Is some point of the box ``[lower, upper]`` in the unsafe set of one of ``specs``?

    Bounds screen the specs (:func:`screen`); each one left gets one MILP minimising its violation,
    in ``verdict_only`` mode stopped early (HiGHS ``objective_bound = 0``: prune whatever cannot go below 0;
    ``objective_target = verdict_target``: stop at the first point below it).  Stops at the first checked
    counterexample.  ``opts.time_limit`` is per optimisation run; everything draws on ``budget``.

    With ``opts.bab > 0`` (verdict-only calls on networks without max pooling) the specs left after
    screening go through a schedule instead, after an attack on the box: a first turn of branch and bound
    per spec, easiest first, of at most ``opts.bab_first`` s (``opts.bab_first_small`` s if the MILP has at
    most ``opts.milp_first_below`` binaries); then, for each spec left open, a MILP probe of at most
    ``opts.milp_probe`` s (small MILPs only, at most half the spec's share of the time), a second turn of
    branch and bound of up to ``opts.bab`` s, and the MILP with the rest of its share; time left over when
    other specs were decided early goes to the undecided ones, one more MILP each.  Every verdict is sound
    on its own (branch and bound proves or finds a point re-checked in float64, the MILP as above), so the
    schedule only decides how fast.
    """
    t0 = time.perf_counter()
    mats = mats or milp.StageMatrices.of(net)
    b, order, bounds_time = screen(net, lower, upper, specs, bopts, opts.threads, budget, mats)
    stop_early = verdict_only and opts.solver in _HIGHS
    runs: list[SpecRun] = []
    babs: list[tuple[int, BabResult]] = []
    verdicts: list[VerificationStatus] = []
    x, hit = None, None
    # branch and bound does not handle max pooling yet: such networks get the MILP alone
    use_bab = opts.bab > 0 and verdict_only and bool(order) and all(pool is None for pool in net.pools)
    falsify_s = 0.0
    if use_bab and opts.falsify_steps > 0:
        tf = time.perf_counter()
        found = falsify(net, lower, upper, [specs[j] for j in order], steps=opts.falsify_steps)
        falsify_s = time.perf_counter() - tf
        if found is not None:
            k, x = found
            return Decision(VerificationStatus.NOT_ROBUST, x, order[k], (), tuple(order), b,
                            milp.unstable_counts(mats, b), bounds_time, time.perf_counter() - t0, (), falsify_s)
    sequence = list(order)  # the plain MILP: most promising (for a counterexample) first
    small = sum(milp.unstable_counts(mats, b)) <= opts.milp_first_below  # (the MILP's binaries)
    first_turn: dict[int, float] = {}
    if use_bab:
        # a short first turn of branch and bound per spec, easiest (largest bound) first: most specs are
        # proven in moments; the ones left open get (a MILP probe if small and) a second, longer turn below
        first_cap = opts.bab_first_small if small else opts.bab_first
        sequence = []
        for pos, j in enumerate(order[::-1]):
            cap = budget.limit(opts.time_limit)
            share = budget.left() / (len(order) - pos)
            br = bab_prove(net, lower, upper, specs[j], options=opts.bab_options,
                           time_limit=min(opts.bab, first_cap, share, math.inf if cap is None else cap))
            babs.append((j, br))
            if br.status is BabStatus.FALSIFIED:  # re-checked in float64
                verdicts.append(VerificationStatus.NOT_ROBUST)
                x, hit = br.x, j
                sequence = []
                break
            if br.status is not BabStatus.PROVEN:
                sequence.append(j)
                first_turn[j] = br.time_s

    models: dict[int, object] = {}  # built once per spec: the probe's model serves its final MILP too

    def milp_run(j: int, lim: float | None) -> tuple[VerificationStatus, object]:
        built = j not in models
        if built:
            models[j] = milp.build_model(net, lower, upper, b, spec=specs[j], _mats=mats)
            if lim is not None:  # building a model with a thousand binaries takes seconds of the call's time
                lim = max(min(lim, budget.left()), 0.0)
        model = models[j]
        res = milp.solve_model(model, solver=opts.solver, time_limit=lim, threads=opts.threads,
                               mip_rel_gap=opts.mip_rel_gap, objective_bound=0.0 if stop_early else None,
                               objective_target=verdict_target if stop_early else None)
        verdict, chk = milp.interpret(net, model, res, polish=opts.polish, threads=opts.threads,
                                      time_limit=budget.limit(POLISH_LP_S))
        runs.append(SpecRun(j, model, res, verdict, built))
        return verdict, chk

    cut: list[tuple[int, int]] = []  # (spec, its index in verdicts): specs left undecided when their share ran out
    for pos, j in enumerate(sequence):
        lim = budget.limit(opts.time_limit)
        if lim is not None and lim <= 0:
            verdicts.append(VerificationStatus.TIMEOUT)
            break
        if use_bab:  # the probe and the second turn: the open specs share what is left, the MILP gets the rest
            t_spec = time.perf_counter()
            share = budget.left() / (len(sequence) - pos)
            per_run = math.inf if opts.time_limit is None else opts.time_limit
            probe = min(opts.milp_probe, share / 2, per_run) if small else 0.0  # half: room for the turn
            if probe > 0:
                verdict, chk = milp_run(j, budget.limit(probe))
                if verdict is VerificationStatus.ROBUST:
                    verdicts.append(verdict)
                    continue
                if verdict is VerificationStatus.NOT_ROBUST:
                    verdicts.append(verdict)
                    x, hit = np.asarray(chk.x, dtype=_F64), j
                    break
            spent = time.perf_counter() - t_spec
            allowance = min(opts.bab, share - spent, per_run - spent)
            if allowance > 1.5 * first_turn[j]:  # else it would only redo its first turn (it starts afresh)
                second = bab_prove(net, lower, upper, specs[j], options=opts.bab_options, time_limit=allowance)
                babs.append((j, second))
                if second.status is BabStatus.PROVEN:
                    verdicts.append(VerificationStatus.ROBUST)
                    continue
                if second.status is BabStatus.FALSIFIED:
                    verdicts.append(VerificationStatus.NOT_ROBUST)
                    x, hit = second.x, j
                    break
            spent = time.perf_counter() - t_spec
            lim = budget.limit(min(per_run - spent, share - spent))
            if lim is not None and lim <= 0:  # this spec's share is spent; the next ones get what is left
                cut.append((j, len(verdicts)))
                verdicts.append(VerificationStatus.TIMEOUT)
                continue
        verdict, chk = milp_run(j, lim)
        if verdict is VerificationStatus.TIMEOUT:
            cut.append((j, len(verdicts)))
        verdicts.append(verdict)
        if verdict is VerificationStatus.NOT_ROBUST:
            x, hit = np.asarray(chk.x, dtype=_F64), j
            break
    # time left over where other specs were decided faster than their share: the undecided specs share it,
    # one more MILP each (on the model they already have)
    if use_bab and VerificationStatus.NOT_ROBUST not in verdicts:
        for pos, (j, k) in enumerate(cut):
            left = budget.left()
            if left < 1.0:
                break
            per_run = math.inf if opts.time_limit is None else opts.time_limit
            verdict, chk = milp_run(j, budget.limit(min(per_run, left / (len(cut) - pos))))
            verdicts[k] = verdict
            if verdict is VerificationStatus.NOT_ROBUST:
                x, hit = np.asarray(chk.x, dtype=_F64), j
                break
    status = next((s for s in _PRECEDENCE if s in verdicts), VerificationStatus.ROBUST)
    return Decision(status, x, hit, tuple(runs), tuple(order), b, milp.unstable_counts(mats, b), bounds_time,
                    time.perf_counter() - t0, tuple(babs), falsify_s)


def falsify(net: ReluNetwork, lower: np.ndarray, upper: np.ndarray, specs: Sequence[OutputSpec], *, steps: int,
            restarts: int = 2, seed: int = 0) -> tuple[int, np.ndarray] | None:
    """Look for a point of the box in the unsafe set of one of ``specs``: projected sign-gradient descent on the
    violation of every spec at once (one batch: the box centre and ``restarts`` random points per spec).  The
    best points are re-checked in float64 (:func:`lsub_helpers.milp.check_counterexample`); returns
    ``(index of the spec, point)`` for the first that passes, or None."""
    gen = torch.Generator().manual_seed(seed)
    lo = torch.as_tensor(np.asarray(lower, dtype=_F64).reshape(-1))
    hi = torch.as_tensor(np.asarray(upper, dtype=_F64).reshape(-1))
    k = restarts + 1
    shape = (-1,) + tuple(net.input_shape)
    mats = [(torch.from_numpy(sp.mat), torch.from_numpy(sp.rhs)) for sp in specs]

    def violations(x):
        y = net.forward(x.reshape(shape))
        return torch.cat([(y[j * k:(j + 1) * k] @ m.T - r).max(dim=1).values for j, (m, r) in enumerate(mats)])

    start = torch.cat([((lo + hi) / 2)[None], lo + (hi - lo) * torch.rand((restarts,) + lo.shape, generator=gen,
                                                                           dtype=torch.float64)])
    x = start.repeat(len(specs), 1)
    step = (hi - lo) / 4
    for it in range(steps):
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(violations(x).sum(), x)
        with torch.no_grad():
            x = pgd_step(x, -g, step, lo, hi)
        if it % 10 == 9:
            step = step / 2
    with torch.no_grad():
        v = violations(x)
    for i in torch.argsort(v).tolist()[:3]:
        chk = milp.check_counterexample(net, x[i].numpy(), np.asarray(lower, dtype=_F64).reshape(-1),
                                        np.asarray(upper, dtype=_F64).reshape(-1), specs[i // k])
        if chk.valid:
            return i // k, np.asarray(chk.x, dtype=_F64)
    return None
