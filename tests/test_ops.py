"""The affine ops beyond dense/conv (batch norm, average pooling, zero padding, transpose, identity, dropout),
final ReLU and Softmax outputs, and refusals: each checked against an independent reference (torch,
onnxruntime, brute force over activation patterns) and through bounds and the MILP."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from lsub_helpers import bounds as B
from lsub_helpers import milp
from lsub_helpers.bounds.patches import conv_chain
from lsub_helpers.network import AffineStage, DenseOp, ReluNetwork, UnsupportedLayerError
from lsub_helpers.io.onnx import load_onnx
from lsub_helpers.vnnlib import read_vnnlib, verify_vnnlib

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

F64 = torch.float64
METHODS = list(B.BoundMethod)


def _randomise_bn(seq: nn.Sequential, seed: int) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    for m in seq.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(c, generator=gen))
            m.bias.data.copy_(torch.randn(c, generator=gen) * 0.2)
    return seq.eval()


def pooled_net(seed: int = 0, *, pad_count: bool = True) -> nn.Sequential:
    """Conv + batch norm + average pooling (padded) + zero padding + dropout + identity + BN1d, (1, 8, 8) -> 3."""
    torch.manual_seed(seed)
    seq = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=pad_count),
        nn.ZeroPad2d((1, 0, 1, 0)), nn.Conv2d(4, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
        nn.Flatten(), nn.Linear(16, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Identity(), nn.Linear(6, 3),
    )
    return _randomise_bn(seq, seed)


def _ort(path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0].reshape(1, -1) for i in range(len(x))])


def _export(seq, shape, path, **kw):
    torch.onnx.export(seq, torch.rand((1,) + shape), str(path), dynamo=False, do_constant_folding=False, **kw)
    return path


def _assert_sound(net: ReluNetwork, b, points: torch.Tensor):
    pre, out = net.forward_all(points)
    for (lo, hi), z in zip(b.pre_activation, pre):
        assert (z >= lo - 1e-9).all() and (z <= hi + 1e-9).all()
    assert (out >= b.output[0] - 1e-9).all() and (out <= b.output[1] + 1e-9).all()


# ---------------------------------------------------------------------------------------------------
# Forward pass against torch and onnxruntime
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pad_count", [True, False])
def test_from_torch_matches_torch(pad_count):
    seq = pooled_net(1, pad_count=pad_count).double()
    net = ReluNetwork.from_torch(seq, (1, 8, 8))
    x = torch.rand(6, 1, 8, 8, dtype=F64)
    torch.testing.assert_close(net.forward(x), seq(x).detach(), atol=1e-12, rtol=0)
    # the batch norms after a conv and a dense layer are folded: three ReLU layers, no extra stage
    assert net.layer_sizes == (4 * 8 * 8, 16, 6)
    torch.testing.assert_close(net.to_torch()(x), net.forward(x))
    # the dense stage matrices reproduce the forward pass (used by the MILP)
    h = x.reshape(6, -1)
    for k, stage in enumerate(net.stages):
        h = h @ stage.weight.T + stage.bias
        h = torch.relu(h) if k < len(net.activations) else h
    torch.testing.assert_close(h, seq(x).detach(), atol=1e-12, rtol=0)


@pytest.mark.parametrize("pad_count", [True, False])
def test_exported_pooled_bn_net_matches_onnxruntime(tmp_path, pad_count):
    seq = pooled_net(2, pad_count=pad_count)
    path = _export(seq, (1, 8, 8), tmp_path / "net.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"BatchNormalization", "AveragePool", "Pad", "Conv"} <= ops  # the ops under test are in the file
    net = ReluNetwork.from_onnx(path)
    x = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
    ours = net.forward(torch.from_numpy(x).to(F64)).numpy()
    np.testing.assert_allclose(ours, _ort(path, x), atol=1e-6, rtol=0)


def _tensor(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def _ints(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.int64), name)


def hand_graph(opset: int, *, final: str = "none", seed: int = 0):
    """An NHWC input (6, 6, 2), built op by op with onnx.helper: Transpose, Identity, Pad, Conv with
    asymmetric pads, BatchNormalization, Relu, AveragePool (count_include_pad 0, pads), Dropout,
    GlobalAveragePool, Flatten, Gemm (transB 0, alpha, beta), Relu, MatMul + Add, and a final op."""
    rng = np.random.default_rng(seed)
    inits = [
        _tensor("cw", rng.normal(size=(3, 2, 3, 3))), _tensor("cb", rng.normal(size=3) * 0.1),
        _tensor("g", rng.normal(size=3)), _tensor("be", rng.normal(size=3)), _tensor("mu", rng.normal(size=3)),
        _tensor("var", rng.random(3) + 0.5),
        _tensor("gw", rng.normal(size=(3, 5))), _tensor("gb", rng.normal(size=(1, 5))),
        _tensor("mw", rng.normal(size=(5, 4))), _tensor("mb", rng.normal(size=4)),
    ]
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2], name="nhwc"),
        helper.make_node("Identity", ["t"], ["i"]),
    ]
    if opset >= 11:
        inits += [_ints("pads", [0, 0, 1, 0, 0, 0, 0, 1]), _tensor("zero", 0.0)]
        nodes.append(helper.make_node("Pad", ["i", "pads", "zero"], ["p"], mode="constant"))
    else:
        nodes.append(helper.make_node("Pad", ["i"], ["p"], pads=[0, 0, 1, 0, 0, 0, 0, 1], value=0.0))
    nodes += [
        helper.make_node("Conv", ["p", "cw", "cb"], ["c"], pads=[0, 1, 1, 0], strides=[1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["bn"], epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("AveragePool", ["r"], ["ap"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         count_include_pad=0),
        helper.make_node("Dropout", ["ap"], ["d"]),
        helper.make_node("GlobalAveragePool", ["d"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "gw", "gb"], ["gm"], alpha=0.7, beta=1.3, transB=0),
        helper.make_node("Relu", ["gm"], ["r2"]),
        helper.make_node("MatMul", ["r2", "mw"], ["mm"]),
        helper.make_node("Add", ["mm", "mb"], ["y" if final == "none" else "logits"]),
    ]
    if final != "none":
        attrs = {} if final == "Relu" else {"axis": -1 if opset >= 13 else 1}
        nodes.append(helper.make_node(final, ["logits"], ["y"], **attrs))
    graph = helper.make_graph(nodes, "hand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 6, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("opset", [10, 13, 18])
def test_hand_built_graph_matches_onnxruntime(tmp_path, opset):
    path = tmp_path / "hand.onnx"
    onnx.save(hand_graph(opset), str(path))
    net = ReluNetwork.from_onnx(path)
    assert net.input_shape == (6, 6, 2)
    x = np.random.default_rng(1).random((8, 6, 6, 2), dtype=np.float32)
    np.testing.assert_allclose(net.forward(torch.from_numpy(x).to(F64)).numpy(), _ort(path, x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("final", ["Relu", "Softmax", "LogSoftmax"])
def test_output_layers(tmp_path, final):
    path = tmp_path / "out.onnx"
    onnx.save(hand_graph(13, final=final), str(path))
    x = np.random.default_rng(2).random((8, 6, 6, 2), dtype=np.float32)
    ref = _ort(path, x)
    if final == "Relu":
        net = ReluNetwork.from_onnx(path)
        assert len(net.activations) == 3  # the final ReLU is a hidden layer followed by an identity stage
        np.testing.assert_allclose(net.forward(torch.from_numpy(x).to(F64)).numpy(), ref, atol=1e-6, rtol=0)
        lo, hi = torch.zeros(net.input_shape, dtype=F64), torch.ones(net.input_shape, dtype=F64)
        for method in ("ibp", "fastlin_ibp"):  # post-activation outputs (CROWN's linear lower line may dip below)
            assert (B.compute_bounds_box(net, lo, hi, method=method).output[0] >= 0).all()
        return
    with pytest.raises(UnsupportedLayerError, match="softmax='drop'"):
        ReluNetwork.from_onnx(path)
    loaded = load_onnx(path, softmax="drop")
    assert loaded.dropped.name == final.upper().replace("LOGSOFTMAX", "LOG_SOFTMAX")
    logits = loaded.net.forward(torch.from_numpy(x).to(F64))
    np.testing.assert_array_equal(logits.argmax(1).numpy(), ref.argmax(1))
    again = torch.softmax(logits, 1) if final == "Softmax" else torch.log_softmax(logits, 1)
    np.testing.assert_allclose(again.numpy(), ref, atol=1e-6, rtol=0)


def _single(op_type, tmp_path, inputs=("x",), opset=13, shape=(1, 4), extra=(), **attrs):
    node = helper.make_node(op_type, list(inputs), ["y"], name="the_node", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])], list(extra))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = tmp_path / f"{op_type}.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("op_type, kwargs, fragment", [
    ("Sigmoid", {}, "refuses to approximate Sigmoid"),
    ("Tanh", {}, "refuses to approximate Tanh"),
    ("Erf", {}, "export the model without it"),
    ("Pad", {"shape": (1, 1, 2, 2), "inputs": ("x", "p"), "mode": "reflect",
             "extra": [_ints("p", [0, 0, 1, 1, 0, 0, 1, 1])]}, "only constant zero padding"),
    ("Pad", {"shape": (1, 1, 2, 2), "inputs": ("x", "p", "v"),
             "extra": [_ints("p", [0, 0, 1, 1, 0, 0, 1, 1]), _tensor("v", 1.0)]}, "only zero"),
    ("Gemm", {"inputs": ("x", "w"), "transA": 1, "extra": [_tensor("w", np.ones((4, 2)))]}, "transA=1"),
])
def test_refusals_name_op_node_and_remedy(tmp_path, op_type, kwargs, fragment):
    path = _single(op_type, tmp_path, **kwargs)
    with pytest.raises(UnsupportedLayerError) as err:
        ReluNetwork.from_onnx(path)
    msg = str(err.value)
    assert op_type in msg and "the_node" in msg and fragment in msg


def test_gz_file_is_read(tmp_path):
    import gzip

    path = tmp_path / "hand.onnx"
    onnx.save(hand_graph(13), str(path))
    gz = tmp_path / "hand.onnx.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    x = torch.rand(3, 6, 6, 2, dtype=F64)
    torch.testing.assert_close(ReluNetwork.from_onnx(gz).forward(x), ReluNetwork.from_onnx(path).forward(x))


# ---------------------------------------------------------------------------------------------------
# Bounds
# ---------------------------------------------------------------------------------------------------


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), pad_count=st.booleans(), width=st.floats(0.01, 0.5),
       intermediate=st.sampled_from(list(B.Intermediate)))
def test_bounds_sound_through_pooling_and_batch_norm(seed, pad_count, width, intermediate):
    net = ReluNetwork.from_torch(pooled_net(seed % 7, pad_count=pad_count).double(), (1, 8, 8))
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(net.input_shape, generator=gen, dtype=F64)
    radius = torch.rand(net.input_shape, generator=gen, dtype=F64) * width
    points = center + radius * (2 * torch.rand((1000,) + net.input_shape, generator=gen, dtype=F64) - 1)
    points[:8] = center + radius * torch.sign(torch.randn((8,) + net.input_shape, generator=gen, dtype=F64))
    for method in METHODS:
        _assert_sound(net, B.compute_bounds_box(net, center - radius, center + radius, method=method,
                                                intermediate=intermediate), points)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), width=st.floats(0.01, 0.5))
def test_bounds_sound_on_hand_graph_and_equal_to_dense_path(tmp_path_factory, seed, width):
    path = tmp_path_factory.mktemp("g") / "hand.onnx"
    onnx.save(hand_graph(13, final="Relu", seed=seed), str(path))
    net = ReluNetwork.from_onnx(path)
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(net.input_shape, generator=gen, dtype=F64)
    radius = torch.rand(net.input_shape, generator=gen, dtype=F64) * width
    points = center + radius * (2 * torch.rand((1000,) + net.input_shape, generator=gen, dtype=F64) - 1)
    # the same network with every stage as one dense matrix: bounds must not depend on how a stage is stored
    dense = ReluNetwork(tuple(AffineStage((DenseOp(s.weight, s.bias),)) for s in net.stages), net.activations)
    for method in METHODS:
        b = B.compute_bounds_box(net, center - radius, center + radius, method=method)
        _assert_sound(net, b, points)
        d = B.compute_bounds_box(dense, (center - radius).reshape(-1), (center + radius).reshape(-1), method=method)
        for (l1, u1), (l2, u2) in zip(b.pre_activation + (b.output,), d.pre_activation + (d.output,)):
            torch.testing.assert_close(l1, l2, atol=1e-9, rtol=1e-9)
            torch.testing.assert_close(u1, u2, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_conv_chain_after_transpose_and_pad_equals_dense_path(seed):
    """The "patches" back-substitution of a chain of convolutions, entered through non-mixing ops (an NHWC
    transpose and a zero padding) folded into the input box, gives the bounds of the dense path."""
    from lsub_helpers.ops import ConvOp, FlattenOp, PadOp, TransposeOp

    gen = torch.Generator().manual_seed(seed)
    conv1 = ConvOp(torch.randn(3, 2, 3, 3, generator=gen, dtype=F64), torch.randn(3, generator=gen, dtype=F64) * 0.1,
                   (2, 2), (0, 0), (2, 8, 7))
    conv2 = ConvOp(torch.randn(4, 3, 2, 2, generator=gen, dtype=F64), torch.randn(4, generator=gen, dtype=F64) * 0.1,
                   (1, 1), (1, 1), conv1.out_shape)
    ops = [("affine", TransposeOp((2, 0, 1), (7, 6, 2))), ("affine", PadOp(((0, 0), (1, 0), (0, 1)), (2, 7, 6))),
           ("affine", conv1), ("relu", None), ("affine", conv2), ("relu", None),
           ("affine", FlattenOp(conv2.out_shape))]
    n_flat = math.prod(conv2.out_shape)
    ops.append(("affine", DenseOp(torch.randn(3, n_flat, generator=gen, dtype=F64), torch.zeros(3, dtype=F64))))
    net = ReluNetwork._from_op_list(ops, (7, 6, 2))
    assert conv_chain(net, 1)  # the patches path is the one under test
    dense = ReluNetwork(tuple(AffineStage((DenseOp(s.weight, s.bias),)) for s in net.stages), net.activations)
    center = torch.rand(net.input_shape, generator=gen, dtype=F64)
    lo, hi = center - 0.1, center + 0.1
    points = lo + (hi - lo) * torch.rand((500,) + net.input_shape, generator=gen, dtype=F64)
    for method in METHODS:
        b = B.compute_bounds_box(net, lo, hi, method=method)
        _assert_sound(net, b, points)
        d = B.compute_bounds_box(dense, lo.reshape(-1), hi.reshape(-1), method=method)
        for (l1, u1), (l2, u2) in zip(b.pre_activation + (b.output,), d.pre_activation + (d.output,)):
            torch.testing.assert_close(l1, l2, atol=1e-9, rtol=1e-9)
            torch.testing.assert_close(u1, u2, atol=1e-9, rtol=1e-9)


# ---------------------------------------------------------------------------------------------------
# MILP against brute force, counterexamples against onnxruntime
# ---------------------------------------------------------------------------------------------------


def tiny_pooled(seed: int, final_relu: bool = False) -> ReluNetwork:
    torch.manual_seed(seed)
    seq = nn.Sequential(
        nn.AvgPool2d(2), nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(1, 2, 2, stride=2), nn.BatchNorm2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2), *([nn.ReLU()] if final_relu else []),
    )
    return ReluNetwork.from_torch(_randomise_bn(seq, seed).double(), (1, 4, 4))


def brute_force_min(net: ReluNetwork, lower: np.ndarray, upper: np.ndarray, c: np.ndarray) -> float:
    """``min c . f(x)`` over the box by one LP per activation pattern (every pattern of every layer)."""
    from scipy.optimize import linprog

    best = np.inf
    sizes = net.layer_sizes
    for pattern in itertools.product([0, 1], repeat=sum(sizes)):
        a_ub, b_ub = [], []
        w_x, w_0 = np.eye(net.input_size), np.zeros(net.input_size)  # current layer input = w_x x + w_0
        start = 0
        for k, stage in enumerate(net.stages):
            w, b = stage.weight.numpy(), stage.bias.numpy()
            z_x, z_0 = w @ w_x, w @ w_0 + b
            if k == len(net.activations):
                break
            on = np.array(pattern[start:start + sizes[k]], dtype=bool)
            start += sizes[k]
            sign = np.where(on, -1.0, 1.0)  # active: z >= 0 (-z <= 0); inactive: z <= 0
            a_ub.append(sign[:, None] * z_x)
            b_ub.append(-sign * z_0)
            w_x, w_0 = z_x * on[:, None], z_0 * on
        res = linprog(c @ z_x, A_ub=np.vstack(a_ub), b_ub=np.concatenate(b_ub),
                      bounds=list(zip(lower, upper)), method="highs")
        if res.status == 0:
            best = min(best, res.fun + c @ z_0)
    return best


@pytest.mark.parametrize("seed, final_relu", [(1, False), (2, False), (3, False), (1, True), (3, True)])
def test_milp_optimum_equals_brute_force_with_pooling(seed, final_relu):
    net = tiny_pooled(seed, final_relu)
    assert len(net.activations) == 2 + final_relu
    rng = np.random.default_rng(seed)
    x0 = rng.random(net.input_size)
    lower, upper = np.clip(x0 - 0.4, 0, 1), np.clip(x0 + 0.4, 0, 1)
    spec = milp.OutputSpec(np.array([[1.0, -1.0]]), np.zeros(1))
    b = milp.compute_bounds(net, lower, upper, "crown")
    model = milp.build_model(net, lower, upper, b, spec=spec)
    assert model.counts["binaries"] >= 1  # the pooled layers leave unstable ReLUs: a real MILP
    res = milp.solve_model(model, time_limit=60, mip_rel_gap=0.0)
    assert res.status is milp.SolverStatus.OPTIMAL
    expect = brute_force_min(net, lower, upper, np.array([1.0, -1.0]))
    assert abs(res.objective - expect) <= 1e-6 * max(1.0, abs(expect))
    y = net.forward(torch.from_numpy(res.x)[None].reshape((1,) + net.input_shape))[0].numpy()
    assert abs((y[0] - y[1]) - expect) <= 1e-6 * max(1.0, abs(expect))


def _milp_counterexample_passes_onnxruntime(path, net: ReluNetwork, seed: int) -> None:
    """A property that a sampled point of a small box reaches (so it is sat), decided by the MILP alone
    (no falsifier); the counterexample must reach it in onnxruntime (float32) too."""
    rng = np.random.default_rng(seed)
    n, shape = net.input_size, (1,) + tuple(net.input_shape)
    x0 = rng.random(shape)
    samples = torch.from_numpy(np.clip(x0 + rng.uniform(-0.05, 0.05, (2000,) + shape[1:]), 0, 1))
    y = net.forward(samples)
    label, target = 0, 1
    reach = float((y[:, target] - y[:, label]).max())
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(n))
    text += "".join(f"(declare-const Y_{i} Real)\n" for i in range(net.num_classes))
    lo, hi = np.clip(x0.reshape(-1) - 0.05, 0, 1), np.clip(x0.reshape(-1) + 0.05, 0, 1)
    text += "".join(f"(assert (>= X_{i} {float(lo[i])!r}))\n(assert (<= X_{i} {float(hi[i])!r}))\n" for i in range(n))
    text += f"(assert (>= (- Y_{target} Y_{label}) {reach!r}))\n"
    res = verify_vnnlib(net, read_vnnlib(text), time_limit=60, attack_steps=0)  # the MILP must find it
    assert res.result == "sat" and len(res.runs) >= 1
    y = _ort(path, res.x.astype(np.float32).reshape(shape))[0]
    assert y[target] - y[label] >= reach


@pytest.mark.parametrize("pad_count", [True, False])
def test_counterexample_through_pooled_bn_net_passes_onnxruntime(tmp_path, pad_count):
    path = _export(pooled_net(3, pad_count=pad_count), (1, 8, 8), tmp_path / "net.onnx")
    _milp_counterexample_passes_onnxruntime(path, ReluNetwork.from_onnx(path), 3)


@pytest.mark.parametrize("opset", [10, 18])
def test_counterexample_through_hand_graph_passes_onnxruntime(tmp_path, opset):
    """Transpose, Identity, Pad, asymmetric Conv pads, BatchNormalization, AveragePool without the pads in
    the count, Dropout, GlobalAveragePool, Gemm (transB 0, alpha, beta), MatMul + Add."""
    path = tmp_path / "hand.onnx"
    onnx.save(hand_graph(opset, seed=opset), str(path))
    _milp_counterexample_passes_onnxruntime(path, ReluNetwork.from_onnx(path), opset)


def test_pooled_bn_net_end_to_end_verify_distance_estimate(tmp_path):
    """The issue's acceptance path: a pooled, batch-normalised conv net exported from PyTorch through
    verify, boundary_distance and estimate_distance (vnncomp: tests/test_vnncomp_suite.py)."""
    from lsub_helpers.distance import DistanceStatus, boundary_distance, verify
    from lsub_helpers.estimate import estimate_distance
    from lsub_helpers.milp import VerificationStatus

    seq = pooled_net(4)
    x0 = torch.from_numpy(np.random.default_rng(4).random((1, 8, 8)))
    with torch.no_grad():  # a steeper output layer whose class 0 wins at x0 by 0.5 over class 1
        seq[-1].weight *= 1000
        y0 = seq(x0[None].float())[0]
        seq[-1].bias += torch.tensor([0.5, 0.0, -5.0]) - y0
    net = ReluNetwork.from_onnx(_export(seq, (1, 8, 8), tmp_path / "net.onnx"))
    label = int(net.predict(x0[None])[0])
    assert label == 0
    d = boundary_distance(net, x0, label, time_limit=120)
    assert d.status is DistanceStatus.EXACT and 0 < d.value < 1
    assert int(net.predict(d.counterexample[None])[0]) != label  # on the boundary: float64 re-check only
    # verify agrees on both sides of the distance; the deepest counterexample beyond it passes onnxruntime
    assert verify(net, x0, label, 0.98 * d.value, time_limit=120).status is VerificationStatus.ROBUST
    beyond = verify(net, x0, label, 1.2 * d.value, time_limit=120, verdict_only=False)
    assert beyond.status is VerificationStatus.NOT_ROBUST
    y = _ort(tmp_path / "net.onnx", beyond.counterexample.numpy().astype(np.float32).reshape(1, 1, 8, 8))[0]
    assert int(np.argmax(y)) != label
    est = estimate_distance(net, x0, label, method="activation", gamma=0.9, time_limit=120)
    assert est.lower <= d.value * (1 + 1e-4) and est.upper >= d.value * (1 - 1e-4)  # the certified interval holds
