"""Max pooling (issue #13): the forward pass against torch and onnxruntime, refusals, bounds on sampled
points, the MILP against an independent brute force (which uses ``relu(max) = max(relu)`` and enumerates the
window maxima instead of the encoding's binaries) and a 2-D grid, counterexamples against onnxruntime,
substitutes, Lemma 1's Lipschitz bound, and the verify / distance / estimate / vnncomp path."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from lsub_helpers import bounds as B
from lsub_helpers import milp
from lsub_helpers.network import (Activation, AffineStage, DenseOp, FlattenOp, IdentityOp, MaxPoolLayer, ReluNetwork,
                                  ReshapeOp, UnsupportedLayerError)
from test_ops import _assert_sound, _export, _milp_counterexample_passes_onnxruntime, _ort, _randomise_bn, _single

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

F64 = torch.float64
METHODS = list(B.BoundMethod)
# (kernel, stride, padding) of nn.MaxPool2d: overlapping windows, padding, non-square, stride > kernel
POOLS = [(2, 2, 0), (3, 2, 1), (3, 1, 1), ((2, 3), (1, 2), (1, 0)), (2, 3, 0)]


def maxpool_net(seed: int = 0, pool=(3, 2, 1), *, before_relu: bool = False) -> nn.Sequential:
    """Conv + batch norm + ReLU + MaxPool (or MaxPool before the ReLU) + conv + ReLU + MaxPool(2) + dense,
    (1, 8, 8) -> 3."""
    torch.manual_seed(seed)
    k, s, p = pool
    first = [nn.MaxPool2d(k, s, p), nn.ReLU()] if before_relu else [nn.ReLU(), nn.MaxPool2d(k, s, p)]
    head = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), *first)
    c, h, w = head(torch.zeros(1, 1, 8, 8)).shape[1:]
    tail = [nn.Conv2d(3, 4, 2), nn.ReLU(), nn.MaxPool2d(2, 1)]
    c, h, w = nn.Sequential(*tail)(torch.zeros(1, c, h, w)).shape[1:]
    seq = nn.Sequential(*head, *tail, nn.Flatten(), nn.Linear(c * h * w, 6), nn.ReLU(), nn.Linear(6, 3))
    return _randomise_bn(seq, seed)


def steep_maxpool_net(seed: int, x0: torch.Tensor) -> nn.Sequential:
    """:func:`maxpool_net` with a steeper output layer whose class 0 wins at ``x0`` by 0.5 over class 1 (a
    decision boundary near ``x0``)."""
    seq = maxpool_net(seed)
    with torch.no_grad():
        seq[-1].weight *= 1000
        y0 = seq(x0[None].float())[0]
        seq[-1].bias += torch.tensor([0.5, 0.0, -5.0]) - y0
    return seq


# ---------------------------------------------------------------------------------------------------
# Forward pass
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("before_relu", [False, True])
def test_forward_matches_torch_in_float64_and_float32(pool, before_relu):
    seq = maxpool_net(1, pool, before_relu=before_relu)
    net = ReluNetwork.from_torch(seq, (1, 8, 8))
    assert sum(p is not None for p in net.pools) == 2 and len(net.activations) == 3
    x = torch.rand(16, 1, 8, 8, dtype=F64)
    torch.testing.assert_close(net.forward(x), seq.double()(x).detach(), atol=1e-12, rtol=0)
    x32 = x.float()
    torch.testing.assert_close(net.forward(x32), seq.float()(x32).detach(), atol=1e-5, rtol=0)
    assert net.forward(x32).dtype == torch.float32
    torch.testing.assert_close(net.to_torch()(x), net.forward(x))


@pytest.mark.parametrize("pool", POOLS)
def test_exported_net_matches_onnxruntime(tmp_path, pool):
    seq = maxpool_net(2, pool)
    path = _export(seq, (1, 8, 8), tmp_path / "net.onnx")
    assert "MaxPool" in {n.op_type for n in onnx.load(str(path)).graph.node}
    net = ReluNetwork.from_onnx(path)
    x = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(net.forward(torch.from_numpy(x).to(F64)).numpy(), _ort(path, x), atol=1e-6, rtol=0)


def _graph(nodes, inits, in_shape, opset=13):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_hand_built_asymmetric_pads_match_onnxruntime(tmp_path):
    """MaxPool with asymmetric pads (which torch cannot express) after a ReLU, and one before a ReLU."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(size=(2, 1, 2, 2)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(2, 2, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "w3"),
             numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape")]

    def graph(middle):
        return _graph([
            helper.make_node("Conv", ["x", "w1"], ["c"]),  # (2, 4, 4)
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 2], strides=[2, 1], pads=[0, 1, 2, 0]),
            *middle,  # "p" -> "m"
            helper.make_node("MaxPool", ["m"], ["q"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Relu", ["q"], ["r2"]),
            helper.make_node("Reshape", ["r2", "shape"], ["f"]),
            helper.make_node("MatMul", ["f", "w3"], ["y"]),
        ], inits, (1, 1, 5, 5))

    path = tmp_path / "hand.onnx"
    onnx.save(graph([helper.make_node("Conv", ["p", "w2"], ["m"])]), str(path))
    net = ReluNetwork.from_onnx(path)
    assert net.pools[0].pads == ((0, 2), (1, 0)) and net.pools[1] is not None
    x = rng.random((6, 1, 5, 5), dtype=np.float32)
    np.testing.assert_allclose(net.forward(torch.from_numpy(x).to(F64)).numpy(), _ort(path, x), atol=1e-6, rtol=0)
    # two pools in a row: the second is next to no ReLU and is refused with a remedy
    onnx.save(graph([helper.make_node("Identity", ["p"], ["m"])]), str(path))
    with pytest.raises(UnsupportedLayerError, match="directly after or before a ReLU"):
        ReluNetwork.from_onnx(path)


@pytest.mark.parametrize("attrs, fragment", [
    ({"kernel_shape": [2, 2], "ceil_mode": 1}, "ceil_mode=1 is not supported"),
    ({"kernel_shape": [2, 2], "dilations": [2, 2]}, "dilations [2, 2] are not supported"),
    ({"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER"}, "auto_pad=SAME_UPPER is not supported"),
])
def test_onnx_refusals_name_op_node_and_remedy(tmp_path, attrs, fragment):
    path = _single("MaxPool", tmp_path, shape=(1, 1, 4, 4), **attrs)
    with pytest.raises(UnsupportedLayerError) as err:
        ReluNetwork.from_onnx(path)
    msg = str(err.value)
    assert "MaxPool" in msg and "the_node" in msg and fragment in msg


@pytest.mark.parametrize("module, fragment", [
    (nn.MaxPool2d(2, ceil_mode=True), "ceil_mode=True is not supported"),
    (nn.MaxPool2d(2, dilation=2), "dilation 2 is not supported"),
    (nn.MaxPool2d(2, return_indices=True), "return_indices=True is not supported"),
])
def test_torch_refusals(module, fragment):
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), module, nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(UnsupportedLayerError, match=fragment):
        ReluNetwork.from_torch(seq, (1, 6, 6))


@pytest.mark.parametrize("layers", [
    [nn.MaxPool2d(2), nn.Conv2d(1, 2, 2), nn.ReLU()],  # on the input
    [nn.Conv2d(1, 2, 2), nn.MaxPool2d(2), nn.Conv2d(2, 2, 1), nn.ReLU()],  # between two affine layers
    [nn.Conv2d(1, 2, 2), nn.ReLU(), nn.MaxPool2d(2, 1), nn.MaxPool2d(2, 1)],  # two in a row
])
def test_a_pool_away_from_relus_is_refused(layers):
    seq = nn.Sequential(*layers, nn.Flatten())
    shape = seq(torch.zeros(1, 1, 8, 8)).shape[1]
    with pytest.raises(UnsupportedLayerError, match="directly after or before a ReLU"):
        ReluNetwork.from_torch(nn.Sequential(*seq, nn.Linear(shape, 2)), (1, 8, 8))


def test_windows_table():
    pool = MaxPoolLayer((2, 2), (2, 1), ((1, 0), (0, 0)), (1, 3, 3))
    assert pool.out_shape == (1, 2, 2)
    pad = pool.in_size
    assert pool.windows.tolist() == [[pad, pad, 0, 1], [pad, pad, 1, 2], [3, 4, 6, 7], [4, 5, 7, 8]]
    with pytest.raises(ValueError, match="smaller than the kernel"):
        MaxPoolLayer((2, 2), (1, 1), ((2, 0), (0, 0)), (1, 3, 3))


# ---------------------------------------------------------------------------------------------------
# Bounds
# ---------------------------------------------------------------------------------------------------


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), pool=st.sampled_from(POOLS), width=st.floats(0.01, 0.5),
       intermediate=st.sampled_from(list(B.Intermediate)))
def test_bounds_sound_through_max_pooling(seed, pool, width, intermediate):
    net = ReluNetwork.from_torch(maxpool_net(seed % 5, pool).double(), (1, 8, 8))
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(net.input_shape, generator=gen, dtype=F64)
    radius = torch.rand(net.input_shape, generator=gen, dtype=F64) * width
    points = center + radius * (2 * torch.rand((1000,) + net.input_shape, generator=gen, dtype=F64) - 1)
    points[:8] = center + radius * torch.sign(torch.randn((8,) + net.input_shape, generator=gen, dtype=F64))
    ibp = B.compute_bounds_box(net, center - radius, center + radius, method="ibp")
    for method in METHODS:
        b = B.compute_bounds_box(net, center - radius, center + radius, method=method, intermediate=intermediate)
        _assert_sound(net, b, points)
        # a spec's bounds (margins) are sound too
        spec = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]], dtype=F64)
        bs = B.compute_bounds_box(net, center - radius, center + radius, method=method, spec=spec)
        m = net.forward(points) @ spec.T
        assert (m >= bs.output[0] - 1e-9).all() and (m <= bs.output[1] + 1e-9).all()
    # FastLin-IBP is the tightest of both at every layer: never looser than IBP
    fl = B.compute_bounds_box(net, center - radius, center + radius, method="fastlin_ibp")
    for (lo, hi), (ilo, ihi) in zip(fl.pre_activation, ibp.pre_activation):
        assert (lo >= ilo - 1e-9).all() and (hi <= ihi + 1e-9).all()


def test_pool_interval_is_exact_and_batched_bounds_agree():
    """The interval of a pool is reached: the outputs at the box's lower and upper corner (ReLU and max are
    monotone), and a batch of anchors gives each anchor's own bounds."""
    net = ReluNetwork.from_torch(maxpool_net(3).double(), (1, 8, 8))
    x0 = torch.rand(3, 1, 8, 8, dtype=F64)
    eps = torch.tensor([0.01, 0.05, 0.2], dtype=F64)
    for method in METHODS:
        batched = B.compute_bounds(net, x0, eps, method=method)
        for i in range(3):
            one = B.compute_bounds(net, x0[i], float(eps[i]), method=method)
            torch.testing.assert_close(batched.anchor(i).output, one.output, atol=1e-10, rtol=0)
    # one ReLU layer of the input and a pool: both monotone, so the corners give the bounds
    pool = MaxPoolLayer((3, 3), (2, 2), ((1, 1), (1, 1)), (2, 5, 5))
    one_layer = ReluNetwork((AffineStage((IdentityOp((2, 5, 5)),)), AffineStage((FlattenOp(pool.out_shape),))),
                            (Activation.relu(50),), (pool,))
    lo = torch.rand(2, 5, 5, dtype=F64) - 0.5
    hi = lo + torch.rand(2, 5, 5, dtype=F64)
    b = B.ibp_box(one_layer, lo, hi)
    torch.testing.assert_close(b.output[0], one_layer.forward(lo[None])[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(b.output[1], one_layer.forward(hi[None])[0], atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------------
# MILP
# ---------------------------------------------------------------------------------------------------


def tiny_maxpool(seed: int) -> ReluNetwork:
    """(1, 3, 3) -> conv 2x2 (2 channels) -> ReLU -> MaxPool 2x2 stride 1 -> dense 2 -> ReLU -> dense 2."""
    torch.manual_seed(seed)
    seq = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.MaxPool2d(2, 1), nn.Flatten(), nn.Linear(2, 2),
                        nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        for p in seq.parameters():
            p.mul_(3)
    return ReluNetwork.from_torch(seq.double(), (1, 3, 3))


def brute_force_min_pooled(net: ReluNetwork, lower, upper, c) -> float:
    """``min c . f(x)`` over the box, one LP per choice of (the maximum of every window, its sign, the
    sign of every later ReLU), using ``max(relu(z)) = relu(max(z))``: the pooled layer's own ReLUs are not
    enumerated.  For networks whose first ReLU layer is pooled and the others are not."""
    from scipy.optimize import linprog

    pool = net.pools[0]
    assert pool is not None and all(p is None for p in net.pools[1:])
    win = [w[w < pool.in_size] for w in pool.windows]
    w1, b1 = net.stages[0].weight.numpy(), net.stages[0].bias.numpy()
    choices = [[(j, on) for j in w for on in (0, 1)] for w in win]
    later = sum(net.layer_sizes[1:])
    best = np.inf
    for pick in itertools.product(*choices):
        a_ub, b_ub = [], []
        h_x, h_0 = [], []
        for w, (j, on) in zip(win, pick):
            for i in w:  # z_j >= z_i
                a_ub.append(w1[i] - w1[j])
                b_ub.append(b1[j] - b1[i])
            s = -1.0 if on else 1.0
            a_ub.append(s * w1[j])
            b_ub.append(-s * b1[j])
            h_x.append(w1[j] * on)
            h_0.append(b1[j] * on)
        h_x, h_0 = np.array(h_x), np.array(h_0)
        for pattern in itertools.product([0, 1], repeat=later):
            rows, rhs = list(a_ub), list(b_ub)
            px, p0, start = h_x, h_0, 0
            for k, stage in enumerate(net.stages[1:], start=1):
                z_x, z_0 = stage.weight.numpy() @ px, stage.weight.numpy() @ p0 + stage.bias.numpy()
                if k == len(net.activations):
                    break
                on = np.array(pattern[start:start + net.layer_sizes[k]], dtype=bool)
                start += net.layer_sizes[k]
                sign = np.where(on, -1.0, 1.0)
                rows += list(sign[:, None] * z_x)
                rhs += list(-sign * z_0)
                px, p0 = z_x * on[:, None], z_0 * on
            res = linprog(c @ z_x, A_ub=np.array(rows), b_ub=np.array(rhs), bounds=list(zip(lower, upper)),
                          method="highs")
            if res.status == 0:
                best = min(best, res.fun + c @ z_0)
    return best


def _pool_binaries(net: ReluNetwork, bounds) -> int:
    """Binaries the pool encoding needs by the rule of Tjeng et al.: per window with more than one input
    that can be the maximum (its upper bound reaches the window's largest lower bound, and it is not an
    inactive ReLU: exactly 0, below any other ReLU output), one per such input (no ReLU replaced)."""
    total = 0
    for k, pool in enumerate(net.pools):
        if pool is None:
            continue
        lo, hi = (np.maximum(np.asarray(t), 0) for t in bounds.pre_activation[k])
        for w in pool.windows:
            w = w[w < pool.in_size]
            # every input is an inactive ReLU: the output is 0, no binary
            n = int(((hi[w] >= lo[w].max()) & (hi[w] > 0)).sum())
            total += n if n > 1 else 0
    return total


@pytest.mark.parametrize("seed", [0, 1, 2, 4])
def test_milp_optimum_equals_brute_force_with_max_pooling(seed):
    net = tiny_maxpool(seed)
    rng = np.random.default_rng(seed)
    x0 = rng.random(net.input_size)
    lower, upper = np.clip(x0 - 0.3, 0, 1), np.clip(x0 + 0.3, 0, 1)
    c = np.array([1.0, -1.0])
    expect = brute_force_min_pooled(net, lower, upper, c)
    for method in ("ibp", "crown"):
        b = milp.compute_bounds(net, lower, upper, method)
        model = milp.build_model(net, lower, upper, b, spec=milp.OutputSpec(c[None], np.zeros(1)))
        unstable = sum(milp.unstable_counts(net, b))
        assert model.num_binaries == unstable + _pool_binaries(net, b)
        res = milp.solve_model(model, time_limit=60, mip_rel_gap=0.0)
        assert res.status is milp.SolverStatus.OPTIMAL
        assert abs(res.objective - expect) <= 1e-6 * max(1.0, abs(expect))
        y = net.forward(torch.from_numpy(res.x).reshape((1,) + net.input_shape))[0].numpy()
        assert abs(c @ y - expect) <= 1e-6 * max(1.0, abs(expect))
    if seed == 0:  # this seed's windows need binaries: the big-M rows of the pool are exercised
        assert _pool_binaries(net, milp.compute_bounds(net, lower, upper, "ibp")) >= 2


def test_lp_relaxations_with_max_pooling_are_sound():
    """LP tightening and LP screening go through the pool rows (binaries relaxed): the tightened bounds
    still hold on sampled points, and the screening bound is below the true minimum."""
    net = tiny_maxpool(1)
    x0 = np.random.default_rng(1).random(net.input_size)
    lower, upper = np.clip(x0 - 0.3, 0, 1), np.clip(x0 + 0.3, 0, 1)
    b = milp.compute_bounds(net, lower, upper, "ibp")
    tight, rep = milp.tighten_bounds_lp(net, lower, upper, b)
    assert rep.complete and sum(rep.unstable_after) <= sum(rep.unstable_before)
    pts = torch.from_numpy(lower + (upper - lower) * np.random.default_rng(2).random((5000, net.input_size)))
    pre, out = net.forward_all(pts.reshape((-1,) + net.input_shape))
    for (lo, hi), z in zip(tight.pre_activation, pre):
        assert (z.numpy() >= lo - 1e-7).all() and (z.numpy() <= hi + 1e-7).all()
    spec = milp.OutputSpec(np.array([[1.0, -1.0]]), np.zeros(1))
    screen = milp.spec_lower_bounds(net, lower, upper, tight, [spec])
    assert screen[0] <= brute_force_min_pooled(net, lower, upper, np.array([1.0, -1.0])) + 1e-7


def _net_2d(seed: int) -> ReluNetwork:
    """2 inputs -> dense 8 as a (2, 2, 2) image -> ReLU -> MaxPool 2x2 stride 1 -> dense 6 -> ReLU -> 3."""
    g = torch.Generator().manual_seed(seed)
    d1 = DenseOp(torch.randn(8, 2, generator=g, dtype=F64) * 3, torch.randn(8, generator=g, dtype=F64))
    d2 = DenseOp(torch.randn(6, 2, generator=g, dtype=F64) * 2, torch.randn(6, generator=g, dtype=F64))
    d3 = DenseOp(torch.randn(3, 6, generator=g, dtype=F64) * 2, torch.randn(3, generator=g, dtype=F64))
    stages = (AffineStage((d1, ReshapeOp((8,), (2, 2, 2)))), AffineStage((ReshapeOp((2, 1, 1), (2,)), d2)),
              AffineStage((d3,)))
    pools = (MaxPoolLayer((2, 2), (1, 1), ((0, 0), (0, 0)), (2, 2, 2)), None)
    return ReluNetwork(stages, (Activation.relu(8), Activation.relu(6)), pools)


@pytest.mark.parametrize("seed", [2, 6, 14])
def test_2d_distance_against_grid(seed):
    from lsub_helpers.distance import DistanceStatus, boundary_distance

    net = _net_2d(seed)
    x0 = torch.tensor([0.5, 0.5], dtype=F64)
    label = int(net.predict(x0[None])[0])
    n = 801
    g = torch.linspace(0, 1, n, dtype=F64)
    grid = torch.cartesian_prod(g, g)
    wrong = net.predict(grid) != label
    assert wrong.any()
    d_grid = float((grid[wrong] - x0).abs().max(1).values.min())
    for method in ("direct", "bisection"):
        r = boundary_distance(net, x0, label, method=method, attack=False, tol=1e-7, mip_rel_gap=1e-9)
        assert r.status is DistanceStatus.EXACT
        assert r.lower <= d_grid + 1e-9 and d_grid - r.upper <= 2 / (n - 1)
        assert int(net.predict(torch.as_tensor(r.counterexample)[None])[0]) != label


@pytest.mark.parametrize("pool", [(3, 2, 1), (2, 2, 0)])
def test_counterexample_through_max_pooling_passes_onnxruntime(tmp_path, pool):
    path = _export(maxpool_net(5, pool), (1, 8, 8), tmp_path / "net.onnx")
    _milp_counterexample_passes_onnxruntime(path, ReluNetwork.from_onnx(path), 5)


# ---------------------------------------------------------------------------------------------------
# Substitutes and Lemma 1
# ---------------------------------------------------------------------------------------------------


def test_substitutes_of_a_pooled_net():
    from lsub_helpers.pruning import prune

    x = torch.rand(20, 1, 8, 8, dtype=F64)
    net = ReluNetwork.from_torch(steep_maxpool_net(6, x[0]).double(), (1, 8, 8))
    # no ReLU replaced: the same network
    none = [torch.zeros(n, dtype=torch.bool) for n in net.layer_sizes]
    zeros = [torch.zeros(n, dtype=F64) for n in net.layer_sizes]
    same = net.with_substitutes(none, zeros, zeros)
    assert same.pools == net.pools
    torch.testing.assert_close(same.forward(x), net.forward(x), atol=0, rtol=0)
    # the activation pruner keeps the pattern at x0: g(x0) = f(x0), the pools stay exact
    x0 = x[0]
    label = int(net.predict(x0[None])[0])
    sub = prune(net, x0, label, method="activation", gamma=0.9, attack=None)
    g = sub.network
    assert g.pools == net.pools and g.num_relus < net.num_relus
    torch.testing.assert_close(g.forward(x0[None]), net.forward(x0[None]), atol=1e-12, rtol=0)
    # every ReLU replaced by the identity where active at x0 and 0 elsewhere: g equals f near x0 wherever
    # no replaced neuron changes its state
    pre0, _ = net.forward_all(x0[None])
    full = net.with_substitutes([torch.ones(n, dtype=torch.bool) for n in net.layer_sizes],
                                [(z[0] > 0).to(F64) for z in pre0], zeros)
    near = x0 + 1e-9 * torch.randn(5, 1, 8, 8, dtype=F64)
    torch.testing.assert_close(full.forward(near), net.forward(near), atol=1e-9, rtol=0)


def test_lipschitz_bound_through_max_pooling():
    from lsub_helpers.lemma import lipschitz_margin

    net = ReluNetwork.from_torch(maxpool_net(7).double(), (1, 8, 8))
    x0 = torch.rand(1, 8, 8, dtype=F64)
    for eps in (0.005, 0.05):
        bound = lipschitz_margin(net, x0, eps, 0, 1)
        pts = (x0 + eps * (2 * torch.rand(200, 1, 8, 8, dtype=F64) - 1)).requires_grad_(True)
        m = net.margin(pts, 0, 1)
        (grad,) = torch.autograd.grad(m.sum(), pts)
        assert float(grad.abs().flatten(1).sum(1).max()) <= bound + 1e-9


# ---------------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------------


def _misclassified_property(lo: np.ndarray, hi: np.ndarray, label: int, classes: int = 3) -> str:
    """VNN-LIB: the box ``[lo, hi]`` and some other class at least as large as ``label``."""
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(lo.size))
    text += "".join(f"(declare-const Y_{i} Real)\n" for i in range(classes))
    text += "".join(f"(assert (>= X_{i} {float(lo[i])!r}))\n(assert (<= X_{i} {float(hi[i])!r}))\n" for i in range(lo.size))
    others = " ".join(f"(and (>= Y_{t} Y_{label}))" for t in range(classes) if t != label)
    return text + f"(assert (or {others}))\n"


def test_pooled_bn_net_end_to_end(tmp_path):
    """A max-pooled, batch-normalised conv net exported from PyTorch through verify, boundary_distance,
    estimate_distance and ``python -m lsub_helpers vnncomp``; every counterexample checked by onnxruntime."""
    from lsub_helpers.__main__ import main as cli_main
    from lsub_helpers.distance import DistanceStatus, boundary_distance, verify
    from lsub_helpers.estimate import estimate_distance
    from lsub_helpers.milp import VerificationStatus

    x0 = torch.from_numpy(np.random.default_rng(8).random((1, 8, 8)))
    seq = steep_maxpool_net(8, x0)
    path = _export(seq, (1, 8, 8), tmp_path / "net.onnx")
    net = ReluNetwork.from_onnx(path)
    label = int(net.predict(x0[None])[0])
    assert label == 0
    d = boundary_distance(net, x0, label, time_limit=120)
    assert d.status is DistanceStatus.EXACT and 0 < d.value < 1
    assert int(net.predict(d.counterexample[None])[0]) != label
    b = boundary_distance(net, x0, label, method="bisection", time_limit=120, tol=1e-6)
    assert b.lower <= d.value * (1 + 1e-4) and d.value <= b.upper * (1 + 1e-4)
    assert verify(net, x0, label, 0.98 * d.value, time_limit=120).status is VerificationStatus.ROBUST
    beyond = verify(net, x0, label, 1.2 * d.value, time_limit=120, verdict_only=False)
    assert beyond.status is VerificationStatus.NOT_ROBUST
    y = _ort(path, beyond.counterexample.numpy().astype(np.float32).reshape(1, 1, 8, 8))[0]
    assert int(np.argmax(y)) != label
    est = estimate_distance(net, x0, label, method="activation", gamma=0.9, time_limit=120)
    assert est.lower <= d.value * (1 + 1e-4) and est.upper >= d.value * (1 - 1e-4)
    # vnncomp on the box of radius 1.2 d: a counterexample exists (sat, checked by onnxruntime)
    x0f = x0.numpy().reshape(-1)
    lo, hi = np.clip(x0f - 1.2 * d.value, 0, 1), np.clip(x0f + 1.2 * d.value, 0, 1)
    prop = tmp_path / "p.vnnlib"
    prop.write_text(_misclassified_property(lo, hi, label))
    out = tmp_path / "out.txt"
    assert cli_main(["vnncomp", str(path), str(prop), str(out), "120"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "sat"
    xs = np.array([float(l.strip(" ()").split()[1]) for l in lines[1:] if "X_" in l])
    assert np.all(xs >= lo) and np.all(xs <= hi)
    y = _ort(path, xs.astype(np.float32).reshape(1, 1, 8, 8))[0]
    assert y[1] >= y[0] or y[2] >= y[0]
    # and at 0.98 d none exists: unsat
    lo, hi = np.clip(x0f - 0.98 * d.value, 0, 1), np.clip(x0f + 0.98 * d.value, 0, 1)
    prop.write_text(_misclassified_property(lo, hi, label))
    assert cli_main(["vnncomp", str(path), str(prop), str(out), "120"]) == 0
    assert out.read_text().splitlines()[0] == "unsat"
