"""Branch and bound (lsub_helpers.bab), subdomain bounds (known / recompute) and optimised slopes (alpha-CROWN).

Soundness against independent ground truth: points sampled in a subdomain never leave its bounds; a spec that
branch and bound proves has a positive exact optimum (the plain MILP, itself checked against brute force in
test_milp); optimised slopes never fall below CROWN nor above sampled values; ``verify`` with branch and bound
gives the plain MILP's verdicts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bounds import one_thread  # noqa: F401  (the autouse fixture: one intra-op thread)
from test_bounds import assert_sound, conv_net, dense_net, sample_box, substitute

from lsub_helpers import bounds as B
from lsub_helpers import milp
from lsub_helpers.bab import BabOptions, BabStatus, bab_prove
from lsub_helpers.bounds import AlphaOptions, alpha_crown_spec
from lsub_helpers.distance import verify
from lsub_helpers.milp import OutputSpec, VerificationStatus
from lsub_helpers.verification import falsify

F64 = torch.float64


def _box(net, seed, width):
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(net.input_shape, generator=gen, dtype=F64)
    radius = torch.rand(net.input_shape, generator=gen, dtype=F64) * width
    return center - radius, center + radius, gen


def _exact_min(net, lo, hi, spec) -> float:
    """The exact minimum of the spec's violation over the box (the plain MILP, solved to optimality)."""
    b = milp.compute_bounds(net, lo.numpy().reshape(-1), hi.numpy().reshape(-1), "crown")
    model = milp.build_model(net, lo.numpy().reshape(-1), hi.numpy().reshape(-1), b, spec=spec)
    res = milp.solve_model(model, time_limit=60, threads=1, mip_rel_gap=1e-9)
    assert res.status is milp.SolverStatus.OPTIMAL
    return float(res.objective)


# ---------------------------------------------------------------------------------------------------
# Subdomain bounds: known / recompute
# ---------------------------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), conv=st.booleans(), replaced=st.booleans(), width=st.floats(0.05, 0.5))
def test_subdomain_bounds_hold_on_sampled_points_of_the_subdomain(seed, conv, replaced, width):
    net = conv_net(seed) if conv else dense_net(seed, sizes=(3, 6, 6, 3))
    if replaced:
        net = substitute(net, seed)
    lo, hi, gen = _box(net, seed, width)
    root = B.crown_box(net, lo, hi)
    # fix the first unstable neuron of the first layer that has one, on a random side
    fixed = next(((j, int(i)) for j, m in enumerate(root.unstable_masks()) for i in m.nonzero().flatten()), None)
    if fixed is None:
        return
    j, i = fixed
    active = bool(torch.rand(1, generator=gen) < 0.5)
    known = [(l.clone(), u.clone()) for l, u in root.pre_activation]
    if active:
        known[j][0][i] = 0.0
    else:
        known[j][1][i] = 0.0
    stale = [torch.zeros(n, dtype=torch.bool) if k <= j else torch.ones(n, dtype=torch.bool)
             for k, n in enumerate(net.layer_sizes)]
    for recompute in (None, stale):
        sub = B.compute_bounds_box(net, lo, hi, method="crown", known=known, recompute=recompute)
        points = sample_box(lo, hi, 3000, gen)
        pre, _ = net.forward_all(points)
        inside = pre[j][:, i] >= 0 if active else pre[j][:, i] <= 0
        if inside.sum() == 0:
            continue
        assert_sound(net, sub, points[inside])
        for (l, u), (kl, ku) in zip(sub.pre_activation, known):  # never looser than what was known
            assert (l >= kl - 1e-12).all() and (u <= ku + 1e-12).all()


def test_known_equal_to_the_bounds_changes_nothing_and_recompute_nothing_keeps_known():
    net = conv_net(3)
    lo, hi, _ = _box(net, 3, 0.3)
    root = B.crown_box(net, lo, hi)
    again = B.compute_bounds_box(net, lo, hi, method="crown", known=root.pre_activation)
    for (l1, u1), (l2, u2) in zip(root.pre_activation, again.pre_activation):
        assert torch.equal(l1, l2) and torch.equal(u1, u2)
    loose = [(l - 1.0, u + 1.0) for l, u in root.pre_activation]
    none = [torch.zeros(n, dtype=torch.bool) for n in net.layer_sizes]
    kept = B.compute_bounds_box(net, lo, hi, method="crown", known=loose, recompute=none)
    # nothing recomputed: layer 1 is IBP (exact there), deeper layers IBP intersected with the loose bounds
    ibp = B.ibp_box(net, lo, hi)
    assert torch.allclose(kept.pre_activation[0][0], root.pre_activation[0][0])
    for (l, u), (kl, ku), (il, iu) in zip(kept.pre_activation[1:], loose[1:], ibp.pre_activation[1:]):
        assert (l >= torch.maximum(kl, il) - 1e-9).all() and (u <= torch.minimum(ku, iu) + 1e-9).all()
    with pytest.raises(ValueError, match="recompute needs known"):
        B.compute_bounds_box(net, lo, hi, method="crown", recompute=none)
    with pytest.raises(ValueError, match="one .lower, upper. pair per ReLU layer"):
        B.compute_bounds_box(net, lo, hi, method="crown", known=root.pre_activation[:1])


# ---------------------------------------------------------------------------------------------------
# Optimised slopes
# ---------------------------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), conv=st.booleans(), width=st.floats(0.05, 0.5))
def test_alpha_crown_is_between_crown_and_the_sampled_minimum(seed, conv, width):
    net = conv_net(seed) if conv else dense_net(seed, sizes=(3, 6, 6, 3))
    lo, hi, gen = _box(net, seed, width)
    spec = torch.randn(2, net.num_classes, generator=gen, dtype=F64)
    crown = B.crown_box(net, lo, hi, spec=spec).output[0]
    r = alpha_crown_spec(net, lo, hi, spec, options=AlphaOptions(iterations=15))
    assert (r.lower >= crown - 1e-9).all()
    values = net.forward(sample_box(lo, hi, 3000, gen)) @ spec.T
    assert (r.lower <= values.min(0).values + 1e-9).all()


def test_alpha_crown_improves_a_loose_bound():
    # a case where CROWN's 0/1 lower slopes are far from the best: optimised slopes gain something
    gains = []
    for seed in range(6):
        net = dense_net(seed, sizes=(4, 12, 12, 3))
        lo, hi, gen = _box(net, seed, 0.4)
        spec = torch.randn(1, 3, generator=gen, dtype=F64)
        r = alpha_crown_spec(net, lo, hi, spec, options=AlphaOptions(iterations=30))
        gains.append(float(r.lower[0] - r.base_lower[0]))
    assert max(gains) > 1e-3 and min(gains) >= 0.0


# ---------------------------------------------------------------------------------------------------
# Branch and bound
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("recompute", (True, False))
@pytest.mark.parametrize("seed", range(12))
def test_a_proof_by_branch_and_bound_has_a_positive_exact_optimum(seed, recompute):
    net = conv_net(seed) if seed % 2 else dense_net(seed, sizes=(3, 8, 8, 3))
    if seed % 3 == 0:
        net = substitute(net, seed)
    lo, hi, gen = _box(net, seed, 0.15)
    y = int(net.forward(((lo + hi) / 2).unsqueeze(0))[0].argmax())
    outcomes = []
    for t in range(net.num_classes):
        if t == y:
            continue
        spec = OutputSpec.misclassified_as(y, t, net.num_classes)
        r = bab_prove(net, lo.numpy(), hi.numpy(), spec, time_limit=20,
                      options=BabOptions(batch=4, recompute=recompute))
        exact = _exact_min(net, lo, hi, spec)
        if r.status is BabStatus.PROVEN:
            assert exact > -1e-9, f"branch and bound proved a spec whose exact minimum is {exact}"
        else:
            assert r.lower <= exact + 1e-7  # its lower bound is a lower bound
        assert r.root_lower <= exact + 1e-7
        outcomes.append((r.status, exact))
    assert outcomes


@pytest.mark.parametrize("recompute", (True, False))
def test_branch_and_bound_decides_small_networks_exactly_where_crown_alone_cannot(recompute):
    # with its MILP leaves it is complete: every spec proven or falsified, as the exact optimum's sign says;
    # also when the children keep their parent's intermediate bounds (only the split neuron's clipped)
    beyond_crown = 0
    for width in (0.2, 0.3):
        for seed in range(20):
            net = dense_net(seed, sizes=(3, 10, 10, 3))
            lo, hi, _ = _box(net, seed, width)
            y = int(net.forward(((lo + hi) / 2).unsqueeze(0))[0].argmax())
            for t in range(3):
                if t == y:
                    continue
                spec = OutputSpec.misclassified_as(y, t, 3)
                r = bab_prove(net, lo.numpy(), hi.numpy(), spec, time_limit=20,
                              options=BabOptions(recompute=recompute))
                exact = _exact_min(net, lo, hi, spec)
                if abs(exact) < 1e-6:
                    continue  # a tie: either answer is within the solver's tolerance
                if exact > 0:
                    assert r.status is BabStatus.PROVEN, (width, seed, t, exact, r)
                    crown = float(B.crown_box(net, lo, hi, spec=torch.from_numpy(spec.mat)).output[0][0])
                    beyond_crown += crown < 0
                else:
                    assert r.status is BabStatus.FALSIFIED, (width, seed, t, exact, r)
                    x = torch.from_numpy(r.x).reshape(1, *net.input_shape)
                    assert ((x >= lo) & (x <= hi)).all()
                    out = net.forward(x)[0]
                    assert float(out[y] - out[t]) < 0
    assert beyond_crown >= 3  # cases CROWN's bound alone leaves open


def test_branch_and_bound_gives_up_within_its_time_limit_and_rejects_an_empty_box():
    net = conv_net(1)
    lo, hi, _ = _box(net, 1, 0.5)
    spec = OutputSpec(np.eye(3)[0] - np.eye(3)[1], np.array([-50.0]), strict=False)  # f0 - f1 <= -50: unreachable?
    r = bab_prove(net, lo.numpy(), hi.numpy(), spec, time_limit=0.0)
    assert r.status in (BabStatus.PROVEN, BabStatus.OPEN) and r.domains >= 1
    with pytest.raises(ValueError, match="empty box"):
        bab_prove(net, hi.numpy(), lo.numpy() - 1.0, spec)
    with pytest.raises(ValueError):
        BabOptions(batch=0)


@pytest.mark.parametrize("recompute", (True, False))
@pytest.mark.parametrize("seed", range(6))
def test_verify_with_branch_and_bound_agrees_with_the_plain_milp(seed, recompute):
    net = conv_net(seed) if seed % 2 else dense_net(seed, sizes=(3, 8, 8, 3))
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(net.input_shape, generator=gen, dtype=F64)
    y = int(net.forward(x0.unsqueeze(0))[0].argmax())
    for eps in (0.02, 0.08, 0.2):
        plain = verify(net, x0, y, eps, time_limit=30, total_time_limit=60)
        bab = verify(net, x0, y, eps, time_limit=30, total_time_limit=60, bab=10.0, screen="interval",
                     bab_options=BabOptions(recompute=True, batch=8, iterations=4) if recompute else BabOptions())
        assert plain.status in (VerificationStatus.ROBUST, VerificationStatus.NOT_ROBUST)
        assert bab.status is plain.status, (eps, plain.status, bab.status)
        if bab.status is VerificationStatus.NOT_ROBUST:  # its point is re-checked in float64
            x = bab.counterexample.reshape(1, *net.input_shape)
            assert float((x - x0).abs().max()) <= eps + 1e-12
            assert int(net.forward(x)[0].argmax()) != y


def test_falsify_returns_only_checked_points():
    net = dense_net(4, sizes=(3, 8, 3))
    lo, hi, _ = _box(net, 4, 0.5)
    y = int(net.forward(((lo + hi) / 2).unsqueeze(0))[0].argmax())
    specs = [OutputSpec.misclassified_as(y, t, 3) for t in range(3) if t != y]
    found = falsify(net, lo.numpy().reshape(-1), hi.numpy().reshape(-1), specs, steps=50)
    if found is not None:
        k, x = found
        assert ((x >= lo.numpy().reshape(-1)) & (x <= hi.numpy().reshape(-1))).all()
        out = net.forward(torch.from_numpy(x).reshape(1, *net.input_shape))[0].numpy()
        assert (specs[k].mat @ out - specs[k].rhs).max() < 0
    # a spec nobody can reach: nothing found
    never = [OutputSpec(np.eye(3)[0], np.array([-1e6]), strict=False)]
    assert falsify(net, lo.numpy().reshape(-1), hi.numpy().reshape(-1), never, steps=20) is None


def test_max_pooling_networks_get_the_milp_alone():
    from test_maxpool import tiny_maxpool

    net = tiny_maxpool(0)
    lo = torch.zeros(net.input_shape, dtype=F64)
    hi = torch.full(net.input_shape, 0.3, dtype=F64)
    spec = OutputSpec.misclassified_as(0, 1, net.num_classes)
    with pytest.raises(ValueError, match="max pooling"):
        bab_prove(net, lo.numpy(), hi.numpy(), spec)
    with pytest.raises(ValueError, match="max pooling"):
        alpha_crown_spec(net, lo, hi, torch.from_numpy(spec.mat))
    x0 = torch.full(net.input_shape, 0.15, dtype=F64)
    y = int(net.forward(x0.unsqueeze(0))[0].argmax())
    for eps in (0.01, 0.1):
        plain = verify(net, x0, y, eps, time_limit=30)
        with_bab = verify(net, x0, y, eps, time_limit=30, bab=10.0)
        assert with_bab.status is plain.status and not with_bab.bab_runs


@pytest.mark.parametrize("seed", range(3))
def test_the_schedule_depends_on_the_size_of_the_milp(seed, monkeypatch):
    """Branch and bound that never decides (a stand-in that records its time limits), so every verdict comes
    from the MILP and equals the plain MILP's.  A MILP with more than ``milp_first_below`` binaries: a first
    turn of at most ``bab_first`` s per target, then a longer second turn, then the MILP.  A smaller one: a
    first turn of at most ``bab_first_small`` s, then the MILP probe, which decides these small models."""
    import lsub_helpers.verification as V
    from lsub_helpers.bab import BabResult

    calls = []

    def never(net, lower, upper, spec, *, options, time_limit):
        calls.append(time_limit)
        return BabResult(BabStatus.OPEN, -1.0, -1.0, 1, 1, 0.0)

    monkeypatch.setattr(V, "bab_prove", never)
    net = dense_net(seed, sizes=(3, 8, 8, 3))
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(net.input_shape, generator=gen, dtype=F64)
    y = int(net.forward(x0.unsqueeze(0))[0].argmax())
    for eps in (0.02, 0.2):
        plain = verify(net, x0, y, eps, time_limit=30, total_time_limit=60)
        calls.clear()
        large = verify(net, x0, y, eps, time_limit=30, total_time_limit=60, bab=10.0, bab_first=0.5,
                       milp_first_below=-1, screen="none")  # every MILP counts as large
        assert large.status is plain.status
        if large.status is VerificationStatus.ROBUST:  # (a counterexample may come from the attack on the box)
            n = len(large.milp_targets)
            assert all(t <= 0.5 for t in calls[:n]) and all(t > 0.5 for t in calls[n:]) and len(calls) == 2 * n
            assert len(large.runs) == n
        calls.clear()
        small = verify(net, x0, y, eps, time_limit=30, total_time_limit=60, bab=10.0, bab_first=0.5,
                       bab_first_small=0.25, milp_probe=5.0, milp_first_below=10_000, screen="none")
        assert small.status is plain.status
        if small.status is VerificationStatus.ROBUST:  # first turns of at most 0.25 s, then the probe decides
            assert len(calls) == len(small.milp_targets) and all(t <= 0.25 for t in calls)
            assert len(small.runs) == len(small.milp_targets)
