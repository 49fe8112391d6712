"""lsub_helpers.models: the paper's CNNa, small networks, and the public weights of ../shared."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lsub_helpers import data, models
from lsub_helpers.network import Normalize, ReluNetwork

SHARED = Path(os.environ.get("LSUB_SHARED", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_shared = pytest.mark.skipif(not (SHARED / "models" / "models.json").is_file(), reason="shared models absent")

PUBLIC_CNNA_KEYS = ["0.weight", "0.bias", "2.weight", "2.bias", "5.weight", "5.bias", "7.weight", "7.bias"]


@pytest.mark.parametrize("channels, size, params, flat, relus", [
    (1, 28, 166_406, 1568, 3136 + 1568 + 100),  # the paper: 166,406 parameters on MNIST
    (3, 32, 214_918, 2048, 4096 + 2048 + 100),  # 214,918 on CIFAR-10
])
def test_cnna_matches_the_paper(channels, size, params, flat, relus):
    m = models.cnna(channels, size)
    assert models.count_parameters(m) == params
    assert [type(l).__name__ for l in m] == ["Conv2d", "ReLU", "Conv2d", "ReLU", "Flatten", "Linear", "ReLU",
                                             "Linear"]
    c1, c2 = m[0], m[2]
    assert (c1.in_channels, c1.out_channels, c1.kernel_size, c1.stride, c1.padding) == (channels, 16, (4, 4),
                                                                                         (2, 2), (1, 1))
    assert (c2.in_channels, c2.out_channels, c2.kernel_size, c2.stride, c2.padding) == (16, 32, (4, 4), (2, 2),
                                                                                         (1, 1))
    assert (m[5].in_features, m[5].out_features, m[7].out_features) == (flat, 100, 10)
    assert list(m.state_dict()) == PUBLIC_CNNA_KEYS
    net = ReluNetwork.from_torch(m, (channels, size, size))
    assert net.num_relus == relus and net.num_classes == 10
    x = torch.rand(3, channels, size, size)
    torch.testing.assert_close(net.forward(x).float(), m(x), rtol=1e-4, atol=1e-5)


def test_cnna_with_normalization_puts_it_first():
    m = models.cnna(3, 32, normalization={"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.25]})
    assert isinstance(m[0], Normalize) and models.count_parameters(m) == 214_918
    x = torch.rand(2, 3, 32, 32)
    plain = nn.Sequential(*list(m)[1:])
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.2, 0.25]).view(1, 3, 1, 1)
    expected = plain((x - mean) / std)
    torch.testing.assert_close(m(x), expected)
    with pytest.raises(ValueError, match="divisible by 4"):
        models.cnna(1, 30)


def test_small_networks():
    toy = models.toy2d_net()
    assert models.count_parameters(toy) == (2 * 16 + 16) + (16 * 16 + 16) + (16 * 3 + 3) == 371
    assert toy(torch.rand(5, 2)).shape == (5, 3)
    m = models.mlp(784, [32, 32], 10)
    assert models.count_parameters(m) == 784 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10
    assert isinstance(m[0], nn.Flatten) and m(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    cnn = models.small_cnn(1, 8)
    assert ReluNetwork.from_torch(cnn, (1, 8, 8)).num_relus == 8 * 4 * 4 + 16 * 2 * 2 + 32 == 224


# ------------------------------------------------------------------------------------------------ public


def test_load_public_without_shared_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="LSUB_SHARED"):
        models.load_public("cnna_cifar10_sdp_adv", root=tmp_path)


@needs_shared
def test_public_keys_are_the_plain_cnna_layout():
    sd = torch.load(SHARED / "models" / "cnna_cifar10_sdp_adv.pt", weights_only=True)
    assert list(sd) == PUBLIC_CNNA_KEYS


@needs_shared
def test_load_public_applies_normalization_and_rejects_unknown():
    model, meta = models.load_public("cnna_cifar10_sdp_adv", root=SHARED)
    assert isinstance(model[0], Normalize) and not model.training
    torch.testing.assert_close(model[0].mean, torch.tensor(meta["input_normalization"]["mean"], dtype=torch.float32))
    assert models.count_parameters(model) == meta["n_params"] == 214_918
    plain, _ = models.load_public("cnna_mnist_wk17a_lp_eps0.1_mipverify", root=SHARED / "models")
    assert isinstance(plain[0], nn.Conv2d)
    with pytest.raises(KeyError, match="known: cnna_mnist_wk17a"):
        models.load_public("resnet50", root=SHARED)


def _eval_set(meta: dict, cache: dict):
    where = meta["accuracy_eval_set"]
    if where not in cache:
        if where == "MNIST test 10000":
            cache[where] = data.load("mnist", "test", root=SHARED / "mnist", download=False)
        elif where == "Fashion-MNIST test 10000":
            try:
                cache[where] = data.load("fashion_mnist", "test", download=False)
            except data.DataUnavailableError:
                cache[where] = None
        elif where == "CIFAR10 exact test images: first100 + sdp200 (300)":
            a = data.load_cifar10_npz(SHARED / "cifar10" / "cifar10_test_first100.npz")
            b = data.load_cifar10_npz(SHARED / "cifar10" / "cifar10_test_sdp200.npz")
            cache[where] = data.Dataset(torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), "cifar10", "shared300",
                                        a.classes)
        else:
            raise AssertionError(f"unknown accuracy_eval_set {where!r}")
    return cache[where]


@needs_shared
def test_public_clean_accuracy_equals_models_json():
    """Every public network, loaded by this code, has exactly the clean accuracy models.json records."""
    cache: dict = {}
    checked = []
    for name in models.public_names(SHARED):
        model, meta = models.load_public(name, root=SHARED)
        ds = _eval_set(meta, cache)
        if ds is None:
            continue
        with torch.no_grad():
            acc = (model(ds.x).argmax(1) == ds.y).double().mean().item()
        assert round(acc, 4) == meta["measured_clean_accuracy"], name
        assert models.count_parameters(model) == meta["n_params"], name
        checked.append(name)
    assert {"cnna_mnist_wk17a_lp_eps0.1_mipverify", "cnna_cifar10_sdp_adv", "cnna_cifar10_sdp_mix",
            "cnna_cifar10_wk_scaled_lp_eps8_255"} <= set(checked)
    assert len(checked) >= 15


@needs_shared
def test_fc500_npz_is_transposed_into_linear():
    model, _ = models.load_public("fc500_mnist_rsl18a_sdp_eps0.1", root=SHARED)
    with np.load(SHARED / "models" / "fc500_mnist_rsl18a_sdp_eps0.1.npz") as z:
        w1, b1, w2, b2 = z["W1"], z["B1"], z["W2"], z["B2"]
    x = np.random.default_rng(0).random((4, 784)).astype(np.float32)
    expected = np.maximum(x @ w1 + b1.reshape(-1), 0) @ w2 + b2.reshape(-1)
    with torch.no_grad():
        got = model(torch.from_numpy(x).reshape(4, 1, 28, 28)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
