"""Bounds through a max pooling layer (:class:`~lsub_helpers.network.MaxPoolLayer`).

For a window with inputs ``x_i`` in ``[l_i, u_i]`` and output ``y = max_i x_i``:

* **interval** (IBP): ``max_i l_i <= y <= max_i u_i``, exact (each end is reached at a corner of the box);
* **linear relaxation** (as DeepPoly and auto_LiRPA's ``BoundMaxPool``): let ``s`` be the input with the
  largest lower bound.  Then ``y >= x_s`` (``y`` is at least every input) and ``y <= U = max_i u_i``.  If
  ``l_s >= u_j`` for every other input ``j`` the window is *decided* and ``y = x_s`` exactly.  CROWN uses
  these lines; FastLin, whose two lines share their slope, uses ``x_s <= y <= x_s + (U - l_s)`` (valid
  since ``x_s >= l_s``; looser than the constant ``U``, never unsound).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..network import MaxPoolLayer

Tensor = torch.Tensor


def _windows(pool: MaxPoolLayer, v: Tensor) -> tuple[Tensor, Tensor]:
    """Values ``(B, out_size, kh*kw)`` of ``v`` (B, in_size) over each window (-inf at padded positions)
    and the windows' input indices ``(out_size, kh*kw)`` (``in_size`` at padded positions)."""
    win = torch.from_numpy(pool.windows)
    pad = torch.full((v.shape[0], 1), -torch.inf, dtype=v.dtype)
    return torch.cat([v, pad], 1)[:, win], win


def pool_interval(pool: MaxPoolLayer, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Exact interval of the pool's outputs for inputs in ``[lo, hi]`` (all (B, n) flattened)."""
    return _windows(pool, lo)[0].amax(-1), _windows(pool, hi)[0].amax(-1)


@dataclass(frozen=True, eq=False)
class PoolRelax:
    """The linear bounds of one max pooling layer, per anchor: ``x_sel <= y <= upper``, with ``y = x_sel``
    where ``exact``; ``gap = upper - l_sel`` (0 where exact) is FastLin's parallel upper line's offset."""

    sel: Tensor  # (B, n_out) long: flat input index of the input with the largest lower bound
    upper: Tensor  # (B, n_out): max of the window's upper bounds
    exact: Tensor  # (B, n_out) bool
    gap: Tensor  # (B, n_out) >= 0
    in_size: int


def pool_relax(pool: MaxPoolLayer, lo: Tensor, hi: Tensor) -> PoolRelax:
    """The relaxation of the pool for inputs in ``[lo, hi]`` (B, in_size)."""
    lw, win = _windows(pool, lo)
    uw, _ = _windows(pool, hi)
    lmax, pos = lw.max(-1)
    sel = win[torch.arange(win.shape[0]), pos]  # (B, n_out)
    others = uw.scatter(-1, pos.unsqueeze(-1), -torch.inf).amax(-1)  # max upper bound of the other inputs
    exact = lmax >= others
    upper = uw.amax(-1)
    gap = torch.where(exact, torch.zeros_like(upper), upper - lmax)
    return PoolRelax(sel, upper, exact, gap, pool.in_size)


def pool_back(rel: PoolRelax, lam: Tensor, shared: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Pull the coefficients ``lam`` (B or 1, K, n_out) of the pool's outputs back to its inputs.

    Returns ``(lam_in (B, K, in_size), shift_lo, shift_up)``: ``lam . y >= lam_in . x + shift_lo`` and, with
    ``shared`` (FastLin's parallel lines), ``lam . y <= lam_in . x + shift_up``; without (CROWN, the lower
    bound only) ``shift_up`` is None.
    """
    batch = max(lam.shape[0], rel.sel.shape[0])
    lam = lam.expand(batch, -1, -1)
    if shared:
        coef = lam
        gap = rel.gap.unsqueeze(1)
        shift_lo = (lam.clamp(max=0) * gap).sum(-1)
        shift_up = (lam.clamp(min=0) * gap).sum(-1)
    else:
        # lower bound: a positive coefficient takes y >= x_sel, a negative one y <= upper (or y = x_sel)
        exact = rel.exact.unsqueeze(1)
        coef = torch.where(exact, lam, lam.clamp(min=0))
        shift_lo = (torch.where(exact, torch.zeros_like(lam), lam.clamp(max=0)) * rel.upper.unsqueeze(1)).sum(-1)
        shift_up = None
    idx = rel.sel.unsqueeze(1).expand(batch, lam.shape[1], -1)
    lam_in = torch.zeros(batch, lam.shape[1], rel.in_size, dtype=lam.dtype)
    lam_in.scatter_add_(-1, idx, coef)
    return lam_in, shift_lo, shift_up


def pool_gradient_interval(pool: MaxPoolLayer, lo: Tensor, hi: Tensor, g_lo: Tensor, g_hi: Tensor) -> tuple[Tensor, Tensor]:
    """Interval of ``g @ J`` over the (generalised) Jacobians ``J`` of the pool on ``[lo, hi]`` (inputs,
    (in_size,)) and every ``g`` in ``[g_lo, g_hi]`` (outputs, (out_size,)).  Each output's row of ``J`` is a
    convex combination of one-hot rows on the window's candidates (inputs whose upper bound reaches the
    largest lower bound); with one candidate it is that one-hot row."""
    lw, win = _windows(pool, lo.unsqueeze(0))
    uw, _ = _windows(pool, hi.unsqueeze(0))
    cand = (uw[0] >= lw[0].amax(-1, keepdim=True)) & (win < pool.in_size)
    single = (cand.sum(-1) == 1).unsqueeze(-1)
    c_lo = torch.where(single, g_lo.unsqueeze(-1), g_lo.clamp(max=0).unsqueeze(-1)) * cand
    c_hi = torch.where(single, g_hi.unsqueeze(-1), g_hi.clamp(min=0).unsqueeze(-1)) * cand
    idx = win.clamp(max=pool.in_size - 1).reshape(-1)  # padded positions carry 0 (not candidates)
    out_lo = torch.zeros(pool.in_size, dtype=g_lo.dtype).scatter_add_(0, idx, c_lo.reshape(-1))
    out_hi = torch.zeros(pool.in_size, dtype=g_hi.dtype).scatter_add_(0, idx, c_hi.reshape(-1))
    return out_lo, out_hi
