"""The affine operations of a :class:`~lsub_helpers.network.ReluNetwork`, one class per operation.

Every op maps a batch ``(B, *in_shape)`` to ``(B, *out_shape)`` by an affine function ``x -> W x + b`` and
knows four things about itself:

``apply(x)``
    the forward pass (any float dtype);
``transpose_apply(y)``
    ``y @ W`` for a batch of rows ``y`` of shape ``(N, *out_shape)``, giving ``(N, *in_shape)`` (the
    backward step of CROWN/FastLin);
``abs_apply(r)``
    ``|W| r`` for ``r >= 0`` of shape ``(N, *in_shape)`` (the radius step of IBP);
``mixing``
    whether an output coordinate may depend on more than one input coordinate (a product of mixing ops
    has to be bounded through its dense matrix to stay tight; non-mixing ops can be applied one by one).

An :class:`~lsub_helpers.network.AffineStage` composes ops; its dense and sparse matrices (used by the
MILP and the dense bound steps) are obtained by applying the stage to the identity, so a new op needs
nothing beyond this class to be usable by every algorithm of the package.  All parameters are float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Normalize",
    "DenseOp",
    "ConvOp",
    "NormalizeOp",
    "FlattenOp",
    "ReshapeOp",
    "ElementwiseOp",
    "ChannelAffineOp",
    "AvgPoolOp",
    "PadOp",
    "TransposeOp",
    "IdentityOp",
    "Op",
    "fold_channel_affine",
]

F64 = torch.float64


class Normalize(nn.Module):
    """Per-channel input normalisation ``(x - mean) / std`` as a torch module."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean_t.shape != std_t.shape:
            raise ValueError(f"Normalize: mean has {mean_t.numel()} entries but std has {std_t.numel()}")
        if torch.any(std_t <= 0):
            raise ValueError("Normalize: every std must be > 0")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.reshape(shape).to(x)) / self.std.reshape(shape).to(x)


def _channel_view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-channel vector (C,) shaped to broadcast over a batch (B, C, ...)."""
    return v.to(x.dtype).reshape((1, -1) + (1,) * (x.dim() - 2))


def _vjp(op, y: torch.Tensor) -> torch.Tensor:
    """``y @ W`` of a linear op (``apply(0) == 0``) through autograd: exact, and as cheap as the backward
    pass of the op (average pooling, padding)."""
    x = torch.zeros((y.shape[0],) + tuple(op.in_shape), dtype=y.dtype, requires_grad=True)
    with torch.enable_grad():
        out = op.apply(x)
        (g,) = torch.autograd.grad(out, x, grad_outputs=y)
    return g


class _OpModule(nn.Module):
    """Wraps an op without a torch counterpart (ONNX reshape, elementwise affine, transpose)."""

    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.apply(x)


# ---------------------------------------------------------------------------------------------------
# Mixing ops: dense, convolution, average pooling
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DenseOp:
    weight: torch.Tensor  # (out, in), float64
    bias: torch.Tensor  # (out,), float64
    mixing = True

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (self.weight.shape[1],)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.weight.shape[0],)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype), self.bias.to(x.dtype))

    def transpose_apply(self, y: torch.Tensor) -> torch.Tensor:
        return y @ self.weight.to(y.dtype)

    def abs_apply(self, r: torch.Tensor) -> torch.Tensor:
        return r @ self.weight.abs().T.to(r.dtype)

    def to_module(self) -> nn.Module:
        lin = nn.Linear(self.weight.shape[1], self.weight.shape[0]).double()
        lin.weight.data.copy_(self.weight)
        lin.bias.data.copy_(self.bias)
        return lin


@dataclass(frozen=True, eq=False)
class ConvOp:
    weight: torch.Tensor  # (C_out, C_in, kh, kw), float64
    bias: torch.Tensor  # (C_out,)
    stride: tuple[int, int]
    padding: tuple[int, int]
    in_shape: tuple[int, int, int]
    mixing = True

    @property
    def out_shape(self) -> tuple[int, int, int]:
        _, h, w = self.in_shape
        kh, kw = self.weight.shape[2:]
        oh = (h + 2 * self.padding[0] - kh) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - kw) // self.stride[1] + 1
        return (self.weight.shape[0], oh, ow)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype), self.stride, self.padding)

    def transpose_apply(self, y: torch.Tensor) -> torch.Tensor:
        _, h, w = self.in_shape
        _, oh, ow = self.out_shape
        kh, kw = self.weight.shape[2:]
        (sh, sw), (ph, pw) = self.stride, self.padding
        out_pad = (h - ((oh - 1) * sh - 2 * ph + kh), w - ((ow - 1) * sw - 2 * pw + kw))
        return F.conv_transpose2d(y, self.weight.to(y.dtype), None, self.stride, self.padding, out_pad)

    def abs_apply(self, r: torch.Tensor) -> torch.Tensor:
        return F.conv2d(r, self.weight.abs().to(r.dtype), None, self.stride, self.padding)

    def to_module(self) -> nn.Module:
        cout, cin, kh, kw = self.weight.shape
        conv = nn.Conv2d(cin, cout, (kh, kw), self.stride, self.padding).double()
        conv.weight.data.copy_(self.weight)
        conv.bias.data.copy_(self.bias)
        return conv


@dataclass(frozen=True, eq=False)
class AvgPoolOp:
    """2-D average pooling (``ceil_mode`` off): torch's ``AvgPool2d`` and ONNX ``AveragePool`` /
    ``GlobalAveragePool``.  With ``count_include_pad`` the padded zeros count in the divisor (torch's
    default); without it (ONNX's default) only the window's positions inside the image do."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    count_include_pad: bool
    in_shape: tuple[int, int, int]
    mixing = True

    def __post_init__(self):
        if len(self.in_shape) != 3:
            raise ValueError(f"average pooling needs a (C, H, W) input, got {self.in_shape}")
        if any(2 * p > k for p, k in zip(self.padding, self.kernel)):
            raise ValueError(f"average pooling: padding {self.padding} larger than half the kernel {self.kernel}")
        if min(self.out_shape) <= 0:
            raise ValueError(f"average pooling {self.kernel} of {self.in_shape} is empty")

    @property
    def out_shape(self) -> tuple[int, int, int]:
        c, h, w = self.in_shape
        oh = (h + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1
        return (c, oh, ow)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel, self.stride, self.padding, ceil_mode=False,
                            count_include_pad=self.count_include_pad)

    transpose_apply = _vjp

    def abs_apply(self, r: torch.Tensor) -> torch.Tensor:
        return self.apply(r)  # nonnegative weights

    def to_module(self) -> nn.Module:
        return nn.AvgPool2d(self.kernel, self.stride, self.padding, count_include_pad=self.count_include_pad)


# ---------------------------------------------------------------------------------------------------
# Non-mixing ops: every output coordinate depends on at most one input coordinate
# ---------------------------------------------------------------------------------------------------


class _SameShape:
    """An op whose output has its input's shape (``shape``)."""

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.shape


@dataclass(frozen=True, eq=False)
class NormalizeOp(_SameShape):
    mean: torch.Tensor  # (C,)
    std: torch.Tensor  # (C,)
    shape: tuple[int, ...]
    mixing = False

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return (x - _channel_view(self.mean, x)) / _channel_view(self.std, x)

    def transpose_apply(self, y: torch.Tensor) -> torch.Tensor:
        return y / _channel_view(self.std, y)

    abs_apply = transpose_apply  # std > 0

    def to_module(self) -> nn.Module:
        return Normalize(self.mean.tolist(), self.std.tolist()).double()


@dataclass(frozen=True, eq=False)
class ChannelAffineOp(_SameShape):
    """``scale[c] * x + shift[c]`` per channel (dimension 0 of the shape without batch): batch
    normalisation in its inference form, ``scale = gamma / sqrt(var + eps)``, ``shift = beta - scale * mean``."""

    scale: torch.Tensor  # (C,)
    shift: torch.Tensor  # (C,)
    shape: tuple[int, ...]
    mixing = False

    def __post_init__(self):
        if self.scale.shape != (self.shape[0],) or self.shift.shape != (self.shape[0],):
            raise ValueError(f"per-channel scale/shift need {self.shape[0]} entries for shape {self.shape}")

    @staticmethod
    def batch_norm(gamma, beta, mean, var, eps: float, shape: tuple[int, ...]) -> "ChannelAffineOp":
        g, b, m, v = (torch.as_tensor(t, dtype=F64).reshape(-1) for t in (gamma, beta, mean, var))
        scale = g / torch.sqrt(v + eps)
        return ChannelAffineOp(scale, b - scale * m, tuple(shape))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x * _channel_view(self.scale, x) + _channel_view(self.shift, x)

    def transpose_apply(self, y: torch.Tensor) -> torch.Tensor:
        return y * _channel_view(self.scale, y)

    def abs_apply(self, r: torch.Tensor) -> torch.Tensor:
        return r * _channel_view(self.scale.abs(), r)

    def to_module(self) -> nn.Module:
        return _OpModule(self)


@dataclass(frozen=True, eq=False)
class ElementwiseOp(_SameShape):
    """``x * scale + shift`` with constant tensors of the input shape (ONNX Add, Sub, Mul, Div)."""

    scale: torch.Tensor  # float64, shape == shape
    shift: torch.Tensor
    shape: tuple[int, ...]
    mixing = False

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)

    def transpose_apply(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.scale.to(y.dtype)

    def abs_apply(self, r: torch.Tensor) -> torch.Tensor:
        return r * self.scale.abs().to(r.dtype)

    def to_module(self) -> nn.Module:
        return _OpModule(self)


@dataclass(frozen=True, eq=False)
class PadOp:
    """Constant zero padding: ``pads[d] = (before, after)`` for every dimension of the input (no batch);
    negative entries crop, as in ONNX ``Pad``."""

    pads: tuple[tuple[int, int], ...]
    in_shape: tuple[int, ...]
    mixing = False

    def __post_init__(self):
        if len(self.pads) != len(self.in_shape):
            raise ValueError(f"padding {self.pads} does not match the input shape {self.in_shape}")
        if min(self.out_shape) <= 0:
            raise ValueError(f"padding {self.pads} of {self.in_shape} leaves an empty tensor")

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(n + a + b for n, (a, b) in zip(self.in_shape, self.pads))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        flat = [p for pair in reversed(self.pads) for p in pair]  # F.pad lists the last dimension first
        return F.pad(x, flat)

    transpose_apply = _vjp

    def abs_apply(self, r: torch.Tensor) -> torch.Tensor:
        return self.apply(r)

    def to_module(self) -> nn.Module:
        return _OpModule(self)


@dataclass(frozen=True, eq=False)
class TransposeOp:
    """A permutation of the dimensions (no batch), e.g. ``(2, 0, 1)`` turns an (H, W, C) input into (C, H, W)."""

    perm: tuple[int, ...]
    in_shape: tuple[int, ...]
    mixing = False

    def __post_init__(self):
        if sorted(self.perm) != list(range(len(self.in_shape))):
            raise ValueError(f"{self.perm} is not a permutation of the {len(self.in_shape)} dimensions")

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(self.in_shape[p] for p in self.perm)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute((0,) + tuple(p + 1 for p in self.perm))

    def transpose_apply(self, y: torch.Tensor) -> torch.Tensor:
        inverse = [0] * len(self.perm)
        for i, p in enumerate(self.perm):
            inverse[p] = i
        return y.permute((0,) + tuple(p + 1 for p in inverse))

    abs_apply = apply

    def to_module(self) -> nn.Module:
        return _OpModule(self)


@dataclass(frozen=True, eq=False)
class _ReshapeBase:
    mixing = False

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape((x.shape[0],) + tuple(self.out_shape))

    def transpose_apply(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape((y.shape[0],) + tuple(self.in_shape))

    abs_apply = apply


@dataclass(frozen=True, eq=False)
class FlattenOp(_ReshapeBase):
    """Flatten in C, H, W order (torch's ``nn.Flatten``)."""

    in_shape: tuple[int, ...]

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (math.prod(self.in_shape),)

    def to_module(self) -> nn.Module:
        return nn.Flatten()


@dataclass(frozen=True, eq=False)
class ReshapeOp(_ReshapeBase):
    """Reshape (C, H, W order preserved), e.g. an ONNX Reshape to a new image shape."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def __post_init__(self):
        if math.prod(self.in_shape) != math.prod(self.out_shape):
            raise ValueError(f"cannot reshape {self.in_shape} to {self.out_shape}")

    def to_module(self) -> nn.Module:
        return _OpModule(self)


@dataclass(frozen=True, eq=False)
class IdentityOp(_SameShape, _ReshapeBase):
    """The identity: the affine stage after a final ReLU, whose outputs are then the network's outputs."""

    shape: tuple[int, ...]

    def to_module(self) -> nn.Module:
        return nn.Identity()


Op = (DenseOp | ConvOp | AvgPoolOp | NormalizeOp | ChannelAffineOp | ElementwiseOp | PadOp | TransposeOp
      | FlattenOp | ReshapeOp | IdentityOp)


def fold_channel_affine(prev: Op, op: ChannelAffineOp) -> Op | None:
    """``op`` after ``prev`` as one op when ``prev`` is a convolution or a dense layer whose output channels
    ``op`` scales (batch normalisation after a conv or a linear layer); None otherwise."""
    if isinstance(prev, ConvOp) and len(op.shape) == 3 and op.shape[0] == prev.weight.shape[0]:
        w = prev.weight * op.scale.reshape(-1, 1, 1, 1)
        return ConvOp(w, prev.bias * op.scale + op.shift, prev.stride, prev.padding, prev.in_shape)
    if isinstance(prev, DenseOp) and len(op.shape) == 1:
        return DenseOp(prev.weight * op.scale[:, None], prev.bias * op.scale + op.shift)
    return None
