"""The result of a bound computation: :class:`Bounds`, and the enums that name how it was computed."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


class BoundMethod(enum.Enum):
    """The bound propagation algorithm B (see the module docstring)."""

    IBP = "ibp"
    CROWN = "crown"
    FASTLIN = "fastlin"
    FASTLIN_IBP = "fastlin_ibp"


class Intermediate(enum.Enum):
    """Which neurons of a hidden layer get linear-relaxation (CROWN/FastLin) bounds.

    ``ALL`` (default): every neuron, so the gaps ``u - l`` that Algorithm 1 ranks are tight for stable
    neurons too (on CNNa 3-9 times smaller than with ``UNSTABLE``, see benchmarks/results/bounds.md).
    ``UNSTABLE``: only the neurons that one IBP step from the previous layer's bounds leaves unstable;
    the others keep that IBP step, which already proves them stable.  This is auto_LiRPA's default
    (``sparse_intermediate_bounds``) and gives the same bounds as auto_LiRPA's CROWN; about twice as fast.
    """

    ALL = "all"
    UNSTABLE = "unstable"


# ---------------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Bounds:
    """Pre-activation bounds of every ReLU layer and bounds of the logits, for one anchor or a batch.

    Every tensor is float64.  ``pre_activation[l] = (lower, upper)`` with shape ``(n_l,)`` for one anchor
    or ``(B, n_l)`` for a batch; ``output`` likewise ``(num_classes,)`` / ``(B, num_classes)`` (or the
    number of rows of ``spec`` when one was given).  ``input`` is the box that was bounded, in the
    network's input shape (with the batch dimension if any).  ``replaced`` holds the substitute mask of
    every layer of the network that was bounded.
    """

    pre_activation: tuple[tuple[Tensor, Tensor], ...]
    output: tuple[Tensor, Tensor]
    method: BoundMethod
    input: tuple[Tensor, Tensor]
    replaced: tuple[Tensor, ...]

    @property
    def batched(self) -> bool:
        return self.output[0].dim() == 2

    @property
    def batch_size(self) -> int | None:
        return self.output[0].shape[0] if self.batched else None

    def unstable_masks(self) -> tuple[Tensor, ...]:
        """Per layer: ``lower < 0 < upper`` and not replaced (bool, same shape as the bounds)."""
        return tuple((lo < 0) & (up > 0) & ~rep for (lo, up), rep in zip(self.pre_activation, self.replaced))

    def active_masks(self) -> tuple[Tensor, ...]:
        """Per layer: provably active ReLUs, ``lower >= 0`` and not replaced."""
        return tuple((lo >= 0) & ~rep for (lo, _), rep in zip(self.pre_activation, self.replaced))

    def inactive_masks(self) -> tuple[Tensor, ...]:
        """Per layer: provably inactive ReLUs, ``upper <= 0`` (and ``lower < 0``) and not replaced."""
        return tuple(
            (up <= 0) & (lo < 0) & ~rep for (lo, up), rep in zip(self.pre_activation, self.replaced)
        )

    def num_unstable_per_layer(self) -> tuple[int, ...] | tuple[Tensor, ...]:
        """Unstable neurons of every layer: ints for one anchor, ``(B,)`` tensors for a batch."""
        counts = tuple(m.sum(-1) for m in self.unstable_masks())
        return counts if self.batched else tuple(int(c) for c in counts)

    @property
    def num_unstable(self) -> int | Tensor:
        """Unstable neurons of the whole network: an int for one anchor, a ``(B,)`` tensor for a batch."""
        counts = self.num_unstable_per_layer()
        if self.batched:
            return torch.stack(counts).sum(0) if counts else torch.zeros(self.batch_size, dtype=torch.long)
        return sum(counts)

    def gaps(self) -> tuple[Tensor, ...]:
        """``upper - lower`` of every neuron, per layer (the pruning criterion of Algorithm 1)."""
        return tuple(up - lo for lo, up in self.pre_activation)

    def anchor(self, i: int) -> "Bounds":
        """The bounds of anchor ``i`` of a batch, as an unbatched ``Bounds``."""
        if not self.batched:
            raise ValueError("anchor(i) needs batched bounds")
        return Bounds(
            tuple((lo[i], up[i]) for lo, up in self.pre_activation),
            (self.output[0][i], self.output[1][i]),
            self.method,
            (self.input[0][i], self.input[1][i]),
            self.replaced,
        )
