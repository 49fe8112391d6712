"""Lemma 1: delta, Lipschitz constants and the certificate."""

from __future__ import annotations

import pytest
import torch

from lsub_helpers.lemma import (
    LemmaCase,
    certificate,
    delta_lower_bound,
    lipschitz_margin,
    pattern_preserved,
    sampled_lipschitz,
)
from lsub_helpers.pruning import prune

from test_pruning import setting, toy_net  # noqa: F401  (fixture reuse)


def ball_points(x0, r, n=4000, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (x0 + (torch.rand((n,) + tuple(x0.shape), generator=gen, dtype=torch.float64) * 2 - 1) * r).clamp(0, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lipschitz_bound_is_sound(seed):
    net = toy_net(seed, hidden=12, inputs=3)
    x0 = torch.full((3,), 0.5, dtype=torch.float64)
    eps = 0.1
    big = lipschitz_margin(net, x0, eps, 0, 1)
    small = sampled_lipschitz(net, x0, eps, 0, 1, samples=512)
    assert small <= big + 1e-9
    a, b = ball_points(x0, eps, 2000, 1), ball_points(x0, eps, 2000, 2)
    ma, mb = net.margin(a, 0, 1), net.margin(b, 0, 1)
    ratio = (ma - mb).abs() / (a - b).abs().max(1).values
    assert float(ratio.max()) <= big + 1e-9


def test_lipschitz_of_an_affine_network_is_exact():
    # no ReLU: the margin is affine and the bound equals ||c W||_1
    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Linear(4, 3)).double()
    from lsub_helpers.network import ReluNetwork

    net = ReluNetwork.from_torch(seq, (4,))
    w = seq[0].weight.detach()
    expected = float((w[0] - w[2]).abs().sum())
    x0 = torch.full((4,), 0.5, dtype=torch.float64)
    assert lipschitz_margin(net, x0, 0.1, 0, 2) == pytest.approx(expected)
    assert sampled_lipschitz(net, x0, 0.1, 0, 2) == pytest.approx(expected)


def test_certificate_cases_by_hand():
    c = certificate(eps=0.1, delta=0.2, v_g=0.0)
    assert c.case is LemmaCase.INSIDE and c.holds
    c = certificate(eps=0.1, delta=0.2, v_g=-1e-6)
    assert c.case is LemmaCase.INSIDE and not c.holds
    # 2 * (3 + 2) * (0.1 - 0.08) = 0.2
    c = certificate(eps=0.1, delta=0.08, v_g=0.2 + 1e-9, lipschitz_f=3.0, lipschitz_g=2.0)
    assert c.case is LemmaCase.OUTSIDE and c.holds and c.required == pytest.approx(0.2)
    c = certificate(eps=0.1, delta=0.08, v_g=0.19, lipschitz_f=3.0, lipschitz_g=2.0)
    assert not c.holds
    with pytest.raises(ValueError):
        certificate(eps=0.0, delta=0.1, v_g=1.0)
    with pytest.raises(ValueError):
        certificate(eps=0.1, delta=-0.1, v_g=1.0)


def test_lemma_holds_numerically_on_a_toy_network(setting):  # noqa: F811
    """Both cases against brute-force minima of the margins over dense samples of the ball."""
    net, x0, y, adv = setting
    sub = prune(net, x0, y, method="activation", gamma=0.6, gamma0=0.2, attack=adv)
    g = sub.network
    delta = delta_lower_bound(net, g, x0, r_max=adv.distance)
    assert pattern_preserved(net, g, x0, delta) and delta > 0
    for eps in (0.5 * delta, 0.9 * adv.distance, 0.5 * adv.distance):
        pts = torch.cat([ball_points(x0, eps, 5000), x0[None]])
        for t in range(net.num_classes):
            if t == y:
                continue
            v_f = float(net.margin(pts, y, t).min())
            v_g = float(g.margin(pts, y, t).min())  # sampled: an upper bound on V_g, fine for a check
            lf = lipschitz_margin(net, x0, eps, y, t)
            lg = lipschitz_margin(g, x0, eps, y, t)
            cert = certificate(eps=eps, delta=delta, v_g=v_g, lipschitz_f=lf, lipschitz_g=lg, factor=1.0)
            # the proof's inequality: V_f >= V_g - (L_f + L_g)(eps - delta)^+ on every sampled point
            assert v_f >= v_g - (lf + lg) * max(eps - delta, 0.0) - 1e-9
            if cert.case is LemmaCase.INSIDE:
                assert v_f == pytest.approx(v_g, abs=1e-9)  # f = g on the ball


def test_exact_delta_brackets_and_matches_a_grid(setting):  # noqa: F811
    from lsub_helpers.lemma import delta_exact

    net, x0, y, adv = setting
    sub = prune(net, x0, y, method="activation", gamma=0.6, gamma0=0.2, attack=adv)
    cheap = delta_lower_bound(net, sub.network, x0, r_max=adv.distance)
    exact = delta_exact(net, sub.network, x0, r_max=adv.distance, time_limit=30)
    assert exact.exact and cheap <= exact.lower + 1e-9 and exact.lower <= exact.upper + 1e-9
    assert exact.upper - exact.lower <= 1e-4 * max(exact.upper, 1.0)
    # brute force on a grid: the nearest grid point where a replaced neuron changes state
    g = torch.linspace(-1, 1, 801, dtype=torch.float64) * adv.distance
    pts = (torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2) + x0)
    pts = pts[((pts >= 0) & (pts <= 1)).all(1)]
    pre, _ = net.forward_all(pts)
    pre0, _ = net.forward_all(x0[None])
    flipped = torch.zeros(len(pts), dtype=torch.bool)
    for z, z0, act in zip(pre, pre0, sub.network.activations):
        active = z0[0] > 0
        flip = (active & (z < 0)) | (~active & (z > 0))
        flipped |= (flip & act.replaced).any(1)
    d_grid = float((pts[flipped] - x0).abs().max(1).values.min()) if flipped.any() else adv.distance
    step = 2 * adv.distance / 800
    assert exact.upper <= d_grid + 1e-9 and d_grid <= exact.upper + 2 * step
