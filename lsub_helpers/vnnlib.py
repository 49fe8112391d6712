"""Deciding VNN-LIB properties exactly with the MILP of :mod:`lsub_helpers.milp`.

:func:`verify_vnnlib` decides a property (read by :func:`lsub_helpers.io.vnnlib.read_vnnlib`) on a
:class:`~lsub_helpers.network.ReluNetwork`: one MILP per disjunct minimising ``max_k (mat @ f(x) - rhs)_k``
(<= 0 iff the disjunct is reached) in verdict-only mode, drawing on :mod:`lsub_helpers.verification`.
The reading and writing functions of :mod:`lsub_helpers.io.vnnlib` are importable from here too.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import numpy as np
import torch

from . import milp
from .io.vnnlib import (
    VnnlibError,
    apply_output_activation,
    check_output_activation,
    format_counterexample,
    read_vnnlib,
    write_result,
)
from .milp import OutputSpec, VerificationStatus
from .network import ReluNetwork

__all__ = ["VnnlibError", "read_vnnlib", "VnnVerdict", "VnnResult", "verify_vnnlib", "write_result",
           "format_counterexample", "check_output_activation", "apply_output_activation"]


# ---------------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------------

class VnnVerdict(str, enum.Enum):
    """The VNN-COMP answers (a ``str``: compares and prints as the competition's word)."""

    SAT = "sat"  # a re-checked counterexample: the property's unsafe set is reached
    UNSAT = "unsat"  # proven: no input of the box reaches it
    TIMEOUT = "timeout"
    UNKNOWN = "unknown"
    ERROR = "error"  # the instance could not be run (bad input, a crash): written by the command-line runners

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass(frozen=True)
class VnnResult:
    result: VnnVerdict
    x: np.ndarray | None  # counterexample (flat input) for sat
    y: np.ndarray | None  # its outputs (float64 forward pass)
    runs: tuple  # (box index, disjunct index, MilpModel counts, SolveResult) per MILP
    time_s: float


def verify_vnnlib(net: ReluNetwork, prop, *, time_limit: float = 60.0, bounds="crown", threads: int = 1,
                  verdict_target: float = -1e-4, tighten_lp: float = 0.0, attack_steps: int = 50,
                  attack_restarts: int = 4, bab: float = 0.0) -> VnnResult:
    """Decide a VNN-LIB property (``read_vnnlib`` output or a path) on ``net`` within ``time_limit`` s.

    Per input box: projected sign-gradient descent on each disjunct's violation from the box centre and
    ``attack_restarts`` random points (``attack_steps`` steps; 0 switches it off), then
    :func:`lsub_helpers.verification.decide` (bounds rule out the disjuncts they can, one verdict-only MILP
    per remaining disjunct; with ``bab`` > 0 first up to ``bab`` seconds of branch and bound on ReLU splits,
    :mod:`lsub_helpers.bab`), every LP and MILP drawing on the one ``time_limit``.  ``sat`` only with a point
    that passed :func:`lsub_helpers.milp.check_counterexample`.
    """
    from .verification import BoundOptions, Budget, ScreenMethod, SolveOptions, decide, falsify

    t0 = time.perf_counter()
    budget = Budget(time_limit)
    if not isinstance(prop, list):
        prop = read_vnnlib(prop)
    mats = milp.StageMatrices.of(net)
    opts = SolveOptions(threads=threads, time_limit=None, mip_rel_gap=None, bab=bab, falsify_steps=0)
    bopts = BoundOptions(bounds=bounds, tighten_lp=tighten_lp, domain=None,
                         screen=ScreenMethod.INTERVAL if bab > 0 else ScreenMethod.LP)
    runs = []
    statuses = []
    for bi, (box, disjuncts) in enumerate(prop):
        if box.shape[0] != net.input_size:
            raise VnnlibError(f"the property has {box.shape[0]} inputs, the network {net.input_size}")
        if not np.isfinite(box).all():
            raise VnnlibError("every input needs a finite lower and upper bound")
        lower, upper = box[:, 0].copy(), box[:, 1].copy()
        specs = [OutputSpec(m, r, strict=False, name=f"disjunct {j}") for j, (m, r) in enumerate(disjuncts)]
        if any(sp.mat.shape[1] != net.num_classes for sp in specs):
            raise VnnlibError(f"the property has outputs Y_0.. Y_{specs[0].mat.shape[1] - 1}, "
                              f"the network {net.num_classes}")
        # a cheap falsifier first (as VNN-COMP tools do); its points are re-checked in float64
        if attack_steps:
            found = falsify(net, lower, upper, specs, steps=attack_steps, restarts=attack_restarts)
            if found is not None:
                return _sat(net, found[1], runs, t0)
        if budget.left() <= 0:
            return VnnResult(VnnVerdict.TIMEOUT, None, None, tuple(runs), time.perf_counter() - t0)
        d = decide(net, lower, upper, specs, opts=opts, bopts=bopts, budget=budget, verdict_target=verdict_target,
                   mats=mats)
        runs += [(bi, r.spec, r.model.counts, r.result) for r in d.runs]
        if d.status is VerificationStatus.NOT_ROBUST:
            return _sat(net, d.x, runs, t0)
        statuses.append(d.status)
        if d.status is VerificationStatus.TIMEOUT:
            break  # the budget is spent
    if all(st is VerificationStatus.ROBUST for st in statuses):
        return VnnResult(VnnVerdict.UNSAT, None, None, tuple(runs), time.perf_counter() - t0)
    result = VnnVerdict.TIMEOUT if VerificationStatus.TIMEOUT in statuses else VnnVerdict.UNKNOWN
    return VnnResult(result, None, None, tuple(runs), time.perf_counter() - t0)


def _sat(net, x, runs, t0) -> VnnResult:
    with torch.no_grad():
        y = net.forward(torch.from_numpy(np.asarray(x, dtype=np.float64)).reshape((1,) + tuple(net.input_shape)))
    return VnnResult(VnnVerdict.SAT, np.asarray(x), y.numpy()[0], tuple(runs), time.perf_counter() - t0)
