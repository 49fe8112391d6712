"""Tests of lsub_helpers.bounds: hand-computed values, sampled soundness, tightness relations that are
theorems, conv == dense, and the shared CNNa network."""

from __future__ import annotations

import gzip
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from lsub_helpers import bounds as B
from lsub_helpers.bounds import BoundMethod, Bounds, Intermediate
from lsub_helpers.network import AffineStage, ElementwiseOp, Normalize, ReluNetwork, ReshapeOp

Tensor = torch.Tensor
F64 = torch.float64
METHODS = list(BoundMethod)
LINEAR_METHODS = [BoundMethod.CROWN, BoundMethod.FASTLIN, BoundMethod.FASTLIN_IBP]
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscription on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------
# Small networks
# ---------------------------------------------------------------------------------------------------


def _linear(w, b) -> nn.Linear:
    w = torch.as_tensor(w, dtype=F64)
    lin = nn.Linear(w.shape[1], w.shape[0]).double()
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(torch.as_tensor(b, dtype=F64))
    return lin


def _init(module: nn.Module, gen: torch.Generator, scale: float = 1.0) -> nn.Module:
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            fan_in = max(1, p[0].numel()) if p.dim() > 1 else 4
            p.copy_(torch.randn(p.shape, generator=gen, dtype=F64) * scale / fan_in**0.5)
    return module


def dense_net(seed: int, sizes=(3, 5, 4, 3), normalize=False) -> ReluNetwork:
    gen = torch.Generator().manual_seed(seed)
    mods: list[nn.Module] = [Normalize([0.3], [0.7]).double()] if normalize else []
    for i in range(len(sizes) - 1):
        mods += [_init(nn.Linear(sizes[i], sizes[i + 1]), gen, 1.5), nn.ReLU()]
    return ReluNetwork.from_torch(nn.Sequential(*mods[:-1]), (sizes[0],))


def conv_net(seed: int, normalize=False, stride=2, padding=1) -> ReluNetwork:
    """Two convolutions (a chain: the patches path) then two dense layers, on a non-square image."""
    gen = torch.Generator().manual_seed(seed)
    shape = (2, 7, 6)
    mods: list[nn.Module] = [Normalize([0.4, 0.6], [0.5, 0.8]).double()] if normalize else []
    conv1 = nn.Conv2d(2, 3, 3, stride=stride, padding=padding)
    conv2 = nn.Conv2d(3, 4, 2, stride=1, padding=padding)
    mods += [_init(conv1, gen, 1.5), nn.ReLU(), _init(conv2, gen, 1.5), nn.ReLU(), nn.Flatten()]
    probe = nn.Sequential(*mods).double()(torch.zeros((1,) + shape, dtype=F64))
    mods += [_init(nn.Linear(probe.shape[1], 5), gen, 1.5), nn.ReLU(), _init(nn.Linear(5, 3), gen, 1.5)]
    return ReluNetwork.from_torch(nn.Sequential(*mods), shape)


def substitute(net: ReluNetwork, seed: int, fraction=0.3) -> ReluNetwork:
    gen = torch.Generator().manual_seed(seed + 1000)
    masks, slopes, offsets = [], [], []
    for n in net.layer_sizes:
        masks.append(torch.rand(n, generator=gen) < fraction)
        slopes.append(torch.rand(n, generator=gen, dtype=F64) * 3 - 1)
        offsets.append(torch.rand(n, generator=gen, dtype=F64) - 0.5)
    return net.with_substitutes(masks, slopes, offsets)


def dense_equivalent(net: ReluNetwork) -> ReluNetwork:
    """The same function with every stage as one nn.Linear of its unrolled matrix (flat input)."""
    mods: list[nn.Module] = []
    for k, stage in enumerate(net.stages):
        mods.append(_linear(stage.weight, stage.bias))
        if k < len(net.activations):
            mods.append(nn.ReLU())
    return ReluNetwork.from_torch(nn.Sequential(*mods), (net.input_size,)).with_substitutes(
        [a.replaced for a in net.activations], [a.slope for a in net.activations], [a.offset for a in net.activations]
    )


def sample_box(lo: Tensor, hi: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """Uniform points, corners (all of them in low dimension, random ones otherwise) and face points."""
    d = lo.numel()
    lo_f, hi_f = lo.reshape(-1), hi.reshape(-1)
    u = torch.rand(n, d, generator=gen, dtype=F64)
    if d <= 10:
        bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=F64)
    else:
        bits = (torch.rand(n, d, generator=gen) < 0.5).to(F64)
    faces = torch.rand(n, d, generator=gen, dtype=F64)
    faces = torch.where(torch.rand(n, d, generator=gen) < 0.7, faces.round(), faces)
    t = torch.cat([u, bits, faces])
    return (lo_f + t * (hi_f - lo_f)).reshape((-1,) + tuple(lo.shape))


def assert_sound(net: ReluNetwork, bounds: Bounds, points: Tensor, tol=1e-9):
    pre, out = net.forward_all(points)
    for k, ((lo, up), z) in enumerate(zip(bounds.pre_activation + (bounds.output,), pre + (out,))):
        slack = tol * (1 + z.abs())
        assert (z >= lo - slack).all(), f"{bounds.method} layer {k}: a point below the lower bound"
        assert (z <= up + slack).all(), f"{bounds.method} layer {k}: a point above the upper bound"


# ---------------------------------------------------------------------------------------------------
# Hand-computed values
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_all_ones_layer_bias_two(method):
    # jax_verify's test: y = 1.x + 2 with x in z +- 1, z = (1, 2, 3):
    # lower = (0 + 1 + 2) + 2 = 5, upper = (2 + 3 + 4) + 2 = 11 (one affine map: every method is exact).
    net = ReluNetwork.from_torch(nn.Sequential(_linear([[1.0, 1.0, 1.0]], [2.0])), (3,))
    z = torch.tensor([1.0, 2.0, 3.0])
    b = B.compute_bounds(net, z, 1.0, method=method, domain=None)
    assert b.pre_activation == ()
    assert b.output[0].tolist() == [5.0] and b.output[1].tolist() == [11.0]
    # the 2x2 version: all-ones matrix, bias 2, z = (1, 2): [0+1, 2+3] + 2 = [3, 7] in both outputs
    net2 = ReluNetwork.from_torch(nn.Sequential(_linear([[1.0, 1.0], [1.0, 1.0]], [2.0, 2.0])), (2,))
    b2 = B.compute_bounds_box(net2, torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0]), method=method)
    assert b2.output[0].tolist() == [3.0, 3.0] and b2.output[1].tolist() == [7.0, 7.0]


def two_two_one() -> ReluNetwork:
    # z1 = x1 + x2 + 0.5, z2 = x1 - x2 - 0.5, y = relu(z1) - relu(z2), x in [-1, 1]^2
    return ReluNetwork.from_torch(
        nn.Sequential(_linear([[1.0, 1.0], [1.0, -1.0]], [0.5, -0.5]), nn.ReLU(), _linear([[1.0, -1.0]], [0.0])),
        (2,),
    )


# Layer 1 for every method: z1 in [-1.5, 2.5], z2 in [-2.5, 1.5] (exact, one affine map).
# IBP: h1 in [0, 2.5], h2 in [0, 1.5]  ->  y in [0 - 1.5, 2.5 - 0] = [-1.5, 2.5].
# Relaxations: chord of z1: slope 2.5/4 = 0.625, intercept 2.5*1.5/4 = 0.9375;
#              chord of z2: slope 1.5/4 = 0.375, intercept 1.5*2.5/4 = 0.9375.
# CROWN lower slopes: z1: u = 2.5 > 1.5 = -l -> 1;  z2: u = 1.5 < 2.5 = -l -> 0.
#   lower y >= z1 - (0.375 z2 + 0.9375) = 0.625 x1 + 1.375 x2 - 0.25        -> min -2.25
#   upper y <= (0.625 z1 + 0.9375) - 0 = 0.625 x1 + 0.625 x2 + 1.25          -> max  2.5
# FastLin lower lines 0.625 z1 and 0.375 z2:
#   lower y >= 0.625 z1 - (0.375 z2 + 0.9375) = 0.25 x1 + x2 - 0.4375        -> min -1.6875
#   upper y <= 0.625 z1 + 0.9375 - 0.375 z2 = 0.25 x1 + x2 + 1.4375          -> max  2.6875
# FastLin-IBP: [max(-1.6875, -1.5), min(2.6875, 2.5)] = [-1.5, 2.5].
# (CROWN is looser than IBP on the lower bound here: CROWN >= IBP is no theorem.)
HAND = {
    BoundMethod.IBP: (-1.5, 2.5),
    BoundMethod.CROWN: (-2.25, 2.5),
    BoundMethod.FASTLIN: (-1.6875, 2.6875),
    BoundMethod.FASTLIN_IBP: (-1.5, 2.5),
}


@pytest.mark.parametrize("method", METHODS)
def test_two_two_one_by_hand(method):
    net = two_two_one()
    b = B.compute_bounds(net, torch.zeros(2), 1.0, method=method, domain=None)
    (lo, up), = b.pre_activation
    assert lo.tolist() == [-1.5, -2.5] and up.tolist() == [2.5, 1.5]
    assert b.output[0].item() == pytest.approx(HAND[method][0], abs=1e-12)
    assert b.output[1].item() == pytest.approx(HAND[method][1], abs=1e-12)
    assert b.unstable_masks()[0].tolist() == [True, True] and b.num_unstable == 2
    assert [g.tolist() for g in b.gaps()] == [[4.0, 4.0]]


@pytest.mark.parametrize("method", METHODS)
def test_replaced_neuron_is_exact_affine(method):
    # Neuron 2 replaced by h2 = 0.5 z2 + 0.1 (in [-1.15, 0.85]).
    # IBP: y in [0 - 0.85, 2.5 + 1.15] = [-0.85, 3.65].
    # CROWN: lower z1 - 0.5 z2 - 0.1 = 0.5 x1 + 1.5 x2 + 0.65 -> -1.35;
    #        upper 0.625 z1 + 0.9375 - 0.5 z2 - 0.1 = 0.125 x1 + 1.125 x2 + 1.4 -> 2.65.
    # FastLin: lower 0.625 z1 - 0.5 z2 - 0.1 = 0.125 x1 + 1.125 x2 + 0.4625 -> -0.7875; upper as CROWN;
    # FastLin-IBP: [max(-0.7875, -0.85), min(2.65, 3.65)].
    net = two_two_one().with_substitutes(
        [torch.tensor([False, True])], [torch.tensor([0.0, 0.5], dtype=F64)], [torch.tensor([0.0, 0.1], dtype=F64)]
    )
    want = {
        BoundMethod.IBP: (-0.85, 3.65),
        BoundMethod.CROWN: (-1.35, 2.65),
        BoundMethod.FASTLIN: (-0.7875, 2.65),
        BoundMethod.FASTLIN_IBP: (-0.7875, 2.65),
    }[method]
    b = B.compute_bounds(net, torch.zeros(2), 1.0, method=method, domain=None)
    assert b.output[0].item() == pytest.approx(want[0], abs=1e-12)
    assert b.output[1].item() == pytest.approx(want[1], abs=1e-12)
    assert b.unstable_masks()[0].tolist() == [True, False] and b.num_unstable == 1


def test_fastlin_ibp_is_not_always_tighter_than_fastlin_in_deep_layers():
    # Not a theorem beyond the second ReLU layer: tighter intermediate bounds change FastLin's lower
    # line u/(u-l) z, which can lower it on part of the interval.  A 2-2-2-2-1 counterexample.
    ws = [
        ([[1.0, 2.0], [1.0, 1.0]], [0.0, 1.0]),
        ([[1.0, 1.0], [2.0, -1.0]], [-1.0, -0.5]),
        ([[0.0, -2.0], [-1.0, 2.0]], [1.0, 0.5]),
        ([[0.0, 1.0]], [-0.5]),
    ]
    mods: list[nn.Module] = []
    for w, b in ws:
        mods += [_linear(w, b), nn.ReLU()]
    net = ReluNetwork.from_torch(nn.Sequential(*mods[:-1]), (2,))
    lo, hi = -torch.ones(2), torch.ones(2)
    fl, fi = B.fastlin_box(net, lo, hi), B.fastlin_ibp_box(net, lo, hi)
    assert fi.output[1].item() > fl.output[1].item() + 0.1  # 5.069 > 4.958
    assert_sound(net, fi, sample_box(lo, hi, 2000, torch.Generator().manual_seed(0)))


# ---------------------------------------------------------------------------------------------------
# Sampled soundness
# ---------------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    conv=st.booleans(),
    normalize=st.booleans(),
    replaced=st.booleans(),
    stride=st.sampled_from([1, 2]),
    padding=st.sampled_from([0, 1]),
    width=st.floats(0.01, 0.6),
    intermediate=st.sampled_from(list(Intermediate)),
)
def test_sampled_points_never_leave_the_bounds(seed, conv, normalize, replaced, stride, padding, width, intermediate):
    net = conv_net(seed, normalize, stride, padding) if conv else dense_net(seed, normalize=normalize)
    if replaced:
        net = substitute(net, seed)
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(net.input_shape, generator=gen, dtype=F64)
    radius = torch.rand(net.input_shape, generator=gen, dtype=F64) * width
    lo, hi = center - radius, center + radius
    points = sample_box(lo, hi, 1500, gen)
    for method in METHODS:
        b = B.compute_bounds_box(net, lo, hi, method=method, intermediate=intermediate)
        assert_sound(net, b, points)
        for (l, u), n in zip(b.pre_activation, net.layer_sizes):
            assert l.shape == (n,) and (l <= u).all()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.01, 0.3))
def test_ball_is_clipped_to_the_domain(seed, eps):
    net = conv_net(seed)
    x0 = torch.rand(net.input_shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    lo, hi = B.input_box(net, x0, eps)
    assert torch.equal(lo, (x0 - eps).clamp(min=0)) and torch.equal(hi, (x0 + eps).clamp(max=1))
    for method in METHODS:
        b = B.compute_bounds(net, x0, eps, method=method)
        ref = B.compute_bounds_box(net, lo, hi, method=method)
        assert torch.equal(b.output[0], ref.output[0]) and torch.equal(b.input[1], hi)
        assert_sound(net, b, sample_box(lo, hi, 500, torch.Generator().manual_seed(1)))


def reference_bounds(net: ReluNetwork, lo: Tensor, hi: Tensor, method: BoundMethod):
    """Textbook back-substitution with the dense stage matrices, every neuron, no shortcut."""
    ws, bs = [s.weight for s in net.stages], [s.bias for s in net.stages]
    lo, hi = lo.reshape(-1), hi.reshape(-1)
    h_lo, h_hi = lo, hi
    relax, layers = [], []
    for m, (w, b) in enumerate(zip(ws, bs)):
        ibp_l = w.clamp(min=0) @ h_lo + w.clamp(max=0) @ h_hi + b
        ibp_u = w.clamp(min=0) @ h_hi + w.clamp(max=0) @ h_lo + b
        l, u = ibp_l, ibp_u
        if m > 0 and method is not BoundMethod.IBP:
            out = []
            for sign in (1.0, -1.0):  # lower bound of sign * z
                lam, beta = sign * w, sign * b
                for j in range(m - 1, -1, -1):
                    al, cl, au, cu = relax[j]
                    pos, neg = lam.clamp(min=0), lam.clamp(max=0)
                    beta = beta + pos @ cl + neg @ cu
                    lam = pos * al + neg * au
                    beta, lam = beta + lam @ bs[j], lam @ ws[j]
                out.append(sign * (lam.clamp(min=0) @ lo + lam.clamp(max=0) @ hi + beta))
            l, u = out
            if method is BoundMethod.FASTLIN_IBP:
                l, u = torch.maximum(l, ibp_l), torch.minimum(u, ibp_u)
        layers.append((l, u))
        if m == len(net.activations):
            break
        act = net.activations[m]
        n = l.numel()
        al, cl, au, cu = (torch.zeros(n, dtype=F64) for _ in range(4))
        for i in range(n):  # a loop over neurons is fine in a reference
            if act.replaced[i]:
                al[i] = au[i] = act.slope[i]
                cl[i] = cu[i] = act.offset[i]
            elif l[i] >= 0:
                al[i] = au[i] = 1.0
            elif u[i] > 0:
                au[i] = u[i] / (u[i] - l[i])
                cu[i] = -l[i] * au[i]
                al[i] = float(u[i] > -l[i]) if method is BoundMethod.CROWN else au[i]
        relax.append((al, cl, au, cu))
        h_lo = torch.where(act.replaced, torch.minimum(act.slope * l, act.slope * u) + act.offset, l.clamp(min=0))
        h_hi = torch.where(act.replaced, torch.maximum(act.slope * l, act.slope * u) + act.offset, u.clamp(min=0))
    return layers


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["dense", "wide", "conv", "conv_norm"]),
       replaced=st.booleans(), width=st.sampled_from([0.01, 0.05, 0.3]))
def test_matches_a_textbook_reference(seed, kind, replaced, width):
    # exercises the patches path (conv), the shared first CROWN step (wide layers with few unstable
    # neurons) and the plain dense path against one independent implementation
    if kind == "conv":
        net = conv_net(seed)
    elif kind == "conv_norm":
        net = conv_net(seed, normalize=True, stride=1, padding=0)
    else:
        net = dense_net(seed, sizes=(4, 40, 30, 20, 3) if kind == "wide" else (3, 6, 5, 3))
    if replaced:
        net = substitute(net, seed, fraction=0.2)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(net.input_shape, generator=gen, dtype=F64)
    lo, hi = x0 - width, x0 + width
    for method in METHODS:
        ref = reference_bounds(net, lo, hi, method)
        got = B.compute_bounds_box(net, lo, hi, method=method)
        for (rl, ru), (gl, gu) in zip(ref, got.pre_activation + (got.output,)):
            assert torch.allclose(rl, gl, rtol=0, atol=1e-9) and torch.allclose(ru, gu, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------------------------------
# Tightness relations that are theorems
# ---------------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), conv=st.booleans(), replaced=st.booleans(), width=st.floats(0.01, 1.0))
def test_fastlin_ibp_never_looser_than_ibp_nor_fastlin_where_guaranteed(seed, conv, replaced, width):
    # IBP is inclusion-monotone, so FastLin-IBP (whose every layer lies inside one IBP step from boxes
    # that lie inside IBP's) is never looser than IBP at any layer.  Against FastLin it is a theorem for
    # the first two ReLU layers only (both methods see the same exact first-layer bounds); deeper, see
    # test_fastlin_ibp_is_not_always_tighter_than_fastlin_in_deep_layers.
    net = conv_net(seed) if conv else dense_net(seed, sizes=(3, 6, 6, 6, 3))
    if replaced:
        net = substitute(net, seed)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(net.input_shape, generator=gen, dtype=F64)
    eps = float(width)
    fi = B.fastlin_ibp(net, x0, eps, domain=None)
    ib = B.ibp(net, x0, eps, domain=None)
    fl = B.fastlin(net, x0, eps, domain=None)
    tol = 1e-10
    for (fl_, fu), (il, iu) in zip(fi.pre_activation + (fi.output,), ib.pre_activation + (ib.output,)):
        assert (fl_ >= il - tol).all() and (fu <= iu + tol).all()
    for (fl_, fu), (ll, lu) in list(zip(fi.pre_activation, fl.pre_activation))[:2]:
        assert (fl_ >= ll - tol).all() and (fu <= lu + tol).all()
    # the first layer is exact for every method
    assert torch.allclose(fi.pre_activation[0][0], ib.pre_activation[0][0], atol=1e-12)
    assert torch.allclose(fl.pre_activation[0][1], ib.pre_activation[0][1], atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# Conv layers against their dense equivalent; batches; modes
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("stride,padding", [(2, 1), (1, 0), (2, 0)])
def test_conv_equals_dense_equivalent(normalize, stride, padding):
    net = substitute(conv_net(7, normalize, stride, padding), 7, fraction=0.2)
    dense = dense_equivalent(net)
    x0 = torch.rand((3,) + net.input_shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    eps = torch.tensor([0.05, 0.1, 0.2], dtype=F64)
    for method in METHODS:
        for mode in Intermediate:
            a = B.compute_bounds(net, x0, eps, method=method, intermediate=mode)
            b = B.compute_bounds(dense, x0.reshape(3, -1), eps, method=method, intermediate=mode)
            for (al, au), (bl, bu) in zip(a.pre_activation + (a.output,), b.pre_activation + (b.output,)):
                assert torch.allclose(al, bl, rtol=0, atol=1e-9) and torch.allclose(au, bu, rtol=0, atol=1e-9)


def test_reshape_and_elementwise_prefix_before_a_conv_chain():
    # an ONNX-like first stage: flat input -> Reshape -> x*scale+shift (negative scales too) -> Conv
    base = conv_net(13)
    conv1 = base.stages[0].ops[-1]
    shape = conv1.in_shape
    gen = torch.Generator().manual_seed(13)
    scale = torch.randn(shape, generator=gen, dtype=F64)
    shift = torch.randn(shape, generator=gen, dtype=F64)
    first = AffineStage((ReshapeOp((math.prod(shape),), shape), ElementwiseOp(scale, shift, shape), conv1))
    net = ReluNetwork((first,) + base.stages[1:], base.activations)
    x0 = torch.rand(net.input_shape, generator=gen, dtype=F64)
    dense = dense_equivalent(net)
    for method in METHODS:
        a = B.compute_bounds(net, x0, 0.1, method=method, domain=None)
        b = B.compute_bounds(dense, x0, 0.1, method=method, domain=None)
        for (al, au), (bl, bu) in zip(a.pre_activation + (a.output,), b.pre_activation + (b.output,)):
            assert torch.allclose(al, bl, rtol=0, atol=1e-9) and torch.allclose(au, bu, rtol=0, atol=1e-9)


def test_batch_equals_single_anchors():
    net = substitute(conv_net(11, normalize=True), 11)
    x0 = torch.rand((4,) + net.input_shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    for method in METHODS:
        batch = B.compute_bounds(net, x0, 0.08, method=method)
        assert batch.batched and batch.batch_size == 4 and batch.num_unstable.shape == (4,)
        for i in range(4):
            single = B.compute_bounds(net, x0[i], 0.08, method=method)
            one = batch.anchor(i)
            assert not single.batched and isinstance(single.num_unstable, int)
            assert single.num_unstable == int(batch.num_unstable[i])
            for (sl, su), (bl, bu) in zip(single.pre_activation + (single.output,), one.pre_activation + (one.output,)):
                assert torch.allclose(sl, bl, rtol=0, atol=1e-12) and torch.allclose(su, bu, rtol=0, atol=1e-12)


def test_intermediate_modes_agree_on_unstable_neurons():
    # UNSTABLE keeps one IBP step where that step proves stability; elsewhere both modes run the same
    # back-substitution.  Stability can only differ where CROWN is looser than IBP on a neuron.
    net = conv_net(3)
    x0 = torch.rand(net.input_shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    for method in LINEAR_METHODS:
        a = B.compute_bounds(net, x0, 0.05, method=method, intermediate="all")
        u = B.compute_bounds(net, x0, 0.05, method=method, intermediate=Intermediate.UNSTABLE)
        assert torch.allclose(a.pre_activation[0][0], u.pre_activation[0][0])
        m = u.unstable_masks()[1]
        assert torch.allclose(a.pre_activation[1][0][m], u.pre_activation[1][0][m], atol=1e-12)


def test_point_box_gives_the_forward_pass():
    net = substitute(conv_net(5, normalize=True), 5)
    x = torch.rand(net.input_shape, generator=torch.Generator().manual_seed(4), dtype=F64)
    pre, out = net.forward_all(x.unsqueeze(0))
    for method in METHODS:
        b = B.compute_bounds_box(net, x, x, method=method)
        assert b.num_unstable == 0
        for (lo, up), z in zip(b.pre_activation + (b.output,), pre + (out,)):
            assert torch.allclose(lo, z[0], atol=1e-12) and torch.allclose(up, z[0], atol=1e-12)


def test_margin_spec_is_sound_and_tighter():
    net = dense_net(9, sizes=(3, 8, 8, 4))
    x0 = torch.rand(3, generator=torch.Generator().manual_seed(9), dtype=F64)
    label = int(net.predict(x0.unsqueeze(0)))
    spec = torch.stack([torch.eye(4, dtype=F64)[label] - torch.eye(4, dtype=F64)[t] for t in range(4) if t != label])
    lo, hi = B.input_box(net, x0, 0.1, domain=None)
    points = sample_box(lo, hi, 2000, torch.Generator().manual_seed(1))
    margins = net.forward(points) @ spec.T
    for method in METHODS:
        plain = B.compute_bounds(net, x0, 0.1, method=method, domain=None)
        b = B.compute_bounds(net, x0, 0.1, method=method, domain=None, spec=spec)
        assert b.output[0].shape == (3,)
        assert (margins >= b.output[0] - 1e-9).all() and (margins <= b.output[1] + 1e-9).all()
        naive = plain.output[0][label] - plain.output[1][[t for t in range(4) if t != label]]
        assert (b.output[0] >= naive - 1e-9).all()


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_eps(eps):
    net = dense_net(0)
    with pytest.raises(ValueError, match="eps"):
        B.crown(net, torch.zeros(3), eps)


def test_bad_inputs():
    net = dense_net(0)
    with pytest.raises(ValueError, match="NaN"):
        B.ibp(net, torch.tensor([0.0, float("nan"), 0.0]), 0.1)
    with pytest.raises(ValueError, match="shape"):
        B.fastlin(net, torch.zeros(4), 0.1)
    with pytest.raises(ValueError, match="shape"):
        B.fastlin_ibp(net, torch.zeros(2, 2, 3), 0.1)
    with pytest.raises(ValueError, match="empty box"):
        B.crown_box(net, torch.ones(3), torch.zeros(3))
    with pytest.raises(ValueError, match="shapes"):
        B.ibp_box(net, torch.zeros(3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="unknown bound method"):
        B.compute_bounds(net, torch.zeros(3), 0.1, method="deeppoly")
    with pytest.raises(ValueError, match="domain"):
        B.ibp(net, torch.full((3,), 5.0), 0.1)
    with pytest.raises(ValueError, match="eps"):
        B.ibp(net, torch.zeros(2, 3), torch.tensor([0.1, 0.2, 0.3]))
    assert B.compute_bounds(net, torch.zeros(3), 0.1, method="CROWN").method is BoundMethod.CROWN


# ---------------------------------------------------------------------------------------------------
# The shared CNNa network (skipped when ../shared is absent)
# ---------------------------------------------------------------------------------------------------

CNNA = SHARED / "data/models/cnna_mnist_wk17a_lp_eps0.1_mipverify.pt"
MNIST = SHARED / "data/mnist/t10k-images-idx3-ubyte.gz"


def load_cnna() -> ReluNetwork:
    seq = nn.Sequential(
        nn.Conv2d(1, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(), nn.Flatten(),
        nn.Linear(1568, 100), nn.ReLU(), nn.Linear(100, 10),
    )
    seq.load_state_dict(torch.load(CNNA, weights_only=True))
    return ReluNetwork.from_torch(seq, (1, 28, 28))


def mnist_test_image(index_1based: int) -> Tensor:
    with gzip.open(MNIST) as f:
        data = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    return torch.tensor(data[index_1based - 1] / 255.0)


@pytest.mark.skipif(not (CNNA.exists() and MNIST.exists()), reason="shared CNNa model or MNIST absent")
def test_cnna_image_493_unstable_counts():
    # NOTES.md (prototype): at eps 0.0497 IBP leaves 423 unstable neurons, CROWN 35 (2, 33, 0).
    net = load_cnna()
    x = mnist_test_image(493)
    ibp_b = B.ibp(net, x, 0.0497)
    crown_b = B.crown(net, x, 0.0497)
    assert ibp_b.num_unstable == 423
    assert crown_b.num_unstable_per_layer() == (2, 33, 0)
    assert B.crown(net, x, 0.0497, intermediate="unstable").num_unstable_per_layer() == (2, 33, 0)
    fi = B.fastlin_ibp(net, x, 0.0497)
    assert fi.num_unstable <= 35 + 5
    lo, hi = B.input_box(net, x, 0.0497)
    points = sample_box(lo, hi, 300, torch.Generator().manual_seed(0))
    for b in (ibp_b, crown_b, fi):
        assert_sound(net, b, points)
