"""Exact verification D: the MILP of Tjeng et al. (2019) in Pyomo, solved by HiGHS.

* :mod:`.encoding`: output specifications, input boxes, bounds as float64 arrays (from
  :mod:`lsub_helpers.bounds`), the network as sparse stage matrices and the rows of the encoding;
* :mod:`.lp`: LP relaxations (MIPVerify's bound tightening, target screening) and a silent HiGHS;
* :mod:`.solve`: the solver back-ends and their statuses;
* :mod:`.model`: the Pyomo model (:func:`build_model`), the float64 re-check of every counterexample and
  the verdict of a solve (:func:`interpret`).

Only public names are importable from here; problem (2) as a whole is :mod:`lsub_helpers.verification`,
problem (1) :mod:`lsub_helpers.distance`.
"""

from .encoding import (BoundsMethod, LayerBounds, OutputSpec, StageMatrices, compute_bounds, input_box,
                       interval_bounds, unstable_counts)
from .lp import TighteningReport, new_highs, spec_lower_bounds, tighten_bounds_lp, unreachable
from .model import Check, MilpModel, Objective, VerificationStatus, build_model, check_counterexample, interpret
from .solve import SAFE_HIGHS_OPTIONS, SPEED_HIGHS_OPTIONS, SolveResult, SolverStatus, solve_model

__all__ = ["BoundsMethod", "LayerBounds", "OutputSpec", "StageMatrices", "compute_bounds", "input_box",
           "interval_bounds", "unstable_counts", "TighteningReport", "new_highs", "spec_lower_bounds",
           "tighten_bounds_lp", "unreachable", "Check", "MilpModel", "Objective", "VerificationStatus",
           "build_model", "check_counterexample", "interpret", "SAFE_HIGHS_OPTIONS", "SPEED_HIGHS_OPTIONS", "SolveResult", "SolverStatus",
           "solve_model"]
