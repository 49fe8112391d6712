"""Architectures as ``torch.nn.Sequential`` and the loader of the public pretrained weights.

- :func:`cnna`: the paper's CNNa (VeriGauge model C): conv 16 4x4 s2 p1, conv 32 4x4 s2 p1, dense 100,
  dense 10; 166,406 parameters on MNIST (1x28x28), 214,918 on CIFAR-10 (3x32x32).
- :func:`mlp`: a fully connected ReLU network (with a leading ``Flatten`` for image inputs).
- :func:`toy2d_net`: the 2-D toy network of Figure 1.
- :func:`load_public`: a public state dict from the shared model directory (``models.json`` gives the
  architecture and the input normalisation), loaded with ``torch.load(..., weights_only=True)``.

Layout of the state dicts. Without normalisation CNNa is ``0 Conv, 1 ReLU, 2 Conv, 3 ReLU, 4 Flatten,
5 Linear, 6 ReLU, 7 Linear``, exactly the keys of the public files. With normalisation a
:class:`~lsub_helpers.network.Normalize` is put *first*, so every index moves up by one; public weights are
therefore loaded into the plain layout and the normalisation is prepended afterwards.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from .network import Normalize

__all__ = ["cnna", "convsmall", "small_cnn", "mlp", "toy2d_net", "count_parameters", "shared_root", "public_names",
           "load_public", "PublicModel"]

DEFAULT_SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (buffers such as Normalize's mean and std are not counted)."""
    return sum(p.numel() for p in model.parameters())


def _with_normalization(layers: list[nn.Module], normalization) -> nn.Sequential:
    if normalization is None:
        return nn.Sequential(*layers)
    if isinstance(normalization, Normalize):
        norm = normalization
    elif isinstance(normalization, dict):
        norm = Normalize(normalization["mean"], normalization["std"])
    else:
        mean, std = normalization
        norm = Normalize(mean, std)
    return nn.Sequential(norm, *layers)


def cnna(in_channels: int = 1, in_size: int = 28, num_classes: int = 10, *, normalization=None) -> nn.Sequential:
    """The paper's CNNa for ``in_channels x in_size x in_size`` inputs (``in_size`` divisible by 4).

    ``normalization``: ``None``, a ``Normalize``, a ``(mean, std)`` pair or a dict with ``mean`` and ``std``
    (as in ``models.json``); when given it is the first module.
    """
    if in_size % 4:
        raise ValueError(f"CNNa needs an input size divisible by 4, got {in_size}")
    return _two_convs(in_channels, 32 * (in_size // 4) ** 2, num_classes, padding=1, normalization=normalization)


def convsmall(in_channels: int = 1, in_size: int = 28, num_classes: int = 10, *, normalization=None) -> nn.Sequential:
    """ERAN's ConvSmall (CNNa without padding); only for the public ``convsmall_*`` weights."""
    s1 = (in_size - 4) // 2 + 1
    s2 = (s1 - 4) // 2 + 1
    return _two_convs(in_channels, 32 * s2 * s2, num_classes, padding=0, normalization=normalization)


def _two_convs(in_channels: int, flat: int, num_classes: int, *, padding: int, normalization) -> nn.Sequential:
    """conv 16x4x4/2 - ReLU - conv 32x4x4/2 - ReLU - dense 100 - ReLU - dense: CNNa (padding 1), ConvSmall (0)."""
    layers = [
        nn.Conv2d(in_channels, 16, kernel_size=4, stride=2, padding=padding),
        nn.ReLU(),
        nn.Conv2d(16, 32, kernel_size=4, stride=2, padding=padding),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(flat, 100),
        nn.ReLU(),
        nn.Linear(100, num_classes),
    ]
    return _with_normalization(layers, normalization)


def small_cnn(in_channels: int = 1, in_size: int = 8, num_classes: int = 10, *, channels: tuple[int, int] = (8, 16),
              hidden: int = 32, normalization=None) -> nn.Sequential:
    """CNNa in miniature (two 4x4 stride-2 padding-1 convs, one dense layer) for small inputs such as the
    8x8 digits: with the defaults 8*4*4 + 16*2*2 + 32 = 224 ReLUs, small enough for an exact MILP."""
    if in_size % 4:
        raise ValueError(f"small_cnn needs an input size divisible by 4, got {in_size}")
    c1, c2 = channels
    layers = [
        nn.Conv2d(in_channels, c1, kernel_size=4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, kernel_size=4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(c2 * (in_size // 4) ** 2, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    ]
    return _with_normalization(layers, normalization)


def mlp(in_features: int, hidden: Sequence[int], num_classes: int, *, flatten: bool = True,
        normalization=None) -> nn.Sequential:
    """``[Flatten,] Linear(in, h1), ReLU, ..., Linear(h_last, num_classes)``."""
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return _with_normalization(layers, normalization)


TOY2D_HIDDEN = (16, 16)


def toy2d_net(hidden: Sequence[int] = TOY2D_HIDDEN, num_classes: int = 3) -> nn.Sequential:
    """The 2-D toy network of Figure 1: 2-16-16-3 (32 ReLUs), inputs of shape (2,)."""
    return mlp(2, hidden, num_classes, flatten=False)


# --------------------------------------------------------------------------------------------------
# Public weights


def shared_root(root: str | os.PathLike | None = None) -> Path:
    """The directory of the shared data: ``root``, else ``LSUB_SHARED``, else ``../shared/data``."""
    if root is not None:
        return Path(root)
    if os.environ.get("LSUB_SHARED"):
        return Path(os.environ["LSUB_SHARED"])
    return DEFAULT_SHARED


def _models_dir(root) -> Path:
    """``root`` may be the models directory itself or the shared data directory above it."""
    base = shared_root(root)
    return base if (base / "models.json").is_file() else base / "models"


def _catalogue(root) -> dict:
    path = _models_dir(root) / "models.json"
    if not path.is_file():
        raise FileNotFoundError(f"no models.json in {path.parent}; pass root=DIR or set LSUB_SHARED to the "
                                "directory that holds the public weights")
    return json.loads(path.read_text())


def public_names(root: str | os.PathLike | None = None) -> tuple[str, ...]:
    """Names of the public networks listed in ``models.json``."""
    return tuple(_catalogue(root))


class PublicModel(NamedTuple):
    """A public network: the ``nn.Sequential`` (eval mode) and its ``models.json`` entry."""

    model: nn.Sequential
    meta: dict


_DATASET_SHAPES = {"mnist": (1, 28), "fashion_mnist": (1, 28), "cifar10": (3, 32)}


def _architecture(name: str, meta: dict) -> nn.Sequential:
    arch = meta["architecture"]
    channels, size = _DATASET_SHAPES[meta["dataset"]]
    if arch.startswith("Conv2d") and "NOT CNNa" not in arch:
        return cnna(channels, size)
    if arch.startswith("ERAN ConvSmall"):
        return convsmall(channels, size)
    if arch.startswith("nn.Sequential(Flatten, Linear(784,20)"):
        return mlp(784, [20], 10)
    if "W1 is (784,500)" in arch:
        return mlp(784, [500], 10)
    raise ValueError(f"{name}: unknown architecture {arch!r}")


def _state_dict(name: str, meta: dict, directory: Path) -> dict:
    pt = directory / f"{name}.pt"
    if pt.is_file():
        return torch.load(pt, map_location="cpu", weights_only=True)
    npz = directory / f"{name}.npz"
    if not npz.is_file():
        raise FileNotFoundError(f"neither {pt} nor {npz} exists")
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: torch.from_numpy(z[k].astype(np.float32)) for k in z.files}
    if set(arrays) == {"W1", "B1", "W2", "B2"}:  # fc500: x @ W + B, W stored (in, out)
        return {"1.weight": arrays["W1"].T.contiguous(), "1.bias": arrays["B1"].reshape(-1),
                "3.weight": arrays["W2"].T.contiguous(), "3.bias": arrays["B2"].reshape(-1)}
    return arrays


def load_public(name: str, root: str | os.PathLike | None = None) -> PublicModel:
    """Load a public network by its ``models.json`` name; returns ``(nn.Sequential in eval mode, meta)``.

    ``root`` is the shared data directory (or its ``models/`` subdirectory); default ``LSUB_SHARED`` or
    ``../shared/data``. The input normalisation of ``models.json`` is prepended as a ``Normalize``.
    """
    catalogue = _catalogue(root)
    if name not in catalogue:
        raise KeyError(f"unknown public network {name!r}; known: {', '.join(catalogue)}")
    meta = catalogue[name]
    body = _architecture(name, meta)
    body.load_state_dict(_state_dict(name, meta, _models_dir(root)), strict=True)
    norm = meta.get("input_normalization")
    model = body if norm is None else nn.Sequential(Normalize(norm["mean"], norm["std"]), *body)
    return PublicModel(model.eval(), meta)
