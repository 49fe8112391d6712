"""Attack A: closed-form distances of linear classifiers, soundness of every returned point, success
recomputed (never trusted), misclassified anchors, clear errors, determinism, the domain parameter."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lsub_helpers.attacks import AttackResult, AttackStatus, Loss, bisection_pgd_attack, min_distance_attack, pgd
from lsub_helpers.network import ReluNetwork



# ---------------------------------------------------------------------------------------------------
# fixtures and closed forms
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread (and a shared machine stays usable); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



def linear_net(weight: torch.Tensor, bias: torch.Tensor, input_shape=None) -> ReluNetwork:
    lin = nn.Linear(weight.shape[1], weight.shape[0]).double()
    lin.weight.data.copy_(weight)
    lin.bias.data.copy_(bias)
    if input_shape is None:
        return ReluNetwork.from_torch(nn.Sequential(lin), (weight.shape[1],))
    return ReluNetwork.from_torch(nn.Sequential(nn.Flatten(), lin), input_shape)


def two_class(n: int = 20, seed: int = 0, offset: float = 1.0):
    """A 2-class linear classifier and an anchor classified as 0 with margin `offset`."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g, dtype=torch.float64)
    x0 = 0.5 + 0.1 * torch.rand(n, generator=g, dtype=torch.float64)
    b = offset - w @ x0  # margin f0 - f1 = w.x + b
    return two_class_net(w, b), w, b, x0


def two_class_net(w: torch.Tensor, b) -> ReluNetwork:
    """logits (w.x + b, 0)."""
    zero = torch.zeros_like(w)
    return linear_net(torch.stack([w, zero]), torch.stack([torch.as_tensor(b, dtype=torch.float64), zero[0]]))


def linear_distance(w, b, x0, lo=-math.inf, hi=math.inf) -> float:
    """Exact L-inf distance to {w.x + b <= 0} within the box [lo, hi] (bisection; closed form without box)."""
    if math.isinf(lo) and math.isinf(hi):
        return float((w @ x0 + b) / w.abs().sum())

    def worst(eps):  # min of w.x + b over ball(x0, eps) ∩ [lo, hi]: a corner
        x = torch.where(w > 0, torch.clamp(x0 - eps, min=lo), torch.clamp(x0 + eps, max=hi))
        return float(w @ x + b)

    a, c = 0.0, float(max((x0 - lo).max(), (hi - x0).max()))
    assert worst(c) < 0, "no adversarial example in the domain"
    for _ in range(200):
        m = (a + c) / 2
        a, c = (m, c) if worst(m) > 0 else (a, m)
    return c


def relu_mlp(seed: int = 0, n_in: int = 6, hidden: int = 12, classes: int = 3) -> ReluNetwork:
    torch.manual_seed(seed)
    seq = nn.Sequential(
        nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes)
    )
    with torch.no_grad():  # centre the first layer on the unit box and steepen it: several classes occur
        seq[0].weight.mul_(8.0)
        seq[0].bias.copy_(-seq[0].weight.sum(1) / 2)
    return ReluNetwork.from_torch(seq, (n_in,))


def correctly_classified(net: ReluNetwork, seed: int = 0, domain=(0.0, 1.0)):
    """An anchor in the domain close to a decision boundary (the smallest margin of 256 random points),
    with its predicted label."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = domain
    xs = lo + (hi - lo) * torch.rand((256,) + net.input_shape, generator=g, dtype=torch.float64)
    logits = net.forward(xs)
    top = logits.topk(2, dim=1).values
    j = int((top[:, 0] - top[:, 1]).argmin())
    return xs[j], int(logits[j].argmax())


def assert_sound(net: ReluNetwork, res: AttackResult, x0: torch.Tensor, eps: float | None, domain=(0.0, 1.0)):
    """Every claim of a successful result holds in float64."""
    assert res.status is AttackStatus.SUCCESS and res.success
    x = res.x_adv
    assert x.shape == x0.shape and x.dtype == torch.float64
    lo, hi = domain
    assert bool((x >= lo).all()) and bool((x <= hi).all())
    dist = float((x - x0.double()).abs().max())
    assert res.distance == dist
    if eps is not None:
        assert dist <= eps
    logits = net.forward(x[None])[0]
    assert int(logits.argmax()) != res.label and int(logits.argmax()) == res.adv_label
    others = torch.cat([logits[: res.label], logits[res.label + 1 :]])
    assert float(others.max()) > float(logits[res.label])
    assert res.margin is not None and res.margin < 0


# ---------------------------------------------------------------------------------------------------
# min_distance_attack: closed forms
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_distance_linear_two_class_matches_closed_form(seed):
    net, w, b, x0 = two_class(seed=seed, offset=0.5 + seed)
    exact = linear_distance(w, b, x0)
    domain = (-10.0, 10.0)  # inactive: the ball of radius `exact` stays inside
    assert exact < 1.0
    res = min_distance_attack(net, x0, 0, domain=domain, seed=seed, patience=20)
    assert_sound(net, res, x0, None, domain)
    assert exact * (1 - 1e-9) <= res.distance <= 1.01 * exact
    assert res.adv_label == 1 and res.eps >= res.distance


def test_min_distance_linear_multiclass_takes_the_closest_class():
    g = torch.Generator().manual_seed(5)
    n, k = 15, 4
    W = torch.randn(k, n, generator=g, dtype=torch.float64)
    x0 = torch.rand(n, generator=g, dtype=torch.float64)
    logits = W @ x0
    label = int(logits.argmax())
    bias = torch.zeros(k, dtype=torch.float64)
    bias[label] = 1.0  # a comfortable margin
    net = linear_net(W, bias)
    exact = min(
        linear_distance(W[label] - W[t], bias[label] - bias[t], x0) for t in range(k) if t != label
    )
    res = min_distance_attack(net, x0, label, domain=(-50.0, 50.0))
    assert_sound(net, res, x0, None, (-50.0, 50.0))
    assert exact * (1 - 1e-9) <= res.distance <= 1.01 * exact


def test_min_distance_with_active_domain_matches_the_boxed_closed_form():
    net, w, b, x0 = two_class(seed=3, offset=2.0)
    x0 = x0.clone()
    x0[w < 0] = 0.98  # pushing these up is blocked by the domain bound 1
    b = 2.0 - w @ x0
    net = two_class_net(w, b)
    free, boxed = linear_distance(w, b, x0), linear_distance(w, b, x0, 0.0, 1.0)
    assert boxed > 1.05 * free  # the domain is active
    res = min_distance_attack(net, x0, 0, patience=20)
    assert_sound(net, res, x0, None)
    assert boxed * (1 - 1e-9) <= res.distance <= 1.01 * boxed


def test_domain_parameter_is_respected_not_clamped_to_unit_box():
    net, w, b, x0 = two_class(seed=4, offset=3.0)
    x0 = x0 + 1.0  # in [1.5, 1.6]: outside [0, 1]
    b = 3.0 - w @ x0
    net = two_class_net(w, b)
    domain = (-1.0, 2.0)
    exact = linear_distance(w, b, x0, *domain)
    res = min_distance_attack(net, x0, 0, domain=domain, patience=20)
    assert_sound(net, res, x0, None, domain)
    assert exact * (1 - 1e-9) <= res.distance <= 1.01 * exact
    assert float(res.x_adv.max()) > 1.0  # a hard-coded clamp(0, 1) would have failed
    eps = 1.02 * exact
    r = pgd(net, x0, 0, eps, domain=domain, restarts=3)
    assert_sound(net, r, x0, eps, domain)
    with pytest.raises(ValueError, match="outside the domain"):
        pgd(net, x0, 0, eps)  # x0 is not in the default domain [0, 1]


def test_tensor_domain_per_coordinate():
    net, w, b, x0 = two_class(seed=6, offset=1.0)
    lo = torch.full_like(x0, -5.0)
    hi = torch.full_like(x0, 5.0)
    hi[w < 0] = x0[w < 0]  # these coordinates cannot increase at all
    exact = float((w @ x0 + b) / w[w > 0].sum())
    res = min_distance_attack(net, x0, 0, domain=(lo, hi), patience=20)
    assert res.success
    assert bool((res.x_adv <= hi).all()) and bool((res.x_adv >= lo).all())
    assert exact * (1 - 1e-9) <= res.distance <= 1.01 * exact


# ---------------------------------------------------------------------------------------------------
# pgd
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["margin", "ce", Loss.MARGIN])
def test_pgd_linear_succeeds_above_and_fails_below_the_distance(loss):
    net, w, b, x0 = two_class(seed=1)
    exact = linear_distance(w, b, x0)
    above = pgd(net, x0, 0, 1.01 * exact, domain=(-10.0, 10.0), loss=loss)
    assert_sound(net, above, x0, 1.01 * exact, (-10.0, 10.0))
    assert above.eps == 1.01 * exact and above.method == "pgd"
    below = pgd(net, x0, 0, 0.99 * exact, domain=(-10.0, 10.0), loss=loss, restarts=4)
    assert below.status is AttackStatus.FAILED and not below.success
    assert below.x_adv is None and below.distance is None and below.adv_label is None
    assert below.margin > 0 and below.num_gradient > 0


@pytest.mark.parametrize("seed", range(1, 5))
def test_pgd_on_relu_network_points_are_sound(seed):
    net = relu_mlp(seed)
    x0, label = correctly_classified(net, seed)
    for eps in (0.05, 0.2, 0.5):
        res = pgd(net, x0, label, eps, restarts=3, steps=50, seed=seed)
        if res.success:
            assert_sound(net, res, x0, eps)
        else:
            assert res.status is AttackStatus.FAILED


def test_pgd_constant_step_size_and_float32_anchor():
    net = relu_mlp(1)
    x0, label = correctly_classified(net, 1)
    res = min_distance_attack(net, x0, label)
    assert res.success
    eps = res.distance * 1.2
    r = pgd(net, x0.float(), label, eps, step_size=eps / 10, restarts=5, steps=100)
    assert_sound(net, r, x0.float(), eps)


def test_min_distance_on_relu_network_and_substitute_is_sound_and_not_above_pgd():
    net = relu_mlp(2, n_in=8, hidden=16, classes=4)
    x0, label = correctly_classified(net, 2)
    res = min_distance_attack(net, x0, label)
    assert_sound(net, res, x0, res.eps)
    # pgd at 5% above d_adv succeeds; the minimisation is at least as good as a fixed-eps run found it
    r = pgd(net, x0, label, 1.05 * res.distance, restarts=5)
    assert r.success and r.distance >= res.distance * 0.9
    # a local substitute (first 5 neurons of layer 0 replaced by affine maps): the attack does not care
    sizes = net.layer_sizes
    mask = [torch.arange(s) < 5 if k == 0 else torch.zeros(s, dtype=torch.bool) for k, s in enumerate(sizes)]
    sub = net.with_substitutes(mask, [torch.full((s,), 0.5) for s in sizes], [torch.full((s,), 0.1) for s in sizes])
    x1, label1 = correctly_classified(sub, 3)
    rs = min_distance_attack(sub, x1, label1)
    assert_sound(sub, rs, x1, rs.eps)


def test_image_shaped_inputs():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(1, 3, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    net = ReluNetwork.from_torch(seq, (1, 8, 8))
    x0, label = correctly_classified(net, 0)
    res = min_distance_attack(net, x0, label, steps=50)
    assert_sound(net, res, x0, res.eps)
    r = pgd(net, x0, label, res.distance * 1.1, restarts=4)
    assert r.success or r.status is AttackStatus.FAILED


# ---------------------------------------------------------------------------------------------------
# success is recomputed, never trusted
# ---------------------------------------------------------------------------------------------------


class LyingNetwork(ReluNetwork):
    """Its float32 logits claim that every input is class 1; float64 logits are honest."""

    def forward(self, x):
        out = super().forward(x)
        if out.dtype == torch.float32:
            out = out.clone()
            out[:, 1] = out[:, 0] + 1.0
        return out

    __call__ = forward


def test_float32_claims_are_rechecked_in_float64():
    honest, w, b, x0 = two_class(seed=0, offset=1.0)
    liar = LyingNetwork(honest.stages, honest.activations)
    exact = linear_distance(w, b, x0)
    # below the true distance, the float32 loop "succeeds" at once; the float64 check refuses it
    r = pgd(liar, x0, 0, 0.5 * exact, domain=(-10.0, 10.0))
    assert r.status is AttackStatus.FAILED and r.x_adv is None
    # above it, any returned success is honest in float64
    r = pgd(liar, x0, 0, 1.5 * exact, domain=(-10.0, 10.0))
    if r.success:
        assert_sound(honest, r, x0, 1.5 * exact, (-10.0, 10.0))
    m = min_distance_attack(liar, x0, 0, domain=(-10.0, 10.0), eps_max=2 * exact, steps=20, max_rounds=3)
    if m.success:
        assert_sound(honest, m, x0, None, (-10.0, 10.0))
        assert m.distance >= exact * (1 - 1e-9)


def test_boundary_point_is_not_a_success():
    # An anchor exactly on the boundary (tie) counts as misclassified; a point with margin exactly 0 is
    # never reported as adversarial.
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    net = linear_net(w, torch.zeros(2, dtype=torch.float64))
    tie = pgd(net, torch.tensor([0.5, 0.5], dtype=torch.float64), 0, 0.1)
    assert tie.status is AttackStatus.MISCLASSIFIED
    # from (0.625, 0.5) the closest tie is at distance 0.0625; at that eps only ties are reachable
    x0 = torch.tensor([0.625, 0.5], dtype=torch.float64)  # exact binary fractions
    r = pgd(net, x0, 0, 0.0625, steps=20)
    assert not r.success
    assert pgd(net, x0, 0, 0.07, steps=20).success


# ---------------------------------------------------------------------------------------------------
# misclassified anchors, errors, determinism
# ---------------------------------------------------------------------------------------------------


def test_misclassified_anchor_is_reported_not_attacked():
    net, w, b, x0 = two_class(seed=2, offset=-0.3)  # f0 - f1 = -0.3: predicted 1
    for res in (pgd(net, x0, 0, 0.1), min_distance_attack(net, x0, 0)):
        assert res.status is AttackStatus.MISCLASSIFIED and not res.success
        assert res.x_adv is None and res.distance is None
        assert res.adv_label == 1 and res.label == 0
        assert res.num_gradient == 0
        assert res.margin == pytest.approx(-0.3)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda net, x0: pgd(net, x0, 0, 0.0), "eps"),
        (lambda net, x0: pgd(net, x0, 0, -0.1), "eps"),
        (lambda net, x0: pgd(net, x0, 0, float("nan")), "eps"),
        (lambda net, x0: pgd(net, x0, 0, float("inf")), "eps"),
        (lambda net, x0: pgd(net, x0, 0, "big"), "eps"),
        (lambda net, x0: pgd(net, torch.full_like(x0, float("nan")), 0, 0.1), "NaN"),
        (lambda net, x0: pgd(net, x0[None], 0, 0.1), "batch dimension"),
        (lambda net, x0: pgd(net, x0[:-1], 0, 0.1), "shape"),
        (lambda net, x0: pgd(net, x0, 2, 0.1), "out of range"),
        (lambda net, x0: pgd(net, x0, -1, 0.1), "out of range"),
        (lambda net, x0: pgd(net, x0, 0.5, 0.1), "label"),
        (lambda net, x0: pgd(net, x0, 0, 0.1, loss="hinge"), "loss"),
        (lambda net, x0: pgd(net, x0, 0, 0.1, domain=(1.0, 0.0)), "domain"),
        (lambda net, x0: pgd(net, x0, 0, 0.1, domain=(0.0,)), "domain"),
        (lambda net, x0: pgd(net, x0 + 5.0, 0, 0.1), "outside the domain"),
        (lambda net, x0: pgd(net, x0, 0, 0.1, restarts=0), "restarts"),
        (lambda net, x0: min_distance_attack(net, torch.full_like(x0, float("nan")), 0), "NaN"),
        (lambda net, x0: min_distance_attack(net, x0[None], 0), "batch dimension"),
        (lambda net, x0: min_distance_attack(net, x0, 5), "out of range"),
        (lambda net, x0: min_distance_attack(net, x0, 0, tol=0.0), "tol"),
        (lambda net, x0: min_distance_attack(net, x0, 0, eps_max=-1.0), "eps_max"),
        (lambda net, x0: min_distance_attack(net, x0, 0, domain=(-math.inf, math.inf)), "eps_max"),
    ],
)
def test_clear_errors(call, match):
    net, w, b, x0 = two_class(seed=0)
    with pytest.raises(ValueError, match=match):
        call(net, x0)


def test_same_seed_same_result_and_seed_matters_only_through_randomness():
    net = relu_mlp(3, n_in=10, hidden=16)
    x0, label = correctly_classified(net, 4)
    a = min_distance_attack(net, x0, label, seed=7)
    b = min_distance_attack(net, x0, label, seed=7)
    assert a.success and torch.equal(a.x_adv, b.x_adv) and a.distance == b.distance
    assert a.num_gradient == b.num_gradient
    p = pgd(net, x0, label, a.distance * 1.5, seed=3, restarts=3)
    q = pgd(net, x0, label, a.distance * 1.5, seed=3, restarts=3)
    assert p.success == q.success and (not p.success or torch.equal(p.x_adv, q.x_adv))


def test_result_is_frozen():
    net, w, b, x0 = two_class(seed=0)
    res = pgd(net, x0, 0, 0.01)
    with pytest.raises(Exception):
        res.distance = 0.0  # type: ignore[misc]
    assert res.time_s >= 0 and res.num_forward >= 1


def test_eps_max_caps_the_search():
    net, w, b, x0 = two_class(seed=0, offset=1.0)
    exact = linear_distance(w, b, x0)
    res = min_distance_attack(net, x0, 0, domain=(-10.0, 10.0), eps_max=0.5 * exact)
    assert res.status is AttackStatus.FAILED and res.x_adv is None and res.eps == 0.5 * exact


@pytest.mark.parametrize("seed", [0, 1])
def test_bisection_pgd_linear_brackets_the_closed_form(seed):
    """The paper's plain attack: on a linear classifier PGD at eps succeeds iff eps >= the distance, so the
    bisection ends within tol above it; its point is sound and the result is reproducible."""
    net, w, b, x0 = two_class(seed=seed, offset=0.5 + seed)
    exact = linear_distance(w, b, x0)
    domain = (-10.0, 10.0)
    res = bisection_pgd_attack(net, x0, 0, domain=domain, eps_max=2.0, tol=1e-4, seed=seed)
    assert_sound(net, res, x0, None, domain)
    assert res.method == "pgd_bisection" and res.adv_label == 1
    assert exact * (1 - 1e-9) <= res.distance <= exact + 2e-4
    again = bisection_pgd_attack(net, x0, 0, domain=domain, eps_max=2.0, tol=1e-4, seed=seed)
    assert again.distance == res.distance
    far = bisection_pgd_attack(net, x0, 0, domain=domain, eps_max=exact / 2, seed=seed)
    assert far.status is AttackStatus.FAILED and far.x_adv is None  # no success below the distance


def test_bisection_pgd_is_never_below_the_strong_attack_on_a_relu_network():
    torch.manual_seed(3)
    seq = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).double()
    net = ReluNetwork.from_torch(seq, (6,))
    x0 = torch.rand(6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    label = int(net.predict(x0[None])[0])
    plain = bisection_pgd_attack(net, x0, label, tol=1e-4)
    assert plain.success
    assert_sound(net, plain, x0, None, (0.0, 1.0))
    from lsub_helpers.distance import boundary_distance

    exact = boundary_distance(net, x0, label, method="direct", attack=False, mip_rel_gap=1e-9)
    assert exact.value is not None and plain.distance >= exact.value * (1 - 1e-9)  # d_bnd <= d_adv


def test_attack_options_and_keywords_are_the_same_call():
    """``options=AttackOptions(...)`` and the old keyword arguments give the same attack; a keyword beside
    ``options`` replaces that field; the signature still lists every keyword with its default."""
    import dataclasses
    import inspect

    from lsub_helpers.attacks import AttackOptions

    net = relu_mlp(3, n_in=10, hidden=16)
    x0, label = correctly_classified(net, 4)
    kw = dict(seed=5, steps=40, targets=2, max_rounds=5)
    a = min_distance_attack(net, x0, label, **kw)
    b = min_distance_attack(net, x0, label, options=AttackOptions(**kw))
    c = min_distance_attack(net, x0, label, options=AttackOptions(**{**kw, "seed": 9}), seed=5)
    assert a.success and a.distance == b.distance == c.distance and torch.equal(a.x_adv, b.x_adv)
    assert (a.num_gradient, a.num_forward) == (b.num_gradient, b.num_forward) == (c.num_gradient, c.num_forward)
    params = inspect.signature(min_distance_attack).parameters
    assert {f.name: f.default for f in dataclasses.fields(AttackOptions)} == {
        k: p.default for k, p in params.items() if k not in ("net", "x0", "label", "options")}
    assert params["steps"].default == 100 and params["targets"].default == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        AttackOptions().steps = 3
    with pytest.raises(TypeError, match="AttackOptions"):
        min_distance_attack(net, x0, label, options=dict(seed=1))
    with pytest.raises(TypeError):
        min_distance_attack(net, x0, label, stpes=10)  # a misspelt keyword is refused, as before
