"""A ReLU classifier in normal form: affine maps alternating with (possibly substituted) ReLUs.

``ReluNetwork`` is the single network object of the package.  It evaluates inputs (``forward``), exposes
each affine stage as a dense matrix for bound propagation and as sparse rows for the MILP, and represents a
*local substitute* as the same network in which some ReLUs are replaced by affine functions ``a*z + c``
(see :meth:`ReluNetwork.with_substitutes`).  Only the normal form is stored, so every algorithm of the
package handles originals and substitutes through one code path.

An affine stage is a composition of the ops of :mod:`lsub_helpers.ops` (dense, convolution, batch norm,
average pooling, zero padding, transpose, reshapes, elementwise affine maps); a network that ends with a
ReLU gets an identity stage after it, so that its outputs are the post-activation values.

Max pooling is not affine; it is a layer of its own (:class:`MaxPoolLayer`) that may follow an activation
layer: ``pools[l]`` (or None) maps the outputs of activation ``l`` to the input of stage ``l + 1``.  A max
pool written directly before a ReLU is moved after it (``relu(max(a, b)) = max(relu(a), relu(b))``), which
is exact; a max pool anywhere else is refused.  Substitutes replace ReLUs only; the pools stay exact.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import ops as _ops
from .ops import (
    AvgPoolOp,
    ChannelAffineOp,
    ConvOp,
    DenseOp,
    ElementwiseOp,
    FlattenOp,
    IdentityOp,
    Normalize,
    NormalizeOp,
    Op,
    PadOp,
    ReshapeOp,
    TransposeOp,
    fold_channel_affine,
)

# the ops of lsub_helpers.ops stay importable from here, where they lived first (one list: ops.__all__)
__all__ = [name for name in _ops.__all__ if name not in ("Op", "fold_channel_affine")] + [
    "AffineStage",
    "Activation",
    "MaxPoolLayer",
    "ReluNetwork",
    "UnsupportedLayerError",
    "OutputActivation",
    "SoftmaxPolicy",
]


class UnsupportedLayerError(ValueError):
    """A layer or ONNX op that is not part of a ReLU network in normal form."""


class OutputActivation(enum.Enum):
    """A final activation that does not change the argmax of the outputs."""

    SOFTMAX = "softmax"
    LOG_SOFTMAX = "log_softmax"


class SoftmaxPolicy(enum.Enum):
    """What ``from_torch``/``from_onnx`` do with a final Softmax or LogSoftmax.

    ``REFUSE`` (default): raise :class:`UnsupportedLayerError`, because the network would then compute
    something else than the file.  ``DROP``: return the network without it (the logits), which is right for
    classification properties only (an argmax, or comparisons between outputs): softmax is a strictly
    increasing function of each logit with a shared normaliser, so ``softmax_i >= softmax_j`` iff
    ``y_i >= y_j``, and LogSoftmax only subtracts the same number from every output.
    """

    REFUSE = "refuse"
    DROP = "drop"


class _Sizes:
    """``in_size`` and ``out_size`` of a layer with ``in_shape`` and ``out_shape``."""

    @property
    def in_size(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_size(self) -> int:
        return math.prod(self.out_shape)


@dataclass(frozen=True, eq=False)
class AffineStage(_Sizes):
    """A composition of affine ops between two ReLU layers (or input/output)."""

    ops: tuple[Op, ...]

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.ops[0].in_shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.ops[-1].out_shape

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

    @functools.cached_property
    def sparse_arrays(self):
        """``(weight as float64 csr_matrix, bias as float64 numpy)``, computed once per (immutable) stage: the
        MILP asks for them at every eps of a bisection, and a substitute shares its stages with the original."""
        import scipy.sparse as sp

        return sp.csr_matrix(self.sparse_weight(), dtype=np.float64), np.asarray(self.bias, dtype=np.float64).reshape(-1)


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
class MaxPoolLayer(_Sizes):
    """2-D max pooling of a (C, H, W) tensor (torch's ``MaxPool2d``, ONNX ``MaxPool``): dilation 1, floor
    output size (``ceil_mode`` off).  ``pads = ((top, bottom), (left, right))`` are filled with -inf, so a
    window's maximum is over its positions inside the image; each pad is smaller than the kernel, so every
    window has at least one."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    in_shape: tuple[int, int, int]

    def __post_init__(self):
        if len(self.in_shape) != 3:
            raise ValueError(f"max pooling needs a (C, H, W) input, got {self.in_shape}")
        if min(self.kernel) < 1 or min(self.stride) < 1:
            raise ValueError(f"max pooling: kernel {self.kernel} and stride {self.stride} must be >= 1")
        if any(p < 0 or p >= k for pair, k in zip(self.pads, self.kernel) for p in pair):
            raise ValueError(f"max pooling: pads {self.pads} must be >= 0 and smaller than the kernel {self.kernel}")
        if min(self.out_shape) <= 0:
            raise ValueError(f"max pooling {self.kernel} of {self.in_shape} is empty")

    @property
    def out_shape(self) -> tuple[int, int, int]:
        c, h, w = self.in_shape
        (t, b), (l, r) = self.pads
        return (c, (h + t + b - self.kernel[0]) // self.stride[0] + 1, (w + l + r - self.kernel[1]) // self.stride[1] + 1)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch (B, *in_shape) to (B, *out_shape)."""
        (t, b), (l, r) = self.pads
        if t or b or l or r:
            x = F.pad(x, (l, r, t, b), value=-math.inf)
        return F.max_pool2d(x, self.kernel, self.stride)

    @functools.cached_property
    def windows(self) -> np.ndarray:
        """``(out_size, kh*kw)`` int64: the flat input indices of every output's window, ``in_size`` (one past
        the last input) at padded positions."""
        (t, b), (l, r) = self.pads
        idx = torch.arange(self.in_size, dtype=torch.float64).reshape((1,) + tuple(self.in_shape))
        idx = F.pad(idx, (l, r, t, b), value=float(self.in_size))
        cols = F.unfold(idx, self.kernel, stride=self.stride)  # (1, C*kh*kw, L), channel-major
        c, k = self.in_shape[0], self.kernel[0] * self.kernel[1]
        win = cols.reshape(c, k, -1).permute(0, 2, 1).reshape(-1, k)
        return win.numpy().astype(np.int64)

    def to_module(self) -> nn.Module:
        (t, b), (l, r) = self.pads
        if t == b and l == r and 2 * t <= self.kernel[0] and 2 * l <= self.kernel[1]:
            return nn.MaxPool2d(self.kernel, self.stride, (t, l))
        return nn.Sequential(nn.ConstantPad2d((l, r, t, b), -math.inf), nn.MaxPool2d(self.kernel, self.stride))


@dataclass(frozen=True, eq=False)
class ReluNetwork:
    """``f(x) = A_L(s_{L-1}(A_{L-1}( ... s_1(A_1 x))))`` with affine stages ``A_l`` and activations ``s_l``.

    ``stages`` has one more entry than ``activations``.  Hidden layer ``l`` (0-based) has the flattened
    pre-activations ``A_l(...)`` of size ``activations[l].size``.  ``pools[l]`` is None or a
    :class:`MaxPoolLayer` applied to the outputs of activation ``l`` before stage ``l + 1`` (``()``: none).
    """

    stages: tuple[AffineStage, ...]
    activations: tuple[Activation, ...]
    pools: tuple[MaxPoolLayer | None, ...] = ()

    def __post_init__(self):
        if len(self.stages) != len(self.activations) + 1:
            raise ValueError("a ReluNetwork needs exactly one more affine stage than activation layers")
        if not self.pools:
            object.__setattr__(self, "pools", (None,) * len(self.activations))
        if len(self.pools) != len(self.activations):
            raise ValueError("pools needs one entry (a MaxPoolLayer or None) per activation layer")
        for k, (act, pool) in enumerate(zip(self.activations, self.pools)):
            prev, nxt = self.stages[k], self.stages[k + 1]
            out = act.size if pool is None else pool.out_size
            if prev.out_size != act.size or nxt.in_size != out or (pool is not None and pool.in_size != act.size):
                raise ValueError(
                    f"shape mismatch at ReLU layer {k}: stage {k} gives {prev.out_shape}, "
                    f"activation has {act.size} neurons"
                    + ("" if pool is None else f", max pooling maps {pool.in_shape} to {pool.out_shape}")
                    + f", stage {k + 1} expects {nxt.in_shape}"
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
        for stage, act, pool in zip(self.stages[:-1], self.activations, self.pools):
            z = stage.apply(h).reshape(h.shape[0], -1)
            pre.append(z)
            h = act.apply(z)
            if pool is not None:
                h = pool.apply(h.reshape((h.shape[0],) + pool.in_shape))
            h = h.reshape((h.shape[0],) + self.stages[len(pre)].in_shape)
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
    def from_torch(cls, seq: nn.Module, input_shape: Sequence[int], *,
                   softmax: SoftmaxPolicy | str = SoftmaxPolicy.REFUSE) -> "ReluNetwork":
        """Build from an ``nn.Sequential`` of Linear, Conv2d, ReLU, Flatten, :class:`Normalize`,
        BatchNorm1d/2d, AvgPool2d, AdaptiveAvgPool2d (output size dividing the input), ZeroPad2d,
        ConstantPad2d (value 0), Identity, Dropout and MaxPool2d (directly before or after a ReLU; dilation 1,
        ceil_mode off).

        Batch normalisation and dropout are taken in their inference form (running statistics; dropout is
        the identity) whatever the module's training flag.  The network may end with a ReLU (its outputs
        are then post-activation values) or, with ``softmax="drop"``, a Softmax/LogSoftmax that is left out
        (see :class:`SoftmaxPolicy`)."""
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
            if isinstance(m, (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)):
                continue  # inference form: the identity
            if isinstance(m, nn.MaxPool2d):
                pool = _torch_max_pool(m, shape, name)
                ops.append(("maxpool", pool))
                shape = pool.out_shape
                continue
            if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
                kind = OutputActivation.SOFTMAX if isinstance(m, nn.Softmax) else OutputActivation.LOG_SOFTMAX
                if m.dim not in (None, 1, -1) or len(shape) != 1:
                    raise UnsupportedLayerError(f"{name}: only a softmax over the flat output vector is supported")
                ops.append(("softmax", kind))
                continue
            op = _torch_module_to_op(m, shape, name)
            ops.append(("affine", op))
            shape = op.out_shape
        ops, _ = split_output_activation(ops, softmax, "the torch model")
        return cls._from_op_list(ops, tuple(int(s) for s in input_shape))

    @classmethod
    def _from_op_list(cls, ops: list[tuple[str, object]], input_shape: tuple[int, ...]) -> "ReluNetwork":
        """Group ``[("affine", op) | ("relu", None) | ("maxpool", MaxPoolLayer), ...]`` into stages; a batch
        normalisation right after a convolution or dense layer is folded into it; a max pool right before a
        ReLU is moved after it; a final ReLU is followed by an identity stage."""
        ops = _pools_after_relus(ops)
        stages: list[AffineStage] = []
        pools: list[MaxPoolLayer | None] = []
        current: list[Op] = []
        shape = input_shape
        for pos, (kind, op) in enumerate(ops):
            if kind == "relu":
                if not current:
                    raise UnsupportedLayerError(
                        "two ReLUs in a row or a ReLU on the input: not a ReLU network in normal form"
                    )
                stages.append(AffineStage(tuple(current)))
                pools.append(None)
                current = []
            elif kind == "maxpool":
                if current or not stages or pools[-1] is not None or ops[pos - 1][0] != "relu":
                    raise UnsupportedLayerError(
                        "a max pooling layer is supported only directly after or before a ReLU (it is then "
                        "encoded exactly); put it next to the ReLU, or replace it by AvgPool2d/AveragePool"
                    )
                if tuple(op.in_shape) != tuple(shape):
                    raise ValueError(f"shape mismatch: max pooling expects {op.in_shape}, got {shape}")
                pools[-1] = op
                shape = op.out_shape
            elif kind == "affine":
                if tuple(op.in_shape) != tuple(shape):
                    raise ValueError(f"shape mismatch: {type(op).__name__} expects {op.in_shape}, got {shape}")
                folded = fold_channel_affine(current[-1], op) if current and isinstance(op, ChannelAffineOp) else None
                if folded is not None:
                    current[-1] = folded
                else:
                    current.append(op)
                shape = op.out_shape
            else:
                raise UnsupportedLayerError(f"a {kind} layer can only be the last layer of the network")
        if not current:
            # a final ReLU: the outputs are post-activation values, mapped out by an identity stage
            current.append(IdentityOp(tuple(shape)) if len(shape) == 1 else FlattenOp(tuple(shape)))
        elif len(shape) != 1:
            current.append(FlattenOp(shape))
        stages.append(AffineStage(tuple(current)))
        acts = tuple(Activation.relu(s.out_size) for s in stages[:-1])
        return cls(tuple(stages), acts, tuple(pools))

    @classmethod
    def from_onnx(cls, path: str | Path, *, softmax: SoftmaxPolicy | str = SoftmaxPolicy.REFUSE) -> "ReluNetwork":
        """Load an ONNX ReLU network (``.onnx`` or ``.onnx.gz``); the supported ops are listed in
        :data:`lsub_helpers.io.onnx.SUPPORTED`.  ``softmax``: see :class:`SoftmaxPolicy`."""
        from .io.onnx import load_onnx

        return load_onnx(path, softmax=softmax).net

    def to_torch(self) -> nn.Sequential:
        """An equivalent ``nn.Sequential`` in float64 (substituted neurons are not representable)."""
        if any(not a.is_plain for a in self.activations):
            raise ValueError("to_torch supports only networks without substituted ReLUs")
        mods: list[nn.Module] = []
        for k, stage in enumerate(self.stages):
            for op in stage.ops:
                mods.append(op.to_module())
            if k < len(self.activations):
                mods.append(nn.ReLU())
                if self.pools[k] is not None:
                    mods.append(self.pools[k].to_module())
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
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if m.running_mean is None or m.running_var is None:
            raise UnsupportedLayerError(f"{name}: needs running statistics (track_running_stats=True)")
        c = m.num_features
        if not shape or shape[0] != c:
            raise ValueError(f"{name}: {c} features for input shape {shape}")
        gamma = m.weight.detach() if m.weight is not None else torch.ones(c)
        beta = m.bias.detach() if m.bias is not None else torch.zeros(c)
        return ChannelAffineOp.batch_norm(gamma, beta, m.running_mean, m.running_var, float(m.eps), shape)
    if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        if len(shape) != 3:
            raise ValueError(f"{name}: expects input (C, H, W), gets shape {shape}")
        if isinstance(m, nn.AdaptiveAvgPool2d):
            out = _pair(m.output_size)
            out = tuple(shape[1 + i] if o is None else o for i, o in enumerate(out))
            if shape[1] % out[0] or shape[2] % out[1]:
                raise UnsupportedLayerError(f"{name}: output size {out} must divide the input {shape[1:]}")
            k = (shape[1] // out[0], shape[2] // out[1])
            return AvgPoolOp(k, k, (0, 0), True, shape)
        if m.divisor_override is not None:
            raise UnsupportedLayerError(f"{name}: divisor_override is not supported")
        k, pad = _pair(m.kernel_size), _pair(m.padding)
        s = _pair(m.stride) if m.stride is not None else k
        op = AvgPoolOp(k, s, pad, bool(m.count_include_pad), shape)
        if m.ceil_mode and tuple(m(torch.zeros((1,) + shape)).shape[1:]) != op.out_shape:
            raise UnsupportedLayerError(f"{name}: ceil_mode=True changes the output shape; use ceil_mode=False")
        return op
    if isinstance(m, (nn.ZeroPad2d, nn.ConstantPad2d)):
        if isinstance(m, nn.ConstantPad2d) and m.value != 0:
            raise UnsupportedLayerError(f"{name}: only zero padding is affine-free of the data; value {m.value}")
        if len(shape) != 3:
            raise ValueError(f"{name}: expects input (C, H, W), gets shape {shape}")
        left, right, top, bottom = m.padding
        return PadOp(((0, 0), (top, bottom), (left, right)), shape)
    raise UnsupportedLayerError(
        f"unsupported layer {name}: {_TORCH_HINTS.get(type(m).__name__, _TORCH_HINT)}"
    )


_TORCH_HINT = (
    "a ReluNetwork accepts Linear, Conv2d, ReLU, Flatten, Normalize, BatchNorm1d/2d, AvgPool2d, "
    "AdaptiveAvgPool2d, ZeroPad2d, Identity, Dropout, MaxPool2d (next to a ReLU) and a final Softmax/LogSoftmax; "
    "remove the layer or fold it into an adjacent linear layer"
)
_TORCH_HINTS = {
    "Sigmoid": "the verifier is exact for piecewise-linear ReLU networks and does not approximate Sigmoid; "
    "retrain with ReLU",
    "Tanh": "the verifier is exact for piecewise-linear ReLU networks and does not approximate Tanh; "
    "retrain with ReLU",
}


def _pools_after_relus(ops: list) -> list:
    """``affine, maxpool, relu`` becomes ``affine, relu, maxpool`` (equal: ReLU is increasing, so it commutes
    with max)."""
    ops = list(ops)
    for i in range(1, len(ops) - 1):
        if ops[i - 1][0] == "affine" and ops[i][0] == "maxpool" and ops[i + 1][0] == "relu":
            ops[i], ops[i + 1] = ops[i + 1], ops[i]
    return ops


def _torch_max_pool(m: nn.MaxPool2d, shape: tuple[int, ...], name: str) -> MaxPoolLayer:
    if len(shape) != 3:
        raise ValueError(f"{name}: expects input (C, H, W), gets shape {shape}")
    if _pair(m.dilation) != (1, 1):
        raise UnsupportedLayerError(f"{name}: dilation {m.dilation} is not supported; use dilation=1")
    if m.ceil_mode:
        raise UnsupportedLayerError(f"{name}: ceil_mode=True is not supported; use ceil_mode=False")
    if m.return_indices:
        raise UnsupportedLayerError(f"{name}: return_indices=True is not supported")
    k, pad = _pair(m.kernel_size), _pair(m.padding)
    s = _pair(m.stride) if m.stride is not None else k
    return MaxPoolLayer(k, s, ((pad[0], pad[0]), (pad[1], pad[1])), tuple(shape))


def split_output_activation(ops: list, policy: SoftmaxPolicy | str, where: str):
    """``(ops without a final Softmax/LogSoftmax, the one dropped or None)``; raises under ``REFUSE``."""
    policy = SoftmaxPolicy(policy)
    if not ops or ops[-1][0] != "softmax":
        return ops, None
    kind = ops[-1][1]
    if policy is SoftmaxPolicy.REFUSE:
        raise UnsupportedLayerError(
            f"{where} ends with {kind.value}: outputs after it are not piecewise linear. It does not change "
            "the argmax, so for classification properties load it with softmax='drop' (the logits are then "
            "verified); for properties on the raw output values export the model without it"
        )
    return ops[:-1], kind


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)
