"""Linear relaxations of the activations and back-substitution to the input box (CROWN, FastLin)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..network import Activation, AffineStage
from .patches import BLOCK_ELEMENTS, conv_chain, patch_bounds
from .pool import PoolRelax, pool_back
from .result import BoundMethod

Tensor = torch.Tensor
F64 = torch.float64


@dataclass(frozen=True, eq=False)
class Relax:
    """Linear bounds ``al*z + cl <= s(z) <= au*z + cu`` of one activation layer, per anchor (B, n).

    Also stored in the form used by the dense backward step: on the columns ``cols`` where the lines differ
    (unstable neurons) the differences ``al - au`` and ``cu - cl``; ``offset_cols`` are the columns where
    ``cl`` is not zero (replaced neurons).
    """

    al: Tensor  # (B, n)
    cl: Tensor  # (B, n)
    au: Tensor  # (B, n)
    cu: Tensor  # (B, n)
    cols: Tensor  # (k,) long
    d_slope: Tensor  # (B, k) = al - au on cols
    d_offset: Tensor  # (B, k) = cu - cl on cols, >= 0
    offset_cols: Tensor  # (j,) long
    pool: PoolRelax | None = None  # the max pooling layer after the activation, if any


def relax(act: Activation, lo: Tensor, hi: Tensor, method: BoundMethod) -> Relax | None:
    """The relaxation that ``method`` uses for pre-activations in ``[lo, hi]`` (None for IBP)."""
    if method is BoundMethod.IBP:
        return None
    unstable = (lo < 0) & (hi > 0) & ~act.replaced
    active = (lo >= 0) & ~act.replaced
    width = torch.where(unstable, hi - lo, torch.ones_like(hi))
    chord = torch.where(unstable, hi / width, torch.zeros_like(hi))  # u / (u - l)
    au = torch.where(active, torch.ones_like(hi), chord)
    cu = torch.where(unstable, -lo * chord, torch.zeros_like(hi))
    if method is BoundMethod.CROWN:
        al = torch.where(unstable, (hi > -lo).to(F64), au)
    else:
        al = au
    cl = torch.zeros_like(hi)
    if not act.is_plain:
        rep = act.replaced
        au = torch.where(rep, act.slope, au)
        al = torch.where(rep, act.slope, al)
        cl = torch.where(rep, act.offset, cl).expand_as(hi).clone()
    cols = unstable.any(0).nonzero().flatten()
    offset_cols = (cl != 0).any(0).nonzero().flatten()
    if not act.is_plain:
        cu = torch.where(act.replaced, cl, cu)
    return Relax(al, cl, au, cu, cols, (al - au)[:, cols], (cu - cl)[:, cols], offset_cols)


def with_lower_slopes(r: Relax | None, alpha: Tensor, rep, cu: Tensor | None = None) -> Relax | None:
    """``r`` with its rows mapped by ``rep`` (e.g. one box expanded to K copies), the lower slopes on its
    unstable columns set to ``alpha`` (rows, len(cols)) and, if given, the upper intercepts replaced by ``cu``
    (before ``rep``): the relaxation that optimised-slope bounds (alpha-CROWN, branch and bound) evaluate."""
    if r is None:
        return None
    al, au, cl = rep(r.al), rep(r.au), rep(r.cl)
    if r.cols.numel():
        al = al.index_put((torch.arange(al.shape[0]).unsqueeze(1), r.cols.unsqueeze(0)), alpha)
    cu = rep(r.cu if cu is None else cu)
    return Relax(al, cl, au, cu, r.cols, (al - au)[:, r.cols], (cu - cl)[:, r.cols], r.offset_cols, r.pool)


def linear_bounds(net, m, rows, relaxes, center, radius, shared, spec):
    """Bounds of (selected rows of) stage ``m``'s output by back-substitution to the input box.

    ``shared``: the lower and upper relaxation slopes coincide (FastLin), so one coefficient matrix
    serves both bounds; otherwise (CROWN) the upper bound is computed as minus the lower bound of the
    negated rows, stacked with the lower rows into one matrix.
    """
    if spec is None and conv_chain(net, m):
        return patch_bounds(net, m, rows, relaxes, center, radius, shared)
    stage = net.stages[m]
    w, b = stage.weight, stage.bias
    if spec is not None:
        lam0, beta0 = spec @ w, spec @ b
    elif rows is not None:
        lam0, beta0 = w[rows], b[rows]
    else:
        lam0, beta0 = w, b
    if lam0.dim() == 2:
        lam0, beta0 = lam0.unsqueeze(0), beta0.unsqueeze(0)
    batch = center.shape[0]
    k = lam0.shape[1]
    widest = max([net.input_size] + [s.out_size for s in net.stages[:m]])
    copies = 1 if shared else 2
    block = max(1, BLOCK_ELEMENTS // (copies * batch * widest))
    lows, ups = [], []
    for start in range(0, k, block):
        sl = slice(start, min(k, start + block))
        lo_, up_ = back_substitute(net, m, lam0[:, sl], beta0[:, sl], relaxes, center, radius, shared)
        lows.append(lo_)
        ups.append(up_)
    return torch.cat(lows, 1), torch.cat(ups, 1)


def back_substitute(net, m, lam, beta, relaxes, center, radius, shared, *, z_terms=None, lower_only=False):
    """``lam`` (1 or B, K, n_{m-1}): coefficients of stage ``m``'s input; ``beta`` (1 or B, K).

    ``lower_only``: only the lower bounds; the second result is then the rows' coefficients on the input
    (B, K, n_0), whose minimiser over the box is ``center - radius * sign``.  ``z_terms`` (with ``lower_only``): per
    ReLU layer j, None or a (B, n_j) tensor added to the coefficients of the pre-activations ``z_j`` on the way
    (beta-CROWN's Lagrangian terms ``-beta * s * z`` of split constraints ``s * z >= 0``)."""
    k = lam.shape[1]
    top = m - 1
    if z_terms is not None and not lower_only:
        raise ValueError("z_terms change the rows' objective: only with lower_only")
    if shared:
        beta_lo, beta_up = beta, beta
    elif lower_only:
        pass
    elif m > 0 and relaxes[m - 1].pool is None and 4 * relaxes[m - 1].cols.numel() <= lam.shape[-1]:
        lam, beta = split_first_step(net.stages[m - 1], relaxes[m - 1], lam, beta)
        top = m - 2
    else:
        lam = torch.cat([lam, -lam], 1)
        beta = torch.cat([beta, -beta], 1)
    for j in range(top, -1, -1):
        rel = relaxes[j]
        if rel.pool is not None:  # max pooling after activation j (bounds/pool.py)
            lam, shift_lo, shift_up = pool_back(rel.pool, lam, shared)
            if shared:
                beta_lo, beta_up = beta_lo + shift_lo, beta_up + shift_up
            else:
                beta = beta + shift_lo
        # activation j: h_j = s(z_j) with al*z + cl <= s(z) <= au*z + cu
        base = dot(lam[..., rel.offset_cols], rel.cl[:, rel.offset_cols]) if rel.offset_cols.numel() else 0.0
        lam_u = lam[..., rel.cols]
        if shared:
            beta_lo = beta_lo + base + dot(lam_u.clamp(max=0), rel.d_offset)
            beta_up = beta_up + base + dot(lam_u.clamp(min=0), rel.d_offset)
            lam = lam * rel.au.unsqueeze(1)
        else:
            # lower bound of lam . h: positive coefficients take the lower line, negative the upper one
            beta = beta + base + dot(lam_u.clamp(max=0), rel.d_offset)
            lam = lam * rel.au.unsqueeze(1)
            if rel.cols.numel():
                lam[..., rel.cols] += lam_u.clamp(min=0) * rel.d_slope.unsqueeze(1)
        if z_terms is not None and z_terms[j] is not None:
            lam = lam + z_terms[j].unsqueeze(1)
        # stage j: z_j = W_j h_{j-1} + b_j
        stage = net.stages[j]
        shift = lam @ stage.bias
        if shared:
            beta_lo, beta_up = beta_lo + shift, beta_up + shift
        else:
            beta = beta + shift
        lam = transpose_apply(stage, lam)
    # concretise over the input box: min of lam . x is lam . c - |lam| . r
    lin = dot(lam, center)
    spread = dot(lam.abs(), radius)
    if shared:
        return lin - spread + beta_lo, lin + spread + beta_up
    low = lin - spread + beta
    if lower_only:
        return low, lam
    return low[:, :k], -low[:, k:]


def split_first_step(stage: AffineStage, rel: Relax, lam: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """CROWN's first backward step (activation and stage below the target) for the rows ``lam`` and
    their negated copies at the cost of one pull-back: the two copies differ only on the unstable
    columns, whose corrections go through the dense rows of the stage matrix."""
    cols = rel.cols
    lam_u = lam[..., cols]
    pos, neg = lam_u.clamp(min=0), lam_u.clamp(max=0)
    base = dot(lam[..., rel.offset_cols], rel.cl[:, rel.offset_cols]) if rel.offset_cols.numel() else 0.0
    common = lam * rel.au.unsqueeze(1)
    pulled = transpose_apply(stage, common)
    shift = common @ stage.bias
    w_u, b_u = stage.weight[cols], stage.bias[cols]
    up = pos * rel.d_slope.unsqueeze(1)  # rows: lower line where the coefficient is positive
    down = neg * rel.d_slope.unsqueeze(1)  # negated rows: -neg is positive there
    lam_lo = pulled + up @ w_u
    lam_neg = -pulled - down @ w_u
    beta_lo = beta + base + dot(neg, rel.d_offset) + shift + up @ b_u
    beta_neg = -beta - base - dot(pos, rel.d_offset) - shift - down @ b_u
    return torch.cat([lam_lo, lam_neg], 1), torch.cat([beta_lo, beta_neg], 1)


def dot(lam: Tensor, v: Tensor) -> Tensor:
    """``lam (B or 1, K, n)`` times ``v (B, n)`` per anchor -> (B, K)."""
    return (lam @ v.unsqueeze(-1)).squeeze(-1)


def transpose_apply(stage: AffineStage, lam: Tensor) -> Tensor:
    """``lam @ W`` for the linear part ``W`` of ``stage``: (B, K, out_size) -> (B, K, in_size)."""
    b, k, _ = lam.shape
    x = lam.reshape((b * k,) + tuple(stage.out_shape))
    for op in reversed(stage.ops):
        x = op.transpose_apply(x)
    return x.reshape(b, k, -1)
