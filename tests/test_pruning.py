"""Local substitutes: the three replacements and Algorithm 1 (Section 3)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lsub_helpers.attacks import AttackStatus, min_distance_attack
from lsub_helpers.network import ReluNetwork
from lsub_helpers.pruning import PruneMethod, PruningError, num_steps, prune, replacement


def toy_net(seed: int = 0, hidden: int = 16, inputs: int = 2, classes: int = 3) -> ReluNetwork:
    torch.manual_seed(seed)
    seq = nn.Sequential(
        nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes)
    )
    return ReluNetwork.from_torch(seq.double(), (inputs,))


def anchor(net: ReluNetwork, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x0 = 0.25 + 0.5 * torch.rand(net.input_shape, generator=gen, dtype=torch.float64)
    return x0, int(net.predict(x0[None])[0])


@pytest.fixture(scope="module")
def setting():
    # the first seeded random network whose decision boundary passes near the anchor
    for seed in range(50):
        net = toy_net(seed)
        x0, y = anchor(net)
        adv = min_distance_attack(net, x0, y, seed=0)
        if adv.success and adv.distance < 0.2:
            return net, x0, y, adv
    raise AssertionError("no seeded network with a boundary near the anchor")


def test_replacement_hand_values():
    z0 = torch.tensor([0.6, -0.3, 0.6, 0.2])
    za = torch.tensor([-0.5, 0.4, 0.6, 0.7])
    a, c = replacement("constant", z0, za)
    assert a.tolist() == [0, 0, 0, 0] and torch.allclose(c, torch.tensor([0.6, 0.0, 0.6, 0.2], dtype=torch.float64))
    a, c = replacement("activation", z0, za)
    assert a.tolist() == [1, 0, 1, 1] and c.tolist() == [0, 0, 0, 0]
    a, c = replacement("linear", z0, za)
    # (0.6, 0.6) -> (-0.5, 0): slope 0.6 / 1.1; (-0.3, 0) -> (0.4, 0.4): slope 0.4 / 0.7
    # equal pre-activations: constant; both active: identity
    expected_a = torch.tensor([0.6 / 1.1, 0.4 / 0.7, 0.0, 1.0], dtype=torch.float64)
    expected_c = torch.tensor([0.6 - 0.6 * 0.6 / 1.1, 0.3 * 0.4 / 0.7, 0.6, 0.0], dtype=torch.float64)
    torch.testing.assert_close(a, expected_a)
    torch.testing.assert_close(c, expected_c)
    z = torch.stack([z0, za]).to(torch.float64)
    torch.testing.assert_close(a * z + c, torch.relu(z))  # exact at both points


def test_num_steps_reads_the_stopping_rule_as_intended():
    assert num_steps(0.99, 0.25) == math.ceil(math.log(0.01) / math.log(0.75))
    assert (1 - 0.25) ** num_steps(0.9, 0.25) <= 0.1 < (1 - 0.25) ** (num_steps(0.9, 0.25) - 1)


@pytest.mark.parametrize("method", list(PruneMethod))
@pytest.mark.parametrize("gamma", [0.5, 0.9])
def test_prune_preserves_anchor_and_counts(setting, method, gamma):
    net, x0, y, adv = setting
    sub = prune(net, x0, y, method=method, gamma=gamma, gamma0=0.2, attack=adv)
    g = sub.network
    assert sub.num_pruned == math.ceil(gamma * net.num_hidden)
    assert g.num_relus == net.num_hidden - sub.num_pruned
    assert [bool((a.replaced == m).all()) for a, m in zip(g.activations, sub.pruned)] == [True, True]
    torch.testing.assert_close(g.forward(x0[None]), net.forward(x0[None]), atol=1e-10, rtol=0)
    if method is PruneMethod.LINEAR:
        torch.testing.assert_close(g.forward(sub.x_adv[None]), net.forward(sub.x_adv[None]), atol=1e-10, rtol=0)
        assert int(g.predict(sub.x_adv[None])[0]) != y
    assert sub.d_adv == pytest.approx(adv.distance)
    assert sub.steps >= 1 and sum(sum(s) for s in sub.replaced_per_step) == sub.num_pruned
    # the MILP of g on the ball of radius d_adv has at most N - ceil(gamma N) binaries, even with IBP bounds
    from lsub_helpers import milp

    lo, hi = milp.input_box(x0.numpy().ravel(), sub.d_adv)
    model = milp.build_model(g, lo, hi, milp.compute_bounds(g, lo, hi, "ibp"), label=y, target=(y + 1) % net.num_classes)
    assert model.num_binaries <= net.num_hidden - math.ceil(gamma * net.num_hidden)


def test_prune_selects_smallest_gaps_first(setting):
    from lsub_helpers.bounds import fastlin_ibp

    net, x0, y, adv = setting
    sub = prune(net, x0, y, method="activation", gamma=0.3, gamma0=0.29, attack=adv)
    # the first step takes exactly the neurons with the smallest gaps on B(x0, d_adv)
    b = fastlin_ibp(net, x0, adv.distance)
    gaps = torch.cat([u - l for l, u in b.pre_activation])
    first = sub.replaced_per_step[0]
    k = sum(first)
    smallest = torch.argsort(gaps, stable=True)[:k]
    mask = torch.zeros_like(gaps, dtype=torch.bool)
    mask[smallest] = True
    per_layer = tuple(int(m.sum()) for m in torch.split(mask, list(net.layer_sizes)))
    assert per_layer == first
    assert sub.steps == 1  # target ceil(0.3 * 32) = 10 = ceil(0.29 * 32): one step


def test_activation_substitute_equals_f_on_a_ball(setting):
    from lsub_helpers.lemma import delta_lower_bound

    net, x0, y, adv = setting
    sub = prune(net, x0, y, method="activation", gamma=0.5, gamma0=0.2, attack=adv)
    delta = delta_lower_bound(net, sub.network, x0, r_max=adv.distance)
    assert delta > 0
    pts = (x0 + (torch.rand(5000, 2, dtype=torch.float64) * 2 - 1) * delta).clamp(0, 1)
    torch.testing.assert_close(sub.network.forward(pts), net.forward(pts), atol=1e-10, rtol=0)


def test_boundary_collapse_of_constant_and_not_of_the_others(setting):
    net, x0, y, adv = setting
    g = torch.linspace(-1, 1, 201, dtype=torch.float64) * 2 * adv.distance
    grid = (torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2) + x0).clamp(0, 1)
    found = {}
    for method in PruneMethod:
        sub = prune(net, x0, y, method=method, gamma=0.99, gamma0=0.2, attack=adv)
        assert sub.network.num_relus == 0  # 0.99 of 32 neurons: all of them
        found[method] = bool((sub.network.predict(grid) != y).any())
    assert found == {PruneMethod.CONSTANT: False, PruneMethod.LINEAR: True, PruneMethod.ACTIVATION: True}


def test_bad_input_is_refused(setting):
    net, x0, y, adv = setting
    for gamma, gamma0, msg in [(1.0, 0.1, "gamma must"), (0.0, 0.1, "gamma must"), (0.5, 0.5, "smaller than")]:
        with pytest.raises(ValueError, match=msg):
            prune(net, x0, y, method="linear", gamma=gamma, gamma0=gamma0, attack=adv)
    with pytest.raises(ValueError):
        prune(net, x0, y, method="nonsense", gamma=0.5, attack=adv)
    wrong = (y + 1) % net.num_classes
    with pytest.raises(PruningError, match="misclassified"):
        prune(net, x0, wrong, method="linear", gamma=0.5, attack=adv)


def test_attack_that_finds_nothing_is_an_error():
    net = toy_net(seed=3)
    # make class 0 win everywhere: no adversarial example exists in the domain
    last = net.stages[-1].ops[0]
    last.weight.zero_()
    last.bias.copy_(torch.tensor([5.0, 0.0, 0.0], dtype=torch.float64))
    x0 = torch.full((2,), 0.5, dtype=torch.float64)
    res = min_distance_attack(net, x0, 0, seed=0)
    assert res.status is AttackStatus.FAILED
    with pytest.raises(PruningError, match="no adversarial"):
        prune(net, x0, 0, method="linear", gamma=0.5)
