"""Back-substitution through a chain of convolutions in "patches" form (as auto_LiRPA).

When stage m and every stage before it are single convolutions, the coefficients of a neuron of stage m
on the neurons of an earlier layer are non-zero only on a small window (its receptive field).  They are
kept as a (rows, C, kh, kw) window at a known position instead of a dense (rows, C*H*W) matrix, as
auto_LiRPA's "patches" mode does: pulling a window back through a convolution is a conv_transpose2d of
the small window, and the maps of the relaxation are cut into matching windows with unfold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..network import AffineStage, ConvOp, ReluNetwork

Tensor = torch.Tensor

# Largest number of float64 entries of one backward coefficient tensor (about 128 MB); bigger problems are
# processed in blocks of rows.
BLOCK_ELEMENTS = 1 << 24


def conv_of(stage: AffineStage, first: bool) -> ConvOp | None:
    """The convolution of a stage that is one convolution (the first stage may start with non-mixing ops,
    e.g. a normalisation, a transpose or a padding, which are folded into the input box)."""
    ops = stage.ops
    if not isinstance(ops[-1], ConvOp):
        return None
    if len(ops) == 1 or (first and all(not op.mixing for op in ops[:-1])):
        return ops[-1]
    return None


def conv_chain(net: ReluNetwork, m: int) -> bool:
    """Stages 0..m are convolutions with no max pooling between them (a pool takes the dense path)."""
    return (m > 0 and all(conv_of(net.stages[j], j == 0) is not None for j in range(m + 1))
            and all(p is None for p in net.pools[:m]))


def patch_input(net: ReluNetwork, center: Tensor, radius: Tensor) -> tuple[Tensor, Tensor]:
    """Center and radius of the input box mapped through the elementwise ops that precede the first conv."""
    stage = net.stages[0]
    batch = center.shape[0]
    lo = (center - radius).reshape((batch,) + tuple(stage.in_shape))
    hi = (center + radius).reshape((batch,) + tuple(stage.in_shape))
    for op in stage.ops[:-1]:
        lo, hi = op.apply(lo), op.apply(hi)
        lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
    return (lo + hi) / 2, (hi - lo) / 2


@dataclass(frozen=True)
class Window:
    """Rows' windows: kernel ``k``, top-left corner of the window of output position (i, j) at
    ``(i*s[0] - p[0], j*s[1] - p[1])`` in the coordinates of the layer the coefficients refer to."""

    k: tuple[int, int]
    s: tuple[int, int]
    p: tuple[int, int]

    def through(self, conv: ConvOp) -> "Window":
        kh, kw = conv.weight.shape[2:]
        (sh, sw), (ph, pw) = conv.stride, conv.padding
        return Window(
            ((self.k[0] - 1) * sh + kh, (self.k[1] - 1) * sw + kw),
            (self.s[0] * sh, self.s[1] * sw),
            (self.p[0] * sh + ph, self.p[1] * sw + pw),
        )


def cut(maps: Tensor, win: Window, grid: tuple[int, int], pos: Tensor | None) -> Tensor:
    """Windows of ``maps`` (B, S, C, H, W) (S maps stacked), each flattened to C*kh*kw values: at every
    grid position, (B, S, 1, H'*W', window), or at the grid positions ``pos`` (row-major) of selected rows,
    (B, S, K, window).  Positions outside the map read zeros (padding: coefficients there multiply nothing)."""
    b, n_maps, c, h, w = maps.shape
    extra_h = max(0, (grid[0] - 1) * win.s[0] - win.p[0] + win.k[0] - h)
    extra_w = max(0, (grid[1] - 1) * win.s[1] - win.p[1] + win.k[1] - w)
    padded = F.pad(maps.reshape(b * n_maps, c, h, w), (win.p[1], extra_w, win.p[0], extra_h))
    cols = F.unfold(padded, win.k, stride=win.s)  # (B*S, C*kh*kw, Hg*Wg)
    hg = (padded.shape[2] - win.k[0]) // win.s[0] + 1
    wg = (padded.shape[3] - win.k[1]) // win.s[1] + 1
    cols = cols.reshape(b, n_maps, -1, hg, wg)[..., : grid[0], : grid[1]].flatten(3).transpose(2, 3)
    if pos is None:
        return cols.unsqueeze(2).contiguous()
    return cols.index_select(2, pos)


def patch_bounds(net, m, rows, relaxes, center, radius, shared):
    """``linear_bounds`` for stage ``m`` at the end of a chain of convolutions."""
    conv = conv_of(net.stages[m], m == 0)
    batch = center.shape[0]
    c_in_center, c_in_radius = patch_input(net, center, radius)
    widest = math.prod(conv.weight.shape[1:])
    win = Window(tuple(conv.weight.shape[2:]), conv.stride, conv.padding)
    for j in range(m - 1, -1, -1):  # windows grow backwards: bound the block by the largest one
        prev = net.stages[j].ops[-1]
        win = win.through(prev)
        widest = max(widest, prev.weight.shape[1] * win.k[0] * win.k[1])
    copies = 1 if shared else 2
    c_out, h_out, w_out = conv.out_shape
    per_row = copies * batch * widest
    if rows is None and c_out * h_out * w_out * per_row <= BLOCK_ELEMENTS:
        # every neuron: rows laid out as (channel, position), maps shared by the channels of a position
        return patch_substitute(net, m, conv, None, relaxes, c_in_center, c_in_radius, shared)
    if rows is None:
        rows = torch.arange(c_out * h_out * w_out)
    block = max(1, BLOCK_ELEMENTS // per_row)
    parts = [
        patch_substitute(net, m, conv, rows[i : i + block], relaxes, c_in_center, c_in_radius, shared)
        for i in range(0, rows.numel(), block)
    ]
    return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)


def patch_substitute(net, m, conv, rows, relaxes, center, radius, shared):
    """Back-substitution of the rows ``rows`` (None: all) of the convolution stage ``m``.

    Coefficient windows have shape (B, K, window) for selected rows, or (B, R, H*W, window) for all
    rows (R = C_out, or 2 C_out with the negated copies), ``window`` = C*kh*kw of the current layer."""
    c_out, h_out, w_out = conv.out_shape
    grid = (h_out, w_out)
    if rows is None:
        pos = None
        lam = conv.weight.flatten(1)[:, None, :].expand(c_out, h_out * w_out, -1).unsqueeze(0)
        beta = conv.bias[:, None].expand(c_out, h_out * w_out).unsqueeze(0)
    else:
        ch, pos = rows // (h_out * w_out), rows % (h_out * w_out)
        lam = conv.weight.flatten(1)[ch].unsqueeze(0)  # (1, K, window)
        beta = conv.bias[ch].unsqueeze(0)  # (1, K)
    win = Window(tuple(conv.weight.shape[2:]), conv.stride, conv.padding)
    if shared:
        beta_lo, beta_up = beta, beta
    else:  # upper bounds as minus the lower bounds of the negated rows
        lam, beta = torch.cat([lam, -lam], 1), torch.cat([beta, -beta], 1)
        if pos is not None:
            pos = pos.repeat(2)
    batch = center.shape[0]
    for j in range(m - 1, -1, -1):
        rel = relaxes[j]
        prev = net.stages[j].ops[-1]
        shape = (batch,) + tuple(prev.out_shape)
        # the conv's own bias (stage 0's bias would also hold the folded input normalisation)
        bias = prev.bias.reshape(-1, 1, 1).expand(tuple(prev.out_shape)).reshape(1, -1)
        offsets = rel.offset_cols.numel() > 0
        stack = [rel.au, rel.cu - rel.cl, bias] + ([] if shared else [rel.al - rel.au]) + ([rel.cl] if offsets else [])
        maps = cut(torch.stack([v.expand(batch, -1).reshape(shape) for v in stack], 1), win, grid, pos)
        au, gap, bias_w = maps[:, 0], maps[:, 1], maps[:, 2]
        base = (lam * maps[:, -1]).sum(-1) if offsets else 0.0
        neg = lam.clamp(max=0)
        if shared:
            beta_lo = beta_lo + base + (neg * gap).sum(-1)
            beta_up = beta_up + base + ((lam - neg) * gap).sum(-1)
            lam = lam * au
        else:  # positive coefficients take the lower line, negative ones the upper line
            beta = beta + base + (neg * gap).sum(-1)
            lam = lam * au + (lam - neg) * maps[:, 3]
        shift = (lam * bias_w).sum(-1)
        if shared:
            beta_lo, beta_up = beta_lo + shift, beta_up + shift
        else:
            beta = beta + shift
        lam = window_transpose(lam, prev, win)
        win = win.through(prev)
    box = cut(torch.stack([center, radius], 1), win, grid, pos)
    lin = (lam * box[:, 0]).sum(-1)
    spread = (lam.abs() * box[:, 1]).sum(-1)
    if shared:
        return (lin - spread + beta_lo).reshape(batch, -1), (lin + spread + beta_up).reshape(batch, -1)
    low = (lin - spread + beta).reshape(batch, 2, -1)
    return low[:, 0], -low[:, 1]


def window_transpose(lam: Tensor, conv: ConvOp, win: Window) -> Tensor:
    """Pull windows (..., C_out*kh*kw) back through ``conv`` to windows of its input (..., C_in*kh'*kw')."""
    c_out, c_in, kh, kw = conv.weight.shape
    size_in = c_out * win.k[0] * win.k[1]
    size_out = c_in * ((win.k[0] - 1) * conv.stride[0] + kh) * ((win.k[1] - 1) * conv.stride[1] + kw)
    flat = lam.reshape(-1, size_in)
    if size_in * size_out <= (1 << 22) and flat.shape[0] > size_in:
        # the map window -> window as a small matrix: one GEMM instead of a per-row conv_transpose2d
        eye = torch.eye(size_in, dtype=lam.dtype).reshape((size_in, c_out) + win.k)
        matrix = F.conv_transpose2d(eye, conv.weight, None, conv.stride).reshape(size_in, size_out)
        out = flat @ matrix
    else:
        out = F.conv_transpose2d(flat.reshape((-1, c_out) + win.k), conv.weight, None, conv.stride)
    return out.reshape(lam.shape[:-1] + (size_out,))
