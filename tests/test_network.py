"""ReluNetwork: conversion from torch and ONNX, evaluation, substitutes, clear errors."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lsub_helpers.network import Normalize, ReluNetwork, UnsupportedLayerError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cnn(norm: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [Normalize([0.4, 0.5], [0.2, 0.3])] if norm else []
    layers += [
        nn.Conv2d(2, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 3, 3, stride=1, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 7),
        nn.ReLU(),
        nn.Linear(7, 3),
    ]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_from_torch_matches_torch(dtype):
    seq = cnn().to(dtype)
    net = ReluNetwork.from_torch(seq, (2, 8, 8))
    x = torch.rand(5, 2, 8, 8, dtype=dtype)
    out = net.forward(x)
    assert out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out, seq(x).detach(), atol=tol, rtol=0)
    assert net.layer_sizes == (4 * 4 * 4, 3 * 4 * 4, 7)
    assert net.num_classes == 3 and net.input_shape == (2, 8, 8)


def test_dense_stage_matrices_are_exact_with_normalisation_and_zero_padding():
    # Padding after a normalisation pads with 0 in the normalised space, i.e. the mean in input space:
    # the dense normal form must reproduce that exactly.
    seq = cnn().double()
    net = ReluNetwork.from_torch(seq, (2, 8, 8))
    x = torch.rand(3, 2, 8, 8, dtype=torch.float64)
    h = x.reshape(3, -1)
    for k, stage in enumerate(net.stages):
        h = h @ stage.weight.T + stage.bias
        if k < len(net.activations):
            h = torch.relu(h)
    torch.testing.assert_close(h, seq(x).detach(), atol=1e-12, rtol=0)
    sparse = net.stages[0].sparse_weight()
    assert sparse.shape == (64, 128)
    assert sparse.nnz < 64 * 128 / 2  # a conv is sparse


def test_forward_all_returns_pre_activations():
    seq = cnn(norm=False).double()
    net = ReluNetwork.from_torch(seq, (2, 8, 8))
    x = torch.rand(2, 2, 8, 8, dtype=torch.float64)
    pre, logits = net.forward_all(x)
    torch.testing.assert_close(pre[0], seq[0](x).reshape(2, -1))
    torch.testing.assert_close(logits, seq(x))


def test_substitutes_replace_only_chosen_neurons():
    net = ReluNetwork.from_torch(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)).double(), (2,))
    w = net.stages[0].ops[0].weight
    b = net.stages[0].ops[0].bias
    mask = torch.tensor([True, False, True])
    slope = torch.tensor([0.5, 9.0, 0.0], dtype=torch.float64)
    offset = torch.tensor([1.0, 9.0, 2.0], dtype=torch.float64)
    sub = net.with_substitutes([mask], [slope], [offset])
    assert sub.num_relus == 1 and net.num_relus == 3
    x = torch.randn(10, 2, dtype=torch.float64)
    z = x @ w.T + b
    hidden = torch.stack([0.5 * z[:, 0] + 1.0, torch.relu(z[:, 1]), torch.full_like(z[:, 2], 2.0)], 1)
    expected = net.stages[1].apply(hidden)
    torch.testing.assert_close(sub.forward(x), expected)
    torch.testing.assert_close(sub.original().forward(x), net.forward(x))
    # the original is untouched (immutable)
    assert net.activations[0].num_replaced == 0


def test_to_torch_roundtrip():
    net = ReluNetwork.from_torch(cnn(), (2, 8, 8))
    x = torch.rand(4, 2, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(net.to_torch()(x).detach(), net.forward(x))


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (nn.Sequential(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2)), "Sigmoid at position 1"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)), "MaxPool2d at position 2: ceil"),
        (nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)), "does not approximate Tanh"),
        (nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.ReLU(), nn.Linear(3, 2)), "two ReLUs"),
        (nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.Softmax(dim=1)), "softmax='drop'"),
        (nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1), nn.Linear(3, 2)), "only be the last layer"),
        (nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.LeakyReLU()), "LeakyReLU at position 3"),
    ],
)
def test_unsupported_layers_are_named(bad, fragment):
    shape = (1, 6, 6) if isinstance(bad[0], nn.Conv2d) else (4,)
    with pytest.raises(UnsupportedLayerError, match=fragment):
        ReluNetwork.from_torch(bad, shape)


def test_shape_errors():
    with pytest.raises(ValueError, match="expects 5 inputs"):
        ReluNetwork.from_torch(nn.Sequential(nn.Linear(5, 2)), (4,))
    net = ReluNetwork.from_torch(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), (4,))
    with pytest.raises(ValueError, match="wrong input shape"):
        net.forward(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="NaN"):
        net.forward(torch.full((1, 4), float("nan")))
    with pytest.raises(ValueError, match="out of range"):
        net.check_label(2)


@pytest.mark.skipif(not (SHARED / "vnncomp").exists(), reason="shared VNN-COMP data absent")
def test_onnx_networks_match_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    paths = sorted(glob.glob(str(SHARED / "vnncomp" / "*" / "onnx" / "*.onnx")))
    assert paths
    rng = np.random.default_rng(0)
    for p in paths:
        net = ReluNetwork.from_onnx(p)
        sess = ort.InferenceSession(p)
        name = sess.get_inputs()[0].name
        x = rng.random((8,) + net.input_shape, dtype=np.float32)
        ref = np.concatenate([sess.run(None, {name: x[i : i + 1]})[0].reshape(1, -1) for i in range(8)])
        ours = net.forward(torch.from_numpy(x)).numpy()
        assert np.abs(ours - ref).max() < 1e-5, p


def test_onnx_export_roundtrip_and_unsupported_op(tmp_path):
    pytest.importorskip("onnx")
    seq = nn.Sequential(
        Normalize([0.3], [0.2]), nn.Conv2d(1, 3, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 9, 4)
    ).eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(seq, torch.rand(1, 1, 5, 5) + 0, str(path), dynamo=False)
    net = ReluNetwork.from_onnx(path)
    x = torch.rand(3, 1, 5, 5)
    torch.testing.assert_close(net.forward(x), seq(x).detach(), atol=1e-5, rtol=0)

    bad = nn.Sequential(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2)).eval()
    bad_path = tmp_path / "bad.onnx"
    torch.onnx.export(bad, torch.rand(1, 4), str(bad_path), dynamo=False)
    with pytest.raises(UnsupportedLayerError, match="Sigmoid"):
        ReluNetwork.from_onnx(bad_path)

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx file")
    with pytest.raises(ValueError, match="cannot read ONNX"):
        ReluNetwork.from_onnx(corrupt)
