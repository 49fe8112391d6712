"""A ReLU classifier in normal form: affine maps alternating with (possibly substituted) ReLUs.

``ReluNetwork`` is the single network object of the package.  It evaluates inputs (``forward``), exposes
each affine stage as a dense matrix for bound propagation and as sparse rows for the MILP, and represents a
*local substitute* as the same network in which some ReLUs are replaced by affine functions ``a*z + c``
(see :meth:`ReluNetwork.with_substitutes`).  Only the normal form is stored, so every algorithm of the
package handles originals and substitutes through one code path.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

__all__ = [
    "Normalize",
    "DenseOp",
    "ConvOp",
    "NormalizeOp",
    "FlattenOp",
    "ReshapeOp",
    "ElementwiseOp",
    "AffineStage",
    "Activation",
    "ReluNetwork",
    "UnsupportedLayerError",
]


class UnsupportedLayerError(ValueError):
    """A layer or ONNX op that is not part of a ReLU network in normal form."""


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


# ---------------------------------------------------------------------------------------------------
# Affine operations (each one maps a batch (B, *in_shape) to (B, *out_shape))
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DenseOp:
    weight: torch.Tensor  # (out, in), float64
    bias: torch.Tensor  # (out,), float64

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (self.weight.shape[1],)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.weight.shape[0],)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


@dataclass(frozen=True, eq=False)
class ConvOp:
    weight: torch.Tensor  # (C_out, C_in, kh, kw), float64
    bias: torch.Tensor  # (C_out,)
    stride: tuple[int, int]
    padding: tuple[int, int]
    in_shape: tuple[int, int, int]

    @property
    def out_shape(self) -> tuple[int, int, int]:
        _, h, w = self.in_shape
        kh, kw = self.weight.shape[2:]
        oh = (h + 2 * self.padding[0] - kh) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - kw) // self.stride[1] + 1
        return (self.weight.shape[0], oh, ow)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype), self.stride, self.padding)


@dataclass(frozen=True, eq=False)
class NormalizeOp:
    mean: torch.Tensor  # (C,)
    std: torch.Tensor  # (C,)
    shape: tuple[int, ...]

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.shape

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        view = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.to(x.dtype).reshape(view)) / self.std.to(x.dtype).reshape(view)


@dataclass(frozen=True, eq=False)
class FlattenOp:
    """Flatten in C, H, W order (torch's ``nn.Flatten``)."""

    in_shape: tuple[int, ...]

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (math.prod(self.in_shape),)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


@dataclass(frozen=True, eq=False)
class ReshapeOp:
    """Reshape (C, H, W order preserved), e.g. an ONNX Reshape to a new image shape."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def __post_init__(self):
        if math.prod(self.in_shape) != math.prod(self.out_shape):
            raise ValueError(f"cannot reshape {self.in_shape} to {self.out_shape}")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape((x.shape[0],) + tuple(self.out_shape))


@dataclass(frozen=True, eq=False)
class ElementwiseOp:
    """``x * scale + shift`` with constant tensors of the input shape (ONNX Add, Sub, Mul, Div)."""

    scale: torch.Tensor  # float64, shape == shape
    shift: torch.Tensor
    shape: tuple[int, ...]

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.shape

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


Op = DenseOp | ConvOp | NormalizeOp | FlattenOp | ReshapeOp | ElementwiseOp


@dataclass(frozen=True, eq=False)
class AffineStage:
    """A composition of affine ops between two ReLU layers (or input/output)."""

    ops: tuple[Op, ...]

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.ops[0].in_shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.ops[-1].out_shape

    @property
    def in_size(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_size(self) -> int:
        return math.prod(self.out_shape)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch of shape (B, *in_shape) to (B, *out_shape)."""
        for op in self.ops:
            x = op.apply(x)
        return x

    @functools.cached_property
    def bias(self) -> torch.Tensor:
        """Image of zero, flattened (out_size,), float64."""
        zero = torch.zeros((1,) + self.in_shape, dtype=torch.float64)
        return self.apply(zero).reshape(-1)

    @functools.cached_property
    def weight(self) -> torch.Tensor:
        """The linear part as a dense float64 matrix of shape (out_size, in_size).

        Computed by applying the stage to the identity, so zero padding after a normalisation stays exact.
        """
        if len(self.ops) == 1 and isinstance(self.ops[0], DenseOp):
            return self.ops[0].weight
        n = self.in_size
        eye = torch.eye(n, dtype=torch.float64).reshape((n,) + self.in_shape)
        cols = []
        for start in range(0, n, 4096):
            block = self.apply(eye[start : start + 4096]).reshape(-1, self.out_size)
            cols.append(block - self.bias)
        return torch.cat(cols, 0).T.contiguous()

    def sparse_weight(self):
        """The linear part as a ``scipy.sparse.csr_matrix`` (exact zeros dropped)."""
        import scipy.sparse as sp

        w = self.weight.numpy()
        return sp.csr_matrix(w)


@dataclass(frozen=True, eq=False)
class Activation:
    """A ReLU layer where the neurons in ``replaced`` compute ``slope * z + offset`` instead of ReLU."""

    size: int
    replaced: torch.Tensor  # bool (size,)
    slope: torch.Tensor  # float64 (size,), only meaningful where replaced
    offset: torch.Tensor  # float64 (size,)

    @staticmethod
    def relu(size: int) -> "Activation":
        return Activation(
            size,
            torch.zeros(size, dtype=torch.bool),
            torch.zeros(size, dtype=torch.float64),
            torch.zeros(size, dtype=torch.float64),
        )

    @property
    def num_replaced(self) -> int:
        return int(self.replaced.sum())

    @property
    def is_plain(self) -> bool:
        return self.num_replaced == 0

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        """Apply to flattened pre-activations of shape (B, size)."""
        out = torch.relu(z)
        if self.is_plain:
            return out
        lin = z * self.slope.to(z.dtype) + self.offset.to(z.dtype)
        return torch.where(self.replaced.to(z.device), lin, out)


@dataclass(frozen=True, eq=False)
class ReluNetwork:
    """``f(x) = A_L(s_{L-1}(A_{L-1}( ... s_1(A_1 x))))`` with affine stages ``A_l`` and activations ``s_l``.

    ``stages`` has one more entry than ``activations``.  Hidden layer ``l`` (0-based) has the flattened
    pre-activations ``A_l(...)`` of size ``activations[l].size``.
    """

    stages: tuple[AffineStage, ...]
    activations: tuple[Activation, ...]

    def __post_init__(self):
        if len(self.stages) != len(self.activations) + 1:
            raise ValueError("a ReluNetwork needs exactly one more affine stage than activation layers")
        for k, act in enumerate(self.activations):
            prev, nxt = self.stages[k], self.stages[k + 1]
            if prev.out_size != act.size or nxt.in_size != act.size:
                raise ValueError(
                    f"shape mismatch at ReLU layer {k}: stage {k} gives {prev.out_shape}, "
                    f"activation has {act.size} neurons, stage {k + 1} expects {nxt.in_shape}"
                )
        out = self.stages[-1].out_shape
        if len(out) != 1:
            raise ValueError(f"the network must end in a flat logit vector, got shape {out}")

    # -- shapes -------------------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.stages[0].in_shape

    @property
    def input_size(self) -> int:
        return self.stages[0].in_size

    @property
    def num_classes(self) -> int:
        return self.stages[-1].out_size

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Number of neurons of every ReLU layer."""
        return tuple(a.size for a in self.activations)

    @property
    def num_hidden(self) -> int:
        return sum(self.layer_sizes)

    @property
    def num_relus(self) -> int:
        """Neurons that still apply a ReLU (not replaced)."""
        return sum(a.size - a.num_replaced for a in self.activations)

    # -- evaluation ---------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor, *, batched: bool = True) -> torch.Tensor:
        x = torch.as_tensor(x)
        expect = self.input_shape
        got = tuple(x.shape[1:]) if batched else tuple(x.shape)
        if got != expect or (batched and x.dim() != len(expect) + 1):
            want = "(B, " + ", ".join(map(str, expect)) + ")" if batched else str(expect)
            raise ValueError(f"wrong input shape {tuple(x.shape)}: expected {want}")
        if not torch.is_floating_point(x):
            x = x.to(torch.float32)
        if torch.isnan(x).any():
            raise ValueError("input contains NaN")
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch ``x`` of shape (B, *input_shape); keeps float32/float64 dtype."""
        return self.forward_all(x)[1]

    __call__ = forward

    def forward_all(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Flattened pre-activations of every ReLU layer (each (B, n_l)) and the logits."""
        x = self.check_input(x)
        pre = []
        h = x
        for stage, act in zip(self.stages[:-1], self.activations):
            z = stage.apply(h).reshape(h.shape[0], -1)
            pre.append(z)
            h = act.apply(z).reshape((h.shape[0],) + self.stages[len(pre)].in_shape)
        return tuple(pre), self.stages[-1].apply(h)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).argmax(dim=1)

    def margin(self, x: torch.Tensor, label: int, target: int) -> torch.Tensor:
        """``f_label(x) - f_target(x)`` for a batch."""
        logits = self.forward(x)
        return logits[:, label] - logits[:, target]

    def check_label(self, label: int) -> int:
        if not isinstance(label, (int, np.integer)) and not (torch.is_tensor(label) and label.numel() == 1):
            raise ValueError(f"label must be an int, got {type(label).__name__}")
        label = int(label)
        if not 0 <= label < self.num_classes:
            raise ValueError(f"label {label} out of range for {self.num_classes} classes")
        return label

    # -- substitutes --------------------------------------------------------------------------------
    def with_substitutes(
        self,
        replaced: Sequence[torch.Tensor],
        slope: Sequence[torch.Tensor],
        offset: Sequence[torch.Tensor],
    ) -> "ReluNetwork":
        """The same network with ReLU ``(l, i)`` replaced by ``slope[l][i] * z + offset[l][i]`` where
        ``replaced[l][i]``; neurons already replaced in ``self`` keep their replacement unless overridden."""
        if not (len(replaced) == len(slope) == len(offset) == len(self.activations)):
            raise ValueError("need one mask, slope and offset vector per ReLU layer")
        acts = []
        for act, m, a, c in zip(self.activations, replaced, slope, offset):
            m = torch.as_tensor(m, dtype=torch.bool).reshape(-1)
            a = torch.as_tensor(a, dtype=torch.float64).reshape(-1)
            c = torch.as_tensor(c, dtype=torch.float64).reshape(-1)
            if not (m.numel() == a.numel() == c.numel() == act.size):
                raise ValueError(f"substitute vectors must have {act.size} entries")
            acts.append(
                Activation(
                    act.size,
                    act.replaced | m,
                    torch.where(m, a, act.slope),
                    torch.where(m, c, act.offset),
                )
            )
        return dataclasses.replace(self, activations=tuple(acts))

    def original(self) -> "ReluNetwork":
        """The network with every ReLU restored."""
        return dataclasses.replace(self, activations=tuple(Activation.relu(a.size) for a in self.activations))

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_torch(cls, seq: nn.Module, input_shape: Sequence[int]) -> "ReluNetwork":
        """Build from an ``nn.Sequential`` of Linear, Conv2d, ReLU, Flatten and :class:`Normalize`."""
        modules = list(seq.children()) if isinstance(seq, nn.Sequential) else [seq]
        ops: list[tuple[str, object]] = []
        shape = tuple(int(s) for s in input_shape)
        for pos, m in enumerate(modules):
            name = f"{type(m).__name__} at position {pos}"
            if isinstance(m, nn.Sequential):
                raise UnsupportedLayerError(f"nested nn.Sequential at position {pos}: flatten it first")
            if isinstance(m, nn.ReLU):
                ops.append(("relu", None))
                continue
            op = _torch_module_to_op(m, shape, name)
            ops.append(("affine", op))
            shape = op.out_shape
        return cls._from_op_list(ops, tuple(int(s) for s in input_shape))

    @classmethod
    def _from_op_list(cls, ops: list[tuple[str, object]], input_shape: tuple[int, ...]) -> "ReluNetwork":
        stages: list[AffineStage] = []
        current: list[Op] = []
        shape = input_shape
        for kind, op in ops:
            if kind == "relu":
                if not current:
                    raise UnsupportedLayerError(
                        "two ReLUs in a row or a ReLU on the input: not a ReLU network in normal form"
                    )
                stages.append(AffineStage(tuple(current)))
                current = []
            else:
                if tuple(op.in_shape) != tuple(shape):
                    raise ValueError(f"shape mismatch: {type(op).__name__} expects {op.in_shape}, got {shape}")
                current.append(op)
                shape = op.out_shape
        if not current:
            raise UnsupportedLayerError("the network must end with an affine layer (logits), not a ReLU")
        if len(shape) != 1:
            current.append(FlattenOp(shape))
        stages.append(AffineStage(tuple(current)))
        acts = tuple(Activation.relu(s.out_size) for s in stages[:-1])
        return cls(tuple(stages), acts)

    @classmethod
    def from_onnx(cls, path: str | Path) -> "ReluNetwork":
        """Load an ONNX ReLU network (Gemm, MatMul, Add, Sub, Div, Mul, Conv, Relu, Flatten, Reshape, ...)."""
        from .onnx_import import onnx_to_ops

        ops, input_shape = onnx_to_ops(path)
        return cls._from_op_list(ops, input_shape)

    def to_torch(self) -> nn.Sequential:
        """An equivalent ``nn.Sequential`` in float64 (substituted neurons are not representable)."""
        if any(not a.is_plain for a in self.activations):
            raise ValueError("to_torch supports only networks without substituted ReLUs")
        mods: list[nn.Module] = []
        for k, stage in enumerate(self.stages):
            for op in stage.ops:
                mods.append(_op_to_torch_module(op))
            if k < len(self.activations):
                mods.append(nn.ReLU())
        return nn.Sequential(*mods).double()


def _torch_module_to_op(m: nn.Module, shape: tuple[int, ...], name: str) -> Op:
    f64 = torch.float64
    if isinstance(m, nn.Linear):
        if len(shape) != 1 or shape[0] != m.in_features:
            raise ValueError(f"{name}: expects {m.in_features} inputs, gets shape {shape}")
        b = m.bias.detach().to(f64) if m.bias is not None else torch.zeros(m.out_features, dtype=f64)
        return DenseOp(m.weight.detach().to(f64).clone(), b.clone())
    if isinstance(m, nn.Conv2d):
        if len(shape) != 3 or shape[0] != m.in_channels:
            raise ValueError(f"{name}: expects input (C={m.in_channels}, H, W), gets shape {shape}")
        if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros":
            raise UnsupportedLayerError(f"{name}: only groups=1, dilation=1, zero padding are supported")
        if isinstance(m.padding, str):
            raise UnsupportedLayerError(f"{name}: string padding '{m.padding}' is not supported")
        b = m.bias.detach().to(f64) if m.bias is not None else torch.zeros(m.out_channels, dtype=f64)
        op = ConvOp(m.weight.detach().to(f64).clone(), b.clone(), tuple(m.stride), tuple(m.padding), shape)
        if min(op.out_shape) <= 0:
            raise ValueError(f"{name}: output shape {op.out_shape} is empty")
        return op
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise UnsupportedLayerError(f"{name}: only Flatten(start_dim=1, end_dim=-1) is supported")
        return FlattenOp(shape)
    if isinstance(m, Normalize):
        if len(shape) < 1 or shape[0] != m.mean.numel() and m.mean.numel() != 1:
            raise ValueError(f"{name}: {m.mean.numel()} channels of mean/std for input shape {shape}")
        c = shape[0] if len(shape) > 1 else 1
        mean = m.mean.to(f64).expand(c).clone() if m.mean.numel() == 1 else m.mean.to(f64).clone()
        std = m.std.to(f64).expand(c).clone() if m.std.numel() == 1 else m.std.to(f64).clone()
        return NormalizeOp(mean, std, shape)
    if isinstance(m, (nn.Identity, nn.Dropout)):
        raise UnsupportedLayerError(f"{name}: remove {type(m).__name__} before conversion")
    raise UnsupportedLayerError(
        f"unsupported layer {name}: a ReluNetwork accepts Linear, Conv2d, ReLU, Flatten and Normalize"
        " (fold BatchNorm into the preceding layer first)"
    )


def _op_to_torch_module(op: Op) -> nn.Module:
    if isinstance(op, DenseOp):
        lin = nn.Linear(op.weight.shape[1], op.weight.shape[0]).double()
        lin.weight.data.copy_(op.weight)
        lin.bias.data.copy_(op.bias)
        return lin
    if isinstance(op, ConvOp):
        cout, cin, kh, kw = op.weight.shape
        conv = nn.Conv2d(cin, cout, (kh, kw), op.stride, op.padding).double()
        conv.weight.data.copy_(op.weight)
        conv.bias.data.copy_(op.bias)
        return conv
    if isinstance(op, FlattenOp):
        return nn.Flatten()
    if isinstance(op, NormalizeOp):
        return Normalize(op.mean.tolist(), op.std.tolist()).double()
    if isinstance(op, (ReshapeOp, ElementwiseOp)):
        return _OpModule(op)
    raise TypeError(type(op))


class _OpModule(nn.Module):
    """Wraps an op without a torch counterpart (ONNX reshape, elementwise affine)."""

    def __init__(self, op: Op):
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.apply(x)
