"""Interval bound propagation (IBP) steps through one affine stage and one activation layer."""

from __future__ import annotations

import torch

from ..network import Activation, AffineStage

Tensor = torch.Tensor


def ibp_stage(stage: AffineStage, lo: Tensor, hi: Tensor, spec: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Interval of ``stage(h)`` (or ``spec @ stage(h)``) for ``lo <= h <= hi``, all (B, n) flattened."""
    batch = lo.shape[0]
    c, r = (lo + hi) / 2, (hi - lo) / 2
    if spec is not None:
        w = spec @ stage.weight  # (K, n) or (B, K, n)
        b = spec @ stage.bias
        zc = (w @ c.unsqueeze(-1)).squeeze(-1) + b
        zr = (w.abs() @ r.unsqueeze(-1)).squeeze(-1)
        return zc - zr, zc + zr
    zc = stage.apply(c.reshape((batch,) + tuple(stage.in_shape))).reshape(batch, -1)
    if sum(op.mixing for op in stage.ops) <= 1:
        zr = abs_apply(stage, r)  # op by op is exact when at most one op mixes coordinates
    else:
        zr = r @ stage.weight.abs().T
    return zc - zr, zc + zr


def abs_apply(stage: AffineStage, r: Tensor) -> Tensor:
    """``|W| r`` for the linear part ``W`` of a stage with at most one mixing op (op by op)."""
    batch = r.shape[0]
    x = r.reshape((batch,) + tuple(stage.in_shape))
    for op in stage.ops:
        x = op.abs_apply(x)
    return x.reshape(batch, -1)


def ibp_activation(act: Activation, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Interval of the activation's output for pre-activations in ``[lo, hi]``."""
    h_lo, h_hi = lo.clamp(min=0), hi.clamp(min=0)
    if act.is_plain:
        return h_lo, h_hi
    a, c = act.slope, act.offset
    lin_lo = torch.minimum(a * lo, a * hi) + c
    lin_hi = torch.maximum(a * lo, a * hi) + c
    return torch.where(act.replaced, lin_lo, h_lo), torch.where(act.replaced, lin_hi, h_hi)
