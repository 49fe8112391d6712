"""estimate_distance: the substitute's estimate and a certified interval that contains d_bnd(f)."""

from __future__ import annotations

import functools

import pytest

from lsub_helpers.attacks import min_distance_attack
from lsub_helpers.distance import DistanceStatus, boundary_distance
from lsub_helpers.estimate import EstimateStatus, certified_radius, estimate_distance, verified_upper_bound
from lsub_helpers.pruning import PruneMethod

from test_pruning import anchor, toy_net


# seeded networks (2-D and 5-D inputs) whose boundary passes within 0.3 of the anchor (found by a search
# over seeds with min_distance_attack)
SEEDS = [(2, 5), (2, 36), (5, 5), (5, 11)]


@functools.lru_cache(maxsize=None)
def cases():
    out = []
    for inputs, seed in SEEDS:
        net = toy_net(seed, hidden=10, inputs=inputs)
        x0, y = anchor(net, seed)
        out.append((net, x0, y, min_distance_attack(net, x0, y, seed=0)))
    return out


@pytest.mark.parametrize("case", range(4))
def test_interval_contains_the_exact_distance(case):
    net, x0, y, adv = cases()[case]
    assert adv.success
    exact = boundary_distance(net, x0, y, method="direct", time_limit=60, attack=adv)
    assert exact.status is DistanceStatus.EXACT
    d = exact.value
    for method in PruneMethod:
        for gamma in (0.9,):
            est = estimate_distance(net, x0, y, method=method, gamma=gamma, gamma0=0.2, time_limit=60, attack=adv)
            assert est.status is EstimateStatus.OK
            tol = 1e-5 * max(1.0, d)
            assert est.lower - tol <= d <= est.upper + tol, (method, gamma, est.lower, d, est.upper)
            assert est.upper <= est.d_adv + 1e-12
            if method is PruneMethod.ACTIVATION:
                assert est.delta is not None and est.delta >= 0


def test_certified_radius_is_below_the_exact_distance():
    net, x0, y, adv = cases()[0]
    exact = boundary_distance(net, x0, y, method="direct", time_limit=60, attack=adv)
    r = certified_radius(net, x0, y, hi=exact.upper)
    assert 0 < r <= exact.value + 1e-9


def test_misclassified_anchor_is_reported():
    net, x0, y, _ = cases()[0]
    est = estimate_distance(net, x0, (y + 1) % net.num_classes, method="linear", gamma=0.5)
    assert est.status is EstimateStatus.MISCLASSIFIED


def test_prune_options_serve_prune_and_estimate_alike():
    """``PruneOptions`` is the one description of a substitute: ``prune`` and ``estimate_distance`` take it
    whole or as the old keyword arguments, with the same result."""
    import torch

    from lsub_helpers.pruning import PruneOptions, prune

    net, x0, y, adv = cases()[1]
    opts = PruneOptions(method="linear", gamma=0.9, gamma0=0.2)
    a = prune(net, x0, y, method="linear", gamma=0.9, gamma0=0.2, attack=adv)
    b = prune(net, x0, y, options=opts, attack=adv)
    assert all(torch.equal(p, q) for p, q in zip(a.pruned, b.pruned)) and a.steps == b.steps
    assert b.method is PruneMethod.LINEAR and b.gamma == 0.9
    e1 = estimate_distance(net, x0, y, method="linear", gamma=0.9, gamma0=0.2, attack=adv)
    e2 = estimate_distance(net, x0, y, options=opts, attack=adv)
    assert (e1.status, e1.estimate, e1.lower, e1.upper) == (e2.status, e2.estimate, e2.lower, e2.upper)
    assert e2.substitute.pruned_per_layer == b.pruned_per_layer
    with pytest.raises(ValueError, match="gamma0"):
        prune(net, x0, y, options=opts, gamma0=0.95, attack=adv)  # the keyword replaces the field, then checked


def test_verified_upper_bound_counts_only_points_the_network_misclassifies():
    import torch
    from torch import nn

    from lsub_helpers.network import ReluNetwork

    # by hand: logits (relu(x1 - x2), relu(x2 - x1)), class 0 where x1 > x2
    seq = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)).double()
    with torch.no_grad():
        seq[0].weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        seq[2].weight.copy_(torch.eye(2))
        seq[0].bias.zero_()
        seq[2].bias.zero_()
    net = ReluNetwork.from_torch(seq, (2,))
    x0 = torch.tensor([0.6, 0.2], dtype=torch.float64)
    assert int(net.predict(x0[None])[0]) == 0
    assert verified_upper_bound(net, x0, 0, None) is None
    assert verified_upper_bound(net, x0, 0, torch.tensor([0.5, 0.3])) is None  # still class 0
    assert verified_upper_bound(net, x0, 0, torch.tensor([0.2, 0.6])) == pytest.approx(0.4)  # class 1
    assert verified_upper_bound(net, x0, 1, torch.tensor([0.2, 0.6])) is None  # not adversarial for label 1
