"""Correctness of the exact MILP verifier against ground truth computed independently of it.

* tiny networks: brute force, one LP per activation pattern and target (``scipy.optimize.linprog``);
* a linear classifier: the closed form ``margin / ||w_label - w_target||_1``;
* 2-D networks: a fine grid of the input square;
* substitutes: the number of binaries and variables follows exactly from the masks;
* the solver's point is never trusted, and a time limit is reported as a timeout.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from lsub_helpers import milp
from lsub_helpers.distance import DistanceStatus, boundary_distance, verify
from lsub_helpers.milp import OutputSpec, SolverStatus, VerificationStatus
from lsub_helpers.network import ReluNetwork

HIGHS = dict(threads=1)


def _net(sizes, seed, scale=4.0):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    seq = nn.Sequential(*layers[:-1]).double()
    with torch.no_grad():
        for p in seq.parameters():
            p.mul_(scale)
    return ReluNetwork.from_torch(seq, (sizes[0],))


def _brute_force(net: ReluNetwork, x0: np.ndarray, label: int, domain=(0.0, 1.0)) -> float:
    """min over activation patterns and targets of the LP ``min t, |x - x0| <= t, pattern, margin <= 0``.

    Replaced neurons are affine (no branching)."""
    W = [s.weight.numpy() for s in net.stages]
    B = [s.bias.numpy() for s in net.stages]
    acts = net.activations
    free = [np.flatnonzero(~a.replaced.numpy()) for a in acts]
    n0 = x0.size
    best = np.inf
    for pat in itertools.product([0, 1], repeat=sum(len(f) for f in free)):
        pat = np.array(pat)
        H, g, A, b, off = np.eye(n0), np.zeros(n0), [], [], 0
        for k, act in enumerate(acts):
            Z, zc = W[k] @ H, W[k] @ g + B[k]
            on = np.zeros(act.size)
            on[free[k]] = pat[off:off + len(free[k])]
            off += len(free[k])
            for i in free[k]:
                s = -1.0 if on[i] else 1.0
                A.append(s * Z[i])
                b.append(-s * zc[i])
            slope = np.where(act.replaced.numpy(), act.slope.numpy(), on)
            c = np.where(act.replaced.numpy(), act.offset.numpy(), 0.0)
            H, g = slope[:, None] * Z, slope * zc + c
        Y, yc = W[-1] @ H, W[-1] @ g + B[-1]
        for t in range(net.num_classes):
            if t == label:
                continue
            rows = [np.r_[a, 0.0] for a in A] + [np.r_[Y[label] - Y[t], 0.0]]
            rhs = list(b) + [-(yc[label] - yc[t])]
            for i in range(n0):
                e = np.zeros(n0 + 1)
                e[i], e[-1] = 1.0, -1.0
                rows.append(e.copy())
                rhs.append(x0[i])
                e[i] = -1.0
                rows.append(e)
                rhs.append(-x0[i])
            r = linprog(np.r_[np.zeros(n0), 1.0], A_ub=np.array(rows), b_ub=np.array(rhs),
                        bounds=[domain] * n0 + [(0, None)], method="highs")
            if r.status == 0:
                best = min(best, r.fun)
    return best


def _anchor(net, seed):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(net.input_size, generator=g, dtype=torch.float64)
    return x0, int(net.forward(x0[None])[0].argmax())


def _has_boundary(net, n=4000):
    pts = torch.rand(n, net.input_size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return net.forward(pts).argmax(1).unique().numel() > 1


TINY = [s for s in range(40) if _has_boundary(_net((2, 3, 3, 3), s))][:4]


@pytest.mark.parametrize("seed", TINY)
def test_tiny_network_equals_brute_force(seed):
    net = _net((2, 3, 3, 3), seed)
    x0, label = _anchor(net, seed)
    truth = _brute_force(net, x0.numpy(), label)
    d = boundary_distance(net, x0, label, method="direct", bounds="ibp", attack=False, mip_rel_gap=1e-9, **HIGHS)
    b = boundary_distance(net, x0, label, method="bisection", bounds="ibp", attack=False, tol=1e-7, **HIGHS)
    assert d.status is DistanceStatus.EXACT and b.status is DistanceStatus.EXACT
    if np.isinf(truth):
        assert np.isinf(d.value) and np.isinf(b.value)
        return
    assert d.lower <= truth + 1e-7 <= d.upper + 2e-7
    assert d.value == pytest.approx(truth, abs=2e-6)
    assert b.lower <= truth + 1e-9 and truth <= b.upper + 1e-9 and b.upper - b.lower <= 1e-7
    for r in (d, b):  # the counterexample is real and as far as reported
        x = r.counterexample.reshape(1, -1)
        assert int(net.forward(x)[0].argmax()) != label
        assert float((x[0] - x0).abs().max()) == pytest.approx(r.upper, abs=1e-12)
    assert all(run.eps <= b.runs[0].eps + 1e-12 for run in b.runs)  # every run recorded with its eps
    # every bisection step is recorded, including those the bounds decided without a MILP
    assert len(b.steps) >= 1 and sum(st.milp_runs for st in b.steps) == len(b.runs)
    assert all(st.eps <= b.lower for st in b.steps if st.status is VerificationStatus.ROBUST)
    assert all(st.eps >= b.upper - 1e-12 for st in b.steps if st.status is VerificationStatus.NOT_ROBUST)
    assert d.steps == ()


def test_substitute_equals_brute_force():
    net = _net((2, 4, 4, 3), TINY[0])
    rep = [torch.tensor([True, False, True, False]), torch.tensor([False, True, False, False])]
    sub = net.with_substitutes(rep, [torch.tensor([0.5, 0, 0.0, 0]), torch.tensor([0, 1.5, 0, 0.0])],
                               [torch.tensor([0.1, 0, 0.3, 0]), torch.tensor([0, -0.2, 0, 0.0])])
    for seed in range(6):
        x0, label = _anchor(sub, seed)
        truth = _brute_force(sub, x0.numpy(), label)
        d = boundary_distance(sub, x0, label, method="direct", bounds="crown", attack=False, mip_rel_gap=1e-9)
        if np.isinf(truth):
            assert np.isinf(d.value)
        else:
            assert d.value == pytest.approx(truth, abs=2e-6) and d.lower <= truth + 1e-7


def test_linear_classifier_closed_form():
    torch.manual_seed(3)
    lin = nn.Linear(6, 4).double()
    net = ReluNetwork.from_torch(nn.Sequential(lin), (6,))
    x0 = torch.full((6,), 0.5, dtype=torch.float64)
    label = int(net.forward(x0[None])[0].argmax())
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    truth = min(((w[label] - w[t]) @ x0.numpy() + b[label] - b[t]) / np.abs(w[label] - w[t]).sum()
                for t in range(4) if t != label)
    assert truth < 0.5  # the domain [0, 1] does not bind
    for method in ("direct", "bisection"):
        r = boundary_distance(net, x0, label, method=method, bounds="ibp", attack=False, tol=1e-8, mip_rel_gap=1e-9)
        assert r.status is DistanceStatus.EXACT
        assert r.value == pytest.approx(truth, abs=2e-6)
        assert r.lower <= truth + 1e-9


def test_replaced_identity_is_the_linear_classifier():
    """A hidden layer whose neurons are all replaced by the identity is a linear map: no binaries."""
    net = _net((3, 5, 3), 11)
    lin = net.with_substitutes([torch.ones(5, dtype=torch.bool)], [torch.ones(5)], [torch.zeros(5)])
    lo, hi = milp.input_box(np.full(3, 0.5), 0.5)
    m = milp.build_model(lin, lo, hi, milp.compute_bounds(lin, lo, hi, "ibp"), label=0, target=1)
    assert m.num_binaries == 0 and m.unstable == (0,) and m.replaced == (5,)
    w = (lin.stages[1].weight @ lin.stages[0].weight).numpy()
    b = (lin.stages[1].weight @ lin.stages[0].bias + lin.stages[1].bias).numpy()
    x0 = np.full(3, 0.5)
    label = int(np.argmax(w @ x0 + b))
    truth = min(((w[label] - w[t]) @ x0 + b[label] - b[t]) / np.abs(w[label] - w[t]).sum() for t in range(3) if t != label)
    r = boundary_distance(lin, torch.tensor(x0), label, method="direct", attack=False, mip_rel_gap=1e-9)
    assert r.value == pytest.approx(min(truth, np.inf), abs=2e-6) or (truth >= 0.5 and np.isinf(r.value))


@pytest.mark.parametrize("seed", [0, 1])
def test_2d_network_against_grid(seed):
    net = _net((2, 8, 8, 3), seed, scale=2.0)
    x0, label = _anchor(net, seed + 7)
    h = 1 / 600
    g = torch.linspace(0, 1, 601, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g)
    wrong = net.forward(grid).argmax(1) != label
    d_grid = float((grid[wrong] - x0).abs().max(1).values.min()) if wrong.any() else np.inf
    r = boundary_distance(net, x0, label, method="direct", attack=True, mip_rel_gap=1e-9)
    assert r.status is DistanceStatus.EXACT
    if np.isinf(d_grid):
        assert r.value > 0.0
        return
    assert r.lower <= d_grid + 1e-9  # the grid's best is an upper bound
    assert r.value <= d_grid + 1e-9
    assert d_grid - r.value <= 4 * h  # and the grid comes close to it
    assert r.value <= r.d_adv + 1e-15
    below = verify(net, x0, label, r.lower * 0.999)
    above = verify(net, x0, label, r.upper * 1.001 + 1e-9)
    assert below.status is VerificationStatus.ROBUST and below.counterexample is None
    assert above.status is VerificationStatus.NOT_ROBUST
    assert int(net.forward(above.counterexample[None])[0].argmax()) != label


def test_attack_result_is_rechecked_on_the_network():
    """An AttackResult made on another network (f's, handed to a substitute) is re-checked, not trusted."""
    import dataclasses as dc

    from lsub_helpers.attacks import min_distance_attack

    net = _net((2, 3, 3, 3), TINY[0])
    x0, label = _anchor(net, TINY[0])
    truth = _brute_force(net, x0.numpy(), label)
    adv = min_distance_attack(net, x0, label, seed=0)
    assert adv.success
    # the same point with an understated distance: the distance is recomputed from the point
    lying = dc.replace(adv, distance=adv.distance / 10)
    d = boundary_distance(net, x0, label, method="bisection", bounds="ibp", attack=lying, tol=1e-7, **HIGHS)
    assert d.d_adv == pytest.approx(adv.distance, abs=1e-12) and d.lower <= truth + 1e-9 <= d.upper + 2e-9
    # a "success" whose point is the anchor itself: ignored, the distance is still found
    fake = dc.replace(adv, x_adv=x0.clone(), distance=0.0)
    d = boundary_distance(net, x0, label, method="direct", bounds="ibp", attack=fake, mip_rel_gap=1e-9, **HIGHS)
    assert d.d_adv is None and d.value == pytest.approx(truth, abs=2e-6)


def test_substitutes_reduce_binaries_exactly():
    net = _net((4, 12, 12, 3), 5, scale=2.0)
    x0 = torch.full((4,), 0.5, dtype=torch.float64)
    lo, hi = milp.input_box(x0, 0.5)
    b = milp.compute_bounds(net, lo, hi, "ibp")
    base = milp.build_model(net, lo, hi, b, label=0, target=1)
    unst = [((l < 0) & (u > 0)) for l, u in b.pre_activation]
    assert base.num_binaries == sum(int(m.sum()) for m in unst) > 4
    # replace two unstable neurons per layer: one linear, one constant
    rep, slope, off = [], [], []
    for m in unst:
        idx = np.flatnonzero(m)[:2]
        r = torch.zeros(12, dtype=torch.bool)
        r[idx] = True
        s = torch.zeros(12, dtype=torch.float64)
        s[idx[0]] = 0.7  # linear substitute; idx[1] keeps slope 0 (constant)
        rep.append(r)
        slope.append(s)
        off.append(torch.full((12,), 0.1, dtype=torch.float64))
    sub = net.with_substitutes(rep, slope, off)
    bs = milp.compute_bounds(sub, lo, hi, "ibp")
    m = milp.build_model(sub, lo, hi, bs, label=0, target=1)
    unst_sub = [((l < 0) & (u > 0) & ~r.numpy()) for (l, u), r in zip(bs.pre_activation, rep)]
    assert m.num_binaries == sum(int(u.sum()) for u in unst_sub)
    assert m.replaced == (2, 2)
    # variables (default, affine neurons composed away): x, then z and y for every unstable ReLU
    assert m.num_continuous == 4 + 2 * m.num_binaries
    # MIPVerify's layout: x, z for every non-constant neuron, y for every unstable one
    m_full = milp.build_model(sub, lo, hi, bs, label=0, target=1, compose_affine=False)
    expect = 4
    for (l, u), r, s in zip(bs.pre_activation, rep, slope):
        r = r.numpy()
        const = np.where(r, s.numpy() == 0, u <= 0)
        expect += int((~const).sum()) + int(((l < 0) & (u > 0) & ~r).sum())
    assert m_full.num_continuous == expect
    assert m_full.num_binaries == m.num_binaries
    # both layouts describe the same set: the same optimum
    r1 = milp.solve_model(m, time_limit=60)
    r2 = milp.solve_model(m_full, time_limit=60)
    assert r1.objective == pytest.approx(r2.objective, abs=1e-6)
    # the first layer sees the same input box: exactly two binaries fewer there
    assert m.unstable[0] == base.unstable[0] - 2


def test_recheck_rejects_a_wrong_solver_point(monkeypatch):
    net = _net((2, 3, 3, 3), TINY[0])
    x0, label = _anchor(net, TINY[0])
    d = boundary_distance(net, x0, label, method="direct", attack=False, mip_rel_gap=1e-9)
    eps = d.lower * 0.5  # robust: no counterexample exists
    lo, hi = milp.input_box(x0.numpy(), eps)
    target = (label + 1) % 3
    model = milp.build_model(net, lo, hi, milp.compute_bounds(net, lo, hi, "ibp"), label=label, target=target)
    fake = milp.SolveResult(SolverStatus.OPTIMAL, -1.0, -1.0, x0.numpy().copy(), 0.0, 0.0, "fake")
    for polish in (False, True):
        status, chk = milp.interpret(net, model, fake, polish=polish)
        assert status is not VerificationStatus.NOT_ROBUST and not chk.valid
    assert milp.check_counterexample(net, x0.numpy(), lo, hi, model.spec).valid is False

    real = milp.solve_model

    def lying(model, **kw):
        res = real(model, **kw)
        return dataclasses.replace(res, status=SolverStatus.TARGET, objective=-1.0, x=x0.numpy().copy())

    monkeypatch.setattr(milp, "solve_model", lying)
    v = verify(net, x0, label, eps, bounds="ibp", screen="none")
    assert v.status is not VerificationStatus.NOT_ROBUST and v.counterexample is None
    assert len(v.runs) > 0


def test_direct_distance_with_an_unverifiable_optimum_is_unknown_not_infinite(monkeypatch):
    """Without an attack point, a MILP that ends OPTIMAL at a point failing the float64 re-check (even
    after polishing) proves nothing about the absence of a boundary: the result keeps the solver's finite
    lower bound and says UNKNOWN, never EXACT with lower = upper = inf (which Lemma 1's certificate would
    then turn into a lower bound above the true distance)."""
    net = _net((2, 3, 3, 3), TINY[0])
    x0, label = _anchor(net, TINY[0])
    honest = boundary_distance(net, x0, label, method="direct", attack=False, mip_rel_gap=1e-9)
    assert honest.status is DistanceStatus.EXACT and np.isfinite(honest.value)

    def never_valid(net_, x, lower, upper, spec, *, x0=None):
        chk = real_check(net_, x, lower, upper, spec, x0=x0)
        return dataclasses.replace(chk, valid=False)

    real_check = milp.check_counterexample
    from lsub_helpers.milp import model as milp_model

    monkeypatch.setattr(milp_model, "check_counterexample", never_valid)
    d = boundary_distance(net, x0, label, method="direct", attack=False, mip_rel_gap=1e-9)
    assert any(r.solver_status is SolverStatus.OPTIMAL for r in d.runs)  # the path: optimal, point rejected
    assert d.status is DistanceStatus.UNKNOWN and d.value is None and d.counterexample is None
    assert np.isfinite(d.lower) and d.lower <= honest.value + 1e-9  # the solver's bound, still sound
    assert d.upper == np.inf


def test_time_limit_is_a_timeout():
    net = _net((20, 40, 40, 10), 2, scale=1.0)
    x0 = torch.full((20,), 0.5, dtype=torch.float64)
    label = int(net.forward(x0[None])[0].argmax())
    v = verify(net, x0, label, 0.5, bounds="ibp", time_limit=0.01, screen="none")
    assert v.status in (VerificationStatus.TIMEOUT, VerificationStatus.NOT_ROBUST)
    if v.status is VerificationStatus.TIMEOUT:
        assert v.counterexample is None and any(r.solver_status is SolverStatus.TIME_LIMIT for r in v.runs)
    r = boundary_distance(net, x0, label, method="direct", bounds="ibp", attack=False, time_limit=0.01, screen="none")
    assert r.status is DistanceStatus.TIMEOUT and r.value is None
    assert 0.0 <= r.lower <= r.upper
    r = boundary_distance(net, x0, label, method="bisection", bounds="ibp", attack=False, time_limit=0.01,
                          screen="none")
    assert r.status is DistanceStatus.TIMEOUT and r.value is None and r.lower <= r.upper


def test_model_building_draws_on_the_calls_time_budget(monkeypatch):
    """A model with a thousand binaries takes seconds to build: the solver gets what is left of the call's
    budget after the build, not what was left before it (a 60 s call overran by the build time)."""
    import time

    from lsub_helpers import verification

    net = _net((20, 40, 40, 10), 2, scale=1.0)
    x0 = torch.full((20,), 0.5, dtype=torch.float64)
    label = int(net.forward(x0[None])[0].argmax())
    build, solve, seen = milp.build_model, milp.solve_model, []

    def slow_build(*args, **kwargs):
        time.sleep(0.6)
        return build(*args, **kwargs)

    def recorded_solve(model, **kwargs):
        seen.append((time.perf_counter(), kwargs["time_limit"]))
        return solve(model, **kwargs)

    monkeypatch.setattr(verification.milp, "build_model", slow_build)
    monkeypatch.setattr(verification.milp, "solve_model", recorded_solve)
    t0 = time.perf_counter()  # the call's budget starts after this
    v = verify(net, x0, label, 0.5, bounds="ibp", time_limit=5.0, total_time_limit=5.0, screen="none")
    assert seen, "no MILP was solved"
    for start, limit in seen:  # no run may be allowed to end past the call's budget
        assert limit <= max(5.0 - (start - t0), 0.0) + 0.05  # (the bookkeeping between the two clocks)
    assert v.status in (VerificationStatus.TIMEOUT, VerificationStatus.NOT_ROBUST, VerificationStatus.ROBUST)


def test_misclassified_anchor():
    net = _net((2, 3, 3, 3), TINY[0])
    x0, label = _anchor(net, TINY[0])
    wrong = (label + 1) % 3
    r = boundary_distance(net, x0, wrong, method="direct")
    assert r.status is DistanceStatus.MISCLASSIFIED and r.value == 0.0 and not r.runs
    v = verify(net, x0, wrong, 0.01)
    assert v.status is VerificationStatus.NOT_ROBUST


def test_model_counts_write_and_other_interfaces(tmp_path):
    net = _net((3, 6, 6, 3), 4, scale=2.0)
    x0 = torch.full((3,), 0.5, dtype=torch.float64)
    label = int(net.forward(x0[None])[0].argmax())
    lo, hi = milp.input_box(x0, 0.3)
    b = milp.compute_bounds(net, lo, hi, "crown")
    target = (label + 1) % 3
    m = milp.build_model(net, lo, hi, b, label=label, target=target)
    assert m.num_binaries == sum(m.unstable) and m.num_rows > 0 and m.build_time_s > 0
    assert "binaries" in repr(m)
    m.write(tmp_path / "m.lp")
    m.write(tmp_path / "m.mps")
    text = (tmp_path / "m.lp").read_text()
    assert "affine0(" in text and "x(0)" in text and "binary" in text
    assert (tmp_path / "m.mps").stat().st_size > 0
    full = milp.solve_model(m, mip_rel_gap=0.0, **HIGHS)
    assert full.status is SolverStatus.OPTIMAL
    for other in ("highs_persistent", "appsi_highs"):  # Pyomo's own HiGHS interfaces, by name
        res = milp.solve_model(m, solver=other, mip_rel_gap=0.0, **HIGHS)
        assert res.status is SolverStatus.OPTIMAL and res.objective == pytest.approx(full.objective, abs=1e-6)
    with pytest.raises(ValueError, match="not available"):
        milp.solve_model(m, solver="no_such_solver")
    fwd = net.margin(torch.from_numpy(full.x)[None], label, target)
    assert float(fwd) == pytest.approx(full.objective, abs=1e-6)
    # verdict-only agrees with the sign of the optimum
    v = milp.solve_model(m, objective_bound=0.0, objective_target=-1e-5, **HIGHS)
    status, _ = milp.interpret(net, m, v)
    assert (status is VerificationStatus.ROBUST) == (full.objective > 0)


def test_lp_tightening_is_valid_and_tighter():
    net = _net((4, 16, 16, 16, 3), 8, scale=1.5)
    x0 = torch.full((4,), 0.5, dtype=torch.float64)
    lo, hi = milp.input_box(x0, 0.3)
    b = milp.compute_bounds(net, lo, hi, "ibp")
    t, rep = milp.tighten_bounds_lp(net, lo, hi, b, time_limit=30)
    assert rep.complete and all(a <= c for a, c in zip(rep.unstable_after, rep.unstable_before))
    assert sum(rep.unstable_after) < sum(rep.unstable_before)
    pts = torch.from_numpy(lo + (hi - lo) * np.random.default_rng(0).random((5000, 4)))
    pre, _ = net.forward_all(pts)
    for (l0, u0), (l1, u1), z in zip(b.pre_activation, t.pre_activation, pre):
        assert np.all(l1 >= l0 - 1e-12) and np.all(u1 <= u0 + 1e-12)
        assert np.all(z.numpy() >= l1 - 1e-9) and np.all(z.numpy() <= u1 + 1e-9)
    label = int(net.forward(x0[None])[0].argmax())
    target = (label + 1) % 3
    opt = [milp.solve_model(milp.build_model(net, lo, hi, bb, label=label, target=target), mip_rel_gap=0.0,
                            options={"mip_abs_gap": 0.0}).objective for bb in (b, t)]
    assert opt[0] == pytest.approx(opt[1], abs=1e-6)  # the same optimum with fewer binaries


@pytest.mark.parametrize("rhs", [(0.0, 0.0), (0.7, -0.4)])
def test_output_spec_multi_row_violation(rhs):
    """A conjunction of two rows: the violation objective is the max of the rows."""
    net = _net((2, 5, 3), 6, scale=2.0)
    lo, hi = np.zeros(2), np.ones(2)
    spec = OutputSpec(np.array([[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]]), np.array(rhs))  # y0 - y1 <= r0, y0 - y2 <= r1
    m = milp.build_model(net, lo, hi, milp.compute_bounds(net, lo, hi, "ibp"), spec=spec)
    res = milp.solve_model(m, mip_rel_gap=0.0)
    g = torch.cartesian_prod(torch.linspace(0, 1, 401, dtype=torch.float64), torch.linspace(0, 1, 401, dtype=torch.float64))
    grid_min = float(torch.from_numpy(spec.violation(net.forward(g).numpy())).min())
    assert res.objective <= grid_min + 1e-9 and res.objective >= grid_min - 0.05
    assert float(spec.violation(net.forward(torch.from_numpy(res.x)[None]).numpy())[0]) == pytest.approx(res.objective, abs=1e-6)


def test_output_spec_single_row_with_rhs():
    net = _net((2, 5, 3), 6, scale=2.0)
    lo, hi = np.zeros(2), np.ones(2)
    spec = OutputSpec(np.array([[0.5, -1.0, 2.0]]), np.array([1.3]))
    b = milp.compute_bounds(net, lo, hi, "crown", spec=spec.mat)
    res = milp.solve_model(milp.build_model(net, lo, hi, b, spec=spec), mip_rel_gap=0.0)
    g = torch.cartesian_prod(torch.linspace(0, 1, 401, dtype=torch.float64), torch.linspace(0, 1, 401, dtype=torch.float64))
    vals = spec.violation(net.forward(g).numpy())
    assert res.objective <= vals.min() + 1e-9 and res.objective >= vals.min() - 0.05
    lb = milp.spec_lower_bounds(net, lo, hi, b, [spec], row_lower=b.output[0] - spec.rhs)
    assert lb[0] <= res.objective + 1e-7


@pytest.mark.parametrize("seed", TINY[:2])
def test_verdict_only_agrees_with_the_sign_of_the_optimum(seed):
    """HiGHS's objective_bound / objective_target early stop never contradicts the full optimisation
    (the model's constant term is an objective offset: this checks that HiGHS applies the cut-off to it)."""
    net = _net((2, 3, 3, 3), seed)
    x0, label = _anchor(net, seed)
    d = boundary_distance(net, x0, label, method="direct", bounds="ibp", attack=False, mip_rel_gap=1e-9).value
    for factor in (0.3, 0.8, 0.97, 1.03, 1.3, 2.0):
        eps = min(factor * d, 1.0) if np.isfinite(d) else factor * 0.3
        lo, hi = milp.input_box(x0.numpy(), eps)
        b = milp.compute_bounds(net, lo, hi, "ibp")
        for target in range(3):
            if target == label:
                continue
            m = milp.build_model(net, lo, hi, b, label=label, target=target)
            full = milp.solve_model(m, mip_rel_gap=0.0, options={"mip_abs_gap": 0.0})
            if abs(full.objective) < 1e-6:
                continue
            expected = VerificationStatus.ROBUST if full.objective > 0 else VerificationStatus.NOT_ROBUST
            # today's options (RINS and RENS off) and HiGHS's default heuristics give the same verdict
            for extra in (None, {k: True for k in milp.SPEED_HIGHS_OPTIONS}):
                fast = milp.solve_model(m, objective_bound=0.0, objective_target=-1e-5, options=extra)
                status, _ = milp.interpret(net, m, fast)
                assert status is expected


def test_highs_gets_the_safe_and_speed_options_and_the_caller_overrides_them():
    from lsub_helpers.milp.lp import new_highs
    from lsub_helpers.milp.solve import _apply_highs_options

    h = new_highs()
    _apply_highs_options(h, 5.0, 1, None, None, None, None, False)
    for k, v in {**milp.SAFE_HIGHS_OPTIONS, **milp.SPEED_HIGHS_OPTIONS}.items():
        assert h.getOptionValue(k)[1] == v, k
    assert milp.SPEED_HIGHS_OPTIONS == {"mip_heuristic_run_rins": False, "mip_heuristic_run_rens": False}
    h = new_highs()
    _apply_highs_options(h, 5.0, 1, None, None, None, {"mip_heuristic_run_rins": True}, False)
    assert h.getOptionValue("mip_heuristic_run_rins")[1] is True
    assert h.getOptionValue("mip_heuristic_run_rens")[1] is False


def test_solving_prints_no_licence_banner():
    """HiGHS writes its banner below Python when a process makes its first instance; nothing of it may reach
    a user's terminal or a book page (checked in a fresh process, where the first instance is made)."""
    import subprocess
    import sys

    code = ("import torch\nfrom torch import nn\nfrom lsub_helpers.network import ReluNetwork\n"
            "from lsub_helpers.distance import boundary_distance\n"
            "torch.manual_seed(0)\n"
            "net = ReluNetwork.from_torch(nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 3)).double(), (2,))\n"
            "x0 = torch.tensor([0.3, 0.6], dtype=torch.float64)\n"
            "d = boundary_distance(net, x0, int(net.predict(x0[None])[0]), attack=False, screen='none')\n"
            "print('status', d.status.value, len(d.runs))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("status ") and out.stdout.count("\n") == 1, out.stdout
    assert int(out.stdout.split()[-1]) >= 1  # a MILP was solved, so a Highs instance was made
    assert "HiGHS" not in out.stdout + out.stderr and "licence" not in out.stdout + out.stderr


def test_bisection_keeps_raising_its_lower_bound_below_an_undecided_radius():
    net = _net((3, 10, 10, 3), 5, scale=2.0)
    x0 = torch.full((3,), 0.5, dtype=torch.float64)
    label = int(net.forward(x0[None])[0].argmax())
    exact = boundary_distance(net, x0, label, method="bisection", tol=1e-4)
    assert exact.status is DistanceStatus.EXACT
    # no time for any MILP: a radius the bounds cannot decide stays open, and the search goes on below it,
    # where the bounds alone still prove radii
    r = boundary_distance(net, x0, label, method="bisection", tol=1e-4, time_limit=0.0, total_time_limit=60)
    kinds = [s.status for s in r.steps]
    assert VerificationStatus.TIMEOUT in kinds
    first_open = kinds.index(VerificationStatus.TIMEOUT)
    assert VerificationStatus.ROBUST in kinds[first_open + 1:]  # proven after the first undecided radius
    assert r.status is DistanceStatus.TIMEOUT and r.value is None
    assert 0.0 < r.lower <= exact.lower + 1e-12 and r.upper >= exact.upper - 1e-12
    for i, s in enumerate(r.steps[first_open + 1:], first_open + 1):
        assert s.eps < min(t.eps for t in r.steps[:i] if t.status is VerificationStatus.TIMEOUT)


def test_bisection_stops_refining_below_an_undecided_radius_at_open_tol():
    net = _net((3, 10, 10, 3), 5, scale=2.0)
    x0 = torch.full((3,), 0.5, dtype=torch.float64)
    label = int(net.forward(x0[None])[0].argmax())
    kw = dict(method="bisection", tol=1e-4, time_limit=0.0, total_time_limit=60)
    full = boundary_distance(net, x0, label, **kw)  # open_tol=0: refines down to tol, as before
    short = boundary_distance(net, x0, label, open_tol=0.05, **kw)
    assert short.tolerance["open_tol"] == 0.05 and full.tolerance["open_tol"] == 0.0

    def gap(r, n):  # the lowest undecided radius among the first n steps, minus the proven lower bound there
        lows = [s.eps for s in r.steps[:n] if s.status is VerificationStatus.ROBUST]
        return min(s.eps for s in r.steps[:n] if s.status is VerificationStatus.TIMEOUT) - max(lows, default=0.0)

    n = len(short.steps)
    # the same radii with the same verdicts (the bounds decide alone, deterministically), cut where the gap
    # below the lowest undecided radius r first falls to open_tol * r
    assert [(s.eps, s.status) for s in short.steps] == [(s.eps, s.status) for s in full.steps[:n]]
    assert n < len(full.steps)
    ceiling = min(s.eps for s in short.steps if s.status is VerificationStatus.TIMEOUT)
    assert gap(short, n) <= 0.05 * ceiling < gap(short, n - 1)
    assert short.status is DistanceStatus.TIMEOUT and short.lower <= full.lower and short.upper == full.upper
    with pytest.raises(ValueError, match="open_tol"):
        boundary_distance(net, x0, label, method="bisection", open_tol=1.5)
